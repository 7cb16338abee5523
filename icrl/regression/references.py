"""Closed-form reference predictors of template regression (docs/science.md §T.3).

With ``Z = [f(v_1) … f(v_N)]`` (``m × N``) the representations of the ``N`` labelled tokens, ``y`` their labels
and ``F_K`` the representations of all ``K`` tokens, every reference is a ridge regression over the basis,
``λ̂ = (Z Zᵀ + r I)^{-1} Z y``, ``ŷ = F_Kᵀ λ̂``, differing only in ``r``:

- ``ridge_reference``: ``r = m τ``: what the trained one-layer transformer computes. Under the data law of
  ``icrl.regression.data`` (``λ ~ N(0, I_m)``, ``y_k = λᵀ(f(v_k) + ε_k)``) it is also the best predictor linear
  in the prompt labels of ``λᵀ f(v_k)``, and of a noisy target whose noise is independent of the prompt's, on
  every token: ``E[y yᵀ] = Zᵀ Z + m τ I`` and ``E[t yᵀ] = F_Kᵀ Z``.
- ``best_reference``: ``r = N τ``, the paper's "best" predictor; the two references meet at ``N = m`` (Fig. 3).

``f`` is ``(K, m)`` (one table for every prompt) or ``(B, K, m)``, ``y`` is ``(B, N)``.
"""

from __future__ import annotations

import torch
from torch import Tensor


def ridge_predict(f: Tensor, y: Tensor, reg: float) -> Tensor:
    """Predictions ``ŷ = F_Kᵀ (Z Zᵀ + reg·I)^{-1} Z y`` ``(B, K)`` from prompts ``y`` ``(B, N)``, ``reg ≥ 0``.

    >>> f = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])  # K=3 tokens, m=2; Z = I
    >>> ridge_predict(f, torch.tensor([[2.0, 4.0]]), reg=0.0)
    tensor([[2., 4., 6.]])
    >>> ridge_predict(f, torch.tensor([[2.0, 4.0]]), reg=1.0)  # λ̂ = y / 2
    tensor([[1., 2., 3.]])
    """
    n, m = y.shape[-1], f.shape[-1]
    z_t = f[..., :n, :]  # (…, N, m) = Zᵀ
    gram = z_t.mT @ z_t + reg * torch.eye(m, dtype=f.dtype, device=f.device)  # (…, m, m) = Z Zᵀ + r I
    lam = torch.linalg.solve(gram, z_t.mT @ y.unsqueeze(-1))  # (B, m, 1) = λ̂
    return (f @ lam).squeeze(-1)  # (B, K)


def ridge_reference(f: Tensor, y: Tensor, noise_var: float) -> Tensor:
    """Ridge predictor ``(Z Zᵀ + m τ I)^{-1} Z y`` mapped to all ``K`` tokens; ``τ = noise_var``.

    >>> ridge_reference(torch.eye(2), torch.tensor([[3.0]]), noise_var=0.5)  # K = m = 2, N = 1: r = m τ = 1
    tensor([[1.5000, 0.0000]])
    """
    return ridge_predict(f, y, f.shape[-1] * noise_var)


def best_reference(f: Tensor, y: Tensor, noise_var: float) -> Tensor:
    """The paper's best predictor ``(Z Zᵀ + N τ I)^{-1} Z y`` mapped to all ``K`` tokens.

    >>> best_reference(torch.eye(2), torch.tensor([[3.0]]), noise_var=0.5)  # r = N τ = 0.5
    tensor([[2., 0.]])
    """
    return ridge_predict(f, y, y.shape[-1] * noise_var)


def expected_ridge_best_gap(f: Tensor, n_labelled: int, noise_var: float) -> float:
    """Fig. 3's gap in expectation over prompts ``λ ~ N(0, I_m)``: ``E (1/K) ‖ŷ_ridge − ŷ_best‖²``.

    Both predictors are linear in ``y``: with ``M = F_Kᵀ [(Z Zᵀ + mτ I)^{-1} − (Z Zᵀ + Nτ I)^{-1}] Z`` and
    ``E[y yᵀ] = Zᵀ Z + mτ I`` (``E‖λ‖² = m``) the gap is ``tr(M E[y yᵀ] Mᵀ) / K``, computed in float64.

    >>> f = torch.eye(2)  # K = m = 2, N = 1, τ = 0.5: M = [[1/(1+1) − 1/(1+0.5)], [0]] = [[−1/6], [0]]
    >>> round(expected_ridge_best_gap(f, 1, 0.5), 6)  # (1/36)(1 + 1) / 2
    0.027778
    """
    f = f.double()
    k, m = f.shape
    z_t = f[:n_labelled]  # (N, m) = Zᵀ
    gram, eye = z_t.T @ z_t, torch.eye(m, dtype=f.dtype)
    diff = torch.linalg.inv(gram + m * noise_var * eye) - torch.linalg.inv(gram + n_labelled * noise_var * eye)
    M = f @ diff @ z_t.T  # (K, N)
    cov = z_t @ z_t.T + m * noise_var * torch.eye(n_labelled, dtype=f.dtype)  # (N, N) E[y yᵀ]
    return (torch.trace(M @ cov @ M.T) / k).item()
