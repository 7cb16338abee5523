"""The one-layer recall transformer of docs/science.md §R.3, predicting the token after the last position.

Inputs ``x_h = E(z_h) + Ẽ(z_{h-1})`` (``x_0 = E(z_0)``) of a context ``z_0 … z_{T-1}`` over ``N`` tokens, with
``E(k) = e_k``, ``Ẽ(k) = e_{N+k}`` in ``R^d``, ``d ≥ 2N``, and ``U = [E(0) … E(N-1)]ᵀ`` unless ``trainable_U``:

    s_h = x_{T-1}ᵀ W x_h,    a = Σ_h σ(s)_h x_h,
    ξ_A = U V a,             ξ_F = U F (x_{T-1} + κ a),     ξ = ξ_A + ξ_F,

with feed-forward mode ``none`` (no ξ_F), ``F`` (κ = 0) or ``FA`` (κ = 1). ``X`` is never built (``ContextInputs``);
``x_{T-1}`` has two ones, so ``x_{T-1}ᵀ W`` is two rows of ``W``, ``U F x_{T-1}`` two columns of ``U F``, and
``ξ = a (UV + κUF)ᵀ + U F x_{T-1}`` is one product without the parts; ``dense.py`` applies the formula as written.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from icrl.recall.attention import Attention, LinearAttention
from icrl.recall.inputs import ContextInputs
from icrl.recall.parameterization import (FEEDFORWARD_KAPPA, Feedforward, Origin, Parameterization,
                                          ParameterizationCallable, check_trainable)
from icrl.recall.task import RecallTask


class RecallOutput(NamedTuple):
    logits: Tensor  # (B, N) ξ = ξ_A + ξ_F
    logits_attn: Tensor | None  # (B, N) ξ_A; None for forward(parts=False)
    logits_ff: Tensor | None  # (B, N) ξ_F, zeros without a feed-forward block; None for forward(parts=False)
    attention: Tensor  # (B, T) σ(s), the last position's attention over the context


class RecallTransformer(nn.Module):
    """One-layer transformer for in-context recall on ``task``, of width ``d_model ≥ 2 * vocab_size``; ``attention``
    defaults to ``LinearAttention()``. A model whose ``W`` and ``V`` would never leave their zero start is refused.
    """

    def __init__(self, task: RecallTask, d_model: int = 128, attention: Attention | None = None,
                 parameterization: ParameterizationCallable = Origin, feedforward: Feedforward = "FA",
                 trainable_U: bool = False):
        super().__init__()
        N = task.vocab_size
        if d_model < 2 * N:
            raise ValueError(f"d_model must be >= 2 * vocab_size = {2 * N} (room for E and Ẽ), got d_model={d_model}")
        if feedforward not in FEEDFORWARD_KAPPA:
            raise ValueError(f"feedforward must be one of {list(FEEDFORWARD_KAPPA)}, got feedforward={feedforward!r}")
        attention = LinearAttention() if attention is None else attention
        if not isinstance(attention, Attention):
            raise ValueError(f"attention must be an icrl.recall.Attention (class_path in YAML), got attention={attention!r}")
        self.task, self.kappa, self.attention = task, FEEDFORWARD_KAPPA[feedforward], attention
        self.param = parameterization(task, d_model, feedforward)
        if not isinstance(self.param, Parameterization):
            raise ValueError(f"parameterization must build an icrl.recall.Parameterization, got {self.param!r}")
        if task.noisy and feedforward == "none" and not self.param.supports_noisy_without_ff:
            raise ValueError(
                f"parameterization {type(self.param).__name__} cannot express the noisy task (alpha={task.alpha}) with "
                f"feedforward='none': its noise association lives in the fixed F; use feedforward 'F' or 'FA'")
        check_trainable(self.param, attention, feedforward)
        U = torch.eye(N, d_model)  # U = [E(0) … E(N-1)]ᵀ: logit k is coordinate k
        if trainable_U:
            self.U = nn.Parameter(U)
        else:
            self.register_buffer("U", U, persistent=False)

    def forward(self, tokens: Tensor, parts: bool = True) -> RecallOutput:
        """Logits of the token after each context ``tokens`` (B, T); ``parts=False`` skips ξ_A and ξ_F."""
        N, tokens = self.task.vocab_size, tokens.long()  # int16 as sampled on a CPU; indices are int64
        W = self.param.W()  # (d, d)
        X = ContextInputs(tokens, N, W.shape[0])  # (B, T, d) x_h, implicit
        last = (tokens[:, -1], tokens[:, -2] + N)  # x_{T-1} = E(z_{T-1}) + Ẽ(z_{T-2}): ones at these indices
        query = W.index_select(0, last[0]) + W.index_select(0, last[1])  # (B, d) x_{T-1}ᵀ W
        weights = self.attention(X.matvec(query))  # (B, T) σ(s), s_h = x_{T-1}ᵀ W x_h
        a = X.rmatvec(weights)  # (B, d) Σ_h σ_h x_h
        UV = self.unembed(self.param.V())  # (N, d)
        if self.kappa is None:
            logits = a @ UV.T  # (B, N) ξ = ξ_A = U V a
            return RecallOutput(logits, logits if parts else None, torch.zeros_like(logits) if parts else None, weights)
        UF_T = self.unembed(self.param.F()).T  # (d, N)
        ff_last = UF_T.index_select(0, last[0]) + UF_T.index_select(0, last[1])  # (B, N) U F x_{T-1}
        if not parts:
            M = UV.T + self.kappa * UF_T if self.kappa else UV.T  # (d, N) (UV + κ UF)ᵀ
            return RecallOutput(torch.addmm(ff_last, a, M), None, None, weights)
        logits_attn = a @ UV.T  # (B, N) U V a
        logits_ff = torch.addmm(ff_last, a, UF_T, alpha=self.kappa) if self.kappa else ff_last  # U F (x_{T-1} + κ a)
        return RecallOutput(logits_attn + logits_ff, logits_attn, logits_ff, weights)

    def unembed(self, M: Tensor) -> Tensor:
        """``U M`` (N, d); the fixed ``U = [E(0) … E(N-1)]ᵀ`` just keeps the first ``N`` rows."""
        return self.U @ M if isinstance(self.U, nn.Parameter) else M[: self.task.vocab_size]


def stacked_logits(models: list[RecallTransformer], tokens: Tensor) -> Tensor:
    """ξ of K models of one architecture, each on its own contexts ``tokens`` (K, B, T), in one pass: (K, B, N).

    ``forward(parts=False)`` of each, with the member axis folded into the batch axis (``ContextInputs`` runs
    unchanged) and the products batched over members. Needs an attention without parameters (shared by all).
    """
    first, (K, B, T) = models[0], tokens.shape
    N = first.task.vocab_size
    W = torch.stack([m.param.W() for m in models])  # (K, d, d)
    d = W.shape[-1]
    flat = tokens.reshape(K * B, T).long()
    X = ContextInputs(flat, N, d)  # (KB, T, d) x_h, implicit
    offset = torch.arange(K, device=tokens.device).repeat_interleave(B) * d  # (KB,) member k's rows in (K·d, ·)
    last = (flat[:, -1] + offset, flat[:, -2] + N + offset)  # x_{T-1}'s ones, in member k's block
    query = W.view(K * d, d).index_select(0, last[0]) + W.view(K * d, d).index_select(0, last[1])  # (KB, d)
    a = X.rmatvec(first.attention(X.matvec(query))).view(K, B, d)  # Σ_h σ(s)_h x_h
    UV_T = torch.stack([m.unembed(m.param.V()) for m in models]).transpose(1, 2)  # (K, d, N)
    if first.kappa is None:
        return torch.bmm(a, UV_T)
    UF_T = torch.stack([m.unembed(m.param.F()) for m in models]).transpose(1, 2).reshape(K * d, N)  # (K·d, N)
    ff_last = (UF_T.index_select(0, last[0]) + UF_T.index_select(0, last[1])).view(K, B, N)  # U F x_{T-1}
    M = UV_T + first.kappa * UF_T.view(K, d, N) if first.kappa else UV_T  # (K, d, N) (UV + κ UF)ᵀ
    return torch.baddbmm(ff_last, a, M)
