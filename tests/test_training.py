"""Training: split, loss, restarts, determinism, streaming, refusals, the rule, a short real fit."""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from synthetic import paths, same_weights, state, synthetic_xyz, with_pytorch

from potflow.config.load import prepare_config
from potflow.data.splits import split_group
from potflow.data.structures import import_group
from potflow.descriptors.compute import compute_group_descriptors
from potflow.descriptors.folders import ARRAYS, META
from potflow.errors import PotflowInputError
from potflow.models.files import load_model
from potflow.models.network import predict
from potflow.training.checkpoints import read_checkpoint
from potflow.training.datasets import FitData, concat_ranges
from potflow.training.loop import train
from potflow.training.loss import batch_loss_sum
from potflow.training.stores import PreparedSet, make_store

# ----------------------------------------------------------------------------- split


def test_split_follows_fitsnap_sizes():
    opts = {"training_size": 0.7, "testing_size": 0.3}
    labels, note = split_group(9, "g", opts, 0.0, 0, 0)
    # round(6.3) = 6 train, round(2.7) = 3 test, in file order without random_sampling
    assert list(labels) == ["train"] * 6 + ["test"] * 3 and note is None
    labels, _ = split_group(10, "g", {"training_size": 4, "testing_size": 2}, 0.0, 0, 0)
    assert list(labels) == ["train"] * 4 + ["test"] * 2 + [""] * 4
    # a tiny fraction still gives one configuration; 0 gives none
    labels, _ = split_group(5, "g", {"training_size": 0.01, "testing_size": 0}, 0.0, 0, 0)
    assert list(labels) == ["train"] + [""] * 4
    # 0.5/0.5 of 3: round(1.5) = 2 + 2 > 3: the test set takes what is left, as in FitSNAP
    labels, note = split_group(3, "g", {"training_size": 0.5, "testing_size": 0.5}, 0.0, 0, 0)
    assert list(labels) == ["train", "train", "test"] and "testing on 1" in note


def test_split_validation_comes_from_training_configs():
    opts = {"training_size": 0.7, "testing_size": 0.3}
    labels, _ = split_group(100, "g", opts, 0.2, 0, 0)
    assert (labels == "val").sum() == 14 and (labels == "train").sum() == 56
    assert (labels[70:] == "test").all() and not (labels[:70] == "test").any()
    one, _ = split_group(2, "g", opts, 0.5, 0, 0)  # validation never takes the last training config
    assert (one == "train").sum() == 1


def test_random_sampling_is_seeded_and_per_group():
    opts = {"training_size": 0.5, "testing_size": 0.5}
    a, _ = split_group(40, "g", opts, 0.1, 1, 7)
    b, _ = split_group(40, "g", opts, 0.1, 1, 7)
    c, _ = split_group(40, "g", opts, 0.1, 1, 8)
    d, _ = split_group(40, "other", opts, 0.1, 1, 7)
    assert (a == b).all() and not (a == c).all() and not (a == d).all()
    assert not (a[:20] == "train").all()  # shuffled, not file order


def test_split_refusals():
    with pytest.raises(PotflowInputError, match="no configurations to train on"):
        split_group(5, "g", {"training_size": 0, "testing_size": 1.0}, 0.1, 0, 0)
    with pytest.raises(PotflowInputError, match="not a whole number"):
        split_group(5, "g", {"training_size": 2.5, "testing_size": 0}, 0.1, 0, 0)
    with pytest.raises(PotflowInputError, match="has 5"):
        split_group(5, "g", {"training_size": 6, "testing_size": 0}, 0.1, 0, 0)


