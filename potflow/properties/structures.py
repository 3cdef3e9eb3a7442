"""The crystals whose properties are computed: built by ASE from the config, or read from a file."""

import os
from pathlib import Path

from potflow.errors import PotflowInputError
from potflow.hashing import settings_hash

CUBIC = ("sc", "fcc", "bcc", "diamond", "rocksalt", "zincblende", "cesiumchloride", "fluorite")


def crystal(spec, elements, field):
    """The crystal of one ``properties.crystals`` entry: ASE ``bulk`` (conventional cell for cubic
    lattices) or the structure file ASE reads. ``field`` names the entry in error messages."""
    if spec.get("file"):
        import ase.io  # ~0.5 s with scipy: not at the workflow's parse time unless a file is named

        try:
            atoms = ase.io.read(spec["file"])
        except Exception as exc:
            raise PotflowInputError(
                "config", f"field '{field}.file': cannot read {spec['file']!r} ({exc})"
            ) from None
    else:
        from ase.build import bulk  # ASE's build package imports scipy (~0.5 s)

        symbols = spec["element"]
        if not symbols:
            raise PotflowInputError("config", f"field '{field}': give 'element' (and 'lattice') or 'file'")
        name = "".join(symbols) if isinstance(symbols, list) else symbols
        kwargs = {"a": spec["a"], "cubic": spec["lattice"] in CUBIC}
        if spec.get("c"):
            kwargs["c"] = spec["c"]
        try:
            atoms = bulk(name, spec["lattice"], **kwargs)
        except Exception as exc:
            raise PotflowInputError(
                "config",
                f"field '{field}.lattice': ASE cannot build a {spec['lattice']!r} crystal of {name} ({exc})",
            ) from None
    unknown = sorted(set(atoms.get_chemical_symbols()) - set(elements))
    if unknown:
        what = "file" if spec.get("file") else "element"
        raise PotflowInputError(
            "config",
            f"field '{field}.{what}': element(s) {', '.join(unknown)} not in the fit's elements "
            f"({', '.join(elements)})",
        )
    return atoms


def is_cubic(atoms, tol=1e-6):
    """Whether the cell is cubic (equal orthogonal vectors): the cell keeps its shape under
    isotropic relaxation."""
    cell = atoms.cell.cellpar()
    return all(abs(x - cell[0]) < tol * cell[0] for x in cell[:3]) and all(
        abs(x - 90) < 1e-6 for x in cell[3:]
    )


def check_crystals(cfg):
    """Build every crystal of ``properties.crystals`` once, so that a bad entry (an element the
    fit does not know, a lattice ASE cannot build, an unreadable file) stops the workflow before
    anything runs, with one line naming the field."""
    elements = list(cfg["bispectrum"]["type"])
    for name, spec in cfg["properties"]["crystals"].items():
        crystal(spec, elements, f"properties.crystals.{name}")


def check_crystals_once(cfg, marker_dir):
    """``check_crystals``, skipped where the same crystals passed before: a marker named by the
    hash of the crystals, the fit's elements and each crystal file's size and time is left in
    ``marker_dir``. The check builds the crystals with ASE, whose import (~0.5 s with scipy)
    would otherwise be paid at every Snakemake start, ``-n`` included. Where Snakemake's own
    environment has no ASE (``--use-conda``), the jobs check instead."""
    crystals = cfg["properties"]["crystals"]
    files = {}
    for spec in crystals.values():
        if spec.get("file"):
            try:
                st = os.stat(spec["file"])
                files[spec["file"]] = [st.st_size, st.st_mtime_ns]
            except OSError:
                files[spec["file"]] = None
    stamp = {"elements": list(cfg["bispectrum"]["type"]), "crystals": crystals, "files": files}
    marker = Path(marker_dir) / f"crystals_{settings_hash(stamp)}.ok"
    if marker.exists():
        return
    try:
        import ase.build  # noqa: F401
    except ImportError:
        return
    check_crystals(cfg)
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.touch()
