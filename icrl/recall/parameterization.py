"""Parameterizations of docs/science.md §R.4: which matrices ``W, V, F`` (all d×d) are free and which fixed.

With the fixed basis embeddings ``E(k) = e_k`` (token) and ``Ẽ(k) = e_{N+k}`` (previous token):

- ``Origin``: ``W``, ``V``, ``F`` free, zero-initialised (paper code); ``init_std > 0`` draws them
  from ``N(0, init_std²)`` instead.
- ``Reparam``: ``V = I``; noiseless ``W = Σ_{k∈Q} λ_k E(k)Ẽ(k)ᵀ`` (trainable λ ∈ R^{|Q|}), ``F = 0``;
  noisy ``W = Λ E(0)(Ẽ(0) − E(τ))ᵀ`` (trainable scalar Λ) and fixed ``F = E(τ)(γE(0) + Ẽ(0))ᵀ``
  with ``γ = log(α/(1−α))`` (α̂, the empirical α, for finite samples).
  ``value_scale=True`` is the later paper version's **value-scaled Reparam**: a scalar ``s > 0``
  with ``V = s·I`` and, on the noisy task, ``F = E(τ)(γE(0) + s·Ẽ(0))ᵀ``; with softmax attention it
  reaches the Bayes risk in and out of distribution, at every context length, as λ (Λ) and ``s``
  grow. The scale is kept positive, ``s = e^σ`` with σ trainable from 0 (docs/science.md §R.4);
  ``free_sign=True`` trains ``s`` itself, which at long contexts is driven below 0 and never
  recovers (kept to reproduce that finding).
- ``ReparamW``: as ``Reparam`` but ``W`` is a full free matrix (zero init, or ``init_std``).

A model takes a parameterization as a callable ``(task, d_model, feedforward) -> Parameterization``
(``ParameterizationCallable``): a class, or in YAML a ``class_path`` with ``init_args`` for the
remaining arguments, as for the optimizer. Add one by subclassing ``Parameterization``::

    class Diagonal(Parameterization):
        def __init__(self, task, d_model, feedforward="FA"):
            super().__init__(task, d_model, feedforward)
            self.w = nn.Parameter(torch.zeros(d_model))
        def W(self):
            return torch.diag(self.w)
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor, nn

from icrl.recall.task import RecallTask


class Parameterization(nn.Module):
    """Base class: holds the trainable tensors and builds dense ``W``, ``V``, ``F`` (d×d) from them.

    Defaults are ``V = I`` and ``F = 0`` fixed; subclasses override ``W``, ``V``, ``F``.
    ``supports_noisy_without_ff`` says whether the noisy task can be expressed without a
    feed-forward block (False where the noise association lives in a fixed ``F``).
    """

    supports_noisy_without_ff = True

    def __init__(self, task: RecallTask, d_model: int, feedforward: str = "FA"):
        super().__init__()
        self.task, self.d_model, self.feedforward = task, d_model, feedforward
        self.register_buffer("eye", torch.eye(d_model), persistent=False)
        self.register_buffer("zero", torch.zeros(d_model, d_model), persistent=False)

    def W(self) -> Tensor:
        raise NotImplementedError

    def V(self) -> Tensor:
        return self.eye

    def F(self) -> Tensor:
        return self.zero


ParameterizationCallable = Callable[[RecallTask, int, str], Parameterization]


def free_matrix(d_model: int, init_std: float) -> nn.Parameter:
    """A free d×d matrix: zeros (the paper's init) or, for ``init_std > 0``, ``N(0, init_std²)`` entries.

    >>> free_matrix(3, 0.0).abs().sum().item(), free_matrix(3, 1.0).shape
    (0.0, torch.Size([3, 3]))
    """
    if not (init_std >= 0 and math.isfinite(init_std)):
        raise ValueError(f"init_std must be a finite number >= 0 (0 = the paper's zero init), got init_std={init_std}")
    return nn.Parameter(init_std * torch.randn(d_model, d_model) if init_std else torch.zeros(d_model, d_model))


class Origin(Parameterization):
    """Free ``W``, ``V``, ``F``: zero-initialised (paper code), or ``N(0, init_std²)`` entries."""

    def __init__(self, task: RecallTask, d_model: int, feedforward: str = "FA", init_std: float = 0.0):
        super().__init__(task, d_model, feedforward)
        self.W_ = free_matrix(d_model, init_std)
        self.V_ = free_matrix(d_model, init_std)
        # no F parameter without a feed-forward block: it would get no gradient (and upset DDP)
        self.F_ = free_matrix(d_model, init_std) if feedforward != "none" else None

    def W(self) -> Tensor:
        return self.W_

    def V(self) -> Tensor:
        return self.V_

    def F(self) -> Tensor:
        return self.zero if self.F_ is None else self.F_


class Reparam(Parameterization):
    """Structured, provably Bayes-optimal ``W`` (λ per trigger, or Λ on the noisy task), ``V = I``.

    ``value_scale=True``: the value-scaled Reparam, ``V = s·I`` with a trainable scale ``s = e^σ``
    (parameter ``log_s`` = σ) that also scales the previous-trigger coefficient of the noisy ``F``.
    ``s`` starts at 1, where the model is the plain Reparam: at ``s = 0`` (``V = 0``) linear and
    ReLU attention would get no gradient at all from the zero start. It must stay positive: at the
    uniform attention of the start, raising ``s`` lifts each filler token's logit (~1/50 of the
    context) more than the output's (1/T), so at long contexts ``s`` is first pushed down; below 0,
    attending to the output lowers its logit and Λ runs negative too. ``free_sign=True`` (parameter
    ``s``) trains the scale itself and shows that failure (docs/science.md §R.4).
    """

    supports_noisy_without_ff = False

    def __init__(self, task: RecallTask, d_model: int, feedforward: str = "FA", value_scale: bool = False,
                 free_sign: bool = False):
        super().__init__(task, d_model, feedforward)
        if free_sign and not value_scale:
            raise ValueError("free_sign=True is an option of the value scale: set value_scale=True too")
        N, q, tau = task.vocab_size, 0, task.noise_token
        self.s = nn.Parameter(torch.ones(1)) if value_scale and free_sign else None  # V = s·I, s of either sign
        self.log_s = nn.Parameter(torch.zeros(1)) if value_scale and not free_sign else None  # V = e^σ·I, σ = log_s
        self.init_W(task, d_model)
        # F = E(τ)(γE(q) + s·Ẽ(q))ᵀ on the noisy task (s = 1 without value_scale), F = 0 noiseless
        F_gamma, F_prev = torch.zeros(d_model, d_model), torch.zeros(d_model, d_model)
        if task.noisy:
            a = task.alpha_hat
            F_gamma[tau, q], F_prev[tau, N + q] = math.log(a / (1 - a)), 1.0
        self.register_buffer("F_gamma", F_gamma, persistent=False)
        self.register_buffer("F_prev", F_prev, persistent=False)

    def init_W(self, task: RecallTask, d_model: int) -> None:
        """The trainable part of ``W``: λ (or Λ) and the fixed pattern it scales."""
        N, q, tau = task.vocab_size, 0, task.noise_token
        if task.noisy:
            self.lam = nn.Parameter(torch.zeros(1))  # Λ
            # W = Λ E(q)(Ẽ(q) − E(τ))ᵀ: row q, +1 at column N+q, −1 at column τ
            W_unit = torch.zeros(d_model, d_model)
            W_unit[q, N + q], W_unit[q, tau] = 1.0, -1.0
            self.register_buffer("W_unit", W_unit, persistent=False)
        else:
            self.lam = nn.Parameter(torch.zeros(task.n_triggers))  # λ_k, k ∈ Q
            k = torch.arange(task.n_triggers)
            self.register_buffer("W_rows", k, persistent=False)
            self.register_buffer("W_cols", N + k, persistent=False)

    def W(self) -> Tensor:
        if self.task.noisy:
            return self.lam * self.W_unit
        return self.zero.index_put((self.W_rows, self.W_cols), self.lam)

    def scale(self) -> Tensor | None:
        """The value scale ``s`` (shape (1,)), or ``None`` without ``value_scale``."""
        return self.s if self.log_s is None else self.log_s.exp()

    def V(self) -> Tensor:
        s = self.scale()
        return self.eye if s is None else s * self.eye

    def F(self) -> Tensor:
        s = self.scale()
        return self.F_gamma + (self.F_prev if s is None else s * self.F_prev)


class ReparamW(Reparam):
    """As ``Reparam`` with a full free ``W``: zero init, or ``N(0, init_std²)`` entries."""

    def __init__(self, task: RecallTask, d_model: int, feedforward: str = "FA", value_scale: bool = False,
                 free_sign: bool = False, init_std: float = 0.0):
        self.init_std = init_std  # read by init_W, which Reparam.__init__ calls
        super().__init__(task, d_model, feedforward, value_scale, free_sign)

    def init_W(self, task: RecallTask, d_model: int) -> None:
        self.W_ = free_matrix(d_model, self.init_std)

    def W(self) -> Tensor:
        return self.W_
