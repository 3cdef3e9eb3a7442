"""An energy-only fit (force_weight 0) through the whole workflow: no gradient rows are
computed or stored, training and evaluation run on energies alone, and the export works."""

import json

import numpy as np
import pandas as pd
import pytest
from tiny_ta import copy_tiny_groups, tiny_config, write_config
from workflow_runs import run_workflow

from potflow.workflow import layout


@pytest.mark.slow
def test_energy_only_fit_runs_end_to_end(shared_data, tmp_path):
    """Checked to bite: with ``descriptors.settings.any_force_weight`` returning True whatever
    the weights, the gradient-row check fails; with the evaluation's ``has_forces`` forced on,
    the Force rows of the metrics get counts instead of 0."""
    groups = copy_tiny_groups(shared_data, tmp_path / "data")
    cfg = tiny_config()
    cfg["pytorch"]["force_weight"] = 0.0
    cfg["md"] = {"enabled": False}
    write_config(tmp_path / "config.yaml", cfg)
    run_workflow(tmp_path, "--cores", "2", timeout=600)

    results = tmp_path / "results"
    folders = sorted((results / "descriptors").glob("*/*/"))
    assert sorted(f.name for f in folders) == sorted(groups)
    for folder in folders:
        meta = json.loads((folder / "meta.json").read_text())
        assert meta["num_grad_rows"] == 0 and not meta["settings"]["forces"], folder
        assert np.load(folder / "grad_values.npy").shape == (0, meta["num_descriptors"])

    fit = tmp_path / layout.fit_dir("default")
    metrics = pd.read_csv(fit / cfg.get("outfile", {}).get("metrics", "metrics.dat"), sep=r"\s+")
    energy = metrics[metrics["Property"] == "Energy"]
    force = metrics[metrics["Property"] == "Force"]
    assert (energy["Count"] > 0).any() and np.isfinite(energy[energy["Count"] > 0]["MAE"]).all()
    assert (force["Count"] == 0).all() and force["MAE"].isna().all()
    loss = np.loadtxt(fit / "loss_vs_epochs.dat")
    assert loss.shape == (2, 3) and np.isfinite(loss[:, 1]).all()  # (too few configurations to validate)
    assert (fit / "plots" / "energy_parity.png").stat().st_size > 0
    assert (fit / "plots" / "force_parity.png").stat().st_size > 0
    assert len(list((fit / "lammps").glob("*.mliap.model"))) == 1
