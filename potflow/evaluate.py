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

import json
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from potflow.descriptors import open_group
from potflow.errors import PotflowInputError
from potflow.fileio import atomic_path, write_text
from potflow.model import load_model, predict

SPLIT_COLUMNS = ["group", "index", "file", "natoms", "set"]
SPLIT_SETS = ("train", "val", "test")
METRICS_COLUMNS = ["Group", "Train/Test", "Property", "Count", "MAE", "RMSE"]
PERCONFIG_COLUMNS = ["Filename", "Group", "Natoms", "Energy_Truth", "Energy_Pred", "Testing_Bool"]
PERATOM_COLUMNS = [
    "Filename", "Group", "AtomID", "Type", "Fx_Truth", "Fy_Truth", "Fz_Truth",
    "Fx_Pred", "Fy_Pred", "Fz_Pred", "Testing_Bool",
]  # fmt: skip
PERCONFIG_COMMITTEE_COLUMNS = ["Energy_Committee_Mean", "Energy_Committee_Std"]
PERATOM_COMMITTEE_COLUMNS = [f"F{c}_Committee_{s}" for s in ("Mean", "Std") for c in "xyz"]
# Batches are cut by gradient rows and atoms: bounded memory whatever the configuration sizes.
MAX_BATCH_ROWS = 200_000
MAX_BATCH_ATOMS = 50_000


def read_split(path):
    """split.tsv of a fit (``group index file natoms set``), checked."""
    path = Path(path)
    try:
        split = pd.read_csv(path, sep="\t", dtype={"group": str, "file": str}, keep_default_na=False)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise PotflowInputError(path, f"cannot read split table: {str(exc).splitlines()[0]}") from None
    if list(split.columns) != SPLIT_COLUMNS:
        raise PotflowInputError(path, f"header must be '{' '.join(SPLIT_COLUMNS)}' (tab-separated), not {list(split.columns)}")
    bad = sorted(set(split["set"]) - set(SPLIT_SETS))
    if bad:
        raise PotflowInputError(path, f"column 'set' has {bad}; allowed: {', '.join(SPLIT_SETS)}")
    for col in ("index", "natoms"):
        if not pd.api.types.is_integer_dtype(split[col]):
            raise PotflowInputError(path, f"column '{col}' must hold integers")
    dup = split.duplicated(["group", "index"])
    if dup.any():
        row = split[dup].iloc[0]
        raise PotflowInputError(path, f"configuration {row['index']} of group {row['group']} is listed twice")
    split.attrs["path"] = str(path)
    return split


def energy_shift(eshift, elements, atom_types, natoms):
    """Sum of the per-element ``eshift`` energies (eV) of each configuration (M,)."""
    per_element = np.array([float(eshift.get(el, 0.0)) for el in elements])
    per_atom = per_element[np.asarray(atom_types)]
    config_of_atom = np.repeat(np.arange(len(natoms)), natoms)
    return np.bincount(config_of_atom, weights=per_atom, minlength=len(natoms))


def _batches(natoms, ptr, max_rows, max_atoms):
    """Contiguous config ranges [start, stop) of at most max_rows gradient rows / max_atoms atoms."""
    start, m = 0, len(natoms)
    while start < m:
        stop, atoms = start + 1, int(natoms[start])
        while stop < m and atoms + natoms[stop] <= max_atoms and ptr[stop + 1] - ptr[start] <= max_rows:
            atoms += int(natoms[stop])
            stop += 1
        yield start, stop
        start = stop


