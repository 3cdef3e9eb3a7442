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


def pytest_configure(config):
    config.addinivalue_line("markers", "gpu: needs a CUDA GPU (python -m pytest -m gpu on a GPU machine)")
