"""The item matrix a reader scores against: one immutable snapshot, cached by version.

Its own module because the cache's rules (when to re-read 25 MB, what to do with a corrupt
version, how threads share a load) are independent of which read path asks for the matrix.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
import redis

from streamrec.streaming.keys import Keys, decode_vector, matrix_interval
from streamrec.streaming.requests import store_errors

#: `warn(kind, key, msg, *args)`: the reader's rate-limited warning, shared with the cache.
Warn = Callable[..., None]


@dataclass(frozen=True)
class ItemMatrix:
    """One consistent snapshot of `items:{ids,matrix,bias,ver}`; never mutated, so threads
    share it without locks and a refresh is one reference swap."""

    ver: bytes
    ids: list[str]
    vectors: np.ndarray  # (n, dim) float32
    biases: np.ndarray  # (n,) float32
    index: dict[str, int] = field(repr=False)

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])


class MatrixCache:
    """The item matrix, re-read only when the trainer publishes a new version.

    The trainer may publish a version per batch (every ~100 ms), and 100k x 64 floats are
    25.6 MB: re-reading each one would move more bytes than all requests together. So a
    snapshot is kept for at least `refresh_ms` even when a newer version exists (bounded
    staleness, like the trainer's own view of item vectors); a smaller snapshot for less, in
    proportion (`keys.matrix_interval`). While one thread loads a new
    version, the others keep serving the previous one instead of queueing behind the read. A
    version that fails validation is remembered: one read and one warning, not one per request.
    """

    def __init__(self, warn: Warn, refresh_ms: int) -> None:
        self.current: ItemMatrix | None = None
        self.bad_ver: bytes | None = None
        self.loads = 0  # how many times the matrix was read from Redis (tests, metrics)
        self.refresh_s = refresh_ms / 1000
        self._loaded_at = 0.0
        self._lock = threading.Lock()
        self._warn = warn

    def get(self, client: redis.Redis, keys: Keys, ver: bytes | None) -> ItemMatrix | None:
        cur = self.current
        if ver is None:
            return None
        if cur is not None and cur.ver == ver:
            return cur
        if ver == self.bad_ver:
            return None
        if cur is not None and time.monotonic() - self._loaded_at < matrix_interval(
            self.refresh_s, cur.vectors.nbytes + cur.biases.nbytes
        ):
            return cur
        if not self._lock.acquire(blocking=cur is None):
            return cur  # another thread is loading; the previous snapshot is still valid
        try:
            cur = self.current
            if cur is not None and cur.ver == ver:
                return cur
            return self._load(client, keys, ver)
        finally:
            self._lock.release()

    def _load(self, client: redis.Redis, keys: Keys, ver: bytes) -> ItemMatrix | None:
        pipe = client.pipeline(transaction=True)  # MULTI: ids, vectors and biases agree
        for key in (keys.items_ver, keys.items_ids, keys.items_matrix, keys.items_bias):
            pipe.get(key)
        with store_errors():
            got_ver, ids_raw, mat_raw, bias_raw = pipe.execute(raise_on_error=False)
        self.loads += 1
        self._loaded_at = time.monotonic()
        if isinstance(got_ver, bytes):
            ver = got_ver  # the snapshot read is what we cache, whatever was asked for
        try:
            m = decode_matrix(ver, ids_raw, mat_raw, bias_raw)
        except (ValueError, TypeError) as e:
            self.bad_ver = ver
            self._warn(
                "matrix",
                keys.items_matrix,
                "item matrix version %r in Redis is unusable (%s): real-time scoring is off "
                "until a new version is written",
                ver,
                e,
            )
            return None
        self.current = m
        self.bad_ver = None
        return m


def matrix_time_ms(m: ItemMatrix) -> float:
    """When the trainer wrote the snapshot (its version is time.time_ns() then); 0 if the
    version is not a time (an older writer's counter): never newer than a list."""
    try:
        ver = int(m.ver)
    except ValueError:
        return 0.0
    return ver / 1e6 if ver > 10**17 else 0.0


def decode_matrix(ver: bytes, ids_raw: Any, mat_raw: Any, bias_raw: Any) -> ItemMatrix:
    for name, raw in (("ids", ids_raw), ("matrix", mat_raw), ("bias", bias_raw)):
        if not isinstance(raw, bytes):
            raise ValueError(f"items:{name} is {'missing' if raw is None else repr(raw)[:80]}")
    ids = orjson.loads(ids_raw)
    if not isinstance(ids, list) or not ids or not all(isinstance(i, str) for i in ids):
        raise ValueError("items:ids is not a non-empty JSON list of strings")
    n = len(ids)
    biases = decode_vector(bias_raw, n)
    flat = decode_vector(mat_raw)
    if flat.shape[0] == 0 or flat.shape[0] % n:
        raise ValueError(f"items:matrix holds {flat.shape[0]} floats, not a multiple of {n} ids")
    vectors = flat.reshape(n, flat.shape[0] // n)
    return ItemMatrix(ver, ids, vectors, biases, {item: j for j, item in enumerate(ids)})
