"""The ``icrl`` command: a LightningCLI over every icrl model and data module.

``icrl fit --config configs/recall/fig1/reparam-linear-fa.yaml`` trains a paper model; any
LightningModule / LightningDataModule can be named with ``class_path``. Every data module exposes
a ``task`` property (a plain dict: vocabulary sizes, α, dimensions, ...) which is linked into the
model's ``task`` argument, so the model is always built for the data it will see.
"""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path

from lightning.pytorch import LightningDataModule, LightningModule, Trainer
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.loggers import TensorBoardLogger

from icrl.callbacks import NonFiniteGuard, NonFiniteLossError


class IcrlCLI(LightningCLI):
    """LightningCLI with the data → model link, TensorBoard by default and clean config errors."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument(
            "--name", type=str, default="icrl",
            help="Experiment name: TensorBoard logs go to <default_root_dir>/lightning_logs/<name>/version_<n>."
        )
        parser.link_arguments("data.task", "model.init_args.task", apply_on="instantiate")

    def instantiate_classes(self) -> None:
        # Invalid settings raise ValueError in constructors; report them as CLI errors (exit 2)
        # before any training step, instead of a traceback.
        try:
            super().instantiate_classes()
        except ValueError as err:
            while isinstance(inner := err.__cause__ or (None if err.__suppress_context__ else err.__context__),
                             ValueError):  # jsonargparse wraps the constructor's own error
                err = inner
            self.parser.error(str(err))

    def instantiate_trainer(self, **kwargs) -> Trainer:
        trainer = super().instantiate_trainer(**kwargs)
        if not any(isinstance(c, NonFiniteGuard) for c in trainer.callbacks):
            trainer.callbacks.insert(0, NonFiniteGuard())
        logger_cfg = self._get(self.config, "trainer", default={}).get("logger")
        if (logger_cfg is None or logger_cfg is True) and not trainer.fast_dev_run:
            # Lightning's default TensorBoardLogger writes a meaningless hp_metric; replace it.
            trainer.loggers = [
                TensorBoardLogger(Path(trainer.default_root_dir) / "lightning_logs", name=self._get(self.config, "name"),
                                  default_hp_metric=False)
            ]
        if trainer.is_global_zero and trainer.logger is not None and self.subcommand is not None:
            root = Path(trainer.logger.save_dir or trainer.default_root_dir)
            print(f"icrl: logging to {trainer.logger.log_dir}  (watch with: tensorboard --logdir {root})", file=sys.stderr)
        return trainer


def cli_main(args: list[str] | None = None, run: bool = True) -> IcrlCLI:
    """Entry point of ``icrl``; tests and notebooks call it with ``args`` instead of ``sys.argv``."""
    return IcrlCLI(
        LightningModule,
        LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        args=args,
        run=run,
        save_config_kwargs={"overwrite": True},
    )


def main() -> None:
    """Console script ``icrl``: exit status 0 on success, 1 on a non-finite loss, 2 on a bad setting."""
    if sys.argv[1:2] == ["sweep"]:  # not a LightningCLI subcommand: many icrl fit runs (icrl.sweep)
        from icrl.sweep import main as sweep_main

        return sweep_main(sys.argv[2:])
    # A progress bar redrawn every step costs ~10% of a CPU recall step; every 10th step is plenty.
    # Lightning's TQDMProgressBar takes its refresh rate as at least TQDM_MINITERS (set it to 1 for every step).
    os.environ.setdefault("TQDM_MINITERS", "10")
    # Lightning 2.6 under torch 2.13 warns about its own use of a torch API on every run; nothing a user can act on.
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")
    try:
        cli_main()
    except NonFiniteLossError as err:
        sys.exit(f"icrl: error: {err}")


if __name__ == "__main__":
    main()
