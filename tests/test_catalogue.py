"""Bad input and faults: one test per case, run through the workflow wherever the case can occur.

Every bad input ends with ONE line ``potflow error: <file or config>: <field>: <what>`` (found
in Snakemake's output and the job's log), a non-zero exit status and no output of the failed
step (no temporary either). Faults: a training job killed at a random point resumes from its
last saved epoch and ends with the model of an uninterrupted run; a descriptor job killed while
it writes leaves no folder that Snakemake would take as complete; a full disk leaves nothing
half-written. Last, nothing in potflow unpickles a file a user did not make with potflow.
"""

import ast
import copy
import errno
import json
import os
import pickle
import random
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
import torch
import yaml
from tiny_ta import ZBL

from potflow.config.load import prepare_config
from potflow.data.structures import import_group
from potflow.descriptors.compute import compute_group_descriptors
from potflow.descriptors.folders import ARRAYS, read_meta
from potflow.descriptors.settings import descriptor_key, descriptor_settings
from potflow.errors import PotflowWriteError
from potflow.models.files import save_model
from potflow.models.network import AtomicEnergyModel
from potflow.training.checkpoints import read_checkpoint
from potflow.training.loop import TrainPaths, train
from potflow.workflow.rulescript import run_rule

ROOT = Path(__file__).resolve().parent.parent
MODEL = "results/fits/default/model.pt"
# the tiny fit: 2 groups x 6 configurations of 2 and 4 atoms, K = 5 descriptors, ~2 s of training
GROUPS = {"Elastic_BCC": 6, "Volume_FCC": 6}
EPOCHS = 600
FIT_OUTPUTS = ("model.pt", "FitTorch_Pytorch.pt", "loss_vs_epochs.dat", "split.tsv", "resume.pt")


def config(data="data", **pytorch):
    return {
        "bispectrum": {"type": ["Ta"], "twojmax": 2},
        "scraper": {"scraper": "JSON"},
        "path": {"dataPath": data},
        "reference": copy.deepcopy(ZBL),
        "pytorch": {
            "layer_sizes": ["num_desc", 8, 1], "num_epochs": EPOCHS, "batch_size": 1,
            "learning_rate": 1e-3, "dtype": "float64", "save_freq": 5, "validation_fraction": 0.25,
            **pytorch,
        },
        "md": {"enabled": False},
    }  # fmt: skip


def write_config(workdir, cfg, name="config.yaml"):
    (workdir / name).write_text(yaml.safe_dump(cfg, sort_keys=False))
    return name


def copy_groups(shared_data, dest, groups):
    for group, count in groups.items():
        (dest / group).mkdir(parents=True)
        for f in sorted((shared_data / "Ta_JSON" / group).glob("*.json"))[:count]:
            shutil.copy(f, dest / group / f.name)


# ----------------------------------------------------------------------------- running Snakemake


def command(workdir, *args, configfile="config.yaml"):
    # the workflow profile (profiles/default: keep-going, rerun-incomplete) applies as for a user
    return [
        sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "--directory",
        str(workdir), "--cores", "2", *args, "--configfile", str(workdir / configfile),
    ]  # fmt: skip


def snakemake(workdir, *args, configfile="config.yaml", **kw):
    run = subprocess.run(
        command(workdir, *args, configfile=configfile), capture_output=True, text=True, timeout=300, **kw
    )
    return run.returncode, run.stdout + run.stderr


def start(workdir, *args):
    """Snakemake in a process group of its own (so that it can be killed with its jobs)."""
    return subprocess.Popen(
        command(workdir, *args), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )


def error_line(rc, out, *fragments):
    """The one distinct ``potflow error:`` line of a failed run, holding every fragment."""
    assert rc != 0, out[-3000:]
    lines = {line for line in out.splitlines() if line.startswith("potflow error:")}
    assert len(lines) == 1, (lines, out[-3000:])
    line = lines.pop()
    for fragment in fragments:
        assert fragment in line, (fragment, line)
    return line


def temporaries(folder):
    return sorted(str(p) for p in Path(folder).rglob("*.tmp")) if Path(folder).exists() else []


def assert_no_fit_outputs(workdir):
    fit = workdir / "results" / "fits" / "default"
    assert not [name for name in FIT_OUTPUTS if (fit / name).exists()]
    assert not temporaries(workdir / "results")


