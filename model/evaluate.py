"""Prequential (test-then-train) evaluation of recommenders over a time-ordered event stream.

Why prequential: a streaming model is never "trained, then tested"; at every moment it serves
users with what it has learned so far. So, as River's `progressive_val_score` does, each event
is first a test (ask for the user's top-K before the model has seen the event, score whether
the event's item is in it) and only then a training example. Every event after the warm-up is
thus unseen when scored, and the whole stream is used for both.

Protocol (one definition shared by the in-process mode here and the pipeline mode in
`streamrec.consumers.evaluate`):

- The stream is sorted by `ts`, stable for equal timestamps (file order wins), and cut into
  mini-batches of `EvalConfig.batch_size` events. All events of a batch are scored before the
  batch is learned, as a trainer that learns in batches serves its users; batch size 1 is
  exact test-then-train.
- Scored events ("queries") are the positive events (`PositiveRule`) after the first
  `warmup` share of the stream. The top-K excludes the user's earlier items (any event type,
  as the serving path's seen set does), so an event whose item the user already had cannot be a
  hit; such repeats are skipped by default and counted (`skip_repeats`).
- Ranking comes from the model's own `recommend_many` (ranking derived from its scoring, as in
  River's `reco.base`); the sampled AUC scores the event's item against `auc_negatives` items
  drawn uniformly from the items seen so far that the user has not had, with the model's score
  (`score(user, items)` when it has one, else the served user vector times the item matrix).

Metrics per model: HR@K, NDCG@K, MRR@K, sampled AUC, catalogue coverage, and the popularity
of what it recommends; sliced by stream decile, by the user's history length, and for cold
users / cold items. numpy and matplotlib only: no Kafka, no Redis, no TensorFlow at import.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from streamrec.model.base import EventLike
from streamrec.model.config import ModelConfig

log = logging.getLogger(__name__)

__all__ = [
    "HISTORY_BUCKETS",
    "AucScorer",
    "EvalConfig",
    "EvalState",
    "PositiveRule",
    "Query",
    "Tally",
    "build_report",
    "clustered_se",
    "coverage",
    "evaluate_stream",
    "fetch_recommendations",
    "format_summary",
    "hit_rate",
    "mrr",
    "ndcg",
    "plot_report",
    "prequential",
    "prequential_fresh",
    "rank_of",
    "sampled_auc",
    "sort_events",
    "write_report",
]

#: (label, lowest, highest) history lengths, in events of the user before the scored one.
HISTORY_BUCKETS: tuple[tuple[str, int, int | None], ...] = (
    ("0", 0, 0),
    ("1-4", 1, 4),
    ("5-19", 5, 19),
    ("20-99", 20, 99),
    ("100+", 100, None),
)


# ----------------------------------------------------------------------------- metrics


def rank_of(item: str, recs: Sequence[str]) -> int:
    """1-based rank of `item` in `recs`, 0 when absent."""
    for j, x in enumerate(recs):
        if x == item:
            return j + 1
    return 0


def _ranks(ranks: Sequence[int] | np.ndarray, k: int) -> np.ndarray:
    r = np.asarray(ranks, dtype=np.int64)
    return np.where((r >= 1) & (r <= k), r, 0)


def hit_rate(ranks: Sequence[int] | np.ndarray, k: int) -> float:
    """Share of queries whose item is in the top-k (ranks are 1-based, 0 = not in the list)."""
    r = _ranks(ranks, k)
    return float((r > 0).mean()) if r.shape[0] else math.nan


def ndcg(ranks: Sequence[int] | np.ndarray, k: int) -> float:
    """Mean NDCG@k with one relevant item per query: 1/log2(rank + 1), its ideal DCG is 1."""
    r = _ranks(ranks, k)
    if not r.shape[0]:
        return math.nan
    gain = np.zeros(r.shape[0])
    hit = r > 0
    gain[hit] = 1.0 / np.log2(r[hit] + 1.0)
    return float(gain.mean())


def mrr(ranks: Sequence[int] | np.ndarray, k: int) -> float:
    """Mean reciprocal rank, counting 0 for an item outside the top-k."""
    r = _ranks(ranks, k)
    if not r.shape[0]:
        return math.nan
    rr = np.zeros(r.shape[0])
    hit = r > 0
    rr[hit] = 1.0 / r[hit]
    return float(rr.mean())


def clustered_se(values: Sequence[float] | np.ndarray, clusters: Sequence[str] | None) -> float:
    """Standard error of the mean of `values`, clustered by `clusters` (e.g. the query's user).

    A user's queries are not independent (a session of hits, a user nothing fits), so the
    plain binomial s.e. of a hit rate is too small on session-shaped logs; this one sums each
    user's deviations first (the cluster-robust "sandwich" estimate, with the G / (G - 1)
    small-sample factor). Without clusters every value is its own. nan below two clusters.

    >>> round(clustered_se([1, 0, 1, 0], None), 4)  # sample std / sqrt(n)
    0.2887
    >>> clustered_se([1, 1, 0, 0], ["a", "a", "b", "b"])  # two users, all-or-nothing each
    0.5
    """
    x = np.asarray(values, dtype=np.float64)
    n = x.shape[0]
    if clusters is None:
        return float(x.std(ddof=1) / math.sqrt(n)) if n >= 2 else math.nan
    _, group = np.unique(np.asarray(clusters), return_inverse=True)
    g = int(group.max()) + 1 if n else 0
    if g < 2:
        return math.nan
    sums = np.bincount(group, weights=x - x.mean(), minlength=g)
    return float(math.sqrt(g / (g - 1) * float((sums**2).sum())) / n)


def sampled_auc(pos_score: float, neg_scores: Sequence[float] | np.ndarray) -> float:
    """P(positive scored above a random negative), ties counting one half; nan without
    negatives. A positive the model cannot score (-inf) is below every finite negative."""
    neg = np.asarray(neg_scores, dtype=np.float64)
    if not neg.shape[0]:
        return math.nan
    return float(((pos_score > neg).sum() + 0.5 * (pos_score == neg).sum()) / neg.shape[0])


def coverage(recommended: Iterable[str], catalogue_size: int) -> float:
    """Share of the catalogue that appeared in at least one recommendation list (the caller
    passes only catalogue items)."""
    if catalogue_size <= 0:
        return math.nan
    return len(set(recommended)) / catalogue_size


# ----------------------------------------------------------------------------- config


@dataclass(frozen=True)
class PositiveRule:
    """Which events count as "the user wanted this item", i.e. are scored.

    Derived from the model's event weights so the evaluator and the model agree on what a
    positive is: a type with weight > 0, and a rating only from `rating_min` up.
    """

    types: frozenset[str] = frozenset({"view", "click", "add_to_cart", "purchase"})
    rating_type: str = "rating"
    rating_min: float = 4.0

    @classmethod
    def from_model_config(cls, cfg: ModelConfig | None = None) -> PositiveRule:
        cfg = cfg or ModelConfig()
        return cls.from_weights(cfg.event_weights, cfg.rating_positive_min)

    @classmethod
    def from_weights(cls, weights: Mapping[str, float], rating_min: float = 4.0) -> PositiveRule:
        types = frozenset(t for t, w in weights.items() if w > 0 and t != "rating")
        return cls(types=types, rating_min=rating_min)

    def __call__(self, e: EventLike) -> bool:
        if e.type == self.rating_type:
            return e.value is not None and e.value >= self.rating_min
        return e.type in self.types


@dataclass(frozen=True)
class EvalConfig:
    k: int = 10
    #: Events scored together before they are learned together; 1 = exact test-then-train.
    batch_size: int = 256
    #: Share of the stream (from its start) that is learned but not scored.
    warmup: float = 0.1
    #: Uniform negatives per query for the sampled AUC; 0 = no AUC.
    auc_negatives: int = 100
    #: Share of queries that get an AUC (drawn at random, the same for every model): scoring
    #: arbitrary items costs a model more than its top-K, and AUC is an estimate anyway.
    auc_share: float = 1.0
    #: Skip (and count) positives on items the user already had: excluded, they cannot hit.
    skip_repeats: bool = True
    #: Points of the metric-over-the-stream curve (equal numbers of queries per point).
    curve_points: int = 40
    seed: int = 0
    positives: PositiveRule = field(default_factory=PositiveRule)

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ValueError(f"k must be >= 1, got {self.k}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if not (0.0 <= self.warmup < 1.0):
            raise ValueError(f"warmup must be in [0, 1), got {self.warmup}")
        if self.auc_negatives < 0:
            raise ValueError(f"auc_negatives must be >= 0, got {self.auc_negatives}")
        if not (0.0 <= self.auc_share <= 1.0):
            raise ValueError(f"auc_share must be in [0, 1], got {self.auc_share}")
        if self.curve_points < 1:
            raise ValueError(f"curve_points must be >= 1, got {self.curve_points}")


# ----------------------------------------------------------------------------- bookkeeping


@dataclass(frozen=True)
class Query:
    """One scored event: what is asked of every model before the event's batch is learned."""

    position: int  # index in the time-ordered stream
    user: str
    item: str
    history: int  # the user's events before this one
    cold_item: bool  # no earlier event touched the item
    batch_earlier: frozenset[str]  # the user's items earlier in this batch (not yet learned)
    negatives: tuple[str, ...]  # AUC negatives, shared by every model
    known_items: int  # items seen in the stream before this event (coverage denominator)


