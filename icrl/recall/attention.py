"""Attention functions σ of SPEC R.3, applied to the last position's scores over the context.

Each is a tiny module mapping scores ``s`` of shape (B, T) to weights of shape (B, T). Add your
own by subclassing ``Attention`` and naming it in YAML with ``class_path``:

>>> class SigmoidAttention(Attention):
...     def forward(self, scores):
...         return torch.sigmoid(scores)
>>> SigmoidAttention()(torch.zeros(1, 3))
tensor([[0.5000, 0.5000, 0.5000]])
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from icrl.imports import import_subclass


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

    Every parameterization starts from zero, so all scores are 0 on the first step; with torch's
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


ATTENTIONS = {"linear": LinearAttention, "relu": ReLUAttention, "softmax": SoftmaxAttention}


def attention_name(attention: str | Attention) -> str:
    """A string that ``build_attention`` turns back into the same attention (for hyper-parameters)."""
    if isinstance(attention, str):
        return attention
    for name, cls in ATTENTIONS.items():
        if type(attention) is cls:
            return name
    return f"{type(attention).__module__}.{type(attention).__qualname__}"


def build_attention(attention: str | Attention) -> Attention:
    """An ``Attention`` from a name in ``ATTENTIONS``, a dotted import path, or an instance."""
    if isinstance(attention, Attention):
        return attention
    if attention in ATTENTIONS:
        return ATTENTIONS[attention]()
    if isinstance(attention, str) and (cls := import_subclass("attention", attention, Attention)) is not None:
        return cls()
    raise ValueError(
        f"attention must be one of {sorted(ATTENTIONS)}, an icrl.recall.Attention instance (class_path in "
        f"YAML) or the import path of an Attention subclass, got attention={attention!r}"
    )
