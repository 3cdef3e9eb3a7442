"""Rules about the set of fits: the fits table and the leaderboard.

Each step imports what its rule needs: the fits table, a local rule, loads no plotting library.
"""

from potflow.workflow.rulescript import rule_step, run_rule

sm = snakemake  # noqa: F821


def fits_table():
    import yaml

    from potflow.config.sweeps import fits_table as table_of
    from potflow.fileio import write_text, write_tsv

    fits = dict(sm.params.fits)
    write_tsv(sm.output.table, table_of(fits))
    write_text(sm.output.configs, yaml.safe_dump(fits, sort_keys=False))
    print(f"{len(fits)} fits: {', '.join(fits)}")


def leaderboard():
    from potflow.evaluation import leaderboard as lb
    from potflow.evaluation.plots import save_figure
    from potflow.fileio import write_text, write_tsv

    rows = [
        lb.fit_row(
            fit,
            src["metrics"],
            src["model"],
            src["benchmarks"],
            src["md_summary"],
            src["md_committee"],
            settings=sm.params.settings[fit],
            committee=sm.params.committee[fit],
            properties=src["properties"],
        )
        for fit, src in sm.params.sources.items()
    ]
    table = lb.leaderboard_table(rows, sm.params.sort_by)
    write_tsv(sm.output.tsv, table, "%.6g")
    write_text(sm.output.md, lb.markdown(table, sm.params.sort_by))
    write_text(sm.output.html, lb.html(table, sm.params.sort_by))
    save_figure(lb.figure(table, sm.params.sort_by), sm.output.png, sm.output.pdf)
    print(lb.markdown(table, sm.params.sort_by))


STEPS = {"fits_table": fits_table, "leaderboard": leaderboard}
run_rule(rule_step(sm.rule, STEPS), sm.log[0])
