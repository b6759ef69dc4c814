"""Read recommendations from Redis without TensorFlow: what applications embed.

Paths, in order, and why each exists:

1. `precomputed`: the trainer's top-K, written with the user's vector. Cheapest (no scoring),
   and used only when at least as new as that vector, so a user never sees a list that ignores
   their latest events. A list older than `precomputed_max_age_ms` is skipped as well: it was
   ranked against an older catalogue, and new items (item cold start) only reach users who
   stopped acting through the real-time path. Items missing from a cached item matrix newer
   than the list (evicted since it was ranked) are left out of it.
2. `realtime`: the user's vector scored against the item matrix, cached in the process and
   re-read when `items:ver` changes (checked with one GET in the same round trip as the
   user's own keys), at most once per `matrix_refresh_ms`.
3. `features`: a user without a usable vector (user cold start) is scored with the sum of
   their feature-token embeddings (`ufe`), else served the popularity of their segments.
4. `popularity`: time-decayed global popularity; the answer for everyone else.

Every answer says which path served it. Unknown users are not errors; bad arguments are
`InvalidRequest` (a ValueError) or `InvalidRequestType` (also a TypeError); Redis that does
not answer after the client's retries is `StoreUnavailable`. Corrupt bytes in Redis fall back
to the next path with a logged warning: a reader must not fail because a writer had a bug.

This module holds the read paths. What a request may be and what it gets back are in
`streaming.requests`, the cached item matrix in `streaming.matrix`, the scoring of a vector in
`streaming.scoring`; every public name is importable from here, as applications always did.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
import redis
from redis.exceptions import ResponseError

from streamrec.model.ids import feature_tokens
from streamrec.streaming.config import RedisConfig
from streamrec.streaming.keys import Keys, decode_member, decode_vector
from streamrec.streaming.matrix import ItemMatrix, MatrixCache, matrix_time_ms
from streamrec.streaming.requests import (
    MAX_USER_BYTES,
    SOURCES,
    Features,
    InvalidRequest,
    InvalidRequestType,
    Recommendations,
    StoreUnavailable,
    check_features,
    check_k,
    check_user,
    parse_feature_args,
    store_errors,
)
from streamrec.streaming.scoring import merge_popular, score_vector
from streamrec.streaming.store import connect

# The names applications import from here, wherever they are defined.
__all__ = [
    "DEFAULT_MATRIX_REFRESH_MS",
    "DEFAULT_MAX_K",
    "DEFAULT_PRECOMPUTED_MAX_AGE_MS",
    "MAX_USER_BYTES",
    "SOURCES",
    "Features",
    "InvalidRequest",
    "InvalidRequestType",
    "ItemMatrix",
    "Recommendations",
    "Recommender",
    "StoreUnavailable",
    "parse_feature_args",
    "score_vector",
]

log = logging.getLogger(__name__)

DEFAULT_MAX_K = 1000
DEFAULT_PRECOMPUTED_MAX_AGE_MS = 60_000
DEFAULT_MATRIX_REFRESH_MS = 1_000


# --------------------------------------------------------------------------- warnings


class _Warner:
    """One warning per (kind, key) per interval: a corrupt hot key must not flood the logs."""

    def __init__(self, interval_s: float = 60.0, max_keys: int = 10_000) -> None:
        self.interval_s = interval_s
        self.max_keys = max_keys
        self._last: dict[tuple[str, str], float] = {}

    def __call__(self, kind: str, key: str, msg: str, *args: Any) -> None:
        now = time.monotonic()
        last = self._last.get((kind, key))
        if last is not None and now - last < self.interval_s:
            return
        if len(self._last) >= self.max_keys:
            self._last.clear()
        self._last[(kind, key)] = now
        log.warning(msg, *args)


# --------------------------------------------------------------------------- the reader


@dataclass
class _Pending:
    """A user's request between the first round trip and the fallback one."""

    pos: int
    user: str
    seen: set[str]
    tokens: tuple[str, ...]


