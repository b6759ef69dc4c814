"""The log-like generator plants the shapes of real rating logs; each is measured here.

A quality benchmark on these regimes means something only if the regimes have the shapes
they claim: sessions of ratings seconds apart separated by long silences, a popularity skew
with a long tail, MovieLens-like star shares with only 4 and 5 as positives, users arriving
over the whole log, drifting tastes. Each test measures one of them with `log_stats` or the
planted truth, against a contrast where one is cheap to make (no skew, no drift).
"""

from __future__ import annotations

import doctest
import math
from collections import Counter
from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from streamrec.streaming import loglike
from streamrec.streaming.loglike import (
    REGIMES,
    SESSION_GAP_MS,
    LogLikeConfig,
    LogLikeStream,
    gini,
    log_stats,
    regime_config,
)

ML = regime_config("ml_like_small", scale=0.1, seed=3)


@pytest.fixture(scope="module")
def ml() -> tuple[LogLikeStream, list[dict[str, Any]]]:
    s = LogLikeStream(ML)
    return s, list(s.events())


@pytest.fixture(scope="module")
def stats(ml: tuple[LogLikeStream, list[dict[str, Any]]]) -> dict[str, Any]:
    return log_stats(ml[1], n_items=ML.n_items)


def test_docstring_examples_run() -> None:
    assert doctest.testmod(loglike).failed == 0


# ----------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("n_users", 0),
        ("n_items", 0),
        ("n_events", -1),
        ("seed", -1),
        ("min_events", 0),
        ("duration_ms", 1000),
        ("temperature", 0.0),
        ("popularity_exponent", math.nan),
        ("max_user_share", 0.0),
        ("first_session_share", 1.5),
        ("event_gap_s", -1.0),
        ("session_focus", 2.0),
        ("rating_shares", (0.5, 0.5)),
        ("rating_shares", (0.2, 0.2, 0.2, 0.2, 0.3)),
        ("novelty", -1.0),
    ],
)
def test_config_rejects_bad_values_naming_the_field(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=field):
        LogLikeConfig(**{field: value})  # type: ignore[arg-type]


def test_regimes_scale_and_unknown_names_fail() -> None:
    full = regime_config("ml_like_small")
    assert (full.n_users, full.n_items, full.n_events) == (943, 1682, 100_000)
    tiny = regime_config("large_catalogue", scale=0.04, seed=5)
    assert tiny.seed == 5 and tiny.n_users == 200 and tiny.n_items == 6000
    assert (
        tiny.n_events == 4000
        and tiny.popularity_exponent == REGIMES["large_catalogue"].popularity_exponent
    )
    with pytest.raises(KeyError, match="no_such"):
        regime_config("no_such")
    with pytest.raises(ValueError, match="scale"):
        regime_config("drifting", scale=0.0)


@pytest.mark.parametrize("name", sorted(REGIMES))
def test_every_regime_generates_a_clean_log(name: str) -> None:
    cfg = regime_config(name, scale=0.02, seed=1)
    events = list(LogLikeStream(cfg).events())
    # shorter only where few items cap what a user can rate (40 % of 238 at this scale)
    assert 0.55 * cfg.n_events <= len(events) <= cfg.n_events
    last = cfg.start_ts_ms
    for e in events:
        assert set(e) == {"user", "item", "type", "ts", "value"}
        assert e["type"] == "rating" and e["value"] in (1.0, 2.0, 3.0, 4.0, 5.0)
        assert type(e["ts"]) is int and last <= e["ts"] < cfg.end_ts_ms
        last = e["ts"]
    assert len({(e["user"], e["item"]) for e in events}) == len(events)  # nobody rates twice


# ------------------------------------------------------------------------ determinism


def test_same_seed_same_log_other_seed_other_log() -> None:
    cfg = regime_config("drifting", scale=0.02, seed=4)
    a = list(LogLikeStream(cfg).events())
    assert a == list(LogLikeStream(cfg).events())
    s = LogLikeStream(cfg)
    assert list(s.events()) == list(s.events())  # each call replays from the seed
    assert a != list(LogLikeStream(replace(cfg, seed=5)).events())
    assert list(LogLikeStream(replace(cfg, n_events=0)).events()) == []


# ------------------------------------------------------------------------- the shapes


