"""A group's descriptor folder: its arrays, meta.json, and reading them back.

A group's descriptor folder holds plain ``.npy`` files (memory-mappable) and ``meta.json``.
With M configurations, A = sum N_m atoms, K descriptors and R stored gradient rows:

  descriptors.npy (A, K) float64     B_i of every atom
  atom_types.npy  (A,)   int32       element index of every atom (order of bispectrum.type)
  natoms.npy      (M,)   int64
  energy.npy      (M,)               DFT energy (eV, total)
  ref_energy.npy  (M,)               reference-potential energy
  energy_target.npy (M,)             energy - ref_energy
  forces.npy, ref_forces.npy, force_target.npy  (A, 3)
  grad_values.npy (R, K)  gradient_dtype   dB_i / dR_j^a  (sign: +d/dR, zero rows dropped)
  grad_index.npy  (R, 3)  int32      (i, j, a), i and j counted within the configuration
  grad_ptr.npy    (M+1,)  int64      rows of configuration m: grad_ptr[m]:grad_ptr[m+1]
  files.npy       (M,)               source of each configuration

Forces follow as F_j^a = -sum_i sum_k dE/dB_ik * grad_values[(i, j, a), k].
All vectors are in the frame of the input data (LAMMPS's rotated frame is undone).
An energy-only fit (no force weight) stores R = 0 rows and LAMMPS never builds the N^2 array.

A fit with stresses (``settings["stress"]`` in meta.json; see ``fits_stress``) adds, with the
Voigt order v = xx yy zz yz xz xy and stresses as LAMMPS's pressure tensor in bar:

  virial_values.npy (6A, K) gradient_dtype  row 6 a + v: dB_a/d(strain_v) of atom a
                                            (symmetrised; reshape to (A, 6, K))
  volume.npy        (M,)    float64   cell volume (A^3)
  stress.npy        (M, 6)            DFT stress (NaN where a configuration has none)
  ref_stress.npy    (M, 6)            reference-potential pressure tensor (LAMMPS)
  stress_target.npy (M, 6)            stress - ref_stress

The model's stress is P_v = -(1/V) sum_a sum_k dE/dB_ak virial_values[6 a + v, k], converted
from eV/A^3 to bar (``config_virial`` gives one configuration's pieces). A fit without stresses
stores none of these, and its folders are byte for byte those of before.
"""

import json
from pathlib import Path

import numpy as np

from potflow.descriptors.settings import descriptor_key
from potflow.errors import PotflowInputError

META = "meta.json"


ARRAYS = (
    "descriptors", "atom_types", "natoms", "energy", "ref_energy", "energy_target", "forces",
    "ref_forces", "force_target", "grad_values", "grad_index", "grad_ptr", "files",
)  # fmt: skip


STRESS_ARRAYS = ("virial_values", "volume", "stress", "ref_stress", "stress_target")


def has_stress(meta):
    """Whether a folder (its meta.json) holds the stress arrays."""
    return bool(meta["settings"].get("stress", False))


def config_virial(arrays, m):
    """Configuration ``m`` of a folder with stresses: (dB/d(strain) (N, 6, K) float64, volume
    (A^3), stress target (6,) in bar). Its model stress is ``model_stress(dE/dB, virial, volume)``
    of ``potflow.descriptors.compute`` (also a linear model's: dE/dB_i = beta of i's element)."""
    natoms = np.asarray(arrays["natoms"], dtype=np.int64)
    a0 = int(natoms[:m].sum())
    n, K = int(natoms[m]), arrays["virial_values"].shape[1]
    virial = np.asarray(arrays["virial_values"][6 * a0 : 6 * (a0 + n)], dtype=np.float64).reshape(n, 6, K)
    return virial, float(arrays["volume"][m]), np.asarray(arrays["stress_target"][m], dtype=np.float64)


class NpyAppender:
    """A 2-d ``.npy`` file written row block by row block, never held whole in memory.

    The header is written first for zero rows and rewritten in place at the end: numpy leaves
    room in every header for the first axis to grow (``GROWTH_AXIS_MAX_DIGITS``).
    """

    def __init__(self, path, columns, dtype):
        self.path, self.columns, self.dtype = Path(path), int(columns), np.dtype(dtype)
        self.rows = 0
        self.file = open(self.path, "wb")  # noqa: SIM115 (closed by close())
        self._header()
        self.data_start = self.file.tell()

    def _header(self):
        d = {"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False, "shape": (self.rows, self.columns)}
        np.lib.format.write_array_header_1_0(self.file, d)

    def append(self, block):
        block = np.ascontiguousarray(block, dtype=self.dtype)
        if block.ndim != 2 or block.shape[1] != self.columns:
            raise ValueError(f"{self.path.name}: block of shape {block.shape}, want (n, {self.columns})")
        self.file.write(block.data)
        self.rows += len(block)

    def close(self):
        self.file.seek(0)
        self._header()
        if self.file.tell() != self.data_start:  # cannot happen with numpy's growth room; never corrupt
            raise RuntimeError(f"{self.path}: the .npy header changed size when rewritten")
        self.file.close()


def read_meta(folder):
    path = Path(folder) / META
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise PotflowInputError(path, f"not a potflow descriptor folder ({exc})") from None


def open_group(folder, cfg=None, mmap=True):
    """Arrays of a descriptor folder (memory-mapped by default) and its meta.

    With ``cfg``, refuses a folder computed with other descriptor settings.
    """
    folder = Path(folder)
    meta = read_meta(folder)
    if cfg is not None:
        want = descriptor_key(cfg)
        if meta.get("descriptor_key") != want:
            raise PotflowInputError(
                folder,
                f"descriptor files were computed with other settings (key {meta.get('descriptor_key')}, "
                f"config gives {want}); rerun the descriptor rule",
            )
    mode = "r" if mmap else None
    arrays = {}
    for name in ARRAYS + (STRESS_ARRAYS if has_stress(meta) else ()):
        try:
            arrays[name] = np.load(folder / f"{name}.npy", mmap_mode=mode, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise PotflowInputError(folder / f"{name}.npy", f"unreadable descriptor array: {exc}") from None
    return arrays, meta


def release_pages(arrays):
    """Drop the mapped pages of ``open_group``'s arrays read so far from this process (the page
    cache keeps them): a pass over a large folder then holds only what it reads next."""
    import mmap as _mmap

    for arr in arrays.values():
        mm = getattr(arr, "_mmap", None)
        if mm is not None and hasattr(mm, "madvise"):
            mm.madvise(_mmap.MADV_DONTNEED)
