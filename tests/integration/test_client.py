"""The read client against a real Redis: each path, its fallbacks, bad input and outages.

The keys are written here by hand in the trainer's layout (`streaming/keys.py`), so each
case sets up exactly the state that selects one path; `test_coldstart_pipeline.py` checks the
same paths against what the real trainer writes.
"""

from __future__ import annotations

import argparse
import logging
import socket
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import orjson
import pytest

from streamrec.consumers.cli import cli_recommend, run_recommend
from streamrec.streaming import keys as keys_module
from streamrec.streaming.client import (
    InvalidRequest,
    InvalidRequestType,
    Recommendations,
    Recommender,
    StoreUnavailable,
    parse_feature_args,
)
from streamrec.streaming.config import RedisConfig
from streamrec.streaming.keys import Keys, encode_vector

DIM = 4
ITEMS = [f"i{n:02d}" for n in range(12)]


class Seed:
    """Writes trainer-shaped keys under one test prefix."""

    def __init__(self, client: Any, prefix: str) -> None:
        self.r = client
        self.keys = Keys(prefix)
        self.prefix = prefix

    def matrix(
        self,
        vectors: np.ndarray,
        biases: np.ndarray | None = None,
        ids: Sequence[str] = ITEMS,
        ver: int = 1,
    ) -> None:
        k = self.keys
        biases = np.zeros(len(ids), np.float32) if biases is None else biases
        self.r.set(k.items_ids, orjson.dumps(list(ids)))
        self.r.set(k.items_matrix, encode_vector(vectors))
        self.r.set(k.items_bias, encode_vector(biases))
        self.r.set(k.items_ver, ver)

    def user(
        self,
        user: str,
        vec: np.ndarray | bytes,
        ver: int = 5,
        recs: Sequence[tuple[str, float]] | None = None,
        recs_ver: int | None = None,
        recs_ts: int | None = None,
        seen: Sequence[str] = (),
        features: Mapping[str, Any] | None = None,
    ) -> None:
        k = self.keys
        raw = vec if isinstance(vec, bytes) else encode_vector(vec)
        self.r.hset(k.user(user), mapping={"vec": raw, "bias": "0.0", "ver": ver, "ts": 1})
        if recs is not None:
            ts = int(time.time() * 1000) if recs_ts is None else recs_ts
            body = {"ver": ver if recs_ver is None else recs_ver, "ts": ts, "items": recs}
            self.r.set(k.recs(user), orjson.dumps(body))
        if seen:
            self.seen(user, seen)
        if features is not None:
            self.r.set(k.user_features(user), orjson.dumps(features))

    def seen(self, user: str, items: Sequence[str]) -> None:
        self.r.zadd(self.keys.seen(user), {it: n for n, it in enumerate(items)})

    def pop(self, scores: Mapping[str, float], segment: str | None = None) -> None:
        self.r.zadd(self.keys.popularity(segment), dict(scores))

    def ufe(self, token: str, vec: np.ndarray | bytes) -> None:
        raw = vec if isinstance(vec, bytes) else encode_vector(vec)
        self.r.hset(self.keys.user_feature_vectors, token, raw)


