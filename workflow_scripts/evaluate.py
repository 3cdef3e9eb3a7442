"""Evaluation rules of a fit: predictions, then FitSNAP's error files (one rule each)."""

from potflow import evaluate as pfe
from potflow.fileio import write_text
from potflow.rulescript import rule_step, run_rule

sm = snakemake  # noqa: F821


def evaluate_fit():
    import torch

    torch.set_num_threads(max(1, sm.threads))
    folders = dict(zip(sm.params.groups, sm.input.descriptors, strict=True))
    ev = pfe.evaluate_fit(
        sm.params.config, sm.input.model, sm.input.split, folders,
        members=list(sm.input.members), member_splits=list(sm.input.member_splits),
    )  # fmt: skip
    pfe.save_evaluation(sm.output[0], ev)
    info = pfe.model_info(ev)
    print(f"evaluated {len(ev['natoms'])} configurations with {info.get('model')} {info}")


def evaluation_metrics():
    ev = pfe.load_evaluation(sm.input[0])
    table = pfe.metrics_table(ev)
    pfe.write_metrics(sm.output.metrics, table)
    html = pfe.metrics_html(table, sm.params.title, pfe.metrics_notes(ev))
    write_text(sm.output.html, html)
    print(pfe.format_metrics(table))


def evaluation_perconfig():
    pfe.write_frame(sm.output[0], pfe.perconfig_frame(pfe.load_evaluation(sm.input[0])))


def evaluation_peratom():
    pfe.write_frame(sm.output[0], pfe.peratom_frame(pfe.load_evaluation(sm.input[0])))


def evaluation_configs():
    ev = pfe.load_evaluation(sm.input.evaluation)
    groups = list(ev["groups"])
    folders = dict(zip(groups, sm.input.descriptors, strict=True))
    structures = dict(zip(groups, sm.input.structures, strict=True))
    pfe.write_configs(sm.output[0], pfe.config_records(ev, folders, structures))


STEPS = {"evaluate_fit": evaluate_fit, "evaluation_metrics": evaluation_metrics, "evaluation_perconfig": evaluation_perconfig, "evaluation_peratom": evaluation_peratom, "evaluation_configs": evaluation_configs}
run_rule(rule_step(sm.rule, STEPS), sm.log[0])
