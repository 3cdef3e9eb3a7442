"""The bad-input and fault catalogue: one test per case.

Each case goes through ``run_rule``, the wrapper of every workflow script, so it checks what a
user sees from a job: exit status 1, one line on stderr naming the file or config field, and
no partial output. Faults (killed jobs, a full disk) leave nothing Snakemake would take for a
finished output.
"""

import ast
import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from test_training import base_config, make_groups, paths, with_pytorch
from tiny_ta import copy_tiny_groups, tiny_config

from potflow import fileio
from potflow.config import load_config, prepare_config
from potflow.descriptors import compute_group_descriptors
from potflow.evaluate import evaluate_fit
from potflow.model import AtomicEnergyModel, save_model
from potflow.rulescript import run_rule
from potflow.structures import import_group
from potflow.train import train

ROOT = Path(__file__).resolve().parent.parent


def fails_cleanly(body, capsys, *words, outputs=()):
    """The job exits 1 with one line containing ``words``; no output or temporary is left."""
    with pytest.raises(SystemExit) as exc:
        run_rule(body)
    assert exc.value.code == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("potflow error: ") and "\n" not in err, err
    for word in words:
        assert word in err, (word, err)
    for out in outputs:
        out = Path(out)
        assert not out.exists(), out
        if out.parent.exists():
            assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")], out
    return err


# ------------------------------------------------------------------ data files

GOOD = {
    "Energy": -20.0, "NumAtoms": 2, "AtomTypes": ["Ta", "Ta"],
    "Positions": [[0.0, 0.0, 0.0], [1.65, 1.65, 1.65]],
    "Forces": [[0.1, 0.0, 0.0], [-0.1, 0.0, 0.0]],
    "Lattice": [[3.3, 0.0, 0.0], [0.0, 3.3, 0.0], [0.0, 0.0, 3.3]],
}  # fmt: skip


def json_group(root, **change):
    rec = {**GOOD, **change}
    rec = {k: v for k, v in rec.items() if v is not None}
    folder = root / "group"
    folder.mkdir(parents=True, exist_ok=True)
    doc = {"Dataset": {"Data": [rec], "PositionsStyle": "angstrom", "EnergyStyle": "electronvolt"}}
    (folder / "c1.json").write_text("# comment\n" + json.dumps(doc))
    return folder


def import_fails(tmp_path, capsys, folder, *words):
    out = tmp_path / "out" / "group.npz"
    fails_cleanly(lambda: import_group(folder, "JSON", ["Ta"], out), capsys, *words, outputs=[out])


def test_malformed_json(tmp_path, capsys):
    folder = json_group(tmp_path)
    (folder / "c1.json").write_text('# comment\n{"Dataset": {"Data": [ {"Energy": -1.0,, } ] }')
    import_fails(tmp_path, capsys, folder, "c1.json", "malformed JSON", "line 2")


def test_missing_forces(tmp_path, capsys):
    import_fails(tmp_path, capsys, json_group(tmp_path, Forces=None), "c1.json", "'Forces'")


def test_forces_of_the_wrong_shape(tmp_path, capsys):
    folder = json_group(tmp_path, Forces=[[0.1, 0.0], [0.0, 0.0]])
    import_fails(tmp_path, capsys, folder, "c1.json", "'Forces'", "shape")


def test_nan_energy(tmp_path, capsys):
    folder = json_group(tmp_path)
    text = (folder / "c1.json").read_text().replace('"Energy": -20.0', '"Energy": NaN')
    (folder / "c1.json").write_text(text)
    import_fails(tmp_path, capsys, folder, "c1.json", "'Energy'")


def test_numatoms_mismatch(tmp_path, capsys):
    import_fails(tmp_path, capsys, json_group(tmp_path, NumAtoms=3), "c1.json", "'NumAtoms'")


def test_overlapping_atoms(tmp_path, capsys):
    folder = json_group(tmp_path, Positions=[[0.0, 0.0, 0.0], [0.1, 0.0, 0.0]])
    import_fails(tmp_path, capsys, folder, "c1.json", "overlap")


def test_cell_with_zero_volume(tmp_path, capsys):
    folder = json_group(tmp_path, Lattice=[[3.3, 0, 0], [0, 3.3, 0], [3.3, 3.3, 0]])
    import_fails(tmp_path, capsys, folder, "c1.json", "'Lattice'", "zero volume")


def test_unknown_element(tmp_path, capsys):
    import_fails(tmp_path, capsys, json_group(tmp_path, AtomTypes=["Ta", "Xx"]), "c1.json", "Xx")


