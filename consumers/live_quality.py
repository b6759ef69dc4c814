"""Live quality on the production stream: prequential HR@10 on a sample of the events, and
what the served lists look like (catalogue coverage, share of the most popular items).

The benchmark (`model/evaluate.py`) measures quality offline; this measures it on the stream
the trainer learns, the same way: before a batch is learned, a few of its positive events are
scored against the user's top-10 from the model as it stands (`begin`), excluding what serving
excludes: the user's seen set in Redis as it was before the batch (read once the previous
batch's write has landed: `finish`) and their items earlier in the batch. An event on an item
the user already had is a repeat and is skipped, as the benchmark skips it. Users with learned
events ("known", ranked like the precomputed lists) and the others ("cold", served from
features or popularity) are kept apart: they are served by different paths.

Served lists are the precomputed top-K lists the trainer writes to Redis. Over the last
`served_window` of them: coverage is the share of the items the model knows that appear in
at least one, popular share the share of their slots that hold an item in the top 1 % of the
catalogue by current (decayed) popularity: a feedback loop shows as that share rising while
coverage falls.

Bookkeeping only: the trainer passes in the model, its events, seen sets and lists; nothing
here reads a clock, Kafka or Redis, and the `publish_*` methods set the Prometheus series.
"""

from __future__ import annotations

import math
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

import numpy as np

from streamrec.model.base import ItemMatrix
from streamrec.model.eval_state import PositiveRule
from streamrec.model.metrics import hit_rate, ndcg, rank_of
from streamrec.model.ranking import rank_lists

K = 10  # HR@10, as the benchmark reports
POPULAR_TOP = 0.01  # "popular": the top 1 % of known items by decayed popularity
LABELS = ("known", "cold")

SeenReader = Callable[[list[str]], Mapping[str, Iterable[str]]]


class QualityModel(Protocol):
    """What the monitor asks of the model (model/online.py OnlineRecommender)."""

    @property
    def n_items(self) -> int: ...
    @property
    def popularity(self) -> Any: ...  # top(k) -> [(item, score)]
    def recommend_many(
        self, users: Sequence[str], k: int = 10, exclude: Mapping[str, Any] | None = None
    ) -> dict[str, list[tuple[str, float]]]: ...
    def user_vectors(self, users: Sequence[str]) -> tuple[list[str], np.ndarray, np.ndarray]: ...
    def exclude_rows(self, exclude: Any) -> np.ndarray: ...
    def item_vectors(self) -> ItemMatrix: ...


@dataclass
class Scored:
    """What one batch's sample gave, by users label: the counters' increments."""

    samples: dict[str, int] = field(default_factory=lambda: dict.fromkeys(LABELS, 0))
    hits: dict[str, int] = field(default_factory=lambda: dict.fromkeys(LABELS, 0))
    repeats: int = 0  # sampled positives on an item the user already had: not scored


class Query(NamedTuple):
    user: str
    item: str
    earlier: frozenset[str]  # the user's items earlier in the batch


@dataclass
class Pending:
    """Known users' queries of a batch, ranked from the model as it was before learning it
    once their seen sets are read (`LiveQuality.finish`)."""

    queries: list[Query]
    rows: dict[str, int]  # user -> row of `vectors`
    vectors: np.ndarray  # their served vectors before the batch was learned
    matrix: ItemMatrix  # the item matrix they are ranked against


