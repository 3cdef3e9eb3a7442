"""Descriptor rules (compute_descriptors, test_set_descriptors): one group's SNAP descriptors."""

import json

from potflow.descriptors.compute import compute_group_descriptors
from potflow.workflow.rulescript import run_rule

sm = snakemake  # noqa: F821


def body():
    # params.settings holds only what the descriptors depend on, as canonical JSON, so
    # editing a training parameter or reordering keys never reruns this job
    settings = json.loads(sm.params.settings)
    meta = compute_group_descriptors(settings, sm.input[0], sm.output[0], sm.wildcards.group)
    print(
        f"{meta['group']}: {meta['num_configs']} configs, {meta['num_atoms']} atoms, "
        f"{meta['num_grad_rows']} gradient rows, {meta['seconds']} s"
    )


run_rule(body, sm.log[0])
