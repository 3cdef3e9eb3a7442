"""Epoch speed beside FitSNAP's, measured back to back in one run (issue 16).

    python bench/bench_epoch.py ta [--epochs 20] [--rounds 3] [--device cpu] [--no-fitsnap] [--before DIR]
    python bench/bench_epoch.py wbe --subset /tmp/wbe_every5 --descriptors DIR [--epochs 3]

``ta``: ../shared/data/Ta_JSON with FitSNAP's Ta settings (bench_train_ta.py), potflow at
Adam batch 4 (FitSNAP's example), batch 32 and the full training set, and at the defaults
(full-batch L-BFGS from the linear fit), each a fresh process, median s/epoch over --epochs;
then FitSNAP 3.1.0.4 (../shared/fitsnap/run_fitsnap.sh Ta) at batch 4 and 32. ``wbe``: every
5th W–Be configuration (``make_subset.sh``'s --subset folder for FitSNAP; --descriptors: a
folder whose results/descriptors/<key>/<group> hold potflow's descriptors of that subset) with
configs/WBe.yaml (Adam, batch 4): epoch time and peak RSS of training, then FitSNAP's on the
same subset (its peak RSS is its whole run's). potflow's figures come with the CPU time of its
epochs (``time.process_time`` of the training and validation passes), which the other processes
on the shared host disturb less than the wall time: the figure to compare two potflow versions
by. ``--before DIR`` also times an older checkout of potflow (``git archive``) in the same run;
copy this bench's bench_train_ta.py, bench_wbe.py and measure.py into DIR/bench for its CPU
times. The ratios to FitSNAP are the wall time's. ``uptime`` is printed before each run, since
the host is shared. ``--device cuda`` times potflow on a GPU (FitSNAP's figure stays the CPU's).
Figures: bench/RESULTS.md, "Epoch speed (issue 16)".
"""

import argparse
import json
import math
import os
import subprocess
import sys
from pathlib import Path

from measure import REPO

BENCH = REPO / "bench"
FITSNAP = REPO.parent / "shared" / "fitsnap" / "run_fitsnap.sh"


def uptime():
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def run(cmd, env=None):
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if out.returncode:
        sys.exit(f"{' '.join(map(str, cmd))} failed:\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}")
    return out.stdout


def potflow_env(checkout):
    return dict(os.environ, PYTHONPATH=str(checkout))


def last_json(text):
    return json.loads(text.strip().splitlines()[-1])


def fitsnap(dataset, epochs, *extra, data=None):
    """FitSNAP's result block as a dict (epoch_s_median, peak_rss_kb, ...)."""
    env = dict(os.environ, **({"ANCHOR_DATA_PATH": str(data)} if data else {}))
    text = run([str(FITSNAP), dataset, str(epochs), *extra], env=env)
    block = text.split("=== ANCHOR RESULT ===")[-1].split("=== END ===")[0]
    fields = dict(kv.split("=", 1) for line in block.split("\n") for kv in line.split() if "=" in kv)
    if fields.get("status") != "ok":
        sys.exit(f"FitSNAP run failed:\n{text[-3000:]}")
    return fields


def ta_potflow(checkout, label, batch, extra, args):
    """One bench_train_ta.py child in ``checkout``; its JSON line."""
    from bench_train_ta import descriptors

    folders, _ = descriptors(Path(args.work))
    cmd = [
        sys.executable, str(BENCH / "bench_train_ta.py"), "--child", "--epochs", str(args.epochs),
        "--batch-size", str(batch), "--threads", "1", "--work", args.work, "--folders", json.dumps(folders),
        "--extra", json.dumps(extra),
    ]  # fmt: skip
    if args.device != "cpu":
        cmd += ["--device", args.device]
    if checkout != REPO:  # an older checkout runs its own bench script
        cmd[1] = str(Path(checkout) / "bench" / "bench_train_ta.py")
    print(f"  [{uptime()}]", flush=True)
    r = last_json(run(cmd, env=potflow_env(checkout)))
    s, cpu = r["median_s_per_epoch"], r.get("median_cpu_s_per_epoch", math.nan)
    print(f"potflow{label} {args.device} {extra} batch {batch}: {s:.4f} s/epoch (CPU {cpu:.4f} s), "
          f"peak RSS {r['peak_rss_mb']:.0f} MB", flush=True)  # fmt: skip
    return s, cpu


