"""The main job of README command 1: servers up, a stream published, the model learning
live, recommendations read back from Redis, a short report with a plot.

The demo uses its own topics, consumer group, Redis prefix and checkpoint folder and resets
them first, so a rerun starts from the same point and never touches real `streamrec.*` data.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import sys
import threading
import time
from pathlib import Path
from typing import Any

from streamrec.consumers.config import Config

log = logging.getLogger("streamrec.demo")

DEMO = {
    "kafka": {
        "events_topic": "streamrec.demo.events",
        "dlq_topic": "streamrec.demo.events.dlq",
        "items_topic": "streamrec.demo.items",
        "users_topic": "streamrec.demo.users",
        "group_id": "streamrec-demo",
    },
    "redis": {"prefix": "srdemo:"},
}


def demo_config(cfg: Config, home: Path) -> Config:
    return cfg.replace(
        kafka=DEMO["kafka"],
        redis=DEMO["redis"],
        trainer={"checkpoint_dir": str(home / "checkpoints"), "stop_when_idle_ms": 0},
    )


def reset(cfg: Config, home: Path) -> None:
    """Delete the demo's topics, Redis keys and checkpoints."""
    from streamrec.streaming.admin import delete_topics
    from streamrec.streaming.store import connect, delete_prefix

    k = cfg.kafka
    delete_topics(k, [k.events_topic, k.dlq_topic, k.items_topic, k.users_topic])
    delete_prefix(connect(cfg.redis), cfg.redis.prefix)
    shutil.rmtree(home / "checkpoints", ignore_errors=True)


def _end_offsets(cfg: Config) -> dict[str, int]:
    from kafka import KafkaConsumer, TopicPartition

    from streamrec.streaming.security import kafka_client, kafka_params

    params = {**kafka_params(cfg.kafka), "enable_auto_commit": False}
    c = kafka_client(KafkaConsumer, cfg.kafka, params)
    try:
        parts = c.partitions_for_topic(cfg.kafka.events_topic) or set()
        tps = [TopicPartition(cfg.kafka.events_topic, p) for p in parts]
        return {f"{tp.topic}:{tp.partition}": off for tp, off in c.end_offsets(tps).items()}
    finally:
        c.close()


def main(
    cfg: Config,
    events: int = 100_000,
    seed: int = 0,
    local_services: bool = True,
    evaluate: bool = True,
) -> int:
    from tqdm import tqdm

    from streamrec.consumers.trainer import Trainer
    from streamrec.streaming import kafka_io
    from streamrec.streaming.admin import create_topics
    from streamrec.streaming.client import Recommender
    from streamrec.streaming.synthetic import SyntheticConfig, SyntheticStream

    t_start = time.monotonic()
    home = Path(cfg.services.home) / "demo"
    out_dir = Path("reports") / "demo"
    out_dir.mkdir(parents=True, exist_ok=True)
    if local_services:
        from streamrec.consumers import plugins

        try:
            services = plugins.services()
        except plugins.PluginMissing as e:
            print(f"{e} (or run `streamrec demo --no-services`)", file=sys.stderr)
            return 2
        services.up(cfg.services)
    dcfg = demo_config(cfg, home)
    reset(dcfg, home)
    k = dcfg.kafka
    create_topics(
        k,
        {k.events_topic: k.partitions, k.dlq_topic: 1, k.items_topic: 1, k.users_topic: 1},
        compacted={k.items_topic, k.users_topic},
    )
    stream = SyntheticStream(SyntheticConfig(seed=seed, n_events=events))

    published = threading.Event()
    pub_error: list[BaseException] = []

    def publish() -> None:
        producer = kafka_io.make_producer(k)
        try:
            kafka_io.publish(producer, k.events_topic, stream.events())
        except BaseException as e:  # surfaced in the main thread
            pub_error.append(e)
        finally:
            producer.close()
            published.set()

    timeline: list[dict[str, Any]] = []
    # Made at the first batch, after TensorFlow's start and the compilation: a bar made
    # before them showed 0 % for half a minute, then a rate that promised 20 minutes.
    bars: list[Any] = []
    end: dict[str, int] = {}
    trainer: Trainer

    first: list[tuple[float, int]] = []

    def on_batch(stats: Any) -> None:
        if not first:
            first.append((time.monotonic(), stats.events))
            bars.append(tqdm(total=events, unit="ev", desc="learned", mininterval=0.5))
        bar = bars[0]
        bar.update(stats.events + stats.dead_letters - bar.n)
        timeline.append(
            {"t": time.monotonic() - t_learn, "events": stats.events, "loss": stats.last_loss}
        )
        if published.is_set() and not end:
            end.update(_end_offsets(dcfg))
        if end and all(trainer.model_offsets.get(f, 0) >= off for f, off in end.items()):
            trainer.stop()

    trainer = Trainer(dcfg, on_batch=on_batch)
    pub = threading.Thread(target=publish, name="publisher", daemon=True)
    t_learn = time.monotonic()
    pub.start()
    log.info("publishing %d events while the trainer starts (they wait in Kafka meanwhile)", events)
    stats = trainer.run()
    for bar in bars:
        bar.close()
    pub.join()
    if pub_error:
        raise RuntimeError("publishing failed") from pub_error[0]
    t_end = time.monotonic()
    learn_s = t_end - t_learn
    steady = (stats.events - first[0][1]) / max(t_end - first[0][0], 1e-9) if first else 0.0

    from streamrec.streaming.store import connect

    client = Recommender(connect(dcfg.redis), prefix=dcfg.redis.prefix)
    users = _sample_users(stream, 3)
    samples = []
    for u in users:
        recs = client.recommend(u, k=5)
        liked = set(stream.preferred_genres(u))
        genres = [str(stream.item_features(i).get("genre")) for i in recs.items]
        samples.append(
            {
                "user": u,
                "source": recs.source,
                "items": recs.pairs(),
                "item_genres": genres,
                "preferred_genres": sorted(liked),
            }
        )
    cold = client.recommend("new-user-without-history", k=5)

    report = {
        "events_published": events,
        "events_learned": stats.events,
        "dead_letters": stats.dead_letters,
        "batches": stats.batches,
        "skipped_nonfinite_batches": stats.skipped_nonfinite,
        "learn_seconds": round(learn_s, 2),
        "events_per_second": round(steady, 1),
        "seconds_per_phase": {k: round(v, 2) for k, v in stats.phase_seconds.items()},
        "total_seconds": round(time.monotonic() - t_start, 1),
        "samples": samples,
        "cold_user": {"source": cold.source, "items": cold.pairs()},
    }
    plot = _plot(timeline, out_dir / "demo.png")
    (out_dir / "report.json").write_text(json.dumps(report, indent=2))
    _print_report(report, plot)
    if evaluate:
        _quality(dcfg, seed, min(events, 50_000), out_dir)
    print()
    print(read_back_commands(dcfg, users[0]))
    return 0


