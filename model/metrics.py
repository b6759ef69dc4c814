"""Ranking metrics of one query or many: hit rate, NDCG, MRR, sampled AUC, coverage.

Pure numpy, shared by the in-process and the pipeline evaluation (`model/evaluate.py`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np

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
