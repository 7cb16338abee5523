"""Attention functions σ of docs/science.md §R.3, applied to the last position's scores over the context.

Each is a tiny module mapping scores ``s`` of shape (B, T) to weights of shape (B, T). A model
takes an instance (in YAML ``attention: icrl.recall.SoftmaxAttention``, a ``class_path``); add your
own by subclassing ``Attention``:

>>> class SigmoidAttention(Attention):
...     def forward(self, scores):
...         return torch.sigmoid(scores)
>>> SigmoidAttention()(torch.zeros(1, 3))
tensor([[0.5000, 0.5000, 0.5000]])
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class Attention(nn.Module):
    """Base class: ``forward(scores (B, T)) -> weights (B, T)``."""

    def forward(self, scores: Tensor) -> Tensor:
        raise NotImplementedError


class LinearAttention(Attention):
    """``σ(s) = s`` (no 1/T normalisation, as in the paper)."""

    def forward(self, scores: Tensor) -> Tensor:
        return scores


class ReLUAttention(Attention):
    """``σ(s) = max(s, 0)``, with derivative 1 at ``s = 0``.

    The paper's parameterizations start from ``W = 0``, so all scores are 0 on the first step; with torch's
    ``relu'(0) = 0`` no gradient would ever reach ``W`` (or ``λ``) and attention would never form.
    Taking the right derivative at 0 (also a valid subgradient) lets it train.

    >>> s = torch.tensor([-1.0, 0.0, 2.0], requires_grad=True)
    >>> ReLUAttention()(s).sum().backward(); s.grad
    tensor([0., 1., 1.])
    """

    def forward(self, scores: Tensor) -> Tensor:
        return scores * (scores >= 0)


class SoftmaxAttention(Attention):
    """``σ(s) = softmax(s)`` over the context positions."""

    def forward(self, scores: Tensor) -> Tensor:
        return torch.softmax(scores, dim=-1)
