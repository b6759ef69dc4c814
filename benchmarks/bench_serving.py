"""Serving latency of `Recommender.recommend(user, 10)` against a plain Redis GET, and Redis
memory per user.

Why against a GET: the client's own cost (one pipelined round trip of four commands, JSON
decoding, seen filtering; for the real-time path a 100k x 64 product and a top-k) only means
something next to the cheapest possible read of the same key on the same machine in the same
run. Concurrent clients are forked processes, one per client, as deployed readers are
(threads in one process would mostly measure their queue for the interpreter lock).

The state is written with the trainer's own `RedisStore.write_batch`, so the memory figures are
those of the real layout, under a throwaway prefix deleted afterwards with SCAN + DEL.

    python benchmarks/bench_serving.py --json reports/bench_serving.json
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import orjson
from threadpoolctl import threadpool_limits

from streamrec.streaming.client import Recommender, score_vector
from streamrec.streaming.config import RedisConfig
from streamrec.streaming.keys import Keys, decode_vector
from streamrec.streaming.store import BatchWrite, RedisStore, UserRow, connect, delete_prefix


def _seed(
    client: Any, keys: Keys, n_items: int, dim: int, n_users: int, seen: int, top: int
) -> tuple[list[str], list[str]]:
    """Half the users get a fresh precomputed list, half one older than their vector."""
    rng = np.random.default_rng(0)
    store = RedisStore(client, keys, group="bench")
    ids = [f"item{n}" for n in range(n_items)]
    vectors = (rng.standard_normal((n_items, dim)) * 0.1).astype(np.float32)
    biases = (rng.standard_normal(n_items) * 0.01).astype(np.float32)
    field = "bench:0"
    offset = 0
    version = 100_002  # a trainer that has run for a while: versions and counts take bytes
    now = int(time.time() * 1000)
    users = [f"user{n}" for n in range(n_users)]
    chunk = 250
    for start in range(0, n_users, chunk):
        rows = []
        for u in users[start : start + chunk]:
            picks = rng.choice(n_items, size=seen + top, replace=False)
            rows.append(
                UserRow(
                    user=u,
                    vec=(rng.standard_normal(dim) * 0.1).astype(np.float32),
                    bias=float(np.float32(rng.standard_normal() * 0.05)),
                    recs=[(ids[j], 1.0 - 0.01 * r) for r, j in enumerate(picks[seen:])],
                    seen=[(ids[j], now - r) for r, j in enumerate(picks[:seen])],
                    count=seen,
                )
            )
        batch = BatchWrite(
            expected_offsets={field: offset or None},
            new_offsets={field: offset + len(rows)},
            version=version,
            users=rows,
            matrix=(ids, vectors, biases) if start == 0 else None,
            matrix_version=1,
            model_meta={"dim": dim},
            seen_max=seen,
        )
        store.write_batch(batch)
        offset += len(rows)
    pre, rt = users[0::2], users[1::2]
    pipe = client.pipeline(transaction=False)
    for u in rt:  # a list ranked before the user's latest vector: the real-time path
        pipe.set(keys.recs(u), orjson.dumps({"ver": version - 1, "ts": now, "items": []}))
    pipe.execute()
    return pre, rt


def _timed_calls(fn: Callable[[str], Any], users: Sequence[str], t: int, per: int) -> list[float]:
    """Client `t`'s `per` calls over its slice of `users`; per-call latency in ms."""
    out: list[float] = []
    n = len(users)
    for r in range(per):
        u = users[(t * per + r) % n]
        t0 = time.perf_counter_ns()
        fn(u)
        out.append((time.perf_counter_ns() - t0) / 1e6)
    return out


def _run(
    fn: Callable[[str], Any], users: Sequence[str], requests: int
) -> tuple[list[float], float]:
    """One client in this process: per-call latency in ms, wall seconds."""
    w0 = time.perf_counter()
    lat = _timed_calls(fn, users, 0, requests)
    return lat, time.perf_counter() - w0


