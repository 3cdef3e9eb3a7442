"""Linear SNAP fitted exactly: a streamed QR of the weighted design matrix, then SVD or ridge.

Model, per element e: E_atom = beta_e . B_i + beta0_e (beta0_e plays FitSNAP's bzero/offset
role); a configuration's energy is the sum over its atoms; F_j^a = -sum_i beta_e(i) . dB_i/dR_j^a
(the constants carry no force). Targets are the folders' ``energy_target`` and ``force_target``
(DFT minus the reference potential).

What is minimised, over the selected configurations m (N_m atoms):

  S = sum_m [ w^E_m ((E_pred_m - E_m) / N_m)^2 + w^F_m / (3 N_m) sum_i |F_pred_mi - F_mi|^2
              + w^V_m / 6 sum_v (S_pred_mv - S_mv)^2 ]
      + alpha |beta|^2                                  (RIDGE only; the constants are not penalised)

with S_mv the stress (pressure tensor, bar, Voigt v = xx yy zz yz xz xy) of folders that store
stresses; S_pred_mv = -(1/V_m) sum_i beta_e(i) . dB_i/d(strain_v), in bar.

i.e. M times the loss of ``potflow/training/loss.py`` (its 1/M factor dropped). Each
configuration gives one energy row (energy per atom, weight sqrt(w^E_m) / N_m on the total) and
3 N_m force rows (weight sqrt(w^F_m / (3 N_m))) and 6 stress rows (weight sqrt(w^V_m / 6));
rows of zero weight are left out. ``weighted_rows`` is the one place that turns a configuration
into rows.

The normal equations are never formed (they square the condition number): the triangular factor
of the augmented matrix [A | b] is updated block by block, ``R = qr(vstack([R, block]))``, so
memory is O(P^2 + one block) with P = n_elements (K + 1) unknowns. Its last column holds Q^T b
and its corner the norm of the least-squares residual.
"""

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from potflow.config.load import LINEAR_SOLVERS as SOLVERS
from potflow.data.structures import EV_PER_A3_IN_BAR
from potflow.descriptors.folders import config_virial, has_stress, open_group, release_pages
from potflow.errors import PotflowInputError

RCOND = 1.0e-13  # singular values below RCOND * s_max are dropped (FitSNAP's SVD: lstsq, 1e-13)
DEFAULT_BLOCK_MB = 2048  # rows read at once when no memory budget is given


@dataclass
class LinearCoefficients:
    """A linear SNAP fit: per element beta (n_elements, K) and beta0 (n_elements,)."""

    elements: list
    beta: np.ndarray
    beta0: np.ndarray
    solver: str = "SVD"
    alpha: float = 0.0
    rcond: float = RCOND
    rank: int = 0
    singular_values: np.ndarray = field(default_factory=lambda: np.zeros(0))
    residual_norm: float = 0.0  # sqrt(S) without the ridge term, at the solution
    energy_rows: int = 0
    force_rows: int = 0
    stress_rows: int = 0
    configs: int = 0  # configurations that gave rows

    @property
    def loss(self):
        """The weighted loss of ``potflow/training/loss.py`` at the solution (S / M, no ridge term)."""
        return self.residual_norm**2 / max(self.configs, 1)


