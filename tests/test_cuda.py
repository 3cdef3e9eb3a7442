"""Training on CUDA: a short fit, bit-identical resume after a kill, CPU-versus-CUDA
predictions, and streaming through pinned host memory.

Selected with ``python -m pytest -m gpu`` on a GPU machine; everywhere else they are skipped
(reason: no CUDA device). ``POTFLOW_TEST_DEVICE=cpu python -m pytest -m gpu`` runs the same
tests on the CPU: a check of the tests themselves, not of CUDA.
"""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from synthetic import paths, with_pytorch

from potflow.models.files import load_model
from potflow.models.network import AtomicEnergyModel, predict
from potflow.training.checkpoints import read_checkpoint
from potflow.training.datasets import FitData
from potflow.training.loop import train
from potflow.training.stores import PreparedSet

DEVICE = os.environ.get("POTFLOW_TEST_DEVICE", "cuda")
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        DEVICE == "cuda" and not torch.cuda.is_available(),
        reason="no CUDA device here: the gpu tests run on a GPU machine (python -m pytest -m gpu)",
    ),
]


def test_short_fit_on_the_device(ta, tmp_path, capsys):
    cfg, folders = ta
    res = train(with_pytorch(cfg, device=DEVICE, num_epochs=5), folders, paths(tmp_path), progress=False)
    assert f"float64 on {DEVICE}" in capsys.readouterr().out
    hist = np.array(res["history"])
    assert np.isfinite(hist).all() and hist[-1, 1] < hist[0, 1]
    model, info = load_model(tmp_path / "model.pt")  # written from the device, read on the CPU
    assert info["epochs_trained"] == 5 and next(model.parameters()).device.type == "cpu"


# A training process that kills itself (SIGKILL) right after writing the epoch-3 resume state.
KILLED_AFTER_EPOCH_3 = """
import os, signal, sys, yaml
import potflow.training.loop as loop
from potflow.training.loop import TrainPaths, train
from pathlib import Path

cfg, folders, out, die = yaml.safe_load(open(sys.argv[1])), sys.argv[2:-2], Path(sys.argv[-2]), sys.argv[-1]
torch_write = loop.write_torch

def write_then_die(path, record):
    torch_write(path, record)
    if die == "die" and record["epochs_done"] == 3:
        os.kill(os.getpid(), signal.SIGKILL)

loop.write_torch = write_then_die
names = ("model.pt", "ckpt.pt", "loss_vs_epochs.dat", "split.tsv", "resume.pt")
train(cfg, folders, TrainPaths(*(out / n for n in names)), progress=False)
"""


def test_killed_fit_resumes_bit_identically_on_the_device(ta, tmp_path):
    """A fit killed after epoch 3 and rerun ends with the weights of an uninterrupted fit.

    Deterministic kernels are asked for (CUDA's index_add would otherwise sum in a varying
    order), and the CUDA random streams are part of the resume state. Checked to bite (run on
    the CPU, POTFLOW_TEST_DEVICE=cpu): with the shuffle stream not restored on resume
    (checkpoints.restore_optimisation), the histories differ from epoch 3 on.
    """
    import yaml

    cfg, folders = ta
    cfg = with_pytorch(cfg, device=DEVICE, num_epochs=6, save_freq=1)
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    (tmp_path / "script.py").write_text(
        "import torch\ntorch.use_deterministic_algorithms(True)\n" + textwrap.dedent(KILLED_AFTER_EPOCH_3)
    )
    env = {**os.environ, "CUBLAS_WORKSPACE_CONFIG": ":4096:8"}

    def run(out, die):
        cmd = [sys.executable, str(tmp_path / "script.py"), str(tmp_path / "cfg.yaml"), *map(str, folders), str(out), die]
        return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)

    full = run(tmp_path / "full", "live")
    assert full.returncode == 0, full.stderr[-3000:]
    killed = run(tmp_path / "run", "die")
    assert killed.returncode == -9, killed.stderr[-3000:]
    saved = read_checkpoint(tmp_path / "run" / "resume.pt")
    assert saved["epochs_done"] == 3
    assert (len(saved["rng"]["cuda"]) > 0) == (DEVICE == "cuda")
    resumed = run(tmp_path / "run", "live")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "start: resume state" in resumed.stdout
    a = torch.load(tmp_path / "full" / "ckpt.pt", weights_only=True)
    b = torch.load(tmp_path / "run" / "ckpt.pt", weights_only=True)
    assert a["history"] == b["history"]
    for key, value in a["model"]["state_dict"].items():
        assert torch.equal(value, b["model"]["state_dict"][key]), key


@pytest.mark.parametrize("option", [1, 2, 3])
def test_predictions_on_the_device_equal_the_cpu_in_float64(tawb, option):
    cfg, folders = tawb
    data = FitData(cfg, folders)
    group = data.groups[0]
    a = group.arrays
    n = len(a["natoms"])
    torch.manual_seed(option)
    model = AtomicEnergyModel(data.num_desc, [8, 8], data.elements, option).double()
    model.set_standardisation(np.array(a["descriptors"]), np.array(a["atom_types"]))
    config_of_row = np.repeat(np.arange(n), np.diff(a["grad_ptr"]))
    first_atom = np.concatenate([[0], np.cumsum(a["natoms"])[:-1]])
    index = np.asarray(a["grad_index"]).astype(np.int64)
    index[:, :2] += first_atom[config_of_row, None]
    inputs = [a["descriptors"], a["atom_types"], a["natoms"], a["grad_values"], index]
    inputs = [torch.as_tensor(np.array(x)) for x in inputs]  # copies of the mapped arrays

    def run(device):
        m = model.to(device)
        e, f, _ = predict(m, *(x.to(device) for x in inputs))
        return e.detach().cpu().numpy(), f.detach().cpu().numpy()

    e_cpu, f_cpu = run("cpu")
    e_dev, f_dev = run(DEVICE)
    assert np.abs(f_cpu).max() > 1e-3
    np.testing.assert_allclose(e_dev / a["natoms"], e_cpu / a["natoms"], rtol=0, atol=1e-10)
    np.testing.assert_allclose(f_dev, f_cpu, rtol=0, atol=1e-10)


def test_streaming_through_pinned_memory_equals_the_in_memory_fit(ta, tmp_path):
    cfg, folders = ta
    cfg = with_pytorch(cfg, device=DEVICE, num_epochs=3, memory_budget_mb=0.02)
    memory = train(cfg, folders, paths(tmp_path / "m"), progress=False, stream=False)
    streamed = train(cfg, folders, paths(tmp_path / "s"), progress=False)  # over budget: streams
    assert streamed["streamed"] and not memory["streamed"]
    np.testing.assert_allclose(np.array(streamed["history"]), np.array(memory["history"]), rtol=1e-10)
    # the streamed chunks are page-locked on the host and land on the device
    data = FitData(cfg, folders)
    train_set = data.subset("train")
    prepared = PreparedSet(train_set, np.zeros((1, data.num_desc)), np.ones((1, data.num_desc)), 1,
                           torch.float64, DEVICE, pin=True, raw_gradients=True)  # fmt: skip
    assert prepared.x.device.type == DEVICE and prepared.grad.device.type == DEVICE
