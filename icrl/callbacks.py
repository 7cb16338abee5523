"""Callbacks every icrl run gets from the CLI."""

from __future__ import annotations

import torch
from lightning.pytorch import Callback, LightningModule, Trainer


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN or infinite loss; the message names the step and likely settings."""


class NonFiniteGuard(Callback):
    """Stops a run at the first non-finite training loss, and never checkpoints non-finite weights.

    The check costs one host sync per ``check_every_n_steps`` steps (free on CPU). Checkpoints
    written before the failure are kept: the last one is the last good state.
    """

    def __init__(self, check_every_n_steps: int = 1):
        if check_every_n_steps < 1:
            raise ValueError(f"check_every_n_steps must be >= 1, got check_every_n_steps={check_every_n_steps}")
        self.check_every_n_steps = check_every_n_steps

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs, batch, batch_idx: int) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if loss is None or trainer.global_step % self.check_every_n_steps:
            return
        if not torch.isfinite(loss):
            raise NonFiniteLossError(self._message(trainer, pl_module, f"train/loss = {loss.item()}"))

    def on_save_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict) -> None:
        if not all(torch.isfinite(p).all() for p in pl_module.parameters()):
            raise NonFiniteLossError(self._message(trainer, pl_module, "the weights are not finite"))

    @staticmethod
    def _message(trainer: Trainer, pl_module: LightningModule, what: str) -> str:
        lrs = sorted({g["lr"] for opt in trainer.optimizers for g in opt.param_groups})
        settings = {k: v for k, v in pl_module.hparams.items() if k != "task" and not k.startswith("_")}
        return (
            f"{what} at step {trainer.global_step}; stopped, no further checkpoint written. Likely cause: a "
            f"learning rate too large for this model (optimizer lr={lrs}, model settings {settings}); lower "
            f"the optimizer's lr. The last checkpoint under {trainer.default_root_dir} is the last good state."
        )
