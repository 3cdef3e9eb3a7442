"""profiles/slurm on a real Slurm cluster: the one-node Slurm 22.05 with slurmdbd accounting that
tests/slurm/start_cluster.sh starts (CI starts it before the suite). Skipped, with the reason,
where no such cluster answers (tests/test_slurm_profile.py checks the same profile against
stand-ins without one).

What the real cluster adds to the stand-ins: sbatch checks each request against the node
(CPUs, memory, GPUs), slurmctld schedules the jobs, the executor plugin follows them through
accounting (sacct answers from slurmdbd), and scancel ends a job as a site's limits do.

The cluster has 2 CPUs (CI's machine) and no GPU, so the runs here pass the overrides of a
CPU-only cluster (CPU_RUN, shown verbatim in docs/cluster.md, as are the other commands in
DOCS_COMMANDS: tests/test_docs.py checks that this module runs every command the docs mark
"cluster").
"""

import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter

import pytest
import yaml
from workflow_runs import REPO as ROOT
from workflow_runs import scratch_copy

from potflow.config.load import load_config
from potflow.descriptors.job_resources import descriptor_job_resources
from potflow.descriptors.settings import descriptor_key
from potflow.models.files import load_model
from potflow.workflow import layout

pytestmark = [pytest.mark.slurm_cluster, pytest.mark.slow]

CLUSTER_NAME = "potflow"  # ClusterName in tests/slurm/start_cluster.sh's slurm.conf
START = "bash tests/slurm/start_cluster.sh"
METRICS = layout.metrics("default", "metrics.dat")
# the bundled example to its metrics file on a cluster without GPUs and with 2 CPUs per node
CPU_RUN = (
    f"snakemake {METRICS} --workflow-profile profiles/slurm --set-threads train=2 "
    "--set-resources train:gpu=0 train:mem_mb=4000 train:runtime=60"
)
GPU_RUN = "snakemake --workflow-profile profiles/slurm"  # the profile as it is: training asks for a GPU
SACCT = "sacct -X -P -S now-1hour -o JobID,Comment,State,ReqCPUS,ReqMem,Timelimit"
DOCS_COMMANDS = (CPU_RUN, GPU_RUN, SACCT)  # docs/cluster.md shows them; START is run by CI
# The plugin's waits suit a busy cluster (40 s before the first status check); not docs options.
FAST = "--slurm-init-seconds-before-status-checks 1 --seconds-between-status-checks 1 --slurm-keep-successful-logs"
# Snakemake's main with the plugin's wait between status checks capped at 2 s: the plugin adds
# 10 s to it after every check in which no job ended (for a busy cluster), which here leaves the
# node idle for half a minute after the training job. Only when that wait still exists.
CAPPED_SNAKEMAKE = """
import sys
from snakemake_interface_executor_plugins.executors.remote import RemoteExecutor as E
wait = getattr(E, "next_seconds_between_status_checks", None)
if isinstance(wait, property):
    E.next_seconds_between_status_checks = property(lambda self: min(wait.fget(self), 2), wait.fset)
from snakemake.cli import main
sys.argv[0] = "snakemake"
main()
"""
SUBMITTED = re.compile(r"Job (\d+) has been submitted with SLURM jobid (\d+) \(log: (\S+)\)\.")


