"""Time-decayed popularity: decay, segments, far-future clamps, exact k, persistence.

numpy only: these tests do not import TensorFlow.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from streamrec.model.popularity import DecayedPopularity
from streamrec.model.testing import Event

H = 3600.0  # half-life of one hour, in seconds
HOUR_MS = 3_600_000
T0 = 1_700_000_000_000


def pop(**kw: object) -> DecayedPopularity:
    return DecayedPopularity(H, clock=lambda: T0 / 1000 + 10 * 24 * 3600, **kw)  # type: ignore[arg-type]


def test_counts_halve_every_half_life() -> None:
    p = pop()
    p.update([Event("u", "a", "view", None, T0)])
    assert p.top(1, now_ms=T0) == [("a", pytest.approx(1.0))]
    assert p.top(1, now_ms=T0 + HOUR_MS)[0][1] == pytest.approx(0.5)
    assert p.top(1, now_ms=T0 + 3 * HOUR_MS)[0][1] == pytest.approx(0.125)
    # A recent view outweighs two old ones.
    p.update([Event("u", "b", "view", None, T0 - 2 * HOUR_MS)] * 2)
    p.update([Event("u", "c", "view", None, T0 + HOUR_MS)])
    assert [i for i, _ in p.top(3, now_ms=T0 + HOUR_MS)] == ["c", "a", "b"]


def test_weights_ratings_and_negatives() -> None:
    p = pop()
    p.update(
        [
            Event("u", "bought", "purchase", None, T0),  # weight 4
            Event("u", "viewed", "view", None, T0),  # weight 1
            Event("u", "liked", "rating", 5.0, T0),  # a positive rating counts (weight 1)
            Event("u", "meh", "rating", 3.0, T0),  # neither: not counted
            Event("u", "hated", "dislike", None, T0),  # negative weight: not counted
            Event("u", "odd", "no-such-type", None, T0),
        ]
    )
    assert dict(p.top(10, now_ms=T0)) == {"bought": 4.0, "viewed": 1.0, "liked": 1.0}


def test_exactly_k_sorted_with_exclusions_and_tie_break() -> None:
    p = pop()
    p.update([Event("u", i, "view", None, T0) for i in ["d", "b", "a", "c"]])
    p.update([Event("u", "z", "click", None, T0)])
    assert [i for i, _ in p.top(3)] == ["z", "a", "b"]  # ties by id
    assert [i for i, _ in p.top(10, exclude={"a", "nope"})] == ["z", "b", "c", "d"]
    assert p.top(0) == [] and pop().top(5) == []


def test_segments_follow_user_features() -> None:
    p = pop(segment_features={"country"})
    de = {"country": "DE", "age": "30"}
    fr = {"country": "FR", "age": "30"}
    p.update([Event(f"u{j}", "wurst", "view", None, T0, de) for j in range(3)])
    p.update([Event(f"v{j}", "brie", "view", None, T0, fr) for j in range(5)])
    assert p.segments() == ["country=DE", "country=FR"]  # "age" is not a segment feature
    assert [i for i, _ in p.top(5, segment="country=DE")] == ["wurst"]
    assert [i for i, _ in p.top(5)] == ["brie", "wurst"]
    assert p.best_segment(["country=DE", "age=30"]) == "country=DE"
    assert p.best_segment(["country=XX"]) is None
    assert p.top(5, segment="country=XX") == []
    assert p.scores("country=FR") == {"brie": pytest.approx(5.0)}


def test_far_future_timestamps_are_clamped_and_never_overflow() -> None:
    p = pop()
    p.update([Event("u", "a", "view", None, T0)] * 3)
    p.update([Event("u", "evil", "view", None, 2**62)])  # year 146 million
    # Clamped to clock + 1 day: a's 3 views are 10 days older than evil's one, not 146e6 years.
    scores = p.scores()
    assert all(math.isfinite(v) for v in scores.values())
    assert scores["evil"] > 0 and scores["a"] > 0
    assert p.top(2, now_ms=2**62)[0][0] == "evil"  # decays to 0 but keeps the order
    assert all(math.isfinite(s) for _, s in p.top(2, now_ms=2**62))


def test_reference_moves_without_losing_precision() -> None:
    """Events over 2000 half-lives: values relative to the reference stay representable."""
    p = DecayedPopularity(H, clock=lambda: T0 / 1000 + 3000 * H)
    naive: dict[str, float] = {}
    now = T0 + 2000 * HOUR_MS
    rng = np.random.default_rng(0)
    for step in range(0, 2001, 50):
        ts = T0 + step * HOUR_MS
        for item in rng.choice(["a", "b", "c", "d"], size=3).tolist():
            p.update([Event("u", item, "view", None, ts)])
            naive[item] = naive.get(item, 0.0) + 2.0 ** (-(now - ts) / HOUR_MS)
    assert p.ref_ms is not None and p.ref_ms > T0
    got = p.scores(now_ms=now)
    for item, v in naive.items():
        assert got[item] == pytest.approx(v, rel=1e-9)


def test_state_roundtrip() -> None:
    p = pop()
    p.update(
        [Event(f"u{j}", f"i{j % 4}", "view", None, T0 + j, {"c": str(j % 2)}) for j in range(20)]
    )
    arrays, info = p.state()
    q = pop()
    q.load_state(arrays, info)
    assert q.top(10) == p.top(10)
    assert q.segments() == p.segments()
    assert q.top(10, segment="c=1") == p.top(10, segment="c=1")


def test_log_scores_are_time_invariant_and_rank_like_counts() -> None:
    p = pop(segment_features={"country"})
    p.update([Event("u", "a", "view", None, T0)] * 4)
    p.update([Event("u", "b", "view", None, T0 + 2 * HOUR_MS, {"country": "DE"})])
    before = p.log_scores(["a", "b", "missing"])
    assert set(before) == {"a", "b"}
    # log2 of counts decayed to the epoch: 4 views two half-lives before one view tie.
    assert before["a"] == pytest.approx(before["b"])
    p.update([Event("u", "c", "view", None, T0 + 40 * HOUR_MS)])  # moves the reference
    after = p.log_scores()
    assert after["a"] == pytest.approx(before["a"]) and after["b"] == pytest.approx(before["b"])
    assert after["c"] > after["a"]
    order = sorted(after, key=lambda i: -after[i])
    assert order[0] == "c" and [i for i, _ in p.top(1)] == ["c"]
    assert set(p.log_scores(segment="country=DE")) == {"b"}
    assert p.log_scores(["b"], segment="country=DE") == {"b": pytest.approx(before["b"])}
    # the per-item lookup (the trainer's path) agrees with the whole-segment export
    full = p.log_scores(segment="country=DE")
    assert p.log_scores(["a", "b", "missing"], segment="country=DE") == full
    assert p.log_scores(["b"], segment="country=XX") == {}