class LiveQuality:
    """Sliding windows of the sampled events' ranks and of the served lists.

    `sample_rate`: share of a batch's events drawn (then only positives count), at most
    `max_per_batch` of them; 0 turns scoring off. `window`: sampled events per users label
    the gauges are over; `served_window`: written lists coverage and popular share are over.
    """

    def __init__(
        self,
        *,
        sample_rate: float,
        max_per_batch: int,
        window: int,
        served_window: int,
        positives: PositiveRule,
        seed: int | None = None,
    ) -> None:
        self.sample_rate = sample_rate
        self.max_per_batch = max_per_batch
        self.positives = positives
        self.rng = np.random.default_rng(seed)
        self.ranks: dict[str, deque[int]] = {label: deque(maxlen=window) for label in LABELS}
        self.served_window = served_window
        self._lists: deque[tuple[str, ...]] = deque()
        self._slots: Counter[str] = Counter()  # item -> slots it holds in the window's lists
        self._n_slots = 0

    # -- prequential sample ------------------------------------------------------------------

    def pick(self, n_events: int) -> list[int]:
        """Indices of the batch's events to score, in batch order."""
        if self.sample_rate <= 0 or n_events == 0 or self.max_per_batch == 0:
            return []
        n = min(int(self.rng.binomial(n_events, self.sample_rate)), self.max_per_batch)
        if n == 0:
            return []
        return sorted(self.rng.choice(n_events, size=n, replace=False).tolist())

    def begin(
        self,
        model: QualityModel,
        events: Sequence[Any],
        *,
        counts: Mapping[str, int],
        picked: Sequence[int] | None = None,
        matrix: ItemMatrix | None = None,
    ) -> tuple[Scored, Pending | None]:
        """Score a sample of `events` against the model before it learns them.

        `counts`: events learned per user (a user with none is cold); `picked`: the indices
        to score (default: `pick`); `matrix`: the item-matrix snapshot precomputed lists are
        ranked against (consumers/lists.py; default: the model's current matrix).

        Cold users are scored now: they have no seen set, only their items earlier in the
        batch are excluded. Known users need their seen sets, which the trainer reads once
        the previous batch's write has landed (reading sooner would queue behind it in
        Redis): what ranks them, their vectors and the matrix as they are now, goes into the
        returned `Pending`, for `finish`.
        """
        out = Scored()
        idx = self.pick(len(events)) if picked is None else list(picked)
        queries = [j for j in idx if self.positives(events[j])]
        if not queries:
            return out, None
        users = {events[j].user for j in queries}
        # the user's items earlier in this batch, as each query saw them (stream order)
        earlier: dict[int, frozenset[str]] = {}
        so_far: dict[str, set[str]] = {u: set() for u in users}
        qset = set(queries)
        for j, e in enumerate(events[: queries[-1] + 1]):
            mine = so_far.get(e.user)
            if mine is None:
                continue
            if j in qset:
                earlier[j] = frozenset(mine)
            mine.add(e.item)
        known: list[Query] = []
        cold: list[Query] = []
        for j in queries:
            e = events[j]
            q = Query(e.user, e.item, earlier[j])
            if counts.get(e.user, 0) > 0:
                known.append(q)
            elif e.item in q.earlier:
                out.repeats += 1
            else:
                cold.append(q)
        if cold:
            asked = sorted({q.user for q in cold})
            extra = max(len(q.earlier) for q in cold)
            got = model.recommend_many(asked, K + extra, {})
            for q in cold:
                self._record("cold", q, [i for i, _ in got.get(q.user, [])], out)
        if not known:
            return out, None
        names, vecs, _ = model.user_vectors(sorted({q.user for q in known}))
        return out, Pending(
            queries=known,
            rows={u: r for r, u in enumerate(names)},
            vectors=np.array(vecs, copy=True),
            matrix=model.item_vectors() if matrix is None else matrix,
        )

    def finish(
        self, model: QualityModel, pending: Pending, seen: Mapping[str, Iterable[str]]
    ) -> Scored:
        """Score the known users' queries of `begin`, excluding `seen[user]` (their seen
        set in Redis as it was before the batch) and their items earlier in the batch."""
        out = Scored()
        history = {u: set(seen.get(u, ())) for u in pending.rows}
        scored: list[Query] = []
        for q in pending.queries:
            if q.item in history[q.user] or q.item in q.earlier:
                out.repeats += 1
            else:
                scored.append(q)
        if not scored:
            return out
        m = pending.matrix
        n = len(m.ids)
        if n == 0:  # nothing to recommend yet: every query misses
            for q in scored:
                self._record("known", q, [], out)
            return out
        users = sorted({q.user for q in scored})
        # item rows never move: rows past the snapshot are items it lacks
        excl = [rows[rows < n] for rows in (model.exclude_rows(history[u]) for u in users)]
        vecs = pending.vectors[[pending.rows[u] for u in users]]
        extra = max(len(q.earlier) for q in scored)
        lists = rank_lists(vecs, m.vectors, m.biases, m.ids, excl, K + extra)
        got = dict(zip(users, lists, strict=True))
        for q in scored:
            self._record("known", q, [i for i, _ in got[q.user]], out)
        return out

    def score_batch(
        self,
        model: QualityModel,
        events: Sequence[Any],
        *,
        counts: Mapping[str, int],
        read_seen: SeenReader,
        picked: Sequence[int] | None = None,
        matrix: ItemMatrix | None = None,
    ) -> Scored:
        """`begin` and `finish` at once, the seen sets from `read_seen(users)`."""
        out, pending = self.begin(model, events, counts=counts, picked=picked, matrix=matrix)
        if pending is not None:
            more = self.finish(model, pending, read_seen(sorted(pending.rows)))
            for label in LABELS:
                out.samples[label] += more.samples[label]
                out.hits[label] += more.hits[label]
            out.repeats += more.repeats
        return out

    def _record(self, label: str, q: Query, ranked: list[str], out: Scored) -> None:
        recs = [i for i in ranked if i not in q.earlier][:K]
        rank = rank_of(q.item, recs)
        self.ranks[label].append(rank)
        out.samples[label] += 1
        out.hits[label] += rank > 0

    def hr(self, label: str) -> float:
        """HR@10 over the window; nan before the first sample."""
        return hit_rate(np.asarray(self.ranks[label], np.int64), K)

    def ndcg(self, label: str) -> float:
        return ndcg(np.asarray(self.ranks[label], np.int64), K)

    # -- served lists ------------------------------------------------------------------------

    def served(self, lists: Mapping[str, Sequence[tuple[str, float]]]) -> None:
        """Lists the trainer writes (user -> [(item, score)]): they enter the window, the
        oldest leave it."""
        slots = self._slots
        for lst in lists.values():
            items = tuple(i for i, _ in lst)
            self._lists.append(items)
            slots.update(items)
            self._n_slots += len(items)
        while len(self._lists) > self.served_window:
            for i in self._lists.popleft():
                c = slots.get(i)
                if c is None:
                    continue  # forgotten (evicted): its slots are out of the count already
                self._n_slots -= 1
                if c <= 1:
                    del slots[i]
                else:
                    slots[i] = c - 1

    def forget(self, items: Iterable[str]) -> None:
        """The model evicted these items: they no longer count as covered."""
        for i in items:
            self._n_slots -= self._slots.pop(i, 0)

    def coverage(self, n_items: int) -> float:
        """Share of the `n_items` known items in at least one list of the window."""
        if n_items <= 0 or not self._lists:
            return math.nan
        return min(1.0, len(self._slots) / n_items)

    def popular_share(self, popular: Iterable[str]) -> float:
        """Share of the window's slots holding one of the `popular` items."""
        if self._n_slots <= 0:
            return math.nan
        slots = self._slots
        return sum(slots.get(i, 0) for i in set(popular)) / self._n_slots

    def popular_items(self, model: QualityModel) -> list[str]:
        """The top 1 % of the model's known items by decayed popularity (at least one)."""
        n = max(1, math.ceil(POPULAR_TOP * model.n_items))
        return [i for i, _ in model.popularity.top(n)]

    # -- export ------------------------------------------------------------------------------

    def publish_samples(self, metrics: Any, scored: Scored) -> None:
        """A batch's sample into the Prometheus series of consumers/metrics.py; a gauge
        appears with its label's first sample."""
        for label in LABELS:
            if scored.samples[label]:
                metrics.live_samples.labels(label).inc(scored.samples[label])
                metrics.live_hits.labels(label).inc(scored.hits[label])
                metrics.live_hr10.labels(label).set(self.hr(label))
                metrics.live_ndcg10.labels(label).set(self.ndcg(label))

    def publish_served(self, metrics: Any, model: QualityModel) -> None:
        """Coverage and popular share of the window's lists, once there are any (finding
        the top 1 % costs a pass over the catalogue: call it now and then, not per batch)."""
        cov = self.coverage(model.n_items)
        if not math.isnan(cov):
            metrics.served_coverage.set(cov)
            metrics.served_popular_share.set(self.popular_share(self.popular_items(model)))
