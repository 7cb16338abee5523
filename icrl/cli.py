"""``icrl fit`` / ``validate`` / ``test``: a LightningCLI over any LightningModule and data module (``class_path``).

A data module's ``task`` (a dict of its sizes) is linked into the model's, so the model is built for the data it
will see. A run logs into ``<default_root_dir>/lightning_logs/<name>/version_N`` (``icrl.scalars``); a fit ends with
``last.ckpt`` there (``icrl.checkpoints``). Exit status: 0 done, 1 a non-finite loss, 2 a bad setting (one line,
before any step), 130 / 143 stopped by SIGINT / SIGTERM (after a checkpoint and printing how to resume).
"""

from __future__ import annotations

import logging
import os
import re
import shlex
import shutil
import signal
import sys
import warnings
from pathlib import Path

import torch
from lightning.pytorch import LightningDataModule, LightningModule, Trainer, seed_everything
from lightning.pytorch.callbacks import ProgressBar
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.utilities.exceptions import MisconfigurationException, SIGTERMException

import icrl.recall
import icrl.regression  # noqa: F401  (their classes are known to the parser by their short names)
from icrl.arguments import IcrlArgumentParser, one_line  # noqa: F401  (one_line: the sweep's)
from icrl.callbacks import HParamsSummary, NonFiniteGuard, NonFiniteLossError, SaveStageConfig, StepProgressBar
from icrl.checkpoints import (EXIT_CODES, LastCheckpoint, StopCleanly, check_resume, differences, flat,
                              load_checkpoint, training_signature)
from icrl.scalars import run_loggers

DESCRIPTION = """Trains and evaluates icrl models. Models (--model): icrl.recall.RecallModule,
icrl.regression.OneLayerRegression, icrl.regression.TransformerRegression; data (--data):
icrl.recall.RecallDataModule, icrl.regression.TemplateRegressionDataModule. Short names work,
e.g. --model.help RecallModule. The configs in configs/ set both."""
# Lightning's warnings on the validation sets' exact __len__, on a checkpoint's own callback (LastCheckpoint) absent
# from validate/test and, under torch 2.13, on its own use of a torch API; and its advertisements for cloud services
QUIET = (r"Your `IterableDataset` has `__len__` defined|callbacks used to create the checkpoint need to be provided|"
         r"`isinstance\(treespec, LeafSpec\)` is deprecated")
CKPT_NAMES = ("last", "best", "hpc", "registry")  # ckpt_path values Lightning resolves itself
# a failed allocation: torch's RuntimeError (CUDA's OutOfMemoryError; the CPU's, on Linux or Windows) or a MemoryError
OUT_OF_MEMORY = re.compile(r"can't allocate memory|out of memory|not enough memory", re.IGNORECASE)


