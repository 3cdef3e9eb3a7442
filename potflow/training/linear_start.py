"""A new network's starting point: the exact linear SNAP fit of its training configurations.

``linear_start: 1`` solves the weighted least-squares linear model (``potflow.linear.solve``,
the fit's own energy and force weights, training configurations only) and sets the network to it
(``AtomicEnergyModel.start_from_linear``); training then learns what the linear model misses.
Fits whose elements share one network (options 1 and 3 with several elements) cannot hold one
beta per element, and silu/softplus have no linear stretch: they start from per-element energy
offsets, as with ``linear_start: 0``.
"""

import numpy as np

from potflow.linear.solve import fit_linear
from potflow.training.datasets import concat_ranges


def linear_fit_of(train_set):
    """``LinearCoefficients`` of the weighted linear fit (energies, forces and stresses) on a
    ConfigSet's configurations; beta0 includes the config's eshift (the training targets'
    convention)."""
    data, t = train_set.data, train_set.data.table
    select, e_weights, f_weights, v_weights = [], [], [], []
    for gid, g in enumerate(data.groups):
        ids = train_set.ids[train_set.gid == gid]
        local = t["index"][ids]
        mask = np.zeros(len(g.natoms), bool)
        mask[local] = True
        we, wf, wv = np.zeros(len(g.natoms)), np.zeros(len(g.natoms)), np.zeros(len(g.natoms))
        we[local], wf[local], wv[local] = t["ew"][ids], t["fw"][ids], t["vw"][ids]
        select.append(mask)
        e_weights.append(we)
        f_weights.append(wf)
        v_weights.append(wv)
    coef = fit_linear([g.folder for g in data.groups], select, e_weights, f_weights, virial_weights=v_weights)
    eshift = data.cfg["eshift"]
    coef.beta0 = coef.beta0 + np.array([float(eshift.get(el, 0.0)) for el in data.elements])
    return coef


def linear_energy_range(train_set, beta):
    """(min, max) over the set's atoms of each element of beta_e . B (n_el,) each."""
    n_el = len(train_set.data.elements)
    lo, hi = np.full(n_el, np.inf), np.full(n_el, -np.inf)
    for g, local, _ in train_set.pieces():
        atoms = concat_ranges(g.atom_start[local], g.natoms[local])
        B = np.asarray(g.arrays["descriptors"][atoms], dtype=np.float64)
        t = g.types[atoms]
        for e in range(n_el):
            if (t == e).any():
                u = B[t == e] @ beta[e]
                lo[e], hi[e] = min(lo[e], u.min()), max(hi[e], u.max())
    train_set.data.release_pages()
    absent = ~np.isfinite(lo)
    lo[absent], hi[absent] = -1.0, 1.0
    return lo, hi


def start_from_linear_fit(model, train_set):
    """Set a new model to the linear fit of ``train_set``; returns a line saying what was done."""
    if not model.supports_linear_start():
        model.set_energy_offsets(*train_set.energy_offsets())
        why = (
            f"activation {model.activation} has no linear stretch"
            if len(model.elements) == 1 or model.layout.per_element_networks
            else f"elements share one network (multi_element_option {int(model.layout)})"
        )
        return f"linear_start: {why}: started from per-element energy offsets instead"
    coef = linear_fit_of(train_set)
    lo, hi = linear_energy_range(train_set, coef.beta)
    model.start_from_linear(coef.beta, coef.beta0, lo, hi)
    return (
        f"linear_start: network set to the linear SNAP fit of the training configurations "
        f"(rank {coef.rank}, {coef.energy_rows} energy, {coef.force_rows} force and {coef.stress_rows} stress rows)"
    )
