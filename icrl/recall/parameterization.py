"""Parameterizations of docs/science.md §R.4: which matrices ``W, V, F`` (all d×d) are free and which fixed.

With ``E(k) = e_k`` and ``Ẽ(k) = e_{N+k}``: ``Origin`` frees all three; ``Reparam`` fixes ``V = I`` and
trains noiseless ``W = Σ_{k∈Q} λ_k E(k)Ẽ(k)ᵀ`` (``F = 0``) or noisy ``W = Λ E(0)(Ẽ(0) − E(τ))ᵀ`` with the
fixed ``F = E(τ)(γE(0) + Ẽ(0))ᵀ``, ``γ = log(α̂/(1−α̂))``; ``ReparamW`` is ``Reparam`` with a free ``W``.

A model takes a ``ParameterizationCallable`` ``(task, d_model, feedforward) -> Parameterization``: a class, or in
YAML a ``class_path`` with ``init_args``; a new one subclasses ``Parameterization`` and defines ``W`` (README).
"""

from __future__ import annotations

import math
from typing import Callable, Literal

import torch
from torch import Tensor, nn

from icrl.recall.attention import Attention
from icrl.recall.task import RecallTask

Feedforward = Literal["none", "F", "FA"]
FEEDFORWARD_KAPPA = {"none": None, "F": 0.0, "FA": 1.0}  # κ of ξ_F = U F (x_{T-1} + κ a); None: no ξ_F


class Parameterization(nn.Module):
    """Holds the trainable tensors and builds ``W``, ``V``, ``F`` (d×d) from them; ``V = I``, ``F = 0`` by default."""

    supports_noisy_without_ff = True  # False where the noisy task's association lives in a fixed F

    def __init__(self, task: RecallTask, d_model: int, feedforward: str = "FA"):
        super().__init__()
        self.task = task
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


class ReparamValue(Parameterization):
    """Reparam's ``V`` and ``F``, shared by ``Reparam`` and ``ReparamW``, which add their ``W``.

    ``value_scale=True`` (§R.4, value-scaled Reparam): ``V = s·I`` and ``s`` times the noisy ``F``'s
    previous-trigger coefficient, ``s = e^σ`` (parameter ``log_s`` = σ): from 1 (at 0 linear and ReLU
    attention get no gradient), and positive. ``free_sign=True`` (parameter ``s``) trains ``s`` itself, and fails.
    """

    supports_noisy_without_ff = False

    def __init__(self, task: RecallTask, d_model: int, feedforward: str = "FA", value_scale: bool = False,
                 free_sign: bool = False):
        super().__init__(task, d_model, feedforward)
        if free_sign and not value_scale:
            raise ValueError("free_sign=True is an option of the value scale: set value_scale=True too")
        self.s = nn.Parameter(torch.ones(1)) if value_scale and free_sign else None  # V = s·I, s of either sign
        self.log_s = nn.Parameter(torch.zeros(1)) if value_scale and not free_sign else None  # V = e^σ·I, σ = log_s
        # F = F_gamma + s·F_prev: E(τ)(γE(q) + s·Ẽ(q))ᵀ on the noisy task (trigger q = 0), 0 noiseless
        F_gamma, F_prev = torch.zeros(d_model, d_model), torch.zeros(d_model, d_model)
        if task.noisy:
            tau, a = task.noise_token, task.alpha_hat
            F_gamma[tau, 0], F_prev[tau, task.vocab_size] = math.log(a / (1 - a)), 1.0
        self.register_buffer("F_gamma", F_gamma, persistent=False)
        self.register_buffer("F_prev", F_prev, persistent=False)

    def scale(self) -> Tensor | None:
        """The value scale ``s`` (shape (1,)), or ``None`` without ``value_scale``."""
        return self.s if self.log_s is None else self.log_s.exp()

    def V(self) -> Tensor:
        s = self.scale()
        return self.eye if s is None else s * self.eye

    def F(self) -> Tensor:
        s = self.scale()
        return self.F_gamma + (self.F_prev if s is None else s * self.F_prev)


class Reparam(ReparamValue):
    """Structured, provably Bayes-optimal ``W``: λ per trigger, or Λ on the noisy task (parameter ``lam``)."""

    def __init__(self, task: RecallTask, d_model: int, feedforward: str = "FA", value_scale: bool = False,
                 free_sign: bool = False):
        super().__init__(task, d_model, feedforward, value_scale, free_sign)
        N, Q = task.vocab_size, task.n_triggers
        self.lam = nn.Parameter(torch.zeros(1 if task.noisy else Q))  # Λ noisy, λ_k (k ∈ Q) noiseless
        # the entries of W: noisy E(0)(Ẽ(0) − E(τ))ᵀ is +Λ at (0, N), −Λ at (0, τ); noiseless λ_k at (k, N + k)
        index = ([0, 0], [N, task.noise_token]) if task.noisy else (list(range(Q)), [N + k for k in range(Q)])
        self.register_buffer("W_index", torch.tensor(index), persistent=False)
        self.register_buffer("W_sign", torch.tensor([1.0, -1.0] if task.noisy else [1.0] * Q), persistent=False)

    def W(self) -> Tensor:
        return self.zero.index_put(tuple(self.W_index), self.lam * self.W_sign)


class ReparamW(ReparamValue):
    """As ``Reparam`` with a full free ``W`` (parameter ``W_``): zero init, or ``N(0, init_std²)`` entries."""

    def __init__(self, task: RecallTask, d_model: int, feedforward: str = "FA", value_scale: bool = False,
                 free_sign: bool = False, init_std: float = 0.0):
        super().__init__(task, d_model, feedforward, value_scale, free_sign)
        self.W_ = free_matrix(d_model, init_std)

    def W(self) -> Tensor:
        return self.W_


def check_trainable(param: Parameterization, attention: Attention, feedforward: str) -> None:
    """Refuse a model whose ``W`` (and ``V``) provably never leave their initial zeros.

    At ``W = 0`` every score is 0, so a = Σ_h σ(0) x_h, and W's gradient is Σ_h ∂L/∂s_h x_{T-1} x_hᵀ with
    ∂L/∂s = J_σ(0)ᵀ X (Vᵀ + κFᵀ) Uᵀ ∂L/∂ξ. It is exactly 0 at every step if

    - ``σ'(0) = 0`` (e.g. ``torch.relu``): the scores never move, attention never forms; or
    - ``σ(0) = 0`` (linear, ReLU) and ``V = 0`` with no ``F`` on the attention path (κ = 0 or no feed-forward), as
      zero-initialised Origin: a = 0 gives V no gradient (∂L/∂V = Uᵀ ∂L/∂ξ aᵀ), and Vᵀ + κFᵀ = 0 gives W none.

    Both are sufficient conditions, checked on the initial ``W``, ``V`` and ``σ``; softmax (σ(0) = 1/T),
    ``V = I`` (Reparam) and FA (F moves on the first step, then carries the gradient to W) all train.
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