def test_fit_data_targets_weights_and_split_file(ta, tmp_path):
    cfg, folders = ta
    cfg = dict(cfg, eshift={"Ta": -2.5})
    cfg["groups"] = {**cfg["groups"], "g1": {"eweight": 3.0, "fweight": 0.5}}
    cfg = with_pytorch(cfg, energy_weight=None, force_weight=None)
    data = FitData(cfg, folders)
    t = data.table
    g1 = t["group_id"] == 1
    e1 = np.load(Path(folders[1]) / "energy_target.npy")
    assert np.allclose(t["energy"][g1], e1 - 2.5 * t["natoms"][g1])
    assert (t["ew"][g1] == 3.0).all() and (t["fw"][g1] == 0.5).all() and (t["ew"][~g1] == 1.0).all()
    data.write_split(tmp_path / "split.tsv")
    rows = (tmp_path / "split.tsv").read_text().splitlines()
    assert rows[0] == "group\tindex\tfile\tnatoms\tset"
    assert len(rows) == 1 + 12 + 9 and rows[1].split("\t")[:2] == ["g0", "0"]


# ----------------------------------------------------------------------------- loss


def test_loss_matches_the_formula_by_hand(tawb):
    """L = (1/M) sum_m [wE ((E^-E)/N)^2 + wF/(3N) sum_i |F^-F|^2] on a tiny two-element batch."""
    cfg, folders = tawb
    cfg = dict(cfg, eshift={"Ta": -1.0, "W": 0.5})
    cfg["groups"] = {**cfg["groups"], "g0": {"eweight": 2.0, "fweight": 0.3}, "g1": {"eweight": 0.7, "fweight": 1.9}}
    cfg = with_pytorch(cfg, energy_weight=None, force_weight=None)
    data = FitData(cfg, folders)
    from potflow.models.network import AtomicEnergyModel

    for option in (1, 2, 3):
        torch.manual_seed(option)
        model = AtomicEnergyModel(data.num_desc, [6, 5], data.elements, option).double()
        cs = data.subset("train")
        model.set_standardisation_moments(*cs.moments())
        pick = np.array([1, len(cs) - 1, 2])  # configs from both groups, out of order
        prepared = PreparedSet(cs, model.shift.numpy(), model.scale.numpy(), option, torch.float64, "cpu")
        (batch,) = prepared.batches(pick, batch_size=3)
        with torch.no_grad():
            got = (batch_loss_sum(model, batch, prepared.grad) / batch.n_configs).item()
        # by hand: model.predict on each raw configuration
        terms = []
        for m in cs.ids[pick]:
            g = data.groups[data.table["group_id"][m]]
            c = data.table["index"][m]
            a0, n = g.atom_start[c], g.natoms[c]
            r0, r1 = g.row_start[c], g.row_start[c] + g.nrows[c]
            arr = g.arrays
            with torch.no_grad():
                e, f, _ = predict(
                    model, torch.from_numpy(np.array(arr["descriptors"][a0 : a0 + n])),
                    torch.from_numpy(g.types[a0 : a0 + n]), torch.tensor([n]),
                    torch.from_numpy(np.array(arr["grad_values"][r0:r1])),
                    torch.from_numpy(np.array(arr["grad_index"][r0:r1], dtype=np.int64)),
                )  # fmt: skip
            types = g.types[a0 : a0 + n]
            target_e = arr["energy"][c] - arr["ref_energy"][c] + (-1.0 * (types == 0).sum() + 0.5 * (types == 1).sum())
            target_f = np.asarray(arr["forces"][a0 : a0 + n]) - np.asarray(arr["ref_forces"][a0 : a0 + n])
            we, wf = (2.0, 0.3) if g.name == "g0" else (0.7, 1.9)
            terms.append(we * ((e.item() - target_e) / n) ** 2 + wf / (3 * n) * ((f.numpy() - target_f) ** 2).sum())
        assert got == pytest.approx(np.mean(terms), rel=1e-10), option


# ----------------------------------------------------------------------------- the loop


