"""Small synthetic training data made in the tests: Lennard-Jones-labelled bcc supercells,
their descriptor folders and a small config (the ``ta``/``tawb`` fixtures of conftest.py)."""

from pathlib import Path

import numpy as np
import torch

from potflow.config.load import prepare_config
from potflow.data.structures import import_group
from potflow.descriptors.compute import compute_group_descriptors
from potflow.training.loop import TrainPaths, train


def synthetic_xyz(path, n_configs, elements, seed, repeat=2, stress=False):
    """bcc supercells with random displacements, labelled by a smooth Lennard-Jones potential
    (with ``stress``, its stress too)."""
    from ase.build import bulk
    from ase.calculators.lj import LennardJones
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.io import write

    rng = np.random.default_rng(seed)
    frames = []
    for m in range(n_configs):
        a = 3.3 * (1 + rng.uniform(-0.04, 0.04))
        atoms = bulk("Ta", "bcc", a=a, cubic=True).repeat(repeat)
        atoms.set_chemical_symbols(rng.choice(elements, len(atoms)).tolist())
        atoms.positions += rng.normal(0, 0.06 + 0.02 * (m % 3), atoms.positions.shape)
        atoms.calc = LennardJones(sigma=2.6, epsilon=0.2, rc=4.6, smooth=True)
        e, f = atoms.get_potential_energy(), atoms.get_forces()
        extra = {"stress": atoms.get_stress()} if stress else {}
        atoms.calc = SinglePointCalculator(atoms, energy=e - 8.0 * len(atoms), forces=f, **extra)
        frames.append(atoms)
    write(path, frames, format="extxyz")


def base_config(elements=("Ta",), **pytorch):
    n = len(elements)
    cfg = {
        "bispectrum": {
            "numTypes": n, "type": list(elements), "twojmax": 2, "rcutfac": 4.6,
            "wj": [1.0, 0.9][:n], "radelem": [0.5, 0.45][:n],
        },
        "groups": {"defaults": {"training_size": 0.7, "testing_size": 0.3}},
        "pytorch": {
            "layer_sizes": ["num_desc", 8, 8, 1], "learning_rate": 2e-3, "num_epochs": 4,
            "batch_size": 3, "energy_weight": 1.0, "force_weight": 1.0, "dtype": "float64",
            **pytorch,
        },
        "md": {"enabled": False},
    }  # fmt: skip
    return prepare_config(cfg)


def make_groups(root, cfg, sizes, seed=0, stress=False):
    """Descriptor folders of synthetic groups named g0, g1, ... with ``sizes`` configurations
    (with ``stress``, labelled with stresses)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    folders = []
    elements = cfg["bispectrum"]["type"]
    for k, n in enumerate(sizes):
        xyz, npz, out = root / f"g{k}.xyz", root / f"g{k}.npz", root / "desc" / f"g{k}"
        synthetic_xyz(xyz, n, elements, seed + k, stress=stress)
        import_group(xyz, "XYZ", elements, npz)
        compute_group_descriptors(cfg, npz, out, f"g{k}")
        folders.append(str(out))
    return folders


def with_pytorch(cfg, **kw):
    cfg = {k: v for k, v in cfg.items()}
    cfg["pytorch"] = {**cfg["pytorch"], **kw}
    return prepare_config(cfg)


def paths(folder):
    folder = Path(folder)
    return TrainPaths(
        folder / "model.pt", folder / "ckpt.pt", folder / "loss_vs_epochs.dat", folder / "split.tsv", folder / "resume.pt"
    )


def state(path):
    return torch.load(path, weights_only=True)


def same_weights(a, b):
    sa, sb = a["model"]["state_dict"], b["model"]["state_dict"]
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def assert_streamed_fit_equals_in_memory(cfg, folders, root):
    """Train one fit in memory and streamed from the files with a budget of 0.05 MB (far below
    one configuration's rows, so each batch is read from the files alone): the same losses and
    weights."""
    fits = {}
    for name, budget in (("m", None), ("s", 0.05)):
        one = prepare_config({**cfg, "pytorch": {**cfg["pytorch"], "memory_budget_mb": budget}})
        fits[name] = train(one, folders, paths(Path(root) / name), progress=False)
    assert fits["s"]["streamed"] and not fits["m"]["streamed"]
    np.testing.assert_allclose(np.array(fits["s"]["history"]), np.array(fits["m"]["history"]), rtol=1e-10)
    sm = torch.load(Path(root) / "m" / "ckpt.pt", weights_only=True)["model"]["state_dict"]
    ss = torch.load(Path(root) / "s" / "ckpt.pt", weights_only=True)["model"]["state_dict"]
    for k in sm:
        torch.testing.assert_close(ss[k], sm[k], rtol=1e-10, atol=1e-12)
