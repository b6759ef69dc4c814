"""The synthetic stream is the yardstick of every model test and benchmark, so its planted
structure is checked here against what a structureless generator would produce: if one of these
fails, a model test that passes on this data proves nothing.

Run as a script (`python tests/unit/streaming/test_synthetic.py`) to time 1M events; speed is
not a test.
"""

from __future__ import annotations

import hashlib
import math
import re
import sys
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from streamrec.consumers import cli
from streamrec.consumers.config import Config
from streamrec.streaming.synthetic import (
    POSITIVE_TYPES,
    SyntheticConfig,
    SyntheticStream,
    read_jsonl,
    write_jsonl,
)

CFG = SyntheticConfig()
EVENT_KEYS = {"user", "item", "type", "ts", "value", "user_features", "item_features"}


@pytest.fixture(scope="module")
def stream() -> SyntheticStream:
    return SyntheticStream(CFG)


@pytest.fixture(scope="module")
def events(stream: SyntheticStream) -> list[dict[str, Any]]:
    return list(stream.events())


def _genre(stream: SyntheticStream, item: str) -> str:
    return str(stream.item_features(item)["genre"])


def _positives(events: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return [e for e in events if e["type"] != "dislike"]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ---------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("n_users", 0),
        ("n_items", 0),
        ("n_events", -1),
        ("dim", 0),
        ("n_genres", 0),
        ("seed", -1),
        ("seed", 1.5),
        ("countries", ()),
        ("countries", ("DE", "DE")),
        ("age_bands", ("",)),
        ("popularity_exponent", -0.1),
        ("popularity_exponent", math.nan),
        ("temperature", 0.0),
        ("initial_user_share", 0.0),
        ("initial_item_share", 1.5),
        ("duration_ms", 0),
        ("diurnal_amplitude", 1.0),
        ("type_mix", ()),
        ("type_mix", (("view", -1.0),)),
        ("type_mix", (("rating", 1.0),)),
        ("dislike_share", 1.1),
        ("rating_share", math.inf),
        ("drift_rate", -1.0),
        ("feature_share", -0.1),
        ("n_cold_items", 10_000),
        ("cold_release", 0.0),
    ],
)
def test_config_rejects_bad_values_naming_the_field(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=field):
        SyntheticConfig(**{field: value})  # type: ignore[arg-type]


def test_config_freezes_lists_into_hashable_tuples() -> None:
    cfg = SyntheticConfig(countries=["DE", "FR"], type_mix={"view": 1.0, "click": 1.0})  # type: ignore[arg-type]
    assert cfg.countries == ("DE", "FR")
    assert cfg.type_mix == (("view", 1.0), ("click", 1.0))
    hash(cfg)


# ------------------------------------------------------------------------ determinism


def test_same_config_gives_byte_identical_output(tmp_path: Path) -> None:
    cfg = SyntheticConfig(seed=7, n_events=5000, n_users=300, n_items=120)
    digests = []
    for run in ("a", "b"):
        s = SyntheticStream(cfg)
        write_jsonl(tmp_path / f"{run}.events.jsonl", s.events())
        write_jsonl(tmp_path / f"{run}.users.jsonl", s.user_catalogue())
        write_jsonl(tmp_path / f"{run}.items.jsonl", s.item_catalogue())
        digests.append([_sha(tmp_path / f"{run}.{k}.jsonl") for k in ("events", "users", "items")])
    assert digests[0] == digests[1]

    other = SyntheticStream(SyntheticConfig(seed=8, n_events=5000, n_users=300, n_items=120))
    write_jsonl(tmp_path / "c.jsonl", other.events())
    assert _sha(tmp_path / "c.jsonl") != digests[0][0]


def test_events_replay_identically_on_each_call() -> None:
    s = SyntheticStream(SyntheticConfig(n_events=3000, n_users=200, n_items=80))
    assert list(s.events()) == list(s.events())


def test_zero_events() -> None:
    assert list(SyntheticStream(SyntheticConfig(n_events=0)).events()) == []


# ----------------------------------------------------------------------------- schema


def test_every_event_follows_the_wire_schema(
    stream: SyntheticStream, events: list[dict[str, Any]]
) -> None:
    assert len(events) == CFG.n_events
    allowed_types = {*POSITIVE_TYPES, "rating", "dislike"}
    last_ts = CFG.start_ts_ms
    for ev in events:
        assert set(ev) <= EVENT_KEYS
        assert re.fullmatch(r"u\d+", ev["user"]) and re.fullmatch(r"i\d+", ev["item"])
        assert ev["type"] in allowed_types
        assert type(ev["ts"]) is int
        assert last_ts <= ev["ts"] < CFG.end_ts_ms
        last_ts = ev["ts"]
        if ev["type"] == "rating":
            v = ev["value"]
            assert type(v) is float and math.isfinite(v) and v in (1.0, 2.0, 3.0, 4.0, 5.0)
        else:
            assert "value" not in ev
        if "user_features" in ev:
            assert ev["user_features"] == stream.user_features(ev["user"])
        if "item_features" in ev:
            feats = ev["item_features"]
            assert feats == stream.item_features(ev["item"])
            assert isinstance(feats["genre"], str) and feats["tags"]
            assert all(isinstance(t, str) and t for t in feats["tags"])
    # Plain Python types only: the JSON round trip is the identity.
    assert orjson.loads(orjson.dumps(events)) == events