@torch.no_grad()
def predict_group(model, arrays, with_forces=True, max_rows=MAX_BATCH_ROWS, max_atoms=MAX_BATCH_ATOMS):
    """(config energies (M,), forces (A, 3), per-atom energies (A,)) of one descriptor folder.

    Configurations go through ``predict`` in batches; gradient rows are renumbered from
    within-configuration to within-batch atoms.
    """
    dtype = next(model.parameters()).dtype
    natoms = np.array(arrays["natoms"], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(natoms)])
    ptr = np.asarray(arrays["grad_ptr"], dtype=np.int64)
    energy = np.zeros(len(natoms))
    forces = np.zeros((offsets[-1], 3))
    atom_energy = np.zeros(offsets[-1])
    for s, e in _batches(natoms, ptr, max_rows, max_atoms):
        a0, a1, r0, r1 = offsets[s], offsets[e], ptr[s], ptr[e]
        # np.array copies the memory-mapped slice (read-only) into a writable array for torch
        B = torch.from_numpy(np.array(arrays["descriptors"][a0:a1], dtype=np.float64)).to(dtype)
        types = torch.from_numpy(np.array(arrays["atom_types"][a0:a1], dtype=np.int64))
        grad_values = grad_index = None
        if with_forces and r1 > r0:
            index = np.array(arrays["grad_index"][r0:r1], dtype=np.int64)
            index[:, :2] += np.repeat(offsets[s:e] - a0, np.diff(ptr[s : e + 1]))[:, None]
            grad_index = torch.from_numpy(index)
            grad_values = torch.from_numpy(np.array(arrays["grad_values"][r0:r1])).to(dtype)
        en, fo, ea = predict(model, B, types, torch.from_numpy(natoms[s:e]), grad_values, grad_index)
        energy[s:e] = en.double().numpy()
        forces[a0:a1] = fo.double().numpy()
        atom_energy[a0:a1] = ea.double().numpy()
    return energy, forces, atom_energy


def check_model(model, meta, cfg, where):
    """The model must be for these descriptors and elements."""
    if model.num_desc != meta["num_descriptors"]:
        raise PotflowInputError(
            where, f"model takes {model.num_desc} descriptors but the data has {meta['num_descriptors']}"
        )
    elements = list(cfg["bispectrum"]["type"])
    if list(model.elements) != elements:
        raise PotflowInputError(where, f"model elements {model.elements} differ from bispectrum.type {elements}")


def load_selected_model(path):
    """The model training selected, in float64 for evaluation, and its info."""
    model, info = load_model(path)
    return model.double().eval(), info


def evaluate_model(model, folders, cfg, split=None, info=None, where="model"):
    """Predictions and truths (fitted quantities) of every configuration of ``folders``.

    ``folders`` maps group -> descriptor folder, in report order. With ``split`` (read_split),
    only the configurations it lists are kept, labelled by its ``set``; without, every
    configuration is test data (a test set). Returns a dict of arrays (see save_evaluation).
    """
    elements = list(cfg["bispectrum"]["type"])
    groups = list(folders)
    split_path = split.attrs.get("path", "split.tsv") if split is not None else None
    if split is not None:
        unknown = sorted(set(split["group"]) - set(groups))
        if unknown:
            raise PotflowInputError(
                split_path, f"names groups that are not in this fit: {', '.join(unknown)} (stale split: rerun training)"
            )
    parts = []
    has_forces = True
    for g, (group, folder) in enumerate(folders.items()):
        arrays, meta = open_group(folder, cfg)
        check_model(model, meta, cfg, where)
        has_forces = has_forces and bool(meta["settings"]["forces"])
        natoms = np.asarray(arrays["natoms"], dtype=np.int64)
        files = np.asarray(arrays["files"]).astype(str)
        if split is not None:
            rows = split[split["group"] == group].sort_values("index")
            index = rows["index"].to_numpy(np.int64)
            sets = rows["set"].to_numpy(str)
            if len(index) and (index.min() < 0 or index.max() >= len(natoms)):
                raise PotflowInputError(
                    split_path, f"lists configuration {index.max()} of group {group}, which has {len(natoms)} (stale split: rerun training)"
                )
            if (rows["natoms"].to_numpy() != natoms[index]).any() or (rows["file"].to_numpy(str) != files[index]).any():
                raise PotflowInputError(
                    split_path,
                    f"group {group} does not match its descriptor files {folder} (file or natoms differ; stale split: rerun training)",
                )
        else:
            index = np.arange(len(natoms))
            sets = np.full(len(natoms), "test")
        energy, forces, atom_energy = predict_group(model, arrays, with_forces=has_forces)
        offsets = np.concatenate([[0], np.cumsum(natoms)])
        atoms = np.concatenate([np.arange(offsets[m], offsets[m + 1]) for m in index]) if len(index) else np.zeros(0, int)
        types = np.asarray(arrays["atom_types"])
        shift = energy_shift(cfg["eshift"], elements, types, natoms)
        parts.append(
            {
                "group": np.full(len(index), g, dtype=np.int32),
                "index": index,
                "filename": files[index],
                "natoms": natoms[index],
                "set": sets,
                "eshift": shift[index],
                "energy_truth": np.asarray(arrays["energy_target"])[index] + shift[index],
                "energy_pred": energy[index],
                "types": types[atoms].astype(np.int32),
                "force_truth": np.asarray(arrays["force_target"])[atoms],
                "force_pred": forces[atoms],
                "atom_energy_pred": atom_energy[atoms],
            }
        )
    if not parts:
        raise PotflowInputError(where, "no groups to evaluate")
    ev = {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}
    ev["filename"] = ev["filename"].astype(str)
    ev["set"] = ev["set"].astype(str)
    ev["groups"] = np.array(groups, dtype=str)
    ev["has_forces"] = np.array(has_forces)
    ev["info"] = np.array(json.dumps(info or {}, sort_keys=True, default=str))
    return ev


