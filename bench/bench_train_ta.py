"""Training benchmark on ../shared/data/Ta_JSON with FitSNAP's Ta_PyTorch_NN example settings.

Layers num_desc 64 64 1, batch 4, lr 5e-5, energy_weight 1e-2, force_weight 1, a 0.7/0.3
split per group, ZBL reference. Prints median seconds per epoch (wall, and the CPU time of the
training and validation passes), peak RSS of the training process and the test-set energy
(eV/atom) and force (eV/A) MAE of the selected model.

    python bench/bench_train_ta.py [--epochs 200] [--batch-size 4] [--threads 1] [--work DIR] [--device cuda]

``--device`` (default cpu) is ``pytorch.device``: the same command times the epoch on a GPU
(``cuda``), where the peak RSS is the host's and the GPU's peak memory is printed beside it.

Descriptors are computed once into --work (default /tmp/potflow_bench_ta) and reused.
Each training run is a fresh subprocess so its peak RSS is its own.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

from measure import REPO, child_env, mae_on_test_split, timed_epochs

DATA = REPO.parent / "shared" / "data" / "Ta_JSON"
CONFIG = {
    "bispectrum": {"type": ["Ta"]},
    "scraper": {"scraper": "JSON"},
    "reference": {
        "pair_style": "hybrid/overlay zero 10.0 zbl 4.0 4.8",
        "pair_coeff": ["* * zero", "* * zbl 73 73"],
    },
    "groups": {"defaults": {"training_size": 0.7, "testing_size": 0.3}},
    "pytorch": {
        "layer_sizes": ["num_desc", 64, 64, 1],
        "learning_rate": 5e-5,
        "batch_size": 4,
        "energy_weight": 1e-2,
        "force_weight": 1.0,
        "multi_element_option": 1,
    },
}


def fitsnap_order(folder, out, listed=None):
    """Copy of a descriptor folder with its configurations in os.listdir order of the JSON files
    (or in the order of the file names ``listed``).

    FitSNAP 3.1 does not sort a group's files: without random_sampling it trains on the first
    70 % of os.listdir's order and tests on the next 30 %. With this order our split (first
    n_train train, next n_test test) has FitSNAP's exact test set on this machine.
    """
    import shutil

    import numpy as np

    from potflow.descriptors.folders import ARRAYS, META
    from potflow.training.datasets import concat_ranges

    a = {name: np.load(Path(folder) / f"{name}.npy") for name in ARRAYS}
    group = Path(folder).name
    if listed is None:
        listed = [f for f in os.listdir(DATA / group) if f.endswith(".json")]
    where = {str(f): m for m, f in enumerate(a["files"])}
    perm = np.array([where[f] for f in listed])
    natoms, ptr = a["natoms"], a["grad_ptr"]
    start = np.cumsum(natoms) - natoms
    atoms = concat_ranges(start[perm], natoms[perm])
    rows = concat_ranges(ptr[:-1][perm], np.diff(ptr)[perm])
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for name, arr in a.items():
        if name == "grad_ptr":
            arr = np.concatenate([[0], np.cumsum(np.diff(ptr)[perm])])
        elif name in ("grad_values", "grad_index"):
            arr = arr[rows]
        elif len(arr) == len(natoms):
            arr = arr[perm]
        else:
            arr = arr[atoms]
        np.save(out / f"{name}.npy", arr)
    shutil.copy(Path(folder) / META, out / META)
    return str(out)


def descriptors(work):
    from potflow.config.groups import fit_groups
    from potflow.config.load import prepare_config
    from potflow.data.structures import import_group
    from potflow.descriptors.compute import compute_group_descriptors
    from potflow.descriptors.settings import descriptor_key

    cfg = prepare_config({**CONFIG, "path": {"dataPath": str(DATA)}})
    key = descriptor_key(cfg)
    folders = []
    t0 = time.perf_counter()
    for group in fit_groups(cfg):
        npz = work / "data" / f"{group}.npz"
        out = work / "descriptors" / key / group
        if not out.exists():
            if not npz.exists():
                import_group(DATA / group, "JSON", ["Ta"], npz)
            compute_group_descriptors(cfg, npz, out, group)
        folders.append(fitsnap_order(out, work / "fitsnap_order" / key / group))
    return folders, time.perf_counter() - t0


def run_one(args):
    """Child process: one training run; prints a JSON line."""
    import numpy as np
    import torch  # (imported before the baseline RSS is taken)

    from potflow.config.load import prepare_config
    from potflow.training.loop import TrainPaths, train

    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    folders = json.loads(args.folders)
    cfg = dict(CONFIG, path={"dataPath": str(DATA)})
    cfg["pytorch"] = dict(
        CONFIG["pytorch"], num_epochs=args.epochs, batch_size=args.batch_size, threads=args.threads, device=args.device
    )
    cfg["pytorch"].update(json.loads(args.extra))
    if cfg["pytorch"].get("activation", "tanh") not in ("linear", "sigmoid", "tanh", "relu"):
        cfg["md"] = {"enabled": False}  # a comparison run only: LAMMPS cannot run this activation
    cfg = prepare_config(cfg)
    out = Path(args.work) / f"fit_b{args.batch_size}_t{args.threads}_{args.device.replace(':', '')}"
    paths = TrainPaths(out / "model.pt", out / "checkpoint.pt", out / "loss_vs_epochs.dat", out / "split.tsv", out / "resume.pt")
    epoch_cpu = timed_epochs()
    t0 = time.perf_counter()
    res = train(cfg, folders, paths, progress=False)
    wall = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    mae_e, mae_f, _ = mae_on_test_split(cfg, folders, paths.model)
    times = res["epoch_seconds"]
    gpu_mb = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_initialized() else None
    print(json.dumps({
        "batch_size": args.batch_size, "threads": args.threads, "epochs": args.epochs, "device": args.device,
        "gpu_peak_mb": gpu_mb,
        "median_s_per_epoch": float(np.median(times)), "train_wall_s": wall,
        "median_cpu_s_per_epoch": float(np.median(epoch_cpu)),
        "peak_rss_mb": rss, "rss_after_import_torch_mb": base_rss,
        "test_energy_mae_eV_atom": mae_e, "test_force_mae_eV_A": mae_f,
        "selected": res["info"],
    }))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=200)
    ap.add_argument("--batch-size", type=int, nargs="+", default=[4, 64])
    ap.add_argument("--threads", type=int, nargs="+", default=[1])
    ap.add_argument("--work", default="/tmp/potflow_bench_ta")
    ap.add_argument("--extra", default="{}", help="JSON of extra pytorch settings")
    ap.add_argument("--device", default="cpu", help="pytorch.device: cpu, cuda, cuda:1, auto")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--folders", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        args.batch_size, args.threads = args.batch_size[0], args.threads[0]
        return run_one(args)
    work = Path(args.work)
    folders, seconds = descriptors(work)
    print(f"descriptors ready ({seconds:.1f} s) in {work}")
    for bs in args.batch_size:
        for threads in args.threads:
            cmd = [sys.executable, __file__, "--child", "--epochs", str(args.epochs), "--batch-size", str(bs),
                   "--threads", str(threads), "--work", str(work), "--folders", json.dumps(folders), "--extra", args.extra,
                   "--device", args.device]
            out = subprocess.run(cmd, env=child_env(), capture_output=True, text=True)
            if out.returncode:
                sys.exit(out.stderr[-3000:])
            r = json.loads(out.stdout.strip().splitlines()[-1])
            print(
                f"{args.device} batch {bs:3d} threads {threads}: {r['median_s_per_epoch']:.4f} s/epoch (median of {args.epochs}; "
                f"CPU {r['median_cpu_s_per_epoch']:.4f} s), "
                f"training {r['train_wall_s']:.1f} s, peak RSS {r['peak_rss_mb']:.0f} MB "
                f"(after importing torch {r['rss_after_import_torch_mb']:.0f} MB"
                + (f", GPU peak {r['gpu_peak_mb']:.0f} MB" if r["gpu_peak_mb"] is not None else "") + "), "
                f"test MAE energy {r['test_energy_mae_eV_atom']:.4f} eV/atom force {r['test_force_mae_eV_A']:.4f} eV/A "
                f"[{r['selected']['selection']} epoch {r['selected']['epoch']}]"
            )


if __name__ == "__main__":
    main()
