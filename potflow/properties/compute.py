"""Material properties of a crystal for one ASE calculator: ASE relaxes and fits, phonopy does
the phonons. Every function returns rows ``{"property", "unit", "value"}`` (and curves for the
figures); ``potflow.properties.table`` sets them beside the references.

Units: eV, Angstrom, GPa, J/m^2, THz. Energies of defects and surfaces are taken at the relaxed
lattice constant with relaxed atoms (fixed cell).
"""

import warnings

import numpy as np
from ase import Atoms
from ase.build import surface
from ase.eos import EquationOfState
from ase.filters import UnitCellFilter
from ase.optimize import BFGS
from ase.units import GPa, J, m

from potflow.properties.structures import is_cubic

EV_PER_A2_IN_J_PER_M2 = 1.0 / (J / m**2)
VOIGT = ((0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1))


def row(prop, unit, value):
    return {"property": prop, "unit": unit, "value": float(value)}


def relax(atoms, calc, fmax=1e-4, cell=False, steps=500):
    """A relaxed copy of ``atoms``: positions, and with ``cell`` also the cell (only its size for
    a cubic cell, which keeps it cubic)."""
    atoms = atoms.copy()
    atoms.calc = calc
    target = atoms
    if cell:
        target = UnitCellFilter(atoms, hydrostatic_strain=is_cubic(atoms))
    if not BFGS(target, logfile=None).run(fmax=fmax, steps=steps):
        print(f"warning: relaxation of {atoms.get_chemical_formula()} not converged to {fmax} eV/A in {steps} steps")
    return atoms


def energy_per_atom(atoms, calc):
    atoms = atoms.copy()
    atoms.calc = calc
    return atoms.get_potential_energy() / len(atoms)


def isolated_atom_energy(symbol, calc, box=20.0):
    """The energy of one atom alone (a periodic box far wider than any cutoff)."""
    atom = Atoms(symbol, cell=[box, box, box], pbc=True)
    atom.calc = calc
    return atom.get_potential_energy()


def equation_of_state(atoms, calc, strain=0.04, points=9):
    """Energy-volume curve about the relaxed cell, fitted by ASE (Birch-Murnaghan): the relaxed
    lattice constants, equilibrium volume, cohesive energy, bulk modulus B and dB/dP.

    Non-cubic cells relax their shape and atoms at every volume (ASE's constant-volume filter).
    Returns (rows, curve, relaxed atoms)."""
    relaxed = relax(atoms, calc, cell=True)
    cubic = is_cubic(relaxed)
    volumes, energies = [], []
    for s in np.linspace(-strain, strain, points):
        scaled = relaxed.copy()
        scaled.set_cell(relaxed.cell * (1 + s) ** (1 / 3), scale_atoms=True)
        if not cubic:
            scaled.calc = calc
            BFGS(UnitCellFilter(scaled, constant_volume=True), logfile=None).run(fmax=1e-3, steps=300)
        volumes.append(scaled.get_volume() / len(scaled))
        energies.append(energy_per_atom(scaled, calc))
    eos = EquationOfState(volumes, energies, eos="birchmurnaghan")
    v0, e0, bulk = eos.fit()
    bprime = eos.eos_parameters[2]
    a, _, c = relaxed.cell.cellpar()[:3]
    scale = (v0 * len(relaxed) / relaxed.get_volume()) ** (1 / 3)
    free = sum(isolated_atom_energy(s, calc) for s in relaxed.get_chemical_symbols()) / len(relaxed)
    rows = [row("lattice_constant_a", "A", a * scale)]
    if not cubic:
        rows.append(row("lattice_constant_c", "A", c * scale))
    rows += [
        row("volume_per_atom", "A^3", v0),
        row("cohesive_energy", "eV/atom", free - e0),
        row("bulk_modulus", "GPa", bulk / GPa),
        row("bulk_modulus_pressure_derivative", "1", bprime),
    ]
    curve = {"volumes": volumes, "energies": energies, "v0": v0, "e0": e0, "B": bulk / GPa, "Bp": bprime}
    return rows, curve, relaxed


def strain_matrix(voigt, amount):
    """The symmetric strain of one Voigt component (engineering shear for 4-6)."""
    eps = np.zeros((3, 3))
    i, j = VOIGT[voigt]
    if i == j:
        eps[i, i] = amount
    else:
        eps[i, j] = eps[j, i] = amount / 2
    return eps


def stress_under_strain(relaxed, calc, eps, fmax):
    strained = relaxed.copy()
    strained.set_cell(relaxed.cell @ (np.eye(3) + eps), scale_atoms=True)
    strained = relax(strained, calc, fmax=fmax)  # internal coordinates relax, the cell is held
    return strained.get_stress(voigt=True)


def elastic_matrix(relaxed, calc, delta, fmax=1e-4):
    """The 6x6 elastic constants (GPa) by central differences of the stress (ASE sign: tension
    positive) under +-delta of each Voigt strain, internal coordinates relaxed."""
    C = np.zeros((6, 6))
    for j in range(6):
        plus = stress_under_strain(relaxed, calc, strain_matrix(j, delta), fmax)
        minus = stress_under_strain(relaxed, calc, strain_matrix(j, -delta), fmax)
        C[:, j] = (plus - minus) / (2 * delta) / GPa
    return (C + C.T) / 2


