"""Trainer pieces that need no servers: the batch window counts from when a batch's oldest
record arrived (`arrival`); ranking jobs reuse an item matrix as long as readers keep theirs;
collector passes are timed into the metrics."""

from __future__ import annotations

import gc
import time
from dataclasses import dataclass

import numpy as np
import pytest

from streamrec.consumers.batches import arrival
from streamrec.consumers.config import Config
from streamrec.consumers.lists import DueLists
from streamrec.consumers.metrics import TrainerMetrics, TrainerStats
from streamrec.model.base import ItemMatrix

NOW = 1000.0  # monotonic seconds
WALL_MS = 1_767_225_600_000.0  # the wall clock at NOW


@dataclass
class Rec:
    timestamp: int


def test_records_that_waited_during_the_last_batch_count_their_wait() -> None:
    # 30 ms old, the loop last listened 100 ms ago: the window started 30 ms ago
    polled = {"p0": [Rec(int(WALL_MS) - 30), Rec(int(WALL_MS) - 5)]}
    assert arrival(polled, NOW, WALL_MS, since=NOW - 0.1) == pytest.approx(NOW - 0.03)


def test_oldest_first_record_of_any_partition() -> None:
    polled = {"p0": [Rec(int(WALL_MS) - 10)], "p1": [Rec(int(WALL_MS) - 40)], "p2": []}
    assert arrival(polled, NOW, WALL_MS, since=NOW - 1) == pytest.approx(NOW - 0.04)


def test_an_old_stream_counts_only_from_the_poll_before() -> None:
    # a replay of day-old events: they cannot have waited longer than since the last poll
    polled = {"p0": [Rec(int(WALL_MS) - 86_400_000)]}
    assert arrival(polled, NOW, WALL_MS, since=NOW - 0.05) == NOW - 0.05


def test_a_producer_clock_ahead_counts_from_now() -> None:
    polled = {"p0": [Rec(int(WALL_MS) + 5_000)]}
    assert arrival(polled, NOW, WALL_MS, since=NOW - 0.05) == NOW


class _Model:
    def __init__(self, n_items: int) -> None:
        self.n_items = n_items
        self.builds = 0

    def item_vectors(self) -> ItemMatrix:
        self.builds += 1
        ids = [f"i{j}" for j in range(self.n_items)]
        return ItemMatrix(ids, np.zeros((self.n_items, 64), np.float32), np.zeros(self.n_items))


def _lists(cfg: Config) -> DueLists:
    return DueLists(
        cfg, TrainerMetrics(), TrainerStats(), caught_up=lambda: True, read_seen=lambda users: {}
    )


def test_ranking_jobs_reuse_the_item_matrix_as_long_as_readers_keep_theirs() -> None:
    cfg = Config().replace(trainer={"matrix_every_ms": 1000})
    big, model = _lists(cfg), _Model(8192)  # 2 MiB: 1 s
    first = big.ranking_matrix(model)
    assert big.ranking_matrix(model) is first and model.builds == 1
    big._matrix = (time.monotonic() - 1.5, first)  # older than its second
    assert big.ranking_matrix(model) is not first and model.builds == 2
    small, model = _lists(cfg), _Model(4)  # 1 kB: ~1 ms
    small.ranking_matrix(model)
    time.sleep(0.01)
    small.ranking_matrix(model)
    assert model.builds == 2


def _gc_passes(m: TrainerMetrics, generation: str) -> float:
    value = m.registry.get_sample_value(
        "streamrec_gc_pause_seconds_count", {"generation": generation}
    )
    return value or 0.0


def test_collector_passes_are_timed_by_generation_until_unwatched() -> None:
    m = TrainerMetrics()
    unwatch = m.watch_gc()
    try:
        gc.collect(0)
        gc.collect(2)
        gc.collect(2)
    finally:
        unwatch()
    # passes the collector runs by itself may add to these counts, never take from them
    assert _gc_passes(m, "0") >= 1
    assert _gc_passes(m, "2") >= 2
    total = m.registry.get_sample_value("streamrec_gc_pause_seconds_sum", {"generation": "2"})
    assert total is not None and total > 0
    before = _gc_passes(m, "2")
    gc.collect(2)
    assert _gc_passes(m, "2") == before
