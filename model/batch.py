"""Batch packing: a mini-batch of events to the three flat arrays the compiled step reads.

Python does what must be per event (id and feature lookups, a few list comprehensions) and
prepares index arrays with numpy: each side's unique rows in the batch, (entity, feature) pairs,
the shared negatives, per-row gradient scales. Every array goes into one int32 and one float32
vector plus their sizes (`INT_FIELDS`, `FLOAT_FIELDS`): three tensors per step call whatever the
batch holds, so the step is traced once per variant (`Batch.key`), never per batch size.

This module itself runs no TensorFlow: it is numpy over the sides' bookkeeping.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from streamrec.model.base import EventLike
from streamrec.model.config import ModelConfig
from streamrec.model.sampling import NegativeSampler
from streamrec.model.side import NONE, Side

# The packed layout, in order; `step` unpacks the same names.
INT_FIELDS = (
    "u_set", "uf_set", "uf_e", "uf_f", "i_set", "if_set", "if_e", "if_f",
    "r_u", "r_i", "neg", "cand", "r_cand", "p_u", "p_i", "hit_b", "hit_j",
)  # fmt: skip
FLOAT_FIELDS = (
    "r_w", "neg_logq", "cand_logq", "p_w", "p_y", "n_active",
    "s_u", "s_i", "s_uf", "s_b0", "s_if",
)  # fmt: skip
N_INTS = len(INT_FIELDS)
N_FLOATS = len(FLOAT_FIELDS)

StepKey = tuple[bool, bool, bool, bool]  # (ranking events, pointwise events, user, item feats)


class Attribute(Sequence[Any]):
    """A lazy column of one attribute of the events: only the rows read cost anything."""

    def __init__(self, events: Sequence[EventLike], name: str) -> None:
        self._events = events
        self._name = name

    def __len__(self) -> int:
        return len(self._events)

    def __getitem__(self, j: Any) -> Any:
        return getattr(self._events[j], self._name)


class _TypeCodes(dict[str, int]):
    """Event type -> code; unknown types are 0 and, unlike a defaultdict's, not inserted."""

    def __missing__(self, key: str) -> int:
        return 0


