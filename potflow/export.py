"""Export a fitted model to LAMMPS ML-IAP (``pair_style mliap model nn``) and to TorchScript.

LAMMPS's ``nn`` model gives every element its own copy of one architecture: per element a
shift and scale for the descriptors (it feeds ``(B - shift) / scale`` to the first layer) and
the weights of every layer. Every ``multi_element_option`` is that form, exactly:

  1  one network: each element gets the same weights with its own shift/scale rows;
  2  one network per element;
  3  one network on [standardised B, one-hot]: the one-hot columns add a constant to the
     first layer, so they fold into a per-element first-layer bias.

With ``chemflag 1`` some bispectrum columns are the same function of the positions (they
differ only by the order of equal-j element labels). LAMMPS's force code sums dE/dB over such
a set as if every member had the same value, so the export splits the first-layer weight of
each set evenly over its members: the energy (and so the forces) of the network does not
change, and LAMMPS's forces become exact. Training needs no tying for this.

Files (``{name}`` is ``outfile.potential``): ``{name}.mliap.model``, ``{name}.mliap.descriptor``,
``{name}.mod`` (the ``pair_style``/``pair_coeff``/``mass`` lines to ``include``),
``{name}.torchscript.pt`` and ``{name}.export.json`` (which model file was exported).
"""

import copy
import dataclasses
import hashlib
import json
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from potflow.config import LAMMPS_ACTIVATIONS
from potflow.errors import PotflowInputError
from potflow.fileio import atomic_path, write_json, write_text

MAX_PER_LINE = 30  # LAMMPS's reader refuses longer weight lines
MAX_LINE_CHARS = 1000  # it reads lines into a 1024-byte buffer
DIR_VARIABLE = "potflow_dir"
# Sub-styles of the reference potential that only give compute snap a neighbour list.
PLACEHOLDER_STYLES = ("zero", "none")
SUFFIXES = {
    "model": ".mliap.model",
    "descriptor": ".mliap.descriptor",
    "include": ".mod",
    "torchscript": ".torchscript.pt",
    "record": ".export.json",
}


def export_paths(out_dir, name):
    """The exported files of potential ``name`` in ``out_dir``."""
    return {key: Path(out_dir) / f"{name}{suffix}" for key, suffix in SUFFIXES.items()}


def check_lammps_activation(activation, where="config"):
    """LAMMPS silently runs any activation it does not know as linear: refuse those."""
    if activation not in LAMMPS_ACTIVATIONS:
        raise PotflowInputError(
            where,
            f"config field 'pytorch.activation': '{activation}' cannot be exported to LAMMPS "
            f"ML-IAP, which knows only {', '.join(LAMMPS_ACTIVATIONS)} (any other name runs as linear)",
        )


def bispectrum_triples(twojmax):
    """(j1, j2, j) of each bispectrum component, in LAMMPS's order (twice the angular momenta)."""
    triples = []
    for j1 in range(twojmax + 1):
        for j2 in range(j1 + 1):
            for j in range(j1 - j2, min(twojmax, j1 + j2) + 1, 2):
                if j >= j1:
                    triples.append((j1, j2, j))
    return triples


def duplicate_descriptor_sets(twojmax, nelements):
    """Column sets that are one function of the positions with ``chemflag 1``.

    Column ((e1*n + e2)*n + e3) * len(triples) + t is B_{j1 j2 j}^{e1 e2 e3}; swapping the
    element labels of two equal angular momenta leaves it unchanged.
    """
    triples = bispectrum_triples(twojmax)
    nb = len(triples)
    sets = {}
    for e1 in range(nelements):
        for e2 in range(nelements):
            for e3 in range(nelements):
                col_base = ((e1 * nelements + e2) * nelements + e3) * nb
                for t, js in enumerate(triples):
                    labels = [e1, e2, e3]
                    for j in set(js):
                        pos = [p for p in range(3) if js[p] == j]
                        for p, e in zip(pos, sorted(labels[p] for p in pos), strict=True):
                            labels[p] = e
                    sets.setdefault((t, *labels), []).append(col_base + t)
    return sorted(cols for cols in sets.values() if len(cols) > 1)