class StreamedLeastSquares:
    """min |A x - b| for A given in row blocks; keeps only the triangular factor of [A | b]."""

    def __init__(self, n_params):
        self.n_params = int(n_params)
        self.r_aug = np.zeros((0, self.n_params + 1))
        self.rows = 0

    def add(self, a, b):
        """Append rows ``a`` (n, P) with right-hand side ``b`` (n,)."""
        if len(a) == 0:
            return
        # one array [R; a | b] (not a stack of copies): the QR's own copy is the other
        stacked = np.empty((len(self.r_aug) + len(a), self.n_params + 1))
        stacked[: len(self.r_aug)] = self.r_aug
        stacked[len(self.r_aug) :, :-1] = a
        stacked[len(self.r_aug) :, -1] = b
        self.r_aug = np.linalg.qr(stacked, mode="r")
        self.rows += len(a)

    def factors(self):
        """R (P, P), Q^T b (P,) and the least-squares residual norm rho."""
        p = self.n_params
        full = np.zeros((p + 1, p + 1))
        full[: len(self.r_aug)] = self.r_aug[: p + 1]
        return full[:p, :p], full[:p, p], abs(full[p, p])

    def solve(self, rcond=RCOND, ridge=None):
        """Minimum-norm solution from the SVD of R (singular values <= rcond s_max dropped).

        ``ridge`` (P,) adds diag(ridge) rows with zero right-hand side (sqrt(alpha) on beta).
        Returns x, rank, singular values and |A x - b| (without the ridge rows).
        """
        r0, qtb0, rho = self.factors()
        r, qtb = r0, qtb0
        if ridge is not None:
            r = np.vstack([r0, np.diag(ridge)])
            qtb = np.concatenate([qtb0, np.zeros(len(ridge))])
        u, s, vt = np.linalg.svd(r, full_matrices=False)
        keep = s > rcond * s[0] if len(s) and s[0] > 0 else np.zeros(len(s), bool)
        x = vt[keep].T @ ((u[:, keep].T @ qtb) / s[keep])
        misfit = np.sqrt(np.sum((r0 @ x - qtb0) ** 2) + rho**2)
        return x, int(keep.sum()), s, float(misfit)


def _selected(select, m_total, folder):
    """Indices of the chosen configurations from a boolean mask, an index list or None (all)."""
    if select is None:
        return np.arange(m_total)
    sel = np.asarray(select)
    if sel.dtype == bool:
        if sel.shape != (m_total,):
            raise PotflowInputError(folder, f"select: boolean mask of shape {sel.shape}, want ({m_total},)")
        return np.flatnonzero(sel)
    sel = sel.astype(np.int64).ravel()
    if sel.size and (sel.min() < 0 or sel.max() >= m_total):
        raise PotflowInputError(folder, f"select: configuration index out of range 0..{m_total - 1}")
    return sel


def _per_config(weights, m_total, folder, name):
    w = np.broadcast_to(np.asarray(1.0 if weights is None else weights, float), (m_total,))
    if not np.all(np.isfinite(w)) or (w < 0).any():
        raise PotflowInputError(folder, f"{name}: weights must be finite and >= 0")
    return w


def config_rows(arrays, m, n_elements, atom_start, with_forces=True):
    """Unweighted design rows of configuration m: energy row (P,) and force rows (3N, P)
    (None without ``with_forces``).

    Column layout: element e owns columns e (K + 1) .. e (K + 1) + K (beta_e, then beta0_e).
    The energy row is the total energy's; divide by N for energy per atom.
    """
    n = int(arrays["natoms"][m])
    a0 = atom_start[m]
    b = np.asarray(arrays["descriptors"][a0 : a0 + n], float)
    t = np.asarray(arrays["atom_types"][a0 : a0 + n], np.int64)
    k = b.shape[1]
    energy = np.zeros((n_elements, k + 1))
    np.add.at(energy, (t, slice(None, k)), b)
    np.add.at(energy[:, k], t, 1.0)
    if not with_forces:
        return energy.ravel(), None
    p0, p1 = arrays["grad_ptr"][m], arrays["grad_ptr"][m + 1]
    g = np.asarray(arrays["grad_values"][p0:p1], float)
    idx = np.asarray(arrays["grad_index"][p0:p1], np.int64)
    force = np.zeros((3 * n, n_elements, k + 1))
    np.add.at(force, (3 * idx[:, 1] + idx[:, 2], t[idx[:, 0]], slice(None, k)), -g)
    return energy.ravel(), force.reshape(3 * n, -1)


def stress_rows(arrays, m, n_elements):
    """Unweighted stress rows (6, P) of configuration m (bar: S_v = row_v . x) and its stress
    target (6,) (NaN where the configuration has none)."""
    virial, volume, target = config_virial(arrays, m)
    n = len(virial)
    a0 = int(np.asarray(arrays["natoms"][:m]).sum())
    t = np.asarray(arrays["atom_types"][a0 : a0 + n], np.int64)
    k = virial.shape[2]
    rows = np.zeros((6, n_elements, k + 1))
    for e in range(n_elements):
        rows[:, e, :k] = virial[t == e].sum(axis=0)
    return (-EV_PER_A3_IN_BAR / volume) * rows.reshape(6, -1), target


