"""Committee uncertainty: error against predicted spread, and disagreement along the MD run.

A committee is N models of one fit that differ only in their seed (``potflow.config.sweeps``). Its
spread is the standard deviation over the members (1/N, numpy's default). Per atom, the force
deviation is the length of the per-component deviations,

    sigma_i = sqrt( sum_a std_k(F_k,i,a)^2 ) = sqrt( (1/N) sum_k |F_k,i - <F_i>|^2 ),

the "model deviation" of DP-GEN; a frame's disagreement is the largest sigma_i over its atoms.
Frames of the MD run whose disagreement exceeds ``committee.force_std_threshold`` are
candidates for new training data: they are written as extxyz for a DFT calculation, the first
step of an active-learning loop.
"""

import json

import ase.io
import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure

from potflow.descriptors.compute import SnapCalculator
from potflow.errors import PotflowInputError
from potflow.evaluation.plots import COLOURS, save_figure
from potflow.evaluation.predictions import has_committee, testing_bool
from potflow.fileio import atomic_path, write_json, write_tsv
from potflow.models.files import load_model
from potflow.models.network import predict

MD_COLUMNS = ["step", "time_ps", "max_force_std", "mean_force_std", "energy_std_per_atom", "candidate"]


def force_deviation(forces):
    """sigma_i of each atom from the members' forces (N, A, 3) -> (A,)."""
    forces = np.asarray(forces, dtype=np.float64)
    return np.sqrt(((forces - forces.mean(axis=0)) ** 2).sum(axis=2).mean(axis=0))


def _floor(*arrays):
    """Smallest value drawn on a log axis: 1e-6 of the largest (exact zeros stay visible)."""
    top = max((float(np.max(a)) for a in arrays if a.size), default=1.0)
    return 1e-6 * top if top > 0 else 1e-12


def _uncertainty_panel(ax, sigma, error, testing, unit, noun):
    floor = _floor(sigma, error)
    for name, sel in (("Train", ~testing), ("Test", testing)):
        if not sel.any():
            continue
        rho = pd.Series(sigma[sel]).corr(pd.Series(error[sel]), method="spearman")
        ax.scatter(
            np.maximum(sigma[sel], floor), np.maximum(error[sel], floor), s=6, alpha=0.5, lw=0,
            color=COLOURS[name], label=f"{name} ({sel.sum()} {noun}), rank correlation {rho:.2f}",
        )  # fmt: skip
    if sigma.size >= 20:
        # calibration: RMS error against RMS deviation in bins of equal counts
        order = np.argsort(sigma)
        bins = np.array_split(order, 10)
        x = [np.sqrt(np.mean(sigma[b] ** 2)) for b in bins]
        y = [np.sqrt(np.mean(error[b] ** 2)) for b in bins]
        ax.plot(np.maximum(x, floor), np.maximum(y, floor), "k.-", lw=1, label="RMS in 10 bins (all)")
    lo = floor
    hi = max(float(sigma.max(initial=0)), float(error.max(initial=0)), 10 * floor) * 2
    ax.plot([lo, hi], [lo, hi], color="0.5", lw=0.8, zorder=0, label="error = deviation")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_xlabel(f"committee deviation ({unit})")
    ax.set_ylabel(f"|committee mean - truth| ({unit})")
    ax.legend(loc="upper left", fontsize=7, markerscale=2, frameon=False)


def uncertainty_figure(ev, title=""):
    """Error of the committee mean against the committee's deviation: energies and forces."""
    if not has_committee(ev):
        raise PotflowInputError("committee", "this evaluation has no committee (committee.members is 1)")
    fig = Figure(figsize=(11, 5.2))
    ax_e, ax_f = fig.subplots(1, 2)
    natoms = ev["natoms"]
    testing = testing_bool(ev)
    _uncertainty_panel(
        ax_e,
        ev["energy_committee_std"] / natoms,
        np.abs(ev["energy_committee_mean"] - ev["energy_truth"]) / natoms,
        testing,
        "eV/atom",
        "configs",
    )
    ax_e.set_title("energy per atom, per configuration", fontsize=10)
    if bool(ev["has_forces"]):
        _uncertainty_panel(
            ax_f,
            np.sqrt((ev["force_committee_std"] ** 2).sum(axis=1)),
            np.linalg.norm(ev["force_committee_mean"] - ev["force_truth"], axis=1),
            np.repeat(testing, natoms),
            "eV/Å",
            "atoms",
        )
        ax_f.set_title("force, per atom", fontsize=10)
    else:
        ax_f.text(0.5, 0.5, "no forces in this fit", ha="center", va="center", transform=ax_f.transAxes)
    fig.suptitle(f"{title}: committee of {int(ev['committee_size'])}".strip(": "), fontsize=11)
    return fig


