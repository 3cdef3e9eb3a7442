"""Stresses: what fitting them costs and buys, on a config's data (the bundled example by default).

For one config (its data, descriptors, network and schedule) this computes the descriptors
without and with stresses (seconds, disk size), trains the same network without stresses and
with the config's virial weights, or those given (seconds per epoch), and evaluates both selected models on the
test split with the stress-carrying descriptors: energy (eV/atom), force (eV/A) and stress (bar)
test MAE. With ``--bcc`` it also prints the pressure of a perfect bcc crystal of the first
element at that lattice constant (A) from each model plus the reference potential (the same
numbers LAMMPS gives for the exported potential, see tests/test_stress.py) and, for Ta, from
Ta06A.

    python bench/bench_stress.py [--config config.yaml] [--data DIR --scraper JSON] \\
        [--virial-weight W | --group-vweight '{"Strained_BCC": 1e-11}'] [--epochs N] \\
        [--bcc 3.316] [--work DIR]
"""

import argparse
import json
import subprocess
import time
from pathlib import Path

import numpy as np
import yaml
from measure import REPO


def peak_rss_mb():
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def folder_mb(path):
    return int(subprocess.run(["du", "-sk", str(path)], capture_output=True, text=True).stdout.split()[0]) / 1024


def configs(args):
    from potflow.config.load import prepare_config

    raw = yaml.safe_load((REPO / args.config).read_text())
    if args.data:
        raw["path"] = {"dataPath": str(Path(args.data).resolve())}
        raw["scraper"] = {"scraper": args.scraper}
    else:
        raw["path"] = {"dataPath": str((REPO / raw["path"]["dataPath"]).resolve())}
    raw["md"] = {"enabled": False}
    if args.only:  # a subset of the groups: the others excluded
        from potflow.config.groups import discover_groups

        data_dir = Path(raw["path"]["dataPath"])
        keep = args.only.split(",")
        groups = {k: v for k, v in raw.get("groups", {}).items() if k in keep or not isinstance(v, dict) or k == "defaults"}
        groups["exclude"] = [g for g in discover_groups(data_dir, raw["scraper"]["scraper"]) if g not in keep]
        raw["groups"] = groups
    if args.memory_budget is not None:
        raw.setdefault("pytorch", {})["memory_budget_mb"] = args.memory_budget
    raw["pytorch"] = {**raw.get("pytorch", {}), "threads": 1}
    if args.epochs is not None:
        raw["pytorch"]["num_epochs"] = args.epochs
    plain = dict(raw, calculator={**raw.get("calculator", {}), "stress": 0})
    stressed = dict(raw, calculator={**raw.get("calculator", {}), "stress": 1})
    if args.group_vweight:  # group vweights (the others 0), no global override
        groups = dict(raw.get("groups", {}))
        groups["defaults"] = {**groups.get("defaults", {}), "vweight": 0.0}
        for group, w in json.loads(args.group_vweight).items():
            groups[group] = {**groups.get(group, {}), "vweight": w}
        stressed["groups"] = groups
        stressed["pytorch"] = {**raw["pytorch"], "virial_weight": None}
    elif args.virial_weight is not None:
        stressed["pytorch"] = {**raw["pytorch"], "virial_weight": args.virial_weight}
    plain, stressed = prepare_config(plain), prepare_config(stressed)
    if args.group_vweight or args.virial_weight is None:  # the folders with stresses are the same whatever the weights
        keyed = prepare_config({**stressed, "pytorch": {**stressed["pytorch"], "virial_weight": 1.0}})
        return plain, stressed, keyed
    return plain, stressed, stressed