def cluster_problem():
    """Why these tests cannot run here (None when the test cluster answers)."""
    if shutil.which("sinfo") is None:
        return f"no Slurm here (sinfo is not on PATH); `{START}` (root, Debian) starts the test cluster"

    def ask(*cmd):
        try:
            run = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
        except subprocess.TimeoutExpired:
            return None, "no answer in 10 s"
        return (run.stdout, None) if run.returncode == 0 else (None, run.stderr.strip()[-300:])

    config, err = ask("scontrol", "show", "config")
    if config is None:
        return f"Slurm does not answer (scontrol show config: {err}); `{START}` starts the test cluster"
    name = re.search(r"(?m)^ClusterName\s*=\s*(\S+)", config)
    if not name or name.group(1) != CLUSTER_NAME:
        return f"this Slurm is not the test cluster of {START} (ClusterName {name and name.group(1)}): the tests submit jobs"
    states, err = ask("sinfo", "--noheader", "--format=%t")
    if not states or not {"idle", "mix", "alloc"} & set(states.split()):
        return f"no node of the test cluster takes jobs (sinfo: {states or err})"
    if ask("sacct", "--noheader", "-X", "-S", "now-1minute")[0] is None:
        return "Slurm accounting does not answer (sacct fails): the executor plugin could not follow the jobs"
    return None


@pytest.fixture(scope="module")
def cluster():
    problem = cluster_problem()
    if problem:
        pytest.skip(problem)


def snakemake_args(command):
    """A docs `snakemake ...` command's arguments, as written, then the test-only options; run
    by Snakemake's main with the plugin's status-check wait capped (CAPPED_SNAKEMAKE)."""
    words = shlex.split(command)
    assert words[0] == "snakemake", command
    return [sys.executable, "-c", CAPPED_SNAKEMAKE, *words[1:], *shlex.split(FAST)]


def slurm_run(workdir, command, timeout=600):
    return subprocess.run(snakemake_args(command), cwd=workdir, capture_output=True, text=True, timeout=timeout)


def sacct_jobs(workdir, jobids):
    """The docs' sacct command, run as written: {jobid: row} of the given jobs."""
    out = subprocess.run(shlex.split(SACCT), cwd=workdir, capture_output=True, text=True, timeout=60, check=True)
    lines = out.stdout.splitlines()
    header = lines[0].split("|")
    rows = {r["JobID"]: r for r in (dict(zip(header, line.split("|"), strict=True)) for line in lines[1:])}
    return {j: rows.get(j) for j in jobids}


def minutes(timelimit):
    """sacct's Timelimit ([days-]hh:mm:ss) in minutes."""
    days, _, clock = timelimit.rpartition("-")
    h, m, s = (int(x) for x in clock.split(":"))
    return int(days or 0) * 1440 + h * 60 + m + s / 60


def declared_requests(output):
    """What Snakemake printed for each job it submitted: {jobid: (rule, threads, mem_mb, runtime)}."""
    jobs = {}
    for block in re.split(r"\n(?=\[[^\]]+\]\n(?:local)?rule )", output):
        rule = re.search(r"^(?:local)?rule (\w+):", block, re.M)
        jobid = re.search(r"^\s+jobid: (\d+)", block, re.M)
        if not (rule and jobid):
            continue
        threads = re.search(r"^\s+threads: (\d+)", block, re.M)
        res = re.search(r"^\s+resources: (.*)$", block, re.M).group(1)
        mem = re.search(r"\bmem_mb=(\d+)", res)
        runtime = re.search(r"\bruntime=(\d+)", res)
        jobs[jobid.group(1)] = (
            rule.group(1), int(threads.group(1)) if threads else 1,
            int(mem.group(1)) if mem else None, int(runtime.group(1)) if runtime else None,
        )  # fmt: skip
    return jobs


@pytest.fixture(scope="module")
def example_on_slurm(cluster, tmp_path_factory):
    """A scratch copy of the repository in which CPU_RUN ran the bundled example on the
    cluster: (folder, Snakemake's output, seconds)."""
    dest = scratch_copy(tmp_path_factory.mktemp("slurm_example"))
    t0 = time.perf_counter()
    run = slurm_run(dest, CPU_RUN)
    seconds = time.perf_counter() - t0
    assert run.returncode == 0, (run.stdout + run.stderr)[-5000:]
    return dest, run.stdout + run.stderr, seconds


