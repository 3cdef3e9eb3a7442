import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = (ROOT.parent / "shared" / "data").resolve()
sys.path.insert(0, str(ROOT))
# Subprocesses (snakemake, its rule scripts) import this checkout's potflow.
os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session")
def shared_data():
    if not SHARED_DATA.is_dir():
        pytest.fail(f"reference data not found at {SHARED_DATA} (../shared/data beside the checkout)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def repo_root():
    return ROOT


@pytest.fixture(scope="session")
def bundled_example(tmp_path_factory):
    """A scratch copy of the repository in which the README's `snakemake --cores 2` ran the
    bundled example to the end; run once per session: tests/test_docs.py runs the docs' commands
    in it, tests/test_slurm_cluster.py compares a Slurm run's results with it."""
    from workflow_runs import run_bundled_example

    return run_bundled_example(tmp_path_factory.mktemp("example"))


@pytest.fixture(scope="module")
def ta(tmp_path_factory):
    """One element (Ta), two synthetic groups of 12 and 9 configurations: (config, folders)."""
    from synthetic import base_config, make_groups

    cfg = base_config()
    return cfg, make_groups(tmp_path_factory.mktemp("ta"), cfg, [12, 9])


@pytest.fixture(scope="module")
def tawb(tmp_path_factory):
    """Two elements (Ta, W), two synthetic groups of 10 and 8 configurations."""
    from synthetic import base_config, make_groups

    cfg = base_config(("Ta", "W"))
    return cfg, make_groups(tmp_path_factory.mktemp("tawb"), cfg, [10, 8], seed=5)
