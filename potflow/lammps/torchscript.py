"""The exported network as TorchScript: per-atom energies from descriptors, for Python users."""

import json
import warnings

import torch
from torch import nn

from potflow.fileio import atomic_path


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
