"""Recall metrics (docs/science.md §R.6) as torchmetrics ``MeanMetric``s of a per-prompt quantity.

States are torchmetrics' own (``sum`` over processes) in the default float32, which every device
holds (Apple's MPS has no float64); each batch adds one pairwise-summed total, so the relative
error of a mean is about (number of batches) × 2⁻²⁴. NaNs are kept, not dropped: a diverged model
shows NaN metrics.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as nnf
from torchmetrics import MeanMetric


class _PerPrompt(MeanMetric):
    """Mean over prompts of ``per_sample(logits (B, N), index (B,)) -> (B,)``."""

    def __init__(self, **kwargs):
        super().__init__(nan_strategy="disable", **kwargs)

    def per_sample(self, logits: Tensor, index: Tensor) -> Tensor:
        raise NotImplementedError

    def update(self, logits: Tensor, index: Tensor) -> None:
        super().update(self.per_sample(logits.detach().float(), index))


class MeanCrossEntropy(_PerPrompt):
    """Mean cross-entropy ``−log softmax(ξ)_target`` in nats.

    >>> m = MeanCrossEntropy(); m.update(torch.zeros(2, 4), torch.tensor([0, 3])); round(m.compute().item(), 4)
    1.3863
    """

    def per_sample(self, logits: Tensor, index: Tensor) -> Tensor:
        return nnf.cross_entropy(logits, index, reduction="none")


class ExpectedCrossEntropy(_PerPrompt):
    """Cross-entropy in expectation over the label noise: ``−α log p_τ − (1−α) log p_y`` per prompt.

    The noisy task's target is τ with probability α, else the prompt's output ``y``, independently of
    the prompt; so this is the exact expected loss of each prompt, without the sampling noise of the
    drawn targets (``update`` takes ``y``, the batch's ``output``). At α = 0 it is the cross-entropy
    of ``y``. Its excess over ``H(α)`` is a KL divergence, ≥ 0 for every model (Gibbs' inequality).

    >>> m = ExpectedCrossEntropy(alpha=0.5, noise_token=2)
    >>> m.update(torch.tensor([[0.0, 0.0, 0.0]]), torch.tensor([1])); round(m.compute().item(), 4)  # ln 3
    1.0986
    """

    def __init__(self, alpha: float, noise_token: int, **kwargs):
        super().__init__(**kwargs)
        self.alpha, self.noise_token = alpha, noise_token

    def per_sample(self, logits: Tensor, index: Tensor) -> Tensor:
        logp = torch.log_softmax(logits, -1)  # (B, N)
        loss = -(1 - self.alpha) * logp.gather(1, index[:, None]).squeeze(1)
        if self.alpha:  # at α = 0 the τ term is absent, even where p_τ = 0
            loss = loss - self.alpha * logp[:, self.noise_token]
        return loss


class BayesGap(ExpectedCrossEntropy):
    """Expected cross-entropy minus the task's Bayes risk ``H(α)`` (0 noiseless): ≥ 0 for every model.

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
    """Mean predicted probability ``softmax(ξ)_k`` of a given token ``k`` per sample.

    >>> m = MeanProbability(); m.update(torch.tensor([[0.0, 0.0], [0.0, 100.0]]), torch.tensor([0, 1]))
    >>> round(m.compute().item(), 4)
    0.75
    """

    def per_sample(self, logits: Tensor, index: Tensor) -> Tensor:
        return torch.softmax(logits, -1).gather(1, index[:, None]).squeeze(1)


class LogitMargin(_PerPrompt):
    """Mean margin ``ξ_k − max_{j≠k} ξ_j`` of a given token ``k`` per sample (docs/science.md §R.6).

    >>> m = LogitMargin(); m.update(torch.tensor([[3.0, 1.0, 2.0]]), torch.tensor([0])); m.compute()
    tensor(1.)
    """

    def per_sample(self, logits: Tensor, index: Tensor) -> Tensor:
        own = logits.gather(1, index[:, None]).squeeze(1)
        others = logits.scatter(1, index[:, None], float("-inf")).amax(1)
        return own - others


class MeanLogit(_PerPrompt):
    """Mean logit ``ξ_k`` of a given token ``k`` per sample (the margin figures' ``ξ_{A,y}``, ``ξ_{F,τ}``).

    >>> m = MeanLogit(); m.update(torch.tensor([[3.0, 1.0], [0.0, 2.0]]), torch.tensor([0, 0])); m.compute()
    tensor(1.5000)
    """

    def per_sample(self, logits: Tensor, index: Tensor) -> Tensor:
        return logits.gather(1, index[:, None]).squeeze(1)


class MeanMaxLogit(_PerPrompt):
    """Mean largest logit ``max_j ξ_j`` per sample, over all tokens ``j`` (``index`` is not used).

    >>> m = MeanMaxLogit(); m.update(torch.tensor([[3.0, 1.0], [0.0, 2.0]]), torch.tensor([0, 0])); m.compute()
    tensor(2.5000)
    """

    def per_sample(self, logits: Tensor, index: Tensor) -> Tensor:
        return logits.amax(1)
