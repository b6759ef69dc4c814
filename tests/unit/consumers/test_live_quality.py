"""The live-quality monitor on hand-built batches: which sampled events are scored, their
hits and NDCG over the window, coverage and popular share of the served lists."""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import numpy as np
import pytest
from prometheus_client import generate_latest

from streamrec.consumers.live_quality import LiveQuality
from streamrec.consumers.metrics import TrainerMetrics
from streamrec.model.base import ItemMatrix
from streamrec.model.eval_state import PositiveRule
from streamrec.model.testing import Event

CATALOGUE = [f"i{n}" for n in range(200)]


class FakePopularity:
    def top(self, k: int) -> list[tuple[str, float]]:
        # i0 most popular, then i1, ...
        return [(i, float(200 - n)) for n, i in enumerate(CATALOGUE[:k])]


class FakeModel:
    """Ranks every user's items in catalogue order (i0 first), minus the excluded ones: cold
    users by `recommend_many`; known users' vectors [1, 0] against an item matrix of
    vectors [1 - row / 1000, 0]."""

    n_items = len(CATALOGUE)
    popularity = FakePopularity()

    def __init__(self) -> None:
        self.asked: list[tuple[list[str], int]] = []
        self.user_vec = [1.0, 0.0]

    def item_vectors(self) -> ItemMatrix:
        n = len(CATALOGUE)
        vecs = np.zeros((n, 2), np.float32)
        vecs[:, 0] = 1 - np.arange(n) / 1000  # i0 [1, 0], i199 [0.801, 0]
        return ItemMatrix(list(CATALOGUE), vecs, np.zeros(n, np.float32))

    def recommend_many(
        self,
        users: Sequence[str],
        k: int = 10,
        exclude: Mapping[str, Collection[str]] | None = None,
    ) -> dict[str, list[tuple[str, float]]]:
        self.asked.append((list(users), k))
        ex = exclude or {}
        out = {}
        for u in users:
            lst = [i for i in CATALOGUE if i not in ex.get(u, ())][:k]
            out[u] = [(i, 1.0 / (j + 1)) for j, i in enumerate(lst)]
        return out

    def user_vectors(self, users: Sequence[str]) -> tuple[list[str], np.ndarray, np.ndarray]:
        n = len(users)
        return list(users), np.tile(np.float32(self.user_vec), (n, 1)), np.zeros(n, np.float32)

    def exclude_rows(self, exclude: Collection[str]) -> np.ndarray:
        return np.asarray(sorted(int(i[1:]) for i in exclude), np.int64)


def monitor(
    window: int = 100, served_window: int = 100, rate: float = 1.0, cap: int = 1000
) -> LiveQuality:
    return LiveQuality(
        sample_rate=rate,
        max_per_batch=cap,
        window=window,
        served_window=served_window,
        positives=PositiveRule(),  # view, click, add_to_cart, purchase; rating >= 4
        seed=0,
    )


BATCH = [
    Event("u1", "i3", "view"),  # 0: known; seen {i0, i1}: i2, i3, .. -> rank 2, a hit
    Event("u2", "i15", "purchase"),  # 1: cold; ranked i0..i9: a miss
    Event("u1", "i3", "click"),  # 2: i3 earlier in the batch: a repeat, not scored
    Event("u1", "i4", "rating", 2.0),  # 3: not a positive
    Event("u1", "i12", "view"),  # 4: i3, i4 earlier: i2, i5..i13 -> rank 9, a hit
    Event("u3", "i11", "view"),  # 5: known; seen {i0}: i1..i10 -> rank 11, a miss
]
COUNTS = {"u1": 5, "u3": 1}  # u2 has no learned event: cold
SEEN = {"u1": ["i0", "i1"], "u3": ["i0"]}


def score(q: LiveQuality, model: FakeModel, reads: list[list[str]]) -> Any:
    def read_seen(users: list[str]) -> dict[str, list[str]]:
        reads.append(users)
        return {u: SEEN.get(u, []) for u in users}

    return q.score_batch(model, BATCH, counts=COUNTS, read_seen=read_seen, picked=range(6))


