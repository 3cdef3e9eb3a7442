"""Per-atom energy networks on standardised SNAP descriptors.

E_config = sum_i E_atom(B_i, element_i). How several elements share networks is FitSNAP's
``multi_element_option``, named here by ``ElementLayout``:
  1  SHARED       one network for every element (one shared shift/scale);
  2  PER_ELEMENT  one network per element (per-element shift/scale);
  3  ONE_HOT      one shared network whose input is [standardised B, one-hot element].

``energy_and_gradient`` returns per-atom energies and dE/dB written out analytically
(no double backward), so the force loss needs only one backward pass. The training loss goes
further: ``MLP.energy_gradient_tape`` and ``MLP.parameter_gradients`` write out the chain rule
of that backward pass too (the gradients of a loss in E and dE/dx with respect to the weights),
so an epoch builds no autograd graph at all.

``start_from_linear`` makes a network start at a linear SNAP fit, E_atom = beta_e . B + beta0_e,
while staying a plain MLP (what LAMMPS's ``mliap model nn`` runs): hidden neuron 0 of every
layer carries u = beta . B on the nearly linear stretch of the activation (tanh, sigmoid:
|z - z0| <= 1e-3, where the curvature changes u by at most ~1e-6 of itself; relu, linear:
exactly linear), and only the output weight of that neuron is non-zero. ``hold_linear_path`` keeps that path fixed while the
other neurons learn what the linear model misses.
"""

import enum

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

_aten = torch.ops.aten


def _generic_chain(act):
    """(g sigma'(z), dL/dz) of an activation, from its sigma' and sigma'' (see _CHAIN)."""
    d1 = _ACT[act][1]
    d2 = {
        "silu": lambda z, h: torch.sigmoid(z) * (1.0 - torch.sigmoid(z)) * (2.0 + z * (1.0 - 2.0 * torch.sigmoid(z))),
        "softplus": lambda z, h: torch.sigmoid(z) * (1.0 - torch.sigmoid(z)),
    }[act]
    return (lambda g, z, h: g * d1(z, h), lambda z, h, hb, sb: hb * d1(z, h) + sb * d2(z, h))


# The chain rule of each activation in fused torch kernels: (g, z, h) -> g * sigma'(z), and
# (z, h, h_bar, s_bar) -> dL/dz = h_bar sigma'(z) + s_bar sigma''(z) for dL/dh = h_bar and
# dL/d(sigma'(z)) = s_bar (h = sigma(z)). tanh: sigma'' = -2 h sigma'; sigmoid:
# sigma'' = sigma' (1 - 2h); relu and linear: sigma'' = 0.
_CHAIN = {
    "linear": (lambda g, z, h: g.expand_as(h), lambda z, h, hb, sb: hb),
    "tanh": (
        lambda g, z, h: _aten.tanh_backward(g, h),
        lambda z, h, hb, sb: _aten.tanh_backward(torch.addcmul(hb, h, sb, value=-2.0), h),
    ),
    "sigmoid": (
        lambda g, z, h: _aten.sigmoid_backward(g, h),
        lambda z, h, hb, sb: _aten.sigmoid_backward(torch.addcmul(hb + sb, h, sb, value=-2.0), h),
    ),
    "relu": (
        lambda g, z, h: _aten.threshold_backward(g.expand_as(h), z, 0.0),
        lambda z, h, hb, sb: _aten.threshold_backward(hb, z, 0.0),
    ),
    "silu": _generic_chain("silu"),
    "softplus": _generic_chain("softplus"),
}


# Where each activation is (nearly) linear: z0, sigma(z0), sigma'(z0), and the largest |z - z0|
# the linear path takes over the training atoms. tanh and sigmoid have sigma''(z0) = 0, so they
# bend u by ~(z - z0)^2 / 3 <= 3e-7 of itself; relu and linear are exactly linear there. silu and
# softplus bend at second order everywhere (and LAMMPS cannot run them): no linear start.
_LINEAR_POINT = {
    "linear": (0.0, 0.0, 1.0, 1.0),
    "tanh": (0.0, 0.0, 1.0, 1.0e-3),
    "sigmoid": (0.0, 0.5, 0.25, 1.0e-3),
    "relu": (1.0, 1.0, 1.0, 0.5),
}


