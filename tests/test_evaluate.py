"""Evaluation: FitSNAP's file formats, the metrics arithmetic, and test sets that never train."""

import os
import pickle
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from potflow.config.load import prepare_config
from potflow.data.splits import SPLIT_COLUMNS
from potflow.data.structures import import_group
from potflow.descriptors.compute import compute_group_descriptors
from potflow.descriptors.folders import open_group
from potflow.descriptors.settings import descriptor_key
from potflow.errors import PotflowInputError
from potflow.evaluation.error_files import (
    config_records,
    metrics_table,
    peratom_frame,
    perconfig_frame,
    read_metrics,
    read_table,
    write_configs,
    write_frame,
    write_metrics,
)
from potflow.evaluation.predictions import (
    evaluate_fit,
    load_evaluation,
    load_selected_model,
    predict_group,
    save_evaluation,
)
from potflow.models.files import save_model
from potflow.models.network import AtomicEnergyModel, predict

# A few small configurations of the Ta set: 2, 4 and 24 atoms per configuration.
TRAIN_GROUPS = {"Volume_BCC": 5, "Volume_FCC": 5, "GSF_110": 4}
TEST_GROUPS = {"Volume_A15": 3}
CONFIG = {
    "bispectrum": {"type": ["Ta"], "twojmax": 4},
    "scraper": {"scraper": "JSON"},
    "path": {"dataPath": "data/train"},
    "reference": {
        "pair_style": "hybrid/overlay zero 10.0 zbl 4.0 4.8",
        "pair_coeff": ["* * zero", "* * zbl 73 73"],
    },
    "outfile": {"metrics": "Ta_metrics.dat"},
    "extras": {"dump_configs": 1},
    "test_sets": {"held_out": {"dataPath": "data/held_out"}},
}
SETS = ["val", "train", "test", "train", "train"]  # per config, cycled within each group


def copy_groups(src, dst, groups):
    for group, count in groups.items():
        (dst / group).mkdir(parents=True)
        for f in sorted((src / group).glob("*.json"))[:count]:
            shutil.copy(f, dst / group / f.name)


def make_fit(fit_dir, folders, seed=0, hidden=(8, 8)):
    """A random-init model standardised on the data, a split and a loss table, as training writes them."""
    torch.manual_seed(seed)
    rows, B, T = [], [], []
    for group, folder in folders.items():
        arrays, meta = open_group(folder)
        for m in range(len(arrays["natoms"])):
            rows.append((group, m, str(arrays["files"][m]), int(arrays["natoms"][m]), SETS[m % len(SETS)]))
        B.append(np.asarray(arrays["descriptors"]))
        T.append(np.asarray(arrays["atom_types"]))
    model = AtomicEnergyModel(B[0].shape[1], list(hidden), ["Ta"], 1, "tanh")
    model.set_standardisation(np.concatenate(B), np.concatenate(T))
    fit_dir.mkdir(parents=True, exist_ok=True)
    save_model(fit_dir / "model.pt", model, epoch=7, selection="best", val_loss=0.25)
    pd.DataFrame(rows, columns=SPLIT_COLUMNS).to_csv(fit_dir / "split.tsv", sep="\t", index=False)
    (fit_dir / "loss_vs_epochs.dat").write_text("".join(f"{e} {5.0 / (e + 1)} {6.0 / (e + 1)}\n" for e in range(1, 11)))
    # the rest of what the training rule writes (so Snakemake sees a finished fit)
    (fit_dir / "FitTorch_Pytorch.pt").write_bytes((fit_dir / "model.pt").read_bytes())
    log = fit_dir.parent.parent / "logs" / "training" / fit_dir.name / "training.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("made by tests/test_evaluate.py\n")
    return model


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, shared_data):
    """A potflow working directory: data, imported groups, descriptors and a finished fit."""
    root = tmp_path_factory.mktemp("evaluate")
    copy_groups(shared_data / "Ta_JSON", root / "data" / "train", TRAIN_GROUPS)
    copy_groups(shared_data / "Ta_JSON", root / "data" / "held_out", TEST_GROUPS)
    (root / "config.yaml").write_text(yaml.safe_dump(CONFIG))
    cfg = prepare_config(CONFIG)
    key = descriptor_key(cfg)
    folders = {}
    for group in sorted(TRAIN_GROUPS):
        npz = root / "results" / "data" / f"{group}.npz"
        import_group(root / "data" / "train" / group, "JSON", ["Ta"], npz)
        folders[group] = root / "results" / "descriptors" / key / group
        compute_group_descriptors(cfg, npz, folders[group], group)
    test_folders = {}
    for group in TEST_GROUPS:
        npz = root / "results" / "test_sets" / "held_out" / "data" / f"{group}.npz"
        import_group(root / "data" / "held_out" / group, "JSON", ["Ta"], npz)
        test_folders[group] = root / "scratch" / "held_out" / group  # outside Snakemake's paths
        compute_group_descriptors(cfg, npz, test_folders[group], group)
    fit = root / "results" / "fits" / "default"
    model = make_fit(fit, folders)
    return {"root": root, "cfg": cfg, "folders": folders, "test_folders": test_folders, "fit": fit, "model": model}