def weighted_rows(arrays, m, n_elements, atom_start, w_energy, w_force, energy_shift=0.0, w_virial=0.0):
    """The weighted rows (n, P) and right-hand sides (n,) of configuration m, and how many of
    them are energy, force and stress rows: the loss's terms as least-squares rows.

    ``energy_shift`` is added to the stored energy target (eshift: sum of the atoms' shifts).
    ``w_virial`` > 0 needs a folder with stresses (``config_virial``).
    """
    n = int(arrays["natoms"][m])
    e_row, f_rows = config_rows(arrays, m, n_elements, atom_start, w_force > 0)
    rows, rhs, n_e, n_f, n_v = [], [], 0, 0, 0
    if w_energy > 0:
        s = np.sqrt(w_energy) / n
        rows.append(s * e_row[None])
        rhs.append([s * (float(arrays["energy_target"][m]) + energy_shift)])
        n_e = 1
    if w_force > 0:
        s = np.sqrt(w_force / (3 * n))
        rows.append(s * f_rows)
        rhs.append(s * np.asarray(arrays["force_target"][atom_start[m] : atom_start[m] + n], float).ravel())
        n_f = 3 * n
    if w_virial > 0:
        v_rows, target = stress_rows(arrays, m, n_elements)
        s = np.sqrt(w_virial / 6)
        rows.append(s * v_rows)
        rhs.append(s * target)
        n_v = 6
    if not rows:
        return None, None, 0, 0, 0
    return np.vstack(rows), np.concatenate(rhs), n_e, n_f, n_v