class ElementLayout(enum.IntEnum):
    """How the elements share networks (``multi_element_option``); the data layer asks the
    model's layout how to lay out the network's inputs."""

    SHARED = 1
    PER_ELEMENT = 2
    ONE_HOT = 3

    @property
    def per_element_networks(self):
        """One network per element; its atoms are fed element by element."""
        return self is ElementLayout.PER_ELEMENT

    @property
    def one_hot_input(self):
        """The element's one-hot vector is appended to the standardised descriptors."""
        return self is ElementLayout.ONE_HOT

    def input_width(self, num_desc, n_elements):
        return num_desc + (n_elements if self.one_hot_input else 0)

    def network_count(self, n_elements):
        return n_elements if self.per_element_networks else 1


def _first_columns(weight, n_cols):
    """The first ``n_cols`` columns of a weight matrix (itself when that is all of them: a
    slice is one more operation in a step of ~80 small ones)."""
    return weight if n_cols == weight.shape[1] else weight[:, :n_cols]


class MLP(nn.Module):
    """Linear layers with one activation between them; the last layer is linear with 1 output."""

    def __init__(self, sizes, activation):
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:], strict=False))
        self.activation = activation
        self._act, self._dact = _ACT[activation]
        self._times_dact, self._z_bar = _CHAIN[activation]

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

    def energy_gradient_tape(self, x, n_cols):
        """(E (A,), dE/dx[:, :n_cols] (A, n_cols), tape), without an autograd graph.

        The tape keeps what ``parameter_gradients`` needs: the weights and biases, the inputs h_k
        and pre-activations z_k of each layer, and d_k = dE/dh_k and a_k = dE/dz_k of each
        hidden layer.
        """
        weights = [layer.weight for layer in self.layers]
        biases = [layer.bias for layer in self.layers]
        n_hidden = len(weights) - 1
        hs, zs = [x], []
        h = x
        for k in range(n_hidden):
            z = torch.addmm(biases[k], h, weights[k].t())
            h = self._act(z)
            zs.append(z)
            hs.append(h)
        out_w = weights[-1][0]
        energy = torch.addmv(biases[-1], h, out_w)
        if not n_hidden:
            return energy, out_w[:n_cols].expand(x.shape[0], n_cols), (weights, biases, hs, zs, [], [])
        # dE/dx by the chain rule, from the output down: d_k = dE/dh_k, a_k = dE/dz_k = d_k sigma'(z_k)
        ds, as_ = [None] * n_hidden, [None] * n_hidden
        d = out_w
        for k in range(n_hidden - 1, -1, -1):
            ds[k] = d
            as_[k] = a = self._times_dact(d, zs[k], hs[k + 1])
            d = torch.mm(a, weights[k] if k else _first_columns(weights[0], n_cols))
        return energy, d, (weights, biases, hs, zs, ds, as_)

    def parameter_gradients(self, tape, e_bar, g_bar):
        """dL/d(weights, biases) of a loss L with dL/dE = ``e_bar`` (A,) and dL/d(dE/dx) =
        ``g_bar`` (A, n_cols), for the tape of ``energy_gradient_tape``: the chain rule through
        the energy and through its input gradient, written out (autograd's double backward,
        without its graph; call it under ``torch.no_grad``). Returns the gradients in
        ``parameters()`` order."""
        weights, _, hs, zs, ds, as_ = tape
        n_hidden = len(weights) - 1
        n_cols = g_bar.shape[1]
        out_w = weights[-1][0]
        w_out_bar = torch.mm(e_bar[None, :], hs[-1])  # the energy's share
        if not n_hidden:
            w_out_bar[0, :n_cols] += g_bar.sum(0)
            return [w_out_bar, e_bar.sum().reshape(1)]
        # the dE/dx chain, from the input up: d_(k-1) = a_k W_k and a_k = d_k sigma'(z_k),
        # d_k = a_(k+1) W_(k+1) (the output weights for the last hidden layer)
        gw = [None] * n_hidden
        s_bars = [None] * n_hidden  # dL/d(sigma'(z_k))
        d_bar = g_bar
        for k in range(n_hidden):
            w = weights[k] if k else _first_columns(weights[0], n_cols)
            a_bar = torch.mm(d_bar, w.t())
            gw[k] = torch.mm(as_[k].t(), d_bar)
            s_bars[k] = a_bar * ds[k]
            d_bar = self._times_dact(a_bar, zs[k], hs[k + 1])
        w_out_bar[0] += d_bar.sum(0)
        # the energy, from the output down; z_k also reaches L through sigma'(z_k)
        grads = [w_out_bar, e_bar.sum().reshape(1)]
        h_bar = e_bar[:, None] * out_w
        for k in range(n_hidden - 1, -1, -1):
            z_bar = self._z_bar(zs[k], hs[k + 1], h_bar, s_bars[k])
            if k or n_cols == weights[0].shape[1]:
                gw[k] = torch.addmm(gw[k], z_bar.t(), hs[k])
            else:
                first = torch.mm(z_bar.t(), hs[0])
                first[:, :n_cols] += gw[0]
                gw[0] = first
            grads[:0] = [gw[k], z_bar.sum(0)]
            if k:
                h_bar = torch.mm(z_bar, weights[k])
        return grads