class IcrlCLI(LightningCLI):
    """LightningCLI with the data → model link, TensorBoard by default, clean stops and one-line errors."""

    def parse_arguments(self, parser: LightningArgumentParser, args) -> None:
        self.argv = list(args) if isinstance(args, (list, tuple)) else sys.argv[1:]
        IcrlArgumentParser.argv = self.argv  # for errors naming a --config file
        parser.check_yaml()
        super().parse_arguments(parser, args)

    def _set_seed(self) -> None:
        # as Lightning's, without its "Seed set to N" line (before a bad setting's one-line error; config.yaml has it)
        seed = self._get(self.config, "seed_everything")
        if seed is not False:
            seed = seed_everything(None if seed is True else seed, workers=True, verbose=False)
            (self.config[self.subcommand] if self.subcommand else self.config)["seed_everything"] = seed

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument("--name", type=str, default="icrl", help="Experiment name: TensorBoard logs go to "
                            "<default_root_dir>/lightning_logs/<name>/version_<n>.")
        parser.add_argument("--checkpoint_every_n_steps", type=int | None, default=500, help="Write "
                            "<log_dir>/checkpoints/last.ckpt every this many steps (null: at the end and on a stop only).")
        parser.link_arguments("data.task", "model.init_args.task", apply_on="instantiate")

    @property
    def settings(self) -> dict:  # the subcommand's config, as plain dicts
        return self.config.get(self.subcommand, self.config).as_dict()

    def _parse_ckpt_path(self) -> None:
        # Lightning reads the checkpoint's hyper-parameters while parsing: a broken file is a bad setting
        subcommand = self.config.get("subcommand")
        ckpt_path = self.config.get(subcommand or "", {}).get("ckpt_path")
        if ckpt_path in (None, *CKPT_NAMES):
            return super()._parse_ckpt_path()
        try:
            load_checkpoint(ckpt_path)
        except ValueError as err:
            self.parser.error(str(err))
        given = training_signature(self.config[subcommand].as_dict())
        super()._parse_ckpt_path()  # the checkpoint's model settings replace the configured ones
        saved = training_signature(self.config[subcommand].as_dict())
        diffs = differences(saved, given, [k for k in saved if k.startswith("model.")])
        if subcommand == "fit" and diffs:  # validate / test: the checkpoint is the model to score
            self.parser.error(f"cannot resume from {ckpt_path!r}: it holds another model ({diffs}); the checkpoint's "
                              "model settings would silently replace these. Resume with its settings")

    def instantiate_classes(self) -> None:
        # a constructor's ValueError (Lightning's: MisconfigurationException) is a bad setting: exit 2, one line
        try:
            super().instantiate_classes()
        except (ValueError, MisconfigurationException) as err:
            while isinstance(inner := err.__cause__ or (None if err.__suppress_context__ else err.__context__),
                             ValueError):  # jsonargparse wraps the constructor's own error
                err = inner
            message = str(err)
            if isinstance(err, MisconfigurationException) and re.search("accelerator|backend", message, re.I):
                accelerator = self._get(self.config, "trainer", default={}).get("accelerator")
                available = ["cpu", *["cuda"] * torch.cuda.is_available(), *["mps"] * torch.backends.mps.is_available()]
                message = f"trainer.accelerator={accelerator!r} cannot run here ({message}); available: {available} or auto"
            self.parser.error(message)

    def _instantiate_trainer(self, config: dict, callbacks: list) -> Trainer:
        given = [*(config.get("callbacks") or []), *callbacks]
        self.stop, self.last_checkpoint = StopCleanly(), None
        extra = [*[NonFiniteGuard()] * (not any(isinstance(c, NonFiniteGuard) for c in given)), self.stop]
        if self.subcommand == "fit":
            extra.append(HParamsSummary(self.settings))
            if config.get("enable_checkpointing") is not False:
                self.last_checkpoint = LastCheckpoint(self.settings.get("checkpoint_every_n_steps"),
                                                      training_signature(self.settings))
                extra.append(self.last_checkpoint)
        if config.get("enable_progress_bar") is not False and not any(isinstance(c, ProgressBar) for c in given):
            extra.append(StepProgressBar())
        if config.get("logger") in (None, True) and not config.get("fast_dev_run"):
            # Lightning's default TensorBoardLogger writes a meaningless hp_metric
            config["logger"] = run_loggers(config.get("default_root_dir"), self.settings["name"],
                                           self.settings.get("ckpt_path"))
        rank_zero = logging.getLogger("lightning.pytorch.utilities.rank_zero")
        no_tips = lambda r: not str(r.msg).startswith("💡 Tip")
        rank_zero.addFilter(no_tips)
        try:
            return super()._instantiate_trainer(config, [*extra, *callbacks])
        finally:
            rank_zero.removeFilter(no_tips)

    def _run_subcommand(self, subcommand: str) -> None:
        trainer = self.trainer
        log_dir = Path(trainer.logger.log_dir) if trainer.logger is not None and trainer.logger.log_dir else None
        fresh = log_dir is not None and not log_dir.exists()
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=QUIET)
                super()._run_subcommand(subcommand)
        except SIGTERMException:  # Lightning's, before training started: it would exit with status 0
            print("icrl: stopped by SIGTERM before the first step; nothing kept", file=sys.stderr)
            sys.exit(EXIT_CODES[signal.SIGTERM])
        except (ValueError, MisconfigurationException, MemoryError, RuntimeError) as err:
            out_of_memory = isinstance(err, MemoryError) or isinstance(err, RuntimeError) and OUT_OF_MEMORY.search(str(err))
            if isinstance(err, RuntimeError) and not out_of_memory or self.stop.steps_trained:
                raise  # a failure while training (a non-finite loss included) is not a bad setting
            if fresh and trainer.is_global_zero and log_dir.exists() and not any(log_dir.rglob("*.ckpt")):
                shutil.rmtree(log_dir, ignore_errors=True)  # made by this run, it holds only its loggers' headers
            if not trainer.is_global_zero:
                sys.exit(2)  # every process found it; one says so
            message = str(err).splitlines()[0] if str(err) else type(err).__name__
            if out_of_memory:
                sizes = ", ".join(f"{k}={v}" for k, v in flat(self.settings).items() if k.endswith("batch_size"))
                message = (f"out of memory before the first step ({type(err).__name__}: {message[:200]}); "
                           f"the batches do not fit this machine: lower them ({sizes})")
            self.parser.error(message)

    def before_fit(self) -> None:
        ckpt_path = self.settings.get("ckpt_path")
        if ckpt_path not in (None, *CKPT_NAMES):  # its ValueError is a bad setting (_run_subcommand)
            check_resume(ckpt_path, training_signature(self.settings), self.trainer.world_size,
                         self.trainer.accumulate_grad_batches)
        self._announce()

    def _announce(self) -> None:
        if self.trainer.is_global_zero and (logger := self.trainer.logger) is not None and logger.log_dir:
            watch = shlex.join([*tensorboard_command(), "--logdir", str(logger.root_dir)])
            print(f"icrl: logging to {logger.log_dir}  (watch with: {watch})", file=sys.stderr)

    before_validate = before_test = _announce

    def after_fit(self) -> None:
        path, signum = self.last_checkpoint and self.last_checkpoint.last_model_path, self.stop.signum
        if self.trainer.is_global_zero and path:
            print(f"icrl: checkpoint at step {self.trainer.global_step}: {path}", file=sys.stderr)
        if self.trainer.is_global_zero and signum is not None:
            argv = [a for i, a in enumerate(self.argv) if "--ckpt_path" not in (a.partition("=")[0], *self.argv[i - 1:i])]
            print(f"icrl: stopped by {signal.Signals(signum).name}; resume with: "
                  f"{shlex.join(['icrl', *argv, '--ckpt_path', path])}" if path else
                  "icrl: stopped; checkpointing is off, so nothing was kept", file=sys.stderr)
        if signum is not None:
            sys.exit(EXIT_CODES[signum])


