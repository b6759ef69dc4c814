"""Seeded rating logs shaped like real ones: sessions, a long tail, 1-5 stars, late arrivals.

The planted stream of `streaming.synthetic` is made for checking that a model learns what was
planted; its users act at random moments, one event at a time, on a small catalogue. Real
rating logs (MovieLens and its kind) look different, and a model tuned on the first can lose
on the second. This generator plants the shapes that matter for an online recommender:

- users act in sessions: tens to hundreds of ratings seconds apart, then silence for days;
  most of a user's ratings come in the first session;
- each user rates an item at most once (no repeats), chosen by a popularity prior with a long
  tail times the user's taste, among items released by then;
- ratings 1-5 in fixed shares (MovieLens-like by default): the stars follow the user's
  affinity for the item plus the item's quality and the user's leniency, so only the high
  ones mark what the user liked;
- users arrive over the whole log, items are released over it, new items can be hot for a
  while (`novelty`), tastes can turn over the log (`drift_rate`) and a session can dwell on
  one genre (`session_focus`).

`REGIMES` names a few such worlds at a MovieLens-100k-like scale; `regime_config` scales one
down for tests and quick benchmarks. `log_stats` measures what a log looks like, so tests can
check the planted shapes and a benchmark can print them. Pure numpy: same config, same events.

>>> cfg = regime_config("ml_like_small", scale=0.02, seed=1)
>>> events = list(LogLikeStream(cfg).events())
>>> sorted(events[0])
['item', 'ts', 'type', 'user', 'value']
>>> {e["type"] for e in events}, {e["value"] for e in events} <= {1.0, 2.0, 3.0, 4.0, 5.0}
({'rating'}, True)
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np

from streamrec.model.config import ConfigError
from streamrec.streaming.synthetic import DAY_MS, DEFAULT_START_TS_MS

__all__ = [
    "REGIMES",
    "SESSION_GAP_MS",
    "LogLikeConfig",
    "LogLikeStream",
    "config_dict",
    "gini",
    "log_stats",
    "regime_config",
]

#: A silence longer than this between two events of a user starts a new session (30 minutes,
#: the usual web-analytics cut); the generator leaves at least this much between sessions.
SESSION_GAP_MS = 30 * 60 * 1000

_ITEM_NOISE = 0.35  # norm of an item latent's offset from its genre centroid
_TASTE_NOISE = 0.25  # norm of a user's offset from the mix of their genres
_SECOND_GENRE_WEIGHT = 0.4
_USER_LENIENCY = 0.5  # std of a user's rating offset, in units of the rating noise
_QUALITY_POP = 0.4  # how much an item's quality follows its popularity (real logs: popular
#                     items are rated higher on average)
_RETURN_SIGMA = 1.0  # log-std of the span over which a user's later sessions fall


def _require(cond: bool, setting: str, message: str) -> None:
    if not cond:
        raise ConfigError(setting, message)


def _finite(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


@dataclass(frozen=True)
class LogLikeConfig:
    """Everything that shapes a log-like rating stream; equal configs give equal events.

    `n_events` is a target: a user cannot rate more items than exist when they act (nor more
    than `max_user_share` of them), and the few events that would fall after the end of the
    log are dropped, so the log can be shorter, most at tiny scales.
    """

    seed: int = 0
    n_users: int = 943
    n_items: int = 1682
    n_events: int = 100_000
    dim: int = 16
    n_genres: int = 18
    start_ts_ms: int = DEFAULT_START_TS_MS
    duration_ms: int = 210 * DAY_MS
    #: Item appeal prior ∝ rank^-exponent: the popularity skew and its long tail.
    popularity_exponent: float = 0.9
    #: Softmax temperature over taste·latent: lower = choices follow taste more than appeal.
    temperature: float = 0.2
    #: Fewest ratings per user (MovieLens-100k keeps users with 20 or more).
    min_events: int = 20
    #: Log-std of the ratings per user above `min_events`: higher = heavier tail.
    activity_sigma: float = 1.0
    #: A user rates at most this share of the catalogue.
    max_user_share: float = 0.4
    #: Mean share of a user's ratings made in their first session.
    first_session_share: float = 0.6
    #: Mean ratings per later session.
    session_events: float = 25.0
    #: Mean seconds between two ratings of one session.
    event_gap_s: float = 20.0
    #: Median days over which a user's later sessions spread after their first.
    return_days: float = 30.0
    #: Users present at the start; the rest arrive uniformly over the log.
    initial_user_share: float = 0.05
    #: Items released before the log; the rest are released evenly over it.
    initial_item_share: float = 0.8
    #: Shares of 1..5 stars (MovieLens-100k: 6 / 11 / 27 / 34 / 21 %).
    rating_shares: tuple[float, ...] = (0.06, 0.11, 0.27, 0.34, 0.22)
    #: Weight of the user's affinity for the item in the stars, against unit noise.
    rating_affinity: float = 1.0
    #: Angle in radians each user's taste turns over the whole log (towards another genre).
    drift_rate: float = 0.0
    #: Pull of a session's own genre on its choices, 0..1 (0 = sessions follow the taste).
    session_focus: float = 0.0
    #: Extra appeal of an item at release, relative (appeal x (1 + novelty) at release).
    novelty: float = 3.0
    #: Half-life of the novelty boost, in days.
    novelty_half_life_days: float = 30.0

    def __post_init__(self) -> None:
        if isinstance(self.rating_shares, list):
            object.__setattr__(self, "rating_shares", tuple(self.rating_shares))
        for name in ("seed", "n_users", "n_items", "n_events", "dim", "n_genres", "min_events"):
            value = getattr(self, name)
            _require(
                isinstance(value, int) and not isinstance(value, bool),
                name,
                f"must be an int, got {value!r}",
            )
        _require(self.seed >= 0, "seed", "must be >= 0")
        for name in ("n_users", "n_items", "dim", "n_genres", "min_events"):
            _require(getattr(self, name) >= 1, name, "must be >= 1")
        _require(self.n_events >= 0, "n_events", "must be >= 0")
        _require(
            isinstance(self.start_ts_ms, int) and self.start_ts_ms >= 0,
            "start_ts_ms",
            "must be an int >= 0 (ms since epoch)",
        )
        _require(
            isinstance(self.duration_ms, int) and self.duration_ms >= DAY_MS,
            "duration_ms",
            "must be an int of at least a day",
        )
        for name in (
            "popularity_exponent",
            "activity_sigma",
            "rating_affinity",
            "drift_rate",
            "novelty",
        ):
            value = getattr(self, name)
            _require(_finite(value) and value >= 0, name, f"must be finite and >= 0: {value!r}")
        for name in ("temperature", "session_events", "event_gap_s", "return_days"):
            value = getattr(self, name)
            _require(_finite(value) and value > 0, name, f"must be finite and > 0: {value!r}")
        _require(
            _finite(self.novelty_half_life_days) and self.novelty_half_life_days > 0,
            "novelty_half_life_days",
            "must be finite and > 0",
        )
        for name in (
            "max_user_share",
            "first_session_share",
            "initial_user_share",
            "initial_item_share",
        ):
            value = getattr(self, name)
            _require(_finite(value) and 0 < value <= 1, name, f"must be in (0, 1]: {value!r}")
        _require(
            _finite(self.session_focus) and 0 <= self.session_focus <= 1,
            "session_focus",
            "must be in [0, 1]",
        )
        shares = self.rating_shares
        _require(
            len(shares) == 5 and all(_finite(s) and s >= 0 for s in shares),
            "rating_shares",
            "must be five shares >= 0, for 1..5 stars",
        )
        _require(abs(sum(shares) - 1.0) < 1e-6, "rating_shares", "must add up to 1")

    @property
    def end_ts_ms(self) -> int:
        """First ms after the log: every event ts is below it."""
        return self.start_ts_ms + self.duration_ms


#: Named worlds at full scale (MovieLens-100k-like sizes); see `regime_config` to scale them.
REGIMES: dict[str, LogLikeConfig] = {
    # MovieLens-100k's shape: 943 users with >= 20 ratings each, 1,682 items, 100k ratings
    # over seven months, most of a user's ratings in their first sitting. Temperature and
    # novelty (the defaults) were set so that the baselines' HR@10 in the per-event replay
    # come near a real log of this shape's: decayed popularity 0.102 (real 0.100; cold users
    # 0.255 vs 0.281), OnlineMF 0.150 (0.142; cold 0.199 vs 0.186), full size, seed 0.
    "ml_like_small": LogLikeConfig(),
    # A shop-sized catalogue: 30k items with a long, flat tail; users rate fewer of them.
    "large_catalogue": LogLikeConfig(
        n_users=5000,
        n_items=30_000,
        n_events=100_000,
        popularity_exponent=1.05,
        min_events=5,
        activity_sigma=1.1,
        session_events=12.0,
        first_session_share=0.5,
    ),
    # Tastes turn by 90 degrees over the log, sessions dwell on a genre, new items are hot
    # for a couple of weeks, and users keep coming back for months.
    "drifting": LogLikeConfig(
        drift_rate=math.pi / 2,
        session_focus=0.5,
        novelty=4.0,
        novelty_half_life_days=10.0,
        first_session_share=0.35,
        return_days=90.0,
    ),
    # Many users, few ratings each, short single sessions: mostly cold users.
    "sessions_sparse": LogLikeConfig(
        n_users=15_000,
        n_items=5000,
        n_events=75_000,
        min_events=1,
        activity_sigma=1.2,
        first_session_share=0.8,
        session_events=4.0,
        event_gap_s=30.0,
        return_days=20.0,
        popularity_exponent=1.0,
    ),
}


def regime_config(name: str, *, scale: float = 1.0, seed: int = 0) -> LogLikeConfig:
    """The named regime with users and events times `scale`, items times sqrt(scale).

    Users and events shrink together so a user's sessions keep their length; the catalogue
    shrinks slower, as a smaller shop still has a tail. Floors keep tiny scales meaningful.

    >>> c = regime_config("ml_like_small", scale=0.25)
    >>> (c.n_users, c.n_items, c.n_events)
    (236, 841, 25000)
    """
    if name not in REGIMES:
        raise KeyError(f"unknown regime {name!r}; have {', '.join(REGIMES)}")
    _require(_finite(scale) and 0 < scale <= 1, "scale", f"must be in (0, 1], got {scale!r}")
    base = REGIMES[name]
    return replace(
        base,
        seed=seed,
        n_users=max(10, round(base.n_users * scale)),
        n_items=max(50, round(base.n_items * math.sqrt(scale))),
        n_events=max(200, round(base.n_events * scale)),
    )


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


class LogLikeStream:
    """A planted world and the rating log it emits, with the truth to check the log against.

    The world (tastes, item latents, appeal, releases, arrivals) is built in the constructor;
    `events()` generates the log from its own seed on every call. Ids are `u<n>` in arrival
    order and `i<n>` in release order.
    """

    def __init__(self, cfg: LogLikeConfig | None = None) -> None:
        self.cfg = cfg = cfg if cfg is not None else LogLikeConfig()
        world_seed, self._events_seed = np.random.SeedSequence(cfg.seed).spawn(2)
        rng = np.random.default_rng(world_seed)
        n_u, n_i, n_g, dim = cfg.n_users, cfg.n_items, cfg.n_genres, cfg.dim

        self._centroids = _unit(rng.standard_normal((n_g, dim)))
        self._item_genre = rng.choice(n_g, size=n_i, p=rng.dirichlet(np.full(n_g, 2.0)))
        noise = rng.standard_normal((n_i, dim)) * (_ITEM_NOISE / math.sqrt(dim))
        self._latent = self._centroids[self._item_genre] + noise
        rank = rng.permutation(n_i) + 1
        self._logpop = -cfg.popularity_exponent * np.log(rank.astype(np.float64))
        z = self._logpop - self._logpop.mean()
        z /= max(float(z.std()), 1e-12)
        self._quality = _QUALITY_POP * z + math.sqrt(1 - _QUALITY_POP**2) * rng.standard_normal(n_i)

        # Releases: the initial items before the log (no novelty left), the rest evenly over it.
        n_init = max(1, round(n_i * cfg.initial_item_share))
        release = np.empty(n_i, dtype=np.int64)
        release[:n_init] = cfg.start_ts_ms - (1 + rng.random(n_init) * 365) * DAY_MS
        n_new = n_i - n_init
        steps = np.arange(1, n_new + 1, dtype=np.float64) / (n_new + 1)
        release[n_init:] = cfg.start_ts_ms + np.floor(steps * cfg.duration_ms).astype(np.int64)
        self._release = release

        # Tastes: one or two genres, a drift direction towards another genre, a leniency.
        first = rng.choice(n_g, size=n_u)
        second = (first + 1 + rng.integers(0, max(n_g - 1, 1), size=n_u)) % n_g
        drift_genre = (first + 1 + rng.integers(0, max(n_g - 1, 1), size=n_u)) % n_g
        two = rng.random(n_u) < 0.5
        w2 = np.where(two & (n_g > 1), _SECOND_GENRE_WEIGHT, 0.0)[:, None]
        taste = (1 - w2) * self._centroids[first] + w2 * self._centroids[second]
        taste += rng.standard_normal((n_u, dim)) * (_TASTE_NOISE / math.sqrt(dim))
        self._taste0 = _unit(taste)
        d = self._centroids[drift_genre]
        d = d - (d * self._taste0).sum(axis=1, keepdims=True) * self._taste0
        fallback = _unit(rng.standard_normal((n_u, dim)))
        fallback -= (fallback * self._taste0).sum(axis=1, keepdims=True) * self._taste0
        small = np.linalg.norm(d, axis=1) < 1e-6
        d[small] = fallback[small]
        self._drift_dir = _unit(d)
        self._user_genres = [
            (int(f), int(s)) if t and n_g > 1 else (int(f),)
            for f, s, t in zip(first, second, two, strict=True)
        ]
        self._leniency = rng.standard_normal(n_u) * _USER_LENIENCY

        # Arrivals: a few users at the start, the rest uniformly over the log (sorted, so the
        # index order is the arrival order).
        n_init_u = max(1, round(n_u * cfg.initial_user_share))
        arrival = np.full(n_u, cfg.start_ts_ms, dtype=np.int64)
        late = np.sort(rng.random(n_u - n_init_u)) * cfg.duration_ms
        arrival[n_init_u:] = cfg.start_ts_ms + late.astype(np.int64)
        self._arrival = arrival

        # Activity: min_events plus a lognormal share of the rest, capped by the catalogue.
        cap = max(1, math.floor(cfg.max_user_share * n_i))
        extra_total = max(0, cfg.n_events - n_u * cfg.min_events)
        w = np.exp(rng.standard_normal(n_u) * cfg.activity_sigma)
        extra = rng.multinomial(extra_total, w / w.sum()) if extra_total else np.zeros(n_u, int)
        self._n_events = np.minimum(cfg.min_events + extra, cap).astype(np.int64)

        self._user_ids = [f"u{u}" for u in range(n_u)]
        self._item_ids = [f"i{i}" for i in range(n_i)]

    # ----------------------------------------------------------------- ids and ground truth

    @property
    def user_ids(self) -> list[str]:
        """All user ids in arrival order (a copy)."""
        return list(self._user_ids)

    @property
    def item_ids(self) -> list[str]:
        """All item ids in release order (a copy)."""
        return list(self._item_ids)

    @staticmethod
    def _index(ident: str, prefix: str, n: int) -> int:
        digits = ident[1:] if isinstance(ident, str) and ident.startswith(prefix) else ""
        if digits.isascii() and digits.isdigit() and digits == str(int(digits)) and int(digits) < n:
            return int(digits)
        raise KeyError(ident)

    def item_genre(self, item: str) -> int:
        """The genre the item's latent sits around."""
        return int(self._item_genre[self._index(item, "i", self.cfg.n_items)])

    def preferred_genres(self, user: str) -> list[int]:
        """Genres the user's taste was built from (before any drift), strongest first."""
        return list(self._user_genres[self._index(user, "u", self.cfg.n_users)])

    def arrival_ms(self, user: str) -> int:
        """When the user arrives: their first session starts then."""
        return int(self._arrival[self._index(user, "u", self.cfg.n_users)])

    def release_ms(self, item: str) -> int:
        """When the item is released: no event touches it before."""
        return int(self._release[self._index(item, "i", self.cfg.n_items)])

    def _tastes(self, users: np.ndarray | int, ts: np.ndarray | int) -> np.ndarray:
        frac = (np.asarray(ts, np.float64) - self.cfg.start_ts_ms) / self.cfg.duration_ms
        angle = self.cfg.drift_rate * np.clip(frac, 0.0, 1.0)
        if np.ndim(angle):
            angle = angle[:, None]
        return np.cos(angle) * self._taste0[users] + np.sin(angle) * self._drift_dir[users]

    def user_taste(self, user: str, at_ms: int | None = None) -> np.ndarray:
        """The user's unit taste at `at_ms` (default: the end of the log, after drift)."""
        u = self._index(user, "u", self.cfg.n_users)
        return np.asarray(self._tastes(u, self.cfg.end_ts_ms if at_ms is None else at_ms))

    def affinity(self, user: str, item: str, at_ms: int | None = None) -> float:
        """True taste·latent at `at_ms`: what the user's choices and stars follow."""
        i = self._index(item, "i", self.cfg.n_items)
        return float(self.user_taste(user, at_ms) @ self._latent[i])

    # ------------------------------------------------------------------------- events

    def _sessions(self, rng: np.random.Generator, u: int) -> list[tuple[int, int]]:
        """(start ms, ratings) of each of the user's sessions, in time order."""
        cfg = self.cfg
        n = int(self._n_events[u])
        s = cfg.first_session_share
        share = 1.0 if s >= 1 else rng.beta(4 * s, 4 * (1 - s))
        first = max(1, min(n, round(share * n)))
        rest = n - first
        sizes = [first]
        if rest:
            n_later = int(np.clip(rng.poisson(rest / cfg.session_events), 1, rest))
            sizes += (1 + rng.multinomial(rest - n_later, np.full(n_later, 1 / n_later))).tolist()
        span = math.exp(math.log(cfg.return_days * DAY_MS) + _RETURN_SIGMA * rng.standard_normal())
        start = int(self._arrival[u])
        # A late user comes back sooner rather than after the end of the log: the log keeps
        # (nearly) its size whatever the return span.
        span = min(span, 0.9 * (cfg.end_ts_ms - start))
        offsets = np.sort(rng.random(len(sizes) - 1)) * span
        out = [(start, first)]
        gap_ms = cfg.event_gap_s * 1000
        end = start + first * gap_ms
        for off, size in zip(offsets.tolist(), sizes[1:], strict=True):
            at = max(start + int(off), int(end) + SESSION_GAP_MS)
            out.append((at, size))
            end = at + size * gap_ms
        return out

    def _choose(
        self, rng: np.random.Generator, u: int, at: int, k: int, rated: np.ndarray
    ) -> np.ndarray:
        """k distinct unrated released items ∝ appeal · novelty · exp(taste·latent / T), in
        the order one-at-a-time draws would pick them (Gumbel top-k)."""
        cfg = self.cfg
        taste = self._tastes(u, at)
        if cfg.session_focus > 0:
            genre_logits = self._centroids @ taste / cfg.temperature
            p = np.exp(genre_logits - genre_logits.max())
            g = rng.choice(cfg.n_genres, p=p / p.sum())
            taste = _unit((1 - cfg.session_focus) * taste + cfg.session_focus * self._centroids[g])
        logits = self._logpop + self._latent @ taste / cfg.temperature
        if cfg.novelty > 0:
            age_days = (at - self._release) / DAY_MS
            boost = cfg.novelty * np.exp2(-np.maximum(age_days, 0) / cfg.novelty_half_life_days)
            logits = logits + np.log1p(boost)
        keys = logits + rng.gumbel(size=logits.shape[0])
        keys[rated | (self._release > at)] = -np.inf
        k = min(k, int(np.isfinite(keys).sum()))
        if k <= 0:
            return np.zeros(0, dtype=np.int64)
        top = np.argpartition(-keys, k - 1)[:k]
        return top[np.argsort(-keys[top], kind="stable")]

    def _generate(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """users, items, ts and stars of the whole log, in time order."""
        cfg = self.cfg
        rng = np.random.default_rng(self._events_seed)
        users: list[np.ndarray] = []
        items: list[np.ndarray] = []
        stamps: list[np.ndarray] = []
        rated = np.zeros(cfg.n_items, dtype=bool)
        for u in range(cfg.n_users):
            rated[:] = False
            for at, size in self._sessions(rng, u):
                if at >= cfg.end_ts_ms:
                    break
                chosen = self._choose(rng, u, at, size, rated)
                gaps = np.asarray(rng.exponential(cfg.event_gap_s * 1000, size=chosen.shape[0]))
                gaps[0] = 0.0
                ts = at + np.cumsum(gaps).astype(np.int64)
                keep = ts < cfg.end_ts_ms
                chosen, ts = chosen[keep], ts[keep]
                rated[chosen] = True
                users.append(np.full(chosen.shape[0], u, dtype=np.int64))
                items.append(chosen)
                stamps.append(ts)
        if not users:
            empty = np.zeros(0, dtype=np.int64)
            return empty, empty, empty, np.zeros(0)
        u_all, i_all, t_all = np.concatenate(users), np.concatenate(items), np.concatenate(stamps)
        # Stars: affinity (standardised over the log) + quality + leniency + unit noise, cut at
        # the quantiles that give the configured shares.
        aff = np.einsum("ij,ij->i", self._tastes(u_all, t_all), self._latent[i_all])
        aff = (aff - aff.mean()) / max(float(aff.std()), 1e-12)
        score = (
            cfg.rating_affinity * aff
            + self._quality[i_all]
            + self._leniency[u_all]
            + rng.standard_normal(aff.shape[0])
        )
        cuts = np.quantile(score, np.cumsum(cfg.rating_shares)[:-1])
        stars = 1.0 + np.searchsorted(cuts, score, side="right").astype(np.float64)
        order = np.argsort(t_all, kind="stable")
        return u_all[order], i_all[order], t_all[order], stars[order]

    def events(self) -> Iterator[dict[str, Any]]:
        """The log in wire schema (`type` "rating" with a 1..5 `value`), ts non-decreasing."""
        if self.cfg.n_events == 0:
            return
        u, i, ts, stars = self._generate()
        uids, iids = self._user_ids, self._item_ids
        for a, b, t, v in zip(u.tolist(), i.tolist(), ts.tolist(), stars.tolist(), strict=True):
            yield {"user": uids[a], "item": iids[b], "type": "rating", "value": v, "ts": t}


# ----------------------------------------------------------------------------- statistics


def gini(counts: Iterable[float]) -> float:
    """Gini coefficient of non-negative counts: 0 when all equal, towards 1 when one has all.

    >>> gini([1, 1, 1, 1]), round(gini([0, 0, 0, 4]), 2)
    (0.0, 0.75)
    """
    x = np.sort(np.asarray(list(counts), dtype=np.float64))
    n = x.shape[0]
    if n == 0 or x.sum() == 0:
        return 0.0
    cum = np.cumsum(x)
    return float((n + 1 - 2 * (cum.sum() / cum[-1])) / n)


def log_stats(
    events: Iterable[Mapping[str, Any]],
    *,
    n_items: int | None = None,
    positive_min: float = 4.0,
    session_gap_ms: int = SESSION_GAP_MS,
) -> dict[str, Any]:
    """What a rating log looks like, in the figures real logs are described by.

    Sessions are runs of a user's events with no silence over `session_gap_ms`. `n_items`
    (the catalogue) makes the top-1 % share count items nobody rated; else only rated ones.
    Works on any wire-schema events, so a real log can be measured the same way.
    """
    by_user: dict[str, list[int]] = {}
    item_counts: Counter[str] = Counter()
    stars: Counter[float] = Counter()
    pairs: set[tuple[str, str]] = set()
    repeats = 0
    n = 0
    t_min = t_max = 0
    for e in events:
        u, i, t = e["user"], e["item"], int(e["ts"])
        if n == 0:
            t_min = t_max = t
        t_min, t_max = min(t_min, t), max(t_max, t)
        n += 1
        by_user.setdefault(u, []).append(t)
        item_counts[i] += 1
        if e.get("value") is not None:
            stars[float(e["value"])] += 1
        if (u, i) in pairs:
            repeats += 1
        pairs.add((u, i))
    if n == 0:
        return {"events": 0}
    per_user = np.asarray([len(v) for v in by_user.values()])
    sessions: list[int] = []
    inner_gaps: list[np.ndarray] = []
    firsts = []
    for stamps in by_user.values():
        mine = np.sort(np.asarray(stamps, dtype=np.int64))
        firsts.append(mine[0])
        gaps = np.diff(mine)
        cut = gaps > session_gap_ms
        sessions.append(int(cut.sum()) + 1)
        inner_gaps.append(gaps[~cut])
    gaps_all = np.concatenate(inner_gaps) if inner_gaps else np.zeros(0)
    counts = np.asarray(sorted(item_counts.values(), reverse=True), dtype=np.float64)
    catalogue = max(n_items or 0, counts.shape[0])
    top = max(1, catalogue // 100)
    span = max(t_max - t_min, 1)
    first_frac = (np.asarray(firsts, np.float64) - t_min) / span
    rated = sum(stars.values())
    return {
        "events": n,
        "users": len(by_user),
        "items": len(item_counts),
        "positive_share": (
            sum(c for v, c in stars.items() if v >= positive_min) / rated if rated else None
        ),
        "rating_shares": {str(int(v)): c / rated for v, c in sorted(stars.items())},
        "repeats": repeats,
        "events_per_user": {
            "median": float(np.median(per_user)),
            "mean": float(per_user.mean()),
            "max": int(per_user.max()),
        },
        "item_gini": gini(np.concatenate([counts, np.zeros(catalogue - counts.shape[0])])),
        "top1pct_item_share": float(counts[:top].sum() / n),
        "sessions_per_user": float(np.mean(sessions)),
        "events_per_session": float(n / sum(sessions)),
        "median_gap_in_session_s": float(np.median(gaps_all) / 1000) if gaps_all.size else None,
        "users_first_seen_by_quarter": np.histogram(first_frac, bins=4, range=(0.0, 1.0))[
            0
        ].tolist(),
    }


def config_dict(cfg: LogLikeConfig) -> dict[str, Any]:
    """The config as plain JSON values, for reports."""
    return {f.name: getattr(cfg, f.name) for f in fields(cfg)}