def test_training_writes_its_files_and_selects_the_best_epoch(ta, tmp_path, capsys):
    cfg, folders = ta
    res = train(with_pytorch(cfg, num_epochs=5), folders, paths(tmp_path), progress=False)
    out = capsys.readouterr().out
    assert "----- epoch: 0" in out and "Batch averaged train/val loss:" in out and "Epoch time" in out
    hist = np.loadtxt(tmp_path / "loss_vs_epochs.dat")
    assert hist.shape == (5, 3) and list(hist[:, 0]) == [0, 1, 2, 3, 4]
    model, info = load_model(tmp_path / "model.pt")
    best = int(np.argmin(hist[:, 2]))
    assert info["selection"] == "best" and info["epoch"] == best and info["val_loss"] == pytest.approx(hist[best, 2])
    ckpt = read_checkpoint(tmp_path / "ckpt.pt")
    assert ckpt["epochs_done"] == 5 and ckpt["best"]["epoch"] == best
    assert not (tmp_path / "resume.pt").exists()  # removed once the fit is complete
    assert res["epochs_done"] == 5
    last = train(with_pytorch(cfg, num_epochs=5, model_selection="last"), folders, paths(tmp_path / "b"), progress=False)
    assert last["info"]["selection"] == "last" and last["info"]["epoch"] == 4


def test_seeded_runs_are_identical(ta, tmp_path):
    cfg, folders = ta
    a = train(cfg, folders, paths(tmp_path / "a"), progress=False)["history"]
    b = train(cfg, folders, paths(tmp_path / "b"), progress=False)["history"]
    c = train(with_pytorch(cfg, seed=1), folders, paths(tmp_path / "c"), progress=False)["history"]
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
    assert same_weights(state(tmp_path / "a" / "ckpt.pt"), state(tmp_path / "b" / "ckpt.pt"))


@pytest.mark.parametrize("optimizer", ["lbfgs", "adam"])
def test_restart_from_checkpoint_equals_an_uninterrupted_run(ta, tmp_path, optimizer):
    """Also for L-BFGS (its history restored) with the linear path of linear_start held fixed
    after the restart: without ``linear_path_held`` in the checkpoint the lbfgs case fails."""
    cfg, folders = ta
    cfg = with_pytorch(cfg, optimizer=optimizer, num_epochs=6, scheduler={"type": "step", "step_size": 2, "factor": 0.5})
    full = train(cfg, folders, paths(tmp_path / "full"), progress=False)
    train(with_pytorch(cfg, num_epochs=3), folders, paths(tmp_path / "first"), progress=False)
    shutil.copy(tmp_path / "first" / "ckpt.pt", tmp_path / "start.pt")
    second = train(
        with_pytorch(cfg, save_state_input=str(tmp_path / "start.pt")), folders, paths(tmp_path / "second"), progress=False
    )
    assert second["history"] == full["history"]
    a, b = state(tmp_path / "full" / "ckpt.pt"), state(tmp_path / "second" / "ckpt.pt")
    assert same_weights(a, b) and a["optimizer"]["param_groups"][0]["lr"] == b["optimizer"]["param_groups"][0]["lr"]
    ma, _ = load_model(tmp_path / "full" / "model.pt")
    mb, _ = load_model(tmp_path / "second" / "model.pt")
    assert all(torch.equal(x, y) for x, y in zip(ma.state_dict().values(), mb.state_dict().values(), strict=True))


@pytest.mark.parametrize("optimizer", ["lbfgs", "adam"])
def test_interrupted_run_resumes_from_the_resume_file(ta, tmp_path, monkeypatch, optimizer):
    cfg, folders = ta
    cfg = with_pytorch(cfg, optimizer=optimizer, num_epochs=6, save_freq=2)
    full = train(cfg, folders, paths(tmp_path / "full"), progress=False)

    import potflow.training.loop as pt

    real = pt.write_torch  # the checkpoint writer of the training loop

    def write_then_die(path, record):
        real(path, record)
        if record["epochs_done"] == 4:
            raise KeyboardInterrupt  # killed just after the epoch-4 save

    monkeypatch.setattr(pt, "write_torch", write_then_die)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, folders, paths(tmp_path / "run"), progress=False)
    assert read_checkpoint(tmp_path / "run" / "resume.pt")["epochs_done"] == 4
    monkeypatch.setattr(pt, "write_torch", real)
    # a rerun with other settings ignores the resume state it finds in its folder (and starts
    # where a new fit starts) ... Checked to bite: with start_state resuming from any resume
    # state whatever its run hash, this fails (source "resume state ...", 4 epochs fewer).
    other_cfg = with_pytorch(cfg, learning_rate=1e-3)
    (tmp_path / "other").mkdir()
    shutil.copy(tmp_path / "run" / "resume.pt", tmp_path / "other" / "resume.pt")
    other = train(other_cfg, folders, paths(tmp_path / "other"), progress=False)
    assert other["info"]["source"] == "new"
    fresh = train(other_cfg, folders, paths(tmp_path / "fresh"), progress=False)
    assert other["history"] == fresh["history"]
    # ... the same settings continue from it and end where the uninterrupted run ends
    resumed = train(cfg, folders, paths(tmp_path / "run"), progress=False)
    assert resumed["info"]["source"].startswith("resume state")
    assert resumed["history"] == full["history"]
    assert same_weights(state(tmp_path / "run" / "ckpt.pt"), state(tmp_path / "full" / "ckpt.pt"))
    assert not (tmp_path / "run" / "resume.pt").exists()


