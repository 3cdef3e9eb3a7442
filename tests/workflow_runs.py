"""The real workflow run from tests: Snakemake in a subprocess, and its dry run's job counts."""

import shutil
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


IGNORED = shutil.ignore_patterns(
    ".git", "results", ".snakemake", "__pycache__", "*.egg-info", ".pytest_cache", ".ruff_cache",
    ".benchmarks", "site", "build", "report.html",
)  # fmt: skip


def scratch_copy(base):
    """The repository in base/potflow (no results), with ../shared beside it as in a checkout."""
    dest = base / "potflow"
    shutil.copytree(REPO, dest, ignore=IGNORED, symlinks=True)
    shared = REPO.parent / "shared"
    if shared.is_dir():
        (base / "shared").symlink_to(shared)
    return dest


# The README's command that runs the bundled example (conftest's bundled_example runs it once).
EXAMPLE_COMMAND = "snakemake --cores 2"


def run_bundled_example(base):
    """A scratch copy in base in which EXAMPLE_COMMAND ran the bundled example to the end."""
    dest = scratch_copy(base)
    run = subprocess.run(["bash", "-c", EXAMPLE_COMMAND], cwd=dest, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, f"`{EXAMPLE_COMMAND}` in {dest}: exit {run.returncode}\n{(run.stdout + run.stderr)[-4000:]}"
    return dest
