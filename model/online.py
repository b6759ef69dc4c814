"""The online recommender: one compiled TensorFlow step per mini-batch of events.

score(u, i) = b + b_u + b_i + <p_u, q_i>, with p_u = e(user id) + sum of e(user feature) and
q_i = e(item id) + sum of e(item feature) (LightFM). Python does what must be per event (id and
feature lookups, a few list comprehensions) and prepares index arrays with numpy; TensorFlow
does the arithmetic in one traced function whose inputs have unknown sizes, so it is traced once
per model, whatever the batch size and however far the tables grow (no padding needed).
`OnlineRecommender` owns the state and uses modules of one job each:

- `side`: one side's ids, features, tables and counts (`Side`, one for users, one for items);
- `serving`: served vectors, top-k lists, cold start (model, features, popularity).

The contract the trainer consumer relies on is `base.StreamModel`.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Collection, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from streamrec.model import checkpoint, losses, serving, towers
from streamrec.model.base import CheckpointMismatch, EventLike, Features, ItemMatrix, LearnResult
from streamrec.model.config import ModelConfig
from streamrec.model.ids import IdMap, decode_strings, encode_strings, feature_tokens, grow_rows
from streamrec.model.popularity import DecayedPopularity
from streamrec.model.sampling import NegativeSampler
from streamrec.model.serving import SOURCE_FEATURES, SOURCE_MODEL, SOURCE_POPULARITY
from streamrec.model.side import NONE, PAD_MAX_WIDTH, Side
from streamrec.model.tables import GrowingTable

__all__ = [
    "RESTORE_FIXED",
    "SOURCE_FEATURES",
    "SOURCE_MODEL",
    "SOURCE_POPULARITY",
    "CheckpointMismatch",
    "OnlineRecommender",
]

# The names these had here before the split, for the unit tests that import them.
_Side = Side
_PAD_MAX_WIDTH = PAD_MAX_WIDTH
_add_rows = serving.add_rows

log = logging.getLogger(__name__)

_ADAGRAD_EPS = 1e-7  # Keras's Adagrad epsilon
_N_INTS = 17  # index arrays packed into one tensor per step call (see `learn`)
_N_FLOATS = 11
_I32 = tf.TensorSpec([None], tf.int32)
_F32 = tf.TensorSpec([None], tf.float32)

# Settings a checkpoint's tables depend on: the shape of every table, which optimiser state
# exists, what a hashed feature row means, and the time unit of the stored popularity.
RESTORE_FIXED = ("dim", "optimizer", "feature_hash_buckets", "popularity_half_life_s")


class _Attribute(Sequence[Any]):
    """A lazy column of one attribute of the events: only the rows read cost anything."""

    def __init__(self, events: Sequence[EventLike], name: str) -> None:
        self._events = events
        self._name = name

    def __len__(self) -> int:
        return len(self._events)

    def __getitem__(self, j: Any) -> Any:
        return getattr(self._events[j], self._name)


def _accidental_hits(r_i: np.ndarray, neg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(event, column) of every shared negative that is the event's own positive item.

    One sort and two binary searches, O((B + N) log N), instead of comparing all B x N pairs
    in the step (a pass over 4M pairs at B = 4096, N = 1024). Negatives may repeat.
    """
    if not r_i.shape[0] or not neg.shape[0]:
        return NONE, NONE
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


class _TypeCodes(dict[str, int]):
    """Event type -> code; unknown types are 0 and, unlike a defaultdict's, not inserted."""

    def __missing__(self, key: str) -> int:
        return 0


