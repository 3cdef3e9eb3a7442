"""Errors of a fitted model, written in FitSNAP's file formats.

Conventions (FitSNAP's PyTorch solver's, so scripts written for its files keep working):

* ``*_Truth`` and ``*_Pred`` are the *fitted* quantities, as FitSNAP writes them: the DFT
  value plus the per-element ``eshift`` (FitSNAP adds it) minus the reference potential
  energies, i.e. what the network is trained on. The errors are the same as for total
  energies and forces (the reference cancels); configs.pickle also keeps the DFT and
  reference values.
* Energies are per atom (eV/atom) and the energy error is one number per configuration;
  force errors are per Cartesian component (eV/Angstrom). ``Count`` is configurations for
  Energy and atoms for Force.
* A fit with stresses adds ``Stress`` rows (bar, per Voigt component: Count = 6 x the
  configurations that have a stress) and twelve perconfig.dat columns after the others:
  ``Sxx_Truth Syy_Truth Szz_Truth Syz_Truth Sxz_Truth Sxy_Truth`` then the same ``_Pred``, the
  pressure tensor (FitSNAP JSON's sign, LAMMPS's) minus the reference potential's, in bar.
* ``Train`` is the training side of the split: the configurations the network was fitted
  on *and* the validation configurations that picked the epoch (``set`` train or val in
  split.tsv). Only data the fit never saw is ``Test``: ``set`` test, and every
  configuration of a test set (``test_sets:``).
* Predictions are float64, with the one model that training selected (model.pt).

Files, each a whitespace-separated table with one header line:

  metrics (outfile.metrics)  Group Train/Test Property Count MAE RMSE
                             (``*ALL`` rows, then the same four rows per group)
  perconfig.dat   Filename Group Natoms Energy_Truth Energy_Pred Testing_Bool
  peratom.dat     Filename Group AtomID Type Fx_Truth Fy_Truth Fz_Truth Fx_Pred Fy_Pred
                  Fz_Pred Testing_Bool     (AtomID and Type count from 1)
  configs.pickle  a list of plain dicts, one per configuration (``config_records``)
  evaluation.npz  the same numbers in one machine-readable file (``save_evaluation``)

A committee (``committee.members`` N > 1) adds columns after FitSNAP's, which stay first and
unchanged (``*_Pred`` is model.pt, member 0, the model that is exported): the mean and the
standard deviation (1/N, numpy's default) over the N members' predictions.

  perconfig.dat   ... Energy_Committee_Mean Energy_Committee_Std            (eV/atom)
  peratom.dat     ... Fx_Committee_Mean Fy_Committee_Mean Fz_Committee_Mean
                      Fx_Committee_Std Fy_Committee_Std Fz_Committee_Std    (eV/Angstrom)
"""

import pickle

import numpy as np
import pandas as pd

from potflow.data.structures import load_group
from potflow.descriptors.folders import open_group
from potflow.errors import PotflowInputError
from potflow.evaluation.predictions import evaluates_stress, has_committee, model_info, testing_bool
from potflow.fileio import atomic_path, write_text

METRICS_COLUMNS = ["Group", "Train/Test", "Property", "Count", "MAE", "RMSE"]


PERCONFIG_COLUMNS = ["Filename", "Group", "Natoms", "Energy_Truth", "Energy_Pred", "Testing_Bool"]


PERATOM_COLUMNS = [
    "Filename", "Group", "AtomID", "Type", "Fx_Truth", "Fy_Truth", "Fz_Truth",
    "Fx_Pred", "Fy_Pred", "Fz_Pred", "Testing_Bool",
]  # fmt: skip


STRESS_COMPONENTS = ("xx", "yy", "zz", "yz", "xz", "xy")  # Voigt order, FitSNAP's


PERCONFIG_STRESS_COLUMNS = [f"S{c}_{kind}" for kind in ("Truth", "Pred") for c in STRESS_COMPONENTS]


PERCONFIG_COMMITTEE_COLUMNS = ["Energy_Committee_Mean", "Energy_Committee_Std"]


PERATOM_COMMITTEE_COLUMNS = [f"F{c}_Committee_{s}" for s in ("Mean", "Std") for c in "xyz"]


def _errors(err):
    if err.size == 0:
        return np.nan, np.nan
    return float(np.mean(np.abs(err))), float(np.sqrt(np.mean(err**2)))


