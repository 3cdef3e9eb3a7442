"""Export a fitted model to LAMMPS ML-IAP (``pair_style mliap model nn``) and to TorchScript.

Files (``{name}`` is ``outfile.potential``): ``{name}.mliap.model``, ``{name}.mliap.descriptor``,
``{name}.mod`` (the ``pair_style``/``pair_coeff``/``mass`` lines to ``include``),
``{name}.torchscript.pt`` and ``{name}.export.json`` (which model file was exported).

The export checks itself: LAMMPS must reproduce the torch model (``potflow.lammps.self_check``).
"""

import hashlib
import json
import os
import tempfile
from pathlib import Path

import numpy as np

from potflow.descriptors.snap_index import duplicate_descriptor_sets, num_descriptors
from potflow.errors import PotflowInputError
from potflow.fileio import write_json, write_text
from potflow.lammps.inputs import (
    SUFFIXES,
    export_paths,
    format_descriptor_file,
    format_include,
    pair_commands,
)
from potflow.lammps.mliap_model import (
    check_lammps_activation,
    format_model_file,
    lammps_network,
    read_model_file,
)
from potflow.lammps.self_check import check_export
from potflow.lammps.torchscript import save_torchscript
from potflow.models.files import load_model


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def export_model(model, cfg, out_dir, name, model_file=None, info=None, check=True):
    """Write every export file of ``model`` for the config ``cfg``; returns the record."""
    check_lammps_activation(model.activation, where=model_file or "model")
    elements = list(cfg["bispectrum"]["type"])
    if list(model.elements) != elements:
        raise PotflowInputError(
            model_file or "model",
            f"model elements {model.elements} differ from config bispectrum.type {elements}",
        )
    bis = cfg["bispectrum"]
    dups = duplicate_descriptor_sets(bis["twojmax"], len(elements)) if bis["chemflag"] else []

    K = num_descriptors(bis["twojmax"], bis["chemflag"], len(elements))
    if model.num_desc != K:
        raise PotflowInputError(
            model_file or "model", f"model has {model.num_desc} descriptors, the config gives {K}"
        )
    net = lammps_network(model, dups)
    paths = export_paths(out_dir, name)
    record = {
        "exported_model": str(model_file) if model_file else None,
        "exported_model_sha256": sha256(model_file) if model_file else None,
        "model_info": info or {},
        "elements": elements,
        "multi_element_option": int(model.layout),
        "activation": model.activation,
        "layer_sizes": [net.num_desc, *net.layer_sizes],
        "nparams_per_element": net.nparams,
        "chemflag_duplicate_sets": len(dups),
        "files": {k: p.name for k, p in paths.items()},
        "pair_commands": pair_commands(
            cfg, f"{name}{SUFFIXES['model']}", f"{name}{SUFFIXES['descriptor']}"
        ),
    }
    comment = (
        f"potflow potential '{name}': elements {' '.join(elements)}, multi_element_option {int(model.layout)}\n"
        f"from {Path(model_file).name if model_file else 'an in-memory model'}"
    )

    # Stage every file beside the destination; they replace it only after the self-check.
    def write_files(staged):
        write_text(staged["model"], format_model_file(net, comment))
        back = read_model_file(staged["model"], elements)
        for a, b in zip(
            [net.shift, net.scale, *net.weights, *net.biases],
            [back.shift, back.scale, *back.weights, *back.biases],
            strict=True,
        ):
            if not np.array_equal(a, b):
                raise RuntimeError(
                    f"{paths['model']}: the written file does not read back bit for bit"
                )
        write_text(staged["descriptor"], format_descriptor_file(cfg))
        write_text(staged["include"], format_include(cfg, name))
        save_torchscript(staged["torchscript"], net, record)

    check_staged = (lambda staged: check_export(model, cfg, staged, where=paths["model"])) if check else None
    return publish_export(out_dir, name, SUFFIXES, write_files, record, check_staged)


def publish_export(out_dir, name, suffixes, write_files, record, check=None):
    """Write an export's files (``write_files(staged_paths)``) staged beside ``out_dir``, run
    ``check(staged_paths)`` into ``record["self_check"]``, then move them in place, the record
    (the last of ``suffixes``) last: its presence means a complete, checked export."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = export_paths(out_dir, name, suffixes)
    with tempfile.TemporaryDirectory(prefix=f".{name}.", dir=out_dir) as tmp:
        staged = export_paths(tmp, name, suffixes)
        write_files(staged)
        if check is not None:
            record["self_check"] = check(staged)
        write_json(staged["record"], record)
        for key in suffixes:
            os.replace(staged[key], paths[key])
    return record


def export_model_file(model_file, cfg, out_dir, name):
    """Export the model file (the one the metrics describe) written by ``save_model``."""
    model, info = load_model(model_file)
    return export_model(model, cfg, out_dir, name, model_file=model_file, info=_plain(info))


def _plain(obj):
    """JSON-safe copy of a model's info (tensors become numbers or lists)."""
    return json.loads(
        json.dumps(obj, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o))
    )
