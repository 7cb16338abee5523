"""The recall model of docs/science.md §R.3 written as the plain dense formula: the reference the benchmarks time.

Builds the inputs ``X`` (B, T, d), ``x_h = E(z_h) + Ẽ(z_{h-1})``, as one-hot sums and applies the
equations as written, with the model's own ``W``, ``V``, ``F``, ``U`` and attention ``σ``:

    s_h = x_{T-1}ᵀ W x_h,   a = Σ_h σ(s)_h x_h,   ξ_A = U V a,   ξ_F = U F (x_{T-1} + κ a).

Cost O(B·T·d) time and memory (``X`` alone is 4·B·T·d bytes), against the package's O(B·T + B·d²).
Same formula as ``dense_forward`` in ``tests/test_recall_model.py``, kept here so that benchmarks
do not import from the tests.
"""

from __future__ import annotations

import torch
from torch import Tensor

from icrl.recall import RecallTransformer


def dense_inputs(tokens: Tensor, vocab_size: int, d_model: int) -> Tensor:
    """``X`` (B, T, d) with ``x_h = E(z_h) + Ẽ(z_{h-1})`` (``x_0 = E(z_0)``), ``E(k) = e_k``, ``Ẽ(k) = e_{N+k}``."""
    E = torch.eye(d_model, device=tokens.device)
    X = E[tokens].clone()  # (B, T, d) E(z_h)
    X[:, 1:] += E[vocab_size + tokens[:, :-1]]  # + Ẽ(z_{h-1})
    return X


def dense_forward(model: RecallTransformer, tokens: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``(ξ, ξ_A, ξ_F)``, each (B, N), by the dense formula."""
    N, d = model.task.vocab_size, model.U.shape[1]
    X = dense_inputs(tokens, N, d)  # (B, T, d)
    W, V, F, U = model.param.W(), model.param.V(), model.param.F(), model.U
    x_last = X[:, -1]  # (B, d)
    s = torch.einsum("bi,ij,btj->bt", x_last, W, X)  # (B, T) s_h = x_{T-1}ᵀ W x_h
    sigma = model.attention(s)  # (B, T)
    a = torch.einsum("bt,btd->bd", sigma, X)  # (B, d) Σ_h σ_h x_h
    xi_A = (U @ V @ a.T).T  # (B, N)
    xi_F = torch.zeros_like(xi_A) if model.kappa is None else (U @ F @ (x_last + model.kappa * a).T).T
    return xi_A + xi_F, xi_A, xi_F