def descriptors(cfg, work, label):
    from potflow.config.groups import data_source, fit_groups, group_source
    from potflow.data.structures import import_group
    from potflow.descriptors.compute import compute_group_descriptors

    data_dir, scraper = data_source(cfg)
    elements = list(cfg["bispectrum"]["type"])
    folders, seconds = {}, 0.0
    for group in fit_groups(cfg):
        npz = work / "data" / f"{group}.npz"
        if not npz.exists():
            npz.parent.mkdir(parents=True, exist_ok=True)
            import_group(group_source(data_dir, scraper, group), scraper, elements, npz)
        out = work / f"descriptors_{label}" / group
        if not out.exists():
            t0 = time.perf_counter()
            compute_group_descriptors(cfg, npz, out, group)
            seconds += time.perf_counter() - t0
        folders[group] = str(out)
    return folders, seconds


def fit(cfg, folders, out):
    from potflow.training.loop import TrainPaths, train

    paths = TrainPaths(out / "model.pt", out / "checkpoint.pt", out / "loss_vs_epochs.dat", out / "split.tsv", out / "resume.pt")
    if not paths.model.exists():
        res = train(cfg, list(folders.values()), paths, progress=False)
        (out / "epoch_seconds.json").write_text(json.dumps(res["epoch_seconds"]))
        print(f"  trained ({'streamed' if res['streamed'] else 'in memory'}), peak RSS so far {peak_rss_mb():.0f} MB")
    return paths, json.loads((out / "epoch_seconds.json").read_text())


def test_mae(cfg, folders, paths, weighted):
    """Test MAE of energy, force and stress (*ALL), and of stress over the ``weighted`` groups."""
    from potflow.data.splits import read_split
    from potflow.evaluation.error_files import metrics_table
    from potflow.evaluation.predictions import evaluate_model, load_selected_model

    model, _ = load_selected_model(paths.model)
    ev = evaluate_model(model, folders, cfg, read_split(paths.split))
    table = metrics_table(ev)
    rows = table[(table["Group"] == "*ALL") & (table["Train/Test"] == "Test")].set_index("Property")
    out = {p: float(rows.loc[p, "MAE"]) for p in ("Energy", "Force", "Stress")}
    test = (ev["set"] == "test") & np.isin(ev["groups"][ev["group"]], weighted)
    out["Stress_weighted"] = float(np.abs(ev["stress_pred"][test] - ev["stress_truth"][test]).mean())
    return out, model


def interleaved_epochs(plain, f_plain, stressed, f_stress, work, epochs):
    """Median seconds per training epoch without and with stresses, timed in turns (the same
    machine load for both)."""
    from potflow.training.epoch import run_epoch
    from potflow.training.setup import setup_fit

    fits = [setup_fit(cfg, list(f.values()), work / f"absent_{k}.pt") for k, (cfg, f) in enumerate(((plain, f_plain), (stressed, f_stress)))]
    times = [[], []]
    for epoch in range(epochs):
        for k, fit in enumerate(fits):
            t0 = time.perf_counter()
            run_epoch(fit, epoch)
            times[k].append(time.perf_counter() - t0)
    return [float(np.median(t)) for t in times]


def bcc_pressure(cfg, model, a):
    """Pressure (GPa, the mean of the diagonal) of a 2-atom bcc cell: model plus reference."""
    from potflow.descriptors.compute import SnapCalculator
    from potflow.descriptors.settings import descriptor_settings
    from potflow.lammps.self_check import torch_single_point

    calc = SnapCalculator(descriptor_settings(cfg), with_stress=True)
    try:
        pos = np.array([[0, 0, 0], [0.5, 0.5, 0.5]]) * a
        out = torch_single_point(model, cfg, pos, np.eye(3) * a, [True] * 3, [0, 0], calc)
    finally:
        calc.close()
    return out["stress"][:3].mean() / 1e4


