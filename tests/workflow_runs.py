"""The real workflow run from tests: Snakemake in a subprocess, and its dry run's job counts."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def run_workflow(workdir, *args, timeout=120):
    """Snakemake on ``workdir/config.yaml`` (the test fails on a non-zero exit); the finished run."""
    cmd = [
        sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"),
        "--directory", str(workdir), "--configfile", str(Path(workdir) / "config.yaml"), *args,
    ]  # fmt: skip
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    assert run.returncode == 0, run.stderr[-4000:]
    return run


def job_counts(output):
    """{rule: jobs} of the "Job stats" table a dry run prints; {} when nothing is to be done."""
    counts = {}
    if "Job stats:" in output:
        for line in output.split("Job stats:", 1)[1].splitlines()[3:]:
            words = line.split()
            if len(words) != 2 or words[0] == "total":
                break
            counts[words[0]] = int(words[1])
    return counts