def test_restart_with_the_other_optimiser_starts_it_afresh(ta, tmp_path, capsys):
    """An Adam checkpoint restarted with optimizer lbfgs (and back): weights, history and random
    streams carry over, the optimiser starts afresh. Without the optimizer_kind check,
    LBFGS.load_state_dict of Adam's state raises."""
    cfg, folders = ta
    train(with_pytorch(cfg, optimizer="adam", num_epochs=2), folders, paths(tmp_path / "a"), progress=False)
    shutil.copy(tmp_path / "a" / "ckpt.pt", tmp_path / "start.pt")
    res = train(
        with_pytorch(cfg, optimizer="lbfgs", num_epochs=4, save_state_input=str(tmp_path / "start.pt")), folders,
        paths(tmp_path / "b"), progress=False,
    )  # fmt: skip
    assert "lbfgs starts afresh" in capsys.readouterr().out
    assert len(res["history"]) == 4 and res["history"][:2] == np.loadtxt(tmp_path / "a" / "loss_vs_epochs.dat").tolist()
    shutil.copy(tmp_path / "b" / "ckpt.pt", tmp_path / "back.pt")
    back = train(
        with_pytorch(cfg, optimizer="adam", num_epochs=5, save_state_input=str(tmp_path / "back.pt")), folders,
        paths(tmp_path / "c"), progress=False,
    )  # fmt: skip
    assert len(back["history"]) == 5


def test_num_epochs_1_with_save_state_input_evaluates_without_training(ta, tmp_path, capsys):
    cfg, folders = ta
    train(cfg, folders, paths(tmp_path / "fit"), progress=False)
    shutil.copy(tmp_path / "fit" / "ckpt.pt", tmp_path / "start.pt")
    res = train(
        with_pytorch(cfg, num_epochs=1, save_state_input=str(tmp_path / "start.pt")), folders, paths(tmp_path / "ev"),
        progress=False,
    )  # fmt: skip
    assert "no training" in capsys.readouterr().out
    assert res["epochs_done"] == 4
    assert same_weights(state(tmp_path / "start.pt"), state(tmp_path / "ev" / "ckpt.pt"))
    a, _ = load_model(tmp_path / "fit" / "model.pt")
    b, info = load_model(tmp_path / "ev" / "model.pt")
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))
    assert info["source"] == str(tmp_path / "start.pt")
    # the selected model file itself works too (weights and standardisation)
    res = train(
        with_pytorch(cfg, num_epochs=1, save_state_input=str(tmp_path / "fit" / "model.pt")), folders,
        paths(tmp_path / "ev2"), progress=False,
    )  # fmt: skip
    c, info = load_model(tmp_path / "ev2" / "model.pt")
    assert info["selection"] == "loaded"
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), c.state_dict().values(), strict=True))


