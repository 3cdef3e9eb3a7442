# Evaluation: the selected model (and committee) predicted in float64 on an evaluation's
# configurations, then FitSNAP's error files, the figures and the report entries. An
# evaluation ({evaluation}, layout.evaluation) is a fit's own groups (split.tsv's labels) or a
# test set that played no part in the fit (all Test).

# One metrics file name for every fit (FitSNAP's outfile.metrics).
METRICS = POTFLOW["outfile"]["metrics"]
if any(cfg["outfile"]["metrics"] != METRICS for cfg in FITS.values()):
    raise PotflowInputError(
        "config", "field 'outfile.metrics' must be the same for every fit"
    )


rule evaluate_fit:
    """Float64 predictions of the selected model on every configuration of the fit's split."""
    input:
        model=layout.model("{fit}"),
        split=layout.split("{fit}"),
        descriptors=lambda w: descriptor_dirs(w.fit),
        members=committee_member_models,
        member_splits=committee_member_splits,
    output:
        layout.predictions("{fit}"),
    log:
        layout.evaluation_log("{fit}", "evaluate"),
    conda:
        "../envs/potflow.yaml"
    threads: 1
    params:
        config=lambda w: FITS[w.fit],
        groups=GROUPS,
    script:
        "../workflow_scripts/evaluation.py"


rule evaluate_test_set:
    """Score the trained model on a test set; reads model.pt only (never trains)."""
    input:
        model=layout.model("{fit}"),
        descriptors=lambda w: descriptor_dirs(w.fit, w.test_set),
        members=committee_member_models,
    output:
        layout.predictions(layout.evaluation("{fit}", "{test_set}")),
    log:
        layout.evaluation_log(layout.evaluation("{fit}", "{test_set}"), "evaluate"),
    conda:
        "../envs/potflow.yaml"
    threads: 1
    params:
        config=lambda w: FITS[w.fit],
        groups=lambda w: TEST_GROUPS[w.test_set],
    script:
        "../workflow_scripts/evaluation.py"


rule evaluation_metrics:
    """FitSNAP's metrics file (outfile.metrics) and an HTML copy for the report."""
    input:
        layout.predictions("{evaluation}"),
    output:
        metrics=layout.metrics("{evaluation}", METRICS),
        html=report(
            layout.metrics_html("{evaluation}"),
            caption="../report/metrics.rst",
            category=layout.evaluation_dir("{evaluation}"),
            labels={"figure": "metrics table"},
        ),
    log:
        layout.evaluation_log("{evaluation}", "metrics"),
    conda:
        "../envs/potflow.yaml"
    params:
        title=lambda w: f"Errors, {layout.evaluation_title(w.evaluation)}",
    script:
        "../workflow_scripts/evaluation.py"


rule evaluation_perconfig:
    """perconfig.dat (extras.dump_perconfig)."""
    input:
        layout.predictions("{evaluation}"),
    output:
        layout.error_file("{evaluation}", "dump_perconfig"),
    log:
        layout.evaluation_log("{evaluation}", "perconfig"),
    conda:
        "../envs/potflow.yaml"
    script:
        "../workflow_scripts/evaluation.py"


rule evaluation_peratom:
    """peratom.dat (extras.dump_peratom)."""
    input:
        layout.predictions("{evaluation}"),
    output:
        layout.error_file("{evaluation}", "dump_peratom"),
    log:
        layout.evaluation_log("{evaluation}", "peratom"),
    conda:
        "../envs/potflow.yaml"
    script:
        "../workflow_scripts/evaluation.py"


rule evaluation_configs:
    """configs.pickle (extras.dump_configs): structure, descriptors, targets, predictions."""
    input:
        # the descriptors and structures behind the evaluation's configurations
        descriptors=lambda w: descriptor_dirs(*layout.parse_evaluation(w.evaluation)),
        structures=lambda w: structure_files(layout.parse_evaluation(w.evaluation)[1]),
        evaluation=layout.predictions("{evaluation}"),
    output:
        layout.error_file("{evaluation}", "dump_configs"),
    log:
        layout.evaluation_log("{evaluation}", "configs"),
    conda:
        "../envs/potflow.yaml"
    script:
        "../workflow_scripts/evaluation.py"


rule plot_evaluation:
    """Parity plots (energy, force, stress), per-group errors and the force-error histogram (PNG for the report, PDF)."""
    input:
        layout.predictions("{evaluation}"),
    output:
        energy_parity_png=report(
            layout.plot("{evaluation}", "energy_parity", "png"),
            caption="../report/energy_parity.rst",
            category=layout.evaluation_dir("{evaluation}"),
            labels={"figure": "energy parity"},
        ),
        force_parity_png=report(
            layout.plot("{evaluation}", "force_parity", "png"),
            caption="../report/force_parity.rst",
            category=layout.evaluation_dir("{evaluation}"),
            labels={"figure": "force parity"},
        ),
        group_errors_png=report(
            layout.plot("{evaluation}", "group_errors", "png"),
            caption="../report/group_errors.rst",
            category=layout.evaluation_dir("{evaluation}"),
            labels={"figure": "group errors"},
        ),
        force_error_histogram_png=report(
            layout.plot("{evaluation}", "force_error_histogram", "png"),
            caption="../report/force_error_histogram.rst",
            category=layout.evaluation_dir("{evaluation}"),
            labels={"figure": "force error histogram"},
        ),
        stress_parity_png=report(
            layout.plot("{evaluation}", "stress_parity", "png"),
            caption="../report/stress_parity.rst",
            category=layout.evaluation_dir("{evaluation}"),
            labels={"figure": "stress parity"},
        ),
        energy_parity_pdf=layout.plot("{evaluation}", "energy_parity", "pdf"),
        force_parity_pdf=layout.plot("{evaluation}", "force_parity", "pdf"),
        group_errors_pdf=layout.plot("{evaluation}", "group_errors", "pdf"),
        force_error_histogram_pdf=layout.plot(
            "{evaluation}", "force_error_histogram", "pdf"
        ),
        stress_parity_pdf=layout.plot("{evaluation}", "stress_parity", "pdf"),
    log:
        layout.evaluation_log("{evaluation}", "plots"),
    conda:
        "../envs/potflow.yaml"
    params:
        title=lambda w: layout.evaluation_title(w.evaluation),
    script:
        "../workflow_scripts/evaluation.py"


rule plot_loss:
    """Training and validation loss per epoch (log scale)."""
    input:
        layout.loss_history("{fit}"),
    output:
        png=report(
            layout.plot("{fit}", layout.LOSS_FIGURE, "png"),
            caption="../report/loss_curves.rst",
            category=layout.fit_dir("{fit}"),
            labels={"figure": "loss curves"},
        ),
        pdf=layout.plot("{fit}", layout.LOSS_FIGURE, "pdf"),
    log:
        layout.evaluation_log("{fit}", layout.LOSS_FIGURE),
    conda:
        "../envs/potflow.yaml"
    params:
        title=lambda w: f"fit {w.fit}",
    script:
        "../workflow_scripts/evaluation.py"
