"""Per-atom energy networks on standardised SNAP descriptors.

E_config = sum_i E_atom(B_i, element_i).  ``multi_element_option``:
  1  one network for every element (one shared shift/scale);
  2  one network per element (per-element shift/scale);
  3  one shared network whose input is [standardised B, one-hot element].

``energy_and_gradient`` returns per-atom energies and dE/dB written out analytically
(no double backward), so the force loss needs only one backward pass.
"""

import torch
from torch import nn

_ACT = {
    "linear": (lambda z: z, lambda z, h: torch.ones_like(z)),
    "tanh": (torch.tanh, lambda z, h: 1.0 - h * h),
    "sigmoid": (torch.sigmoid, lambda z, h: h * (1.0 - h)),
    "relu": (torch.relu, lambda z, h: (z > 0).to(z.dtype)),
    "silu": (nn.functional.silu, lambda z, h: torch.sigmoid(z) * (1.0 + z * (1.0 - torch.sigmoid(z)))),
    "softplus": (nn.functional.softplus, lambda z, h: torch.sigmoid(z)),
}


class MLP(nn.Module):
    """Linear layers with one activation between them; the last layer is linear with 1 output."""

    def __init__(self, sizes, activation):
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:], strict=False))
        self.activation = activation
        self._act, self._dact = _ACT[activation]

    def forward(self, x):
        return self.energy_and_gradient(x, need_gradient=False)[0]

    def energy_and_gradient(self, x, need_gradient=True):
        """(E (A,), dE/dx (A, n_in) or None)."""
        zs, hs = [], []
        h = x
        for layer in self.layers[:-1]:
            z = layer(h)
            h = self._act(z)
            zs.append(z)
            hs.append(h)
        energy = self.layers[-1](h).squeeze(-1)
        if not need_gradient:
            return energy, None
        g = self.layers[-1].weight.expand(x.shape[0], -1)
        for layer, z, h in zip(reversed(self.layers[:-1]), reversed(zs), reversed(hs), strict=True):
            g = (g * self._dact(z, h)) @ layer.weight
        return energy, g


class AtomicEnergyModel(nn.Module):
    """The fitted potential: standardisation + network(s). Buffers hold shift/scale (n_el, K)."""

    def __init__(self, num_desc, hidden, elements, option=1, activation="tanh"):
        super().__init__()
        self.num_desc = int(num_desc)
        self.hidden = [int(h) for h in hidden]
        self.elements = list(elements)
        self.option = int(option)
        self.activation = activation
        n_el = len(self.elements)
        n_in = self.num_desc + (n_el if self.option == 3 else 0)
        n_nets = n_el if self.option == 2 else 1
        self.nets = nn.ModuleList(MLP([n_in, *self.hidden, 1], activation) for _ in range(n_nets))
        self.register_buffer("shift", torch.zeros(n_el, self.num_desc))
        self.register_buffer("scale", torch.ones(n_el, self.num_desc))

    def hyperparameters(self):
        return {
            "num_desc": self.num_desc,
            "hidden": self.hidden,
            "elements": self.elements,
            "option": self.option,
            "activation": self.activation,
        }

    @torch.no_grad()
    def set_standardisation(self, descriptors, types):
        """Shift/scale from training atoms only (per element for option 2, shared otherwise)."""
        B = torch.as_tensor(descriptors, dtype=torch.float64)
        t = torch.as_tensor(types, dtype=torch.long)
        groups = [t == e for e in range(len(self.elements))] if self.option == 2 else [torch.ones_like(t, dtype=torch.bool)]
        for e, mask in enumerate(groups):
            x = B[mask] if mask.any() else B
            mean = x.mean(0)
            std = x.std(0, unbiased=False) if len(x) > 1 else torch.zeros_like(mean)
            std = torch.where(std > 1e-12 * (1 + mean.abs()), std, torch.ones_like(std))
            rows = [e] if self.option == 2 else list(range(len(self.elements)))
            self.shift[rows] = mean.to(self.shift.dtype)
            self.scale[rows] = std.to(self.scale.dtype)

    def energy_and_gradient(self, B, types, need_gradient=True):
        """Per-atom energies (A,) and dE/dB (A, K) for descriptors B (A, K) of elements ``types``."""
        types = types.long()
        x = (B - self.shift[types]) / self.scale[types]
        if self.option == 3:
            onehot = nn.functional.one_hot(types, len(self.elements)).to(x.dtype)
            x = torch.cat([x, onehot], dim=1)
        if self.option != 2:
            e, g = self.nets[0].energy_and_gradient(x, need_gradient)
            if g is not None:
                g = g[:, : self.num_desc] / self.scale[types]
            return e, g
        energy = B.new_zeros(B.shape[0])
        grad = B.new_zeros(B.shape) if need_gradient else None
        for el, net in enumerate(self.nets):
            idx = (types == el).nonzero().squeeze(1)
            if idx.numel() == 0:
                continue
            e, g = net.energy_and_gradient(x.index_select(0, idx), need_gradient)
            energy = energy.index_put((idx,), e)
            if need_gradient:
                grad = grad.index_put((idx,), g / self.scale[el])
        return energy, grad

    def forward(self, B, types):
        return self.energy_and_gradient(B, types, need_gradient=False)[0]


