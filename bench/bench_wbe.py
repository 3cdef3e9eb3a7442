"""Benchmark: the whole W–Be set (../shared/data/WBe_JSON) with configs/WBe.yaml.

    python bench/bench_wbe.py descriptors --cores 2 [--work /tmp/wbe_bench]
    python bench/bench_wbe.py train --batch-size 4 64 --fraction 0.1 0.3 1.0 --epochs 3
    python bench/bench_wbe.py fit --epochs 200 --extra '{"scheduler": {"type": "cosine"}}'
    python bench/bench_wbe.py fit --epochs 20 --linear   # configs/WBe.yaml's defaults; + the linear fit
    python bench/bench_wbe.py pipeline --cores 2 [--work /tmp/wbe_run]

Results go to --work (outside the repository). ``descriptors`` runs Snakemake up to the
descriptor rule from an empty folder (import + descriptors of all 44 groups; Snakemake's start
included) and samples the peak RSS of the process tree. ``train`` trains on a fraction f of
every group's configurations (training_size 0.7 f, testing_size 0.3 f), each run a fresh
process so that its peak RSS (ru_maxrss) is its own; it prints the median epoch time.
``fit`` trains the whole set for --epochs (pick them to fit FitSNAP's 17 minutes) and prints
the test MAE of the selected model. ``pipeline`` runs the whole workflow and prints each stage's time.
FitSNAP's figures (same machine) are in ../shared/FITSNAP_NOTES.md.
"""

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import yaml
from measure import REPO, child_env, mae_on_test_split, run_snakemake, timed_epochs

DATA = REPO.parent / "shared" / "data" / "WBe_JSON"
CONFIG = REPO / "configs" / "WBe.yaml"
FITSNAP = {"descriptors_s": 405.0, "epoch_s": 25.3, "rss_gb": 9.8, "energy_mae": 0.086, "force_mae": 0.112}


def bench_config(work, **sections):
    """configs/WBe.yaml with an absolute dataPath and ``sections`` merged in, written to work."""
    cfg = yaml.safe_load(CONFIG.read_text())
    cfg["path"]["dataPath"] = str(DATA.resolve())
    for name, values in sections.items():
        cfg.setdefault(name, {}).update(values)
    work.mkdir(parents=True, exist_ok=True)
    path = work / "config.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return cfg, path


def descriptor_folders(work):
    return sorted(p.parent for p in (work / "results" / "descriptors").glob("*/*/meta.json"))


def cmd_descriptors(args):
    work = Path(args.work)
    for cores in args.cores:
        wdir = work / f"descriptors_c{cores}"
        if wdir.exists():
            import shutil

            shutil.rmtree(wdir)
        bench_config(wdir)
        wall, peak_sum, peak_one = run_snakemake(wdir, cores, "--until", "compute_descriptors", "--quiet")
        metas = [json.loads((f / "meta.json").read_text()) for f in descriptor_folders(wdir)]
        rows = sum(m["num_grad_rows"] for m in metas)
        K = metas[0]["num_descriptors"]
        size = sum(f.stat().st_size for f in (wdir / "results" / "descriptors").rglob("*.npy"))
        grad = sum(f.stat().st_size for f in (wdir / "results" / "descriptors").rglob("grad_values.npy"))
        itemsize = 4 if metas[0]["settings"]["gradient_dtype"] == "float32" else 8
        # the same files with float64 gradients: the gradient rows take twice the room
        size64 = size + (grad if itemsize == 4 else 0)
        print(json.dumps({
            "cores": cores, "groups": len(metas), "configs": sum(m["num_configs"] for m in metas),
            "atoms": sum(m["num_atoms"] for m in metas), "grad_rows": rows, "K": K, "wall_s": round(wall, 1),
            "lammps_s_in_jobs": round(sum(m["seconds"] for m in metas), 1),
            "peak_rss_tree_mb": round(peak_sum / 2**20), "peak_rss_one_process_mb": round(peak_one / 2**20),
            "descriptor_files_mb": round(size / 2**20), "float64_gradients_mb": round(size64 / 2**20),
            "gradient_dtype": metas[0]["settings"]["gradient_dtype"], "fitsnap_s": FITSNAP["descriptors_s"],
        }), flush=True)  # fmt: skip


