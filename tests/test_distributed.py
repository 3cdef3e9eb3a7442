"""Training in several processes (torch.distributed, Gloo on CPU) gives the fit of one process."""

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
import yaml
from synthetic import base_config, make_groups, paths, synthetic_xyz, with_pytorch

from potflow.models.files import load_model
from potflow.training.checkpoints import read_checkpoint
from potflow.training.collectives import Ranks, barrier, finish, init_from_env, shard_batches
from potflow.training.datasets import batch_sizes
from potflow.training.loop import train

REPO = Path(__file__).resolve().parent.parent
OUTPUTS = ["ckpt.pt", "loss_vs_epochs.dat", "model.pt", "split.tsv"]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def fits(tmp_path_factory):
    """Fits that split unevenly over two ranks: (name, config, folders)."""
    root = tmp_path_factory.mktemp("ddp")
    ta = base_config(optimizer="adam")
    ta_folders = make_groups(root / "ta", ta, [12, 9])  # 12 train: batches of 5, 5 and 2
    two = base_config(("Ta", "W"), optimizer="adam")
    two_folders = make_groups(root / "tw", two, [10, 8], seed=5)  # 11 train: ranks hold 6 and 5
    return [
        ("memory", with_pytorch(ta, batch_size=5, num_epochs=3), ta_folders),
        # batch 1: in every step one rank has nothing to train on
        ("streamed", with_pytorch(two, batch_size=1, num_epochs=2, multi_element_option=2, memory_budget_mb=0.05), two_folders),
        ("onehot", with_pytorch(two, batch_size=4, num_epochs=3, multi_element_option=3, scheduler={"type": "plateau", "patience": 0}), two_folders),
        ("random_seed", with_pytorch(ta, batch_size=4, num_epochs=2, manual_seed_flag=0), ta_folders),
        # full-batch L-BFGS from the linear start: every loss evaluation sums both ranks' shares
        ("lbfgs", with_pytorch(two, optimizer="lbfgs", num_epochs=3, multi_element_option=2), two_folders),
    ]  # fmt: skip


def _no_writes(*args, **kwargs):
    raise AssertionError(f"a rank other than 0 wrote a file: {args}")


def _rank_main(rank, world, port, fits, out):
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank)
    )  # fmt: skip
    me = init_from_env("cpu")
    assert (me.rank, me.world) == (rank, world)
    if rank:
        import potflow.fileio
        import potflow.training.loop

        potflow.fileio.atomic_path = potflow.training.loop.atomic_path = _no_writes
    for name, cfg, folders in fits:
        res = train(cfg, folders, paths(Path(out) / name), progress=False)
        weights = {k: v.tolist() for k, v in res["last_state"].items()}
        report = {"history": res["history"], "info": res["info"], "weights": weights}
        (Path(out) / f"{name}.rank{rank}.json").write_text(json.dumps(report))
    # a restart from the first fit's checkpoint, in two processes
    name, cfg, folders = fits[0]
    if rank == 0:
        shutil.copy(Path(out) / name / "ckpt.pt", Path(out) / "start.pt")
    barrier()
    train(with_pytorch(cfg, num_epochs=5, save_state_input=str(Path(out) / "start.pt")), folders, paths(Path(out) / "restart"), progress=False)
    finish()


def test_two_processes_give_the_fit_of_one(fits, tmp_path):
    mp.spawn(_rank_main, args=(2, free_port(), fits, str(tmp_path / "ddp")), nprocs=2, join=True)
    for name, cfg, folders in fits:
        two = tmp_path / "ddp" / name
        ranks = [json.loads((tmp_path / "ddp" / f"{name}.rank{r}.json").read_text()) for r in (0, 1)]
        # every rank took the same decisions from the same (reduced) losses, with the same weights
        assert ranks[0]["history"] == ranks[1]["history"] and ranks[0]["info"] == ranks[1]["info"]
        assert ranks[0]["weights"] == ranks[1]["weights"]
        # rank 0 alone wrote the files, and only the outputs (no temporaries, no resume state)
        assert sorted(p.name for p in two.iterdir()) == OUTPUTS, name
        if not cfg["pytorch"]["manual_seed_flag"]:
            continue  # a random seed: no one-process run to compare with
        one = tmp_path / "one" / name
        res = train(cfg, folders, paths(one), progress=False)
        np.testing.assert_allclose(np.loadtxt(two / "loss_vs_epochs.dat"), np.loadtxt(one / "loss_vs_epochs.dat"), rtol=1e-10)
        assert (two / "split.tsv").read_text() == (one / "split.tsv").read_text()
        a, b = read_checkpoint(two / "ckpt.pt"), read_checkpoint(one / "ckpt.pt")
        for key, value in b["model"]["state_dict"].items():
            torch.testing.assert_close(a["model"]["state_dict"][key], value, rtol=1e-9, atol=1e-12, msg=f"{name} {key}")
        for sa, sb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values(), strict=True):
            key = "exp_avg_sq" if "exp_avg_sq" in sb else "prev_flat_grad"  # Adam's, L-BFGS's
            torch.testing.assert_close(sa[key], sb[key], rtol=1e-8, atol=1e-16)
        (ma, ia), (mb, ib) = load_model(two / "model.pt"), load_model(one / "model.pt")
        assert ia["epoch"] == ib["epoch"] == res["info"]["epoch"], name
        for x, y in zip(ma.state_dict().values(), mb.state_dict().values(), strict=True):
            torch.testing.assert_close(x, y, rtol=1e-9, atol=1e-12)

    # the restarted two-process fit ends where one uninterrupted process ends
    name, cfg, folders = fits[0]
    train(with_pytorch(cfg, num_epochs=5), folders, paths(tmp_path / "one" / "five"), progress=False)
    a, b = tmp_path / "ddp" / "restart", tmp_path / "one" / "five"
    np.testing.assert_allclose(np.loadtxt(a / "loss_vs_epochs.dat"), np.loadtxt(b / "loss_vs_epochs.dat"), rtol=1e-10)
    sa, sb = read_checkpoint(a / "ckpt.pt")["model"]["state_dict"], read_checkpoint(b / "ckpt.pt")["model"]["state_dict"]
    for key in sb:
        torch.testing.assert_close(sa[key], sb[key], rtol=1e-9, atol=1e-12)