class OnlineRecommender:
    """Streaming matrix factorisation with side features; see the module docstring."""

    def __init__(self, config: ModelConfig | None = None) -> None:
        self.config = config = config or ModelConfig()
        self.rng = np.random.default_rng(config.seed)
        self.users = Side("user", config)
        self.items = Side("item", config)
        acc = config.adagrad_initial_accumulator if config.optimizer == "adagrad" else None
        self.gbias = GrowingTable("global_bias", 0, 1, acc)
        self.popularity = DecayedPopularity.from_config(config, items=self.items.ids)
        self.sampler = NegativeSampler(config.negative_buffer_size, config.negative_popularity_mix)
        self.version = 0
        self.skipped_nonfinite = 0  # batches whose update was skipped (non-finite loss/grads)
        self._want_touched = True
        self._mutations = 0  # bumps on every state change; keys the item-matrix cache
        self._gbias: float | None = None  # cached global bias; None: read it again
        self._clock_ms = 0  # newest event time learned: the eviction clock
        self._evicted_at_ms = 0  # clock of the last eviction pass
        self._item_cache: tuple[int, np.ndarray, np.ndarray] | None = None
        self._steps: dict[tuple[bool, bool, bool, bool], Any] = {}
        # Code 0 is every type the config does not name (weight 0: ignored).
        names = list(config.event_weights)
        self._type_codes = _TypeCodes({t: j + 1 for j, t in enumerate(names)})
        self._type_weights = np.asarray([0.0, *config.event_weights.values()], np.float64)
        self._rating_code = names.index("rating") + 1 if "rating" in names else -1
        self._sync()

    # --- properties --------------------------------------------------------------------------

    @property
    def dim(self) -> int:
        return self.config.dim

    @property
    def global_bias(self) -> float:
        # Read from TF only after a step that moved it (explicit feedback): the trainer asks
        # every batch, and an eager read costs about half a millisecond.
        if self._gbias is None:
            self._gbias = float(self.gbias.var.numpy()[0])
        return self._gbias

    @property
    def n_users(self) -> int:
        return len(self.users.ids.ids)

    @property
    def n_items(self) -> int:
        return len(self.items.ids.ids)

    @property
    def tracing_count(self) -> int:
        """Traces of the training step: one per batch-content variant used, never per batch."""
        return sum(int(f.experimental_get_tracing_count()) for f in self._steps.values())

    # --- catalogue ---------------------------------------------------------------------------

    def set_user_features(self, user: str, features: Features | None) -> None:
        """Remember a user's side features (replacing earlier ones); registers the user."""
        row = self.users.ids.add(user)
        self.users.set_tokens(row, feature_tokens(features))
        self._mutations += 1  # rows are initialised lazily, by the next call that reads them

    def set_item_features(self, item: str, features: Features | None) -> None:
        """Remember an item's side features; a new item becomes recommendable from them."""
        row = self.items.ids.add(item)
        self.items.set_tokens(row, feature_tokens(features))
        self._mutations += 1

    def _sync(self) -> None:
        """Initialise the rows of ids and tokens registered since the last call.

        Done in batches, at the start of every call that reads tables, instead of one eager
        TF op per catalogue record; the draws happen in the same order for the same calls.
        """
        scale = self.config.init_scale
        changed = self.users.sync(self.rng, scale, self._clock_ms)
        if self.items.sync(self.rng, scale, self._clock_ms) or changed:
            self._mutations += 1

    # --- learning ----------------------------------------------------------------------------

    def learn(self, events: Sequence[EventLike], *, touched: bool = True) -> LearnResult:
        """One mini-batch: register ids and features, then `steps_per_batch` compiled steps.

        Positive event weights are implicit positives for the ranking loss (BPR or sampled
        softmax against the batch's shared negatives); negative weights (dislike) are explicit
        negatives for the pointwise loss. A rating is a positive at or above
        rating_positive_min, and every rating with a value trains the pointwise loss towards
        a soft label (0 at rating_negative_max and below, 1 at rating_positive_min and above).
        Types the config does not name are ignored. The whole update is skipped when the loss
        or any gradient is not finite (`skipped_nonfinite`); with steps_per_batch > 1 each step
        is guarded on its own and the steps before a bad one stay applied.

        `touched=False` leaves LearnResult's id lists empty, for callers that track the ids
        themselves (about a tenth of the Python time per event).
        """
        users = [e.user for e in events]
        items = [e.item for e in events]
        types = [e.type for e in events]
        ts = [e.ts for e in events]
        ufs = [e.user_features for e in events]
        ifs = [e.item_features for e in events]
        return self.learn_columns(
            users,
            items,
            types,
            ts,
            values=_Attribute(events, "value"),
            user_features=ufs,
            item_features=ifs,
            touched=touched,
        )

    def learn_columns(
        self,
        users: Sequence[str],
        items: Sequence[str],
        types: Sequence[str],
        ts: Sequence[int] | np.ndarray,
        *,
        values: Sequence[float | None] | None = None,
        user_features: Sequence[Features | None] | None = None,
        item_features: Sequence[Features | None] | None = None,
        touched: bool = True,
    ) -> LearnResult:
        """`learn` for a batch given column by column: the same update, bit for bit.

        For callers that parse records straight into columns (no event object per record);
        `learn` itself extracts its columns and comes here. `values` is read only at ratings
        (None: no rating has a value); `ts` (ms) only at positives, for popularity.
        """
        self.version += 1
        self._want_touched = touched
        n = len(users)
        if not (len(items) == len(types) == len(ts) == n):
            raise ValueError("learn_columns: users, items, types and ts differ in length")
        if n == 0:
            return LearnResult(0, math.nan, False, [], [], self.version)
        cfg = self.config
        users = users if isinstance(users, list) else list(users)
        items = items if isinstance(items, list) else list(items)
        u_rows = self.users.ids.rows(users)
        i_rows = self.items.ids.rows(items)
        self.users.remember(u_rows, user_features)
        self.items.remember(i_rows, item_features)
        self._sync()

        # Event type -> small code -> weight. A batch of one type (the usual case) needs no
        # per-event lookup at all; otherwise one C-level pass over the types.
        types = types if isinstance(types, list) else list(types)
        first = types[0]
        if types.count(first) == n:
            codes = np.full(n, self._type_codes[first], dtype=np.int32)
        else:
            codes = np.fromiter(map(self._type_codes.__getitem__, types), np.int32, n)
        w = self._type_weights[codes]
        w_rank = np.where(w > 0, w, 0.0)
        w_pt = np.where(w < 0, -w, 0.0)
        y_pt = np.zeros(n, dtype=np.float64)
        rating_w = cfg.event_weights.get("rating", 0.0)
        ratings = np.flatnonzero(codes == self._rating_code) if rating_w > 0 else ()
        if len(ratings):
            idx = np.asarray(ratings)
            raw = [None if values is None else values[j] for j in idx.tolist()]
            given = np.asarray([v is not None for v in raw])
            vals = np.asarray([math.nan if v is None else v for v in raw], np.float64)
            lo, hi = cfg.rating_negative_max, cfg.rating_positive_min
            w_rank[idx] = np.where(given & (vals >= hi), rating_w, 0.0)
            w_pt[idx] = np.where(given, rating_w, 0.0)
            # A soft label between the two thresholds; a NaN value stays NaN and the batch is
            # skipped as non-finite rather than silently learning from garbage.
            with np.errstate(invalid="ignore"):
                y_pt[idx] = np.where(given, np.clip((vals - lo) / (hi - lo), 0.0, 1.0), 0.0)

        r = np.flatnonzero(w_rank > 0)
        q = np.flatnonzero(w_pt > 0)
        nr, nq = r.shape[0], q.shape[0]
        if nr == 0 and nq == 0:
            return self._result(n, math.nan, False, users, items, None)
        if nr:
            neg, neg_logq = self.sampler.sample(self.rng, cfg.negatives, self.n_items)
        else:
            neg, neg_logq = np.zeros(0, np.int32), np.zeros(0, np.float32)
        u_set, u_inv = np.unique(np.concatenate([u_rows[r], u_rows[q]]), return_inverse=True)
        i_set, i_inv = np.unique(np.concatenate([i_rows[r], i_rows[q], neg]), return_inverse=True)
        r_i = i_inv[:nr]
        cand: np.ndarray
        r_cand: np.ndarray
        cand_logq: np.ndarray
        if cfg.loss == "softmax" and nr:
            cand, r_cand, cand_count = np.unique(r_i, return_inverse=True, return_counts=True)
            cand_logq = np.log(cand_count)
        else:
            cand = r_cand = cand_logq = np.zeros(0)
        neg_cols = i_inv[nr + nq :]
        hits = _accidental_hits(r_i, neg_cols) if cfg.loss == "bpr" else (NONE, NONE)
        uf_set, uf_e, uf_f = self.users.batch_pairs(u_set)
        if_set, if_e, if_f = self.items.batch_pairs(i_set)
        ints = [
            u_set, uf_set, uf_e, uf_f, i_set, if_set, if_e, if_f,
            u_inv[:nr], r_i, neg_cols, cand, r_cand, u_inv[nr:], i_inv[nr : nr + nq],
            *hits,
        ]  # fmt: skip
        floats = [w_rank[r], neg_logq, cand_logq, w_pt[q], y_pt[q], np.asarray([nr + nq])]
        floats += self._row_scales(nr, nq, u_inv, i_inv, u_set, i_set, uf_set, uf_e, uf_f)
        floats += self._row_scales_items(if_set, if_e, if_f)
        step = self._step((nr > 0, nq > 0, uf_set.shape[0] > 0, if_set.shape[0] > 0))
        packed = (
            tf.constant(np.concatenate(ints).astype(np.int32)),
            tf.constant(np.asarray([a.shape[0] for a in ints + floats], dtype=np.int32)),
            tf.constant(np.concatenate(floats).astype(np.float32)),
        )
        total = 0.0
        ok = True
        for _ in range(cfg.steps_per_batch):
            loss_t, ok_t = step(*packed)
            if not bool(ok_t):
                ok = False
                break
            total = float(loss_t)
        self._mutations += 1
        if nq:
            self._gbias = None
        if not ok:
            self.skipped_nonfinite += 1
            log.warning(
                "learn: non-finite loss or gradient in batch %d (%d events); update skipped "
                "(%d skipped so far)",
                self.version,
                n,
                self.skipped_nonfinite,
            )
            return self._result(n, math.nan, True, users, items, None)

        active = np.concatenate([r, q])
        self.users.add_counts(u_rows[active])
        self.items.add_counts(i_rows[active])
        if uf_set.shape[0]:
            self.users.ftrained[uf_set] = True
        if if_set.shape[0]:
            # Features of sampled negatives were only pushed down; they count as trained only
            # through an item that appeared in an event.
            f_set, _, _ = self.items.batch_pairs(np.unique(i_rows[active]))
            self.items.ftrained[f_set] = True
        self._observe_popularity(ts, r, w_rank, u_rows, i_rows)
        self.sampler.observe(i_rows[r])
        result = self._result(n, total / (nr + nq), False, users, items, neg)
        if self.config.evict_after_s:
            ts_a = np.asarray(ts, dtype=np.int64)[active]
            self._clock_ms = max(self._clock_ms, int(ts_a.max()))
            self.users.touch(u_rows[active], ts_a)
            self.items.touch(i_rows[active], ts_a)
            evicted_users, evicted_items = self._maybe_evict()
            if evicted_users or evicted_items:
                result = dataclasses.replace(
                    result, evicted_users=evicted_users, evicted_items=evicted_items
                )
        return result

    def _maybe_evict(self) -> tuple[list[str], list[str]]:
        """Forget ids idle for evict_after_s, in a pass every eighth of that (event time):
        an id is forgotten between 1 and 1.125 times evict_after_s after its last event."""
        after_ms = int(self.config.evict_after_s * 1000)
        if self._clock_ms - self._evicted_at_ms < max(1, after_ms // 8):
            return [], []
        self._evicted_at_ms = self._clock_ms
        cutoff = self._clock_ms - after_ms
        out: list[list[str]] = []
        for side in (self.users, self.items):
            assert side.last_ts is not None
            idle = side.last_ts[: side.n_init] < cutoff
            if not idle.any():
                out.append([])
                continue
            remap, evicted = side.keep(np.flatnonzero(~idle))
            if side is self.items:
                self.popularity.keep_rows(remap, side.ids)
                self.sampler.keep_rows(remap)
            out.append(evicted)
        if out[0] or out[1]:
            self._mutations += 1
            log.info(
                "evicted %d users and %d items idle for %.0f s",
                len(out[0]),
                len(out[1]),
                self.config.evict_after_s,
            )
        return out[0], out[1]

    def _row_scales(
        self,
        nr: int,
        nq: int,
        u_inv: np.ndarray,
        i_inv: np.ndarray,
        u_set: np.ndarray,
        i_set: np.ndarray,
        uf_set: np.ndarray,
        uf_e: np.ndarray,
        uf_f: np.ndarray,
    ) -> list[np.ndarray]:
        """Per-row gradient scales occurrences^-row_scaling (see ModelConfig.row_scaling),
        times user_gradient_scale for user id rows."""
        alpha = self.config.row_scaling
        n_ev = nr + nq
        u_occ = np.bincount(u_inv, minlength=u_set.shape[0]).astype(np.float64)
        i_occ = np.bincount(i_inv[:n_ev], minlength=i_set.shape[0]).astype(np.float64)
        n_neg = i_inv.shape[0] - n_ev
        if n_neg:
            # Every ranking event spreads 1/N over the N shared negatives.
            i_occ += np.bincount(i_inv[n_ev:], minlength=i_set.shape[0]) * (nr / n_neg)
        uf_occ = np.bincount(uf_f, weights=u_occ[uf_e], minlength=uf_set.shape[0])
        self._i_occ = i_occ
        u_scale = np.maximum(u_occ, 1.0) ** -alpha
        if self.config.user_gradient_scale != 1.0:
            u_scale = u_scale * self.config.user_gradient_scale
        return [
            u_scale,
            np.maximum(i_occ, 1.0) ** -alpha,
            np.maximum(uf_occ, 1.0) ** -alpha,
            np.asarray([max(nq, 1) ** -alpha]),
        ]

    def _row_scales_items(
        self, if_set: np.ndarray, if_e: np.ndarray, if_f: np.ndarray
    ) -> list[np.ndarray]:
        occ = np.bincount(if_f, weights=self._i_occ[if_e], minlength=if_set.shape[0])
        return [np.maximum(occ, 1.0) ** -self.config.row_scaling]

    def _observe_popularity(
        self,
        ts: Sequence[int] | np.ndarray,
        r: np.ndarray,
        w_rank: np.ndarray,
        u_rows: np.ndarray,
        i_rows: np.ndarray,
    ) -> None:
        if r.shape[0] == 0:
            return
        rl = r.tolist()
        if isinstance(ts, np.ndarray):
            ts_r = ts[r].astype(np.int64)
        elif r.shape[0] == len(ts):  # every event is a positive: no gather needed
            ts_r = np.asarray(ts, dtype=np.int64)
        else:
            ts_r = np.asarray([ts[j] for j in rl], dtype=np.int64)
        segments = None
        if self.users.tokens and self.config.popularity_segments != "":
            get = self.users.tokens.get
            seg_of = self.popularity.segments_of
            segments = [seg_of(get(int(u_rows[j]), ())) for j in rl]
        self.popularity.add_rows(i_rows[r], ts_r, w_rank[r], segments)

    def _result(
        self,
        n: int,
        loss: float,
        skipped: bool,
        users: list[str],
        items: list[str],
        neg: np.ndarray | None,
    ) -> LearnResult:
        """Touched ids in first-seen order; touched items include the sampled negatives.

        Built from the batch's own strings (hot in cache) rather than by indexing the id
        lists with rows: that costs a cache miss per id, a millisecond per 4096 events.
        """
        if not self._want_touched:
            return LearnResult(n, loss, skipped, [], [], self.version)
        touched_items = dict.fromkeys(items)
        if neg is not None and neg.shape[0]:
            iid = self.items.ids.ids
            touched_items.update(dict.fromkeys(iid[r] for r in neg.tolist()))
        return LearnResult(
            n, loss, skipped, list(dict.fromkeys(users)), list(touched_items), self.version
        )

    def _step(self, key: tuple[bool, bool, bool, bool]) -> Any:
        step = self._steps.get(key)
        if step is None:
            t0 = time.perf_counter()
            step = self._steps[key] = self._build_step(*key)
            # Run once on an empty batch: the first call of a graph pays TF's graph
            # optimisation (as long again as the trace), which belongs here, not in a batch.
            ints = tf.zeros([0], tf.int32)
            sizes = np.zeros(_N_INTS + _N_FLOATS, np.int32)
            sizes[_N_INTS + 5] = sizes[_N_INTS + 9] = 1  # n_active and the global-bias scale
            # The loss of no events is 0 and every gradient is 0 (the global bias has no
            # weight decay), so an Adagrad or SGD update leaves every value as it was.
            step(ints, tf.constant(sizes), tf.constant([0.0, 1.0], tf.float32))
            log.debug("learn step %s compiled in %.0f ms", key, (time.perf_counter() - t0) * 1e3)
        return step

    def warm_up(self) -> float:
        """Compile, before the first batch, every step variant a stream is likely to need.

        A variant is compiled when a batch first needs it, which costs that batch 0.3 to
        0.5 s: the trainer's freshness tail at 5k events/s was made of these. Warmed: ranking
        events with and without user and item features, and with explicit feedback when the
        config weighs any (ratings, dislikes). Returns the seconds spent.
        """
        t0 = time.perf_counter()
        weights = self.config.event_weights
        explicit = min(weights.values()) < 0 or weights.get("rating", 0.0) > 0
        for has_pt in (False, True) if explicit else (False,):
            for has_uf in (False, True):
                for has_if in (False, True):
                    self._step((True, has_pt, has_uf, has_if))
        return time.perf_counter() - t0

    def _build_step(self, has_rank: bool, has_pt: bool, has_uf: bool, has_if: bool) -> Any:
        """The compiled step for one combination of batch contents.

        Parts a batch does not have (features, explicit feedback) are left out of the graph
        rather than fed empty tensors: every op costs a fixed few microseconds, which matters at
        a few milliseconds per batch. At most 16 variants exist, each traced once.
        """
        cfg = self.config
        users, items, gbias = self.users, self.items, self.gbias
        lr = cfg.learning_rate
        l2 = cfg.l2
        clip = cfg.clip_norm
        adagrad = cfg.optimizer == "adagrad"
        softmax = cfg.loss == "softmax"
        scaled = cfg.row_scaling > 0 or cfg.user_gradient_scale != 1.0

        def apply(table: GrowingTable, idx: tf.Tensor, g: tf.Tensor) -> Any:
            if adagrad:
                assert table.acc is not None
                table.acc.scatter_add(tf.IndexedSlices(g * g, idx))
                a = tf.gather(table.acc, idx)
                step = lr * g / (tf.sqrt(a) + _ADAGRAD_EPS)
                return table.var.scatter_sub(tf.IndexedSlices(step, idx))
            return table.var.scatter_sub(tf.IndexedSlices(lr * g, idx))

        signature = [_I32, _I32, _F32]

        # autograph off: the step is plain graph code (tf.cond above), and tracing without the
        # source transformation is several times faster, which every new variant pays once.
        @tf.function(input_signature=signature, autograph=False)
        def step(ints: tf.Tensor, sizes: tf.Tensor, floats: tf.Tensor) -> tuple[Any, Any]:
            (
                u_set, uf_set, uf_e, uf_f, i_set, if_set, if_e, if_f,
                r_u, r_i, neg, cand, r_cand, p_u, p_i, hit_b, hit_j,
            ) = tf.split(ints, sizes[:_N_INTS], num=_N_INTS)  # fmt: skip
            (
                r_w, neg_logq, cand_logq, p_w, p_y, n_active,
                s_u, s_i, s_uf, s_b0, s_if,
            ) = tf.split(floats, sizes[_N_INTS:], num=_N_FLOATS)  # fmt: skip
            row_scale = {"eu": s_u, "bu": s_u, "ei": s_i, "bi": s_i, "fu": s_uf, "fi": s_if}
            row_scale["b0"] = s_b0
            zero = tf.zeros([1], tf.int32)
            slots: dict[str, tuple[GrowingTable, tf.Tensor]] = {
                "eu": (users.emb, u_set),
                "ei": (items.emb, i_set),
                "bi": (items.bias, i_set),
            }
            if has_uf:
                slots["fu"] = (users.femb, uf_set)
            if has_if:
                slots["fi"] = (items.femb, if_set)
            if has_pt:
                slots["bu"] = (users.bias, u_set)
                slots["b0"] = (gbias, zero)
            names = list(slots)
            params = [tf.gather(table.var, idx) for table, idx in slots.values()]
            with tf.GradientTape() as tape:
                tape.watch(params)
                x = dict(zip(names, params, strict=True))
                p = towers.embed(x["eu"], x["fu"], uf_e, uf_f) if has_uf else x["eu"]
                qv = towers.embed(x["ei"], x["fi"], if_e, if_f) if has_if else x["ei"]
                bi = x["bi"]
                loss = tf.constant(0.0)
                if has_rank:
                    pr = tf.gather(p, r_u)
                    neg_q = tf.gather(qv, neg)
                    neg_b = tf.gather(bi, neg)
                    if softmax:
                        not_hit = tf.cast(neg[None, :] != r_i[:, None], tf.float32)
                        negs = tf.matmul(pr, neg_q, transpose_b=True) + neg_b[None, :]
                        cq = tf.gather(qv, cand)
                        in_batch = tf.matmul(pr, cq, transpose_b=True) + tf.gather(bi, cand)[None]
                        mask = tf.concat([tf.ones_like(in_batch), not_hit], axis=1)
                        loss += losses.sampled_softmax(
                            tf.concat([in_batch, negs], axis=1),
                            r_cand,
                            tf.concat([cand_logq, neg_logq], axis=0),
                            r_w,
                            mask,
                        )
                    else:
                        pos = tf.reduce_sum(pr * tf.gather(qv, r_i), axis=1) + tf.gather(bi, r_i)
                        loss += losses.bpr_shared(pr, pos, neg_q, neg_b, r_w, hit_b, hit_j)
                if has_pt:
                    scores = (
                        x["b0"][0]
                        + tf.gather(x["bu"], p_u)
                        + tf.gather(bi, p_i)
                        + tf.reduce_sum(tf.gather(p, p_u) * tf.gather(qv, p_i), axis=1)
                    )
                    loss += losses.pointwise(scores, p_y, p_w)
            grads = tape.gradient(loss, params, unconnected_gradients=tf.UnconnectedGradients.ZERO)
            # Gradients of gathers over the batch's own (small) unique-row sets may come back
            # as IndexedSlices; densify those, never the tables'.
            grads = [tf.convert_to_tensor(g) for g in grads]
            ok = tf.math.is_finite(loss)
            for g in grads:
                ok = tf.logical_and(ok, tf.reduce_all(tf.math.is_finite(g)))
            if scaled:
                grads = [
                    g * (row_scale[n][:, None] if g.shape.rank == 2 else row_scale[n])
                    for n, g in zip(names, grads, strict=True)
                ]
            if clip > 0:
                norm = tf.linalg.global_norm(grads)
                limit = clip * tf.sqrt(tf.maximum(n_active[0], 1.0))
                scale = tf.minimum(1.0, limit / tf.maximum(norm, 1e-30))
                grads = [g * scale for g in grads]
            if l2 > 0:
                # Lazy weight decay: only rows in the batch, as a sparse model must; the
                # global bias is not decayed.
                grads = [
                    g if name == "b0" else g + l2 * v
                    for name, g, v in zip(names, grads, params, strict=True)
                ]

            def update() -> tf.Tensor:
                ops = [
                    apply(table, idx, g)
                    for (table, idx), g in zip(slots.values(), grads, strict=True)
                ]
                with tf.control_dependencies(ops):
                    return tf.constant(True)

            # Nothing at all is applied unless the loss and every gradient are finite.
            applied = tf.cond(ok, update, lambda: tf.constant(False))
            return loss, applied

        # Every variant is traced exactly once (fixed signature), but all share this code
        # object, so TF's "frequent retracing" heuristic would warn about a non-problem.
        step._omit_frequent_tracing_warning = True
        return step

    # --- serving (rules in `serving`) --------------------------------------------------------

    def user_vector(self, user: str) -> tuple[np.ndarray, float] | None:
        """The served user vector p_u and bias b_u; None for an unknown user."""
        self._sync()
        row = self.users.ids.row(user)
        if row < 0:
            return None
        vec = serving.served(self.users, np.asarray([row]))[0]
        bias = float(self.users.bias.get_rows(np.asarray([row], np.int32))[0])
        return vec.astype(np.float32), bias

    def user_vectors(self, users: Sequence[str]) -> tuple[list[str], np.ndarray, np.ndarray]:
        """(known users, vectors float32 [n, dim], biases float32 [n]) in one gather.

        What the trainer writes after every batch: one `user_vector` call per user costs a TF
        round trip each (about 1 ms), this one costs one for the whole batch.
        """
        self._sync()
        return serving.served_rows(self.users, users, self.dim)

    def item_rows(self, items: Sequence[str]) -> tuple[list[str], np.ndarray, np.ndarray]:
        """`user_vectors` for items: the rows a batch touched, without rebuilding the matrix
        (at 20k items the full matrix cost the trainer 7 % of its time at 2k events/s)."""
        self._sync()
        return serving.served_rows(self.items, items, self.dim)

    def user_segments(self, user: str) -> tuple[str, ...]:
        """The popularity segments ("country=DE") a user belongs to, from their features."""
        row = self.users.ids.row(user)
        if row < 0:
            return ()
        return self.popularity.segments_of(self.users.tokens.get(row, ()))

    def user_tokens(self, user: str) -> tuple[str, ...]:
        """The user's current feature tokens ("name=value")."""
        row = self.users.ids.row(user)
        return () if row < 0 else self.users.tokens.get(row, ())

    def user_feature_vectors(self, tokens: Iterable[str] | None = None) -> dict[str, np.ndarray]:
        """Trained user-feature token embeddings ("country=DE" -> float32 [dim]).

        What a reader without TensorFlow sums to serve a new user from their features, the
        same vector as the "features" path here. Tokens never seen in a learned event are left
        out (their rows are random initialisation). `tokens` None: every trained token.
        """
        self._sync()
        return serving.feature_vectors(self.users, tokens)

    def item_vectors(self) -> ItemMatrix:
        vecs, biases = self._item_matrix()
        # The cached arrays themselves, read-only: no 25 MB copy per call at 100k items.
        return ItemMatrix(list(self.items.ids.ids), vecs, biases)

    def _item_matrix(self) -> tuple[np.ndarray, np.ndarray]:
        """Served vectors and biases of every item, rebuilt only after the model changed."""
        self._sync()
        cache = self._item_cache
        if cache is None or cache[0] != self._mutations:
            vecs, biases = serving.matrix(self.items)
            vecs.flags.writeable = False
            biases.flags.writeable = False
            cache = self._item_cache = (self._mutations, vecs, biases)
        return cache[1], cache[2]

    def recommend_with_source(
        self,
        user: str,
        k: int = 10,
        exclude: Collection[str] = (),
        user_features: Features | None = None,
    ) -> tuple[list[tuple[str, float]], str]:
        """Top-k items and which path served them: "model", "features" or "popularity".

        A user with history is scored by the model; otherwise by their side features (passed
        in, else remembered), if any of them were ever trained; otherwise by decayed
        popularity of the user's best-populated feature segment, then global popularity.
        Scores are comparable within one list only. `user_features` is used for this call and
        not remembered.
        """
        self._sync()
        return serving.recommend_with_source(
            self.users,
            self.items,
            self.popularity,
            self._item_matrix,
            user,
            k,
            exclude,
            user_features,
        )

    def recommend(
        self,
        user: str,
        k: int = 10,
        exclude: Collection[str] = (),
        user_features: Features | None = None,
    ) -> list[tuple[str, float]]:
        return self.recommend_with_source(user, k, exclude, user_features)[0]

    def recommend_many(
        self,
        users: Sequence[str],
        k: int = 10,
        exclude: Mapping[str, Collection[str]] | None = None,
    ) -> dict[str, list[tuple[str, float]]]:
        """Batch scoring: one matrix product per block of known users."""
        self._sync()
        return serving.recommend_many(
            self.users, self.items, self.popularity, self._item_matrix, users, k, exclude or {}
        )

    def exclude_rows(self, exclude: Collection[str]) -> np.ndarray:
        """Item rows (in `item_vectors()` order) of the given ids that the model knows."""
        return serving.exclude_rows(self.items.ids, exclude)

    # --- persistence -------------------------------------------------------------------------

    def save(self, path: str | Path, metadata: Mapping[str, Any] | None = None) -> None:
        """Everything needed to continue training bit for bit, written atomically.

        `metadata` must be JSON-serialisable (the consumer stores Kafka offsets there).
        """
        self._sync()
        arrays: dict[str, np.ndarray] = {}
        capacities: dict[str, int] = {}
        for side in (self.users, self.items):
            s = side.name
            n, f = side.n_init, side.f_init
            for table, rows in ((side.emb, n), (side.bias, n), (side.femb, f)):
                arrays[table.name] = table.head(rows)
                acc = table.head_acc(rows)
                if acc is not None:
                    arrays[f"{table.name}_acc"] = acc
                capacities[table.name] = table.capacity
            arrays[f"{s}_ids_blob"], arrays[f"{s}_ids_off"] = encode_strings(side.ids.ids)
            blob, off = encode_strings(side.features.tokens.ids)
            arrays[f"{s}_tokens_blob"], arrays[f"{s}_tokens_off"] = blob, off
            token_row = side.features.tokens.row
            ent = np.fromiter(side.tokens.keys(), np.int64, len(side.tokens))
            lens = np.fromiter((len(t) for t in side.tokens.values()), np.int64, len(side.tokens))
            indptr = np.zeros(len(side.tokens) + 1, dtype=np.int64)
            np.cumsum(lens, out=indptr[1:])
            toks = [token_row(t) for ts in side.tokens.values() for t in ts]
            arrays[f"{s}_feat_entities"] = ent
            arrays[f"{s}_feat_indptr"] = indptr
            arrays[f"{s}_feat_tokens"] = np.asarray(toks, dtype=np.int64)
            arrays[f"{s}_count"] = side.count[:n].copy()
            arrays[f"{s}_ftrained"] = side.ftrained[:f].copy()
            if side.last_ts is not None:
                arrays[f"{s}_last_ts"] = side.last_ts[:n].copy()
        arrays["global_bias"] = self.gbias.head(1)
        gacc = self.gbias.head_acc(1)
        if gacc is not None:
            arrays["global_bias_acc"] = gacc
        pop_arrays, pop_info = self.popularity.state()
        arrays.update(pop_arrays)
        neg_arrays, neg_info = self.sampler.state()
        arrays.update(neg_arrays)
        info = {
            "config": dataclasses.asdict(self.config),
            "version": self.version,
            "skipped_nonfinite": self.skipped_nonfinite,
            "rng": self.rng.bit_generator.state,
            "capacities": capacities,
            "popularity": pop_info,
            "sampler": neg_info,
            "evict": {"clock_ms": self._clock_ms, "evicted_at_ms": self._evicted_at_ms},
            "metadata": dict(metadata or {}),
        }
        checkpoint.write(path, arrays, info)

    @classmethod
    def restore(
        cls, path: str | Path, config: ModelConfig | None = None
    ) -> tuple[OnlineRecommender, dict[str, Any]]:
        """The model saved at `path` and the caller's metadata saved with it.

        Without `config` it continues with the settings it was saved with (bit for bit). With
        one (a trainer's current settings), those settings apply from here on, except the
        ones that shape what was learned (RESTORE_FIXED): a difference there raises
        CheckpointMismatch naming them, rather than silently keep the saved ones.
        """
        arrays, info = checkpoint.read(path)
        saved = dict(info["config"])
        # Checkpoints from before user_gradient_scale existed were trained without it (1.0):
        # continue them as they were trained, not with today's default.
        saved.setdefault("user_gradient_scale", 1.0)
        saved_config = ModelConfig(**saved)
        if config is not None:
            fixed = [
                f"{name}: saved {getattr(saved_config, name)!r}, "
                f"configured {getattr(config, name)!r}"
                for name in RESTORE_FIXED
                if getattr(saved_config, name) != getattr(config, name)
            ]
            if fixed:
                raise CheckpointMismatch(
                    f"checkpoint {Path(path).name} cannot continue with these settings "
                    f"({'; '.join(fixed)}): set them back, or start from an empty checkpoint "
                    "folder (a new model)"
                )
            changed = {
                f.name: (getattr(saved_config, f.name), getattr(config, f.name))
                for f in dataclasses.fields(ModelConfig)
                if getattr(saved_config, f.name) != getattr(config, f.name)
            }
            if changed:
                log.info(
                    "checkpoint %s continues with changed settings: %s",
                    Path(path).name,
                    ", ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in changed.items()),
                )
        config = saved_config if config is None else config
        # Build without drawing hashed-feature rows twice: a fresh model draws them from the
        # seed, then everything, RNG included, is overwritten by the saved state.
        model = cls(config)
        for side in (model.users, model.items):
            s = side.name
            side.ids = IdMap(decode_strings(arrays[f"{s}_ids_blob"], arrays[f"{s}_ids_off"]))
            side.features.tokens = IdMap(
                decode_strings(arrays[f"{s}_tokens_blob"], arrays[f"{s}_tokens_off"])
            )
            names = side.features.tokens.ids
            indptr = arrays[f"{s}_feat_indptr"].tolist()
            toks = arrays[f"{s}_feat_tokens"].tolist()
            side.clear_features()
            for j, ent in enumerate(arrays[f"{s}_feat_entities"].tolist()):
                tokens = tuple(names[t] for t in toks[indptr[j] : indptr[j + 1]])
                side.set_tokens(ent, tokens)
            for table in side.tables:
                table.load(
                    arrays[table.name],
                    arrays.get(f"{table.name}_acc"),
                    info["capacities"][table.name],
                )
            side.n_init = len(side.ids.ids)
            side.f_init = arrays[side.femb.name].shape[0]
            side.count = grow_rows(arrays[f"{s}_count"].astype(np.int64), side.n_init)
            side.ftrained = grow_rows(arrays[f"{s}_ftrained"].astype(bool), side.f_init)
            side._pairs = None
        # Checkpoints from before eviction existed hold no clock: popularity's is the same
        # (the newest positive's time); ids without a saved time count as seen at it.
        evict = info.get("evict", {})
        model._clock_ms = int(evict.get("clock_ms", info["popularity"].get("now_ms") or 0))
        model._evicted_at_ms = int(evict.get("evicted_at_ms", model._clock_ms))
        for side in (model.users, model.items):
            if side.last_ts is not None:
                saved_ts = arrays.get(f"{side.name}_last_ts")
                if saved_ts is None:
                    saved_ts = np.full(side.n_init, model._clock_ms, np.int64)
                side.last_ts = grow_rows(saved_ts.astype(np.int64), max(64, side.n_init))
        model.gbias.load(arrays["global_bias"], arrays.get("global_bias_acc"), 1)
        model._gbias = None
        model.popularity.items = model.items.ids
        model.popularity.load_state(arrays, info["popularity"])
        model.sampler.load_state(arrays, info["sampler"])
        model.rng.bit_generator.state = info["rng"]
        model.version = int(info["version"])
        model.skipped_nonfinite = int(info["skipped_nonfinite"])
        model._mutations += 1
        return model, dict(info["metadata"])