def sort_events(events: Iterable[EventLike]) -> list[EventLike]:
    """Time order, stable: events with equal timestamps keep their input order."""
    return sorted(events, key=lambda e: e.ts)


class EvalState:
    """What the evaluator knows of the stream so far, independent of any model.

    History and popularity count every event before the current batch plus, for history,
    the user's events earlier in the batch: "earlier" is stream order, not learning order.
    """

    def __init__(self, cfg: EvalConfig, n_events: int) -> None:
        self.cfg = cfg
        self.n_events = n_events
        self.n_warm = math.floor(cfg.warmup * n_events)
        self.rng = np.random.default_rng(cfg.seed)
        self.history: dict[str, set[str]] = {}  # user -> items of earlier events (any type)
        self.events_of: dict[str, int] = {}  # user -> number of earlier events
        self.item_index: dict[str, int] = {}
        self.item_ids: list[str] = []
        self.pos_counts = np.zeros(64, dtype=np.float64)  # positive events per item
        self.skipped_repeats = 0
        self.positives = 0
        self._sorted_counts = np.zeros(0)

    def queries(self, batch: Sequence[EventLike], start: int) -> list[Query]:
        """The batch's scored events, each with its exclusions and AUC negatives."""
        cfg = self.cfg
        out: list[Query] = []
        local: dict[str, set[str]] = {}
        local_n: dict[str, int] = {}
        local_items: set[str] = set()
        new_items = 0  # items first seen earlier in this batch
        for j, e in enumerate(batch):
            pos = start + j
            u = e.user
            mine = local.setdefault(u, set())
            if pos >= self.n_warm and cfg.positives(e):
                self.positives += 1
                hist = self.history.get(u, ())
                if cfg.skip_repeats and (e.item in hist or e.item in mine):
                    self.skipped_repeats += 1
                else:
                    out.append(
                        Query(
                            position=pos,
                            user=u,
                            item=e.item,
                            history=self.events_of.get(u, 0) + local_n.get(u, 0),
                            cold_item=e.item not in self.item_index and e.item not in local_items,
                            batch_earlier=frozenset(mine),
                            negatives=self._negatives(e.item, hist, mine),
                            known_items=len(self.item_ids) + new_items,
                        )
                    )
            mine.add(e.item)
            local_n[u] = local_n.get(u, 0) + 1
            if e.item not in local_items:
                local_items.add(e.item)
                new_items += e.item not in self.item_index
        return out

    def _negatives(self, item: str, hist: Collection[str], mine: set[str]) -> tuple[str, ...]:
        m, n = self.cfg.auc_negatives, len(self.item_ids)
        if m == 0 or n == 0:
            return ()
        share = self.cfg.auc_share
        if share < 1.0 and not self.rng.random() < share:
            return ()
        ids = self.item_ids
        out: list[str] = []
        for _ in range(4):  # rejection rounds; a user who had most items gets fewer negatives
            for r in self.rng.integers(0, n, size=2 * m).tolist():
                x = ids[r]
                if x != item and x not in hist and x not in mine:
                    out.append(x)
                    if len(out) == m:
                        return tuple(out)
        return tuple(out)

    def observe(self, batch: Sequence[EventLike]) -> None:
        """The batch happened: extend histories, counts and the catalogue.

        The sorted counts behind the popularity percentiles are re-sorted after a batch but
        kept sorted in place for a few events: a per-event replay would otherwise sort the
        catalogue once per event. Counts grow by 1 at a time, so raising the last copy of the
        old count keeps the order.
        """
        positive = self.cfg.positives
        s = self._sorted_counts
        in_place = len(batch) <= 4
        for e in batch:
            self.history.setdefault(e.user, set()).add(e.item)
            self.events_of[e.user] = self.events_of.get(e.user, 0) + 1
            r = self.item_index.get(e.item)
            if r is None:
                r = self.item_index[e.item] = len(self.item_ids)
                self.item_ids.append(e.item)
                if r >= self.pos_counts.shape[0]:
                    grown = np.zeros(2 * self.pos_counts.shape[0])
                    grown[: self.pos_counts.shape[0]] = self.pos_counts
                    self.pos_counts = grown
                if in_place:
                    s = np.concatenate(([0.0], s))
            if positive(e):
                old = self.pos_counts[r]
                self.pos_counts[r] = old + 1.0
                if in_place:
                    s[np.searchsorted(s, old, "right") - 1] = old + 1.0
        self._sorted_counts = s if in_place else np.sort(self.pos_counts[: len(self.item_ids)])

    def popularity(self, lists: Sequence[Sequence[str]]) -> tuple[np.ndarray, np.ndarray]:
        """Per list: the mean positive count so far of its items, and their mean popularity
        percentile among known items (0 = least, 1 = most popular; ties at their middle).
        nan for an empty list. One vectorised pass for a whole batch of lists."""
        n = len(lists)
        width = max((len(x) for x in lists), default=0)
        if n == 0 or width == 0:
            return np.full(n, np.nan), np.full(n, np.nan)
        get = self.item_index.get
        rows = np.full((n, width), -1, dtype=np.int64)
        for j, recs in enumerate(lists):
            rows[j, : len(recs)] = [get(x, -2) for x in recs]
        present = rows != -1
        counts = np.where(rows >= 0, self.pos_counts[np.maximum(rows, 0)], 0.0)
        s = self._sorted_counts
        if s.shape[0]:
            pct = (np.searchsorted(s, counts, "left") + np.searchsorted(s, counts, "right")) / (
                2 * s.shape[0]
            )
        else:
            pct = np.full(counts.shape, np.nan)
        size = present.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(present, counts, 0.0).sum(axis=1) / size
            mean_pct = np.where(present, pct, 0.0).sum(axis=1) / size
        return mean, mean_pct


