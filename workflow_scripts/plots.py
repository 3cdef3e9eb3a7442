"""Figures of one evaluation (and the loss curves of a fit), PNG and PDF."""

from potflow import plots
from potflow.evaluate import load_evaluation
from potflow.rulescript import run_rule

sm = snakemake  # noqa: F821


def plot_evaluation():
    ev = load_evaluation(sm.input[0])
    for name, fig in plots.evaluation_figures(ev, sm.params.title).items():
        plots.save_figure(fig, sm.output[f"{name}_png"], sm.output[f"{name}_pdf"])


def plot_loss():
    fig = plots.loss_curves(plots.read_loss(sm.input[0]), sm.params.title)
    plots.save_figure(fig, sm.output.png, sm.output.pdf)


run_rule(globals()[sm.rule], sm.log[0])
