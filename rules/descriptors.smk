# Descriptors: SNAP descriptors, gradients and reference potential of each group, once per
# descriptor settings (fits that share them share the job), for training and test-set groups.
from potflow.descriptors.job_resources import descriptor_job_resources


rule compute_descriptors:
    """SNAP descriptors, gradients and reference potential of one group (one LAMMPS thread)."""
    input:
        layout.structures("{group}"),
    output:
        directory(layout.descriptors("{group}", "{dkey}")),
    log:
        layout.descriptors_log("{group}", "{dkey}"),
    conda:
        "../envs/potflow.yaml"
    threads: 1
    resources:
        # from the group's atom counts (the dense gradient array); doubled on a retry
        mem_mb=lambda w, input, attempt: attempt
        * descriptor_job_resources(input[0], POTFLOW)["mem_mb"],
        runtime=lambda w, input, attempt: attempt
        * descriptor_job_resources(input[0], POTFLOW)["runtime"],
    params:
        settings=lambda w: canonical_json(DESCRIPTOR_SETTINGS[w.dkey]),
    script:
        "../workflow_scripts/descriptors.py"


use rule compute_descriptors as test_set_descriptors with:
    input:
        layout.structures("{group}", "{test_set}"),
    output:
        directory(layout.descriptors("{group}", "{dkey}", "{test_set}")),
    log:
        layout.descriptors_log("{group}", "{dkey}", "{test_set}"),