@dataclasses.dataclass
class LammpsNetwork:
    """The per-element form LAMMPS runs: float64 arrays, element e in row e of each."""

    elements: list
    activation: str
    shift: np.ndarray  # (n_el, K)
    scale: np.ndarray  # (n_el, K)
    weights: list  # per layer (n_el, out, in)
    biases: list  # per layer (n_el, out)

    @property
    def num_desc(self):
        return self.shift.shape[1]

    @property
    def layer_sizes(self):
        return [w.shape[1] for w in self.weights]

    @property
    def activations(self):
        return [self.activation] * (len(self.weights) - 1) + ["linear"]

    @property
    def nparams(self):
        return sum(w.shape[1] * (w.shape[2] + 1) for w in self.weights)


def _split_evenly(weight, bias, shift, scale, duplicate_sets):
    """First-layer weight of each duplicate set spread evenly over its columns (same energy)."""
    weight, bias = weight.copy(), bias.copy()
    for cols in duplicate_sets:
        raw = weight[:, cols] / scale[cols]  # weight on B itself
        mean = raw.mean(axis=1)
        weight[:, cols] = mean[:, None] * scale[cols]
        # keep z unchanged where the columns are equal: the shift terms move into the bias
        bias += mean * shift[cols].sum() - raw @ shift[cols]
    return weight, bias


def lammps_network(model, duplicate_sets=()):
    """The model in LAMMPS's per-element form (float64), duplicate columns tied."""
    check_lammps_activation(model.activation, where="model")
    m = copy.deepcopy(model).double()
    n_el, K = len(m.elements), m.num_desc
    shift = m.shift.detach().numpy().copy()
    scale = m.scale.detach().numpy().copy()
    weights, biases = [], []
    for li in range(len(m.nets[0].layers)):
        ws, bs = [], []
        for e in range(n_el):
            layer = m.nets[e if m.option == 2 else 0].layers[li]
            w = layer.weight.detach().numpy().copy()
            b = layer.bias.detach().numpy().copy()
            if li == 0 and m.option == 3:
                b = b + w[:, K + e]  # one-hot input of element e
                w = w[:, :K]
            if li == 0 and duplicate_sets:
                w, b = _split_evenly(w, b, shift[e], scale[e], duplicate_sets)
            ws.append(w)
            bs.append(b)
        weights.append(np.stack(ws))
        biases.append(np.stack(bs))
    net = LammpsNetwork(list(m.elements), m.activation, shift, scale, weights, biases)
    arrays = [shift, scale, *weights, *biases]
    if not all(np.isfinite(a).all() for a in arrays):
        raise PotflowInputError(
            "model", "weights or standardisation contain NaN or inf; nothing exported"
        )
    if (scale == 0).any():
        raise PotflowInputError("model", "a descriptor scale is zero; nothing exported")
    return net


# ---------------------------------------------------------------- the model file


def _number_lines(values):
    values = [repr(float(v)) for v in np.asarray(values, dtype=np.float64).ravel()]
    return [" ".join(values[i : i + MAX_PER_LINE]) for i in range(0, len(values), MAX_PER_LINE)]


def format_model_file(net, comment=""):
    """Text of the ``mliap model nn`` file: LF, <= 30 numbers a line, each block on its own lines."""
    lines = [f"# {line}" for line in comment.splitlines()] if comment else []
    lines.append(f"{len(net.elements)} {net.nparams}")
    arch = " ".join(f"{a} {n}" for a, n in zip(net.activations, net.layer_sizes, strict=True))
    lines.append(f"NET {net.num_desc} {len(net.weights)} {arch}")
    for e, element in enumerate(net.elements):
        lines.append(
            f"# element {element}: {net.num_desc} shifts, {net.num_desc} scales, {net.nparams} weights"
        )
        lines += _number_lines(net.shift[e])
        lines += _number_lines(net.scale[e])
        for w, b in zip(net.weights, net.biases, strict=True):
            for node in range(w.shape[1]):
                lines += _number_lines(np.concatenate([[b[e, node]], w[e, node]]))
    return "\n".join(lines) + "\n"