# ----------------------------------------------------------------------------- data


def fitsnap_json(path):
    text = path.read_text()
    comment, body = text.split("\n", 1) if text.startswith("#") else ("", text)
    return comment, json.loads(body)


def bad_copy(source, dest, change):
    """A copy of a FitSNAP JSON file with ``change(record)`` applied to its configuration."""
    comment, doc = fitsnap_json(source)
    change(doc["Dataset"]["Data"][0])
    dest.write_text(comment + "\n" + json.dumps(doc))


def _overlap(rec):
    rec["Positions"][1] = [x + d for x, d in zip(rec["Positions"][0], (0.1, 0.0, 0.0), strict=True)]


def _flat_cell(rec):
    a, b, _ = rec["Lattice"]
    rec["Lattice"][2] = [x + y for x, y in zip(a, b, strict=True)]


# group -> change of its second file (None: a truncated file)
DATA_CASES = {
    "MalformedJson": None,
    "MissingForces": lambda rec: rec.pop("Forces"),
    "ForcesWrongShape": lambda rec: rec.update(Forces=[f[:2] for f in rec["Forces"]]),
    "NanEnergy": lambda rec: rec.update(Energy=float("nan")),
    "OverlappingAtoms": _overlap,
    "ZeroVolumeCell": _flat_cell,
    "UnknownElement": lambda rec: rec["AtomTypes"].__setitem__(0, "W"),
    "StressWrongShape": lambda rec: rec.update(Stress=[s[:2] for s in rec["Stress"]]),
    "NanStress": lambda rec: rec["Stress"][1].__setitem__(1, float("nan")),
}


@pytest.fixture(scope="module")
def bad_data(tmp_path_factory, shared_data):
    """One workflow run over groups that each hold one good and one bad file (and an empty
    group); Snakemake keeps going (the profile), so every group's import runs and fails alone."""
    workdir = tmp_path_factory.mktemp("bad_data")
    good = sorted((shared_data / "Ta_JSON" / "Volume_FCC").glob("*.json"))[:2]
    for group, change in DATA_CASES.items():
        folder = workdir / "data" / group
        folder.mkdir(parents=True)
        shutil.copy(good[0], folder / good[0].name)
        bad = folder / "bad.json"
        if change is None:
            bad.write_text(good[1].read_text()[:-60])
        else:
            bad_copy(good[1], bad, change)
    (workdir / "data" / "EmptyGroup").mkdir()
    copy_groups(shared_data, workdir / "data", {"Volume_BCC": 2})
    write_config(workdir, config())
    groups = [*DATA_CASES, "EmptyGroup", "Volume_BCC"]
    rc, out = snakemake(workdir, *[f"results/data/{g}.npz" for g in groups])
    assert (workdir / "results" / "data" / "Volume_BCC.npz").is_file(), "the good group is imported"
    return workdir, rc, out


def data_error(bad_data, group, *fragments):
    """The group's one error line (in the run's output and alone in its log); no output."""
    workdir, rc, out = bad_data
    lines = [line for line in out.splitlines() if line.startswith(f"potflow error: data/{group}")]
    line = error_line(rc, "\n".join(lines), *fragments)
    assert (workdir / "results" / "logs" / "data" / f"{group}.log").read_text() == line + "\n"
    assert not (workdir / "results" / "data" / f"{group}.npz").exists()
    assert not temporaries(workdir / "results")
    return line


def test_malformed_json(bad_data):
    data_error(bad_data, "MalformedJson", "data/MalformedJson/bad.json: malformed JSON", "(line ")


def test_missing_forces(bad_data):
    data_error(bad_data, "MissingForces", "data/MissingForces/bad.json: missing field 'Forces'")


def test_forces_of_the_wrong_shape(bad_data):
    data_error(
        bad_data, "ForcesWrongShape", "data/ForcesWrongShape/bad.json: field 'Forces' has shape (4, 2), expected (4, 3)"
    )


def test_nan_energy(bad_data):
    data_error(bad_data, "NanEnergy", "data/NanEnergy/bad.json: field 'Energy' must be a finite number, got nan")


def test_overlapping_atoms(bad_data):
    data_error(
        bad_data, "OverlappingAtoms",
        "data/OverlappingAtoms/bad.json: atoms overlap: distance 0.1 A is below descriptors.min_distance 0.5 A",
    )  # fmt: skip


