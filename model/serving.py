"""Serving rules: served vectors, top-k lists, cold start, batch scoring.

An id row that never appeared in an event (catalogue-only, or never trained) is random
initialisation, not knowledge, so it contributes nothing to a served vector; the same holds for
feature rows. A new item with known features is thus scored by its features alone, and a user
with features but no history is served from them (`SOURCE_FEATURES`); a user with neither is
served decayed popularity (`SOURCE_POPULARITY`).

Functions here read the sides' tables and never change them; the model keeps the tables in
sync and caches the item matrix (`OnlineRecommender._item_matrix`).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping, Sequence

import numpy as np

from streamrec.model.base import Features
from streamrec.model.ids import IdMap, feature_tokens
from streamrec.model.popularity import DecayedPopularity
from streamrec.model.ranking import rank_lists, top_k
from streamrec.model.side import Side

SOURCE_MODEL = "model"
SOURCE_FEATURES = "features"
SOURCE_POPULARITY = "popularity"

SCORE_CHUNK = 8_000_000  # scores per block in batch scoring (32 MB of float32)

ItemMatrixFn = Callable[[], tuple[np.ndarray, np.ndarray]]  # (vectors, biases), built lazily


def add_rows(out: np.ndarray, rows: np.ndarray, values: np.ndarray) -> None:
    """`np.add.at(out, rows, values)`, the same sums in the same order, 3-4x faster.

    Pass k adds every row's k-th value: within one pass no row repeats, so a plain
    fancy-index `+=` is exact (np.add.at dominated every item-matrix build with features).
    """
    if rows.shape[0] == 0:
        return
    order = np.argsort(rows, kind="stable")
    srt = rows[order]
    first = np.flatnonzero(np.r_[True, srt[1:] != srt[:-1]])
    rank = np.empty(rows.shape[0], np.int64)
    rank[order] = np.arange(rows.shape[0]) - np.repeat(first, np.diff(np.r_[first, srt.shape[0]]))
    for k in range(int(rank.max()) + 1):
        take = np.flatnonzero(rank == k)
        out[rows[take]] += values[take]


# --- served vectors ----------------------------------------------------------------------------


def add_trained_features(side: Side, out: np.ndarray, ents: np.ndarray, feats: np.ndarray) -> None:
    """out[ents] += feature rows `feats`, leaving out feature rows no event has trained."""
    if feats.shape[0] == 0:
        return
    keep = side.ftrained[feats]
    if not keep.all():
        ents, feats = ents[keep], feats[keep]
        if feats.shape[0] == 0:
            return
    f_set, f_idx = np.unique(feats, return_inverse=True)
    vals = side.femb.get_rows(f_set.astype(np.int32))
    add_rows(out, ents, vals[f_idx])


def served(
    side: Side, rows: np.ndarray, token_override: tuple[str, ...] | None = None
) -> np.ndarray:
    """Served vectors of `rows`: trained id rows plus trained feature rows."""
    rows = np.asarray(rows, dtype=np.int64)
    out = side.emb.get_rows(rows.astype(np.int32)) if rows.shape[0] else None
    if out is None:
        return np.zeros((0, side.emb.dim), dtype=np.float32)
    out *= (side.count[rows] > 0)[:, None]
    if token_override is not None:
        fr = side.known_feature_rows(token_override)
        n = rows.shape[0]
        ents = np.repeat(np.arange(n, dtype=np.int64), fr.shape[0])
        feats = np.tile(np.asarray(fr, np.int64), n)
    else:
        ents, feats = side.feature_pairs(rows)
    add_trained_features(side, out, ents, feats)
    return out


def matrix(side: Side) -> tuple[np.ndarray, np.ndarray]:
    """Served vectors and biases of every row."""
    n = len(side.ids.ids)
    vecs = side.emb.head(n)
    vecs *= (side.count[:n] > 0)[:, None]
    rows, feats = side.all_pairs()
    add_trained_features(side, vecs, rows, feats)
    return vecs, side.bias.head(n)


def grow_rows_copy(a: np.ndarray, rows: int) -> np.ndarray:
    """A copy of `a` with room for `rows` rows (the new ones zero)."""
    out = np.zeros((rows, *a.shape[1:]), dtype=a.dtype)
    out[: a.shape[0]] = a
    return out


def update_rows(
    side: Side,
    vecs: np.ndarray,
    biases: np.ndarray,
    rows: np.ndarray,
    values: tuple[np.ndarray, np.ndarray] | None = None,
) -> None:
    """Recompute rows `rows` of a `matrix` in place: the same values a rebuild would give.

    `values`: the rows' id embeddings and biases as the tables hold them now (what a learn
    step wrote), instead of reading them back; only for a side without features.
    """
    if not rows.shape[0]:
        return
    if values is None:
        vecs[rows] = served(side, rows)
        biases[rows] = side.bias.get_rows(rows.astype(np.int32))
    else:
        vecs[rows] = values[0] * (side.count[rows] > 0)[:, None]
        biases[rows] = values[1]


def served_rows(
    side: Side, names: Sequence[str], dim: int
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(known ids, vectors float32 [n, dim], biases float32 [n]) in one gather; unknown ids
    are left out."""
    rows = [(u, r) for u, r in zip(names, map(side.ids.row, names), strict=True) if r >= 0]
    if not rows:
        return [], np.zeros((0, dim), np.float32), np.zeros(0, np.float32)
    idx = np.asarray([r for _, r in rows], dtype=np.int64)
    vecs = served(side, idx).astype(np.float32)
    biases = np.asarray(side.bias.get_rows(idx.astype(np.int32)), dtype=np.float32)
    return [u for u, _ in rows], vecs, biases.reshape(-1)


