"""``RecallModule``: the LightningModule that trains a ``RecallTransformer`` (docs/science.md §R.3–R.5)."""

from __future__ import annotations

import warnings
from functools import partial

from lightning.pytorch import LightningModule
from lightning.pytorch.cli import OptimizerCallable
from torch import Tensor
from torch.nn import functional as nnf

from icrl.cadence import is_logging_step
from icrl.optim import NormalizedGD, check_optimizer
from icrl.recall.attention import Attention
from icrl.recall.metrics import MeanCrossEntropy
from icrl.recall.model import Feedforward, RecallOutput, RecallTransformer
from icrl.recall.parameterization import Origin, ParameterizationCallable
from icrl.recall.task import RecallTask

STAGE_NAMES = {0: "loss", 1: "ood_loss"}  # validation/test dataloaders: in distribution, OOD


def as_config(value):
    """The ``class_path`` form (plain data) of an attention or parameterization given in Python.

    The CLI saves its own config dicts as hyper-parameters; this gives modules built in Python the
    same, so their checkpoints load with ``weights_only`` (constructor arguments of an attention
    instance, and lambdas, are not recoverable: pass those to ``load_from_checkpoint``).

    >>> as_config(partial(Origin, init_std=0.01))
    {'class_path': 'icrl.recall.parameterization.Origin', 'init_args': {'init_std': 0.01}}
    """
    if value is None or isinstance(value, (dict, str)):
        return value
    func, init_args = (value.func, dict(value.keywords)) if isinstance(value, partial) else (value, {})
    cls = func if isinstance(func, type) else type(func)
    return {"class_path": f"{cls.__module__}.{cls.__qualname__}", **({"init_args": init_args} if init_args else {})}


class RecallModule(LightningModule):
    """Trains a one-layer recall transformer by cross-entropy at the last position.

    Args:
        task: the task dict of ``RecallDataModule.task``; the CLI links it from the data module.
        d_model: width ``d``, at least ``2 * vocab_size``.
        attention: an ``icrl.recall.Attention``, in YAML by class path (``icrl.recall.SoftmaxAttention``);
            null: ``LinearAttention``.
        parameterization: a callable ``(task, d_model, feedforward) -> Parameterization``: in YAML a class
            path, with options in ``init_args`` (``{class_path: icrl.recall.Reparam, init_args:
            {value_scale: true}}``, the later paper version's value-scaled Reparam; ``init_std`` of
            ``Origin`` and ``ReparamW``: a random start).
        feedforward: ``none`` (no ξ_F), ``F`` (κ = 0) or ``FA`` (κ = 1).
        trainable_U: train the unembedding ``U`` (initialised at its fixed value).
        optimizer: a callable from parameters to an optimizer (YAML ``class_path``); defaults to
            ``NormalizedGD(lr=0.1)``, the paper's choice.

    Logs ``train/loss`` on the steps the logger writes (``log_every_n_steps``) and, per validation, ``val/loss`` (in distribution) and
    ``val/ood_loss`` (unseen outputs); add ``RecallEvaluation`` for Bayes gaps, probabilities and
    margins.
    """

    def __init__(self, task: dict | None = None, d_model: int = 128, attention: Attention | None = None,
                 parameterization: ParameterizationCallable = Origin, feedforward: Feedforward = "FA",
                 trainable_U: bool = False, optimizer: OptimizerCallable | None = None):
        super().__init__()
        if task is None:
            raise ValueError("task is required: pass RecallDataModule(...).task (the icrl CLI links it from data)")
        with warnings.catch_warnings():  # an Attention instance, replaced by its class_path just below
            warnings.filterwarnings("ignore", message="Attribute 'attention' is an instance of `nn.Module`")
            self.save_hyperparameters(ignore=["optimizer"])
        if "_instantiator" not in self.hparams:  # built in Python: store what the CLI would, and rebuild as it does
            self.hparams.update(attention=as_config(attention), parameterization=as_config(parameterization),
                                _instantiator="lightning.pytorch.cli.instantiate_module")
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
