"""Batches sliced straight out of in-memory tensors, sharded across DDP ranks.

A ``torch.utils.data.DataLoader`` would collate one image at a time; here a batch is one
index operation on a tensor that already lives on the training device.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterator

import numpy as np
import torch
from torch import Tensor


def stream_seed(seed: int, stream: str, *keys: int) -> int:
    """A 64-bit seed for one random stream of a run (``stream`` such as "data_order", with e.g. the epoch as key).

    Derived through numpy's ``SeedSequence`` from (seed, stream, keys), so streams of one run, and the
    same stream of two seeds, are statistically independent: seeding with ``seed + epoch`` would give
    seed 1 the data orders of seed 0 shifted by one epoch.
    """
    spawn_key = (zlib.crc32(stream.encode()), *keys)
    return int(np.random.SeedSequence(seed, spawn_key=spawn_key).generate_state(1, np.uint64)[0])


class ShardedEpochSampler:
    """The index order of one epoch on one rank, reproducible from (seed, epoch) through ``stream_seed``.

    All ranks draw the same permutation and take every ``world_size``-th index from their
    rank on, so their shards are disjoint and together cover the epoch. For training,
    ``pad=True`` repeats a few indices so every rank gets the same number of batches (as
    ``DistributedSampler`` does); for evaluation ``pad=False`` keeps every image exactly once.
    Lightning calls ``set_epoch`` at each epoch start, also after a resume.
    """

    def __init__(
        self, num_samples: int, shuffle: bool, seed: int = 0, rank: int = 0, world_size: int = 1, pad: bool = True
    ) -> None:
        self.num_samples, self.shuffle, self.seed = num_samples, shuffle, seed
        self.rank, self.world_size, self.pad = rank, world_size, pad
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        if self.pad:
            return math.ceil(self.num_samples / self.world_size)
        return len(range(self.rank, self.num_samples, self.world_size))

    def indices(self) -> Tensor:
        if self.shuffle:
            generator = torch.Generator().manual_seed(stream_seed(self.seed, "data_order", self.epoch))
            order = torch.randperm(self.num_samples, generator=generator)
        else:
            order = torch.arange(self.num_samples)
        if self.pad and self.num_samples % self.world_size:
            extra = self.world_size - self.num_samples % self.world_size
            order = torch.cat([order, order[:extra]])
        return order[self.rank :: self.world_size]


class InMemoryLoader:
    """Iterates (images, labels, index) batches of ``batch_size`` from tensors in the order of ``sampler``.

    ``index`` says which image of the source's split each one is, so per-image results (e.g. test
    predictions) can be paired across runs whatever the order or sharding.

    Like a DataLoader it exposes ``sampler`` (Lightning calls its ``set_epoch``) and
    ``batch_sampler`` (None: batching is done here), the attributes Lightning inspects. Its
    ``position`` (the epoch and how many batches it has handed out) is saved in checkpoints (by the
    data module), so a run resumed from a mid-epoch checkpoint (saved on a signal) continues the
    epoch's order where it stopped (``continue_from``): no batch twice, none skipped. Batches are
    fetched one at a time (Lightning does not prefetch from a loader with a length), so the count
    is the number of batches trained.
    """

    batch_sampler = None

    def __init__(
        self,
        images: Tensor,
        labels: Tensor,
        batch_size: int,
        sampler: ShardedEpochSampler,
        drop_last: bool,
        index: Tensor | None = None,
    ) -> None:
        self.images, self.labels = images, labels
        self.index = index if index is not None else torch.arange(len(labels), device=labels.device)
        self.batch_size, self.sampler, self.drop_last = batch_size, sampler, drop_last
        self._handed_out = 0
        self._resume_at: tuple[int, int] | None = None  # (epoch, batches already trained), from a checkpoint

    def __len__(self) -> int:
        n = len(self.sampler)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def position(self) -> dict[str, int]:
        return {"epoch": self.sampler.epoch, "batches": self._handed_out}

    def continue_from(self, position: dict[str, int]) -> None:
        self._resume_at = (int(position["epoch"]), int(position["batches"]))

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
        # Runs at the first batch, after Lightning's set_epoch: the resumed epoch skips what it already trained.
        skip = 0
        if self._resume_at is not None:
            epoch, done = self._resume_at
            skip = done if epoch == self.sampler.epoch else 0
            self._resume_at = None
        self._handed_out = skip
        indices = self.sampler.indices().to(self.images.device)
        for start in range(skip * self.batch_size, len(self) * self.batch_size, self.batch_size):
            batch = indices[start : start + self.batch_size]
            self._handed_out += 1
            yield self.images[batch], self.labels[batch], self.index[batch]