class EventWeights:
    """Event types (and rating values) to the weights and labels of the two losses.

    Positive weights are implicit positives for the ranking loss; negative weights (dislike)
    explicit negatives for the pointwise loss. A rating is a positive at or above
    rating_positive_min, and every rating with a value trains the pointwise loss towards a
    soft label (0 at rating_negative_max and below, 1 at rating_positive_min and above).
    Types the config does not name get weight 0 (ignored).
    """

    def __init__(self, config: ModelConfig) -> None:
        names = list(config.event_weights)
        self._codes = _TypeCodes({t: j + 1 for j, t in enumerate(names)})  # 0: not named
        self._weights = np.asarray([0.0, *config.event_weights.values()], np.float64)
        self._rating_code = names.index("rating") + 1 if "rating" in names else -1
        self._rating_w = config.event_weights.get("rating", 0.0)
        self._lo, self._hi = config.rating_negative_max, config.rating_positive_min

    def __call__(
        self, types: list[str], values: Sequence[float | None] | None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(ranking weight, pointwise weight, pointwise label) per event."""
        n = len(types)
        # A batch of one type (the usual case) needs no per-event lookup at all; otherwise
        # one C-level pass over the types.
        first = types[0]
        if types.count(first) == n:
            codes = np.full(n, self._codes[first], dtype=np.int32)
        else:
            codes = np.fromiter(map(self._codes.__getitem__, types), np.int32, n)
        w = self._weights[codes]
        w_rank = np.where(w > 0, w, 0.0)
        w_pt = np.where(w < 0, -w, 0.0)
        y_pt = np.zeros(n, dtype=np.float64)
        rating_w = self._rating_w
        ratings = np.flatnonzero(codes == self._rating_code) if rating_w > 0 else ()
        if len(ratings):
            idx = np.asarray(ratings)
            raw = [None if values is None else values[j] for j in idx.tolist()]
            given = np.asarray([v is not None for v in raw])
            vals = np.asarray([math.nan if v is None else v for v in raw], np.float64)
            lo, hi = self._lo, self._hi
            w_rank[idx] = np.where(given & (vals >= hi), rating_w, 0.0)
            w_pt[idx] = np.where(given, rating_w, 0.0)
            # A soft label between the two thresholds; a NaN value stays NaN and the batch is
            # skipped as non-finite rather than silently learning from garbage.
            with np.errstate(invalid="ignore"):
                y_pt[idx] = np.where(given, np.clip((vals - lo) / (hi - lo), 0.0, 1.0), 0.0)
        return w_rank, w_pt, y_pt


@dataclass(frozen=True)
class Batch:
    """One packed mini-batch, and what the model's bookkeeping after the step needs."""

    key: StepKey  # which compiled variant runs it
    ints: np.ndarray  # int32, INT_FIELDS concatenated
    sizes: np.ndarray  # int32, the length of each field (ints then floats)
    floats: np.ndarray  # float32, FLOAT_FIELDS concatenated
    r: np.ndarray  # events of the ranking loss
    q: np.ndarray  # events of the pointwise loss
    neg: np.ndarray  # the shared negatives (item rows)
    i_set: np.ndarray  # every item row the step updates (events' and negatives')
    uf_set: np.ndarray  # user feature rows in the batch
    if_set: np.ndarray  # item feature rows in the batch (negatives' included)


def empty() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ints, sizes, floats) of a batch of no events: loss 0 and every gradient 0."""
    sizes = np.zeros(N_INTS + N_FLOATS, np.int32)
    sizes[N_INTS + FLOAT_FIELDS.index("n_active")] = 1
    sizes[N_INTS + FLOAT_FIELDS.index("s_b0")] = 1  # the global bias's scale
    return np.zeros(0, np.int32), sizes, np.asarray([0.0, 1.0], np.float32)


def accidental_hits(r_i: np.ndarray, neg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(event, column) of every shared negative that is the event's own positive item.

    One sort and two binary searches, O((B + N) log N), instead of comparing all B x N pairs
    in the step (on the host, for a small batch, where that is cheaper). Negatives may repeat.
    """
    if not r_i.shape[0] or not neg.shape[0]:
        return NONE, NONE
    if r_i.shape[0] * neg.shape[0] <= 65_536:
        # A few events: comparing every pair is cheaper than the sort, in the same order
        # (by event, then column).
        rows, cols = np.nonzero(r_i[:, None] == neg[None, :])
        return (rows, cols) if rows.shape[0] else (NONE, NONE)
    order = np.argsort(neg, kind="stable")
    sorted_neg = neg[order]
    lo = np.searchsorted(sorted_neg, r_i, "left")
    count = np.searchsorted(sorted_neg, r_i, "right") - lo
    total = int(count.sum())
    if not total:
        return NONE, NONE
    rows = np.repeat(np.arange(r_i.shape[0]), count)
    # Each event's hits are order[lo : lo + count]: its start, plus the position in its run.
    within = np.arange(total) - np.repeat(np.cumsum(count) - count, count)
    return rows, order[np.repeat(lo, count) + within]