def ta06a_pressure(a):
    from ase.build import bulk

    from potflow.data.example import Ta06ALabeller

    atoms = Ta06ALabeller().label(bulk("Ta", "bcc", a=a, cubic=True))
    return -atoms.get_stress()[:3].mean() * 160.21766208  # eV/A^3 -> GPa, pressure sign


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="config.yaml")
    ap.add_argument("--data", help="data folder instead of the config's path.dataPath")
    ap.add_argument("--scraper", default="JSON")
    ap.add_argument("--virial-weight", type=float, help="global virial weight (default: the config's group vweights)")
    ap.add_argument("--group-vweight", help='JSON {group: vweight}; the other groups weigh stresses 0')
    ap.add_argument("--epochs", type=int)
    ap.add_argument("--interleave", type=int, default=0, help="epochs of each fit timed in turns")
    ap.add_argument("--train-only", action="store_true", help="train the fit with stresses only (descriptors computed before)")
    ap.add_argument("--only", help="comma-separated groups to keep (the others are excluded)")
    ap.add_argument("--memory-budget", type=float, help="pytorch.memory_budget_mb of both fits")
    ap.add_argument("--bcc", type=float, help="lattice constant (A) of the bcc pressure check")
    ap.add_argument("--work", default="/tmp/potflow_bench_stress")
    args = ap.parse_args()
    work = Path(args.work)
    plain, stressed, keyed = configs(args)
    print(f"uptime: {subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}")
    f_plain, t_plain = descriptors(plain, work, "plain")
    f_stress, t_stress = descriptors(keyed, work, "stress")
    mb_plain = sum(folder_mb(f) for f in f_plain.values())
    mb_stress = sum(folder_mb(f) for f in f_stress.values())
    print(f"descriptors: {t_plain:.1f} s, {mb_plain:.1f} MB without stresses; {t_stress:.1f} s, {mb_stress:.1f} MB with")
    print(f"peak RSS after the descriptors: {peak_rss_mb():.0f} MB")
    if args.train_only:  # the fit with stresses alone, in this process: its peak RSS is its own
        paths, seconds = fit(stressed, f_stress, work / "fit_with_only")
        print(f"fit with stresses alone: {np.median(seconds):.3f} s/epoch (median of {len(seconds)}), "
              f"peak RSS {peak_rss_mb():.0f} MB (memory_budget_mb {stressed['pytorch']['memory_budget_mb']})")  # fmt: skip
        return
    from potflow.config.groups import group_options

    weighted = [g for g in f_stress if group_options(stressed, g)["vweight"] > 0]
    print(f"groups with a virial weight: {', '.join(weighted)}")
    results = {}
    for label, cfg, folders in (("without", plain, f_plain), ("with", stressed, f_stress)):
        paths, seconds = fit(cfg, folders, work / f"fit_{label}")
        mae, model = test_mae(keyed, f_stress, paths, weighted)
        results[label] = (mae, model)
        print(
            f"{label} stresses: "
            f"{np.median(seconds):.3f} s/epoch (median of {len(seconds)}); test MAE energy {mae['Energy']:.4g} eV/atom, "
            f"force {mae['Force']:.4g} eV/A, stress {mae['Stress']:.4g} bar (all groups), "
            f"{mae['Stress_weighted']:.4g} bar (groups with a virial weight)"
        )
    (m0, _), (m1, _) = results["without"], results["with"]
    print(
        "with/without: energy MAE x{:.3f}, force MAE x{:.3f}, stress MAE x{:.3f} (weighted groups x{:.3f})".format(
            m1["Energy"] / m0["Energy"], m1["Force"] / m0["Force"], m1["Stress"] / m0["Stress"],
            m1["Stress_weighted"] / m0["Stress_weighted"],
        )
    )
    if args.interleave:
        t0, t1 = interleaved_epochs(plain, f_plain, stressed, f_stress, work, args.interleave)
        print(f"epochs timed in turns ({args.interleave} each): {t0:.4f} s without stresses, {t1:.4f} s with (x{t1 / t0:.2f})")
    if args.bcc:
        for label in ("without", "with"):
            p = bcc_pressure(keyed, results[label][1], args.bcc)
            print(f"bcc {plain['bispectrum']['type'][0]} at {args.bcc} A, fit {label} stresses: {p:+.3f} GPa")
        if list(plain["bispectrum"]["type"]) == ["Ta"]:
            print(f"bcc Ta at {args.bcc} A, Ta06A: {ta06a_pressure(args.bcc):+.3f} GPa")


if __name__ == "__main__":
    main()
