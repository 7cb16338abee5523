"""Ensembles: K runs of one architecture trained in one process by one Lightning loop (``icrl sweep --ensemble K``).

Each member is the run ``icrl fit`` would train from its own config: its model (built after its own seed), data
stream, optimizer and schedule. It logs into its own folder (TensorBoard, ``scalars.csv``, ``hparams.yaml``,
``config.yaml``) and writes its own ``last.ckpt`` in the single run's format, which ``icrl fit --ckpt_path`` and
``icrl test`` take as the single run's. The loss is the sum of the members' losses, so each member's gradient is its
own loss's; a family may compute all members' losses in one stacked pass (``IcrlModule.stacked_losses``). What the
members share is the loop: one process's start-up and one Trainer's per-step cost for K runs.

A member whose loss goes non-finite leaves the ensemble at that step, keeping its last good checkpoint, and the
others train on; SIGINT / SIGTERM stop every member at a step boundary with a checkpoint (``StopCleanly``).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import torch
from lightning.pytorch import LightningDataModule, LightningModule, Trainer
from lightning.pytorch.callbacks import LambdaCallback
from lightning.pytorch.loggers import Logger
from lightning.pytorch.loggers.utilities import _log_hyperparams
from lightning.pytorch.utilities import CombinedLoader
from torch import Tensor

from icrl.callbacks import HParamsSummary, NonFiniteGuard, StepProgressBar
from icrl.checkpoints import SIGNATURE_KEY, LastCheckpoint, StopCleanly, load_checkpoint
from icrl.module import IcrlModule
from icrl.streams import StreamDataModule

PREFIX = "m{}/"  # member k's tags in the ensemble's own logging, routed to its loggers without the prefix


@dataclass
class Member:
    """One run of an ensemble: its module and data module (built as ``icrl fit`` builds them), its loggers
    (``icrl.scalars.run_loggers``), its settings (the fit config as a dict) and ``last.ckpt`` to resume from."""

    model: IcrlModule
    data: LightningDataModule
    loggers: list[Logger]
    settings: dict
    signature: dict  # icrl.checkpoints.training_signature(settings)
    resume: Path | None = None
    error: str | None = field(default=None, init=False)  # why it left the ensemble (a non-finite loss)
    metrics: dict = field(default_factory=dict, init=False)  # its last logged values, for HPARAMS

    @property
    def log_dir(self) -> Path:
        return Path(self.loggers[0].log_dir)

    def failure(self, what: str, step: int, optimizer: torch.optim.Optimizer) -> str:
        """The message of its single run's ``NonFiniteLossError``."""
        return NonFiniteGuard.message(what, step, self.model, [optimizer], self.settings["trainer"]["default_root_dir"])


class EnsembleOptimizer(torch.optim.Optimizer):
    """The members' optimizers (and step-interval schedulers) as one: a step steps the members still training."""

    def __init__(self, optimizers: list[torch.optim.Optimizer], schedulers: list[list], alive: list[int]):
        super().__init__([p for o in optimizers for g in o.param_groups for p in g["params"]], {})
        self.optimizers, self.schedulers, self.alive = optimizers, schedulers, alive

    def step(self, closure=None):
        loss = closure() if closure is not None else None
        for k in self.alive:
            self.optimizers[k].step()
            for scheduler in self.schedulers[k]:  # Lightning steps a single run's after its optimizer, every step
                scheduler.step()
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        for optimizer in self.optimizers:
            optimizer.zero_grad(set_to_none)

    def state_dict(self) -> dict:
        return {"optimizers": [o.state_dict() for o in self.optimizers],
                "schedulers": [[s.state_dict() for s in ss] for ss in self.schedulers]}

    def load_state_dict(self, state_dict: dict) -> None:
        for optimizer, state in zip(self.optimizers, state_dict["optimizers"]):
            optimizer.load_state_dict(state)
        for schedulers, states in zip(self.schedulers, state_dict["schedulers"]):
            for scheduler, state in zip(schedulers, states):
                scheduler.load_state_dict(state)