def _matrix(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((len(ITEMS), DIM)).astype(np.float32)


def _expected(m: np.ndarray, b: np.ndarray, vec: np.ndarray, k: int, skip: set[str]) -> list[str]:
    s = (m @ vec + b).astype(np.float64)
    order = sorted(
        (j for j in range(len(ITEMS)) if ITEMS[j] not in skip), key=lambda j: (-s[j], ITEMS[j])
    )
    return [ITEMS[j] for j in order[:k]]


@pytest.fixture
def seed(redis_client: Any, redis_prefix: str) -> Seed:
    return Seed(redis_client, redis_prefix)


@pytest.fixture
def rec(redis_client: Any, redis_prefix: str) -> Recommender:
    return Recommender(redis_client, prefix=redis_prefix)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --------------------------------------------------------------------------- the four paths


def test_precomputed_when_at_least_as_new_as_the_vector(seed: Seed, rec: Recommender) -> None:
    seed.matrix(_matrix())
    recs = [(ITEMS[j], 10.0 - j) for j in range(6)]
    seed.user("u1", np.ones(DIM), ver=5, recs=recs, recs_ver=5)
    out = rec.recommend("u1", k=3)
    assert out == Recommendations("u1", ["i00", "i01", "i02"], [10.0, 9.0, 8.0], "precomputed")
    seed.user("u2", np.ones(DIM), ver=5, recs=recs, recs_ver=7)  # newer than the vector: fine
    assert rec.recommend("u2", k=6).source == "precomputed"


def test_precomputed_older_than_the_vector_is_scored_in_real_time(
    seed: Seed, rec: Recommender
) -> None:
    m, b = _matrix(), np.linspace(0, 0.1, len(ITEMS)).astype(np.float32)
    seed.matrix(m, b)
    vec = np.array([1.0, -0.5, 0.25, 2.0], np.float32)
    seed.user("u1", vec, ver=6, recs=[("i11", 99.0)] * 5, recs_ver=5)
    out = rec.recommend("u1", k=4)
    assert out.source == "realtime"
    assert out.items == _expected(m, b, vec, 4, set())
    s = m @ vec + b
    np.testing.assert_allclose(out.scores, [s[ITEMS.index(i)] for i in out.items], rtol=1e-6)
    assert out.scores == sorted(out.scores, reverse=True)


def test_precomputed_too_short_or_too_old_or_seen_wanted_goes_real_time(
    seed: Seed, redis_client: Any, redis_prefix: str
) -> None:
    seed.matrix(_matrix())
    recs = [(ITEMS[j], 1.0) for j in range(3)]
    seed.user("short", np.ones(DIM), recs=recs)
    old_ts = int(time.time() * 1000) - 3_600_000
    seed.user("old", np.ones(DIM), recs=[(i, 1.0) for i in ITEMS[:8]], recs_ts=old_ts)
    rec = Recommender(redis_client, prefix=redis_prefix, precomputed_max_age_ms=60_000)
    assert rec.recommend("short", k=3).source == "precomputed"
    assert rec.recommend("short", k=4).source == "realtime"
    assert rec.recommend("old", k=3).source == "realtime"
    assert rec.recommend("short", k=3, exclude_seen=False).source == "realtime"
    no_limit = Recommender(redis_client, prefix=redis_prefix, precomputed_max_age_ms=None)
    assert no_limit.recommend("old", k=3).source == "precomputed"


def test_features_path_sums_token_embeddings(seed: Seed, rec: Recommender) -> None:
    m = _matrix()
    seed.matrix(m)
    de, young = np.array([1, 0, 0, 0], np.float32), np.array([0, 0, 2, 0], np.float32)
    seed.ufe("country=DE", de)
    seed.ufe("age=18-24", young)
    seed.ufe("tag=a", np.array([0, 1, 0, 0], np.float32))
    seed.ufe("tag=b", np.array([0, 0, 0, -1], np.float32))
    # given in the call (unknown token ignored), never stored
    out = rec.recommend("newbie", k=5, user_features={"country": "DE", "shoe": "42"})
    assert out.source == "features"
    assert out.items == _expected(m, np.zeros(len(ITEMS)), de, 5, set())
    # stored features, one token per value of a list-valued feature
    seed.r.set(seed.keys.user_features("stored"), orjson.dumps({"tag": ["a", "b"], "age": "18-24"}))
    out = rec.recommend("stored", k=5)
    want = np.array([0, 1, 2, -1], np.float32)
    assert (out.source, out.items) == ("features", _expected(m, np.zeros(12), want, 5, set()))


def test_segment_popularity_when_no_embedding(seed: Seed, rec: Recommender) -> None:
    seed.matrix(_matrix())
    seed.pop({"i01": 5.0, "i02": 4.0, "i03": 3.0, "i04": 2.0})
    seed.pop({"i07": 8.5, "i08": 8.0}, segment="country=DE")
    seed.pop({"i08": 8.0, "i09": 1.0}, segment="age=25-34")
    out = rec.recommend("anon", k=4, user_features={"country": "DE", "age": "25-34"})
    # i08 is popular in both segments: 2^8 + 2^8 = 2^9 puts it first; global fills the rest
    assert out.source == "features"
    assert out.items == ["i08", "i07", "i09", "i01"]
    assert out.scores[0] == pytest.approx(9.0)
    # a segment nobody has data for is not a segment answer
    out = rec.recommend("anon", k=2, user_features={"country": "XX"})
    assert (out.source, out.items) == ("popularity", ["i01", "i02"])


def test_unknown_user_gets_global_popularity(seed: Seed, rec: Recommender) -> None:
    seed.pop({"i01": 5.0, "i02": 7.0, "i03": 7.0, "i04": 2.0})
    out = rec.recommend("nobody", k=3)
    # equal scores: item id ascending, whatever Redis's own order
    assert out == Recommendations("nobody", ["i02", "i03", "i01"], [7.0, 7.0, 5.0], "popularity")


def test_empty_store_answers_empty_popularity(rec: Recommender) -> None:
    assert rec.recommend("nobody", k=3) == Recommendations("nobody", [], [], "popularity")
    assert rec.recommend("nobody", k=3, user_features={"country": "DE"}).source == "popularity"


def test_ties_break_by_item_id(seed: Seed, rec: Recommender) -> None:
    m = np.zeros((len(ITEMS), DIM), np.float32)
    m[[3, 7, 9], 0] = 1.0  # three items tie at the top, the rest tie below
    seed.matrix(m)
    seed.user("u", np.array([1, 0, 0, 0], np.float32))
    out = rec.recommend("u", k=5)
    assert out.items == ["i03", "i07", "i09", "i00", "i01"]


def test_seen_and_disliked_items_are_excluded_on_every_path(seed: Seed, rec: Recommender) -> None:
    """The trainer puts every item a user touched, dislikes included, in `seen`."""
    m = _matrix()
    seed.matrix(m)
    vec = np.ones(DIM, np.float32)
    top = _expected(m, np.zeros(12), vec, 12, set())
    seen = top[:2]
    recs = [(i, 1.0) for i in top[:5]]
    seed.user("pre", vec, recs=recs, seen=seen)
    out = rec.recommend("pre", k=3)
    assert (out.source, out.items) == ("precomputed", top[2:5])
    seed.user("rt", vec, recs=recs, recs_ver=1, seen=seen)
    out = rec.recommend("rt", k=3)
    assert (out.source, out.items) == ("realtime", top[2:5])
    assert rec.recommend("rt", k=3, exclude_seen=False).items == top[:3]
    seed.ufe("country=DE", vec)
    seed.seen("feat", seen)
    out = rec.recommend("feat", k=3, user_features={"country": "DE"})
    assert (out.source, out.items) == ("features", top[2:5])
    seed.pop({"i00": 3.0, "i01": 2.0, "i02": 1.0})
    seed.seen("pop", ["i00"])
    out = rec.recommend("pop", k=3)
    assert (out.source, out.items) == ("popularity", ["i01", "i02"])


# --------------------------------------------------------------------------- corrupt data


def test_corrupt_user_vector_falls_back_with_one_warning(
    seed: Seed, rec: Recommender, caplog: pytest.LogCaptureFixture
) -> None:
    seed.matrix(_matrix())
    seed.pop({"i05": 1.0})
    seed.user("bad", b"\x00\x01\x02", recs=[("i01", 1.0)], recs_ver=1)
    with caplog.at_level(logging.WARNING, logger="streamrec.streaming.client"):
        out = rec.recommend("bad", k=1)
    assert (out.source, out.items) == ("popularity", ["i05"])
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "corrupt user vector" in warnings[0].getMessage()
    # NaN inside well-sized bytes is corrupt too; features still rescue the user
    seed.user("nan", np.array([np.nan, 0, 0, 0], np.float32), features={"country": "DE"})
    seed.ufe("country=DE", np.ones(DIM, np.float32))
    assert rec.recommend("nan", k=2).source == "features"


def test_corrupt_recs_and_wrong_types_fall_back(
    seed: Seed, rec: Recommender, caplog: pytest.LogCaptureFixture
) -> None:
    seed.matrix(_matrix())
    seed.user("u", np.ones(DIM, np.float32))
    seed.r.set(seed.keys.recs("u"), b"{not json")
    seed.user("w", np.ones(DIM, np.float32))
    seed.r.hset(seed.keys.recs("w"), "x", "y")  # WRONGTYPE for GET
    with caplog.at_level(logging.WARNING, logger="streamrec.streaming.client"):
        assert rec.recommend("u", k=2).source == "realtime"
        assert rec.recommend("w", k=2).source == "realtime"
    msgs = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(msgs) == 2
    assert "corrupt precomputed list" in msgs[0] and "unreadable key" in msgs[1]


def test_corrupt_matrix_falls_back_and_warns_once_per_version(
    seed: Seed, rec: Recommender, caplog: pytest.LogCaptureFixture
) -> None:
    seed.matrix(_matrix())
    seed.r.set(seed.keys.items_matrix, b"\x00" * 10)  # not n x dim floats
    seed.user("u", np.ones(DIM, np.float32), features={"country": "DE"})
    seed.pop({"i05": 1.0}, segment="country=DE")
    with caplog.at_level(logging.WARNING, logger="streamrec.streaming.client"):
        first = rec.recommend("u", k=1)
        second = rec.recommend("u", k=1)
    assert first.source == second.source == "features"  # segment popularity
    assert first.items == ["i05"]
    msgs = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(msgs) == 1 and "item matrix" in msgs[0]
    assert rec.matrix_loads == 1, "a bad version must not be re-read on every call"
    seed.matrix(_matrix(), ver=2)  # the trainer writes a good one: real time again
    assert rec.recommend("u", k=1).source == "realtime"


def test_dimension_mismatch_falls_back(seed: Seed, rec: Recommender) -> None:
    seed.matrix(_matrix())
    seed.user("u", np.ones(DIM + 1, np.float32))
    seed.pop({"i05": 1.0})
    assert rec.recommend("u", k=1).source == "popularity"


# --------------------------------------------------------------------------- matrix cache


def test_matrix_cached_until_a_new_version(
    seed: Seed, redis_client: Any, redis_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # this 48-byte matrix counts as a full one here: kept for the whole matrix_refresh_ms
    monkeypatch.setattr(keys_module, "MATRIX_FULL_BYTES", 16)
    m = np.zeros((len(ITEMS), DIM), np.float32)
    m[0, 0] = 1.0
    seed.matrix(m, ver=1)
    seed.user("u", np.array([1, 0, 0, 0], np.float32))
    rec = Recommender(redis_client, prefix=redis_prefix, matrix_refresh_ms=0)
    slow = Recommender(redis_client, prefix=redis_prefix, matrix_refresh_ms=60_000)
    for r in (rec, slow):
        assert r.recommend("u", k=1).items == ["i00"]
        assert r.recommend("u", k=1).items == ["i00"]
        assert r.matrix_loads == 1
    m2 = np.zeros((len(ITEMS) + 1, DIM), np.float32)
    m2[-1, 0] = 5.0  # a new catalogue item, scored before anyone touched it
    seed.matrix(m2, ids=[*ITEMS, "fresh"], ver=2)
    assert rec.recommend("u", k=2).items == ["fresh", "i00"]
    assert rec.matrix_loads == 2
    # a reader that refreshes at most once a minute keeps its snapshot (bounded staleness)
    assert slow.recommend("u", k=2).items == ["i00", "i01"]
    assert slow.matrix_loads == 1


def test_small_matrix_is_kept_in_proportion_to_its_size(
    seed: Seed, redis_client: Any, redis_prefix: str
) -> None:
    """A minute for a full-size matrix is ~14 ms for this one (240 bytes of 1 MiB)."""
    seed.matrix(np.eye(len(ITEMS), DIM, dtype=np.float32), ver=1)
    seed.user("u", np.array([1, 0, 0, 0], np.float32))
    slow = Recommender(redis_client, prefix=redis_prefix, matrix_refresh_ms=60_000)
    assert slow.recommend("u", k=1).items == ["i00"]
    m2 = np.zeros((len(ITEMS) + 1, DIM), np.float32)
    m2[-1, 0] = 5.0
    seed.matrix(m2, ids=[*ITEMS, "fresh"], ver=2)
    time.sleep(0.05)
    assert slow.recommend("u", k=1).items == ["fresh"]
    assert slow.matrix_loads == 2


def test_matrix_interval_scales_with_size() -> None:
    full = keys_module.MATRIX_FULL_BYTES
    assert keys_module.matrix_interval(1000, 2 * full) == 1000  # big: the whole interval
    assert keys_module.matrix_interval(1000, full) == 1000
    assert keys_module.matrix_interval(1000, full // 4) == 250  # a quarter of the bytes
    assert keys_module.matrix_interval(1000, 0) == 0


# --------------------------------------------------------------------------- many users


class _CountingClient:
    """Counts round trips (pipeline executions and plain commands) of a real client."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.round_trips = 0

    def pipeline(self, *a: Any, **kw: Any) -> Any:
        pipe = self._client.pipeline(*a, **kw)
        execute = pipe.execute

        def counted(*ea: Any, **ekw: Any) -> Any:
            self.round_trips += 1
            return execute(*ea, **ekw)

        pipe.execute = counted
        return pipe

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


def test_recommend_many_reads_every_user_in_one_round_trip(
    seed: Seed, redis_client: Any, redis_prefix: str
) -> None:
    seed.matrix(_matrix())
    seed.pop({"i05": 1.0})
    seed.ufe("country=DE", np.ones(DIM, np.float32))
    users = []
    for n in range(20):
        seed.user(f"p{n}", np.ones(DIM), recs=[(i, 1.0) for i in ITEMS[:5]])
        seed.user(f"r{n}", np.ones(DIM), recs=[(i, 1.0) for i in ITEMS[:5]], recs_ver=1)
        users += [f"p{n}", f"r{n}"]
    counting = _CountingClient(redis_client)
    rec = Recommender(counting, prefix=redis_prefix)  # type: ignore[arg-type]
    rec.item_matrix()  # warm the cache
    counting.round_trips = 0
    out = rec.recommend_many(users, k=3)
    assert counting.round_trips == 1
    assert [o.user for o in out] == users
    assert [o.source for o in out] == ["precomputed", "realtime"] * 20
    # cold users cost one more round trip, for all of them together
    counting.round_trips = 0
    out = rec.recommend_many(["p0", "x1", "x2"], k=1, user_features={"x1": {"country": "DE"}})
    assert [o.source for o in out] == ["precomputed", "features", "popularity"]
    assert counting.round_trips == 2
    assert rec.recommend_many([], k=3) == []


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("k", [0, -1, 1001, 10**9])
def test_k_out_of_range(rec: Recommender, k: int) -> None:
    with pytest.raises(InvalidRequest, match=r"k: must be in 1\.\.1000") as e:
        rec.recommend("u", k=k)
    assert isinstance(e.value, ValueError) and not isinstance(e.value, TypeError)


@pytest.mark.parametrize("k", ["3", 2.5, None, True])
def test_k_wrong_type(rec: Recommender, k: Any) -> None:
    with pytest.raises(InvalidRequestType, match="k: must be an int"):
        rec.recommend("u", k=k)
    with pytest.raises(TypeError):
        rec.recommend("u", k=k)


@pytest.mark.parametrize(
    ("user", "err"),
    [
        (None, InvalidRequestType),
        (b"u", InvalidRequestType),
        ("", InvalidRequest),
        ("x" * 257, InvalidRequest),
        ("\ud800", InvalidRequest),
    ],
)
def test_bad_user(rec: Recommender, user: Any, err: type[Exception]) -> None:
    with pytest.raises(err, match="user"):
        rec.recommend(user)


def test_int_user_is_normalised(seed: Seed, rec: Recommender) -> None:
    seed.user("42", np.ones(DIM), recs=[(i, 1.0) for i in ITEMS[:3]])
    assert rec.recommend(42, k=2).user == "42"  # type: ignore[arg-type]


@pytest.mark.parametrize("feats", [["country=DE"], {"country": 3}, {"": "x"}, {"t": [1]}])
def test_bad_features(rec: Recommender, feats: Any) -> None:
    with pytest.raises(InvalidRequestType, match="user_features"):
        rec.recommend("u", user_features=feats)


def test_parse_feature_args() -> None:
    assert parse_feature_args(["country=DE", "tag=a", "tag=b", "x=a=b"]) == {
        "country": "DE",
        "tag": ["a", "b"],
        "x": "a=b",
    }
    for bad in ("country", "=DE", "country="):
        with pytest.raises(InvalidRequest, match="feature"):
            parse_feature_args([bad])


def test_decoding_client_is_refused(redis_url: str) -> None:
    import redis

    with pytest.raises(InvalidRequest, match="decode_responses"):
        Recommender(redis.Redis.from_url(redis_url, decode_responses=True))


# --------------------------------------------------------------------------- outages


def test_redis_down_is_a_typed_retriable_error() -> None:
    cfg = RedisConfig(
        url=f"redis://127.0.0.1:{_closed_port()}/0",
        retries=2,
        backoff_base_ms=1,
        backoff_cap_ms=5,
        connect_timeout_ms=200,
        socket_timeout_ms=200,
    )
    rec = Recommender(cfg)
    t0 = time.monotonic()
    with pytest.raises(StoreUnavailable, match="retriable") as e:
        rec.recommend("u", k=3)
    assert e.value.retriable
    assert time.monotonic() - t0 < 5
    with pytest.raises(StoreUnavailable):
        rec.health()


# --------------------------------------------------------------------------- CLI


def test_cli(seed: Seed, redis_url: str, redis_prefix: str, capsys: Any) -> None:
    seed.matrix(_matrix())
    seed.pop({"i05": 2.0, "i06": 1.0})
    seed.pop({"i09": 1.0}, segment="country=DE")
    cfg = RedisConfig(url=redis_url, prefix=redis_prefix)
    assert cli_recommend(["--user", "x", "-k", "2"], cfg) == 0
    out = capsys.readouterr().out
    assert "(popularity)" in out and "i05" in out and "i06" in out
    assert cli_recommend(["--user", "x", "-k", "1", "--feature", "country=DE", "--json"], cfg) == 0
    assert orjson.loads(capsys.readouterr().out) == {
        "user": "x",
        "source": "features",
        "items": [{"item": "i09", "score": 1.0}],
    }
    # a caller's parser with only --user and -k (the main CLI may define fewer options)
    assert run_recommend(argparse.Namespace(user="x", k=1), cfg) == 0
    assert "i05" in capsys.readouterr().out
    assert cli_recommend(["--user", "x", "-k", "0"], cfg) == 2
    assert "k: must be in" in capsys.readouterr().err
    assert cli_recommend(["--user", "x", "--feature", "oops"], cfg) == 2
    down = RedisConfig(
        url=f"redis://127.0.0.1:{_closed_port()}/0", retries=0, connect_timeout_ms=200
    )
    assert cli_recommend(["--user", "x"], down) == 3
    assert "retriable" in capsys.readouterr().err


def test_threads_share_one_recommender_while_the_matrix_changes(
    seed: Seed, redis_client: Any, redis_prefix: str
) -> None:
    import threading

    seed.matrix(_matrix(0), ver=1)
    for n in range(8):
        seed.user(
            f"u{n}",
            np.ones(DIM, np.float32),
            recs=[(i, 1.0) for i in ITEMS[:3]],
            recs_ver=1 if n % 2 else 5,
        )
    rec = Recommender(redis_client, prefix=redis_prefix, matrix_refresh_ms=0)
    errors: list[BaseException] = []
    sources: set[str] = set()

    def work(n: int) -> None:
        try:
            for _ in range(50):
                out = rec.recommend(f"u{n}", k=3)
                assert len(out.items) == 3
                sources.add(out.source)
        except BaseException as e:  # reported below, a thread must not swallow it
            errors.append(e)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for v in range(2, 12):
        seed.matrix(_matrix(v), ver=v)
    for t in threads:
        t.join()
    assert not errors, errors
    assert sources == {"precomputed", "realtime"}


def test_precomputed_list_loses_items_a_newer_matrix_lacks(seed: Seed, rec: Recommender) -> None:
    """An item evicted after a list was ranked is gone from the newer matrix: the list is
    served without it. A matrix older than the list says nothing and filters nothing."""
    now_ms = int(time.time() * 1000)
    recs = [(i, 10.0 - n) for n, i in enumerate(ITEMS[:6])]
    seed.user("u", np.ones(DIM, np.float32), recs=recs, recs_ts=now_ms)
    kept = [i for i in ITEMS if i != "i02"]
    seed.matrix(np.ones((len(kept), DIM), np.float32), ids=kept, ver=(now_ms + 5) * 10**6)
    assert rec.item_matrix() is not None  # cached, as a serving process would have it
    out = rec.recommend("u", k=4)
    assert out.source == "precomputed" and out.items == ["i00", "i01", "i03", "i04"]
    seed.matrix(np.ones((len(kept), DIM), np.float32), ids=kept, ver=(now_ms - 60_000) * 10**6)
    rec2 = Recommender(rec.client, prefix=rec.keys.prefix)
    assert rec2.item_matrix() is not None
    assert rec2.recommend("u", k=4).items == ["i00", "i01", "i02", "i03"]
