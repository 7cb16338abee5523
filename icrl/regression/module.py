"""LightningModules that train the template-regression networks and score them against ridge (docs/science.md §T).

The model sees the ``N`` prompt labels ``y[:, :N]`` and predicts all ``K`` tokens; the loss is torch's MSE
``(1/K) Σ_k (ŷ_k − t_k)²`` against the batch's targets ``t``, averaged over prompts (the paper's extra 1/2
only rescales the step size); the references' losses use the same convention.

The ``METRICS``, all mean squared errors, are logged per validation set under ``val/`` (in-distribution prompts)
and ``val/unseen_task_`` (``λ ~ N(1, 4I)``), ``test/`` under ``icrl test``: each one's meaning in the README's
table of logged scalars (``ridge_gap`` = ``(1/K) ‖ŷ − ŷ_ridge‖²``, split into labelled and unseen tokens).
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from lightning.pytorch.cli import OptimizerCallable
from torch import Tensor, nn
from torchmetrics import MeanSquaredError

from icrl.module import IcrlModule
from icrl.regression.models import OneLayerMultiHead, TransformerBaseline
from icrl.regression.references import best_reference, ridge_reference

SET_PREFIXES = ("", "unseen_task_")  # dataloader_idx 0, 1: in-distribution prompts, unseen tasks
METRICS = ("loss", "unseen_example_loss", "ridge_loss", "unseen_example_ridge_loss", "best_loss", "ridge_gap",
           "labelled_ridge_gap", "unseen_example_ridge_gap", "best_gap", "ridge_best_gap")


class TemplateRegressionModule(IcrlModule):
    """Trains ``self.net`` (built by a subclass) on template-regression prompts of ``task`` (the data's).

    ``optimizer`` (default Adam, lr 1e-4, the paper's) gets the groups ``[Q (all but the read-out), w]``;
    ``w`` trains at ``γ² η`` (§T.2: ``η_w = γ² η_Q``). ``lr_drop_step``: multiply both step sizes by
    ``lr_drop_factor`` in (0, 1] from this step on (``None``: constant, the paper's); a late drop removes
    the jitter a constant step leaves around the minimum (§T.3).

    It logs ``train/excess_loss``: the training loss minus that of the least-squares predictor linear in
    the prompt labels, fitted on the batch; for a model linear in ``y``, as the one-layer one, it is ≥ 0,
    its distance to the batch's global minimum (Theorem 1 of the paper: it falls at a linear rate).
    """

    def __init__(self, task: dict | None = None, gamma: float = 1.0, optimizer: OptimizerCallable | None = None,
                 lr_drop_step: int | None = None, lr_drop_factor: float = 0.1):
        super().__init__(optimizer, partial(torch.optim.Adam, lr=1e-4))
        if task is None:
            raise ValueError("task is None: pass the data module's task, e.g. TemplateRegressionDataModule(...).task")
        if not 0 < gamma < float("inf"):
            raise ValueError(f"gamma must be finite and > 0 (η_w = γ² η_Q), got gamma={gamma}")
        if lr_drop_step is not None and lr_drop_step < 1:
            raise ValueError(f"lr_drop_step must be None (no drop) or a step >= 1, got lr_drop_step={lr_drop_step}")
        if not 0 < lr_drop_factor <= 1:
            raise ValueError(f"lr_drop_factor must lie in (0, 1], got lr_drop_factor={lr_drop_factor}")
        self.save_hyperparameters(ignore=["optimizer"])
        self.eval_metrics = nn.ModuleList(nn.ModuleDict({prefix + name: MeanSquaredError() for name in METRICS})
                                          for prefix in SET_PREFIXES)

    def forward(self, v: Tensor, y_prompt: Tensor) -> Tensor:
        return self.net(v, y_prompt)  # (B, K) predictions for all tokens from the prompt labels (B, N)

    def train_loss(self, batch: dict) -> Tensor:
        y_prompt = batch["y"][:, : self.hparams.task["n_labelled"]]  # (B, N)
        return F.mse_loss(self(batch["v"], y_prompt), batch["target"])  # targets (B, K)

    def train_logs(self, batch: dict, loss: Tensor) -> dict[str, Tensor]:
        y_prompt = batch["y"][:, : self.hparams.task["n_labelled"]]
        return {"train/excess_loss": loss.detach() - least_squares_loss(y_prompt, batch["target"])}

    def metric_inputs(self, batch: dict, dataloader_idx: int) -> dict[str, tuple[Tensor, Tensor]]:
        n, tau = self.hparams.task["n_labelled"], self.hparams.task["noise_var"]
        f, y, t = batch["f"], batch["y"][:, :n], batch["target"]  # (K, m), (B, N) prompt labels, (B, K) targets
        y_hat = self(batch["v"], y)  # (B, K)
        ridge, best = ridge_reference(f, y, tau), best_reference(f, y, tau)  # (B, K) each
        pairs = dict(loss=(y_hat, t), unseen_example_loss=(y_hat[:, n:], t[:, n:]), ridge_loss=(ridge, t),
                     unseen_example_ridge_loss=(ridge[:, n:], t[:, n:]), best_loss=(best, t), ridge_gap=(y_hat, ridge),
                     labelled_ridge_gap=(y_hat[:, :n], ridge[:, :n]), best_gap=(y_hat, best),
                     unseen_example_ridge_gap=(y_hat[:, n:], ridge[:, n:]), ridge_best_gap=(ridge, best))
        # MSE views its inputs flat; token slices are strided
        return {SET_PREFIXES[dataloader_idx] + name: (a.flatten(), b.flatten()) for name, (a, b) in pairs.items()}

    def configure_optimizers(self) -> torch.optim.Optimizer | dict:
        readout = list(self.net.readout_parameters())
        body = [p for p in self.net.parameters() if all(p is not r for r in readout)]
        optimizer = self.optimizer([{"params": body, "name": "Q"}, {"params": readout, "name": "w"}])
        optimizer.param_groups[1]["lr"] = self.hparams.gamma**2 * optimizer.defaults["lr"]
        if self.hparams.lr_drop_step is None:
            return optimizer
        drop = torch.optim.lr_scheduler.MultiStepLR(optimizer, [self.hparams.lr_drop_step], self.hparams.lr_drop_factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": drop, "interval": "step"}}


def least_squares_loss(y_prompt: Tensor, target: Tensor) -> Tensor:
    """``min_A (1/(BK)) ‖y_prompt A − target‖²``, fitted in float64 on the CPU (MPS has none), as a float32 scalar.

    >>> y = torch.tensor([[1.0], [2.0]]); least_squares_loss(y, 3 * y) < 1e-12  # exactly linear: 0
    tensor(True)
    >>> least_squares_loss(y, torch.tensor([[1.0], [1.0]]))  # best A = 0.6: residuals 0.4, −0.2
    tensor(0.1000)
    """
    y64, t64 = y_prompt.detach().cpu().double(), target.detach().cpu().double()  # (B, N), (B, K)
    A = torch.linalg.lstsq(y64, t64).solution  # (N, K)
    return F.mse_loss(y64 @ A, t64).to(y_prompt.device, torch.float32)


class OneLayerRegression(TemplateRegressionModule):
    """The paper's one-layer multi-head softmax model (docs/science.md §T.2), ``heads`` ``H`` and init std ``beta``."""

    def __init__(self, task: dict | None = None, heads: int = 64, beta: float = 0.01, gamma: float = 1.0,
                 optimizer: OptimizerCallable | None = None, lr_drop_step: int | None = None,
                 lr_drop_factor: float = 0.1):
        super().__init__(task, gamma, optimizer, lr_drop_step, lr_drop_factor)
        self.net = OneLayerMultiHead(task["n_tokens"], task["n_labelled"], task["token_dim"], heads, beta)


class TransformerRegression(TemplateRegressionModule):
    """The standard-transformer baseline of docs/science.md §T.4 (4 layers, ``d_model`` 256, ``d_ff`` 512, 8 heads)."""

    def __init__(self, task: dict | None = None, n_layers: int = 4, d_model: int = 256, d_ff: int = 512,
                 n_heads: int = 8, dropout: float = 0.0, gamma: float = 1.0, optimizer: OptimizerCallable | None = None,
                 lr_drop_step: int | None = None, lr_drop_factor: float = 0.1):
        super().__init__(task, gamma, optimizer, lr_drop_step, lr_drop_factor)
        self.net = TransformerBaseline(task["n_labelled"], task["token_dim"], n_layers, d_model, d_ff, n_heads, dropout)
