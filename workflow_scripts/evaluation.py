"""Evaluation rules: predictions of a fit or test set, FitSNAP's error files, the figures."""

import torch

from potflow.evaluation import error_files as files
from potflow.evaluation import plots
from potflow.evaluation import predictions as pfe
from potflow.fileio import write_text
from potflow.workflow.rulescript import rule_step, run_rule

sm = snakemake  # noqa: F821


def evaluate_fit():
    torch.set_num_threads(max(1, sm.threads))
    folders = dict(zip(sm.params.groups, sm.input.descriptors, strict=True))
    ev = pfe.evaluate_fit(
        sm.params.config, sm.input.model, sm.input.split, folders,
        members=list(sm.input.members), member_splits=list(sm.input.member_splits),
    )  # fmt: skip
    pfe.save_evaluation(sm.output[0], ev)
    info = pfe.model_info(ev)
    print(f"evaluated {len(ev['natoms'])} configurations with {info.get('model')} {info}")


def evaluate_test_set():
    """Score the trained model on a test set: reads model.pt, never trains."""
    torch.set_num_threads(max(1, sm.threads))
    folders = dict(zip(sm.params.groups, sm.input.descriptors, strict=True))
    ev = pfe.evaluate_test_set(sm.params.config, sm.input.model, folders, members=list(sm.input.members))
    pfe.save_evaluation(sm.output[0], ev)
    print(f"test set {sm.wildcards.test_set}: {len(ev['natoms'])} configurations, model {pfe.model_info(ev)}")


def evaluation_metrics():
    ev = pfe.load_evaluation(sm.input[0])
    table = files.metrics_table(ev)
    files.write_metrics(sm.output.metrics, table)
    html = files.metrics_html(table, sm.params.title, files.metrics_notes(ev))
    write_text(sm.output.html, html)
    print(files.format_metrics(table))


def evaluation_perconfig():
    files.write_frame(sm.output[0], files.perconfig_frame(pfe.load_evaluation(sm.input[0])))


def evaluation_peratom():
    files.write_frame(sm.output[0], files.peratom_frame(pfe.load_evaluation(sm.input[0])))


def evaluation_configs():
    ev = pfe.load_evaluation(sm.input.evaluation)
    groups = list(ev["groups"])
    folders = dict(zip(groups, sm.input.descriptors, strict=True))
    structures = dict(zip(groups, sm.input.structures, strict=True))
    files.write_configs(sm.output[0], files.config_records(ev, folders, structures))


def plot_evaluation():
    ev = pfe.load_evaluation(sm.input[0])
    for name, fig in plots.evaluation_figures(ev, sm.params.title).items():
        plots.save_figure(fig, sm.output[f"{name}_png"], sm.output[f"{name}_pdf"])


def plot_loss():
    fig = plots.loss_curves(plots.read_loss(sm.input[0]), sm.params.title)
    plots.save_figure(fig, sm.output.png, sm.output.pdf)


STEPS = {
    "evaluate_fit": evaluate_fit,
    "evaluate_test_set": evaluate_test_set,
    "evaluation_metrics": evaluation_metrics,
    "evaluation_perconfig": evaluation_perconfig,
    "evaluation_peratom": evaluation_peratom,
    "evaluation_configs": evaluation_configs,
    "plot_evaluation": plot_evaluation,
    "plot_loss": plot_loss,
}
run_rule(rule_step(sm.rule, STEPS), sm.log[0])
