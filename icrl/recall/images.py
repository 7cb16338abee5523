"""``RecallImages``: pictures of the recall mechanism in TensorBoard, from the first validation batch.

``recall/attention``: one prompt's last-position attention ``σ(s)_h``, with the trigger ``q = z_{T-1}``'s earlier
positions ``p`` and the tokens after them (``y``, or τ) marked: a model that recalls puts its weight on ``p+1``.
``recall/logits``: that prompt's ``ξ_A`` and ``ξ_F``, and histograms of the batch's logit margins (§R.6).
Add it with ``--trainer.callbacks+=icrl.recall.images.RecallImages``; images go to the TensorBoard loggers.
"""

from __future__ import annotations

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import TensorBoardLogger
from matplotlib.figure import Figure  # no pyplot: no GUI backend, and a notebook's backend is left alone
from torch import Tensor

from icrl.recall.metrics import logit_margin


def bigram_positions(tokens: Tensor) -> tuple[list[int], list[int]]:
    """Positions ``p < T-1`` of the trigger ``tokens[-1]`` in one prompt, and the positions ``p+1`` after them.

    >>> bigram_positions(torch.tensor([7, 0, 8, 9, 0, 59, 6, 0]))
    ([1, 4], [2, 5])
    """
    p = (tokens[:-1] == tokens[-1]).nonzero().flatten().tolist()
    return p, [i + 1 for i in p]


def attention_figure(task, tokens: Tensor, weights: Tensor, title: str = "", ax=None) -> Figure:
    """Attention ``weights`` ``(T,)`` of one prompt ``tokens`` ``(T,)``, with its bigram positions marked (on
    ``ax``, a panel of a figure of yours, or a figure of its own)."""
    tokens, weights = tokens.cpu(), weights.detach().float().cpu()
    ax = ax or Figure(figsize=(7, 2.6), dpi=80).subplots()
    ax.plot(range(len(weights)), weights.numpy(), color="C0", lw=1, label="attention σ(s)_h")
    triggers, after = bigram_positions(tokens)
    for n, p in enumerate(triggers):
        ax.axvline(p, color="C3", ls=":", lw=1.2, label="trigger q" if n == 0 else None)
    for p in after:
        noise = task.noisy and int(tokens[p]) == task.noise_token
        ax.axvline(p, color="C1" if noise else "C2", ls="--", lw=1.2,
                   label="noise τ after q" if noise else f"output y = {int(tokens[p])} after q")
    ax.set(xlabel="context position h", ylabel="attention weight")
    ax.set_title(f"{title}attention of the last position (trigger q = {int(tokens[-1])})", fontsize=10)
    ax.legend(fontsize=7, loc="upper left")
    ax.figure.tight_layout()
    return ax.figure


def logits_figure(task, logits_attn: Tensor, logits_ff: Tensor, output: Tensor, prompt: int = 0,
                  title: str = "") -> Figure:
    """Logits ``ξ_A``, ``ξ_F`` ``(B, N)`` of prompt ``prompt``, and histograms of the batch's margins."""
    logits_attn, logits_ff, output = logits_attn.detach().float().cpu(), logits_ff.detach().float().cpu(), output.cpu()
    y, tau = int(output[prompt]), task.noise_token
    fig = Figure(figsize=(9, 2.8), dpi=80)
    axes = fig.subplots(1, 2)
    vocab = range(task.vocab_size)
    axes[0].bar(vocab, logits_attn[prompt].numpy(), color="C0", alpha=0.7, width=0.8, label="ξ_A (attention)")
    axes[0].bar(vocab, logits_ff[prompt].numpy(), color="C1", alpha=0.7, width=0.4, label="ξ_F (feed-forward)")
    axes[0].axvline(y, color="C2", ls="--", lw=1, label=f"output y = {y}")
    if task.noisy:
        axes[0].axvline(tau, color="C3", ls=":", lw=1, label=f"noise τ = {tau}")
    axes[0].set(xlabel="token", ylabel="logit")
    axes[0].set_title(f"{title}logits of one prompt", fontsize=10)
    axes[0].legend(fontsize=7)
    axes[1].hist(logit_margin(logits_attn, output).numpy(), bins=30, color="C0", alpha=0.7,
                 label="ξ_A,y − max_{k≠y} ξ_A,k")
    if task.noisy:
        margin_ff = logit_margin(logits_ff, torch.full_like(output, tau))
        axes[1].hist(margin_ff.numpy(), bins=30, color="C1", alpha=0.7, label="ξ_F,τ − max_{k≠τ} ξ_F,k")
    axes[1].axvline(0, color="k", lw=0.8)
    axes[1].set(xlabel="logit margin", ylabel="prompts")
    axes[1].set_title(f"margins over {len(output)} validation prompts", fontsize=10)
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    return fig


class RecallImages(Callback):
    """Logs the figures of prompt ``prompt`` of the first validation batch at every ``every_n``-th validation."""

    def __init__(self, every_n: int = 1, prompt: int = 0):
        if every_n < 1:
            raise ValueError(f"every_n must be >= 1, got every_n={every_n}")
        if prompt < 0:
            raise ValueError(f"prompt must be >= 0, got prompt={prompt}")
        self.every_n, self.prompt = every_n, prompt
        self._batch: dict | None = None
        self._count = 0

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        data = trainer.datamodule
        if hasattr(data, "val_batch_size") and hasattr(data, "n_val"):  # rank 0's first batch (a ceil share)
            size = min(data.val_batch_size, -(-data.n_val // trainer.world_size))
            if self.prompt >= size:
                raise ValueError(f"RecallImages: prompt must be < {size}, the size of rank 0's first validation batch "
                                 f"(val_batch_size={data.val_batch_size}, n_val={data.n_val}), got prompt={self.prompt}")

    def on_validation_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._batch = None

    @torch.no_grad()
    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if dataloader_idx != 0 or batch_idx != 0 or trainer.sanity_checking:
            return
        out = pl_module(batch["tokens"])
        self._batch = {"tokens": batch["tokens"].cpu(), "output": batch["output"].cpu(),
                       **{k: getattr(out, k).detach().float().cpu() for k in ("logits_attn", "logits_ff", "attention")}}

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        loggers = [lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)]
        if self._batch is None or not loggers or not trainer.is_global_zero:
            return
        self._count += 1
        if (self._count - 1) % self.every_n:
            return
        b, i, task, title = self._batch, self.prompt, pl_module.task, f"step {trainer.global_step}: "
        figures = {"recall/attention": attention_figure(task, b["tokens"][i], b["attention"][i], title),
                   "recall/logits": logits_figure(task, b["logits_attn"], b["logits_ff"], b["output"], i, title)}
        for tag, fig in figures.items():
            for lg in loggers:
                lg.experiment.add_figure(tag, fig, global_step=trainer.global_step, close=False)
