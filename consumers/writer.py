"""The trainer's Redis writes: one batch at a time, on a thread of its own.

The loop polls, parses and learns the next batch while the previous batch's write runs (the
script's time in Redis is a large share of the trainer's otherwise). One write at a time:
each is fenced on the offsets the one before it left, so the next waits for it (`wait`).
When a write lands, its batch's freshness (record timestamp -> readable in Redis) is
observed, and its offsets may be committed to Kafka.
"""

from __future__ import annotations

import contextlib
import functools
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from streamrec.consumers.lease import StandDown
from streamrec.consumers.metrics import TrainerMetrics, TrainerStats
from streamrec.consumers.outage import Outage
from streamrec.streaming.store import BatchWrite, FenceLost, RedisStore


@dataclass
class _Pending:
    future: Future[Any]
    ends: dict[str, int]  # offsets to commit to Kafka once it lands
    newest: dict[str, int]  # user -> record timestamp (ms) of their newest event in it
    submitted: float  # perf_counter


class BatchWriter:
    def __init__(
        self, store: RedisStore, outage: Outage, metrics: TrainerMetrics, stats: TrainerStats
    ) -> None:
        self.store = store
        self.outage = outage
        self.metrics = metrics
        self.stats = stats
        self.freshness: list[float] = []  # seconds, of the writes landed since take_freshness
        self._pool: ThreadPoolExecutor | None = None
        self._pending: _Pending | None = None

    def start(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="streamrec-writer")

    def shutdown(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)

    @property
    def pending(self) -> bool:
        """A write is in flight (or landed and not yet waited for)."""
        return self._pending is not None

    def landed(self) -> bool:
        """The write in flight has landed: `wait` returns at once."""
        return self._pending is not None and self._pending.future.done()

    def submit(self, batch: BatchWrite, ends: dict[str, int], newest: dict[str, int]) -> None:
        """Start writing `batch`, waiting out Redis outages; call `wait` first."""
        assert self._pool is not None and self._pending is None
        future = self._pool.submit(
            self.outage.redis, functools.partial(self.store.write_batch, batch)
        )
        self._pending = _Pending(future, ends, newest, time.perf_counter())

    def wait(self) -> dict[str, int] | None:
        """Wait for the write in flight; the offsets it covers, to commit to Kafka (None: no
        write was in flight). Raises StandDown when its fence was lost."""
        p = self._pending
        if p is None:
            return None
        self._pending = None
        t0 = time.perf_counter()
        try:
            p.future.result()
        except FenceLost as e:
            raise StandDown(str(e)) from e
        now = time.perf_counter()
        self.stats.phase_seconds["redis wait"] += now - t0
        self.metrics.redis_write_seconds.observe(now - p.submitted)
        self.stats.written_batches += 1
        written_ms = time.time() * 1000
        for ts in p.newest.values():
            age_s = max(0.0, (written_ms - ts) / 1000)
            self.metrics.freshness_seconds.observe(age_s)
            self.freshness.append(age_s)
        return p.ends

    def abandon(self, timeout_s: float) -> None:
        """Standing down or failing: wait up to `timeout_s` for the write in flight, whatever
        its outcome (the next trainer reads on from the offsets Redis holds)."""
        if self._pending is not None:
            with contextlib.suppress(Exception):
                self._pending.future.result(timeout=timeout_s)
            self._pending = None

    def take_freshness(self) -> list[float]:
        out, self.freshness = self.freshness, []
        return out