def pack(
    config: ModelConfig,
    users: Side,
    items: Side,
    sampler: NegativeSampler,
    rng: np.random.Generator,
    u_rows: np.ndarray,
    i_rows: np.ndarray,
    weights: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> Batch | None:
    """The batch's events as step inputs; None when no event carries a weight.

    Draws the shared negatives from `rng` when the batch has ranking events.
    """
    w_rank, w_pt, y_pt = weights
    r = np.flatnonzero(w_rank > 0)
    q = np.flatnonzero(w_pt > 0)
    nr, nq = r.shape[0], q.shape[0]
    if nr == 0 and nq == 0:
        return None
    if nr:
        neg, neg_logq = sampler.sample(rng, config.negatives, len(items.ids.ids))
    else:
        neg, neg_logq = np.zeros(0, np.int32), np.zeros(0, np.float32)
    u_set, u_inv = np.unique(np.concatenate([u_rows[r], u_rows[q]]), return_inverse=True)
    i_set, i_inv = np.unique(np.concatenate([i_rows[r], i_rows[q], neg]), return_inverse=True)
    r_i = i_inv[:nr]
    cand: np.ndarray
    r_cand: np.ndarray
    cand_logq: np.ndarray
    if config.loss == "softmax" and nr:
        cand, r_cand, cand_count = np.unique(r_i, return_inverse=True, return_counts=True)
        cand_logq = np.log(cand_count)
    else:
        cand = r_cand = cand_logq = np.zeros(0)
    neg_cols = i_inv[nr + nq :]
    hits = accidental_hits(r_i, neg_cols) if config.loss == "bpr" else (NONE, NONE)
    uf_set, uf_e, uf_f = users.batch_pairs(u_set)
    if_set, if_e, if_f = items.batch_pairs(i_set)
    ints = [
        u_set, uf_set, uf_e, uf_f, i_set, if_set, if_e, if_f,
        u_inv[:nr], r_i, neg_cols, cand, r_cand, u_inv[nr:], i_inv[nr : nr + nq],
        *hits,
    ]  # fmt: skip
    floats = [w_rank[r], neg_logq, cand_logq, w_pt[q], y_pt[q], np.asarray([nr + nq])]
    floats += row_scales(
        config, nr, nq, u_inv, i_inv, u_set, i_set, (uf_set, uf_e, uf_f), (if_set, if_e, if_f)
    )
    return Batch(
        key=(nr > 0, nq > 0, uf_set.shape[0] > 0, if_set.shape[0] > 0),
        ints=np.concatenate(ints).astype(np.int32),
        sizes=np.asarray([a.shape[0] for a in ints + floats], dtype=np.int32),
        floats=np.concatenate(floats).astype(np.float32),
        r=r,
        q=q,
        neg=neg,
        i_set=i_set,
        uf_set=uf_set,
        if_set=if_set,
    )


def row_scales(
    config: ModelConfig,
    nr: int,
    nq: int,
    u_inv: np.ndarray,
    i_inv: np.ndarray,
    u_set: np.ndarray,
    i_set: np.ndarray,
    user_pairs: tuple[np.ndarray, np.ndarray, np.ndarray],
    item_pairs: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> list[np.ndarray]:
    """Per-row gradient scales occurrences^-row_scaling (see ModelConfig.row_scaling), times
    user_gradient_scale for user id rows: s_u, s_i, s_uf, s_b0, s_if.

    `*_pairs` are a side's `batch_pairs`: a feature row occurs as often as the rows that
    carry it, summed.
    """
    alpha = config.row_scaling
    n_ev = nr + nq
    u_occ = np.bincount(u_inv, minlength=u_set.shape[0]).astype(np.float64)
    i_occ = np.bincount(i_inv[:n_ev], minlength=i_set.shape[0]).astype(np.float64)
    n_neg = i_inv.shape[0] - n_ev
    if n_neg:
        # Every ranking event spreads 1/N over the N shared negatives.
        i_occ += np.bincount(i_inv[n_ev:], minlength=i_set.shape[0]) * (nr / n_neg)
    uf_set, uf_e, uf_f = user_pairs
    if_set, if_e, if_f = item_pairs
    uf_occ = np.bincount(uf_f, weights=u_occ[uf_e], minlength=uf_set.shape[0])
    if_occ = np.bincount(if_f, weights=i_occ[if_e], minlength=if_set.shape[0])
    u_scale = np.maximum(u_occ, 1.0) ** -alpha
    if config.user_gradient_scale != 1.0:
        u_scale = u_scale * config.user_gradient_scale
    return [
        u_scale,
        np.maximum(i_occ, 1.0) ** -alpha,
        np.maximum(uf_occ, 1.0) ** -alpha,
        np.asarray([max(nq, 1) ** -alpha]),
        np.maximum(if_occ, 1.0) ** -alpha,
    ]
