"""A linear fit as FitSNAP's ``pair_style snap`` files, checked in LAMMPS like the ML-IAP export.

Files (``{name}`` is ``outfile.potential``): ``{name}.snapcoeff`` and ``{name}.snapparam``
(FitSNAP's names and layout), ``{name}.snap.mod`` (the ``pair_style hybrid/overlay <reference>
snap`` lines to ``include``; ``{name}.mod`` is the ML-IAP export's) and ``{name}.snap.json``
(what was exported and the self-check's figures).

Per element ``pair_style snap`` computes E_i = c_0 + sum_k c_k B_k(i). Its descriptors come from
the same LAMMPS code as ``compute snap`` with the same flags (the .snapparam mirrors the config's
bispectrum section, bzeroflag included): with bzeroflag 1 both subtract the isolated atom's
bispectrum bzero, so c_0 is the fit's constant beta0 itself and c_k = beta_k. (A coefficient file
made for the other bzeroflag would need c_0' = c_0 -+ beta . bzero; Ta06A.snapcoeff, made for
bzeroflag 0, is compared so in tests/test_linear.py.) With ``chemflag 1`` duplicate descriptor
columns are tied as in the ML-IAP export, which LAMMPS's force code needs.
"""

from pathlib import Path

import numpy as np

from potflow.descriptors.snap_index import bispectrum_triples, duplicate_descriptor_sets
from potflow.errors import PotflowInputError
from potflow.fileio import write_text
from potflow.lammps.export import _plain, publish_export
from potflow.lammps.inputs import (
    SNAP_SUFFIXES,
    export_paths,
    format_snap_include,
    snap_pair_commands,
)
from potflow.lammps.mliap_model import lammps_network
from potflow.lammps.self_check import check_export
from potflow.models.files import load_model


def is_linear_model(model):
    """E_atom is linear in B: no hidden layer."""
    return not model.hidden


def snap_coefficients(model, cfg, where="model"):
    """(c0 (n_el,), c (n_el, K)) of a linear model: standardisation folded in, duplicate
    columns (``chemflag 1``) tied, in float64."""
    if not is_linear_model(model):
        raise PotflowInputError(
            where, f"pair_style snap needs a linear model; this one has hidden layers {model.hidden}"
        )
    bis = cfg["bispectrum"]
    dups = duplicate_descriptor_sets(bis["twojmax"], len(bis["type"])) if bis["chemflag"] else []
    net = lammps_network(model, dups)
    c = net.weights[0][:, 0, :] / net.scale
    c0 = net.biases[0][:, 0] - np.sum(c * net.shift, axis=1)
    return c0, c


def component_names(cfg):
    """A label per bispectrum column, as FitSNAP's comments give them: [j1, j2, j] (twice
    the angular momenta), with the element triple first for ``chemflag 1``."""
    bis = cfg["bispectrum"]
    triples = bispectrum_triples(bis["twojmax"])
    if not bis["chemflag"]:
        return [list(t) for t in triples]
    n = len(bis["type"])
    return [[a, b, e, *t] for a in range(n) for b in range(n) for e in range(n) for t in triples]


def format_snapcoeff(cfg, c0, c, comment=""):
    """``.snapcoeff``: ``nelements ncoeff``, then per element ``name radelem wj`` and its
    coefficients one a line (constant first), written to round-trip exactly."""
    bis = cfg["bispectrum"]
    names = component_names(cfg)
    lines = [f"# {line}" for line in comment.splitlines()] + ["", f"{len(bis['type'])} {c.shape[1] + 1}"]
    for e, el in enumerate(bis["type"]):
        lines.append(f"{el} {float(bis['radelem'][e])!r} {float(bis['wj'][e])!r}")
        lines.append(f" {float(c0[e])!r}  #  B[0]")
        lines += [f" {float(v)!r}  #  B{name}" for v, name in zip(c[e], names, strict=True)]
    return "\n".join(lines) + "\n"


def format_snapparam(cfg):
    """``.snapparam``: every flag of the config's bispectrum section that pair_style snap reads."""
    bis = cfg["bispectrum"]
    ref = cfg["reference"]
    lines = [
        "# required",
        f"rcutfac {bis['rcutfac']!r}",
        f"twojmax {bis['twojmax']}",
        "",
        "# optional",
        f"rfac0 {bis['rfac0']!r}",
        f"rmin0 {bis['rmin0']!r}",
        f"bzeroflag {bis['bzeroflag']}",
        f"wselfallflag {bis['wselfallflag']}",
        f"chemflag {bis['chemflag']}",
        f"bnormflag {bis['bnormflag']}",
        f"switchflag {bis['switchflag']}",
        "switchinnerflag 0",
        f"quadraticflag {bis['quadraticflag']}",
        "",
        "# written by potflow; the reference potential of the fit (overlaid in the .snap.mod):",
        f"# units {ref['units']}",
        f"# atom_style {ref['atom_style']}",
        f"# pair_style {ref['pair_style']}",
        *[f"# pair_coeff {line}" for line in ref["pair_coeff"]],
    ]
    return "\n".join(lines) + "\n"


def export_snap(model, cfg, out_dir, name, model_file=None, info=None, check=True):
    """Write the ``pair_style snap`` files of the linear ``model``; returns the record.

    The files are staged beside the destination and replace it only after LAMMPS, running
    them, reproduces the model plus the reference on a probe cell (``check_export``).
    """
    where = model_file or "model"
    elements = list(cfg["bispectrum"]["type"])
    if list(model.elements) != elements:
        raise PotflowInputError(where, f"model elements {model.elements} differ from config bispectrum.type {elements}")
    c0, c = snap_coefficients(model, cfg, where)
    paths = export_paths(out_dir, name, SNAP_SUFFIXES)
    record = {
        "exported_model": str(model_file) if model_file else None,
        "model_info": info or {},
        "elements": elements,
        "coefficients_per_element": c.shape[1] + 1,
        "files": {k: p.name for k, p in paths.items()},
        "pair_commands": snap_pair_commands(cfg, paths["coeff"].name, paths["param"].name),
    }
    comment = (
        f"potflow linear SNAP potential '{name}': elements {' '.join(elements)}\n"
        f"from {Path(model_file).name if model_file else 'an in-memory model'}"
    )
    def write_files(staged):
        write_text(staged["coeff"], format_snapcoeff(cfg, c0, c, comment))
        write_text(staged["param"], format_snapparam(cfg))
        write_text(staged["include"], format_snap_include(cfg, name))

    check_staged = (lambda staged: check_export(model, cfg, staged, where=paths["coeff"])) if check else None
    return publish_export(out_dir, name, SNAP_SUFFIXES, write_files, record, check_staged)


def export_snap_model_file(model_file, cfg, out_dir, name):
    """Export the linear fit's model file (model.pt) as ``pair_style snap`` files."""
    model, info = load_model(model_file)
    return export_snap(model, cfg, out_dir, name, model_file=model_file, info=_plain(info))
