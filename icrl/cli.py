"""The ``icrl`` command: a LightningCLI over every icrl model and data module.

``icrl fit --config configs/recall/fig1/reparam-linear-fa.yaml`` trains a paper model; any
LightningModule / LightningDataModule can be named with ``class_path``. Every data module exposes
a ``task`` property (a plain dict: vocabulary sizes, α, dimensions, ...) which is linked into the
model's ``task`` argument, so the model is always built for the data it will see.

Every fit ends with a validation and ``<log_dir>/checkpoints/last.ckpt`` (``icrl.checkpoints``);
``--ckpt_path`` of such a checkpoint resumes exactly, logging on into the checkpoint's own run
folder. Exit status: 0 done, 1 a non-finite loss, 2 a bad setting (one line, before any step),
130 / 143 stopped by SIGINT / SIGTERM (after writing a checkpoint and printing how to resume).
"""

from __future__ import annotations

import difflib
import inspect
import os
import re
import shlex
import shutil
import signal
import sys
import warnings
from pathlib import Path

import torch
from lightning.pytorch import Callback, LightningDataModule, LightningModule, Trainer
from lightning.pytorch.callbacks import ProgressBar, TQDMProgressBar
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities.exceptions import MisconfigurationException, SIGTERMException
from torch.utils.tensorboard.summary import hparams as hparams_summary

import icrl.recall
import icrl.regression  # noqa: F401  (their classes are known to the parser by their short names)
from icrl.callbacks import NonFiniteGuard, NonFiniteLossError
from icrl.checkpoints import (EXIT_CODES, RunCheckpoint, StopCleanly, check_resume, differences, flat,
                              load_checkpoint, run_signature)

DESCRIPTION = """Trains and evaluates icrl models. Models (--model): icrl.recall.RecallModule,
icrl.regression.OneLayerRegression, icrl.regression.TransformerRegression; data (--data):
icrl.recall.RecallDataModule, icrl.regression.TemplateRegressionDataModule. Short names work,
e.g. --model.help RecallModule. The configs in configs/ set both."""
REFRESH_RATE = 10  # a progress bar redrawn every step costs ~10% of a CPU recall step
# Lightning warns about any IterableDataset with a __len__ (the fixed validation sets have an exact one,
# no workers) and, under torch 2.13, about its own use of a torch API: nothing a user can act on.
QUIET = (r"Your `IterableDataset` has `__len__` defined", r"`isinstance\(treespec, LeafSpec\)` is deprecated")
CKPT_NAMES = ("last", "best", "hpc", "registry")  # ckpt_path values Lightning resolves itself
ALLOCATION = re.compile(r"can't allocate memory|out of memory|not enough memory", re.IGNORECASE)


class IcrlArgumentParser(LightningArgumentParser):
    """Reports a bad option in one line (with the closest accepted name), not 60 lines of usage."""

    def error(self, message: str, ex: Exception | None = None):
        if not self.exit_on_error:
            super().error(message, ex)
        print(f"icrl: error: {one_line(message)}", file=sys.stderr)
        self.exit(2)


def one_line(message: str) -> str:
    """jsonargparse's nested message of a bad option, as one line naming the option and the closest accepted one.

    >>> one_line('Parser key "data":\\n  Problem with given class_path \\'icrl.recall.RecallDataModule\\':\\n'
    ...          "    Option 'alpah' is not accepted\\n  Given value: x")
    "Option 'alpah' is not accepted by icrl.recall.RecallDataModule (--data.alpah); did you mean alpha?"
    """
    option = re.search(r"Option '(\w+)' is not accepted", message)
    cls = re.search(r"class_path '([\w.]+)'", message)
    key = re.search(r'Parser key "([\w.]+)"', message)
    if option and cls:
        name, path = option[1], cls[1]
        line = f"Option '{name}' is not accepted by {path}" + (f" (--{key[1]}.{name})" if key else "")
        try:
            module, _, attr = path.rpartition(".")
            accepted = list(inspect.signature(getattr(__import__(module, fromlist=[attr]), attr)).parameters)
        except (ImportError, AttributeError, ValueError):
            accepted = []
        close = difflib.get_close_matches(name, accepted, n=1)
        return line + (f"; did you mean {close[0]}?" if close else f"; accepted: {', '.join(accepted)}")
    if re.search(r"--(optimizer|lr_scheduler)\b", message):
        return (f"{message.strip().splitlines()[0]}: the optimizer is the model's setting, e.g. "
                "--model.optimizer torch.optim.Adam --model.optimizer.lr 1e-3")
    return " ".join(line.strip() for line in message.strip().splitlines())


