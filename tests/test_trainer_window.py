"""The batch window counts from when a batch's oldest record arrived (`trainer._arrival`)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from streamrec.consumers.trainer import _arrival

NOW = 1000.0  # monotonic seconds
WALL_MS = 1_767_225_600_000.0  # the wall clock at NOW


@dataclass
class Rec:
    timestamp: int


def test_records_that_waited_during_the_last_batch_count_their_wait() -> None:
    # 30 ms old, the loop last listened 100 ms ago: the window started 30 ms ago
    polled = {"p0": [Rec(int(WALL_MS) - 30), Rec(int(WALL_MS) - 5)]}
    assert _arrival(polled, NOW, WALL_MS, since=NOW - 0.1) == pytest.approx(NOW - 0.03)


def test_oldest_first_record_of_any_partition() -> None:
    polled = {"p0": [Rec(int(WALL_MS) - 10)], "p1": [Rec(int(WALL_MS) - 40)], "p2": []}
    assert _arrival(polled, NOW, WALL_MS, since=NOW - 1) == pytest.approx(NOW - 0.04)


def test_an_old_stream_counts_only_from_the_poll_before() -> None:
    # a replay of day-old events: they cannot have waited longer than since the last poll
    polled = {"p0": [Rec(int(WALL_MS) - 86_400_000)]}
    assert _arrival(polled, NOW, WALL_MS, since=NOW - 0.05) == NOW - 0.05


def test_a_producer_clock_ahead_counts_from_now() -> None:
    polled = {"p0": [Rec(int(WALL_MS) + 5_000)]}
    assert _arrival(polled, NOW, WALL_MS, since=NOW - 0.05) == NOW
