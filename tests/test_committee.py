"""Committees: mean and spread by hand, the added perconfig/peratom columns, the MD check, and a
sweep with committees run end to end by Snakemake."""


import ase.io
import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from ase.build import bulk
from workflow_runs import job_counts, run_workflow

from potflow.config.load import prepare_config
from potflow.config.sweeps import member_seed
from potflow.data.splits import SPLIT_COLUMNS
from potflow.data.structures import import_group
from potflow.descriptors.compute import compute_group_descriptors
from potflow.descriptors.folders import open_group
from potflow.descriptors.settings import descriptor_key
from potflow.errors import PotflowInputError
from potflow.evaluation import committee as pc
from potflow.evaluation.error_files import (
    PERATOM_COLUMNS,
    PERCONFIG_COLUMNS,
    peratom_frame,
    perconfig_frame,
    read_table,
    write_frame,
)
from potflow.evaluation.predictions import (
    committee_statistics,
    evaluate_fit,
    evaluate_test_set,
    load_evaluation,
    save_evaluation,
)
from potflow.lammps.self_check import torch_single_point
from potflow.models.files import load_model, save_model
from potflow.models.network import AtomicEnergyModel

ZBL = {"pair_style": "hybrid/overlay zero 10.0 zbl 4.0 4.8", "pair_coeff": ["* * zero", "* * zbl 73 73"]}
GROUPS = {"Volume_BCC": 4, "Displaced_FCC": 3}  # configurations taken from the bundled example
SETS = ["train", "test", "val"]


def test_committee_statistics_by_hand():
    a, b, c = np.array([1.0, -2.0, 0.5]), np.array([3.0, -2.0, 0.0]), np.array([2.0, -2.0, 1.0])
    mean, std = committee_statistics([a, b, c])
    np.testing.assert_allclose(mean, [2.0, -2.0, 0.5])
    # (1/N) sum (x - mean)^2: [(1 + 1 + 0) / 3, 0, (0 + 0.25 + 0.25) / 3]
    np.testing.assert_allclose(std, np.sqrt([2 / 3, 0.0, 0.5 / 3]))


def test_force_deviation_by_hand():
    f1 = np.array([[[1.0, 0.0, 0.0], [0.0, 0.0, 0.0]]])
    f2 = np.array([[[0.0, 0.0, 0.0], [0.0, 3.0, 4.0]]])
    # two members: sigma_i = |F1 - F2| / 2
    np.testing.assert_allclose(pc.force_deviation(np.concatenate([f1, f2])), [0.5, 2.5])
    # one member: no spread
    np.testing.assert_allclose(pc.force_deviation(f1), [0.0, 0.0])


# ----------------------------------------------------------------------------- evaluation


@pytest.fixture(scope="module")
def fit(tmp_path_factory, repo_root):
    """Descriptor folders of a few bundled configurations and three random-init members."""
    root = tmp_path_factory.mktemp("committee")
    cfg = prepare_config({"bispectrum": {"type": ["Ta"], "twojmax": 4}, "reference": ZBL})
    folders = {}
    for group, count in GROUPS.items():
        xyz = root / f"{group}.xyz"
        ase.io.write(xyz, ase.io.read(repo_root / "data" / "Ta_example" / f"{group}.xyz", index=f":{count}"), format="extxyz")
        import_group(xyz, "XYZ", ["Ta"], root / f"{group}.npz")
        folders[group] = root / descriptor_key(cfg) / group
        compute_group_descriptors(cfg, root / f"{group}.npz", folders[group], group)
    rows, B = [], []
    for group, folder in folders.items():
        arrays, _ = open_group(folder)
        B.append(np.asarray(arrays["descriptors"]))
        rows += [(group, m, str(arrays["files"][m]), int(arrays["natoms"][m]), SETS[m % 3]) for m in range(len(arrays["natoms"]))]
    B = np.concatenate(B)
    models, splits = [], []
    for k in range(3):
        torch.manual_seed(k)
        model = AtomicEnergyModel(B.shape[1], [6], ["Ta"], 1, "tanh")
        model.set_standardisation(B, np.zeros(len(B), int))
        path = root / f"member{k}" / "model.pt"
        path.parent.mkdir()
        save_model(path, model, epoch=1, selection="best")
        pd.DataFrame(rows, columns=SPLIT_COLUMNS).to_csv(path.parent / "split.tsv", sep="\t", index=False)
        models.append(path)
        splits.append(path.parent / "split.tsv")
    return {"root": root, "cfg": cfg, "folders": folders, "models": models, "splits": splits}


