"""Parameterizations of SPEC R.4: which matrices ``W, V, F`` (all d×d) are free and which fixed.

With the fixed basis embeddings ``E(k) = e_k`` (token) and ``Ẽ(k) = e_{N+k}`` (previous token):

- ``origin``: ``W``, ``V``, ``F`` free, zero-initialised (paper code).
- ``reparam``: ``V = I``; noiseless ``W = Σ_{k∈Q} λ_k E(k)Ẽ(k)ᵀ`` (trainable λ ∈ R^{|Q|}), ``F = 0``;
  noisy ``W = Λ E(0)(Ẽ(0) − E(τ))ᵀ`` (trainable scalar Λ) and fixed ``F = E(τ)(γE(0) + Ẽ(0))ᵀ``
  with ``γ = log(α/(1−α))`` (α̂, the empirical α, for finite samples).
- ``reparam_w``: as ``reparam`` but ``W`` is a full free matrix (zero init).

Add one by subclassing ``Parameterization`` with a ``name``; the model then accepts that name
(or the class's dotted import path) as ``parameterization``::

    class Diagonal(Parameterization, name="diagonal"):
        def __init__(self, task, d_model, feedforward="FA"):
            super().__init__(task, d_model, feedforward)
            self.w = nn.Parameter(torch.zeros(d_model))
        def W(self):
            return torch.diag(self.w)
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from icrl.imports import import_subclass
from icrl.recall.task import RecallTask

PARAMETERIZATIONS: dict[str, type[Parameterization]] = {}


class Parameterization(nn.Module):
    """Base class: holds the trainable tensors and builds dense ``W``, ``V``, ``F`` (d×d) from them.

    Defaults are the Origin choices' shapes with ``V = I`` and ``F = 0`` fixed; subclasses override
    ``W``, ``V``, ``F``. ``supports_noisy_without_ff`` says whether the noisy task can be expressed
    without a feed-forward block (False where the noise association lives in a fixed ``F``).
    """

    supports_noisy_without_ff = True

    def __init_subclass__(cls, name: str | None = None, **kwargs):
        super().__init_subclass__(**kwargs)
        if name is not None:
            PARAMETERIZATIONS[name] = cls

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


class Origin(Parameterization, name="origin"):
    """Free, zero-initialised ``W``, ``V``, ``F``."""

    def __init__(self, task: RecallTask, d_model: int, feedforward: str = "FA"):
        super().__init__(task, d_model, feedforward)
        self.W_ = nn.Parameter(torch.zeros(d_model, d_model))
        self.V_ = nn.Parameter(torch.zeros(d_model, d_model))
        # no F parameter without a feed-forward block: it would get no gradient (and upset DDP)
        self.F_ = nn.Parameter(torch.zeros(d_model, d_model)) if feedforward != "none" else None

    def W(self) -> Tensor:
        return self.W_

    def V(self) -> Tensor:
        return self.V_

    def F(self) -> Tensor:
        return self.zero if self.F_ is None else self.F_


class Reparam(Parameterization, name="reparam"):
    """Structured, provably Bayes-optimal ``W`` (λ per trigger, or Λ on the noisy task), ``V = I``."""

    supports_noisy_without_ff = False

    def __init__(self, task: RecallTask, d_model: int, feedforward: str = "FA"):
        super().__init__(task, d_model, feedforward)
        N, q, tau = task.vocab_size, 0, task.noise_token
        self.init_W(task, d_model)
        F = torch.zeros(d_model, d_model)
        if task.noisy:
            a = task.alpha_hat
            F[tau, q], F[tau, N + q] = math.log(a / (1 - a)), 1.0  # F = E(τ)(γE(q) + Ẽ(q))ᵀ
        self.register_buffer("F_fixed", F, persistent=False)

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

    def F(self) -> Tensor:
        return self.F_fixed


class ReparamW(Reparam, name="reparam_w"):
    """As ``reparam`` with a full free ``W`` (zero init)."""

    def init_W(self, task: RecallTask, d_model: int) -> None:
        self.W_ = nn.Parameter(torch.zeros(d_model, d_model))

    def W(self) -> Tensor:
        return self.W_


def parameterization_class(name: str) -> type[Parameterization]:
    """Look up a registered name, or import a dotted path ``package.module.Class``."""
    if name in PARAMETERIZATIONS:
        return PARAMETERIZATIONS[name]
    if (cls := import_subclass("parameterization", name, Parameterization)) is not None:
        return cls
    raise ValueError(
        f"parameterization must be one of {sorted(PARAMETERIZATIONS)} or the import path of an "
        f"icrl.recall.Parameterization subclass, got parameterization={name!r}"
    )
