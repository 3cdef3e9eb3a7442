"""LAMMPS input text for an exported potential: the descriptor file and the include file."""

from pathlib import Path

from ase.data import atomic_masses, atomic_numbers

from potflow.errors import PotflowInputError
from potflow.lammps.session import open_lammps
from potflow.workflow.layout import EXPORT_SUFFIXES, SNAP_EXPORT_SUFFIXES

DIR_VARIABLE = "potflow_dir"


# Sub-styles of the reference potential that only give compute snap a neighbour list.
PLACEHOLDER_STYLES = ("zero", "none")


def format_descriptor_file(cfg):
    """``descriptor sna`` settings: every flag of the config's bispectrum section, elements in order."""
    bis = cfg["bispectrum"]
    lines = [
        "# LAMMPS ML-IAP descriptor sna settings, from the potflow config section bispectrum",
        f"rcutfac {bis['rcutfac']!r}",
        f"twojmax {bis['twojmax']}",
        f"rfac0 {bis['rfac0']!r}",
        f"rmin0 {bis['rmin0']!r}",
        f"switchflag {bis['switchflag']}",
        f"bzeroflag {bis['bzeroflag']}",
        f"chemflag {bis['chemflag']}",
        f"bnormflag {bis['bnormflag']}",
        f"wselfallflag {bis['wselfallflag']}",
        f"nelems {len(bis['type'])}",
        "elems " + " ".join(bis["type"]),
        "radelems " + " ".join(repr(float(r)) for r in bis["radelem"]),
        "welems " + " ".join(repr(float(w)) for w in bis["wj"]),
    ]
    return "\n".join(lines) + "\n"


_PAIR_STYLES = None


def pair_style_names():
    """Pair styles this LAMMPS knows (to split a hybrid pair_style the way LAMMPS does)."""
    global _PAIR_STYLES
    if _PAIR_STYLES is None:

        lmp = open_lammps()
        try:
            _PAIR_STYLES = frozenset(lmp.available_styles("pair"))
        finally:
            lmp.close()
    return _PAIR_STYLES


def reference_terms(cfg, where="config"):
    """(sub-styles [(name, args)], pair_coeff lines with the sub-style named) of the reference.

    ``zero`` (and ``none``) sub-styles are left out: they only set compute snap's cutoff.
    """
    ref = cfg["reference"]
    words = ref["pair_style"].split()
    if not words:
        raise PotflowInputError(where, "config field 'reference.pair_style' is empty")
    style, args = words[0], words[1:]
    if style == "hybrid/scaled":
        raise PotflowInputError(
            where,
            "config field 'reference.pair_style': hybrid/scaled cannot be exported; use hybrid/overlay",
        )
    if style in ("hybrid", "hybrid/overlay"):
        known = pair_style_names()
        subs = []
        for word in args:
            if word in known or not subs:
                subs.append((word, []))
            else:
                subs[-1][1].append(word)
        coeffs = []
        for line in ref["pair_coeff"]:
            parts = line.split()
            if len(parts) < 3:
                raise PotflowInputError(
                    where, f"config field 'reference.pair_coeff': '{line}' names no sub-style"
                )
            if parts[2] not in PLACEHOLDER_STYLES:
                coeffs.append(line.strip())
    else:
        subs = [(style, args)]
        coeffs = []
        for line in ref["pair_coeff"]:
            parts = line.split()
            coeffs.append(" ".join([*parts[:2], style, *parts[2:]]))
        if style in PLACEHOLDER_STYLES:
            coeffs = []
    kept = [(name, a) for name, a in subs if name not in PLACEHOLDER_STYLES]
    if style == "hybrid" and len(kept) > 1:
        raise PotflowInputError(
            where,
            "config field 'reference.pair_style': a plain hybrid with several potentials cannot be "
            "overlaid with the network; write it as hybrid/overlay",
        )
    for ml in ("mliap", "snap"):
        if any(name.startswith(ml) for name, _ in kept):
            raise PotflowInputError(where, f"config field 'reference.pair_style' already contains {ml}")
    return kept, coeffs


