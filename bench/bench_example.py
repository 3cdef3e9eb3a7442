"""The bundled example (data/Ta_example) with config.yaml's settings: test errors of the network
beside those of the exact linear SNAP fit (potflow.linear.solve) of the same training configurations.

    python bench/bench_example.py [--work /tmp/potflow_bench_example] [--extra '{"optimizer": "adam"}']

The example is labelled by Ta06A, a linear SNAP on exactly these descriptors (+ the same ZBL):
the linear fit is exact, and the network should get within 1 meV/atom and 0.01 eV/A of it.
Descriptors are computed once into --work and reused; ``--extra`` overrides pytorch settings.
"""

import argparse
import contextlib
import json
import os
import time
from pathlib import Path

import numpy as np
import yaml
from measure import REPO, mae_on_test_split


def descriptor_folders(cfg, work):
    from potflow.config.groups import fit_groups
    from potflow.data.structures import import_group
    from potflow.descriptors.compute import compute_group_descriptors
    from potflow.descriptors.settings import descriptor_key

    folders = []
    for group in fit_groups(cfg):
        out = work / "descriptors" / descriptor_key(cfg) / group
        if not (out / "meta.json").exists():
            npz = work / "data" / f"{group}.npz"
            npz.parent.mkdir(parents=True, exist_ok=True)
            import_group(Path(cfg["path"]["dataPath"]) / f"{group}.xyz", "XYZ", cfg["bispectrum"]["type"], npz)
            compute_group_descriptors(cfg, npz, out, group)
        folders.append(str(out))
    return folders


def linear_test_mae(cfg, folders):
    """Energy (eV/atom) and force (eV/A) test MAE of the linear fit of the training configurations."""
    from potflow.linear.solve import predict
    from potflow.training.datasets import FitData, concat_ranges
    from potflow.training.linear_start import linear_fit_of

    data = FitData(cfg, folders)
    t0 = time.perf_counter()
    coef = linear_fit_of(data.subset("train"))
    seconds = time.perf_counter() - t0
    e_err, f_err = [], []
    for g, local, _ in data.subset("test").pieces():
        energy, forces = predict(coef, g.folder, local)
        atoms = concat_ranges(g.atom_start[local], g.natoms[local])
        e_err.append(np.abs(energy - np.asarray(g.arrays["energy_target"])[local]) / g.natoms[local])
        f_err.append(np.abs(forces - np.asarray(g.arrays["force_target"][atoms])).ravel())
    return float(np.concatenate(e_err).mean()), float(np.concatenate(f_err).mean()), seconds


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", default="/tmp/potflow_bench_example")
    ap.add_argument("--extra", default="{}", help="JSON of pytorch settings that override config.yaml's")
    args = ap.parse_args()

    from potflow.config.load import prepare_config
    from potflow.training.loop import TrainPaths, train

    work = Path(args.work)
    raw = yaml.safe_load((REPO / "config.yaml").read_text())
    raw["path"]["dataPath"] = str(REPO / "data" / "Ta_example")
    raw["pytorch"].update(json.loads(args.extra))
    cfg = prepare_config(raw)
    folders = descriptor_folders(cfg, work)
    out = work / "fit"
    paths = TrainPaths(out / "model.pt", out / "checkpoint.pt", out / "loss_vs_epochs.dat", out / "split.tsv", out / "resume.pt")
    t0 = time.perf_counter()
    with open(work / "train.log", "w") as log, contextlib.redirect_stdout(log):  # the epoch lines
        res = train(cfg, folders, paths, progress=False)
    seconds = time.perf_counter() - t0
    mae_e, mae_f, n_test = mae_on_test_split(cfg, folders, paths.model)
    lin_e, lin_f, lin_s = linear_test_mae(cfg, folders)
    tcfg = cfg["pytorch"]
    print(f"uptime: {os.popen('uptime').read().strip()}")
    print(
        f"settings: optimizer {tcfg['optimizer']}, linear_start {tcfg['linear_start']}, "
        f"{tcfg['num_epochs']} epochs, layers {tcfg['layer_sizes']} {tcfg['activation']}, {tcfg['dtype']}"
    )
    print(
        f"network: test MAE {mae_e:.3g} eV/atom, {mae_f:.3g} eV/A ({n_test} test configs; "
        f"training {seconds:.1f} s, {res['info']['selection']} epoch {res['info']['epoch']})"
    )
    print(f"linear fit: test MAE {lin_e:.3g} eV/atom, {lin_f:.3g} eV/A (solve {lin_s:.2f} s)")
    print(
        f"targets 1 meV/atom and 0.01 eV/A: energy {'met' if mae_e <= 1e-3 else 'NOT met'} "
        f"({mae_e / 1e-3:.2g} of it), force {'met' if mae_f <= 1e-2 else 'NOT met'} ({mae_f / 1e-2:.2g} of it)"
    )


if __name__ == "__main__":
    main()
