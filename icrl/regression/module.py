"""LightningModules that train the template-regression networks and score them against ridge.

Loss: ``(1/K) Σ_k (ŷ_k − y_k)²`` over all ``K`` tokens, averaged over prompts (torch's MSE). The
paper's loss carries an extra 1/2, which only halves every gradient (a rescaled step size). The
references' losses use the same convention, so ``val/loss`` is read against ``val/ridge_loss``.

Logged on each validation set, ``val/`` (in-distribution prompts) and ``val/unseen_task_``
(``λ ~ N(1, 4I)``), all as mean squared errors (torchmetrics, summed across processes); ``icrl test``
logs the same under ``test/``:

- ``loss``: model vs labels, all ``K`` tokens; ``unseen_example_loss``: the ``K − N`` unlabelled ones;
- ``ridge_loss``, ``best_loss``: the references vs labels, the floor to compare ``loss`` with, and
  ``unseen_example_ridge_loss``, the floor of ``unseen_example_loss``;
- ``ridge_gap``, ``best_gap``: ``(1/K) ‖ŷ − ŷ_ridge‖²`` and ``(1/K) ‖ŷ − ŷ_best‖²``;
- ``ridge_best_gap``: ``(1/K) ‖ŷ_ridge − ŷ_best‖²``, the gap of Fig. 3 in closed form.

On labelled tokens the loss-optimal prediction is the label itself, not ridge; a model that learns
to copy its prompt can end a little below ``ridge_loss``. On unseen tokens of in-distribution prompts
ridge is the best predictor linear in ``y`` (as the one-layer model is), so there it is a true floor.
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule
from lightning.pytorch.cli import OptimizerCallable
from torch import Tensor, nn
from torchmetrics import MeanSquaredError

from icrl.cadence import is_logging_step
from icrl.optim import check_optimizer
from icrl.regression.models import OneLayerMultiHead, TransformerBaseline
from icrl.regression.references import best_reference, ridge_reference

SET_PREFIXES = ("", "unseen_task_")  # dataloader_idx 0, 1: in-distribution prompts, unseen tasks
VAL_METRICS = (
    "loss", "unseen_example_loss", "ridge_loss", "unseen_example_ridge_loss", "best_loss", "ridge_gap", "best_gap", "ridge_best_gap"
)


class TemplateRegressionModule(LightningModule):
    """Trains ``self.net`` (built by a subclass) on template-regression prompts.

    Args:
        task: sizes of the task, linked from ``TemplateRegressionDataModule.task``.
        gamma: the read-out ``w`` trains with step size ``γ² η`` where ``η`` is the optimizer's lr
            (docs/science.md §T.2: ``η_w = γ² η_Q``).
        optimizer: optimizer factory over the parameter groups ``[Q (all but the read-out), w]``;
            default Adam with lr 1e-4 (paper).
    """

    def __init__(self, task: dict | None = None, gamma: float = 1.0, optimizer: OptimizerCallable | None = None):
        super().__init__()
        if task is None:
            raise ValueError("task is None: pass the data module's task, e.g. TemplateRegressionDataModule(...).task")
        if not 0 < gamma < float("inf"):
            raise ValueError(f"gamma must be finite and > 0 (η_w = γ² η_Q), got gamma={gamma}")
        self.save_hyperparameters(ignore=["optimizer"])
        self.optimizer = check_optimizer(optimizer or partial(torch.optim.Adam, lr=1e-4))  # a bad lr fails here, not at step 0
        self.val_metrics = nn.ModuleList(nn.ModuleDict({name: MeanSquaredError() for name in VAL_METRICS}) for _ in SET_PREFIXES)

    def forward(self, v: Tensor, y_prompt: Tensor) -> Tensor:
        """Predictions ``(B, K)`` for all tokens from the tokens ``v`` and the prompt labels ``(B, N)``."""
        return self.net(v, y_prompt)

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        y = batch["y"]  # (B, K)
        loss = F.mse_loss(self(batch["v"], y[:, : self.hparams.task["n_labelled"]]), y)
        if is_logging_step(self):
            self.log("train/loss", loss, prog_bar=True)
        return loss

    def _eval_step(self, stage: str, batch: dict, dataloader_idx: int) -> None:
        n, tau = self.hparams.task["n_labelled"], self.hparams.task["noise_var"]
        f, y = batch["f"], batch["y"]  # (K, m), (B, K)
        y_hat = self(batch["v"], y[:, :n])  # (B, K)
        ridge, best = ridge_reference(f, y[:, :n], tau), best_reference(f, y[:, :n], tau)  # (B, K) each
        pairs = dict(
            loss=(y_hat, y),
            unseen_example_loss=(y_hat[:, n:], y[:, n:]),
            ridge_loss=(ridge, y),
            unseen_example_ridge_loss=(ridge[:, n:], y[:, n:]),
            best_loss=(best, y),
            ridge_gap=(y_hat, ridge),
            best_gap=(y_hat, best),
            ridge_best_gap=(ridge, best),
        )
        metrics, prefix = self.val_metrics[dataloader_idx], f"{stage}/{SET_PREFIXES[dataloader_idx]}"
        for name, (pred, target) in pairs.items():
            metrics[name].update(pred.flatten(), target.flatten())  # MSE views its inputs flat; token slices are strided
        self.log_dict({prefix + name: metrics[name] for name in VAL_METRICS}, add_dataloader_idx=False)

    def validation_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._eval_step("val", batch, dataloader_idx)

    def test_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._eval_step("test", batch, dataloader_idx)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        readout = list(self.net.readout_parameters())
        body = [p for p in self.net.parameters() if all(p is not r for r in readout)]
        optimizer = self.optimizer([{"params": body, "name": "Q"}, {"params": readout, "name": "w"}])
        optimizer.param_groups[1]["lr"] = self.hparams.gamma**2 * optimizer.defaults["lr"]
        return optimizer


class OneLayerRegression(TemplateRegressionModule):
    """The paper's one-layer multi-head softmax model (docs/science.md §T.2), ``heads`` ``H`` and init std ``beta``."""

    def __init__(
        self,
        task: dict | None = None,
        heads: int = 64,
        beta: float = 0.01,
        gamma: float = 1.0,
        optimizer: OptimizerCallable | None = None,
    ):
        super().__init__(task, gamma, optimizer)
        self.net = OneLayerMultiHead(task["n_tokens"], task["n_labelled"], task["token_dim"], heads, beta)


class TransformerRegression(TemplateRegressionModule):
    """The standard-transformer baseline of docs/science.md §T.4 (4 layers, ``d_model`` 256, ``d_ff`` 512, 8 heads)."""

    def __init__(
        self,
        task: dict | None = None,
        n_layers: int = 4,
        d_model: int = 256,
        d_ff: int = 512,
        n_heads: int = 8,
        dropout: float = 0.0,
        gamma: float = 1.0,
        optimizer: OptimizerCallable | None = None,
    ):
        super().__init__(task, gamma, optimizer)
        self.net = TransformerBaseline(task["n_labelled"], task["token_dim"], n_layers, d_model, d_ff, n_heads, dropout)
