"""Descriptor-job resource estimates stay above the real peak memory and row count."""

import json
import subprocess
import sys

import numpy as np
import pytest
from ase.build import bulk

from potflow.config.load import prepare_config
from potflow.data.structures import import_group, load_group
from potflow.descriptors.compute import compute_group_descriptors
from potflow.descriptors.job_resources import (
    UNKNOWN,
    cutoff,
    descriptor_job_resources,
    estimated_gradient_rows,
)

ZBL = {"pair_style": "hybrid/overlay zero 10.0 zbl 4.0 4.8", "pair_coeff": ["* * zero", "* * zbl 73 73"]}


def _cfg(**extra):
    return prepare_config({"bispectrum": {"type": ["Ta"], "twojmax": 6}, "reference": ZBL, **extra})


def _bcc_group(path, repeat, configs=2, seed=0):
    """A canonical group file of displaced bcc Ta supercells (2 * repeat^3 atoms each)."""
    rng = np.random.default_rng(seed)
    atoms = [bulk("Ta", "bcc", a=3.31, cubic=True).repeat(repeat) for _ in range(configs)]
    for a in atoms:
        a.positions += rng.normal(0, 0.05, a.positions.shape)
    A = sum(len(a) for a in atoms)
    np.savez(
        path,
        natoms=np.array([len(a) for a in atoms], np.int64),
        cells=np.stack([np.array(a.cell) for a in atoms]),
        pbc=np.ones((configs, 3), bool),
        energy=np.zeros(configs),
        stress=np.full((configs, 3, 3), np.nan),
        positions=np.concatenate([a.positions for a in atoms]),
        forces=np.zeros((A, 3)),
        symbols=np.array(["Ta"] * A, dtype="U3"),
        files=np.array([f"c{m}.json" for m in range(configs)]),
    )
    return path


# VmHWM, not ru_maxrss: Linux keeps ru_maxrss across exec, so a child of a big pytest
# process would report the parent's size.
PEAK = """
import json, re, sys
from pathlib import Path
from potflow.descriptors.compute import compute_group_descriptors
compute_group_descriptors(json.loads(sys.argv[1]), sys.argv[2], sys.argv[3])
print(int(re.search(r"VmHWM:\\s+(\\d+) kB", Path("/proc/self/status").read_text()).group(1)) / 1024)
"""


def _peak_mb(cfg, npz, out):
    res = subprocess.run(
        [sys.executable, "-c", PEAK, json.dumps(cfg), str(npz), str(out)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    return float(res.stdout.split()[-1])



@pytest.fixture(scope="module")
def liquid(shared_data, tmp_path_factory):
    path = tmp_path_factory.mktemp("liquid") / "Liquid.npz"
    import_group(shared_data / "Ta_JSON" / "Liquid", "JSON", ["Ta"], path)
    return path


def test_memory_estimate_covers_the_peak(liquid, tmp_path):
    """A real group (100-atom liquid) and one where LAMMPS's dense N^2 array dominates."""
    cfg = _cfg()
    big = _bcc_group(tmp_path / "big.npz", repeat=5)  # 250 atoms: dense array ~ 0.4 GB
    for npz in (liquid, big):
        peak = _peak_mb(cfg, npz, tmp_path / f"{npz.stem}_desc")
        est = descriptor_job_resources(npz, cfg)["mem_mb"]
        assert peak < est < 4 * peak + 500, (npz.name, peak, est)


def test_row_estimate_bounds_the_stored_rows(liquid, tmp_path):
    cfg = _cfg()
    for npz in (liquid, _bcc_group(tmp_path / "small.npz", repeat=2, configs=3)):
        meta = compute_group_descriptors(cfg, npz, tmp_path / npz.stem)
        data = load_group(npz)
        est = estimated_gradient_rows(data["natoms"], data["cells"], data["pbc"], cutoff(cfg))
        assert meta["num_grad_rows"] <= est <= 1.5 * meta["num_grad_rows"], npz.name


def test_rows_never_exceed_all_pairs():
    """Two atoms in a tiny periodic cell: images fold onto the 2 atoms, so 3 * 2 * 2 rows."""
    cells = np.eye(3)[None] * 3.31
    assert estimated_gradient_rows(np.array([2]), cells, np.ones((1, 3), bool), 4.7) == 12
    # no periodicity: every atom may be a neighbour
    assert estimated_gradient_rows(np.array([5]), cells, np.zeros((1, 3), bool), 4.7) == 75


def test_bigger_groups_ask_for_more(tmp_path):
    cfg = _cfg()
    small = descriptor_job_resources(_bcc_group(tmp_path / "s.npz", 3), cfg)
    large = descriptor_job_resources(_bcc_group(tmp_path / "l.npz", 8), cfg)  # 1024 atoms
    assert large["mem_mb"] > 5 * small["mem_mb"] and large["mem_mb"] > 4000
    assert large["runtime"] >= small["runtime"] >= 10


def test_energy_only_fit_needs_no_gradient_memory(tmp_path):
    npz = _bcc_group(tmp_path / "l.npz", 8)
    with_forces = descriptor_job_resources(npz, _cfg())["mem_mb"]
    energy_only = descriptor_job_resources(npz, _cfg(pytorch={"force_weight": 0.0}))["mem_mb"]
    assert energy_only < 500 < with_forces


def test_not_yet_imported_group_gets_a_placeholder(tmp_path):
    assert descriptor_job_resources(tmp_path / "missing.npz", _cfg()) == UNKNOWN
