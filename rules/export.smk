# Export: the selected model as the files LAMMPS runs (ML-IAP, an include file, TorchScript).


# One exported file of a fit's potential (outfile.potential), kind: model, include, ...
exported = lambda fit, kind: layout.exported(
    fit, FITS[fit]["outfile"]["potential"], kind
)
exported_snap = lambda fit, kind: layout.exported_snap(
    fit, FITS[fit]["outfile"]["potential"], kind
)


rule export_lammps:
    """The selected model (model.pt) as LAMMPS ML-IAP files, an include file and TorchScript."""
    input:
        layout.model("{fit}"),
    output:
        model=layout.exported("{fit}", "{potential}", "model"),
        descriptor=layout.exported("{fit}", "{potential}", "descriptor"),
        include=layout.exported("{fit}", "{potential}", "include"),
        torchscript=layout.exported("{fit}", "{potential}", "torchscript"),
        record=layout.exported("{fit}", "{potential}", "record"),
    log:
        layout.export_log("{fit}", "{potential}"),
    conda:
        "../envs/potflow.yaml"
    threads: 1
    params:
        config=lambda w: FITS[w.fit],
    script:
        "../workflow_scripts/export.py"


rule export_snap:
    """A linear fit (solver SVD or RIDGE) as FitSNAP's pair_style snap files, checked in LAMMPS."""
    input:
        layout.model("{fit}"),
    output:
        coeff=layout.exported_snap("{fit}", "{potential}", "coeff"),
        param=layout.exported_snap("{fit}", "{potential}", "param"),
        include=layout.exported_snap("{fit}", "{potential}", "include"),
        record=layout.exported_snap("{fit}", "{potential}", "record"),
    log:
        layout.export_log("{fit}", "{potential}.snap"),
    conda:
        "../envs/potflow.yaml"
    threads: 1
    params:
        config=lambda w: FITS[w.fit],
    script:
        "../workflow_scripts/export.py"


# {potential}.snap.mod would also match export_lammps's {potential}.mod (potential "X.snap")
ruleorder: export_snap > export_lammps