def load_members(model_files):
    return [load_model(path)[0].double().eval() for path in model_files]


def frame_predictions(models, calc, atoms, elements):
    """Energies (N,) and forces (N, A, 3) of every member on one structure (ML part only:
    the reference potential is the same for all and cancels in the spread)."""

    symbols = atoms.get_chemical_symbols()
    unknown = sorted(set(symbols) - set(elements))
    if unknown:
        raise PotflowInputError("trajectory", f"elements {unknown} are not in bispectrum.type {elements}")
    types = np.array([elements.index(s) for s in symbols])
    B, _, _, index, values = calc.compute(atoms.positions, atoms.cell[:], atoms.pbc, types)
    energies, forces = [], []
    with torch.no_grad():
        for model in models:
            e, f, _ = predict(
                model,
                torch.as_tensor(B, dtype=torch.float64),
                torch.as_tensor(types, dtype=torch.long),
                torch.tensor([len(types)]),
                torch.as_tensor(values, dtype=torch.float64),
                torch.as_tensor(index, dtype=torch.long),
            )
            energies.append(float(e[0]))
            forces.append(f.numpy())
    return np.array(energies), np.stack(forces)


def md_disagreement(cfg, model_files, frames):
    """(table with MD_COLUMNS, candidate frames) of a trajectory (ASE Atoms with info step, time_ps)."""
    threshold = cfg["committee"]["force_std_threshold"]
    elements = list(cfg["bispectrum"]["type"])
    models = load_members(model_files)
    rows, candidates = [], []
    calc = SnapCalculator(cfg)
    try:
        for atoms in frames:
            energies, forces = frame_predictions(models, calc, atoms, elements)
            sigma = force_deviation(forces)
            worst = float(sigma.max())
            flagged = worst > threshold
            rows.append(
                (int(atoms.info["step"]), float(atoms.info["time_ps"]), worst, float(sigma.mean()),
                 float(energies.std() / len(atoms)), flagged)
            )  # fmt: skip
            if flagged:
                cand = atoms.copy()  # the structure only: LAMMPS's forces are no training labels
                cand.calc = None
                cand.info.update(committee_max_force_std=worst, committee_members=len(models))
                cand.new_array("committee_force_std", sigma)
                candidates.append(cand)
    finally:
        calc.close()
    return pd.DataFrame(rows, columns=MD_COLUMNS), candidates


def md_summary(table, threshold, members, trajectory=""):
    flagged = table[table["candidate"]]
    return {
        "trajectory": str(trajectory),
        "members": members,
        "frames": len(table),
        "force_std_threshold": threshold,
        "candidates": len(flagged),
        "candidate_steps": [int(s) for s in flagged["step"]],
        "max_force_std": float(table["max_force_std"].max()) if len(table) else None,
        "mean_max_force_std": float(table["max_force_std"].mean()) if len(table) else None,
        "max_energy_std_per_atom": float(table["energy_std_per_atom"].max()) if len(table) else None,
    }


def md_figure(table, threshold, title=""):
    fig = Figure(figsize=(6.4, 4.2))
    ax = fig.add_subplot()
    t = table["time_ps"].to_numpy()
    ax.plot(t, table["max_force_std"], ".-", color=COLOURS["Train"], label="largest over atoms")
    ax.plot(t, table["mean_force_std"], ".-", color="0.5", label="mean over atoms")
    flagged = table["candidate"].to_numpy(bool)
    if flagged.any():
        ax.scatter(t[flagged], table["max_force_std"][flagged], s=40, facecolors="none",
                   edgecolors=COLOURS["Test"], label=f"candidates ({flagged.sum()})", zorder=3)  # fmt: skip
    ax.axhline(threshold, color=COLOURS["Test"], ls="--", lw=1, label=f"threshold {threshold:g} eV/Å")
    ax.set_xlabel("time (ps)")
    ax.set_ylabel("committee force deviation (eV/Å)")
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=8, frameon=False)
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def validate_md_committee(cfg, model_files, trajectory, outputs, title=""):
    """The rule's entry point: writes outputs table (tsv), candidates (extxyz), summary (json), plot (png)."""
    frames = ase.io.read(trajectory, index=":", format="extxyz")
    table, candidates = md_disagreement(cfg, model_files, frames)
    threshold = cfg["committee"]["force_std_threshold"]
    summary = md_summary(table, threshold, len(model_files), trajectory)
    write_tsv(outputs["table"], table, "%.8g")
    with atomic_path(outputs["candidates"]) as tmp:
        with open(tmp, "w") as fh:
            if candidates:
                ase.io.write(fh, candidates, format="extxyz")
    write_json(outputs["summary"], summary)
    save_figure(md_figure(table, threshold, title), outputs["plot"])
    print(json.dumps(summary, indent=1))
    return summary
