"""Callbacks the CLI gives every run: the non-finite guard, TensorBoard's HPARAMS, configs (stops: icrl.checkpoints)."""

from __future__ import annotations

import math

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import TQDMProgressBar
from lightning.pytorch.cli import SaveConfigCallback
from lightning.pytorch.loggers import TensorBoardLogger

from icrl.checkpoints import flat


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN or infinite loss; the message names the step and likely settings."""


class NonFiniteGuard(Callback):
    """Stops a run at the first non-finite training loss, and never checkpoints non-finite weights.

    Each step keeps its loss (no kernel, no sync); the kept ones are read with one sync every ``check_every_n_steps``
    steps, before every checkpoint and at the end, naming the first non-finite step. ``None`` (the default): every
    step on a CPU, where ``loss.item()`` costs nothing; on an accelerator, where a read per step would stall the
    pipeline, ``trainer.log_every_n_steps`` (the logger syncs then anyway). Checkpoints follow a finite read and hold
    finite weights: a stopped run's last one is its last good state. Under DDP all processes stop together.
    """

    def __init__(self, check_every_n_steps: int | None = None):
        if check_every_n_steps is not None and check_every_n_steps < 1:
            raise ValueError(f"check_every_n_steps must be >= 1 or None, got check_every_n_steps={check_every_n_steps}")
        self.check_every_n_steps = check_every_n_steps
        self._pending: list[tuple[int, torch.Tensor]] = []  # (global step, loss) not yet read

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._every = self.check_every_n_steps or (
            1 if pl_module.device.type == "cpu" else max(trainer.log_every_n_steps, 1))

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs, batch, batch_idx: int) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if loss is None:
            return
        self._pending.append((trainer.global_step, loss.detach()))
        if len(self._pending) >= self._every:
            self._check(trainer, pl_module)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._check(trainer, pl_module)

    def on_save_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict) -> None:
        self._check(trainer, pl_module)
        if not all(torch.isfinite(p).all() for p in pl_module.parameters()):
            raise NonFiniteLossError(self.message("the weights are not finite", trainer.global_step, pl_module,
                                                  trainer.optimizers, trainer.default_root_dir))

    def _check(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not self._pending:
            return
        steps, losses = zip(*self._pending)
        self._pending = []
        # one kept loss (every step on a CPU): .item() reads it without a kernel
        values = [losses[0].item()] if len(losses) == 1 else torch.stack([loss.reshape(()) for loss in losses]).tolist()
        bad = next((i for i, value in enumerate(values) if not math.isfinite(value)), None)
        finite = bad is None
        if trainer.world_size > 1:  # all processes stop together, or the others wait forever in the next all-reduce
            finite = trainer.strategy.reduce_boolean_decision(finite, all=True)
        if finite:
            return
        what, step = (("a non-finite train/loss on another process", steps[-1]) if bad is None
                      else (f"train/loss = {values[bad]}", steps[bad]))
        raise NonFiniteLossError(self.message(what, step, pl_module, trainer.optimizers, trainer.default_root_dir))

    @staticmethod
    def message(what: str, step: int, pl_module: LightningModule, optimizers: list, root: str) -> str:
        lrs = sorted({g["lr"] for opt in optimizers for g in opt.param_groups})
        settings = {k: v for k, v in pl_module.hparams.items() if k != "task" and not k.startswith("_")}
        return (f"{what} at step {step}; stopped, no further checkpoint written. Likely cause: a learning rate too "
                f"large for this model (optimizer lr={lrs}, model settings {settings}); lower the optimizer's lr. "
                f"The last checkpoint under {root} is the last good state.")


class HParamsSummary(Callback):
    """The run's flat settings: in ``hparams.yaml`` at a fit's start, in HPARAMS (with end metrics) at its end."""

    def __init__(self, settings: dict):
        config = {k: v for k, v in settings.items() if k not in ("config", "trainer")}
        trainer = settings.get("trainer") or {}
        config["trainer"] = {k: trainer.get(k) for k in ("max_steps", "accumulate_grad_batches", "devices", "precision")}
        self.params = {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in flat(config).items()
                       if k != "model.task"}  # the task is linked from the data settings

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if trainer.logger is not None:  # hparams.yaml: the whole run, optimizer and attention included
            trainer.logger.log_hyperparams(self.params)

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.is_global_zero and isinstance(trainer.logger, TensorBoardLogger):
            self.write(trainer.logger, {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1})

    def write(self, logger: TensorBoardLogger, metrics: dict[str, float]) -> None:
        """The session's start and end with the end ``metrics``, which HPARAMS shows beside the settings."""
        # imported where used, as Lightning's logger does: --print_config, --help and a bad setting skip TensorBoard
        from torch.utils.tensorboard.summary import hparams as hparams_summary

        writer = logger.experiment._get_file_writer()
        # the session's start and end only: the run's own experiment summary would fix the tab's columns to this
        # run's (TensorBoard shows the first it finds), hiding the other family's settings and metrics
        for summary in hparams_summary(self.params, metrics)[1:]:  # TensorBoard reads each metric's last value
            writer.add_summary(summary)
        writer.flush()


class SaveStageConfig(SaveConfigCallback):
    """``config.yaml`` of the fit; ``validate`` / ``test`` of its checkpoint write their own file beside it."""

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        stage = getattr(stage, "value", stage)  # Lightning passes a TrainerFn
        if stage != "fit":
            self.config_filename = f"{stage}-config.yaml"
        super().setup(trainer, pl_module, stage)


class StepProgressBar(TQDMProgressBar):
    """Counts optimizer steps up to ``max_steps``, a resumed run's from its step, with the time left (Lightning's
    shows one epoch, ``n/?``, of the endless stream); named by the epoch where the data has ``steps_per_epoch``.
    Redrawn every ``refresh_rate`` steps: every step, it slows a CPU recall step (docs/performance.md)."""

    def __init__(self, refresh_rate: int = 10):
        super().__init__(refresh_rate=refresh_rate)

    def on_train_epoch_start(self, trainer: Trainer, *_) -> None:
        super().on_train_epoch_start(trainer, *_)
        bar = self.train_progress_bar
        bar.total = trainer.max_steps if trainer.max_steps > 0 else None
        bar.n = bar.last_print_n = bar.initial = trainer.global_step  # the rate and time left count this run's steps
        bar.set_description(self._describe(trainer))

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs, batch, batch_idx: int) -> None:
        super().on_train_batch_end(trainer, pl_module, outputs, batch, trainer.global_step - 1)
        if trainer.global_step % self.refresh_rate == 0:
            self.train_progress_bar.set_description(self._describe(trainer), refresh=False)

    @staticmethod
    def _describe(trainer: Trainer) -> str:
        per_epoch = getattr(trainer.datamodule, "steps_per_epoch", None)
        return f"Epoch {int(trainer.global_step // per_epoch)}" if per_epoch else "Training"

