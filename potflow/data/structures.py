"""Data import: FitSNAP JSON folders or extended XYZ files -> one canonical file per group.

The canonical file is an uncompressed ``.npz`` (read with ``allow_pickle=False``) holding,
for M configurations with N_m atoms each, in metal units (Angstrom, eV, eV/Angstrom, bar):

  natoms (M,)  cells (M,3,3) rows = cell vectors  pbc (M,3)  energy (M,)  stress (M,3,3) NaN if absent
  (stress has FitSNAP JSON's sign, the pressure tensor: compression is positive)
  positions (sum N_m, 3)  forces (sum N_m, 3)  symbols (sum N_m,)  files (M,) source of each config
"""

import json
import math
from pathlib import Path

import numpy as np

from potflow.errors import PotflowInputError
from potflow.fileio import write_npz

EV_PER_A3_IN_BAR = 1.602176634e6


_LENGTH = {"angstrom": 1.0, "bohr": 0.529177210903}


_ENERGY = {"electronvolt": 1.0, "hartree": 27.211386245988, "rydberg": 13.605693122994}


_FORCE = {"electronvoltperangstrom": 1.0, "hartreeperbohr": 27.211386245988 / 0.529177210903}


_STRESS = {"bar": 1.0, "kbar": 1000.0, "kb": 1000.0, "gpa": 1.0e4}


_REQUIRED = ("Energy", "Positions", "Forces", "AtomTypes", "Lattice")


def _unit(table, style, where, field):
    key = str(style).lower().replace(" ", "").replace("_", "")
    if key not in table:
        raise PotflowInputError(where, f"unknown unit '{style}' in field '{field}' (known: {', '.join(table)})")
    return table[key]


def _array(value, shape, where, field):
    try:
        arr = np.asarray(value, dtype=float)
    except (TypeError, ValueError):
        raise PotflowInputError(where, f"field '{field}' is not numeric") from None
    if arr.shape != shape:
        raise PotflowInputError(where, f"field '{field}' has shape {arr.shape}, expected {shape}")
    if not np.all(np.isfinite(arr)):
        raise PotflowInputError(where, f"field '{field}' contains NaN or inf")
    return arr