@pytest.fixture(scope="module")
def written(workdir, tmp_path_factory):
    """The fit evaluated and every file written, outside the Snakemake tree."""
    out = tmp_path_factory.mktemp("written")
    ev = evaluate_fit(workdir["cfg"], workdir["fit"] / "model.pt", workdir["fit"] / "split.tsv", workdir["folders"])
    save_evaluation(out / "evaluation.npz", ev)
    ev = load_evaluation(out / "evaluation.npz")
    write_metrics(out / "Ta_metrics.dat", metrics_table(ev))
    write_frame(out / "perconfig.dat", perconfig_frame(ev))
    write_frame(out / "peratom.dat", peratom_frame(ev))
    return {"dir": out, "ev": ev}


def lines(path):
    return path.read_text().splitlines()


# ---------------------------------------------------------------- predictions


def test_batched_predictions_equal_one_config_at_a_time(workdir):
    """Renumbering gradient rows into batch atoms changes nothing (tiny batches vs one each)."""
    model = workdir["model"].double()
    arrays, _ = open_group(workdir["folders"]["GSF_110"])
    energy, forces, _ = predict_group(model, arrays, max_rows=1, max_atoms=1)  # one config per batch
    e_big, f_big, _ = predict_group(model, arrays, max_rows=10**9, max_atoms=10**9)  # one batch
    e_mid, f_mid, _ = predict_group(model, arrays, max_rows=5000, max_atoms=60)  # a few per batch
    assert np.abs(forces).max() > 1e-3  # the check below is not about zeros
    for e, f in ((e_big, f_big), (e_mid, f_mid)):
        np.testing.assert_allclose(e, energy, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(f, forces, rtol=1e-10, atol=1e-12)
    # and the per-config numbers are predict() on that configuration alone
    ptr, off = arrays["grad_ptr"], np.concatenate([[0], np.cumsum(arrays["natoms"])])
    m = 2
    B = torch.as_tensor(np.array(arrays["descriptors"][off[m] : off[m + 1]]), dtype=torch.float64)
    t = torch.as_tensor(np.array(arrays["atom_types"][off[m] : off[m + 1]], dtype=np.int64))
    gv = torch.as_tensor(np.array(arrays["grad_values"][ptr[m] : ptr[m + 1]]), dtype=torch.float64)
    gi = torch.as_tensor(np.array(arrays["grad_index"][ptr[m] : ptr[m + 1]], dtype=np.int64))
    e1, f1, _ = predict(model, B, t, torch.tensor([off[m + 1] - off[m]]), gv, gi)
    np.testing.assert_allclose(energy[m], e1.item(), rtol=1e-12)
    np.testing.assert_allclose(forces[off[m] : off[m + 1]], f1.detach().numpy(), rtol=1e-10, atol=1e-12)


def test_predictions_are_float64_with_the_stored_model(workdir, written):
    """Energy_Pred is the saved model's energy in float64, whatever dtype the file holds."""
    ev = written["ev"]
    model32 = workdir["model"].float()
    path = workdir["root"] / "scratch" / "model32.pt"
    save_model(path, model32)
    model, _ = load_selected_model(path)
    assert next(model.parameters()).dtype == torch.float64
    arrays, _ = open_group(workdir["folders"]["Volume_FCC"])
    B = torch.as_tensor(np.array(arrays["descriptors"]), dtype=torch.float64)
    per_atom = model(B, torch.as_tensor(np.array(arrays["atom_types"]))).detach().numpy()
    sums = np.add.reduceat(per_atom, np.concatenate([[0], np.cumsum(arrays["natoms"])[:-1]]))
    sel = ev["groups"][ev["group"]] == "Volume_FCC"
    np.testing.assert_allclose(ev["energy_pred"][sel], sums[ev["index"][sel]], rtol=1e-12)


# ---------------------------------------------------------------- file formats


def test_metrics_file_format(written):
    rows = lines(written["dir"] / "Ta_metrics.dat")
    assert rows[0].split() == ["Group", "Train/Test", "Property", "Count", "MAE", "RMSE"]
    body = [r.split() for r in rows[1:]]
    groups = ["*ALL", *sorted(TRAIN_GROUPS)]
    assert len(body) == 4 * len(groups)
    expected = [(g, s, p) for g in groups for s in ("Train", "Test") for p in ("Energy", "Force")]
    assert [tuple(r[:3]) for r in body] == expected
    for r in body:
        assert len(r) == 6
        int(r[3]), float(r[4]), float(r[5])


def test_perconfig_and_peratom_formats(written):
    ev = written["ev"]
    pc = lines(written["dir"] / "perconfig.dat")
    assert pc[0] == "Filename Group Natoms Energy_Truth Energy_Pred Testing_Bool"
    assert len(pc) - 1 == sum(TRAIN_GROUPS.values())
    pa = lines(written["dir"] / "peratom.dat")
    assert pa[0] == (
        "Filename Group AtomID Type Fx_Truth Fy_Truth Fz_Truth Fx_Pred Fy_Pred Fz_Pred Testing_Bool"
    )
    assert len(pa) - 1 == int(ev["natoms"].sum())
    for row in pc[1:]:
        w = row.split()
        assert len(w) == 6 and w[5] in ("True", "False") and w[0].endswith(".json")
        int(w[2]), float(w[3]), float(w[4])
    atom_ids = []
    for row in pa[1:]:
        w = row.split()
        assert len(w) == 11 and w[10] in ("True", "False") and w[3] == "1"
        atom_ids.append(int(w[2]))
        [float(x) for x in w[4:10]]
    # AtomID counts 1..N within each configuration, in perconfig order
    expected = [i for n in ev["natoms"] for i in range(1, n + 1)]
    assert atom_ids == expected


def test_metrics_equal_a_hand_computation_from_the_dat_files(written):
    """MAE/RMSE recomputed with plain Python from perconfig.dat and peratom.dat."""
    acc = {}

    def add(group, split, prop, errors, count):
        for key in ((group, split, prop), ("*ALL", split, prop)):
            a = acc.setdefault(key, [0, 0.0, 0.0])
            a[0] += count
            a[1] += sum(abs(e) for e in errors)
            a[2] += sum(e * e for e in errors)

    nerr = {}
    for row in lines(written["dir"] / "perconfig.dat")[1:]:
        f, g, n, truth, pred, test = row.split()
        split = "Test" if test == "True" else "Train"
        add(g, split, "Energy", [float(pred) - float(truth)], 1)
        nerr[(g, split, "Energy")] = nerr.get((g, split, "Energy"), 0) + 1
    for row in lines(written["dir"] / "peratom.dat")[1:]:
        w = row.split()
        split = "Test" if w[10] == "True" else "Train"
        errs = [float(w[7 + k]) - float(w[4 + k]) for k in range(3)]
        add(w[1], split, "Force", errs, 1)
    checked = 0
    for row in lines(written["dir"] / "Ta_metrics.dat")[1:]:
        g, split, prop, count, mae, rmse = row.split()
        n, s1, s2 = acc.get((g, split, prop), [0, 0.0, 0.0])
        assert int(count) == n
        if n == 0:
            assert mae == rmse == "nan"
            continue
        components = n * (3 if prop == "Force" else 1)
        assert float(mae) == pytest.approx(s1 / components, rel=2e-6)
        assert float(rmse) == pytest.approx((s2 / components) ** 0.5, rel=2e-6)
        checked += 1
    assert checked >= 12  # every group has train and test configurations in this split


def test_validation_configs_are_reported_as_train(workdir, written):
    split = pd.read_csv(workdir["fit"] / "split.tsv", sep="\t")
    assert (split["set"] == "val").sum() > 0
    table = metrics_table(written["ev"])
    row = table[(table["Group"] == "*ALL") & (table["Property"] == "Energy")].set_index("Train/Test")
    assert row.loc["Train", "Count"] == split["set"].isin(["train", "val"]).sum()
    assert row.loc["Test", "Count"] == (split["set"] == "test").sum()
    pc = read_table(written["dir"] / "perconfig.dat")
    merged = pc.merge(split, left_on=["Group", "Filename"], right_on=["group", "file"])
    assert len(merged) == len(split)
    assert (merged["Testing_Bool"] == (merged["set"] == "test")).all()


def test_truth_is_the_fitted_quantity_with_eshift(workdir, written):
    """Energy_Truth = (E_DFT + eshift - E_ref) / N; Force truth = F_DFT - F_ref (FitSNAP's convention)."""
    cfg = dict(workdir["cfg"], eshift={"Ta": -2.5})
    shifted = evaluate_fit(cfg, workdir["fit"] / "model.pt", workdir["fit"] / "split.tsv", workdir["folders"])
    ev = written["ev"]
    np.testing.assert_allclose(shifted["energy_truth"], ev["energy_truth"] - 2.5 * ev["natoms"], rtol=1e-12)
    np.testing.assert_array_equal(shifted["energy_pred"], ev["energy_pred"])
    arrays, _ = open_group(workdir["folders"]["GSF_110"])
    sel = np.flatnonzero(ev["groups"][ev["group"]] == "GSF_110")
    m = ev["index"][sel]
    np.testing.assert_allclose(
        shifted["energy_truth"][sel], arrays["energy"][m] - arrays["ref_energy"][m] - 2.5 * arrays["natoms"][m]
    )
    assert np.abs(arrays["ref_energy"][m]).max() > 1e-3  # ZBL reference is really subtracted
    atom0 = int(ev["natoms"][: sel[0]].sum())
    n0 = int(arrays["natoms"][m[0]])
    a0 = int(np.sum(arrays["natoms"][: m[0]]))
    np.testing.assert_allclose(
        ev["force_truth"][atom0 : atom0 + n0], arrays["forces"][a0 : a0 + n0] - arrays["ref_forces"][a0 : a0 + n0]
    )


def test_configs_pickle_records(workdir, written, tmp_path):
    structures = {g: workdir["root"] / "results" / "data" / f"{g}.npz" for g in TRAIN_GROUPS}
    records = config_records(written["ev"], workdir["folders"], structures)
    write_configs(tmp_path / "configs.pickle", records)
    with open(tmp_path / "configs.pickle", "rb") as fh:
        back = pickle.load(fh)
    assert len(back) == sum(TRAIN_GROUPS.values())
    pc = read_table(written["dir"] / "perconfig.dat")
    for rec, (_, row) in zip(back, pc.iterrows(), strict=True):
        n = rec["natoms"]
        assert rec["filename"] == row["Filename"] and rec["group"] == row["Group"]
        assert rec["positions"].shape == (n, 3) and rec["descriptors"].shape[0] == n
        assert rec["force_pred"].shape == (n, 3) and rec["cell"].shape == (3, 3)
        assert rec["energy_target"] == pytest.approx(rec["energy"] - rec["ref_energy"] + rec["eshift"])
        assert rec["energy_target"] / n == pytest.approx(row["Energy_Truth"], rel=1e-12)
        assert rec["energy_pred"] / n == pytest.approx(row["Energy_Pred"], rel=1e-12)
        assert rec["testing_bool"] == row["Testing_Bool"]
        assert rec["atom_energy_pred"].sum() == pytest.approx(rec["energy_pred"], rel=1e-10)


# ---------------------------------------------------------------- bad input


def test_bad_split_files_are_refused(workdir, tmp_path):
    fit = workdir["fit"]
    split = pd.read_csv(fit / "split.tsv", sep="\t")
    cases = {
        "header": (split.rename(columns={"set": "subset"}), "header must be"),
        "set": (split.assign(set=split["set"].replace("val", "validation")), "column 'set'"),
        "stale": (split.assign(file=split["file"].str.replace(".json", ".xyz")), "stale split"),
        "range": (split.assign(index=split["index"] + 100), "stale split"),
        "group": (split.assign(group=split["group"].replace("GSF_110", "Liquid")), "not in this fit"),
    }
    for name, (frame, message) in cases.items():
        path = tmp_path / f"{name}.tsv"
        frame.to_csv(path, sep="\t", index=False)
        with pytest.raises(PotflowInputError, match=message) as err:
            evaluate_fit(workdir["cfg"], fit / "model.pt", path, workdir["folders"])
        assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_model_for_other_descriptors_is_refused(workdir, tmp_path):
    path = tmp_path / "other.pt"
    save_model(path, AtomicEnergyModel(3, [4], ["Ta"]))
    with pytest.raises(PotflowInputError, match="descriptors"):
        evaluate_fit(workdir["cfg"], path, workdir["fit"] / "split.tsv", workdir["folders"])


def test_no_test_configurations_gives_nan_rows_not_a_crash(workdir, tmp_path):
    split = pd.read_csv(workdir["fit"] / "split.tsv", sep="\t").assign(set="train")
    split.to_csv(tmp_path / "split.tsv", sep="\t", index=False)
    ev = evaluate_fit(workdir["cfg"], workdir["fit"] / "model.pt", tmp_path / "split.tsv", workdir["folders"])
    write_metrics(tmp_path / "m.dat", metrics_table(ev))
    table = read_metrics(tmp_path / "m.dat")
    test = table[table["Train/Test"] == "Test"]
    assert (test["Count"] == 0).all() and test["MAE"].isna().all()
    assert (table[table["Train/Test"] == "Train"]["Count"] > 0).all()


# ---------------------------------------------------------------- test sets


def test_test_set_is_all_test_and_never_trains(workdir, tmp_path):
    """In a fresh process: no optimiser step, no backward, no training module, model file untouched."""
    model = tmp_path / "model.pt"
    shutil.copy(workdir["fit"] / "model.pt", model)
    model.chmod(0o444)
    before = model.read_bytes(), model.stat().st_mtime_ns
    script = textwrap.dedent(
        f"""
        import sys, torch
        def refuse(*a, **k):
            raise AssertionError("training code ran during test-set evaluation")
        torch.optim.Optimizer.step = refuse
        torch.Tensor.backward = refuse
        torch.autograd.backward = refuse
        from potflow.evaluation.predictions import evaluate_test_set, save_evaluation
        cfg = {workdir["cfg"]!r}
        folders = {{k: v for k, v in {dict((k, str(v)) for k, v in workdir["test_folders"].items())!r}.items()}}
        ev = evaluate_test_set(cfg, {str(model)!r}, folders)
        save_evaluation({str(tmp_path / "ev.npz")!r}, ev)
        trainers = [m for m in sys.modules if m.startswith("potflow.") and "train" in m]
        assert not trainers, trainers
        print("OK", len(ev["natoms"]))
        """
    )
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=os.environ)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["OK", str(sum(TEST_GROUPS.values()))]
    assert (model.read_bytes(), model.stat().st_mtime_ns) == before
    ev = load_evaluation(tmp_path / "ev.npz")
    assert (ev["set"] == "test").all()
    table = metrics_table(ev)
    assert (table[table["Train/Test"] == "Train"]["Count"] == 0).all()
    assert table[(table["Train/Test"] == "Test") & (table["Property"] == "Force")]["Count"].iloc[0] == 24