def metrics_table(ev):
    """FitSNAP's metrics rows: ``*ALL`` then each group; Train/Test x Energy/Force."""
    natoms = ev["natoms"]
    energy_err = (ev["energy_pred"] - ev["energy_truth"]) / natoms
    force_err = ev["force_pred"] - ev["force_truth"]
    has_forces = bool(ev["has_forces"])
    stress = evaluates_stress(ev)
    if stress:
        stress_err = ev["stress_pred"] - ev["stress_truth"]
        has_truth = np.isfinite(ev["stress_truth"]).all(axis=1)
    testing = testing_bool(ev)
    rows = []
    blocks = [("*ALL", np.ones(len(natoms), bool))]
    blocks += [(name, ev["group"] == g) for g, name in enumerate(ev["groups"])]
    for name, in_block in blocks:
        for label, want in (("Train", False), ("Test", True)):
            sel = in_block & (testing == want)
            rows.append((name, label, "Energy", int(sel.sum()), *_errors(energy_err[sel])))
            atom_sel = np.repeat(sel, natoms)
            if has_forces:
                rows.append((name, label, "Force", int(atom_sel.sum()), *_errors(force_err[atom_sel])))
            else:
                rows.append((name, label, "Force", 0, np.nan, np.nan))
            if stress:
                err = stress_err[sel & has_truth]
                rows.append((name, label, "Stress", int(err.size), *_errors(err)))
    return pd.DataFrame(rows, columns=METRICS_COLUMNS)


def format_metrics(table):
    """FitSNAP's aligned whitespace table (more digits than its %.3e)."""
    w = max(len("Group"), *(len(g) for g in table["Group"]))
    lines = [f"{'Group':<{w}}  {'Train/Test':^10}  {'Property':^10}  {'Count':>10}  {'MAE':>13}  {'RMSE':>13}"]
    for r in table.itertuples(index=False):
        lines.append(f"{r[0]:<{w}}  {r[1]:^10}  {r[2]:^10}  {r[3]:>10d}  {r[4]:>13.6e}  {r[5]:>13.6e}")
    return "\n".join(lines) + "\n"


def write_metrics(path, table):
    write_text(path, format_metrics(table))


def read_metrics(path):
    return pd.read_csv(path, sep=r"\s+")


def metrics_html(table, title, notes=()):
    """A self-contained HTML page of the metrics table (for the Snakemake report)."""
    body = table.to_html(index=False, na_rep="-", float_format=lambda x: f"{x:.4g}", border=0)
    items = "".join(f"<li>{n}</li>" for n in notes)
    style = (
        "body{font-family:sans-serif;margin:1em}table{border-collapse:collapse}"
        "th,td{padding:2px 10px;text-align:right;border-bottom:1px solid #ddd}"
        "td:first-child,th:first-child{text-align:left}"
    )
    return (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{title}</title>"
        f"<style>{style}</style></head><body><h3>{title}</h3>{body}<ul>{items}</ul></body></html>\n"
    )


def metrics_notes(ev):
    info = model_info(ev)
    notes = [
        "Energy: per-configuration error in eV/atom, Count = configurations; "
        "Force: per-component error in eV/&Aring;, Count = atoms"
        + ("; Stress: per Voigt component in bar, Count = 6 &times; configurations." if evaluates_stress(ev) else "."),
        "Truth = DFT plus eshift minus the reference potential (the fitted quantity, as in FitSNAP).",
        "Train includes the validation configurations that selected the model; "
        "Test is data the fit never saw.",
    ]
    if info:
        shown = ", ".join(f"{k} {info[k]}" for k in ("selection", "epoch", "val_loss") if k in info)
        notes.append(f"Model: {info.get('model', 'model.pt')}" + (f" ({shown})" if shown else ""))
    return notes


def write_frame(path, frame):
    """A FitSNAP-style space-separated table with one header line, written atomically."""
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, sep=" ", index=False)


def perconfig_frame(ev):
    natoms = ev["natoms"]
    frame = pd.DataFrame(
        {
            "Filename": ev["filename"],
            "Group": ev["groups"][ev["group"]],
            "Natoms": natoms,
            "Energy_Truth": ev["energy_truth"] / natoms,
            "Energy_Pred": ev["energy_pred"] / natoms,
            "Testing_Bool": testing_bool(ev),
        },
        columns=PERCONFIG_COLUMNS,
    )
    if evaluates_stress(ev):
        values = np.hstack([ev["stress_truth"], ev["stress_pred"]])
        for k, name in enumerate(PERCONFIG_STRESS_COLUMNS):
            frame[name] = values[:, k]
    if has_committee(ev):
        frame["Energy_Committee_Mean"] = ev["energy_committee_mean"] / natoms
        frame["Energy_Committee_Std"] = ev["energy_committee_std"] / natoms
    return frame


