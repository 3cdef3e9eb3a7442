"""Measurements the benchmarks share: a Snakemake run's wall time and process-tree memory, and
test-set errors of a model."""

import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def child_env():
    """The environment of a child process that imports potflow from this checkout."""
    return dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))


def tree_rss(handle):
    """(sum, largest) RSS in bytes of a process and its descendants."""
    import psutil

    sizes = []
    try:
        procs = [handle, *handle.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0, 0
    for p in procs:
        try:
            sizes.append(p.memory_info().rss)
        except psutil.NoSuchProcess:
            pass
    return sum(sizes), max(sizes, default=0)



def run_snakemake(workdir, cores, *extra):
    """(wall s, peak RSS of the process tree, peak RSS of its largest process) of one Snakemake
    run on ``workdir/config.yaml``, sampled every 0.05 s; its output goes to workdir/snakemake.out."""
    try:
        import psutil
    except ImportError:
        sys.exit("the benchmarks sample memory with psutil: pip install psutil")
    workdir = Path(workdir)
    cmd = [
        sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir),
        "--configfile", str(workdir / "config.yaml"), "--cores", str(cores), *extra,
    ]  # fmt: skip
    with open(workdir / "snakemake.out", "a") as log:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, env=child_env(), stdout=log, stderr=subprocess.STDOUT)
        handle, peak_sum, peak_one = psutil.Process(proc.pid), 0, 0
        while proc.poll() is None:
            total, largest = tree_rss(handle)
            peak_sum, peak_one = max(peak_sum, total), max(peak_one, largest)
            time.sleep(0.05)
        wall = time.perf_counter() - t0
    if proc.returncode:
        tail = (workdir / "snakemake.out").read_text()[-3000:]
        sys.exit(f"snakemake failed (exit {proc.returncode}), {workdir / 'snakemake.out'}:\n{tail}")
    return wall, peak_sum, peak_one

def mae_on_test_split(cfg, folders, model_path):
    """Energy (eV/atom) and force (eV/A) MAE of the model on the test split (float64 predict)."""
    from potflow.models.files import load_model

    return mae_of_model(cfg, folders, load_model(model_path)[0])


def mae_of_model(cfg, folders, model):
    """Energy (eV/atom) and force (eV/A) MAE of a model on the test split (float64 predict)."""
    import numpy as np
    import torch

    from potflow.models.network import predict
    from potflow.training.datasets import FitData, concat_ranges

    model.double().eval()
    data = FitData(cfg, folders)
    test = data.subset("test")
    e_err, f_err = [], []
    with torch.no_grad():
        for g, local, pos in test.pieces():
            a = g.arrays
            atoms = concat_ranges(g.atom_start[local], g.natoms[local])
            rows = concat_ranges(g.row_start[local], g.nrows[local])
            first = np.cumsum(g.natoms[local]) - g.natoms[local]
            idx = np.asarray(a["grad_index"][rows], dtype=np.int64)
            idx[:, :2] += np.repeat(first, g.nrows[local])[:, None]
            energy, forces, _ = predict(
                model,
                torch.from_numpy(np.asarray(a["descriptors"][atoms])),
                torch.from_numpy(g.types[atoms]),
                torch.from_numpy(g.natoms[local]),
                torch.from_numpy(np.asarray(a["grad_values"][rows], dtype=np.float64)),
                torch.from_numpy(idx),
            )
            target_e = data.table["energy"][test.ids[pos]]
            e_err.append(np.abs(energy.numpy() - target_e) / g.natoms[local])
            f_err.append(np.abs(forces.numpy() - np.asarray(a["force_target"][atoms])).ravel())
            data.release_pages()
    return float(np.concatenate(e_err).mean()), float(np.concatenate(f_err).mean()), len(test)


def timed_epochs():
    """A list that fills with the CPU time (``time.process_time``) of each epoch's training and
    validation pass (the checkpoint write left out), which the other processes on the shared
    host disturb less than the wall time."""
    import potflow.training.loop as loop

    cpu, run_epoch = [], loop.run_epoch

    def timed(fit, epoch):
        t0 = time.process_time()
        out = run_epoch(fit, epoch)
        cpu.append(time.process_time() - t0)
        return out

    loop.run_epoch = timed
    return cpu
