"""What potflow checks on a Slurm cluster before the first job is submitted (profiles/slurm).

A job that asks for a GPU on a cluster whose nodes have none is refused by ``sbatch``
("Requested node configuration is not available"), which Snakemake reports with the whole
sbatch call; potflow says it first, in one line naming the config field.
"""

import subprocess

from potflow.errors import PotflowInputError


def cluster_gres(run=subprocess.run):
    """The generic resources the cluster's nodes offer, as ``sinfo -o %G`` lists them
    (e.g. ``{"gpu:a100:4(S:0-1)", "(null)"}``); None when sinfo does not answer."""
    try:
        out = run(["sinfo", "--noheader", "--format=%G"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    return {line.strip() for line in out.stdout.splitlines() if line.strip()}


def has_gpus(gres):
    """Whether any node's gres list names a GPU (``gpu``, ``gpu:2``, ``gpu:a100:4(S:0)``)."""
    return any(item.split(":")[0] == "gpu" for entry in gres for item in entry.split(","))


def check_slurm_gpus(gpus_asked, where, run=subprocess.run):
    """Refuse GPU training on a Slurm cluster without GPUs (one line), before anything is
    submitted; ``where`` names the config and field that asked (config.yaml: resources.train_gpus).
    Says nothing when sinfo does not answer: the submission then reports what is wrong."""
    if gpus_asked < 1:
        return
    gres = cluster_gres(run)
    if gres is not None and not has_gpus(gres):
        raise PotflowInputError(
            where,
            f"{gpus_asked} GPU(s) asked for the training job, but no node of this Slurm cluster "
            f"has a GPU (sinfo lists the generic resources {', '.join(sorted(gres))}); set "
            "resources.train_gpus: 0 to train on CPUs",
        )


def check_gpus_before_submitting(workflow, config_source):
    """The Snakefile's ``onstart`` check (the submitting Snakemake, not the jobs): with the
    Slurm executor, the GPUs the jobs to run ask for must exist on the cluster; a refusal ends
    the run with one line, exit status 1, as a bad config does."""
    plugin = workflow.executor_plugin
    if plugin is None or plugin.name != "slurm":
        return
    asked = max((job.resources.get("gpu", 0) for job in workflow.dag.needrun_jobs()), default=0)
    try:
        check_slurm_gpus(asked, f"{config_source}: resources.train_gpus")
    except PotflowInputError as exc:
        raise SystemExit(f"potflow error: {exc}") from None