def read_back_commands(cfg: Config, user: str) -> str:
    """The commands that read the demo's recommendations: its keys live under its own prefix,
    so the README's plain `streamrec recommend` (prefix `sr:`) finds nothing of it."""
    import shlex
    import sys
    from urllib.parse import quote, urlsplit

    exe = Path(sys.executable).parent / "streamrec"
    with contextlib.suppress(ValueError):  # outside the working folder: the full path
        exe = exe.relative_to(Path.cwd())
    url = urlsplit(cfg.redis.url)
    prefix = cfg.redis.prefix
    env = f"STREAMREC_REDIS_PREFIX={shlex.quote(prefix)}"
    if url.hostname not in (None, "127.0.0.1", "localhost") or url.port != 6379:
        from streamrec.streaming.security import redact_url

        env += f" STREAMREC_REDIS_URL={shlex.quote(redact_url(cfg.redis.url))}"
    cli = f"redis-cli -h {url.hostname or '127.0.0.1'} -p {url.port or 6379}"
    if url.path.strip("/") not in ("", "0"):
        cli += f" -n {url.path.strip('/')}"
    key = shlex.quote(f"{prefix}recs:{{{user}}}")
    return "\n".join(
        [
            f"read them yourself (the demo writes under the Redis prefix {prefix}):",
            f"  {env} {exe} recommend --user {user} -k 5",
            f"  {env} {exe} serve     # then, from another terminal:",
            f"  curl 'http://127.0.0.1:8080/recommend/{quote(user)}?k=5'",
            f"  {cli} GET {key}",
        ]
    )


def _quality(cfg: Config, seed: int, n_events: int, out_dir: Path) -> None:
    """Test-then-train on the same kind of stream: the model against the baselines."""
    from streamrec.consumers.quality import evaluate_synthetic
    from streamrec.model.evaluate import format_summary
    from streamrec.streaming.synthetic import SyntheticConfig

    print()
    print(f"prequential quality on {n_events:,} synthetic events (test, then train):")
    t0 = time.monotonic()
    quality = evaluate_synthetic(
        SyntheticConfig(seed=seed, n_events=n_events), cfg.model, k=10, out_dir=out_dir / "quality"
    )
    print(format_summary(quality))
    print(f"({time.monotonic() - t0:.0f} s)  plot: {out_dir / 'quality'}")


def _sample_users(stream: Any, n: int) -> list[str]:
    ids = stream.user_ids[: max(n * 10, n)]
    return ids[:: max(len(ids) // n, 1)][:n]


def _plot(timeline: list[dict[str, Any]], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [p["t"] for p in timeline]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.6))
    a1.plot(t, [p["events"] for p in timeline], color="tab:blue")
    a1.set_xlabel("seconds since start")
    a1.set_ylabel("events learned")
    a1.set_title("Learning live from Kafka")
    a2.plot([p["events"] for p in timeline], [p["loss"] for p in timeline], color="tab:red")
    a2.set_xlabel("events learned")
    a2.set_ylabel("batch loss")
    a2.set_title("Training loss")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _print_report(r: dict[str, Any], plot: Path) -> None:
    print()
    print("streamrec demo report")
    print("=====================")
    print(f"events published       {r['events_published']:>10,}")
    print(f"events learned         {r['events_learned']:>10,}")
    print(f"dead letters           {r['dead_letters']:>10,}")
    print(f"batches                {r['batches']:>10,}")
    print(f"learning time          {r['learn_seconds']:>10.1f} s (with TF start, group join)")
    print(f"throughput             {r['events_per_second']:>10,.0f} events/s from the 1st batch")
    phases = ", ".join(f"{k} {v:.1f} s" for k, v in r["seconds_per_phase"].items())
    print(f"time per phase         {phases}")
    print(f"total wall time        {r['total_seconds']:>10.1f} s")
    print()
    print("recommendations read back from Redis (top 5):")
    for s in r["samples"]:
        print(f"  {s['user']} likes genres {', '.join(s['preferred_genres'])}  [{s['source']}]")
        for (item, score), genre in zip(s["items"], s["item_genres"], strict=True):
            print(f"      {item:<10} {score:8.3f}  genre {genre}")
    c = r["cold_user"]
    print(f"  a new user with no history [{c['source']}]: {', '.join(i for i, _ in c['items'])}")
    print()
    print(f"plot: {plot}   report: {plot.parent / 'report.json'}")
