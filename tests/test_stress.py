"""Stresses: the model's exact strain derivative, its loss term, LAMMPS's pressure, bad input."""

import copy

import numpy as np
import pytest
import torch
from synthetic import base_config, make_groups
from test_export import SYSTEMS, make_config, random_model, read_configs, sheared

from potflow.data.structures import EV_PER_A3_IN_BAR
from potflow.descriptors.compute import VOIGT, SnapCalculator, model_stress, supercell_repeats
from potflow.errors import PotflowInputError
from potflow.lammps.export import export_model
from potflow.lammps.inputs import export_paths, include_commands
from potflow.lammps.self_check import lammps_single_point, torch_single_point


def stress_settings(cfg):
    from potflow.descriptors.settings import descriptor_settings

    return {**descriptor_settings(cfg), "stress": True}


def narrow_cells(rng):
    """A 2-atom triclinic cell (each atom sees its own images) and a 16-atom sheared one."""
    tri2 = np.array([[3.2, 0, 0], [0.9, 3.0, 0], [0.4, 0.7, 3.4]])
    tri16 = np.array([[6.4, 0, 0], [1.1, 6.1, 0], [0.5, 0.9, 6.6]])
    bcc = np.array([[0, 0, 0], [0.5, 0.5, 0.5]])
    grid = np.array([[i, j, k] for i in range(2) for j in range(2) for k in range(2)])
    out = []
    for cell, frac in ((tri2, bcc), (tri16, ((grid[:, None] + bcc[None]) / 2).reshape(-1, 3))):
        frac = frac + rng.normal(scale=0.03, size=frac.shape)
        out.append((frac @ cell, cell, [True] * 3, np.arange(len(frac)) % 2))
    return out


def model_energy(model, calc, positions, cell, pbc, types):
    B = calc.compute(positions, cell, pbc, types)[0]
    with torch.no_grad():
        return float(model(torch.as_tensor(B), torch.as_tensor(types, dtype=torch.long)).sum())


def central_difference(model, calc, positions, cell, pbc, types, unit, h):
    """dE/dh of the model energy under the strain h * unit, by central differences."""
    e = [
        model_energy(model, calc, positions @ (np.eye(3) + s * h * unit).T, cell @ (np.eye(3) + s * h * unit).T, pbc, types)
        for s in (1, -1)
    ]
    return (e[0] - e[1]) / (2 * h)


@pytest.mark.parametrize("option", [1, 2])
def test_stress_is_the_strain_derivative_of_the_model_energy(option):
    """P = -(1/V) dE/d(strain) to 1e-7 relative, by central differences of the model energy, in
    triclinic cells narrower than twice the cutoff (atoms see their own images). Catches a wrong
    sign or frame, a missing supercell (folded rows lose the images) and a wrong Voigt order."""
    cfg = base_config(("Ta", "W"))
    settings = stress_settings(cfg)
    torch.manual_seed(option)
    from potflow.models.network import AtomicEnergyModel

    with_stress = SnapCalculator(settings, with_stress=True)
    plain = SnapCalculator(settings, with_gradients=False)
    try:
        for positions, cell, pbc, types in narrow_cells(np.random.default_rng(option)):
            assert supercell_repeats(cell, pbc, with_stress.cutoff).prod() > 1
            r = with_stress.compute_config(positions, cell, pbc, types)
            model = AtomicEnergyModel(r.descriptors.shape[1], [6], ["Ta", "W"], option).double()
            model.set_standardisation(r.descriptors, types)
            with torch.no_grad():
                dedb = model.energy_and_gradient(torch.as_tensor(r.descriptors), torch.as_tensor(types))[1]
            stress = model_stress(dedb.numpy(), r.virial, r.volume)
            fd = np.zeros(6)
            for v, (a, b) in enumerate(VOIGT):
                unit = np.zeros((3, 3))
                unit[a, b] = unit[b, a] = 0.5 if a != b else 1.0
                # Richardson: the h^2 error of the central differences cancels
                de = (4 * central_difference(model, plain, positions, cell, pbc, types, unit, 1e-4)
                      - central_difference(model, plain, positions, cell, pbc, types, unit, 2e-4)) / 3  # fmt: skip
                fd[v] = -de / r.volume * EV_PER_A3_IN_BAR
            assert np.abs(fd).max() > 1.0  # bar: not a trivially zero stress
            np.testing.assert_allclose(stress, fd, rtol=0, atol=1e-7 * np.abs(fd).max())
    finally:
        with_stress.close()
        plain.close()


