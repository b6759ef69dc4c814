"""One side of the model (users or items): ids, side features, embedding tables, counts.

A `Side` is bookkeeping plus tables: it maps ids and feature tokens to rows, remembers each
entity's latest features, initialises new rows, counts events per row and compacts itself when
idle ids are evicted. It computes no loss and no served vector.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from streamrec.model.base import Features
from streamrec.model.config import ModelConfig
from streamrec.model.ids import FeatureSpace, IdMap, feature_tokens, grow_rows, keep_rows
from streamrec.model.tables import GrowingTable

PAD_MAX_WIDTH = 64  # features per entity kept in a side's padded matrix
NONE = np.zeros(0, np.int64)  # an empty row array, shared


class Side:
    """Everything one side (users or items) owns: ids, features, tables, counts."""

    def __init__(self, name: str, config: ModelConfig) -> None:
        acc = config.adagrad_initial_accumulator if config.optimizer == "adagrad" else None
        self.name = name
        self.ids = IdMap()
        self.features = FeatureSpace(config.feature_hash_buckets)
        self.tokens: dict[int, tuple[str, ...]] = {}  # row -> feature tokens (latest wins)
        self.frows: dict[int, np.ndarray] = {}  # row -> feature table rows of those tokens
        # The same as a padded [rows, width] matrix (-1 = none), for vectorised lookups of a
        # batch's feature pairs; None once some entity has more than PAD_MAX_WIDTH features.
        self._fpad: np.ndarray | None = np.full((64, 1), -1, np.int32)
        self.count = np.zeros(64, dtype=np.int64)  # events per id row
        fcap = config.feature_hash_buckets or config.initial_capacity
        self.ftrained = np.zeros(max(64, fcap), dtype=bool)  # feature row seen in an event
        self.emb = GrowingTable(f"{name}_emb", config.dim, config.initial_capacity, acc)
        self.bias = GrowingTable(f"{name}_bias", 0, config.initial_capacity, acc)
        self.femb = GrowingTable(f"{name}_feat_emb", config.dim, fcap, acc)
        self.n_init = 0  # id rows initialised
        self.f_init = 0  # feature rows initialised (all buckets at once when hashing)
        self._pairs: tuple[np.ndarray, np.ndarray] | None = None  # all (row, feature) pairs
        # newest event time (ms) per id row, kept only when ids can be evicted
        self.last_ts: np.ndarray | None = np.zeros(64, np.int64) if config.evict_after_s else None

    @property
    def tables(self) -> list[GrowingTable]:
        return [self.emb, self.bias, self.femb]

    # --- features ----------------------------------------------------------------------------

    def set_tokens(self, row: int, tokens: tuple[str, ...]) -> None:
        if tokens:
            if self.tokens.get(row) == tokens:
                return
            self.tokens[row] = tokens
            fr = self.frows[row] = self.features.rows(tokens)
            self._pad_set(row, fr)
        elif row in self.tokens:
            del self.tokens[row]
            del self.frows[row]
            self._pad_set(row, None)
        else:
            return
        self._pairs = None

    def remember(self, rows: np.ndarray, features: Sequence[Features | None] | None) -> None:
        """Features carried by a batch's events replace the stored ones (latest wins)."""
        if features is None:
            return
        features = features if isinstance(features, list) else list(features)
        if features.count(None) != len(features):
            for j, f in enumerate(features):
                if f is not None:
                    self.set_tokens(int(rows[j]), feature_tokens(f))

    def clear_features(self) -> None:
        self.tokens = {}
        self.frows = {}
        self._fpad = np.full((64, 1), -1, np.int32)
        self._pairs = None

    def _pad_set(self, row: int, fr: np.ndarray | None) -> None:
        pad = self._fpad
        if pad is None:
            return
        width = 0 if fr is None else fr.shape[0]
        if width > PAD_MAX_WIDTH:
            self._fpad = None  # rare and wide: the dictionary serves from here on
            return
        if width > pad.shape[1]:
            wider = np.full((pad.shape[0], max(width, 2 * pad.shape[1])), -1, np.int32)
            wider[:, : pad.shape[1]] = pad
            pad = wider
        if row >= pad.shape[0]:
            n_old = pad.shape[0]
            pad = grow_rows(pad, row + 1)
            pad[n_old:] = -1  # grow_rows fills with 0, which is a feature row
        pad[row] = -1
        if fr is not None:
            pad[row, :width] = fr
        self._fpad = pad

    def feature_pairs(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(index into `rows`, feature row) of every feature of those entities, in order."""
        if not self.frows:  # no entity has features
            return NONE, NONE
        pad = self._fpad
        if pad is not None:
            rows = np.asarray(rows, dtype=np.int64)
            inside = rows < pad.shape[0]  # rows past the matrix have no features
            if inside.all():
                sub = pad[rows]
            else:
                sub = np.full((rows.shape[0], pad.shape[1]), -1, np.int32)
                sub[inside] = pad[rows[inside]]
            ents, cols = np.nonzero(sub >= 0)
            return ents, sub[ents, cols].astype(np.int64)
        get = self.frows.get
        found = [(j, f) for j, f in enumerate(map(get, rows.tolist())) if f is not None]
        if not found:
            return NONE, NONE
        counts = np.fromiter((f.shape[0] for _, f in found), np.int64, len(found))
        ents = np.repeat(np.fromiter((j for j, _ in found), np.int64, len(found)), counts)
        return ents, np.concatenate([f for _, f in found]).astype(np.int64)

    def batch_pairs(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(unique feature rows, pair entity index, pair feature index) for `rows`."""
        ents, f_all = self.feature_pairs(rows)
        if not f_all.shape[0]:
            z = np.zeros(0, dtype=np.int32)
            return z, z, z
        f_set, f_idx = np.unique(f_all, return_inverse=True)
        return f_set.astype(np.int32), ents.astype(np.int32), f_idx.astype(np.int32)

    def all_pairs(self) -> tuple[np.ndarray, np.ndarray]:
        """(row, feature row) for every entity with features; cached until features change."""
        if self._pairs is None:
            if self.frows:
                frs = list(self.frows.values())
                counts = np.fromiter((fr.shape[0] for fr in frs), np.int64, len(frs))
                rows = np.repeat(np.fromiter(self.frows, np.int64, len(frs)), counts)
                feats = np.concatenate(frs).astype(np.int64)
            else:
                rows = feats = np.zeros(0, dtype=np.int64)
            self._pairs = (rows, feats)
        return self._pairs

    def known_feature_rows(self, tokens: Sequence[str]) -> np.ndarray:
        """Feature rows of tokens already known, without registering new ones."""
        rows = self.features.known_rows(list(tokens))
        return rows[rows >= 0]

    # --- rows --------------------------------------------------------------------------------

    def sync(self, rng: np.random.Generator, scale: float, now_ms: int = 0) -> bool:
        """Initialise rows of ids and feature tokens that arrived since the last call; a new
        id counts as seen at `now_ms` (the model's clock), so it is not evicted at once."""
        changed = False
        n = len(self.ids.ids)
        if n > self.n_init:
            rows = np.arange(self.n_init, n, dtype=np.int32)
            self.emb.set_rows(rows, rng.standard_normal((rows.shape[0], self.emb.dim)) * scale)
            self.bias.ensure(n)
            self.count = grow_rows(self.count, n)
            if self.last_ts is not None:
                self.last_ts = grow_rows(self.last_ts, n)
                self.last_ts[self.n_init : n] = now_ms
            self.n_init = n
            changed = True
        f = self.features.n_rows
        if f > self.f_init:
            rows = np.arange(self.f_init, f, dtype=np.int32)
            self.femb.set_rows(rows, rng.standard_normal((rows.shape[0], self.femb.dim)) * scale)
            self.ftrained = grow_rows(self.ftrained, f)
            self.f_init = f
            changed = True
        return changed

    def add_counts(self, rows: np.ndarray) -> None:
        """count[rows] += 1 per occurrence; bincount is several times faster than np.add.at."""
        if rows.shape[0] * 64 < self.count.shape[0]:
            np.add.at(self.count, rows, 1)  # a few rows: bincount would sweep the whole array
        elif rows.shape[0]:
            add = np.bincount(rows)
            self.count[: add.shape[0]] += add

    def touch(self, rows: np.ndarray, ts: np.ndarray) -> None:
        """Newest event time per row, for eviction (only kept when ids can be evicted)."""
        assert self.last_ts is not None
        np.maximum.at(self.last_ts, rows, ts)

    def keep(self, live: np.ndarray) -> tuple[np.ndarray, list[str]]:
        """Keep only the id rows `live` (ascending), renumbered 0..len(live)-1 in order.

        Returns the old -> new row map (-1: evicted) and the evicted ids. Feature rows are
        shared by many ids and stay.
        """
        n = self.n_init
        remap = np.full(n, -1, np.int64)
        remap[live] = np.arange(live.shape[0])
        old_ids = self.ids.ids
        evicted = [old_ids[r] for r in np.flatnonzero(remap < 0).tolist()]
        self.ids = IdMap(old_ids[r] for r in live.tolist())
        new_row = remap.tolist()
        self.tokens = {new_row[r]: t for r, t in self.tokens.items() if new_row[r] >= 0}
        self.frows = {new_row[r]: f for r, f in self.frows.items() if new_row[r] >= 0}
        self._pairs = None
        if self._fpad is not None:
            pad = self._fpad
            kept = np.full(pad.shape, -1, np.int32)
            inside = np.flatnonzero(live < pad.shape[0])  # new rows of the live rows in pad
            kept[inside] = pad[live[inside]]
            self._fpad = kept
        self.emb.keep_rows(live)
        self.bias.keep_rows(live)
        self.count = keep_rows(self.count, live)
        assert self.last_ts is not None
        self.last_ts = keep_rows(self.last_ts, live)
        self.n_init = int(live.shape[0])
        return remap, evicted
