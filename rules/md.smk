# MD: a short NVE run in LAMMPS with the exported potential, checked against torch.


rule md_validate:
    """NVE molecular dynamics in LAMMPS with the exported potential, checked against torch."""
    input:
        # the exported potential, as LAMMPS runs it
        include=lambda w: exported(w.fit, "include"),
        network=lambda w: exported(w.fit, "model"),
        descriptor=lambda w: exported(w.fit, "descriptor"),
        model=layout.model("{fit}"),
        split=layout.split("{fit}"),
        data=structure_files(),
    output:
        thermo=layout.md_file("{fit}", "thermo"),
        summary=layout.md_file("{fit}", "summary"),
        text=layout.md_file("{fit}", "text"),
        trajectory=layout.md_file("{fit}", "trajectory"),
        plot=report(
            layout.md_file("{fit}", "plot"),
            caption="../report/md_validate.rst",
            category="MD validation",
        ),
    log:
        rule=layout.md_log("{fit}"),
        lammps=layout.lammps_log("{fit}"),
    conda:
        "../envs/potflow.yaml"
    threads: 1
    params:
        config=lambda w: FITS[w.fit],
    script:
        "../workflow_scripts/md.py"
