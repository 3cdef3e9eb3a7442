"""Benchmark: MD speed of an exported potential against LAMMPS's linear SNAP, same descriptors.

    python bench/bench_md.py --system Ta --export /tmp/bench_dryrun/results/fits/default/lammps/Ta_pytorch.mod
    python bench/bench_md.py --system WBe

(``bench/bench_jobs.py dryrun --work /tmp/bench_dryrun`` runs the bundled example to the end.)

128-atom bcc Ta (a = 3.316 A, 4x4x4 cells; W-Be: bcc W, a = 3.165 A, 1 atom in 8 Be),
velocities at 300 K, 1,000 NVE steps of 1 fs, one thread, every potential in a fresh LAMMPS
instance of this process, in turns (``--rounds``). Each line gives ns/day from the run's CPU
time (on a shared machine its wall time also counts other processes; both are printed),
LAMMPS's own ``Pair`` share of the loop and the ratio to ``pair_style snap`` of the same round (same descriptor settings: the bundled example's with Ta06A's coefficients, or
configs/WBe.yaml's with small random ones). The variants separate the costs:

- ``snap``: ``pair_style snap``, linear; thermo every 1,000 steps, so it forms the descriptors B
  only there (for the energy): the forces need only the adjoint of the coefficients.
- ``snap quadratic``: the same with ``quadraticflag 1`` and zero quadratic coefficients (the
  same energies): B is now formed at every step, as any nonlinear model needs.
- ``mliap linear``: ML-IAP's ``model linear`` with the same coefficients and ``descriptor sna``
  (the same energies); ML-IAP too forms B only where the energy is asked for.
- ``mliap nn W-W``: ``model nn``, random tanh networks of width W: B at every step, then the
  network's dE/dB (its cost grows with W).
- ``potflow export``: the files the workflow writes (``potflow.lammps.export``, the self-check
  included) for a network of the config's architecture with random weights, and ``--export``,
  the exported fit given (e.g. the bundled example's).

Energies of snap, snap quadratic and mliap linear agree to round-off (checked and printed).
"""

import argparse
import os
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402
import yaml  # noqa: E402

from potflow.config.load import prepare_config  # noqa: E402
from potflow.lammps.export import export_model  # noqa: E402
from potflow.lammps.inputs import DIR_VARIABLE, format_descriptor_file  # noqa: E402
from potflow.lammps.mliap_model import LammpsNetwork, format_model_file  # noqa: E402
from potflow.lammps.session import open_lammps, potentials_dir  # noqa: E402
from potflow.models.network import AtomicEnergyModel  # noqa: E402

REPO = Path(__file__).resolve().parent.parent

SYSTEMS = {
    # the bundled example's descriptor settings, with Ta06A's bzeroflag 0 so that Ta06A's own
    # coefficients give the same energies through every path
    "Ta": {
        "config": "config.yaml", "lattice": "bcc 3.316", "masses": [180.88], "elements": ["Ta"],
        "zbl": ["pair_coeff * * zbl 73 73"], "bzeroflag": 0,
    },
    # configs/WBe.yaml's settings; bcc W with every 8th atom Be
    "WBe": {
        "config": "configs/WBe.yaml", "lattice": "bcc 3.165", "masses": [183.84, 9.012], "elements": ["W", "Be"],
        "zbl": ["pair_coeff 1 1 zbl 74 74", "pair_coeff 1 2 zbl 74 4", "pair_coeff 2 2 zbl 4 4"], "bzeroflag": 1,
    },
}  # fmt: skip
K = 30  # twojmax 6


def system_config(system):
    cfg = yaml.safe_load((REPO / SYSTEMS[system]["config"]).read_text())
    cfg["bispectrum"]["bzeroflag"] = SYSTEMS[system]["bzeroflag"]
    cfg["path"] = {"dataPath": "."}
    cfg.setdefault("md", {})["enabled"] = False
    return prepare_config(cfg)


