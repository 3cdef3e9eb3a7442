"""SNAP descriptors from LAMMPS: gradients, frames, reference potential, energy-only, two elements."""

import json
import subprocess
import sys

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from potflow.config.load import prepare_config
from potflow.data.structures import import_group, iter_configs, load_group
from potflow.descriptors.compute import SnapCalculator, compute_group_descriptors
from potflow.descriptors.folders import open_group
from potflow.lammps.session import lammps_frame, open_lammps

ZBL = "hybrid/overlay zero 10.0 zbl 4.0 4.8"
# FitSNAP's settings for these two sets (../shared/data/README.md).
TA = {
    "bispectrum": {
        "numTypes": 1, "twojmax": 6, "rcutfac": 4.67637, "rfac0": 0.99363, "rmin0": 0.0,
        "wj": [1.0], "radelem": [0.5], "type": ["Ta"], "bzeroflag": 1, "switchflag": 1,
    },
    "reference": {"pair_style": ZBL, "pair_coeff": ["* * zero", "* * zbl 73 73"]},
}  # fmt: skip
WBE = {
    "bispectrum": {
        "numTypes": 2, "twojmax": 6, "rcutfac": 4.812302818, "rfac0": 0.99363, "rmin0": 0.0,
        "wj": [1.0, 0.9590493408], "radelem": [0.5, 0.417932464], "type": ["W", "Be"],
        "bzeroflag": 1, "switchflag": 1,
    },
    "reference": {
        "pair_style": ZBL,
        "pair_coeff": ["* * zero", "1 1 zbl 74 74", "1 2 zbl 74 4", "2 2 zbl 4 4"],
    },
}  # fmt: skip

# A general (not lower-triangular) sheared cell, so LAMMPS's frame differs from the input's.
SHEARED = np.array([[3.30, 0.12, -0.21], [0.45, 3.25, 0.28], [-0.38, 0.52, 3.40]])
LEFT_HANDED = SHEARED[[1, 0, 2]]


def config(base, **changes):
    cfg = json.loads(json.dumps(base))
    for section, values in changes.items():
        cfg.setdefault(section, {}).update(values)
    return prepare_config(cfg)


def structure(cell, reps, types_cycle, seed):
    """bcc sites of a ``reps`` supercell of ``cell``, displaced a little, types assigned in turn."""
    rng = np.random.default_rng(seed)
    frac = []
    for ix in range(reps[0]):
        for iy in range(reps[1]):
            for iz in range(reps[2]):
                for site in ((0.0, 0.0, 0.0), (0.5, 0.5, 0.5)):
                    frac.append((np.array(site) + (ix, iy, iz)) / reps)
    cell = np.asarray(cell) * np.array(reps)[:, None]
    positions = (np.array(frac) + 0.1) @ cell + rng.normal(0.0, 0.08, (len(frac), 3))
    types = np.array([types_cycle[k % len(types_cycle)] for k in range(len(frac))], np.int32)
    return positions, cell, types


def dense_gradient(n, index, values):
    """(i, j, a, K) array of dB_i/dR_j^a from the stored rows."""
    grad = np.zeros((n, n, 3, values.shape[1]))
    grad[index[:, 0], index[:, 1], index[:, 2]] = values
    return grad


def check_finite_differences(cfg, positions, cell, types, h=1e-5):
    pbc = np.ones(3, bool)
    calc = SnapCalculator(cfg)
    try:
        B, e_ref, f_ref, index, values = calc.compute(positions, cell, pbc, types)
        n = len(types)
        grad = dense_gradient(n, index, values)
        assert len(index) == len(np.unique(index, axis=0)), "a gradient row is stored twice"
        assert np.all(np.any(values != 0.0, axis=1)), "zero gradient rows must be dropped"
        fd = np.zeros_like(grad)
        fd_force = np.zeros((n, 3))
        for j in range(n):
            for a in range(3):
                plus, minus = positions.copy(), positions.copy()
                plus[j, a] += h
                minus[j, a] -= h
                bp, ep, *_ = calc.compute(plus, cell, pbc, types)
                bm, em, *_ = calc.compute(minus, cell, pbc, types)
                fd[:, j, a] = (bp - bm) / (2 * h)
                fd_force[j, a] = -(ep - em) / (2 * h)
    finally:
        calc.close()
    scale = np.abs(grad).max()
    assert scale > 1.0, "descriptor gradients should not vanish for this structure"
    np.testing.assert_allclose(grad, fd, rtol=0, atol=2e-6 * scale)
    # the reference (ZBL) forces are in the input frame too
    assert np.abs(f_ref).max() > 0.1
    np.testing.assert_allclose(f_ref, fd_force, rtol=0, atol=1e-6 * np.abs(f_ref).max())
    return B


