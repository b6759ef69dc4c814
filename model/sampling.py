"""Negatives shared by a whole mini-batch.

Negatives decide the speed (PITFALLS: 64 shared negatives, one gather and one matmul, run about
four times faster than 16 per event). A share of them is drawn uniformly over all known items,
so that the long tail and catalogue-only items are pushed down too; the rest is drawn from a
ring buffer of recent positive items, which samples by recent popularity in O(1) per draw
without keeping a cumulative distribution up to date. Knowing both probabilities gives the
log-q correction of sampled softmax.
"""

from __future__ import annotations

import numpy as np


class NegativeSampler:
    def __init__(self, buffer_size: int, popularity_mix: float) -> None:
        self.buffer = np.zeros(buffer_size, dtype=np.int32)
        self.filled = 0  # valid entries in the buffer
        self.cursor = 0  # next write position
        self.popularity_mix = popularity_mix
        self.counts = np.zeros(0, dtype=np.int64)  # per item row, occurrences in the buffer

    def observe(self, item_rows: np.ndarray) -> None:
        """Remember positive items, evicting the oldest ones."""
        rows = np.asarray(item_rows, dtype=np.int32)
        size = self.buffer.shape[0]
        if rows.shape[0] > size:
            rows = rows[-size:]
        if rows.shape[0] == 0:
            return
        top = int(rows.max()) + 1
        if top > self.counts.shape[0]:
            grown = np.zeros(max(top, 2 * self.counts.shape[0]), dtype=np.int64)
            grown[: self.counts.shape[0]] = self.counts
            self.counts = grown
        pos = (self.cursor + np.arange(rows.shape[0])) % size
        if self.filled == size:
            np.subtract.at(self.counts, self.buffer[pos], 1)
        self.buffer[pos] = rows
        np.add.at(self.counts, rows, 1)
        self.cursor = int((self.cursor + rows.shape[0]) % size)
        self.filled = min(size, self.filled + rows.shape[0])

    def sample(
        self, rng: np.random.Generator, n: int, n_items: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """`n` item rows and the log of each one's expected count among the `n` draws."""
        if n_items <= 0 or n <= 0:
            return np.zeros(0, np.int32), np.zeros(0, np.float32)
        n_pop = round(n * self.popularity_mix) if self.filled else 0
        n_uni = n - n_pop
        uni = rng.integers(0, n_items, size=n_uni, dtype=np.int64)
        pop = self.buffer[rng.integers(0, self.filled, size=n_pop, dtype=np.int64)]
        rows = np.concatenate([uni, pop.astype(np.int64)])
        # Expected number of times each sampled row appears among the n draws.
        expected = np.full(rows.shape[0], n_uni / n_items, dtype=np.float64)
        if n_pop:
            counts = np.zeros(rows.shape[0], dtype=np.float64)
            known = rows < self.counts.shape[0]
            counts[known] = self.counts[rows[known]]
            expected += n_pop * counts / self.filled
        logq = np.log(np.maximum(expected, 1e-30)).astype(np.float32)
        return rows.astype(np.int32), logq

    def keep_rows(self, remap: np.ndarray) -> None:
        """Follow a compaction of the item rows (old -> new, -1: evicted): evicted items leave
        the buffer, the rest keep their order (oldest first from here on)."""
        size = self.buffer.shape[0]
        if self.filled < size:
            order = self.buffer[: self.filled]
        else:
            order = np.concatenate([self.buffer[self.cursor :], self.buffer[: self.cursor]])
        rows = remap[order]
        rows = rows[rows >= 0].astype(np.int32)
        self.buffer = np.zeros(size, dtype=np.int32)
        self.buffer[: rows.shape[0]] = rows
        self.filled = int(rows.shape[0])
        self.cursor = self.filled % size
        self.counts = np.bincount(rows, minlength=0).astype(np.int64)

    def state(self) -> tuple[dict[str, np.ndarray], dict[str, int]]:
        # The raw layout, not oldest-first: draws index buffer positions, and a restored model
        # must draw the same negatives as one that never stopped.
        return {"neg_buffer": self.buffer[: self.filled].copy()}, {"neg_cursor": self.cursor}

    def load_state(self, arrays: dict[str, np.ndarray], info: dict[str, int]) -> None:
        saved = np.asarray(arrays["neg_buffer"], dtype=np.int32)
        self.buffer = np.zeros(self.buffer.shape[0], dtype=np.int32)
        self.filled = min(saved.shape[0], self.buffer.shape[0])
        self.buffer[: self.filled] = saved[: self.filled]
        self.cursor = int(info.get("neg_cursor", self.filled)) % self.buffer.shape[0]
        self.counts = np.bincount(self.buffer[: self.filled], minlength=0).astype(np.int64)
