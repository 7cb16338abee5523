"""``RecallEvaluation``: Bayes gaps, OOD probabilities and logit margins of any recall run (SPEC R.6)."""

from __future__ import annotations

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from torch import nn

from icrl.recall.metrics import BayesGap, LogitMargin, MeanLogit, MeanMaxLogit, MeanProbability


class RecallEvaluation(Callback):
    """Adds, per validation (and test), from the outputs of a recall module's eval steps:

    - ``bayes_gap``, ``ood_bayes_gap``: loss minus the task's Bayes risk, in distribution and OOD;
    - ``p_output_ood``: mean probability of the true output ``y`` on OOD samples (→ 1−α);
    - ``p_noise_ood``: mean probability of τ on OOD samples (→ α; noisy task only);
    - ``margin_attn``: ``ξ_{A,y} − max_{k≠y} ξ_{A,k}``; ``margin_ff``: ``ξ_{F,τ} − max_{k≠τ} ξ_{F,k}``
      (noisy task only), in distribution;
    - ``logit_attn_y``, ``max_logit_attn``: means of ``ξ_{A,y}`` and ``max_j ξ_{A,j}`` (all tokens ``j``), and
      ``logit_ff_tau``, ``max_logit_ff``: of ``ξ_{F,τ}`` and ``max_j ξ_{F,j}`` (noisy task only), in
      distribution: the first version's margin figures.

    Works with any module whose eval steps return ``{"output": RecallOutput}`` and that has a
    ``task`` (``RecallTask``); validation dataloaders ``[in-distribution, OOD]``.
    """

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        task = pl_module.task
        names = ["bayes_gap", "ood_bayes_gap", "p_output_ood", "margin_attn", "logit_attn_y", "max_logit_attn"]
        if task.noisy:
            names += ["p_noise_ood", "margin_ff", "logit_ff_tau", "max_logit_ff"]
        make = {"bayes_gap": lambda: BayesGap(task.bayes_risk), "ood_bayes_gap": lambda: BayesGap(task.bayes_risk),
                "p_output_ood": MeanProbability, "p_noise_ood": MeanProbability,
                "margin_attn": LogitMargin, "margin_ff": LogitMargin, "logit_attn_y": MeanLogit,
                "max_logit_attn": MeanMaxLogit, "logit_ff_tau": MeanLogit, "max_logit_ff": MeanMaxLogit}
        self.metrics = nn.ModuleDict({n: make[n]() for n in names})
        self.noise_token = task.noise_token

    def _update(self, pl_module: LightningModule, outputs: dict, batch: dict, dataloader_idx: int) -> None:
        self.metrics.to(pl_module.device)
        out, m = outputs["output"], self.metrics
        if dataloader_idx == 0:
            m["bayes_gap"].update(out.logits, batch["target"])
            m["margin_attn"].update(out.logits_attn, batch["output"])
            m["logit_attn_y"].update(out.logits_attn, batch["output"])
            m["max_logit_attn"].update(out.logits_attn)
            if "margin_ff" in m:
                noise = torch.full_like(batch["output"], self.noise_token)
                m["margin_ff"].update(out.logits_ff, noise)
                m["logit_ff_tau"].update(out.logits_ff, noise)
                m["max_logit_ff"].update(out.logits_ff)
        else:
            m["ood_bayes_gap"].update(out.logits, batch["target"])
            m["p_output_ood"].update(out.logits, batch["output"])
            if "p_noise_ood" in m:
                m["p_noise_ood"].update(out.logits, torch.full_like(batch["output"], self.noise_token))

    def _log(self, pl_module: LightningModule, stage: str) -> None:
        for name, metric in self.metrics.items():
            if metric.update_count:
                # already reduced over processes by torchmetrics; sync_dist only quiets Lightning
                pl_module.log(f"{stage}/{name}", metric.compute(), sync_dist=True)
            metric.reset()

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        self._update(pl_module, outputs, batch, dataloader_idx)

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        self._update(pl_module, outputs, batch, dataloader_idx)

    def on_validation_epoch_end(self, trainer, pl_module):
        self._log(pl_module, "val")

    def on_test_epoch_end(self, trainer, pl_module):
        self._log(pl_module, "test")
