"""The online recommender: one compiled TensorFlow step per mini-batch of events.

score(u, i) = b + b_u + b_i + <p_u, q_i>, with p_u = e(user id) + sum of e(user feature) and
q_i = e(item id) + sum of e(item feature) (LightFM). `OnlineRecommender` owns the state and
wires together modules of one job each:

- `side`: one side's ids, features, tables and counts (`Side`, one for users, one for items);
- `batch`: events to the packed arrays the step reads, with shared negatives and row scales;
- `step`: the compiled TensorFlow step (towers, losses, optimiser), one per batch variant;
- `small_step`: the same update in numpy, for batches of a few events;
- `serving`: served vectors, top-k lists, cold start (model, features, popularity);
- `persistence`: what a checkpoint holds, and restoring it under new settings.

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

from streamrec.model import persistence, serving, small_step
from streamrec.model import step as steps
from streamrec.model.base import CheckpointMismatch, EventLike, Features, ItemMatrix, LearnResult
from streamrec.model.batch import Attribute, EventWeights, StepKey, accidental_hits, pack
from streamrec.model.config import ModelConfig
from streamrec.model.ids import feature_tokens
from streamrec.model.persistence import RESTORE_FIXED
from streamrec.model.popularity import DecayedPopularity
from streamrec.model.sampling import NegativeSampler
from streamrec.model.serving import SOURCE_FEATURES, SOURCE_MODEL, SOURCE_POPULARITY
from streamrec.model.side import PAD_MAX_WIDTH, Side
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
_accidental_hits = accidental_hits

log = logging.getLogger(__name__)


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
        # bumps on every change that may move any item row: keys the item-matrix cache
        self._mutations = 0
        self._gbias: float | None = None  # cached global bias; None: read it again
        self._clock_ms = 0  # newest event time learned: the eviction clock
        self._evicted_at_ms = 0  # clock of the last eviction pass
        # (mutations, vectors, biases) with spare rows; `_item_matrix` serves the first n.
        self._item_cache: tuple[int, np.ndarray, np.ndarray] | None = None
        self._item_dirty: list[np.ndarray] = []  # item rows changed since the cache was built
        # ... and rows changed with their new (embedding, bias), in the order written
        self._item_written: list[tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]] = []
        self._item_dirty_rows = 0
        self._item_shared = False  # item_vectors() handed the cached arrays out
        # Batches of at most this many events take the numpy step (`small_step`); 0: never.
        self.small_batch_max = small_step.SMALL_BATCH_MAX_EVENTS
        self._steps: dict[StepKey, Any] = {}  # compiled step per variant (`_step`)
        self._weights = EventWeights(config)
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
        return steps.tracing_count(self._steps)

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
        self.users.sync(self.rng, scale, self._clock_ms)  # user rows are not in the item matrix
        n_items = self.items.n_init
        if self.items.sync(self.rng, scale, self._clock_ms) and self.items.n_init > n_items:
            self._items_changed(np.arange(n_items, self.items.n_init))

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
        themselves (building them costs Python time per event).
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
            values=Attribute(events, "value"),
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
        if item_features is not None and any(f is not None for f in item_features):
            self.items.remember(i_rows, item_features)
            self._mutations += 1  # items' features may have changed: rebuild their matrix
        self._sync()

        types = types if isinstance(types, list) else list(types)
        weights = self._weights(types, values)
        batch = pack(cfg, self.users, self.items, self.sampler, self.rng, u_rows, i_rows, weights)
        if batch is None:
            return self._result(n, math.nan, False, users, items, None, touched)
        written: dict[str, np.ndarray] = {}
        if n <= self.small_batch_max:
            total, ok = small_step.run(
                cfg, self.users, self.items, self.gbias, batch, cfg.steps_per_batch, written
            )
        else:
            total, ok = steps.run(self._step(batch.key), batch, cfg.steps_per_batch)
        if batch.if_set.shape[0]:
            self._mutations += 1  # item feature rows moved: every item carrying them did
        elif ok and written and not self.items.frows:
            self._items_changed(batch.i_set, (written["ei"], written["bi"]))
        else:
            self._items_changed(batch.i_set)
        if batch.q.shape[0]:
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
            return self._result(n, math.nan, True, users, items, None, touched)

        r = batch.r
        active = np.concatenate([r, batch.q])
        self.users.add_counts(u_rows[active])
        self.items.add_counts(i_rows[active])
        if batch.uf_set.shape[0]:
            self.users.ftrained[batch.uf_set] = True
        if batch.if_set.shape[0]:
            # Features of sampled negatives were only pushed down; they count as trained only
            # through an item that appeared in an event.
            f_set, _, _ = self.items.batch_pairs(np.unique(i_rows[active]))
            self.items.ftrained[f_set] = True
        self._observe_popularity(ts, r, weights[0], u_rows, i_rows)
        self.sampler.observe(i_rows[r])
        result = self._result(n, total / active.shape[0], False, users, items, batch.neg, touched)
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
        touched: bool,
    ) -> LearnResult:
        """Touched ids in first-seen order; touched items include the sampled negatives.

        Built from the batch's own strings (hot in cache) rather than by indexing the id
        lists with rows, which costs a cache miss per id.
        """
        if not touched:
            return LearnResult(n, loss, skipped, [], [], self.version)
        touched_items = dict.fromkeys(items)
        if neg is not None and neg.shape[0]:
            iid = self.items.ids.ids
            touched_items.update(dict.fromkeys(map(iid.__getitem__, neg.tolist())))
        return LearnResult(
            n, loss, skipped, list(dict.fromkeys(users)), list(touched_items), self.version
        )

    def _step(self, key: StepKey) -> Any:
        """The compiled step of this batch variant, compiled on first use."""
        step = self._steps.get(key)
        if step is None:
            step = self._steps[key] = steps.compile_step(
                self.config, self.users, self.items, self.gbias, key
            )
        return step

    def warm_up(self) -> float:
        """Compile, before the first batch, every step variant a stream is likely to need.

        Otherwise a variant is compiled when a batch first needs it, and that batch waits
        (`step.warm_keys` lists the variants). Returns the seconds spent.
        """
        t0 = time.perf_counter()
        for key in steps.warm_keys(self.config):
            self._step(key)
        return time.perf_counter() - t0

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

        What the trainer writes after every batch: one TF round trip for the whole batch
        instead of one per `user_vector` call.
        """
        self._sync()
        return serving.served_rows(self.users, users, self.dim)

    def item_rows(self, items: Sequence[str]) -> tuple[list[str], np.ndarray, np.ndarray]:
        """`user_vectors` for items: the rows a batch touched, without rebuilding the whole
        item matrix."""
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
        # The cached arrays themselves, read-only: no copy of the whole matrix per call. The
        # next update of the cache copies them first, so the caller's snapshot stays as is.
        self._item_shared = True
        return ItemMatrix(list(self.items.ids.ids), vecs, biases)

    def _items_changed(
        self, rows: np.ndarray, values: tuple[np.ndarray, np.ndarray] | None = None
    ) -> None:
        """Item rows whose served vector or bias may have changed: updated in the cached
        matrix at its next read instead of rebuilding all of it. `values`: their embeddings
        and biases as just written (items without features only), else read at that time."""
        if values is None:
            self._item_dirty.append(rows)
        else:
            self._item_written.append((rows, values))
        self._item_dirty_rows += rows.shape[0]
        if self._item_dirty_rows > max(4096, self.items.n_init // 4):
            self._mutations += 1  # cheaper to rebuild than to update row by row

    def _item_matrix(self) -> tuple[np.ndarray, np.ndarray]:
        """Served vectors and biases of every item: rebuilt after a change that can move any
        row (features, eviction, restore), else only the rows changed since (`_items_changed`).
        """
        self._sync()
        n = self.n_items
        cache = self._item_cache
        if cache is None or cache[0] != self._mutations:
            vecs, biases = serving.matrix(self.items)
            cache = self._item_cache = (self._mutations, vecs, biases)
            self._item_shared = False
        elif self._item_dirty or self._item_written:
            vecs, biases = cache[1], cache[2]
            if n > vecs.shape[0] or self._item_shared:
                cap = vecs.shape[0] if n <= vecs.shape[0] else max(n, 2 * vecs.shape[0])
                vecs = serving.grow_rows_copy(vecs, cap)
                biases = serving.grow_rows_copy(biases, cap)
                cache = self._item_cache = (self._mutations, vecs, biases)
                self._item_shared = False
            # Rows with their written values first, in order; rows to read back last, since
            # a read gives the current value whatever was written before.
            for rows, values in self._item_written:
                serving.update_rows(self.items, vecs, biases, rows, values)
            if self._item_dirty:
                rows = np.unique(np.concatenate(self._item_dirty))
                serving.update_rows(self.items, vecs, biases, rows)
        self._item_dirty = []
        self._item_written = []
        self._item_dirty_rows = 0
        vecs, biases = cache[1][:n], cache[2][:n]
        vecs.flags.writeable = False
        biases.flags.writeable = False
        return vecs, biases

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

    # --- persistence (in `persistence`) ------------------------------------------------------

    def save(self, path: str | Path, metadata: Mapping[str, Any] | None = None) -> None:
        """Everything needed to continue training bit for bit, written atomically.

        `metadata` must be JSON-serialisable (the consumer stores Kafka offsets there).
        """
        self._sync()
        persistence.save(self, path, metadata)

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
        return persistence.restore(cls, path, config)