# ----------------------------------------------------------------------------- tallies


class Tally:
    """Per-model outcome of every query, kept so any slice can be summarised afterwards."""

    def __init__(self, k: int) -> None:
        self.k = k
        self.position: list[int] = []
        self.rank: list[int] = []
        self.auc: list[float] = []
        self.pop: list[float] = []
        self.pop_pct: list[float] = []
        self.history: list[int] = []
        self.cold_item: list[bool] = []
        self.known_items: list[int] = []
        self.source: list[str] = []
        self.user: list[str] = []
        self.recs: list[tuple[str, ...]] = []
        self._index: Mapping[str, int] = {}  # the stream's item -> arrival index (EvalState's)
        self.learn_s = 0.0
        self.recommend_s = 0.0

    def add_batch(
        self,
        queries: Sequence[Query],
        lists: Sequence[Sequence[str]],
        state: EvalState,
        aucs: Sequence[float] | None = None,
        sources: Sequence[str] | None = None,
    ) -> None:
        """Record each query's top-k (and AUC, and which path served it, if known)."""
        lists = [tuple(x[: self.k]) for x in lists]
        self._index = state.item_index
        pops, pcts = state.popularity(lists)
        for j, (q, recs) in enumerate(zip(queries, lists, strict=True)):
            self.position.append(q.position)
            self.rank.append(rank_of(q.item, recs))
            self.auc.append(math.nan if aucs is None else aucs[j])
            self.pop.append(float(pops[j]))
            self.pop_pct.append(float(pcts[j]))
            self.history.append(q.history)
            self.cold_item.append(q.cold_item)
            self.known_items.append(q.known_items)
            self.source.append("" if sources is None else sources[j])
            self.user.append(q.user)
            self.recs.append(recs)

    def __len__(self) -> int:
        return len(self.rank)

    def summary(self, mask: np.ndarray | None = None) -> dict[str, Any]:
        """Metrics over the queries selected by `mask` (all when None)."""
        n_all = len(self.rank)
        sel = np.ones(n_all, bool) if mask is None else np.asarray(mask, bool)
        idx = np.flatnonzero(sel)
        ranks = np.asarray(self.rank, np.int64)[idx]
        out: dict[str, Any] = {"n": int(idx.shape[0])}
        if not idx.shape[0]:
            return out | {
                m: None for m in ("hr", "hr_se", "ndcg", "ndcg_se", "mrr", "auc", "coverage")
            }
        aucs = np.asarray(self.auc, np.float64)[idx]
        aucs = aucs[np.isfinite(aucs)]
        # Coverage of the catalogue as the stream knew it by the slice's last query: items
        # recommended before anyone touched them (catalogue-only items) do not count.
        catalogue = max(self.known_items[j] for j in idx.tolist())
        index = self._index
        items = (
            x for j in idx.tolist() for x in self.recs[j] if index.get(x, catalogue) < catalogue
        )
        pops = np.asarray(self.pop, np.float64)[idx]
        pcts = np.asarray(self.pop_pct, np.float64)[idx]
        r = _ranks(ranks, self.k)
        gains = np.zeros(r.shape[0])
        gains[r > 0] = 1.0 / np.log2(r[r > 0] + 1.0)
        users = [self.user[j] for j in idx.tolist()] if self.user else None
        out |= {
            "hr": hit_rate(ranks, self.k),
            "hr_se": clustered_se((r > 0).astype(np.float64), users),
            "ndcg": ndcg(ranks, self.k),
            "ndcg_se": clustered_se(gains, users),
            "mrr": mrr(ranks, self.k),
            "auc": float(aucs.mean()) if aucs.shape[0] else None,
            "coverage": coverage(items, catalogue),
            "mean_rec_pop": _nanmean(pops),
            "mean_rec_pop_pct": _nanmean(pcts),
            "empty_lists": int(sum(1 for j in idx.tolist() if not self.recs[j])),
        }
        return out

    def slices(self, n_events: int, curve_points: int) -> dict[str, Any]:
        pos = np.asarray(self.position, np.int64)
        hist = np.asarray(self.history, np.int64)
        cold_item = np.asarray(self.cold_item, bool)
        deciles = []
        for d in range(10):
            lo, hi = d * n_events / 10, (d + 1) * n_events / 10
            s = self.summary((pos >= lo) & (pos < hi))
            deciles.append({"decile": d, "from": d / 10, "to": (d + 1) / 10, **s})
        by_history = {}
        for label, lo_h, hi_h in HISTORY_BUCKETS:
            m = hist >= lo_h if hi_h is None else (hist >= lo_h) & (hist <= hi_h)
            by_history[label] = self.summary(m)
        out: dict[str, Any] = {
            "overall": self.summary(),
            "by_decile": deciles,
            "by_history": by_history,
            "cold_start": {
                "user": self.summary(hist == 0),
                "item": self.summary(cold_item),
                "warm": self.summary((hist > 0) & ~cold_item),
            },
            "curve": self.curve(n_events, curve_points),
        }
        sources = sorted(set(self.source) - {""})
        if sources:
            src = np.asarray(self.source)
            out["by_source"] = {s: self.summary(src == s) for s in sources}
        return out

    def curve(self, n_events: int, points: int) -> dict[str, list[float]]:
        """HR and NDCG over consecutive windows of equally many queries, at each window's
        mean stream position (0..1): the learning curve over the stream."""
        n = len(self.rank)
        out: dict[str, list[float]] = {"position": [], "hr": [], "ndcg": [], "n": []}
        if not n:
            return out
        pos = np.asarray(self.position, np.float64)
        ranks = np.asarray(self.rank, np.int64)
        for part in np.array_split(np.arange(n), min(points, n)):
            out["position"].append(float(pos[part].mean() / max(n_events, 1)))
            out["hr"].append(hit_rate(ranks[part], self.k))
            out["ndcg"].append(ndcg(ranks[part], self.k))
            out["n"].append(float(part.shape[0]))
        return out


