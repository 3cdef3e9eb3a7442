"""Linear SNAP (solver SVD or RIDGE): test-set MAE and solve time, bundled example and Ta_JSON.

Bundled example (data/Ta_example, config.yaml's descriptors and split): labelled by Ta06A, a
linear SNAP on the same descriptors, so the fit should reproduce it to round-off.
Ta_JSON (../shared/data/Ta_JSON): FitSNAP's Ta settings and split (bench_train_ta.py: twojmax 6,
ZBL, 0.7/0.3 per group in FitSNAP's file order), weighted either as FitSNAP's PyTorch example
(``pytorch``: energy_weight 1e-2, force_weight 1, the network benchmark's loss) or by the
[GROUPS] table of FitSNAP's Ta input (``groups``: tests/data/fitsnap/Ta-pytorch.in).

    python bench/bench_linear.py [--solver SVD RIDGE] [--alpha 1e-8] [--work /tmp/potflow_bench_ta]

``fit_ta_linear`` is the Ta fit as a function (for accuracy-versus-time plots).
"""

import argparse
import copy
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_train_ta import CONFIG as TA_CONFIG  # noqa: E402
from bench_train_ta import DATA as TA_DATA  # noqa: E402
from bench_train_ta import descriptors as ta_descriptors  # noqa: E402
from measure import REPO  # noqa: E402

TA_INPUT = REPO / "tests" / "data" / "fitsnap" / "Ta-pytorch.in"


def linear_config(cfg, solver="SVD", alpha=1e-8):
    """``cfg`` as a linear fit: the solver, and of its pytorch section only the keys a linear
    fit reads (the global weights)."""
    from potflow.config.load import LINEAR_PYTORCH_KEYS, prepare_config

    cfg = copy.deepcopy(cfg)
    cfg["pytorch"] = {k: v for k, v in cfg.get("pytorch", {}).items() if k in LINEAR_PYTORCH_KEYS}
    cfg["solver"] = {"solver": solver}
    cfg["ridge"] = {"alpha": alpha}
    cfg.setdefault("md", {})["enabled"] = False
    return prepare_config(cfg)


def test_mae(coefficients, data):
    """Energy (eV/atom) and force (eV/A) MAE on the test configurations of ``data`` (FitData)."""
    from potflow.linear.solve import predict

    t = data.table
    e_err, f_err = [], []
    for gid, g in enumerate(data.groups):
        test = (t["group_id"] == gid) & (t["set"] == "test")
        index = t["index"][test]
        if not len(index):
            continue
        e, f = predict(coefficients, g.folder, index)
        e_err.append((e - t["energy"][test]) / t["natoms"][test])
        atoms = np.concatenate([np.arange(g.atom_start[m], g.atom_start[m] + g.natoms[m]) for m in index])
        f_err.append((f - np.asarray(g.arrays["force_target"])[atoms]).ravel())
    return float(np.abs(np.concatenate(e_err)).mean()), float(np.abs(np.concatenate(f_err)).mean())


def fit(cfg, folders):
    """Solve ``cfg`` (a linear config) on ``folders``: errors, timing and the coefficients."""
    from potflow.linear.fit import solve_config

    t0 = time.perf_counter()
    coefficients, data = solve_config(cfg, folders)
    seconds = time.perf_counter() - t0
    mae_e, mae_f = test_mae(coefficients, data)
    return {
        "solver": coefficients.solver, "alpha": coefficients.alpha, "solve_s": seconds,
        "test_energy_mae_eV_atom": mae_e, "test_force_mae_eV_A": mae_f,
        "train_configs": coefficients.configs, "test_configs": len(data.ids("test")),
        "rank": coefficients.rank, "coefficients": coefficients,
    }  # fmt: skip


def fit_ta_linear(work="/tmp/potflow_bench_ta", solver="SVD", alpha=1e-8, weights="pytorch"):
    """The linear fit of Ta_JSON with FitSNAP's Ta settings and split; returns ``fit``'s dict
    plus ``descriptor_s`` (descriptors are computed once into ``work`` and reused)."""
    work = Path(work)
    folders, descriptor_s = ta_descriptors(work)
    cfg = {**TA_CONFIG, "path": {"dataPath": str(TA_DATA)}}
    if weights == "groups":
        from potflow.config.fitsnap import read_fitsnap_input

        cfg["groups"] = read_fitsnap_input(TA_INPUT).config["groups"]
        cfg["groups"].pop("random_sampling", None)  # FitSNAP's file order, as the split of bench_train_ta
        cfg["pytorch"] = {}
    return {**fit(linear_config(cfg, solver, alpha), folders), "descriptor_s": descriptor_s, "weights": weights}


