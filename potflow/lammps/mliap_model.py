"""The network in LAMMPS's ``mliap model nn`` file format, written and read back.

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
"""

import copy
import dataclasses
from pathlib import Path

import numpy as np

from potflow.config.load import LAMMPS_ACTIVATIONS
from potflow.errors import PotflowInputError

MAX_PER_LINE = 30  # LAMMPS's reader refuses longer weight lines


MAX_LINE_CHARS = 1000  # it reads lines into a 1024-byte buffer


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
            layer = m.nets[e if m.layout.per_element_networks else 0].layers[li]
            w = layer.weight.detach().numpy().copy()
            b = layer.bias.detach().numpy().copy()
            if li == 0 and m.layout.one_hot_input:
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


def check_lammps_activation(activation, where="config"):
    """LAMMPS silently runs any activation it does not know as linear: refuse those."""
    if activation not in LAMMPS_ACTIVATIONS:
        raise PotflowInputError(
            where,
            f"config field 'pytorch.activation': '{activation}' cannot be exported to LAMMPS "
            f"ML-IAP, which knows only {', '.join(LAMMPS_ACTIVATIONS)} (any other name runs as linear)",
        )