# ----------------------------------------------------------------------------- training


def run_child(args):
    """One training run in this (fresh) process; prints a JSON line."""
    import numpy as np
    import torch

    from potflow.config.load import prepare_config
    from potflow.training.loop import TrainPaths, train

    work = Path(args.work)
    cfg, _ = bench_config(work / "config")
    f = args.fraction
    cfg["groups"]["defaults"].update(training_size=0.7 * f, testing_size=0.3 * f)
    cfg["pytorch"].update(num_epochs=args.epochs, batch_size=args.batch_size, device=args.device)
    cfg["pytorch"].update(json.loads(args.extra))
    cfg = prepare_config(cfg)
    folders = [str(p) for p in descriptor_folders(Path(args.descriptors))]
    out = work / f"fit_f{f}_b{args.batch_size}"
    paths = TrainPaths(out / "model.pt", out / "checkpoint.pt", out / "loss.dat", out / "split.tsv", out / "resume.pt")
    epoch_cpu = timed_epochs()
    t0 = time.perf_counter()
    res = train(cfg, folders, paths, progress=False)
    wall = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    line = {
        "fraction": f, "batch_size": args.batch_size, "epochs": len(res["epoch_seconds"]),
        "epoch_s": [round(s, 2) for s in res["epoch_seconds"]],
        "median_s_per_epoch": round(float(np.median(res["epoch_seconds"])), 2), "train_wall_s": round(wall, 1),
        "epoch_cpu_s": [round(s, 2) for s in epoch_cpu], "median_cpu_s_per_epoch": round(float(np.median(epoch_cpu)), 2),
        "peak_rss_mb": round(rss), "streamed": res["streamed"], "selected": res["info"], "device": args.device,
        "gpu_peak_mb": round(torch.cuda.max_memory_allocated() / 2**20) if torch.cuda.is_initialized() else None,
    }  # fmt: skip
    if args.mae:
        e, fm, n = mae_on_test_split(cfg, folders, paths.model)
        line.update(test_energy_mae=round(e, 4), test_force_mae=round(fm, 4), test_configs=n)
    print(json.dumps(line), flush=True)