def test_golden_hits_ndcg_and_window() -> None:
    # known ranks [2, 9, 0]: HR 2/3; NDCG (1/log2(3) + 1/log2(10) + 0) / 3
    #   = (0.630930 + 0.301030) / 3 = 0.310653
    # cold ranks [0]: HR 0, NDCG 0
    q, model, reads = monitor(), FakeModel(), []
    s = score(q, model, reads)
    assert s.samples == {"known": 3, "cold": 1}
    assert s.hits == {"known": 2, "cold": 0}
    assert s.repeats == 1
    assert reads == [["u1", "u3"]]  # seen sets of known users only, one read
    # the model is asked for cold users only (10, none earlier in the batch)
    assert model.asked == [(["u2"], 10)]
    assert q.hr("known") == pytest.approx(2 / 3)
    assert q.ndcg("known") == pytest.approx((1 / math.log2(3) + 1 / math.log2(10)) / 3)
    assert q.hr("cold") == 0.0 and q.ndcg("cold") == 0.0

    # a window of 2 keeps the last two known ranks [9, 0]: HR 1/2, NDCG 0.301030 / 2
    w = monitor(window=2)
    score(w, FakeModel(), [])
    assert w.hr("known") == pytest.approx(0.5)
    assert w.ndcg("known") == pytest.approx(1 / math.log2(10) / 2)


def test_known_users_are_ranked_as_the_model_was_before_the_batch() -> None:
    # begin captures u3's vector [1, 0]; the model then "learns" ([-1, 0] ranks i199 first).
    # finish, with u3's seen set {i0}: ranked from the captured vector, i1..i10, and i5 at
    # rank 5 is a hit; with the new vector i5 would be far down.
    q, model = monitor(), FakeModel()
    scored, pending = q.begin(
        model, [Event("u3", "i5", "view")], counts={"u3": 1}, picked=[0], matrix=None
    )
    assert scored.samples == {"known": 0, "cold": 0} and pending is not None
    model.user_vec = [-1.0, 0.0]
    s = q.finish(model, pending, {"u3": ["i0"]})
    assert s.samples["known"] == 1 and s.hits["known"] == 1
    assert list(q.ranks["known"]) == [5]
    # the seen set read at finish decides repeats: i5 seen -> a repeat, not scored
    _, pending = q.begin(model, [Event("u3", "i5", "view")], counts={"u3": 1}, picked=[0])
    assert pending is not None
    assert q.finish(model, pending, {"u3": ["i5"]}).repeats == 1
    assert list(q.ranks["known"]) == [5]


def test_served_coverage_and_popular_share() -> None:
    # window of 3 lists: ub [i0 i3 i4], uc [i5 i0 i6], ud [i7 i8 i9] (ua's left it)
    # distinct items 8 of 200 known: coverage 0.04; top 1 % of 200 = {i0, i1}:
    # i0 holds 2 of the 9 slots -> popular share 2/9
    q = monitor(served_window=3)
    assert math.isnan(q.coverage(200)) and math.isnan(q.popular_share(["i0"]))
    q.served(
        {"ua": [("i0", 3.0), ("i1", 2.0), ("i2", 1.0)], "ub": [("i0", 1), ("i3", 1), ("i4", 1)]}
    )
    q.served({"uc": [("i5", 1.0), ("i0", 0.5), ("i6", 0.1)]})
    q.served({"ud": [("i7", 1.0), ("i8", 0.5), ("i9", 0.1)]})
    model = FakeModel()
    assert q.popular_items(model) == ["i0", "i1"]
    assert q.coverage(200) == pytest.approx(8 / 200)
    assert q.popular_share(q.popular_items(model)) == pytest.approx(2 / 9)
    # i0 evicted: 7 items of 200, 7 slots, none popular
    q.forget(["i0"])
    assert q.coverage(200) == pytest.approx(7 / 200)
    assert q.popular_share(["i0", "i1"]) == 0.0
    # ub leaves the window: i0's slot there was forgotten already; i3, i4 go
    q.served({"ue": [("i1", 1.0)]})
    assert q.coverage(200) == pytest.approx(6 / 200)  # i5 i6 i7 i8 i9 i1
    assert q.popular_share(["i0", "i1"]) == pytest.approx(1 / 6)  # 1 of 6 slots


