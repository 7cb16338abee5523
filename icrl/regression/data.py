"""Template-regression prompts (docs/science.md §T.1): a fixed token table and a stream of noisy templates.

Drawn once from ``seed``: tokens ``v_k ~ N(0, I_d)`` and representations ``f(v_k) ~ N(0, σ_f² I_m)``, ``k = 1 … K``,
``σ_f = repr_std`` (only ``τ/σ_f²`` matters, §T.3). Each prompt draws a template ``λ ~ N(0, I_m)`` (unseen tasks:
``N(1, 4 I)``) and labels ``y_k = λᵀ (f(v_k) + ε_k)``, ``ε_k ~ N(0, τ I_m)``, for all ``K`` tokens; the first ``N``
labels are the prompt, and all ``K`` predictions are scored against targets ``t`` of the law ``targets``.

A batch is a dict ``{"v": (K, d), "f": (K, m), "y": (B, K), "target": (B, K)}``: the shared tables
travel once per batch, not once per prompt.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor

from icrl.streams import BatchStream, StreamDataModule, StreamLoader, generator, rank_and_world

TABLE, TRAIN, POOL, VAL, TEST = range(5)  # stream ids: independent random streams of one seed
TARGETS = ("independent", "noiseless", "shared")  # laws of the targets (sample_prompts)


def sample_labels(f: Tensor, n: int, noise_var: float, gen: torch.Generator, mean: float = 0.0, var: float = 1.0) -> Tensor:
    """Labels ``y_k = λᵀ (f(v_k) + ε_k)`` of ``n`` prompts, ``λ ~ N(mean, var·I)``, ``ε_k ~ N(0, τ I)``.

    >>> y = sample_labels(torch.eye(3), 50_000, 0.0, torch.Generator().manual_seed(0))  # y = λ
    >>> y.shape, round(y.var().item(), 1)
    (torch.Size([50000, 3]), 1.0)
    """
    return sample_prompts(f, n, noise_var, gen, mean, var)[0]


def sample_prompts(f: Tensor, n: int, noise_var: float, gen: torch.Generator, mean: float = 0.0, var: float = 1.0,
                   targets: str = "shared", n_labelled: int = 0) -> tuple[Tensor, Tensor]:
    """Labels ``y`` and targets ``t`` of ``n`` prompts, both ``(n, K)`` (see ``sample_labels`` for ``y``).

    Given ``λ``, the noise terms ``λᵀ ε_k ~ N(0, τ ‖λ‖²)`` are independent over ``k``: drawn that way, ``K`` normals
    a prompt instead of ``K·m``, the same law. ``targets`` (§T.1): ``"shared"`` ``t = y`` (the same tensor);
    ``"noiseless"`` ``t_k = λᵀ f(v_k)``; ``"independent"`` ``t_k = λᵀ (f(v_k) + ε'_k)``, ``ε'_k`` a fresh draw on
    the ``n_labelled`` prompt tokens, the unshown label itself on the others. ``y`` is the same under every law.

    >>> y, t = sample_prompts(torch.eye(3), 4, 0.1, torch.Generator().manual_seed(0), targets="independent", n_labelled=2)
    >>> torch.equal(t[:, 2:], y[:, 2:]), bool((t[:, :2] != y[:, :2]).all())
    (True, True)
    """
    k, m = f.shape
    lam = mean + var**0.5 * torch.randn(n, m, generator=gen)  # (n, m)
    scale = noise_var**0.5 * lam.norm(dim=-1, keepdim=True)  # (n, 1): std of λᵀ ε_k
    clean = lam @ f.T  # (n, K) = λᵀ f(v_k)
    y = clean + scale * torch.randn(n, k, generator=gen)  # (n, K)
    if targets == "shared":
        return y, y
    if targets == "noiseless":
        return y, clean
    fresh = clean[:, :n_labelled] + scale * torch.randn(n, n_labelled, generator=gen)  # (n, N)
    return y, torch.cat([fresh, y[:, n_labelled:]], dim=-1)


class PromptStream(BatchStream):
    """Batch ``i`` of rank ``r`` comes from generator (seed, r, i): fresh prompts, or with ``pool`` (a fixed
    training set ``{"y", "target"}``, each ``(n_train, K)``) ``batch_size`` distinct prompts of it."""

    def __init__(self, v: Tensor, f: Tensor, batch_size: int, noise_var: float, seed: int, rank: int, start: int,
                 pool: dict[str, Tensor] | None, targets: str, n_labelled: int):
        super().__init__(start)
        self.v, self.f, self.pool, self.targets, self.n_labelled = v, f, pool, targets, n_labelled
        self.batch_size, self.noise_var, self.seed, self.rank = batch_size, noise_var, seed, rank

    def batch(self, i: int) -> dict[str, Tensor]:
        gen = generator(self.seed, TRAIN, self.rank, i)
        if self.pool is None:
            y, target = sample_prompts(self.f, self.batch_size, self.noise_var, gen, targets=self.targets,
                                       n_labelled=self.n_labelled)
        else:
            rows = torch.randperm(len(self.pool["y"]), generator=gen)[: self.batch_size]
            y, target = self.pool["y"][rows], self.pool["target"][rows]
        return {"v": self.v, "f": self.f, "y": y, "target": target}


class TemplateRegressionDataModule(StreamDataModule):
    """Prompts of template regression, with an in-distribution and an unseen-task validation set.

    Sizes ``n_tokens`` ``K`` (all predicted), ``n_labelled`` ``N`` (``1 ≤ N < K``, the others are the unseen
    examples), ``token_dim`` ``d``, ``n_basis`` ``m``; ``noise_var`` ``τ``; ``repr_std`` ``σ_f`` (``1/√m`` gives
    Fig. 3's ``E‖f(v_k)‖² = 1``). ``targets``: what predictions are scored against (§T.1; ``"shared"`` lets the
    loss-optimal model copy its prompt instead of doing ridge). ``n_train``: ``None`` for fresh prompts every batch,
    or the paper's fixed training set's size. Unseen tasks draw ``λ ~ N(ood_mean, ood_var·I)`` (paper: 1, 4).
    ``seed`` seeds the tables, the pool and the training stream, ``val_seed`` the validation and test sets.
    """

    def __init__(self, n_tokens: int = 200, n_labelled: int = 30, token_dim: int = 100, n_basis: int = 20,
                 noise_var: float = 0.01, repr_std: float = 1.0,
                 targets: Literal["independent", "noiseless", "shared"] = "independent", batch_size: int = 256,
                 n_train: int | None = None, n_val: int = 200, ood_mean: float = 1.0, ood_var: float = 4.0,
                 seed: int = 0, val_seed: int = 0, num_workers: int = 0):
        # an example: labels y and targets (K,) float32 (v and f are tables shared by the batch)
        super().__init__(batch_size, n_val, batch_size, seed, val_seed, num_workers, 8 * n_tokens)
        for name, value in dict(n_tokens=n_tokens, token_dim=token_dim, n_basis=n_basis).items():
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {name}={value}")
        if not 1 <= n_labelled < n_tokens:
            raise ValueError(f"n_labelled must lie in [1, n_tokens - 1] = [1, {n_tokens - 1}] (the other tokens are "
                             f"the unseen examples), got n_labelled={n_labelled}")
        for name, value in dict(noise_var=noise_var, ood_var=ood_var).items():
            if not 0 <= value < math.inf:
                raise ValueError(f"{name} (a variance) must be finite and >= 0, got {name}={value}")
        if not 0 < repr_std < math.inf:
            raise ValueError(f"repr_std (a standard deviation) must be finite and > 0, got repr_std={repr_std}")
        if targets not in TARGETS:
            raise ValueError(f"targets must be one of {list(TARGETS)}, got targets={targets!r}")
        if not math.isfinite(ood_mean):
            raise ValueError(f"ood_mean must be finite, got ood_mean={ood_mean}")
        if noise_var == 0 and n_labelled < n_basis:
            raise ValueError(f"noise_var=0 needs n_labelled >= n_basis = {n_basis} (else the ridge system Z Zᵀ is "
                             f"singular), got n_labelled={n_labelled}")
        if n_train is not None and n_train < batch_size:
            raise ValueError(f"n_train must be None (endless stream) or >= batch_size = {batch_size}, got n_train={n_train}")
        self.save_hyperparameters()
        self.train_size = n_train
        gen = generator(seed, TABLE)
        self.v = torch.randn(n_tokens, token_dim, generator=gen)  # (K, d)
        self.f = repr_std * torch.randn(n_tokens, n_basis, generator=gen)  # (K, m): one table direction per seed

    @property
    def task(self) -> dict:
        """Sizes and noise level the model is built for (linked into its ``task`` argument)."""
        return {name: self.hparams[name] for name in ("n_tokens", "n_labelled", "token_dim", "n_basis", "noise_var")}

    def train_dataloader(self) -> StreamLoader:
        hp = self.hparams
        pool = None
        if hp.n_train is not None:
            y, target = sample_prompts(self.f, hp.n_train, hp.noise_var, generator(hp.seed, POOL), targets=hp.targets,
                                       n_labelled=hp.n_labelled)
            pool = {"y": y, "target": target}
        rank = rank_and_world(self.trainer)[0]
        return self.stream_loader(PromptStream(self.v, self.f, hp.batch_size, hp.noise_var, hp.seed, rank,
                                               self.batches_consumed, pool, hp.targets, hp.n_labelled))

    def eval_sets(self, stage: str = "val") -> list[dict[str, Tensor]]:  # [in-distribution, unseen tasks]
        hp, stream = self.hparams, VAL if stage == "val" else TEST
        sets = [sample_prompts(self.f, hp.n_val, hp.noise_var, generator(hp.val_seed, stream, i), mean, var, hp.targets,
                               hp.n_labelled) for i, (mean, var) in enumerate([(0.0, 1.0), (hp.ood_mean, hp.ood_var)])]
        return [{"y": y, "target": target} for y, target in sets]  # (n_val, K) each

    def eval_tables(self) -> dict[str, Tensor]:
        return {"v": self.v, "f": self.f}

    def state_dict(self) -> dict:
        # v and f travel with the checkpoint, so a resumed or tested model sees the same representations
        return {**super().state_dict(), "v": self.v, "f": self.f}

    def load_state_dict(self, state_dict: dict) -> None:
        v, f = state_dict["v"], state_dict["f"]
        if (v.shape, f.shape) != (self.v.shape, self.f.shape):
            raise ValueError(
                f"the checkpoint's tables have shapes v={tuple(v.shape)}, f={tuple(f.shape)}, but this data module "
                f"(n_tokens, token_dim, n_basis) expects v={tuple(self.v.shape)}, f={tuple(self.f.shape)}: "
                "resume with the sizes the checkpoint was trained with")
        self.v, self.f = v, f
        super().load_state_dict(state_dict)
