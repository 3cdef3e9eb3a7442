"""Score a trained model on a test set: reads model.pt, never trains."""

import torch

from potflow.evaluation.predictions import evaluate_test_set, model_info, save_evaluation
from potflow.workflow.rulescript import run_rule

sm = snakemake  # noqa: F821


def body():
    torch.set_num_threads(max(1, sm.threads))
    folders = dict(zip(sm.params.groups, sm.input.descriptors, strict=True))
    ev = evaluate_test_set(sm.params.config, sm.input.model, folders, members=list(sm.input.members))
    save_evaluation(sm.output[0], ev)
    print(f"test set {sm.wildcards.test_set}: {len(ev['natoms'])} configurations, model {model_info(ev)}")


run_rule(body, sm.log[0])
