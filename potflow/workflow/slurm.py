"""What potflow checks on a Slurm cluster before the first job is submitted (profiles/slurm).

A job that asks for a GPU on a cluster whose nodes have none is refused by ``sbatch``
("Requested node configuration is not available", or "Invalid generic resource"), which
Snakemake reports with the whole sbatch call; a job asking for more CPUs or memory than any node
has is, unless the site sets ``EnforcePartLimits``, queued and left pending for ever (reason
``PartitionConfig``). potflow says either first, in one line.
"""

import subprocess
from dataclasses import dataclass

from potflow.errors import PotflowInputError


@dataclass(frozen=True)
class NodeKind:
    """One line of ``sinfo -o %c|%m|%G``: CPUs, memory (MB) and generic resources of a node."""

    cpus: int
    mem_mb: int
    gres: str


def cluster_nodes(run=subprocess.run):
    """The kinds of node the cluster has, as sinfo lists them; None when sinfo does not answer
    or answers something else."""
    try:
        out = run(["sinfo", "--noheader", "--format=%c|%m|%G"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    nodes = []
    for line in out.stdout.splitlines():
        fields = line.strip().split("|")
        if len(fields) != 3:
            return None
        try:  # sinfo marks a summary of unequal nodes with "+": the smallest is given
            nodes.append(NodeKind(int(fields[0].rstrip("+")), int(fields[1].rstrip("+")), fields[2]))
        except ValueError:
            return None
    return nodes or None


def has_gpus(gres):
    """Whether any node's gres list names a GPU (``gpu``, ``gpu:2``, ``gpu:a100:4(S:0)``)."""
    return any(item.split(":")[0] == "gpu" for entry in gres for item in entry.split(","))


def check_slurm_gpus(gpus_asked, where, nodes):
    """Refuse GPU jobs on a Slurm cluster without GPUs (one line), before anything is submitted;
    ``where`` names the config and field that asked (config.yaml: resources.train_gpus),
    ``nodes`` is ``cluster_nodes()``. Says nothing when sinfo did not answer (``nodes`` None):
    the submission then reports what is wrong."""
    if gpus_asked >= 1 and nodes is not None and not has_gpus(n.gres for n in nodes):
        raise PotflowInputError(
            where,
            f"{gpus_asked} GPU(s) asked for the training job, but no node of this Slurm cluster "
            f"has a GPU (sinfo lists the generic resources {', '.join(sorted({n.gres for n in nodes}))}); "
            "set resources.train_gpus: 0 to train on CPUs",
        )


def check_slurm_node_sizes(requests, nodes):
    """Refuse jobs that no node of the cluster can hold (one line naming the rule): Slurm would
    keep them pending for ever. ``requests``: (rule, CPUs, memory MB or None) of each job;
    ``nodes``: ``cluster_nodes()`` (None: nothing is checked)."""
    if nodes is None:
        return
    for rule, cpus, mem_mb in requests:
        if not any(cpus <= n.cpus and (mem_mb is None or mem_mb <= n.mem_mb) for n in nodes):
            biggest = max(nodes, key=lambda n: (n.cpus, n.mem_mb))
            raise PotflowInputError(
                f"rule {rule}",
                f"a job asks for {cpus} CPUs and {mem_mb} MB, but no node of this Slurm cluster "
                f"has that much (the largest: {biggest.cpus} CPUs, {biggest.mem_mb} MB; sinfo), so "
                "Slurm would keep it pending for ever; lower the rule's threads or mem_mb "
                "(set-threads, set-resources in the Slurm profile)",
            )


def job_request(job):
    """(rule, CPUs, memory MB or None) a job asks Slurm for, as the executor plugin asks: CPUs per
    GPU times GPUs for a GPU job that sets cpus_per_gpu, its threads otherwise; memory when it is
    known before the job's inputs exist."""
    res = job.resources
    gpus, per_gpu = res.get("gpu", 0) or 0, res.get("cpus_per_gpu", 0) or 0
    cpus = gpus * per_gpu if gpus and per_gpu else job.threads
    mem = res.get("mem_mb")
    return job.rule.name, int(cpus), mem if isinstance(mem, int) else None


def check_jobs_before_submitting(workflow, config_source):
    """The Snakefile's ``onstart`` check (the submitting Snakemake, not the jobs): with the
    Slurm executor, the GPUs the jobs to run ask for must exist on the cluster, and each job must
    fit a node; a refusal ends the run with one line, exit status 1, as a bad config does."""
    plugin = workflow.executor_plugin
    if plugin is None or plugin.name != "slurm":
        return
    jobs = [job for job in workflow.dag.needrun_jobs() if not job.is_local]
    asked = max((job.resources.get("gpu", 0) for job in jobs), default=0)
    nodes = cluster_nodes()  # one sinfo call for both checks
    try:
        check_slurm_gpus(asked, f"{config_source}: resources.train_gpus", nodes)
        check_slurm_node_sizes(sorted({job_request(job) for job in jobs}, key=str), nodes)
    except PotflowInputError as exc:
        raise SystemExit(f"potflow error: {exc}") from None