def optimizer_and_schedulers(model: IcrlModule) -> tuple[torch.optim.Optimizer, list]:
    """What ``configure_optimizers`` returns, as one optimizer and its step-interval schedulers (others refused)."""
    conf = model.configure_optimizers()
    if isinstance(conf, torch.optim.Optimizer):
        return conf, []
    schedulers = conf.get("lr_scheduler") if isinstance(conf, dict) else None
    schedulers = [] if schedulers is None else schedulers if isinstance(schedulers, list) else [schedulers]
    plain = [s if isinstance(s, dict) else {"scheduler": s} for s in schedulers]
    if not isinstance(conf, dict) or any(s.get("interval", "epoch") != "step" or s.get("frequency", 1) != 1
                                         for s in plain):
        raise ValueError(f"{type(model).__name__}.configure_optimizers: an ensemble trains one optimizer and "
                         "schedulers stepped every step (interval 'step', frequency 1) per member")
    return conf["optimizer"], [s["scheduler"] for s in plain]


class EnsembleModule(LightningModule):
    """The members' modules in one: ``training_step`` takes one batch per member and returns the sum of their
    losses; validation routes each member's loaders to its own metrics. Tags are logged as ``m<k>/<tag>``."""

    def __init__(self, members: Sequence[Member]):
        super().__init__()
        self.members = list(members)
        self.models = torch.nn.ModuleList(m.model for m in members)
        self.alive = list(range(len(members)))

    def configure_optimizers(self) -> EnsembleOptimizer:
        optimizers, schedulers = zip(*map(optimizer_and_schedulers, self.models))
        return EnsembleOptimizer(list(optimizers), list(schedulers), self.alive)

    def training_step(self, batches: list[dict[str, Tensor]], batch_idx: int) -> Tensor | None:
        alive = list(self.alive)
        models = [self.models[k] for k in alive]
        losses = type(models[0]).stacked_losses(models, [batches[k] for k in alive])  # (K,)
        logging = IcrlModule.is_logging_step(self)
        # read where NonFiniteGuard reads a single run's: every step on a CPU, at the logging steps on an accelerator
        # (a read syncs it); an unread non-finite member spoils only its own weights, which are never checkpointed
        finite = torch.isfinite(losses).tolist() if logging or losses.device.type == "cpu" else [True] * len(alive)
        for k, ok, loss in zip(alive, finite, losses):
            if not ok:  # as its single run, it stops here; its last checkpoint is its last good state
                self.members[k].error = self.members[k].failure(f"train/loss = {loss.item()}", self.global_step + 1,
                                                          self.trainer.optimizers[0].optimizers[k])
                self.alive.remove(k)
        if not self.alive:
            self.trainer.should_stop = True
            return None  # no step
        if logging:
            for k, model, loss, ok in zip(alive, models, losses, finite):
                if ok:
                    scalars = model.train_scalars(batches[k], loss, self.members[k].data, self.global_step + 1)
                    for name, value in scalars.items():
                        self.log(PREFIX.format(k) + name, value)
        if all(finite):  # no mask to copy to the device: a copy from the host waits for the GPU's queued work
            return losses.sum()
        return torch.where(torch.tensor(finite, device=losses.device), losses, 0.0).sum()

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int, dataloader_idx: int = 0) -> None:
        k, j = self.trainer.datamodule.loaders[dataloader_idx]
        if k not in self.alive:
            return
        metrics, inputs = self.models[k].eval_metrics[j], self.models[k].metric_inputs(batch, j)
        for name, metric in metrics.items():
            metric.update(*inputs[name])
        if batch_idx == 0:
            for name, metric in metrics.items():
                self.log(f"{PREFIX.format(k)}val/{name}", metric, add_dataloader_idx=False)