def test_streaming_gives_the_same_fit_as_memory(ta, tmp_path):
    cfg, folders = ta
    mem = train(cfg, folders, paths(tmp_path / "mem"), progress=False)
    # a 0.2 MB budget is far below what the synthetic set needs, so every batch is streamed
    streamed = train(with_pytorch(cfg, memory_budget_mb=0.2), folders, paths(tmp_path / "st"), progress=False)
    assert not mem["streamed"] and streamed["streamed"]
    np.testing.assert_allclose(np.array(streamed["history"]), np.array(mem["history"]), rtol=1e-12)
    a, b = state(tmp_path / "mem" / "ckpt.pt")["model"]["state_dict"], state(tmp_path / "st" / "ckpt.pt")["model"]["state_dict"]
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-12, atol=1e-14)


def test_stream_store_reads_in_small_chunks(ta):
    cfg, folders = ta
    data = FitData(cfg, folders)
    cs = data.subset("train")
    K = data.num_desc
    shift, scale = np.zeros((1, K)), np.ones((1, K))
    budget = int(0.9 * cs.prepared_bytes(torch.float64))  # just too small: streamed
    store = make_store(cs, shift, scale, 1, torch.float64, "cpu", budget_bytes=budget)
    assert store.streaming and store.chunk_bytes == budget // 4
    order = np.random.default_rng(0).permutation(len(cs))
    chunks = list(store.epoch(order, 1))
    assert len(chunks) >= 4 and sum(len(b) for _, b in chunks) == len(cs)
    assert max(p.x.element_size() * p.x.numel() + p.grad.element_size() * p.grad.numel() for p, _ in chunks) < store.chunk_bytes
    # batches come in the shuffled order
    energies = [b.energy.item() for _, batches in chunks for b in batches]
    assert energies == list(data.table["energy"][cs.ids[order]])


def test_permuting_atoms_within_configurations_changes_nothing(tawb, tmp_path):
    cfg, folders = tawb
    rng = np.random.default_rng(3)
    permuted = []
    for folder in folders:
        a = {n: np.load(Path(folder) / f"{n}.npy") for n in ARRAYS}
        start = np.concatenate([[0], np.cumsum(a["natoms"])[:-1]])
        perm = np.concatenate([s + rng.permutation(n) for s, n in zip(start, a["natoms"], strict=True)])
        inv = np.empty_like(perm)
        inv[perm] = np.arange(len(perm))
        local_inv = inv - np.repeat(start, a["natoms"])  # new local index of each old atom
        cfg_of_row = np.repeat(np.arange(len(a["natoms"])), np.diff(a["grad_ptr"]))
        old_i = a["grad_index"][:, 0] + start[cfg_of_row]
        old_j = a["grad_index"][:, 1] + start[cfg_of_row]
        out = tmp_path / Path(folder).name
        out.mkdir()
        for n, arr in a.items():
            if n in ("descriptors", "atom_types", "forces", "ref_forces", "force_target"):
                arr = arr[perm]
            elif n == "grad_index":
                arr = np.stack([local_inv[old_i], local_inv[old_j], arr[:, 2]], axis=1).astype(arr.dtype)
            np.save(out / f"{n}.npy", arr)
        shutil.copy(Path(folder) / META, out / META)
        permuted.append(str(out))
    # Checked to bite for option 3: with the one-hot rows of the prepared inputs taken in
    # sorted element order instead of each atom's own (stores.py), the histories differ.
    for option in (1, 2, 3):
        c = with_pytorch(cfg, multi_element_option=option, num_epochs=2, shuffle_flag=0)
        a = train(c, folders, paths(tmp_path / f"a{option}"), progress=False)["history"]
        b = train(c, permuted, paths(tmp_path / f"b{option}"), progress=False)["history"]
        np.testing.assert_allclose(np.array(a), np.array(b), rtol=1e-9)


def test_two_elements_train_with_every_option(tawb, tmp_path):
    cfg, folders = tawb
    for option in (1, 2, 3):
        res = train(with_pytorch(cfg, multi_element_option=option, num_epochs=3), folders, paths(tmp_path / str(option)), progress=False)
        hist = np.array(res["history"])
        assert np.isfinite(hist).all() and hist[-1, 1] < hist[0, 1], option