def _nanmean(x: np.ndarray) -> float | None:
    x = x[np.isfinite(x)]
    return float(x.mean()) if x.shape[0] else None


# ----------------------------------------------------------------------------- models


def fetch_recommendations(
    model: Any, queries: Sequence[Query], k: int, state: EvalState
) -> list[list[str]]:
    """Every query's top-k from one `recommend_many` call (one matrix product for the batch).

    The model is asked to exclude the user's items from before the batch and for a few extra
    items, then each query drops the user's items from earlier in the same batch: exclusion by
    stream order, as `Query.batch_earlier` defines it.
    """
    if not queries:
        return []
    users = list(dict.fromkeys(q.user for q in queries))
    extra = max(len(q.batch_earlier) for q in queries)
    empty: set[str] = set()
    exclude = {u: state.history.get(u, empty) for u in users}
    if hasattr(model, "recommend_many"):
        got = model.recommend_many(users, k + extra, exclude)
    else:
        got = {u: model.recommend(u, k + extra, exclude[u]) for u in users}
    out = []
    for q in queries:
        recs = [i for i, _ in got.get(q.user, [])]
        if q.batch_earlier:
            recs = [i for i in recs if i not in q.batch_earlier]
        out.append(recs[:k])
    return out


class AucScorer:
    """Scores of arbitrary items, for the sampled AUC: the model's `score` if it has one,
    else the served user vector times the item matrix (taken once per batch). A user the
    model has no vector for is scored by item bias alone."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.direct: Callable[[str, Sequence[str]], np.ndarray] | None = getattr(
            model, "score", None
        )
        self._matrix: tuple[dict[str, int], np.ndarray, np.ndarray] | None = None
        self._users: dict[str, tuple[np.ndarray, float] | None] = {}

    def begin_batch(self) -> None:
        self._users = {}  # user vectors change only when a batch is learned
        if self.direct is None and hasattr(self.model, "item_vectors"):
            m = self.model.item_vectors()
            index = {x: j for j, x in enumerate(m.ids)}
            self._matrix = (index, np.asarray(m.vectors), np.asarray(m.biases))

    def __call__(self, q: Query) -> float:
        if not q.negatives:
            return math.nan
        items = [q.item, *q.negatives]
        if self.direct is not None:
            s = np.asarray(self.direct(q.user, items), np.float64)
        elif self._matrix is not None:
            index, vecs, biases = self._matrix
            rows = np.asarray([index.get(x, -1) for x in items])
            known = rows >= 0
            s = np.full(len(items), -np.inf)
            if q.user not in self._users:
                self._users[q.user] = self.model.user_vector(q.user)
            uv = self._users[q.user]
            kr = rows[known]
            s[known] = biases[kr] if uv is None else vecs[kr] @ uv[0] + biases[kr]
        else:
            return math.nan
        return sampled_auc(float(s[0]), s[1:])


# ----------------------------------------------------------------------------- in-process run


def prequential(
    events: Iterable[EventLike],
    models: Mapping[str, Any],
    cfg: EvalConfig | None = None,
    *,
    progress: bool = False,
    on_batch: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Test-then-train every model on the same stream, in lock-step; return the report.

    All models see the same batches, the same queries and the same AUC negatives, so their
    figures differ only by what they learned. `events` is sorted by ts (stably) first.
    """
    cfg = cfg or EvalConfig()
    stream = sort_events(events)
    state = EvalState(cfg, len(stream))
    tallies = {name: Tally(cfg.k) for name in models}
    scorers = {name: AucScorer(m) for name, m in models.items()} if cfg.auc_negatives else {}
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(stream), unit="ev", desc="prequential", mininterval=0.5)
    t0 = time.perf_counter()
    for start in range(0, len(stream), cfg.batch_size):
        batch = stream[start : start + cfg.batch_size]
        queries = state.queries(batch, start)
        for name, model in models.items():
            tally = tallies[name]
            if queries:
                score_queries(model, tally, queries, cfg.k, state, scorers.get(name))
            t = time.perf_counter()
            model.learn(batch)
            tally.learn_s += time.perf_counter() - t
        state.observe(batch)
        if bar is not None:
            bar.update(len(batch))
        if on_batch is not None:
            on_batch(start + len(batch), len(stream))
    if bar is not None:
        bar.close()
    return build_report(tallies, state, cfg, mode="in-process", seconds=time.perf_counter() - t0)


