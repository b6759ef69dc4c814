"""Redis as the view: one fenced MULTI/EXEC per batch, absolute values only.

Every write is the new state (HSET/SET/ZADD), never an increment, and it is tagged with the
offsets it covers, so re-running a batch after a crash rewrites the same values. The
transaction applies only if the stored offsets still hold what this writer last wrote
(WATCH on the offsets hash): a writer that lost its partitions, or a Redis that lost its
last writes, then writes nothing and is told so (`FenceLost`), instead of guessing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
import redis
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.exceptions import WatchError
from redis.retry import Retry

from streamrec.streaming.config import RedisConfig
from streamrec.streaming.keys import Keys, encode_vector

log = logging.getLogger(__name__)


class FenceLost(RuntimeError):
    """The stored offsets moved under us: another writer owns these partitions now, or Redis
    lost writes. Not retriable as is: re-read the offsets and re-sync."""

    retriable = False

    def __init__(self, expected: Mapping[str, int | None], stored: Mapping[str, int | None]):
        super().__init__(
            f"offset fence lost: expected {dict(expected)}, Redis holds {dict(stored)}"
        )
        self.expected = dict(expected)
        self.stored = dict(stored)


def connect(cfg: RedisConfig) -> redis.Redis:
    """A client that retries connection errors with jittered exponential backoff.

    Explicit timeouts and Retry (PITFALLS.md): defaults changed between redis-py releases.
    """
    retry = Retry(
        ExponentialWithJitterBackoff(
            cap=cfg.backoff_cap_ms / 1000, base=cfg.backoff_base_ms / 1000
        ),
        cfg.retries,
    )
    return redis.Redis.from_url(
        cfg.url,
        socket_timeout=cfg.socket_timeout_ms / 1000,
        socket_connect_timeout=cfg.connect_timeout_ms / 1000,
        retry=retry,
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
        health_check_interval=30,
    )


@dataclass
class UserRow:
    user: str
    vec: np.ndarray
    bias: float
    ts: int  # ms, newest event of the user applied
    off: str  # "partition:offset" of that event
    recs: Sequence[tuple[str, float]] = ()
    seen: Sequence[tuple[str, int]] = ()  # (item, ts ms) to add to the bounded seen set
    count: int | None = None  # events of this user applied so far (absolute)
    features: Mapping[str, Any] | None = None


@dataclass
class ItemRow:
    item: str
    vec: np.ndarray
    bias: float
    features: Mapping[str, Any] | None = None


@dataclass
class BatchWrite:
    """All state one batch changes, and the offsets it moves from and to."""

    expected_offsets: dict[str, int | None]  # field -> value Redis must hold now (None: absent)
    new_offsets: dict[str, int]
    version: int
    users: list[UserRow] = field(default_factory=list)
    items: list[ItemRow] = field(default_factory=list)
    matrix: tuple[list[str], np.ndarray, np.ndarray] | None = None  # ids, vectors, biases
    popularity: dict[str | None, list[tuple[str, float]]] = field(default_factory=dict)
    model_meta: dict[str, Any] = field(default_factory=dict)
    seen_max: int = 500
    # catalogue side features: id -> features, None deletes them
    user_features: dict[str, Mapping[str, Any] | None] = field(default_factory=dict)
    item_features: dict[str, Mapping[str, Any] | None] = field(default_factory=dict)
    matrix_version: int | None = None  # readers refresh their cached matrix when it changes
    # user-feature token ("country=DE") -> embedding, for readers serving new users
    user_feature_vectors: dict[str, np.ndarray] = field(default_factory=dict)


class RedisStore:
    """Writes batches and reads back what the trainer needs to resume."""

    def __init__(self, client: redis.Redis, keys: Keys, group: str, max_fence_attempts: int = 5):
        self.client = client
        self.keys = keys
        self.group = group
        self.max_fence_attempts = max_fence_attempts

    @property
    def offsets_key(self) -> str:
        return self.keys.offsets(self.group)

    def read_offsets(self) -> dict[str, int]:
        raw: dict[bytes, bytes] = self.client.hgetall(self.offsets_key)  # type: ignore[assignment]
        return {k.decode(): int(v) for k, v in raw.items()}

    def read_seen(self, users: Iterable[str]) -> dict[str, list[str]]:
        users = list(users)
        pipe = self.client.pipeline(transaction=False)
        for u in users:
            pipe.zrange(self.keys.seen(u), 0, -1)
        return {u: [x.decode() for x in r] for u, r in zip(users, pipe.execute(), strict=True)}

    def write_batch(self, batch: BatchWrite) -> str:
        """Apply the batch atomically if the fence holds. Returns "written" or "already"
        (a retried EXEC whose first run had landed); raises FenceLost otherwise."""
        fields = sorted(batch.new_offsets)
        for _attempt in range(self.max_fence_attempts):
            pipe = self.client.pipeline(transaction=True)
            try:
                pipe.watch(self.offsets_key)
                stored = self._stored(pipe, fields)
                if stored == {f: batch.new_offsets[f] for f in fields} and stored != {
                    f: batch.expected_offsets.get(f) for f in fields
                }:
                    return "already"
                if any(stored[f] != batch.expected_offsets.get(f) for f in fields):
                    raise FenceLost(batch.expected_offsets, stored)
                pipe.multi()
                self._queue(pipe, batch)
                replies = pipe.execute()
                _check_replies(replies)
                return "written"
            except WatchError:
                # The offsets key changed, or the connection broke while watching: find out
                # whether our transaction landed before deciding anything.
                log.info("Redis transaction interrupted; re-reading the offset fence")
                continue
            finally:
                pipe.reset()
        stored = self._stored(self.client, fields)
        if stored == {f: batch.new_offsets[f] for f in fields}:
            return "already"
        raise FenceLost(batch.expected_offsets, stored)

    def _stored(self, conn: Any, fields: list[str]) -> dict[str, int | None]:
        vals = conn.hmget(self.offsets_key, fields) if fields else []
        return {f: (None if v is None else int(v)) for f, v in zip(fields, vals, strict=True)}

    def _queue(self, pipe: Any, b: BatchWrite) -> None:
        k = self.keys
        now_ms = int(time.time() * 1000)
        for u in b.users:
            mapping: dict[str, Any] = {
                "vec": encode_vector(u.vec),
                "bias": repr(float(u.bias)),
                "ver": b.version,
                "ts": u.ts,
                "off": u.off,
                "updated_at": now_ms,
            }
            if u.count is not None:
                mapping["n"] = u.count
            pipe.hset(k.user(u.user), mapping=mapping)
            pipe.set(
                k.recs(u.user),
                orjson.dumps(
                    {"ver": b.version, "ts": now_ms, "items": [[i, float(s)] for i, s in u.recs]}
                ),
            )
            if u.seen:
                skey = k.seen(u.user)
                pipe.zadd(skey, {item: ts for item, ts in u.seen})
                pipe.zremrangebyrank(skey, 0, -(b.seen_max + 1))
            if u.features:
                pipe.set(k.user_features(u.user), orjson.dumps(u.features))
        for it in b.items:
            pipe.hset(
                k.item(it.item),
                mapping={
                    "vec": encode_vector(it.vec),
                    "bias": repr(float(it.bias)),
                    "ver": b.version,
                },
            )
            if it.features:
                pipe.set(k.item_features(it.item), orjson.dumps(it.features))
        if b.matrix is not None:
            ids, vectors, biases = b.matrix
            pipe.set(k.items_ids, orjson.dumps(ids))
            pipe.set(k.items_matrix, encode_vector(vectors))
            pipe.set(k.items_bias, encode_vector(biases))
            pipe.set(k.items_ver, b.version if b.matrix_version is None else b.matrix_version)
        for key_of, feats in (
            (k.user_features, b.user_features),
            (k.item_features, b.item_features),
        ):
            for ident, f in feats.items():
                if f is None:
                    pipe.delete(key_of(ident))
                else:
                    pipe.set(key_of(ident), orjson.dumps(f))
        if b.user_feature_vectors:
            pipe.hset(
                k.user_feature_vectors,
                mapping={t: encode_vector(v) for t, v in b.user_feature_vectors.items()},
            )
        for segment, scores in b.popularity.items():
            if scores:
                pipe.zadd(k.popularity(segment), {i: float(s) for i, s in scores})
        meta = {"version": b.version, "updated_at": now_ms, **b.model_meta}
        pipe.hset(k.model, mapping={key: str(v) for key, v in meta.items()})
        if b.new_offsets:
            pipe.hset(self.offsets_key, mapping={f: str(v) for f, v in b.new_offsets.items()})


def _check_replies(replies: list[Any]) -> None:
    """EXEC does not roll back: a failed command leaves the others applied. Surface it."""
    for r in replies:
        if isinstance(r, Exception):
            raise r
