"""Attention functions σ of docs/science.md §R.3, applied to the last position's scores over the context.

Each maps scores ``s`` (B, T) to weights (B, T). A model takes an instance (in YAML a ``class_path``,
``attention: icrl.recall.SoftmaxAttention``); add your own by subclassing ``Attention``:

>>> class SigmoidAttention(Attention):
...     def forward(self, scores):
...         return torch.sigmoid(scores)
>>> SigmoidAttention()(torch.zeros(1, 3))
tensor([[0.5000, 0.5000, 0.5000]])
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


class Attention(nn.Module):
    """Base class: a subclass defines ``forward(scores (B, T)) -> weights (B, T)``."""


class LinearAttention(Attention):
    """``σ(s) = s`` (no 1/T normalisation, as in the paper)."""

    def forward(self, scores: Tensor) -> Tensor:
        return scores


class ReLUAttention(Attention):
    """``σ(s) = max(s + shift, 0)``, with derivative 1 at ``s + shift = 0`` (docs/science.md §R.3).

    At the zero start ``W = 0`` all scores are 0, and torch's ``relu'(0) = 0`` would never let ``W`` train; the
    right derivative (a valid subgradient) does. ``shift = 1e-8``, the first version's public code ``relu(s + 1e-8)``,
    also trains zero-initialised Origin-ReLU with feed-forward ``F`` or none (refused at ``shift = 0``, §R.4).

    >>> s = torch.tensor([-1.0, 0.0, 2.0], requires_grad=True)
    >>> ReLUAttention()(s).sum().backward(); s.grad
    tensor([0., 1., 1.])
    >>> ReLUAttention(shift=1e-8)(torch.zeros(2))
    tensor([1.0000e-08, 1.0000e-08])
    """

    def __init__(self, shift: float = 0.0):
        super().__init__()
        if not (shift >= 0 and math.isfinite(shift)):
            raise ValueError(f"shift must be a finite number >= 0 (the public code's 1e-8, or 0), got shift={shift}")
        self.shift = shift

    def forward(self, scores: Tensor) -> Tensor:
        if self.shift:
            scores = scores + self.shift
        return scores * (scores >= 0)


class SoftmaxAttention(Attention):
    """``σ(s) = softmax(s)`` over the context positions."""

    def forward(self, scores: Tensor) -> Tensor:
        return torch.softmax(scores, dim=-1)
