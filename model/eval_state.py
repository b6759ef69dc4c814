"""Evaluation bookkeeping: what counts as a query, the evaluator's view of the stream so far,
and the tallies that turn ranks into metrics (overall and by slice).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from streamrec.model.base import EventLike
from streamrec.model.config import ModelConfig
from streamrec.model.metrics import _ranks, clustered_se, coverage, hit_rate, mrr, ndcg, rank_of

log = logging.getLogger("streamrec.model.evaluate")

#: (label, lowest, highest) history lengths, in events of the user before the scored one.
HISTORY_BUCKETS: tuple[tuple[str, int, int | None], ...] = (
    ("0", 0, 0),
    ("1-4", 1, 4),
    ("5-19", 5, 19),
    ("20-99", 20, 99),
    ("100+", 100, None),
)


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
