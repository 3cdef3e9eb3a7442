"""Data import: every bad input fails with one line naming the file and the problem, no output."""

import json
import subprocess
import sys

import numpy as np
import pytest
import yaml

from potflow.data.structures import EV_PER_A3_IN_BAR, import_group, load_group
from potflow.errors import PotflowInputError

COMMENT = "# A test JSON file for QM data\n"
# A sheared (non-orthogonal) cell, rows are the cell vectors.
LATTICE = [[3.3, 0.0, 0.0], [0.9, 3.1, 0.0], [0.4, -0.7, 3.2]]


def record(**changes):
    """One FitSNAP configuration: two Ta atoms in a sheared cell."""
    rec = {
        "NumAtoms": 2,
        "Lattice": LATTICE,
        "Energy": -23.5,
        "Stress": [[1000.0, 10.0, 0.0], [10.0, 2000.0, 0.0], [0.0, 0.0, 3000.0]],
        "AtomTypes": ["Ta", "Ta"],
        "Positions": [[0.1, 0.2, 0.3], [1.9, 1.6, 1.7]],
        "Forces": [[0.5, -0.25, 0.125], [-0.5, 0.25, -0.125]],
    }
    rec.update(changes)
    return {k: v for k, v in rec.items() if v is not None}


def json_text(rec, **dataset):
    doc = {"Dataset": {"Data": [rec], "PositionsStyle": "angstrom", "AtomTypeStyle": "chemicalsymbol",
                       "StressStyle": "bar", "LatticeStyle": "angstrom", "EnergyStyle": "electronvolt",
                       "ForcesStyle": "electronvoltperangstrom", **dataset}}  # fmt: skip
    return COMMENT + json.dumps(doc)


def json_group(tmp_path, bad_text, name="bad.json"):
    """A group folder with one good file and one bad one."""
    group = tmp_path / "data" / "Group"
    group.mkdir(parents=True)
    (group / "good.json").write_text(json_text(record()))
    (group / name).write_text(bad_text)
    return group, group / name


def assert_fails(tmp_path, source, scraper, bad_file, words, elements=("Ta",)):
    out = tmp_path / "results" / "data" / "Group.npz"
    with pytest.raises(PotflowInputError) as info:
        import_group(source, scraper, list(elements), out)
    message = str(info.value)
    assert "\n" not in message, f"not one line: {message!r}"
    assert str(bad_file) in message, f"{message!r} does not name {bad_file}"
    for word in words:
        assert word.lower() in message.lower(), f"{message!r} does not say {word!r}"
    # no output and no half-written temporary file
    folder = out.parent
    assert not folder.exists() or not any(folder.iterdir()), list(folder.iterdir())
    return message


JSON_CASES = {
    "malformed": (json_text(record())[:-40], ["malformed JSON", "line"]),
    "missing-energy": (json_text(record(Energy=None)), ["missing", "Energy"]),
    "missing-forces": (json_text(record(Forces=None)), ["missing", "Forces"]),
    "numatoms-mismatch": (json_text(record(NumAtoms=3)), ["NumAtoms", "3", "2 atoms"]),
    "nan-forces": (json_text(record(Forces=[[float("nan"), 0, 0], [0, 0, 0]])), ["Forces", "NaN"]),
    "inf-forces": (json_text(record(Forces=[[0, float("inf"), 0], [0, 0, 0]])), ["Forces", "inf"]),
    "nan-energy": (json_text(record(Energy=float("nan"))), ["Energy", "finite"]),
    "unknown-element": (json_text(record(AtomTypes=["Ta", "W"])), ["W", "bispectrum.type"]),
    "forces-shape": (json_text(record(Forces=[[0.5, -0.25], [-0.5, 0.25]])), ["Forces", "shape", "(2, 3)"]),
    "forces-missing-atom": (json_text(record(Forces=[[0.5, -0.25, 0.1]])), ["Forces", "shape"]),
    "overlapping-atoms": (
        json_text(record(Positions=[[1.0, 1.0, 1.0], [1.1, 1.0, 1.0]])),
        ["overlap", "0.1", "min_distance"],
    ),
    "zero-volume": (json_text(record(Lattice=[[3.3, 0, 0], [0, 3.1, 0], [3.3, 3.1, 0]])), ["Lattice", "zero volume"]),
    "lattice-shape": (json_text(record(Lattice=[[3.3, 0, 0], [0, 3.1, 0]])), ["Lattice", "shape"]),
    "not-fitsnap": (COMMENT + json.dumps({"Data": []}), ["not a FitSNAP JSON file"]),
    "unknown-unit": (json_text(record(), EnergyStyle="kcal/mol"), ["unit", "EnergyStyle"]),
}  # fmt: skip


@pytest.mark.parametrize("case", list(JSON_CASES))
def test_bad_json_fails_with_one_line(tmp_path, case):
    text, words = JSON_CASES[case]
    group, bad = json_group(tmp_path, text)
    assert_fails(tmp_path, group, "JSON", bad, words)


