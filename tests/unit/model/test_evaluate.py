"""Prequential evaluator, metrics, baselines and embedding views (in-process; no servers).

Oracle models pin the evaluator's mechanics (an always-right model scores HR 1, an always-wrong
one 0, exclusions and warm-up are applied as stated, equal timestamps keep their order); the
metrics have golden values with the arithmetic in comments; the baselines follow the model
protocol and the learned one beats popularity on planted structure.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from streamrec.consumers.views import explain, label_separation, pca_2d, plot_item_pca
from streamrec.model.base import ItemMatrix, LearnResult
from streamrec.model.baselines import (
    DecayedPopularityBaseline,
    OnlineMF,
    PopularityBaseline,
    make_baselines,
    restore_baseline,
)
from streamrec.model.evaluate import (
    EvalConfig,
    EvalState,
    PositiveRule,
    Tally,
    clustered_se,
    coverage,
    hit_rate,
    mrr,
    ndcg,
    plot_report,
    prequential,
    prequential_fresh,
    rank_of,
    sampled_auc,
    write_report,
)
from streamrec.model.testing import Event, planted_stream

T0 = 1_700_000_000_000


# ----------------------------------------------------------------------------- test models


class Scripted:
    """A model whose answers are a function of (user, exclude, what it has learned)."""

    def __init__(self, answer: Any) -> None:
        self.answer = answer
        self.learned: list[Event] = []
        self.batch_sizes: list[int] = []
        self.calls: list[tuple[str, int, frozenset[str]]] = []

    def learn(self, events: Sequence[Any]) -> LearnResult:
        self.learned.extend(events)
        self.batch_sizes.append(len(events))
        return LearnResult(len(events), math.nan, False)

    def recommend(
        self, user: str, k: int = 10, exclude: Collection[str] = (), user_features: Any = None
    ) -> list[tuple[str, float]]:
        self.calls.append((user, k, frozenset(exclude)))
        items = [i for i in self.answer(self, user, exclude) if i not in exclude]
        return [(i, float(-j)) for j, i in enumerate(items[:k])]

    def recommend_many(
        self,
        users: Sequence[str],
        k: int = 10,
        exclude: Mapping[str, Collection[str]] | None = None,
    ) -> dict[str, list[tuple[str, float]]]:
        ex = exclude or {}
        return {u: self.recommend(u, k, ex.get(u, ())) for u in users}


def oracle(stream: list[Event]) -> Scripted:
    """Knows the future: recommends the item of the first event it has not learned yet."""
    return Scripted(lambda m, u, ex: [stream[len(m.learned)].item])


def wrong() -> Scripted:
    return Scripted(lambda m, u, ex: [f"never-{j}" for j in range(20)])


def distinct_stream(n: int = 40) -> list[Event]:
    """Every event a new (user, item) pair: no repeats, so every positive is scored."""
    return [Event(f"u{j % 7}", f"i{j}", "view", None, T0 + j) for j in range(n)]


# ----------------------------------------------------------------------------- metrics


def test_metric_golden_values() -> None:
    # ranks 1, miss, 3, 7 at k=10
    ranks = [1, 0, 3, 7]
    assert hit_rate(ranks, 10) == pytest.approx(3 / 4)
    # NDCG = mean(1/log2(2), 0, 1/log2(4), 1/log2(8)) = (1 + 0 + 0.5 + 1/3) / 4
    assert ndcg(ranks, 10) == pytest.approx((1 + 0.5 + 1 / 3) / 4)
    assert ndcg([3], 10) == pytest.approx(0.5)  # a hit at rank 3: 1/log2(4) = 0.5
    # MRR = (1 + 0 + 1/3 + 1/7) / 4
    assert mrr(ranks, 10) == pytest.approx((1 + 1 / 3 + 1 / 7) / 4)
    # at k=3 the rank-7 hit no longer counts: HR 2/4, NDCG (1 + 0.5)/4, MRR (1 + 1/3)/4
    assert hit_rate(ranks, 3) == pytest.approx(0.5)
    assert ndcg(ranks, 3) == pytest.approx(1.5 / 4)
    assert mrr(ranks, 3) == pytest.approx((4 / 3) / 4)
    assert math.isnan(hit_rate([], 10))
    # AUC: 0.5 beats 0.1 and 0.2, ties 0.5 (counts 1/2), loses to 0.9: (2 + 0.5) / 4
    assert sampled_auc(0.5, [0.1, 0.5, 0.9, 0.2]) == pytest.approx(0.625)
    assert sampled_auc(-math.inf, [0.0, 1.0]) == 0.0  # an unscoreable positive loses
    assert math.isnan(sampled_auc(1.0, []))
    assert coverage(["a", "b", "a"], 4) == pytest.approx(0.5)  # 2 distinct of 4
    assert rank_of("c", ["a", "b", "c"]) == 3 and rank_of("z", ["a"]) == 0


def test_fixed_list_golden_report() -> None:
    """A model that always answers x, y, z: one query hits at 1, one at 3, one misses.

    HR@3 = 2/3; NDCG@3 = (1/log2(2) + 1/log2(4) + 0) / 3 = (1 + 0.5) / 3 = 0.5;
    MRR@3 = (1 + 1/3 + 0) / 3 = 4/9. Users differ, so nothing is excluded.
    """
    events = [
        Event("a", "x", "view", None, T0),
        Event("b", "z", "click", None, T0 + 1),
        Event("c", "w", "purchase", None, T0 + 2),
    ]
    fixed = Scripted(lambda m, u, ex: ["x", "y", "z"])
    r = prequential(events, {"fixed": fixed}, EvalConfig(k=3, warmup=0.0, auc_negatives=0))
    o = r["models"]["fixed"]["overall"]
    assert o["n"] == 3
    assert o["hr"] == pytest.approx(2 / 3)
    assert o["ndcg"] == pytest.approx(0.5)
    assert o["mrr"] == pytest.approx(4 / 9)
    # coverage: the catalogue before the last query is {x, z}; both were recommended, and y
    # (never in the stream) does not count: 2 / 2
    assert o["coverage"] == pytest.approx(1.0)


# ----------------------------------------------------------------------------- mechanics


@pytest.mark.parametrize("batch_size", [1, 5])
def test_oracle_scores_one_and_wrong_scores_zero(batch_size: int) -> None:
    stream = distinct_stream(40)
    cfg = EvalConfig(k=5, batch_size=batch_size, warmup=0.0, auc_negatives=0)
    models: dict[str, Any] = {"wrong": wrong()}
    if batch_size == 1:  # the oracle's "next unlearned event" is the scored one only at 1
        models["oracle"] = oracle(stream)
    r = prequential(stream, models, cfg)
    assert r["models"]["wrong"]["overall"]["hr"] == 0.0
    assert r["models"]["wrong"]["overall"]["n"] == 40
    if batch_size == 1:
        o = r["models"]["oracle"]["overall"]
        assert o["hr"] == 1.0 and o["ndcg"] == 1.0 and o["mrr"] == 1.0


def test_batches_are_scored_before_they_are_learned() -> None:
    stream = distinct_stream(10)
    seen_at_call: list[int] = []
    m = Scripted(lambda m, u, ex: seen_at_call.append(len(m.learned)) or [])
    prequential(stream, {"m": m}, EvalConfig(batch_size=4, warmup=0.0, auc_negatives=0))
    # batches [0..3], [4..7], [8, 9]: every call of a batch sees only earlier batches learned
    assert sorted(set(seen_at_call)) == [0, 4, 8]
    assert m.batch_sizes == [4, 4, 2]


def test_earlier_items_are_excluded_and_repeats_skipped() -> None:
    events = [
        Event("u", "a", "view", None, T0),
        Event("u", "d", "dislike", None, T0 + 1),  # not scored, but excluded from now on
        Event("u", "b", "view", None, T0 + 2),
        Event("u", "a", "click", None, T0 + 3),  # repeat: cannot hit once excluded -> skipped
        Event("u", "c", "view", None, T0 + 4),
    ]
    # The model ignores `exclude`-unaware answers: it proposes everything, the evaluator must
    # still never count an earlier item.
    m = Scripted(lambda m, u, ex: ["a", "b", "c", "d"])
    r = prequential(events, {"m": m}, EvalConfig(k=4, batch_size=1, warmup=0.0, auc_negatives=0))
    excludes = [ex for _, _, ex in m.calls]
    assert excludes == [frozenset(), frozenset({"a", "d"}), frozenset({"a", "b", "d"})]
    assert r["stream"]["skipped_repeats"] == 1
    assert r["stream"]["queries"] == 3  # a, b, c; the dislike is no positive, the repeat skipped
    # every query hits: a at 1 (nothing excluded), b at 1 (a, d excluded), c at 1
    assert r["models"]["m"]["overall"]["hr"] == 1.0
    assert r["models"]["m"]["overall"]["mrr"] == 1.0


def test_items_earlier_in_the_same_batch_are_excluded_too() -> None:
    events = [Event("u", "a", "view", None, T0), Event("u", "b", "view", None, T0 + 1)]
    m = Scripted(lambda m, u, ex: ["a", "b", "c"])
    r = prequential(events, {"m": m}, EvalConfig(k=1, batch_size=2, warmup=0.0, auc_negatives=0))
    # one call for the batch, asking for k + 1 (one earlier item of the user in the batch)
    assert [(u, k) for u, k, _ in m.calls] == [("u", 2)]
    # query a: [a] -> hit; query b: "a" came earlier in the batch, dropped -> [b] -> hit
    assert r["models"]["m"]["overall"]["hr"] == 1.0
    assert r["models"]["m"]["by_history"]["1-4"]["n"] == 1  # b had one earlier event


def test_equal_timestamps_keep_input_order() -> None:
    events = [
        Event("u1", "x", "view", None, T0 + 5),
        Event("u2", "y", "view", None, T0 + 5),
        Event("u3", "z", "view", None, T0 + 1),
        Event("u4", "w", "view", None, T0 + 5),
    ]
    m = Scripted(lambda m, u, ex: [])
    prequential(events, {"m": m}, EvalConfig(batch_size=1, warmup=0.0, auc_negatives=0))
    assert [e.item for e in m.learned] == ["z", "x", "y", "w"]
    assert [u for u, _, _ in m.calls] == ["u3", "u1", "u2", "u4"]


def test_warmup_is_learned_but_not_scored() -> None:
    stream = distinct_stream(20)
    m = Scripted(lambda m, u, ex: [])
    r = prequential(stream, {"m": m}, EvalConfig(batch_size=3, warmup=0.25, auc_negatives=0))
    assert r["stream"]["warmup_events"] == 5  # floor(0.25 * 20)
    assert r["stream"]["queries"] == 15
    assert len(m.learned) == 20
    assert r["models"]["m"]["by_decile"][0]["n"] == 0  # events 0-1: warm-up
    assert r["models"]["m"]["by_decile"][2]["n"] == 1  # events 4-5: 4 is warm-up, 5 is not
    assert sum(d["n"] for d in r["models"]["m"]["by_decile"]) == 15


def test_positive_rule_follows_the_model_weights() -> None:
    rule = PositiveRule.from_weights({"view": 1.0, "dislike": -1.0, "rating": 1.0}, 4.0)
    assert rule(Event("u", "i", "view"))
    assert not rule(Event("u", "i", "dislike"))
    assert rule(Event("u", "i", "rating", 4.0)) and not rule(Event("u", "i", "rating", 3.5))
    assert not rule(Event("u", "i", "rating", None))
    assert not rule(Event("u", "i", "unknown"))


def test_history_and_cold_start_slices() -> None:
    cfg = EvalConfig(k=1, auc_negatives=0, warmup=0.0)
    state = EvalState(cfg, 6)
    events = [
        Event("new", "i1", "view", None, T0),  # cold user, cold item
        Event("new", "i2", "view", None, T0 + 1),  # history 1, cold item
        Event("old", "i1", "view", None, T0 + 2),  # cold user, warm item (i1 earlier in batch)
    ]
    qs = state.queries(events, 0)
    assert [(q.history, q.cold_item) for q in qs] == [(0, True), (1, True), (0, False)]
    t = Tally(1)
    t.add_batch(qs, [["i1"], ["x"], ["i1"]], state)
    s = t.slices(6, 3)
    assert s["by_history"]["0"]["n"] == 2 and s["by_history"]["0"]["hr"] == 1.0
    assert s["by_history"]["1-4"]["hr"] == 0.0
    assert s["cold_start"]["user"]["n"] == 2 and s["cold_start"]["item"]["n"] == 2


def test_auc_negatives_are_shared_and_unseen() -> None:
    stream = [Event(f"u{j % 3}", f"i{j % 30}", "view", None, T0 + j) for j in range(90)]
    cfg = EvalConfig(k=5, batch_size=10, warmup=0.5, auc_negatives=10, skip_repeats=False)
    state = EvalState(cfg, len(stream))
    state.observe(stream[:45])
    for q in state.queries(stream[45:55], 45):
        assert q.item not in q.negatives
        assert not set(q.negatives) & state.history.get(q.user, set())
        assert len(q.negatives) <= 10


def test_report_json_and_plot(tmp_path: Path) -> None:
    stream = list(planted_stream(40, 30, 1500, seed=1))
    models = make_baselines()
    r = prequential(stream, models, EvalConfig(batch_size=100, auc_share=0.5))
    assert set(r["models"]) == set(models)
    for m in r["models"].values():
        assert 0.0 <= m["overall"]["hr"] <= 1.0
        assert m["overall"]["auc"] is not None and 0.0 <= m["overall"]["auc"] <= 1.0
        assert len(m["by_decile"]) == 10 and set(m["by_history"]) == {
            "0",
            "1-4",
            "5-19",
            "20-99",
            "100+",
        }
    assert set(r["ratios"]) == {"popularity/decayed_popularity", "popularity/online_mf"}
    import json

    path = write_report(r, tmp_path / "q.json")
    assert json.loads(path.read_text())["k"] == 10
    png = plot_report(r, tmp_path / "q.png")
    assert png.stat().st_size > 10_000


# ----------------------------------------------------------------------------- baselines


def test_popularity_counts_positives_with_exclusion_and_id_ties() -> None:
    p = PopularityBaseline()
    p.learn(
        [
            Event("u", "b", "view"),
            Event("u", "a", "view"),
            Event("v", "c", "click"),
            Event("v", "c", "dislike"),  # no positive
            Event("w", "d", "rating", 5.0),
            Event("w", "d", "rating", 2.0),  # a low rating is no positive
            Event("w", "e", "dislike"),
        ]
    )
    # counts: c 1, d 1, a 1, b 1, e 0; ties by id
    assert [i for i, _ in p.recommend("x", 4)] == ["a", "b", "c", "d"]
    assert [i for i, _ in p.recommend("x", 2, exclude={"a", "c"})] == ["b", "d"]
    many = p.recommend_many(["x", "y"], 1, {"y": {"a"}})
    assert many == {"x": [("a", 1.0)], "y": [("b", 1.0)]}
    assert p.user_vector("nobody") is None
    m = p.item_vectors()
    assert m.vectors.shape == (5, 1) and m.ids[0] == "b"


def test_decayed_popularity_prefers_recent() -> None:
    hour = 3_600_000
    p = DecayedPopularityBaseline(half_life_s=3600.0)
    p.learn([Event("u", "old", "view", None, T0)] * 3)
    p.learn([Event("u", "new", "view", None, T0 + 3 * hour)] * 2)  # 3 halvings: 3/8 < 2
    assert [i for i, _ in p.recommend("x", 2)] == ["new", "old"]
    s = p.score("x", ["old", "new", "unknown"])
    assert s[1] > s[0] and s[2] == -np.inf


def test_online_mf_beats_popularity_on_planted_clusters() -> None:
    stream = list(planted_stream(120, 80, 6000, n_clusters=6, seed=3))
    models = {"mf": OnlineMF(dim=16, seed=1), "pop": PopularityBaseline()}
    r = prequential(stream, models, EvalConfig(batch_size=64, auc_negatives=0))
    hr_mf = r["models"]["mf"]["overall"]["hr"]
    hr_pop = r["models"]["pop"]["overall"]["hr"]
    assert hr_mf > 1.5 * hr_pop, (hr_mf, hr_pop)  # measured: 0.55 vs 0.25


def test_baseline_save_restore_continues_identically(tmp_path: Path) -> None:
    stream = list(planted_stream(30, 20, 600, seed=2))
    for name, model in make_baselines(seed=4).items():
        model.learn(stream[:300])
        model.save(tmp_path / name, metadata={"at": 300})
        back, meta = restore_baseline(tmp_path / name)
        assert meta == {"at": 300} and type(back) is type(model)
        for m in (model, back):
            m.learn(stream[300:])
        users = ["u1", "u5", "nobody"]
        assert back.recommend_many(users, 5) == model.recommend_many(users, 5), name
        np.testing.assert_allclose(back.item_vectors().vectors, model.item_vectors().vectors)


def test_online_mf_explicit_negative_lowers_the_score() -> None:
    mf = OnlineMF(dim=4, learning_rate=0.1, seed=0)
    mf.learn([Event("u", "a", "view"), Event("u", "b", "view")])
    before = mf.score("u", ["b"])[0]
    mf.learn([Event("u", "b", "dislike")] * 5)
    assert mf.score("u", ["b"])[0] < before


# ----------------------------------------------------------------------------- views


def test_pca_and_explanations() -> None:
    rng = np.random.default_rng(0)
    centres = np.array([[5.0, 0, 0, 0], [0, 5.0, 0, 0], [0, 0, 5.0, 0]])
    labels = [f"g{j % 3}" for j in range(90)]
    vecs = centres[[j % 3 for j in range(90)]] + rng.normal(0, 0.3, (90, 4))
    xy, share = pca_2d(vecs)
    assert xy.shape == (90, 2) and 0.5 < share.sum() <= 1.0
    assert label_separation(xy, labels, ["g0", "g1", "g2"]) > 0.9

    m = ItemMatrix(
        ["a", "b", "c", "d"],
        np.array([[1.0, 0], [0, 1.0], [1.0, 1.0], [-1.0, 0]], dtype=np.float32),
        np.zeros(4, np.float32),
    )
    # c = (1, 1); history a=(1,0), b=(0,1), d=(-1,0): dots 1, 1, -1 over |H| = 3
    reasons = explain(m, ["a", "b", "d", "unknown"], "c", top=3)
    assert [r.item for r in reasons] == ["a", "b", "d"]
    assert reasons[0].contribution == pytest.approx(1 / 3)
    assert reasons[0].share == pytest.approx(0.5)  # of the positive terms 1/3 + 1/3
    assert reasons[0].cosine == pytest.approx(1 / math.sqrt(2))
    assert reasons[2].share == 0.0 and reasons[2].cosine == pytest.approx(-1 / math.sqrt(2))
    assert explain(m, ["a"], "zzz") == []


def test_item_pca_plot(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    ids = [f"i{j}" for j in range(60)]
    vecs = rng.normal(size=(60, 8)).astype(np.float32)
    vecs[0] = 0  # never trained: left out
    info = plot_item_pca(
        ItemMatrix(ids, vecs, np.zeros(60, np.float32)),
        {i: f"g{j % 4}" for j, i in enumerate(ids)},
        tmp_path / "pca.png",
    )
    assert info["items"] == 59 and Path(info["path"]).stat().st_size > 10_000


# ----------------------------------------------------------------------------- the demo's entry


def test_evaluate_synthetic_writes_report_and_plot(tmp_path: Path) -> None:
    """The function the demo calls, on a small stream with the real TF model."""
    from streamrec.consumers.quality import evaluate_synthetic
    from streamrec.model.config import ModelConfig
    from streamrec.streaming.synthetic import SyntheticConfig

    out: dict[str, Any] = {}
    r = evaluate_synthetic(
        SyntheticConfig(n_events=3000, n_users=200, n_items=100, seed=2),
        ModelConfig(dim=8, negatives=8, initial_capacity=64),
        k=10,
        out_dir=tmp_path,
        batch_size=256,
        models_out=out,
    )
    assert list(r["models"]) == ["model", "popularity", "decayed_popularity", "online_mf"]
    assert set(r["ratios"]) == {
        "model/popularity",
        "model/decayed_popularity",
        "model/online_mf",
    }
    assert r["models"]["model"]["overall"]["n"] == r["stream"]["queries"] > 500
    assert r["models"]["model"]["overall"]["auc"] is not None  # scored via user_vector
    assert (tmp_path / "quality.json").exists() and (tmp_path / "quality.png").exists()
    assert "model" in out and "stream" in out


# ----------------------------------------------------------------------------- fresh protocol


class Recorder(Scripted):
    """Remembers, at every request, which events it had learned by then."""

    def __init__(self) -> None:
        super().__init__(lambda m, u, ex: [])
        self.learned_at_call: list[tuple[str, list[Event]]] = []

    def recommend_many(
        self,
        users: Sequence[str],
        k: int = 10,
        exclude: Mapping[str, Collection[str]] | None = None,
    ) -> dict[str, list[tuple[str, float]]]:
        for u in users:
            self.learned_at_call.append((u, list(self.learned)))
        return super().recommend_many(users, k, exclude)


def interleaved_sessions() -> list[Event]:
    """Three users whose sessions overlap in time, every event a new item."""
    return [Event(f"u{j % 3}", f"i{j}", "view", None, T0 + j) for j in range(30)]


def test_fresh_learns_the_users_own_earlier_events_before_each_request() -> None:
    stream = interleaved_sessions()
    m = Recorder()
    cfg = EvalConfig(batch_size=1000, warmup=0.0, auc_negatives=0)
    r = prequential_fresh(stream, {"m": m}, cfg)
    assert r["mode"] == "fresh" and r["stream"]["queries"] == 30
    for j, (user, learned) in enumerate(m.learned_at_call):
        assert user == stream[j].user
        # An event is learned by now iff its user has asked since (no batch filled up): all
        # of this user's earlier events, and others' only up to their own last request.
        expected = [e for p, e in enumerate(stream[:j]) if p + 3 <= j]
        assert sorted(learned, key=lambda e: e.ts) == expected
        assert [e for e in learned if e.user == user] == [e for e in stream[:j] if e.user == user]
    # one learn per request with something pending (the user's own event), the rest at the end
    assert m.batch_sizes == [1] * 27 + [3]
    assert sorted(m.learned, key=lambda e: e.ts) == stream  # each event learned exactly once


def test_fresh_learns_everyone_pending_once_a_batch_is_full() -> None:
    stream = [Event(f"u{j}", f"i{j}", "view", None, T0 + j) for j in range(10)]
    m = Recorder()
    prequential_fresh(stream, {"m": m}, EvalConfig(batch_size=4, warmup=0.0, auc_negatives=0))
    # nobody comes back: only full batches are learned, 4 events at a time
    assert [learned for _, learned in m.learned_at_call] == [
        stream[: 4 * (j // 4)] for j in range(10)
    ]
    assert m.batch_sizes == [4, 4, 2]


def test_fresh_at_batch_one_is_exact_test_then_train() -> None:
    stream = list(planted_stream(40, 30, 800, seed=2))
    cfg = EvalConfig(batch_size=1, warmup=0.1, auc_negatives=0)
    a = prequential_fresh(stream, make_baselines(seed=1), cfg)
    b = prequential(stream, make_baselines(seed=1), cfg)
    for name in a["models"]:
        assert a["models"][name]["overall"] == b["models"][name]["overall"]
    m = Recorder()
    events = interleaved_sessions()
    prequential_fresh(events, {"m": m}, replace(cfg, warmup=0.0))
    assert [learned for _, learned in m.learned_at_call] == [events[:j] for j in range(30)]


def test_one_event_observes_keep_the_popularity_order_exact() -> None:
    stream = list(planted_stream(30, 40, 600, seed=3))
    cfg = EvalConfig(auc_negatives=0)
    one, batched = EvalState(cfg, len(stream)), EvalState(cfg, len(stream))
    for e in stream:
        one.observe((e,))
    batched.observe(stream)
    assert np.array_equal(one._sorted_counts, batched._sorted_counts)
    assert np.array_equal(one._sorted_counts, np.sort(one.pos_counts[: len(one.item_ids)]))


def test_clustered_standard_errors() -> None:
    # unclustered: the sample std over sqrt(n): std([1, 0, 1, 0], ddof=1) = sqrt(1/3), / 2
    assert clustered_se([1, 0, 1, 0], None) == pytest.approx(math.sqrt(1 / 3) / 2)
    # two users, all hits or all misses: mean 0.5, user sums of deviations +1 and -1,
    # sqrt(2 / 1 * (1 + 1)) / 4 = 0.5, twice the unclustered figure: queries of one user
    # say less than independent ones
    assert clustered_se([1, 1, 0, 0], ["a", "a", "b", "b"]) == pytest.approx(0.5)
    assert clustered_se([1, 0, 1, 0], ["a", "a", "b", "b"]) == pytest.approx(0.0)
    assert math.isnan(clustered_se([1, 0], ["a", "a"])) and math.isnan(clustered_se([1], None))
    t = Tally(1)
    state = EvalState(EvalConfig(k=1, auc_negatives=0, warmup=0.0), 4)
    events = [
        Event(u, i, "view", None, T0 + j) for j, (u, i) in enumerate(["ax", "ay", "bz", "bw"])
    ]
    qs = state.queries(events, 0)
    t.add_batch(qs, [["x"], ["y"], ["q"], ["q"]], state)
    s = t.summary()
    assert (
        s["hr"] == 0.5 and s["hr_se"] == pytest.approx(0.5) and s["ndcg_se"] == pytest.approx(0.5)
    )


def test_docstring_examples_run() -> None:
    import doctest

    from streamrec.model import evaluate, metrics

    for module in (evaluate, metrics):
        result = doctest.testmod(module)
        assert result.attempted > 0 or module is evaluate, module.__name__
        assert result.failed == 0, module.__name__
