"""Reproducible streams of whole batches, shared by the data modules.

Every random draw of a data module comes from a generator seeded by an integer key such as
``(seed, stream id, rank, batch index)``. A batch is then a pure function of its key: the stream
is the same for any number of DataLoader workers, ranks draw different batches, and a resumed run
continues where it stopped from the number of batches it consumed alone.
"""

from __future__ import annotations

import itertools
import os

import numpy as np
import torch
from lightning.pytorch import LightningDataModule
from torch import Tensor
from torch.utils.data import DataLoader, IterableDataset, get_worker_info


def generator(*key: int, device: str | torch.device = "cpu") -> torch.Generator:
    """A generator on ``device`` seeded from an integer key (64 bits of a ``numpy.random.SeedSequence``).

    The entropy is the key's length, then each entry (``0 <= k < 2^64``) as two 32-bit words: the plain
    key would give ``(7, 1)`` the stream of ``(7, 1, 0, 0)`` (``SeedSequence`` pads with zeros).

    >>> x = torch.rand(2, generator=generator(0, 1, 5))
    >>> torch.equal(x, torch.rand(2, generator=generator(0, 1, 5))), torch.equal(x, torch.rand(2, generator=generator(0, 1, 6)))
    (True, False)
    >>> torch.equal(x, torch.rand(2, generator=generator(0, 1, 5, 0)))
    False
    """
    if not all(0 <= int(k) < 1 << 64 for k in key):
        raise ValueError(f"stream keys must be integers in [0, 2^64), got {key}")
    words = [int(k) >> shift & 0xFFFFFFFF for k in key for shift in (0, 32)]
    state = np.random.SeedSequence([len(key), *words]).generate_state(2, np.uint32)
    return torch.Generator(device).manual_seed(int(state[0]) << 32 | int(state[1]))


def rank_and_world(trainer) -> tuple[int, int]:
    """This process's rank and the number of processes; ``(0, 1)`` without a trainer."""
    return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)


class BatchStream(IterableDataset):
    """Endless stream of whole batches ``batch(start), batch(start + 1), …``; subclasses define ``batch``.

    Worker ``w`` of ``W`` yields batches ``start + w, start + w + W, …``, which the DataLoader takes
    round-robin: the same stream for any number of workers.

    >>> class Squares(BatchStream):
    ...     def batch(self, i):
    ...         return {"x": torch.tensor([i * i])}
    >>> [b["x"].item() for b in itertools.islice(Squares(start=2), 3)]
    [4, 9, 16]
    """

    def __init__(self, start: int = 0):
        self.start = start

    def batch(self, i: int) -> dict[str, Tensor]:
        raise NotImplementedError

    def __iter__(self):
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        return map(self.batch, itertools.count(self.start + worker, workers))