class EnsembleData(LightningDataModule):
    """The members' data modules in one: a list of batches a step, every member's validation loaders in turn."""

    def __init__(self, members: Sequence[Member]):
        super().__init__()
        self.members = [m.data for m in members]
        self.loaders: list[tuple[int, int]] = []  # validation dataloader index → (member, its loader)

    def setup(self, stage: str) -> None:
        for data in self.members:
            data.trainer = self.trainer  # its stream's rank and start, its epochs
            data.setup(stage)

    def transfer_batch_to_device(self, batch, device: torch.device, dataloader_idx: int):
        # on a CPU the streams' batches are already there; Lightning's walk over K members' batches is not free
        return batch if device.type == "cpu" else super().transfer_batch_to_device(batch, device, dataloader_idx)

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        if not isinstance(batch, list):  # a member's validation batch
            return batch
        first = self.members[0]  # a training step's: the members draw theirs on the device, if they do, together
        if isinstance(first, StreamDataModule):
            return type(first).stacked_after_batch_transfer(self.members, batch, dataloader_idx)
        return [data.on_after_batch_transfer(b, dataloader_idx) for data, b in zip(self.members, batch)]

    def train_dataloader(self) -> CombinedLoader:
        return CombinedLoader([data.train_dataloader() for data in self.members], mode="min_size")

    def val_dataloader(self) -> list:
        per_member = [data.val_dataloader() for data in self.members]
        self.loaders = [(k, j) for k, loaders in enumerate(per_member) for j in range(len(loaders))]
        return [loader for loaders in per_member for loader in loaders]

    def state_dict(self) -> dict:
        return {"members": [data.state_dict() for data in self.members]}

    def load_state_dict(self, state_dict: dict) -> None:
        for data, state in zip(self.members, state_dict["members"]):
            data.load_state_dict(state)


class MemberLoggers(Logger):
    """The ensemble's logger: routes ``m<k>/<tag>`` to member k's loggers as ``<tag>`` at the same step."""

    name, version = "ensemble", 0

    def __init__(self, members: Sequence[Member], root: Path):
        super().__init__()
        self.members, self._root = members, root

    @property
    def log_dir(self) -> str:
        return str(self._root)

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        for k, member in enumerate(self.members):
            prefix = PREFIX.format(k)
            own = {tag[len(prefix):]: value for tag, value in metrics.items() if tag.startswith(prefix)}
            if own:
                member.metrics.update({tag: float(value) for tag, value in own.items()})
                for logger in member.loggers:
                    logger.log_metrics({**own, **{t: v for t, v in metrics.items() if "/" not in t}}, step)

    def log_hyperparams(self, params, *args, **kwargs) -> None:  # each member's are its own (HParamsSummary)
        pass

    def save(self) -> None:
        for member in self.members:
            for logger in member.loggers:
                logger.save()

    def finalize(self, status: str) -> None:
        for member in self.members:
            for logger in member.loggers:
                logger.finalize(status)


class MemberCheckpoints(LastCheckpoint):
    """``LastCheckpoint`` for an ensemble: writes each training member's ``last.ckpt`` as its single run would."""

    def __init__(self, every_n_steps: int | None, members: Sequence[Member], module: EnsembleModule):
        super().__init__(every_n_steps)
        self.members, self.module = members, module

    def on_save_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict) -> None:
        pass  # the members' signatures go into their own checkpoints

    def _save_checkpoint(self, trainer: Trainer, filepath: str) -> None:
        shared = trainer._checkpoint_connector.dump_checkpoint(weights_only=False)
        optimizer = trainer.optimizers[0]
        for k in list(self.module.alive):
            member, model = self.members[k], self.module.models[k]
            if not all(torch.isfinite(p).all() for p in model.parameters()):  # never checkpoint non-finite weights
                member.error = member.failure("the weights are not finite", trainer.global_step, optimizer.optimizers[k])
                self.module.alive.remove(k)
                continue
            path = member.log_dir / "checkpoints" / "last.ckpt"
            path.parent.mkdir(parents=True, exist_ok=True)
            torch.save(member_checkpoint(shared, member, optimizer.optimizers[k], optimizer.schedulers[k], path,
                                         trainer), f"{path}.part")
            os.replace(f"{path}.part", path)
        self._last_global_step_saved, self._last_checkpoint_saved = trainer.global_step, filepath


