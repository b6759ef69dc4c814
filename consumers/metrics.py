"""Prometheus metrics of the trainer (prometheus-client), served when a port is configured,
and the counts it returns from `run()` (`TrainerStats`).

Names follow Prometheus conventions: units in the name, `_total` for counters. One registry per
trainer, so several trainers in one process (tests) do not collide.
"""

from __future__ import annotations

import gc
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


@dataclass
class TrainerStats:
    events: int = 0
    dead_letters: int = 0
    batches: int = 0
    written_batches: int = 0
    skipped_nonfinite: int = 0
    lists_refreshed: int = 0
    started_at: float = field(default_factory=time.monotonic)
    dead_by_reason: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    last_loss: float = float("nan")
    # wall time per phase (poll, parse, quality, learn, seen, recommend, rows, redis, commit)
    phase_seconds: dict[str, float] = field(default_factory=lambda: defaultdict(float))

    def rate(self) -> float:
        return self.events / max(time.monotonic() - self.started_at, 1e-9)


class TrainerMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.events = Counter("streamrec_events_total", "Events learned", registry=r)
        self.dead_letters = Counter(
            "streamrec_dead_letters_total", "Records sent to the DLQ", ["reason"], registry=r
        )
        self.batches = Counter("streamrec_batches_total", "Batches processed", registry=r)
        self.undecodable = Counter(
            "streamrec_undecodable_batches_total",
            "Record batches the Kafka client could not decode: dead-lettered whole, skipped",
            ["topic"],
            registry=r,
        )
        self.skipped = Counter(
            "streamrec_skipped_nonfinite_batches_total",
            "Batches whose loss or gradients were not finite (nothing applied)",
            registry=r,
        )
        self.batch_size = Histogram(
            "streamrec_batch_events",
            "Records per batch",
            buckets=(1, 16, 64, 256, 1024, 2048, 4096, 8192, 16384),
            registry=r,
        )
        self.batch_seconds = Histogram(
            "streamrec_batch_seconds",
            "Wall time of one batch: parse, learn, write, commit",
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=r,
        )
        self.redis_write_seconds = Histogram(
            "streamrec_redis_write_seconds",
            "Wall time of the batch's fenced Redis transaction",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1),
            registry=r,
        )
        self.freshness_seconds = Histogram(
            "streamrec_freshness_seconds",
            "Kafka record timestamp to the moment its state is readable in Redis",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=r,
        )
        self.stand_downs = Counter(
            "streamrec_stand_downs_total",
            "Times this trainer lost the lead (lease or offset fence) and went to standby",
            registry=r,
        )
        self.rejoins = Counter(
            "streamrec_group_rejoins_total",
            "Times the trainer rejoined its consumer group after being left with no partitions",
            registry=r,
        )
        self.evicted = Counter(
            "streamrec_evicted_total",
            "Ids the model forgot after evict_after_s without an event",
            ["kind"],
            registry=r,
        )
        self.lists_refreshed = Counter(
            "streamrec_lists_refreshed_total", "Precomputed top-K lists written", registry=r
        )
        self.lists_due = Gauge(
            "streamrec_lists_due",
            "Users whose precomputed list is older than their vector (served in real time)",
            registry=r,
        )
        self.ready = Gauge(
            "streamrec_trainer_ready",
            "1 while the trainer consumes with Kafka and Redis reachable (what /ready answers)",
            registry=r,
        )
        self.state = Gauge(
            "streamrec_trainer_state",
            "1 for the state the trainer is in: starting, standby, active or stopping",
            ["state"],
            registry=r,
        )
        self.loss = Gauge("streamrec_loss", "Mean loss of the last applied batch", registry=r)
        self.lag = Gauge(
            "streamrec_lag_records", "Records behind the partition's end", ["partition"], registry=r
        )
        # live quality (consumers/live_quality.py)
        self.live_samples = Counter(
            "streamrec_live_quality_samples_total",
            "Sampled positive events scored against the user's top-10 before being learned",
            ["users"],
            registry=r,
        )
        self.live_hits = Counter(
            "streamrec_live_quality_hits_total",
            "Of those, events whose item was in the top-10",
            ["users"],
            registry=r,
        )
        for users in ("known", "cold"):  # both series exist from the start, at 0
            self.live_samples.labels(users)
            self.live_hits.labels(users)
        self.live_hr10 = Gauge(
            "streamrec_live_hr10",
            "Prequential HR@10 over the last quality_window sampled events",
            ["users"],
            registry=r,
        )
        self.live_ndcg10 = Gauge(
            "streamrec_live_ndcg10",
            "Prequential NDCG@10 over the last quality_window sampled events",
            ["users"],
            registry=r,
        )
        self.served_coverage = Gauge(
            "streamrec_served_catalogue_coverage",
            "Share of known items in at least one of the last quality_served_window lists written",
            registry=r,
        )
        self.served_popular_share = Gauge(
            "streamrec_served_popular_share",
            "Share of those lists' slots holding an item in the top 1 % by current popularity",
            registry=r,
        )

        self.gc_pause_seconds = Histogram(
            "streamrec_gc_pause_seconds",
            "Python garbage-collection passes of this process (every thread waits), by generation",
            ["generation"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1),
            registry=r,
        )

    def watch_gc(self) -> Callable[[], None]:
        """Time every collector pass into gc_pause_seconds; returns the function that stops it.

        A pass stops the whole process, so a slow one is a freshness stall no phase timer
        sees: a 50,000-object young generation cost 30-45 ms a pass in the trainer.
        """
        started = [0.0]
        by_gen = [self.gc_pause_seconds.labels(str(g)) for g in range(3)]

        def callback(phase: str, info: dict[str, Any]) -> None:
            if phase == "start":
                started[0] = time.perf_counter()
            else:
                by_gen[info["generation"]].observe(time.perf_counter() - started[0])

        gc.callbacks.append(callback)
        return lambda: gc.callbacks.remove(callback)

    def set_state(self, state: str, ready: bool) -> None:
        from streamrec.consumers.lifecycle import STATES

        for s in STATES:
            self.state.labels(s).set(1 if s == state else 0)
        self.ready.set(1 if ready else 0)