@pytest.mark.parametrize("comment", [COMMENT, ""], ids=["with-comment", "without-comment"])
def test_malformed_json_names_the_right_line(tmp_path, comment):
    body = json.dumps({"Dataset": {"Data": [record()]}}, indent=1).splitlines()
    body[5] = body[5] + " oops"  # a stray word on the file's line 6 (after any comment line)
    group, bad = json_group(tmp_path, comment + "\n".join(body))
    line = 6 + (1 if comment else 0)
    assert_fails(tmp_path, group, "JSON", bad, ["malformed JSON", f"(line {line}, column"])


def test_empty_json_group(tmp_path):
    group = tmp_path / "data" / "Group"
    group.mkdir(parents=True)
    (group / "notes.txt").write_text("no configurations here\n")
    assert_fails(tmp_path, group, "JSON", group, ["empty group"])


def test_empty_xyz_group(tmp_path):
    path = tmp_path / "data" / "Group.xyz"
    path.parent.mkdir()
    path.write_text("")
    assert_fails(tmp_path, path, "XYZ", path, ["empty group"])


def xyz_frame(n=2, energy="energy=-23.5 ", forces=True, rows=None, lattice=None):
    lattice = lattice or " ".join(str(x) for row in LATTICE for x in row)
    props = "species:S:1:pos:R:3" + (":forces:R:3" if forces else "")
    lines = [str(n), f'Lattice="{lattice}" Properties={props} {energy}pbc="T T T"']
    rows = rows or ["Ta 0.1 0.2 0.3 0.5 -0.25 0.125", "Ta 1.9 1.6 1.7 -0.5 0.25 -0.125"]
    lines += [r if forces else " ".join(r.split()[:4]) for r in rows]
    return "\n".join(lines) + "\n"


XYZ_CASES = {
    "atom-count": (xyz_frame(n=3), ["malformed extended XYZ"]),
    "not-numeric": (xyz_frame(rows=["Ta 0.1 0.2 abc 0 0 0", "Ta 1.9 1.6 1.7 0 0 0"]), ["malformed extended XYZ"]),
    "missing-energy": (xyz_frame(energy=""), ["missing", "energy"]),
    "missing-forces": (xyz_frame(forces=False), ["missing", "forces"]),
    "nan-forces": (xyz_frame(rows=["Ta 0.1 0.2 0.3 nan 0 0", "Ta 1.9 1.6 1.7 0 0 0"]), ["forces", "NaN"]),
    "unknown-element": (xyz_frame(rows=["Ta 0.1 0.2 0.3 0 0 0", "W 1.9 1.6 1.7 0 0 0"]), ["W", "bispectrum.type"]),
    "overlapping-atoms": (xyz_frame(rows=["Ta 1 1 1 0 0 0", "Ta 1 1 1.2 0 0 0"]), ["overlap"]),
    "zero-volume": (xyz_frame(lattice="3.3 0 0 0 3.1 0 0 0 0"), ["zero volume"]),
}  # fmt: skip


@pytest.mark.parametrize("case", list(XYZ_CASES))
def test_bad_xyz_fails_with_one_line(tmp_path, case):
    text, words = XYZ_CASES[case]
    path = tmp_path / "data" / "Group.xyz"
    path.parent.mkdir()
    path.write_text(xyz_frame() + text)  # a good frame first, then the bad one
    message = assert_fails(tmp_path, path, "XYZ", path, words)
    if "malformed" not in message:
        assert f"{path}:1" in message, "names the frame too"


def test_good_json_group(tmp_path):
    """A sheared cell, a Bohr/Hartree file and a plain one: values in metal units, in file order."""
    group = tmp_path / "Group"
    group.mkdir()
    (group / "a.json").write_text(json_text(record()))
    bohr = 0.529177210903
    hartree = 27.211386245988
    rec_au = record(
        Lattice=(np.array(LATTICE) / bohr).tolist(),
        Positions=(np.array(record()["Positions"]) / bohr).tolist(),
        Energy=-23.5 / hartree,
        Forces=(np.array(record()["Forces"]) * bohr / hartree).tolist(),
    )
    (group / "b.json").write_text(
        json_text(rec_au, PositionsStyle="bohr", LatticeStyle="bohr", EnergyStyle="hartree",
                  ForcesStyle="hartreeperbohr", StressStyle="kbar")  # fmt: skip
    )
    out = tmp_path / "Group.npz"
    import_group(group, "JSON", ["Ta"], out)
    data = load_group(out)
    rec = record()
    assert list(data["files"]) == ["a.json", "b.json"]
    np.testing.assert_array_equal(data["natoms"], [2, 2])
    np.testing.assert_array_equal(data["offsets"], [0, 2, 4])
    for m in range(2):
        np.testing.assert_allclose(data["cells"][m], LATTICE, rtol=1e-12)
        np.testing.assert_allclose(data["positions"][2 * m : 2 * m + 2], rec["Positions"], rtol=1e-12)
        np.testing.assert_allclose(data["forces"][2 * m : 2 * m + 2], rec["Forces"], rtol=1e-12)
    np.testing.assert_allclose(data["energy"], [-23.5, -23.5], rtol=1e-12)
    np.testing.assert_allclose(data["stress"][0], rec["Stress"])
    np.testing.assert_allclose(data["stress"][1], np.array(rec["Stress"]) * 1000.0)  # kbar -> bar
    assert list(data["symbols"]) == ["Ta"] * 4
    assert data["pbc"].all()


