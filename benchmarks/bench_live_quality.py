"""What the live-quality sampler costs the trainer: events/s with it on vs off, in one run.

    python benchmarks/bench_live_quality.py [--events 100000] [--rounds 2] [--rate 0.02]

One stream is published once; trainers (in this process, one after another, each with its
own consumer group and Redis prefix) consume all of it from the start, alternating sampler
off and on, `--rounds` times each. Reported: each run's events/s from its first batch on,
the median per setting, their ratio (on / off), and the share of the on-runs' time spent in
the sampler's phase ("quality"). The order alternates by round. The machine may be shared:
compare only within one run, and trust the phase share over the events/s ratio when other
load comes and goes.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import uuid
from pathlib import Path
from typing import Any


def _config(tag: str, topic_tag: str, args: argparse.Namespace, rate: float) -> Any:
    from streamrec.consumers.config import Config

    return Config.from_env().replace(
        kafka={
            "events_topic": f"bench.{topic_tag}.events",
            "dlq_topic": f"bench.{topic_tag}.dlq",
            "items_topic": f"bench.{topic_tag}.items",
            "users_topic": f"bench.{topic_tag}.users",
            "group_id": f"bench-{tag}",
            "partitions": 2,
        },
        redis={"prefix": f"bench{tag}:"},
        trainer={
            "checkpoint_dir": str(Path(args.out) / "ckpt" / tag),
            "checkpoint_every_events": 10_000_000,
            "checkpoint_every_s": 3600.0,
            "quality_sample_rate": rate,
        },
    )


def _run(cfg: Any, n: int) -> dict[str, Any]:
    from streamrec.consumers.trainer import Trainer

    first: list[float] = []
    trainer: Trainer

    def on_batch(stats: Any) -> None:
        if not first:
            first.append(time.perf_counter())
        if stats.events + stats.dead_letters >= n:
            trainer.stop()

    trainer = Trainer(cfg, on_batch=on_batch)
    stats = trainer.run()
    wall = time.perf_counter() - first[0]
    samples = sum(trainer.metrics.live_samples.labels(u)._value.get() for u in ("known", "cold"))
    return {
        "rate": cfg.trainer.quality_sample_rate,
        "events_per_s": stats.events / wall,
        "quality_s": stats.phase_seconds.get("quality", 0.0),
        "wall_s": wall,
        "batches": stats.batches,
        "samples": samples,
    }


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--events", type=int, default=100_000)
    p.add_argument("--users", type=int, default=10_000)
    p.add_argument("--items", type=int, default=2_000)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--rate", type=float, default=0.02, help="the sampler's rate when on")
    p.add_argument("--out", default="reports/live_quality")
    args = p.parse_args()

    from streamrec.streaming import kafka_io
    from streamrec.streaming.admin import create_topics, delete_topics
    from streamrec.streaming.store import connect, delete_prefix
    from streamrec.streaming.synthetic import SyntheticConfig, SyntheticStream

    topic_tag = uuid.uuid4().hex[:8]
    base = _config(topic_tag, topic_tag, args, 0.0)
    k = base.kafka
    create_topics(
        k.bootstrap, {k.events_topic: 2, k.dlq_topic: 1, k.items_topic: 1, k.users_topic: 1}
    )
    runs: list[dict[str, Any]] = []
    tags: list[str] = []
    try:
        stream = SyntheticStream(
            SyntheticConfig(seed=1, n_users=args.users, n_items=args.items, n_events=args.events)
        )
        producer = kafka_io.make_producer(k, linger_ms=20)
        kafka_io.publish(producer, k.events_topic, stream.events())
        producer.close()
        for r in range(args.rounds):
            # off first in even rounds, on first in odd ones: a load that drifts over the
            # run favours neither
            for rate in (0.0, args.rate) if r % 2 == 0 else (args.rate, 0.0):
                tag = uuid.uuid4().hex[:8]
                tags.append(tag)
                res = _run(_config(tag, topic_tag, args, rate), args.events)
                res["round"] = r
                runs.append(res)
                print(json.dumps(res))
    finally:
        delete_topics(k.bootstrap, [k.events_topic, k.dlq_topic, k.items_topic, k.users_topic])
        r = connect(base.redis)
        for tag in tags:
            delete_prefix(r, f"bench{tag}:")
    off = statistics.median(x["events_per_s"] for x in runs if x["rate"] == 0.0)
    on_runs = [x for x in runs if x["rate"] > 0.0]
    on = statistics.median(x["events_per_s"] for x in on_runs)
    share = sum(x["quality_s"] for x in on_runs) / sum(x["wall_s"] for x in on_runs)
    summary = {
        "events": args.events,
        "rounds": args.rounds,
        "rate_on": args.rate,
        "median_events_per_s_off": round(off),
        "median_events_per_s_on": round(on),
        "ratio_on_to_off": round(on / off, 3),
        "quality_phase_share_of_on_wall": round(share, 4),
        "runs": runs,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "live_quality.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps({k: v for k, v in summary.items() if k != "runs"}))


if __name__ == "__main__":
    main()