class HParamsSummary(Callback):
    """Fills TensorBoard's HPARAMS tab at the end of a fit: the run's settings and its end metrics."""

    def __init__(self, params: dict):
        self.params = params

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.is_global_zero or not isinstance(trainer.logger, TensorBoardLogger):
            return
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
        writer = trainer.logger.experiment._get_file_writer()
        for summary in hparams_summary(self.params, metrics):  # TensorBoard reads each metric's last value
            writer.add_summary(summary)
        writer.flush()


class RunConfig(SaveConfigCallback):
    """``config.yaml`` of the fit; ``validate`` / ``test`` of its checkpoint write their own file beside it."""

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        stage = getattr(stage, "value", stage)  # Lightning passes a TrainerFn
        if stage != "fit":
            self.config_filename = f"{stage}-config.yaml"
        super().setup(trainer, pl_module, stage)


def run_folder(ckpt_path: str | None) -> Path | None:
    """The TensorBoard version folder a checkpoint was written in (``<log_dir>/checkpoints/x.ckpt``), if any."""
    if ckpt_path is None:
        return None
    folder = Path(ckpt_path).resolve().parent
    return folder.parent if folder.name == "checkpoints" and (folder.parent / "hparams.yaml").is_file() else None


def check_batch_memory(datamodule: LightningDataModule, init_args: dict) -> None:
    """Refuses a training batch that alone would fill half of this machine's memory (``ValueError``).

    The batch is drawn on the CPU before any step; past the memory, Linux kills the process rather
    than failing an allocation, so there would be no error to report. The size of one example is
    measured on a batch of one drawn by a copy of the data module.
    """
    batch_size = init_args.get("batch_size")
    if not isinstance(batch_size, int) or not hasattr(datamodule, "train_dataloader"):
        return
    try:
        batch = next(iter(type(datamodule)(**{**init_args, "batch_size": 1}).train_dataloader()))
    except Exception:  # a data module that cannot be copied so: nothing to measure
        return
    tensors = batch.values() if isinstance(batch, dict) else batch if isinstance(batch, (list, tuple)) else [batch]
    per_example = sum(t.nbytes for t in tensors if isinstance(t, torch.Tensor) and t.ndim and len(t) == 1)
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    if per_example * batch_size > memory / 2:
        raise ValueError(
            f"data.batch_size={batch_size}: one training batch takes {per_example * batch_size / 2**30:.1f} GiB "
            f"({per_example} bytes an example), more than half of this machine's {memory / 2**30:.1f} GiB of memory; "
            "lower data.batch_size")