def parse_fitsnap_json(path):
    """One configuration record from a FitSNAP JSON file (leading comment line allowed)."""
    path = Path(path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise PotflowInputError(path, f"cannot read: {exc}") from None
    skipped = 0  # lines dropped before parsing, so error line numbers match the file
    if text.startswith("#"):
        text = text.split("\n", 1)[1] if "\n" in text else ""
        skipped = 1
    try:
        doc = json.loads(text)
        dataset = doc["Dataset"]
        data = dataset["Data"]
        rec = data[0]
    except json.JSONDecodeError as exc:
        raise PotflowInputError(path, f"malformed JSON: {exc.msg} (line {exc.lineno + skipped}, column {exc.colno})") from None
    except (KeyError, IndexError, TypeError):
        raise PotflowInputError(path, "not a FitSNAP JSON file: expected {\"Dataset\": {\"Data\": [ {...} ]}}") from None
    if not isinstance(rec, dict):
        raise PotflowInputError(path, "field 'Dataset.Data[0]' is not an object")
    for field in _REQUIRED:
        if field not in rec:
            raise PotflowInputError(path, f"missing field '{field}'")
    types = rec["AtomTypes"]
    if not isinstance(types, list) or not all(isinstance(t, str) for t in types):
        raise PotflowInputError(path, "field 'AtomTypes' must be a list of element symbols")
    n = len(types)
    if n == 0:
        raise PotflowInputError(path, "field 'AtomTypes' is empty: a configuration needs atoms")
    if "NumAtoms" in rec and rec["NumAtoms"] != n:
        raise PotflowInputError(path, f"field 'NumAtoms' is {rec['NumAtoms']} but 'AtomTypes' lists {n} atoms")
    length = _unit(_LENGTH, dataset.get("PositionsStyle", "angstrom"), path, "PositionsStyle")
    lattice_unit = _unit(_LENGTH, dataset.get("LatticeStyle", "angstrom"), path, "LatticeStyle")
    energy_unit = _unit(_ENERGY, dataset.get("EnergyStyle", "electronvolt"), path, "EnergyStyle")
    force_unit = _unit(_FORCE, dataset.get("ForcesStyle", "electronvoltperangstrom"), path, "ForcesStyle")
    energy = rec["Energy"]
    if isinstance(energy, bool) or not isinstance(energy, (int, float)) or not math.isfinite(energy):
        raise PotflowInputError(path, f"field 'Energy' must be a finite number, got {energy!r}")
    stress = np.full((3, 3), np.nan)
    if rec.get("Stress") is not None:
        stress_unit = _unit(_STRESS, dataset.get("StressStyle", "bar"), path, "StressStyle")
        stress = _array(rec["Stress"], (3, 3), path, "Stress") * stress_unit
    return {
        "symbols": types,
        "positions": _array(rec["Positions"], (n, 3), path, "Positions") * length,
        "forces": _array(rec["Forces"], (n, 3), path, "Forces") * force_unit,
        "cell": _array(rec["Lattice"], (3, 3), path, "Lattice") * lattice_unit,
        "pbc": np.ones(3, dtype=bool),
        "energy": float(energy) * energy_unit,
        "stress": stress,
        "file": path.name,
    }


def read_json_group(folder):
    folder = Path(folder)
    if not folder.is_dir():
        raise PotflowInputError(folder, "group folder does not exist")
    files = sorted(folder.glob("*.json"))
    return [parse_fitsnap_json(f) for f in files]


def read_xyz_group(path):
    """Configurations of an extended XYZ file (energy and forces required), read with ASE."""
    # ASE (with scipy) takes ~0.5 s to import: only the XYZ reader and large cells need it, so
    # a JSON import or a descriptor job starts without it
    import ase.io
    from ase.stress import voigt_6_to_full_3x3_stress

    path = Path(path)
    try:
        frames = ase.io.read(path, index=":", format="extxyz")
    except FileNotFoundError:
        raise PotflowInputError(path, "group file does not exist") from None
    except Exception as exc:  # ASE raises many types for malformed text
        raise PotflowInputError(path, f"malformed extended XYZ: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    records = []
    for k, atoms in enumerate(frames):
        where = f"{path}:{k}"
        calc = atoms.calc
        results = getattr(calc, "results", {}) if calc is not None else {}
        energy = results.get("energy", atoms.info.get("energy"))
        forces = results.get("forces", atoms.arrays.get("forces"))
        if energy is None:
            raise PotflowInputError(where, "missing field 'energy'")
        if forces is None:
            raise PotflowInputError(where, "missing field 'forces'")
        if not math.isfinite(float(energy)):
            raise PotflowInputError(where, f"field 'energy' must be a finite number, got {energy!r}")
        n = len(atoms)
        if n == 0:
            raise PotflowInputError(where, "configuration has no atoms")
        stress = np.full((3, 3), np.nan)
        if "stress" in results:

            s = np.asarray(results["stress"], dtype=float)
            if s.shape not in ((6,), (3, 3)):
                raise PotflowInputError(where, f"field 'stress' has shape {s.shape}, expected (6,) or (3, 3)")
            if not np.all(np.isfinite(s)):
                raise PotflowInputError(where, "field 'stress' contains NaN or inf")
            # ASE's stress is minus the pressure tensor; FitSNAP JSON stores the pressure tensor
            stress = -(voigt_6_to_full_3x3_stress(s) if s.shape == (6,) else s) * EV_PER_A3_IN_BAR
        records.append(
            {
                "symbols": atoms.get_chemical_symbols(),
                "positions": _array(atoms.positions, (n, 3), where, "positions"),
                "forces": _array(forces, (n, 3), where, "forces"),
                "cell": _array(atoms.cell[:], (3, 3), where, "Lattice"),
                "pbc": np.asarray(atoms.pbc, dtype=bool),
                "energy": float(energy),
                "stress": stress,
                "file": f"{path.name}:{k}",
            }
        )
    return records


def cell_heights(cell):
    """The cell's height across each pair of faces: the volume over that face's area (3,)."""
    cell = np.asarray(cell, dtype=np.float64)
    areas = np.linalg.norm(np.cross(cell[[1, 2, 0]], cell[[2, 0, 1]]), axis=1)
    return abs(np.linalg.det(cell)) / np.maximum(areas, 1e-300)


def shortest_distance(positions, cell, pbc, cutoff):
    """The shortest interatomic distance below ``cutoff`` (periodic images included), else None."""
    n = len(positions)
    if n <= 2000 and (not pbc.any() or np.all(cell_heights(cell)[pbc] > 2 * cutoff)):
        # any vector shorter than the cutoff has fractional parts below 1/2 along every periodic
        # axis, so the rounded image is the only one that can be that close: exact, O(N^2) in numpy
        i, j = np.triu_indices(n, 1)
        diff = positions[j] - positions[i]
        if pbc.any():
            frac = np.linalg.solve(cell.T, diff.T).T
            frac[:, pbc] -= np.round(frac[:, pbc])
            diff = frac @ cell
        d = np.sqrt(np.einsum("ij,ij->i", diff, diff)) if len(diff) else np.empty(0)
        d = d[d < cutoff]
        return float(d.min()) if len(d) else None

    from ase import Atoms
    from ase.neighborlist import neighbor_list

    d = neighbor_list("d", Atoms(positions=positions, cell=cell, pbc=pbc), cutoff)
    return float(d.min()) if len(d) else None


def check_record(rec, elements, min_distance, where):
    """Physical sanity: known elements, a real cell, no overlapping atoms."""
    unknown = sorted(set(rec["symbols"]) - set(elements))
    if unknown:
        raise PotflowInputError(where, f"element(s) {', '.join(unknown)} not in config bispectrum.type {elements}")
    if rec["pbc"].any():
        volume = abs(np.linalg.det(rec["cell"]))
        if volume < 1e-6:
            raise PotflowInputError(where, f"field 'Lattice' has zero volume ({volume:.3g} A^3)")
    if min_distance > 0 and len(rec["symbols"]) > 1:
        d = shortest_distance(rec["positions"], rec["cell"], rec["pbc"], min_distance)
        if d is not None:
            raise PotflowInputError(
                where,
                f"atoms overlap: distance {d:.3g} A is below descriptors.min_distance {min_distance} A",
            )


def import_group(source, scraper, elements, out_path, min_distance=0.5):
    """Read, check and write one group's canonical file; nothing is written on error."""
    source = Path(source)
    records = read_json_group(source) if scraper == "JSON" else read_xyz_group(source)
    if not records:
        raise PotflowInputError(
            source,
            f"empty group: no {scraper} configurations found in path.dataPath "
            "(add data, or leave the group out with groups.exclude)",
        )
    for rec in records:
        where = source / rec["file"] if scraper == "JSON" else f"{source.parent / rec['file']}"
        check_record(rec, elements, min_distance, where)
    arrays = {
        "natoms": np.array([len(r["symbols"]) for r in records], dtype=np.int64),
        "cells": np.stack([r["cell"] for r in records]),
        "pbc": np.stack([r["pbc"] for r in records]),
        "energy": np.array([r["energy"] for r in records]),
        "stress": np.stack([r["stress"] for r in records]),
        "positions": np.concatenate([r["positions"] for r in records]),
        "forces": np.concatenate([r["forces"] for r in records]),
        "symbols": np.array([s for r in records for s in r["symbols"]], dtype="U3"),
        "files": np.array([r["file"] for r in records]),
    }
    write_npz(out_path, **arrays)
    return arrays


def load_group(path):
    """The canonical arrays of one imported group, with ``offsets`` (M+1,) into the atom arrays."""
    with np.load(path, allow_pickle=False) as npz:
        data = {k: npz[k] for k in npz.files}
    data["offsets"] = np.concatenate([[0], np.cumsum(data["natoms"])])
    return data


def iter_configs(data):
    """Per-configuration views of a loaded group."""
    off = data["offsets"]
    for m in range(len(data["natoms"])):
        a, b = off[m], off[m + 1]
        yield {
            "positions": data["positions"][a:b],
            "forces": data["forces"][a:b],
            "symbols": data["symbols"][a:b],
            "cell": data["cells"][m],
            "pbc": data["pbc"][m],
            "energy": float(data["energy"][m]),
            "file": str(data["files"][m]),
        }
