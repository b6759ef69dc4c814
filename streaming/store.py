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
from redis.retry import Retry

from streamrec.streaming.config import RedisConfig
from streamrec.streaming.keys import Keys, encode_vector
from streamrec.streaming.security import is_denial, redis_params

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

    Explicit timeouts and Retry: defaults changed between redis-py releases. A wrong password
    or a missing right is not retried (`security.is_denial`): retrying cannot fix it.
    Credentials and TLS files come from `security.redis_params`.
    """
    retry = Retry(
        ExponentialWithJitterBackoff(
            cap=cfg.backoff_cap_ms / 1000, base=cfg.backoff_base_ms / 1000
        ),
        cfg.retries,
        is_retryable=lambda e: not is_denial(e),
    )
    url, security = redis_params(cfg)
    return redis.Redis.from_url(
        url,
        **security,
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
    recs: Sequence[tuple[str, float]] | None = None  # None: this batch leaves the list as is
    seen: Sequence[tuple[str, int]] = ()  # (item, ts ms) to add to the bounded seen set
    count: int | None = None  # events of this user applied so far (absolute)
    features: Mapping[str, Any] | None = None
    trim: bool = True  # the seen set may exceed seen_max: trim it (False saves a command)


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
    # precomputed lists of users whose rows this batch does not rewrite (deferred refreshes)
    recs: Mapping[str, Sequence[tuple[str, float]]] = field(default_factory=dict)
    # the model version the lists (here and in users' rows) were ranked at; None: `version`
    recs_version: int | None = None
    recs_due: Sequence[str] = ()  # users of this batch whose lists are left for later
    # ids the model forgot (ModelConfig.evict_after_s): users lose their row, list and seen
    # set (their side features stay, for the features path if they come back); items lose
    # their row and leave the global popularity and every segment in `popularity_segments`
    evicted_users: Sequence[str] = ()
    evicted_items: Sequence[str] = ()
    popularity_segments: Sequence[str] = ()


# One script compares the offset fence and writes the whole batch, inside Redis: atomic like
# MULTI/EXEC, but the client sends one command with a few large arguments instead of ~5
# commands per user, which is where redis-py spent its time (measured: 250 ms of pipeline
# building per 4,096-event batch). Returns {"written"}, {"already"} (a retried call whose first
# run landed) or {"fence", stored...}. Numbers travel as strings, so nothing is rounded by
# Lua's doubles. Keys are built here from the prefix, as streaming.keys.Keys does.
_WRITE_BATCH = """
local h = cjson.decode(ARGV[1])
local uvecs, ivecs, matrix, mbias, fvecs = ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local okey = KEYS[1]
local nf = #h.fields
if nf > 0 then
  local cur = redis.call('HMGET', okey, unpack(h.fields))
  local same_new, same_exp = true, true
  for i = 1, nf do
    local c = cur[i]
    if c == false then c = nil end
    local e = h.expected[i]
    if e == cjson.null then e = nil end
    if c ~= h.new[i] then same_new = false end
    if c ~= e then same_exp = false end
  end
  if not same_exp then
    if same_new then return {'already'} end
    local out = {'fence'}
    for i = 1, nf do out[#out + 1] = cur[i] or '' end
    return out
  end
end
local p, vb, ver = h.prefix, h.vec_bytes, h.version
-- cmd key members..., in calls of at most 4000 members (unpack's stack limit)
local function each_chunk(cmd, key, list)
  for s = 1, #list, 4000 do
    redis.call(cmd, key, unpack(list, s, math.min(s + 3999, #list)))
  end
end
for _, id in ipairs(h.evict_users) do
  redis.call('DEL', p .. 'u:{' .. id .. '}', p .. 'recs:{' .. id .. '}', p .. 'seen:{' .. id .. '}')
end
each_chunk('SREM', h.due_key, h.evict_users)
for _, id in ipairs(h.evict_items) do redis.call('DEL', p .. 'i:{' .. id .. '}') end
for _, key in ipairs(h.pop_keys) do each_chunk('ZREM', key, h.evict_items) end
for i, u in ipairs(h.users) do
  local id = u[1]
  local key = p .. 'u:{' .. id .. '}'
  local vec = string.sub(uvecs, (i - 1) * vb + 1, i * vb)
  if u[3] ~= '' then
    redis.call('HSET', key, 'vec', vec, 'bias', u[2], 'ver', ver, 'n', u[3])
  else
    redis.call('HSET', key, 'vec', vec, 'bias', u[2], 'ver', ver)
  end
  if u[4] ~= '' then redis.call('SET', p .. 'recs:{' .. id .. '}', u[4]) end
  local seen = u[5]
  if #seen > 0 then
    local skey = p .. 'seen:{' .. id .. '}'
    local args = {}
    for j = 1, #seen, 2 do
      args[#args + 1] = seen[j + 1]
      args[#args + 1] = seen[j]
    end
    redis.call('ZADD', skey, unpack(args))
    if u[6] then redis.call('ZREMRANGEBYRANK', skey, 0, -(h.seen_max + 1)) end
  end
  if u[7] ~= '' then redis.call('SET', p .. 'uf:{' .. id .. '}', u[7]) end
end
for _, r in ipairs(h.recs) do
  redis.call('SET', p .. 'recs:{' .. r[1] .. '}', r[2])
end
local done = {}
for _, u in ipairs(h.users) do
  if u[4] ~= '' then done[#done + 1] = u[1] end
end
for _, r in ipairs(h.recs) do done[#done + 1] = r[1] end
each_chunk('SREM', h.due_key, done)
each_chunk('SADD', h.due_key, h.due)
for i, it in ipairs(h.items) do
  local vec = string.sub(ivecs, (i - 1) * vb + 1, i * vb)
  redis.call('HSET', p .. 'i:{' .. it[1] .. '}', 'vec', vec, 'bias', it[2], 'ver', ver)
  if it[3] ~= '' then redis.call('SET', p .. 'if:{' .. it[1] .. '}', it[3]) end
end
if h.matrix_ids then
  redis.call('SET', p .. 'items:ids', h.matrix_ids)
  redis.call('SET', p .. 'items:matrix', matrix)
  redis.call('SET', p .. 'items:bias', mbias)
  redis.call('SET', p .. 'items:ver', h.matrix_ver)
end
for _, f in ipairs(h.features) do
  local key = p .. f[1] .. ':{' .. f[2] .. '}'
  if f[3] == '' then redis.call('DEL', key) else redis.call('SET', key, f[3]) end
end
for i, t in ipairs(h.fvec_tokens) do
  redis.call('HSET', p .. 'ufe', t, string.sub(fvecs, (i - 1) * vb + 1, i * vb))
end
for _, seg in ipairs(h.popularity) do
  local key = p .. 'pop'
  if seg[1] ~= '' then key = key .. ':' .. seg[1] end
  local args = {}
  for j = 2, #seg, 2 do
    args[#args + 1] = seg[j + 1]
    args[#args + 1] = seg[j]
  end
  if #args > 0 then redis.call('ZADD', key, unpack(args)) end
end
if #h.meta > 0 then redis.call('HSET', p .. 'model', unpack(h.meta)) end
if nf > 0 then
  local args = {}
  for i = 1, nf do
    args[#args + 1] = h.fields[i]
    args[#args + 1] = h.new[i]
  end
  redis.call('HSET', okey, unpack(args))
end
return {'written'}
"""

_READ_SEEN = """
local out = {}
for i, key in ipairs(KEYS) do out[i] = redis.call('ZRANGE', key, 0, -1) end
return out
"""
_READ_SEEN_CHUNK = 2000  # keys per call: one call never blocks Redis for long

# Lua's unpack() has a stack limit (LUAI_MAXCSTACK, 8000): bound the pairs one ZADD receives.
_MAX_UNPACK_PAIRS = 3000


class RedisStore:
    """Writes batches and reads back what the trainer needs to resume."""

    def __init__(self, client: redis.Redis, keys: Keys, group: str):
        self.client = client
        self.keys = keys
        self.group = group
        self._script: Any = client.register_script(_WRITE_BATCH)
        self._read_seen: Any = client.register_script(_READ_SEEN)

    @property
    def offsets_key(self) -> str:
        return self.keys.offsets(self.group)

    def read_offsets(self) -> dict[str, int]:
        raw: dict[bytes, bytes] = self.client.hgetall(self.offsets_key)  # type: ignore[assignment]
        return {k.decode(): int(v) for k, v in raw.items()}

    def read_recs_due(self) -> list[str]:
        members: Iterable[bytes] = self.client.smembers(self.keys.recs_due(self.group))  # type: ignore[assignment]
        return sorted(m.decode() for m in members)

    def read_seen(self, users: Iterable[str]) -> dict[str, list[str]]:
        """Every user's seen set, oldest first, in one script call (a pipeline of one ZRANGE
        per user spent more time in redis-py than in Redis: py-spy, 4 % of the trainer)."""
        users = list(users)
        out: dict[str, list[str]] = {}
        for start in range(0, len(users), _READ_SEEN_CHUNK):
            chunk = users[start : start + _READ_SEEN_CHUNK]
            keys = [self.keys.seen(u) for u in chunk]
            reply = self._read_seen(keys=keys)
            for u, items in zip(chunk, reply, strict=True):
                out[u] = [x.decode() for x in items]
        return out

    def write_batch(self, batch: BatchWrite) -> str:
        """Apply the batch atomically if the fence holds. Returns "written", or "already" when a
        retried call finds its first run landed; raises FenceLost when the offsets moved.

        redis-py retries the call after a connection error; the fence makes a second run of
        a call that had landed a no-op, so a lost reply never applies a batch twice.
        """
        header, args = self._encode(batch)
        reply = self._script(keys=[self.offsets_key], args=[header, *args])
        status = reply[0].decode() if isinstance(reply[0], bytes) else str(reply[0])
        if status in ("written", "already"):
            return status
        fields = sorted(batch.new_offsets)
        stored = {
            f: (int(v) if v not in (b"", "") else None)
            for f, v in zip(fields, reply[1:], strict=True)
        }
        raise FenceLost(batch.expected_offsets, stored)

    def _encode(self, b: BatchWrite) -> tuple[bytes, list[bytes]]:
        now_ms = str(int(time.time() * 1000))
        ver = str(b.version)
        dim_bytes = 0
        users = []

        recs_ver = b.version if b.recs_version is None else b.recs_version

        def recs_json(recs: Sequence[tuple[str, float]]) -> str:
            # orjson writes tuples as arrays; scores are floats already (the model's tolist)
            doc = {"ver": recs_ver, "ts": int(now_ms), "items": recs}
            return orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY).decode()

        for u in b.users:
            recs = "" if u.recs is None else recs_json(u.recs)
            seen: list[str] = []
            for item, ts in u.seen:
                seen += (item, str(int(ts)))
            users.append(
                [
                    u.user,
                    _float32_text(u.bias),
                    "" if u.count is None else str(int(u.count)),
                    recs,
                    seen[: 2 * _MAX_UNPACK_PAIRS],
                    u.trim,
                    _json_or_empty(u.features),
                ]
            )
        uvecs = _stack(u.vec for u in b.users)
        ivecs = _stack(it.vec for it in b.items)
        if b.users:
            dim_bytes = len(uvecs) // len(b.users)
        elif b.items:
            dim_bytes = len(ivecs) // len(b.items)
        items = [
            [
                it.item,
                _float32_text(it.bias),
                orjson.dumps(it.features).decode() if it.features else "",
            ]
            for it in b.items
        ]
        features = [
            ["uf", ident, "" if f is None else orjson.dumps(f).decode()]
            for ident, f in b.user_features.items()
        ] + [
            ["if", ident, "" if f is None else orjson.dumps(f).decode()]
            for ident, f in b.item_features.items()
        ]
        tokens = list(b.user_feature_vectors)
        fvecs = _stack(b.user_feature_vectors[t] for t in tokens)
        if tokens and not dim_bytes:
            dim_bytes = len(fvecs) // len(tokens)
        popularity = []
        for segment, scores in b.popularity.items():
            for start in range(0, len(scores), _MAX_UNPACK_PAIRS):
                row: list[str] = ["" if segment is None else segment]
                for item, score in scores[start : start + _MAX_UNPACK_PAIRS]:
                    row += (item, repr(float(score)))
                popularity.append(row)
        meta: list[str] = []
        for key, value in {"version": b.version, "updated_at": now_ms, **b.model_meta}.items():
            meta += (key, str(value))
        fields = sorted(b.new_offsets)
        header: dict[str, Any] = {
            "prefix": self.keys.prefix,
            "fields": fields,
            "expected": [
                None if b.expected_offsets.get(f) is None else str(b.expected_offsets[f])
                for f in fields
            ],
            "new": [str(b.new_offsets[f]) for f in fields],
            "version": ver,
            "vec_bytes": dim_bytes,
            "seen_max": b.seen_max,
            "users": users,
            "items": items,
            "features": features,
            "fvec_tokens": tokens,
            "popularity": popularity,
            "recs": [[user, recs_json(r)] for user, r in b.recs.items()],
            "due_key": self.keys.recs_due(self.group),
            "due": list(b.recs_due),
            "meta": meta,
            "evict_users": list(b.evicted_users),
            "evict_items": list(b.evicted_items),
            "pop_keys": [self.keys.popularity(None)]
            + [self.keys.popularity(seg) for seg in b.popularity_segments]
            if b.evicted_items
            else [],
        }
        matrix = mbias = b""
        if b.matrix is not None:
            ids, vectors, biases = b.matrix
            header["matrix_ids"] = orjson.dumps(ids).decode()
            header["matrix_ver"] = str(b.version if b.matrix_version is None else b.matrix_version)
            matrix, mbias = encode_vector(vectors), encode_vector(biases)
        return orjson.dumps(header), [uvecs, ivecs, matrix, mbias, fvecs]


def _float32_text(x: float) -> str:
    """The shortest text that reads back as the same float32 ("0.01234567", not float64's
    "0.01234566979110241"): the model's biases are float32, and the 9 bytes this saves keep a
    user's hash in a smaller allocation class."""
    return str(np.float32(x))


def _json_or_empty(features: Mapping[str, Any] | None) -> str:
    return orjson.dumps(features).decode() if features else ""


def _stack(vectors: Iterable[np.ndarray]) -> bytes:
    vs = list(vectors)
    return encode_vector(np.stack(vs)) if vs else b""


def delete_prefix(client: Any, prefix: str, chunk: int = 500) -> int:
    """Delete every key under `prefix` with SCAN + DEL (never KEYS, which blocks a shared
    Redis); glob characters in the prefix are escaped. Returns how many keys went."""
    pattern = "".join("\\" + c if c in "*?[]\\" else c for c in prefix) + "*"
    deleted = 0
    batch: list[bytes] = []
    for key in client.scan_iter(match=pattern, count=chunk):
        batch.append(key)
        if len(batch) >= chunk:
            deleted += client.delete(*batch)
            batch.clear()
    if batch:
        deleted += client.delete(*batch)
    return int(deleted)
