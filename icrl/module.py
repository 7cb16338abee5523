"""``IcrlModule``: the LightningModule both families subclass (optimizer check, logging cadence, metrics).

A family module declares ``self.eval_metrics``, one ``ModuleDict`` of torchmetrics a validation (and test)
dataloader keyed by the name logged under ``val/`` (``test/``), and says in ``metric_inputs`` what updates each.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from lightning.pytorch import LightningModule
from torch import Tensor

from icrl.optim import check_optimizer


class IcrlModule(LightningModule):
    """Optimizer factory (checked when the module is made), one eval step for validation and test."""

    def __init__(self, optimizer: Callable | None, default: Callable):
        super().__init__()
        self.optimizer = check_optimizer(optimizer or default)  # a bad lr fails here, not at step 0

    def is_logging_step(self) -> bool:
        """True on the steps whose training scalars the logger writes (``log_every_n_steps``; 0: none), on the last
        step, and in fast_dev_run; call it before ``optimizer.step()``. Each ``self.log`` costs Lightning a pass over
        its results; logging only these leaves the curves unchanged (a run stopped early keeps its last logged values).

        >>> from types import SimpleNamespace
        >>> trainer = SimpleNamespace(fast_dev_run=False, log_every_n_steps=50, max_steps=120)
        >>> [s for s in range(120) if IcrlModule.is_logging_step(SimpleNamespace(trainer=trainer, global_step=s))]
        [49, 99, 119]
        """
        trainer, step, every = self.trainer, self.global_step + 1, self.trainer.log_every_n_steps
        return bool(trainer.fast_dev_run) or step == trainer.max_steps or (every > 0 and step % every == 0)

    def train_loss(self, batch: dict[str, Tensor]) -> Tensor:
        """The training loss of ``batch``, a scalar."""
        raise NotImplementedError

    def train_logs(self, batch: dict[str, Tensor], loss: Tensor) -> dict[str, Tensor]:
        """Training scalars logged beside ``train/loss``, on logging steps."""
        return {}

    def train_scalars(self, batch: dict[str, Tensor], loss: Tensor, data, step: int) -> dict[str, Tensor | float]:
        """What a logging step logs: ``train/loss``, ``train_logs`` and, where ``data``'s training set is finite
        (``steps_per_epoch``), ``train/epoch``, the epochs trained after ``step`` steps."""
        scalars = {"train/loss": loss, **self.train_logs(batch, loss)}
        if per_epoch := getattr(data, "steps_per_epoch", None):
            scalars["train/epoch"] = step / per_epoch
        return scalars

    @classmethod
    def stacked_losses(cls, members: list[IcrlModule], batches: list[dict[str, Tensor]]) -> Tensor:
        """(K,) the training losses of ``members``, modules of this class and one architecture, on their ``batches``
        (``icrl.ensemble``). This is the plain loop; a family may compute them in one stacked pass."""
        return torch.stack([member.train_loss(batch) for member, batch in zip(members, batches)])

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        loss = self.train_loss(batch)
        if self.is_logging_step():
            for name, value in self.train_scalars(batch, loss, self.trainer.datamodule, self.global_step + 1).items():
                self.log(name, value, prog_bar=name == "train/loss")
        return loss

    def metric_inputs(self, batch: dict[str, Tensor], dataloader_idx: int) -> dict[str, tuple[Tensor, ...]]:
        """The arguments of ``update`` of each metric of this dataloader, by name (extra names are ignored)."""
        raise NotImplementedError

    def _eval_step(self, stage: str, batch: dict[str, Tensor], batch_idx: int, dataloader_idx: int) -> None:
        metrics, inputs = self.eval_metrics[dataloader_idx], self.metric_inputs(batch, dataloader_idx)
        for name, metric in metrics.items():
            metric.update(*inputs[name])
        if batch_idx == 0:  # Lightning keeps a logged metric and computes and resets it at the loader's end
            for name, metric in metrics.items():
                self.log(f"{stage}/{name}", metric, prog_bar=name in ("loss", "ood_loss"), add_dataloader_idx=False)

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int, dataloader_idx: int = 0) -> None:
        self._eval_step("val", batch, batch_idx, dataloader_idx)

    def test_step(self, batch: dict[str, Tensor], batch_idx: int, dataloader_idx: int = 0) -> None:
        self._eval_step("test", batch, batch_idx, dataloader_idx)

    def configure_optimizers(self):
        return self.optimizer(self.parameters())
