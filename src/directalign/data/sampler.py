"""The epoch sampler: which records make up each micro-batch of each step, on each process.

The schedule is a function of (seed, step) alone, so a resumed run sees the same data, and of the global batch
(per-device batch x processes), so 2 processes with batch b see exactly the records 1 process with batch 2b
sees: each global micro-batch is cut into interleaved shares, [rank::world].

Each epoch visits the records in a seeded permutation (file order with shuffle=False), cut into global
micro-batches of batch_size records per process, or, with max_tokens, of as many consecutive records as fit in
max_tokens tokens per process (token_counts[i] is record i's).
"""

from __future__ import annotations

import math

import numpy as np

from directalign.data.batching import token_budget_batches


class MicroBatches:
    def __init__(
        self,
        n_records: int,
        batch_size: int,
        accumulation: int,
        seed: int,
        num_processes: int = 1,
        *,
        shuffle: bool = True,
        token_counts: list[int] | None = None,
        max_tokens: int | None = None,
    ):
        self.n, self.seed, self.shuffle = n_records, seed, shuffle
        self.global_batch = batch_size * num_processes
        self.accumulation = accumulation
        self.num_processes = num_processes
        self.token_counts = token_counts
        self.token_budget = None if max_tokens is None else max_tokens * num_processes
        self._batches: tuple[int, list[list[int]]] | None = None  # the last epoch asked for, and its micro-batches
        self._lengths: dict[int, int] = {}
        self.per_epoch = len(self.epoch(0))

    def epoch(self, epoch: int) -> list[list[int]]:
        if self._batches is None or self._batches[0] != epoch:
            order = np.random.default_rng(self.seed + epoch).permutation(self.n) if self.shuffle else np.arange(self.n)
            order = order.tolist()
            if self.token_budget is None:
                batches = [order[j : j + self.global_batch] for j in range(0, self.n, self.global_batch)]
            else:
                batches = token_budget_batches(order, self.token_counts, self.token_budget)
            self._batches = (epoch, batches)
            self._lengths[epoch] = len(batches)
        return self._batches[1]

    def _length(self, epoch: int) -> int:
        if self.token_budget is None:
            return self.per_epoch
        if epoch not in self._lengths:
            self._lengths[epoch] = len(self.epoch(epoch))
        return self._lengths[epoch]

    def _locate(self, g: int) -> tuple[int, int]:
        """(epoch, index within it) of the g-th micro-batch of the run."""
        epoch = 0
        while g >= self._length(epoch):
            g -= self._length(epoch)
            epoch += 1
        return epoch, g

    def steps_for(self, epochs: float) -> int:
        whole = int(epochs)
        micro = sum(self._length(e) for e in range(whole)) + (epochs - whole) * self._length(whole)
        return max(1, math.ceil(micro / self.accumulation))

    def indices(self, step: int, micro: int) -> list[int]:
        """The global micro-batch `micro` of step `step` (every process's records)."""
        epoch, j = self._locate(step * self.accumulation + micro)
        return self.epoch(epoch)[j]

    def local(self, step: int, micro: int, rank: int) -> tuple[list[int], bool]:
        """This process's records of a micro-batch, and whether they are padding: a short last batch can leave a
        process without records, and every process must still run the forward and backward pass that the
        gradient all-reduce waits for, so it gets the batch's first record, to be weighted 0."""
        batch = self.indices(step, micro)
        mine = batch[rank :: self.num_processes]
        return (mine, False) if mine else (batch[:1], True)

    def epoch_at(self, step: int) -> float:
        epoch, j = self._locate(step * self.accumulation)
        return epoch + j / self._length(epoch)