def read_model_file(path, elements=None):
    """Read an ``mliap model nn`` file back, holding it to the rules the writer promises.

    Stricter than LAMMPS (which accepts a wrong count or a truncated file silently): any
    deviation is a PotflowInputError.
    """
    path = Path(path)
    raw = path.read_bytes()

    def bad(msg):
        raise PotflowInputError(path, msg)

    if b"\r" in raw:
        bad("carriage return found: LAMMPS aborts on CRLF line endings")
    rows = []
    for lineno, line in enumerate(raw.decode().split("\n"), start=1):
        if len(line) > MAX_LINE_CHARS:
            bad(f"line {lineno} has {len(line)} characters (LAMMPS reads at most 1023)")
        words = line.split("#", 1)[0].split()
        if words:
            rows.append((lineno, words))
    if len(rows) < 2 or len(rows[0][1]) != 2:
        bad("first line must be 'NELEM NPARAMS'")
    n_el, nparams = int(rows[0][1][0]), int(rows[0][1][1])
    lineno, head = rows[1]
    if head[0] != "NET" or len(head) < 5:
        bad(f"line {lineno}: expected 'NET NDESC NLAYERS act n ...'")
    K, nlayers = int(head[1]), int(head[2])
    if len(head) != 3 + 2 * nlayers:
        bad(f"line {lineno}: NLAYERS is {nlayers} but {(len(head) - 3) / 2} layers follow")
    acts, sizes = head[3::2], [int(n) for n in head[4::2]]
    for act in acts:
        if act not in LAMMPS_ACTIVATIONS:
            bad(
                f"line {lineno}: activation '{act}' is not one LAMMPS knows (it would run as linear)"
            )
    if sizes[-1] != 1 or acts[-1] != "linear":
        bad(f"line {lineno}: the last layer must be 'linear 1'")
    if len(set(acts[:-1])) > 1:
        bad(f"line {lineno}: hidden layers with different activations are not a potflow model")
    ins = [K, *sizes[:-1]]
    if nparams != sum(o * (i + 1) for i, o in zip(ins, sizes, strict=True)):
        bad(f"NPARAMS {nparams} does not match the layer sizes {[K, *sizes]}")

    pos = 2

    def block(count):
        nonlocal pos
        values = []
        while len(values) < count:
            if pos >= len(rows):
                bad(f"file ends inside a block ({len(values)} of {count} numbers)")
            lno, words = rows[pos]
            if len(words) > MAX_PER_LINE:
                bad(f"line {lno} has {len(words)} numbers (at most {MAX_PER_LINE})")
            if len(values) + len(words) > count:
                bad(f"line {lno} crosses the end of a block of {count} numbers")
            try:
                values += [float(w) for w in words]
            except ValueError:
                bad(f"line {lno}: not a number")
            pos += 1
        return np.array(values)

    shift, scale, params = [], [], []
    for _ in range(n_el):
        shift.append(block(K))
        scale.append(block(K))
        params.append(block(nparams))
    if pos != len(rows):
        bad(f"line {rows[pos][0]}: data after the last element block")
    weights, biases = [], []
    offset = 0
    for i, o in zip(ins, sizes, strict=True):
        chunk = np.stack([p[offset : offset + o * (i + 1)].reshape(o, i + 1) for p in params])
        biases.append(chunk[:, :, 0].copy())
        weights.append(chunk[:, :, 1:].copy())
        offset += o * (i + 1)
    activation = acts[0] if len(acts) > 1 else "linear"
    elements = list(elements) if elements is not None else [str(e + 1) for e in range(n_el)]
    return LammpsNetwork(elements, activation, np.stack(shift), np.stack(scale), weights, biases)


# ------------------------------------------------------- descriptor and include files


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
        from potflow.lammps_env import open_lammps

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
    if any(name.startswith("mliap") for name, _ in kept):
        raise PotflowInputError(where, "config field 'reference.pair_style' already contains mliap")
    return kept, coeffs


def pair_commands(cfg, model_file, descriptor_file):
    """The ``pair_style`` and ``pair_coeff`` commands that run the network plus the reference."""
    subs, coeffs = reference_terms(cfg)
    mliap = f"mliap model nn {model_file} descriptor sna {descriptor_file}"
    elements = " ".join(cfg["bispectrum"]["type"])
    if not subs:
        return [f"pair_style {mliap}", f"pair_coeff * * {elements}"]
    styles = " ".join(" ".join([name, *args]) for name, args in subs)
    lines = [f"pair_style hybrid/overlay {styles} {mliap}"]
    lines += [f"pair_coeff {c}" for c in coeffs]
    lines.append(f"pair_coeff * * mliap {elements}")
    return lines


