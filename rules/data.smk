rule import_group:
    """Read one group's raw data (FitSNAP JSON folder or extended XYZ) into a canonical file."""
    input:
        group_input_files,
    output:
        f"{RESULTS}/data/{{group}}.npz",
    log:
        f"{RESULTS}/logs/import/{{group}}.log",
    conda:
        "../envs/potflow.yaml"
    threads: 1
    resources:
        mem_mb=lambda w, input: 1000 + 10 * int(input.size_mb),
        runtime=15,
    params:
        source=lambda w: str(pfgroups.group_source(DATA_DIR, SCRAPER, w.group)),
        scraper=SCRAPER,
        elements=pfconfig.elements(POTFLOW),
        min_distance=POTFLOW["descriptors"]["min_distance"],
    script:
        "../workflow_scripts/import_group.py"
