"""`streamrec` command line: services, topics, generate, publish, train, recommend, demo, config.

Every command's options and its wiring (config sections in, library calls, what it prints, its
exit code) live here, so `streaming/` and `model/` stay libraries that never read the process
config. Heavy imports (TensorFlow, Kafka clients) happen inside the subcommand that needs them,
so `streamrec --help` and `streamrec recommend` stay fast.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from streamrec.consumers.config import Config, settings
from streamrec.model.config import ConfigError
from streamrec.streaming.config import KafkaConfig, RedisConfig, ServicesConfig

log = logging.getLogger("streamrec.cli")


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)-5s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    for noisy in ("kafka", "urllib3", "matplotlib", "absl"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if not verbose:
        for name in _LIBRARY_CHATTER:
            logging.getLogger(name).addFilter(_drop_library_chatter)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


# kafka-python warnings nobody can act on: its I/O loop timing a task that waited for the
# interpreter lock (the trainer's learning holds it), and the coordinator it re-finds at
# once after a new topic or a rebalance. `-v` shows them.
_LIBRARY_CHATTER = {
    "kafka.net.selector": "blocking the event loop",
    "kafka.coordinator.base": "Marking the coordinator dead",
}


def _drop_library_chatter(record: logging.LogRecord) -> bool:
    needle = _LIBRARY_CHATTER.get(record.name)
    return needle is None or needle not in record.getMessage()


def add_services_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("action", choices=("up", "down", "status"))
    p.add_argument("services", nargs="*", metavar="kafka|redis", help="default: both")
    return p


def run_services(args: argparse.Namespace, cfg: ServicesConfig) -> int:
    """The local servers are development tooling (`streamrec-devservices`, installed by `make
    install`), found through an entry point: without it, one line saying so and exit code 2.
    Otherwise its exit codes: 0 done, 1 a server failed, 3 `status` found one not healthy."""
    from streamrec.consumers import plugins

    try:
        services = plugins.services()
    except plugins.PluginMissing as e:
        print(e, file=sys.stderr)
        return 2
    return int(services.services_command(args.action, args.services or None, cfg))


def cmd_services(args: argparse.Namespace, cfg: Config) -> int:
    return run_services(args, cfg.services)


def cmd_topics(args: argparse.Namespace, cfg: Config) -> int:
    from streamrec.streaming.admin import create_topics

    k = cfg.kafka
    create_topics(
        k,
        {k.events_topic: k.partitions, k.dlq_topic: 1, k.items_topic: 1, k.users_topic: 1},
        compacted={k.items_topic, k.users_topic},
    )
    print(
        f"topics ready on {k.bootstrap}: {k.events_topic} ({k.partitions} partitions), "
        f"{k.dlq_topic}, {k.items_topic}, {k.users_topic}"
    )
    return 0


def add_generate_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    # Sizes left out take SyntheticConfig's defaults (not imported here: `--help` stays fast).
    p.add_argument("--out", required=True, metavar="FILE", help="events JSONL ('-' = stdout)")
    p.add_argument("--events", type=int, metavar="N")
    p.add_argument("--seed", type=int, metavar="S")
    p.add_argument("--users", type=int, metavar="N")
    p.add_argument("--items", type=int, metavar="N")
    p.add_argument("--user-catalogue", metavar="FILE", help="also write user catalogue records")
    p.add_argument("--item-catalogue", metavar="FILE", help="also write item catalogue records")
    p.set_defaults(parser=p)  # a bad size is a usage error of this subcommand
    return p


def cmd_generate(args: argparse.Namespace, cfg: Config) -> int:
    from streamrec.streaming.synthetic import (
        SyntheticConfig,
        SyntheticStream,
        write_jsonl,
        write_records,
    )

    sizes = {
        "seed": args.seed,
        "n_users": args.users,
        "n_items": args.items,
        "n_events": args.events,
    }
    try:
        scfg = SyntheticConfig(**{k: v for k, v in sizes.items() if v is not None})
    except ValueError as exc:
        args.parser.error(str(exc))
    stream = SyntheticStream(scfg)
    if args.out == "-":
        n = write_records(sys.stdout.buffer, stream.events())
        sys.stdout.buffer.flush()
    else:
        n = write_jsonl(args.out, stream.events())
    if args.user_catalogue:
        write_jsonl(args.user_catalogue, stream.user_catalogue())
    if args.item_catalogue:
        write_jsonl(args.item_catalogue, stream.item_catalogue())
    print(
        f"wrote {n} events ({scfg.n_users} users, {scfg.n_items} items, seed {scfg.seed})"
        + (f" to {args.out}" if args.out != "-" else ""),
        file=sys.stderr,
    )
    return 0


def cmd_publish(args: argparse.Namespace, cfg: Config) -> int:
    from streamrec.streaming import kafka_io
    from streamrec.streaming.synthetic import SyntheticConfig, SyntheticStream, read_jsonl

    producer = kafka_io.make_producer(cfg.kafka)
    try:
        if args.file:
            n = kafka_io.publish(
                producer, cfg.kafka.events_topic, read_jsonl(args.file), progress=True
            )
        else:
            stream = SyntheticStream(SyntheticConfig(seed=args.seed, n_events=args.synthetic))
            n = kafka_io.publish(
                producer,
                cfg.kafka.events_topic,
                stream.events(),
                progress=True,
                total=args.synthetic,
            )
    finally:
        producer.close()
    print(f"published {n} events to {cfg.kafka.events_topic}")
    return 0


def cmd_train(args: argparse.Namespace, cfg: Config) -> int:
    from streamrec.consumers.lifecycle import Lifecycle, Stopped

    # Before the imports of Kafka, Redis and TensorFlow, which take seconds: a stop request
    # during them is honoured too.
    life = Lifecycle(cfg.trainer.stop_grace_ms / 1000)
    life.install_signal_handlers()
    log.info(
        "trainer starting (pid %d): loading the Kafka, Redis and TensorFlow clients", os.getpid()
    )
    try:
        from streamrec.consumers import trainer

        return trainer.main(cfg, life)
    except Stopped as e:
        log.info("%s while %s (%s): stopped, nothing to save", e, life.state, life.detail)
        return 0


def add_recommend_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("--user", required=True, help="user id")
    p.add_argument("-k", type=int, default=10, help="how many items (default 10)")
    p.add_argument(
        "--feature",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a user feature for a cold-start user (repeatable); replaces the stored ones",
    )
    p.add_argument("--include-seen", action="store_true", help="do not exclude seen items")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return p


def run_recommend(args: argparse.Namespace, redis_cfg: RedisConfig) -> int:
    """Exit codes: 0 served, 2 bad arguments, 3 Redis unavailable (retriable), 4 not."""
    from streamrec.streaming.client import (
        InvalidRequest,
        Recommender,
        StoreUnavailable,
        parse_feature_args,
    )

    features = getattr(args, "feature", None) or []
    include_seen = bool(getattr(args, "include_seen", False))
    try:
        feats = parse_feature_args(features) if features else None
        rec = Recommender(redis_cfg)
        out = rec.recommend(args.user, k=args.k, exclude_seen=not include_seen, user_features=feats)
    except InvalidRequest as e:
        print(f"streamrec recommend: {e}", file=sys.stderr)
        return 2
    except StoreUnavailable as e:
        print(f"streamrec recommend: {e}", file=sys.stderr)
        return 3 if e.retriable else 4
    if getattr(args, "json", False):
        import orjson

        sys.stdout.write(orjson.dumps(out.to_dict()).decode() + "\n")
        return 0
    print(f"user {out.user} ({out.source}):")
    for rank, (item, score) in enumerate(out.pairs(), 1):
        print(f"  {rank:>2}. {item:<20} {score:10.4f}")
    if not out.items:
        print("  (nothing to recommend yet)")
    return 0


def cli_recommend(argv: Sequence[str] | None = None, redis_cfg: RedisConfig | None = None) -> int:
    """`streamrec recommend --user U [-k K] [--feature name=value ...] [--json]`."""
    p = add_recommend_arguments(
        argparse.ArgumentParser(prog="streamrec recommend", description=cli_recommend.__doc__)
    )
    return run_recommend(p.parse_args(argv), redis_cfg or RedisConfig())


def cmd_recommend(args: argparse.Namespace, cfg: Config) -> int:
    return run_recommend(args, cfg.redis)


def cmd_serve(args: argparse.Namespace, cfg: Config) -> int:
    from streamrec.streaming.serve import run_serve

    return run_serve(args, cfg.redis)


def cmd_demo(args: argparse.Namespace, cfg: Config) -> int:
    from streamrec.consumers import demo

    return demo.main(
        cfg,
        events=args.events,
        seed=args.seed,
        local_services=not args.no_services,
        evaluate=not args.no_eval,
    )


def add_replay_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    from streamrec.streaming.replay import FORMATS

    p.add_argument("file", metavar="FILE", help="the log (.gz accepted)")
    p.add_argument("--format", choices=FORMATS, default="auto", help="default: by file name")
    p.add_argument(
        "--columns",
        metavar="SPEC",
        help="column mapping for csv/jsonl, e.g. user=uid,item=sku,ts=time,ts_unit=s,rating=stars",
    )
    p.add_argument("--delimiter", default=",", help="CSV delimiter (default ',')")
    p.add_argument("--positive-min", type=float, default=4.0, help="ratings >= this: positive")
    p.add_argument("--positive-type", default="click", help="event type of positive ratings")
    p.add_argument("--negative-max", type=float, default=2.0, help="ratings <= this: dislike")
    p.add_argument("--speed", type=float, help="replay at N x real time (default: full speed)")
    p.add_argument("--limit", type=int, help="publish only the first N events (in time order)")
    p.add_argument("--topic", help="default: the events topic of the config")
    p.add_argument("--dry-run", action="store_true", help="load and report; publish nothing")
    p.add_argument("--report-json", metavar="FILE", help="write the load report as JSON")
    p.add_argument("--no-progress", action="store_true")
    return p


def run_replay(args: argparse.Namespace, kafka_cfg: KafkaConfig) -> int:
    """Exit 0 when every row loaded and published, 1 when some rows were bad (the good ones
    are still published), 2 on bad arguments or an unreadable file."""
    import math
    from pathlib import Path

    import orjson

    from streamrec.streaming.replay import (
        ColumnMapping,
        RatingMap,
        detect_format,
        load_csv,
        load_log,
        publish_log,
    )

    try:
        rating_map = RatingMap(
            positive_min=args.positive_min,
            positive_type=args.positive_type,
            negative_max=args.negative_max,
        )
        mapping = ColumnMapping.parse(args.columns) if args.columns else None
        if args.speed is not None and not (math.isfinite(args.speed) and args.speed > 0):
            raise ValueError("--speed must be a positive number")
        if args.limit is not None and args.limit < 0:
            raise ValueError("--limit must be >= 0")
        fmt = detect_format(args.file) if args.format == "auto" else args.format
        if fmt == "csv" and mapping is None:
            mapping = ColumnMapping()
        loaded = (
            load_csv(args.file, mapping or ColumnMapping(), rating_map, delimiter=args.delimiter)
            if fmt == "csv"
            else load_log(args.file, fmt, mapping, rating_map)
        )
    except (ValueError, OSError) as e:
        print(f"streamrec replay: {e}", file=sys.stderr)
        return 2
    print(loaded.report.summary(), file=sys.stderr)
    if args.report_json:
        Path(args.report_json).write_bytes(
            orjson.dumps(loaded.report.to_dict(), option=orjson.OPT_INDENT_2)
        )
    events = loaded.events if args.limit is None else loaded.events[: args.limit]
    if not args.dry_run and events:
        from streamrec.streaming import kafka_io

        topic = args.topic or kafka_cfg.events_topic
        producer = kafka_io.make_producer(kafka_cfg)
        try:
            stats = publish_log(
                producer, topic, events, speed=args.speed, progress=not args.no_progress
            )
        finally:
            producer.close()
        rate = stats.events / max(stats.seconds, 1e-9)
        print(
            f"published {stats.events:,} events to {topic} in {stats.seconds:.1f} s "
            f"({rate:,.0f}/s)",
            file=sys.stderr,
        )
    return 0 if loaded.report.ok else 1


def cmd_replay(args: argparse.Namespace, cfg: Config) -> int:
    return run_replay(args, cfg.kafka)


def cmd_evaluate(args: argparse.Namespace, cfg: Config) -> int:
    from streamrec.consumers import evaluate

    return evaluate.main(args.rest, cfg=cfg)


def cmd_views(args: argparse.Namespace, cfg: Config) -> int:
    from streamrec.consumers import views

    return views.main(args.rest, cfg=cfg)


def cmd_bench(args: argparse.Namespace, cfg: Config) -> int:
    """Benchmarks live in the source checkout's benchmarks/ folder, not in the package.

    `bench all` runs every one into one folder (`--out`, default reports/bench): a JSON file
    each, their plots, and summary.md with the figures beside their targets; `bench summary`
    rebuilds summary.md from the JSON files already there.
    """
    import subprocess
    import time
    from pathlib import Path

    from streamrec.consumers import bench_summary

    folder = Path(__file__).resolve().parent.parent / "benchmarks"
    names = sorted(p.stem.removeprefix("bench_") for p in folder.glob("bench_*.py"))
    if not names:
        print("streamrec bench needs a source checkout (benchmarks/ folder)", file=sys.stderr)
        return 2
    if args.name not in (*names, "all", "summary"):
        print(f"unknown benchmark {args.name!r}; have: {', '.join(names)}, all", file=sys.stderr)
        return 2

    def run(name: str, argv: list[str]) -> int:
        # Each in its own process, as `python benchmarks/bench_X.py` runs: in one process the
        # model benchmark's TF and one-thread BLAS settings slowed the serving figures, and a
        # benchmark's spawned helpers (the freshness reader) re-import it as a script.
        return subprocess.call([sys.executable, str(folder / f"bench_{name}.py"), *argv])

    if args.name not in ("all", "summary"):
        return run(args.name, list(args.rest))
    out = Path(args.rest[args.rest.index("--out") + 1]) if "--out" in args.rest else None
    out = out or Path("reports") / "bench"
    out.mkdir(parents=True, exist_ok=True)
    extra = {"quality": ["--out", str(out / "quality")], "pipeline": ["--out", str(out)]}
    status: dict[str, str] = {}
    for name in names if args.name == "all" else []:
        t0 = time.monotonic()
        rc = run(name, ["--json", str(out / f"{name}.json"), *extra.get(name, [])])
        if rc != 0:  # one failed benchmark must not lose the others' figures
            log.error("benchmark %s exited %d", name, rc)
        status[name] = f"{time.monotonic() - t0:.0f} s, exit {rc}"
    (out / "summary.md").write_text(bench_summary.summarize(out, names, status))
    print(f"wrote {out / 'summary.md'}")
    return 1 if any(not s.endswith("exit 0") for s in status.values()) else 0


def cmd_config(args: argparse.Namespace, cfg: Config) -> int:
    print("| variable | default | type |")
    print("|---|---|---|")
    for name, default, tp in settings():
        if isinstance(default, dict):
            default = ",".join(f"{k}={v:g}" for k, v in default.items())
        print(f"| `{name}` | `{default}` | {tp} |")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="streamrec", description=__doc__)
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser(
        "services",
        help="install/start/stop the local Kafka and Redis",
        description="Install, start, check and stop the local Kafka broker and Redis server.",
    )
    add_services_arguments(s).set_defaults(func=cmd_services)

    s = sub.add_parser("topics", help="create the Kafka topics (idempotent)")
    s.set_defaults(func=cmd_topics)

    s = sub.add_parser(
        "generate",
        help="write a synthetic event log (JSONL)",
        description="Write a seeded synthetic event stream as JSONL (gzip if FILE ends in .gz).",
    )
    add_generate_arguments(s).set_defaults(func=cmd_generate)

    s = sub.add_parser("publish", help="publish events to Kafka (a JSONL file or synthetic)")
    s.add_argument("file", nargs="?", help="JSONL event log; omit for a synthetic stream")
    s.add_argument("--synthetic", type=int, default=100_000, help="synthetic events to send")
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(func=cmd_publish)

    s = sub.add_parser("train", help="run the trainer consumer")
    s.set_defaults(func=cmd_train)

    s = sub.add_parser("recommend", help="read a user's recommendations from Redis")
    add_recommend_arguments(s).set_defaults(func=cmd_recommend)

    s = sub.add_parser("serve", help="HTTP: GET /recommend/{user}, /healthz, /docs")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8080)
    s.add_argument("--max-k", type=int, default=1000)
    s.add_argument("--precomputed-max-age-ms", type=int, default=60_000)
    s.add_argument("--matrix-refresh-ms", type=int, default=1_000)
    s.set_defaults(func=cmd_serve)

    s = sub.add_parser("demo", help="services up, publish a stream, learn live, report")
    s.add_argument("--events", type=int, default=100_000)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--no-services", action="store_true", help="use STREAMREC_* servers, start none")
    s.add_argument("--no-eval", action="store_true", help="skip the prequential quality report")
    s.set_defaults(func=cmd_demo)

    s = sub.add_parser(
        "replay",
        help="publish a recorded log (MovieLens, CSV, JSONL) in time order",
        description="Load an interaction log (MovieLens u.data / ratings.dat / ratings.csv, "
        "CSV, JSONL), validate every row, and publish it to Kafka in timestamp order.",
    )
    add_replay_arguments(s).set_defaults(func=cmd_replay)

    for name, func, text in (
        ("evaluate", cmd_evaluate, "prequential evaluation, in-process and/or through Kafka"),
        ("views", cmd_views, "embedding views: item PCA plot, why an item was recommended"),
    ):
        s = sub.add_parser(name, help=text, add_help=False)
        s.add_argument("rest", nargs=argparse.REMAINDER, help="options (--help for the list)")
        s.set_defaults(func=func)

    s = sub.add_parser("bench", help="run a benchmark from benchmarks/ (or all)")
    s.add_argument("name", help="model, pipeline, serving, quality, all, or summary (rebuild)")
    s.add_argument("rest", nargs=argparse.REMAINDER, help="options of the benchmark")
    s.set_defaults(func=cmd_bench)

    s = sub.add_parser("config", help="print every STREAMREC_* setting with its default")
    s.set_defaults(func=cmd_config)
    return p


def _in_order(argv: Sequence[str] | None, extra: list[str], rest: list[str]) -> list[str]:
    tokens = list(sys.argv[1:] if argv is None else argv)
    wanted = extra + rest
    # the tail of the command line made of exactly these tokens, in the user's order
    for start in range(len(tokens)):
        if sorted(tokens[start:]) == sorted(wanted):
            return tokens[start:]
    return wanted


def parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line as its subcommand's namespace; `args.func(args, cfg)` runs it."""
    args, extra = build_parser().parse_known_args(argv)
    if extra:
        if not hasattr(args, "rest"):
            build_parser().error(f"unrecognized arguments: {' '.join(extra)}")
        # argparse leaves a subcommand's leading options (`evaluate --mode both --log F`) out
        # of REMAINDER: hand them on in their original order.
        args.rest = _in_order(argv, extra, args.rest)
    return args


def run(argv: Sequence[str], cfg: Config) -> int:
    """One command with the config given instead of read from `STREAMREC_*` (tests use this)."""
    args = parse(argv)
    return int(args.func(args, cfg) or 0)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    _setup_logging(args.verbose)
    try:
        cfg = Config.from_env()
    except ConfigError as e:
        print(f"streamrec: bad configuration: {e}", file=sys.stderr)
        return 2
    try:
        return int(args.func(args, cfg) or 0)
    except Exception as e:
        from streamrec.streaming.security import EXIT_ACCESS_DENIED, denial

        found = denial(e, cfg.kafka, cfg.redis)
        if found is None:
            raise
        # one line naming the system, the principal and the right; waiting cannot fix it
        print(f"streamrec {args.command}: {found}", file=sys.stderr)
        return EXIT_ACCESS_DENIED


if __name__ == "__main__":
    sys.exit(main())
