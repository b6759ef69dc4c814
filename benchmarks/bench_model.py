"""Model-only benchmark: learn throughput, top-k latency, batch scoring, memory per row.

    python -m benchmarks.bench_model --json reports/bench_model.json
    python benchmarks/bench_model.py --quick

Learn throughput counts everything `learn` does for pre-built event objects: id lookups,
negative sampling, the compiled step, popularity and the LearnResult (no Kafka, no Redis, no
JSON parsing). Numbers depend on what else runs on the machine: the report records the load.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:  # not Linux
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _events(rng: np.random.Generator, n: int, n_users: int, n_items: int) -> list[Any]:
    from streamrec.model.testing import Event

    users = rng.integers(0, n_users, n)
    items = np.minimum(rng.zipf(1.2, n) - 1, n_items - 1)
    items = (items * 7919) % n_items  # popular items spread over the id space
    return [
        Event(f"u{u}", f"i{i}", "view", None, 1_700_000_000_000 + j)
        for j, (u, i) in enumerate(zip(users.tolist(), items.tolist(), strict=True))
    ]


def _model(dim: int, **kw: Any) -> Any:
    from streamrec.model.config import ModelConfig
    from streamrec.model.online import OnlineRecommender

    return OnlineRecommender(ModelConfig(dim=dim, **kw))


def _register(rec: Any, n_users: int, n_items: int) -> None:
    """Every id seen once, so tables are at full size before timing."""
    from streamrec.model.testing import Event

    n = max(n_users, n_items)
    evs = [Event(f"u{j % n_users}", f"i{j % n_items}", "view", None, 0) for j in range(n)]
    for s in range(0, n, 8192):
        rec.learn(evs[s : s + 8192])


def bench_learn(
    args: argparse.Namespace,
    rng: np.random.Generator,
    optimizer: str,
    loss: str,
    negatives: int,
) -> list[dict[str, Any]]:
    rec = _model(args.dim, optimizer=optimizer, loss=loss, negatives=negatives)
    _register(rec, args.users, args.items)
    out = []
    for batch in args.batches:
        n_batches = max(3, args.events // batch)
        evs = _events(rng, batch * (n_batches + 1), args.users, args.items)
        parts = [evs[s : s + batch] for s in range(0, len(evs), batch)]
        rec.learn(parts[0])  # first call of this shape family (no retrace expected)
        step_s = _time_steps(rec)
        cpu0, t0 = time.process_time(), time.perf_counter()
        for p in parts[1:]:
            rec.learn(p)
        wall = time.perf_counter() - t0
        cpu = time.process_time() - cpu0
        _untime_steps(rec)
        n = batch * (len(parts) - 1)
        row = {
            "optimizer": optimizer,
            "loss": loss,
            "negatives": negatives,
            "batch": batch,
            "events": n,
            "events_per_s": n / wall,
            "cpu_s_per_million": cpu / n * 1e6,
            # Wall time inside the compiled TF step, and the events/s learn would reach if
            # everything around it (ids, sampling, popularity, results) cost nothing.
            "step_share": step_s[0] / wall,
            "step_only_events_per_s": n / step_s[0] if step_s[0] else None,
            "traces": rec.tracing_count,
        }
        if loss == "bpr":
            # the events/s the products alone allow: learn cannot pass it at this size
            row["products_only_events_per_s"] = batch / _products_s(batch, negatives, args.dim)
        out.append(row)
        print(
            f"learn {loss:7s} {optimizer:7s} neg {negatives:4d} batch {batch:5d}: "
            f"{n / wall:10,.0f} events/s ({cpu / n * 1e6:.2f} CPU-s per million events; "
            f"TF step {row['step_share']:.0%} of the time, {n / step_s[0]:,.0f} events/s alone"
            + (
                f"; its three products alone {row['products_only_events_per_s']:,.0f} events/s)"
                if "products_only_events_per_s" in row
                else ")"
            ),
            flush=True,
        )
    return out


def _products_s(batch: int, negatives: int, dim: int, reps: int = 20) -> float:
    """Seconds per batch of the three matrix products BPR against shared negatives needs
    (scores, then the gradients of users and of negatives; see losses.bpr_shared), with
    nothing else: a floor under the step at this size, measured on this machine."""
    import tensorflow as tf

    g = tf.random.Generator.from_seed(0)
    a = g.normal([batch, dim + 2])
    b = g.normal([negatives, dim + 2])
    z = g.normal([batch, negatives])
    bn = g.normal([negatives, dim + 1])
    ab = g.normal([batch, dim + 1])

    def once() -> None:
        tf.matmul(a, b, transpose_b=True)
        tf.matmul(z, bn)
        tf.matmul(z, ab, transpose_a=True).numpy()  # waits for all three (one stream)

    once()
    t0 = time.perf_counter()
    for _ in range(reps):
        once()
    return (time.perf_counter() - t0) / reps


def _time_steps(rec: Any) -> list[float]:
    """Wrap the model's compiled steps so that the wall time spent in them is summed into the
    returned one-element list (until `_untime_steps`): the split between TensorFlow and the
    Python around it, which decides where throughput work pays."""
    spent = [0.0]
    rec._bench_steps = dict(rec._steps)

    def timed(f: Any) -> Any:
        def call(*a: Any) -> Any:
            t = time.perf_counter()
            out = f(*a)
            bool(out[1])  # learn reads this flag at once; wait for the step here too
            spent[0] += time.perf_counter() - t
            return out

        call.experimental_get_tracing_count = f.experimental_get_tracing_count  # type: ignore[attr-defined]
        return call

    rec._steps = {k: timed(f) for k, f in rec._steps.items()}
    return spent


def _untime_steps(rec: Any) -> None:
    rec._steps.update(rec._bench_steps)


def bench_topk(args: argparse.Namespace, rng: np.random.Generator) -> list[dict[str, Any]]:
    out = []
    for n_items in args.topk_items:
        rec = _model(args.dim)
        n_users = 2000
        _register(rec, n_users, n_items)
        rec.learn(_events(rng, 4096, n_users, n_items))
        t0 = time.perf_counter()
        rec.item_vectors()  # the item matrix is rebuilt once per model change
        rebuild = time.perf_counter() - t0
        lat = []
        for j in range(args.topk_reps):
            t0 = time.perf_counter()
            rec.recommend(f"u{j % n_users}", 10)
            lat.append(time.perf_counter() - t0)
        users = [f"u{j}" for j in range(min(n_users, args.scoring_users))]
        t0 = time.perf_counter()
        rec.recommend_many(users, 10)
        many = time.perf_counter() - t0
        row = {
            "items": n_items,
            "top10_ms_p50": statistics.median(lat) * 1e3,
            "top10_ms_p99": float(np.percentile(lat, 99)) * 1e3,
            "item_matrix_rebuild_ms": rebuild * 1e3,
            "batch_scoring_users_per_s": len(users) / many,
        }
        out.append(row)
        print(
            f"top-10 over {n_items:7,d} items: p50 {row['top10_ms_p50']:.2f} ms, "
            f"p99 {row['top10_ms_p99']:.2f} ms; item matrix rebuild {rebuild * 1e3:.1f} ms; "
            f"batch scoring {row['batch_scoring_users_per_s']:,.0f} users/s",
            flush=True,
        )
    return out


def _small_batches(
    rng: np.random.Generator, n: int, n_users: int, n_items: int, t0: int
) -> list[list[Any]]:
    """`n` batches of 1-16 view events; a tenth of the user ids are past the registered ones
    (new users), items Zipf-popular as in `_events`."""
    from streamrec.model.testing import Event

    out = []
    for b in range(n):
        size = int(rng.integers(1, 17))
        users = rng.integers(0, n_users + n_users // 10, size)
        items = (np.minimum(rng.zipf(1.2, size) - 1, n_items - 1) * 7919) % n_items
        out.append(
            [
                Event(f"u{u}", f"i{i}", "view", None, t0 + 16 * b + j)
                for j, (u, i) in enumerate(zip(users.tolist(), items.tolist(), strict=True))
            ]
        )
    return out


class _Timers:
    """Wall time inside `learn`'s parts (packing, the step on either path), summed per
    iteration, by wrapping the functions `OnlineRecommender.learn_columns` calls."""

    def __init__(self) -> None:
        from streamrec.model import online

        self.mod = online
        self.spent = {"pack": 0.0, "step": 0.0}
        self.saved = (online.pack, online.small_step.run, online.steps.run)

        def timed(f: Any, key: str) -> Any:
            def call(*a: Any, **kw: Any) -> Any:
                t = time.perf_counter()
                out = f(*a, **kw)
                self.spent[key] += time.perf_counter() - t
                return out

            return call

        online.pack = timed(online.pack, "pack")
        online.small_step.run = timed(online.small_step.run, "step")
        online.steps.run = timed(online.steps.run, "step")

    def take(self) -> tuple[float, float]:
        out = (self.spent["pack"], self.spent["step"])
        self.spent = {"pack": 0.0, "step": 0.0}
        return out

    def close(self) -> None:
        self.mod.pack, self.mod.small_step.run, self.mod.steps.run = self.saved


def _small_loop(
    rec: Any, batches: list[list[Any]], seen: dict[str, set[str]], reference_every: int = 0
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """learn a batch, then top-10 for its first user without the items they have seen.

    Every `reference_every`-th iteration goes through the paths this replaced (the compiled
    step, a full item-matrix rebuild), interleaved so that both see the same machine load:
    (timings of the current paths, timings of the replaced ones)."""
    fast_max = rec.small_batch_max
    timers = _Timers()
    keys = ("total", "cpu", "learn", "recommend", "pack", "step")
    out: dict[str, list[float]] = {k: [] for k in keys}
    ref_out: dict[str, list[float]] = {k: [] for k in keys}
    try:
        for j, batch in enumerate(batches):
            reference = reference_every > 0 and j % reference_every == reference_every - 1
            rec.small_batch_max = 0 if reference else fast_max
            c0, t0 = time.process_time(), time.perf_counter()
            rec.learn(batch)
            if reference:
                rec._mutations += 1
            t1 = time.perf_counter()
            user = batch[0].user
            mine = seen.setdefault(user, set())
            mine.update(e.item for e in batch if e.user == user)
            rec.recommend(user, 10, exclude=mine)
            t2, c2 = time.perf_counter(), time.process_time()
            pack_s, step_s = timers.take()
            for key, v in (
                ("total", t2 - t0),
                ("cpu", c2 - c0),
                ("learn", t1 - t0),
                ("recommend", t2 - t1),
                ("pack", pack_s),
                ("step", step_s),
            ):
                (ref_out if reference else out)[key].append(v)
    finally:
        rec.small_batch_max = fast_max
        timers.close()
    return out, ref_out


def _floors(rec: Any, batch: list[Any], n_items: int, reps: int = 200) -> dict[str, float]:
    """p50 ms of the bare parts a learn + recommend cannot go below on this machine: the
    compiled step on a packed batch of this size, and numpy's scores + argpartition over the
    cached item matrix (no id strings, no exclusions)."""
    from streamrec.model import batch as packing

    u = rec.users.ids.rows([e.user for e in batch])
    i = rec.items.ids.rows([e.item for e in batch])
    w = rec._weights([e.type for e in batch], None)
    rng = np.random.default_rng(0)
    packed = packing.pack(rec.config, rec.users, rec.items, rec.sampler, rng, u, i, w)
    assert packed is not None
    step = rec._step(packed.key)
    import tensorflow as tf

    args = (tf.constant(packed.ints), tf.constant(packed.sizes), tf.constant(packed.floats))
    vecs, biases = rec._item_matrix()
    p = vecs[0].copy()

    def tf_step() -> None:
        bool(step(*args)[1])

    def topk() -> None:
        scores = vecs @ p + biases
        np.argpartition(scores, n_items - 10)[n_items - 10 :]

    def p50(f: Any) -> float:
        lat = []
        for _ in range(reps):
            t = time.perf_counter()
            f()
            lat.append(time.perf_counter() - t)
        return statistics.median(lat) * 1e3

    # Timing the compiled step applies it `reps` times to these rows: fine, the timed runs
    # are over by then.
    return {"tf_step_ms": p50(tf_step), "numpy_top10_ms": p50(topk)}


def bench_small(args: argparse.Namespace, rng: np.random.Generator) -> dict[str, Any]:
    """Learn a batch of 1-16 events, then recommend for one of its users: p50 and p99 per
    catalogue size, split into learn (packing, step, the rest) and recommend."""
    out: dict[str, Any] = {"p50_ms": {}, "detail": {}}
    for variant in args.small_variants:
        loss, _, opt = variant.partition(":")
        for n_items in args.small_items:
            n_users = max(10_000, n_items)
            rec = _model(_default_dim(), loss=loss, optimizer=opt or "sgd")
            _register(rec, n_users, n_items)
            rec.warm_up()
            t0 = 1_700_000_000_000
            seen: dict[str, set[str]] = {}
            _small_loop(rec, _small_batches(rng, args.small_warm, n_users, n_items, t0), seen, 2)
            timed = _small_batches(rng, args.small_reps * 5 // 4, n_users, n_items, t0 + 10**8)
            fast, ref = _small_loop(rec, timed, seen, reference_every=5)
            floors = _floors(rec, timed[0], n_items)
            row = {
                "items": n_items,
                "users": n_users,
                "loss": loss,
                "optimizer": opt or "sgd",
                "iterations": len(fast["total"]),
                "reference_iterations": len(ref["total"]),
                **{f"{k}_ms_p50": statistics.median(v) * 1e3 for k, v in fast.items()},
                "total_ms_p99": float(np.percentile(fast["total"], 99)) * 1e3,
                "learn_other_ms_p50": statistics.median(
                    [
                        a - b - c
                        for a, b, c in zip(fast["learn"], fast["pack"], fast["step"], strict=True)
                    ]
                )
                * 1e3,
                # the same loop through the replaced paths, in this run: the speed-up's baseline
                "reference_total_ms_p50": statistics.median(ref["total"]) * 1e3,
                "reference_cpu_ms_p50": statistics.median(ref["cpu"]) * 1e3,
                "reference_step_ms_p50": statistics.median(ref["step"]) * 1e3,
                "reference_recommend_ms_p50": statistics.median(ref["recommend"]) * 1e3,
                "floor": floors,
            }
            key = f"{variant}/{n_items}"
            out["detail"][key] = row
            if variant == args.small_variants[0]:
                out["p50_ms"][str(n_items)] = row["total_ms_p50"]
            print(
                f"small batches (1-16 events) {variant} {n_items:7,d} items: learn + recommend "
                f"p50 {row['total_ms_p50']:.2f} ms, p99 {row['total_ms_p99']:.2f} ms, "
                f"CPU p50 {row['cpu_ms_p50']:.2f} ms "
                f"(learn {row['learn_ms_p50']:.2f}: pack {row['pack_ms_p50']:.2f}, step "
                f"{row['step_ms_p50']:.2f}, rest {row['learn_other_ms_p50']:.2f}; recommend "
                f"{row['recommend_ms_p50']:.2f}); replaced paths in this run "
                f"{row['reference_total_ms_p50']:.2f} ms, CPU {row['reference_cpu_ms_p50']:.2f} "
                f"(compiled step "
                f"{row['reference_step_ms_p50']:.2f}, recommend with rebuild "
                f"{row['reference_recommend_ms_p50']:.2f}); floors: compiled step "
                f"{floors['tf_step_ms']:.2f}, numpy top-10 {floors['numpy_top10_ms']:.2f} ms",
                flush=True,
            )
    return out


def _default_dim() -> int:
    from streamrec.model.config import ModelConfig

    return ModelConfig().dim


def bench_memory(args: argparse.Namespace) -> dict[str, Any]:
    gc.collect()
    rec = _model(args.dim)
    rec.learn(_events(np.random.default_rng(0), 10, 10, 10))
    gc.collect()
    before = _rss_bytes()
    _register(rec, args.users, args.items)
    gc.collect()
    after = _rss_bytes()
    rows = args.users + args.items
    raw = (args.dim + 1) * 4  # float32 embedding + bias per id
    per_row = (after - before) / rows
    accounted = _accounted_bytes(rec)
    row = {
        "users": args.users,
        "items": args.items,
        "rss_delta_bytes": after - before,
        "bytes_per_id": per_row,
        "raw_parameter_bytes_per_id": raw,
        "overhead_factor": per_row / raw,
        "table_capacity_rows": {
            "users": rec.users.emb.capacity,
            "items": rec.items.emb.capacity,
        },
        "accounted_bytes": accounted,
        "accounted_bytes_per_id": sum(accounted.values()) / rows,
    }
    print(
        f"memory: RSS grew {per_row:,.0f} bytes per id vs {raw} raw parameter bytes "
        f"({per_row / raw:.1f}x; includes allocator slack and freed event objects); "
        f"accounted {row['accounted_bytes_per_id']:,.0f} bytes per id: "
        + ", ".join(f"{k} {v / rows:,.0f}" for k, v in accounted.items()),
        flush=True,
    )
    return row


def _accounted_bytes(rec: Any) -> dict[str, int]:
    """What the model's own structures hold: tables at capacity, id maps, per-row arrays."""
    tables = 0
    for side in (rec.users, rec.items):
        for t in side.tables:
            per = (t.dim or 1) * 4
            tables += t.capacity * per * (2 if t.acc is not None else 1)
    ids = 0
    for side in (rec.users, rec.items):
        ids += sys.getsizeof(side.ids) + sys.getsizeof(side.ids.ids)
        ids += sum(sys.getsizeof(s) for s in side.ids.ids)
    arrays = rec.users.count.nbytes + rec.items.count.nbytes
    arrays += rec.popularity._counts.nbytes + rec.sampler.buffer.nbytes
    return {"tables": tables, "id_maps": ids, "counters": arrays}


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", type=Path, help="write the figures here")
    ap.add_argument("--quick", action="store_true", help="small sizes, seconds not minutes")
    ap.add_argument("--threads", type=int, default=2, help="TF intra-op threads")
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--users", type=int, default=100_000)
    ap.add_argument("--items", type=int, default=50_000)
    ap.add_argument(
        "--negatives",
        type=int,
        nargs="+",
        default=None,
        help="shared negatives per batch, one run each (default: the model's default, and 64)",
    )
    ap.add_argument("--events", type=int, default=200_000, help="timed events per batch size")
    ap.add_argument("--batches", type=int, nargs="+", default=[256, 1024, 4096])
    ap.add_argument("--topk-items", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--topk-reps", type=int, default=200)
    ap.add_argument("--scoring-users", type=int, default=1000)
    ap.add_argument(
        "--variants", nargs="+", default=["bpr:sgd"], help="loss:optimizer pairs to time"
    )
    ap.add_argument("--small-items", type=int, nargs="+", default=[2_000, 100_000])
    ap.add_argument("--small-reps", type=int, default=600, help="timed small batches per size")
    ap.add_argument("--small-warm", type=int, default=300, help="untimed small batches first")
    ap.add_argument(
        "--small-variants",
        nargs="+",
        default=["bpr:sgd", "softmax:adagrad"],
        help="loss:optimizer pairs for the small-batch figure (the first one is reported)",
    )
    ap.add_argument(
        "--only-small", action="store_true", help="only the small-batch figure (for profiling)"
    )
    args = ap.parse_args(argv)
    if args.negatives is None:
        from streamrec.model.config import ModelConfig

        args.negatives = sorted({ModelConfig().negatives, 64}, reverse=True)
    if args.quick:
        args.users, args.items, args.events = 20_000, 10_000, 40_000
        args.topk_items, args.topk_reps, args.scoring_users = [10_000], 50, 200
        args.small_reps, args.small_warm = 300, 100

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from streamrec.model.runtime import configure_threads

    configure_threads(args.threads, 1)
    import tensorflow as tf

    rng = np.random.default_rng(0)
    report: dict[str, Any] = {
        "machine": {
            "python": platform.python_version(),
            "tensorflow": tf.__version__,
            "numpy": np.__version__,
            "cpus": os.cpu_count(),
            "loadavg_start": os.getloadavg(),
            "threads": args.threads,
        },
        "sizes": {"users": args.users, "items": args.items, "dim": args.dim},
        "learn": [],
    }
    if not args.only_small:
        for negatives in args.negatives:
            for variant in args.variants:
                loss, _, opt = variant.partition(":")
                report["learn"] += bench_learn(args, rng, opt or "sgd", loss, negatives)
        report["topk"] = bench_topk(args, rng)
    small = bench_small(args, rng)
    report["small_batch_learn_recommend_ms"] = small["p50_ms"]
    report["small_batch_detail"] = small["detail"]
    if not args.only_small:
        report["memory"] = bench_memory(args)
    report["machine"]["loadavg_end"] = os.getloadavg()
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