def linear_coefficients(system, rng):
    """Per element beta_0 then K linear coefficients: Ta06A's for Ta, small random ones for W-Be."""
    if system == "Ta":
        lines = (potentials_dir() / "Ta06A.snapcoeff").read_text().splitlines()
        rows = [ln.split() for ln in lines if ln.strip() and not ln.startswith("#")]
        return [np.array([float(r[0]) for r in rows[2:]])]  # after "1 31" and "Ta 0.5 1"
    return [rng.normal(0, 1e-3, K + 1) for _ in SYSTEMS[system]["elements"]]


def write_files(system, work, export=None):
    """Every variant's files in ``work``: {name: pair commands, or the path of a .mod}."""
    spec, cfg = SYSTEMS[system], system_config(system)
    bis, rng = cfg["bispectrum"], np.random.default_rng(0)
    elements = spec["elements"]
    beta = linear_coefficients(system, rng)
    param = (
        f"rcutfac {bis['rcutfac']}\ntwojmax {bis['twojmax']}\nrfac0 {bis['rfac0']}\nrmin0 {bis['rmin0']}\n"
        f"bzeroflag {bis['bzeroflag']}\nswitchflag {bis['switchflag']}\n"
    )
    (work / "lin.snapparam").write_text(param + "quadraticflag 0\n")
    (work / "quad.snapparam").write_text(param + "quadraticflag 1\n")
    heads = [f"{el} {r} {w}" for el, r, w in zip(elements, bis["radelem"], bis["wj"], strict=True)]
    quad = [np.concatenate([b, np.zeros(K * (K + 1) // 2)]) for b in beta]
    for name, coeffs in (("lin", beta), ("quad", quad)):
        body = [f"{len(elements)} {len(coeffs[0])}"]
        for head, c in zip(heads, coeffs, strict=True):
            body += [head, *(repr(float(x)) for x in c)]
        (work / f"{name}.snapcoeff").write_text("\n".join(body) + "\n")
    (work / "sna.mliap.descriptor").write_text(format_descriptor_file(cfg))
    (work / "linear.mliap.model").write_text(
        f"{len(elements)} {K + 1}\n" + "\n".join(repr(float(x)) for b in beta for x in b) + "\n"
    )
    overlay = "pair_style hybrid/overlay zbl 4.0 4.8 {}"
    names = " ".join(elements)
    desc = f"descriptor sna {work}/sna.mliap.descriptor"
    variants = {
        "snap": [overlay.format("snap"), *spec["zbl"], f"pair_coeff * * snap {work}/lin.snapcoeff {work}/lin.snapparam {names}"],
        "snap quadratic": [overlay.format("snap"), *spec["zbl"], f"pair_coeff * * snap {work}/quad.snapcoeff {work}/quad.snapparam {names}"],
        "mliap linear": [overlay.format(f"mliap model linear {work}/linear.mliap.model {desc}"), *spec["zbl"], f"pair_coeff * * mliap {names}"],
    }  # fmt: skip
    for width in (64, 8):
        sizes = [K, width, width, 1]
        net = LammpsNetwork(
            elements=elements, activation="tanh", shift=np.zeros((len(elements), K)), scale=np.ones((len(elements), K)),
            weights=[rng.normal(0, 1e-3, (len(elements), o, i)) for i, o in zip(sizes[:-1], sizes[1:], strict=True)],
            biases=[np.zeros((len(elements), o)) for o in sizes[1:]],
        )  # fmt: skip
        (work / f"nn{width}.mliap.model").write_text(format_model_file(net))
        variants[f"mliap nn {width}-{width}"] = [
            overlay.format(f"mliap model nn {work}/nn{width}.mliap.model {desc}"), *spec["zbl"], f"pair_coeff * * mliap {names}",
        ]  # fmt: skip
    # the workflow's own export of a network of the config's architecture (random weights, the
    # output layer scaled down so that the crystal stays a crystal), LAMMPS checked against torch
    pt = cfg["pytorch"]
    hidden = [int(h) for h in pt["layer_sizes"][1:-1]]
    torch.manual_seed(0)
    model = AtomicEnergyModel(K, hidden, elements, pt["multi_element_option"], pt["activation"])
    with torch.no_grad():
        for net in model.nets:
            list(net.parameters())[-2].mul_(1e-3)
    record = export_model(model.double(), cfg, work / "export", "random")
    variants[f"potflow export, {'-'.join(map(str, hidden))} random"] = str(work / "export" / "random.mod")
    if export:
        variants["potflow export (--export)"] = export
    # the exports right after snap: their ratios pair runs that are close in time
    first = ["snap", *(k for k in variants if k.startswith("potflow"))]
    return {k: variants[k] for k in first + [k for k in variants if k not in first]}, record


def run_md(system, commands, steps):
    """(ns/day of CPU time, Pair share of the loop, potential energy at step 0, ns/day of wall
    time) of one NVE run. The CPU time (one thread) is what the run costs; on a shared machine
    its wall time also counts the time other processes held the core."""
    spec = SYSTEMS[system]
    lmp = open_lammps()
    log = tempfile.NamedTemporaryFile(suffix=".lammps", delete=False).name
    try:
        lmp.command(f"log {log}")
        lmp.commands_string(
            f"units metal\natom_style atomic\nlattice {spec['lattice']}\nregion box block 0 4 0 4 0 4\n"
            f"create_box {len(spec['elements'])} box\ncreate_atoms 1 box\n"
        )
        if len(spec["elements"]) > 1:
            lmp.command("set group all type/ratio 2 0.125 4928459")
        for t, mass in enumerate(spec["masses"], start=1):
            lmp.command(f"mass {t} {mass}")
        if isinstance(commands, str):
            lmp.command(f"variable {DIR_VARIABLE} index {Path(commands).resolve().parent}")
            lmp.command(f"include {Path(commands).resolve()}")
        else:
            lmp.commands_string("\n".join(commands))
        lmp.commands_string(
            "velocity all create 300.0 4928459 mom yes rot no dist gaussian\nneighbor 1.0 bin\n"
            "timestep 0.001\nfix nve all nve\nthermo 1000\nthermo_style custom step pe ke etotal\nrun 0\n"
        )
        pe0 = lmp.get_thermo("pe")
        t0, c0 = time.perf_counter(), time.process_time()
        lmp.command(f"run {steps}")
        seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
        lmp.command("log none")
    finally:
        lmp.close()
    text = Path(log).read_text()
    os.unlink(log)
    pair = [ln for ln in text.splitlines() if ln.startswith("Pair ")][-1].split("|")
    return steps * 1e-6 / cpu * 86400, float(pair[-1]) / 100, pe0, steps * 1e-6 / seconds * 86400


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--system", choices=sorted(SYSTEMS), default="Ta")
    parser.add_argument("--export", help="the .mod of an exported potflow fit of this system (e.g. the bundled example's)")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    work = Path(tempfile.mkdtemp(prefix="bench_md_"))
    variants, record = write_files(args.system, work, args.export)
    print(f"# {os.cpu_count()} CPUs, one LAMMPS process, OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}, {args.system}")
    print(f"# the random export's self-check, LAMMPS vs torch: {record.get('self_check', record)}")
    print(f"uptime before: {subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}")
    results = {name: [] for name in variants}
    for _ in range(args.rounds):
        for name, commands in variants.items():
            results[name].append(run_md(args.system, commands, args.steps))
    print(f"uptime after:  {subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}")
    snap = [r[0] for r in results["snap"]]
    print("\n| potential | ns/day of CPU time (each round) | / snap (same round, median) | ns/day of wall time | Pair share of the loop | E at step 0 (eV) |")
    print("|---|---|---|---|---|---|")
    for name, runs in results.items():
        ratio = np.median([r[0] / s for r, s in zip(runs, snap, strict=True)])
        print(
            f"| {name} | {' / '.join(f'{r[0]:.2f}' for r in runs)} | {ratio:.2f} | "
            f"{' / '.join(f'{r[3]:.2f}' for r in runs)} | {np.mean([r[1] for r in runs]):.1%} | {runs[0][2]:.10f} |"
        )
    e = [results[k][0][2] for k in ("snap", "snap quadratic", "mliap linear")]
    print(f"\nsnap, snap quadratic, mliap linear: max |dE| at step 0 = {max(e) - min(e):.2e} eV (same potential)")


if __name__ == "__main__":
    main()
