"""The training loss's gradients written out (``batch_loss_backward``) against autograd.

Forces are -dE/dR of the network, so the force loss's gradient with respect to the weights is a
second derivative of the network. ``batch_loss_backward`` writes that chain rule out
(``MLP.parameter_gradients``); here autograd computes the same gradients by double backward
(dE/dx from ``torch.autograd.grad(..., create_graph=True)``, then ``backward``) on synthetic
two-element data with forces and stresses, and the two must agree to round-off in float64.
"""

import numpy as np
import pytest
import torch
from synthetic import base_config, make_groups

from potflow.config.load import prepare_config
from potflow.models.network import AtomicEnergyModel
from potflow.training.datasets import FitData
from potflow.training.loss import batch_loss_backward, batch_loss_sum
from potflow.training.stores import PreparedSet


@pytest.fixture(scope="module")
def stressed_tawb(tmp_path_factory):
    """Two elements (Ta, W), two synthetic groups of 6 and 5 configurations with stresses."""
    cfg = base_config(("Ta", "W"))
    cfg["calculator"] = {**cfg["calculator"], "stress": 1}
    cfg["groups"] = {**cfg["groups"], "defaults": {**cfg["groups"]["defaults"], "vweight": 1e-6}}
    cfg = prepare_config(cfg)
    return cfg, make_groups(tmp_path_factory.mktemp("chain"), cfg, [6, 5], seed=11, stress=True)


def autograd_loss(model, batch, grad):
    """The batch loss sum with dE/dx by autograd (create_graph: its backward is a double backward)
    and the forces by index (a batch without the CSR pattern)."""
    x = batch.x.detach().requires_grad_(True)
    e_atom, _ = model.standardised_energy_and_gradient(x, batch.counts, need_gradient=False)
    (dedx,) = torch.autograd.grad(e_atom.sum(), x, create_graph=True)
    dedx = dedx[:, : model.num_desc]
    energy = e_atom.new_zeros(batch.n_configs).index_add(0, batch.atom_config, e_atom)
    total = torch.dot(batch.w_energy, (energy - batch.energy) ** 2)
    if batch.virial is not None:
        per_atom = torch.einsum("ak,avk->av", dedx, batch.virial)
        pred = e_atom.new_zeros((batch.n_configs, 6)).index_add(0, batch.atom_config, per_atom)
        total = total + torch.dot(batch.w_stress, ((pred - batch.stress) ** 2).sum(1))
    if batch.row_ids is not None:
        dedb = dedx if batch.grad_scale is None else dedx * batch.grad_scale
        rows, row_i = batch.rows_of(grad), batch.row_i
        contrib = (dedb.index_select(0, row_i) * rows).sum(1)
        force = e_atom.new_zeros(batch.force.shape[0]).index_add(0, batch.row_ja, contrib)
        total = total + torch.dot(batch.w_force, (force - batch.force) ** 2)
    return total


def gradients(model):
    return [None if p.grad is None else p.grad.clone() for p in model.parameters()]


@pytest.mark.parametrize("activation", ["tanh", "sigmoid", "softplus", "silu", "relu"])
def test_written_out_chain_rule_equals_double_backward(stressed_tawb, activation):
    """Loss and weight gradients of ``batch_loss_backward`` equal autograd's double backward to
    1e-12 (float64) for options 1-3, one and two hidden layers, raw and pre-scaled gradient
    rows, with and without the stress term, and with a held linear path (its masked entries
    stay zero). Breaking any term of the chain rule (a wrong sigma'', a missing dE/dx path
    into the first layer, the output weights' share of dE/dx) fails it."""
    cfg, folders = stressed_tawb
    data = FitData(cfg, folders)
    cs = data.subset("train")
    pick = np.array([1, len(cs) - 1, 2, 0])  # configurations from both groups, out of order
    for option in (1, 2, 3):
        for hidden in ([7], [6, 5]):
            for raw in (False, True):
                torch.manual_seed(option + 10 * len(hidden))
                model = AtomicEnergyModel(data.num_desc, hidden, data.elements, option, activation).double()
                model.set_standardisation_moments(*cs.moments())
                with torch.no_grad():  # biases off zero so relu's kinks fall among the atoms
                    for p in model.parameters():
                        p.add_(0.3 * torch.randn_like(p))
                if option == 2 and activation == "tanh":
                    model.hold_linear_path()
                prepared = PreparedSet(
                    cs, model.shift.numpy(), model.scale.numpy(), option, torch.float64, "cpu", raw_gradients=raw
                )
                for stress, sparse in ((True, True), (False, True), (True, False)):
                    prepared.sparse_rows = False  # the reference: rows by index (the GPU's layout)
                    (plain,) = prepared.batches(pick, batch_size=len(pick))
                    prepared.sparse_rows = sparse  # the CPU's sparse products, or the GPU's index_add
                    (batch,) = prepared.batches(pick, batch_size=len(pick))
                    assert (batch.row_ptr is not None) == sparse and plain.row_ptr is None
                    if not stress:
                        batch.virial = plain.virial = None
                    assert batch.row_ids is not None and (batch.virial is not None) == stress
                    model.zero_grad(set_to_none=True)
                    ref = autograd_loss(model, plain, prepared.grad) / 4
                    ref.backward()
                    want = gradients(model)
                    model.zero_grad(set_to_none=True)
                    got_loss = batch_loss_backward(model, batch, prepared.grad, 0.25)
                    got = gradients(model)
                    where = (activation, option, hidden, raw, stress, sparse)
                    assert got_loss.item() == pytest.approx(ref.item(), rel=1e-12), where
                    with torch.no_grad():
                        plain_loss = batch_loss_sum(model, batch, prepared.grad).item() / 4
                    assert got_loss.item() == pytest.approx(plain_loss, rel=1e-12), where
                    for w, g in zip(want, got, strict=True):
                        assert (w is None) == (g is None), where
                        if w is not None:
                            scale = w.abs().max().item() + 1e-300
                            assert (g - w).abs().max().item() <= 1e-12 * scale, where
                    assert any(w is not None and w.abs().max() > 0 for w in want)
