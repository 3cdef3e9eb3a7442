"""Start a fit in several processes on one node: torchrun, and the job file each process reads."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from potflow.config.groups import fit_groups
from potflow.config.load import load_config
from potflow.config.sweeps import expand_fits
from potflow.descriptors.settings import descriptor_key
from potflow.errors import PotflowInputError
from potflow.fileio import write_json
from potflow.training.loop import TrainPaths
from potflow.workflow import layout


def write_job(path, cfg, folders, paths):
    """The job file ``potflow train --job`` reads: a checked config, descriptor folders, outputs."""
    outputs = {k: (str(v) if v is not None else None) for k, v in vars(paths).items()}
    write_json(path, {"config": cfg, "descriptors": [str(f) for f in folders], "outputs": outputs})


def torchrun_command(nproc, job):
    """torchrun (``python -m torch.distributed.run``) starting ``nproc`` training processes
    on this node; ``--standalone`` picks a free port, so concurrent jobs do not collide."""
    return [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc),
        "-m", "potflow.cli", "train", "--job", str(job),
    ]  # fmt: skip


def run_torchrun(nproc, cfg, folders, paths):
    """Train in ``nproc`` processes on this node (the training rule with ``gpu`` > 1).

    The processes' output is passed on line by line (to the rule's log). The GPUs are those
    in CUDA_VISIBLE_DEVICES (claimed by the caller), one per process.
    """

    fit_dir = Path(paths.model).parent
    fit_dir.mkdir(parents=True, exist_ok=True)
    job = Path(layout.torchrun_job(fit_dir))
    write_job(job, cfg, folders, paths)
    cmd = torchrun_command(nproc, job)
    print("running:", " ".join(cmd), flush=True)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    # a job that is killed (SIGTERM) takes its training processes with it
    previous = signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        for line in proc.stdout:
            print(line, end="", flush=True)
        rc = proc.wait()
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait()
        signal.signal(signal.SIGTERM, previous)
        job.unlink(missing_ok=True)
    if rc != 0:
        raise PotflowInputError(
            fit_dir, f"the {nproc} training processes failed (torchrun exit status {rc}; output above)"
        )


def job_from_config(config_path, results=layout.RESULTS, fit="default"):
    """(config, descriptor folders, TrainPaths) as the training rule lays them out."""
    # a config with fits:/sweep: names its fits; a config of one fit trains under any name
    fits = expand_fits(load_config(config_path), source=config_path)
    if len(fits) == 1:
        fits = {fit: next(iter(fits.values()))}
    if fit not in fits:
        raise PotflowInputError(config_path, f"has no fit '{fit}' (its fits: {', '.join(fits)})")
    cfg = fits[fit]
    key = descriptor_key(cfg)
    results = str(Path(results))
    folders = [layout.descriptors(g, key, results=results) for g in fit_groups(cfg)]
    files = layout.training_files(fit, cfg["pytorch"]["save_state_output"], results=results)
    paths = TrainPaths(**{name: Path(path) for name, path in files.items()})
    return cfg, folders, paths


def read_job(path):
    try:
        job = json.loads(Path(path).read_text())
        outputs = {k: (Path(v) if v is not None else None) for k, v in job["outputs"].items()}
        return job["config"], list(job["descriptors"]), TrainPaths(**outputs)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise PotflowInputError(path, f"not a readable training job file ({exc})") from None