def test_empty_group(tmp_path, capsys):
    (tmp_path / "group").mkdir()
    import_fails(tmp_path, capsys, tmp_path / "group", "group", "empty group")


# ------------------------------------------------------------------ config values


def config_fails(tmp_path, capsys, change, *words):
    path = tmp_path / "config.yaml"
    cfg = tiny_config()
    for section, values in change.items():
        cfg[section] = {**cfg.get(section, {}), **values}
    path.write_text(yaml.safe_dump(cfg))
    return fails_cleanly(lambda: load_config(path), capsys, str(path), *words)


def test_layer_sizes_not_starting_with_num_desc(tmp_path, capsys):
    config_fails(tmp_path, capsys, {"pytorch": {"layer_sizes": [16, "num_desc", 1]}}, "pytorch.layer_sizes")


def test_negative_learning_rate(tmp_path, capsys):
    config_fails(tmp_path, capsys, {"pytorch": {"learning_rate": -1e-3}}, "pytorch.learning_rate")


def test_unknown_config_key(tmp_path, capsys):
    config_fails(tmp_path, capsys, {"pytorch": {"learnig_rate": 1e-3}}, "pytorch", "learnig_rate")


def test_wrong_config_type(tmp_path, capsys):
    config_fails(tmp_path, capsys, {"pytorch": {"batch_size": "four"}}, "pytorch.batch_size")


def test_activation_lammps_cannot_run_with_md_enabled(tmp_path, capsys):
    config_fails(tmp_path, capsys, {"pytorch": {"activation": "silu"}, "md": {"enabled": True}}, "pytorch.activation", "LAMMPS")


def test_quadraticflag_is_refused(tmp_path, capsys):
    config_fails(tmp_path, capsys, {"bispectrum": {"quadraticflag": 1}}, "bispectrum.quadraticflag")


def test_linear_solver_is_refused(tmp_path, capsys):
    config_fails(tmp_path, capsys, {"solver": {"solver": "SVD"}}, "solver.solver", "neural networks")


def test_config_that_is_not_yaml(tmp_path, capsys):
    path = tmp_path / "config.yaml"
    path.write_text("pytorch: [unclosed\n")
    fails_cleanly(lambda: load_config(path), capsys, str(path), "not valid YAML")


# ------------------------------------------------------------------ training and model files


@pytest.fixture(scope="module")
def fit(tmp_path_factory):
    cfg = base_config()
    root = tmp_path_factory.mktemp("fit")
    folders = make_groups(root, cfg, [8, 6])
    train(cfg, folders, paths(root / "run"), progress=False)
    return cfg, folders, root / "run"


def train_fails(cfg, folders, out, capsys, *words):
    p = paths(out)
    err = fails_cleanly(lambda: train(cfg, folders, p, progress=False), capsys, *words)
    for f in (p.model, p.checkpoint, p.loss, p.split):
        assert not f.exists(), f
    return err


def test_group_whose_test_fraction_leaves_nothing_to_train_on(fit, tmp_path, capsys):
    cfg, folders, _ = fit
    bad = prepare_config(dict(cfg, groups={"g1": {"training_size": 0, "testing_size": 1.0}}))
    train_fails(bad, folders, tmp_path / "x", capsys, "g1", "no configurations to train on")


def test_batch_size_larger_than_the_training_set(fit, tmp_path, capsys):
    cfg, folders, _ = fit
    train_fails(with_pytorch(cfg, batch_size=500), folders, tmp_path / "x", capsys, "pytorch.batch_size")


