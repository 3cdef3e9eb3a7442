"""The loss of a batch and of a whole set.

Loss of a batch of M configurations (targets after the reference potential and eshift):

  L = (1/M) sum_m [ w^E_m ((E_pred_m - E_m) / N_m)^2 + w^F_m / (3 N_m) sum_i |F_pred_mi - F_mi|^2
                    + w^V_m / 6 sum_v (S_pred_mv - S_mv)^2 ]

with S the 6 Voigt components (xx yy zz yz xz xy) of the pressure tensor in bar (FitSNAP JSON's
unit and sign; the stress term exists only in a fit with stresses).

``pytorch.weight_decay`` (lambda) adds lambda/2 sum W^2 over the networks' weight matrices (not
their biases) to the loss that is minimised: L2 regularisation, torch's weight-decay convention.
"""

import numpy as np
import torch

from potflow.training.collectives import sum_across


def batch_loss_sum(model, batch, grad):
    """Sum over the batch's configurations of the per-configuration loss (0-d tensor)."""
    forces = batch.row_ids is not None
    stress = batch.virial is not None
    e_atom, dedx = model.standardised_energy_and_gradient(batch.x, batch.counts, need_gradient=forces or stress)
    stress_term = None
    if stress:  # P_mv = sum_(i in m) dE/dx_i . virial_iv (virial pre-scaled, see PreparedSet)
        per_atom = torch.einsum("ak,avk->av", dedx, batch.virial)
        pred = e_atom.new_zeros((batch.n_configs, 6)).index_add(0, batch.atom_config, per_atom)
        ds = pred - batch.stress
        stress_term = torch.dot(batch.w_stress, (ds * ds).sum(1))
    if forces and batch.grad_scale is not None:  # raw rows (streamed): dE/dB = dE/dx / scale
        dedx = dedx * batch.grad_scale
    energy = e_atom.new_zeros(batch.n_configs).index_add(0, batch.atom_config, e_atom)
    de = energy - batch.energy
    total = torch.dot(batch.w_energy, de * de)
    if forces:
        rows = grad.index_select(0, batch.row_ids)
        contrib = (dedx.index_select(0, batch.row_i) * rows).sum(1)
        force = e_atom.new_zeros(batch.force.shape[0]).index_add(0, batch.row_ja, contrib)
        df = force - batch.force
        total = total + torch.dot(batch.w_force, df * df)
    if stress_term is not None:
        total = total + stress_term
    return total


def weight_penalty(model, weight_decay, held_linear_path=False):
    """lambda/2 sum W^2 over the weight matrices of the model's networks (0-d tensor, with graph);
    with ``held_linear_path`` the fixed linear path is left out (its output weight is large, and
    a large constant in the loss drowns the line search's differences in float32)."""
    masks = model.linear_path_masks() if held_linear_path else {}
    total = 0.0
    for name, w in model.named_parameters():
        if name.endswith("weight"):
            w = w * masks[w] if w in masks else w
            total = total + (w * w).sum()
    return 0.5 * weight_decay * total


@torch.no_grad()
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