def test_bundled_example_runs_as_slurm_jobs(example_on_slurm, request):
    """Every job of the run is a Slurm job that completed with the CPUs, memory and time its
    rule declared (sacct), descriptor jobs with their per-group estimates; the metrics file is
    the local run's, byte for byte. Catches: requests the plugin drops or Slurm rewrites, jobs
    run outside Slurm, a state the plugin misreads, results that depend on where jobs ran."""
    workdir, output, seconds = example_on_slurm
    print(f"CPU_RUN on the cluster: {seconds:.0f} s")
    submitted = {m.group(1): (m.group(2), m.group(3)) for m in SUBMITTED.finditer(output)}
    declared = declared_requests(output)
    assert submitted and set(submitted) == set(declared), (sorted(submitted), sorted(declared))
    rules = Counter(rule for rule, *_ in declared.values())
    assert rules == {"import_group": 8, "compute_descriptors": 8, "train": 1, "evaluate_fit": 1, "evaluation_metrics": 1}, rules

    accounted = sacct_jobs(workdir, [slurm_id for slurm_id, _ in submitted.values()])
    cfg = load_config(workdir / "config.yaml")
    dkey = descriptor_key(cfg)
    for jobid, (slurm_id, log) in submitted.items():
        rule, threads, mem_mb, runtime = declared[jobid]
        row = accounted[slurm_id]
        assert row is not None, f"sacct does not list job {slurm_id} ({rule})"
        assert row["State"] == "COMPLETED" and row["Comment"].startswith(f"rule_{rule}_"), row
        assert (int(row["ReqCPUS"]), row["ReqMem"], minutes(row["Timelimit"])) == (threads, f"{mem_mb}M", runtime), (rule, row)
        assert log.startswith(str(workdir / ".snakemake" / "slurm_logs" / f"rule_{rule}")) and log.endswith(f"/{slurm_id}.log")
        if rule == "compute_descriptors":
            group = row["Comment"].rsplit(f"{dkey}_", 1)[1]
            estimate = descriptor_job_resources(workdir / "results" / "data" / f"{group}.npz", cfg)
            assert (mem_mb, runtime) == (estimate["mem_mb"], estimate["runtime"]), group
        if rule == "train":  # CPU_RUN's overrides: no GPU asked for
            assert (threads, mem_mb, runtime) == (2, 4000, 60)
    # the local run (conftest): asked for here, after the cluster check, since a session fixture
    # would otherwise run before the skip
    local = (request.getfixturevalue("bundled_example") / METRICS).read_text()
    assert (workdir / METRICS).read_text() == local


def test_gpu_job_without_gpus_is_refused_in_one_line(cluster, tmp_path):
    """The profile as it is asks for a GPU to train; this cluster has none. Slurm itself refuses
    such a job (so the check guards a real failure); potflow stops before submitting anything,
    in one line naming the config field. Catches: a GPU job submitted to a cluster that cannot
    run it, or the plugin's many-line sbatch dump instead of potflow's line."""
    refused = subprocess.run(["sbatch", "--gpus=1", "--wrap=true"], capture_output=True, text=True, timeout=60)
    assert refused.returncode != 0, refused.stdout
    run = slurm_run(scratch_copy(tmp_path), GPU_RUN, timeout=300)  # nothing done yet: training to do
    output = run.stdout + run.stderr
    assert run.returncode == 1, output[-3000:]
    assert not SUBMITTED.search(output), output[-3000:]
    last = output.strip().splitlines()[-1]
    assert last.startswith("potflow error: config config.yaml: resources.train_gpus: 1 GPU(s) asked for"), last
    assert "no node of this Slurm cluster has a GPU" in last and "resources.train_gpus: 0" in last, last
    shown = [line.strip() for line in (ROOT / "docs" / "cluster.md").read_text().splitlines()]
    assert last in shown, "docs/cluster.md shows another line for this refusal"


