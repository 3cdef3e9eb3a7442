"""Export rules: the selected model as LAMMPS ML-IAP files, an include file and TorchScript
(export_lammps), and a linear fit as pair_style snap files (export_snap)."""

from pathlib import Path

from potflow.lammps.export import export_model_file
from potflow.lammps.inputs import SNAP_SUFFIXES, SUFFIXES, export_paths
from potflow.lammps.snap import export_snap_model_file
from potflow.workflow.rulescript import run_rule

sm = snakemake  # noqa: F821


def body():
    snap = sm.rule == "export_snap"
    out_dir = Path(sm.output.include).parent
    expected = export_paths(out_dir, sm.wildcards.potential, SNAP_SUFFIXES if snap else SUFFIXES)
    assert all(str(expected[k]) == str(sm.output[k]) for k in expected), "output names out of step"
    export = export_snap_model_file if snap else export_model_file
    record = export(sm.input[0], sm.params.config, out_dir, sm.wildcards.potential)
    print(f"exported {record['exported_model']} ({record['model_info']}) to {out_dir}")
    print(f"self-check against torch through LAMMPS: {record['self_check']}")


run_rule(body, sm.log[0])
