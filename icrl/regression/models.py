"""Networks for template regression: the paper's one-layer multi-head model and a deep baseline.

Both map the fixed tokens ``v`` (``(K, d)``, shared by every prompt, or ``(B, K, d)``) and the prompt labels
``y`` (``(B, N)``, of the first ``N`` tokens) to predictions for all ``K`` tokens, ``(B, K)``, and name their
read-out parameters (``w``), which train with their own step size ``η_w = γ² η_Q`` (docs/science.md §T.2).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class OneLayerMultiHead(nn.Module):
    """One-layer multi-head softmax attention (docs/science.md §T.2), all heads at once.

    ``ŷ_k = Σ_h w_{h,k} · yᵀ softmax(V_Nᵀ Q_h v_k)``, ``V_N = [v_1 … v_N]``, with ``Q_h ∈ R^{d×d}`` and
    ``w_h ∈ R^K`` per head; init ``Q_h ~ N(0, β²)`` entrywise, ``w = 0``. The paper needs ``heads ≥ N``.

    >>> net = OneLayerMultiHead(n_tokens=5, n_labelled=3, token_dim=4, heads=3, beta=0.1)
    >>> net(torch.randn(5, 4), torch.randn(2, 3)).shape  # w = 0 at init: ŷ = 0
    torch.Size([2, 5])
    """

    def __init__(self, n_tokens: int, n_labelled: int, token_dim: int, heads: int = 64, beta: float = 0.01):
        super().__init__()
        if heads < 1:
            raise ValueError(f"heads must be >= 1 (the paper needs heads >= n_labelled = {n_labelled}), got heads={heads}")
        if not beta > 0:
            raise ValueError(f"beta (std of the initial Q_h entries) must be > 0, got beta={beta}")
        self.n_labelled = n_labelled
        self.Q = nn.Parameter(beta * torch.randn(heads, token_dim, token_dim))  # (H, d, d)
        self.w = nn.Parameter(torch.zeros(heads, n_tokens))  # (H, K)

    def forward(self, v: Tensor, y: Tensor) -> Tensor:
        v_n = v[..., : self.n_labelled, :].unsqueeze(-3)  # (…, 1, N, d) = V_Nᵀ
        scores = v_n @ self.Q @ v.unsqueeze(-3).mT  # (…, H, N, K) = V_Nᵀ Q_h v_k
        attn = scores.softmax(dim=-2)  # (…, H, N, K), softmax over the N prompt tokens
        coef = (attn * self.w.unsqueeze(-2)).sum(dim=-3)  # (…, N, K) = Σ_h w_{h,k} softmax(…)
        return (y.unsqueeze(-2) @ coef).squeeze(-2)  # (B, K)

    def readout_parameters(self) -> Iterator[nn.Parameter]:
        yield self.w


class TransformerBaseline(nn.Module):
    """Standard pre-LN transformer encoder over the ``K`` tokens (docs/science.md §T.2's deep baseline).

    Token ``k`` enters as ``[v_k, y_k·1{k ≤ N}, 1{k ≤ N}]``, linearly embedded; no mask and no positional
    code (``v_k`` tells tokens apart); a linear read-out per token predicts its label.

    >>> net = TransformerBaseline(n_labelled=3, token_dim=4, n_layers=1, d_model=8, d_ff=16, n_heads=2)
    >>> net(torch.randn(5, 4), torch.randn(2, 3)).shape
    torch.Size([2, 5])
    """

    def __init__(self, n_labelled: int, token_dim: int, n_layers: int = 4, d_model: int = 256, d_ff: int = 512,
                 n_heads: int = 8, dropout: float = 0.0):
        super().__init__()
        for name, value in dict(n_layers=n_layers, d_model=d_model, d_ff=d_ff).items():
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {name}={value}")
        if n_heads < 1 or d_model % n_heads:
            raise ValueError(f"n_heads must be >= 1 and divide d_model={d_model}, got n_heads={n_heads}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), got dropout={dropout}")
        self.n_labelled = n_labelled
        self.embed = nn.Linear(token_dim + 2, d_model)
        layer = nn.TransformerEncoderLayer(d_model, n_heads, d_ff, dropout, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, n_layers, norm=nn.LayerNorm(d_model), enable_nested_tensor=False)
        self.readout = nn.Linear(d_model, 1)

    def forward(self, v: Tensor, y: Tensor) -> Tensor:
        (b, n), k = y.shape, v.shape[-2]
        labels = F.pad(y, (0, k - n))  # (B, K): y_k, or 0 for unlabelled tokens
        flag = (torch.arange(k, device=y.device) < n).to(y.dtype).expand(b, k)  # (B, K)
        x = torch.cat([v.expand(b, k, v.shape[-1]), labels.unsqueeze(-1), flag.unsqueeze(-1)], dim=-1)  # (B, K, d+2)
        h = self.encoder(self.embed(x))  # (B, K, d_model)
        return self.readout(h).squeeze(-1)  # (B, K)

    def readout_parameters(self) -> Iterator[nn.Parameter]:
        return self.readout.parameters()
