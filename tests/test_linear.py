"""Linear SNAP (potflow/linear): exact recovery on synthetic data and on the bundled example."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from potflow.config.load import load_config, prepare_config
from potflow.data.structures import import_group
from potflow.descriptors.compute import compute_group_descriptors, model_stress
from potflow.descriptors.folders import ARRAYS, META, STRESS_ARRAYS
from potflow.descriptors.snap_index import bispectrum_triples
from potflow.errors import PotflowInputError
from potflow.lammps.session import potentials_dir
from potflow.linear.solve import fit_linear, predict

K = 5
ELEMENTS = ["W", "Be"]


def synthetic_folder(path, beta, beta0, seed, n_configs=12):
    """A descriptor folder of random B, gradient rows and strain derivatives whose targets
    (energies, forces, stresses as the network computes them: ``model_stress``) are exactly linear."""
    rng = np.random.default_rng(seed)
    natoms = rng.integers(1, 6, n_configs)
    types = np.concatenate([rng.integers(0, 2, n) for n in natoms]).astype(np.int32)
    types[0], types[1 if natoms[0] > 1 else natoms[0]] = 0, 1  # both elements present
    b = rng.normal(size=(natoms.sum(), K))
    energy, forces, gv, gi, ptr, a0 = [], [], [], [], [0], 0
    virial = rng.normal(size=(natoms.sum(), 6, K))
    volume = rng.uniform(20.0, 200.0, n_configs)
    stress = []
    for n in natoms:
        t = types[a0 : a0 + n]
        energy.append(np.sum(np.einsum("ik,ik->i", b[a0 : a0 + n], beta[t]) + beta0[t]))
        rows = rng.integers(1, 3 * n * n + 1)
        idx = np.stack([rng.integers(0, n, rows), rng.integers(0, n, rows), rng.integers(0, 3, rows)], 1)
        vals = rng.normal(size=(rows, K))
        f = np.zeros((n, 3))
        np.add.at(f, (idx[:, 1], idx[:, 2]), -np.einsum("rk,rk->r", vals, beta[t[idx[:, 0]]]))
        forces.append(f)
        stress.append(model_stress(beta[t], virial[a0 : a0 + n], volume[len(stress)]))
        gv.append(vals)
        gi.append(idx)
        ptr.append(ptr[-1] + rows)
        a0 += n
    arrays = {
        "descriptors": b, "atom_types": types, "natoms": natoms.astype(np.int64),
        "energy": np.array(energy), "ref_energy": np.zeros(n_configs), "energy_target": np.array(energy),
        "forces": np.concatenate(forces), "ref_forces": np.zeros((a0, 3)), "force_target": np.concatenate(forces),
        "grad_values": np.concatenate(gv), "grad_index": np.concatenate(gi).astype(np.int32),
        "grad_ptr": np.array(ptr, np.int64), "files": np.array([f"c{m}" for m in range(n_configs)]),
        "virial_values": virial.reshape(-1, K), "volume": volume, "stress": np.array(stress),
        "ref_stress": np.zeros((n_configs, 6)), "stress_target": np.array(stress),
    }  # fmt: skip
    path.mkdir()
    for name in ARRAYS + STRESS_ARRAYS:
        np.save(path / f"{name}.npy", arrays[name], allow_pickle=False)
    meta = {"elements": ELEMENTS, "num_descriptors": K, "num_configs": n_configs, "settings": {"forces": True, "stress": True}}
    (path / META).write_text(json.dumps(meta))
    return path


@pytest.fixture
def truth():
    rng = np.random.default_rng(7)
    return rng.normal(size=(2, K)), np.array([-3.1, 0.7])


@pytest.fixture
def folders(tmp_path, truth):
    return [synthetic_folder(tmp_path / f"g{s}", *truth, seed=s) for s in (1, 2)]


def rel(a, b):
    return np.abs(a - b).max() / np.abs(b).max()


@pytest.mark.parametrize("which", ["energy", "forces", "stress", "all"])
def test_recovers_known_coefficients(folders, truth, which):
    """Stress rows: a sign or a 1/V wrong in ``stress_rows`` fails ``stress`` (checked)."""
    beta, beta0 = truth
    rng = np.random.default_rng(3)
    we = [rng.uniform(0.5, 20, 12) * (which in ("energy", "all")) for _ in folders]
    wf = [rng.uniform(0.5, 20, 12) * (which in ("forces", "all")) for _ in folders]
    wv = [rng.uniform(1e-8, 1e-6, 12) * (which in ("stress", "all")) for _ in folders]
    fit = fit_linear(folders, energy_weights=we, force_weights=wf, virial_weights=wv)
    assert rel(fit.beta, beta) < 1e-10
    assert fit.residual_norm < 1e-9
    assert fit.stress_rows == (2 * 12 * 6 if which in ("stress", "all") else 0)
    if which in ("forces", "stress"):  # neither sees the constants: minimum norm leaves them 0
        assert fit.rank == 2 * K and np.abs(fit.beta0).max() < 1e-12
    else:
        assert fit.rank == 2 * (K + 1) and rel(fit.beta0, beta0) < 1e-10
    e, f = predict(fit, folders[0])
    e_ref = np.load(folders[0] / "energy_target.npy")
    f_ref = np.load(folders[0] / "force_target.npy")
    assert np.abs(f - f_ref).max() < 1e-10 * np.abs(f_ref).max()
    if which not in ("forces", "stress"):
        assert np.abs(e - e_ref).max() < 1e-10 * np.abs(e_ref).max()


def test_noisy_targets_give_the_same_solution_in_any_block_size(folders, truth):
    """With inconsistent targets the solution is the weighted least-squares one, whatever the blocks."""
    for g in folders:  # add noise so the residual is not zero
        e = np.load(g / "energy_target.npy")
        np.save(g / "energy_target.npy", e + np.random.default_rng(5).normal(size=e.shape))
    rng = np.random.default_rng(4)
    we, wf = [rng.uniform(0.1, 5, 12) for _ in folders], [rng.uniform(0.1, 5, 12) for _ in folders]
    sel = [np.arange(12) % 3 != 0, [0, 2, 5, 7, 11]]
    one = fit_linear(folders, sel, we, wf, configs_per_block=1)
    all_ = fit_linear(folders, sel, we, wf, configs_per_block=10_000)
    assert rel(one.beta, all_.beta) < 1e-12 and rel(one.beta0, all_.beta0) < 1e-12
    assert abs(one.residual_norm - all_.residual_norm) < 1e-12 * all_.residual_norm
    assert one.residual_norm > 0.1


def test_ridge_tends_to_svd_and_shrinks(folders):
    svd = fit_linear(folders)
    tiny = fit_linear(folders, solver="RIDGE", alpha=1e-12)
    assert rel(tiny.beta, svd.beta) < 1e-9 and rel(tiny.beta0, svd.beta0) < 1e-9
    big = fit_linear(folders, solver="RIDGE", alpha=1e6)
    mid = fit_linear(folders, solver="RIDGE", alpha=1.0)
    assert np.linalg.norm(big.beta) < 1e-3 * np.linalg.norm(svd.beta)
    assert np.linalg.norm(big.beta) < np.linalg.norm(mid.beta) < np.linalg.norm(svd.beta)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"solver": "ANN"}, "solver"),
        ({"solver": "RIDGE", "alpha": -1.0}, "alpha"),
        ({"select": [[], np.zeros(12, bool)]}, "select"),
    ],
)
def test_bad_input_is_one_line_naming_the_field(folders, kwargs, field):
    with pytest.raises(PotflowInputError) as err:
        fit_linear(folders, **kwargs)
    assert str(err.value).startswith(field + ":") and "\n" not in str(err.value)


# ----------------------------------------------------------------------------- the bundled example

GROUPS = ("Displaced_BCC", "Volume_FCC", "Strained_BCC", "Displaced_A15")


@pytest.fixture(scope="module")
def ta_folders(tmp_path_factory, repo_root):
    tmp = tmp_path_factory.mktemp("ta")
    cfg = load_config(repo_root / "config.yaml")
    out = []
    for group in GROUPS:
        npz = tmp / f"{group}.npz"
        import_group(repo_root / "data" / "Ta_example" / f"{group}.xyz", "XYZ", ["Ta"], npz)
        compute_group_descriptors(cfg, npz, tmp / "desc" / group, group)
        out.append(tmp / "desc" / group)
    return out


def errors(fit, folders):
    de, df = [], []
    for g in folders:
        e, f = predict(fit, g)
        de.append((e - np.load(g / "energy_target.npy")) / np.load(g / "natoms.npy"))
        df.append(f - np.load(g / "force_target.npy"))
    return np.abs(np.concatenate(de)).max(), np.abs(np.concatenate(df)).max()


def test_bundled_example_is_reproduced_and_matches_ta06a(ta_folders):
    """Ta06A labelled the example: the linear fit reproduces it and finds its coefficients.

    With ``bzeroflag 1`` (config.yaml) LAMMPS's descriptors are B - bzero, bzero_k = j_k + 1
    (wself = 1, bnormflag 0); Ta06A.snapcoeff is for bzeroflag 0, so beta equals its
    coefficients 1..K and beta0 = c_0 + beta . bzero.
    """
    fit = fit_linear(ta_folders)
    e_err, f_err = errors(fit, ta_folders)
    assert e_err < 1e-8 and f_err < 1e-6, (e_err, f_err)  # measured 6.5e-9, 2.4e-7 (max)
    lines = (potentials_dir() / "Ta06A.snapcoeff").read_text().splitlines()
    body = [ln.split() for ln in lines if ln.strip() and not ln.startswith("#")]
    coeff = np.array([float(v[0]) for v in body[2:]])
    assert len(coeff) == fit.beta.shape[1] + 1
    bzero = np.array([j + 1.0 for _, _, j in bispectrum_triples(6)])
    assert np.abs(fit.beta[0] - coeff[1:]).max() < 1e-6, fit.beta[0] - coeff[1:]  # measured 1.5e-8
    assert abs(fit.beta0[0] - (coeff[0] + coeff[1:] @ bzero)) < 1e-6  # measured 1.2e-7


def test_energy_rows_alone_miss_the_forces(ta_folders):
    """The check bites: a fit on the energies of a few configurations only (forces weighted 0)
    still matches those energies, but its forces fail the 1e-6 eV/A check."""
    sel = [np.arange(4), [], [], []]
    fit = fit_linear(ta_folders, sel, force_weights=[0.0] * 4)
    assert fit.force_rows == 0
    e, _ = predict(fit, ta_folders[0], np.arange(4))
    n = np.load(ta_folders[0] / "natoms.npy")[:4]
    assert np.abs((e - np.load(ta_folders[0] / "energy_target.npy")[:4]) / n).max() < 1e-8
    e_err, f_err = errors(fit, ta_folders)
    assert f_err > 1e-3, f_err


def test_eshift_moves_only_the_constants_and_blocks_follow_the_memory_budget(folders, truth):
    """eshift adds sum_i eshift[element_i] to each energy target: exactly a shift of beta0.
    Blocks sized by a tiny memory budget (256 rows) give the same solution as one block.
    Catches: eshift added per configuration instead of per atom; a block left unsolved."""
    beta, beta0 = truth
    shift = np.array([0.25, -1.5])
    fit = fit_linear(folders, eshift=shift, memory_mb=1e-6)
    assert rel(fit.beta, beta) < 1e-10 and rel(fit.beta0, beta0 + shift) < 1e-10
    assert fit.configs == 24 and fit.loss < 1e-18


# ----------------------------------------------------------------------------- the workflow's fit


def test_linear_fit_writes_the_training_files_as_an_exact_model(ta, tmp_path):
    """train_linear writes model.pt, checkpoint, loss and split; model.pt's network gives the
    solve's predictions to round-off, fitted on train (no val) with the groups' weights and eshift.
    Catches: the model's weights out of step with beta (wrong layout, shift/scale, dtype)."""
    from synthetic import paths as train_paths
    from synthetic import with_pytorch

    from potflow.data.splits import read_split
    from potflow.descriptors.folders import open_group
    from potflow.evaluation.predictions import predict_group
    from potflow.linear.fit import train_linear
    from potflow.models.files import load_model
    from potflow.training.loop import train

    cfg, folders = ta
    cfg = dict(cfg, solver={"solver": "RIDGE"}, ridge={"alpha": 1e-6}, eshift={"Ta": 0.3})
    out = train_linear(cfg, folders, train_paths(tmp_path))
    coefficients = out["coefficients"]
    split = read_split(tmp_path / "split.tsv")
    assert set(split["set"]) == {"train", "test"}
    assert coefficients.configs == (split["set"] == "train").sum()
    model, info = load_model(tmp_path / "model.pt")
    assert model.shift.dtype == torch.float64 and info["solver"] == "RIDGE" and info["alpha"] == 1e-6
    loss = np.loadtxt(tmp_path / "loss_vs_epochs.dat")
    assert loss[0] == 0 and loss[1] == pytest.approx(coefficients.loss) and np.isnan(loss[2])
    for folder in folders:
        e, f = predict(coefficients, folder)
        energy, forces, _ = predict_group(model, open_group(folder)[0], with_forces=True)
        np.testing.assert_allclose(energy, e, rtol=0, atol=1e-12 * np.abs(e).max())
        np.testing.assert_allclose(forces, f, rtol=0, atol=1e-12 * np.abs(f).max())
    # a network of the same shape starts from the checkpoint (here: evaluated, not trained)
    start = with_pytorch(
        dict(cfg, solver={"solver": "PYTORCH"}), layer_sizes=["num_desc", 1], activation="linear", multi_element_option=2, num_epochs=1,
        save_state_input=str(tmp_path / "ckpt.pt"),
    )  # fmt: skip
    train(start, folders, train_paths(tmp_path / "net"), progress=False)
    net = load_model(tmp_path / "net" / "model.pt")[0]
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in net.state_dict().items())


