"""The properties stage: compute one kind of property for every crystal of the config (model,
reference potential, committee members), then the table, its HTML and the figures."""

import json
import tempfile
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.eos import EquationOfState
from ase.units import GPa

from potflow.errors import PotflowInputError
from potflow.fileio import atomic_path, write_json, write_text
from potflow.properties import compute
from potflow.properties.calculator import ase_calculator, pair_calculator
from potflow.properties.structures import crystal
from potflow.properties.table import html, missed, property_rows, text_table


def crystal_properties(kind, atoms, spec, calc, pcfg):
    """(rows, data for the figures) of one kind of property of one crystal."""
    if kind == "eos":
        rows, curve, _ = compute.equation_of_state(atoms, calc)
        return rows, curve
    relaxed = compute.relax(atoms, calc, cell=True)
    if kind == "elastic":
        rows, C = compute.elastic_constants(relaxed, calc, pcfg["elastic_strain"])
        return rows, {"C": C.tolist()}
    if kind == "defects":
        rows = []
        if spec["vacancy"]:
            e = compute.vacancy_formation_energy(relaxed, calc, spec["supercell"])
            rows.append(compute.row("vacancy_formation_energy", "eV", e))
        element = relaxed.get_chemical_symbols()[0]
        for name, site in spec["interstitials"].items():
            e = compute.interstitial_formation_energy(relaxed, calc, spec["supercell"], site, element)
            rows.append(compute.row(f"interstitial_formation_energy_{name}", "eV", e))
        return rows, {}
    if kind == "surfaces":
        rows = []
        for hkl in spec["surfaces"]:
            gamma = compute.surface_energy(relaxed, calc, hkl, spec["surface_layers"], spec["vacuum"])
            rows.append(compute.row("surface_energy_" + "".join(map(str, hkl)), "J/m^2", gamma))
        return rows, {}
    if kind == "phonons":
        data = compute.phonons(relaxed, calc, spec["phonon_supercell"])
        rows = [
            compute.row("phonon_lowest_frequency", "THz", data["lowest_frequency"]),
            compute.row("phonon_max_frequency", "THz", float(np.max(data["bands"]))),
        ]
        return rows, data
    raise ValueError(f"unknown kind of property {kind!r}")


def all_crystals(kind, cfg, calc):
    """{crystal: {"rows", "data"}} of one kind for the crystals that ask for it."""
    pcfg = cfg["properties"]
    elements = list(cfg["bispectrum"]["type"])
    out = {}
    for name, spec in pcfg["crystals"].items():
        if kind not in spec["compute"]:
            continue
        atoms = crystal(spec, elements, f"properties.crystals.{name}")
        rows, data = crystal_properties(kind, atoms, spec, calc, pcfg)
        out[name] = {"rows": rows, "data": data}
    return out


def eos_group(path, calc):
    """A training EOS group: model against DFT energies per atom at the same volumes, and the
    equation of state fitted to each. Returns (rows [(model row, DFT value)], curve)."""
    from potflow.data.structures import iter_configs, load_group

    volumes, dft, model = [], [], []
    for c in iter_configs(load_group(path)):
        atoms = Atoms(list(c["symbols"]), positions=c["positions"], cell=c["cell"], pbc=c["pbc"])
        atoms.calc = calc
        n = len(atoms)
        volumes.append(atoms.get_volume() / n)
        dft.append(c["energy"] / n)
        model.append(atoms.get_potential_energy() / n)
    error = np.array(model) - np.array(dft)
    rows = [(compute.row("eos_energy_rmse", "eV/atom", float(np.sqrt(np.mean(error**2)))), 0.0)]
    # near the minimum (volumes within 20 % of the data's lowest-energy one; the scans are
    # sparse): what the equilibrium properties depend on, without the far compressed points
    # that dominate the scan
    near = np.abs(np.array(volumes) / volumes[int(np.argmin(dft))] - 1) <= 0.2
    rmse_near = float(np.sqrt(np.mean(error[near] ** 2)))
    rows.append((compute.row("eos_energy_rmse_near_minimum", "eV/atom", rmse_near), 0.0))
    fits = {}
    # the equations of state are fitted near the minimum too (a scan far into compression is
    # no Birch-Murnaghan curve); with fewer than 5 volumes there, no fitted values
    v_near = np.array(volumes)[near]
    for label, energies in (("model", model), ("dft", dft)):
        if near.sum() < 5:
            break
        try:
            eos = EquationOfState(v_near, np.array(energies)[near], eos="birchmurnaghan")
            v0, e0, bulk = eos.fit()
            fits[label] = {"volume_per_atom": v0, "bulk_modulus": bulk / GPa}
        except Exception:  # no minimum inside the scan: no fitted values
            fits = {}
            break
    if fits:
        rows += [
            (compute.row("volume_per_atom", "A^3", fits["model"]["volume_per_atom"]), fits["dft"]["volume_per_atom"]),
            (compute.row("bulk_modulus", "GPa", fits["model"]["bulk_modulus"]), fits["dft"]["bulk_modulus"]),
        ]
    order = np.argsort(volumes)
    curve = {
        "volumes": np.asarray(volumes)[order].tolist(),
        "energies": np.asarray(model)[order].tolist(),
        "dft_energies": np.asarray(dft)[order].tolist(),
    }
    return rows, curve