def test_evaluation_committee_mean_and_std(fit):
    cfg, folders, models, splits = fit["cfg"], fit["folders"], fit["models"], fit["splits"]
    ev = evaluate_fit(cfg, models[0], splits[0], folders, members=models[1:], member_splits=splits[1:])
    alone = [evaluate_fit(cfg, m, splits[0], folders) for m in models]
    assert int(ev["committee_size"]) == 3
    np.testing.assert_array_equal(ev["energy_pred"], alone[0]["energy_pred"])  # *_Pred is member 0
    E = np.stack([a["energy_pred"] for a in alone])
    F = np.stack([a["force_pred"] for a in alone])
    assert np.abs(E[1] - E[0]).max() > 1e-3  # the members do differ
    mean_e = (E[0] + E[1] + E[2]) / 3
    std_e = np.sqrt(((E[0] - mean_e) ** 2 + (E[1] - mean_e) ** 2 + (E[2] - mean_e) ** 2) / 3)
    np.testing.assert_allclose(ev["energy_committee_mean"], mean_e, rtol=1e-12)
    np.testing.assert_allclose(ev["energy_committee_std"], std_e, rtol=1e-10)
    mean_f = F.sum(axis=0) / 3
    np.testing.assert_allclose(ev["force_committee_mean"], mean_f, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(ev["force_committee_std"], np.sqrt(((F - mean_f) ** 2).sum(axis=0) / 3), rtol=1e-9, atol=1e-14)

    # the files: FitSNAP's columns first and unchanged, then the committee's
    out = fit["root"] / "written"
    out.mkdir(exist_ok=True)
    save_evaluation(out / "evaluation.npz", ev)
    ev = load_evaluation(out / "evaluation.npz")
    write_frame(out / "perconfig.dat", perconfig_frame(ev))
    write_frame(out / "peratom.dat", peratom_frame(ev))
    perconfig, peratom = read_table(out / "perconfig.dat"), read_table(out / "peratom.dat")
    assert list(perconfig.columns) == PERCONFIG_COLUMNS + ["Energy_Committee_Mean", "Energy_Committee_Std"]
    assert list(peratom.columns) == PERATOM_COLUMNS + [
        "Fx_Committee_Mean", "Fy_Committee_Mean", "Fz_Committee_Mean",
        "Fx_Committee_Std", "Fy_Committee_Std", "Fz_Committee_Std",
    ]  # fmt: skip
    plain = perconfig_frame(alone[0])
    pd.testing.assert_frame_equal(perconfig[PERCONFIG_COLUMNS], plain, check_exact=False, rtol=1e-12)
    np.testing.assert_allclose(perconfig["Energy_Pred"], alone[0]["energy_pred"] / ev["natoms"], rtol=1e-12)
    np.testing.assert_allclose(perconfig["Energy_Committee_Mean"], mean_e / ev["natoms"], rtol=1e-12)
    np.testing.assert_allclose(perconfig["Energy_Committee_Std"], std_e / ev["natoms"], rtol=1e-10)
    np.testing.assert_allclose(peratom[["Fx_Committee_Mean", "Fy_Committee_Mean", "Fz_Committee_Mean"]], mean_f, rtol=1e-12, atol=1e-14)
    assert list(perconfig_frame(alone[0]).columns) == PERCONFIG_COLUMNS  # no committee: FitSNAP's file

    fig = pc.uncertainty_figure(ev, "test")
    assert [ax.get_xlabel() for ax in fig.axes] == ["committee deviation (eV/atom)", "committee deviation (eV/Å)"]
    with pytest.raises(PotflowInputError, match="no committee"):
        pc.uncertainty_figure(alone[0])


def test_member_with_another_split_is_refused(fit, tmp_path):
    split = pd.read_csv(fit["splits"][1], sep="\t")
    split.loc[0, "set"] = "test" if split.loc[0, "set"] != "test" else "train"
    other = tmp_path / "split.tsv"
    split.to_csv(other, sep="\t", index=False)
    with pytest.raises(PotflowInputError, match="another split"):
        evaluate_fit(fit["cfg"], fit["models"][0], fit["splits"][0], fit["folders"], fit["models"][1:2], [other])


def test_test_set_evaluation_has_the_committee(fit):
    ev = evaluate_test_set(fit["cfg"], fit["models"][0], fit["folders"], members=fit["models"][1:])
    assert int(ev["committee_size"]) == 3 and (ev["set"] == "test").all()
    assert ev["energy_committee_std"].shape == ev["energy_pred"].shape


# ----------------------------------------------------------------------------- MD


def test_md_disagreement_and_candidates(fit, tmp_path):
    cfg = fit["cfg"]
    rng = np.random.default_rng(3)
    frames = []
    for step, sigma in ((0, 0.02), (10, 0.15), (20, 0.3)):
        atoms = bulk("Ta", "bcc", a=3.316, cubic=True).repeat(2)
        atoms.positions += rng.normal(scale=sigma, size=atoms.positions.shape)
        atoms.info.update(step=step, time_ps=step * 5e-4)
        frames.append(atoms)
    table, _ = pc.md_disagreement(cfg | {"committee": {"force_std_threshold": 1e9}}, fit["models"], frames)
    assert list(table.columns) == pc.MD_COLUMNS and list(table["step"]) == [0, 10, 20]
    # by hand: each member's forces from its own single point (reference cancels in the spread)
    models = [load_model(m)[0].double() for m in fit["models"]]
    for row, atoms in zip(table.itertuples(), frames, strict=True):
        F = np.stack([torch_single_point(m, cfg, atoms.positions, atoms.cell[:], atoms.pbc, np.zeros(len(atoms), int))["forces"] for m in models])
        sigma = np.sqrt(((F - F.mean(axis=0)) ** 2).sum(axis=2).mean(axis=0))
        assert row.max_force_std == pytest.approx(sigma.max(), rel=1e-8)
        assert row.mean_force_std == pytest.approx(sigma.mean(), rel=1e-8)
    assert not table["candidate"].any()
    threshold = float(np.sort(table["max_force_std"])[0] + np.sort(table["max_force_std"])[1]) / 2
    assert table["max_force_std"].nunique() == 3

    traj = tmp_path / "trajectory.extxyz"
    ase.io.write(traj, frames, format="extxyz")
    outputs = {k: tmp_path / n for k, n in (("table", "c.tsv"), ("candidates", "cand.extxyz"), ("summary", "c.json"), ("plot", "c.png"))}
    cfg2 = cfg | {"committee": {"members": 3, "force_std_threshold": threshold}}
    summary = pc.validate_md_committee(cfg2, fit["models"], traj, outputs)
    flagged = table[table["max_force_std"] > threshold]
    assert summary["candidates"] == len(flagged) == 2 and summary["frames"] == 3
    assert summary["candidate_steps"] == list(flagged["step"])
    cands = ase.io.read(outputs["candidates"], index=":")
    assert [c.info["step"] for c in cands] == list(flagged["step"])
    assert cands[0].arrays["committee_force_std"].max() == pytest.approx(flagged["max_force_std"].iloc[0])
    assert cands[0].calc is None  # structures only: no labels from the potential
    assert pd.read_csv(outputs["table"], sep="\t")["candidate"].sum() == 2
    assert outputs["plot"].read_bytes()[:4] == b"\x89PNG"

    # nothing above the threshold: an empty, valid candidates file
    pc.validate_md_committee(cfg | {"committee": {"members": 3, "force_std_threshold": 1e9}}, fit["models"], traj, outputs)
    assert outputs["candidates"].read_text() == ""


# ----------------------------------------------------------------------------- end to end

WORKFLOW_GROUPS = ["Displaced_FCC", "Strained_BCC", "Surface_100", "Volume_BCC"]


def snakemake(workdir, *args):
    run = run_workflow(workdir, *args, timeout=400)
    return run.stdout + run.stderr


@pytest.mark.slow  # end to end: runs the workflow
def test_sweep_with_committees_end_to_end(tmp_path, repo_root):
    """Two network shapes, each a committee of two, on a tiny copy of the bundled example."""
    (tmp_path / "data").mkdir()
    for group in WORKFLOW_GROUPS:
        frames = ase.io.read(repo_root / "data" / "Ta_example" / f"{group}.xyz", index=":4")
        ase.io.write(tmp_path / "data" / f"{group}.xyz", frames, format="extxyz")
    cfg = {
        "path": {"dataPath": "data"},
        "scraper": {"scraper": "XYZ"},
        "reference": ZBL,
        "bispectrum": {"twojmax": 4},
        "pytorch": {"num_epochs": 3, "learning_rate": 1e-3},
        "sweep": {"pytorch.layer_sizes": [["num_desc", 4, 1], ["num_desc", 8, 1]]},
        "committee": {"members": 2, "force_std_threshold": 1e-4},
        "leaderboard": {"sort_by": "parameters"},
        "md": {"steps": 40, "dump_every": 10, "thermo_every": 10, "min_atoms": 16, "check_snapshots": 0, "drift_bound": 10.0, "npt_steps": 40},
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    plan = snakemake(tmp_path, "--dry-run", "--quiet", "rules")
    jobs = job_counts(plan)
    assert jobs["compute_descriptors"] == 4 and jobs["train"] == 2 and jobs["train_member"] == 2
    snakemake(tmp_path, "--cores", "2", "--quiet", "rules")

    results = tmp_path / "results"
    board = pd.read_csv(results / "leaderboard" / "leaderboard.tsv", sep="\t")
    assert list(board["fit"]) == ["layer_sizes-4", "layer_sizes-8"]  # sort_by: parameters
    K = 14  # twojmax 4
    assert list(board["parameters"]) == [K * 4 + 4 + 4 + 1, K * 8 + 8 + 8 + 1]
    assert (board["epochs"] == 3).all() and (board["committee"] == 2).all()
    assert np.isfinite(board[["test_force_mae", "train_wall_s", "committee_wall_s", "md_drift", "md_max_force_std"]].to_numpy()).all()
    assert (board["committee_wall_s"] > board["train_wall_s"]).all()
    assert "Volume_BCC:test_energy_mae" in board
    fits = pd.read_csv(results / "fits.tsv", sep="\t")
    assert list(fits["fit"]) == ["layer_sizes-4", "layer_sizes-8"] and fits["descriptor_key"].nunique() == 1
    assert (results / "leaderboard" / "leaderboard.png").read_bytes()[:4] == b"\x89PNG"
    assert "| layer_sizes-8" in (results / "leaderboard" / "leaderboard.md").read_text()

    fit = results / "fits" / "layer_sizes-8"
    member = fit / "committee" / "member1"
    member_logs = results / "logs" / "committee" / "layer_sizes-8" / "member1"
    assert (member_logs / "training.log").exists()
    assert (member_logs / "benchmark.tsv").exists()
    ck = torch.load(member / "FitTorch_Pytorch.pt", weights_only=True)
    assert ck["seed"] == member_seed(0, 1)
    m0, m1 = load_model(fit / "model.pt")[0], load_model(member / "model.pt")[0]
    s0, s1 = m0.state_dict(), m1.state_dict()
    assert any(not torch.equal(s0[k], s1[k]) for k in s0 if k not in ("shift", "scale"))
    # the added columns are the mean and spread of the two members' own predictions
    key = fits["descriptor_key"].iloc[0]
    folders = {g: results / "descriptors" / key / g for g in WORKFLOW_GROUPS}
    f_cfg = yaml.safe_load((results / "fits.yaml").read_text())["layer_sizes-8"]
    E = np.stack([evaluate_fit(f_cfg, m, fit / "split.tsv", folders)["energy_pred"] for m in (fit / "model.pt", member / "model.pt")])
    perconfig = read_table(fit / "perconfig.dat")
    natoms = perconfig["Natoms"].to_numpy()
    assert np.abs(E[0] - E[1]).max() > 0  # separate trainings gave different models
    np.testing.assert_allclose(perconfig["Energy_Committee_Mean"], E.mean(axis=0) / natoms, rtol=1e-9)
    np.testing.assert_allclose(perconfig["Energy_Committee_Std"], np.abs(E[0] - E[1]) / 2 / natoms, rtol=1e-6, atol=1e-12)
    assert (fit / "plots" / "committee_uncertainty.png").exists()

    # MD: frames every 10 steps, each checked by the committee; all above the tiny threshold
    traj = ase.io.read(fit / "md" / "trajectory.extxyz", index=":")
    assert [a.info["step"] for a in traj] == [0, 10, 20, 30, 40]
    md = pd.read_csv(fit / "md" / "committee.tsv", sep="\t")
    assert list(md["step"]) == [0, 10, 20, 30, 40] and md["candidate"].all()
    assert len(ase.io.read(fit / "md" / "candidates.extxyz", index=":")) == 5
    assert board.set_index("fit").loc["layer_sizes-8", "md_candidates"] == 5

    # nothing left to do
    again = snakemake(tmp_path, "--dry-run", "--quiet", "rules")
    assert "Job stats:" not in again
