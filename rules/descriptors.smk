rule compute_descriptors:
    """SNAP descriptors, gradients and reference potential of one group (one LAMMPS thread)."""
    input:
        f"{RESULTS}/data/{{group}}.npz",
    output:
        directory(f"{RESULTS}/descriptors/{{dkey}}/{{group}}"),
    log:
        f"{RESULTS}/logs/descriptors/{{dkey}}/{{group}}.log",
    threads: 1
    resources:
        mem_mb=lambda w, input: 1000 + 40 * max(1, int(input.size_mb)),
    script:
        "../workflow_scripts/compute_descriptors.py"