# ----------------------------------------------------------------------------- pair_style snap


@pytest.mark.parametrize(
    ("system", "flags"),
    [
        ("Ta", {"bzeroflag": 1}),
        ("Ta", {"bzeroflag": 0}),
        ("WBe", {"bzeroflag": 1}),
        ("WBe", {"bzeroflag": 1, "chemflag": 1}),
    ],
    ids=["Ta-bzero1", "Ta-bzero0", "WBe", "WBe-chemflag1"],
)
def test_pair_style_snap_export_reproduces_the_fit_in_lammps(system, flags, shared_data, tmp_path):
    """Fit linear SNAP on two configurations, export .snapcoeff/.snapparam/.snap.mod, and run
    held-out configurations (one in a sheared cell) through LAMMPS's pair_style snap over ZBL:
    energies, per-atom energies and forces equal the fit's to 1e-8.
    Catches: a wrong constant (bzero), a flag not mirrored, a column order or element mix-up."""
    from test_export import SYSTEMS, assert_lammps_matches_torch, make_config, read_configs, sheared

    from potflow.lammps.inputs import SNAP_SUFFIXES, export_paths
    from potflow.lammps.snap import export_snap
    from potflow.linear.fit import linear_model

    cfg = make_config(system, True, **flags)
    elements = cfg["bispectrum"]["type"]
    data = tmp_path / "fit"
    data.mkdir()
    for f in SYSTEMS[system]["fit"]:
        (data / Path(f).name).symlink_to(shared_data / f)
    import_group(data, "JSON", elements, tmp_path / "fit.npz")
    compute_group_descriptors(cfg, tmp_path / "fit.npz", tmp_path / "desc", "fit")
    coefficients = fit_linear([tmp_path / "desc"], force_weights=[100.0])
    model = linear_model(coefficients)
    record = export_snap(model, cfg, tmp_path / "out", "pot")
    assert record["self_check"]["force"] < 1e-8
    snap = export_paths(tmp_path / "out", "pot", SNAP_SUFFIXES)
    assert "pair_style hybrid/overlay zbl 4.0 4.8 snap" in snap["include"].read_text()
    assert f"bzeroflag {flags['bzeroflag']}" in snap["param"].read_text()
    configs = read_configs(shared_data, SYSTEMS[system]["held_out"], elements)
    configs.append(sheared(configs[0], np.random.default_rng(1)))
    assert_lammps_matches_torch(model, cfg, snap, configs)


