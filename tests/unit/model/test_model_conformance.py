"""One suite run against every loss x optimiser variant (River's `check_estimator` idea).

Each check states a property every variant must have: the protocol's shapes and types,
determinism under a seed, growth that keeps learned rows, no NaN from hostile input, skipped
non-finite batches, and save -> restore -> identical continued training.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from pathlib import Path

import numpy as np
import pytest

from streamrec.model import checkpoint
from streamrec.model.base import ItemMatrix, LearnResult
from streamrec.model.config import ModelConfig
from streamrec.model.online import OnlineRecommender
from streamrec.model.runtime import configure_threads
from streamrec.model.testing import Event, planted_stream, table_state

configure_threads(1, 1)  # before the first TF op: 2 shared cores

VARIANTS = [
    pytest.param(loss, opt, id=f"{loss}-{opt}")
    for loss, opt in itertools.product(("bpr", "softmax"), ("sgd", "adagrad"))
]


def make(loss: str, opt: str, **kw: object) -> OnlineRecommender:
    cfg = ModelConfig(
        dim=8, loss=loss, optimizer=opt, negatives=16, initial_capacity=4, seed=7, **kw
    )  # type: ignore[arg-type]
    return OnlineRecommender(cfg)


def stream(n: int = 1200, seed: int = 0) -> list[Event]:
    """Planted events plus a sprinkling of features, ratings and dislikes."""
    out = []
    for j, e in enumerate(planted_stream(60, 40, n, n_clusters=4, seed=seed)):
        if j % 7 == 0:
            e = dataclasses.replace(e, user_features={"country": ["DE", "FR"][j % 2]})
        if j % 11 == 0:
            e = dataclasses.replace(e, item_features={"genre": f"g{j % 3}", "tags": ["a", "b"]})
        if j % 13 == 0:
            e = dataclasses.replace(e, type="rating", value=float(j % 5 + 1))
        if j % 17 == 0:
            e = dataclasses.replace(e, type="dislike")
        out.append(e)
    return out


def batches(events: list[Event], size: int = 128) -> list[list[Event]]:
    return [events[s : s + size] for s in range(0, len(events), size)]


state = table_state  # every table and accumulator, for exact comparisons


def assert_same_state(a: OnlineRecommender, b: OnlineRecommender) -> None:
    sa, sb = state(a), state(b)
    assert sa.keys() == sb.keys()
    for k in sa:
        np.testing.assert_array_equal(sa[k], sb[k], err_msg=k)


@pytest.mark.parametrize(("loss", "opt"), VARIANTS)
def test_protocol_shapes_and_types(loss: str, opt: str) -> None:
    rec = make(loss, opt)
    empty = rec.learn([])
    assert isinstance(empty, LearnResult) and empty.n_events == 0 and math.isnan(empty.loss)
    events = stream(300)
    res = rec.learn(events)
    assert isinstance(res, LearnResult)
    assert res.n_events == 300 and math.isfinite(res.loss) and not res.skipped_nonfinite
    assert res.version == 2  # one per learn call, empty ones included
    assert set(res.touched_users) == {e.user for e in events}
    assert {e.item for e in events} <= set(res.touched_items)
    assert rec.dim == 8 and isinstance(rec.global_bias, float)

    vec = rec.user_vector(events[0].user)
    assert vec is not None
    v, b = vec
    assert isinstance(v, np.ndarray) and v.dtype == np.float32 and v.shape == (8,)
    assert isinstance(b, float)
    assert rec.user_vector("nobody") is None

    m = rec.item_vectors()
    assert isinstance(m, ItemMatrix)
    assert m.vectors.dtype == np.float32 and m.vectors.shape == (len(m.ids), 8)
    assert m.biases.dtype == np.float32 and m.biases.shape == (len(m.ids),)
    assert set(m.ids) == {e.item for e in events}

    recs = rec.recommend(events[0].user, k=5, exclude=[m.ids[0]])
    assert len(recs) == 5
    assert all(isinstance(i, str) and isinstance(s, float) for i, s in recs)
    assert m.ids[0] not in {i for i, _ in recs}
    scores = [s for _, s in recs]
    assert scores == sorted(scores, reverse=True)
    # Exactly min(k, available): ask for more than there are.
    n_items = len(m.ids)
    assert len(rec.recommend(events[0].user, k=1000)) == n_items
    assert len(rec.recommend(events[0].user, k=1000, exclude=m.ids[:3])) == n_items - 3
    assert rec.recommend(events[0].user, k=0) == []

    users = [*sorted({e.user for e in events})[:5], "nobody"]
    many = rec.recommend_many(users, k=4, exclude={users[0]: [recs[0][0]]})
    assert set(many) == set(users)
    assert all(len(v) == 4 for v in many.values())
    assert recs[0][0] not in {i for i, _ in many[users[0]]}
    for u in users[1:5]:  # batch and single scoring may round differently (gemm vs gemv)
        single = rec.recommend(u, k=4)
        assert [i for i, _ in many[u]] == [i for i, _ in single]
        np.testing.assert_allclose([s for _, s in many[u]], [s for _, s in single], rtol=1e-5)


@pytest.mark.parametrize(("loss", "opt"), VARIANTS)
def test_deterministic_under_seed(loss: str, opt: str) -> None:
    a, b = make(loss, opt), make(loss, opt)
    for batch in batches(stream(800)):
        ra, rb = a.learn(batch), b.learn(batch)
        assert ra == rb
    assert_same_state(a, b)
    assert a.recommend("u1", 10) == b.recommend("u1", 10)


@pytest.mark.parametrize(("loss", "opt"), VARIANTS)
def test_warm_up_changes_nothing_and_spares_later_traces(loss: str, opt: str) -> None:
    """warm_up compiles the step variants by running them on an empty batch: the tables,
    accumulators and every later update must be exactly those of a model never warmed."""
    cold, warm = make(loss, opt), make(loss, opt)
    events = stream(600)
    cold.learn(events[:128])
    warm.learn(events[:128])
    before = state(warm)
    warm.warm_up()
    for k, v in state(warm).items():
        np.testing.assert_array_equal(v, before[k], err_msg=k)
    traces = warm.tracing_count
    assert traces >= 8  # the stream has ratings and dislikes: 2 x 2 x 2 variants
    for batch in batches(events[128:]):
        assert cold.learn(batch) == warm.learn(batch)
        # plain ranking batches, with and without features
        plain = [dataclasses.replace(e, type="view", user_features=None) for e in batch]
        assert cold.learn(plain) == warm.learn(plain)
    assert_same_state(cold, warm)
    assert warm.tracing_count == traces  # every batch found its variant compiled


@pytest.mark.parametrize(("loss", "opt"), VARIANTS)
def test_growth_keeps_learned_rows_without_retracing(loss: str, opt: str) -> None:
    rec = make(loss, opt)
    first = [Event(f"u{j}", f"i{j % 3}", "view", None, j) for j in range(6)]
    rec.learn(first)
    before = {e.user: rec.user_vector(e.user) for e in first}
    cap = rec.users.emb.capacity
    traces = rec.tracing_count
    for k in range(5):  # new users and items only: tables double several times
        rec.learn([Event(f"n{k}_{j}", f"m{k}_{j}", "view", None, 100 + j) for j in range(40)])
    assert rec.users.emb.capacity > cap and rec.n_users == 206
    for user, (vec, bias) in before.items():  # type: ignore[misc]
        after = rec.user_vector(user)
        assert after is not None
        np.testing.assert_array_equal(after[0], vec)
        assert after[1] == bias
    assert rec.tracing_count == traces  # same batch contents, bigger tables: no new trace


@pytest.mark.parametrize(("loss", "opt"), VARIANTS)
def test_no_nan_under_extreme_inputs(loss: str, opt: str) -> None:
    rec = make(loss, opt)
    long_feats = {"tags": [f"t{j}" for j in range(3000)]}
    hostile = [
        [Event("u", "i", "rating", 1e300, 0), Event("u", "j", "rating", -1e300, 0)],
        [Event("u", "i", "view", None, 0)] * 2000,  # one pair repeated: a huge summed gradient
        [],
        [Event("v", "k", "click", None, 2**62, long_feats, long_feats)],
        [Event("w", "i", "no-such-type", None, 0)],
        [Event("u", "i", "dislike", None, -(2**62))] * 500,
        [Event(f"x{j}", "i", "purchase", None, 0) for j in range(300)],
    ]
    for _ in range(2):
        for batch in hostile:
            res = rec.learn(batch)
            assert not res.skipped_nonfinite
    for name, arr in state(rec).items():
        assert np.isfinite(arr).all(), name
    recs, _ = rec.recommend_with_source("u", 10)
    assert recs and all(math.isfinite(s) for _, s in recs)
    assert rec.skipped_nonfinite == 0
    assert all(math.isfinite(s) for _, s in rec.popularity.top(10))


@pytest.mark.parametrize(("loss", "opt"), VARIANTS)
def test_non_finite_batch_is_skipped_and_counted(loss: str, opt: str) -> None:
    rec = make(loss, opt)
    rec.learn(stream(200))
    before = state(rec)
    bad = [Event("u1", "i1", "view", None, 5), Event("u2", "i2", "rating", math.nan, 5)]
    res = rec.learn(bad)
    assert res.skipped_nonfinite and math.isnan(res.loss)
    assert rec.skipped_nonfinite == 1
    after = state(rec)
    for k, v in before.items():  # nothing applied (tables may only have grown)
        np.testing.assert_array_equal(after[k][: v.shape[0]], v, err_msg=k)
    res = rec.learn(stream(50, seed=1))
    assert not res.skipped_nonfinite and rec.skipped_nonfinite == 1


@pytest.mark.parametrize(("loss", "opt"), VARIANTS)
def test_save_restore_continues_bit_for_bit(loss: str, opt: str, tmp_path: Path) -> None:
    parts = batches(stream(1200), 150)
    a = make(loss, opt)
    for batch in parts[:4]:
        a.learn(batch)
    meta = {"offsets": {"streamrec.events:0": 600}, "note": "x"}
    a.save(tmp_path / "ckpt", meta)
    b, got = OnlineRecommender.restore(tmp_path / "ckpt")
    assert got == meta
    assert b.version == a.version and b.config == a.config
    assert_same_state(a, b)
    users = ["u1", "u2", "u3", "nobody"]
    assert a.recommend_many(users, 10) == b.recommend_many(users, 10)
    np.testing.assert_array_equal(a.item_vectors().vectors, b.item_vectors().vectors)
    assert a.popularity.top(10) == b.popularity.top(10)
    for batch in parts[4:]:
        assert a.learn(batch) == b.learn(batch)
    assert_same_state(a, b)
    assert a.recommend_many(users, 10) == b.recommend_many(users, 10)


def test_checkpoint_is_atomic_and_verified(tmp_path: Path) -> None:
    rec = make("bpr", "sgd")
    rec.learn(stream(100))
    path = tmp_path / "ckpt"
    rec.save(path, {"n": 1})
    rec.learn(stream(100, seed=2))
    rec.save(path, {"n": 2})
    assert len(list(path.glob("state-*.npz"))) == 1  # the older arrays were cleaned up
    # A crash mid-save leaves stray temporaries; the committed checkpoint still loads.
    (path / ".state-deadbeef.npz.tmp").write_bytes(b"partial")
    (path / "state-orphan.npz").write_bytes(b"never committed")
    _, meta = OnlineRecommender.restore(path)
    assert meta == {"n": 2}
    # A damaged array file is detected, not loaded.
    data = next(p for p in path.glob("state-*.npz") if p.name != "state-orphan.npz")
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    data.write_bytes(bytes(raw))
    with pytest.raises(checkpoint.CheckpointError):
        OnlineRecommender.restore(path)
    with pytest.raises(checkpoint.CheckpointError):
        OnlineRecommender.restore(tmp_path / "missing")


def test_ties_break_by_item_id() -> None:
    from streamrec.model.ranking import top_k

    ids = ["d", "b", "a", "c", "e"]
    scores = np.array([1.0, 2.0, 1.0, 1.0, -np.inf])
    assert top_k(scores, 3, ids) == [1, 2, 3]  # 2.0 first, then "a" and "c" of the 1.0 ties
    assert top_k(scores, 10, ids) == [1, 2, 3, 0]  # -inf is unavailable
    assert top_k(np.full(5, np.nan), 3, ids) == []


def test_no_retrace_across_batch_sizes_and_growth() -> None:
    rec = make("bpr", "sgd")
    rng = np.random.default_rng(0)
    events = stream(3000)
    sizes = rng.integers(1, 400, 25).tolist()
    start = 0
    for size in sizes:
        rec.learn(events[start : start + size])
        start = (start + size) % 2500
    # At most one trace per combination of batch contents (ranking/pointwise events, user/item
    # features present or not), never one per batch size or per table growth.
    assert rec.tracing_count == len(rec._steps) <= 16
    before = rec.tracing_count
    for size in sizes:
        rec.learn(events[:size])
    assert rec.tracing_count <= before + 2


def test_learns_from_the_pipeline_event_type() -> None:
    """The trainer passes `streamrec.streaming.events.Event` (frozen, slotted): it fits."""
    events = pytest.importorskip("streamrec.streaming.events")
    rec = make("bpr", "sgd")
    batch = [
        events.Event("u1", "i1", "view", None, 1, {"country": "DE"}, {"genre": ["a", "b"]}),
        events.Event("u1", "i2", "rating", 2.0, 2),
        events.Event("u2", "i1", "dislike", None, 3),
    ]
    res = rec.learn(batch)
    assert not res.skipped_nonfinite and math.isfinite(res.loss)
    assert rec.users.tokens[rec.users.ids.row("u1")] == ("country=DE",)


def test_touched_lists_can_be_skipped() -> None:
    a, b = make("bpr", "sgd"), make("bpr", "sgd")
    batch = stream(100)
    ra, rb = a.learn(batch), b.learn(batch, touched=False)
    assert rb.touched_users == [] and rb.touched_items == []
    assert ra.loss == rb.loss and ra.version == rb.version
    assert_same_state(a, b)


def test_user_vectors_match_user_vector() -> None:
    m = OnlineRecommender(ModelConfig(dim=4, seed=1))
    m.learn([Event("a", "x"), Event("b", "y"), Event("a", "y", user_features={"c": "DE"})])
    users, vecs, biases = m.user_vectors(["b", "nobody", "a"])
    assert users == ["b", "a"] and vecs.shape == (2, 4) and biases.shape == (2,)
    for j, u in enumerate(users):
        vec, bias = m.user_vector(u)
        np.testing.assert_array_equal(vecs[j], vec)
        assert biases[j] == np.float32(bias)


T0 = 1_700_000_000_000


def churn(phases: int = 6, per_phase: int = 120) -> list[list[Event]]:
    """A minute per phase: each phase brings its own users and items, plus stable ones that
    act in every phase (with features, ratings and dislikes among them)."""
    rng = np.random.default_rng(3)
    out = []
    for p in range(phases):
        batch = []
        for j in range(per_phase):
            ts = T0 + p * 60_000 + j * 100
            stable = j % 4 == 0
            user = f"s{j % 5}" if stable else f"u{p}_{rng.integers(12)}"
            item = f"k{j % 3}" if stable else f"i{p}_{rng.integers(10)}"
            kind = "rating" if j % 13 == 0 else "dislike" if j % 17 == 0 else "click"
            value = float(j % 5 + 1) if kind == "rating" else None
            uf = {"country": "DE"} if j % 7 == 0 else None
            itf = {"genre": f"g{p % 2}"} if j % 11 == 0 else None
            batch.append(Event(user, item, kind, value, ts, uf, itf))
        out.append(batch)
    return out


@pytest.mark.parametrize(("loss", "opt"), VARIANTS)
def test_eviction_forgets_idle_ids_and_keeps_the_rest_exactly(loss: str, opt: str) -> None:
    rec = make(loss, opt, evict_after_s=120)
    evicted_users: set[str] = set()
    evicted_items: set[str] = set()
    for batch in churn():
        res = rec.learn(batch)
        assert not res.skipped_nonfinite
        evicted_users.update(res.evicted_users)
        evicted_items.update(res.evicted_items)
    # phases 0-2 are over 2 minutes old at the end: forgotten; stable ids never
    assert {u for u in evicted_users if u.startswith("u0_")}
    assert not {x for x in evicted_users | evicted_items if x[0] in "sk"}
    for u in evicted_users:
        assert rec.user_vector(u) is None
    known_items = set(rec.item_vectors().ids)
    assert not evicted_items & known_items and {"k0", "k1", "k2"} <= known_items
    assert rec.n_users < 5 + 4 * 12  # stable users and at most the last phases' own
    for name, arr in state(rec).items():
        assert np.isfinite(arr).all(), name

    # One pass by hand: every id kept has exactly its vector, bias, popularity and history.
    before_u = {u: rec.user_vector(u) for u in rec.users.ids.ids}
    m = rec.item_vectors()
    before_i = {i: (m.vectors[j].copy(), m.biases[j]) for j, i in enumerate(m.ids)}
    before_pop = rec.popularity.scores()
    rec._clock_ms += 60_000  # a minute later, with no events: the newest phase's ids stay
    rec._evicted_at_ms = 0
    gone_users, gone_items = rec._maybe_evict()
    assert gone_users and gone_items
    assert set(rec.users.ids.ids) == set(before_u) - set(gone_users)
    for u in rec.users.ids.ids:
        vec, bias = rec.user_vector(u)  # type: ignore[misc]
        np.testing.assert_array_equal(vec, before_u[u][0])  # type: ignore[index]
        assert bias == before_u[u][1]  # type: ignore[index]
    m2 = rec.item_vectors()
    assert set(m2.ids) == set(before_i) - set(gone_items)
    for j, i in enumerate(m2.ids):
        np.testing.assert_array_equal(m2.vectors[j], before_i[i][0])
        assert m2.biases[j] == before_i[i][1]
    assert rec.popularity.scores() == {
        i: s for i, s in before_pop.items() if i not in set(gone_items)
    }
    assert all(r < len(m2.ids) for r in rec.sampler.buffer[: rec.sampler.filled])
    # an evicted user who comes back starts afresh and learns
    back = [Event(gone_users[0], "k0", "click", None, rec._clock_ms + j) for j in range(3)]
    assert not rec.learn(back).skipped_nonfinite
    assert rec.user_vector(gone_users[0]) is not None
    recs = rec.recommend(gone_users[0], 5)
    assert recs and not {i for i, _ in recs} & set(gone_items)


@pytest.mark.parametrize(("loss", "opt"), VARIANTS)
def test_eviction_survives_save_restore_bit_for_bit(loss: str, opt: str, tmp_path: Path) -> None:
    parts = churn(phases=8, per_phase=90)
    a = make(loss, opt, evict_after_s=100)
    for batch in parts[:4]:
        a.learn(batch)
    assert a.n_users < len({e.user for b in parts[:4] for e in b})  # evicted some already
    a.save(tmp_path / "ckpt")
    b, _ = OnlineRecommender.restore(tmp_path / "ckpt")
    assert_same_state(a, b)
    for batch in parts[4:]:
        ra, rb = a.learn(batch), b.learn(batch)
        assert ra == rb
    assert_same_state(a, b)
    np.testing.assert_array_equal(a.users.last_ts, b.users.last_ts)  # type: ignore[arg-type]
    assert a.recommend_many(["s0", "s1", "nobody"], 5) == b.recommend_many(
        ["s0", "s1", "nobody"], 5
    )


def test_restore_applies_given_settings_and_refuses_structural_changes(tmp_path: Path) -> None:
    """A trainer restores with its current settings: they apply, except those the saved
    tables depend on, which fail naming the setting instead of being silently ignored."""
    from streamrec.model.online import CheckpointMismatch

    a = make("bpr", "sgd")
    for batch in batches(stream(600)):
        a.learn(batch)
    a.save(tmp_path / "ckpt")
    wanted = dataclasses.replace(a.config, learning_rate=0.2, negatives=4, evict_after_s=3600)
    b, _ = OnlineRecommender.restore(tmp_path / "ckpt", wanted)
    assert b.config == wanted
    assert_same_state(a, b)  # same tables; only what comes next differs
    assert (b.users.last_ts[: b.n_users] == b._clock_ms).all()  # type: ignore[index]
    assert not b.learn(stream(100, seed=4)).skipped_nonfinite
    for name, value in (("dim", 16), ("optimizer", "adagrad"), ("feature_hash_buckets", 64)):
        with pytest.raises(CheckpointMismatch, match=name):
            OnlineRecommender.restore(
                tmp_path / "ckpt", dataclasses.replace(a.config, **{name: value})
            )
