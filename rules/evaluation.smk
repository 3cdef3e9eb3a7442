# Evaluation of a fit and of its test sets: FitSNAP's error files, plots, report entries.
# Helpers and paths: evaluation_common.smk.


wildcard_constraints:
    evaldir=rf"{re.escape(RESULTS)}/fits/[^/]+(?:/test_sets/[^/]+)?",
    test_set=r"[^/]+",


rule import_test_group:
    """Read one group of a test set (same import as the training data, own namespace)."""
    input:
        test_set_input_files,
    output:
        f"{RESULTS}/test_sets/{{test_set}}/data/{{group}}.npz",
    log:
        f"{RESULTS}/logs/test_sets/{{test_set}}/import/{{group}}.log",
    conda:
        "../envs/potflow.yaml"
    threads: 1
    params:
        source=lambda w: str(pfgroups.group_source(*TEST_SETS[w.test_set], w.group)),
        scraper=lambda w: TEST_SETS[w.test_set][1],
        elements=pfconfig.elements(POTFLOW),
        min_distance=POTFLOW["descriptors"]["min_distance"],
    script:
        "../workflow_scripts/import_group.py"


rule test_set_descriptors:
    """Descriptors of one test-set group, with the settings of the fit(s) that score it."""
    input:
        f"{RESULTS}/test_sets/{{test_set}}/data/{{group}}.npz",
    output:
        directory(f"{RESULTS}/test_sets/{{test_set}}/descriptors/{{dkey}}/{{group}}"),
    log:
        f"{RESULTS}/logs/test_sets/{{test_set}}/descriptors/{{dkey}}/{{group}}.log",
    conda:
        "../envs/potflow.yaml"
    threads: 1
    resources:
        mem_mb=lambda w, input: 1000 + 40 * max(1, int(input.size_mb)),
    params:
        settings=lambda w: canonical_json(DESCRIPTOR_SETTINGS[w.dkey]),
    script:
        "../workflow_scripts/compute_descriptors.py"


rule evaluate_fit:
    """Float64 predictions of the selected model on every configuration of the fit's split."""
    input:
        model=f"{RESULTS}/fits/{{fit}}/model.pt",
        split=f"{RESULTS}/fits/{{fit}}/split.tsv",
        descriptors=fit_descriptor_dirs,
        members=committee_member_models,
        member_splits=committee_member_splits,
    output:
        f"{RESULTS}/fits/{{fit}}/evaluation.npz",
    log:
        f"{RESULTS}/logs/fits/{{fit}}/evaluate.log",
    conda:
        "../envs/potflow.yaml"
    threads: 1
    params:
        config=lambda w: FITS[w.fit],
        groups=GROUPS,
    script:
        "../workflow_scripts/evaluate.py"


rule evaluate_test_set:
    """Score the trained model on a test set; reads model.pt only (never trains)."""
    input:
        model=f"{RESULTS}/fits/{{fit}}/model.pt",
        descriptors=test_set_descriptor_dirs,
        members=committee_member_models,
    output:
        f"{RESULTS}/fits/{{fit}}/test_sets/{{test_set}}/evaluation.npz",
    log:
        f"{RESULTS}/logs/fits/{{fit}}/test_sets/{{test_set}}/evaluate.log",
    conda:
        "../envs/potflow.yaml"
    threads: 1
    params:
        config=lambda w: FITS[w.fit],
        groups=lambda w: TEST_GROUPS[w.test_set],
    script:
        "../workflow_scripts/evaluate_test_set.py"


rule evaluation_metrics:
    """FitSNAP's metrics file (outfile.metrics) and an HTML copy for the report."""
    input:
        "{evaldir}/evaluation.npz",
    output:
        metrics=f"{{evaldir}}/{METRICS}",
        html=report(
            "{evaldir}/metrics.html",
            caption="../report/metrics.rst",
            category="{evaldir}",
            labels={"figure": "metrics table"},
        ),
    log:
        "{evaldir}/logs/metrics.log",
    conda:
        "../envs/potflow.yaml"
    params:
        title=lambda w: f"Errors, {evaluation_title(w)}",
    script:
        "../workflow_scripts/evaluate.py"


rule evaluation_perconfig:
    """perconfig.dat (extras.dump_perconfig)."""
    input:
        "{evaldir}/evaluation.npz",
    output:
        "{evaldir}/perconfig.dat",
    log:
        "{evaldir}/logs/perconfig.log",
    conda:
        "../envs/potflow.yaml"
    script:
        "../workflow_scripts/evaluate.py"


rule evaluation_peratom:
    """peratom.dat (extras.dump_peratom)."""
    input:
        "{evaldir}/evaluation.npz",
    output:
        "{evaldir}/peratom.dat",
    log:
        "{evaldir}/logs/peratom.log",
    conda:
        "../envs/potflow.yaml"
    script:
        "../workflow_scripts/evaluate.py"


rule evaluation_configs:
    """configs.pickle (extras.dump_configs): structure, descriptors, targets, predictions."""
    input:
        unpack(evaluation_sources),
        evaluation="{evaldir}/evaluation.npz",
    output:
        "{evaldir}/configs.pickle",
    log:
        "{evaldir}/logs/configs.log",
    conda:
        "../envs/potflow.yaml"
    script:
        "../workflow_scripts/evaluate.py"


rule plot_evaluation:
    """Parity plots, per-group errors and the force-error histogram (PNG for the report, PDF)."""
    input:
        "{evaldir}/evaluation.npz",
    output:
        energy_parity_png=report(
            "{evaldir}/plots/energy_parity.png",
            caption="../report/energy_parity.rst",
            category="{evaldir}",
            labels={"figure": "energy parity"},
        ),
        force_parity_png=report(
            "{evaldir}/plots/force_parity.png",
            caption="../report/force_parity.rst",
            category="{evaldir}",
            labels={"figure": "force parity"},
        ),
        group_errors_png=report(
            "{evaldir}/plots/group_errors.png",
            caption="../report/group_errors.rst",
            category="{evaldir}",
            labels={"figure": "group errors"},
        ),
        force_error_histogram_png=report(
            "{evaldir}/plots/force_error_histogram.png",
            caption="../report/force_error_histogram.rst",
            category="{evaldir}",
            labels={"figure": "force error histogram"},
        ),
        energy_parity_pdf="{evaldir}/plots/energy_parity.pdf",
        force_parity_pdf="{evaldir}/plots/force_parity.pdf",
        group_errors_pdf="{evaldir}/plots/group_errors.pdf",
        force_error_histogram_pdf="{evaldir}/plots/force_error_histogram.pdf",
    log:
        "{evaldir}/logs/plots.log",
    conda:
        "../envs/potflow.yaml"
    params:
        title=evaluation_title,
    script:
        "../workflow_scripts/plots.py"


rule plot_loss:
    """Training and validation loss per epoch (log scale)."""
    input:
        f"{RESULTS}/fits/{{fit}}/loss_vs_epochs.dat",
    output:
        png=report(
            f"{RESULTS}/fits/{{fit}}/plots/loss_curves.png",
            caption="../report/loss_curves.rst",
            category=f"{RESULTS}/fits/{{fit}}",
            labels={"figure": "loss curves"},
        ),
        pdf=f"{RESULTS}/fits/{{fit}}/plots/loss_curves.pdf",
    log:
        f"{RESULTS}/logs/fits/{{fit}}/plot_loss.log",
    conda:
        "../envs/potflow.yaml"
    params:
        title=lambda w: f"fit {w.fit}",
    script:
        "../workflow_scripts/plots.py"