def test_early_stopping_and_plateau_schedule(ta, tmp_path):
    cfg, folders = ta
    # a learning rate this large makes Adam's validation loss stop improving quickly
    c = with_pytorch(cfg, optimizer="adam", num_epochs=60, learning_rate=0.3, early_stopping_patience=2)
    res = train(c, folders, paths(tmp_path / "es"), progress=False)
    assert res["epochs_done"] < 60
    best = res["info"]["epoch"]
    assert res["epochs_done"] == best + 1 + 2
    c = with_pytorch(c, early_stopping_patience=0, num_epochs=12, scheduler={"type": "plateau", "patience": 0})
    hist = np.array(train(c, folders, paths(tmp_path / "pl"), progress=False)["history"])
    stalls = int((np.diff(np.minimum.accumulate(hist[:, 2])) == 0).sum())
    lr = state(tmp_path / "pl" / "ckpt.pt")["optimizer"]["param_groups"][0]["lr"]
    assert stalls > 0 and lr == pytest.approx(0.3 * 0.5**stalls)


# ----------------------------------------------------------------------------- refusals


def test_refusals_are_one_line(ta, tawb, tmp_path):
    cfg, folders = ta

    def refused(c, f=folders, match=""):
        with pytest.raises(PotflowInputError, match=match) as err:
            train(c, f, paths(tmp_path / "x"), progress=False)
        assert "\n" not in str(err.value)
        return str(err.value)

    refused(with_pytorch(cfg, batch_size=100), match="batch_size': 100 is larger than the training set")
    bad = dict(cfg, groups={**cfg["groups"], "g1": {"training_size": 0, "testing_size": 1.0}})
    refused(bad, match="no configurations to train on")
    refused(dict(cfg, bispectrum={**cfg["bispectrum"], "twojmax": 4}), match="other settings")
    # a checkpoint from another element set
    cfg2, folders2 = tawb
    train(cfg2, folders2, paths(tmp_path / "two"), progress=False)
    refused(with_pytorch(cfg, save_state_input=str(tmp_path / "two" / "ckpt.pt")), match=r"elements \['Ta', 'W'\]")
    # a truncated file and a pickled object are refused without unpickling
    blob = (tmp_path / "two" / "ckpt.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(blob[: len(blob) // 2])
    refused(with_pytorch(cfg, save_state_input=str(tmp_path / "cut.pt")), match="not a readable potflow checkpoint")
    torch.save(torch.nn.Linear(2, 2), tmp_path / "pickled.pt")
    refused(with_pytorch(cfg, save_state_input=str(tmp_path / "pickled.pt")), match="not a readable potflow checkpoint")
    refused(with_pytorch(cfg, save_state_input=str(tmp_path / "missing.pt")), match="does not exist")
    # another network
    train(cfg, folders, paths(tmp_path / "one"), progress=False)
    wide = with_pytorch(cfg, layer_sizes=["num_desc", 9, 8, 1], save_state_input=str(tmp_path / "one" / "ckpt.pt"))
    refused(wide, match="hidden")


# ----------------------------------------------------------------------------- the rule


def _snakemake(workdir, *extra, wait=True):
    cmd = [sys.executable, "-m", "snakemake", "results/fits/default/model.pt", "--cores", "1", "--directory",
           str(workdir), *extra, "--configfile", str(workdir / "config.yaml")]  # fmt: skip
    return subprocess.Popen(
        cmd, cwd=Path(__file__).resolve().parent.parent, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, start_new_session=True,
    )  # fmt: skip


@pytest.mark.slow  # end to end: runs the workflow
def test_rule_resumes_after_a_kill(tmp_path):
    """Kill the training job mid-fit; rerunning the rule continues from resume.pt."""
    data = tmp_path / "data"
    data.mkdir()
    synthetic_xyz(data / "g0.xyz", 16, ["Ta"], 0)
    synthetic_xyz(data / "g1.xyz", 10, ["Ta"], 1)
    raw = {
        "bispectrum": {"type": ["Ta"], "twojmax": 2, "rcutfac": 4.6},
        "scraper": {"scraper": "XYZ"},
        "path": {"dataPath": str(data)},
        "pytorch": {"layer_sizes": ["num_desc", 8, 8, 1], "num_epochs": 400, "batch_size": 2, "learning_rate": 1e-3,
                    "dtype": "float64", "save_freq": 10},
        "md": {"enabled": False},
    }  # fmt: skip
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(raw))
    proc = _snakemake(tmp_path)
    resume = tmp_path / "results" / "fits" / "default" / "resume.pt"
    deadline = time.time() + 120
    while not resume.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert resume.exists(), proc.communicate()[0][-3000:] if proc.poll() is not None else "no resume state in time"
    time.sleep(0.3)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done = read_checkpoint(resume)["epochs_done"]
    assert 0 < done < 400
    assert not (tmp_path / "results" / "fits" / "default" / "model.pt").exists()
    # after a SIGKILL Snakemake's lock stays: unlock, then rerun the incomplete job
    unlock = _snakemake(tmp_path, "--unlock")
    assert unlock.wait(timeout=120) == 0
    rerun = _snakemake(tmp_path, "--rerun-incomplete")
    out = rerun.communicate(timeout=300)[0]
    assert rerun.returncode == 0, out[-3000:]
    log = (tmp_path / "results" / "logs" / "training" / "default" / "training.log").read_text()
    assert "start: resume state" in log and "----- epoch: 0\n" not in log
    # the same fit, run in one go, ends with the same weights
    cfg = prepare_config(raw)
    key = next((tmp_path / "results" / "descriptors").iterdir())
    folders = sorted(str(p) for p in key.iterdir())
    train(cfg, folders, paths(tmp_path / "direct"), progress=False)
    a = state(tmp_path / "results" / "fits" / "default" / "FitTorch_Pytorch.pt")
    assert same_weights(a, state(tmp_path / "direct" / "ckpt.pt"))
    assert a["epochs_done"] == 400


