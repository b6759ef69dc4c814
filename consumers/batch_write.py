"""What one batch writes to Redis, assembled from the batch and the model: pure functions.

The trainer learns a batch, then hands Redis the new state of everything it changed in one
fenced write (`streaming.store.BatchWrite`): each user's row (vector, bias, seen items,
event count, finished list), the touched items' rows, the item matrix now and then, the
popularity of the touched items, the user-feature vectors, catalogue features, and the
offsets the write moves from and to. Here that is computed from explicit inputs; nothing
here reads a clock, Kafka or Redis, so it is unit-tested with a fake model.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Container, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from streamrec.consumers.config import Config
from streamrec.model.base import ItemMatrix
from streamrec.streaming.events import Event
from streamrec.streaming.keys import matrix_interval
from streamrec.streaming.store import BatchWrite, ItemRow, UserRow

Lists = dict[str, list[tuple[str, float]]]
# (Kafka record, its event): a record has .timestamp (ms)
Fresh = Sequence[tuple[Any, Event]]
# (kind, id) -> side features from the catalogue topics; kind is "item" or "user"
Catalogue = Mapping[tuple[str, str], Any]


class WriteModel(Protocol):
    """What assembling a write reads from the model (model/online.py OnlineRecommender)."""

    @property
    def n_items(self) -> int: ...
    @property
    def global_bias(self) -> float: ...
    @property
    def popularity(self) -> Any: ...  # log_scores(items, segment), segments()
    def user_vectors(self, users: Sequence[str]) -> tuple[list[str], np.ndarray, np.ndarray]: ...
    def item_rows(self, items: Sequence[str]) -> tuple[list[str], np.ndarray, np.ndarray]: ...
    def item_vectors(self) -> ItemMatrix: ...
    def user_segments(self, user: str) -> tuple[str, ...]: ...
    def user_tokens(self, user: str) -> tuple[str, ...]: ...
    def user_feature_vectors(self, tokens: Sequence[str]) -> dict[str, np.ndarray]: ...


@dataclass
class ByUser:
    """The batch's fresh events by user."""

    last: dict[str, tuple[Any, Event]]  # user -> their last (record, event)
    seen: dict[str, list[tuple[str, int]]]  # user -> (item, ts) of each event, in order
    users: list[str]  # users whose rows are written: not evicted


def by_user(fresh: Fresh, gone_users: Container[str] | None) -> ByUser:
    """`gone_users`: evicted by the model, possibly by this very batch (a later event in it
    moved the clock on by more than evict_after_s); nothing of theirs is written."""
    last: dict[str, tuple[Any, Event]] = {}
    seen: dict[str, list[tuple[str, int]]] = defaultdict(list)
    for r, e in fresh:
        last[e.user] = (r, e)
        seen[e.user].append((e.item, e.ts))
    users = [u for u in last if u not in gone_users] if gone_users else list(last)
    return ByUser(last, seen, users)


def drop_evicted(recs: Lists, gone_users: Container[str], gone_items: Container[str]) -> Lists:
    """Lists ranked before an eviction, without the evicted users and items."""
    return {
        u: [(i, sc) for i, sc in lst if i not in gone_items]
        for u, lst in recs.items()
        if u not in gone_users
    }


def matrix_interval_ms(n_items: int, cfg: Config) -> float:
    """How often the item matrix is written: as often as readers re-read theirs."""
    return matrix_interval(cfg.trainer.matrix_every_ms, n_items * (cfg.model.dim + 1) * 4)


@dataclass(frozen=True)
class Assembled:
    batch: BatchWrite
    newest: dict[str, int]  # user -> record timestamp (ms) of their newest event in it
    matrix_written_at: float | None  # as given, or `now` when the batch has the matrix
    matrix_dirty: bool  # items changed since the matrix the readers have


