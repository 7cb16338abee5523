"""Recall metrics (docs/science.md §R.6): per-prompt functions and the torchmetrics ``MeanMetric`` of each.

Each function maps logits ``(B, N)`` and a token index ``(B,)`` to one value a prompt ``(B,)``; its class averages
that over a validation, in float32 states, which every device holds (Apple's MPS has no float64): one pairwise-summed
total a batch, a relative error of about (number of batches) × 2⁻²⁴. NaNs are kept: a diverged model shows NaN metrics.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor
from torch.nn import functional as nnf
from torchmetrics import MeanMetric


def cross_entropy(logits: Tensor, index: Tensor) -> Tensor:
    """``−log softmax(ξ)_k`` in nats.

    >>> cross_entropy(torch.zeros(2, 4), torch.tensor([0, 3]))
    tensor([1.3863, 1.3863])
    """
    return nnf.cross_entropy(logits, index, reduction="none")


def logit(logits: Tensor, index: Tensor) -> Tensor:
    """Logit ``ξ_k`` of token ``k`` (the margin figures' ``ξ_{A,y}``, ``ξ_{F,τ}``).

    >>> logit(torch.tensor([[3.0, 1.0], [0.0, 2.0]]), torch.tensor([0, 1]))
    tensor([3., 2.])
    """
    return logits.gather(1, index[:, None]).squeeze(1)


def expected_cross_entropy(logits: Tensor, output: Tensor, alpha: float, noise_token: int) -> Tensor:
    """Cross-entropy in expectation over the label noise, ``−α log p_τ − (1−α) log p_y``: the exact expected
    loss of each prompt, without the drawn targets' sampling noise (§R.6); at α = 0 that of ``y``.

    >>> expected_cross_entropy(torch.zeros(1, 3), torch.tensor([1]), alpha=0.5, noise_token=2)  # ln 3
    tensor([1.0986])
    """
    logp = torch.log_softmax(logits, -1)  # (B, N)
    loss = -(1 - alpha) * logit(logp, output)
    if alpha:  # at α = 0 the τ term is absent, even where p_τ = 0
        loss = loss - alpha * logp[:, noise_token]
    return loss


def probability(logits: Tensor, index: Tensor) -> Tensor:
    """Predicted probability ``softmax(ξ)_k`` of token ``k``.

    >>> probability(torch.tensor([[0.0, 0.0], [0.0, 100.0]]), torch.tensor([0, 1]))
    tensor([0.5000, 1.0000])
    """
    return logit(torch.softmax(logits, -1), index)


def logit_margin(logits: Tensor, index: Tensor) -> Tensor:
    """Margin ``ξ_k − max_{j≠k} ξ_j`` of token ``k`` (docs/science.md §R.6).

    >>> logit_margin(torch.tensor([[3.0, 1.0, 2.0]]), torch.tensor([0]))
    tensor([1.])
    """
    return logit(logits, index) - logits.scatter(1, index[:, None], float("-inf")).amax(1)


def max_logit(logits: Tensor, index: Tensor) -> Tensor:
    """Largest logit ``max_j ξ_j`` over all tokens ``j`` (``index`` is not used).

    >>> max_logit(torch.tensor([[3.0, 1.0], [0.0, 2.0]]), torch.tensor([0, 0]))
    tensor([3., 2.])
    """
    return logits.amax(1)


class _PerPrompt(MeanMetric):
    """Mean over prompts of ``function(logits (B, N), index (B,), **options) -> (B,)``."""

    function: Callable[..., Tensor]

    def __init__(self, options: dict | None = None, **kwargs):
        super().__init__(nan_strategy="disable", **kwargs)
        self.options = options or {}

    def update(self, logits: Tensor, index: Tensor) -> None:
        super().update(self.function(logits.detach().float(), index, **self.options))


class MeanCrossEntropy(_PerPrompt):
    function = staticmethod(cross_entropy)


class ExpectedCrossEntropy(_PerPrompt):
    """Mean ``expected_cross_entropy``: ``update`` takes ``y``, the batch's ``output``, not its drawn target."""
    function = staticmethod(expected_cross_entropy)

    def __init__(self, alpha: float, noise_token: int, **kwargs):
        super().__init__(dict(alpha=alpha, noise_token=noise_token), **kwargs)


class BayesGap(ExpectedCrossEntropy):
    """The mean expected cross-entropy minus the task's Bayes risk ``H(α)`` (0 noiseless): ≥ 0 for every model.

    >>> m = BayesGap(alpha=0.0, noise_token=1, bayes_risk=0.0)
    >>> m.update(torch.zeros(1, 2), torch.tensor([1])); round(m.compute().item(), 4)
    0.6931
    """

    def __init__(self, alpha: float, noise_token: int, bayes_risk: float, **kwargs):
        super().__init__(alpha, noise_token, **kwargs)
        self.bayes_risk = bayes_risk

    def compute(self) -> Tensor:
        return super().compute() - self.bayes_risk


class MeanProbability(_PerPrompt):
    function = staticmethod(probability)


class LogitMargin(_PerPrompt):
    function = staticmethod(logit_margin)


class MeanLogit(_PerPrompt):
    function = staticmethod(logit)


class MeanMaxLogit(_PerPrompt):
    function = staticmethod(max_logit)