def test_truncated_checkpoint_for_save_state_input(fit, tmp_path, capsys):
    cfg, folders, run = fit
    cut = tmp_path / "cut.pt"
    blob = run.joinpath("ckpt.pt").read_bytes()
    cut.write_bytes(blob[: len(blob) // 3])
    train_fails(with_pytorch(cfg, save_state_input=str(cut)), folders, tmp_path / "x", capsys, str(cut))


class _Exploit:
    """Unpickling this would create a file: proof that a foreign checkpoint was unpickled."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def test_foreign_checkpoint_is_never_unpickled(fit, tmp_path, capsys):
    cfg, folders, _ = fit
    marker = str(tmp_path / "unpickled")
    evil = tmp_path / "evil.pt"
    torch.save({"format": "potflow-checkpoint", "payload": _Exploit(marker)}, evil)
    train_fails(with_pytorch(cfg, save_state_input=str(evil)), folders, tmp_path / "x", capsys, str(evil))
    assert not os.path.exists(marker), "a foreign checkpoint was unpickled"


def test_descriptor_folder_from_other_settings(fit, tmp_path, capsys):
    cfg, folders, _ = fit
    other = prepare_config(dict(cfg, bispectrum={**cfg["bispectrum"], "rcutfac": 4.2}))
    train_fails(other, folders, tmp_path / "x", capsys, folders[0], "other settings")


def test_model_from_another_element_set(fit, tmp_path, capsys):
    cfg, folders, run = fit
    model = tmp_path / "model.pt"
    save_model(model, AtomicEnergyModel(len(np.load(Path(folders[0]) / "descriptors.npy", mmap_mode="r")[0]), [4], ["W"]))
    groups = dict(zip(["g0", "g1"], folders, strict=True))
    fails_cleanly(lambda: evaluate_fit(cfg, model, run / "split.tsv", groups), capsys, str(model), "W")


def test_full_disk_leaves_no_partial_descriptor_folder(fit, tmp_path, capsys, monkeypatch):
    cfg, folders, _ = fit
    npz = Path(folders[0]).parent.parent / "g0.npz"
    out = tmp_path / "desc" / "g0"
    real_save = np.save
    calls = []

    def save_until_full(file, arr, *a, **k):
        calls.append(file)
        if len(calls) > 3:
            raise OSError(errno.ENOSPC, "No space left on device", str(file))
        return real_save(file, arr, *a, **k)

    monkeypatch.setattr(np, "save", save_until_full)
    with pytest.raises(OSError):
        run_rule(lambda: compute_group_descriptors(cfg, npz, out, "g0"))
    assert len(calls) > 3 and not out.exists()
    assert not list(out.parent.iterdir()), "a temporary folder was left behind"


def test_full_disk_leaves_no_partial_file(tmp_path, monkeypatch):
    target = tmp_path / "metrics.dat"
    target.write_text("old, complete\n")

    def full_disk(src, dst):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(fileio.os, "replace", full_disk)
    with pytest.raises(OSError):
        fileio.write_text(target, "new\n" * 1000)
    assert target.read_text() == "old, complete\n"
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.dat"]


# ------------------------------------------------------------------ faults


def test_killed_descriptor_job_leaves_no_output_snakemake_would_trust(shared_data, tmp_path):
    """SIGKILL a descriptor job mid-run; the rerun recomputes it and gets the same arrays."""
    copy_tiny_groups(shared_data, tmp_path / "data", {"Liquid": 3})
    cfg = dict(tiny_config(), md={"enabled": False})
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "--directory", str(tmp_path),
           "--configfile", str(tmp_path / "config.yaml"), "--cores", "1", "--until", "compute_descriptors"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    desc_root = tmp_path / "results" / "descriptors"
    job_log = tmp_path / "results" / "logs" / "descriptors"
    deadline = time.time() + 120
    while time.time() < deadline and not list(job_log.glob("*/Liquid.log")):
        time.sleep(0.005)
    time.sleep(np.random.default_rng(7).uniform(0.0, 1.5))  # somewhere in start-up, LAMMPS or the write
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    for folder in desc_root.glob("*/Liquid"):  # only ever complete: it appears by one rename
        assert (folder / "meta.json").is_file() and len(list(folder.glob("*.npy"))) == 13
    # a SIGKILLed Snakemake cannot remove its lock: the user runs --unlock, then reruns
    subprocess.run([*cmd, "--unlock"], capture_output=True, timeout=120, check=True)
    rerun = subprocess.run([*cmd, "--rerun-incomplete"], capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    (folder,) = desc_root.glob("*/Liquid")
    assert not list(desc_root.glob("*/.Liquid.*"))
    fresh = tmp_path / "fresh"
    compute_group_descriptors(prepare_config(cfg), tmp_path / "results" / "data" / "Liquid.npz", fresh)
    for name in ("descriptors", "grad_values", "energy_target"):
        np.testing.assert_array_equal(np.load(folder / f"{name}.npy"), np.load(fresh / f"{name}.npy"))


def test_nothing_is_unpickled_from_user_files():
    """torch.load always with weights_only=True; no pickle.load anywhere in potflow."""
    offenders = []
    for path in sorted((ROOT / "potflow").glob("*.py")) + sorted((ROOT / "workflow_scripts").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call):
                continue
            name = ast.unparse(node.func)
            if name in ("pickle.load", "pickle.loads", "pickle.Unpickler"):
                offenders.append(f"{path.name}: {name}")
            if name.endswith("torch.load") or name == "load" and "torch" in ast.unparse(node):
                kw = {k.arg: ast.unparse(k.value) for k in node.keywords}
                if kw.get("weights_only") != "True":
                    offenders.append(f"{path.name}:{node.lineno}: {name} without weights_only=True")
    assert not offenders, offenders
