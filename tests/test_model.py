"""The network: forces = -dE/dx through LAMMPS's descriptor gradients, and the training path."""

import numpy as np
import pytest
import torch

from potflow.config.load import prepare_config
from potflow.descriptors.compute import SnapCalculator
from potflow.models.network import AtomicEnergyModel, predict


def _config(elements):
    n = len(elements)
    return prepare_config(
        {
            "bispectrum": {
                "numTypes": n, "type": list(elements), "twojmax": 4, "rcutfac": 4.6,
                "wj": [1.0, 0.85][:n], "radelem": [0.5, 0.42][:n],
            },
            "reference": {"pair_style": "zero 10.0", "pair_coeff": ["* *"]},
            "md": {"enabled": False},
        }
    )  # fmt: skip


def _structure(elements, seed):
    """A displaced, slightly sheared bcc supercell (16 atoms) with random species."""
    from ase.build import bulk

    rng = np.random.default_rng(seed)
    atoms = bulk("Ta", "bcc", a=3.3, cubic=True).repeat(2)
    cell = atoms.cell.array @ (np.eye(3) + rng.normal(0, 0.02, (3, 3)))
    atoms.set_cell(cell, scale_atoms=True)
    atoms.positions += rng.normal(0, 0.1, atoms.positions.shape)
    types = rng.integers(0, len(elements), len(atoms))
    types[:len(elements)] = np.arange(len(elements))  # every element present
    return atoms.positions.copy(), atoms.cell.array.copy(), types


@pytest.mark.parametrize(("option", "elements"), [(1, ("Ta",)), (2, ("Ta", "W")), (3, ("Ta", "W"))])
def test_forces_are_minus_the_energy_gradient(option, elements):
    """Central differences of the model energy, descriptors recomputed by LAMMPS at each
    displaced position, agree with the chain-rule forces (float64)."""
    cfg = _config(elements)
    pos, cell, types = _structure(elements, seed=option)
    pbc = [True, True, True]
    with_grad = SnapCalculator(cfg, with_gradients=True)
    plain = SnapCalculator(cfg, with_gradients=False)
    try:
        B, _, _, gidx, gval = with_grad.compute(pos, cell, pbc, types)
        torch.manual_seed(option)
        model = AtomicEnergyModel(B.shape[1], [12, 9], list(elements), option).double()
        model.set_standardisation(B, types)
        t = torch.from_numpy(types)
        with torch.no_grad():
            _, forces, _ = predict(
                model, torch.from_numpy(B), t, torch.tensor([len(types)]), torch.from_numpy(gval),
                torch.from_numpy(gidx.astype(np.int64)),
            )  # fmt: skip

        def energy(p):
            b = plain.compute(p, cell, pbc, types)[0]
            with torch.no_grad():
                return model(torch.from_numpy(b), t).sum().item()

        h = 1e-4
        rng = np.random.default_rng(10 + option)
        checked = []
        for atom in rng.choice(len(types), 6, replace=False):
            for a in range(3):
                plus, minus = pos.copy(), pos.copy()
                plus[atom, a] += h
                minus[atom, a] -= h
                checked.append((-(energy(plus) - energy(minus)) / (2 * h), forces[atom, a].item()))
    finally:
        with_grad.close()
        plain.close()
    fd, analytic = np.array(checked).T
    assert np.abs(analytic).max() > 1e-3  # the forces are not trivially zero
    np.testing.assert_allclose(analytic, fd, rtol=1e-6, atol=1e-7 * np.abs(fd).max())


@pytest.mark.parametrize("option", [1, 2, 3])
def test_training_path_equals_the_model(option):
    """standardised_energy_and_gradient on pre-standardised, element-ordered atoms gives the
    energies and dE/dB of energy_and_gradient."""
    rng = np.random.default_rng(option)
    K, n_el = 7, 3
    B = torch.from_numpy(rng.normal(2.0, 3.0, (40, K)))
    types = torch.from_numpy(rng.integers(0, n_el, 40))
    types[:n_el] = torch.arange(n_el)
    model = AtomicEnergyModel(K, [6, 5], ["A", "B", "C"], option, "tanh").double()
    model.set_standardisation(B, types)
    e_ref, g_ref = model.energy_and_gradient(B, types)
    order = torch.argsort(types, stable=True)
    x = (B - model.shift[types]) / model.scale[types]
    if option == 3:
        x = torch.cat([x, torch.nn.functional.one_hot(types, n_el).double()], dim=1)
    counts = torch.bincount(types, minlength=n_el).tolist()
    e, dedx = model.standardised_energy_and_gradient(x[order], counts)
    torch.testing.assert_close(e, e_ref[order])
    torch.testing.assert_close(dedx / model.scale[types[order]], g_ref[order])