def _run_procs(
    fn: Callable[[str], Any],
    users: Sequence[str],
    requests: int,
    procs: int,
    counters: dict[str, int] | None = None,
) -> tuple[list[float], float]:
    """`requests` calls over `procs` forked processes: concurrent clients as deployed (one Python
    process each), not threads queueing for one interpreter lock. Each child has its own
    connections (redis-py reconnects after fork) and its copy of the cached item matrix."""
    ctx = mp.get_context("fork")
    per = requests // procs
    barrier = ctx.Barrier(procs + 1)
    results = ctx.Queue()

    def worker(t: int) -> None:
        # One BLAS thread per serving process when several share the cores, as `streamrec
        # serve` runs: 8 processes x 2 OpenBLAS threads doubled the real-time p50 (48 vs 22 ms).
        threadpool_limits(1, user_api="blas")
        barrier.wait()
        out = _timed_calls(fn, users, t, per)
        results.put((out, dict(counters or {})))

    ps = [ctx.Process(target=worker, args=(t,)) for t in range(procs)]
    for p in ps:
        p.start()
    barrier.wait()
    w0 = time.perf_counter()
    lat: list[float] = []
    start = dict(counters or {})
    for _ in ps:
        out, seen = results.get(timeout=600)
        lat += out
        if counters is not None:  # the children counted in their own copies
            for key, value in seen.items():
                counters[key] += value - start.get(key, 0)
    wall = time.perf_counter() - w0
    for p in ps:
        p.join()
    return lat, wall


def _pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, round(q / 100 * (len(s) - 1)))]


def _mean_memory(client: Any, names: Sequence[str]) -> float:
    """Mean `MEMORY USAGE` of these keys, in one round trip."""
    pipe = client.pipeline(transaction=False)
    for name in names:
        pipe.memory_usage(name, samples=0)
    return statistics.fmean(int(x or 0) for x in pipe.execute())


def _memory(
    client: Any, keys: Keys, users: Sequence[str], dim: int, scratch_db: int
) -> dict[str, Any]:
    raw = dim * 4
    kinds = {"user_hash": keys.user, "recs": keys.recs, "seen": keys.seen}
    per = {name: _mean_memory(client, [key_of(u) for u in users]) for name, key_of in kinds.items()}
    total = sum(per.values())
    enc = client.object("encoding", keys.user(users[0]))
    matrix = int(client.memory_usage(keys.items_matrix, samples=0) or 0)
    # A heavy user's seen set at the trainer's default bound (seen_max = 500): past the
    # zset listpack limit (128 entries by default) it becomes a skiplist.
    full = keys.seen("__full_seen__")
    client.zadd(full, {f"item{n}": 1_767_225_600_000 + n for n in range(500)})
    seen_500 = int(client.memory_usage(full, samples=0) or 0)
    client.delete(full)
    layout = _default_layout_memory(client, keys, users, scratch_db)
    try:
        conf = client.config_get("hash-max-listpack-value")
    except Exception:  # CONFIG may be disabled on a managed Redis
        conf = {}
    return {
        "raw_vector_bytes": raw,
        "bytes_per_user": {k: round(v, 1) for k, v in per.items()},
        "bytes_per_user_total": round(total, 1),
        "user_hash_encoding": enc.decode() if isinstance(enc, bytes) else str(enc),
        "ratio_user_hash_to_raw": round(per["user_hash"] / raw, 2),
        "ratio_all_user_keys_to_raw": round(total / raw, 2),
        "items_matrix_bytes": matrix,
        "seen_500_items_bytes": seen_500,
        "hash_max_listpack_value": conf.get("hash-max-listpack-value"),
        "default_layout": layout,
    }