# ----------------------------------------------------------------------------- the bundled example


def _first_frames(xyz, count, dest):
    """The first ``count`` configurations of an extended-XYZ file, written to ``dest``."""
    lines, out, pos = xyz.read_text().splitlines(), [], 0
    for _ in range(count):
        n = int(lines[pos])
        out += lines[pos : pos + n + 2]
        pos += n + 2
    dest.write_text("\n".join(out) + "\n")


def test_network_on_bundled_subset_is_at_least_as_accurate_as_the_linear_fit(repo_root, tmp_path):
    """config.yaml's training settings, on 8 configurations of each of 4 bundled groups, end with
    test energy and force MAE no worse than the exact linear fit's (potflow.linear.solve) plus
    1 meV/atom and 0.01 eV/A (the bundled data are labelled by a linear SNAP: the linear fit is
    exact, and a tanh network can hold it to ~1e-6 eV/atom). Checked to bite: with the old
    training settings (optimizer adam, learning_rate 1e-3, batch_size 4, linear_start 0) the
    network ends at 0.36 eV/atom (the linear fit: 3e-9) and the test fails."""
    from potflow.linear.solve import predict as linear_predict
    from potflow.training.linear_start import linear_fit_of

    cfg = yaml.safe_load((repo_root / "config.yaml").read_text())
    groups = ["Displaced_BCC", "Volume_BCC", "Displaced_A15", "Surface_100"]
    (tmp_path / "data").mkdir()
    for group in groups:
        _first_frames(repo_root / "data" / "Ta_example" / f"{group}.xyz", 8, tmp_path / "data" / f"{group}.xyz")
    cfg["path"]["dataPath"] = str(tmp_path / "data")
    cfg["groups"] = {k: v for k, v in cfg["groups"].items() if k in [*groups, "random_sampling", "random_seed", "defaults"]}
    cfg = prepare_config(cfg)
    folders = []
    for group in groups:
        npz = tmp_path / f"{group}.npz"
        import_group(tmp_path / "data" / f"{group}.xyz", "XYZ", ["Ta"], npz)
        compute_group_descriptors(cfg, npz, tmp_path / "desc" / group, group)
        folders.append(str(tmp_path / "desc" / group))
    train(cfg, folders, paths(tmp_path / "fit"), progress=False)
    model, _ = load_model(tmp_path / "fit" / "model.pt")
    data = FitData(cfg, folders)
    linear = linear_fit_of(data.subset("train"))
    test = data.subset("test")
    net_e, net_f, lin_e, lin_f = [], [], [], []
    for g, local, _ in test.pieces():
        atoms = concat_ranges(g.atom_start[local], g.natoms[local])
        rows = concat_ranges(g.row_start[local], g.nrows[local])
        first = np.cumsum(g.natoms[local]) - g.natoms[local]
        idx = np.asarray(g.arrays["grad_index"][rows], dtype=np.int64)
        idx[:, :2] += np.repeat(first, g.nrows[local])[:, None]
        with torch.no_grad():
            e, f, _ = predict(
                model.double(), torch.from_numpy(np.asarray(g.arrays["descriptors"][atoms])),
                torch.from_numpy(g.types[atoms]), torch.from_numpy(g.natoms[local]),
                torch.from_numpy(np.asarray(g.arrays["grad_values"][rows])), torch.from_numpy(idx),
            )  # fmt: skip
        target_e = np.asarray(g.arrays["energy_target"])[local]
        target_f = np.asarray(g.arrays["force_target"][atoms])
        le, lf = linear_predict(linear, g.folder, local)
        net_e.append(np.abs(e.numpy() - target_e) / g.natoms[local])
        lin_e.append(np.abs(le - target_e) / g.natoms[local])
        net_f.append(np.abs(f.numpy() - target_f).ravel())
        lin_f.append(np.abs(lf - target_f).ravel())
    mae = [np.concatenate(x).mean() for x in (net_e, lin_e, net_f, lin_f)]
    assert len(np.concatenate(net_e)) >= 8
    assert mae[0] <= mae[1] + 1e-3 and mae[2] <= mae[3] + 1e-2, mae


