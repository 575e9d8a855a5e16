# Copyright 2025 The FuScore Authors.
# Licensed under the Apache License, Version 2.0.
"""Batch samplers of FuScore training (DESIGN.md section 4): pair-aware batches of a rating table, and the endless
batches of the synthetic stream.

Both yield lists of data set indices, one list per batch, and neither knows about processes: under several
processes the `DataLoader` is prepared by accelerate, whose `BatchSamplerShard` hands out whole batches round-robin
(`batches[process_index::num_processes]`, never splitting one), so every process trains on whole source-pair groups.
That is the only sharding mechanism of FuScore training.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Sequence
from typing import Optional, Union

import numpy as np
import torch
from torch.utils.data import Sampler


__all__ = ["PairGroupedBatchSampler", "EndlessBatchSampler"]

GroupIds = Union[Sequence[Union[str, int]], torch.Tensor]


class PairGroupedBatchSampler(Sampler[list[int]]):
    """Batches of `pairs_per_batch` source pairs x `images_per_pair` fused images of each (DESIGN.md section 4).

    Each epoch, with a numpy generator seeded by `(seed, epoch)`:

    1. Source pairs with at least two images are cut into *chunks* of `images_per_pair` (M) distinct images after a
       shuffle. A pair with `2 <= n <= M` images gives one chunk of all `n` (a smaller batch). A pair with `n > M`
       gives `ceil(n / M)` chunks of exactly M: the last one is topped up with images of the same pair drawn from its
       other chunks, so every image is seen every epoch and no chunk repeats an image.
    2. Chunks are dealt into `K = floor(C / P)` batches so that no batch holds two chunks of the same source pair:
       pairs in decreasing number of chunks (random among equals), each into the batches with the most free slots
       (random among equals). This greedy (Ryser's) always succeeds here because every pair has at most `K` chunks
       (a pair with more, which only happens when it dominates the data set, is capped at `K` chunks, fixed at
       construction). With `drop_last=True` each batch holds exactly P pairs and the `C - K P < P` chunks left over
       are taken from the pairs with the most chunks; with `drop_last=False` they are added as extra pairs to some
       batches (up to `P + 1` pairs, so nothing is dropped).
    3. Source pairs with a single image give no within-pair term, so they are not chunked: they are shuffled and
       dealt round-robin onto the batches as extra images (they serve the distribution and cross-pair terms).
    4. The batch order is shuffled.

    Hence every batch has at least two source pairs of at least two images. The batch count does not depend on the
    epoch, and the iteration is a pure function of `(seed, epoch)`: resuming mid-epoch by skipping the first `k`
    batches (`accelerate.skip_first_batches`, or `itertools.islice(sampler, k, None)`) yields the same remainder.
    The HF `Trainer` calls `set_epoch` on it each epoch. Under several processes, prepare the `DataLoader` with
    accelerate: its `BatchSamplerShard` gives process `i` the batches `i, i + n, ...` whole (with `even_batches`,
    the last round is filled up with the epoch's first batches, as `DistributedSampler` pads).

    Args:
        group_ids (`list[str | int]` or `torch.Tensor` of shape `(N,)`): the source pair (`pair_id`) of each data set
            index.
        pairs_per_batch (`int`, at least 2): P.
        images_per_pair (`int`, at least 2): M.
        seed (`int`, defaults to 0): base seed; must be the same on every process.
        drop_last (`bool`, defaults to True): see 2.
    """

    def __init__(
        self,
        group_ids: GroupIds,
        pairs_per_batch: int,
        images_per_pair: int,
        seed: int = 0,
        drop_last: bool = True,
    ) -> None:
        if pairs_per_batch < 2:
            raise ValueError(f"`pairs_per_batch` must be at least 2 (cross-pair terms), got {pairs_per_batch}.")
        if images_per_pair < 2:
            raise ValueError(f"`images_per_pair` must be at least 2 (within-pair terms), got {images_per_pair}.")
        if isinstance(group_ids, torch.Tensor):
            group_ids = group_ids.tolist()
        self.pairs_per_batch = pairs_per_batch
        self.images_per_pair = images_per_pair
        self.seed = seed
        self.drop_last = drop_last
        self.epoch = 0

        # Insertion order (first appearance) keeps the grouping independent of hash seeds.
        members: dict[Union[str, int], list[int]] = {}
        for index, group in enumerate(group_ids):
            members.setdefault(group, []).append(index)
        self._groups = [np.asarray(indices, dtype=np.int64) for indices in members.values() if len(indices) >= 2]
        self._singletons = np.asarray(
            [indices[0] for indices in members.values() if len(indices) == 1], dtype=np.int64
        )

        chunk_counts = np.asarray([math.ceil(len(g) / images_per_pair) for g in self._groups], dtype=np.int64)
        num_batches = int(chunk_counts.sum()) // pairs_per_batch
        # A pair cannot appear twice in a batch, so it can fill at most `num_batches` chunks; capping may lower the
        # batch count, hence the fixed point.
        while True:
            capped = np.minimum(chunk_counts, num_batches)
            new_num_batches = int(capped.sum()) // pairs_per_batch
            if new_num_batches == num_batches:
                break
            num_batches = new_num_batches
        if num_batches < 1:
            raise ValueError(
                f"Need at least pairs_per_batch={pairs_per_batch} source pairs with two or more images to build one "
                f"batch, got {len(self._groups)}."
            )
        self._chunk_counts = capped
        self._num_batches = num_batches

    def set_epoch(self, epoch: int) -> None:
        """Sets the epoch whose batches `__iter__` yields (call it before each epoch, as for `DistributedSampler`)."""
        self.epoch = epoch

    def __len__(self) -> int:
        """Number of batches per epoch (the same for every epoch)."""
        return self._num_batches

    def __iter__(self) -> Iterator[list[int]]:
        yield from self.epoch_batches(self.epoch)

    def _chunks_of(self, group: np.ndarray, count: int, rng: np.random.Generator) -> list[np.ndarray]:
        size = self.images_per_pair
        shuffled = rng.permutation(group)
        if len(shuffled) <= size:
            return [shuffled]
        chunks = [shuffled[start : start + size] for start in range(0, len(shuffled), size)]
        last = chunks[-1]
        if len(last) < size:
            # Top up from this pair's other images; never repeats an image inside the chunk.
            others = shuffled[: len(shuffled) - len(last)]
            chunks[-1] = np.concatenate([last, rng.choice(others, size=size - len(last), replace=False)])
        # A capped pair (more chunks than batches) keeps a random subset of its chunks this epoch.
        if count < len(chunks):
            keep = np.sort(rng.choice(len(chunks), size=count, replace=False))
            chunks = [chunks[k] for k in keep]
        return chunks

    def epoch_batches(self, epoch: Optional[int] = None) -> list[list[int]]:
        """The batches of `epoch` (defaults to the current one), as lists of data set indices."""
        epoch = self.epoch if epoch is None else epoch
        rng = np.random.default_rng([self.seed, epoch])
        num_batches = self._num_batches
        demands = self._chunk_counts.copy()
        chunks = [self._chunks_of(g, int(c), rng) for g, c in zip(self._groups, demands)]

        leftover = int(demands.sum()) - num_batches * self.pairs_per_batch
        capacity = np.full(num_batches, self.pairs_per_batch, dtype=np.int64)
        if self.drop_last:
            # Drop the `leftover` chunks one by one from the pairs with the most chunks (random among equals).
            for _ in range(leftover):
                largest = np.flatnonzero(demands == demands.max())
                victim = rng.choice(largest)
                chunks[victim].pop(rng.integers(len(chunks[victim])))
                demands[victim] -= 1
        else:
            capacity[rng.choice(num_batches, size=leftover, replace=False)] += 1

        # Ryser's greedy: pairs by decreasing demand, each into the batches with the most free slots.
        batch_chunks: list[list[np.ndarray]] = [[] for _ in range(num_batches)]
        group_order = np.lexsort((rng.random(len(demands)), -demands))
        for g in group_order:
            demand = int(demands[g])
            if demand == 0:
                continue
            # Integer free slots plus a tie-breaking jitter in [0, 0.5): the `demand` largest keys are the batches
            # with the most free slots, random among equals.
            key = capacity + 0.5 * rng.random(num_batches)
            if demand >= num_batches:
                target_batches = np.arange(num_batches)
            else:
                target_batches = np.argpartition(-key, demand - 1)[:demand]
            target_batches = target_batches[capacity[target_batches] > 0]
            capacity[target_batches] -= 1
            for chunk, b in zip(chunks[g], target_batches):
                batch_chunks[b].append(chunk)

        batches = [
            np.concatenate([chunk_list[k] for k in rng.permutation(len(chunk_list))]).tolist()
            for chunk_list in batch_chunks
        ]
        batches = [batches[k] for k in rng.permutation(num_batches)]
        for position, index in enumerate(rng.permutation(self._singletons)):
            batches[position % len(batches)].append(int(index))
        return batches


class EndlessBatchSampler(Sampler[list[int]]):
    """Batch `k` is `[k P, ..., k P + P - 1]`, for `k = 0, 1, 2, ...` without end: the scene numbers of the synthetic
    stream's batches (`SyntheticScenes` turns scene `s` into its M fused images).

    Deterministic in nothing but `P`, so resuming skips batch numbers (accelerate's `skip_first_batches` skips
    indices, not images), and under several processes accelerate's `BatchSamplerShard` gives process `i` the batches
    `i, i + n, ...`. It has no length: train on it with `max_steps`.
    """

    def __init__(self, pairs_per_batch: int) -> None:
        if pairs_per_batch < 1:
            raise ValueError(f"`pairs_per_batch` must be at least 1, got {pairs_per_batch}.")
        self.pairs_per_batch = pairs_per_batch
        self.batch_size = pairs_per_batch  # read by accelerate's BatchSamplerShard
        self.drop_last = False

    def __iter__(self) -> Iterator[list[int]]:
        for batch_number in itertools.count():
            first = batch_number * self.pairs_per_batch
            yield list(range(first, first + self.pairs_per_batch))