class IcrlCLI(LightningCLI):
    """LightningCLI with the data → model link, TensorBoard by default, clean stops and one-line errors."""

    def parse_arguments(self, parser: LightningArgumentParser, args) -> None:
        self.argv = list(args) if isinstance(args, (list, tuple)) else sys.argv[1:]  # for the resume command
        super().parse_arguments(parser, args)

    def _parse_ckpt_path(self) -> None:
        # Lightning reads the checkpoint's hyper-parameters while parsing: a broken file is a bad setting
        subcommand = self.config.get("subcommand")
        ckpt_path = self.config.get(subcommand or "", {}).get("ckpt_path")
        if ckpt_path is None or ckpt_path in CKPT_NAMES:
            return super()._parse_ckpt_path()
        try:
            load_checkpoint(ckpt_path)
        except ValueError as err:
            self.parser.error(str(err))
        given = run_signature(self.config[subcommand].as_dict())
        super()._parse_ckpt_path()  # the checkpoint's model settings replace the configured ones
        saved = run_signature(self.config[subcommand].as_dict())
        diffs = differences(saved, given, [k for k in saved if k.startswith("model.")])
        if subcommand == "fit" and diffs:  # validate / test: the checkpoint is the model to score
            self.parser.error(f"cannot resume from {ckpt_path!r}: it holds another model ({diffs}); the checkpoint's "
                              "model settings would silently replace these. Resume with its settings")

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument(
            "--name", type=str, default="icrl",
            help="Experiment name: TensorBoard logs go to <default_root_dir>/lightning_logs/<name>/version_<n>."
        )
        parser.add_argument(
            "--checkpoint_every_n_steps", type=int | None, default=500,
            help="Write <log_dir>/checkpoints/last.ckpt every this many steps (null: at the end and on a stop only)."
        )
        parser.link_arguments("data.task", "model.init_args.task", apply_on="instantiate")

    def instantiate_classes(self) -> None:
        # Invalid settings raise ValueError in constructors (Lightning's own a MisconfigurationException);
        # report them as CLI errors (exit 2) before any training step, instead of a traceback.
        try:
            super().instantiate_classes()
        except (ValueError, MisconfigurationException) as err:
            while isinstance(inner := err.__cause__ or (None if err.__suppress_context__ else err.__context__),
                             ValueError):  # jsonargparse wraps the constructor's own error
                err = inner
            message = str(err)
            accelerator = self._get(self.config, "trainer", default={}).get("accelerator")
            if isinstance(err, MisconfigurationException) and re.search("accelerator|backend", message, re.I):
                available = ["cpu", *["cuda"] * torch.cuda.is_available(), *["mps"] * torch.backends.mps.is_available()]
                message = f"trainer.accelerator={accelerator!r} cannot run here ({message}); available: {available} or auto"
            self.parser.error(message)

    @property
    def run_config(self) -> dict:
        return self.config.get(self.subcommand, self.config).as_dict()

    def _instantiate_trainer(self, config: dict, callbacks: list) -> Trainer:
        given = [*(config.get("callbacks") or []), *callbacks]
        extra = [] if any(isinstance(c, NonFiniteGuard) for c in given) else [NonFiniteGuard()]
        extra.append(StopCleanly())
        if self.subcommand == "fit":
            extra.append(HParamsSummary(self._hparams()))
            if config.get("enable_checkpointing") is not False:
                extra.append(RunCheckpoint(self.run_config.get("checkpoint_every_n_steps")))
        if config.get("enable_progress_bar") is not False and not any(isinstance(c, ProgressBar) for c in given):
            extra.append(TQDMProgressBar(refresh_rate=REFRESH_RATE))
        if config.get("logger") in (None, True) and not config.get("fast_dev_run"):
            # Lightning's default TensorBoardLogger writes a meaningless hp_metric; a run of a checkpoint logs
            # into the checkpoint's own folder, so a resumed run's curves stay in one place.
            folder = run_folder(self.run_config.get("ckpt_path"))
            root = Path(config.get("default_root_dir") or ".") / "lightning_logs"
            config["logger"] = (TensorBoardLogger(folder.parent, name="", version=folder.name, default_hp_metric=False)
                                if folder else
                                TensorBoardLogger(root, name=self.run_config["name"], default_hp_metric=False))
        return super()._instantiate_trainer(config, [*extra, *callbacks])

    def _callback(self, cls: type):
        return next((c for c in self.trainer.callbacks if type(c) is cls), None)

    def _run_subcommand(self, subcommand: str) -> None:
        trainer = self.trainer
        log_dir = Path(trainer.logger.log_dir) if trainer.logger is not None and trainer.logger.log_dir else None
        fresh = log_dir is not None and not log_dir.exists()
        try:
            with warnings.catch_warnings():
                for message in QUIET:
                    warnings.filterwarnings("ignore", message=message)
                super()._run_subcommand(subcommand)
        except NonFiniteLossError:
            raise
        except SIGTERMException:  # Lightning's, before training started: it would exit with status 0
            print("icrl: stopped by SIGTERM before the first step; nothing kept", file=sys.stderr)
            sys.exit(EXIT_CODES[signal.SIGTERM])
        except (ValueError, MisconfigurationException, MemoryError, RuntimeError) as err:
            if isinstance(err, RuntimeError) and not (isinstance(err, torch.OutOfMemoryError) or ALLOCATION.search(str(err))):
                raise
            stop = self._callback(StopCleanly)
            if stop is not None and stop.steps_run:
                raise  # a failure while training is not a bad setting
            if fresh and trainer.is_global_zero and log_dir.exists() and not any(log_dir.rglob("*.ckpt")):
                shutil.rmtree(log_dir, ignore_errors=True)  # this run made it and wrote nothing but its logger's header
            if not trainer.is_global_zero:
                sys.exit(2)  # every process found it; one says so
            self.parser.error(self._setting_error(err))

    def _setting_error(self, err: BaseException) -> str:
        if isinstance(err, (MemoryError, RuntimeError)):
            data = flat(self.run_config.get("data") or {})
            sizes = ", ".join(f"{k}={v}" for k, v in data.items() if k.endswith("batch_size"))
            return (f"out of memory before the first step ({type(err).__name__}: {str(err).splitlines()[0][:200]}); "
                    f"the batches do not fit this machine: lower them ({sizes})")
        return str(err).splitlines()[0] if str(err) else type(err).__name__

    def _check(self, check, *args) -> None:
        try:
            check(*args)
        except ValueError as err:
            self.parser.error(str(err))

    def before_fit(self) -> None:
        signature = run_signature(self.run_config)
        checkpoint = self._callback(RunCheckpoint)
        if checkpoint is not None:
            checkpoint.signature = signature
        ckpt_path = self.run_config.get("ckpt_path")
        if ckpt_path is not None and ckpt_path not in CKPT_NAMES:
            self._check(check_resume, ckpt_path, signature, self.trainer.world_size,
                        self.trainer.accumulate_grad_batches)
        self._check(check_batch_memory, self.datamodule, (self.run_config.get("data") or {}).get("init_args") or {})
        if self.trainer.logger is not None:  # hparams.yaml: the whole run, optimizer and attention included
            self.trainer.logger.log_hyperparams(self._hparams())
        self._announce()

    def _announce(self) -> None:
        logger = self.trainer.logger
        if self.trainer.is_global_zero and logger is not None and logger.log_dir:
            print(f"icrl: logging to {logger.log_dir}  (watch with: tensorboard --logdir {logger.root_dir})",
                  file=sys.stderr)

    def _before_evaluation(self) -> None:
        self._announce()

    before_validate = before_test = _before_evaluation

    def _hparams(self) -> dict:
        """The run's settings, flat and readable (``model.optimizer.lr``), as TensorBoard's HPARAMS tab takes them."""
        config = {k: v for k, v in self.run_config.items() if k not in ("config", "trainer")}
        trainer = self.run_config.get("trainer") or {}
        config["trainer"] = {k: trainer.get(k) for k in ("max_steps", "accumulate_grad_batches", "devices", "precision")}
        return {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in flat(config).items()
                if k != "model.task"}  # the task is linked from the data settings

    def after_fit(self) -> None:
        trainer = self.trainer
        checkpoint, stop = self._callback(RunCheckpoint), self._callback(StopCleanly)
        path = checkpoint.last_model_path if checkpoint is not None else None
        if trainer.is_global_zero and path:
            print(f"icrl: checkpoint at step {trainer.global_step}: {path}", file=sys.stderr)
        if stop is not None and stop.signum is not None:
            if trainer.is_global_zero:
                if path:
                    argv = [a for i, a in enumerate(self.argv) if not (
                        a.startswith("--ckpt_path=") or a == "--ckpt_path" or i and self.argv[i - 1] == "--ckpt_path")]
                    resume = shlex.join(["icrl", *argv, "--ckpt_path", path])
                    print(f"icrl: stopped by {signal.Signals(stop.signum).name}; "
                          f"resume with: {resume}", file=sys.stderr)
                else:
                    print("icrl: stopped; checkpointing is off, so nothing was kept", file=sys.stderr)
            sys.exit(EXIT_CODES[stop.signum])