@pytest.mark.parametrize("cell", [np.diag([3.31, 3.32, 3.30]), SHEARED, LEFT_HANDED], ids=["orthogonal", "sheared", "left-handed"])  # fmt: skip
def test_gradients_match_finite_differences_one_element(cell):
    positions, cell, types = structure(cell, (2, 1, 1), [0], seed=1)
    check_finite_differences(config(TA), positions, cell, types)


@pytest.mark.parametrize("cell", [SHEARED, LEFT_HANDED], ids=["sheared", "left-handed"])
def test_gradients_match_finite_differences_two_elements(cell):
    positions, cell, types = structure(cell * 0.95, (2, 1, 1), [0, 1, 1], seed=2)
    B = check_finite_differences(config(WBE), positions, cell, types)
    assert B.shape == (4, 30)


def test_gradients_match_finite_differences_chemflag():
    positions, cell, types = structure(SHEARED * 0.95, (1, 1, 1), [0, 1], seed=3)
    B = check_finite_differences(config(WBE, bispectrum={"chemflag": 1, "bnormflag": 1}), positions, cell, types)  # fmt: skip
    assert B.shape == (2, 30 * 8)


def test_mirror_image_has_same_descriptors():
    """A left-handed cell is the mirror image of a right-handed one: same B, mirrored forces."""
    positions, cell, types = structure(SHEARED, (2, 1, 1), [0], seed=4)
    mirror = np.diag([1.0, 1.0, -1.0])
    calc = SnapCalculator(config(TA))
    try:
        b1, e1, f1, *_ = calc.compute(positions, cell, np.ones(3, bool), types)
        b2, e2, f2, *_ = calc.compute(positions @ mirror, cell @ mirror, np.ones(3, bool), types)
    finally:
        calc.close()
    assert np.linalg.det(cell @ mirror) < 0
    np.testing.assert_allclose(b2, b1, rtol=1e-10, atol=1e-10)
    assert e2 == pytest.approx(e1, rel=1e-12)
    np.testing.assert_allclose(f2, f1 @ mirror, atol=1e-10)


def plain_lammps(cfg, positions, lower_cell, types):
    """Energy (pe) and forces (f) of the reference potential, a plain LAMMPS run in its own frame."""
    ref = cfg["reference"]
    (ax, _, _), (bx, by, _), (cx, cy, cz) = (map(float, row) for row in lower_cell)
    lmp = open_lammps()
    try:
        lmp.commands_string(
            f"""units metal
atom_style atomic
atom_modify map array sort 0 0.0
boundary p p p
region box prism 0 {ax!r} 0 {by!r} 0 {cz!r} {bx!r} {cx!r} {cy!r} units box
create_box {len(cfg["bispectrum"]["type"])} box
mass * 1.0
pair_style {ref["pair_style"]}
"""
        )
        for line in ref["pair_coeff"]:
            lmp.command(f"pair_coeff {line}")
        n = len(types)
        lmp.create_atoms(n, list(range(1, n + 1)), [int(t) + 1 for t in types], positions.ravel().tolist())
        lmp.command("run 0")
        energy = lmp.get_thermo("pe")
        ids = np.array(lmp.numpy.extract_atom("id"))[:n]
        forces = np.array(lmp.numpy.extract_atom("f"))[:n][np.argsort(ids)]
    finally:
        lmp.close()
    return energy, forces


@pytest.mark.parametrize("base,types_cycle", [(TA, [0]), (WBE, [0, 1])], ids=["Ta", "W-Be"])
def test_reference_matches_plain_lammps(base, types_cycle):
    """E_ref and F_ref equal LAMMPS's own pe and f, also for a rotated copy of the structure."""
    cfg = config(base)
    # LAMMPS's frame: a lower-triangular cell with a positive diagonal
    lower = np.array([[6.5, 0.0, 0.0], [0.7, 3.2, 0.0], [-0.5, 0.4, 3.3]])
    positions, lower, types = structure(lower / [[2], [1], [1]], (2, 1, 1), types_cycle, seed=5)
    assert np.allclose(lammps_frame(lower)[0], lower)
    e_plain, f_plain = plain_lammps(cfg, positions, lower, types)
    assert abs(e_plain) > 1e-3 and np.abs(f_plain).max() > 1e-2, "ZBL should act at these distances"
    rot = Rotation.from_euler("zyx", [0.7, -0.4, 1.9]).as_matrix()
    calc = SnapCalculator(cfg)
    try:
        _, e_ref, f_ref, *_ = calc.compute(positions, lower, np.ones(3, bool), types)
        _, e_rot, f_rot, *_ = calc.compute(positions @ rot.T, lower @ rot.T, np.ones(3, bool), types)
    finally:
        calc.close()
    assert e_ref == pytest.approx(e_plain, rel=1e-12, abs=1e-12)
    np.testing.assert_allclose(f_ref, f_plain, rtol=0, atol=1e-12)
    assert e_rot == pytest.approx(e_plain, rel=1e-10)
    np.testing.assert_allclose(f_rot, f_plain @ rot.T, rtol=0, atol=1e-9)


