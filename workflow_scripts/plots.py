"""Figures of one evaluation (and the loss curves of a fit), PNG and PDF."""

from potflow.evaluation import plots
from potflow.evaluation.predictions import load_evaluation
from potflow.workflow.rulescript import rule_step, run_rule

sm = snakemake  # noqa: F821


def plot_evaluation():
    ev = load_evaluation(sm.input[0])
    for name, fig in plots.evaluation_figures(ev, sm.params.title).items():
        plots.save_figure(fig, sm.output[f"{name}_png"], sm.output[f"{name}_pdf"])


def plot_loss():
    fig = plots.loss_curves(plots.read_loss(sm.input[0]), sm.params.title)
    plots.save_figure(fig, sm.output.png, sm.output.pdf)


STEPS = {"plot_evaluation": plot_evaluation, "plot_loss": plot_loss}
run_rule(rule_step(sm.rule, STEPS), sm.log[0])
