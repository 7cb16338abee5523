"""The in-context recall task (docs/science.md §R.1, R.2): vocabulary layout, validation and Bayes risk.

Token layout for a vocabulary of ``N = vocab_size`` tokens::

    triggers Q = {0, …, n_triggers-1}
    outputs  Y = {n_triggers, …, n_triggers+n_outputs-1}
    OOD outputs   {n_triggers+n_outputs, …, N-2}   (never targets in training)
    noise    τ = N-1
    filler        {n_triggers, …, N-2}             (no trigger, no τ)

``alpha == 0``: noiseless (trigger from Q); ``alpha > 0``: noisy (trigger 0, extra bigram (0, τ), target τ w.p. α).
"""

from __future__ import annotations

import math
from dataclasses import dataclass


def entropy(alpha: float) -> float:
    """Binary entropy ``H(α)`` in nats: the Bayes risk of the noisy task.

    >>> round(entropy(0.5), 4), round(entropy(0.2), 4), entropy(0.0)
    (0.6931, 0.5004, 0.0)
    """
    return sum(-p * math.log(p) for p in (alpha, 1.0 - alpha) if p > 0)


TOKEN_LIMIT = 2**15  # tokens travel as int16: a quarter of int64's memory and host-to-device copy


@dataclass(frozen=True)
class RecallTask:
    """Sizes and noise level of one recall task; ``asdict`` of it is what data links into models.

    ``alpha_hat``: the fraction of τ targets of a finite training sample (the noisy Reparam's γ, §R.2), or ``alpha``.
    """

    vocab_size: int = 60
    n_triggers: int = 5
    n_outputs: int = 4
    context_length: int = 256
    alpha: float = 0.0
    alpha_hat: float | None = None

    def __post_init__(self):
        n, nt, no, t, a = self.vocab_size, self.n_triggers, self.n_outputs, self.context_length, self.alpha
        for name, value in dict(n_triggers=nt, n_outputs=no).items():
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {name}={value}")
        if nt + no > n - 2:
            raise ValueError(
                f"triggers and outputs do not fit the vocabulary: n_triggers + n_outputs = {nt + no} must be "
                f"<= vocab_size - 2 = {n - 2} (one token is the noise τ, and at least one unseen OOD output is needed)")
        if n > TOKEN_LIMIT:
            raise ValueError(f"vocab_size must be <= {TOKEN_LIMIT} (tokens travel as int16), got vocab_size={n}")
        if not 0.0 <= a < 1.0:
            raise ValueError(f"alpha must lie in [0, 1) (0 = noiseless task), got alpha={a}")
        min_t = 6 if self.noisy else 3  # noiseless: a bigram at p <= T-3 and the final trigger; noisy: two bigrams
        if t < min_t:
            raise ValueError(
                f"context_length={t} is too short for the {'noisy' if self.noisy else 'noiseless'} task's bigrams "
                f"and final trigger: context_length must be >= {min_t}")
        if self.alpha_hat is None:
            object.__setattr__(self, "alpha_hat", a)

    @property
    def noisy(self) -> bool:
        return self.alpha > 0

    @property
    def noise_token(self) -> int:
        return self.vocab_size - 1

    @property
    def outputs(self) -> tuple[int, int]:
        return self.n_triggers, self.n_triggers + self.n_outputs  # half-open, as ood_outputs

    @property
    def ood_outputs(self) -> tuple[int, int]:
        return self.n_triggers + self.n_outputs, self.vocab_size - 1

    @property
    def bayes_risk(self) -> float:
        """0 for the noiseless task, ``H(α)`` for the noisy one (docs/science.md §R.6)."""
        return entropy(self.alpha)
