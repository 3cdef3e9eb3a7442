rule export_lammps:
    """The selected model (model.pt) as LAMMPS ML-IAP files, an include file and TorchScript."""
    input:
        f"{RESULTS}/fits/{{fit}}/model.pt",
    output:
        model=f"{RESULTS}/fits/{{fit}}/lammps/{{potential}}.mliap.model",
        descriptor=f"{RESULTS}/fits/{{fit}}/lammps/{{potential}}.mliap.descriptor",
        include=f"{RESULTS}/fits/{{fit}}/lammps/{{potential}}.mod",
        torchscript=f"{RESULTS}/fits/{{fit}}/lammps/{{potential}}.torchscript.pt",
        record=f"{RESULTS}/fits/{{fit}}/lammps/{{potential}}.export.json",
    log:
        f"{RESULTS}/logs/export/{{fit}}/{{potential}}.log",
    wildcard_constraints:
        potential=r"[^/]+",
    conda:
        "../envs/potflow.yaml"
    threads: 1
    params:
        config=lambda w: FITS[w.fit],
    script:
        "../workflow_scripts/export_lammps.py"