def assemble(
    *,
    cfg: Config,
    model: WriteModel,
    fresh: Fresh,
    by: ByUser,
    ends: Mapping[str, int],
    stored: Mapping[str, int],
    version: int,
    catalogue: Catalogue,
    counts: Mapping[str, int],
    recs: Lists,
    recs_version: int | None,
    due: Container[str],
    evicted_users: Sequence[str],
    evicted_items: Sequence[str],
    matrix_written_at: float | None,
    matrix_dirty: bool,
    force_matrix: bool,
    now: float,
    wall_ns: int,
) -> Assembled:
    """The write of one batch.

    `fresh`: its events past the offsets Redis holds (`stored`), `by` of them; `ends`: the
    next offset of each partition it read; `recs`: lists the ranker finished since the last
    write (a user whose row is written gets theirs in the row); `due`: users whose lists are
    due after this batch; `counts`: events learned per user; `now` (monotonic seconds) and
    `matrix_written_at`, `matrix_dirty`: for the item-matrix decision; `wall_ns`: the
    matrix's version stamp.
    """
    tcfg = cfg.trainer
    ranked = list(recs)
    recs = dict(recs)  # the lists of users with a row go into the row
    users = by.users
    known, vecs, biases = model.user_vectors(users)
    if not (np.isfinite(vecs).all() and np.isfinite(biases).all()):
        raise RuntimeError("the model produced non-finite user vectors: a bug, not input")
    rows: list[UserRow] = []
    for j, u in enumerate(known):
        _, e = by.last[u]
        rows.append(
            UserRow(
                user=u,
                vec=vecs[j],
                bias=float(biases[j]),
                recs=recs.pop(u, None),
                seen=by.seen[u],
                # each event adds at most one item: fewer events than the bound, nothing
                # to trim (a ZREMRANGEBYRANK per user saved)
                trim=counts[u] > tcfg.seen_max,
                count=counts[u],
                features=e.user_features,
            )
        )
    touched_items = {e.item for _, e in fresh} | {i for kind, i in catalogue if kind == "item"}
    # The full matrix is the big write (n_items x dim floats): at most every matrix interval,
    # and whenever the catalogue changed. Item rows go out every batch.
    write_matrix = (
        force_matrix
        or bool(catalogue)
        or bool(evicted_items)
        or matrix_written_at is None
        or (now - matrix_written_at) * 1000 >= matrix_interval_ms(model.n_items, cfg)
    )
    if write_matrix:
        matrix_written_at = now
    matrix_dirty = not write_matrix and (matrix_dirty or bool(fresh) or bool(catalogue))
    item_ids, item_vecs, item_biases = model.item_rows(sorted(touched_items))
    items = [ItemRow(item, item_vecs[j], float(item_biases[j])) for j, item in enumerate(item_ids)]
    matrix = model.item_vectors() if write_matrix else None
    # A write without events (a deferred refresh, a matrix) is fenced on every stored
    # offset unchanged, so a deposed trainer cannot overwrite its successor's lists.
    fence = ends or stored
    batch = BatchWrite(
        expected_offsets={f: stored.get(f) for f in fence},
        new_offsets={f: max(fence[f], stored.get(f, 0)) for f in fence},
        version=version,
        users=rows,
        items=items,
        matrix=None if matrix is None else (matrix.ids, matrix.vectors, matrix.biases),
        popularity=popularity(model, fresh),
        user_feature_vectors=feature_vectors(model, users),
        user_features={u: f for (kind, u), f in catalogue.items() if kind == "user"},
        item_features={i: f for (kind, i), f in catalogue.items() if kind == "item"},
        matrix_version=wall_ns,
        model_meta={
            "dim": cfg.model.dim,
            "global_bias": float(model.global_bias),
            "pop_half_life_ms": cfg.model.popularity_half_life_s * 1000,
        },
        seen_max=tcfg.seen_max,
        recs=recs,
        recs_version=recs_version,
        # after the lists written here leave the set, the users still due go back in
        recs_due=[u for u in itertools.chain(users, ranked) if u in due],
        evicted_users=evicted_users,
        evicted_items=evicted_items,
        popularity_segments=model.popularity.segments() if evicted_items else (),
    )
    newest: dict[str, int] = {}
    for r, e in fresh:
        newest[e.user] = r.timestamp
    return Assembled(batch, newest, matrix_written_at, matrix_dirty)


def popularity(model: WriteModel, fresh: Fresh) -> dict[str | None, list[tuple[str, float]]]:
    """Absolute, time-invariant log scores of the items this batch touched, globally and
    per segment of the users who touched them (see DecayedPopularity.log_scores)."""
    pop = model.popularity
    by_segment: dict[str | None, set[str]] = defaultdict(set)
    segments: dict[str, tuple[str, ...]] = {}
    for _, e in fresh:
        by_segment[None].add(e.item)
        user_segs = segments.get(e.user)
        if user_segs is None:
            user_segs = segments[e.user] = model.user_segments(e.user)
        for seg in user_segs:
            by_segment[seg].add(e.item)
    out: dict[str | None, list[tuple[str, float]]] = {}
    for segment, items in by_segment.items():
        scores = pop.log_scores(items, segment)
        if scores:
            out[segment] = sorted(scores.items())
    return out


def feature_vectors(model: WriteModel, users: list[str]) -> dict[str, np.ndarray]:
    """The embeddings of the feature tokens of `users` ("country=DE" -> vector), finite ones."""
    tokens = {t for u in users for t in model.user_tokens(u)}
    if not tokens:
        return {}
    vecs: dict[str, np.ndarray] = model.user_feature_vectors(sorted(tokens))
    return {t: v for t, v in vecs.items() if np.isfinite(v).all()}
