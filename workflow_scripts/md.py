"""MD rule: NVE molecular dynamics in LAMMPS with the exported potential, checked against torch."""

import os

from potflow.lammps.md import validate_exported
from potflow.workflow.rulescript import run_rule

sm = snakemake  # noqa: F821
os.environ.setdefault("OMP_NUM_THREADS", "1")


def body():
    outputs = {k: sm.output[k] for k in ("thermo", "summary", "text", "plot", "trajectory")}
    validate_exported(
        sm.params.config,
        sm.input.model,
        sm.input.include,
        outputs,
        sm.log.lammps,
        split_tsv=sm.input.split,
        data_files=list(sm.input.data),
    )


run_rule(body, sm.log.rule)
