"""Committee rules: the uncertainty figure of an evaluation, the disagreement along the MD run.

The steps import potflow's committee module themselves: md_committee must set OMP_NUM_THREADS
before torch loads.
"""

from potflow.workflow.rulescript import rule_step, run_rule

sm = snakemake  # noqa: F821


def plot_committee():
    from potflow.evaluation.committee import uncertainty_figure
    from potflow.evaluation.plots import save_figure
    from potflow.evaluation.predictions import load_evaluation

    fig = uncertainty_figure(load_evaluation(sm.input[0]), sm.params.title)
    save_figure(fig, sm.output.png, sm.output.pdf)


def md_committee():
    import os

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    from potflow.evaluation.committee import validate_md_committee

    torch.set_num_threads(max(1, sm.threads))
    models = [sm.input.model, *sm.input.members]
    outputs = {k: sm.output[k] for k in ("table", "candidates", "summary", "plot")}
    validate_md_committee(sm.params.config, models, sm.input.trajectory, outputs, sm.params.title)


STEPS = {"plot_committee": plot_committee, "md_committee": md_committee}
run_rule(rule_step(sm.rule, STEPS), sm.log[0])