def testing_bool(ev):
    return ev["set"] == "test"


def committee_statistics(predictions):
    """(mean, standard deviation) over the members (first axis; 1/N, numpy's default)."""
    stacked = np.stack([np.asarray(p, dtype=np.float64) for p in predictions])
    return stacked.mean(axis=0), stacked.std(axis=0)


def has_committee(ev):
    return "committee_size" in ev and int(ev["committee_size"]) > 1


def add_committee(ev, member_models, folders, cfg, split=None):
    """Committee mean and standard deviation of energies and forces, added to ``ev`` in place.

    ``ev`` holds the predictions of member 0 (model.pt); ``member_models`` are the files of
    the other members, predicted on the same configurations in the same order.
    """
    energies, forces = [ev["energy_pred"]], [ev["force_pred"]]
    for path in member_models:
        model, _ = load_selected_model(path)
        other = evaluate_model(model, folders, cfg, split, where=path)
        energies.append(other["energy_pred"])
        forces.append(other["force_pred"])
    ev["committee_size"] = np.array(len(energies))
    ev["energy_committee_mean"], ev["energy_committee_std"] = committee_statistics(energies)
    ev["force_committee_mean"], ev["force_committee_std"] = committee_statistics(forces)
    return ev


def save_evaluation(path, ev):
    """Uncompressed npz of plain arrays (read with allow_pickle=False), written atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **ev)


def load_evaluation(path):
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}
    except (OSError, ValueError) as exc:
        raise PotflowInputError(path, f"not a potflow evaluation file ({exc})") from None


def model_info(ev):
    return json.loads(str(ev["info"]))


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
        "Force: per-component error in eV/&Aring;, Count = atoms.",
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
    from potflow.structures import load_group

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
    return records


def write_configs(path, records):
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            pickle.dump(records, fh, protocol=pickle.HIGHEST_PROTOCOL)


def evaluate_fit(cfg, model_path, split_path, folders, members=(), member_splits=()):
    """Evaluation of a fit on its own groups, labelled by the fit's split.

    ``members`` / ``member_splits``: model files and splits of the other committee members.
    """
    model, info = load_selected_model(model_path)
    info = {"model": str(model_path), **info}
    split = read_split(split_path)
    for path in member_splits:
        other = read_split(path)
        if not other.reset_index(drop=True).equals(split.reset_index(drop=True)):
            raise PotflowInputError(path, f"committee member was trained on another split than {split_path}")
    ev = evaluate_model(model, folders, cfg, split, info, where=model_path)
    if members:
        add_committee(ev, members, folders, cfg, split)
    return ev


def evaluate_test_set(cfg, model_path, folders, members=()):
    """Evaluation of a trained model on groups that played no part in the fit (all Test).

    Reads the model files only: nothing here trains, and no model file is written.
    """
    model, info = load_selected_model(model_path)
    info = {"model": str(model_path), **info}
    ev = evaluate_model(model, folders, cfg, None, info, where=model_path)
    if members:
        add_committee(ev, members, folders, cfg)
    return ev
