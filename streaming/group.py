"""The trainer's group consumer: one KafkaConsumer in a consumer group, and the work-arounds
kafka-python 3.0.12 needs to keep its partitions.

`GroupConsumer` owns the consumer through its life: subscribe (once the topic's metadata is
known), poll (through `GuardedPoll`, with time to finish a rebalance), rejoin with a new
consumer when a rebalance left it with nothing, commit (for lag monitoring only: the offsets
of record live in Redis with the state) and close within a time budget. The owner is told of
assignments and revocations through callbacks, after `before_rebalance` (which lets it write
out what it learned from the partitions that move). kafka-python keeps its group state
machine apart from the consumer in the same way (`kafka/coordinator/`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from kafka import ConsumerRebalanceListener, KafkaConsumer, TopicPartition
from kafka.structs import OffsetAndMetadata

from streamrec.streaming import kafka_io
from streamrec.streaming.config import KafkaConfig
from streamrec.streaming.undecodable import GuardedPoll, Undecodable

# The shortest poll while a rebalance is pending: long enough for its JoinGroup/SyncGroup
# round trips (see rebalance_pending).
REBALANCE_POLL_MS = 5000

Partitions = Callable[[list[TopicPartition]], None]


def rebalance_pending(consumer: KafkaConsumer) -> bool:
    """Whether the next poll will rebalance the group (kafka-python 3.0.12 internals).

    That poll must be given time to finish the JoinGroup/SyncGroup round trips: when its
    timeout expires between them, the leader has already recorded its assignment, so the
    next poll sees nothing to rejoin and the assignment is never applied; the consumer then
    holds no partitions forever. A group that is not stable is in such a rejoin already.
    """
    coordinator = getattr(consumer, "_coordinator", None)
    need_rejoin = getattr(coordinator, "need_rejoin", None)
    stable = getattr(coordinator, "stable", None)
    if need_rejoin is None or stable is None:
        return False
    try:
        return bool(need_rejoin()) or not stable()
    except Exception:  # internals changed: rely on the check_assignment watchdog
        return False


def await_group_metadata(
    consumer: KafkaConsumer, topic: str, log: logging.Logger, timeout_s: float = 10
) -> None:
    """Let kafka-python 3.0.12's group metadata see the topic before the first join.

    Its snapshot of the subscribed topics' partitions starts empty and is filled by the next
    metadata response. A join before that records an empty snapshot with the assignment; the
    response then differs from it and forces a second rebalance a second later, which, begun
    inside a short batch-closing poll, can end with no partitions for two session timeouts.
    Waiting here for the snapshot (about 0.1 s) removes that rebalance.
    """
    coordinator = getattr(consumer, "_coordinator", None)
    cluster = getattr(coordinator, "_cluster", None)
    if cluster is None or not hasattr(cluster, "request_update"):
        return  # internals changed: the check_assignment watchdog still covers a stall
    cluster.request_update()
    deadline = time.monotonic() + timeout_s
    while not getattr(coordinator, "_metadata_snapshot", {}).get(topic):
        if time.monotonic() > deadline:
            log.warning("no group metadata for %s after %.0f s: joining anyway", topic, timeout_s)
            return
        time.sleep(0.01)


class _Listener(ConsumerRebalanceListener):
    def __init__(self, group: GroupConsumer) -> None:
        self.group = group

    def on_partitions_revoked(self, revoked: Any) -> None:
        g, gone = self.group, list(revoked)
        g.before_rebalance()
        g.owned.difference_update(gone)
        g.on_revoked(gone)

    def on_partitions_assigned(self, assigned: Any) -> None:
        g, new = self.group, list(assigned)
        g.before_rebalance()
        g.assignments += 1
        g.owned.update(new)
        g.on_assigned(new)


class GroupConsumer:
    """A KafkaConsumer subscribed to `cfg.events_topic` as group `cfg.group_id`.

    `owned` is what the callbacks gave us (not `consumer.assignment()`: after a revoke that
    kafka-python never follows with a rejoin, it still lists the revoked partitions), and
    `assignments` counts assignments, so a caller can tell that one happened during a poll.
    """

    def __init__(
        self,
        cfg: KafkaConfig,
        *,
        on_assigned: Partitions,
        on_revoked: Partitions,
        before_rebalance: Callable[[], None] = lambda: None,
        on_rejoin: Callable[[], None] = lambda: None,
        log: logging.Logger | None = None,
    ) -> None:
        self.cfg = cfg
        self.on_assigned = on_assigned
        self.on_revoked = on_revoked
        self.before_rebalance = before_rebalance
        self.on_rejoin = on_rejoin
        self.log = log or logging.getLogger(__name__)
        self.consumer: KafkaConsumer | None = None
        self.owned: set[TopicPartition] = set()
        self.assignments = 0
        self._guard: GuardedPoll | None = None
        self._unassigned_since: float | None = None
        self._last_commit: dict[TopicPartition, OffsetAndMetadata] = {}

    def subscribe(self) -> None:
        k = self.cfg
        self.consumer = kafka_io.make_consumer(k, k.group_id)
        # Metadata first: a group join before the consumer knows the topic's partitions gets
        # an empty assignment ("No partition metadata"), and kafka-python may not rejoin.
        deadline = time.monotonic() + 60
        while self.consumer.partitions_for_topic(k.events_topic) is None:
            if time.monotonic() > deadline:
                raise RuntimeError(f"no metadata for topic {k.events_topic} after 60 s")
            time.sleep(0.1)
        self.owned = set()
        self._guard = GuardedPoll(self.consumer)
        self.consumer.subscribe([k.events_topic], listener=_Listener(self))
        await_group_metadata(self.consumer, k.events_topic, self.log)
        self._unassigned_since = time.monotonic()

    def poll(
        self, timeout_ms: int, max_records: int
    ) -> tuple[Mapping[TopicPartition, Sequence[Any]], Undecodable | None]:
        """Records by partition, and the undecodable batch skipped instead, if any. A poll
        that will rebalance the group waits at least REBALANCE_POLL_MS."""
        assert self.consumer is not None and self._guard is not None
        if rebalance_pending(self.consumer):
            timeout_ms = max(timeout_ms, REBALANCE_POLL_MS)
        return self._guard.poll(timeout_ms=timeout_ms, max_records=max_records)

    def check_assignment(self) -> None:
        """The no-assignment watchdog: kafka-python 3.0.12 can end a rebalance with nothing
        assigned and never rejoin. With no partitions for two sessions, rejoin with a new
        consumer."""
        assert self.consumer is not None
        if self.owned:
            self._unassigned_since = None
            return
        now = time.monotonic()
        if self._unassigned_since is None:
            self._unassigned_since = now
            return
        limit = 2 * self.cfg.session_timeout_ms / 1000
        if now - self._unassigned_since > limit:
            self.log.warning("no partitions assigned for %.0f s: rejoining the group", limit)
            self.on_rejoin()
            try:
                self.consumer.close()
            except Exception as e:  # the old member expires by itself
                self.log.warning("closing the stuck consumer: %s", e)
            self.subscribe()

    def assignment(self) -> set[TopicPartition]:
        """What kafka-python says the consumer holds."""
        assert self.consumer is not None
        out: set[TopicPartition] = self.consumer.assignment()
        return out

    def seek(self, tp: TopicPartition, offset: int | None) -> None:
        """Read `tp` from `offset` next; None: from its beginning."""
        assert self.consumer is not None
        if offset is None:
            self.consumer.seek_to_beginning(tp)
        else:
            self.consumer.seek(tp, offset)

    def lag(self, ends: Mapping[str, int]) -> dict[str, int]:
        """Records behind each partition's end ("topic:partition" -> count), where known."""
        assert self.consumer is not None
        out: dict[str, int] = {}
        for f, off in ends.items():
            topic, _, part = f.rpartition(":")
            high = self.consumer.highwater(TopicPartition(topic, int(part)))
            if high is not None:
                out[f] = max(0, high - off)
        return out

    def commit(self, ends: Mapping[str, int]) -> None:
        """Commit the next offsets ("topic:partition" -> offset) asynchronously. For lag
        monitoring only: a failure is harmless."""
        assert self.consumer is not None
        offsets = {}
        for f, off in ends.items():
            topic, _, part = f.rpartition(":")
            offsets[TopicPartition(topic, int(part))] = OffsetAndMetadata(off, "", -1)
        if not offsets:
            return
        self._last_commit = offsets
        try:  # asynchronous: a synchronous commit waited one broker round trip per batch
            self.consumer.commit_async(offsets, callback=self._commit_done)
        except Exception as e:  # a rebalance in progress, a broker blip: lag lags, no loss
            self.log.warning("Kafka commit failed (harmless, Redis holds the offsets): %s", e)

    def _commit_done(self, offsets: Any, result: Any) -> None:
        if isinstance(result, Exception):
            self.log.warning("Kafka commit failed (harmless, Redis holds the offsets): %s", result)

    def close(self, remaining_s: Callable[[], float]) -> None:
        """Commit the last offsets and leave the group, each step within what `remaining_s()`
        leaves of the time budget."""
        if self.consumer is None:
            return
        try:
            if self._last_commit:  # the asynchronous commits may still be in flight
                budget_ms = int(min(2.0, remaining_s() / 3) * 1000)
                self.consumer.commit(self._last_commit, timeout_ms=budget_ms)
        except Exception as e:  # lag monitoring only
            self.log.warning("final Kafka commit failed (harmless): %s", e)
        try:
            budget_ms = int(min(5.0, remaining_s() / 2) * 1000)
            self.consumer.close(autocommit=False, timeout_ms=budget_ms)
        except Exception as e:  # leaving the group is best effort; the session expires
            self.log.warning("closing the consumer: %s", e)
        self.consumer = None
        self._guard = None