def test_good_xyz_group(tmp_path):
    """ASE's extended XYZ; stress converted to bar with FitSNAP JSON's sign (compression > 0)."""
    import ase.io
    from ase.build import bulk
    from ase.calculators.singlepoint import SinglePointCalculator

    frames = []
    for k, a in enumerate((3.0, 3.3, 3.6)):
        atoms = bulk("Ta", "bcc", a=a, cubic=True) * (1, 1, 2)
        atoms.rattle(0.05, seed=k)
        forces = np.random.default_rng(k).normal(size=(len(atoms), 3))
        pressure = 0.01 * (3.3 - a)  # eV/A^3, positive when compressed
        stress = -pressure * np.eye(3)  # ASE's sign
        atoms.calc = SinglePointCalculator(atoms, energy=-11.0 * len(atoms) + k, forces=forces, stress=stress)
        frames.append(atoms)
    path = tmp_path / "Bulk.extxyz"
    ase.io.write(path, frames, format="extxyz")
    out = tmp_path / "Bulk.npz"
    import_group(path, "XYZ", ["Ta"], out)
    data = load_group(out)
    assert list(data["files"]) == ["Bulk.extxyz:0", "Bulk.extxyz:1", "Bulk.extxyz:2"]
    for m, atoms in enumerate(frames):
        s = slice(data["offsets"][m], data["offsets"][m + 1])
        np.testing.assert_allclose(data["positions"][s], atoms.positions, atol=1e-7)
        np.testing.assert_allclose(data["forces"][s], atoms.get_forces(), atol=1e-7)
        np.testing.assert_allclose(data["cells"][m], atoms.cell[:], atol=1e-7)
        assert data["energy"][m] == pytest.approx(atoms.get_potential_energy())
        pressure_bar = 0.01 * (3.3 - (3.0, 3.3, 3.6)[m]) * EV_PER_A3_IN_BAR
        np.testing.assert_allclose(data["stress"][m], pressure_bar * np.eye(3), atol=1e-3)
    assert data["stress"][0, 0, 0] > 0 > data["stress"][2, 0, 0]


def test_bad_group_fails_its_workflow_job(tmp_path, repo_root):
    """Through Snakemake: the job fails with the one-line message and leaves no output."""
    data = tmp_path / "data"
    bad_group, bad = json_group(tmp_path, json_text(record(NumAtoms=5)))
    cfg = {"scraper": {"scraper": "JSON"}, "path": {"dataPath": str(data)}}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    cmd = [
        sys.executable, "-m", "snakemake", "--snakefile", str(repo_root / "Snakefile"),
        "--directory", str(tmp_path), "--configfile", str(tmp_path / "config.yaml"),
        "--cores", "1", "results/data/Group.npz",
    ]  # fmt: skip
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert run.returncode != 0
    expected = f"potflow error: {bad}: field 'NumAtoms' is 5 but 'AtomTypes' lists 2 atoms"
    assert expected in run.stderr
    assert expected in (tmp_path / "results" / "logs" / "data" / "Group.log").read_text()
    assert not (tmp_path / "results" / "data").exists() or not any((tmp_path / "results" / "data").iterdir())


@pytest.mark.parametrize("seed", range(6))
def test_shortest_distance_agrees_with_ase(seed):
    """The numpy overlap check finds what ASE's neighbour list finds: orthogonal, skewed,
    small (ASE's path) and partly periodic cells, atoms wrapped or not."""
    from ase import Atoms
    from ase.neighborlist import neighbor_list

    from potflow.data.structures import shortest_distance

    rng = np.random.default_rng(seed)
    for _ in range(40):
        cell = np.diag(rng.uniform(0.8, 6.0, 3)) + np.triu(rng.uniform(-3.0, 3.0, (3, 3)), 1)
        pbc = rng.random(3) < 0.8
        n = int(rng.integers(2, 30))
        pos = rng.uniform(-0.5, 1.5, (n, 3)) @ cell
        cutoff = float(rng.uniform(0.3, 1.5))
        d = neighbor_list("d", Atoms(positions=pos, cell=cell, pbc=pbc), cutoff)
        want = float(d.min()) if len(d) else None
        got = shortest_distance(pos, cell, pbc, cutoff)
        assert (got is None) == (want is None), (got, want)
        if want is not None:
            assert got == pytest.approx(want, abs=1e-9)