class FixedBatches(IterableDataset):
    """A fixed set (validation, test) in batches of views; under DDP, this rank's contiguous share.

    An iterable, so Lightning adds no ``DistributedSampler`` padding a rank's share with repeats: each example
    is scored once. Views of whole batches: re-stacking single examples would be most of a validation's time.
    ``shared`` entries (tables common to all examples) go into every batch whole.

    >>> data = {"x": torch.arange(5)}
    >>> [b["x"].tolist() for b in FixedBatches(data, 2)]
    [[0, 1], [2, 3], [4]]
    >>> [b["x"].tolist() for b in FixedBatches(data, 2, rank=1, world_size=2)]
    [[3, 4]]
    """

    def __init__(self, data: dict[str, Tensor], batch_size: int, rank: int = 0, world_size: int = 1,
                 shared: dict[str, Tensor] | None = None):
        n = len(next(iter(data.values())))
        share = torch.arange(n).tensor_split(world_size)[rank]  # the split Tensor.tensor_split makes
        self.begin, self.end = (int(share[0]), int(share[-1]) + 1) if len(share) else (0, 0)
        self.data, self.batch_size, self.shared = data, batch_size, shared or {}

    def __len__(self) -> int:
        return -(-(self.end - self.begin) // self.batch_size)

    def __iter__(self):
        for lo in range(self.begin, self.end, self.batch_size):
            hi = min(lo + self.batch_size, self.end)
            yield {**self.shared, **{k: v[lo:hi] for k, v in self.data.items()}}


class StreamLoader(DataLoader):
    """The training DataLoader over a ``BatchStream``; without workers (or ``pin_memory``) it iterates the
    stream itself, which the DataLoader's iterator would only wrap and re-convert (docs/performance.md §3)."""

    def __iter__(self):
        if self.num_workers == 0 and not self.pin_memory:
            return iter(self.dataset)
        return super().__iter__()


class StreamDataModule(LightningDataModule):
    """A training stream that a resumed run continues, and fixed validation and test sets.

    ``batches_consumed`` (optimizer steps × gradient accumulation) travels in the checkpoint; a subclass passes
    it as the ``start`` of its ``BatchStream``, given to ``stream_loader``, and draws its fixed sets in
    ``eval_sets``. ``example_bytes``, one training example's size, refuses a batch beyond the memory at once.
    """

    def __init__(self, batch_size: int, n_val: int, val_batch_size: int, seed: int, val_seed: int, num_workers: int,
                 example_bytes: int):
        super().__init__()
        for name, value in dict(batch_size=batch_size, n_val=n_val, val_batch_size=val_batch_size).items():
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {name}={value}")
        for name, value in dict(seed=seed, val_seed=val_seed).items():
            if value < 0:  # seeds key numpy's SeedSequence, which takes non-negative integers only
                raise ValueError(f"{name} must be an integer >= 0, got {name}={value}")
        if num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got num_workers={num_workers}")
        # a batch is drawn on the CPU before any step; past the memory Linux kills the process, with no error
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        if example_bytes * batch_size > memory / 2:
            raise ValueError(
                f"data.batch_size={batch_size}: one training batch takes {example_bytes * batch_size / 2**30:.1f} GiB "
                f"({example_bytes} bytes an example), more than half of this machine's {memory / 2**30:.1f} GiB of "
                "memory; lower data.batch_size")
        self.batch_size, self.n_val, self.val_batch_size = batch_size, n_val, val_batch_size
        self.seed, self.val_seed = seed, val_seed
        self.num_workers, self.example_bytes = num_workers, example_bytes
        self.batches_consumed = 0
        self.train_size: int | None = None  # a finite training set's examples; None: an endless stream

    @property
    def steps_per_epoch(self) -> float | None:
        """Optimizer steps to draw ``train_size`` examples over all processes; ``None`` (no epochs) for a stream."""
        if self.train_size is None:
            return None
        world, accumulate = (self.trainer.world_size, self.trainer.accumulate_grad_batches) if self.trainer else (1, 1)
        return self.train_size / (self.batch_size * world * accumulate)

    @classmethod
    def stacked_after_batch_transfer(cls, datas: list[StreamDataModule], batches: list, dataloader_idx: int) -> list:
        """``on_after_batch_transfer`` of K data modules of this class (an ensemble's members); a family may batch it."""
        return [data.on_after_batch_transfer(batch, dataloader_idx) for data, batch in zip(datas, batches)]

    def eval_sets(self, stage: str = "val") -> list[dict[str, Tensor]]:
        """The fixed sets of ``stage`` (``"val"``, ``"test"``), one a dataloader, each ``n_val`` examples."""
        raise NotImplementedError

    def eval_tables(self) -> dict[str, Tensor]:
        """Tables common to all examples, which every validation and test batch carries whole."""
        return {}

    def setup(self, stage: str) -> None:
        world = rank_and_world(self.trainer)[1]
        if self.n_val < world:  # every process validates a share of each fixed set
            raise ValueError(f"n_val must be >= the number of processes = {world} (each validates a share), "
                             f"got n_val={self.n_val}")

    def val_dataloader(self, stage: str = "val") -> list[DataLoader]:
        rank, world = rank_and_world(self.trainer)
        return [DataLoader(FixedBatches(s, self.val_batch_size, rank, world, self.eval_tables()), batch_size=None)
                for s in self.eval_sets(stage)]

    def test_dataloader(self) -> list[DataLoader]:
        return self.val_dataloader("test")

    def stream_loader(self, stream: BatchStream) -> StreamLoader:
        return StreamLoader(stream, batch_size=None, num_workers=self.num_workers,
                            persistent_workers=self.num_workers > 0)

    def state_dict(self) -> dict:
        trainer = self.trainer
        consumed = trainer.global_step * trainer.accumulate_grad_batches if trainer is not None else self.batches_consumed
        return {"batches_consumed": consumed}

    def load_state_dict(self, state_dict: dict) -> None:
        self.batches_consumed = int(state_dict["batches_consumed"])
