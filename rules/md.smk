rule md_validate:
    """NVE molecular dynamics in LAMMPS with the exported potential, checked against torch."""
    input:
        unpack(md_potential_files),
        model=f"{RESULTS}/fits/{{fit}}/model.pt",
        split=f"{RESULTS}/fits/{{fit}}/split.tsv",
        data=[imported(g) for g in GROUPS],
    output:
        thermo=f"{RESULTS}/fits/{{fit}}/md/thermo.tsv",
        summary=f"{RESULTS}/fits/{{fit}}/md/summary.json",
        text=f"{RESULTS}/fits/{{fit}}/md/summary.txt",
        trajectory=f"{RESULTS}/fits/{{fit}}/md/trajectory.extxyz",
        plot=report(
            f"{RESULTS}/fits/{{fit}}/md/energy_temperature.png",
            caption="../report/md_validate.rst",
            category="MD validation",
        ),
    log:
        rule=f"{RESULTS}/logs/md/{{fit}}.log",
        lammps=f"{RESULTS}/fits/{{fit}}/md/log.lammps",
    conda:
        "../envs/potflow.yaml"
    threads: 1
    params:
        config=lambda w: FITS[w.fit],
    script:
        "../workflow_scripts/md_validate.py"