def test_pair_style_snap_export_refuses_a_network(tmp_path):
    """Only a model without hidden layers is linear SNAP."""
    from potflow.lammps.snap import export_snap
    from potflow.models.network import AtomicEnergyModel

    cfg = prepare_config({"bispectrum": {"twojmax": 2}})
    with pytest.raises(PotflowInputError, match="pair_style snap needs a linear model"):
        export_snap(AtomicEnergyModel(5, [3], ["Ta"], 2, "linear"), cfg, tmp_path, "pot")


# ----------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"solver": {"solver": "QR"}}, "config field 'solver.solver': unknown solver 'QR'; use PYTORCH, SVD, RIDGE"),
        ({"solver": {"solver": "lasso"}}, "config field 'solver.solver': FitSNAP's solver lasso is not implemented"),
        ({"solver": {"solver": "RIDGE"}, "ridge": {"alpha": -1.0}}, "config field 'ridge.alpha': -1.0 is less than the minimum of 0"),
        ({"solver": {"solver": "SVD"}, "pytorch": {"layer_sizes": ["num_desc", 8, 1]}}, "config field 'pytorch.layer_sizes': a network setting, but the fit is linear"),
        ({"solver": {"solver": "SVD"}, "committee": {"members": 2}}, "config field 'committee.members': a linear fit"),
        (
            {"pytorch": {"learning_rate": 0.1}, "fits": {"net": {}, "lin": {"solver": {"solver": "SVD"}, "pytorch": {"num_epochs": 3}}}},
            "(fit 'lin'): config field 'fits.lin.pytorch.num_epochs': a network setting, but the fit is linear",
        ),
        (
            {"fits": {"lin": {"solver": {"solver": "SVD"}}}, "sweep": {"pytorch.seed": [0, 1]}},
            "(fit 'lin_seed-0'): config field 'sweep.pytorch.seed': a network setting",
        ),
    ],
    ids=["unknown", "lasso", "negative-alpha", "network-key", "committee", "fits-entry", "sweep"],
)  # fmt: skip
def test_bad_linear_config_is_one_line_naming_the_field(raw, message):
    from potflow.config.sweeps import expand_fits

    raw = {"md": {"enabled": False}, **raw}
    with pytest.raises(PotflowInputError) as err:
        expand_fits(prepare_config(raw), "config x.yaml")
    assert message in str(err.value) and "\n" not in str(err.value)