@pytest.mark.parametrize("linear_start", [0, 1])
def test_weight_decay_adds_half_lambda_w_squared_and_its_gradient(ta, tmp_path, linear_start):
    """``weight_decay`` λ: the minimised loss is the data loss + λ/2 Σ W² over the weight matrices
    (not the biases), and each weight's gradient grows by λW — except on the held linear path,
    which is left out of the penalty and whose gradients stay zero. Fails if the penalty is left
    out, counts biases, counts the held path (its large output weight made a constant that
    stalled float32 line searches), or moves the held path."""
    from potflow.training.epoch import full_batch_loss
    from potflow.training.setup import make_stores, setup_fit

    cfg, folders = ta
    decay = 0.3

    def loss_and_grads(weight_decay):
        c = with_pytorch(cfg, weight_decay=weight_decay, linear_start=linear_start, dtype="float64")
        fit = setup_fit(c, folders, tmp_path / "none.pt")
        fit.stores = make_stores(fit)
        loss = float(full_batch_loss(fit))
        return fit.model, loss, {n: p.grad.clone() for n, p in fit.model.named_parameters()}

    model, plain, g0 = loss_and_grads(0.0)
    _, decayed, g1 = loss_and_grads(decay)
    weights = {n: p.detach() for n, p in model.named_parameters() if n.endswith("weight")}
    free = {n: torch.ones_like(p) for n, p in model.named_parameters()}
    if linear_start:  # the held linear path: neuron 0's inputs and bias, and its output weight
        for e, net in enumerate(model.nets):
            last = len(net.layers) - 1
            for li in range(last):
                free[f"nets.{e}.layers.{li}.weight"][0] = 0.0
            free[f"nets.{e}.layers.{last}.weight"][0, 0] = 0.0
    penalty = sum(float(((w * free[n]) ** 2).sum()) for n, w in weights.items())
    assert decayed - plain == pytest.approx(0.5 * decay * penalty, rel=1e-12)
    for name, p in model.named_parameters():
        expected = g0[name] + (decay * p.detach() * free[name] if name in weights else 0.0)
        torch.testing.assert_close(g1[name], expected, rtol=1e-12, atol=1e-14)