def feature_vectors(side: Side, tokens: Iterable[str] | None) -> dict[str, np.ndarray]:
    """Trained feature token embeddings (token -> float32 [dim]); untrained tokens left out."""
    names = list(side.features.tokens.ids if tokens is None else tokens)
    rows = side.features.known_rows(names).tolist()
    trained = side.ftrained
    pairs = [(t, r) for t, r in zip(names, rows, strict=True) if r >= 0 and trained[r]]
    if not pairs:
        return {}
    vecs = side.femb.get_rows(np.asarray([r for _, r in pairs], dtype=np.int32))
    return {t: vecs[j] for j, (t, _) in enumerate(pairs)}


# --- ranking -----------------------------------------------------------------------------------


def exclude_rows(items: IdMap, exclude: Collection[str]) -> np.ndarray:
    """Item rows of the given ids that the model knows."""
    row = items.row
    rows = [r for r in map(row, exclude) if r >= 0]
    return np.asarray(rows, dtype=np.int64)


def rank(
    p: np.ndarray, items: IdMap, item_matrix: ItemMatrixFn, exclude: Collection[str], k: int
) -> list[tuple[str, float]]:
    vecs, biases = item_matrix()
    scores = vecs @ p.astype(vecs.dtype, copy=False)
    scores += biases
    if exclude:
        scores[exclude_rows(items, exclude)] = -np.inf
    ids = items.ids
    # `top_k` orders exactly as `top_k_rows` does (score, then id), with fewer passes for one row
    return [(ids[j], float(scores[j])) for j in top_k(scores, k, ids)]


def popular(
    pop: DecayedPopularity, tokens: Sequence[str], k: int, exclude: Collection[str]
) -> list[tuple[str, float]]:
    """Decayed popularity of the user's best-populated segment, topped up from global."""
    seg = pop.best_segment(tokens) if tokens else None
    out = pop.top(k, segment=seg, exclude=exclude) if seg is not None else []
    if len(out) < k:
        # Fill a thin segment from global popularity; its scores stay below the segment's
        # list only in order, not in value, so renumber nothing and just append.
        have = {i for i, _ in out}
        more = pop.top(k - len(out), exclude=set(exclude) | have)
        out.extend(more)
    return out


def recommend_with_source(
    users: Side,
    items: Side,
    pop: DecayedPopularity,
    item_matrix: ItemMatrixFn,
    user: str,
    k: int,
    exclude: Collection[str],
    user_features: Features | None,
) -> tuple[list[tuple[str, float]], str]:
    """See `OnlineRecommender.recommend_with_source`; the item matrix is built only when a
    vector path serves."""
    if k <= 0:
        return [], SOURCE_MODEL
    row = users.ids.row(user)
    tokens = (
        feature_tokens(user_features) if user_features is not None else users.tokens.get(row, ())
    )
    override = tokens if user_features is not None else None
    if row >= 0 and users.count[row] > 0:
        p = served(users, np.asarray([row]), override)[0]
        return rank(p, items.ids, item_matrix, exclude, k), SOURCE_MODEL
    frows = users.known_feature_rows(tokens)
    if frows.shape[0] and users.ftrained[frows].any():
        p = np.zeros((1, users.emb.dim), dtype=np.float32)
        add_trained_features(users, p, np.zeros(frows.shape[0], np.int64), frows.astype(np.int64))
        return rank(p[0], items.ids, item_matrix, exclude, k), SOURCE_FEATURES
    return popular(pop, tokens, k, exclude), SOURCE_POPULARITY


def recommend_many(
    users: Side,
    items: Side,
    pop: DecayedPopularity,
    item_matrix: ItemMatrixFn,
    names: Sequence[str],
    k: int,
    exclude: Mapping[str, Collection[str]],
) -> dict[str, list[tuple[str, float]]]:
    """Batch scoring: one matrix product per block of users with history; the others one by
    one through `recommend_with_source`."""
    out: dict[str, list[tuple[str, float]]] = {}
    known: list[str] = []
    rows: list[int] = []
    for u in names:
        row = users.ids.row(u)
        if row >= 0 and users.count[row] > 0:
            if u not in out:
                known.append(u)
                rows.append(row)
                out[u] = []
        else:
            out[u] = recommend_with_source(
                users, items, pop, item_matrix, u, k, exclude.get(u, ()), None
            )[0]
    if not known or k <= 0:
        return out
    vecs, biases = item_matrix()
    p = served(users, np.asarray(rows))
    excl = [exclude_rows(items.ids, exclude[u]) if exclude.get(u) else None for u in known]
    lists = rank_lists(p, vecs, biases, items.ids.ids, excl, k, SCORE_CHUNK)
    out.update(zip(known, lists, strict=True))
    return out