def mass_commands(elements):
    from ase.data import atomic_masses, atomic_numbers

    lines = []
    for t, el in enumerate(elements, start=1):
        if el in atomic_numbers:
            lines.append(f"mass {t} {atomic_masses[atomic_numbers[el]]:.6f}")
        else:
            lines.append(f"# mass {t} ?   # '{el}' is not an element symbol: set its mass yourself")
    return lines


def format_include(cfg, name):
    """The ``.mod`` file: include it after the box exists (read_data / create_box)."""
    elements = cfg["bispectrum"]["type"]
    d = "${" + DIR_VARIABLE + "}"
    ref = cfg["reference"]["pair_style"]
    head = [
        f"# potflow potential '{name}' for LAMMPS (pair_style mliap model nn, descriptor sna)",
        f"# elements (LAMMPS atom types 1..{len(elements)}): {' '.join(elements)}; units metal",
        f"# reference potential of the fit: {ref} (placeholder sub-styles zero/none dropped)",
        "# Include it after the simulation box exists. The files are looked up in",
        f"# ${{{DIR_VARIABLE}}} (default: the current directory); set it with -var {DIR_VARIABLE} DIR.",
        f"variable {DIR_VARIABLE} index .",
    ]
    body = pair_commands(
        cfg, f"{d}/{name}{SUFFIXES['model']}", f"{d}/{name}{SUFFIXES['descriptor']}"
    )
    return "\n".join(head + body + mass_commands(elements)) + "\n"


# ---------------------------------------------------------------- TorchScript


class _ElementLayer(nn.Module):
    def __init__(self, weight, bias, activation):
        super().__init__()
        self.register_buffer("weight", torch.as_tensor(weight, dtype=torch.float64))
        self.register_buffer("bias", torch.as_tensor(bias, dtype=torch.float64))
        self.activation = activation

    def forward(self, h: torch.Tensor, element: int) -> torch.Tensor:
        z = torch.nn.functional.linear(h, self.weight[element], self.bias[element])
        if self.activation == "tanh":
            return torch.tanh(z)
        if self.activation == "sigmoid":
            return torch.sigmoid(z)
        if self.activation == "relu":
            return torch.relu(z)
        return z


class PerAtomEnergy(nn.Module):
    """Per-atom energies (eV, without the reference potential) from SNAP descriptors.

    ``forward(descriptors (A, K) float64, types (A,) element index in ``elements`` order)``.
    Forces: autograd through the descriptors times their position gradients.
    """

    def __init__(self, net):
        super().__init__()
        self.elements = list(net.elements)
        self.num_elements = len(net.elements)
        self.num_desc = int(net.num_desc)
        self.register_buffer("shift", torch.as_tensor(net.shift, dtype=torch.float64))
        self.register_buffer("scale", torch.as_tensor(net.scale, dtype=torch.float64))
        self.layers = nn.ModuleList(
            _ElementLayer(w, b, act)
            for w, b, act in zip(net.weights, net.biases, net.activations, strict=True)
        )

    def forward(self, descriptors: torch.Tensor, types: torch.Tensor) -> torch.Tensor:
        types = types.long()
        energies = descriptors.new_zeros(descriptors.shape[0])
        for element in range(self.num_elements):
            idx = (types == element).nonzero().squeeze(1)
            h = (descriptors.index_select(0, idx) - self.shift[element]) / self.scale[element]
            for layer in self.layers:
                h = layer(h, element)
            energies = energies.index_copy(0, idx, h.squeeze(1))
        return energies


def save_torchscript(path, net, record):
    """TorchScript of the exported network; ``torch.jit.load`` needs no potflow (no pickled classes)."""
    with warnings.catch_warnings():
        # torch 2.13 marks TorchScript deprecated; it is still what torch.jit.load reads
        warnings.simplefilter("ignore", DeprecationWarning)
        module = torch.jit.script(PerAtomEnergy(net))
        with atomic_path(path) as tmp:
            torch.jit.save(
                module, str(tmp), _extra_files={"potflow.json": json.dumps(record, default=str)}
            )


