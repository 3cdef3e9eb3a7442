"""The loss of a batch and of a whole set.

Loss of a batch of M configurations (targets after the reference potential and eshift):

  L = (1/M) sum_m [ w^E_m ((E_pred_m - E_m) / N_m)^2 + w^F_m / (3 N_m) sum_i |F_pred_mi - F_mi|^2
                    + w^V_m / 6 sum_v (S_pred_mv - S_mv)^2 ]

with S the 6 Voigt components (xx yy zz yz xz xy) of the pressure tensor in bar (FitSNAP JSON's
unit and sign; the stress term exists only in a fit with stresses).

``pytorch.weight_decay`` (lambda) adds lambda/2 sum W^2 over the networks' weight matrices (not
their biases) to the loss that is minimised: L2 regularisation, torch's weight-decay convention.
"""

import warnings

import numpy as np
import torch

from potflow.training.collectives import sum_across

_csr_warning_spent = False


def _spend_csr_beta_warning():
    """torch warns once per process that CSR tensors are in beta (the products used here are
    plain sparse-dense ones, stable since torch 2.0): an empty CSR tensor made under a filter
    spends that warning, so the products need no ``catch_warnings`` each (which cost more than
    the product)."""
    global _csr_warning_spent
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta state")
        torch.sparse_csr_tensor(torch.zeros(1, dtype=torch.int64), torch.zeros(0, dtype=torch.int64), torch.zeros(0), size=(0, 0), check_invariants=False)
    _csr_warning_spent = True


def _rows_by_atom(batch, values, n_atoms, n_rows):
    """The CSR matrix (atoms i × gradient rows) of a batch's rows, with ``values``."""
    if not _csr_warning_spent:
        _spend_csr_beta_warning()
    return torch.sparse_csr_tensor(batch.row_ptr, batch.row_col, values, size=(n_atoms, n_rows), check_invariants=False)


def row_contributions(dedb, rows, batch):
    """dE/dB_i . rows[r] of each gradient row r of a batch (in the order of ``batch.row_ja``):
    a sampled dense product on the CSR pattern of the rows by atom where the batch has one
    (one pass over the rows, no gathered copy of dE/dB), else a gather."""
    if batch.row_ptr is None:
        return (dedb.index_select(0, batch.row_i) * rows).sum(1)
    pattern = _rows_by_atom(batch, rows.new_zeros(rows.shape[0]), dedb.shape[0], rows.shape[0])
    return torch.sparse.sampled_addmm(pattern, dedb, rows.t(), beta=0.0).values()


def rows_adjoint(c_bar, rows, batch, like):
    """sum_r c_bar[r] rows[r] over each atom i's rows, (A, K): the adjoint of
    ``row_contributions`` (a sparse-dense product on the CPU, index_add elsewhere)."""
    if batch.row_ptr is None:
        return torch.zeros_like(like).index_add_(0, batch.row_i, rows * c_bar[:, None])
    return _rows_by_atom(batch, c_bar, like.shape[0], rows.shape[0]) @ rows


def config_sums(batch, per_atom):
    """Per-configuration sums of a per-atom quantity (A, ...) -> (M, ...)."""
    out = per_atom.new_zeros((batch.n_configs, *per_atom.shape[1:]))
    return out.index_add(0, batch.atom_config, per_atom)


def predicted_stress(dedx, batch):
    """P_mv = sum_(i in m) dE/dx_i . virial_iv (M, 6), in bar (virial pre-scaled, see PreparedSet)."""
    return config_sums(batch, torch.einsum("ak,avk->av", dedx, batch.virial))


def predicted_forces(dedb, rows, batch):
    """F_ja = sum of dE/dB_i . rows[r] over the rows r of (j, a), flattened (3 N_batch,)."""
    return dedb.new_zeros(batch.force.shape[0]).index_add(0, batch.row_ja, row_contributions(dedb, rows, batch))


def batch_loss_sum(model, batch, grad):
    """Sum over the batch's configurations of the per-configuration loss (0-d tensor)."""
    forces = batch.row_ids is not None
    stress = batch.virial is not None
    e_atom, dedx = model.standardised_energy_and_gradient(batch.x, batch.counts, need_gradient=forces or stress)
    stress_term = None
    if stress:
        ds = predicted_stress(dedx, batch) - batch.stress
        stress_term = torch.dot(batch.w_stress, (ds * ds).sum(1))
    if forces and batch.grad_scale is not None:  # raw rows (streamed): dE/dB = dE/dx / scale
        dedx = dedx * batch.grad_scale
    de = config_sums(batch, e_atom) - batch.energy
    total = torch.dot(batch.w_energy, de * de)
    if forces:
        df = predicted_forces(dedx, batch.rows_of(grad), batch) - batch.force
        total = total + torch.dot(batch.w_force, df * df)
    if stress_term is not None:
        total = total + stress_term
    return total