def test_sessions_are_bursts_of_ratings_between_long_silences(
    ml: tuple[LogLikeStream, list[dict[str, Any]]], stats: dict[str, Any]
) -> None:
    _, events = ml
    # tens of ratings a session, seconds apart (exponential gaps of mean 20 s: median 13.9 s)
    assert 15 <= stats["events_per_session"] <= 60
    assert 8 <= stats["median_gap_in_session_s"] <= 20
    assert 1.5 <= stats["sessions_per_user"] <= 5
    by_user: dict[str, list[int]] = {}
    for e in events:
        by_user.setdefault(e["user"], []).append(e["ts"])
    gaps = np.concatenate([np.diff(ts) for ts in by_user.values()])
    # A user's gaps are seconds (in a session) or beyond half an hour (between them), with
    # almost nothing in between; a session takes minutes, not hours.
    assert np.mean((gaps > 5 * 60_000) & (gaps <= SESSION_GAP_MS)) < 0.01
    assert np.mean(gaps > SESSION_GAP_MS) > 0.01
    first_session = []
    for ts in by_user.values():
        t = np.asarray(ts)
        end = np.flatnonzero(np.diff(t) > SESSION_GAP_MS)
        n = end[0] + 1 if end.size else t.size
        first_session.append(n / t.size)
        assert t[n - 1] - t[0] < 4 * 3_600_000
    assert 0.45 <= np.mean(first_session) <= 0.8  # most of a user's ratings come first


def test_sparse_sessions_are_short_and_mostly_single(stats: dict[str, Any]) -> None:
    cfg = regime_config("sessions_sparse", scale=0.05, seed=0)
    sparse = log_stats(LogLikeStream(cfg).events(), n_items=cfg.n_items)
    assert sparse["events_per_session"] < 6 < stats["events_per_session"]
    assert sparse["sessions_per_user"] < 1.8
    assert sparse["events_per_user"]["median"] <= 4


def test_popularity_is_skewed_with_a_long_tail(stats: dict[str, Any]) -> None:
    # MovieLens-100k-like: the top 1 % of items take 4-15 % of the ratings.
    assert 0.3 <= stats["item_gini"] <= 0.7
    assert 0.03 <= stats["top1pct_item_share"] <= 0.15
    large = regime_config("large_catalogue", scale=0.05, seed=0)
    big = log_stats(LogLikeStream(large).events(), n_items=large.n_items)
    assert big["item_gini"] > 0.75 and big["top1pct_item_share"] > 0.2
    flat = replace(ML, popularity_exponent=0.0, temperature=5.0, novelty=0.0)
    even = log_stats(LogLikeStream(flat).events(), n_items=flat.n_items)
    assert even["item_gini"] < stats["item_gini"] - 0.1


def test_user_activity_has_a_floor_and_a_heavy_tail(stats: dict[str, Any]) -> None:
    per_user = stats["events_per_user"]
    assert per_user["median"] < per_user["mean"] < per_user["max"] / 2
    counts = Counter(e["user"] for e in LogLikeStream(replace(ML, n_users=40)).events())
    # min_events each, except users who arrive too late to finish their sessions
    assert np.mean([c >= ML.min_events for c in counts.values()]) > 0.9


def test_star_shares_and_positives(
    ml: tuple[LogLikeStream, list[dict[str, Any]]], stats: dict[str, Any]
) -> None:
    for stars, share in zip("12345", ML.rating_shares, strict=True):
        assert stats["rating_shares"][stars] == pytest.approx(share, abs=0.005)
    assert stats["positive_share"] == pytest.approx(0.56, abs=0.01)
    stream, events = ml
    aff = np.array([stream.affinity(e["user"], e["item"], e["ts"]) for e in events])
    stars = np.array([e["value"] for e in events])
    # stars follow the user's affinity: the positives (4, 5) are the items they like
    assert np.corrcoef(aff, stars)[0, 1] > 0.25
    assert aff[stars >= 4].mean() > aff[stars <= 2].mean() + 0.05


def test_users_arrive_and_items_are_released_over_the_log(
    ml: tuple[LogLikeStream, list[dict[str, Any]]], stats: dict[str, Any]
) -> None:
    quarters = stats["users_first_seen_by_quarter"]
    assert sum(quarters) == stats["users"]
    assert min(quarters) >= 0.12 * stats["users"]  # a steady flow, not all at the start
    stream, events = ml
    first: dict[str, int] = {}
    for e in events:
        first.setdefault(e["user"], e["ts"])
        assert e["ts"] >= stream.release_ms(e["item"])
    assert all(ts == stream.arrival_ms(u) for u, ts in first.items())
    late_items = {e["item"] for e in events if stream.release_ms(e["item"]) > ML.start_ts_ms}
    assert len(late_items) > 0.1 * ML.n_items


