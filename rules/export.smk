# Export: the selected model as the files LAMMPS runs (ML-IAP, an include file, TorchScript).


# One exported file of a fit's potential (outfile.potential), kind: model, include, ...
exported = lambda fit, kind: layout.exported(
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