CASES = [("Ta", 1, 0), ("WBe", 1, 0), ("WBe", 2, 0), ("WBe", 3, 0), ("WBe", 1, 1), ("WBe", 2, 1)]


@pytest.mark.parametrize("system,option,chemflag", CASES)
def test_lammps_pressure_equals_prediction_plus_reference(system, option, chemflag, shared_data, tmp_path):
    """The exported potential's pressure tensor in LAMMPS (ZBL reference overlaid) equals the
    model's stress plus the reference's to 1e-7 relative, on held-out configurations, a sheared
    copy and a narrow cell. Catches a sign or unit slip, the reference's pressure left out or
    left in LAMMPS's rotated frame."""
    cfg = make_config(system, True, chemflag=chemflag, twojmax=2)
    model = random_model(cfg, option, shared_data)
    export_model(model, cfg, tmp_path, "pot")
    elements = cfg["bispectrum"]["type"]
    configs = read_configs(shared_data, SYSTEMS[system]["held_out"][:1], elements)
    configs.append(sheared(configs[0], np.random.default_rng(option)))
    positions, cell, pbc, _ = narrow_cells(np.random.default_rng(7))[0]
    configs.append((positions * 1.05, cell * 1.05, pbc, np.arange(2) % len(elements)))
    calc = SnapCalculator(stress_settings(cfg), with_stress=True)
    model64 = copy.deepcopy(model).double()
    try:
        for positions, cell, pbc, types in configs:
            want = torch_single_point(model64, cfg, positions, cell, pbc, types, calc)
            got = lammps_single_point(include_commands(export_paths(tmp_path, "pot")), positions, cell, pbc, types, len(elements))
            scale = np.abs(want["stress"]).max()
            np.testing.assert_allclose(got["pressure"], want["stress"], rtol=0, atol=1e-7 * scale)
            assert np.abs(want["stress"] - want["ref_stress"]).max() > 1e-3 * scale  # the network's part counts
    finally:
        calc.close()


# ----------------------------------------------------------------------------- data and loss


def stress_config(elements=("Ta", "W"), **pytorch):
    from potflow.config.load import prepare_config

    cfg = base_config(elements, **pytorch)
    cfg["calculator"] = {**cfg["calculator"], "stress": 1}
    cfg["groups"] = {**cfg["groups"], "defaults": {**cfg["groups"]["defaults"], "vweight": 1e-6}}
    return prepare_config(cfg)


@pytest.fixture(scope="module")
def stressed(tmp_path_factory):
    """Two elements, two synthetic groups of 6 and 5 configurations labelled with stresses."""
    cfg = stress_config()
    return cfg, make_groups(tmp_path_factory.mktemp("stress"), cfg, [6, 5], seed=3, stress=True)


def test_stress_is_stored_only_with_a_virial_weight(stressed):
    """Folders of a fit without stresses keep their key and arrays; vweight or virial_weight
    switches stresses on, calculator.stress 0 off (FitSNAP's meaning)."""
    from potflow.config.load import prepare_config
    from potflow.descriptors.folders import open_group
    from potflow.descriptors.settings import descriptor_key, descriptor_settings, fits_stress

    cfg, folders = stressed
    arrays, meta = open_group(folders[0], cfg)
    M, A, K = len(arrays["natoms"]), len(arrays["atom_types"]), meta["num_descriptors"]
    assert arrays["virial_values"].shape == (6 * A, K) and arrays["stress_target"].shape == (M, 6)
    assert np.isfinite(arrays["stress_target"]).all() and (arrays["volume"] > 0).all()
    plain = base_config(("Ta", "W"))
    assert "stress" not in descriptor_settings(plain) and not fits_stress(plain)
    off = prepare_config({**cfg, "pytorch": {**cfg["pytorch"], "virial_weight": 0.0}})
    assert descriptor_key(off) == descriptor_key(plain)
    on = prepare_config({**plain, "calculator": {**plain["calculator"], "stress": 1}, "pytorch": {**plain["pytorch"], "virial_weight": 2.0}})
    assert fits_stress(on) and not fits_stress(prepare_config({**on, "calculator": {**on["calculator"], "stress": 0}}))