def test_sampling_rate_and_cap() -> None:
    assert monitor(rate=0.0).pick(10_000) == []
    got = monitor(cap=4).pick(10)
    assert len(got) == 4 and got == sorted(set(got)) and all(0 <= j < 10 for j in got)
    # Binomial(10000, 0.5): mean 5000, s.d. 50; 5 s.d. either side
    n = len(monitor(rate=0.5, cap=10_000).pick(10_000))
    assert 4750 <= n <= 5250
    # rate 0: nothing scored, nothing asked of the model
    q, model = monitor(rate=0.0), FakeModel()
    s = q.score_batch(model, BATCH, counts=COUNTS, read_seen=lambda us: {})
    assert s.samples == {"known": 0, "cold": 0} and model.asked == []


def test_published_series() -> None:
    q, metrics = monitor(served_window=10), TrainerMetrics()
    before = generate_latest(metrics.registry).decode()
    assert 'streamrec_live_quality_samples_total{users="known"} 0.0' in before
    assert "streamrec_live_hr10{" not in before  # no gauge before a sample
    q.publish_samples(metrics, score(q, FakeModel(), []))
    q.served({"ua": [("i0", 1.0), ("i5", 0.5)]})
    q.publish_served(metrics, FakeModel())
    text = generate_latest(metrics.registry).decode()
    assert 'streamrec_live_quality_samples_total{users="known"} 3.0' in text
    assert 'streamrec_live_quality_hits_total{users="known"} 2.0' in text
    assert 'streamrec_live_quality_samples_total{users="cold"} 1.0' in text
    assert f'streamrec_live_hr10{{users="known"}} {2 / 3!r}' in text
    assert 'streamrec_live_hr10{users="cold"} 0.0' in text
    assert f"streamrec_served_catalogue_coverage {2 / 200!r}" in text  # i0, i5 of 200
    assert "streamrec_served_popular_share 0.5" in text  # i0 in 1 of 2 slots


def test_known_users_are_ranked_against_the_snapshot() -> None:
    # Snapshot of 12 items, all [1, 0], biases 0.1 * row: user [1, 0] ranks i11, i10, .., i0
    # (the model's own ranking would start at i0). u3's seen set {i0, i150}: i150 is past
    # the snapshot and dropped from the exclusion. 10 + 1 asked (query 1 drops i11 after).
    # query 0, i11: rank 1; query 1, i1 with i11 earlier: i10..i1 -> rank 10.
    # HR 2/2; NDCG (1 + 1/log2(11)) / 2
    snap = ItemMatrix(
        CATALOGUE[:12], np.tile(np.float32([1.0, 0.0]), (12, 1)), np.float32(np.arange(12) / 10)
    )
    q, model = monitor(), FakeModel()
    s = q.score_batch(
        model,
        [Event("u3", "i11", "view"), Event("u3", "i1", "view")],
        counts={"u3": 1},
        read_seen=lambda us: {"u3": ["i0", "i150"]},
        picked=[0, 1],
        matrix=snap,
    )
    assert s.samples["known"] == 2 and s.hits["known"] == 2
    assert list(q.ranks["known"]) == [1, 10]
    assert q.ndcg("known") == pytest.approx((1 + 1 / math.log2(11)) / 2)
    assert model.asked == []  # cold users only go to recommend_many


def test_an_empty_snapshot_is_a_miss_not_an_error() -> None:
    empty = ItemMatrix([], np.zeros((0, 2), np.float32), np.zeros(0, np.float32))
    q, model = monitor(), FakeModel()
    _, pending = q.begin(
        model, [Event("u3", "i5", "view")], counts={"u3": 1}, picked=[0], matrix=empty
    )
    assert pending is not None
    s = q.finish(model, pending, {})
    assert s.samples["known"] == 1 and s.hits["known"] == 0
    assert q.hr("known") == 0.0