def _member_calculators(cfg, member_models, workdir):
    """Calculators for committee members: each model exported (unchecked) to ``workdir``."""
    from potflow.lammps.export import export_model
    from potflow.models.files import load_model

    calcs = []
    for k, path in enumerate(member_models, start=1):
        out = Path(workdir) / f"member{k}"
        out.mkdir(parents=True)
        export_model(load_model(path)[0], cfg, out, "member", model_file=path, check=False)
        calcs.append(ase_calculator(out))
    return calcs


def compute_kind(cfg, kind, fit_dir, out_json, eos_group_files=(), member_models=()):
    """Compute one kind of property for the fit's exported potential, the reference potential
    (if any) and the committee members; write them as one JSON."""
    pcfg = cfg["properties"]
    elements = list(cfg["bispectrum"]["type"])
    result = {"kind": kind, "model": all_crystals(kind, cfg, ase_calculator(fit_dir))}
    ref = pcfg["reference_potential"]
    if ref:
        calc = pair_calculator(ref["pair_style"], ref["pair_coeff"], elements)
        result["reference_potential"] = all_crystals(kind, cfg, calc)
        result["reference_name"] = ref.get("name", "reference potential")
    if kind == "eos" and eos_group_files:
        calc = ase_calculator(fit_dir)
        result["eos_groups"] = {}
        for path in eos_group_files:
            rows, curve = eos_group(path, calc)
            result["eos_groups"][Path(path).stem] = {"rows": rows, "data": curve}
    if member_models:
        with tempfile.TemporaryDirectory() as tmp:
            result["members"] = [all_crystals(kind, cfg, c) for c in _member_calculators(cfg, member_models, tmp)]
    write_json(out_json, result)
    return result


def _rows(section):
    return {name: v["rows"] for name, v in (section or {}).items()}


def write_table(cfg, fit, result_files, outputs):
    """The table (tsv, html) and figures from the kinds' JSON files; returns the table.
    Missed tolerances are printed; with ``properties.fail_on_tolerance`` they fail the job."""
    pcfg = cfg["properties"]
    results = [json.loads(Path(p).read_text()) for p in result_files]
    model, ref, members, groups, curves = {}, {}, [], {}, {}
    n_members = max((len(r.get("members", [])) for r in results), default=0)
    members = [{} for _ in range(n_members)]
    for r in results:
        for name, rows in _rows(r["model"]).items():
            model.setdefault(name, []).extend(rows)
        for name, rows in _rows(r.get("reference_potential")).items():
            ref.setdefault(name, []).extend(rows)
        for k, m in enumerate(r.get("members", [])):
            for name, rows in _rows(m).items():
                members[k].setdefault(name, []).extend(rows)
        for name, g in r.get("eos_groups", {}).items():
            groups[name] = g["rows"]
            curves[name] = g["data"]
    table = property_rows(model, cfg, ref, groups, members)
    with atomic_path(outputs["table"]) as tmp:
        table.to_csv(tmp, sep="\t", index=False, float_format="%.6g")
    title = f"Material properties of fit {fit}"
    write_text(outputs["html"], html(table, title))
    _figures(results, curves, cfg, title, outputs)
    print(text_table(table))
    bad = missed(table)
    for line in bad:
        print(f"MISSED TOLERANCE: {line}")
    if bad and pcfg["fail_on_tolerance"]:
        raise PotflowInputError(
            outputs["table"], f"{len(bad)} properties miss their tolerance (properties.fail_on_tolerance): {bad[0]}"
        )
    return table


def _figures(results, group_curves, cfg, title, outputs):
    from potflow.properties.plots import eos_figure, phonon_figure

    by_kind = {r["kind"]: r for r in results}
    ref_name = (cfg["properties"]["reference_potential"] or {}).get("name", "reference potential")

    def data(section):
        return {name: v["data"] for name, v in (section or {}).items()}

    eos = by_kind.get("eos", {})
    fig = eos_figure(data(eos.get("model")), data(eos.get("reference_potential")), group_curves, title, ref_name)
    with atomic_path(outputs["eos_plot"]) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    ph = by_kind.get("phonons", {})
    fig = phonon_figure(
        data(ph.get("model")), data(ph.get("reference_potential")), title, ref_name,
        cfg["properties"]["imaginary_tolerance"],
    )  # fmt: skip
    with atomic_path(outputs["phonon_plot"]) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