def prequential_fresh(
    events: Iterable[EventLike],
    models: Mapping[str, Any],
    cfg: EvalConfig | None = None,
    *,
    progress: bool = False,
) -> dict[str, Any]:
    """Test-then-train one event at a time, each user's own earlier events learned first.

    What a log replayed event by event measures, as a serving path that learns a user's
    events before answering them would see it: before each scored event the model learns
    every earlier event of that user it has not learned yet (in one `learn` call: the
    requesting user's pending events only), then is asked for the user's top-K, with all the
    user's earlier items excluded. Other users' events wait and are learned together once
    `cfg.batch_size` of them are pending, so the cost is one small `learn` per request plus a
    mini-batch now and then instead of one `learn` per event; at batch size 1 this is exact
    test-then-train. Where `prequential` scores a whole batch before learning any of it, a
    user who rates fifty items in ten minutes is served here from the forty-nine before.

    In River's terms this is `progressive_val_score` with a delay: an event's label reaches
    the model when its user asks again or a batch fills, whichever comes first. Same queries,
    exclusions and report as `prequential` (mode "fresh"); `events` is sorted by ts (stably)
    first.
    """
    cfg = cfg or EvalConfig()
    stream = sort_events(events)
    n = len(stream)
    state = EvalState(cfg, n)
    tallies = {name: Tally(cfg.k) for name in models}
    scorers = {name: AucScorer(m) for name, m in models.items()} if cfg.auc_negatives else {}
    pending: list[int] = []  # positions not learned at the last flush, in stream order
    pending_of: dict[str, list[int]] = {}  # user -> their positions not learned yet
    learned = np.zeros(n, dtype=bool)
    n_pending = 0
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=n, unit="ev", desc="fresh", mininterval=0.5)

    def learn_all(batch: Sequence[EventLike]) -> None:
        for name, model in models.items():
            t = time.perf_counter()
            model.learn(batch)
            tallies[name].learn_s += time.perf_counter() - t

    t0 = time.perf_counter()
    for pos, e in enumerate(stream):
        queries = state.queries((e,), pos)
        if queries:
            mine = pending_of.pop(e.user, None)
            if mine:
                learned[mine] = True
                n_pending -= len(mine)
                learn_all([stream[p] for p in mine])
            for name, model in models.items():
                score_queries(model, tallies[name], queries, cfg.k, state, scorers.get(name))
        state.observe((e,))
        pending.append(pos)
        pending_of.setdefault(e.user, []).append(pos)
        n_pending += 1
        if n_pending >= cfg.batch_size:
            learn_all([stream[p] for p in pending if not learned[p]])
            learned[pending] = True
            pending.clear()
            pending_of.clear()
            n_pending = 0
        if bar is not None and pos % 256 == 255:
            bar.update(256)
    if n_pending:
        learn_all([stream[p] for p in pending if not learned[p]])
    if bar is not None:
        bar.update(n - bar.n)
        bar.close()
    return build_report(tallies, state, cfg, mode="fresh", seconds=time.perf_counter() - t0)