def elastic_constants(relaxed, calc, delta=0.005):
    """The elastic constants at strain ``delta``, checked for linearity against ``delta``/2:
    rows for C11, C12, C44 (cubic) or every independent nonzero Cij, the Voigt bulk modulus
    and the largest change between the two amplitudes (percent of the largest Cij)."""
    C = elastic_matrix(relaxed, calc, delta)
    half = elastic_matrix(relaxed, calc, delta / 2)
    nonlinearity = 100 * np.abs(C - half).max() / np.abs(C).max()
    if is_cubic(relaxed):
        names = [(0, 0), (0, 1), (3, 3)]
    else:
        names = [(i, j) for i in range(6) for j in range(i, 6) if abs(C[i, j]) > 1e-3 * np.abs(C).max()]
    rows = [row(f"C{i + 1}{j + 1}", "GPa", C[i, j]) for i, j in names]
    voigt_bulk = (C[:3, :3].sum()) / 9
    rows += [
        row("bulk_modulus_from_elastic", "GPa", voigt_bulk),
        row("elastic_nonlinearity", "%", nonlinearity),
    ]
    return rows, C


def vacancy_formation_energy(relaxed, calc, supercell, fmax=1e-3):
    """E_v = E(N-1, relaxed) - (N-1)/N E(N): one atom removed from the supercell, fixed cell."""
    perfect = relaxed.repeat(supercell)
    e_perfect = energy_per_atom(perfect, calc) * len(perfect)
    defect = perfect.copy()
    del defect[0]
    defect = relax(defect, calc, fmax=fmax)
    n = len(perfect)
    return defect.get_potential_energy() - (n - 1) / n * e_perfect


def interstitial_formation_energy(relaxed, calc, supercell, site, element, fmax=1e-3):
    """E_i = E(N+1, relaxed) - (N+1)/N E(N): an atom of ``element`` added at ``site``
    (fractional coordinates of the crystal's cell) of the supercell, fixed cell."""
    perfect = relaxed.repeat(supercell)
    e_perfect = energy_per_atom(perfect, calc) * len(perfect)
    defect = perfect.copy()
    defect.append(element)
    defect.positions[-1] = np.asarray(site, float) @ relaxed.cell
    defect = relax(defect, calc, fmax=fmax)
    n = len(perfect)
    return defect.get_potential_energy() - (n + 1) / n * e_perfect


def surface_energy(relaxed, calc, miller, layers, vacuum, fmax=1e-3):
    """gamma = (E_slab - N e_bulk) / (2 A) in J/m^2: an ASE slab of the (hkl) plane, relaxed atoms."""
    e_bulk = energy_per_atom(relaxed, calc)
    slab = surface(relaxed, tuple(miller), layers, vacuum=vacuum, periodic=True)
    slab = relax(slab, calc, fmax=fmax)
    area = np.linalg.norm(np.cross(slab.cell[0], slab.cell[1]))
    gamma = (slab.get_potential_energy() - len(slab) * e_bulk) / (2 * area)
    return gamma * EV_PER_A2_IN_J_PER_M2


def phonons(relaxed, calc, supercell, mesh=(16, 16, 16), distance=0.01, path_points=120):
    """Phonons by phonopy's finite displacements (forces from ``calc``): band structure along
    ASE's standard path of the primitive cell, total DOS, the lowest frequency (THz; negative =
    imaginary)."""
    from phonopy import Phonopy
    from phonopy.structure.atoms import PhonopyAtoms

    unit = PhonopyAtoms(
        symbols=relaxed.get_chemical_symbols(),
        cell=np.array(relaxed.cell),
        scaled_positions=relaxed.get_scaled_positions(),
    )
    with warnings.catch_warnings():  # phonopy 4 notes that "auto" finds the primitive cell
        warnings.simplefilter("ignore")
        ph = Phonopy(unit, supercell_matrix=np.diag(supercell), primitive_matrix="auto")
    ph.generate_displacements(distance=distance)
    forces = []
    for sc in ph.supercells_with_displacements:
        atoms = Atoms(sc.symbols, cell=sc.cell, scaled_positions=sc.scaled_positions, pbc=True)
        atoms.calc = calc
        forces.append(atoms.get_forces().copy())
    ph.forces = forces
    ph.produce_force_constants()
    prim = ph.primitive
    path = Atoms(prim.symbols, cell=prim.cell, scaled_positions=prim.scaled_positions, pbc=True)
    path = path.cell.bandpath(npoints=path_points)
    ph.run_qpoints(path.kpts)
    bands = np.asarray(ph.qpoints.frequencies)
    x, ticks, labels = path.get_linear_kpoint_axis()
    # a jump in the path (ASE's "GHNGPH,PN") puts two labels at one position: "H|P"
    merged_ticks, merged_labels = [], []
    for t, label in zip(ticks, labels, strict=True):
        if merged_ticks and abs(t - merged_ticks[-1]) < 1e-9:
            merged_labels[-1] += "|" + label
        else:
            merged_ticks.append(t)
            merged_labels.append(label)
    ticks, labels = merged_ticks, merged_labels
    ph.run_mesh(list(mesh), is_gamma_center=True)
    ph.run_total_dos()
    dos = ph.total_dos
    lowest = min(float(bands.min()), float(np.min(ph.mesh.frequencies)))
    data = {
        "x": x.tolist(),
        "bands": bands.tolist(),
        "ticks": list(map(float, ticks)),
        "labels": list(labels),
        "dos_frequencies": np.asarray(dos.frequency_points).tolist(),
        "dos": np.asarray(dos.dos).tolist(),
        "lowest_frequency": lowest,
    }
    return data