def test_zero_volume_cell(bad_data):
    data_error(bad_data, "ZeroVolumeCell", "data/ZeroVolumeCell/bad.json: field 'Lattice' has zero volume")


def test_unknown_element(bad_data):
    data_error(bad_data, "UnknownElement", "data/UnknownElement/bad.json: element(s) W not in config bispectrum.type ['Ta']")


def test_stress_of_the_wrong_shape(bad_data):
    data_error(bad_data, "StressWrongShape", "data/StressWrongShape/bad.json: field 'Stress' has shape (3, 2), expected (3, 3)")


def test_nan_stress(bad_data):
    data_error(bad_data, "NanStress", "data/NanStress/bad.json: field 'Stress' contains NaN or inf")


def test_empty_group(bad_data):
    data_error(bad_data, "EmptyGroup", "data/EmptyGroup: empty group", "path.dataPath", "groups.exclude")


# ----------------------------------------------------------------------------- config


@pytest.fixture
def config_run(tmp_path, shared_data):
    """Run the whole workflow on a bad config: it stops before any job, with nothing written."""
    copy_groups(shared_data, tmp_path / "data", {"Volume_FCC": 2})

    def run(cfg):
        name = write_config(tmp_path, cfg, "bad_config.yaml")
        rc, out = snakemake(tmp_path, configfile=name)
        assert not (tmp_path / "results").exists()
        return rc, out

    return run


def test_unknown_config_key(config_run):
    cfg = config()
    cfg["pytorch"]["learnig_rate"] = 1e-3
    error_line(
        *config_run(cfg),
        "bad_config.yaml", "config field 'pytorch.learnig_rate': unknown key; did you mean 'learning_rate'?",
    )  # fmt: skip


def test_wrong_type_in_config(config_run):
    error_line(
        *config_run(config(num_epochs="ten")),
        "bad_config.yaml", "config field 'pytorch.num_epochs': 'ten' is not of type 'integer'",
    )  # fmt: skip


def test_layer_sizes_not_starting_with_num_desc(config_run):
    error_line(
        *config_run(config(layer_sizes=[30, 8, 1])),
        "bad_config.yaml", "config field 'pytorch.layer_sizes': starts with 30 but each atom has 5 descriptors",
    )  # fmt: skip


def test_negative_learning_rate(config_run):
    error_line(
        *config_run(config(learning_rate=-1e-3)),
        "bad_config.yaml", "config field 'pytorch.learning_rate': -0.001 is less than or equal to the minimum of 0",
    )  # fmt: skip


def test_activation_lammps_cannot_run_with_md_enabled(config_run):
    cfg = config(activation="silu")
    cfg["md"]["enabled"] = True
    error_line(
        *config_run(cfg),
        "bad_config.yaml", "config field 'pytorch.activation': 'silu' cannot be exported to LAMMPS", "md.enabled",
    )  # fmt: skip


def test_missing_data_directory(config_run):
    error_line(*config_run(config(data="no_such_folder")), "no_such_folder: data directory (path.dataPath) does not exist")


def test_group_listed_in_config_without_data(config_run):
    cfg = config()
    cfg["groups"] = {"Volume_BCC": {"eweight": 2.0}}
    error_line(*config_run(cfg), "data: config field 'groups' names groups with no data: Volume_BCC")


# ----------------------------------------------------------------------------- training


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, shared_data):
    """A tiny fit run uninterrupted through the workflow; its outputs are kept in reference/."""
    workdir = tmp_path_factory.mktemp("tiny")
    copy_groups(shared_data, workdir / "data", GROUPS)
    write_config(workdir, config())
    rc, out = snakemake(workdir, MODEL)
    assert rc == 0, out[-3000:]
    shutil.copytree(workdir / "results" / "fits" / "default", workdir / "reference")
    return workdir


def training_error(workdir, cfg, *fragments):
    """Run the fit with ``cfg``: the training job fails with one line and leaves no output."""
    shutil.rmtree(workdir / "results" / "fits", ignore_errors=True)
    name = write_config(workdir, cfg, "case.yaml")
    rc, out = snakemake(workdir, MODEL, configfile=name)
    line = error_line(rc, out, *fragments)
    assert line in (workdir / "results" / "logs" / "training" / "default" / "training.log").read_text()
    assert_no_fit_outputs(workdir)
    return line


