"""Export rule: the selected model as LAMMPS ML-IAP files, an include file and TorchScript."""

from pathlib import Path

from potflow.lammps.export import export_model_file
from potflow.lammps.inputs import export_paths
from potflow.workflow.rulescript import run_rule

sm = snakemake  # noqa: F821


def body():
    out_dir = Path(sm.output.model).parent
    expected = export_paths(out_dir, sm.wildcards.potential)
    assert all(str(expected[k]) == str(sm.output[k]) for k in expected), "output names out of step"
    record = export_model_file(sm.input[0], sm.params.config, out_dir, sm.wildcards.potential)
    print(f"exported {record['exported_model']} ({record['model_info']}) to {out_dir}")
    print(f"self-check against torch through LAMMPS: {record['self_check']}")


run_rule(body, sm.log[0])