# ------------------------------------------------------------- single points


def _create_cell(lmp, positions, cell, pbc, types, n_types):
    from potflow.descriptors import lammps_frame

    lower, T = lammps_frame(cell)
    (ax, _, _), (bx, by, _), (cx, cy, cz) = (map(float, row) for row in lower)
    bound = " ".join("p" if p else "s" for p in pbc)
    lmp.commands_string(
        f"""units metal
atom_style atomic
atom_modify map array sort 0 0.0
boundary {bound}
region box prism 0 {ax!r} 0 {by!r} 0 {cz!r} {bx!r} {cx!r} {cy!r} units box
create_box {n_types} box
mass * 1.0
"""
    )
    pos = np.asarray(positions, float) @ T.T
    n = len(types)
    lmp.create_atoms(n, list(range(1, n + 1)), [int(t) + 1 for t in types], pos.ravel().tolist())
    if lmp.get_natoms() != n:
        raise RuntimeError(f"LAMMPS created {lmp.get_natoms()} of {n} atoms")
    return T


def lammps_single_point(commands, positions, cell, pbc, types, n_types):
    """Energy, per-atom energies and forces (input frame) of LAMMPS running ``commands``."""
    from lammps import LMP_STYLE_ATOM, LMP_TYPE_VECTOR

    from potflow.lammps_env import open_lammps

    lmp = open_lammps()
    try:
        T = _create_cell(lmp, positions, cell, pbc, types, n_types)
        for command in commands:
            lmp.command(command)
        lmp.commands_string(
            "compute peatom all pe/atom\nthermo_style custom step pe\nrun 0 post no"
        )
        order = np.argsort(np.array(lmp.numpy.extract_atom("id")[: len(types)]))
        energies = np.array(lmp.numpy.extract_compute("peatom", LMP_STYLE_ATOM, LMP_TYPE_VECTOR))[
            order
        ]
        forces = np.array(lmp.numpy.extract_atom("f")[: len(types)])[order] @ T
        return {"energy": float(lmp.get_thermo("pe")), "energies": energies, "forces": forces}
    finally:
        lmp.close()


def torch_single_point(model, cfg, positions, cell, pbc, types, calc=None):
    """The torch model (its own dtype) plus the reference potential, via SnapCalculator.

    Returns energy (with reference), ML per-atom energies, reference energy and forces (with reference).
    """
    from potflow.descriptors import SnapCalculator
    from potflow.model import predict

    own = calc is None
    calc = SnapCalculator(cfg) if own else calc
    try:
        B, ref_e, ref_f, index, values = calc.compute(positions, cell, pbc, types)
    finally:
        if own:
            calc.close()
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
    return {
        "energy": float(e[0]) + ref_e,
        "ml_energies": e_atom.double().numpy(),
        "ref_energy": ref_e,
        "forces": f.double().numpy() + ref_f,
    }


def include_commands(paths):
    """Commands that load an exported potential from its files, wherever they are."""
    directory = str(Path(paths["include"]).resolve().parent)
    return [
        f"variable {DIR_VARIABLE} index {directory}",
        f"include {Path(paths['include']).resolve()}",
    ]


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
    from potflow.descriptors import num_descriptors

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
        "multi_element_option": model.option,
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
        f"potflow potential '{name}': elements {' '.join(elements)}, multi_element_option {model.option}\n"
        f"from {Path(model_file).name if model_file else 'an in-memory model'}"
    )
    # Stage every file beside the destination; they replace it only after the self-check.
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{name}.", dir=out_dir) as tmp:
        staged = export_paths(tmp, name)
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
        if check:
            record["self_check"] = check_export(model, cfg, staged, where=paths["model"])
        write_json(staged["record"], record)
        for key in SUFFIXES:  # the record last: its presence means a complete export
            os.replace(staged[key], paths[key])
    return record


def export_model_file(model_file, cfg, out_dir, name):
    """Export the model file (the one the metrics describe) written by ``save_model``."""
    from potflow.model import load_model

    model, info = load_model(model_file)
    return export_model(model, cfg, out_dir, name, model_file=model_file, info=_plain(info))


def _plain(obj):
    """JSON-safe copy of a model's info (tensors become numbers or lists)."""
    return json.loads(
        json.dumps(obj, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o))
    )
