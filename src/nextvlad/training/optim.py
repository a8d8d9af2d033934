"""The reference's optimiser: Adam with TensorFlow 1's placement of epsilon.

TF1's ``AdamOptimizer`` updates ``θ -= lr_t · m / (√v + ε)`` with ``lr_t = lr · √(1-β2^t) /
(1-β1^t)``; PyTorch's Adam updates ``θ -= lr / (1-β1^t) · m / (√v / √(1-β2^t) + ε)``. The two
agree when PyTorch's epsilon is ``ε / √(1-β2^t)``, which at step 1 is 32 times TF's: with the
per-tensor gradient clipping many gradient elements are about 1e-7, so the difference moves
weights by up to the learning rate. ``ReferenceAdam`` sets that epsilon before every step and
otherwise runs PyTorch's (fused, where available) kernel.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn


class ReferenceAdam(torch.optim.Adam):
    """``torch.optim.Adam`` whose ``eps`` means what TF1's ``epsilon`` means (see module doc).

    The TF epsilon is kept in each parameter group as ``tf_eps``; ``eps`` is rewritten from it
    and the step count before each step. The step count is kept on the host
    (``steps_taken``), so that a step never reads the device's; it is read from the state
    once when a state dict is loaded, so a restored optimizer resumes exactly. A step that the
    fused kernel skipped on the device (``found_inf``, see ``nextvlad.training.step``) is
    taken back with ``forget_steps`` once the host learns of it.
    """

    def __init__(self, params: Iterable[nn.Parameter], lr: float, eps: float, **kwargs: Any):
        super().__init__(params, lr=lr, eps=eps, **kwargs)
        for group in self.param_groups:
            group["tf_eps"] = eps
        self.steps_taken = 0

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> Any:
        t = self.steps_taken + 1
        for group in self.param_groups:
            beta2 = group["betas"][1]
            group["eps"] = group.get("tf_eps", group["eps"]) / math.sqrt(1.0 - beta2**t)
        result = super().step(closure)
        self.steps_taken = t
        return result

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        steps = [int(s["step"]) for s in self.state.values() if "step" in s]  # one read, here
        self.steps_taken = max(steps, default=0)

    def forget_steps(self, count: int) -> None:
        """``count`` of the steps taken were skipped on the device: count them out."""
        self.steps_taken = max(0, self.steps_taken - count)


def adam(parameters: list[nn.Parameter], lr: float, eps: float) -> torch.optim.Adam:
    """The paper's Adam (TF1 epsilon), as the fused single-pass kernel where this torch has
    one (CPU and CUDA since torch 2.4: several times faster than the per-tensor loop on 89M
    parameters)."""
    try:
        return ReferenceAdam(parameters, lr=lr, eps=eps, fused=True)
    except (RuntimeError, TypeError):  # no fused kernel for this device or torch version
        return ReferenceAdam(parameters, lr=lr, eps=eps)