def fit_bundled_example(work, solver="SVD", alpha=1e-8):
    """The linear fit of the bundled example with config.yaml's descriptors, split and weights."""
    from potflow.config.groups import fit_groups
    from potflow.config.load import load_config
    from potflow.data.structures import import_group
    from potflow.descriptors.compute import compute_group_descriptors
    from potflow.descriptors.settings import descriptor_key

    base = load_config(REPO / "config.yaml")
    base["path"]["dataPath"] = str(REPO / "data" / "Ta_example")
    cfg = linear_config(base, solver, alpha)
    folders = []
    for group in fit_groups(cfg):
        npz = Path(work) / "data" / f"{group}.npz"
        out = Path(work) / "descriptors" / descriptor_key(cfg) / group
        if not out.exists():
            import_group(REPO / "data" / "Ta_example" / f"{group}.xyz", "XYZ", ["Ta"], npz)
            compute_group_descriptors(cfg, npz, out, group)
        folders.append(str(out))
    return fit(cfg, folders)


def fit_wbe_linear(data_dir, work, memory_mb, solver="SVD"):
    """configs/WBe.yaml as a linear fit (0.7/0.3 split, unit weights) on ``data_dir`` (the
    whole W–Be set or a subset made by ../shared/fitsnap/make_subset.sh) with the solve's blocks
    sized by ``memory_mb``; descriptors are computed into ``work`` once. Also returns the peak RSS
    of this process (run it a second time, descriptors ready, for the fit's own figure)."""
    import resource

    from potflow.config.groups import fit_groups
    from potflow.config.load import load_config
    from potflow.data.structures import import_group
    from potflow.descriptors.compute import compute_group_descriptors
    from potflow.descriptors.settings import descriptor_key

    base = load_config(REPO / "configs" / "WBe.yaml")
    base["path"]["dataPath"] = str(data_dir)
    base["pytorch"]["memory_budget_mb"] = memory_mb
    cfg = linear_config(base, solver)
    folders = []
    for group in fit_groups(cfg):
        npz = Path(work) / "data" / f"{group}.npz"
        out = Path(work) / "descriptors" / descriptor_key(cfg) / group
        if not out.exists():
            import_group(Path(data_dir) / group, "JSON", cfg["bispectrum"]["type"], npz)
            compute_group_descriptors(cfg, npz, out, group)
        folders.append(str(out))
    r = fit(cfg, folders)
    r["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    r["force_rows"] = r["coefficients"].force_rows
    return r


def line(name, r):
    extra = f" alpha {r['alpha']:g}" if r["solver"] == "RIDGE" else ""
    return (
        f"{name}: {r['solver']}{extra}: test MAE energy {r['test_energy_mae_eV_atom']:.3g} eV/atom, "
        f"force {r['test_force_mae_eV_A']:.3g} eV/A; solve {r['solve_s']:.3f} s "
        f"({r['train_configs']} train / {r['test_configs']} test configurations, rank {r['rank']})"
    )


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--solver", nargs="+", default=["SVD", "RIDGE"])
    ap.add_argument("--alpha", type=float, default=1e-8, help="ridge.alpha (FitSNAP's default)")
    ap.add_argument("--work", default="/tmp/potflow_bench_ta")
    ap.add_argument("--example-work", default="/tmp/potflow_bench_example")
    ap.add_argument("--wbe", help="W–Be data folder: fit it (only) with --memory-mb")
    ap.add_argument("--memory-mb", type=float, default=2048, help="pytorch.memory_budget_mb of the W–Be fit")
    args = ap.parse_args()
    if args.wbe:
        r = fit_wbe_linear(args.wbe, args.work, args.memory_mb, args.solver[0])
        print(line(f"W-Be ({args.wbe}), memory_budget_mb {args.memory_mb:g}", r))
        print(f"{r['force_rows']} force rows; peak RSS of this process {r['peak_rss_mb']:.0f} MB")
        return
    for solver in args.solver:
        print(line("bundled example", fit_bundled_example(args.example_work, solver, args.alpha)), flush=True)
    for weights in ("pytorch", "groups"):
        for solver in args.solver:
            r = fit_ta_linear(args.work, solver, args.alpha, weights)
            print(line(f"Ta_JSON, {weights} weights", r), flush=True)
    print(f"(Ta descriptors {r['descriptor_s']:.1f} s, computed once into {args.work})")


if __name__ == "__main__":
    main()