def cmd_ta(args):
    import numpy as np

    adam = {"optimizer": "adam", "linear_start": 0}
    runs = [("adam", 4, adam), ("adam", 32, adam), ("adam", 225, adam), ("lbfgs (defaults)", 4, {})]
    checkouts = [(REPO, "")] + ([(Path(args.before), " (before)")] if args.before else [])
    figures = {}  # (label, name, batch) -> seconds per epoch, one per round
    cpu_figures = {}  # the same, CPU time of the training and validation passes (potflow)
    for r in range(args.rounds):
        print(f"round {r + 1} of {args.rounds}", flush=True)
        for checkout, label in checkouts:
            for name, batch, extra in runs:
                s, cpu = ta_potflow(checkout, label, batch, extra, args)
                figures.setdefault((f"potflow{label}", name, batch), []).append(s)
                cpu_figures.setdefault((f"potflow{label}", name, batch), []).append(cpu)
        if args.no_fitsnap:
            continue
        for batch in (4, 32):
            print(f"  [{uptime()}]", flush=True)
            f = fitsnap("Ta", args.epochs, "-k", "PYTORCH", "batch_size", str(batch))
            t = float(f["epoch_s_median"])
            figures.setdefault(("FitSNAP", "adam", batch), []).append(t)
            print(f"FitSNAP Ta batch {batch}: {t:.4f} s/epoch (median of {f['epochs_timed']}), "
                  f"peak RSS {int(f['peak_rss_kb']) / 1024:.0f} MB", flush=True)  # fmt: skip
    print(f"  [{uptime()}]")
    print(f"summary: median over {args.rounds} round(s) of each run's median s/epoch ({args.epochs} epochs)")
    fitsnap_median = {b: float(np.median(v)) for (who, _, b), v in figures.items() if who == "FitSNAP"}
    for (who, name, batch), values in figures.items():
        med = float(np.median(values))
        refs = [4] + ([32] if batch == 32 and name == "adam" else [])
        ratios = "".join(
            f", {med / fitsnap_median[b]:.3f}x FitSNAP batch {b}" for b in refs if b in fitsnap_median and who != "FitSNAP"
        )
        rounds = " ".join(f"{v:.4f}" for v in values)
        cpu = cpu_figures.get((who, name, batch))
        cpu = f"; CPU {np.median(cpu):.4f} s ({' '.join(f'{v:.4f}' for v in cpu)})" if cpu else ""
        print(f"  {who} {name} batch {batch}: {med:.4f} s/epoch ({rounds}){ratios}{cpu}")


def cmd_wbe(args):
    data_name = Path(args.subset).name if args.subset else "(--descriptors' data)"
    results = []
    for checkout, label in [(REPO, "")] + ([(Path(args.before), " (before)")] if args.before else []):
        print(f"  [{uptime()}]", flush=True)
        cmd = [
            sys.executable, str(Path(checkout) / "bench" / "bench_wbe.py"), "child", "--work", f"{args.work}/wbe{label.strip(' ()')}",
            "--descriptors", args.descriptors, "--fraction", "1.0", "--batch-size", "4", "--epochs", str(args.epochs),
            "--extra", "{}",
        ]  # fmt: skip
        if args.device != "cpu":
            cmd += ["--device", args.device]
        r = last_json(run(cmd, env=potflow_env(checkout)))
        cpu = f"CPU {r['median_cpu_s_per_epoch']:.2f} s {r['epoch_cpu_s']}" if "epoch_cpu_s" in r else "CPU not timed"
        print(f"potflow{label} W-Be {data_name} batch 4: {r['median_s_per_epoch']:.2f} s/epoch {r['epoch_s']} ({cpu}), peak RSS {r['peak_rss_mb']} MB, "
              f"{'streamed' if r['streamed'] else 'in memory'}", flush=True)  # fmt: skip
        results.append((label, r))
    if args.no_fitsnap:
        return
    print(f"  [{uptime()}]", flush=True)
    f = fitsnap("WBe", args.epochs, data=args.subset)
    t, rss = float(f["epoch_s_median"]), int(f["peak_rss_kb"]) / 1024
    print(f"FitSNAP W-Be {data_name} batch 4: {t:.2f} s/epoch (median of {f['epochs_timed']}), peak RSS {rss:.0f} MB "
          f"(train/test configs {f['n_train_configs']}/{f['n_test_configs']})")  # fmt: skip
    for label, r in results:
        print(f"  potflow{label} / FitSNAP: epoch {r['median_s_per_epoch'] / t:.3f}x, peak RSS {r['peak_rss_mb'] / rss:.3f}x")
    print(f"  [{uptime()}]")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=["ta", "wbe"])
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=1, help="ta: repeat potflow and FitSNAP in turn (the host drifts)")
    ap.add_argument("--device", default="cpu", help="potflow's pytorch.device (cpu, cuda)")
    ap.add_argument("--work", default="/tmp/potflow_bench_ta")
    ap.add_argument("--before", help="an older potflow checkout (a folder) timed in the same run")
    ap.add_argument("--no-fitsnap", action="store_true", help="potflow only")
    ap.add_argument("--subset", help="wbe: the JSON folder FitSNAP reads: the every-5th one (make_subset.sh) or the whole set")
    ap.add_argument("--descriptors", help="wbe: folder with results/descriptors of that subset")
    args = ap.parse_args()
    if args.what == "wbe" and not (args.descriptors and (args.subset or args.no_fitsnap)):
        ap.error("wbe needs --descriptors and --subset")
    sys.path.insert(0, str(BENCH))
    {"ta": cmd_ta, "wbe": cmd_wbe}[args.what](args)


if __name__ == "__main__":
    main()
