"""Normalized gradient descent (docs/science.md §R.5): ``θ ← θ − η · g / ‖g‖₂``, per tensor (the paper's rule).

A tensor whose gradient norm is zero is left unchanged: zero-initialised models have such tensors on their
first step, and dividing by zero there would write NaNs.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

import torch
from torch import Tensor


class NormalizedGD(torch.optim.Optimizer):
    """Normalized gradient descent (YAML ``icrl.optim.NormalizedGD``): each tensor of ``params`` moves exactly
    ``lr`` = ``η`` > 0 in Euclidean norm a step, or, with ``global_norm``, each group by one norm over its tensors.

    >>> w = torch.nn.Parameter(torch.tensor([0.0, 2.0]))
    >>> opt = NormalizedGD([w], lr=0.1)
    >>> w.grad = torch.tensor([0.0, -5.0]); _ = opt.step(); w.data
    tensor([0.0000, 2.1000])
    """

    def __init__(self, params: Iterable[Tensor] | Iterable[dict], lr: float = 0.1, global_norm: bool = False):
        if not lr > 0:
            raise ValueError(f"NormalizedGD: lr must be > 0, got lr={lr}")
        super().__init__(params, dict(lr=lr, global_norm=global_norm))

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            grads = [p.grad for p in params]
            norms = torch.stack(torch._foreach_norm(grads))  # (P,) ‖g‖₂ per tensor, fused over the list
            if group["global_norm"]:
                norms = torch.linalg.vector_norm(norms).expand(len(grads))
            # (P,) η / ‖g‖; where(n > 0, ...) keeps zero-gradient tensors fixed without a host sync on the norm
            scales = torch.where(norms > 0, group["lr"] / norms.clamp_min(torch.finfo(norms.dtype).tiny), 0.0)
            torch._foreach_sub_(params, torch._foreach_mul(grads, scales.unbind()))
        return loss


def check_optimizer(optimizer: Callable[[Iterable], torch.optim.Optimizer]) -> Callable:
    """Build ``optimizer`` once on a dummy parameter, so a bad setting (``lr <= 0``) is refused before training.

    >>> check_optimizer(lambda params: torch.optim.SGD(params, lr=-1.0))
    Traceback (most recent call last):
    ...
    ValueError: optimizer: the learning rate must be > 0, got lr=-1.0
    """
    try:
        opt = optimizer([torch.nn.Parameter(torch.zeros(1))])
    except ValueError as err:
        if bad_lr := re.fullmatch(r"Invalid learning rate: (\S+)", str(err)):  # torch's wording for lr < 0
            raise ValueError(f"optimizer: the learning rate must be > 0, got lr={bad_lr[1]}") from None
        raise ValueError(f"optimizer: {err}") from None
    for group in opt.param_groups:
        if "lr" in group and not group["lr"] > 0:
            raise ValueError(f"optimizer: the learning rate must be > 0, got lr={group['lr']}")
    return optimizer