def member_checkpoint(shared: dict, member: Member, optimizer, schedulers: list, path: Path, trainer: Trainer) -> dict:
    """Member's ``last.ckpt``: the ensemble's loop state with the member's weights, optimizer, hyper-parameters,
    stream position and signature (``icrl.checkpoints``), under the keys its single run's checkpoint has."""
    model, data = member.model, member.data
    callbacks = {key: {**state, "dirpath": str(path.parent), "last_model_path": str(path)}
                 for key, state in shared["callbacks"].items()}
    return {**{key: shared[key] for key in ("epoch", "global_step", "pytorch-lightning_version", "loops")},
            "state_dict": model.state_dict(), "callbacks": callbacks, "optimizer_states": [optimizer.state_dict()],
            "lr_schedulers": [s.state_dict() for s in schedulers],
            **{key: value for obj in (model, data) if obj.hparams for key, value in (
                (obj.CHECKPOINT_HYPER_PARAMS_NAME, getattr(obj, "_hparams_name", None)),
                (obj.CHECKPOINT_HYPER_PARAMS_KEY, dict(obj.hparams))) if value is not None},
            type(data).__qualname__: data.state_dict(),
            SIGNATURE_KEY: {**member.signature, "world_size": trainer.world_size,
                            "accumulate_grad_batches": trainer.accumulate_grad_batches}}


def ensemble_checkpoint(members: Sequence[Member]) -> dict:
    """The ensemble's checkpoint made from its members' ``last.ckpt`` (all at one step), to resume them together."""
    saved = [load_checkpoint(m.resume) for m in members]
    steps = {c["global_step"] for c in saved}
    if len(steps) > 1:
        raise ValueError(f"the members' checkpoints are at different steps {sorted(steps)}: resume them one by one")
    first = saved[0]
    return {**{key: first[key] for key in ("epoch", "global_step", "pytorch-lightning_version", "loops", "callbacks")},
            "state_dict": {f"models.{k}.{name}": value for k, c in enumerate(saved)
                           for name, value in c["state_dict"].items()},
            "optimizer_states": [{"optimizers": [c["optimizer_states"][0] for c in saved],
                                  "schedulers": [c["lr_schedulers"] for c in saved]}],
            "lr_schedulers": [],
            EnsembleData.__qualname__: {"members": [c[type(m.data).__qualname__] for c, m in zip(saved, members)]}}


def _keep_freed_memory() -> None:
    """On glibc, freed blocks up to 32 MB stay in the process's heap. A stacked step's temporaries are K times a
    run's, and glibc otherwise returns them to the system and faults them in again every step: about 10% of an
    ensemble's CPU time (docs/performance.md §7). The setting is the process's: a sweep's worker, or a fit's."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 32 << 20)  # M_MMAP_THRESHOLD, its largest value
        libc.mallopt(-1, 256 << 20)  # M_TRIM_THRESHOLD


def fit_ensemble(members: Sequence[Member], root: Path) -> int | None:
    """Train ``members`` together under their (alike) Trainer settings, the ensemble's own files in ``root``;
    return the signal that stopped them, if one did. Each member's ``error`` says why it left, if it did."""
    _keep_freed_memory()
    trainer_settings = members[0].settings["trainer"]
    module, data, stop = EnsembleModule(members), EnsembleData(members), StopCleanly()
    callbacks = [stop]
    if trainer_settings.get("enable_checkpointing") is not False:
        callbacks.append(MemberCheckpoints(members[0].settings.get("checkpoint_every_n_steps"), members, module))
    if trainer_settings.get("enable_progress_bar") is not False:
        callbacks.append(StepProgressBar())
    hparams = [HParamsSummary(m.settings) for m in members]
    for member, summary in zip(members, hparams):  # what Lightning and HParamsSummary log of a single run
        member.loggers[0].log_hyperparams(summary.params)
        _log_hyperparams(SimpleNamespace(loggers=member.loggers, lightning_module=member.model, datamodule=member.data))
    callbacks.append(LambdaCallback(on_fit_end=lambda *_: [summary.write(m.loggers[0], m.metrics)
                                                           for m, summary in zip(members, hparams)]))
    trainer = Trainer(**{k: v for k, v in trainer_settings.items() if k not in ("callbacks", "logger", "default_root_dir")},
                      callbacks=callbacks, logger=MemberLoggers(members, root), default_root_dir=root)
    ckpt_path = None
    if any(m.resume for m in members):
        root.mkdir(parents=True, exist_ok=True)
        ckpt_path = root / "resume.ckpt"
        torch.save(ensemble_checkpoint(members), ckpt_path)
    trainer.fit(module, data, ckpt_path=ckpt_path)
    return stop.signum