def child(args, fraction, batch_size, epochs, mae=False):
    cmd = [
        sys.executable, __file__, "child", "--work", args.work, "--descriptors", args.descriptors,
        "--fraction", str(fraction), "--batch-size", str(batch_size), "--epochs", str(epochs),
        "--extra", args.extra, "--device", args.device, *(["--mae"] if mae else []),
    ]  # fmt: skip
    out = subprocess.run(cmd, env=child_env(), capture_output=True, text=True)
    if out.returncode:
        sys.exit(out.stdout[-2000:] + out.stderr[-3000:])
    for line in out.stdout.splitlines():
        if line.startswith("potflow training:"):
            print("  " + line, flush=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def cmd_train(args):
    for f in args.fraction:
        for bs in args.batch_size:
            r = child(args, f, bs, args.epochs)
            print(json.dumps(r), flush=True)


def cmd_fit(args):
    print(f"uptime before: {os.popen('uptime').read().strip()}", flush=True)
    r = child(args, 1.0, args.batch_size[0], args.epochs, mae=True)
    r["fitsnap"] = {"energy_mae": FITSNAP["energy_mae"], "force_mae": FITSNAP["force_mae"], "wall_s": 1020}
    print(json.dumps(r), flush=True)
    print(f"uptime after: {os.popen('uptime').read().strip()}")
    e, f = r["test_energy_mae"], r["test_force_mae"]
    print(
        f"training {r['train_wall_s']} s ({r['train_wall_s'] / 300:.2f} of 5 minutes): test MAE {e} eV/atom "
        f"({e / FITSNAP['energy_mae']:.2f} of FitSNAP's 20-epoch {FITSNAP['energy_mae']}), {f} eV/A "
        f"({f / FITSNAP['force_mae']:.2f} of {FITSNAP['force_mae']})"
    )
    if args.linear:
        print(json.dumps({"linear_fit": linear_fit_errors(args)}))


def linear_fit_errors(args):
    """Solve time and test MAE of the exact linear fit of the training configurations."""
    from potflow.config.load import prepare_config
    from potflow.models.network import AtomicEnergyModel
    from potflow.training.datasets import FitData
    from potflow.training.linear_start import start_from_linear_fit

    cfg, _ = bench_config(Path(args.work) / "config")
    cfg = prepare_config(cfg)
    folders = [str(p) for p in descriptor_folders(Path(args.descriptors))]
    data = FitData(cfg, folders)
    t0 = time.perf_counter()
    train_set = data.subset("train")
    model = AtomicEnergyModel(data.num_desc, [], data.elements, cfg["pytorch"]["multi_element_option"], "linear").double()
    model.set_standardisation_moments(*train_set.moments())
    start_from_linear_fit(model, train_set)
    seconds = time.perf_counter() - t0
    from measure import mae_of_model

    e, f, n = mae_of_model(cfg, folders, model)
    return {"solve_s": round(seconds, 1), "test_energy_mae": round(e, 4), "test_force_mae": round(f, 4), "test_configs": n}


# ----------------------------------------------------------------------------- whole workflow


def cmd_pipeline(args):
    """The whole workflow once; stage times from Snakemake's benchmark-free log (job start/end)."""
    work = Path(args.work)
    bench_config(work, **json.loads(args.sections))
    wall, peak_sum, peak_one = run_snakemake(work, args.cores[0], "--printshellcmds")
    print(json.dumps({"cores": args.cores[0], "wall_s": round(wall, 1), "peak_rss_tree_mb": round(peak_sum / 2**20),
                      "peak_rss_one_process_mb": round(peak_one / 2**20)}))  # fmt: skip
    print(stage_times(work / "snakemake.out"))


def stage_times(log_path):
    """Per rule: jobs and the span from the first job's start to the last job's end (s)."""
    import re
    from datetime import datetime

    spans, current, when = {}, {}, None
    for line in Path(log_path).read_text().splitlines():
        m = re.match(r"\[(\w{3} \w{3}\s+\d+ [\d:]+ \d{4})\]", line)
        if m:
            when = datetime.strptime(m.group(1).replace("  ", " "), "%a %b %d %H:%M:%S %Y")
            continue
        m = re.match(r"\s*(?:local)?rule (\w+):", line)
        if m and when:
            current_rule = m.group(1)
            current.setdefault("pending", []).append(current_rule)
            s = spans.setdefault(current_rule, [when, when, 0])
            s[0], s[2] = min(s[0], when), s[2] + 1
        m = re.match(r"Finished job \d+\.|Finished jobid: \d+ \(Rule: (\w+)\)", line)
        if m and when and m.group(0).startswith("Finished jobid"):
            s = spans.get(m.group(1))
            if s:
                s[1] = max(s[1], when)
    rows = [f"{rule}: {n} job(s), {(end - start).total_seconds():.0f} s" for rule, (start, end, n) in spans.items()]
    return "\n".join(rows)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=["descriptors", "train", "fit", "pipeline", "child"])
    ap.add_argument("--work", default="/tmp/wbe_bench")
    ap.add_argument("--descriptors", default="/tmp/wbe_bench/descriptors_c2", help="a `descriptors` run's folder")
    ap.add_argument("--cores", type=int, nargs="+", default=[2])
    ap.add_argument("--batch-size", type=int, nargs="+", default=[4, 64])
    ap.add_argument("--fraction", type=float, nargs="+", default=[1.0])
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--extra", default="{}", help="JSON of extra pytorch settings")
    ap.add_argument("--device", default="cpu", help="pytorch.device of train and fit: cpu, cuda, auto")
    ap.add_argument("--sections", default="{}", help="JSON of config sections merged in (pipeline)")
    ap.add_argument("--mae", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--linear", action="store_true", help="fit: also the exact linear fit's test errors")
    args = ap.parse_args()
    if args.what == "child":
        args.batch_size, args.fraction = args.batch_size[0], args.fraction[0]
        return run_child(args)
    print(f"# {platform.node()}, {os.cpu_count()} CPUs, python {platform.python_version()}, load {os.getloadavg()}")
    {"descriptors": cmd_descriptors, "train": cmd_train, "fit": cmd_fit, "pipeline": cmd_pipeline}[args.what](args)


if __name__ == "__main__":
    main()