def _default_layout_memory(
    client: Any, keys: Keys, users: Sequence[str], scratch_db: int
) -> dict[str, Any]:
    """The user hash under the key names a deployment has (default prefix `sr:`), beside the
    floor of one key per user: a bare string of the raw vector bytes under the same name.

    Why a second measurement: `MEMORY USAGE` counts the key name, and jemalloc rounds each
    allocation up to a size class, so the benchmark's throwaway prefix (14 bytes instead of 3)
    costs a user 16 B, 0.06x of the vector. The copies go to an empty scratch logical
    database (DUMP/RESTORE, byte for byte the trainer's encoding) and are deleted after; if
    that database holds anything, nothing is written and the figure is left out.
    """
    db = client.connection_pool.connection_kwargs.get("db", 0)
    if scratch_db == db:
        return {"skipped": f"scratch db {scratch_db} is the benchmark's own database"}
    kwargs = dict(client.connection_pool.connection_kwargs)
    kwargs["db"] = scratch_db
    pool = client.connection_pool
    scratch = type(client)(connection_pool=type(pool)(pool.connection_class, **kwargs))
    try:
        if scratch.dbsize():
            return {"skipped": f"scratch db {scratch_db} is not empty"}
        names = [Keys(RedisConfig.prefix).user(u) for u in users]
        pipe = client.pipeline(transaction=False)
        for u in users:
            pipe.dump(keys.user(u))
            pipe.hget(keys.user(u), "vec")
        dumps = pipe.execute()
        pipe = scratch.pipeline(transaction=False)
        for name, blob in zip(names, dumps[0::2], strict=True):
            pipe.restore(name, 0, blob)
        pipe.execute()
        hashes = _mean_memory(scratch, names)
        pipe = scratch.pipeline(transaction=False)
        for name, vec in zip(names, dumps[1::2], strict=True):
            pipe.set(name, vec)  # replaces the hash
        pipe.execute()
        floors = _mean_memory(scratch, names)
        scratch.delete(*names)
    finally:
        scratch.close()
    return {
        "prefix": RedisConfig.prefix,
        "key_example": names[0],
        "user_hash_bytes": round(hashes, 1),
        "raw_string_floor_bytes": round(floors, 1),
    }


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench_serving", description=__doc__.split("\n")[0])
    p.add_argument("--redis-url", default=os.environ.get("STREAMREC_REDIS_URL", RedisConfig.url))
    p.add_argument("--items", type=int, default=100_000)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--users", type=int, default=2000)
    p.add_argument("--seen", type=int, default=50, help="seen items per user")
    p.add_argument("--top", type=int, default=20, help="precomputed list length")
    p.add_argument("--requests", type=int, default=4000, help="per path and concurrency")
    p.add_argument("--threads", default="1,8", help="concurrent clients (processes)")
    p.add_argument("--k", type=int, default=10)
    p.add_argument(
        "--scratch-db",
        type=int,
        default=15,
        help="empty logical database for the memory figure under the deployed key names",
    )
    p.add_argument("--json", help="write the results here")
    args = p.parse_args(argv)
    threads = [int(t) for t in args.threads.split(",")]

    prefix = f"bench{uuid.uuid4().hex[:8]}:"
    keys = Keys(prefix)
    cfg = RedisConfig(url=args.redis_url, prefix=prefix)
    client = connect(cfg)
    results: dict[str, Any] = {
        "items": args.items,
        "dim": args.dim,
        "users": args.users,
        "k": args.k,
        "seen_per_user": args.seen,
        "requests_per_run": args.requests,
        "concurrency": "one process per client (forked), each with its own connections",
        "cpus": os.cpu_count(),
        "redis_version": client.info("server").get("redis_version"),
        "runs": [],
    }
    try:
        t0 = time.perf_counter()
        pre, rt = _seed(client, keys, args.items, args.dim, args.users, args.seen, args.top)
        results["seed_seconds"] = round(time.perf_counter() - t0, 2)
        rec = Recommender(client, prefix=prefix, precomputed_max_age_ms=None)
        t0 = time.perf_counter()
        rec.item_matrix()
        results["matrix_load_ms"] = round((time.perf_counter() - t0) * 1000, 1)

        wrong: dict[str, int] = {"precomputed": 0, "realtime": 0}

        def call(path: str) -> Callable[[str], Any]:
            def f(u: str) -> None:
                if rec.recommend(u, args.k).source != path:
                    wrong[path] += 1

            return f

        def get(u: str) -> None:
            client.get(keys.recs(u))

        # The real-time path's own floor: the same scoring with the vectors already in hand,
        # no Redis, at the same concurrency; on 2 cores 8 processes queue for it as for GET.
        matrix = rec.item_matrix()
        assert matrix is not None
        pipe = client.pipeline(transaction=False)
        for u in rt:
            pipe.hget(keys.user(u), "vec")
        vecs = {u: decode_vector(raw) for u, raw in zip(rt, pipe.execute(), strict=True)}

        def score(u: str) -> None:
            score_vector(matrix, vecs[u], set(), args.k)

        for path, users in (("precomputed", pre), ("realtime", rt)):
            for n in threads:
                _run(call(path), users, min(200, args.requests))  # warm up
                floor: list[float] = []
                if n == 1:
                    base, base_wall = _run(get, users, args.requests)
                    lat, wall = _run(call(path), users, args.requests)
                    if path == "realtime":
                        floor, _ = _run(score, users, args.requests)
                else:
                    base, base_wall = _run_procs(get, users, args.requests, n)
                    lat, wall = _run_procs(call(path), users, args.requests, n, wrong)
                    if path == "realtime":
                        floor, _ = _run_procs(score, users, args.requests, n)
                row = {
                    "path": path,
                    "threads": n,
                    "clients": n,
                    "p50_ms": round(_pct(lat, 50), 3),
                    "p99_ms": round(_pct(lat, 99), 3),
                    "throughput_rps": round(len(lat) / wall),
                    "get_p50_ms": round(_pct(base, 50), 3),
                    "get_p99_ms": round(_pct(base, 99), 3),
                    "get_throughput_rps": round(len(base) / base_wall),
                }
                if floor:
                    row["score_only_p50_ms"] = round(_pct(floor, 50), 3)
                    row["score_only_p99_ms"] = round(_pct(floor, 99), 3)
                row["ratio_p50"] = round(row["p50_ms"] / row["get_p50_ms"], 2)
                row["ratio_p99"] = round(row["p99_ms"] / row["get_p99_ms"], 2)
                results["runs"].append(row)
        results["wrong_source"] = wrong
        results["memory"] = _memory(client, keys, pre[:200] + rt[:200], args.dim, args.scratch_db)
    finally:
        results["deleted_keys"] = delete_prefix(client, prefix)
        client.close()

    head = (
        f"{'path':<12} {'cli':>3} {'p50 ms':>8} {'p99 ms':>8} {'req/s':>7} "
        f"{'GET p50':>8} {'GET p99':>8} {'GET/s':>7} {'x p50':>6} {'x p99':>6}"
    )
    print(
        f"recommend(user, {args.k}): {args.items} items x dim {args.dim}, "
        f"{args.users} users, {args.requests} requests per row; cli = concurrent client processes"
    )
    print(head)
    for r in results["runs"]:
        print(
            f"{r['path']:<12} {r['threads']:>3} {r['p50_ms']:>8.3f} {r['p99_ms']:>8.3f} "
            f"{r['throughput_rps']:>7} {r['get_p50_ms']:>8.3f} {r['get_p99_ms']:>8.3f} "
            f"{r['get_throughput_rps']:>7} {r['ratio_p50']:>6.2f} {r['ratio_p99']:>6.2f}"
        )
        if "score_only_p99_ms" in r:
            print(
                f"{'':<12} {'':>3} scoring alone (no Redis): p50 {r['score_only_p50_ms']:.3f} "
                f"p99 {r['score_only_p99_ms']:.3f} ms"
            )
    m = results["memory"]
    print(
        f"matrix load {results['matrix_load_ms']} ms; wrong source: {results['wrong_source']}\n"
        f"memory per user: {m['bytes_per_user']} (total {m['bytes_per_user_total']} B) vs raw "
        f"vector {m['raw_vector_bytes']} B: user hash {m['ratio_user_hash_to_raw']}x "
        f"({m['user_hash_encoding']}), all user keys {m['ratio_all_user_keys_to_raw']}x; "
        f"item matrix {m['items_matrix_bytes']} B; a 500-item seen set "
        f"{m['seen_500_items_bytes']} B (hash-max-listpack-value {m['hash_max_listpack_value']})"
    )
    lay = m["default_layout"]
    if "skipped" in lay:
        print(f"default key layout: skipped ({lay['skipped']})")
    else:
        print(
            f"default key layout ({lay['key_example']}): user hash {lay['user_hash_bytes']} B = "
            f"{lay['user_hash_bytes'] / m['raw_vector_bytes']:.2f}x raw; a bare string of the "
            f"vector under the same name {lay['raw_string_floor_bytes']} B"
        )
    if args.json:
        with open(args.json, "wb") as f:
            f.write(orjson.dumps(results, option=orjson.OPT_INDENT_2))
        print(f"wrote {args.json}")
    return 1 if any(results["wrong_source"].values()) else 0


if __name__ == "__main__":
    sys.exit(main())
