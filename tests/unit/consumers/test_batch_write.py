"""What one batch writes to Redis (consumers/batch_write.py), from a fake model: rows per
user with their finished lists, touched items, the item-matrix decision, popularity, feature
vectors and the offset fence. No Kafka, no Redis, no TensorFlow."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from streamrec.consumers import batch_write
from streamrec.consumers.config import Config
from streamrec.model.base import ItemMatrix
from streamrec.streaming.events import Event

DIM = 4
CFG = Config().replace(model={"dim": DIM}, trainer={"seen_max": 2, "matrix_every_ms": 1000})


class _Popularity:
    def log_scores(self, items: Iterable[str], segment: str | None) -> dict[str, float]:
        return {i: -1.0 if segment is None else -2.0 for i in items}

    def segments(self) -> list[str]:
        return ["country=DE"]


class _Model:
    """The reads assembling a write makes, with vectors that tell users and items apart."""

    def __init__(self, items: Sequence[str] = ("i1", "i2", "i3")) -> None:
        self.items = list(items)
        self.popularity = _Popularity()
        self.global_bias = 0.5
        self.nan_user: str | None = None
        self.matrix_builds = 0

    @property
    def n_items(self) -> int:
        return len(self.items)

    def user_vectors(self, users: Sequence[str]) -> tuple[list[str], np.ndarray, np.ndarray]:
        vecs = np.array([[float(len(u))] * DIM for u in users], np.float32).reshape(-1, DIM)
        if self.nan_user in users:
            vecs[list(users).index(self.nan_user)] = np.nan
        return list(users), vecs, np.ones(len(users), np.float32)

    def item_rows(self, items: Sequence[str]) -> tuple[list[str], np.ndarray, np.ndarray]:
        known = [i for i in items if i in self.items]
        return known, np.full((len(known), DIM), 2.0, np.float32), np.zeros(len(known))

    def item_vectors(self) -> ItemMatrix:
        self.matrix_builds += 1
        n = len(self.items)
        return ItemMatrix(list(self.items), np.zeros((n, DIM), np.float32), np.zeros(n))

    def user_segments(self, user: str) -> tuple[str, ...]:
        return ("country=DE",) if user == "alice" else ()

    def user_tokens(self, user: str) -> tuple[str, ...]:
        return ("country=DE",) if user == "alice" else ()

    def user_feature_vectors(self, tokens: Sequence[str]) -> dict[str, np.ndarray]:
        return {t: np.ones(DIM, np.float32) for t in tokens}


def _fresh(*events: tuple[str, str, int]) -> list[tuple[Any, Event]]:
    return [
        (
            SimpleNamespace(topic="t", partition=0, offset=n, timestamp=1000 + n),
            Event(user, item, "click", None, ts, {"country": "DE"} if user == "alice" else None),
        )
        for n, (user, item, ts) in enumerate(events)
    ]


def _assemble(model: _Model, fresh: list[tuple[Any, Event]], **kw: Any) -> batch_write.Assembled:
    gone = set(kw.pop("evicted_users", ()))
    args: dict[str, Any] = {
        "cfg": CFG,
        "model": model,
        "fresh": fresh,
        "by": batch_write.by_user(fresh, gone),
        "ends": {"t:0": len(fresh)},
        "stored": {"t:0": 0},
        "version": 7,
        "catalogue": {},
        "counts": Counter(e.user for _, e in fresh),
        "recs": {},
        "recs_version": None,
        "due": set(),
        "evicted_users": sorted(gone),
        "evicted_items": [],
        "matrix_written_at": 100.0,
        "matrix_dirty": False,
        "force_matrix": False,
        "now": 100.5,
        "wall_ns": 42,
    }
    args.update(kw)
    return batch_write.assemble(**args)


def test_one_row_per_user_with_their_events_and_finished_list() -> None:
    fresh = _fresh(("alice", "i1", 10), ("bob", "i2", 11), ("alice", "i3", 12))
    lists = {"alice": [("i2", 0.9)], "carol": [("i1", 0.5)]}
    out = _assemble(_Model(), fresh, recs=lists, recs_version=6, due={"bob", "carol"})
    b = out.batch
    rows = {r.user: r for r in b.users}
    assert sorted(rows) == ["alice", "bob"]
    alice = rows["alice"]
    assert alice.seen == [("i1", 10), ("i3", 12)] and alice.count == 2
    assert alice.trim is False  # 2 events, seen_max 2: nothing to trim
    assert alice.recs == [("i2", 0.9)] and rows["bob"].recs is None
    assert alice.features == {"country": "DE"}
    np.testing.assert_array_equal(alice.vec, [5.0] * DIM)
    assert b.recs == {"carol": [("i1", 0.5)]}  # a list without a row goes on its own
    assert b.recs_version == 6 and b.version == 7
    assert list(b.recs_due) == ["bob", "carol"]
    assert lists == {"alice": [("i2", 0.9)], "carol": [("i1", 0.5)]}  # not consumed
    assert [i.item for i in b.items] == ["i1", "i2", "i3"]
    assert b.popularity == {
        None: [("i1", -1.0), ("i2", -1.0), ("i3", -1.0)],
        "country=DE": [("i1", -2.0), ("i3", -2.0)],
    }
    assert list(b.user_feature_vectors) == ["country=DE"]
    assert b.model_meta == {
        "dim": DIM,
        "global_bias": 0.5,
        "pop_half_life_ms": pytest.approx(CFG.model.popularity_half_life_s * 1000),
    }
    assert b.seen_max == 2
    assert out.newest == {"alice": 1002, "bob": 1001}


def test_the_offset_fence_moves_from_what_redis_holds() -> None:
    fresh = _fresh(("alice", "i1", 10))
    b = _assemble(_Model(), fresh, ends={"t:0": 5}, stored={"t:0": 4, "t:1": 9}).batch
    assert b.expected_offsets == {"t:0": 4} and b.new_offsets == {"t:0": 5}
    # a write without events (lists, a matrix) fences on every stored offset, unchanged
    b = _assemble(_Model(), [], ends={}, stored={"t:0": 4, "t:1": 9}).batch
    assert b.expected_offsets == {"t:0": 4, "t:1": 9} and b.new_offsets == b.expected_offsets
    # re-learned events below the stored offset never move it back
    b = _assemble(_Model(), fresh, ends={"t:0": 2}, stored={"t:0": 4}).batch
    assert b.new_offsets == {"t:0": 4}


def test_the_item_matrix_goes_out_at_most_every_interval() -> None:
    model, fresh = _Model(), _fresh(("bob", "i1", 10))
    interval_s = batch_write.matrix_interval_ms(model.n_items, CFG) / 1000
    recent = _assemble(model, fresh, matrix_written_at=100.0, now=100.0 + interval_s / 2)
    assert recent.batch.matrix is None and recent.matrix_dirty
    assert recent.matrix_written_at == 100.0 and model.matrix_builds == 0
    late = _assemble(model, fresh, matrix_written_at=100.0, now=100.0 + interval_s)
    assert late.batch.matrix is not None and not late.matrix_dirty
    assert late.matrix_written_at == 100.0 + interval_s
    assert late.batch.matrix_version == 42
    for why in (
        {"force_matrix": True},
        {"catalogue": {("item", "i9"): {"c": 1}}},
        {"evicted_items": ["i2"]},
        {"matrix_written_at": None},
    ):
        assert _assemble(model, fresh, **why).batch.matrix is not None, why
    # nothing new and nothing dirty: not dirty after a write without the matrix
    assert not _assemble(model, [], ends={}).matrix_dirty


def test_catalogue_features_and_evicted_ids() -> None:
    fresh = _fresh(("alice", "i1", 10), ("gone", "i2", 11))
    cat = {("item", "i3"): {"colour": "red"}, ("user", "dave"): None}
    out = _assemble(_Model(), fresh, catalogue=cat, evicted_users=["gone"], evicted_items=["i2"])
    b = out.batch
    assert [r.user for r in b.users] == ["alice"]  # evicted by this very batch
    assert b.item_features == {"i3": {"colour": "red"}} and b.user_features == {"dave": None}
    assert [i.item for i in b.items] == ["i1", "i2", "i3"]
    assert list(b.evicted_users) == ["gone"] and list(b.evicted_items) == ["i2"]
    assert list(b.popularity_segments) == ["country=DE"]
    lists = {"alice": [("i1", 1.0), ("i2", 0.5)], "gone": [("i1", 1.0)]}
    assert batch_write.drop_evicted(lists, {"gone"}, {"i2"}) == {"alice": [("i1", 1.0)]}


def test_non_finite_user_vectors_are_a_bug_never_written() -> None:
    model = _Model()
    model.nan_user = "bob"
    with pytest.raises(RuntimeError, match="non-finite user vectors"):
        _assemble(model, _fresh(("bob", "i1", 10)))
