"""profiles/slurm drives the real snakemake-executor-plugin-slurm end to end.

Slurm itself is replaced by the stand-ins in tests/slurm_standin/ (first on PATH): sbatch
records its arguments and runs the job at once on this machine, sacct/squeue report the jobs'
states. So this checks what potflow asks the cluster for (the sbatch options of every job)
and that the jobs, run the way the plugin runs them (sbatch --wrap -> snakemake
--executor slurm-jobstep -> srun -> snakemake), produce correct outputs.

To check another rule, add its target to `targets()`, its job count to EXPECTED_JOBS and its
expected sbatch options to REQUESTS (a GPU rule: "gpus", "cpus_per_gpu"); the srun check
below already expects --gpus/--cpus-per-gpu for jobs that asked for a GPU. Evaluation, export
and MD are left out (their jobs add minutes through the stand-ins, not new requests).
"""

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from tiny_ta import copy_tiny_groups, tiny_config, write_config

from potflow.config.load import prepare_config
from potflow.descriptors.folders import ARRAYS, read_meta
from potflow.descriptors.job_resources import descriptor_job_resources
from potflow.descriptors.settings import descriptor_key
from potflow.models.files import load_model

STANDIN = Path(__file__).resolve().parent / "slurm_standin"
# Jobs per rule for the tiny dataset (3 groups); `all` runs on the submit host, not via sbatch.
EXPECTED_JOBS = {"import_group": 3, "compute_descriptors": 3, "train": 1}
# sbatch options every job of a rule must carry (values as sbatch sees them).
REQUESTS = {
    "import_group": {"ntasks": "1", "cpus_per_task": "1", "time": "15"},
    "compute_descriptors": {"ntasks": "1", "cpus_per_task": "1"},
    "train": {"gpus": "1", "cpus_per_gpu": "8", "time": "720", "mem": "32000"},
}


def targets(groups, cfg):
    """The descriptor folders and the fitted model."""
    dkey = descriptor_key(cfg)
    return [f"results/descriptors/{dkey}/{g}" for g in groups] + ["results/fits/default/model.pt"]
GPU_OPTIONS = ("gpus", "gres", "cpus_per_gpu")


@dataclass
class SlurmRun:
    returncode: int
    output: str
    jobs: list  # stand-in job records, in submission order
    sruns: list  # {"jobid", "options"} for every srun inside a job

    def submitted(self, rule):
        return [j for j in self.jobs if j["options"]["comment"].startswith(f"rule_{rule}_")]

    def srun_options(self, job):
        return [s["options"] for s in self.sruns if s["jobid"] == job["id"]]


def _kill_leftovers(state):
    for path in (state / "jobs").glob("*.json"):
        job = json.loads(path.read_text())
        if job.get("pid") and job["state"] in ("PENDING", "RUNNING"):
            with suppress(ProcessLookupError, PermissionError):
                os.killpg(job["pid"], signal.SIGKILL)


def _standin_env(state):
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SLURM", "SBATCH_", "SRUN_")) and k != "CUDA_VISIBLE_DEVICES"
    }
    env.update(
        PATH=f"{STANDIN}{os.pathsep}{env['PATH']}",
        STANDIN_SLURM_DIR=str(state),
        STANDIN_SLURM_PYTHON=sys.executable,
    )
    return env


def _snakemake_cmd(repo, workdir, *args):
    return [
        sys.executable, "-m", "snakemake", "--snakefile", str(repo / "Snakefile"),
        "--workflow-profile", str(repo / "profiles" / "slurm"), "--directory", str(workdir),
        "--jobs", "6", "--slurm-keep-successful-logs",
        # The plugin's waits suit a real cluster (40 s before the first status check).
        "--slurm-init-seconds-before-status-checks", "1", "--seconds-between-status-checks", "1",
        *args,
    ]  # fmt: skip


def _records(state):
    jobs = sorted(
        (json.loads(p.read_text()) for p in (state / "jobs").glob("*.json")), key=lambda j: int(j["id"])
    )
    srun_log = state / "srun.jsonl"
    sruns = [json.loads(line) for line in srun_log.read_text().splitlines()] if srun_log.exists() else []
    return jobs, sruns


def run_with_standin_slurm(repo, workdir, state, *args, timeout=240):
    """snakemake --workflow-profile profiles/slurm, with Slurm replaced by the stand-ins."""
    cmd = _snakemake_cmd(repo, workdir, *args)
    try:
        res = subprocess.run(
            cmd, cwd=workdir, env=_standin_env(state), capture_output=True, text=True, timeout=timeout
        )
    finally:
        _kill_leftovers(state)
    return SlurmRun(res.returncode, res.stdout + res.stderr, *_records(state))


@pytest.fixture
def tiny_run(shared_data, tmp_path):
    workdir = tmp_path / "run"
    groups = copy_tiny_groups(shared_data, workdir / "data")
    cfg = tiny_config()
    write_config(workdir / "config.yaml", cfg)
    return workdir, groups, prepare_config(cfg)


