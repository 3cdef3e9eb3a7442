"""A linear SNAP fit as a fit like any other: the training rule's files for solver SVD or RIDGE.

The exact solution (``potflow.linear.solve``) is written as the model every later stage reads:
a network per element (``multi_element_option`` 2) with one linear layer, no standardisation
(shift 0, scale 1) and float64 weights, so that E_atom = w_e . B_i + b_e is beta_e . B_i + beta0_e
bit for bit. Evaluation, figures, the ``mliap model nn`` export and MD use it unchanged;
``potflow.lammps.snap`` writes it also as FitSNAP's ``pair_style snap`` files.

The split is the network's with no validation set: a linear fit has no epochs to choose
between, so every training configuration (``train`` and what a network would hold out as
``val``) is fitted; the test configurations are the same as a network's. Files: ``model``
(model.pt), ``checkpoint`` (``save_state_output``: the same model record; a network with
``layer_sizes [num_desc, 1]``, activation linear and ``multi_element_option`` 2 can start from
it), ``loss`` (one row: epoch 0, the weighted training loss at the solution, validation nan) and
``split``.
"""

import copy
import time

import numpy as np
import torch

from potflow.fileio import write_torch
from potflow.linear.solve import LinearCoefficients, fit_linear
from potflow.models.files import model_record, save_model
from potflow.models.network import AtomicEnergyModel, ElementLayout
from potflow.training.datasets import FitData
from potflow.training.loop import write_loss_file


def linear_model(coefficients):
    """The float64 model whose per-atom energy is beta_e . B + beta0_e (no standardisation)."""
    beta = np.asarray(coefficients.beta, dtype=np.float64)
    n_el, k = beta.shape
    model = AtomicEnergyModel(k, [], coefficients.elements, ElementLayout.PER_ELEMENT, "linear").double()
    with torch.no_grad():
        for e, net in enumerate(model.nets):
            net.layers[0].weight.copy_(torch.from_numpy(beta[e][None, :]))
            net.layers[0].bias.fill_(float(coefficients.beta0[e]))
    return model


def fit_settings(cfg):
    """(solver, alpha) of a config's linear fit."""
    solver = str(cfg["solver"]["solver"]).upper()
    return solver, float(cfg["ridge"]["alpha"]) if solver == "RIDGE" else 0.0


def split_data(cfg, folders):
    """The fit's data with the network's train/test split and no validation set."""
    cfg = copy.deepcopy(cfg)
    cfg["pytorch"]["validation_fraction"] = 0.0
    return FitData(cfg, folders)


def solve_config(cfg, folders, data=None):
    """(LinearCoefficients, FitData): the linear fit of a config on its training configurations,
    with the groups' weights (and FitSNAP's global ``pytorch`` overrides) and ``eshift``."""
    solver, alpha = fit_settings(cfg)
    data = data or split_data(cfg, folders)
    t = data.table
    select, e_w, f_w, v_w = [], [], [], []
    for gid, _ in enumerate(data.groups):
        mine = t["group_id"] == gid
        select.append(t["index"][mine & (t["set"] == "train")])
        e_w.append(t["ew"][mine])
        f_w.append(t["fw"][mine])
        v_w.append(t["vw"][mine])
    eshift = [float(cfg["eshift"].get(el, 0.0)) for el in data.elements]
    coefficients = fit_linear(
        [g.folder for g in data.groups], select, e_w, f_w, solver=solver, alpha=alpha,
        memory_mb=cfg["pytorch"]["memory_budget_mb"], eshift=eshift, virial_weights=v_w,
    )  # fmt: skip
    return coefficients, data


def train_linear(cfg, folders, paths):
    """The training rule for solver SVD or RIDGE: solve, then write ``paths`` (``TrainPaths``)."""
    t0 = time.perf_counter()
    coefficients, data = solve_config(cfg, folders)
    seconds = time.perf_counter() - t0
    n_train, n_test = len(data.ids("train")), len(data.ids("test"))
    print(
        f"potflow linear fit ({coefficients.solver}"
        + (f", alpha {coefficients.alpha:g}" if coefficients.solver == "RIDGE" else "")
        + f"): {n_train} train / {n_test} test configurations, {coefficients.energy_rows} energy, "
        f"{coefficients.force_rows} force and {coefficients.stress_rows} stress rows, {coefficients.beta.size + coefficients.beta0.size} "
        f"coefficients, rank {coefficients.rank}, solved in {seconds:.2f} s"
    )
    print(f"weighted training loss at the solution: {coefficients.loss}")
    model = linear_model(coefficients)
    info = linear_info(coefficients, seconds)
    save_model(paths.model, model, **info)
    write_torch(paths.checkpoint, model_record(model, **info))
    write_loss_file(paths.loss, [[0.0, coefficients.loss, np.nan]])
    data.write_split(paths.split)
    print(f"model: {paths.model} (exact {coefficients.solver} least-squares solution)")
    return {"coefficients": coefficients, "seconds": seconds, "info": info}


def linear_info(coefficients: LinearCoefficients, seconds):
    """What model.pt says about the fit (shown in the metrics notes and the leaderboard)."""
    return {
        "selection": f"{coefficients.solver} least squares",
        "solver": coefficients.solver,
        "alpha": coefficients.alpha,
        "rank": coefficients.rank,
        "train_loss": coefficients.loss,
        "epochs_trained": 0,
        "solve_seconds": seconds,
    }