def build_report(
    tallies: Mapping[str, Tally],
    state: EvalState,
    cfg: EvalConfig,
    *,
    mode: str,
    seconds: float,
    reference: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The JSON-able quality report; `ratios` compare `reference` (default: the first model)
    with each other model on HR and NDCG (reference / other; None when other is 0)."""
    models: dict[str, Any] = {}
    for name, t in tallies.items():
        models[name] = t.slices(state.n_events, cfg.curve_points)
        models[name]["seconds"] = {"learn": t.learn_s, "recommend": t.recommend_s}
    names = list(tallies)
    ref = reference if reference is not None else (names[0] if names else None)
    ratios: dict[str, Any] = {}
    if ref is not None:
        for other in names:
            if other == ref:
                continue
            r: dict[str, float | None] = {}
            for metric in ("hr", "ndcg", "mrr"):
                a = models[ref]["overall"].get(metric)
                b = models[other]["overall"].get(metric)
                r[metric] = a / b if a is not None and b else None
            ratios[f"{ref}/{other}"] = r
    pos = dict(asdict(cfg))
    pos["positives"] = {
        "types": sorted(cfg.positives.types),
        "rating_type": cfg.positives.rating_type,
        "rating_min": cfg.positives.rating_min,
    }
    return {
        "mode": mode,
        "k": cfg.k,
        "config": pos,
        "stream": {
            "events": state.n_events,
            "warmup_events": state.n_warm,
            "positives_after_warmup": state.positives,
            "skipped_repeats": state.skipped_repeats,
            "queries": len(next(iter(tallies.values()))) if tallies else 0,
            "users": len(state.history),
            "items": len(state.item_ids),
        },
        "reference": ref,
        "models": models,
        "ratios": ratios,
        "seconds": seconds,
        **dict(extra or {}),
    }


# ----------------------------------------------------------------------------- output


def _jsonable(x: Any) -> Any:
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (np.floating, np.integer)):
        return _jsonable(x.item())
    return x


def write_report(report: Mapping[str, Any], path: str | Path) -> Path:
    """JSON with NaN written as null (strict JSON readers reject NaN)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_jsonable(report), indent=2, allow_nan=False) + "\n")
    return path