class Recommender:
    """`Recommender("redis://...")`, `Recommender(RedisConfig(...))` or `Recommender(client)`.

    Thread-safe: one instance per process, shared by request threads (redis-py's pool and the
    immutable matrix snapshot make that safe). A client passed in keeps its own retry policy;
    a URL or RedisConfig gets `streaming.store.connect`'s (Retry with jittered backoff,
    explicit timeouts), after which a dead Redis is a `StoreUnavailable`.
    """

    def __init__(
        self,
        redis_url_or_client: str | RedisConfig | redis.Redis,
        prefix: str | None = None,
        *,
        max_k: int = DEFAULT_MAX_K,
        precomputed_max_age_ms: int | None = DEFAULT_PRECOMPUTED_MAX_AGE_MS,
        matrix_refresh_ms: int = DEFAULT_MATRIX_REFRESH_MS,
        clock: Any = time.time,
    ) -> None:
        if isinstance(redis_url_or_client, str):
            cfg = RedisConfig(url=redis_url_or_client, prefix=prefix or "sr:")
            self.client = connect(cfg)
        elif isinstance(redis_url_or_client, RedisConfig):
            cfg = redis_url_or_client
            prefix = prefix or cfg.prefix
            self.client = connect(cfg)
        else:
            self.client = redis_url_or_client
            kwargs = self.client.get_connection_kwargs()
            if kwargs.get("decode_responses"):
                raise InvalidRequest(
                    "client", "needs decode_responses=False: vectors are raw float32 bytes"
                )
        if not 1 <= max_k <= 100_000:
            raise InvalidRequest("max_k", f"must be in 1..100000, got {max_k}")
        self.keys = Keys(prefix or "sr:")
        self.max_k = max_k
        self.precomputed_max_age_ms = precomputed_max_age_ms
        self.clock = clock
        self._warn = _Warner()
        if matrix_refresh_ms < 0:
            raise InvalidRequest("matrix_refresh_ms", f"must be >= 0, got {matrix_refresh_ms}")
        self._matrix = MatrixCache(self._warn, matrix_refresh_ms)

    # -- public ---------------------------------------------------------------------------

    def recommend(
        self,
        user: str,
        k: int = 10,
        exclude_seen: bool = True,
        user_features: Features | None = None,
    ) -> Recommendations:
        """Top-k for one user; see the module docstring for which path answers.

        `exclude_seen=False` skips the precomputed list (it was ranked without the seen
        items, which this caller wants back). `user_features` replace the stored ones for
        this call and matter only when the user has no usable vector.
        """
        feats = None if user_features is None else {check_user(user): user_features}
        return self.recommend_many([user], k, exclude_seen, feats)[0]

    def recommend_many(
        self,
        users: Sequence[str],
        k: int = 10,
        exclude_seen: bool = True,
        user_features: Mapping[str, Features] | None = None,
    ) -> list[Recommendations]:
        """One answer per user, in order. One round trip reads every user's own keys (plus
        the matrix version); a second one, only if some user needs it, reads feature
        embeddings and popularity for all those users at once."""
        k = check_k(k, self.max_k)
        if isinstance(users, (str, bytes)) or not isinstance(users, Sequence):
            raise InvalidRequestType("users", "must be a sequence of user ids")
        if not isinstance(exclude_seen, bool):
            raise InvalidRequestType("exclude_seen", "must be a bool")
        ids = [check_user(u) for u in users]
        given: dict[str, tuple[str, ...]] = {}
        if user_features is not None:
            if not isinstance(user_features, Mapping):
                raise InvalidRequestType("user_features", "must map user -> features")
            given = {check_user(u): check_features(f) for u, f in user_features.items()}
        if not ids:
            return []

        keys = self.keys
        pipe = self.client.pipeline(transaction=False)
        pipe.get(keys.items_ver)
        for u in ids:
            pipe.hmget(keys.user(u), ["vec", "ver"])
            pipe.get(keys.recs(u))
            if exclude_seen:
                pipe.zrange(keys.seen(u), 0, -1)
            if u not in given:
                pipe.get(keys.user_features(u))
        with store_errors():
            replies = pipe.execute(raise_on_error=False)
        it = iter(replies)
        items_ver = self._ok(next(it), "items:ver", keys.items_ver)
        out: list[Recommendations | None] = [None] * len(ids)
        pending: list[_Pending] = []
        now_ms = int(self.clock() * 1000)
        for pos, u in enumerate(ids):
            urow = self._ok(next(it), "user", keys.user(u))
            recs_raw = self._ok(next(it), "recs", keys.recs(u))
            seen_raw = self._ok(next(it), "seen", keys.seen(u)) if exclude_seen else None
            uf_raw = None if u in given else self._ok(next(it), "uf", keys.user_features(u))
            seen = self._seen(u, seen_raw)
            vec_raw, ver_raw = urow if isinstance(urow, list) else (None, None)
            ans = None
            if exclude_seen and recs_raw is not None and ver_raw is not None:
                ans = self._precomputed(u, k, seen, recs_raw, ver_raw, now_ms)
            if ans is None and vec_raw is not None:
                ans = self._realtime(u, k, seen, vec_raw, items_ver)
            if ans is not None:
                out[pos] = ans
                continue
            tokens = given[u] if u in given else self._stored_tokens(u, uf_raw)
            pending.append(_Pending(pos, u, seen, tokens))
        if pending:
            for p, ans in zip(pending, self._fallbacks(pending, k, items_ver), strict=True):
                out[p.pos] = ans
        return [r for r in out if r is not None]

    def popularity(self, user: str, k: int = 10, seen: Sequence[str] = ()) -> Recommendations:
        """Global popularity only (what a brand-new user without features gets)."""
        k = check_k(k, self.max_k)
        user = check_user(user)
        with store_errors():
            got = self.client.zrange(
                self.keys.popularity(), 0, k + len(seen) - 1, desc=True, withscores=True
            )
        items, scores = merge_popular([got], set(seen), k)
        return Recommendations(user, items, scores, "popularity")

    def health(self) -> dict[str, Any]:
        """What `/healthz` reports; raises StoreUnavailable when Redis does not answer."""
        pipe = self.client.pipeline(transaction=False)
        pipe.ping()
        pipe.hgetall(self.keys.model)
        pipe.get(self.keys.items_ver)
        with store_errors():
            _, meta, ver = pipe.execute()
        m = self._matrix.current
        return {
            "redis": "ok",
            "model_version": _int_or_none(meta.get(b"version")),
            "items_ver": None if ver is None else ver.decode("ascii", "replace"),
            "cached_items": 0 if m is None else len(m.ids),
            "cached_items_ver": None if m is None else m.ver.decode("ascii", "replace"),
        }

    def item_matrix(self) -> ItemMatrix | None:
        """The current matrix snapshot (refreshed if a new version was published)."""
        with store_errors():
            ver = self.client.get(self.keys.items_ver)
        return self._matrix.get(self.client, self.keys, ver if isinstance(ver, bytes) else None)

    @property
    def matrix_loads(self) -> int:
        return self._matrix.loads

    # -- paths ----------------------------------------------------------------------------

    def _precomputed(
        self, user: str, k: int, seen: set[str], recs_raw: Any, ver_raw: Any, now_ms: int
    ) -> Recommendations | None:
        key = self.keys.recs(user)
        try:
            recs = orjson.loads(recs_raw)
            rver, uver = int(recs["ver"]), int(ver_raw)
            ts = int(recs.get("ts", 0))
            pairs = [(str(i), float(s)) for i, s in recs["items"] if isinstance(i, str)]
        except (ValueError, TypeError, KeyError, orjson.JSONDecodeError) as e:
            self._warn("recs", key, "corrupt precomputed list %s (%s): scoring instead", key, e)
            return None
        if rver < uver:
            return None  # ranked before the user's latest events
        age = self.precomputed_max_age_ms
        if age is not None and now_ms - ts > age:
            return None  # ranked against an older catalogue: let new items in
        if seen:
            pairs = [p for p in pairs if p[0] not in seen]
        m = self._matrix.current
        if m is not None and matrix_time_ms(m) >= ts:
            # The cached catalogue is newer than the list: an item it lacks was evicted (or
            # dropped) since the list was ranked. An older cache says nothing about it.
            index = m.index
            pairs = [p for p in pairs if p[0] in index]
        if len(pairs) < k:
            return None
        pairs = pairs[:k]
        return Recommendations(user, [p[0] for p in pairs], [p[1] for p in pairs], "precomputed")

    def _realtime(
        self, user: str, k: int, seen: set[str], vec_raw: Any, items_ver: Any
    ) -> Recommendations | None:
        key = self.keys.user(user)
        try:
            vec = decode_vector(vec_raw)
            if vec.shape[0] == 0:
                raise ValueError("empty vector")
        except (ValueError, TypeError) as e:
            self._warn("vec", key, "corrupt user vector in %s (%s): falling back", key, e)
            return None
        m = self._matrix.get(self.client, self.keys, items_ver)
        if m is None:
            return None
        if m.dim != vec.shape[0]:
            self._warn(
                "dim",
                key,
                "user vector %s has dim %d, item matrix %d: falling back",
                key,
                vec.shape[0],
                m.dim,
            )
            return None
        items, scores = score_vector(m, vec, seen, k)
        if not items:
            return None
        return Recommendations(user, items, scores, "realtime")

    def _fallbacks(self, pending: list[_Pending], k: int, items_ver: Any) -> list[Recommendations]:
        """Features, then segment popularity, then global popularity, for every pending user
        in one round trip (reads for paths a user may not need are cheap next to a second
        round trip)."""
        keys = self.keys
        pipe = self.client.pipeline(transaction=False)
        n_global = k + max(len(p.seen) for p in pending)
        pipe.zrange(keys.popularity(), 0, n_global - 1, desc=True, withscores=True)
        for p in pending:
            if p.tokens:
                pipe.hmget(keys.user_feature_vectors, list(p.tokens))
                for t in p.tokens:
                    pipe.zrange(
                        keys.popularity(t), 0, k + len(p.seen) - 1, desc=True, withscores=True
                    )
        with store_errors():
            replies = pipe.execute(raise_on_error=False)
        it = iter(replies)
        glob = self._ok(next(it), "pop", keys.popularity()) or []
        out: list[Recommendations] = []
        for p in pending:
            if not p.tokens:
                items, scores = merge_popular([glob], p.seen, k)
                out.append(Recommendations(p.user, items, scores, "popularity"))
                continue
            embs = self._ok(next(it), "ufe", keys.user_feature_vectors)
            segs = [self._ok(next(it), "pop", keys.popularity(t)) or [] for t in p.tokens]
            ans = self._feature_vector(p, k, embs, items_ver)
            if ans is None:
                items, scores = merge_popular(segs, p.seen, k)
                n_seg = len(items)
                if n_seg < k:
                    more_items, more_scores = merge_popular([glob], p.seen | set(items), k - n_seg)
                    items += more_items
                    scores += more_scores
                ans = Recommendations(p.user, items, scores, "features" if n_seg else "popularity")
            out.append(ans)
        return out

    def _feature_vector(
        self, p: _Pending, k: int, embs: Any, items_ver: Any
    ) -> Recommendations | None:
        """Cold-start user: the sum of their tokens' embeddings is the vector the model
        would serve them before their first event (p_u = Σ e(feature))."""
        if not isinstance(embs, list):
            return None
        key = self.keys.user_feature_vectors
        total: np.ndarray | None = None
        for token, raw in zip(p.tokens, embs, strict=True):
            if raw is None:
                continue
            try:
                v = decode_vector(raw)
                if total is not None and v.shape != total.shape:
                    raise ValueError(f"dim {v.shape[0]} differs from {total.shape[0]}")
            except ValueError as e:
                self._warn(
                    "ufe",
                    f"{key}/{token}",
                    "corrupt embedding %r in %s (%s): skipped",
                    token,
                    key,
                    e,
                )
                continue
            total = v.astype(np.float32) if total is None else total + v
        if total is None:
            return None
        m = self._matrix.get(self.client, self.keys, items_ver)
        if m is None or m.dim != total.shape[0]:
            if m is not None:
                self._warn(
                    "ufe-dim",
                    key,
                    "feature embeddings have dim %d, item matrix %d",
                    total.shape[0],
                    m.dim,
                )
            return None
        items, scores = score_vector(m, total, p.seen, k)
        return Recommendations(p.user, items, scores, "features") if items else None

    # -- helpers --------------------------------------------------------------------------

    def _ok(self, reply: Any, kind: str, key: str) -> Any:
        """A per-command error (WRONGTYPE: someone wrote another type there) is corrupt data,
        not an outage: warn and treat the key as absent."""
        if isinstance(reply, ResponseError):
            self._warn(kind, key, "unreadable key %s (%s): treated as absent", key, reply)
            return None
        if isinstance(reply, Exception):
            with store_errors():
                raise reply
        return reply

    def _seen(self, user: str, raw: Any) -> set[str]:
        if not raw:
            return set()
        return {decode_member(x) for x in raw}

    def _stored_tokens(self, user: str, raw: Any) -> tuple[str, ...]:
        if raw is None:
            return ()
        key = self.keys.user_features(user)
        try:
            feats = orjson.loads(raw)
            if not isinstance(feats, dict):
                raise TypeError("not a JSON object")
            return feature_tokens(feats)
        except (ValueError, TypeError, orjson.JSONDecodeError) as e:
            self._warn("uf", key, "corrupt user features in %s (%s): ignored", key, e)
            return ()


def _int_or_none(x: Any) -> int | None:
    try:
        return None if x is None else int(x)
    except ValueError:
        return None
