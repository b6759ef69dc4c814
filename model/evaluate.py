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

This module runs the protocols; the metrics are in `model/metrics.py`, the bookkeeping (queries,
the evaluator's state, tallies) in `model/eval_state.py`, and the report's JSON, plot and table
in `model/eval_report.py`. Every public name is importable from here as well.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from streamrec.model.base import EventLike
from streamrec.model.config import ModelConfig
from streamrec.model.eval_report import _jsonable, format_summary, plot_report, write_report
from streamrec.model.eval_state import (
    HISTORY_BUCKETS,
    EvalConfig,
    EvalState,
    PositiveRule,
    Query,
    Tally,
    sort_events,
)
from streamrec.model.metrics import (
    clustered_se,
    coverage,
    hit_rate,
    mrr,
    ndcg,
    rank_of,
    sampled_auc,
)

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
    "score_queries",
    "sort_events",
    "write_report",
]

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
