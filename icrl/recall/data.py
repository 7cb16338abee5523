"""Recall prompts (SPEC R.2): a batched sampler and the ``RecallDataModule`` that streams them.

A batch is a dict of tensors::

    tokens  (B, T) int64   the context z_0 … z_{T-1}; z_{T-1} is the trigger q
    target  (B,)   int64   y, or τ with probability α on the noisy task
    output  (B,)   int64   the output y of the (q, y) bigram (the target when no noise is drawn)
"""

from __future__ import annotations

import numpy as np
import torch
from lightning.pytorch import LightningDataModule
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, IterableDataset, get_worker_info

from icrl.recall.task import RecallTask

TRAIN, VAL, OOD, FIXED, SHUFFLE = range(5)  # stream ids: no two streams share a generator seed


def generator(*key: int) -> torch.Generator:
    """A CPU generator seeded from an integer key, e.g. (seed, stream, rank, batch index)."""
    state = np.random.SeedSequence([int(k) for k in key]).generate_state(2, np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


def sample_recall(task: RecallTask, batch_size: int, gen: torch.Generator, ood: bool = False) -> dict[str, Tensor]:
    """Draw ``batch_size`` i.i.d. prompts; ``ood=True`` draws outputs from the unseen set.

    Vectorised over the batch: a handful of tensor ops, no Python loop over samples.

    >>> task = RecallTask(vocab_size=12, n_triggers=2, n_outputs=3, context_length=8, alpha=0.5)
    >>> b = sample_recall(task, 4, torch.Generator().manual_seed(0))
    >>> b["tokens"].shape, bool((b["tokens"][:, -1] == 0).all())
    (torch.Size([4, 8]), True)
    """
    B, T, N = batch_size, task.context_length, task.vocab_size
    rows = torch.arange(B)
    z = torch.randint(task.n_triggers, N - 1, (B, T), generator=gen)  # filler, no trigger and no τ
    lo, hi = task.ood_outputs if ood else task.outputs
    y = torch.randint(lo, hi, (B,), generator=gen)
    if task.noisy:
        q = torch.zeros(B, dtype=torch.long)
    else:
        q = torch.randint(0, task.n_triggers, (B,), generator=gen)
    p = torch.randint(0, T - 2, (B,), generator=gen)  # bigram (q, y) at (p, p+1), p <= T-3
    z[rows, p], z[rows, p + 1] = q, y
    target = y.clone()
    if task.noisy:
        # p' uniform over {0..T-3} minus {p-1, p, p+1}: index u into [0, p-2] ∪ [p+2, T-3]
        n_left = (p - 1).clamp_min(0)
        n_right = (T - 4 - p).clamp_min(0)
        u = (torch.rand(B, generator=gen) * (n_left + n_right)).long()
        p2 = torch.where(u < n_left, u, p + 2 + (u - n_left))
        z[rows, p2], z[rows, p2 + 1] = q, task.noise_token
        is_noise = torch.rand(B, generator=gen) < task.alpha
        target = torch.where(is_noise, task.noise_token, y)
    z[:, -1] = q
    return {"tokens": z, "target": target, "output": y}


class RecallStream(IterableDataset):
    """Infinite stream of whole batches; batch ``i`` of rank ``r`` comes from generator (seed, r, i).

    Worker ``w`` of ``W`` yields batches ``start + w, start + w + W, …``; the DataLoader takes them
    round-robin, so the stream is the same for any number of workers, and a resumed run continues
    at ``start`` (the number of batches already consumed).

    With ``fixed`` set, batches are drawn without replacement from that finite sample instead,
    reshuffled each epoch (one epoch = ``len(fixed) // batch_size`` batches, over all ranks).
    """

    def __init__(self, task: RecallTask, batch_size: int, seed: int, rank: int = 0, world_size: int = 1,
                 start: int = 0, fixed: dict[str, Tensor] | None = None):
        self.task, self.batch_size, self.seed = task, batch_size, seed
        self.rank, self.world_size, self.start, self.fixed = rank, world_size, start, fixed

    def batch(self, i: int) -> dict[str, Tensor]:
        if self.fixed is None:
            return sample_recall(self.task, self.batch_size, generator(self.seed, TRAIN, self.rank, i))
        n_batches = len(self.fixed["target"]) // self.batch_size
        j = i * self.world_size + self.rank  # global batch index over ranks
        epoch, pos = divmod(j, n_batches)
        perm = torch.randperm(len(self.fixed["target"]), generator=generator(self.seed, SHUFFLE, epoch))
        idx = perm[pos * self.batch_size:(pos + 1) * self.batch_size]
        return {k: v[idx] for k, v in self.fixed.items()}

    def __iter__(self):
        info = get_worker_info()
        worker, n_workers = (info.id, info.num_workers) if info else (0, 1)
        i = self.start + worker
        while True:
            yield self.batch(i)
            i += n_workers


class BatchDict(Dataset):
    """A finite map-style dataset over a dict of equally long tensors (validation sets)."""

    def __init__(self, data: dict[str, Tensor]):
        self.data = data

    def __len__(self) -> int:
        return len(next(iter(self.data.values())))

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        return {k: v[i] for k, v in self.data.items()}


class RecallDataModule(LightningDataModule):
    """Streams recall prompts; validates in distribution and on unseen outputs (OOD).

    Args:
        vocab_size, n_triggers, n_outputs, context_length, alpha: the task (see ``RecallTask``);
            ``alpha == 0`` is the noiseless task, ``alpha > 0`` the noisy one.
        batch_size: training batch size per device.
        n_samples: ``None`` for population training (a fresh batch every step), or the size of
            one fixed training sample to cycle over (finite-sample training, SPEC R.2).
        seed: seed of the training stream (and of the finite sample).
        n_val: size of each validation set (in distribution, OOD); ``val_seed`` fixes them.
        val_batch_size: batch size for validation.
        num_workers: DataLoader workers; sampling is cheap, so 0 is usually fastest.

    Validation dataloaders: ``[in-distribution, OOD]``.
    """

    def __init__(self, vocab_size: int = 60, n_triggers: int = 5, n_outputs: int = 4, context_length: int = 256,
                 alpha: float = 0.0, batch_size: int = 512, n_samples: int | None = None, seed: int = 0,
                 n_val: int = 2048, val_seed: int = 12345, val_batch_size: int = 1024, num_workers: int = 0):
        super().__init__()
        for name, value in dict(batch_size=batch_size, n_val=n_val, val_batch_size=val_batch_size).items():
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {name}={value}")
        if n_samples is not None and n_samples < batch_size:
            raise ValueError(f"n_samples must be None (population) or >= batch_size={batch_size}, got n_samples={n_samples}")
        if num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got num_workers={num_workers}")
        self.spec = RecallTask(vocab_size, n_triggers, n_outputs, context_length, alpha)
        self.batch_size, self.n_samples, self.seed = batch_size, n_samples, seed
        self.n_val, self.val_seed, self.val_batch_size, self.num_workers = n_val, val_seed, val_batch_size, num_workers
        self.batches_consumed = 0
        self._fixed = None
        self._val = None

    @property
    def fixed_sample(self) -> dict[str, Tensor] | None:
        """The finite training sample (``n_samples`` prompts), drawn once from ``seed``."""
        if self.n_samples is not None and self._fixed is None:
            self._fixed = sample_recall(self.spec, self.n_samples, generator(self.seed, FIXED))
        return self._fixed

    @property
    def task(self) -> dict:
        """The task as a plain dict, linked into the model's ``task`` argument by the CLI."""
        alpha_hat = self.spec.alpha
        if self.fixed_sample is not None and self.spec.noisy:
            alpha_hat = (self.fixed_sample["target"] == self.spec.noise_token).double().mean().item()
            alpha_hat = min(max(alpha_hat, 1e-6), 1 - 1e-6)  # γ = log(α̂/(1-α̂)) must stay finite
        return {**self.spec.as_dict(), "alpha_hat": alpha_hat}

    def train_dataloader(self) -> DataLoader:
        trainer = self.trainer
        rank, world = (trainer.global_rank, trainer.world_size) if trainer else (0, 1)
        stream = RecallStream(self.spec, self.batch_size, self.seed, rank, world, self.batches_consumed, self.fixed_sample)
        return DataLoader(stream, batch_size=None, num_workers=self.num_workers,
                          persistent_workers=self.num_workers > 0)

    def val_sets(self) -> list[dict[str, Tensor]]:
        if self._val is None:
            self._val = [sample_recall(self.spec, self.n_val, generator(self.val_seed, stream), ood=stream == OOD)
                         for stream in (VAL, OOD)]
        return self._val

    def val_dataloader(self) -> list[DataLoader]:
        return [DataLoader(BatchDict(s), batch_size=self.val_batch_size) for s in self.val_sets()]

    def test_dataloader(self) -> list[DataLoader]:
        return self.val_dataloader()

    def state_dict(self) -> dict:
        trainer = self.trainer
        consumed = trainer.global_step * trainer.accumulate_grad_batches if trainer else self.batches_consumed
        return {"batches_consumed": consumed}

    def load_state_dict(self, state_dict: dict) -> None:
        self.batches_consumed = int(state_dict["batches_consumed"])
