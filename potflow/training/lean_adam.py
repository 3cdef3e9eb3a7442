"""torch's fused Adam with less Python around each step.

At batch 4 a training step is a few dozen small tensor operations, and ``Adam.step`` spent
about a tenth of it in Python before its one fused kernel: the step hooks and profiler scope of
``Optimizer.step`` and ``_init_group``'s walk over every parameter, which builds the state
lists anew each time. ``LeanAdam.step`` hands the lists straight to ``torch.optim.adam.adam``
(the same functional form ``Adam.step`` calls, with the same arguments) once every parameter
that has a gradient has its state; the first step, a closure, or any setting this path does not
cover goes through ``Adam.step`` itself. The parameters, the state and ``state_dict`` are those
of ``torch.optim.Adam`` to the bit (tests/test_training.py).
"""

import torch
from torch.optim.adam import adam


class LeanAdam(torch.optim.Adam):
    """``torch.optim.Adam(params, lr, fused=True)`` with a shorter path to its fused kernel."""

    def __init__(self, params, lr):
        super().__init__(params, lr=lr, fused=True)

    def _lean_path_applies(self):
        if len(self.param_groups) != 1:
            return False
        g = self.param_groups[0]
        plain = not (g["amsgrad"] or g["maximize"] or g["capturable"] or g["differentiable"])
        return plain and g["fused"] and getattr(self, "grad_scale", None) is None

    def step(self, closure=None):
        if closure is not None or not self._lean_path_applies():
            return super().step(closure)
        group = self.param_groups[0]
        params = [p for p in group["params"] if p.grad is not None]
        if not params:
            return None
        states = [self.state.get(p) for p in params]
        if any(not s for s in states):  # a parameter's first step: Adam makes its state
            return super().step()
        beta1, beta2 = group["betas"]
        with torch.no_grad():
            adam(
                params, [p.grad for p in params], [s["exp_avg"] for s in states], [s["exp_avg_sq"] for s in states],
                [], [s["step"] for s in states], fused=True, amsgrad=False, beta1=beta1, beta2=beta2,
                lr=group["lr"], weight_decay=group["weight_decay"], eps=group["eps"], maximize=False,
                decoupled_weight_decay=group["decoupled_weight_decay"],
            )  # fmt: skip
        return None