def peratom_frame(ev):
    committee = PERATOM_COMMITTEE_COLUMNS if has_committee(ev) else []
    if not bool(ev["has_forces"]):
        return pd.DataFrame(columns=PERATOM_COLUMNS + committee)  # FitSNAP writes no rows without forces
    natoms = ev["natoms"]
    starts = np.concatenate([[0], np.cumsum(natoms)[:-1]])
    atom_id = np.arange(natoms.sum()) - np.repeat(starts, natoms) + 1
    ft, fp = ev["force_truth"], ev["force_pred"]
    frame = pd.DataFrame(
        {
            "Filename": np.repeat(ev["filename"], natoms),
            "Group": np.repeat(ev["groups"][ev["group"]], natoms),
            "AtomID": atom_id,
            "Type": ev["types"].astype(np.int64) + 1,
            "Fx_Truth": ft[:, 0],
            "Fy_Truth": ft[:, 1],
            "Fz_Truth": ft[:, 2],
            "Fx_Pred": fp[:, 0],
            "Fy_Pred": fp[:, 1],
            "Fz_Pred": fp[:, 2],
            "Testing_Bool": np.repeat(testing_bool(ev), natoms),
        },
        columns=PERATOM_COLUMNS,
    )
    if committee:
        stats = np.hstack([ev["force_committee_mean"], ev["force_committee_std"]])
        for k, name in enumerate(committee):
            frame[name] = stats[:, k]
    return frame


def read_table(path):
    """perconfig.dat / peratom.dat back into a DataFrame."""
    return pd.read_csv(path, sep=" ", keep_default_na=False, na_values=["nan", "NaN"])


def config_records(ev, folders, structures):
    """One plain dict per configuration: structure, descriptors, targets and predictions.

    ``folders`` / ``structures``: group -> descriptor folder / imported .npz. Energies are
    totals in eV (``*_target`` and ``*_pred`` are the fitted quantities, see the module
    docstring), forces in eV/Angstrom; ``types`` count from 0 in ``elements`` order.
    """

    records = []
    natoms = ev["natoms"]
    atom_start = np.concatenate([[0], np.cumsum(natoms)])
    for g, group in enumerate(ev["groups"]):
        arrays, meta = open_group(folders[group])
        data = load_group(structures[group])
        if not np.array_equal(data["natoms"], np.asarray(arrays["natoms"])):
            raise PotflowInputError(structures[group], f"does not match descriptor folder {folders[group]}")
        d_off = np.concatenate([[0], np.cumsum(arrays["natoms"])])
        for c in np.flatnonzero(ev["group"] == g):
            m = int(ev["index"][c])
            a, b = d_off[m], d_off[m + 1]
            ea, eb = atom_start[c], atom_start[c + 1]
            records.append(
                {
                    "filename": str(ev["filename"][c]),
                    "group": str(group),
                    "index": m,
                    "set": str(ev["set"][c]),
                    "testing_bool": bool(ev["set"][c] == "test"),
                    "natoms": int(natoms[c]),
                    "elements": list(meta["elements"]),
                    "symbols": data["symbols"][a:b].copy(),
                    "positions": data["positions"][a:b].copy(),
                    "cell": data["cells"][m].copy(),
                    "pbc": data["pbc"][m].copy(),
                    "types": np.array(arrays["atom_types"][a:b]),
                    "descriptors": np.array(arrays["descriptors"][a:b]),
                    "energy": float(arrays["energy"][m]),
                    "forces": np.array(arrays["forces"][a:b]),
                    "ref_energy": float(arrays["ref_energy"][m]),
                    "ref_forces": np.array(arrays["ref_forces"][a:b]),
                    "eshift": float(ev["eshift"][c]),
                    "energy_target": float(ev["energy_truth"][c]),
                    "force_target": ev["force_truth"][ea:eb].copy(),
                    "energy_pred": float(ev["energy_pred"][c]),
                    "force_pred": ev["force_pred"][ea:eb].copy() if bool(ev["has_forces"]) else None,
                    "atom_energy_pred": ev["atom_energy_pred"][ea:eb].copy(),
                }
            )
            if evaluates_stress(ev):  # bar, Voigt; the fitted quantity (minus the reference's)
                records[-1]["stress_target"] = ev["stress_truth"][c].copy()
                records[-1]["stress_pred"] = ev["stress_pred"][c].copy()
    return records


def write_configs(path, records):
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            pickle.dump(records, fh, protocol=pickle.HIGHEST_PROTOCOL)
