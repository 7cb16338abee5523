"""The recall model's inputs ``X`` (B, T, d), ``x_h = E(z_h) + Ẽ(z_{h-1})``, used without being built.

The embeddings are a fixed basis (``E(k) = e_k``, ``Ẽ(k) = e_{N+k}``, docs/science.md §R.1), so each
row ``x_h`` has two ones, at ``z_h`` and ``N + z_{h-1}``: ``X q`` is two gathers, ``Xᵀ w`` two scatter-adds.
"""

from __future__ import annotations

import torch
from torch import Tensor


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
    """The inputs ``X`` of contexts ``tokens`` (B, T): ``matvec(q)`` is ``X q`` (B, d) → (B, T), ``rmatvec(w)``
    ``Xᵀ w`` (B, T) → (B, d), O(B·T) against the dense O(B·T·d); each one's backward is the other.

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
