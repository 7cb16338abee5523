"""Recall prompts (docs/science.md §R.2): a batched sampler and the ``RecallDataModule`` that streams them.

A batch is a dict of tensors::

    tokens  (B, T) int16   the context z_0 … z_{T-1}; z_{T-1} is the trigger q (int64 when drawn on the device)
    target  (B,)   int64   y, or τ with probability α on the noisy task
    output  (B,)   int64   the output y of the (q, y) bigram (the target when no noise is drawn)
"""

from __future__ import annotations

from dataclasses import asdict
from functools import cached_property, lru_cache

import numpy as np
import torch
from torch import Tensor

from icrl.recall.task import RecallTask
from icrl.streams import BatchStream, StreamDataModule, StreamLoader, generator, rank_and_world

TRAIN, VAL, OOD, FIXED, SHUFFLE, TEST, TEST_OOD, DEVICE = range(8)  # stream ids: no two share a generator seed


def uniform_ints(low: int, high: int, n: int, bits: np.random.BitGenerator) -> np.ndarray:
    """``n`` int16 drawn independently and exactly uniformly from ``{low, …, high-1}``, ``0 ≤ low < high ≤ 2^15``.

    The filler is most of a batch's random numbers (docs/performance.md §1), so each integer takes 16
    random bits ``c`` of ``bits``, mapped by Lemire's multiply-shift ``⌊c·k / 2^16⌋``, ``k = high - low``:
    exactly uniform once the rare draws with ``(c·k mod 2^16) < 2^16 mod k`` are drawn again.

    >>> x = uniform_ints(5, 59, 100_000, np.random.SFC64(0))
    >>> x.dtype, int(x.min()), int(x.max()), len(np.unique(x))
    (dtype('int16'), 5, 58, 54)
    """
    if not 0 <= low < high <= 1 << 15:
        raise ValueError(f"uniform_ints needs 0 <= low < high <= 2^15, got low={low}, high={high}")
    k, reject = high - low, (1 << 16) % (high - low)  # the biased draws: low 16 bits < 2^16 mod k

    def draw(m: int) -> np.ndarray:  # (m,) uint32 low·2^16 + c·k, c 16 random bits: x >> 16 = low + ⌊c·k / 2^16⌋
        x = np.multiply(bits.random_raw(-(-m // 4)).view(np.uint16)[:m], k, dtype=np.uint32)
        x += low << 16
        return x

    x = draw(n)
    out = np.right_shift(x, 16, out=np.empty(n, np.int16), casting="unsafe")
    redo = np.flatnonzero(x.astype(np.uint16) < reject)
    while len(redo):
        x = draw(len(redo))
        out[redo] = x >> 16
        redo = redo[x.astype(np.uint16) < reject]
    return out


def sample_recall(task: RecallTask, batch_size: int, gen: torch.Generator, ood: bool = False) -> dict[str, Tensor]:
    """Draw ``batch_size`` i.i.d. prompts, vectorised; ``ood=True`` draws outputs from the unseen set.

    ``gen`` seeds the NumPy ``SFC64`` generator that draws the batch (cheaper than torch's per-op cost).

    >>> task = RecallTask(vocab_size=12, n_triggers=2, n_outputs=3, context_length=8, alpha=0.5)
    >>> b = sample_recall(task, 4, torch.Generator().manual_seed(0))
    >>> b["tokens"].shape, b["tokens"].dtype, bool((b["tokens"][:, -1] == 0).all())
    (torch.Size([4, 8]), torch.int16, True)
    """
    B, T, N = batch_size, task.context_length, task.vocab_size
    rng = np.random.Generator(np.random.SFC64(int(torch.randint(2**62, (), generator=gen))))
    z = uniform_ints(task.n_triggers, N - 1, B * T, rng.bit_generator).reshape(B, T)  # filler, no trigger, no τ
    y = rng.integers(*(task.ood_outputs if ood else task.outputs), B)
    q = np.zeros(B, np.int64) if task.noisy else rng.integers(0, task.n_triggers, B)
    p = rng.integers(0, T - 2, B)  # bigram (q, y) at (p, p+1), p <= T-3
    rows = np.arange(B)
    z[rows, p], z[rows, p + 1] = q, y
    target = y.copy()
    if task.noisy:
        # p' uniform over {0..T-3} minus {p-1, p, p+1}: index u into [0, p-2] ∪ [p+2, T-3]
        n_left, n_right = np.maximum(p - 1, 0), np.maximum(T - 4 - p, 0)
        u = rng.integers(0, n_left + n_right)
        p2 = np.where(u < n_left, u, p + 2 + (u - n_left))
        z[rows, p2], z[rows, p2 + 1] = q, task.noise_token
        target = np.where(rng.random(B) < task.alpha, task.noise_token, y)
    z[:, -1] = q
    return {"tokens": torch.from_numpy(z), "target": torch.from_numpy(target), "output": torch.from_numpy(y)}


def sample_recall_torch(task: RecallTask, batch_size: int, gen: torch.Generator, ood: bool = False) -> dict[str, Tensor]:
    """``sample_recall``'s prompts drawn by torch on ``gen``'s device, so a GPU's batches are born there (int64
    tokens: no copy to save). The same law, not the same numbers: a stream of its own (``sample_recall_stacked``).

    >>> task = RecallTask(vocab_size=12, n_triggers=2, n_outputs=3, context_length=8, alpha=0.5)
    >>> b = sample_recall_torch(task, 4, torch.Generator().manual_seed(0))
    >>> b["tokens"].shape, b["tokens"].dtype, bool((b["tokens"][:, -1] == 0).all())
    (torch.Size([4, 8]), torch.int64, True)
    """
    return sample_recall_stacked([task], batch_size, [gen], ood)[0]


def sample_recall_stacked(tasks: list[RecallTask], batch_size: int, gens: list[torch.Generator], ood: bool = False
                          ) -> list[dict[str, Tensor]]:
    """The batches of K members (an ensemble's; their tasks differ at most in ``alpha``), member k's drawn from
    ``gens[k]`` alone: exactly ``sample_recall_torch(tasks[k], batch_size, gens[k])``.

    Each generator draws twice, the filler and then 31 random bits ``r`` for each of a prompt's 5 other numbers,
    and every other operation runs over all members at once: about 2K + 20 operations (kernels, on a GPU) a step
    instead of 20·K. Such a number of ``{low, …, high-1}`` is ``low + ⌊r·k / 2^31⌋``, ``k = high - low``: uniform up
    to a relative bias below ``k / 2^31``.
    """
    first, K, B, device = tasks[0], len(gens), batch_size, gens[0].device
    T, n_triggers, tau = first.context_length, first.n_triggers, first.noise_token
    z = torch.empty(K, B, T, dtype=torch.long, device=device)
    bits = torch.empty(K, 5, B, dtype=torch.long, device=device)
    for m, gen in enumerate(gens):
        torch.randint(n_triggers, first.vocab_size - 1, (B, T), generator=gen, out=z[m])  # filler, no trigger, no τ
        torch.randint(0, 1 << 31, (5, B), generator=gen, out=bits[m])

    def uniform(r: Tensor, low: int, high) -> Tensor:  # on {low, …, high-1}; high may be a tensor
        return low + (r * (high - low) >> 31)

    y, q, p, u, t = bits.unbind(1)  # (K, B) each
    noisy, noise = _noise_levels(tuple(task.alpha for task in tasks), device)  # (K, 1): α > 0, and t < noise w.p. α
    y = uniform(y, *(first.ood_outputs if ood else first.outputs))
    q = torch.where(noisy, 0, uniform(q, 0, n_triggers))  # the trigger: 0 on the noisy task
    p = uniform(p, 0, T - 2)  # bigram (q, y) at (p, p+1), p <= T-3
    k, b = torch.arange(K, device=device)[:, None], torch.arange(B, device=device)
    z[k, b, p], z[k, b, p + 1] = q, y
    # noisy: (q, τ) at (p2, p2+1), u indexing [0, p-2] ∪ [p+2, T-3] as in sample_recall; noiseless members keep z
    n_left, n_right = (p - 1).clamp_min(0), (T - 4 - p).clamp_min(0)
    u = uniform(u, 0, n_left + n_right)
    p2 = torch.where(u < n_left, u, p + 2 + (u - n_left)).clamp_max(T - 2)  # the clamp: noiseless members' only
    z[k, b, p2] = torch.where(noisy, q, z[k, b, p2])
    z[k, b, p2 + 1] = torch.where(noisy, tau, z[k, b, p2 + 1])
    target = torch.where(t < noise, tau, y)
    z[..., -1] = q
    return [{"tokens": z[m], "target": target[m], "output": y[m]} for m in range(K)]


@lru_cache(maxsize=64)
def _noise_levels(alphas: tuple[float, ...], device: torch.device) -> tuple[Tensor, Tensor]:
    """Per member: whether its task is noisy, and ``round(α·2^31)``; made once per ensemble, since a copy from the
    host to a GPU waits for the work queued before it."""
    return (torch.tensor([a > 0 for a in alphas], device=device)[:, None],
            torch.tensor([round(a * 2**31) for a in alphas], device=device)[:, None])


class RecallStream(BatchStream):
    """Batch ``i`` of rank ``r`` comes from generator (seed, r, i); with ``fixed``, it is drawn without
    replacement from that finite sample, reshuffled each epoch of ``len(fixed) // batch_size`` batches; with
    ``on_device``, it is only its index, drawn on the training device (``RecallDataModule.on_after_batch_transfer``)."""

    def __init__(self, task: RecallTask, batch_size: int, seed: int, rank: int = 0, world_size: int = 1,
                 start: int = 0, fixed: dict[str, Tensor] | None = None, on_device: bool = False):
        super().__init__(start)
        self.task, self.batch_size, self.seed = task, batch_size, seed
        self.rank, self.world_size, self.fixed, self.on_device = rank, world_size, fixed, on_device

    def batch(self, i: int) -> dict[str, Tensor]:
        if self.on_device:
            return {"index": i}
        if self.fixed is None:
            return sample_recall(self.task, self.batch_size, generator(self.seed, TRAIN, self.rank, i))
        n_batches = len(self.fixed["target"]) // self.batch_size
        epoch, pos = divmod(i * self.world_size + self.rank, n_batches)  # of the global batch index over ranks
        perm = torch.randperm(len(self.fixed["target"]), generator=generator(self.seed, SHUFFLE, epoch))
        idx = perm[pos * self.batch_size:(pos + 1) * self.batch_size]
        return {k: v[idx] for k, v in self.fixed.items()}


class RecallDataModule(StreamDataModule):
    """Streams recall prompts of ``RecallTask(vocab_size, …, alpha)``; validates in distribution and OOD.

    ``n_samples``: ``None`` for population training (a fresh batch every step), or the size of one
    fixed sample drawn from ``seed`` to cycle over (finite-sample training, §R.2). ``batch_size`` is per
    device; ``num_workers`` 0 is usually fastest (sampling is cheap). Validation (and test) sets:
    ``[in-distribution, OOD]`` of ``n_val`` prompts each, from ``val_seed``. ``device_sampling``: draw the training
    prompts on the training device (``sample_recall_torch``, stream (seed, rank, batch) of its own); ``None``: when it
    is a GPU and training is on the population. Validation sets are drawn on the CPU, the same on every device.
    """

    def __init__(self, vocab_size: int = 60, n_triggers: int = 5, n_outputs: int = 4, context_length: int = 256,
                 alpha: float = 0.0, batch_size: int = 512, n_samples: int | None = None, seed: int = 0,
                 n_val: int = 2048, val_seed: int = 12345, val_batch_size: int = 1024, num_workers: int = 0,
                 device_sampling: bool | None = None):
        # an example: tokens (T,) int16, target and output int64
        super().__init__(batch_size, n_val, val_batch_size, seed, val_seed, num_workers, 2 * context_length + 16)
        if n_samples is not None and n_samples < batch_size:
            raise ValueError(f"n_samples must be None (population) or >= batch_size={batch_size}, got n_samples={n_samples}")
        if n_samples is not None and device_sampling:
            raise ValueError(f"device_sampling draws fresh prompts: it needs n_samples=None, got n_samples={n_samples}")
        self.device_sampling = device_sampling
        self.recall_task = RecallTask(vocab_size, n_triggers, n_outputs, context_length, alpha)
        self.n_samples = self.train_size = n_samples

    @cached_property
    def fixed_sample(self) -> dict[str, Tensor] | None:
        """The finite training sample (``n_samples`` prompts), drawn once from ``seed``."""
        n = self.n_samples
        return None if n is None else sample_recall(self.recall_task, n, generator(self.seed, FIXED))

    @property
    def task(self) -> dict:
        """The task as a plain dict, linked into the model's ``task`` argument by the CLI."""
        task = self.recall_task
        alpha_hat = task.alpha
        if self.fixed_sample is not None and task.noisy:
            alpha_hat = (self.fixed_sample["target"] == task.noise_token).double().mean().item()
            if not 0 < alpha_hat < 1:  # γ = log(α̂/(1-α̂)) must be finite
                raise ValueError(
                    f"the finite sample (n_samples={self.n_samples}, seed={self.seed}) has "
                    f"{'no' if alpha_hat == 0 else 'only'} noise targets at alpha={task.alpha}, so its empirical "
                    f"α̂ = {alpha_hat} gives an infinite γ: use a larger n_samples or an alpha further from 0")
        return {**asdict(task), "alpha_hat": alpha_hat}

    @property
    def on_device(self) -> bool:
        """Whether training prompts are drawn on the training device (``device_sampling``)."""
        if self.device_sampling is not None or self.n_samples is not None:
            return bool(self.device_sampling)
        return self.trainer is not None and self.trainer.strategy.root_device.type == "cuda"

    def train_dataloader(self) -> StreamLoader:
        return self.stream_loader(RecallStream(self.recall_task, self.batch_size, self.seed, *rank_and_world(self.trainer),
                                               self.batches_consumed, self.fixed_sample, self.on_device))

    def on_after_batch_transfer(self, batch: dict, dataloader_idx: int) -> dict[str, Tensor]:
        return type(self).stacked_after_batch_transfer([self], [batch], dataloader_idx)[0] if "index" in batch else batch

    @classmethod
    def stacked_after_batch_transfer(cls, datas: list[RecallDataModule], batches: list[dict], dataloader_idx: int
                                     ) -> list[dict[str, Tensor]]:
        """An ensemble's training batches drawn on the device all at once (``sample_recall_stacked``)."""
        if not all("index" in batch for batch in batches):
            return super().stacked_after_batch_transfer(datas, batches, dataloader_idx)
        trainer = datas[0].trainer
        device, rank = trainer.strategy.root_device if trainer is not None else "cpu", rank_and_world(trainer)[0]
        gens = [generator(d.seed, DEVICE, rank, batch["index"], device=device) for d, batch in zip(datas, batches)]
        return sample_recall_stacked([d.recall_task for d in datas], datas[0].batch_size, gens)

    def eval_sets(self, stage: str = "val") -> list[dict[str, Tensor]]:
        streams = (VAL, OOD) if stage == "val" else (TEST, TEST_OOD)
        return [sample_recall(self.recall_task, self.n_val, generator(self.val_seed, stream), ood=ood)
                for stream, ood in zip(streams, (False, True))]
