"""The group consumer's bookkeeping (streaming/group.py) with a fake KafkaConsumer: the
rebalance-aware poll timeout, the no-assignment watchdog, commits and the order of the
rebalance callbacks. The real thing runs in the pipeline and fault tests."""

from __future__ import annotations

import logging
from types import SimpleNamespace
from typing import Any

import pytest
from kafka import TopicPartition

from streamrec.streaming import group as group_mod
from streamrec.streaming.config import KafkaConfig
from streamrec.streaming.group import REBALANCE_POLL_MS, GroupConsumer, rebalance_pending

TP0, TP1 = TopicPartition("t", 0), TopicPartition("t", 1)


class _Coordinator:
    def __init__(self, rejoin: bool = False, stable: bool = True) -> None:
        self.rejoin, self.is_stable = rejoin, stable

    def need_rejoin(self) -> bool:
        return self.rejoin

    def stable(self) -> bool:
        return self.is_stable


class _Consumer:
    def __init__(self, coordinator: Any = None) -> None:
        self._coordinator = coordinator or _Coordinator()
        self.commits: list[Any] = []
        self.closed = False
        self.fail_commit = False

    def commit_async(self, offsets: Any, callback: Any) -> None:
        if self.fail_commit:
            raise RuntimeError("rebalance in progress")
        self.commits.append(offsets)

    def highwater(self, tp: TopicPartition) -> int | None:
        return {TP0: 100}.get(tp)

    def close(self, **_: Any) -> None:
        self.closed = True


def test_a_pending_rebalance_is_seen_in_the_coordinator() -> None:
    assert not rebalance_pending(_Consumer())  # type: ignore[arg-type]
    assert rebalance_pending(_Consumer(_Coordinator(rejoin=True)))  # type: ignore[arg-type]
    assert rebalance_pending(_Consumer(_Coordinator(stable=False)))  # type: ignore[arg-type]
    # internals moved: no opinion (the watchdog covers a stall)
    assert not rebalance_pending(SimpleNamespace())  # type: ignore[arg-type]
    broken = SimpleNamespace(_coordinator=SimpleNamespace(need_rejoin=lambda: 1 / 0, stable=1))
    assert not rebalance_pending(broken)  # type: ignore[arg-type]


def _group(**kw: Any) -> tuple[GroupConsumer, list[str]]:
    calls: list[str] = []
    g = GroupConsumer(
        KafkaConfig(session_timeout_ms=6000, heartbeat_interval_ms=2000),
        on_assigned=lambda tps: calls.append(f"assigned {len(g.owned)}"),
        on_revoked=lambda tps: calls.append(f"revoked {len(g.owned)}"),
        before_rebalance=lambda: calls.append("flush"),
        on_rejoin=lambda: calls.append("rejoin"),
        **kw,
    )
    g.consumer = _Consumer()  # type: ignore[assignment]
    return g, calls


def test_a_poll_that_will_rebalance_waits_long_enough() -> None:
    g, _ = _group()
    polls: list[int] = []
    g._guard = SimpleNamespace(  # type: ignore[assignment]
        poll=lambda timeout_ms, max_records: polls.append(timeout_ms) or ({}, None)
    )
    g.poll(timeout_ms=10, max_records=5)
    g.consumer._coordinator.rejoin = True  # type: ignore[union-attr]
    g.poll(timeout_ms=10, max_records=5)
    assert polls == [10, REBALANCE_POLL_MS]


def test_callbacks_come_after_the_flush_with_the_partitions_counted() -> None:
    g, calls = _group()
    listener = group_mod._Listener(g)
    listener.on_partitions_assigned({TP0, TP1})
    listener.on_partitions_revoked({TP1})
    assert calls == ["flush", "assigned 2", "flush", "revoked 1"]
    assert g.owned == {TP0} and g.assignments == 1


def test_no_partitions_for_two_sessions_rejoins_with_a_new_consumer(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    g, calls = _group()
    old = g.consumer
    subscribed: list[bool] = []
    monkeypatch.setattr(g, "subscribe", lambda: subscribed.append(True))
    g.check_assignment()  # starts the clock
    g.check_assignment()
    assert not subscribed
    g._unassigned_since -= 13  # type: ignore[operator]
    with caplog.at_level(logging.WARNING):
        g.check_assignment()
    assert "no partitions assigned for 12 s: rejoining the group" in caplog.text
    assert calls == ["rejoin"] and old.closed and subscribed == [True]  # type: ignore[union-attr]
    g.owned = {TP0}
    g.check_assignment()
    assert g._unassigned_since is None


def test_commits_and_lag_by_offset_field(caplog: pytest.LogCaptureFixture) -> None:
    g, _ = _group()
    g.commit({})
    g.commit({"t:0": 40, "t:1": 7})
    consumer: Any = g.consumer
    (offsets,) = consumer.commits
    assert {tp: o.offset for tp, o in offsets.items()} == {TP0: 40, TP1: 7}
    consumer.fail_commit = True
    with caplog.at_level(logging.WARNING):
        g.commit({"t:0": 41})  # harmless: Redis holds the offsets
    assert "Kafka commit failed (harmless, Redis holds the offsets)" in caplog.text
    assert g.lag({"t:0": 40, "t:1": 7}) == {"t:0": 60}  # t:1's end unknown yet
