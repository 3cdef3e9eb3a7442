"""Float64 predictions of a fitted model on every configuration of an evaluation.

An evaluation (``evaluation.npz``) holds, per configuration and atom, the truths and the
predictions of the selected model (and of the committee members, if any), from which the
error files (``potflow.evaluation.error_files``) and the figures are made.
"""

import json

import numpy as np
import torch

from potflow.data.splits import read_split
from potflow.descriptors.compute import model_stress_batch
from potflow.descriptors.folders import has_stress, open_group
from potflow.errors import PotflowInputError
from potflow.fileio import atomic_path
from potflow.models.files import load_model
from potflow.models.network import predict

# Batches are cut by gradient rows and atoms: bounded memory whatever the configuration sizes.
MAX_BATCH_ROWS = 200_000


MAX_BATCH_ATOMS = 50_000


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
def predict_group(model, arrays, with_forces=True, max_rows=MAX_BATCH_ROWS, max_atoms=MAX_BATCH_ATOMS, with_stress=False):
    """(config energies (M,), forces (A, 3), per-atom energies (A,)) of one descriptor folder;
    with ``with_stress`` a fourth item, the stresses (M, 6) in bar (LAMMPS's pressure tensor).

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
    stress = np.zeros((len(natoms), 6))
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
        if with_stress:
            dedb = model.energy_and_gradient(B, types)[1].double().numpy()
            virial = np.asarray(arrays["virial_values"][6 * a0 : 6 * a1], dtype=np.float64).reshape(a1 - a0, 6, -1)
            stress[s:e] = model_stress_batch(dedb, virial, np.asarray(arrays["volume"][s:e]), natoms[s:e])
    if with_stress:
        return energy, forces, atom_energy, stress
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
    metas = {group: open_group(folder, cfg)[1] for group, folder in folders.items()}
    stress = all(has_stress(meta) for meta in metas.values())
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
        predicted = predict_group(model, arrays, with_forces=has_forces, with_stress=stress)
        energy, forces, atom_energy = predicted[:3]
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
        if stress:  # bar, Voigt xx yy zz yz xz xy; truth NaN where a configuration has none
            parts[-1]["stress_truth"] = np.asarray(arrays["stress_target"], dtype=np.float64)[index]
            parts[-1]["stress_pred"] = predicted[3][index]
    if not parts:
        raise PotflowInputError(where, "no groups to evaluate")
    ev = {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}
    ev["filename"] = ev["filename"].astype(str)
    ev["set"] = ev["set"].astype(str)
    ev["groups"] = np.array(groups, dtype=str)
    ev["has_forces"] = np.array(has_forces)
    ev["has_stress"] = np.array(stress)
    ev["info"] = np.array(json.dumps(info or {}, sort_keys=True, default=str))
    return ev


def evaluates_stress(ev):
    """Whether an evaluation holds stresses (a fit with stresses; older files hold none)."""
    return "has_stress" in ev and bool(ev["has_stress"])


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