class AtomicEnergyModel(nn.Module):
    """The fitted potential: standardisation + network(s). Buffers hold shift/scale (n_el, K)."""

    def __init__(self, num_desc, hidden, elements, option=1, activation="tanh"):
        super().__init__()
        self.num_desc = int(num_desc)
        self.hidden = [int(h) for h in hidden]
        self.elements = list(elements)
        self.layout = ElementLayout(int(option))
        self.activation = activation
        n_el = len(self.elements)
        n_in = self.layout.input_width(self.num_desc, n_el)
        n_nets = self.layout.network_count(n_el)
        self.nets = nn.ModuleList(MLP([n_in, *self.hidden, 1], activation) for _ in range(n_nets))
        self.register_buffer("shift", torch.zeros(n_el, self.num_desc))
        self.register_buffer("scale", torch.ones(n_el, self.num_desc))

    def hyperparameters(self):
        return {
            "num_desc": self.num_desc,
            "hidden": self.hidden,
            "elements": self.elements,
            "option": int(self.layout),
            "activation": self.activation,
        }

    @torch.no_grad()
    def set_standardisation(self, descriptors, types):
        """Shift/scale from training atoms only (per element for option 2, shared otherwise)."""
        B = torch.as_tensor(descriptors, dtype=torch.float64)
        t = torch.as_tensor(types, dtype=torch.long)
        n_el = len(self.elements)
        count = torch.stack([(t == e).sum() for e in range(n_el)]).to(torch.float64)
        mean = torch.stack([B[t == e].mean(0) if count[e] else B.new_zeros(B.shape[1]) for e in range(n_el)])
        m2 = torch.stack([((B[t == e] - mean[e]) ** 2).sum(0) for e in range(n_el)])
        self.set_standardisation_moments(count, mean, m2)

    @torch.no_grad()
    def set_standardisation_moments(self, count, mean, m2):
        """Shift/scale from per-element moments of the training atoms.

        ``count`` (n_el,), ``mean`` (n_el, K) and ``m2`` (n_el, K, sums of squared deviations)
        are merged over elements for options 1 and 3; option 2 keeps one row per element
        (an element without training atoms gets the pooled values). A constant descriptor
        keeps scale 1.
        """
        count = torch.as_tensor(count, dtype=torch.float64)
        mean = torch.as_tensor(mean, dtype=torch.float64)
        m2 = torch.as_tensor(m2, dtype=torch.float64)
        total = count.sum()
        pooled_mean = (count[:, None] * mean).sum(0) / total
        pooled_m2 = (m2 + count[:, None] * (mean - pooled_mean) ** 2).sum(0)
        pooled_std = (pooled_m2 / total).sqrt()
        if self.layout.per_element_networks:
            has = count > 0
            shift = torch.where(has[:, None], mean, pooled_mean)
            std = torch.where(has[:, None], (m2 / count.clamp(min=1)[:, None]).sqrt(), pooled_std)
        else:
            shift = pooled_mean.expand_as(mean)
            std = pooled_std.expand_as(mean)
        std = torch.where(std > 1e-12 * (1 + shift.abs()), std, torch.ones_like(std))
        self.shift.copy_(shift)
        self.scale.copy_(std)

    @torch.no_grad()
    def set_energy_offsets(self, per_element, spread=1.0):
        """Start the output layers at the energy scale of the data.

        The biases start at the mean energy per atom of each element (eV) and the output
        weights are multiplied by ``spread`` (eV), the spread of the energies per atom about
        those means, so that a bounded activation (tanh, sigmoid) can reach the whole range
        of energies without first growing its weights. Option 2 gives each element's network
        its own offset; options 1 and 3 share one network, which starts at the mean offset.
        """
        mu = torch.as_tensor(per_element, dtype=torch.float64)
        for net in self.nets:
            net.layers[-1].weight.mul_(float(spread))
        if self.layout.per_element_networks:
            for net, m in zip(self.nets, mu, strict=True):
                net.layers[-1].bias.fill_(float(m))
        else:
            self.nets[0].layers[-1].bias.fill_(float(mu.mean()))

    def supports_linear_start(self):
        """A linear SNAP fit (one beta per element) fits into the networks: one element, or
        one network per element, and an activation with a linear stretch (not silu, softplus)."""
        shared_ok = len(self.elements) == 1 or self.layout.per_element_networks
        return shared_ok and self.activation in _LINEAR_POINT

    @torch.no_grad()
    def start_from_linear(self, beta, beta0, u_min, u_max):
        """Set the networks to the linear SNAP model E_atom = beta_e . B + beta0_e.

        ``beta`` (n_el, K), ``beta0`` (n_el,) in eV; ``u_min``/``u_max`` (n_el,) the range of
        beta_e . B over the training atoms (sets the path's scale). The standardisation must be
        set first. Without hidden layers the network is the linear model itself.
        """
        beta = torch.as_tensor(beta, dtype=torch.float64)
        beta0 = torch.as_tensor(beta0, dtype=torch.float64)
        z0, s0, d0, amplitude = _LINEAR_POINT[self.activation]
        for e, net in enumerate(self.nets):
            el = e if self.layout.per_element_networks else 0
            bx = beta[el] * self.scale[el].double()  # weights on the standardised inputs
            c = float(beta[el] @ self.shift[el].double() + beta0[el])  # u = bx . x + c - beta0
            layers = net.layers
            first = layers[0]
            if len(layers) == 1:  # no hidden layer: the linear model exactly
                first.weight.zero_()
                first.weight[0, : self.num_desc] = bx
                first.bias.fill_(c)
                continue
            lo, hi = float(u_min[el]), float(u_max[el])
            mid = 0.5 * (lo + hi)
            eps = amplitude / max(0.5 * (hi - lo), 1e-12)
            # layer 1: z = z0 + eps (u - mid), u = beta . B (the standardised form of it)
            first.weight[0].zero_()
            first.weight[0, : self.num_desc] = eps * bx
            first.bias[0] = z0 + eps * (c - float(beta0[el]) - mid)
            for layer in layers[1:-1]:  # the next layers pass (h - s0) / d0 on, alone
                layer.weight[0].zero_()
                layer.weight[0, 0] = 1.0 / d0
                layer.bias[0] = z0 - s0 / d0
            out = layers[-1]
            out.weight.zero_()
            out.weight[0, 0] = 1.0 / (d0 * eps)
            out.bias.fill_(float(beta0[el]) + mid - s0 / (d0 * eps))

    def linear_path_masks(self):
        """{parameter: mask}: 0 on the linear path of ``start_from_linear`` (neuron 0's inputs and
        bias in every hidden layer, and its output weight), 1 elsewhere; networks without a
        hidden layer have none."""
        masks = {}
        for net in self.nets:
            layers = net.layers
            if len(layers) == 1:
                continue
            for li, layer in enumerate(layers):
                for name, p in (("weight", layer.weight), ("bias", layer.bias)):
                    mask = torch.ones_like(p)
                    if li < len(layers) - 1:
                        mask[0] = 0.0  # neuron 0's inputs and bias
                    elif name == "weight":
                        mask[0, 0] = 0.0  # the output weight of neuron 0
                    else:
                        continue  # the output bias keeps learning (an energy offset)
                    masks[p] = mask
        return masks

    def hold_linear_path(self):
        """Keep the linear path of ``start_from_linear`` fixed: its weights get zero gradients
        (their optimiser steps are then zero too), through autograd's hooks and, for gradients
        set without autograd, ``held_masks``. Returns the hook handles."""
        masks = self.linear_path_masks()
        self.held_masks = {id(p): mask for p, mask in masks.items()}
        return [p.register_hook(lambda g, m=mask: g * m.to(g.dtype)) for p, mask in masks.items()]

    def standardised_energy_gradient_tape(self, x, element_counts=None):
        """``standardised_energy_and_gradient`` (with the gradient) without an autograd graph,
        and the tape that ``accumulate_gradients`` takes back."""
        K = self.num_desc
        if not self.layout.per_element_networks:
            e, g, tape = self.nets[0].energy_gradient_tape(x, K)
            return e, g, [(self.nets[0], tape, x.shape[0])]
        energies, grads, tapes = [], [], []
        for net, part in zip(self.nets, torch.split(x, list(element_counts)), strict=True):
            if part.shape[0]:
                e, g, tape = net.energy_gradient_tape(part, K)
                energies.append(e)
                grads.append(g)
                tapes.append((net, tape, part.shape[0]))
        if len(energies) == 1:
            return energies[0], grads[0], tapes
        return torch.cat(energies), torch.cat(grads), tapes

    def accumulate_gradients(self, tapes, e_bar, g_bar):
        """Add dL/d(parameters) to each parameter's ``.grad`` for a loss L with dL/dE_atom =
        ``e_bar`` (A,) and dL/d(dE/dx) = ``g_bar`` (A, K) at the tapes of
        ``standardised_energy_gradient_tape``. As with autograd, a network without atoms in the
        batch gets no gradient, and a held linear path (``hold_linear_path``) gets zeros.
        Call it under ``torch.no_grad``."""
        masks = getattr(self, "held_masks", {})
        if len(tapes) == 1:  # one network: no split (two operations fewer in a small step)
            shares = [(e_bar, g_bar)]
        else:
            sizes = [n for _, _, n in tapes]
            shares = zip(e_bar.split(sizes), g_bar.split(sizes), strict=True)
        for (net, tape, _), (eb, gb) in zip(tapes, shares, strict=True):
            weights, biases = tape[0], tape[1]
            params = [p for pair in zip(weights, biases, strict=True) for p in pair]  # parameters() order
            for p, grad in zip(params, net.parameter_gradients(tape, eb, gb), strict=True):
                if id(p) in masks:
                    grad = grad * masks[id(p)].to(grad.dtype)
                if p.grad is None:
                    p.grad = grad
                else:
                    p.grad.add_(grad)

    def standardised_energy_and_gradient(self, x, element_counts=None, need_gradient=True):
        """Per-atom energies (A,) and dE/dx (A, K) for standardised inputs ``x``.

        ``x`` = (B - shift) / scale, with the one-hot element columns appended for option 3.
        For option 2 the atoms come ordered by element, ``element_counts[e]`` of element e,
        so each network sees one contiguous slice (no index lists, no host sync).
        The training loop uses this; ``energy_and_gradient`` does the standardisation itself.
        """
        if not self.layout.per_element_networks:
            e, g = self.nets[0].energy_and_gradient(x, need_gradient)
            if g is not None and self.layout.one_hot_input:
                g = g[:, : self.num_desc]
            return e, g
        energies, grads = [], []
        for net, part in zip(self.nets, torch.split(x, list(element_counts)), strict=True):
            if part.shape[0]:
                e, g = net.energy_and_gradient(part, need_gradient)
                energies.append(e)
                grads.append(g)
        if len(energies) == 1:
            return energies[0], grads[0]
        return torch.cat(energies), (torch.cat(grads) if need_gradient else None)

    def energy_and_gradient(self, B, types, need_gradient=True):
        """Per-atom energies (A,) and dE/dB (A, K) for descriptors B (A, K) of elements ``types``."""
        types = types.long()
        x = (B - self.shift[types]) / self.scale[types]
        if self.layout.one_hot_input:
            onehot = nn.functional.one_hot(types, len(self.elements)).to(x.dtype)
            x = torch.cat([x, onehot], dim=1)
        if not self.layout.per_element_networks:
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