def test_profile_is_valid_yaml_with_gpu_training(repo_root, tiny_run):
    profile = yaml.safe_load((repo_root / "profiles" / "slurm" / "config.yaml").read_text())
    assert profile["executor"] == "slurm"
    train = profile["set-resources"]["train"]
    # the GPU count is the rule's (config resources.train_gpus): the profile must not fix it
    assert "gpu" not in train and train["cpus_per_gpu"] >= 1 and train["runtime"] > 0
    assert profile["set-threads"]["train"] == train["cpus_per_gpu"]
    # every rule the profile names exists (a renamed rule would silently lose its resources)
    workdir, _, _ = tiny_run
    res = subprocess.run(
        [sys.executable, "-m", "snakemake", "--snakefile", str(repo_root / "Snakefile"), "--list-rules"],
        cwd=workdir, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    rules = set(res.stdout.split())
    named = set(profile.get("set-resources", {})) | set(profile.get("set-threads", {}))
    assert named and named <= rules, named - rules


@pytest.mark.slow  # end to end: runs the workflow
def test_descriptor_jobs_on_slurm(repo_root, tiny_run, tmp_path):
    workdir, groups, cfg = tiny_run
    # sacct for the status queries (the profile's squeue: test_failed_job_is_reported)
    run = run_with_standin_slurm(
        repo_root, workdir, tmp_path / "slurm", "--slurm-status-command", "sacct", *targets(groups, cfg)
    )
    assert run.returncode == 0, run.output[-5000:]

    # which jobs were submitted, and that each ran to completion through sbatch and srun
    rules = Counter(j["options"]["comment"].split("_wildcards_")[0][len("rule_") :] for j in run.jobs)
    assert rules == Counter(EXPECTED_JOBS), rules
    for job in run.jobs:
        opts = job["options"]
        assert job["state"] == "COMPLETED", (job["id"], Path(job["output"]).read_text()[-3000:])
        assert opts["partition"] == "standin" and opts["account"] == "standin_account"
        assert opts["workdir"] == str(workdir) and opts["wrap"].startswith(sys.executable)
        # the job step inside the allocation asks for the same CPUs (and GPUs)
        step = run.srun_options(job)
        assert len(step) == 1, step
        if "gpus" in opts:
            assert f"--gpus={opts['gpus']}" in step[0], step
            assert f"--cpus-per-gpu={opts['cpus_per_gpu']}" in step[0], step
        else:
            assert f"--cpus-per-task={opts['cpus_per_task']}" in step[0], step
    for rule, expected in REQUESTS.items():
        for job in run.submitted(rule):
            got = {k: job["options"].get(k) for k in expected}
            assert got == expected, (rule, got)
            if rule != "train":
                assert not any(k in job["options"] for k in GPU_OPTIONS), job["options"]

    # descriptor jobs: memory and wall time estimated from each imported group
    dkey = descriptor_key(cfg)
    for job in run.submitted("compute_descriptors"):
        group = job["options"]["comment"].rsplit(f"{dkey}_", 1)[1]
        estimate = descriptor_job_resources(workdir / "results" / "data" / f"{group}.npz", cfg)
        assert job["options"]["mem"] == str(estimate["mem_mb"]), group
        assert job["options"]["time"] == str(estimate["runtime"]), group
        assert 300 <= estimate["mem_mb"] < 2000

    # outputs: one complete descriptor folder per group
    for group, count in groups.items():
        folder = workdir / "results" / "descriptors" / dkey / group
        meta = read_meta(folder)
        assert meta["group"] == group and meta["num_configs"] == count
        for name in ARRAYS:
            assert (folder / f"{name}.npy").is_file(), (group, name)
        natoms = np.load(folder / "natoms.npy")
        assert len(np.load(folder / "descriptors.npy")) == natoms.sum() == meta["num_atoms"]

    # the training job: a GPU asked for, the model fitted; the stand-in's node has no GPU
    # (CUDA_VISIBLE_DEVICES=0 all the same), so training fell back to the CPU
    fit = workdir / "results" / "fits" / "default"
    model, info = load_model(fit / "model.pt")
    assert info["epochs_trained"] == cfg["pytorch"]["num_epochs"] == 2
    log = (workdir / "results" / "logs" / "training" / "default" / "training.log").read_text()
    if not torch.cuda.is_available():
        assert " on cpu," in log, log[-2000:]


@pytest.mark.slow  # end to end: runs the workflow
def test_failed_job_is_reported(repo_root, tiny_run, tmp_path):
    """A job that fails on the 'cluster' fails the run; the others still finish (keep-going).

    Uses squeue for the status queries (the other test uses sacct).
    """
    workdir, groups, cfg = tiny_run
    bad = workdir / "data" / "Liquid" / "broken.json"
    bad.write_text("{ not json")
    run = run_with_standin_slurm(
        repo_root, workdir, tmp_path / "slurm", "--slurm-status-command", "squeue"
    )
    assert run.returncode != 0
    failed = [j for j in run.jobs if j["state"] == "FAILED"]
    # the Liquid import, tried twice (profile: retries 1)
    assert len(failed) == 2, [(j["options"]["comment"], j["state"]) for j in run.jobs]
    assert all(j["options"]["comment"] == "rule_import_group_wildcards_Liquid" for j in failed)
    assert "broken.json" in run.output
    dkey = descriptor_key(cfg)
    for group in set(groups) - {"Liquid"}:
        assert read_meta(workdir / "results" / "descriptors" / dkey / group)["group"] == group
    assert not (workdir / "results" / "descriptors" / dkey / "Liquid").exists()


def _group_ends(pgid, within):
    deadline = time.time() + within
    while time.time() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False


def _answer_ctrl_c():
    """In the child: Ctrl-C back to its default, which Python turns into KeyboardInterrupt. A
    command started with `&` by a script (as CI may start .ci/run) ignores SIGINT, and so does
    everything it starts; Snakemake then never sees the Ctrl-C."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.slow  # end to end: runs the workflow
def test_interrupt_cancels_the_jobs(repo_root, shared_data, tmp_path):
    """Ctrl-C on the submitting Snakemake cancels its jobs on the cluster (scancel)."""
    workdir, state = tmp_path / "run", tmp_path / "slurm"
    copy_tiny_groups(shared_data, workdir / "data", {"Liquid": 1, "Volume_FCC": 1})
    write_config(workdir / "config.yaml", tiny_config())
    # the jobs wait 30 s in the queue, and Ctrl-C comes once Snakemake has both job ids: without
    # either, a loaded machine lets the jobs end, or the signal come, before there is anything to cancel
    log = tmp_path / "snakemake.out"
    with open(log, "w") as out_file:
        proc = subprocess.Popen(
            _snakemake_cmd(repo_root, workdir), cwd=workdir, env={**_standin_env(state), "STANDIN_START_DELAY": "30"},
            stdout=out_file, stderr=subprocess.STDOUT, text=True, preexec_fn=_answer_ctrl_c,
        )  # fmt: skip
    try:
        deadline = time.time() + 120
        while log.read_text().count("has been submitted with SLURM jobid") < 2 and time.time() < deadline:
            time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=120)
        out = log.read_text()
    finally:
        proc.kill()
        _kill_leftovers(state)
    jobs, _ = _records(state)
    assert proc.returncode != 0 and len(jobs) == 2, out[-3000:]
    scancels = [line.split()[1:] for line in (state / "calls.log").read_text().splitlines() if line.startswith("scancel")]
    assert len(scancels) == 1 and sorted(scancels[0]) == sorted(j["id"] for j in jobs), scancels
    for job in jobs:
        assert job["state"] == "CANCELLED", job["state"]
        if job["pid"] is not None:  # None: cancelled before it started
            assert _group_ends(job["pid"], within=20), f"job {job['id']} still runs after scancel"
    assert not (workdir / "results" / "descriptors").exists()


def test_jobs_must_fit_a_node_of_the_cluster():
    """potflow's checks before the first sbatch (potflow/workflow/slurm.py), on sinfo answers:
    GPU jobs pass where a node lists a GPU gres and stop in one line where none does; a job
    larger than every node (CPUs or memory) stops in one line naming its rule; nothing is
    checked where sinfo does not answer. Catches: a gres parser that misses `gpu:a100:4(S:0)` or
    takes `(null)` / a `shard` gres for a GPU, a size check that compares with the wrong node."""
    from potflow.errors import PotflowInputError
    from potflow.workflow.slurm import (
        check_slurm_gpus,
        check_slurm_node_sizes,
        cluster_nodes,
        has_gpus,
    )

    assert has_gpus({"(null)", "gpu:a100:4(S:0-1)"}) and has_gpus({"gpu:2"}) and has_gpus({"craynetwork:1,gpu:1"})
    assert not has_gpus({"(null)"}) and not has_gpus({"shard:gpu_a:4"}) and not has_gpus(set())

    def sinfo(stdout, returncode=0):
        return lambda *a, **k: subprocess.CompletedProcess(a, returncode, stdout=stdout, stderr="")

    cluster = sinfo("2|24105|(null)\n64|512000+|gpu:4\n")
    where = "config.yaml: resources.train_gpus"
    check_slurm_gpus(1, where, cluster_nodes(cluster))
    check_slurm_gpus(0, where, cluster_nodes(sinfo("2|24105|(null)\n")))
    check_slurm_gpus(1, where, cluster_nodes(sinfo("", returncode=1)))
    with pytest.raises(PotflowInputError, match=r"^config.yaml: resources.train_gpus: 1 GPU\(s\) asked .* has a GPU"):
        check_slurm_gpus(1, where, cluster_nodes(sinfo("2|24105|(null)\n")))
    check_slurm_node_sizes([("train", 64, 500000), ("compute_descriptors", 1, None)], cluster_nodes(cluster))
    check_slurm_node_sizes([("train", 8, 32000)], cluster_nodes(sinfo("", returncode=1)))
    for too_big in [("train", 65, 1000), ("train", 8, 600000)]:
        with pytest.raises(PotflowInputError, match=r"^rule train: a job asks for .* \(the largest: 64 CPUs, 512000 MB"):
            check_slurm_node_sizes([("import_group", 1, 1000), too_big], cluster_nodes(cluster))
