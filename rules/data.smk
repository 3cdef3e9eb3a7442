# Data: each group's raw files (FitSNAP JSON folder or extended XYZ) read into one canonical
# file, for the training data and for every test set (its input: group_input_files, common.smk).


rule import_group:
    """Read one group's raw data (FitSNAP JSON folder or extended XYZ) into a canonical file."""
    input:
        group_input_files,
    output:
        layout.structures("{group}"),
    log:
        layout.import_log("{group}"),
    conda:
        "../envs/potflow.yaml"
    threads: 1
    resources:
        mem_mb=lambda w: 1000 + 10 * int(pfgroups.group_size_mb(group_source(w))),
        runtime=15,
    params:
        source=lambda w: str(group_source(w)),
        scraper=lambda w: data_source(w.get("test_set"))[1],
        elements=pfconfig.elements(POTFLOW),
        min_distance=POTFLOW["descriptors"]["min_distance"],
        files=group_files_stamp,
    script:
        "../workflow_scripts/data.py"


use rule import_group as import_test_group with:
    output:
        layout.structures("{group}", "{test_set}"),
    log:
        layout.import_log("{group}", "{test_set}"),