def plot_report(report: Mapping[str, Any], path: str | Path, title: str | None = None) -> Path:
    """HR@K and NDCG@K over the stream for every model, and HR@K by history length."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    k = report["k"]
    models = report["models"]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for name, m in models.items():
        c = m["curve"]
        axes[0].plot(c["position"], c["hr"], label=name, lw=1.6)
        axes[1].plot(c["position"], c["ndcg"], label=name, lw=1.6)
    for ax, what in ((axes[0], f"HR@{k}"), (axes[1], f"NDCG@{k}")):
        ax.set_xlabel("position in the stream")
        ax.set_ylabel(what)
        ax.set_title(f"{what} over the stream (prequential)")
        ax.grid(alpha=0.3)
        ax.set_ylim(bottom=0)
    axes[0].legend(fontsize=8)
    labels = [b[0] for b in HISTORY_BUCKETS]
    width = 0.8 / max(len(models), 1)
    for j, (name, m) in enumerate(models.items()):
        vals = [m["by_history"][b]["hr"] or 0.0 for b in labels]
        axes[2].bar(np.arange(len(labels)) + j * width, vals, width, label=name)
    axes[2].set_xticks(np.arange(len(labels)) + 0.4 - width / 2, labels)
    axes[2].set_xlabel("user's earlier events")
    axes[2].set_ylabel(f"HR@{k}")
    axes[2].set_title(f"HR@{k} by history length")
    axes[2].grid(alpha=0.3, axis="y")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def score_queries(
    model: Any, tally: Any, queries: Any, k: int, state: Any, scorer: Any | None
) -> None:
    """Test step of test-then-train for one model: its top-k (and AUC) for every query."""
    t = time.perf_counter()
    lists = fetch_recommendations(model, queries, k, state)
    aucs = None
    if scorer is not None:
        scorer.begin_batch()
        aucs = [scorer(q) for q in queries]
    tally.add_batch(queries, lists, state, aucs)
    tally.recommend_s += time.perf_counter() - t


def format_summary(report: Mapping[str, Any]) -> str:
    """A fixed-width table of the overall figures, for terminals and logs."""
    k = report["k"]
    lines = [
        f"{'recommender':<20} {'HR@' + str(k):>8} {'NDCG@' + str(k):>8} {'MRR@' + str(k):>8} "
        f"{'AUC':>7} {'cover':>7} {'pop%':>6} {'n':>7}"
    ]

    def f(x: Any, w: int, p: int = 4) -> str:
        return f"{x:>{w}.{p}f}" if isinstance(x, (int, float)) else f"{'-':>{w}}"

    for name, m in report["models"].items():
        o = m["overall"]
        lines.append(
            f"{name:<20} {f(o.get('hr'), 8)} {f(o.get('ndcg'), 8)} {f(o.get('mrr'), 8)} "
            f"{f(o.get('auc'), 7, 3)} {f(o.get('coverage'), 7, 3)} "
            f"{f(o.get('mean_rec_pop_pct'), 6, 2)} {o['n']:>7}"
        )
    for pair, r in report.get("ratios", {}).items():
        hr, nd = r.get("hr"), r.get("ndcg")
        lines.append(
            f"ratio {pair:<30} HR {hr:.2f}x  NDCG {nd:.2f}x"
            if hr is not None and nd is not None
            else f"ratio {pair:<30} n/a"
        )
    return "\n".join(lines)


# ----------------------------------------------------------------------------- synthetic


def evaluate_stream(
    stream: Any,
    model_cfg: ModelConfig | None = None,
    k: int = 10,
    out_dir: str | Path | None = None,
    *,
    batch_size: int = 512,
    warmup: float = 0.1,
    auc_share: float = 0.2,
    baselines: bool = True,
    progress: bool = False,
    models_out: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Prequential quality of the TF model vs the baselines on a generated stream.

    `stream` has `events()` (wire-format dicts) and `cfg` (a dataclass, reported under
    "synthetic"), as `streamrec.streaming.synthetic.SyntheticStream` has; the caller builds it
    (`streamrec.consumers.quality.evaluate_synthetic`), so model/ imports no streaming code.
    Writes `quality.json` and `quality.png` to `out_dir` when given; returns the report, whose
    `ratios` hold model / baseline for HR, NDCG and MRR. `models_out`, when given, receives the
    trained models by name plus the stream under "stream" (for the embedding views of
    `streamrec.consumers.views`).
    """
    from streamrec.model.baselines import make_baselines
    from streamrec.model.runtime import configure_threads
    from streamrec.model.testing import Event

    configure_threads(1, 1)
    from streamrec.model.online import OnlineRecommender

    model_cfg = model_cfg or ModelConfig()
    t0 = time.perf_counter()
    events = [Event.from_dict(d) for d in stream.events()]
    models: dict[str, Any] = {"model": OnlineRecommender(model_cfg)}
    if baselines:
        models.update(
            make_baselines(
                model_cfg.event_weights,
                model_cfg.rating_positive_min,
                model_cfg.rating_negative_max,
                model_cfg.popularity_half_life_s,
                seed=model_cfg.seed,
            )
        )
    cfg = EvalConfig(
        k=k,
        batch_size=batch_size,
        warmup=warmup,
        auc_share=auc_share,
        positives=PositiveRule.from_model_config(model_cfg),
        seed=model_cfg.seed,
    )
    report = prequential(events, models, cfg, progress=progress)
    if models_out is not None:
        models_out.update(models)
        models_out["stream"] = stream
    report["synthetic"] = _jsonable(asdict(stream.cfg))
    report["model_config"] = _jsonable(asdict(model_cfg))
    report["total_seconds"] = time.perf_counter() - t0
    if out_dir is not None:
        out = Path(out_dir)
        report["files"] = {
            "json": str(out / "quality.json"),
            "plot": str(out / "quality.png"),
        }
        plot_report(report, out / "quality.png", title=f"synthetic stream, {len(events)} events")
        write_report(report, out / "quality.json")
    return report