@pytest.mark.parametrize("raw", [False, True], ids=["memory", "streamed"])
def test_loss_stress_term_matches_the_formula_by_hand(stressed, raw):
    """L gains (1/M) sum_m w^V_m/6 sum_v (S^_mv - S_mv)^2 (bar), with S^ from config_virial and
    model_stress; the global virial_weight overrides the groups'. Catches a wrong scale, sign,
    volume or atom order in the prepared strain derivatives (options 1-3, memory and streamed)."""
    from potflow.descriptors.folders import config_virial
    from potflow.models.network import AtomicEnergyModel
    from potflow.training.datasets import FitData
    from potflow.training.loss import batch_loss_sum
    from potflow.training.stores import PreparedSet

    cfg, folders = stressed
    cfg = {**cfg, "groups": {**cfg["groups"], "g1": {"vweight": 3e-6}}}
    for global_vw in (None, 5e-7):
        from potflow.config.load import prepare_config

        c = prepare_config({**cfg, "pytorch": {**cfg["pytorch"], "energy_weight": 0.0, "virial_weight": global_vw}})
        data = FitData(c, folders)
        cs = data.subset("train")
        for option in (1, 2, 3):
            torch.manual_seed(option)
            model = AtomicEnergyModel(data.num_desc, [6], data.elements, option).double()
            model.set_standardisation_moments(*cs.moments())
            pick = np.array([1, len(cs) - 1, 2])
            prepared = PreparedSet(cs, model.shift.numpy(), model.scale.numpy(), option, torch.float64, "cpu", raw_gradients=raw)
            prepared.has_forces = False  # the force term is test_training's: leave the stress term alone
            (batch,) = prepared.batches(pick, batch_size=3)
            with torch.no_grad():
                got = (batch_loss_sum(model, batch, prepared.grad) / 3).item()
            terms = []
            for m in cs.ids[pick]:
                g = data.groups[data.table["group_id"][m]]
                k = data.table["index"][m]
                a0, n = g.atom_start[k], g.natoms[k]
                with torch.no_grad():
                    B = torch.from_numpy(np.array(g.arrays["descriptors"][a0 : a0 + n]))
                    dedb = model.energy_and_gradient(B, torch.from_numpy(g.types[a0 : a0 + n]))[1].numpy()
                virial, volume, target = config_virial(g.arrays, k)
                w = global_vw if global_vw is not None else (3e-6 if g.name == "g1" else 1e-6)
                terms.append(w / 6 * ((model_stress(dedb, virial, volume) - target) ** 2).sum())
            assert min(terms) > 0
            assert got == pytest.approx(np.mean(terms), rel=1e-10), (option, global_vw)


def test_missing_stress_with_a_virial_weight_names_the_file(tmp_path):
    """A group with vweight > 0 whose configuration has no stress: one line naming the file and
    the group; with vweight 0 the same data trains (its stress is simply not fitted)."""
    from synthetic import synthetic_xyz

    from potflow.config.load import prepare_config
    from potflow.data.structures import import_group
    from potflow.descriptors.compute import compute_group_descriptors
    from potflow.training.datasets import FitData

    cfg = stress_config(("Ta",))
    folders = []
    for k, stress in enumerate((True, False)):
        synthetic_xyz(tmp_path / f"g{k}.xyz", 3, ["Ta"], k, stress=stress)
        import_group(tmp_path / f"g{k}.xyz", "XYZ", ["Ta"], tmp_path / f"g{k}.npz")
        compute_group_descriptors(cfg, tmp_path / f"g{k}.npz", tmp_path / f"d{k}", f"g{k}")
        folders.append(tmp_path / f"d{k}")
    with pytest.raises(PotflowInputError) as err:
        FitData(cfg, folders)
    msg = str(err.value)
    assert len(msg.splitlines()) == 1 and "g1.xyz:0" in msg and "group g1 has vweight" in msg
    ok = prepare_config({**cfg, "groups": {**cfg["groups"], "g1": {"vweight": 0.0}}})
    data = FitData(ok, folders)
    assert (data.table["vw"][data.table["group_id"] == 1] == 0).all()


@pytest.mark.parametrize(
    "stress,why",
    [([[1.0, 2.0], [3.0, 4.0]], "shape"), ([[1.0, 0, 0], [0, float("nan"), 0], [0, 0, 1.0]], "NaN"),
     ([1.0, 2.0, 3.0, 4.0], "shape")],
)  # fmt: skip
def test_bad_stress_is_refused_with_the_file_named(stress, why, tmp_path):
    """A FitSNAP JSON Stress of the wrong shape or not finite: one line naming the file; no group
    file is written."""
    import json

    from potflow.data.structures import import_group

    group = tmp_path / "Group"
    group.mkdir()
    rec = {"Lattice": np.eye(3).tolist(), "Energy": -1.0, "AtomTypes": ["Ta"], "Positions": [[0, 0, 0]],
           "Forces": [[0, 0, 0]], "Stress": stress}  # fmt: skip
    text = json.dumps({"Dataset": {"Data": [rec]}})
    (group / "bad.json").write_text(text)
    with pytest.raises(PotflowInputError) as err:
        import_group(group, "JSON", ["Ta"], tmp_path / "Group.npz")
    assert len(str(err.value).splitlines()) == 1 and "bad.json" in str(err.value) and why in str(err.value)
    assert not (tmp_path / "Group.npz").exists()


