"""Time-decayed popularity, global and per user-feature segment.

The fallback for users the model cannot score, and the baseline the model must beat. A count
decays with a half-life: score_i(t) = sum_e w_e * 2^(-(t - t_e) / h). Stored naively that needs
2^(+age) factors, which overflow for far-future timestamps (PITFALLS), so values are kept
relative to a reference time `ref_ms`: S_i = sum_e w_e * 2^((t_e - ref_ms) / h), and the reference
moves forward (rescaling everything) before the exponents get large. Timestamps later than the
wall clock plus a tolerance are clamped, so one bad clock cannot decay everything else to zero.
Pure numpy: no TensorFlow needed to serve or export popularity.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from streamrec.model.base import EventLike
from streamrec.model.config import DEFAULT_EVENT_WEIGHTS, ModelConfig
from streamrec.model.ids import (
    IdMap,
    decode_strings,
    encode_strings,
    feature_tokens,
    grow_rows,
    keep_rows,
)
from streamrec.model.ranking import top_k

_REBASE_AT = 32.0  # half-lives ahead of the reference before it moves (values up to 2^32)
_MIN_EXP = -1000.0  # 2^-1000 is still a normal float64; older events count as zero


class DecayedPopularity:
    def __init__(
        self,
        half_life_s: float = 7 * 24 * 3600.0,
        *,
        event_weights: Mapping[str, float] | None = None,
        rating_positive_min: float = 4.0,
        segment_features: Collection[str] | None = None,
        max_segments: int = 10_000,
        max_future_s: float = 24 * 3600.0,
        clock: Callable[[], float] = time.time,
        items: IdMap | None = None,
    ) -> None:
        """`items` shares an id -> row map with the caller (the model), saving a lookup."""
        if not (math.isfinite(half_life_s) and half_life_s > 0):
            raise ValueError(f"half_life_s must be > 0, got {half_life_s}")
        self.half_life_ms = half_life_s * 1000.0
        self.event_weights = dict(DEFAULT_EVENT_WEIGHTS if event_weights is None else event_weights)
        self.rating_positive_min = rating_positive_min
        self.segment_features = None if segment_features is None else frozenset(segment_features)
        self.max_segments = max_segments
        self.max_future_ms = max_future_s * 1000.0
        self.clock = clock
        self.items = IdMap() if items is None else items
        self._shared_ids = items is not None
        self._counts = np.zeros(64, dtype=np.float64)
        self._segments: dict[str, dict[int, float]] = {}
        self.ref_ms: int | None = None
        self.now_ms: int | None = None  # latest (clamped) event time seen

    @classmethod
    def from_config(
        cls,
        config: ModelConfig,
        clock: Callable[[], float] = time.time,
        items: IdMap | None = None,
    ) -> DecayedPopularity:
        return cls(
            config.popularity_half_life_s,
            event_weights=config.event_weights,
            rating_positive_min=config.rating_positive_min,
            segment_features=config.segment_features(),
            max_segments=config.popularity_max_segments,
            max_future_s=config.popularity_max_future_s,
            clock=clock,
            items=items,
        )

    # --- updates -------------------------------------------------------------------------

    def update(self, events: Sequence[EventLike]) -> None:
        """Count the positive events; segments come from the features carried by each event."""
        items: list[str] = []
        ts: list[int] = []
        weights: list[float] = []
        segments: list[tuple[str, ...]] = []
        for e in events:
            w = self.event_weights.get(e.type, 0.0)
            if e.type == "rating" and (e.value is None or not e.value >= self.rating_positive_min):
                continue
            if w <= 0:
                continue
            items.append(e.item)
            ts.append(int(e.ts))
            weights.append(w)
            segments.append(self.segments_of(feature_tokens(e.user_features)))
        self.add(items, np.asarray(ts, dtype=np.int64), np.asarray(weights), segments)

    def segments_of(self, tokens: Sequence[str]) -> tuple[str, ...]:
        """The tokens that name segments under `segment_features`."""
        if self.segment_features is None:
            return tuple(tokens)
        return tuple(t for t in tokens if t.partition("=")[0] in self.segment_features)

    def add(
        self,
        items: Sequence[str],
        ts_ms: np.ndarray,
        weights: np.ndarray,
        segments: Sequence[Sequence[str]] | None = None,
    ) -> None:
        """Vectorised core of `update`: one positive weight per (item, time).

        With an id map shared with its owner (the model), items the owner does not know are
        ignored: rows are the owner's to create.
        """
        if not len(items):
            return
        rows = self.items.rows(items, add=not self._shared_ids)
        if self._shared_ids and (rows < 0).any():
            keep = np.flatnonzero(rows >= 0)
            rows = rows[keep]
            ts_ms = np.asarray(ts_ms)[keep]
            weights = np.asarray(weights)[keep]
            segments = None if segments is None else [segments[j] for j in keep.tolist()]
        self.add_rows(rows, ts_ms, weights, segments)

    def add_rows(
        self,
        rows: np.ndarray,
        ts_ms: np.ndarray,
        weights: np.ndarray,
        segments: Sequence[Sequence[str]] | None = None,
    ) -> None:
        """`add` for item rows of `self.items`."""
        rows = np.asarray(rows, dtype=np.int64)
        ts = np.asarray(ts_ms, dtype=np.float64)
        w = np.asarray(weights, dtype=np.float64)
        keep = np.isfinite(ts) & np.isfinite(w) & (w > 0)
        if not keep.all():
            idx = np.flatnonzero(keep)
            rows, ts, w = rows[idx], ts[idx], w[idx]
            segments = None if segments is None else [segments[j] for j in idx.tolist()]
        if rows.shape[0] == 0:
            return
        ts = np.minimum(ts, self.clock() * 1000.0 + self.max_future_ms)
        batch_max = int(ts.max())
        if self.ref_ms is None:
            self.ref_ms = batch_max
        if self.now_ms is None or batch_max > self.now_ms:
            self.now_ms = batch_max
        if (batch_max - self.ref_ms) / self.half_life_ms > _REBASE_AT:
            self._rebase(batch_max)
        expo = np.clip((ts - self.ref_ms) / self.half_life_ms, _MIN_EXP, _REBASE_AT)
        contrib = w * np.exp2(expo)
        self._grow(len(self.items.ids))
        np.add.at(self._counts, rows, contrib)
        if segments is not None:
            self._add_segments(rows, contrib, segments)

    def _add_segments(
        self, rows: np.ndarray, contrib: np.ndarray, segments: Sequence[Sequence[str]]
    ) -> None:
        table = self._segments
        for row, c, segs in zip(rows.tolist(), contrib.tolist(), segments, strict=True):
            for seg in segs:
                d = table.get(seg)
                if d is None:
                    if len(table) >= self.max_segments:
                        continue
                    d = table[seg] = {}
                d[row] = d.get(row, 0.0) + c

    def keep_rows(self, remap: np.ndarray, items: IdMap) -> None:
        """Follow the owner's compaction of its items (old row -> new row, -1: evicted)."""
        n = remap.shape[0]
        self._grow(n)
        self._counts = keep_rows(self._counts, np.flatnonzero(remap >= 0))
        new_row = remap.tolist()
        self._segments = {
            seg: {new_row[r]: v for r, v in d.items() if new_row[r] >= 0}
            for seg, d in self._segments.items()
        }
        self.items = items

    def _grow(self, n: int) -> None:
        self._counts = grow_rows(self._counts, n)

    def _rebase(self, new_ref_ms: int) -> None:
        assert self.ref_ms is not None
        factor = float(np.exp2(max((self.ref_ms - new_ref_ms) / self.half_life_ms, -1074.0)))
        self._counts *= factor
        for d in self._segments.values():
            for key in d:
                d[key] *= factor
        self.ref_ms = new_ref_ms

    # --- reads -----------------------------------------------------------------------------

    def _scale(self, now_ms: float | None) -> float:
        if self.ref_ms is None:
            return 1.0
        now = self.now_ms if now_ms is None else now_ms
        assert now is not None
        return float(np.exp2(np.clip((self.ref_ms - now) / self.half_life_ms, -1074.0, 1000.0)))

    def _vector(self, segment: str | None) -> tuple[np.ndarray, np.ndarray] | None:
        """(rows, stored values) of a segment or of the global counts."""
        if segment is None:
            n = len(self.items.ids)
            self._grow(n)  # a shared id map grows without telling us
            return np.arange(n), self._counts[:n]
        d = self._segments.get(segment)
        if not d:
            return None
        return np.fromiter(d.keys(), np.int64, len(d)), np.fromiter(d.values(), np.float64, len(d))

    def top(
        self,
        k: int,
        segment: str | None = None,
        now_ms: float | None = None,
        exclude: Collection[str] = (),
    ) -> list[tuple[str, float]]:
        """The k most popular items (decayed to `now_ms`, default the latest event)."""
        vec = self._vector(segment)
        if vec is None:
            return []
        rows, values = vec
        values = np.where(values > 0, values, -np.inf)
        if exclude:
            pos = {r: j for j, r in enumerate(rows.tolist())} if segment is not None else None
            for item in exclude:
                r = self.items.row(item)
                if r < 0:
                    continue
                j = r if pos is None else pos.get(r, -1)
                if 0 <= j < values.shape[0]:
                    values[j] = -np.inf
        names = self.items.ids
        ids = [names[r] for r in rows.tolist()] if segment is not None else names
        scale = self._scale(now_ms)
        # Ranked by the stored values, so a far `now_ms` that underflows the scores to 0
        # still keeps the order.
        return [(ids[j], float(values[j]) * scale) for j in top_k(values, k, ids)]

    def scores(self, segment: str | None = None, now_ms: float | None = None) -> dict[str, float]:
        """Every item's decayed count, for export (e.g. a Redis zset)."""
        vec = self._vector(segment)
        if vec is None:
            return {}
        rows, values = vec
        scale = self._scale(now_ms)
        names = self.items.ids
        return {
            names[r]: v * scale
            for r, v in zip(rows.tolist(), values.tolist(), strict=True)
            if v > 0
        }

    def log_scores(
        self, items: Iterable[str] | None = None, segment: str | None = None
    ) -> dict[str, float]:
        """Time-invariant scores for a store that is only ever partly rewritten.

        log2 of the count decayed to the epoch, log2(sum_e w_e 2^(t_e / h)) with t in
        half-lives: it orders items exactly like the decayed count at any moment, and it does
        not change for an item without new events. A Redis zset can therefore take absolute
        writes for touched items only and still rank every item right. Items with no count
        are left out.
        """
        if self.ref_ms is None:
            return {}
        offset = self.ref_ms / self.half_life_ms
        names = self.items.ids
        if items is None:
            vec = self._vector(segment)
            if vec is None:
                return {}
            pairs = zip(vec[0].tolist(), vec[1].tolist(), strict=True)
            return {names[r]: math.log2(v) + offset for r, v in pairs if v > 0}
        # A few touched items: look them up where they are stored, instead of turning a
        # whole segment into arrays and back (per batch and segment, that was 9 % of the
        # trainer's time at 2k events/s).
        stored: Mapping[int, float] | None = None
        values: Any = None
        if segment is None:
            vec = self._vector(None)
            assert vec is not None
            values = vec[1]
        else:
            stored = self._segments.get(segment)
            if not stored:
                return {}
        out: dict[str, float] = {}
        for item in items:
            r = self.items.row(item)
            if r < 0:
                continue
            v = float(values[r]) if stored is None else stored.get(r, 0.0)
            if v > 0:
                out[item] = math.log2(v) + offset
        return out

    def segments(self) -> list[str]:
        return sorted(self._segments)

    def mass(self, segment: str | None = None) -> float:
        vec = self._vector(segment)
        return 0.0 if vec is None else float(vec[1].sum())

    def best_segment(self, tokens: Sequence[str]) -> str | None:
        """Of a user's feature tokens, the segment with the most (decayed) data."""
        best: tuple[float, str] | None = None
        for seg in self.segments_of(tokens):
            d = self._segments.get(seg)
            if d:
                m = sum(d.values())
                if best is None or m > best[0] or (m == best[0] and seg < best[1]):
                    best = (m, seg)
        return None if best is None else best[1]

    # --- persistence ---------------------------------------------------------------------

    def state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        n = len(self.items.ids)
        self._grow(n)
        blob, off = encode_strings(self.items.ids)
        seg_names = sorted(self._segments)
        sblob, soff = encode_strings(seg_names)
        indptr = np.zeros(len(seg_names) + 1, dtype=np.int64)
        rows: list[int] = []
        vals: list[float] = []
        for j, s in enumerate(seg_names):
            d = self._segments[s]
            rows.extend(d.keys())
            vals.extend(d.values())
            indptr[j + 1] = len(rows)
        arrays = {
            "pop_counts": self._counts[:n].copy(),
            "pop_seg_blob": sblob,
            "pop_seg_off": soff,
            "pop_seg_indptr": indptr,
            "pop_seg_rows": np.asarray(rows, dtype=np.int64),
            "pop_seg_vals": np.asarray(vals, dtype=np.float64),
        }
        if not self._shared_ids:
            arrays["pop_items_blob"], arrays["pop_items_off"] = blob, off
        return arrays, {"ref_ms": self.ref_ms, "now_ms": self.now_ms}

    def load_state(self, arrays: Mapping[str, np.ndarray], info: Mapping[str, Any]) -> None:
        if not self._shared_ids:
            self.items = IdMap(decode_strings(arrays["pop_items_blob"], arrays["pop_items_off"]))
        counts = np.asarray(arrays["pop_counts"], dtype=np.float64)
        self._counts = np.zeros(max(64, counts.shape[0]), dtype=np.float64)
        self._grow(counts.shape[0])
        self._counts[: counts.shape[0]] = counts
        names = decode_strings(arrays["pop_seg_blob"], arrays["pop_seg_off"])
        indptr = arrays["pop_seg_indptr"].tolist()
        rows = arrays["pop_seg_rows"].tolist()
        vals = arrays["pop_seg_vals"].tolist()
        self._segments = {
            s: dict(zip(rows[a:b], vals[a:b], strict=True))
            for s, a, b in zip(names, indptr[:-1], indptr[1:], strict=True)
        }
        self.ref_ms = info.get("ref_ms")
        self.now_ms = info.get("now_ms")
