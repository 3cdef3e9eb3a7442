# Several fits (`fits:` / `sweep:` in the config): the table of their settings and the
# leaderboard that compares them. Both are made when there is more than one fit, and can be
# asked for by name otherwise (snakemake results/leaderboard/leaderboard.tsv).


rule fits_table:
    """The fits of a sweep: their differing settings (fits.tsv) and full configs (fits.yaml)."""
    output:
        table=f"{RESULTS}/fits.tsv",
        configs=f"{RESULTS}/fits.yaml",
    log:
        f"{RESULTS}/logs/fits_table.log",
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
        leaderboard_inputs,
    output:
        tsv=f"{RESULTS}/leaderboard/leaderboard.tsv",
        md=f"{RESULTS}/leaderboard/leaderboard.md",
        html=report(
            f"{RESULTS}/leaderboard/leaderboard.html",
            caption="../report/leaderboard_table.rst",
            category="Leaderboard",
            labels={"figure": "table"},
        ),
        png=report(
            f"{RESULTS}/leaderboard/leaderboard.png",
            caption="../report/leaderboard.rst",
            category="Leaderboard",
            labels={"figure": "comparison"},
        ),
        pdf=f"{RESULTS}/leaderboard/leaderboard.pdf",
    log:
        f"{RESULTS}/logs/leaderboard.log",
    conda:
        "../envs/potflow.yaml"
    params:
        sources=leaderboard_sources(),
        settings=pfsweeps.varying_settings(FITS),
        committee={f: pfsweeps.committee_size(c) for f, c in FITS.items()},
        sort_by=POTFLOW["leaderboard"]["sort_by"],
    script:
        "../workflow_scripts/sweeps.py"
