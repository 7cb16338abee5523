"""The recall model of docs/science.md §R.3 as written, with the inputs ``X`` (B, T, d) built densely.

At O(B·T·d) time and memory: the reference the model's gather/scatter path is tested and benchmarked against.
"""

from __future__ import annotations

import torch
from torch import Tensor

from icrl.recall.model import RecallOutput, RecallTransformer


def dense_inputs(tokens: Tensor, N: int, d: int) -> Tensor:
    """The inputs ``X`` (B, T, d) of contexts ``tokens`` (B, T) over ``N`` tokens, built."""
    E, tokens = torch.eye(d, device=tokens.device), tokens.long()  # E(k) = e_k, Ẽ(k) = e_{N+k}
    X = E[tokens].clone()  # (B, T, d) x_h = E(z_h) …
    X[:, 1:] += E[N + tokens[:, :-1]]  # … + Ẽ(z_{h-1}), h ≥ 1
    return X


def dense_forward(model: RecallTransformer, tokens: Tensor) -> RecallOutput:
    """``model(tokens)`` by the dense formula: ``(ξ, ξ_A, ξ_F, σ(s))``."""
    X = dense_inputs(tokens, model.task.vocab_size, model.U.shape[1])  # (B, T, d)
    W, V, F, U = model.param.W(), model.param.V(), model.param.F(), model.U
    x_last = X[:, -1]  # (B, d)
    s = torch.einsum("bi,ij,btj->bt", x_last, W, X)  # (B, T) s_h = x_{T-1}ᵀ W x_h
    sigma = model.attention(s)  # (B, T)
    a = torch.einsum("bt,btd->bd", sigma, X)  # (B, d) Σ_h σ_h x_h
    xi_A = (U @ V @ a.T).T  # (B, N) U V a
    xi_F = torch.zeros_like(xi_A) if model.kappa is None else (U @ F @ (x_last + model.kappa * a).T).T
    return RecallOutput(xi_A + xi_F, xi_A, xi_F, sigma)