def test_non_finite_xyz_stress_is_refused_with_the_file_named(tmp_path):
    """An extended-XYZ stress with a NaN: one line naming file and frame; nothing written."""
    from potflow.data.structures import import_group

    (tmp_path / "bad.xyz").write_text(
        '1\nLattice="3 0 0 0 3 0 0 0 3" Properties=species:S:1:pos:R:3:forces:R:3 energy=-1.0 '
        'stress="1 0 0 0 nan 0 0 0 1" pbc="T T T"\nTa 0 0 0 0 0 0\n'
    )
    with pytest.raises(PotflowInputError, match=r"bad.xyz:0: field 'stress' contains NaN"):
        import_group(tmp_path / "bad.xyz", "XYZ", ["Ta"], tmp_path / "bad.npz")
    assert not (tmp_path / "bad.npz").exists()


def test_evaluation_reports_stresses(stressed, tmp_path):
    """Metrics gain Stress rows (bar, Count = 6 x configurations), perconfig.dat the twelve
    S*_Truth/S*_Pred columns after FitSNAP's, and the stress parity figure draws them; the
    predictions equal model_stress on config_virial (catches a batch or volume mix-up)."""
    from potflow.descriptors.folders import config_virial, open_group
    from potflow.evaluation.error_files import (
        PERCONFIG_COLUMNS,
        PERCONFIG_STRESS_COLUMNS,
        metrics_table,
        perconfig_frame,
    )
    from potflow.evaluation.plots import stress_parity
    from potflow.evaluation.predictions import evaluate_model
    from potflow.models.network import AtomicEnergyModel

    cfg, folders = stressed
    arrays, meta = open_group(folders[0], cfg)
    torch.manual_seed(0)
    model = AtomicEnergyModel(meta["num_descriptors"], [6], ["Ta", "W"], 2).double()
    model.set_standardisation(np.array(arrays["descriptors"]), np.array(arrays["atom_types"]))
    ev = evaluate_model(model, {"g0": folders[0], "g1": folders[1]}, cfg)
    table = metrics_table(ev)
    rows = table[(table["Property"] == "Stress") & (table["Train/Test"] == "Test")].set_index("Group")
    assert rows.loc["*ALL", "Count"] == 6 * 11 and rows.loc["g1", "Count"] == 6 * 5
    for m in (0, 4):
        virial, volume, target = config_virial(arrays, m)
        a0 = int(np.asarray(arrays["natoms"])[:m].sum())
        n = int(arrays["natoms"][m])
        with torch.no_grad():
            B = torch.from_numpy(np.array(arrays["descriptors"][a0 : a0 + n]))
            dedb = model.energy_and_gradient(B, torch.from_numpy(np.array(arrays["atom_types"][a0 : a0 + n], dtype=np.int64)))[1]
        np.testing.assert_allclose(ev["stress_pred"][m], model_stress(dedb.numpy(), virial, volume), rtol=1e-12)
        np.testing.assert_allclose(ev["stress_truth"][m], target)
    frame = perconfig_frame(ev)
    assert list(frame.columns) == PERCONFIG_COLUMNS + PERCONFIG_STRESS_COLUMNS
    assert PERCONFIG_STRESS_COLUMNS[0] == "Sxx_Truth" and PERCONFIG_STRESS_COLUMNS[-1] == "Sxy_Pred"
    fig = stress_parity(ev, "t")
    assert len(fig.axes[0].collections) == 1  # the test configurations' points


def test_streamed_fit_with_stresses_equals_in_memory_fit(stressed, tmp_path):
    """The same fit with stresses in memory and streamed from the files (a budget far below one
    configuration): same losses and weights. Catches stress targets or strain derivatives that do
    not follow their configurations through the shuffled, chunked batches."""
    from synthetic import assert_streamed_fit_equals_in_memory

    cfg, folders = stressed
    assert_streamed_fit_equals_in_memory(cfg, folders, tmp_path)