def write_group(path, configs, symbols):
    """An extended-XYZ group with made-up energies/forces (only the reference part is checked)."""
    import ase.io
    from ase import Atoms
    from ase.calculators.singlepoint import SinglePointCalculator

    rng = np.random.default_rng(7)
    frames = []
    for positions, cell, types in configs:
        atoms = Atoms([symbols[t] for t in types], positions=positions, cell=cell, pbc=True)
        forces = rng.normal(size=(len(atoms), 3))
        atoms.calc = SinglePointCalculator(atoms, energy=-8.0 * len(atoms), forces=forces)
        frames.append(atoms)
    ase.io.write(path, frames, format="extxyz")


WBE_CHEM = {**WBE, "bispectrum": {**WBE["bispectrum"], "chemflag": 1, "bnormflag": 1}}


@pytest.mark.parametrize(
    "base,types_cycle",
    [(TA, [0]), (WBE, [0, 1, 1]), (WBE_CHEM, [1, 0])],
    ids=["Ta", "W-Be", "W-Be-chemflag"],
)
def test_energy_only_stores_no_gradients(tmp_path, base, types_cycle):
    """No force weight: no gradient rows, and the same descriptors and reference as with forces."""
    symbols = base["bispectrum"]["type"]
    configs = [
        structure(SHEARED, (2, 1, 1), types_cycle, seed=8),
        structure(LEFT_HANDED, (1, 1, 1), types_cycle, seed=9),
        structure(np.diag([3.3, 3.3, 3.3]), (1, 2, 2), types_cycle, seed=10),
    ]
    write_group(tmp_path / "g.xyz", configs, symbols)
    import_group(tmp_path / "g.xyz", "XYZ", symbols, tmp_path / "g.npz")
    with_forces = config(base)
    energy_only = config(base, pytorch={"force_weight": 0.0})
    meta_f = compute_group_descriptors(with_forces, tmp_path / "g.npz", tmp_path / "forces", "g")
    meta_e = compute_group_descriptors(energy_only, tmp_path / "g.npz", tmp_path / "energy", "g")
    assert meta_e["descriptor_key"] != meta_f["descriptor_key"]
    assert meta_f["num_grad_rows"] > 0 and meta_e["num_grad_rows"] == 0
    full, _ = open_group(tmp_path / "forces", with_forces)
    eonly, _ = open_group(tmp_path / "energy", energy_only)
    assert eonly["grad_values"].shape == (0, full["descriptors"].shape[1])
    assert eonly["grad_index"].shape == (0, 3)
    np.testing.assert_array_equal(eonly["grad_ptr"], np.zeros(4, np.int64))
    for name in ("descriptors", "ref_energy", "energy_target", "ref_forces", "force_target"):
        np.testing.assert_allclose(eonly[name], full[name], rtol=1e-12, atol=1e-12, err_msg=name)
    np.testing.assert_array_equal(eonly["atom_types"], full["atom_types"])
    # the descriptors of the full run are the ones SnapCalculator gives for each imported structure
    data = load_group(tmp_path / "g.npz")
    calc = SnapCalculator(with_forces)
    try:
        expect = [
            calc.compute(c["positions"], c["cell"], c["pbc"], t)[0]
            for c, (_, _, t) in zip(iter_configs(data), configs, strict=True)
        ]
    finally:
        calc.close()
    expect = np.concatenate(expect)
    np.testing.assert_allclose(full["descriptors"], expect, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="other settings"):
        open_group(tmp_path / "energy", with_forces)


WBE_GROUPS = {
    "StackFaults": None,  # Be only, 6 configs of 48 atoms
    "BCC_ForceLib_WTet": None,  # W only, 3 configs of 129 atoms
    "EOS": ["EOS_B2_1", "EOS_B2_2", "EOS_L12_1", "EOS_C15_1", "EOS_C14_1", "EOS_Db2_1"],  # W-Be
}


