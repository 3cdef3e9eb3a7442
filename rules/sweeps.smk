# Several fits (`fits:` / `sweep:` in the config): the table of their settings and the
# leaderboard that compares them. Both are made when there is more than one fit, and can be
# asked for by name otherwise (`snakemake leaderboard`, `snakemake fits_table`).


# fit -> the files its leaderboard row is read from
LEADERBOARD_SOURCES = {
    fit: layout.leaderboard_sources(
        fit,
        METRICS,
        committee_members(fit),
        cfg["md"]["enabled"],
        bool(fit_property_kinds(fit)),
    )
    for fit, cfg in FITS.items()
}
# a benchmark file is written by its training job: depend on that job's model
LEADERBOARD_INPUTS = sorted(
    set(
        path
        for src in LEADERBOARD_SOURCES.values()
        for path in [
            src["metrics"],
            src["model"],
            src["md_summary"],
            src["md_committee"],
            src["properties"],
            *src["members"],
        ]
        if path
    )
)


rule fits_table:
    """The fits of a sweep: their differing settings (fits.tsv) and full configs (fits.yaml)."""
    output:
        table=layout.fits_table("tsv"),
        configs=layout.fits_table("yaml"),
    log:
        layout.sweeps_log("fits_table"),
    localrule: True
    conda:
        "../envs/potflow.yaml"
    params:
        fits=FITS,
    script:
        "../workflow_scripts/sweeps.py"


rule leaderboard:
    """Every fit's errors, cost and MD checks in one table (TSV, Markdown) and one figure."""
    input:
        LEADERBOARD_INPUTS,
    output:
        tsv=layout.leaderboard("tsv"),
        md=layout.leaderboard("md"),
        html=report(
            layout.leaderboard("html"),
            caption="../report/leaderboard_table.rst",
            category="Leaderboard",
            labels={"figure": "table"},
        ),
        png=report(
            layout.leaderboard("png"),
            caption="../report/leaderboard.rst",
            category="Leaderboard",
            labels={"figure": "comparison"},
        ),
        pdf=layout.leaderboard("pdf"),
    log:
        layout.sweeps_log("leaderboard"),
    conda:
        "../envs/potflow.yaml"
    params:
        sources=LEADERBOARD_SOURCES,
        settings=pfsweeps.varying_settings(FITS),
        committee={f: pfsweeps.committee_size(c) for f, c in FITS.items()},
        sort_by=POTFLOW["leaderboard"]["sort_by"],
    script:
        "../workflow_scripts/sweeps.py"
