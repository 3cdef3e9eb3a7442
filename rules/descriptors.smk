rule compute_descriptors:
    """SNAP descriptors, gradients and reference potential of one group (one LAMMPS thread)."""
    input:
        f"{RESULTS}/data/{{group}}.npz",
    output:
        directory(f"{RESULTS}/descriptors/{{dkey}}/{{group}}"),
    log:
        f"{RESULTS}/logs/descriptors/{{dkey}}/{{group}}.log",
    conda:
        "../envs/potflow.yaml"
    threads: 1
    resources:
        mem_mb=descriptor_mem_mb,
        runtime=descriptor_runtime,
    params:
        settings=lambda w: canonical_json(DESCRIPTOR_SETTINGS[w.dkey]),
    script:
        "../workflow_scripts/compute_descriptors.py"