@torch.no_grad()
def add_weight_penalty_gradient(model, weight_decay):
    """Add the gradient lambda W of the L2 penalty lambda/2 sum W^2 to the ``.grad`` of each
    weight matrix of the model's networks (not their biases); return the penalty (float). A
    linear path the model holds (``hold_linear_path``) is left out (its output weight is large,
    and a large constant in the loss drowns the line search's differences in float32)."""
    masks = getattr(model, "held_masks", {})
    total = 0.0
    for name, w in model.named_parameters():
        if name.endswith("weight"):
            free = w * masks[id(w)] if id(w) in masks else w
            total = total + (free * free).sum()
            step = weight_decay * free  # d/dW of lambda/2 (mask W)^2, the mask being 0 or 1
            w.grad = step if w.grad is None else w.grad + step
    return 0.5 * weight_decay * float(total)


def batch_loss_backward(model, batch, grad, factor):
    """``factor`` times ``batch_loss_sum`` (0-d tensor), with its gradient with respect to the
    model's parameters added to their ``.grad``: what ``(factor * batch_loss_sum).backward()``
    gives, with the chain rule written out (``AtomicEnergyModel.accumulate_gradients``), so
    that no autograd graph is built. dL/dE_atom and dL/d(dE/dx) are found here from the
    residuals; the model carries them through its layers."""
    forces = batch.row_ids is not None
    stress = batch.virial is not None
    if not (forces or stress):  # energies only: autograd's single backward is all it takes
        with torch.enable_grad():
            loss = batch_loss_sum(model, batch, grad) * factor
            loss.backward()
        return loss.detach()
    # inference mode skips autograd's bookkeeping (version counters, dispatch) on each of the
    # step's ~80 small operations; its gradients are only read by the optimiser, never recorded
    with torch.inference_mode():
        return _written_out_loss_backward(model, batch, grad, factor, forces, stress)


def _written_out_loss_backward(model, batch, grad, factor, forces, stress):
    e_atom, dedx, tapes = model.standardised_energy_gradient_tape(batch.x, batch.counts)
    de = config_sums(batch, e_atom) - batch.energy
    wde = batch.w_energy * de
    total = torch.dot(wde, de)
    # dL/dE_atom: every atom of configuration m carries 2 w^E_m (E_pred_m - E_m)
    e_bar = (wde * (2.0 * factor)).index_select(0, batch.atom_config)
    g_bar = None
    if stress:
        ds = predicted_stress(dedx, batch) - batch.stress
        wds = batch.w_stress[:, None] * ds
        total = total + (wds * ds).sum()
        p_bar = (wds * (2.0 * factor)).index_select(0, batch.atom_config)
        g_bar = torch.einsum("av,avk->ak", p_bar, batch.virial)
    if forces:  # F_ja = sum_rows dE/dB_i . rows, dE/dB = dE/dx (times grad_scale for raw rows)
        dedb = dedx if batch.grad_scale is None else dedx * batch.grad_scale
        rows = batch.rows_of(grad)
        df = predicted_forces(dedb, rows, batch) - batch.force
        wdf = batch.w_force * df
        total = total + torch.dot(wdf, df)
        # dL/d(contrib_row) = 2 w^F (F_pred - F) at the row's (j, a); dL/dB_i sums rows over i
        c_bar = (wdf * (2.0 * factor)).index_select(0, batch.row_ja)
        f_bar = rows_adjoint(c_bar, rows, batch, dedx)
        if batch.grad_scale is not None:
            f_bar = f_bar * batch.grad_scale
        g_bar = f_bar if g_bar is None else g_bar + f_bar
    model.accumulate_gradients(tapes, e_bar, g_bar)
    return total * factor


@torch.inference_mode()
def set_loss_sum(model, store, batch_size=None):
    """Sum of the per-configuration losses over a store (0 when it is empty); no graph is built."""
    total = 0.0
    if store is None or len(store) == 0:
        return total
    model.eval()
    order = np.arange(len(store))
    for prepared, batches in store.epoch(order, batch_size or len(store)):
        for b in batches:
            total = total + batch_loss_sum(model, b, prepared.grad)
    return total


def set_loss(model, store, n_configs, batch_size=None, device="cpu"):
    """L over the ``n_configs`` configurations of a set, of which ``store`` holds this rank's
    share (all of them in one process); nan for an empty set."""
    if not n_configs:
        return float("nan")
    return sum_across([set_loss_sum(model, store, batch_size)], device)[0] / n_configs


def big_batch(store, at_least):
    """Configurations per batch that fill a streamed chunk (for graph-free evaluation)."""
    if store is None or not len(store):
        return at_least
    return max(at_least, int(store.chunk_bytes // max(1, int(store.config_bytes.max()))))
