"""The one-layer recall transformer of SPEC R.3, predicting the token after the last position.

Notation (SPEC R.1, R.3): vocabulary ``N``, width ``d ≥ 2N``, context ``z_0 … z_{T-1}``, inputs
``x_h = E(z_h) + Ẽ(z_{h-1})`` with ``E(k) = e_k``, ``Ẽ(k) = e_{N+k}`` (``x_0 = E(z_0)``), and

    s_h = x_{T-1}ᵀ W x_h,    a = Σ_h σ(s)_h x_h,
    ξ_A = U V a,             ξ_F = U F (x_{T-1} + κ a),     ξ = ξ_A + ξ_F,

with feed-forward mode ``none`` (no ξ_F), ``F`` (κ = 0) or ``FA`` (κ = 1). ``U = [E(0) … E(N-1)]ᵀ``
is fixed unless ``trainable_U``.

The embeddings are a fixed basis, so the dense (B, T, d) input ``X`` is never built: each row
``x_h`` has two ones, at ``z_h`` and ``N + z_{h-1}``, so ``X q`` is two gathers of ``q`` at the token
indices and ``Xᵀ w`` two scatter-adds into them (``ContextInputs``). ``x_{T-1}ᵀ W`` is the sum of
two rows of ``W``, and with the fixed ``U`` the unembedding ``U M`` is the first ``N`` rows of
``M``. A step costs O(B·T + B·d²) instead of the dense formula's O(B·T·d); the plain dense formula
is kept in the tests (and in ``benchmarks/``), which check the two agree number for number.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from icrl.recall.attention import Attention, build_attention
from icrl.recall.parameterization import parameterization_class
from icrl.recall.task import RecallTask

FEEDFORWARD_KAPPA = {"none": None, "F": 0.0, "FA": 1.0}


class RecallOutput(NamedTuple):
    logits: Tensor  # (B, N) ξ = ξ_A + ξ_F
    logits_attn: Tensor  # (B, N) ξ_A
    logits_ff: Tensor  # (B, N) ξ_F, zeros without a feed-forward block
    attention: Tensor  # (B, T) σ(s), the last position's attention over the context


class _XMatvec(torch.autograd.Function):
    """``X q`` for the implicit inputs; its backward is ``Xᵀ g`` (and the reverse for ``_XRmatvec``)."""

    @staticmethod
    def forward(ctx, q: Tensor, tokens: Tensor, N: int) -> Tensor:
        ctx.save_for_backward(tokens)
        ctx.N, ctx.d = N, q.shape[1]
        s = q.gather(1, tokens)  # (B, T) q[z_h], the E(z_h) part of x_h
        s[:, 1:] += q[:, N:].gather(1, tokens[:, :-1])  # + q[N + z_{h-1}], the Ẽ(z_{h-1}) part, h ≥ 1
        return s

    @staticmethod
    def backward(ctx, grad: Tensor):
        (tokens,) = ctx.saved_tensors
        return _XRmatvec.apply(grad, tokens, ctx.N, ctx.d), None, None


class _XRmatvec(torch.autograd.Function):
    @staticmethod
    def forward(ctx, w: Tensor, tokens: Tensor, N: int, d: int) -> Tensor:
        ctx.save_for_backward(tokens)
        ctx.N = N
        out = w.new_zeros(w.shape[0], d)  # (B, d)
        if torch.are_deterministic_algorithms_enabled():
            # one 1-D index_add over the flat (B·d) output, deterministic on CUDA too (the 2-D scatter_add_
            # is not, on every torch version); on a CPU it adds in the same order, so the same numbers
            rows = torch.arange(w.shape[0], device=w.device)[:, None] * d  # (B, 1)
            index = torch.cat([tokens, tokens[:, :-1] + N], 1) + rows  # (B, 2T-1)
            out.view(-1).index_add_(0, index.flatten(), torch.cat([w, w[:, 1:]], 1).flatten())
            return out
        out.scatter_add_(1, tokens, w)  # Σ_h w_h E(z_h)
        out[:, N:].scatter_add_(1, tokens[:, :-1], w[:, 1:])  # + Σ_{h≥1} w_h Ẽ(z_{h-1})
        return out

    @staticmethod
    def backward(ctx, grad: Tensor):
        (tokens,) = ctx.saved_tensors
        return _XMatvec.apply(grad, tokens, ctx.N), None, None, None


class ContextInputs:
    """The inputs ``X`` (B, T, d), ``x_h = E(z_h) + Ẽ(z_{h-1})``, of a batch of contexts, never built.

    ``matvec(q)`` is ``X q`` (B, d) → (B, T), ``rmatvec(w)`` is ``Xᵀ w`` (B, T) → (B, d); both are
    differentiable (each one's backward is the other), with O(B·T) gathers and scatter-adds.

    >>> X = ContextInputs(torch.tensor([[2, 0, 1]]), vocab_size=3, d_model=6)
    >>> X.matvec(torch.arange(6.0)[None])  # x_0 = e_2, x_1 = e_0 + e_5, x_2 = e_1 + e_3
    tensor([[2., 5., 4.]])
    >>> X.rmatvec(torch.ones(1, 3))
    tensor([[1., 1., 1., 1., 0., 1.]])
    """

    def __init__(self, tokens: Tensor, vocab_size: int, d_model: int):
        self.tokens, self.N, self.d = tokens, vocab_size, d_model

    def matvec(self, q: Tensor) -> Tensor:
        return _XMatvec.apply(q, self.tokens, self.N)

    def rmatvec(self, w: Tensor) -> Tensor:
        return _XRmatvec.apply(w, self.tokens, self.N, self.d)


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

    def unembed(self, M: Tensor) -> Tensor:
        """``U M`` (N, d); the fixed ``U = [E(0) … E(N-1)]ᵀ`` just keeps the first ``N`` rows."""
        return self.U @ M if isinstance(self.U, nn.Parameter) else M[: self.task.vocab_size]

    def forward(self, tokens: Tensor) -> RecallOutput:
        B, T = tokens.shape
        N = self.task.vocab_size
        W, V = self.param.W(), self.param.V()  # (d, d) each
        X = ContextInputs(tokens, N, W.shape[0])  # (B, T, d) x_h, implicit
        last = (tokens[:, -1], tokens[:, -2] + N)  # x_{T-1} = E(z_{T-1}) + Ẽ(z_{T-2}): ones at these indices
        query = W.index_select(0, last[0]) + W.index_select(0, last[1])  # (B, d) x_{T-1}ᵀ W
        scores = X.matvec(query)  # (B, T) s_h = x_{T-1}ᵀ W x_h
        weights = self.attention(scores)  # (B, T) σ(s)
        a = X.rmatvec(weights)  # (B, d) Σ_h σ_h x_h
        logits_attn = a @ self.unembed(V).T  # (B, N) U V a
        if self.kappa is None:
            logits_ff = torch.zeros_like(logits_attn)
        else:
            ff_in = a.new_zeros(a.shape).scatter_(1, torch.stack(last, 1), 1.0)  # (B, d) x_{T-1}
            if self.kappa:
                ff_in = torch.add(ff_in, a, alpha=self.kappa)  # x_{T-1} + κ a
            logits_ff = ff_in @ self.unembed(self.param.F()).T  # (B, N) U F (x_{T-1} + κ a)
        return RecallOutput(logits_attn + logits_ff, logits_attn, logits_ff, weights)