def predict(model, B, types, natoms, grad_values=None, grad_index=None, grad_config=None):
    """Configuration energies (M,) and forces (A, 3) of a batch.

    ``grad_index`` rows (i, j, a) count atoms in the batch; forces are
    F_j^a = -sum_rows dE/dB_i . grad_values[row]. ``natoms`` (M,) splits atoms into configurations.
    """
    need = grad_values is not None and len(grad_values) > 0
    e_atom, dEdB = model.energy_and_gradient(B, types, need_gradient=need)
    config_of_atom = torch.repeat_interleave(torch.arange(len(natoms), device=B.device), natoms)
    energy = B.new_zeros(len(natoms)).index_add(0, config_of_atom, e_atom)
    forces = B.new_zeros(B.shape[0] * 3)
    if need:
        i, j, a = grad_index[:, 0].long(), grad_index[:, 1].long(), grad_index[:, 2].long()
        contrib = (dEdB.index_select(0, i) * grad_values.to(dEdB.dtype)).sum(1)
        forces = forces.index_add(0, j * 3 + a, -contrib)
    return energy, forces.view(-1, 3), e_atom


MODEL_FORMAT = "potflow-model"


def model_record(model, **info):
    """Plain tensors and builtins only, so ``torch.load(weights_only=True)`` reads it back."""
    return {
        "format": MODEL_FORMAT,
        "version": 1,
        "hyperparameters": model.hyperparameters(),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "info": info,
    }


def save_model(path, model, **info):
    """Write a model file atomically; ``info`` says which model it is (epoch, selection...)."""
    from potflow.fileio import atomic_path

    with atomic_path(path) as tmp:
        torch.save(model_record(model, **info), tmp)


def model_from_record(record, where="model"):
    from potflow.errors import PotflowInputError

    if not isinstance(record, dict) or record.get("format") != MODEL_FORMAT:
        raise PotflowInputError(where, "not a potflow model file")
    hp = record["hyperparameters"]
    model = AtomicEnergyModel(hp["num_desc"], hp["hidden"], hp["elements"], hp["option"], hp["activation"])
    state = record["state_dict"]
    model.to(next(iter(state.values())).dtype)
    model.load_state_dict(state)
    return model


def load_model(path, map_location="cpu"):
    """(model, info) from a file written by ``save_model``; never unpickles arbitrary objects."""
    from potflow.errors import PotflowInputError

    try:
        record = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise PotflowInputError(path, "model file does not exist") from None
    except Exception as exc:
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise PotflowInputError(path, f"not a readable potflow model file (refused to unpickle: {msg[:200]})") from None
    return model_from_record(record, path), record.get("info", {})
