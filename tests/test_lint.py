"""The workflow and the code stay clean: snakemake --lint, snakefmt and ruff."""

import shutil
import subprocess
import sys

import pytest


def _run(args, cwd):
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=300)


def test_snakemake_lint_is_clean(repo_root):
    res = _run([sys.executable, "-m", "snakemake", "--lint", "--cores", "1"], repo_root)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "Lints for" not in res.stdout + res.stderr, res.stdout + res.stderr


def test_snakefmt_check_is_clean(repo_root):
    exe = shutil.which("snakefmt")
    if exe is None:
        pytest.fail("snakefmt is not installed (pip install -e '.[test]')")
    res = _run([exe, "--check", "Snakefile", "rules/"], repo_root)
    assert res.returncode == 0, res.stdout + res.stderr


def test_ruff_is_clean(repo_root):
    res = _run([sys.executable, "-m", "ruff", "check", "."], repo_root)
    assert res.returncode == 0, res.stdout + res.stderr
