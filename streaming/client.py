"""Read recommendations from Redis without TensorFlow: what applications embed.

Paths, in order (DESIGN.md "Read path"): precomputed top-K when at least as new as the user's
vector; the user's vector scored against the cached item matrix; time-decayed popularity.
Every answer says which path served it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
import redis

from streamrec.streaming.keys import Keys, decode_vector

log = logging.getLogger(__name__)

SOURCES = ("precomputed", "realtime", "features", "popularity")


@dataclass(frozen=True)
class Recommendations:
    user: str
    items: list[str]
    scores: list[float]
    source: str  # one of SOURCES

    def pairs(self) -> list[tuple[str, float]]:
        return list(zip(self.items, self.scores, strict=True))


class _MatrixCache:
    """The item matrix, re-read only when the trainer publishes a new version."""

    def __init__(self) -> None:
        self.ver: bytes | None = None
        self.ids: list[str] = []
        self.vectors = np.zeros((0, 0), dtype=np.float32)
        self.biases = np.zeros(0, dtype=np.float32)

    def get(self, client: redis.Redis, keys: Keys) -> _MatrixCache:
        ver: Any = client.get(keys.items_ver)
        if ver is not None and ver != self.ver:
            pipe = client.pipeline(transaction=True)
            for key in (keys.items_ver, keys.items_ids, keys.items_matrix, keys.items_bias):
                pipe.get(key)
            ver, ids_raw, mat_raw, bias_raw = pipe.execute()
            if ids_raw and mat_raw is not None and bias_raw is not None:
                ids = orjson.loads(ids_raw)
                biases = decode_vector(bias_raw, len(ids))
                vectors = decode_vector(mat_raw).reshape(len(ids), -1) if ids else self.vectors
                self.ver, self.ids, self.vectors, self.biases = ver, ids, vectors, biases
        return self


class Recommender:
    """`Recommender("redis://...")` or `Recommender(client)`; `recommend(user, k)`."""

    def __init__(self, redis_url_or_client: str | redis.Redis, prefix: str = "sr:"):
        if isinstance(redis_url_or_client, str):
            self.client = redis.Redis.from_url(redis_url_or_client, socket_timeout=2.0)
        else:
            self.client = redis_url_or_client
        self.keys = Keys(prefix)
        self._matrix = _MatrixCache()

    def recommend(self, user: str, k: int = 10, exclude_seen: bool = True) -> Recommendations:
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= 10_000:
            raise ValueError(f"k must be an integer in 1..10000, got {k!r}")
        if not isinstance(user, str) or not user:
            raise TypeError(f"user must be a non-empty string, got {user!r}")
        pipe = self.client.pipeline(transaction=False)
        pipe.hmget(self.keys.user(user), ["vec", "ver"])
        pipe.get(self.keys.recs(user))
        pipe.zrange(self.keys.seen(user), 0, -1)
        (vec_raw, ver_raw), recs_raw, seen_raw = pipe.execute()
        seen = {s.decode() for s in seen_raw} if exclude_seen else set()
        if recs_raw is not None and vec_raw is not None:
            recs = orjson.loads(recs_raw)
            if ver_raw is not None and int(recs.get("ver", -1)) >= int(ver_raw):
                pairs = [(i, s) for i, s in recs["items"] if i not in seen][:k]
                if len(pairs) >= min(k, len(recs["items"])):
                    return Recommendations(
                        user, [p[0] for p in pairs], [p[1] for p in pairs], "precomputed"
                    )
        if vec_raw is not None:
            try:
                vec = decode_vector(vec_raw)
                rt = self._realtime(user, vec, k, seen)
                if rt is not None:
                    return rt
            except ValueError as e:
                log.warning("unusable vector for user %r (%s): falling back", user, e)
        return self.popularity(user, k, seen)

    def _realtime(
        self, user: str, vec: np.ndarray, k: int, seen: set[str]
    ) -> Recommendations | None:
        m = self._matrix.get(self.client, self.keys)
        if not m.ids or m.vectors.shape[1] != vec.shape[0]:
            return None
        scores = m.vectors @ vec + m.biases
        if seen:
            mask = np.fromiter((i in seen for i in m.ids), dtype=bool, count=len(m.ids))
            scores = np.where(mask, -np.inf, scores)
        n = min(k, int(np.isfinite(scores).sum()))
        if n == 0:
            return None
        top = np.argpartition(-scores, n - 1)[:n]
        top = top[np.lexsort((np.array([m.ids[t] for t in top]), -scores[top]))]
        return Recommendations(
            user, [m.ids[t] for t in top], [float(scores[t]) for t in top], "realtime"
        )

    def popularity(self, user: str, k: int, seen: Iterable[str] = ()) -> Recommendations:
        seen = set(seen)
        got: Any = self.client.zrevrange(
            self.keys.popularity(), 0, k + len(seen) - 1, withscores=True
        )
        pairs = [(i.decode(), float(s)) for i, s in got if i.decode() not in seen][:k]
        return Recommendations(user, [p[0] for p in pairs], [p[1] for p in pairs], "popularity")