def block_rows(n_params, memory_mb=None):
    """Rows of the design matrix read at once: the block, its copy in the QR and the triangular
    factor (8-byte floats, about 4 copies) within ``memory_mb`` (``memory_budget_mb``)."""
    budget = (memory_mb or DEFAULT_BLOCK_MB) * 2**20
    return max(256, int(budget // (4 * 8 * (n_params + 1))))


def fit_linear(folders, select=None, energy_weights=None, force_weights=None, solver="SVD",
               alpha=0.0, rcond=RCOND, configs_per_block=None, memory_mb=None, eshift=None,
               virial_weights=None):  # fmt: skip
    """Exact linear SNAP fit on descriptor folders; returns ``LinearCoefficients``.

    ``select``, ``energy_weights``, ``force_weights``: one entry per folder (a boolean mask or
    index list of configurations; an array (M,) or a number of w^E_m, w^F_m), or None for all
    configurations and weight 1. ``solver``: SVD (minimum norm, rcond) or RIDGE (alpha >= 0).
    Rows are read in blocks of ``configs_per_block`` configurations, or else of about
    ``memory_mb`` MB (``block_rows``). ``eshift`` (n_elements,): per-element energy shifts added
    to the energy targets (the config's eshift section), as the network's targets have them.
    ``virial_weights`` (like ``force_weights``, default 0): w^V_m of the stress rows, which need
    folders that store stresses.
    """
    if solver not in SOLVERS:
        raise PotflowInputError("solver", f"unknown solver {solver!r}; linear fits know {', '.join(SOLVERS)}")
    if not np.isfinite(alpha) or alpha < 0:
        raise PotflowInputError("alpha", f"ridge alpha must be >= 0, got {alpha}")
    folders = [Path(f) for f in folders]
    if not folders:
        raise PotflowInputError("folders", "no descriptor folders given")
    per = lambda v: [None] * len(folders) if v is None else list(v)  # noqa: E731
    select, energy_weights, force_weights = per(select), per(energy_weights), per(force_weights)
    virial_weights = [0.0] * len(folders) if virial_weights is None else list(virial_weights)
    elements, lsq, n_e, n_f, n_v, n_conf, n_used = None, None, 0, 0, 0, 0, 0
    for folder, sel, we, wf, wv in zip(folders, select, energy_weights, force_weights, virial_weights, strict=True):
        arrays, meta = open_group(folder)
        if elements is None:
            elements, k = list(meta["elements"]), int(meta["num_descriptors"])
            lsq = StreamedLeastSquares(len(elements) * (k + 1))
            shifts = np.zeros(len(elements)) if eshift is None else np.asarray(eshift, float)
            max_rows = block_rows(lsq.n_params, memory_mb)
        elif list(meta["elements"]) != elements or int(meta["num_descriptors"]) != k:
            raise PotflowInputError(folder, f"elements/descriptors differ from {folders[0]}")
        m_total = int(meta["num_configs"])
        sel = _selected(sel, m_total, folder)
        we = _per_config(we, m_total, folder, "energy_weights")
        wf = _per_config(wf, m_total, folder, "force_weights")
        if (wf[sel] > 0).any() and not meta["settings"].get("forces", True):
            raise PotflowInputError(folder, "force_weights > 0 but the folder stores no gradients (energy-only descriptors)")
        wv = _per_config(wv, m_total, folder, "virial_weights")
        if (wv[sel] > 0).any():
            if not has_stress(meta):
                raise PotflowInputError(folder, "virial_weights > 0 but the folder stores no stresses (calculator.stress 0 or every vweight 0)")
            lacking = sel[(wv[sel] > 0) & ~np.isfinite(np.asarray(arrays["stress_target"])[sel]).all(axis=1)]
            if len(lacking):
                raise PotflowInputError(folder, f"virial_weights > 0 for configuration {int(lacking[0])}, which has no stress")
        atom_start = np.concatenate([[0], np.cumsum(arrays["natoms"])])
        types = np.asarray(arrays["atom_types"])
        n_conf += len(sel)
        rows, rhs, held, in_block = [], [], 0, 0
        for m in sel:
            shift = float(shifts[types[atom_start[m] : atom_start[m + 1]]].sum())
            a, b, e_rows, f_rows, v_rows = weighted_rows(arrays, m, len(elements), atom_start, we[m], wf[m], shift, wv[m])
            if a is not None:
                rows.append(a)
                rhs.append(b)
                held += len(a)
                n_e, n_f, n_v, n_used = n_e + e_rows, n_f + f_rows, n_v + v_rows, n_used + 1
            in_block += 1
            full = held >= max_rows if configs_per_block is None else in_block >= configs_per_block
            if rows and full:
                lsq.add(np.vstack(rows), np.concatenate(rhs))
                rows, rhs, held, in_block = [], [], 0, 0
                release_pages(arrays)  # the folder's pages read for this block
        if rows:
            lsq.add(np.vstack(rows), np.concatenate(rhs))
        release_pages(arrays)
    if n_conf == 0:
        raise PotflowInputError("select", "no configurations selected for the linear fit")
    if lsq.rows == 0:
        raise PotflowInputError("energy_weights", "every selected configuration has zero energy and force weight")
    ridge = None
    if solver == "RIDGE":
        ridge = np.tile(np.r_[np.full(k, np.sqrt(alpha)), 0.0], len(elements))
    x, rank, s, misfit = lsq.solve(rcond, ridge)
    x = x.reshape(len(elements), k + 1)
    return LinearCoefficients(
        elements=elements, beta=x[:, :k].copy(), beta0=x[:, k].copy(), solver=solver, alpha=float(alpha),
        rcond=float(rcond), rank=rank, singular_values=s, residual_norm=misfit, energy_rows=n_e, force_rows=n_f, stress_rows=n_v,
        configs=n_used,
    )  # fmt: skip


def predict(coefficients, folder, select=None):
    """Energies (M_sel,) and forces (sum N_m, 3) of a folder's configurations (targets' convention:
    without the reference potential), configurations in ``select`` order."""
    arrays, meta = open_group(folder)
    m_total = int(meta["num_configs"])
    sel = _selected(select, m_total, folder)
    x = np.hstack([coefficients.beta, coefficients.beta0[:, None]]).ravel()
    atom_start = np.concatenate([[0], np.cumsum(arrays["natoms"])])
    energies, forces = [], []
    for m in sel:
        e_row, f_rows = config_rows(arrays, m, len(coefficients.elements), atom_start)
        energies.append(e_row @ x)
        forces.append((f_rows @ x).reshape(-1, 3))
    release_pages(arrays)
    return np.array(energies), (np.concatenate(forces) if forces else np.zeros((0, 3)))
