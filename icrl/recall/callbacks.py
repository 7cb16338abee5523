"""``RecallEvaluation``: exact expected losses, Bayes gaps, OOD probabilities and logit margins (docs/science.md §R.6)."""

from __future__ import annotations

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from torch import nn

from icrl.recall.metrics import BayesGap, ExpectedCrossEntropy, LogitMargin, MeanLogit, MeanMaxLogit, MeanProbability


class RecallEvaluation(Callback):
    """Adds, per validation (and test), from the outputs of a recall module's eval steps:

    - in distribution (dataloader 0): ``expected_loss`` (``−α log p_τ − (1−α) log p_y``, the exact
      expected cross-entropy over the label noise), ``bayes_gap`` (it minus the Bayes risk ``H(α)``,
      ≥ 0 for every model), ``margin_attn``: ``ξ_{A,y} − max_{k≠y} ξ_{A,k}`` and, noisy task only,
      ``margin_ff``: ``ξ_{F,τ} − max_{k≠τ} ξ_{F,k}``;
    - on unseen outputs (dataloader 1): ``ood_expected_loss``, ``ood_bayes_gap``, ``p_output_ood``
      (mean probability of the true output ``y``, → 1−α) and, noisy task only, ``p_noise_ood``
      (mean probability of τ, → α);
    - in distribution too, the first version's margin figures: ``logit_attn_y``, ``max_logit_attn``, the means
      of ``ξ_{A,y}`` and ``max_j ξ_{A,j}`` (all tokens ``j``), and, noisy task only, ``logit_ff_tau``,
      ``max_logit_ff``, of ``ξ_{F,τ}`` and ``max_j ξ_{F,j}``.

    Each is logged in its own dataloader's steps, so ``trainer.validate``'s list (and its table)
    holds it under that loader. Works with any module whose eval steps return
    ``{"output": RecallOutput}`` and that has a ``task`` (``RecallTask``); validation dataloaders
    ``[in-distribution, OOD]``.
    """

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        task = pl_module.task
        expected = dict(alpha=task.alpha, noise_token=task.noise_token)
        in_dist = {"expected_loss": ExpectedCrossEntropy(**expected), "bayes_gap": BayesGap(**expected, bayes_risk=task.bayes_risk),
                   "margin_attn": LogitMargin(), "logit_attn_y": MeanLogit(), "max_logit_attn": MeanMaxLogit()}
        ood = {"ood_expected_loss": ExpectedCrossEntropy(**expected),
               "ood_bayes_gap": BayesGap(**expected, bayes_risk=task.bayes_risk), "p_output_ood": MeanProbability()}
        if task.noisy:
            in_dist.update(margin_ff=LogitMargin(), logit_ff_tau=MeanLogit(), max_logit_ff=MeanMaxLogit())
            ood["p_noise_ood"] = MeanProbability()
        self.metrics = nn.ModuleList([nn.ModuleDict(in_dist), nn.ModuleDict(ood)])
        self.noise_token = task.noise_token

    def _step(self, pl_module: LightningModule, stage: str, outputs: dict, batch: dict, batch_idx: int,
              dataloader_idx: int) -> None:
        out, y = outputs["output"], batch["output"]
        tau = torch.full_like(y, self.noise_token)
        attn, ff = (out.logits_attn, y), (out.logits_ff, tau)
        inputs = {"margin_attn": attn, "logit_attn_y": attn, "max_logit_attn": attn,
                  "margin_ff": ff, "logit_ff_tau": ff, "max_logit_ff": ff, "p_noise_ood": (out.logits, tau)}
        metrics = self.metrics[dataloader_idx]
        first = batch_idx == 0  # batch_idx restarts with each dataloader
        if first:
            metrics.to(pl_module.device)
        for name, metric in metrics.items():
            metric.update(*inputs.get(name, (out.logits, y)))
            if first:
                # Lightning keeps the logged metric object (under this loader) and computes and resets it at the epoch's
                # end, so one log a loader suffices: logging it every batch costs ~1 ms a call and adds nothing. A
                # metric that is not the module's own needs its metric_attribute named (Lightning only records it).
                pl_module.log(f"{stage}/{name}", metric, add_dataloader_idx=False, metric_attribute=name)

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        self._step(pl_module, "val", outputs, batch, batch_idx, dataloader_idx)

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        self._step(pl_module, "test", outputs, batch, batch_idx, dataloader_idx)