def test_linear_fits_beside_networks_keep_the_networks_settings():
    """In fits:, a linear entry inherits the base's network keys without complaint (its own
    overrides are what it asks for); the weights and memory budget are shared keys."""
    from potflow.config.load import is_linear
    from potflow.config.sweeps import expand_fits

    raw = {
        "pytorch": {"layer_sizes": ["num_desc", 8, 1], "num_epochs": 3},
        "fits": {"net": {}, "ridge": {"solver": {"solver": "ridge"}, "ridge": {"alpha": 1e-3}, "pytorch": {"force_weight": 2.0}}},
    }  # fmt: skip
    fits = expand_fits(prepare_config(raw))
    assert not is_linear(fits["net"]) and is_linear(fits["ridge"])
    assert fits["ridge"]["solver"]["solver"] == "RIDGE" and fits["ridge"]["ridge"]["alpha"] == 1e-3


# ----------------------------------------------------------------------------- end to end

E2E_GROUPS = {"Displaced_BCC": 8, "Volume_BCC": 8}


@pytest.mark.slow  # end to end: runs the workflow
def test_linear_fit_end_to_end(tmp_path, repo_root):
    """A linear (SVD) fit of part of the bundled example through the workflow: every output of a
    fit, the Ta06A labels reproduced (metrics ~1e-9 eV/atom), pair_style snap files that LAMMPS
    checked, and a leaderboard row. (The dry run of tests/test_layout.py plans a linear fit
    beside networks, a sweep and committees; one fit here keeps the run short.)"""
    import ase.io
    import yaml
    from workflow_runs import run_workflow

    from potflow.evaluation.error_files import read_metrics
    from potflow.evaluation.leaderboard import fit_row
    from potflow.workflow import layout

    (tmp_path / "data").mkdir()
    for group, count in E2E_GROUPS.items():
        frames = ase.io.read(repo_root / "data" / "Ta_example" / f"{group}.xyz", index=f":{count}")
        ase.io.write(tmp_path / "data" / f"{group}.xyz", frames, format="extxyz")
    cfg = yaml.safe_load((repo_root / "config.yaml").read_text())
    cfg["path"]["dataPath"] = "data"
    cfg["groups"] = {"random_sampling": 1, "defaults": {"training_size": 0.75, "testing_size": 0.25}}
    cfg["pytorch"] = {"energy_weight": 0.01}  # a linear fit reads only the weights
    cfg["solver"] = {"solver": "SVD"}
    cfg["md"]["enabled"] = False  # MD runs the ML-IAP export, as for a network (tests/test_md.py)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    run_workflow(tmp_path, "--cores", "2", "--quiet", "rules", timeout=600)

    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp_path)
        fit, metrics_file = "default", cfg["outfile"]["metrics"]
        metrics = read_metrics(layout.metrics(fit, metrics_file))
        every = metrics[metrics["Group"] == "*ALL"].set_index(["Train/Test", "Property"])
        assert every.loc[("Test", "Energy"), "MAE"] < 1e-7, every  # eV/atom (measured ~2e-9)
        assert every.loc[("Test", "Force"), "MAE"] < 1e-6, every  # eV/A
        for name in ("peratom", "perconfig"):
            assert Path(layout.error_file(fit, f"dump_{name}")).exists()
        for figure in layout.EVALUATION_FIGURES:
            assert Path(layout.plot(fit, figure, "png")).exists()
        assert Path(layout.plot(fit, layout.LOSS_FIGURE, "png")).exists()
        potential = cfg["outfile"]["potential"]
        record = json.loads(Path(layout.exported_snap(fit, potential, "record")).read_text())
        assert record["self_check"]["force"] < 1e-8 and record["self_check"]["energy_per_atom"] < 1e-8
        for kind in ("coeff", "param", "include"):
            assert Path(layout.exported_snap(fit, potential, kind)).exists()
        assert Path(layout.exported(fit, potential, "record")).exists()  # ML-IAP too
        row = fit_row(fit, layout.metrics(fit, metrics_file), layout.model(fit), [layout.training_benchmark(fit)])
        assert row["parameters"] == 31 and row["epochs"] == 0 and row["test_energy_mae"] < 1e-7
        assert row["train_wall_s"] > 0


def test_snakemake_stops_on_a_linear_fits_network_key_with_one_line(tmp_path, repo_root):
    """The workflow's own check (before any job): exit status 1, one line naming the field.
    Catches: the check left to the rule files' parse, which ends in a traceback."""
    import subprocess
    import sys

    (tmp_path / "bad.yaml").write_text(
        f"path: {{dataPath: {repo_root / 'data' / 'Ta_example'}}}\nsolver: {{solver: SVD}}\npytorch: {{num_epochs: 5}}\n"
    )
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(repo_root / "Snakefile"), "-n",
           "--directory", str(tmp_path), "--configfile", str(tmp_path / "bad.yaml")]  # fmt: skip
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    lines = [ln for ln in (run.stdout + run.stderr).splitlines() if "potflow error" in ln or "Traceback" in ln]
    assert run.returncode == 1 and len(lines) == 1, run.stderr[-2000:]
    assert "config field 'pytorch.num_epochs': a network setting, but the fit is linear" in lines[0]
