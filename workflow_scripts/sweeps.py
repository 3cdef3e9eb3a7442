"""Rules about the set of fits: the fits table and the leaderboard."""

from potflow.rulescript import rule_step, run_rule

sm = snakemake  # noqa: F821


def fits_table():
    import yaml

    from potflow.fileio import atomic_path, write_text
    from potflow.sweeps import fits_table as table_of

    fits = dict(sm.params.fits)
    with atomic_path(sm.output.table) as tmp:
        table_of(fits).to_csv(tmp, sep="\t", index=False)
    write_text(sm.output.configs, yaml.safe_dump(fits, sort_keys=False))
    print(f"{len(fits)} fits: {', '.join(fits)}")


def leaderboard():
    from potflow import leaderboard as lb
    from potflow.fileio import atomic_path, write_text
    from potflow.plots import save_figure

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
        )
        for fit, src in sm.params.sources.items()
    ]
    table = lb.leaderboard_table(rows, sm.params.sort_by)
    with atomic_path(sm.output.tsv) as tmp:
        table.to_csv(tmp, sep="\t", index=False, float_format="%.6g")
    write_text(sm.output.md, lb.markdown(table, sm.params.sort_by))
    write_text(sm.output.html, lb.html(table, sm.params.sort_by))
    save_figure(lb.figure(table, sm.params.sort_by), sm.output.png, sm.output.pdf)
    print(lb.markdown(table, sm.params.sort_by))


STEPS = {"fits_table": fits_table, "leaderboard": leaderboard}
run_rule(rule_step(sm.rule, STEPS), sm.log[0])
