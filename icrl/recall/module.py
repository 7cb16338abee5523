"""``RecallModule``: the LightningModule that trains a ``RecallTransformer`` (docs/science.md §R.3–R.5)."""

from __future__ import annotations

import warnings
from functools import partial

import torch
from lightning.pytorch.cli import OptimizerCallable
from torch import Tensor, nn
from torch.nn import functional as nnf

from icrl.module import IcrlModule
from icrl.optim import NormalizedGD
from icrl.recall.attention import Attention
from icrl.recall.metrics import (BayesGap, ExpectedCrossEntropy, LogitMargin, MeanCrossEntropy, MeanLogit,
                                 MeanMaxLogit, MeanProbability)
from icrl.recall.model import Feedforward, RecallOutput, RecallTransformer, stacked_logits
from icrl.recall.parameterization import Origin, ParameterizationCallable
from icrl.recall.task import RecallTask


def as_config(value):
    """The ``class_path`` form of an attention or parameterization given in Python, as the CLI saves it, so that
    checkpoints load with ``weights_only`` (an attention's arguments, and lambdas, are lost: pass them again).

    >>> as_config(partial(Origin, init_std=0.01))
    {'class_path': 'icrl.recall.parameterization.Origin', 'init_args': {'init_std': 0.01}}
    """
    if value is None or isinstance(value, (dict, str)):
        return value
    func, init_args = (value.func, dict(value.keywords)) if isinstance(value, partial) else (value, {})
    cls = func if isinstance(func, type) else type(func)
    return {"class_path": f"{cls.__module__}.{cls.__qualname__}", **({"init_args": init_args} if init_args else {})}


class RecallModule(IcrlModule):
    """Trains a ``RecallTransformer`` (same arguments; ``task``: ``RecallDataModule.task``, linked by the CLI) by
    cross-entropy at the last position; ``optimizer`` defaults to the paper's ``NormalizedGD(lr=0.1)``.

    Logs ``train/loss`` and, per validation under ``val/`` (per test under ``test/``), the ``eval_metrics`` below:
    in distribution, then on unseen outputs, the ``_ff`` and ``p_noise_ood`` ones on the noisy task only (§R.6;
    each tag's meaning: the README's table of logged scalars).
    """

    def __init__(self, task: dict | None = None, d_model: int = 128, attention: Attention | None = None,
                 parameterization: ParameterizationCallable = Origin, feedforward: Feedforward = "FA",
                 trainable_U: bool = False, optimizer: OptimizerCallable | None = None):
        super().__init__(optimizer, partial(NormalizedGD, lr=0.1))
        if task is None:
            raise ValueError("task is required: pass RecallDataModule(...).task (the icrl CLI links it from data)")
        with warnings.catch_warnings():  # an Attention instance, replaced by its class_path just below
            warnings.filterwarnings("ignore", message="Attribute 'attention' is an instance of `nn.Module`")
            self.save_hyperparameters(ignore=["optimizer"])
        if "_instantiator" not in self.hparams:  # built in Python: store what the CLI would, and rebuild as it does
            self.hparams.update(attention=as_config(attention), parameterization=as_config(parameterization),
                                _instantiator="lightning.pytorch.cli.instantiate_module")
        self.task = RecallTask(**task)
        self.model = RecallTransformer(self.task, d_model, attention, parameterization, feedforward, trainable_U)
        noise = dict(alpha=self.task.alpha, noise_token=self.task.noise_token)
        in_dist = dict(loss=MeanCrossEntropy(), expected_loss=ExpectedCrossEntropy(**noise),
                       bayes_gap=BayesGap(**noise, bayes_risk=self.task.bayes_risk), margin_attn=LogitMargin(),
                       logit_attn_y=MeanLogit(), max_logit_attn=MeanMaxLogit())
        ood = dict(ood_loss=MeanCrossEntropy(), ood_expected_loss=ExpectedCrossEntropy(**noise),
                   ood_bayes_gap=BayesGap(**noise, bayes_risk=self.task.bayes_risk), p_output_ood=MeanProbability())
        if self.task.noisy:
            in_dist.update(margin_ff=LogitMargin(), logit_ff_tau=MeanLogit(), max_logit_ff=MeanMaxLogit())
            ood.update(p_noise_ood=MeanProbability())
        self.eval_metrics = nn.ModuleList([nn.ModuleDict(in_dist), nn.ModuleDict(ood)])

    def forward(self, tokens: Tensor) -> RecallOutput:
        return self.model(tokens)

    def train_loss(self, batch: dict[str, Tensor]) -> Tensor:
        return nnf.cross_entropy(self.model(batch["tokens"], parts=False).logits, batch["target"])  # one product: ξ

    @classmethod
    def stacked_losses(cls, members: list[RecallModule], batches: list[dict[str, Tensor]]) -> Tensor:
        """(K,) the members' training losses in one pass (``stacked_logits``), unless their attention has parameters."""
        if any(True for _ in members[0].model.attention.parameters()):
            return super().stacked_losses(members, batches)
        logits = stacked_logits([m.model for m in members], torch.stack([b["tokens"] for b in batches]))  # (K, B, N)
        targets = torch.stack([b["target"] for b in batches])  # (K, B)
        return nnf.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="none").view_as(targets).mean(1)

    def metric_inputs(self, batch: dict[str, Tensor], dataloader_idx: int) -> dict[str, tuple[Tensor, Tensor]]:
        out, y = self(batch["tokens"]), batch["output"]  # logits (B, N) each, y (B,)
        tau = torch.full_like(y, self.task.noise_token)
        drawn, expected = (out.logits, batch["target"]), (out.logits, y)
        attn, ff = (out.logits_attn, y), (out.logits_ff, tau)
        return dict(loss=drawn, expected_loss=expected, bayes_gap=expected, margin_attn=attn, logit_attn_y=attn,
                    max_logit_attn=attn, margin_ff=ff, logit_ff_tau=ff, max_logit_ff=ff, ood_loss=drawn,
                    ood_expected_loss=expected, ood_bayes_gap=expected, p_output_ood=expected,
                    p_noise_ood=(out.logits, tau))
