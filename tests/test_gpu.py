"""Local GPU assignment: concurrent jobs get distinct GPUs, a scheduler's choice is kept."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from potflow.training.gpus import VISIBLE, GpuClaimError, available_gpus, claim_gpus


def test_scheduler_assignment_is_kept(tmp_path):
    env = {VISIBLE: "3,5"}
    claim = claim_gpus(1, pool=["0", "1"], lock_dir=tmp_path, environ=env)
    assert claim.devices == ["3", "5"] and claim.source == "scheduler"
    assert env[VISIBLE] == "3,5"
    assert list(tmp_path.iterdir()) == []  # nothing locked


def test_cpu_job_sees_no_gpu(tmp_path):
    env = {}
    claim = claim_gpus(0, pool=["0"], lock_dir=tmp_path, environ=env)
    assert claim.devices == [] and env[VISIBLE] == ""


def test_machine_without_gpu_runs_on_cpu(tmp_path):
    env = {}
    claim = claim_gpus(1, pool=[], lock_dir=tmp_path, environ=env)
    assert claim.devices == [] and claim.source == "none" and VISIBLE not in env


def test_more_gpus_than_the_machine_has(tmp_path):
    with pytest.raises(GpuClaimError, match="asks for 3 GPUs .* offers 2"):
        claim_gpus(3, pool=["0", "1"], lock_dir=tmp_path, environ={})


def test_claims_are_distinct_and_released(tmp_path):
    pool = ["0", "1", "2"]
    envs = [{} for _ in range(3)]
    claims = [claim_gpus(1, pool=pool, lock_dir=tmp_path, environ=e) for e in envs]
    assert sorted(e[VISIBLE] for e in envs) == pool
    assert all(c.source == "lock" for c in claims)
    with pytest.raises(GpuClaimError, match="became free"):
        claim_gpus(1, pool=pool, lock_dir=tmp_path, timeout=0.3, poll=0.05, environ={})
    claims[1].release()
    env = {}
    with claim_gpus(1, pool=pool, lock_dir=tmp_path, timeout=1, environ=env) as again:
        assert again.devices == [envs[1][VISIBLE]] == [env[VISIBLE].split(",")[0]]


def test_multi_gpu_claim_is_all_or_nothing(tmp_path):
    pool = ["0", "1", "2"]
    middle = claim_gpus(1, pool=["1"], lock_dir=tmp_path, environ={})
    env = {}
    pair = claim_gpus(2, pool=pool, lock_dir=tmp_path, environ=env)
    assert pair.devices == ["0", "2"] and env[VISIBLE] == "0,2"
    middle.release()
    with pytest.raises(GpuClaimError):
        claim_gpus(2, pool=pool, lock_dir=tmp_path, timeout=0.2, poll=0.05, environ={})
    # the failed attempt gave back the GPU it could take
    assert claim_gpus(1, pool=pool, lock_dir=tmp_path, timeout=0.5, environ={}).devices == ["1"]
    pair.release()


def test_nvidia_smi_lists_the_gpus(tmp_path, monkeypatch):
    smi = tmp_path / "nvidia-smi"
    smi.write_text("#!/bin/sh\nprintf '0\\n1\\n2\\n'\n")
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    assert available_gpus(environ={}) == ["0", "1", "2"]
    assert available_gpus(environ={"POTFLOW_GPUS": "2, 3"}) == ["2", "3"]
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert available_gpus(environ={}) == []


RECORD = """
import json, os, sys, time
t0 = time.time(); time.sleep(1.5)
print(json.dumps({"gpu": os.environ["CUDA_VISIBLE_DEVICES"], "start": t0, "end": time.time()}))
"""


def _gpu_env(tmp_path, pool):
    env = {k: v for k, v in os.environ.items() if k != VISIBLE}
    env.update(POTFLOW_GPUS=pool, POTFLOW_GPU_LOCK_DIR=str(tmp_path / "locks"))
    return env


def test_concurrent_jobs_never_share_a_gpu(tmp_path):
    """Six jobs on three (fake) GPUs: no two jobs hold the same GPU at the same time."""
    env = _gpu_env(tmp_path, "0,1,2")
    cmd = [sys.executable, "-m", "potflow.cli", "gpu", "-n", "1", "--", sys.executable, "-c", RECORD]
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True) for _ in range(6)]
    runs = []
    for p in procs:
        out, _ = p.communicate(timeout=60)
        assert p.returncode == 0
        runs.append(json.loads(out))
    assert {r["gpu"] for r in runs} <= {"0", "1", "2"}
    assert len({r["gpu"] for r in runs}) == 3  # all three were used
    for a in runs:
        for b in runs:
            if a is not b and a["gpu"] == b["gpu"]:
                assert a["end"] <= b["start"] or b["end"] <= a["start"], (a, b)


def test_killed_job_frees_its_gpu(tmp_path):
    env = _gpu_env(tmp_path, "0")
    cmd = [sys.executable, "-m", "potflow.cli", "gpu", "-n", "1", "--", "sleep", "60"]
    proc = subprocess.Popen(cmd, env=env)
    try:
        deadline = time.time() + 20
        while time.time() < deadline:  # wait until the job holds GPU 0
            try:
                claim_gpus(1, pool=["0"], lock_dir=tmp_path / "locks", timeout=0, environ={}).release()
            except GpuClaimError:
                break
            time.sleep(0.1)
        else:
            pytest.fail("the job never claimed GPU 0")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    claim = claim_gpus(1, pool=["0"], lock_dir=tmp_path / "locks", timeout=5, environ={})
    assert claim.devices == ["0"]