@pytest.mark.slow  # end to end: runs the workflow
def test_two_element_groups_through_the_workflow(tmp_path, shared_data, repo_root):
    """Import and descriptors of three small W-Be groups, run by Snakemake with the W-Be ZBL."""
    import yaml

    data = tmp_path / "WBe"
    for group, names in WBE_GROUPS.items():
        (data / group).mkdir(parents=True)
        src = shared_data / "WBe_JSON" / group
        for f in sorted(src.glob("*.json")) if names is None else [src / f"{n}.json" for n in names]:
            (data / group / f.name).symlink_to(f)
    cfg = json.loads(json.dumps(WBE))
    cfg.update({"scraper": {"scraper": "JSON"}, "path": {"dataPath": str(data)}})
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    cmd = [
        sys.executable, "-m", "snakemake", "--snakefile", str(repo_root / "Snakefile"),
        "--directory", str(tmp_path), "--configfile", str(tmp_path / "config.yaml"),
        "--cores", "2", "--quiet", "all",
    ]  # fmt: skip
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    checked = prepare_config(cfg)
    (dkey,) = [p.name for p in (tmp_path / "results" / "descriptors").iterdir()]
    calc = SnapCalculator(checked)
    try:
        for group in WBE_GROUPS:
            arrays, meta = open_group(tmp_path / "results" / "descriptors" / dkey / group, checked)
            assert meta["elements"] == ["W", "Be"] and meta["num_descriptors"] == 30
            assert arrays["descriptors"].shape == (meta["num_atoms"], 30)
            assert np.all(np.isfinite(arrays["descriptors"]))
            # the DFT energy of each configuration is the one in its JSON file
            for name, energy in zip(arrays["files"], arrays["energy"], strict=True):
                text = (data / group / str(name)).read_text().split("\n", 1)[1]
                assert energy == json.loads(text)["Dataset"]["Data"][0]["Energy"]
            # the reference part of the first configuration, recomputed directly
            n0 = int(arrays["natoms"][0])
            data_npz = np.load(tmp_path / "results" / "data" / f"{group}.npz")
            b, e, f, *_ = calc.compute(
                data_npz["positions"][:n0], data_npz["cells"][0], np.ones(3, bool),
                arrays["atom_types"][:n0],
            )  # fmt: skip
            np.testing.assert_allclose(arrays["descriptors"][:n0], b, rtol=1e-12, atol=1e-12)
            assert arrays["ref_energy"][0] == pytest.approx(e, rel=1e-12)
            np.testing.assert_allclose(arrays["ref_forces"][:n0], f, atol=1e-12)
            if group == "EOS":
                assert set(np.unique(arrays["atom_types"])) == {0, 1}
                assert np.all(arrays["ref_energy"] > 0), "ZBL is repulsive"
    finally:
        calc.close()


def test_dense_cell_with_long_reference_cutoff(shared_data):
    """The densest W-Be cell (0.79 atoms/A^3) within the 10 A `zero` cutoff: ~3,300 neighbours."""
    from potflow.data.structures import parse_fitsnap_json

    rec = parse_fitsnap_json(shared_data / "WBe_JSON" / "EOS_FCC" / "EOS_FCC_151.json")
    types = np.array([["W", "Be"].index(s) for s in rec["symbols"]], np.int32)
    assert len(types) / abs(np.linalg.det(rec["cell"])) > 0.75
    calc = SnapCalculator(config(WBE))
    try:
        B, e_ref, f_ref, index, values = calc.compute(rec["positions"], rec["cell"], rec["pbc"], types)
    finally:
        calc.close()
    assert np.all(np.isfinite(B)) and np.all(np.isfinite(values)) and e_ref > 0
    np.testing.assert_allclose(f_ref, 0.0, atol=1e-4)  # fcc, positions rounded in the file


