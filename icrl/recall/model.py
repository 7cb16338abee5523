"""The one-layer recall transformer of docs/science.md §R.3, predicting the token after the last position.

Notation (docs/science.md §R.1, R.3): vocabulary ``N``, width ``d ≥ 2N``, context ``z_0 … z_{T-1}``, inputs
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

from typing import Literal, NamedTuple

import torch
from torch import Tensor, nn

from icrl.recall.attention import Attention, LinearAttention
from icrl.recall.parameterization import Origin, Parameterization, ParameterizationCallable
from icrl.recall.task import RecallTask

Feedforward = Literal["none", "F", "FA"]
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


def check_trainable(param: Parameterization, attention: Attention, feedforward: str) -> None:
    """Refuse a model whose ``W`` (and ``V``) provably never leave their initial zeros.

    At ``W = 0`` every score is 0, so a = Σ_h σ(0) x_h, and W's gradient is
    Σ_h ∂L/∂s_h x_{T-1} x_hᵀ with ∂L/∂s = J_σ(0)ᵀ X (Vᵀ + κFᵀ) Uᵀ ∂L/∂ξ. It is exactly 0 at every step if

    - ``σ'(0) = 0`` (e.g. ``torch.relu``): the scores never move, attention never forms; or
    - ``σ(0) = 0`` (linear, ReLU) and ``V = 0`` with no ``F`` on the attention path (κ = 0 or no
      feed-forward): a = 0 gives V no gradient (∂L/∂V = Uᵀ ∂L/∂ξ aᵀ), and Vᵀ + κFᵀ = 0 gives W none.

    Zero-initialised Origin with linear or ReLU attention and feed-forward ``none`` or ``F`` is the
    second case. Both are sufficient conditions, checked on the initial ``W``, ``V`` and ``σ`` of any
    parameterization and attention; softmax (σ(0) = 1/T), ``V = I`` (Reparam) and FA (F moves on the
    first step, then carries the gradient to W) all train.
    """
    W, V = param.W().detach(), param.V().detach()
    if W.any():
        return
    s = torch.zeros(1, 2, requires_grad=True)
    with torch.enable_grad():
        weights = attention(s)  # (1, 2) σ(0)
        slope = torch.autograd.grad(weights[0, 0], s, allow_unused=True)[0] if weights.requires_grad else None
    where = f"{type(param).__name__} with {type(attention).__name__} and feedforward {feedforward!r}"
    if slope is None or not slope.any():  # ∂σ_0/∂s at 0
        raise ValueError(
            f"{where} cannot train: W starts at 0, where every score is 0, and this attention's derivative at 0 is 0, "
            f"so W never gets a gradient and attention never forms. Use an attention with a non-zero slope at 0 "
            f"(icrl.recall.ReLUAttention takes the right derivative) or a random start (init_std > 0)")
    if not weights.detach().any() and not V.any() and not FEEDFORWARD_KAPPA[feedforward]:
        raise ValueError(
            f"{where} cannot train from its zero initialisation: with W = 0 and σ(0) = 0 the attention output a is 0, "
            f"so V gets no gradient, and with V = 0 and no F on the attention path W gets none either: W and V stay 0 "
            f"for ever. Start from random matrices (e.g. --model.parameterization.init_std 0.01), or use "
            f"feedforward 'FA' or softmax attention")


class RecallTransformer(nn.Module):
    """One-layer transformer for in-context recall.

    Args:
        task: the ``RecallTask`` it is built for (vocabulary, triggers, α for the noisy Reparam).
        d_model: width ``d``, at least ``2 * vocab_size``.
        attention: an ``Attention`` (default ``LinearAttention()``).
        parameterization: a callable ``(task, d_model, feedforward) -> Parameterization``: ``Origin``,
            ``Reparam``, ``ReparamW``, a subclass of your own, or a ``functools.partial`` with options
            (``partial(Reparam, value_scale=True)``).
        feedforward: ``none``, ``F`` or ``FA``.
        trainable_U: train the unembedding ``U`` (initialised at its fixed value).

    A model whose ``W`` and ``V`` would never move from their zero start is refused (``check_trainable``).
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
                f"feedforward='none': its noise association lives in the fixed F; use feedforward 'F' or 'FA'"
            )
        check_trainable(self.param, attention, feedforward)
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