def test_job_larger_than_every_node_is_refused_in_one_line(cluster, tmp_path):
    """A training job asking for one CPU more than the node has (the profile's 8 is more than
    a small node has). Slurm (no EnforcePartLimits) queues such a job and keeps it pending
    (reason PartitionConfig); potflow stops before submitting anything, in one line naming the
    rule. Catches: a run that waits for ever on a job no node can start."""
    cpus = 1 + max(int(n) for n in subprocess.check_output(["sinfo", "-h", "-o", "%c"], text=True).split())
    queued = subprocess.run(
        ["sbatch", "--parsable", f"--cpus-per-task={cpus}", "--wrap=true"], capture_output=True, text=True, timeout=60, check=True
    ).stdout.strip()
    try:
        reason = ""
        for _ in range(50):
            reason = subprocess.run(["squeue", "-h", "-j", queued, "-o", "%T %r"], capture_output=True, text=True, timeout=60).stdout
            if "PartitionConfig" in reason:
                break
            time.sleep(0.2)
        assert reason.split() == ["PENDING", "PartitionConfig"], reason
    finally:
        subprocess.run(["scancel", queued], timeout=60)
    command = f"{GPU_RUN} --set-resources train:gpu=0 --set-threads train={cpus}"
    run = slurm_run(scratch_copy(tmp_path), command, timeout=300)
    output = run.stdout + run.stderr
    assert run.returncode == 1 and not SUBMITTED.search(output), output[-3000:]
    last = output.strip().splitlines()[-1]
    assert last.startswith(f"potflow error: rule train: a job asks for {cpus} CPUs and "), last
    assert f"(the largest: {cpus - 1} CPUs," in last and "pending for ever" in last, last


def test_cancelled_training_job_is_reported_and_resumes(example_on_slurm, tmp_path):
    """scancel ends the training job after its first checkpoint: Snakemake reports the Slurm
    state and the job's Slurm log; the profile's retry (retries: 1) resubmits it, the training
    continues from the checkpoint (resume.pt) and the run ends with the fit done. Catches: a
    cancelled job taken for finished or never noticed (the run would hang or pass), a retry
    that starts the fit over, a report without the log path."""
    workdir, _, _ = example_on_slurm
    dest = scratch_copy(tmp_path)
    for stage in ("data", "descriptors"):  # the example's descriptors: only the fit runs
        shutil.copytree(workdir / "results" / stage, dest / "results" / stage)
    cfg = yaml.safe_load((dest / "config.yaml").read_text())
    cfg["pytorch"].update(num_epochs=40, save_freq=1)
    (dest / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    model = layout.model("default")
    command = CPU_RUN.replace(METRICS, model)
    log = tmp_path / "snakemake.out"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            snakemake_args(command), cwd=dest, stdout=out, stderr=subprocess.STDOUT, text=True
        )
    try:
        resume = dest / layout.resume_state("default")
        deadline = time.time() + 300
        while not (resume.exists() and SUBMITTED.search(log.read_text())) and time.time() < deadline:
            assert proc.poll() is None, log.read_text()[-3000:]
            time.sleep(0.1)
        slurm_id, slurm_log = SUBMITTED.search(log.read_text()).group(2, 3)
        subprocess.run(["scancel", slurm_id], check=True, timeout=60)
        proc.wait(timeout=400)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=60)
    output = log.read_text()
    assert proc.returncode == 0, output[-5000:]
    assert f"SLURM-job '{slurm_id}' failed, SLURM status is: 'CANCELLED" in output, output[-5000:]
    assert slurm_log in output.split(f"SLURM-job '{slurm_id}' failed", 1)[1], output[-5000:]
    retries = [m.group(2) for m in SUBMITTED.finditer(output)]
    assert len(retries) == 2 and retries[0] == slurm_id, retries
    training_log = (dest / layout.training_log("default")).read_text()
    resumed = re.search(r"start: resume state \S+ at epoch (\d+)", training_log)
    assert resumed and 1 <= int(resumed.group(1)) < 40, training_log[-3000:]
    _, info = load_model(dest / model)
    assert info["epochs_trained"] == 40 and not resume.exists()