def cli_main(args: list[str] | None = None, run: bool = True, cli_class: type[IcrlCLI] = IcrlCLI) -> IcrlCLI:
    """Entry point of ``icrl``; tests and notebooks call it with ``args`` instead of ``sys.argv``
    (``cli_class``: a subclass, e.g. the sweep's, that needs the same parser)."""
    return cli_class(
        LightningModule,
        LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        args=args,
        run=run,
        parser_class=IcrlArgumentParser,
        parser_kwargs={"description": DESCRIPTION, **{s: {"description": DESCRIPTION} for s in ("fit", "validate", "test")}},
        save_config_callback=RunConfig,
        save_config_kwargs={"overwrite": True},
        auto_configure_optimizers=False,  # the optimizer is the model's setting only (no top-level --optimizer)
    )


def main() -> None:
    """Console script ``icrl``: exit status 0 on success, 1 on a non-finite loss, 2 on a bad setting, 130/143 stopped."""
    # Modules in the current directory resolve as class paths, as under `python -m`.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    # These models are small: on a CPU shared with other processes, torch's default of one thread per
    # core runs several times slower than one thread (README, "Threads"). OMP_NUM_THREADS overrides;
    # set here, it also reaches DDP ranks and DataLoader workers (Lightning's DDP default is cores / ranks).
    if "OMP_NUM_THREADS" not in os.environ:
        os.environ["OMP_NUM_THREADS"] = "1"
        torch.set_num_threads(1)
    if sys.argv[1:2] == ["sweep"]:  # not a LightningCLI subcommand: many icrl fit runs (icrl.sweep)
        from icrl.sweep import main as sweep_main

        return sweep_main(sys.argv[2:])
    try:
        cli_main()
    except NonFiniteLossError as err:
        sys.exit(f"icrl: error: {err}")


if __name__ == "__main__":
    main()