def test_shards_cover_each_global_batch():
    order = np.random.default_rng(0).permutation(11)
    sizes = batch_sizes(11, 4)
    seen = []
    for rank in range(3):
        mine, counts = shard_batches(order, sizes, Ranks(rank, 3))
        assert counts.sum() == len(mine) and len(counts) == len(sizes)
        share = Ranks(rank, 3).share(11)
        # back to positions in the whole set, batch by batch
        batches = np.split(share[mine], np.cumsum(counts)[:-1])
        seen.append(batches)
    for b, size in enumerate(sizes):
        got = np.concatenate([seen[r][b] for r in range(3)])
        assert len(got) == size and set(got) == set(order[b * 4 : b * 4 + size])


# ----------------------------------------------------------------------------- the rule and the command


@pytest.mark.slow  # end to end: runs the workflow
def test_training_rule_runs_two_processes_under_torchrun(tmp_path, monkeypatch):
    """resources.train_gpus: 2 on a machine without GPUs: torchrun starts two CPU processes."""
    data = tmp_path / "data"
    data.mkdir()
    synthetic_xyz(data / "g0.xyz", 9, ["Ta"], 0)
    synthetic_xyz(data / "g1.xyz", 7, ["Ta"], 1)
    raw = {
        "bispectrum": {"type": ["Ta"], "twojmax": 2, "rcutfac": 4.6},
        "scraper": {"scraper": "XYZ"},
        "path": {"dataPath": str(data)},
        "pytorch": {"layer_sizes": ["num_desc", 8, 1], "num_epochs": 3, "batch_size": 3, "dtype": "float64"},
        "resources": {"train_gpus": 2},
        "md": {"enabled": False},
    }  # fmt: skip
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(raw))
    env = {k: v for k, v in os.environ.items() if k not in ("CUDA_VISIBLE_DEVICES", "POTFLOW_GPUS")}
    res = subprocess.run(
        [sys.executable, "-m", "snakemake", "results/fits/default/model.pt", "--cores", "2", "--resources", "gpu=2",
         "--directory", str(tmp_path), "--configfile", str(tmp_path / "config.yaml")],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    fit = tmp_path / "results" / "fits" / "default"
    log_file = tmp_path / "results" / "logs" / "training" / "default" / "training.log"
    log = log_file.read_text() if log_file.exists() else ""
    assert res.returncode == 0, (res.stdout + res.stderr)[-3000:] + log[-3000:]
    assert "torch.distributed.run --standalone --nproc-per-node 2" in log
    assert "on cpu" in log and "2 processes" in log
    assert log.count("----- epoch: 2") == 1  # rank 0 alone prints
    assert sorted(p.name for p in fit.iterdir()) == ["FitTorch_Pytorch.pt", "loss_vs_epochs.dat", "model.pt", "split.tsv"]

    # the same fit in one process, through the `potflow train` command
    from potflow.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["train", "--config", "config.yaml", "--fit", "one"]) == 0
    one = tmp_path / "results" / "fits" / "one"
    np.testing.assert_allclose(np.loadtxt(fit / "loss_vs_epochs.dat"), np.loadtxt(one / "loss_vs_epochs.dat"), rtol=1e-10)
    (ma, ia), (mb, ib) = load_model(fit / "model.pt"), load_model(one / "model.pt")
    assert ia["epoch"] == ib["epoch"]
    for x, y in zip(ma.state_dict().values(), mb.state_dict().values(), strict=True):
        torch.testing.assert_close(x, y, rtol=1e-9, atol=1e-12)


def test_command_and_device_refusals(tmp_path):
    from potflow.cli import main
    from potflow.errors import PotflowInputError
    from potflow.training.setup import resolve_device

    (tmp_path / "job.json").write_text("{}")
    assert main(["train", "--job", str(tmp_path / "job.json")]) == 1
    if not torch.cuda.is_available():
        with pytest.raises(PotflowInputError, match="CUDA is not available"):
            resolve_device("cuda", Ranks(0, 2))
    assert resolve_device("auto", Ranks(1, 2)).type == ("cuda" if torch.cuda.is_available() else "cpu")
