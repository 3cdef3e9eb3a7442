"""Evaluation rules of a fit: predictions, then FitSNAP's error files (one rule each)."""

from potflow.evaluation import error_files as files
from potflow.evaluation import predictions as pfe
from potflow.fileio import write_text
from potflow.workflow.rulescript import rule_step, run_rule

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


STEPS = {"evaluate_fit": evaluate_fit, "evaluation_metrics": evaluation_metrics, "evaluation_perconfig": evaluation_perconfig, "evaluation_peratom": evaluation_peratom, "evaluation_configs": evaluation_configs}
run_rule(rule_step(sm.rule, STEPS), sm.log[0])