def test_standardisation_moments_and_energy_offsets():
    rng = np.random.default_rng(0)
    B = rng.normal(1.0, 2.0, (50, 4))
    B[:, 3] = 5.0  # a constant descriptor keeps scale 1
    types = np.repeat([0, 1], 25)
    for option in (1, 2):
        model = AtomicEnergyModel(4, [3], ["A", "B"], option).double()
        model.set_standardisation(B, types)
        for e in (0, 1):
            rows = B[types == e] if option == 2 else B
            np.testing.assert_allclose(model.shift[e].numpy(), rows.mean(0))
            np.testing.assert_allclose(model.scale[e, :3].numpy(), rows[:, :3].std(0))
            assert model.scale[e, 3] == 1.0
        w = model.nets[0].layers[-1].weight.clone()
        model.set_energy_offsets([-3.0, -5.0], spread=2.0)
        torch.testing.assert_close(model.nets[0].layers[-1].weight, 2.0 * w)
        biases = [net.layers[-1].bias.item() for net in model.nets]
        assert biases == ([-3.0, -5.0] if option == 2 else [-4.0])


@pytest.mark.parametrize("activation", ["tanh", "sigmoid", "relu", "linear"])
@pytest.mark.parametrize("option,hidden", [(2, (7, 5)), (2, ()), (1, (6,))])
def test_start_from_linear_is_the_linear_model_and_holds_it(activation, option, hidden):
    """A network started from a linear SNAP model gives its energies and dE/dB (to the ~1e-6
    bend of the activation), and hold_linear_path keeps that path through Adam steps. Checked to
    bite: with silu (sigma''(0) != 0) the energies are off by 0.7 %; with the pass-through weight
    1 instead of 1/sigma'(z0) the sigmoid cases fail; without the hooks the path moves."""
    torch.manual_seed(0)
    elements = ["Ta"] if option == 1 else ["W", "Be"]
    K = 5
    model = AtomicEnergyModel(K, list(hidden), elements, option, activation).double()
    B = torch.randn(40, K, dtype=torch.float64) * 2 + 1
    types = torch.randint(0, len(elements), (40,))
    model.set_standardisation(B, types)
    beta = torch.randn(len(elements), K, dtype=torch.float64)
    beta0 = torch.tensor([-3.0, -5.0][: len(elements)], dtype=torch.float64)
    u = (B * beta[types]).sum(1)
    lo = torch.stack([u[types == e].min() for e in range(len(elements))])
    hi = torch.stack([u[types == e].max() for e in range(len(elements))])
    model.start_from_linear(beta, beta0, lo, hi)
    e, g = model.energy_and_gradient(B, types)
    want_e = u + beta0[types]
    torch.testing.assert_close(e, want_e, rtol=0, atol=2e-6 * want_e.abs().max().item())
    torch.testing.assert_close(g, beta[types], rtol=0, atol=1e-5 * beta.abs().max().item())
    if not hidden:
        return
    assert AtomicEnergyModel(K, list(hidden), elements, option, "silu").supports_linear_start() is False
    model.hold_linear_path()
    path = [(n.layers[0].weight[0].clone(), n.layers[-1].weight[0, 0].clone()) for n in model.nets]
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(3):
        opt.zero_grad()
        e, _ = model.energy_and_gradient(B, types, need_gradient=False)
        ((e - want_e - torch.sin(B[:, 0])) ** 2).mean().backward()
        opt.step()
    for net, (w_in, w_out) in zip(model.nets, path, strict=True):
        assert torch.equal(net.layers[0].weight[0], w_in) and torch.equal(net.layers[-1].weight[0, 0], w_out)
        assert net.layers[-1].weight[0, 1:].abs().max() > 0  # the other neurons did learn
