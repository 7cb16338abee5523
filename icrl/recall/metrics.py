"""Recall metrics (SPEC R.6) as torchmetrics classes; states reduce by sum across processes."""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as nnf
from torchmetrics import MeanMetric, Metric


class _Mean(Metric):
    """Mean of a per-sample quantity; subclasses define ``per_sample``."""

    full_state_update = False

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.add_state("total", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def per_sample(self, logits: Tensor, index: Tensor) -> Tensor:
        raise NotImplementedError

    def update(self, logits: Tensor, index: Tensor) -> None:
        values = self.per_sample(logits.detach(), index)
        self.total += values.double().sum()
        self.count += values.numel()

    def compute(self) -> Tensor:
        return (self.total / self.count).float()


class MeanCrossEntropy(_Mean):
    """Mean cross-entropy ``−log softmax(ξ)_target`` in nats.

    >>> m = MeanCrossEntropy(); m.update(torch.zeros(2, 4), torch.tensor([0, 3])); round(m.compute().item(), 4)
    1.3863
    """

    def per_sample(self, logits: Tensor, index: Tensor) -> Tensor:
        return nnf.cross_entropy(logits.float(), index, reduction="none")


class BayesGap(MeanCrossEntropy):
    """Mean cross-entropy minus the task's Bayes risk (0 noiseless, ``H(α)`` noisy).

    >>> m = BayesGap(bayes_risk=0.5); m.update(torch.zeros(1, 2), torch.tensor([1])); round(m.compute().item(), 4)
    0.1931
    """

    def __init__(self, bayes_risk: float, **kwargs):
        super().__init__(**kwargs)
        self.bayes_risk = bayes_risk

    def compute(self) -> Tensor:
        return super().compute() - self.bayes_risk


class MeanProbability(_Mean):
    """Mean predicted probability ``softmax(ξ)_k`` of a given token ``k`` per sample.

    >>> m = MeanProbability(); m.update(torch.tensor([[0.0, 0.0], [0.0, 100.0]]), torch.tensor([0, 1]))
    >>> round(m.compute().item(), 4)
    0.75
    """

    def per_sample(self, logits: Tensor, index: Tensor) -> Tensor:
        return torch.softmax(logits.float(), -1).gather(1, index[:, None]).squeeze(1)


class LogitMargin(_Mean):
    """Mean margin ``ξ_k − max_{j≠k} ξ_j`` of a given token ``k`` per sample (SPEC R.6).

    >>> m = LogitMargin(); m.update(torch.tensor([[3.0, 1.0, 2.0]]), torch.tensor([0])); m.compute()
    tensor(1.)
    """

    def per_sample(self, logits: Tensor, index: Tensor) -> Tensor:
        own = logits.gather(1, index[:, None]).squeeze(1)
        others = logits.scatter(1, index[:, None], float("-inf")).amax(1)
        return own - others


class MeanLogit(MeanMetric):
    """Mean logit ``ξ_k`` of a given token ``k`` per sample (the margin figures' ``ξ_{A,y}``, ``ξ_{F,τ}``).

    >>> m = MeanLogit(); m.update(torch.tensor([[3.0, 1.0], [0.0, 2.0]]), torch.tensor([0, 0])); m.compute()
    tensor(1.5000)
    """

    def update(self, logits: Tensor, index: Tensor) -> None:
        super().update(logits.detach().float().gather(1, index[:, None]).squeeze(1))


class MeanMaxLogit(MeanMetric):
    """Mean largest logit ``max_j ξ_j`` per sample, over all tokens ``j``.

    >>> m = MeanMaxLogit(); m.update(torch.tensor([[3.0, 1.0], [0.0, 2.0]])); m.compute()
    tensor(2.5000)
    """

    def update(self, logits: Tensor) -> None:
        super().update(logits.detach().float().amax(1))
