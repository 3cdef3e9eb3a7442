"""The bundled Ta example: labels are physically consistent and the committed files reproduce."""

import ase.io
import numpy as np
import pytest
from ase.build import bulk

from potflow.config.groups import fit_groups, named_groups
from potflow.config.load import load_config
from potflow.data.example import GROUPS, Ta06ALabeller, build_structures

DATA = "data/Ta_example"


@pytest.fixture(scope="module")
def labeller():
    lab = Ta06ALabeller()
    yield lab
    lab.close()


def sheared_cell(left_handed):
    atoms = bulk("Ta", "bcc", a=3.3165, cubic=True) * (2, 1, 1)
    cell = atoms.cell[:] + np.array([[0.0, 0.2, -0.1], [0.5, 0.0, 0.3], [-0.4, 0.6, 0.0]])
    atoms.set_cell(cell[[1, 0, 2]] if left_handed else cell, scale_atoms=True)
    atoms.rattle(0.1, seed=3)
    return atoms


@pytest.mark.parametrize("left_handed", [False, True], ids=["right-handed", "left-handed"])
def test_forces_and_stress_are_energy_derivatives(labeller, left_handed):
    """F = -dE/dx and stress = (1/V) dE/d(strain), by central differences, in the input frame."""
    atoms = sheared_cell(left_handed)
    assert (np.linalg.det(atoms.cell[:]) < 0) == left_handed
    labelled = labeller.label(atoms)
    forces, stress = labelled.get_forces(), labelled.get_stress(voigt=False)
    h = 1e-5

    def energy(a):
        return labeller.label(a).get_potential_energy()

    fd = np.zeros_like(forces)
    for i in range(len(atoms)):
        for k in range(3):
            plus, minus = atoms.copy(), atoms.copy()
            plus.positions[i, k] += h
            minus.positions[i, k] -= h
            fd[i, k] = -(energy(plus) - energy(minus)) / (2 * h)
    assert np.abs(forces).max() > 0.5
    np.testing.assert_allclose(forces, fd, atol=1e-6)
    fd_stress = np.zeros((3, 3))
    for x in range(3):
        for y in range(3):
            eps = np.zeros((3, 3))
            eps[x, y] += h / 2
            eps[y, x] += h / 2
            plus, minus = atoms.copy(), atoms.copy()
            plus.set_cell(atoms.cell[:] @ (np.eye(3) + eps), scale_atoms=True)
            minus.set_cell(atoms.cell[:] @ (np.eye(3) - eps), scale_atoms=True)
            fd_stress[x, y] = (energy(plus) - energy(minus)) / (2 * h) / atoms.get_volume()
    assert np.abs(stress).max() > 1e-3
    np.testing.assert_allclose(stress, fd_stress, atol=1e-8)


def test_bcc_ground_state(labeller):
    """Ta06A's bcc energy and zero pressure near a = 3.3165 A (its published fit)."""
    atoms = labeller.label(bulk("Ta", "bcc", a=3.3165, cubic=True))
    assert atoms.get_potential_energy() / 2 == pytest.approx(-11.85, abs=0.01)
    assert np.abs(atoms.get_stress()).max() < 5e-4  # eV/A^3, i.e. below 1 GPa


def read_group(repo_root, group):
    return ase.io.read(repo_root / DATA / f"{group}.xyz", index=":")


@pytest.mark.parametrize("group", [g for g in GROUPS if g != "Liquid"])
def test_committed_example_reproduces(repo_root, labeller, group):
    """Rebuilding and relabelling with the default seed gives the committed file."""
    (built,) = build_structures(labeller, groups=[group]).values()
    committed = read_group(repo_root, group)
    assert len(built) == len(committed)
    for atoms, ref in zip(built, committed, strict=True):
        new = labeller.label(atoms)
        np.testing.assert_allclose(new.cell[:], ref.cell[:], atol=1e-7)
        np.testing.assert_allclose(new.positions, ref.positions, atol=1e-7)
        assert new.get_potential_energy() == pytest.approx(ref.get_potential_energy(), abs=1e-6)
        np.testing.assert_allclose(new.get_forces(), ref.get_forces(), atol=1e-5)
        np.testing.assert_allclose(new.get_stress(), ref.get_stress(), atol=1e-6)


def test_liquid_labels_reproduce(repo_root, labeller):
    """The MD snapshots are not regenerated (chaotic), but their labels are Ta06A's."""
    frames = read_group(repo_root, "Liquid")
    assert len(frames) == 15
    for ref in frames:
        new = labeller.label(ref)
        assert new.get_potential_energy() == pytest.approx(ref.get_potential_energy(), abs=1e-6)
        np.testing.assert_allclose(new.get_forces(), ref.get_forces(), atol=1e-5)
    # molten: atoms left their bcc sites, yet no pair is unphysically close
    d = frames[-1].get_all_distances(mic=True)[np.triu_indices(54, 1)]
    assert d.min() > 1.8
    assert np.abs(frames[-1].get_forces()).max() > 3.0


@pytest.mark.slow  # end to end: runs the workflow
def test_default_config_fits_the_bundled_example(repo_root):
    cfg = load_config(repo_root / "config.yaml")
    groups = fit_groups(cfg, basedir=repo_root)
    assert groups == sorted(GROUPS)
    assert set(named_groups(cfg)) == set(GROUPS)
    sizes = sum(f.stat().st_size for f in (repo_root / DATA).iterdir())
    assert sizes < 2 * 2**20
    assert sum(len(read_group(repo_root, g)) for g in groups) == 200