def tensorboard_command() -> list[str]:
    """This environment's TensorBoard: ``tensorboard`` if the shell finds this one, else its script's path."""
    script = Path(sys.executable).with_name("tensorboard")
    if not script.is_file():
        return [sys.executable, "-m", "tensorboard.main"]
    if (found := shutil.which("tensorboard")) and Path(found).resolve() == script.resolve():
        return ["tensorboard"]
    relative = os.path.relpath(script)
    return [relative if not relative.startswith("..") else str(script)]


def cli_main(args: list[str] | None = None, run: bool = True, cli_class: type[IcrlCLI] = IcrlCLI) -> IcrlCLI:
    """The CLI on ``args`` (default: ``sys.argv``); ``cli_class``: a subclass needing the same parser (the sweep's)."""
    return cli_class(
        LightningModule, LightningDataModule, subclass_mode_model=True, subclass_mode_data=True, args=args, run=run,
        parser_class=IcrlArgumentParser,
        parser_kwargs={"description": DESCRIPTION, "allow_abbrev": False,  # --trainer.max_step is not max_steps
                       **{s: {"description": DESCRIPTION, "allow_abbrev": False} for s in ("fit", "validate", "test")}},
        save_config_callback=SaveStageConfig, save_config_kwargs={"overwrite": True},
        auto_configure_optimizers=False,  # the optimizer is the model's setting only (no top-level --optimizer)
    )


def process_defaults() -> None:
    """What a command-line process of icrl gets: one torch thread and class paths from the current directory."""
    if os.getcwd() not in sys.path:  # as under `python -m`
        sys.path.insert(0, os.getcwd())
    # These models are small: on a CPU shared with other processes, torch's default of one thread per core runs
    # several times slower than one (README, "Threads"). Set here, it also reaches DDP ranks and DataLoader workers.
    if "OMP_NUM_THREADS" not in os.environ:
        os.environ["OMP_NUM_THREADS"] = "1"
        torch.set_num_threads(1)


def main(args: list[str] | None = None) -> None:
    """``icrl fit`` / ``validate`` / ``test``; a non-finite loss exits 1 with one line instead of a traceback."""
    process_defaults()
    try:
        cli_main(args)
    except NonFiniteLossError as err:
        sys.exit(f"icrl: error: {err}")


if __name__ == "__main__":  # python -m icrl.cli: how the sweep starts a run in its own process
    main()