def test_new_items_are_hot_while_new() -> None:
    """With novelty, items in their first month take a larger share of the ratings."""

    def young_share(cfg: LogLikeConfig) -> float:
        s = LogLikeStream(cfg)
        ages = [(e["ts"] - s.release_ms(e["item"])) / 86_400_000 for e in s.events()]
        return float(np.mean(np.asarray(ages) < 30))

    assert young_share(ML) > 1.4 * young_share(replace(ML, novelty=0.0))


def test_tastes_drift_over_the_log() -> None:
    cfg = regime_config("drifting", scale=0.1, seed=2)
    moving, still = LogLikeStream(cfg), LogLikeStream(replace(cfg, drift_rate=0.0))
    start, end = moving.user_taste("u1", cfg.start_ts_ms), moving.user_taste("u1")
    assert math.isclose(float(np.linalg.norm(end)), 1.0) and abs(float(start @ end)) < 1e-9
    assert np.allclose(still.user_taste("u1", cfg.start_ts_ms), still.user_taste("u1"))

    def preferred_share_drop(s: LogLikeStream) -> float:
        """Share of positives in the user's own genres: first third of the log - last third."""
        third = cfg.duration_ms / 3
        early, late = [], []
        for e in s.events():
            if e["value"] < 4:
                continue
            hit = s.item_genre(e["item"]) in s.preferred_genres(e["user"])
            if e["ts"] < cfg.start_ts_ms + third:
                early.append(hit)
            elif e["ts"] >= cfg.start_ts_ms + 2 * third:
                late.append(hit)
        return float(np.mean(early) - np.mean(late))

    # Without drift the share falls a little too (a user's favourites get rated first and
    # are not rated twice); with a quarter turn it falls to a fraction of what it was.
    assert preferred_share_drop(moving) > preferred_share_drop(still) + 0.15


def test_ground_truth_accessors_reject_unknown_ids(
    ml: tuple[LogLikeStream, list[dict[str, Any]]],
) -> None:
    stream, _ = ml
    assert stream.user_ids[:2] == ["u0", "u1"] and len(stream.item_ids) == ML.n_items
    assert 1 <= len(stream.preferred_genres("u3")) <= 2
    for bad in ("u999999", "x1", "u01", ""):
        with pytest.raises(KeyError):
            stream.user_taste(bad)
    with pytest.raises(KeyError):
        stream.item_genre("u1")


# ------------------------------------------------------------------------- statistics


def test_log_stats_on_a_hand_made_log() -> None:
    minute = 60_000
    events = [
        {"user": "a", "item": "x", "ts": 0, "value": 5.0},
        {"user": "a", "item": "y", "ts": 10_000, "value": 4.0},
        {"user": "a", "item": "z", "ts": 10_000 + 31 * minute, "value": 1.0},  # new session
        {"user": "b", "item": "x", "ts": 40 * minute, "value": 3.0},
        {"user": "b", "item": "x", "ts": 41 * minute, "value": 4.0},  # a repeat
    ]
    s = log_stats(events, n_items=10)
    assert (s["events"], s["users"], s["items"], s["repeats"]) == (5, 2, 3, 1)
    assert s["sessions_per_user"] == 1.5 and s["events_per_session"] == 5 / 3
    assert s["median_gap_in_session_s"] == 35.0  # gaps of 10 s and 60 s
    assert s["positive_share"] == 3 / 5
    assert s["rating_shares"] == {"1": 0.2, "3": 0.2, "4": 0.4, "5": 0.2}
    assert s["top1pct_item_share"] == 3 / 5  # one item of ten: x, with three events
    assert s["users_first_seen_by_quarter"] == [1, 0, 0, 1]
    assert log_stats([]) == {"events": 0}


def test_gini_golden_values() -> None:
    assert gini([]) == 0.0 and gini([0, 0]) == 0.0 and gini([3, 3, 3]) == 0.0
    # one of n holds everything: (n - 1) / n
    assert gini([0, 0, 0, 0, 10]) == pytest.approx(0.8)
    # 1, 2, 3: mean absolute difference 8/9, over twice the mean 4: 2/9
    assert gini([1, 2, 3]) == pytest.approx(2 / 9)


def test_generator_needs_neither_tensorflow_nor_consumers() -> None:
    """The layering rule for streaming/: a log can be made where TF is not installed."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "import streamrec.streaming.loglike as m\n"
        "list(m.LogLikeStream(m.regime_config('ml_like_small', scale=0.02)).events())\n"
        "bad = [n for n in sys.modules if n.startswith(('tensorflow', 'streamrec.consumers'))]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