# ---------------------------------------------------------------- the workflow


def snakemake(root, repo_root, *args):
    cmd = [sys.executable, "-m", "snakemake", "-s", str(repo_root / "Snakefile"), "--directory", str(root)]
    return subprocess.run(cmd + list(args), capture_output=True, text=True, env=os.environ, cwd=root)


def planned_rules(output):
    """Rule names of the jobs in a dry run's job-stats table."""
    rules, in_table = set(), False
    for line in output.splitlines():
        words = line.split()
        if words[:2] == ["job", "count"]:
            in_table = True
        elif in_table and len(words) == 2 and words[1].isdigit() and words[0] != "total":
            rules.add(words[0])
        elif in_table and words and words[0] == "total":
            break
    return rules


@pytest.mark.slow  # end to end: runs the workflow
def test_workflow_evaluates_fit_and_test_set_and_reports(workdir, repo_root):
    """snakemake on a finished fit: the test-set branch plans no training, then all files and a report."""
    root = workdir["root"]
    fit = workdir["fit"]
    ts = fit / "test_sets" / "held_out"
    targets = [str((ts / name).relative_to(root)) for name in ("Ta_metrics.dat", "peratom.dat")]
    dry = snakemake(root, repo_root, "-n", "--cores", "1", *targets)
    assert dry.returncode == 0, dry.stdout + dry.stderr
    plan = planned_rules(dry.stdout)
    allowed = {"import_test_group", "test_set_descriptors", "evaluate_test_set", "evaluation_metrics", "evaluation_peratom"}
    assert plan and plan <= allowed, f"test-set targets plan {plan}: a finished fit must not be retrained"
    assert not any("train" in r for r in plan)

    run = snakemake(root, repo_root, "--cores", "2")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    for where in (fit, ts):
        for name in ("Ta_metrics.dat", "metrics.html", "perconfig.dat", "peratom.dat", "configs.pickle"):
            assert (where / name).stat().st_size > 0, where / name
        for figure in ("energy_parity", "force_parity", "group_errors", "force_error_histogram"):
            for ext in ("png", "pdf"):
                assert (where / "plots" / f"{figure}.{ext}").stat().st_size > 1000
    assert (fit / "plots" / "loss_curves.png").exists()
    assert lines(ts / "perconfig.dat")[1].split()[-1] == "True"
    table = read_metrics(ts / "Ta_metrics.dat")
    assert list(table["Group"].unique()) == ["*ALL", "Volume_A15"]

    report = snakemake(root, repo_root, "--report", str(root / "report.html"))
    assert report.returncode == 0, report.stderr[-3000:]
    html = (root / "report.html").read_text()
    assert "Predicted against true energy per atom" in html  # a caption
    assert html.count("test_sets/held_out") > 0
