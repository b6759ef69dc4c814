"""Pipeline benchmark: consume -> learn -> Redis throughput against raw kafka-python, and
freshness (publish -> readable in Redis) under a steady load.

    streamrec bench pipeline [--events 1000000] [--rate 5000 --duration-s 60] [--json FILE]

Throughput: the stream is published first; then, in the same run, a bare KafkaConsumer reads
the same topic doing no work (the ceiling), and the trainer consumes it (parse, learn, fenced
Redis write, commit). Both figures and their ratio are printed and written as JSON.

Freshness: a publisher sends at a steady rate while the trainer runs; for one event in
`--sample-every` the benchmark notes when `send` was called and that it is the user's nth
event, and a reader (a process of its own) polls the user's event count (`n` in their hash,
written with their vector) until it reaches n. Reported as p50/p95/p99 and a PNG: the
distribution, and every sample over the run, where a stall shows as a vertical streak.
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing as mp
import os
import platform
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import orjson

log = logging.getLogger("bench.pipeline")

# The freshness reader looks every 2 ms: a sample is timed when it is seen, up to 2 ms (plus
# one Redis round trip) after it became readable, so the figure errs late, never early. At
# 1 ms its rounds were a good part of this process's CPU, taken from the trainer it measures.
_READ_EVERY_S = 0.002
# The publisher sends what is due, then sleeps at least this long.
_PUBLISH_TICK_S = 0.001


def _config(args: argparse.Namespace, tag: str) -> Any:
    from streamrec.consumers.config import Config

    cfg = Config.from_env()
    return cfg.replace(
        kafka={
            "events_topic": f"bench.{tag}.events",
            "dlq_topic": f"bench.{tag}.dlq",
            "items_topic": f"bench.{tag}.items",
            "users_topic": f"bench.{tag}.users",
            "group_id": f"bench-{tag}",
            "partitions": args.partitions,
        },
        redis={"prefix": f"bench{tag}:"},
        trainer={
            "checkpoint_dir": str(Path(args.out) / "ckpt" / tag),
            "checkpoint_every_events": 10_000_000,
            "checkpoint_every_s": 3600.0,
            "batch_max_events": args.batch,
        },
    )


def _topics(cfg: Any) -> None:
    from streamrec.streaming.admin import create_topics

    k = cfg.kafka
    create_topics(
        k,
        {k.events_topic: k.partitions, k.dlq_topic: 1, k.items_topic: 1, k.users_topic: 1},
        compacted={k.items_topic, k.users_topic},
    )


def _cleanup(cfg: Any) -> None:
    from streamrec.streaming.admin import delete_topics
    from streamrec.streaming.store import connect, delete_prefix

    k = cfg.kafka
    delete_topics(k, [k.events_topic, k.dlq_topic, k.items_topic, k.users_topic])
    delete_prefix(connect(cfg.redis), cfg.redis.prefix)


def _consume(cfg: Any, n: int, parse: bool = False, keep: int = 0) -> tuple[float, list[Any]]:
    """Records/s of a bare kafka-python consumer over the same topic: the ceiling.

    With `parse`, each record is also decoded and validated as the trainer does (its rules),
    and the first `keep` events are returned: the ceiling of any trainer that must read each
    record in Python, and the events for timing the model alone.
    """
    from kafka import TopicPartition

    from streamrec.consumers.trainer import event_rules
    from streamrec.streaming import kafka_io
    from streamrec.streaming.events import Rejected
    from streamrec.streaming.events import parse as parse_event

    rules = event_rules(cfg)
    c = kafka_io.make_consumer(cfg.kafka, None)
    parts = c.partitions_for_topic(cfg.kafka.events_topic) or set()
    tps = [TopicPartition(cfg.kafka.events_topic, p) for p in parts]
    c.assign(tps)
    c.seek_to_beginning(*tps)
    got = 0
    kept: list[Any] = []
    t0 = time.perf_counter()
    while got < n:
        for recs in c.poll(timeout_ms=500, max_records=cfg.kafka.max_poll_records).values():
            got += len(recs)
            if parse:
                now_ms = int(time.time() * 1000)
                evs = [parse_event(r.value, rules, r.timestamp, now_ms) for r in recs]
                if len(kept) < keep:
                    good = [e for e in evs if not isinstance(e, Rejected)]
                    kept.extend(good[: keep - len(kept)])
    dt = time.perf_counter() - t0
    c.close()
    return got / dt, kept


def _learn_alone(cfg: Any, events: Sequence[Any], batch: int) -> float:
    """Events/s of the trainer's model learning `events` in batches of `batch`, with no Kafka
    and no Redis; timed from the second batch (the first pays one-off set-up)."""
    from streamrec.model.online import OnlineRecommender

    model = OnlineRecommender(cfg.model)
    model.warm_up()
    parts = [events[s : s + batch] for s in range(0, len(events), batch)]
    model.learn(parts[0], touched=False)
    t0 = time.perf_counter()
    for p in parts[1:]:
        model.learn(p, touched=False)
    return (len(events) - len(parts[0])) / (time.perf_counter() - t0)


def throughput(args: argparse.Namespace) -> dict[str, Any]:
    from streamrec.consumers.trainer import Trainer
    from streamrec.streaming import kafka_io
    from streamrec.streaming.synthetic import SyntheticConfig, SyntheticStream

    tag = uuid.uuid4().hex[:8]
    cfg = _config(args, tag)
    _topics(cfg)
    try:
        stream = SyntheticStream(
            SyntheticConfig(seed=1, n_users=args.users, n_items=args.items, n_events=args.events)
        )
        producer = kafka_io.make_producer(cfg.kafka, linger_ms=20)
        t0 = time.perf_counter()
        kafka_io.publish(
            producer, cfg.kafka.events_topic, stream.events(), progress=True, total=args.events
        )
        producer.close()
        publish_rate = args.events / (time.perf_counter() - t0)
        raw, _ = _consume(cfg, args.events)
        print(f"raw kafka-python consume: {raw:,.0f} records/s")
        # The two halves of the trainer's work, each alone: reading and validating every
        # record in Python, and the model learning them. A trainer doing both in one
        # interpreter runs at most at 1 / (1/a + 1/b) (the GIL serialises the Python parts).
        parsed, kept = _consume(cfg, args.events, parse=True, keep=min(args.events, 200_000))
        learn = _learn_alone(cfg, kept, args.batch)
        del kept
        serial = 1 / (1 / parsed + 1 / learn)
        print(
            f"consume + parse alone: {parsed:,.0f} records/s; learn alone: {learn:,.0f} "
            f"events/s; both in one interpreter at most {serial:,.0f} events/s"
        )

        first_batch: list[float] = []
        trainer: Trainer

        def on_batch(stats: Any) -> None:
            if not first_batch:
                first_batch.append(time.perf_counter())
            if stats.events + stats.dead_letters >= args.events:
                trainer.stop()

        trainer = Trainer(cfg, on_batch=on_batch)
        t_start = time.perf_counter()
        stats = trainer.run()
        t_end = time.perf_counter()
        # From the first batch on: the trainer's start (TF import, group join) is not throughput.
        steady = stats.events / (t_end - first_batch[0]) if first_batch else 0.0
        return {
            "events": args.events,
            "publish_events_per_s": round(publish_rate),
            "raw_consume_records_per_s": round(raw),
            "consume_parse_records_per_s": round(parsed),
            "learn_alone_events_per_s": round(learn),
            "serial_bound_events_per_s": round(serial),
            "trainer_events_per_s": round(steady),
            "trainer_wall_s_including_start": round(t_end - t_start, 2),
            "ratio_trainer_to_raw": round(steady / raw, 3),
            "batches": stats.batches,
            "batch_max_events": args.batch,
        }
    finally:
        _cleanup(cfg)


def _freshness_reader(redis_cfg: Any, prefix: str, samples: Any, results: Any) -> None:
    """Poll each sampled user's event count until it reaches the sample's n; send back
    {sample id: seconds from send to seen}, then how many were never seen.

    A user's events share a partition (keyed by user), so they apply in publish order: n >= nth
    means the sampled event is in Redis. Samples are looked at from the moment they are sent,
    not once the producer has its acknowledgement (which would time the acknowledgement too).
    perf_counter is CLOCK_MONOTONIC, one clock for every process of the machine.
    """
    import queue

    from streamrec.streaming.keys import Keys
    from streamrec.streaming.store import connect

    keys = Keys(prefix)
    r = connect(redis_cfg)
    results.put("ready")
    pending: dict[int, tuple[str, int, float]] = {}
    timed: dict[int, float] = {}
    finished_at: float | None = None
    while True:
        try:
            while True:
                item = samples.get_nowait()
                if item is None:
                    finished_at = time.perf_counter()
                else:
                    pending[item[0]] = item[1:]
        except queue.Empty:
            pass
        if finished_at is not None and (not pending or time.perf_counter() - finished_at > 60):
            break
        if pending:
            items = list(pending.items())
            pipe = r.pipeline(transaction=False)
            for _, (u, _, _) in items:
                pipe.hget(keys.user(u), "n")
            counts = pipe.execute()
            now = time.perf_counter()
            for (sid, (_, nth, t_send)), n_applied in zip(items, counts, strict=True):
                if n_applied is not None and int(n_applied) >= nth:
                    timed[sid] = now - t_send
                    del pending[sid]
        time.sleep(_READ_EVERY_S)
    results.put(timed)
    results.put(len(pending))


def freshness(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    from streamrec.streaming import kafka_io
    from streamrec.streaming.keys import Keys
    from streamrec.streaming.store import connect
    from streamrec.streaming.synthetic import SyntheticConfig, SyntheticStream

    tag = uuid.uuid4().hex[:8]
    cfg = _config(args, tag)
    _topics(cfg)
    n = int(args.rate * args.duration_s) + args.warmup_events
    events = list(
        SyntheticStream(
            SyntheticConfig(seed=2, n_users=args.users, n_items=args.items, n_events=n)
        ).events()
    )
    # The trainer runs as its own process, as in production: in a thread here it would share
    # one GIL with this publisher and the reader, and measure their contention instead.
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMREC_")}
    env.update(cfg.to_env())
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    log_path = out / "freshness-trainer.log"
    with open(log_path, "wb") as log_file:
        trainer = subprocess.Popen(
            [sys.executable, "-m", "streamrec.consumers.cli", "train"],
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    keys = Keys(cfg.redis.prefix)
    r = connect(cfg.redis)
    # Warm up: time nothing until the trainer has learned and written a first batch (TF
    # import, group join, first trace). Waiting for its lease alone timed its start-up.
    warm = events[: args.warmup_events]
    events = events[args.warmup_events :]
    n = len(events)
    warm_producer = kafka_io.make_producer(cfg.kafka, linger_ms=1)
    kafka_io.publish(warm_producer, cfg.kafka.events_topic, warm)
    warm_producer.close()
    offsets_key = keys.offsets(cfg.kafka.group_id)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        stored = sum(int(v) for v in r.hvals(offsets_key))
        if stored >= len(warm):
            break
        if trainer.poll() is not None:
            _cleanup(cfg)
            raise RuntimeError(f"the trainer exited during warm-up: see {log_path}")
        time.sleep(0.2)
    else:
        trainer.kill()
        _cleanup(cfg)
        raise RuntimeError(f"the trainer did not learn the warm-up events: see {log_path}")

    published: Counter[str] = Counter(str(e["user"]) for e in warm)
    # The reader is a process of its own: as a thread of this one it shared the interpreter
    # lock with the publishing loop (tens of microseconds per send, 5,000 a second), so its
    # looks came late by whatever the publisher held.
    ctx = mp.get_context("spawn")
    samples: Any = ctx.Queue()
    results: Any = ctx.Queue()
    rd = ctx.Process(
        target=_freshness_reader,
        args=(cfg.redis, cfg.redis.prefix, samples, results),
        daemon=True,
    )
    rd.start()
    if results.get(timeout=120) != "ready":
        raise RuntimeError("the freshness reader did not start")
    # The project's producer settings (5 ms linger), as an application would publish: at
    # 1 ms linger the publisher's sender thread woke for every few records and this process
    # took 70 % of a core at 5k events/s, 24 % at 5 ms (both measured), CPU the trainer under
    # test shares on 2 cores. The linger is part of the figure: timing starts at `send`.
    producer = kafka_io.make_producer(cfg.kafka)
    futures: dict[int, Any] = {}
    # Encoded before the clock starts: this process shares the 2 cores with the trainer, so
    # it does no more than sending while the trainer is measured.
    wire = [(str(e["user"]), str(e["user"]).encode(), orjson.dumps(e)) for e in events]
    t0 = time.perf_counter()
    interval = 1.0 / args.rate
    sent = 0
    while sent < n:
        # Every event due by now goes out at once, then a sleep of at least _PUBLISH_TICK_S:
        # a sleep per event (0.2 ms at 5k/s) cost more CPU in wake-ups than the sends did.
        due = min(n, int((time.perf_counter() - t0) / interval) + 1)
        for i in range(sent, due):
            user, key, value = wire[i]
            t_send = time.perf_counter()
            fut = producer.send(cfg.kafka.events_topic, key=key, value=value)
            published[user] += 1
            if i % args.sample_every == 0:
                samples.put((i, user, published[user], t_send))
                futures[i] = fut
        sent = due
        time.sleep(max(_PUBLISH_TICK_S, t0 + sent * interval - time.perf_counter()))
    producer.flush()
    achieved = n / (time.perf_counter() - t0)
    samples.put(None)
    timed: dict[int, float] = results.get(timeout=120)
    unresolved: int = results.get(timeout=10)
    rd.join(timeout=30)
    # A sample whose send failed never reaches Redis as that event: not a latency.
    kept = sorted(i for i in timed if not futures[i].failed())
    latencies = [timed[i] for i in kept]
    trainer.send_signal(signal.SIGTERM)
    try:
        trainer.wait(timeout=60)
    except subprocess.TimeoutExpired:
        trainer.kill()
    producer.close()
    _cleanup(cfg)
    lat_ms = np.array(latencies) * 1000
    res = {
        "target_rate_per_s": args.rate,
        "achieved_rate_per_s": round(achieved),
        "duration_s": args.duration_s,
        "samples": int(lat_ms.size),
        "unresolved_samples": unresolved,
        "p50_ms": round(float(np.percentile(lat_ms, 50)), 1) if lat_ms.size else None,
        "p95_ms": round(float(np.percentile(lat_ms, 95)), 1) if lat_ms.size else None,
        "p99_ms": round(float(np.percentile(lat_ms, 99)), 1) if lat_ms.size else None,
        "max_ms": round(float(lat_ms.max()), 1) if lat_ms.size else None,
        "batch_max_wait_ms": cfg.trainer.batch_max_wait_ms,
        "trainer_log": str(log_path),
    }
    if lat_ms.size:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        # Left the distribution; right the same samples over the run, which shows whether the
        # tail is spread out or a few stalls (each a vertical streak).
        fig, (ax, ax_t) = plt.subplots(1, 2, figsize=(11, 3.6), width_ratios=(1, 1.3))
        ax.hist(lat_ms, bins=60, color="tab:blue")
        for q, style in (("p50_ms", "--"), ("p99_ms", ":")):
            ax.axvline(res[q], color="black", linestyle=style, label=f"{q[:-3]} {res[q]} ms")
            ax_t.axhline(res[q], color="black", linestyle=style)
        ax.set_xlabel("publish -> readable in Redis (ms)")
        ax.set_ylabel("sampled events")
        ax.set_title(f"Freshness at {achieved:,.0f} events/s")
        ax.legend()
        ax_t.scatter(np.array(kept) / args.rate, lat_ms, s=2, color="tab:blue", alpha=0.5)
        ax_t.set_xlabel("sent at (s into the run)")
        ax_t.set_ylabel("publish -> readable (ms)")
        ax_t.set_title("Over the run")
        fig.tight_layout()
        path = out / "freshness.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        res["plot"] = str(path)
    return res


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="streamrec bench pipeline", description=__doc__)
    p.add_argument("--events", type=int, default=1_000_000)
    p.add_argument("--users", type=int, default=100_000)
    p.add_argument("--items", type=int, default=20_000)
    p.add_argument("--partitions", type=int, default=4)
    p.add_argument("--batch", type=int, default=4096)
    p.add_argument("--rate", type=float, default=5000.0)
    p.add_argument("--duration-s", type=float, default=60.0)
    p.add_argument("--sample-every", type=int, default=25)
    p.add_argument("--warmup-events", type=int, default=2000, help="learned before timing")
    p.add_argument("--skip", choices=["throughput", "freshness"], action="append", default=[])
    p.add_argument("--out", default="reports/bench")
    p.add_argument("--json", default=None, help="write results here (default OUT/pipeline.json)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("kafka").setLevel(logging.ERROR)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {
        "benchmark": "pipeline",
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}",
        "date": time.strftime("%Y-%m-%d"),
    }
    if "throughput" not in args.skip:
        result["throughput"] = throughput(args)
        t = result["throughput"]
        print(
            f"throughput: trainer {t['trainer_events_per_s']:,} events/s, raw consume "
            f"{t['raw_consume_records_per_s']:,} records/s, ratio {t['ratio_trainer_to_raw']}"
        )
    if "freshness" not in args.skip:
        result["freshness"] = freshness(args, out)
        f = result["freshness"]
        print(
            f"freshness at {f['achieved_rate_per_s']:,} events/s: p50 {f['p50_ms']} ms, "
            f"p95 {f['p95_ms']} ms, p99 {f['p99_ms']} ms ({f['samples']} samples)"
        )
    path = Path(args.json) if args.json else out / "pipeline.json"
    path.write_text(json.dumps(result, indent=2))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