def overlay_commands(cfg, style, coeff_files=()):
    """``pair_style``/``pair_coeff`` commands that run the fitted potential (pair style
    ``style``, its files ``coeff_files`` in its pair_coeff line) on top of the reference."""
    subs, coeffs = reference_terms(cfg)
    name = style.split()[0]
    args = " ".join([*coeff_files, *cfg["bispectrum"]["type"]])
    if not subs:
        return [f"pair_style {style}", f"pair_coeff * * {args}"]
    styles = " ".join(" ".join([sub, *sub_args]) for sub, sub_args in subs)
    lines = [f"pair_style hybrid/overlay {styles} {style}"]
    lines += [f"pair_coeff {c}" for c in coeffs]
    lines.append(f"pair_coeff * * {name} {args}")
    return lines


def pair_commands(cfg, model_file, descriptor_file):
    """The ``pair_style`` and ``pair_coeff`` commands that run the network plus the reference."""
    return overlay_commands(cfg, f"mliap model nn {model_file} descriptor sna {descriptor_file}")


def snap_pair_commands(cfg, coeff_file, param_file):
    """The commands that run a linear SNAP (``pair_style snap``) plus the reference."""
    return overlay_commands(cfg, "snap", (coeff_file, param_file))


def mass_commands(elements):
    lines = []
    for t, el in enumerate(elements, start=1):
        if el in atomic_numbers:
            lines.append(f"mass {t} {atomic_masses[atomic_numbers[el]]:.6f}")
        else:
            lines.append(f"# mass {t} ?   # '{el}' is not an element symbol: set its mass yourself")
    return lines


def format_include(cfg, name):
    """The ``.mod`` file: include it after the box exists (read_data / create_box)."""
    d = "${" + DIR_VARIABLE + "}"
    body = pair_commands(
        cfg, f"{d}/{name}{SUFFIXES['model']}", f"{d}/{name}{SUFFIXES['descriptor']}"
    )
    return include_text(cfg, name, "pair_style mliap model nn, descriptor sna", body)


def format_snap_include(cfg, name):
    """The ``.snap.mod`` file of a linear fit: ``pair_style snap`` over the reference."""
    d = "${" + DIR_VARIABLE + "}"
    body = snap_pair_commands(
        cfg, f"{d}/{name}{SNAP_SUFFIXES['coeff']}", f"{d}/{name}{SNAP_SUFFIXES['param']}"
    )
    return include_text(cfg, name, "pair_style snap, FitSNAP's linear SNAP files", body)


def include_text(cfg, name, style, body):
    """An include file: what it is, where its files are looked up, ``body``, the masses."""
    elements = cfg["bispectrum"]["type"]
    ref = cfg["reference"]["pair_style"]
    head = [
        f"# potflow potential '{name}' for LAMMPS ({style})",
        f"# elements (LAMMPS atom types 1..{len(elements)}): {' '.join(elements)}; units metal",
        f"# reference potential of the fit: {ref} (placeholder sub-styles zero/none dropped)",
        "# Include it after the simulation box exists. The files are looked up in",
        f"# ${{{DIR_VARIABLE}}} (default: the current directory); set it with -var {DIR_VARIABLE} DIR.",
        f"variable {DIR_VARIABLE} index .",
    ]
    return "\n".join(head + body + mass_commands(elements)) + "\n"


def include_commands(paths):
    """Commands that load an exported potential from its files, wherever they are."""
    directory = str(Path(paths["include"]).resolve().parent)
    return [
        f"variable {DIR_VARIABLE} index {directory}",
        f"include {Path(paths['include']).resolve()}",
    ]


# the exported files' suffixes, as the results layout names them
SUFFIXES = EXPORT_SUFFIXES
SNAP_SUFFIXES = SNAP_EXPORT_SUFFIXES


def export_paths(out_dir, name, suffixes=SUFFIXES):
    """The exported files of potential ``name`` in ``out_dir`` (``SNAP_SUFFIXES``: the
    ``pair_style snap`` files of a linear fit)."""
    return {key: Path(out_dir) / f"{name}{suffix}" for key, suffix in suffixes.items()}