def test_batch_size_larger_than_training_set(tiny):
    training_error(tiny, config(batch_size=100), "config field 'pytorch.batch_size': 100 is larger than the training set")


def test_test_fraction_leaves_nothing_to_train_on(tiny):
    cfg = config()
    cfg["groups"] = {"Volume_FCC": {"training_size": 0.0, "testing_size": 1.0}}
    training_error(tiny, cfg, "config groups.Volume_FCC: the split leaves no configurations to train on")


def test_truncated_checkpoint(tiny, tmp_path):
    blob = (tiny / "reference" / "FitTorch_Pytorch.pt").read_bytes()
    cut = tmp_path / "truncated.pt"
    cut.write_bytes(blob[: len(blob) * 2 // 3])
    training_error(
        tiny, config(save_state_input=str(cut)),
        f"config pytorch.save_state_input ({cut}): not a readable potflow checkpoint (truncated or foreign; refused",
    )  # fmt: skip


class RunsACommand:
    """Unpickling this runs a shell command (what a hostile 'checkpoint' would do)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {shlex.quote(str(self.marker))}",)


@pytest.mark.parametrize("writer", ["torch_save", "plain_pickle"])
def test_foreign_checkpoint_is_refused_never_unpickled(tiny, tmp_path, writer):
    payload = {"format": "potflow-checkpoint", "model": RunsACommand(tmp_path / "pwned")}
    path = tmp_path / "foreign.pt"
    if writer == "torch_save":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload))
    # the file is live: unpickling a twin of it does run the command
    pickle.loads(pickle.dumps(RunsACommand(tmp_path / "twin")))
    assert (tmp_path / "twin").exists()
    training_error(
        tiny, config(save_state_input=str(path)),
        f"config pytorch.save_state_input ({path}): not a readable potflow checkpoint (truncated or foreign; refused",
    )  # fmt: skip
    assert not (tmp_path / "pwned").exists()


def test_model_from_another_element_set(tiny, tmp_path):
    path = tmp_path / "TaW_model.pt"
    save_model(path, AtomicEnergyModel(5, [8], ["Ta", "W"]).double(), epoch=0)
    training_error(
        tiny, config(save_state_input=str(path)),
        f"config pytorch.save_state_input ({path}): checkpoint is for elements ['Ta', 'W'] but the config has ['Ta']",
    )  # fmt: skip


def test_descriptor_folder_from_other_settings(tiny):
    """Descriptor folders copied in from a run with other settings are refused by their hash."""
    cfg = config()
    cfg["bispectrum"]["rfac0"] = 0.98
    ours = descriptor_key(prepare_config(config()))
    theirs = descriptor_key(prepare_config(cfg))
    dest = tiny / "results" / "descriptors" / theirs
    shutil.copytree(tiny / "results" / "descriptors" / ours, dest)
    try:
        training_error(
            tiny, cfg,
            f"results/descriptors/{theirs}/Elastic_BCC: descriptor files were computed with other settings "
            f"(key {ours}, config gives {theirs})",
        )  # fmt: skip
    finally:
        shutil.rmtree(dest)


# ----------------------------------------------------------------------------- a full disk


class DiskWithRoomFor:
    """``open`` for files under ``folder``: after ``room`` bytes in all, a write stores what
    fits and fails with ENOSPC, as on a full disk."""

    def __init__(self, folder, room, real_open):
        self.folder, self.room, self.real_open = str(folder), room, real_open

    def __call__(self, file, mode="r", *args, **kwargs):
        fh = self.real_open(file, mode, *args, **kwargs)
        named = isinstance(file, (str, os.PathLike))
        ours = named and os.path.abspath(os.fspath(file)).startswith(self.folder)
        return _Filling(fh, self) if ours and any(c in mode for c in "wax+") else fh


class _Filling:
    def __init__(self, fh, disk):
        self.fh, self.disk = fh, disk

    def write(self, data):
        # numpy blocks arrive as n-d memoryviews: count and cut them in bytes
        text = isinstance(data, str)
        size = len(data.encode()) if text else memoryview(data).nbytes
        if size > self.disk.room:
            self.fh.write(data[: self.disk.room] if text else memoryview(data).cast("B")[: self.disk.room])
            self.disk.room = 0
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.disk.room -= size
        return self.fh.write(data)

    def __getattr__(self, name):
        return getattr(self.fh, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.fh.close()


def test_full_disk_while_writing_descriptors(tmp_path, shared_data, monkeypatch, capsys):
    """What the descriptor rule runs (run_rule around compute_group_descriptors) on a disk that
    fills while the ~1.4 MB gradient file is written: one line, exit status 1, no folder and
    no temporary. (In-process: under a file-size rlimit MPI itself cannot start.)"""
    import builtins

    copy_groups(shared_data, tmp_path / "data", {"Displaced_BCC": 1})
    cfg = config()
    cfg["bispectrum"]["twojmax"] = 8
    settings = descriptor_settings(prepare_config(cfg))
    npz = tmp_path / "results" / "data" / "Displaced_BCC.npz"
    import_group(tmp_path / "data" / "Displaced_BCC", "JSON", ["Ta"], npz)
    out = tmp_path / "results" / "descriptors" / descriptor_key(prepare_config(cfg)) / "Displaced_BCC"
    log = tmp_path / "results" / "logs" / "Displaced_BCC.log"
    log.parent.mkdir(parents=True)
    monkeypatch.setattr(builtins, "open", DiskWithRoomFor(out.parent, 256 * 1024, builtins.open))
    with pytest.raises(SystemExit) as exit_status:
        run_rule(lambda: compute_group_descriptors(settings, npz, out, "Displaced_BCC"), log)
    monkeypatch.undo()
    assert exit_status.value.code == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"potflow error: {out}: cannot write (No space left on device")
    assert err.rstrip().endswith("; nothing was written") and log.read_text() == err
    assert not out.exists() and not temporaries(tmp_path / "results")


def test_full_disk_during_training(tiny, tmp_path, monkeypatch):
    """The library call of the training rule: the disk fills while a checkpoint is written. The
    last good resume state stays; after freeing space, a rerun ends with the reference model."""
    import builtins

    cfg = prepare_config(config(data=str(tiny / "data")))
    key = descriptor_key(cfg)
    folders = [str(tiny / "results" / "descriptors" / key / g) for g in GROUPS]
    out = tmp_path / "fit"
    paths = TrainPaths(out / "model.pt", out / "FitTorch_Pytorch.pt", out / "loss_vs_epochs.dat",
                       out / "split.tsv", out / "resume.pt")  # fmt: skip
    one_state = (tiny / "reference" / "FitTorch_Pytorch.pt").stat().st_size
    monkeypatch.setattr(builtins, "open", DiskWithRoomFor(out, int(2.5 * one_state), builtins.open))
    with pytest.raises(PotflowWriteError) as err:
        train(cfg, folders, paths, progress=False)
    monkeypatch.undo()
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"{paths.resume}: cannot write (No space left on device")
    assert sorted(p.name for p in out.iterdir()) == ["resume.pt"], "only the last good state"
    saved = read_checkpoint(paths.resume)["epochs_done"]
    assert 0 < saved < EPOCHS
    train(cfg, folders, paths, progress=False)
    assert_same_fit(out, tiny / "reference")


# ----------------------------------------------------------------------------- killed jobs


def state_dict(path):
    rec = torch.load(path, map_location="cpu", weights_only=True)
    return rec, rec["state_dict"] if "state_dict" in rec else rec["model"]["state_dict"]


def assert_same_fit(fit, reference):
    """Identical weights, selected epoch, losses and split as the reference run."""
    for name in ("model.pt", "FitTorch_Pytorch.pt"):
        (_, wa), (_, wb) = state_dict(fit / name), state_dict(reference / name)
        assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa), name
    info, ref_info = state_dict(fit / "model.pt")[0]["info"], state_dict(reference / "model.pt")[0]["info"]
    assert {k: v for k, v in info.items() if k != "source"} == {k: v for k, v in ref_info.items() if k != "source"}
    for name in ("loss_vs_epochs.dat", "split.tsv"):
        assert (fit / name).read_text() == (reference / name).read_text(), name
    assert not (fit / "resume.pt").exists()


def wait_for(condition, proc, what, timeout=120):
    end = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, f"the run ended before {what}"
        assert time.monotonic() < end, f"no {what} in {timeout} s"
        time.sleep(0.01)


def training_job(proc):
    """The training script's process among Snakemake's descendants."""
    for child in psutil.Process(proc.pid).children(recursive=True):
        try:
            if any(arg.endswith(".training.py") for arg in child.cmdline()) and child.name().startswith("python"):
                return child
        except psutil.NoSuchProcess:
            continue
    raise AssertionError("no training job running")


@pytest.mark.slow  # end to end: runs the workflow
def test_killed_training_resumes_with_the_same_model(tiny):
    """Kill the training job (as the OOM killer would), rerun; kill Snakemake with its job (a lost
    session), unlock, rerun: the fit continues from the last saved epoch each time and ends with
    exactly the reference model (CPU, seeded)."""
    rng = random.Random(6)
    fit = tiny / "results" / "fits" / "default"
    shutil.rmtree(tiny / "results" / "fits", ignore_errors=True)
    write_config(tiny, config())
    resume = fit / "resume.pt"

    proc = start(tiny, MODEL)
    wait_for(resume.exists, proc, "first resume state")
    time.sleep(rng.uniform(0.05, 0.25))
    training_job(proc).send_signal(signal.SIGKILL)
    assert proc.wait(timeout=60) != 0
    first = read_checkpoint(resume)["epochs_done"]
    assert 0 < first < EPOCHS and not (fit / "model.pt").exists()

    stamp = resume.stat().st_mtime_ns
    proc = start(tiny, MODEL)
    wait_for(lambda: resume.stat().st_mtime_ns != stamp, proc, "resume state of the rerun")
    time.sleep(rng.uniform(0.05, 0.25))
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    second = read_checkpoint(resume)["epochs_done"]
    assert first < second < EPOCHS and not (fit / "model.pt").exists()

    rc, out = snakemake(tiny, "--unlock")
    assert rc == 0, out[-3000:]
    rc, out = snakemake(tiny, MODEL)
    assert rc == 0, out[-3000:]
    log = (tiny / "results" / "logs" / "training" / "default" / "training.log").read_text()
    assert f"start: resume state {Path('results/fits/default/resume.pt')} at epoch {second}" in log, log[:2000]
    assert_same_fit(fit, tiny / "reference")


@pytest.mark.slow  # end to end: runs the workflow
def test_killed_descriptor_job_leaves_no_folder_that_looks_complete(tmp_path, shared_data):
    """Kill Snakemake and its descriptor job while the job writes its folder: the folder is not
    there (only a hidden temporary), the rerun computes it again, identical to a clean run."""
    copy_groups(shared_data, tmp_path / "data", {"Liquid": 3})
    cfg = config()
    cfg["bispectrum"]["twojmax"] = 8  # ~8 MB of gradients: a write long enough to catch
    write_config(tmp_path, cfg)
    settings = descriptor_settings(prepare_config(cfg))
    keydir = tmp_path / "results" / "descriptors" / descriptor_key(prepare_config(cfg))
    target = keydir / "Liquid"

    def writing():
        try:
            return {n for n in os.listdir(keydir) if n.startswith(".Liquid.") and n.endswith(".tmp")}
        except FileNotFoundError:
            return set()

    for _attempt in range(5):
        before = writing()
        proc = start(tmp_path, str(target.relative_to(tmp_path)))
        caught = False
        while proc.poll() is None and not caught:
            caught = bool(writing() - before)
            if caught:
                os.killpg(proc.pid, signal.SIGKILL)
            else:
                time.sleep(0.0002)
        proc.wait(timeout=60)
        if caught and not target.exists():
            break
        # too late (the folder was complete): start again
        shutil.rmtree(target, ignore_errors=True)
        snakemake(tmp_path, "--unlock")
    else:
        pytest.fail("the descriptor job was never caught while writing its folder")
    assert writing(), "killed mid-write: the job's temporary folder is left, hidden"

    rc, out = snakemake(tmp_path, "--unlock")
    assert rc == 0, out[-3000:]
    rc, out = snakemake(tmp_path, str(target.relative_to(tmp_path)))
    assert rc == 0 and re.search(r"compute_descriptors\s+1\b", out), out[-3000:]
    assert not [p for p in keydir.iterdir() if p.name.startswith(".")], "the rerun removed the temporary"

    reference = tmp_path / "reference"
    compute_group_descriptors(settings, tmp_path / "results" / "data" / "Liquid.npz", reference, "Liquid")
    for name in ARRAYS:
        a, b = np.load(target / f"{name}.npy"), np.load(reference / f"{name}.npy")
        assert a.dtype == b.dtype and np.array_equal(a, b), name
    meta, ref_meta = read_meta(target), read_meta(reference)
    meta.pop("seconds"), ref_meta.pop("seconds")
    assert meta == ref_meta


# ----------------------------------------------------------------------------- no unpickling


# the one pickle potflow writes (extras.dump_configs); potflow itself never reads it back
PICKLE_WRITERS = {("potflow/evaluation/error_files.py", "write_configs")}


def unpickling_calls(source, filename):
    """(line, what, function) of every call that could unpickle a file: pickle loads, torch.load
    without weights_only=True, np.load with allow_pickle=True, pandas.read_pickle ..."""
    tree = ast.parse(source, filename)
    found = []

    def name(node):
        if isinstance(node, ast.Attribute):
            base = name(node.value)
            return f"{base}.{node.attr}" if base else node.attr
        return node.id if isinstance(node, ast.Name) else ""

    def keyword(call, key):
        return next((k.value for k in call.keywords if k.arg == key), None)

    def visit(node, func):
        for child in ast.iter_child_nodes(node):
            inner = child.name if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)) else func
            if isinstance(child, ast.Call):
                called = name(child.func)
                last = called.rsplit(".", 1)[-1]
                if re.match(r"(c?pickle|dill|joblib|shelve|marshal)\.", called) or last in ("Unpickler", "read_pickle"):
                    found.append((child.lineno, called, inner))
                elif last == "load" and called.split(".")[0] == "torch":
                    flag = keyword(child, "weights_only")
                    if not (isinstance(flag, ast.Constant) and flag.value is True):
                        found.append((child.lineno, f"{called} without weights_only=True", inner))
                elif last == "load" and called.split(".")[0] in ("np", "numpy"):
                    flag = keyword(child, "allow_pickle")
                    if not (flag is None or (isinstance(flag, ast.Constant) and flag.value is False)):
                        found.append((child.lineno, f"{called} with allow_pickle", inner))
            elif isinstance(child, (ast.Import, ast.ImportFrom)):
                modules = [a.name for a in child.names] + ([child.module] if isinstance(child, ast.ImportFrom) else [])
                if any(m and m.split(".")[0] in ("pickle", "cPickle", "dill", "joblib", "shelve", "marshal") for m in modules):
                    found.append((child.lineno, "import of a pickle module", inner))
            visit(child, inner)

    visit(tree, None)
    return found


def test_nothing_is_unpickled_from_user_files(repo_root):
    """potflow reads checkpoints and models with weights_only=True and arrays without pickles;
    the only pickle module use is the documented configs.pickle writer."""
    # the checker sees what it must see
    bad = "import torch, pickle\nimport numpy as np\ndef f(p):\n    torch.load(p)\n    torch.load(p, weights_only=False)\n"
    bad += "    np.load(p, allow_pickle=True)\n    pickle.load(open(p, 'rb'))\n    torch.load(p, weights_only=True)\n"
    assert [w for _, w, _ in unpickling_calls(bad, "bad.py")] == [
        "import of a pickle module", "torch.load without weights_only=True", "torch.load without weights_only=True",
        "np.load with allow_pickle", "pickle.load",
    ]  # fmt: skip

    files = [p for d in ("potflow", "workflow_scripts", "bench") for p in sorted((repo_root / d).rglob("*.py"))]
    assert len(files) > 20
    offenders, writer_lines = [], []
    for path in files:
        rel = str(path.relative_to(repo_root))
        for line, what, func in unpickling_calls(path.read_text(), rel):
            if (rel, func) in PICKLE_WRITERS and what == "pickle.dump":
                writer_lines.append(line)
            elif not (rel == "potflow/evaluation/error_files.py" and what == "import of a pickle module"):
                offenders.append(f"{rel}:{line} ({func}): {what}")
    assert not offenders, offenders
    assert writer_lines, "the configs.pickle writer moved: update PICKLE_WRITERS"
    # Snakefile and rule files hold no unpickling either (plain text search: they are not Python)
    rule_files = [repo_root / "Snakefile", *sorted((repo_root / "rules").glob("*.smk"))]
    for path in rule_files:
        assert not re.search(r"pickle\.load|torch\.load|read_pickle|allow_pickle\s*=\s*True", path.read_text()), path
