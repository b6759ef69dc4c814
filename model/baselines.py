"""numpy-only baselines that follow the model protocol (`streamrec.model.base.Recommender`).

A quality figure means little without something simple to beat: the prequential evaluator and
the model benchmark run these next to the TensorFlow model on the same stream. Each one learns
online from the same `learn(events)` calls, ranks by its own score (River's `reco` idea:
ranking is derived from scoring), and needs neither TensorFlow nor a server, so it also runs
where the model cannot.

- `PopularityBaseline`: all-time count of positive events per item.
- `DecayedPopularityBaseline`: the model's own time-decayed popularity (`DecayedPopularity`),
  global only, decayed by event time: what a user without a vector is served.
- `OnlineMF`: matrix factorisation learned one event at a time by SGD on BPR with uniformly
  sampled negatives (plus a logistic push-down for explicit negatives): the classic online
  collaborative filter that the TF model, with side features and batching, has to beat.

Event semantics follow `ModelConfig`: an event is positive when its type's weight is > 0,
except a rating, which is positive from `rating_positive_min` and an explicit negative up to
`rating_negative_max`; a negative weight (`dislike`) is an explicit negative.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from streamrec.model import checkpoint
from streamrec.model.base import EventLike, Features, ItemMatrix, LearnResult
from streamrec.model.config import DEFAULT_EVENT_WEIGHTS
from streamrec.model.ids import IdMap, decode_strings, encode_strings, grow_rows
from streamrec.model.popularity import DecayedPopularity
from streamrec.model.ranking import top_k, top_k_rows

__all__ = [
    "BASELINES",
    "Baseline",
    "DecayedPopularityBaseline",
    "OnlineMF",
    "PopularityBaseline",
    "make_baselines",
    "restore_baseline",
]


class _Signs:
    """+w for a positive event, -w for an explicit negative, 0 for anything else."""

    def __init__(
        self,
        event_weights: Mapping[str, float] | None,
        rating_positive_min: float,
        rating_negative_max: float,
    ) -> None:
        self.weights = dict(DEFAULT_EVENT_WEIGHTS if event_weights is None else event_weights)
        self.rating_positive_min = rating_positive_min
        self.rating_negative_max = rating_negative_max

    def __call__(self, e: EventLike) -> float:
        w = self.weights.get(e.type, 0.0)
        if e.type == "rating":
            v = e.value
            if v is None or not math.isfinite(v) or w <= 0:
                return 0.0
            if v >= self.rating_positive_min:
                return w
            return -w if v <= self.rating_negative_max else 0.0
        return w


class Baseline:
    """The protocol's plumbing shared by the baselines: id maps, a per-item positive count
    (every baseline's cold-user fallback), ranking and persistence.

    Subclasses provide `_item_scores()` (one score per item row, for users who get the same
    ranking) and may override `_user_scores` for personal scores.
    """

    name = "base"

    def __init__(
        self,
        event_weights: Mapping[str, float] | None = None,
        rating_positive_min: float = 4.0,
        rating_negative_max: float = 2.0,
    ) -> None:
        self.sign = _Signs(event_weights, rating_positive_min, rating_negative_max)
        self.users = IdMap()
        self.items = IdMap()
        self.counts = np.zeros(64, dtype=np.float64)  # positive events per item row
        self.version = 0
        self._order: list[int] | None = None  # best item rows by _item_scores, best first

    # --- learning ----------------------------------------------------------------------------

    def learn(self, events: Sequence[EventLike]) -> LearnResult:
        self.version += 1
        u_rows = self.users.rows([e.user for e in events])
        i_rows = self.items.rows([e.item for e in events])
        self.counts = grow_rows(self.counts, len(self.items.ids))
        signs = np.fromiter(map(self.sign, events), np.float64, len(events))
        pos = signs > 0
        np.add.at(self.counts, i_rows[pos], 1.0)
        loss = self._learn(events, u_rows, i_rows, signs)
        self._order = None
        return LearnResult(
            n_events=len(events),
            loss=loss,
            skipped_nonfinite=False,
            touched_users=list(dict.fromkeys(e.user for e in events)),
            touched_items=list(dict.fromkeys(e.item for e in events)),
            version=self.version,
        )

    def _learn(
        self,
        events: Sequence[EventLike],
        u_rows: np.ndarray,
        i_rows: np.ndarray,
        signs: np.ndarray,
    ) -> float:
        return math.nan

    # --- scoring -----------------------------------------------------------------------------

    def _item_scores(self) -> np.ndarray:
        return self.counts[: len(self.items.ids)]

    def _user_scores(self, user_rows: np.ndarray) -> np.ndarray | None:
        """[len(rows), items] personal scores, or None when every user gets `_item_scores`."""
        return None

    def _global_order(self, need: int) -> list[int]:
        """At least the `need` best item rows (all when fewer), best first, ties by id; cached
        until the next learn. Only a prefix is ranked: a replay that learns before every
        request re-ranks after each event, and ranking the whole catalogue in Python then cost
        more than the model (1,700 items: 0.6 ms a request)."""
        n = len(self.items.ids)
        have = self._order
        if have is None or (len(have) < need and len(have) < n):
            k = min(n, max(need, 2 * len(have or ()), 64))
            scores = np.asarray(self._item_scores(), dtype=np.float64)
            self._order = have = top_k(scores, k, self.items.ids)
        return have

    def _shared_top(self, k: int, exclude: Collection[str]) -> list[tuple[str, float]]:
        """Top-k of the shared ranking, skipping excluded items: a walk down one cached order,
        ranked further only when the user excluded most of its prefix."""
        ids, scores = self.items.ids, self._item_scores()
        out: list[tuple[str, float]] = []
        start, need = 0, k + 32
        while True:
            order = self._global_order(need)
            for r in order[start:]:
                item = ids[r]
                if item in exclude:
                    continue
                out.append((item, float(scores[r])))
                if len(out) >= k:
                    return out
            if len(order) >= len(ids):
                return out
            start, need = len(order), 2 * len(order)

    def score(self, user: str, items: Sequence[str]) -> np.ndarray:
        """Scores of `items` for `user` on the scale `recommend` ranks by; -inf for unknown
        items (nothing can rank an item it has never seen)."""
        get = self.items.get
        rows = np.asarray([get(x, -1) for x in items], dtype=np.int64)
        known = rows >= 0
        out = np.full(len(items), -np.inf)
        urow = self.users.row(user)
        kr = rows[known]
        if urow >= 0 and self._has_vector(urow):
            out[known] = self._score_rows(urow, kr)
        else:
            out[known] = self._item_scores()[kr]
        return out

    def _score_rows(self, user_row: int, item_rows: np.ndarray) -> np.ndarray:
        return self._item_scores()[item_rows]

    def recommend(
        self,
        user: str,
        k: int = 10,
        exclude: Collection[str] = (),
        user_features: Features | None = None,
    ) -> list[tuple[str, float]]:
        return self.recommend_many([user], k, {user: exclude})[user]

    def recommend_many(
        self,
        users: Sequence[str],
        k: int = 10,
        exclude: Mapping[str, Collection[str]] | None = None,
    ) -> dict[str, list[tuple[str, float]]]:
        exclude = exclude or {}
        out: dict[str, list[tuple[str, float]]] = {}
        if k <= 0:
            return {u: [] for u in users}
        personal: list[str] = []
        for u in users:
            if u in out:
                continue
            row = self.users.row(u)
            if row >= 0 and self._has_vector(row):
                personal.append(u)
                out[u] = []
            else:
                out[u] = self._shared_top(k, set(exclude.get(u, ())))
        if personal:
            rows = np.asarray([self.users.row(u) for u in personal])
            scores = self._user_scores(rows)
            assert scores is not None
            ids = self.items.ids
            for j, u in enumerate(personal):
                ex = exclude.get(u)
                if ex:
                    scores[j, _known_rows(self.items, ex)] = -np.inf
            for j, (u, best) in enumerate(zip(personal, top_k_rows(scores, k, ids), strict=True)):
                s = scores[j]
                out[u] = [(ids[t], float(s[t])) for t in best]
        return out

    def _has_vector(self, user_row: int) -> bool:
        return False

    # --- vectors -----------------------------------------------------------------------------

    def user_vector(self, user: str) -> tuple[np.ndarray, float] | None:
        """Popularity factorises as score = 1 * count: every known user has the vector [1]."""
        if self.users.row(user) < 0:
            return None
        return np.ones(1, dtype=np.float32), 0.0

    def item_vectors(self) -> ItemMatrix:
        scores = np.asarray(self._item_scores(), dtype=np.float32)
        return ItemMatrix(list(self.items.ids), scores[:, None].copy(), np.zeros_like(scores))

    # --- persistence -------------------------------------------------------------------------

    def _arrays(self) -> dict[str, np.ndarray]:
        n = len(self.items.ids)
        arrays = {"counts": self.counts[:n].copy()}
        arrays["users_blob"], arrays["users_off"] = encode_strings(self.users.ids)
        arrays["items_blob"], arrays["items_off"] = encode_strings(self.items.ids)
        return arrays

    def _info(self) -> dict[str, Any]:
        return {
            "event_weights": self.sign.weights,
            "rating_positive_min": self.sign.rating_positive_min,
            "rating_negative_max": self.sign.rating_negative_max,
        }

    def save(self, path: str | Path, metadata: Mapping[str, Any] | None = None) -> None:
        info = {
            "baseline": self.name,
            "params": self._info(),
            "version": self.version,
            "metadata": dict(metadata or {}),
        }
        checkpoint.write(path, self._arrays(), info)

    def _load(self, arrays: Mapping[str, np.ndarray], info: Mapping[str, Any]) -> None:
        self.users = IdMap(decode_strings(arrays["users_blob"], arrays["users_off"]))
        self.items = IdMap(decode_strings(arrays["items_blob"], arrays["items_off"]))
        self.counts = grow_rows(np.asarray(arrays["counts"], np.float64), len(self.items.ids))
        self.version = int(info["version"])
        self._order = None


class PopularityBaseline(Baseline):
    """All-time positive counts: the floor any personal model has to clear."""

    name = "popularity"


class DecayedPopularityBaseline(Baseline):
    """Time-decayed popularity as the serving fallback computes it, global only."""

    name = "decayed_popularity"

    def __init__(
        self,
        half_life_s: float = 7 * 24 * 3600.0,
        event_weights: Mapping[str, float] | None = None,
        rating_positive_min: float = 4.0,
        rating_negative_max: float = 2.0,
    ) -> None:
        super().__init__(event_weights, rating_positive_min, rating_negative_max)
        self.half_life_s = half_life_s
        self.pop = self._new_pop()

    def _new_pop(self) -> DecayedPopularity:
        # Decay by event time only: a replayed log from 1997 or a synthetic stream dated ahead
        # of the wall clock must not be clamped to "now" (an infinite clock disables the clamp).
        return DecayedPopularity(
            self.half_life_s,
            event_weights=self.sign.weights,
            rating_positive_min=self.sign.rating_positive_min,
            segment_features=(),
            clock=lambda: math.inf,
            items=self.items,
        )

    def _learn(
        self,
        events: Sequence[EventLike],
        u_rows: np.ndarray,
        i_rows: np.ndarray,
        signs: np.ndarray,
    ) -> float:
        pos = np.flatnonzero(signs > 0)
        if pos.shape[0]:
            ts = np.fromiter((events[j].ts for j in pos.tolist()), np.int64, pos.shape[0])
            self.pop.add_rows(i_rows[pos], ts, signs[pos])
        return math.nan

    def _item_scores(self) -> np.ndarray:
        n = len(self.items.ids)
        self.pop._grow(n)
        # Stored values share one reference time: their order is the decayed order.
        return self.pop._counts[:n]

    def _arrays(self) -> dict[str, np.ndarray]:
        arrays = super()._arrays()
        arrays["decayed"] = self._item_scores().copy()
        return arrays

    def _info(self) -> dict[str, Any]:
        return {
            **super()._info(),
            "half_life_s": self.half_life_s,
            "ref_ms": self.pop.ref_ms,
            "now_ms": self.pop.now_ms,
        }

    def _load(self, arrays: Mapping[str, np.ndarray], info: Mapping[str, Any]) -> None:
        super()._load(arrays, info)
        self.pop = self._new_pop()
        decayed = np.asarray(arrays["decayed"], np.float64)
        self.pop._grow(decayed.shape[0])
        self.pop._counts[: decayed.shape[0]] = decayed
        self.pop.ref_ms = info["params"]["ref_ms"]
        self.pop.now_ms = info["params"]["now_ms"]


class OnlineMF(Baseline):
    """score(u, i) = <p_u, q_i> + b_i, one SGD step per event.

    Positives take a BPR step against `negatives` items drawn uniformly from the items seen so
    far (the mean over the negatives, scaled by the event weight capped at `max_weight`);
    explicit negatives take a logistic step pushing their score down. Users without a step yet
    are served by popularity, as the model serves users it has no vector for.

    Defaults from a small grid (lr 0.05..1, negatives 4..16, init 0.01..0.3, l2 1e-3..1e-2,
    max_weight 1 or 4) on the planted streams of `model.testing` and `streaming.synthetic`:
    lr 0.5 with 8 negatives was best or near it on both; lr 1 diverged on the synthetic
    stream, and a weight cap of 1 (every positive alike) did as well or better than 4.
    """

    name = "online_mf"

    def __init__(
        self,
        dim: int = 32,
        learning_rate: float = 0.5,
        l2: float = 1e-3,
        negatives: int = 8,
        init_scale: float = 0.1,
        max_weight: float = 1.0,
        seed: int = 0,
        event_weights: Mapping[str, float] | None = None,
        rating_positive_min: float = 4.0,
        rating_negative_max: float = 2.0,
    ) -> None:
        super().__init__(event_weights, rating_positive_min, rating_negative_max)
        if dim < 1 or negatives < 1 or not learning_rate > 0 or l2 < 0:
            raise ValueError("dim and negatives must be >= 1, learning_rate > 0, l2 >= 0")
        self.dim = dim
        self.learning_rate = learning_rate
        self.l2 = l2
        self.negatives = negatives
        self.init_scale = init_scale
        self.max_weight = max_weight
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        self.P = np.zeros((64, dim), dtype=np.float64)
        self.Q = np.zeros((64, dim), dtype=np.float64)
        self.b = np.zeros(64, dtype=np.float64)
        self.trained = np.zeros(64, dtype=bool)  # user row had a positive or negative step
        self._n_users = 0
        self._n_items = 0

    def _sync(self) -> None:
        """Initialise rows of ids that arrived since the last call (small random vectors)."""
        nu, ni = len(self.users.ids), len(self.items.ids)
        if nu > self._n_users:
            self.P = grow_rows(self.P, nu)
            self.trained = grow_rows(self.trained, nu)
            self.P[self._n_users : nu] = self.rng.standard_normal((nu - self._n_users, self.dim))
            self.P[self._n_users : nu] *= self.init_scale
            self._n_users = nu
        if ni > self._n_items:
            self.Q = grow_rows(self.Q, ni)
            self.b = grow_rows(self.b, ni)
            self.Q[self._n_items : ni] = self.rng.standard_normal((ni - self._n_items, self.dim))
            self.Q[self._n_items : ni] *= self.init_scale
            self._n_items = ni

    def _learn(
        self,
        events: Sequence[EventLike],
        u_rows: np.ndarray,
        i_rows: np.ndarray,
        signs: np.ndarray,
    ) -> float:
        self._sync()
        P, Q, b = self.P, self.Q, self.b
        lr, l2, n_neg = self.learning_rate, self.l2, self.negatives
        n_items = self._n_items
        active = np.flatnonzero(signs != 0)
        if active.shape[0] == 0:
            return math.nan
        # Draw every negative of the batch at once (one generator call, not one per event).
        draws = self.rng.integers(0, n_items, size=(active.shape[0], n_neg))
        weights = np.minimum(np.abs(signs[active]), self.max_weight)
        trained = self.trained
        total = 0.0
        for j, row, w in zip(active.tolist(), draws, weights.tolist(), strict=True):
            u, i = int(u_rows[j]), int(i_rows[j])
            p = P[u]
            qi = Q[i]
            trained[u] = True
            if signs[j] < 0:  # explicit negative: loss -log sigmoid(-x), gradient sigmoid(x)
                x = float(p @ qi) + b[i]
                g = w * _sigmoid(x)
                total += w * _softplus(x)
                gp = g * qi + l2 * p
                Q[i] = qi - lr * (g * p + l2 * qi)
                P[u] = p - lr * gp
                b[i] -= lr * g
                continue
            negs = row[row != i]
            if negs.shape[0] == 0:
                continue
            qn = Q[negs]
            x = (qi @ p + b[i]) - (qn @ p + b[negs])  # BPR margins, one per negative
            # loss w * mean softplus(-x); d/dx = -w * sigmoid(-x) / n =: -g
            e = np.exp(-np.abs(x))
            sig_neg = np.where(x >= 0, e / (1.0 + e), 1.0 / (1.0 + e))  # sigmoid(-x)
            total += w * float(np.mean(np.maximum(-x, 0.0) + np.log1p(e)))
            g = (w / negs.shape[0]) * sig_neg
            gs = float(g.sum())
            gp = gs * qi - g @ qn - l2 * p
            Q[i] = qi + lr * (gs * p - l2 * qi)
            b[i] += lr * gs
            if len(set(negs.tolist())) == negs.shape[0]:
                Q[negs] = qn - lr * (g[:, None] * p + l2 * qn)
                b[negs] -= lr * g
            else:
                np.subtract.at(Q, negs, lr * (g[:, None] * p + l2 * qn))
                np.subtract.at(b, negs, lr * g)
            P[u] = p + lr * gp
        return total / active.shape[0]

    def _has_vector(self, user_row: int) -> bool:
        return user_row < self.trained.shape[0] and bool(self.trained[user_row])

    def _user_scores(self, user_rows: np.ndarray) -> np.ndarray | None:
        if not self.trained[user_rows].all():
            return None
        n = self._n_items
        return np.asarray(self.P[user_rows] @ self.Q[:n].T + self.b[:n][None, :])

    def _score_rows(self, user_row: int, item_rows: np.ndarray) -> np.ndarray:
        return np.asarray(self.Q[item_rows] @ self.P[user_row] + self.b[item_rows])

    def user_vector(self, user: str) -> tuple[np.ndarray, float] | None:
        row = self.users.row(user)
        if row < 0 or not self._has_vector(row):
            return None
        return self.P[row].astype(np.float32), 0.0

    def item_vectors(self) -> ItemMatrix:
        self._sync()
        n = self._n_items
        return ItemMatrix(
            list(self.items.ids), self.Q[:n].astype(np.float32), self.b[:n].astype(np.float32)
        )

    def _arrays(self) -> dict[str, np.ndarray]:
        self._sync()
        arrays = super()._arrays()
        arrays["P"] = self.P[: self._n_users].copy()
        arrays["Q"] = self.Q[: self._n_items].copy()
        arrays["b"] = self.b[: self._n_items].copy()
        arrays["trained"] = self.trained[: self._n_users].copy()
        return arrays

    def _info(self) -> dict[str, Any]:
        return {
            **super()._info(),
            "dim": self.dim,
            "learning_rate": self.learning_rate,
            "l2": self.l2,
            "negatives": self.negatives,
            "init_scale": self.init_scale,
            "max_weight": self.max_weight,
            "seed": self.seed,
            "rng": self.rng.bit_generator.state,
        }

    def _load(self, arrays: Mapping[str, np.ndarray], info: Mapping[str, Any]) -> None:
        super()._load(arrays, info)
        self.P = grow_rows(np.asarray(arrays["P"], np.float64), len(self.users.ids))
        self.Q = grow_rows(np.asarray(arrays["Q"], np.float64), len(self.items.ids))
        self.b = grow_rows(np.asarray(arrays["b"], np.float64), len(self.items.ids))
        self.trained = grow_rows(np.asarray(arrays["trained"], bool), len(self.users.ids))
        self._n_users, self._n_items = len(self.users.ids), len(self.items.ids)
        self.rng.bit_generator.state = info["params"]["rng"]


def _known_rows(ids: IdMap, items: Collection[str]) -> list[int]:
    """Rows of the known ones among `items`; `dict.get` through `map` runs at C speed, which
    matters when a heavy user's whole history is excluded on every request."""
    return [r for r in map(dict.get, itertools.repeat(ids), items) if r is not None]


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


def _softplus(x: float) -> float:
    """log(1 + e^x) without overflow."""
    return x + math.log1p(math.exp(-x)) if x > 0 else math.log1p(math.exp(x))


BASELINES: dict[str, type[Baseline]] = {
    PopularityBaseline.name: PopularityBaseline,
    DecayedPopularityBaseline.name: DecayedPopularityBaseline,
    OnlineMF.name: OnlineMF,
}


def make_baselines(
    event_weights: Mapping[str, float] | None = None,
    rating_positive_min: float = 4.0,
    rating_negative_max: float = 2.0,
    half_life_s: float = 7 * 24 * 3600.0,
    seed: int = 0,
) -> dict[str, Baseline]:
    """The three baselines with one event semantics (pass the model's config values)."""
    common: dict[str, Any] = {
        "event_weights": event_weights,
        "rating_positive_min": rating_positive_min,
        "rating_negative_max": rating_negative_max,
    }
    return {
        PopularityBaseline.name: PopularityBaseline(**common),
        DecayedPopularityBaseline.name: DecayedPopularityBaseline(half_life_s, **common),
        OnlineMF.name: OnlineMF(seed=seed, **common),
    }


def restore_baseline(path: str | Path) -> tuple[Baseline, dict[str, Any]]:
    """A baseline saved with `save`, and the caller's metadata."""
    arrays, info = checkpoint.read(path)
    params = dict(info["params"])
    common = {k: params.pop(k) for k in ("event_weights", "rating_positive_min")}
    common["rating_negative_max"] = params.pop("rating_negative_max")
    kind = info["baseline"]
    model: Baseline
    if kind == OnlineMF.name:
        model = OnlineMF(
            **{k: params[k] for k in ("dim", "learning_rate", "l2", "negatives", "init_scale")},
            max_weight=params["max_weight"],
            seed=params["seed"],
            **common,
        )
    elif kind == DecayedPopularityBaseline.name:
        model = DecayedPopularityBaseline(params["half_life_s"], **common)
    elif kind == PopularityBaseline.name:
        model = PopularityBaseline(**common)
    else:
        raise checkpoint.CheckpointError(f"unknown baseline {kind!r} in {path}")
    model._load(arrays, info)
    return model, dict(info["metadata"])