@pytest.mark.parametrize("base,types_cycle", [(TA, [0]), (WBE_CHEM, [0, 1, 1])], ids=["Ta", "W-Be-chemflag"])
def test_descriptors_and_network_are_invariant_under_rotation_and_translation(base, types_cycle):
    """Rotating and translating a whole configuration leaves every descriptor, and so the
    network's energy, unchanged, and rotates its forces with it (F' = R F).

    Checked to bite: with the rotation of the gradient rows back to the input frame skipped
    in ``SnapCalculator.compute`` (its ``np.einsum``), the forces differ by 4-5 eV/A.
    """
    import torch

    from potflow.models.network import AtomicEnergyModel, predict

    cfg = config(base)
    positions, cell, types = structure(SHEARED, (2, 2, 1), types_cycle, seed=11)
    rot = Rotation.from_euler("zyx", [0.9, -0.3, 2.2]).as_matrix()
    shift = np.array([0.37, -1.21, 2.05])
    pbc = np.ones(3, bool)
    calc = SnapCalculator(cfg)
    try:
        B, _, _, index, values = calc.compute(positions, cell, pbc, types)
        B2, _, _, index2, values2 = calc.compute(positions @ rot.T + shift, cell @ rot.T, pbc, types)
    finally:
        calc.close()
    np.testing.assert_allclose(B2, B, rtol=0, atol=1e-10 * np.abs(B).max())

    torch.manual_seed(0)
    n_el, K = len(cfg["bispectrum"]["type"]), B.shape[1]
    model = AtomicEnergyModel(K, [6, 5], cfg["bispectrum"]["type"], 2 if n_el > 1 else 1).double()
    model.set_standardisation(B, types)

    def energy_and_forces(b, idx, val):
        t = torch.as_tensor
        e, f, _ = predict(model, t(b), t(types), t([len(types)]), t(val), t(idx))
        return e.detach().numpy(), f.detach().numpy()

    e1, f1 = energy_and_forces(B, index, values)
    e2, f2 = energy_and_forces(B2, index2, values2)
    assert np.abs(f1).max() > 1e-2, "forces should not vanish in a displaced structure"
    np.testing.assert_allclose(e2, e1, rtol=1e-11)
    np.testing.assert_allclose(f2, f1 @ rot.T, rtol=0, atol=1e-9)


@pytest.mark.parametrize("with_stress", [False, True], ids=["forces", "stresses"])
def test_one_calculator_over_many_configurations_equals_a_new_one_for_each(with_stress):
    """The calculator keeps its LAMMPS box from one configuration to the next (atoms replaced,
    box reshaped, compute snap made anew): every result equals a fresh calculator's, bit for bit,
    through changes of size, shape, handedness and boundary."""
    cfg = config(WBE)
    periodic, slab = np.ones(3, bool), np.array([True, True, False])
    small = np.diag([3.2, 3.2, 3.2])  # narrower than twice the cutoff: a supercell with stresses
    sequence = [
        (*structure(SHEARED, (2, 2, 2), [0, 1], seed=1), periodic),
        (*structure(SHEARED, (1, 1, 1), [1, 0, 0], seed=2), periodic),
        (*structure(LEFT_HANDED, (3, 2, 2), [0, 1, 1], seed=3), periodic),
        (*structure(small, (1, 1, 1), [0], seed=4), periodic),
        (*structure(small * [[1], [1], [4]], (2, 2, 1), [0, 1], seed=5), slab),
        (*structure(SHEARED, (2, 2, 2), [0, 1], seed=1), periodic),  # the first one again
        (*structure(SHEARED, (2, 2, 2), [0, 1], seed=6), periodic),  # same cell, atoms moved
    ]
    kept = SnapCalculator(cfg, with_stress=with_stress)
    try:
        kept_results = [kept.compute_config(p, cell, pbc, types) for p, cell, types, pbc in sequence]
    finally:
        kept.close()
    for (p, cell, types, pbc), got in zip(sequence, kept_results, strict=True):
        new = SnapCalculator(cfg, with_stress=with_stress)
        try:
            want = new.compute_config(p, cell, pbc, types)
        finally:
            new.close()
        for field in ("descriptors", "ref_forces", "grad_index", "grad_values", "virial", "ref_stress"):
            a, b = getattr(got, field), getattr(want, field)
            assert (a is None) == (b is None) and (a is None or np.array_equal(a, b)), field
        assert got.ref_energy == want.ref_energy
    assert len(kept_results[0].grad_index) > 0 and np.array_equal(
        kept_results[0].descriptors, kept_results[-2].descriptors
    )


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # numpy, on the singular cell
def test_a_failed_configuration_leaves_the_calculator_usable():
    """A configuration that fails half-way (here a singular cell, after the previous one's
    compute was removed) does not break the next one: it starts again from a clean LAMMPS."""
    cfg = config(WBE)
    positions, cell, types = structure(SHEARED, (2, 2, 2), [0, 1], seed=1)
    periodic = np.ones(3, bool)
    calc = SnapCalculator(cfg)
    try:
        before = calc.compute_config(positions, cell, periodic, types)
        with pytest.raises(np.linalg.LinAlgError):
            calc.compute_config(positions, 0.0 * cell, periodic, types)
        after = calc.compute_config(positions, cell, periodic, types)
    finally:
        calc.close()
    assert np.array_equal(before.descriptors, after.descriptors)
    assert np.array_equal(before.grad_values, after.grad_values)
