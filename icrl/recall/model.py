"""The one-layer recall transformer of SPEC R.3, predicting the token after the last position.

Notation (SPEC R.1, R.3): vocabulary ``N``, width ``d ≥ 2N``, context ``z_0 … z_{T-1}``, inputs
``x_h = E(z_h) + Ẽ(z_{h-1})`` with ``E(k) = e_k``, ``Ẽ(k) = e_{N+k}`` (``x_0 = E(z_0)``), and

    s_h = x_{T-1}ᵀ W x_h,    a = Σ_h σ(s)_h x_h,
    ξ_A = U V a,             ξ_F = U F (x_{T-1} + κ a),     ξ = ξ_A + ξ_F,

with feed-forward mode ``none`` (no ξ_F), ``F`` (κ = 0) or ``FA`` (κ = 1). ``U = [E(0) … E(N-1)]ᵀ``
is fixed unless ``trainable_U``.

The embeddings are a fixed basis, so the dense (B, T, d) input is never built: ``x_{T-1}ᵀ W`` is
the sum of two rows of ``W``, the scores are gathers from those rows at the token indices, and
``a`` is a scatter-add of the attention weights into the token indices. The plain dense formula is
kept in the tests, which check the two agree.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn
from torch.nn import functional as nnf

from icrl.recall.attention import Attention, build_attention
from icrl.recall.parameterization import parameterization_class
from icrl.recall.task import RecallTask

FEEDFORWARD_KAPPA = {"none": None, "F": 0.0, "FA": 1.0}


class RecallOutput(NamedTuple):
    logits: Tensor  # (B, N) ξ = ξ_A + ξ_F
    logits_attn: Tensor  # (B, N) ξ_A
    logits_ff: Tensor  # (B, N) ξ_F, zeros without a feed-forward block
    attention: Tensor  # (B, T) σ(s), the last position's attention over the context


class RecallTransformer(nn.Module):
    """One-layer transformer for in-context recall.

    Args:
        task: the ``RecallTask`` it is built for (vocabulary, triggers, α for the noisy Reparam).
        d_model: width ``d``, at least ``2 * vocab_size``.
        attention: ``linear``, ``relu``, ``softmax`` or an ``Attention`` instance.
        parameterization: ``origin``, ``reparam``, ``reparam_w`` or a registered/importable
            ``Parameterization`` subclass.
        feedforward: ``none``, ``F`` or ``FA``.
        trainable_U: train the unembedding ``U`` (initialised at its fixed value).
    """

    def __init__(self, task: RecallTask, d_model: int = 128, attention: str | Attention = "linear",
                 parameterization: str = "origin", feedforward: str = "FA", trainable_U: bool = False):
        super().__init__()
        N = task.vocab_size
        if d_model < 2 * N:
            raise ValueError(f"d_model must be >= 2 * vocab_size = {2 * N} (room for E and Ẽ), got d_model={d_model}")
        if feedforward not in FEEDFORWARD_KAPPA:
            raise ValueError(f"feedforward must be one of {list(FEEDFORWARD_KAPPA)}, got feedforward={feedforward!r}")
        cls = parameterization_class(parameterization)
        if task.noisy and feedforward == "none" and not cls.supports_noisy_without_ff:
            raise ValueError(
                f"parameterization={parameterization!r} cannot express the noisy task (alpha={task.alpha}) with "
                f"feedforward='none': its noise association lives in the fixed F; use feedforward 'F' or 'FA'"
            )
        self.task, self.kappa = task, FEEDFORWARD_KAPPA[feedforward]
        self.attention = build_attention(attention)
        self.param = cls(task, d_model, feedforward)
        U = torch.eye(N, d_model)  # U = [E(0) … E(N-1)]ᵀ: logit k is coordinate k
        if trainable_U:
            self.U = nn.Parameter(U)
        else:
            self.register_buffer("U", U, persistent=False)

    def forward(self, tokens: Tensor) -> RecallOutput:
        B, T = tokens.shape
        N = self.task.vocab_size
        W, V = self.param.W(), self.param.V()  # (d, d) each
        prev = tokens[:, :-1] + N  # (B, T-1) index of Ẽ(z_{h-1}) in x_h, h = 1 … T-1
        last = (tokens[:, -1], prev[:, -1])  # x_{T-1} = E(z_{T-1}) + Ẽ(z_{T-2})
        query = W[last[0]] + W[last[1]]  # (B, d) x_{T-1}ᵀ W
        scores = query.gather(1, tokens) + nnf.pad(query.gather(1, prev), (1, 0))  # (B, T) s_h
        weights = self.attention(scores)  # (B, T) σ(s)
        a = torch.zeros(B, W.shape[0], dtype=weights.dtype, device=weights.device)
        a = a.scatter_add(1, tokens, weights).scatter_add(1, prev, weights[:, 1:])  # (B, d) Σ_h σ_h x_h
        logits_attn = a @ (self.U @ V).T  # (B, N) U V a
        if self.kappa is None:
            logits_ff = torch.zeros_like(logits_attn)
        else:
            F = self.param.F()  # (d, d)
            ff_in = F.T[last[0]] + F.T[last[1]]  # (B, d) F x_{T-1}
            if self.kappa:
                ff_in = ff_in + self.kappa * (a @ F.T)  # + κ F a
            logits_ff = ff_in @ self.U.T  # (B, N)
        return RecallOutput(logits_attn + logits_ff, logits_attn, logits_ff, weights)
