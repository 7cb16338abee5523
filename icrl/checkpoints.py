"""Fits that can be stopped and resumed exactly: the last checkpoint, clean stops, resume checks.

``last.ckpt`` goes through a temporary file renamed over the old one, so ``kill -9`` mid-write leaves the previous
one intact. It records what was trained (``training_signature``): resuming under another world size, batch size,
data or model config is refused before step 0 (``check_resume``), as the stream is keyed by rank and batch.
"""

from __future__ import annotations

import os
import pickle
import signal
import sys
import threading
import zipfile
from pathlib import Path

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint

SIGNATURE_KEY = "icrl_run"  # the checkpoint entry holding ``training_signature`` (its name in old checkpoints too)
# free on a resume: the stream is the same for any number of workers; validation sums over examples, however batched
FREE_SETTINGS = ("data.num_workers", "data.val_batch_size")
EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}  # 128 + the signal, as a shell reports it


class LastCheckpoint(ModelCheckpoint):
    """``last.ckpt`` in the log folder's ``checkpoints/``: every ``every_n_steps`` steps (``None``: never) and at
    the end of every fit, a stopped one's included (``StopCleanly``)."""

    def __init__(self, every_n_steps: int | None = 500, signature: dict | None = None):
        if every_n_steps is not None and every_n_steps < 1:
            raise ValueError(f"checkpoint_every_n_steps must be >= 1 or null (only at the end), got {every_n_steps}")
        super().__init__(save_last=True, save_top_k=0, every_n_train_steps=every_n_steps or 0,
                         enable_version_counter=False)
        self.signature = signature or {}  # what is trained (``training_signature``), checked on a resume

    @property
    def state_key(self) -> str:
        return "RunCheckpoint"  # the same key whatever the interval (a resume may change it), and in old checkpoints

    def load_state_dict(self, state_dict: dict) -> None:
        if state_dict.get("dirpath") == self.dirpath:  # a moved checkpoint only loses its path's record, unwarned
            super().load_state_dict(state_dict)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def on_save_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict) -> None:
        checkpoint[SIGNATURE_KEY] = {**self.signature, "world_size": trainer.world_size,
                                     "accumulate_grad_batches": trainer.accumulate_grad_batches}

    def _save_checkpoint(self, trainer: Trainer, filepath: str) -> None:
        part = f"{filepath}.part"
        super()._save_checkpoint(trainer, part)  # every rank takes part; rank 0 writes
        if trainer.is_global_zero:
            os.replace(part, filepath)
        self._last_checkpoint_saved = filepath


class StopCleanly(Callback):
    """Ends every fit at a step boundary with a validation (Lightning's on ``should_stop``): at ``max_steps`` or on
    SIGINT / SIGTERM, whose first signal is only recorded (the run validates, ``LastCheckpoint`` writes); a second one
    aborts as usual (Ctrl-C twice), and one before the first step keeps nothing. DDP processes agree each step."""

    def __init__(self):
        self.signum: int | None = None
        self.steps_trained = 0  # by this fit (0: it failed before its first step)
        self._previous: dict[int, object] = {}

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # after Lightning's own SIGTERM handler (set just before training), which would end the run with status 0
        if threading.current_thread() is threading.main_thread():  # handlers can only be set there
            self._previous = {s: signal.signal(s, self._record) for s in EXIT_CODES}

    def _record(self, signum: int, frame) -> None:
        self.signum = signum
        self._restore()
        print(f"icrl: {signal.Signals(signum).name} received: stopping after this step "
              "(send it again to abort without a checkpoint)", file=sys.stderr, flush=True)

    def _restore(self) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous = {}

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs, batch, batch_idx: int) -> None:
        self.steps_trained += 1
        stop = self.signum is not None
        if trainer.world_size > 1:
            stop = trainer.strategy.reduce_boolean_decision(stop, all=False)
            if stop and self.signum is None:  # another process was signalled
                self.signum = signal.SIGTERM
        if stop or 0 < trainer.max_steps <= trainer.global_step:
            trainer.should_stop = True

    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self._restore()

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        self._restore()


def training_signature(config: dict) -> dict:
    """What a resume must train the same, from the CLI config: the model and data settings, flat.

    >>> training_signature({"model": {"class_path": "M", "init_args": {"d_model": 8}}, "data": {"init_args": {"seed": 0}}})
    {'model.class_path': 'M', 'model.d_model': 8, 'data.seed': 0}
    """
    return {key: value for key, value in flat({k: config.get(k) for k in ("model", "data")}).items()
            if key not in FREE_SETTINGS and not key.startswith("model.task.")}  # linked from the data settings


def flat(tree: dict, prefix: str = "") -> dict:
    """Nested dicts as one dict of dotted keys; ``init_args`` levels are left out of the names.

    >>> flat({"a": {"init_args": {"b": 1, "c": [2]}}, "d": None, "e": {}})
    {'a.b': 1, 'a.c': [2], 'd': None, 'e': {}}
    """
    items = {}
    for key, value in tree.items():
        name = prefix if key == "init_args" else f"{prefix}.{key}" if prefix else str(key)
        items.update(flat(value, name) if isinstance(value, dict) and value else {name: value})
    return items


def log_folder_of(ckpt_path: str | None) -> Path | None:
    """The log folder a checkpoint was written in (``<log_dir>/checkpoints/x.ckpt``), if any."""
    folder = Path(ckpt_path).resolve().parent if ckpt_path else None
    return folder.parent if folder and folder.name == "checkpoints" and (folder.parent / "hparams.yaml").is_file() else None


def load_checkpoint(path: str | Path) -> dict:
    """The checkpoint at ``path``, loaded as ``weights_only`` on the CPU; ``ValueError`` naming the file if it is not one."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"ckpt_path={str(path)!r}: no such file")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, OSError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError) as err:
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0].split(". ")[0]
        raise ValueError(f"ckpt_path={str(path)!r} is not a readable checkpoint (truncated or corrupted?): {reason}") from err
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint or "global_step" not in checkpoint:
        raise ValueError(f"ckpt_path={str(path)!r} is not a Lightning checkpoint (no state_dict / global_step)")
    return checkpoint


def differences(saved: dict, now: dict, keys=None) -> str:
    """The settings that differ, as ``key=value there, value here``; empty if none."""
    keys = list(dict.fromkeys([*saved, *now])) if keys is None else keys
    return "; ".join(f"{k}={saved.get(k)!r} there, {now.get(k)!r} here" for k in keys if saved.get(k) != now.get(k))


def check_resume(path: str | Path, signature: dict, world_size: int, accumulate_grad_batches: int) -> None:
    """Refuses to resume from ``path`` a run other than the one it saved: ``ValueError`` naming the differences.
    A checkpoint without a signature (not written by ``LastCheckpoint``) is only checked for being readable."""
    saved = load_checkpoint(path).get(SIGNATURE_KEY)
    now = {**signature, "world_size": world_size, "accumulate_grad_batches": accumulate_grad_batches}
    if saved is not None and (diffs := differences(saved, now)):
        raise ValueError(
            f"cannot resume from {str(path)!r}: it was trained with other settings ({diffs}), so the resumed run "
            "would not continue that run (the stream of batches is keyed by process and batch). Resume with the "
            "checkpoint's settings, or start a new run")