def test_type_and_feature_shares_follow_the_config(events: list[dict[str, Any]]) -> None:
    n = len(events)
    types = Counter(e["type"] for e in events)
    assert types["dislike"] / n == pytest.approx(CFG.dislike_share, abs=0.005)
    assert types["rating"] / n == pytest.approx(CFG.rating_share, abs=0.005)
    mix = dict(CFG.type_mix)
    n_pos = sum(types[t] for t in mix)
    for t, w in mix.items():
        assert types[t] / n_pos == pytest.approx(w / sum(mix.values()), abs=0.01)
    assert sum("user_features" in e for e in events) / n == pytest.approx(0.3, abs=0.01)
    assert sum("item_features" in e for e in events) / n == pytest.approx(0.3, abs=0.01)


def test_traffic_follows_a_day_night_cycle(events: list[dict[str, Any]]) -> None:
    by_hour = Counter((e["ts"] // 3_600_000) % 24 for e in events)
    # Amplitude 0.5 gives a peak/trough rate ratio near 3; a flat clock would give ~1.
    assert max(by_hour.values()) / min(by_hour.values()) > 2.0


# ------------------------------------------------------------------ planted structure


def test_item_popularity_is_skewed(events: list[dict[str, Any]]) -> None:
    def top_decile_share(evs: list[dict[str, Any]], n_items: int) -> float:
        counts = sorted(Counter(e["item"] for e in evs).values(), reverse=True)
        return sum(counts[: n_items // 10]) / len(evs)

    # A uniform generator gives ~0.1 to the top 10% of items; exponent 1.1 gives ~0.7.
    assert top_decile_share(events, CFG.n_items) > 0.5
    flat = SyntheticConfig(popularity_exponent=0.0, n_events=20_000)
    flat_share = top_decile_share(list(SyntheticStream(flat).events()), flat.n_items)
    assert flat_share < top_decile_share(events, CFG.n_items) - 0.2


def test_user_activity_is_heavy_tailed(events: list[dict[str, Any]]) -> None:
    counts = np.array(sorted(Counter(e["user"] for e in events).values(), reverse=True))
    assert counts[: CFG.n_users // 10].sum() / len(events) > 0.4
    assert np.median(counts) < counts.mean() / 2


def test_users_concentrate_on_their_preferred_genres(
    stream: SyntheticStream, events: list[dict[str, Any]]
) -> None:
    pos = _positives(events)
    genre_share = Counter(_genre(stream, e["item"]) for e in pos)
    hits = chance = 0.0
    for e in pos:
        preferred = stream.preferred_genres(e["user"])
        hits += _genre(stream, e["item"]) in preferred
        chance += sum(genre_share[g] for g in preferred) / len(pos)
    # Chance = where the user's events would land if users had no taste (~0.13 here).
    assert hits / len(pos) > 0.4
    assert hits / len(pos) > 3 * chance / len(pos)


def test_dislikes_hit_items_far_from_the_taste(
    stream: SyntheticStream, events: list[dict[str, Any]]
) -> None:
    dislikes = [stream.affinity(e["user"], e["item"]) for e in events if e["type"] == "dislike"]
    positives = [stream.affinity(e["user"], e["item"]) for e in _positives(events)[:3000]]
    assert np.mean(dislikes) < 0 < np.mean(positives) - 0.3


def test_ratings_track_true_affinity(stream: SyntheticStream, events: list[dict[str, Any]]) -> None:
    pairs = np.array(
        [(e["value"], stream.affinity(e["user"], e["item"])) for e in events if "value" in e]
    )
    assert len(set(pairs[:, 0])) >= 4  # not all fives: there is explicit signal to learn
    assert np.corrcoef(pairs.T)[0, 1] > 0.4


@pytest.mark.parametrize("feature", ["country", "age"])
def test_side_features_predict_genre(
    stream: SyntheticStream, events: list[dict[str, Any]], feature: str
) -> None:
    """Cold start can only use features if they say something: compare with shuffled labels.

    Each user weighs the same (their own genre mix), so a few heavy users cannot fake a signal.
    """
    users = sorted({e["user"] for e in _positives(events)})
    row = {u: k for k, u in enumerate(users)}
    mix = np.zeros((len(users), CFG.n_genres))
    for e in _positives(events):
        mix[row[e["user"]], int(_genre(stream, e["item"])[1:])] += 1
    mix /= mix.sum(axis=1, keepdims=True)
    _, groups = np.unique([stream.user_features(u)[feature] for u in users], return_inverse=True)

    def mean_tv(labels: np.ndarray) -> float:
        """Mean total-variation distance of each group's genre mix from everyone's."""
        sums = np.zeros((labels.max() + 1, CFG.n_genres))
        np.add.at(sums, labels, mix)
        means = sums / np.bincount(labels)[:, None]
        return float(0.5 * np.abs(means - mix.mean(axis=0)).sum(axis=1).mean())

    rng = np.random.default_rng(0)
    shuffled = max(mean_tv(rng.permutation(groups)) for _ in range(20))
    assert mean_tv(groups) > max(0.1, shuffled + 0.05)  # ~0.2 vs ~0.06 across seeds


def test_item_latents_cluster_by_genre(stream: SyntheticStream) -> None:
    items = stream.item_ids
    genres = [_genre(stream, i) for i in items]
    latents = np.stack([stream.item_latent(i) for i in items])
    names = sorted(set(genres))
    means = np.stack([latents[[g == n for g in genres]].mean(axis=0) for n in names])
    nearest = np.argmin(((latents[:, None, :] - means[None]) ** 2).sum(axis=2), axis=1)
    assert np.mean([names[k] == g for k, g in zip(nearest, genres, strict=True)]) > 0.8


def test_item_sampler_matches_the_softmax(stream: SyntheticStream) -> None:
    """The rejection sampler must draw exactly softmax(taste·latent/T + log pop) over eligible
    items; a biased sampler would plant a different world than the ground truth describes."""
    rng = np.random.default_rng(1)
    at = CFG.start_ts_ms + CFG.duration_ms // 2
    eligible = np.array([i not in stream.cold_items for i in stream.item_ids])
    eligible &= np.array([r["ts"] <= at for r in stream.item_catalogue()])
    latents = np.stack([stream.item_latent(i) for i in stream.item_ids])
    logpop = stream._logpop  # the planted popularity prior
    n = 100_000
    for sign in (1.0, -1.0):
        taste = sign * stream.user_taste("u3")
        out = stream._sample_items(rng, np.tile(taste, (n, 1)), np.full(n, at))
        logits = latents @ taste / CFG.temperature + logpop
        p = np.where(eligible, np.exp(logits - logits[eligible].max()), 0.0)
        p /= p.sum()
        empirical = np.bincount(out, minlength=CFG.n_items) / n
        assert empirical[~eligible].sum() == 0
        assert 0.5 * np.abs(empirical - p).sum() < 0.03  # sampling noise alone is ~0.01


# ----------------------------------------------------------------- arrivals, catalogue


def test_new_users_and_items_arrive_over_time(
    stream: SyntheticStream, events: list[dict[str, Any]]
) -> None:
    mid = CFG.start_ts_ms + CFG.duration_ms // 2
    first_user: dict[str, int] = {}
    first_item: dict[str, int] = {}
    for e in events:
        first_user.setdefault(e["user"], e["ts"])
        first_item.setdefault(e["item"], e["ts"])
    assert sum(ts >= mid for ts in first_user.values()) > 100
    assert sum(ts >= mid for ts in first_item.values()) > 20

    users = {r["id"]: r["ts"] for r in stream.user_catalogue()}
    items = {r["id"]: r["ts"] for r in stream.item_catalogue()}
    assert sum(ts == CFG.start_ts_ms for ts in users.values()) == CFG.n_initial_users
    assert sum(ts == CFG.start_ts_ms for ts in items.values()) == CFG.n_initial_items
    # Nobody acts before arriving, nothing is touched before it is catalogued.
    assert all(ts >= users[u] for u, ts in first_user.items())
    assert all(ts >= items[i] for i, ts in first_item.items())


def test_catalogues_cover_the_events_and_the_cold_items(
    stream: SyntheticStream, events: list[dict[str, Any]]
) -> None:
    users = list(stream.user_catalogue())
    items = list(stream.item_catalogue())
    assert [r["id"] for r in users] == stream.user_ids
    assert [r["id"] for r in items] == stream.item_ids
    for records in (users, items):
        ts = [r["ts"] for r in records]
        assert ts == sorted(ts)
        assert all(set(r) == {"id", "features", "ts"} for r in records)
    assert all(r["features"] == stream.user_features(r["id"]) for r in users)
    assert all(r["features"] == stream.item_features(r["id"]) for r in items)
    assert {e["user"] for e in events} <= {r["id"] for r in users}
    assert {e["item"] for e in events} <= {r["id"] for r in items}

    cold = set(stream.cold_items)
    assert len(cold) == CFG.n_cold_items
    assert all(r["ts"] == CFG.start_ts_ms for r in items if r["id"] in cold)
    touched = [e for e in events if e["item"] in cold]
    assert all(e["ts"] >= stream.cold_release_ts for e in touched)
    assert touched  # they do get interactions once released: cold start has a target


# ----------------------------------------------------------------------- ground truth


def test_ground_truth_accessors(stream: SyntheticStream) -> None:
    taste = stream.user_taste("u5")
    assert taste.shape == (CFG.dim,) and math.isclose(np.linalg.norm(taste), 1.0)
    assert stream.item_latent("i5").shape == (CFG.dim,)
    assert set(stream.user_features("u5")) == {"country", "age"}
    assert 1 <= len(stream.preferred_genres("u5")) <= 2

    top = stream.true_top_k("u5", 10)
    scores = [stream.affinity("u5", i) for i in top]
    assert len(set(top)) == 10 and scores == sorted(scores, reverse=True)
    assert scores[0] == max(stream.affinity("u5", i) for i in stream.item_ids)
    assert stream.true_top_k("u5", 10, exclude=top[:3])[:7] == top[3:]
    # At the start only the initial items exist.
    early = stream.true_top_k("u5", CFG.n_items, at_ms=CFG.start_ts_ms)
    assert len(early) == CFG.n_initial_items
    for bad in ("u999999", "x1", "u01", "", "i1"):
        with pytest.raises(KeyError):
            stream.user_taste(bad)


def test_taste_drift_rotates_tastes_and_moves_events() -> None:
    still = SyntheticStream(SyntheticConfig(n_events=0))
    assert np.array_equal(still.user_taste("u1", CFG.start_ts_ms), still.user_taste("u1"))

    cfg = SyntheticConfig(drift_rate=math.pi / 2, n_events=20_000)
    s = SyntheticStream(cfg)
    start, end = s.user_taste("u1", cfg.start_ts_ms), s.user_taste("u1")
    assert math.isclose(np.linalg.norm(end), 1.0)
    assert abs(float(start @ end)) < 1e-9  # a quarter turn

    evs = _positives(s.events())
    quarter = len(evs) // 4

    def preferred_share(part: list[Mapping[str, Any]]) -> float:
        return float(np.mean([_genre(s, e["item"]) in s.preferred_genres(e["user"]) for e in part]))

    assert preferred_share(evs[-quarter:]) < preferred_share(evs[:quarter]) - 0.2


# -------------------------------------------------------------------------- JSONL, CLI


@pytest.mark.parametrize("name", ["log.jsonl", "log.jsonl.gz"])
def test_jsonl_round_trip(tmp_path: Path, name: str) -> None:
    records = list(SyntheticStream(SyntheticConfig(n_events=500)).events())
    path = tmp_path / name
    assert write_jsonl(path, records) == 500
    assert list(read_jsonl(path)) == records
    first = path.read_bytes()
    write_jsonl(path, records)
    assert path.read_bytes() == first  # gzip too: no timestamp in the header


def test_read_jsonl_names_the_bad_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b'{"a": 1}\n\n{"a": NaN}\n')
    with pytest.raises(ValueError, match=r"bad\.jsonl:3"):
        list(read_jsonl(path))


def test_cli_writes_the_configured_stream(tmp_path: Path) -> None:
    out = tmp_path / "events.jsonl"
    argv = ["generate", "--out", str(out), "--events", "2000", "--seed", "3", "--users", "100"]
    argv += ["--items", "50", "--item-catalogue", str(tmp_path / "items.jsonl")]
    assert cli.run(argv, Config()) == 0
    expected = tmp_path / "expected.jsonl"
    cfg = SyntheticConfig(seed=3, n_events=2000, n_users=100, n_items=50)
    write_jsonl(expected, SyntheticStream(cfg).events())
    assert out.read_bytes() == expected.read_bytes()
    assert len(list(read_jsonl(tmp_path / "items.jsonl"))) == 50

    with pytest.raises(SystemExit) as exc:
        cli.run(["generate", "--out", str(out), "--users", "0"], Config())
    assert exc.value.code == 2


if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    t0 = time.perf_counter()
    s = SyntheticStream(SyntheticConfig(n_events=n))
    t1 = time.perf_counter()
    count = sum(1 for _ in s.events())
    t2 = time.perf_counter()
    print(f"world {t1 - t0:.2f}s; {count} events {t2 - t1:.2f}s ({count / (t2 - t1):,.0f}/s)")
