"""``RecallModule``: the LightningModule that trains a ``RecallTransformer`` (SPEC R.3–R.5)."""

from __future__ import annotations

from functools import partial

from lightning.pytorch import LightningModule
from lightning.pytorch.cli import OptimizerCallable
from torch import Tensor
from torch.nn import functional as nnf

from icrl.cadence import is_logging_step
from icrl.optim import NormalizedGD, check_optimizer
from icrl.recall.attention import Attention, attention_name
from icrl.recall.metrics import MeanCrossEntropy
from icrl.recall.model import RecallOutput, RecallTransformer
from icrl.recall.task import RecallTask

STAGE_NAMES = {0: "loss", 1: "ood_loss"}  # validation/test dataloaders: in distribution, OOD


class RecallModule(LightningModule):
    """Trains a one-layer recall transformer by cross-entropy at the last position.

    Args:
        task: the task dict of ``RecallDataModule.task``; the CLI links it from the data module.
        d_model, attention, parameterization, feedforward, trainable_U: see ``RecallTransformer``.
        optimizer: a callable from parameters to an optimizer (YAML ``class_path``); defaults to
            ``NormalizedGD(lr=0.1)``, the paper's choice.

    Logs ``train/loss`` on the steps the logger writes (``log_every_n_steps``) and, per validation, ``val/loss`` (in distribution) and
    ``val/ood_loss`` (unseen outputs); add ``RecallEvaluation`` for Bayes gaps, probabilities and
    margins.
    """

    def __init__(self, task: dict | None = None, d_model: int = 128, attention: str | Attention = "linear",
                 parameterization: str = "origin", feedforward: str = "FA", trainable_U: bool = False,
                 optimizer: OptimizerCallable | None = None):
        super().__init__()
        if task is None:
            raise ValueError("task is required: pass RecallDataModule(...).task (the icrl CLI links it from data)")
        self.save_hyperparameters(ignore=["optimizer", "attention"])
        self.hparams["attention"] = attention_name(attention)  # a plain string, safe to unpickle
        self.task = RecallTask(**task)
        self.model = RecallTransformer(self.task, d_model, attention, parameterization, feedforward, trainable_U)
        self.optimizer = check_optimizer(optimizer or partial(NormalizedGD, lr=0.1))
        self.eval_loss = MeanCrossEntropy()
        self.eval_ood_loss = MeanCrossEntropy()

    def forward(self, tokens: Tensor) -> RecallOutput:
        return self.model(tokens)

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        loss = nnf.cross_entropy(self(batch["tokens"]).logits, batch["target"])
        if is_logging_step(self):
            self.log("train/loss", loss, prog_bar=True)
        return loss

    def _eval_step(self, stage: str, batch: dict[str, Tensor], dataloader_idx: int) -> dict:
        out = self(batch["tokens"])
        metric = self.eval_ood_loss if dataloader_idx == 1 else self.eval_loss
        metric.update(out.logits, batch["target"])
        self.log(f"{stage}/{STAGE_NAMES[dataloader_idx]}", metric, prog_bar=True, add_dataloader_idx=False)
        return {"output": out}

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int, dataloader_idx: int = 0) -> dict:
        return self._eval_step("val", batch, dataloader_idx)

    def test_step(self, batch: dict[str, Tensor], batch_idx: int, dataloader_idx: int = 0) -> dict:
        return self._eval_step("test", batch, dataloader_idx)

    def configure_optimizers(self):
        return self.optimizer(self.parameters())
