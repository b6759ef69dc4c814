"""Prequential evaluation through the real pipeline: what users would have seen.

The in-process evaluator (`streamrec.model.evaluate`) asks the model object directly. This
mode asks the system: the stream is published to Kafka batch by batch, the real `Trainer`
learns it on a thread of this process (or in a subprocess) and writes Redis, and before each
batch is published every scored event's user is served by the Redis read client
(`streaming.client.Recommender`), exactly as an application would be. The evaluator then waits
until the trainer has applied the batch, by watching the offsets it stores in Redis with the
state (`sr:offsets:{group}`), so every answer reflects all earlier events: the figure measures
the serving path (precomputed lists, real-time scoring, fallbacks, their staleness), not lag.

Queries, exclusions, metrics and the report are the in-process evaluator's (same `EvalState`,
`Tally`, `build_report`), so both modes can run on the same batches and be compared; with
`compare_in_process` the same run also feeds an in-process twin of the model (and any
baselines) in lock-step. Why the two can differ even with no lag:

- the trainer closes its own batches (`batch_max_events`, `batch_max_wait_ms`) from records of
  several partitions in poll order, not in time order, so ids are registered and initialised
  in another order and mini-batches may split differently;
- a user's precomputed list is as old as the user's last event: items learned since then move
  in the model but not in that list (the read path serves it while it is at least as new as the
  user's vector and younger than `precomputed_max_age_ms`);
- users without history are served from Redis fallbacks (feature vectors, segment and global
  popularity) only as far as the trainer writes them.

Isolation: `isolated_config` gives a run its own topics, consumer group, Redis prefix and
checkpoint folder, and `cleanup` removes them, so an evaluation never touches live data.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import math
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson

from streamrec.consumers.config import Config
from streamrec.model.base import EventLike
from streamrec.model.evaluate import (
    AucScorer,
    EvalConfig,
    EvalState,
    PositiveRule,
    Query,
    Tally,
    build_report,
    format_summary,
    plot_report,
    prequential,
    prequential_fresh,
    score_queries,
    sort_events,
    write_report,
)

log = logging.getLogger("streamrec.evaluate")

PIPELINE = "pipeline"


# ----------------------------------------------------------------------------- isolation


def isolated_config(cfg: Config, run: str | None = None, home: str | Path | None = None) -> Config:
    """`cfg` aimed at a run's own topics, group, Redis prefix and checkpoint folder."""
    run = run or uuid.uuid4().hex[:10]
    home = Path(home) if home is not None else Path(tempfile.gettempdir()) / f"streamrec-{run}"
    return cfg.replace(
        kafka={
            "events_topic": f"streamrec.eval.{run}.events",
            "dlq_topic": f"streamrec.eval.{run}.events.dlq",
            "items_topic": f"streamrec.eval.{run}.items",
            "users_topic": f"streamrec.eval.{run}.users",
            "group_id": f"streamrec-eval-{run}",
        },
        redis={"prefix": f"sreval{run}:"},
        trainer={"checkpoint_dir": str(home / "checkpoints")},
    )


def cleanup(cfg: Config, checkpoints: bool = True) -> None:
    """Delete the run's topics, Redis keys (SCAN + DEL, never KEYS) and, unless told not to,
    its checkpoint folder (only ever one that `isolated_config` named)."""
    from streamrec.streaming.admin import delete_topics
    from streamrec.streaming.store import connect, delete_prefix

    k = cfg.kafka
    with contextlib.suppress(Exception):  # cleanup is best effort
        topics = [k.events_topic, k.dlq_topic, k.items_topic, k.users_topic]
        delete_topics(k, topics, timeout_s=10)
    r = connect(cfg.redis)
    try:
        delete_prefix(r, cfg.redis.prefix)
    finally:
        r.close()
    folder = Path(cfg.trainer.checkpoint_dir)
    if checkpoints and folder.name == "checkpoints" and folder.parent.name.startswith("streamrec-"):
        shutil.rmtree(folder.parent, ignore_errors=True)


# ----------------------------------------------------------------------------- trainer runners


class _TrainerThread:
    """The real Trainer on a thread of this process (shares TF with an in-process twin)."""

    def __init__(self, cfg: Config) -> None:
        from streamrec.consumers.trainer import Trainer

        self.trainer = Trainer(cfg)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="eval-trainer", daemon=True)

    def _run(self) -> None:
        try:
            self.trainer.run()
        except BaseException as e:  # surfaced by check()
            self.error = e

    def start(self) -> None:
        self.thread.start()

    def check(self) -> None:
        if self.error is not None:
            raise RuntimeError("the trainer failed") from self.error
        if not self.thread.is_alive():
            raise RuntimeError("the trainer stopped before the evaluation ended")

    def stop(self) -> dict[str, Any]:
        self.trainer.stop()
        self.thread.join(timeout=60)
        s = self.trainer.stats
        return {
            "where": "thread",
            "events": s.events,
            "dead_letters": s.dead_letters,
            "batches": s.batches,
            "written_batches": s.written_batches,
        }


def config_env(cfg: Config) -> dict[str, str]:
    """Every setting of `cfg` as STREAMREC_* variables, for a trainer in a subprocess."""
    return cfg.to_env()


class _TrainerProcess:
    """The real Trainer as its own process (`streamrec train`), configured by environment."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMREC_")}
        env.update(config_env(self.cfg))
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        code = "from streamrec.consumers.trainer import main; raise SystemExit(main())"
        self.proc = subprocess.Popen([sys.executable, "-c", code], env=env)

    def check(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            rc = None if self.proc is None else self.proc.returncode
            raise RuntimeError(f"the trainer process exited (code {rc})")

    def stop(self) -> dict[str, Any]:
        if self.proc is None:
            return {"where": "subprocess"}
        self.proc.terminate()  # SIGTERM: the trainer finishes its batch and checkpoints
        try:
            rc = self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        return {"where": "subprocess", "exit_code": rc}


# ----------------------------------------------------------------------------- the run


def wire_json(e: EventLike) -> bytes:
    """The event in the wire schema (any EventLike, not only `streaming.events.Event`)."""
    out: dict[str, Any] = {"user": e.user, "item": e.item, "type": e.type}
    if e.value is not None:
        out["value"] = e.value
    out["ts"] = int(e.ts)
    if e.user_features:
        out["user_features"] = dict(e.user_features)
    if e.item_features:
        out["item_features"] = dict(e.item_features)
    return orjson.dumps(out)


class _OffsetWatch:
    """Waits until the trainer has stored offsets at or past a target for every partition."""

    def __init__(self, redis: Any, key: str) -> None:
        self.redis = redis
        self.key = key

    def stored(self) -> dict[str, int]:
        raw = self.redis.hgetall(self.key)
        return {k.decode(): int(v) for k, v in raw.items()}

    def wait(self, target: Mapping[str, int], timeout_s: float, check: Callable[[], None]) -> float:
        t0 = time.monotonic()
        delay = 0.001
        while True:
            have = self.stored()
            if all(have.get(f, 0) >= off for f, off in target.items()):
                return time.monotonic() - t0
            check()
            if time.monotonic() - t0 > timeout_s:
                raise TimeoutError(
                    f"trainer did not apply the batch within {timeout_s:.0f} s: "
                    f"waiting for {dict(target)}, Redis holds {have}"
                )
            time.sleep(delay)
            delay = min(delay * 2, 0.02)


def evaluate_pipeline(
    cfg: Config,
    events: Sequence[EventLike],
    eval_cfg: EvalConfig | None = None,
    *,
    compare_in_process: bool = False,
    baselines: Mapping[str, Any] | None = None,
    trainer: str = "thread",
    align_batches: bool = True,
    first_batch_timeout_s: float = 120.0,
    batch_timeout_s: float = 60.0,
    progress: bool = False,
) -> dict[str, Any]:
    """Prequential evaluation of the live pipeline; returns the report (models["pipeline"]).

    `cfg` must point at topics, group and prefix nobody else uses (see `isolated_config`);
    the events topic must be empty. With `align_batches` the trainer's `batch_max_events` is
    set to the evaluation batch size, so that, when all of a batch has arrived, it is learned
    as one mini-batch as in-process. `compare_in_process` adds an in-process twin of the model
    ("model") and `baselines` run in lock-step on the same batches and queries.
    """
    from streamrec.streaming import kafka_io
    from streamrec.streaming.admin import create_topics
    from streamrec.streaming.client import Recommender
    from streamrec.streaming.keys import Keys, offset_field
    from streamrec.streaming.store import connect

    eval_cfg = eval_cfg or EvalConfig(positives=PositiveRule.from_model_config(cfg.model))
    if trainer not in ("thread", "subprocess"):
        raise ValueError(f"trainer must be 'thread' or 'subprocess', got {trainer!r}")
    if align_batches:
        # A full batch closes at once; the longer wait only keeps a batch that reaches the
        # trainer in several polls (two partitions, fetch sizes) from being cut in two.
        wait_ms = max(cfg.trainer.batch_max_wait_ms, 250)
        cfg = cfg.replace(
            trainer={"batch_max_events": eval_cfg.batch_size, "batch_max_wait_ms": wait_ms}
        )
    # The evaluator stops the trainer itself; an idle stop between batches would end the run.
    cfg = cfg.replace(trainer={"stop_when_idle_ms": 0})
    k = cfg.kafka
    create_topics(
        k,
        {k.events_topic: k.partitions, k.dlq_topic: 1, k.items_topic: 1, k.users_topic: 1},
        compacted={k.items_topic, k.users_topic},
    )
    stream = sort_events(events)
    state = EvalState(eval_cfg, len(stream))
    tallies: dict[str, Tally] = {PIPELINE: Tally(eval_cfg.k)}
    twins: dict[str, Any] = {}
    if compare_in_process:
        from streamrec.consumers.trainer import configure_tensorflow

        configure_tensorflow(cfg.trainer.tf_threads)
        from streamrec.model.online import OnlineRecommender

        twins["model"] = OnlineRecommender(cfg.model)
    twins.update(baselines or {})
    for name in twins:
        tallies[name] = Tally(eval_cfg.k)
    scorers = {n: AucScorer(m) for n, m in twins.items()} if eval_cfg.auc_negatives else {}

    redis = connect(cfg.redis)
    reader = Recommender(redis, prefix=cfg.redis.prefix)
    watch = _OffsetWatch(redis, Keys(cfg.redis.prefix).offsets(k.group_id))
    runner: _TrainerThread | _TrainerProcess = (
        _TrainerThread(cfg) if trainer == "thread" else _TrainerProcess(cfg)
    )
    producer = kafka_io.make_producer(k, linger_ms=0)
    seen_max = cfg.trainer.seen_max
    waits: list[float] = []
    read_s = 0.0
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(stream), unit="ev", desc="pipeline prequential", mininterval=0.5)
    t0 = time.perf_counter()
    runner.start()
    try:
        for start in range(0, len(stream), eval_cfg.batch_size):
            batch = stream[start : start + eval_cfg.batch_size]
            queries = state.queries(batch, start)
            if queries:
                t = time.perf_counter()
                lists, sources = _read_from_redis(reader, queries, state, eval_cfg.k, seen_max)
                read_s += time.perf_counter() - t
                tallies[PIPELINE].add_batch(queries, lists, state, None, sources)
                for name, model in twins.items():
                    score_queries(
                        model, tallies[name], queries, eval_cfg.k, state, scorers.get(name)
                    )
            futures = [
                producer.send(k.events_topic, key=e.user.encode("utf-8"), value=wire_json(e))
                for e in batch
            ]
            producer.flush()
            target: dict[str, int] = {}
            for fut in futures:
                md = fut.get(timeout=30)
                f = offset_field(md.topic, md.partition)
                target[f] = max(target.get(f, 0), md.offset + 1)
            for name, model in twins.items():
                t = time.perf_counter()
                model.learn(batch)
                tallies[name].learn_s += time.perf_counter() - t
            timeout = first_batch_timeout_s if start == 0 else batch_timeout_s
            waits.append(watch.wait(target, timeout, runner.check))
            state.observe(batch)
            if bar is not None:
                bar.update(len(batch))
    finally:
        if bar is not None:
            bar.close()
        producer.close()
        trainer_info = runner.stop()
        redis.close()
    tallies[PIPELINE].recommend_s = read_s
    extra = {
        "pipeline": {
            "trainer": trainer_info,
            "batch_max_events": cfg.trainer.batch_max_events,
            "batch_max_wait_ms": cfg.trainer.batch_max_wait_ms,
            "partitions": k.partitions,
            "events_topic": k.events_topic,
            "group": k.group_id,
            "redis_prefix": cfg.redis.prefix,
            "apply_wait_s": _quantiles(waits),
            "redis_read_s": read_s,
        }
    }
    return build_report(
        tallies,
        state,
        eval_cfg,
        mode="pipeline",
        seconds=time.perf_counter() - t0,
        reference=PIPELINE,
        extra=extra,
    )


def _read_from_redis(
    reader: Any, queries: Sequence[Query], state: EvalState, k: int, seen_max: int
) -> tuple[list[list[str]], list[str]]:
    """Each query's top-k as the read client serves it, one request per user.

    Redis excludes what the trainer stored as seen (everything learned before this batch, up
    to `seen_max` items per user); the user's items from earlier in this batch and any beyond
    the bound are dropped here, after asking for that many more, so exclusion is the same as
    in-process.
    """
    by_user: dict[str, list[Query]] = {}
    for q in queries:
        by_user.setdefault(q.user, []).append(q)
    got: dict[str, tuple[list[str], str]] = {}
    for user, qs in by_user.items():
        hist = state.history.get(user, set())
        extra = max(len(q.batch_earlier) for q in qs) + max(0, len(hist) - seen_max)
        want = min(k + extra, reader.max_k)
        out = reader.recommend(user, want)
        got[user] = (list(out.items), str(out.source))
    lists: list[list[str]] = []
    sources: list[str] = []
    for q in queries:
        items, source = got[q.user]
        hist = state.history.get(q.user, set())
        lists.append([i for i in items if i not in hist and i not in q.batch_earlier][:k])
        sources.append(source)
    return lists, sources


def _quantiles(xs: Sequence[float]) -> dict[str, float | None]:
    if not xs:
        return {"mean": None, "p50": None, "p95": None, "max": None}
    s = sorted(xs)

    def q(p: float) -> float:
        return s[min(len(s) - 1, max(0, math.ceil(p * len(s)) - 1))]

    return {"mean": sum(s) / len(s), "p50": q(0.5), "p95": q(0.95), "max": s[-1]}


# ----------------------------------------------------------------------------- CLI


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="streamrec evaluate",
        description="Prequential (test-then-train) quality of the model vs baselines, "
        "in-process or through the live pipeline (Kafka -> trainer -> Redis -> read client).",
    )
    p.add_argument(
        "--mode",
        choices=["in-process", "pipeline", "both"],
        default="in-process",
        help="both: the pipeline run plus an in-process twin on the same batches",
    )
    src = p.add_mutually_exclusive_group()
    src.add_argument("--synthetic", type=int, metavar="N", help="N synthetic events (default)")
    src.add_argument("--log", metavar="FILE", help="a log (MovieLens, CSV, JSONL; see replay)")
    p.add_argument("--format", default="auto", help="log format (see `streamrec replay --help`)")
    p.add_argument("--columns", metavar="SPEC", help="column mapping of a csv/jsonl log")
    p.add_argument("--max-events", type=int, help="only the first N events in time order")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("-k", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=512, help="events per test-then-learn step")
    p.add_argument("--warmup", type=float, default=0.1, help="share learned before scoring")
    p.add_argument("--auc-share", type=float, default=0.2, help="share of queries with AUC")
    p.add_argument("--no-baselines", action="store_true")
    p.add_argument(
        "--protocol",
        choices=["minibatch", "fresh"],
        default="minibatch",
        help="in-process: minibatch scores a whole batch before learning it; fresh scores "
        "event by event, the user's own earlier events learned first (model.evaluate."
        "prequential_fresh); the pipeline modes are minibatch only",
    )
    p.add_argument("--trainer", choices=["thread", "subprocess"], default="thread")
    p.add_argument("--keep", action="store_true", help="pipeline: keep topics and Redis keys")
    p.add_argument("--out", metavar="DIR", default="reports/quality", help="JSON + PNG here")
    p.add_argument("--json", metavar="FILE", help="report path (default DIR/quality.json)")
    p.add_argument("--progress", action="store_true")
    return p


def _load_events(args: argparse.Namespace) -> tuple[list[Any], dict[str, Any]]:
    if args.log:
        from streamrec.streaming.replay import ColumnMapping, load_log

        mapping = ColumnMapping.parse(args.columns) if args.columns else None
        loaded = load_log(args.log, args.format, mapping)
        print(loaded.report.summary(), file=sys.stderr)
        events: list[Any] = list(loaded.events)
        source: dict[str, Any] = {"log": loaded.report.to_dict()}
    else:
        from streamrec.model.testing import Event
        from streamrec.streaming.synthetic import SyntheticConfig, SyntheticStream

        n = 50_000 if args.synthetic is None else args.synthetic
        scfg = SyntheticConfig(seed=args.seed, n_events=n)
        events = [Event.from_dict(d) for d in SyntheticStream(scfg).events()]
        source = {"synthetic": dataclasses.asdict(scfg)}
    if args.max_events is not None:
        events = sort_events(events)[: args.max_events]
    return events, source


def main(argv: Sequence[str] | None = None, cfg: Config | None = None) -> int:
    """`streamrec evaluate`: exit 0 on a finished report, 2 on bad arguments or input."""
    args = _parser().parse_args(argv)
    if args.protocol == "fresh" and args.mode != "in-process":
        print(
            "streamrec evaluate: --protocol fresh is in-process only (the pipeline learns "
            "in the trainer's batches)",
            file=sys.stderr,
        )
        return 2
    try:
        cfg = cfg or Config.from_env()
        events, source = _load_events(args)
        eval_cfg = EvalConfig(
            k=args.k,
            batch_size=args.batch_size,
            warmup=args.warmup,
            auc_share=args.auc_share,
            seed=args.seed,
            positives=PositiveRule.from_model_config(cfg.model),
        )
    except (ValueError, OSError) as e:
        print(f"streamrec evaluate: {e}", file=sys.stderr)
        return 2
    from streamrec.model.baselines import make_baselines

    m = cfg.model
    baselines = (
        {}
        if args.no_baselines
        else make_baselines(
            m.event_weights,
            m.rating_positive_min,
            m.rating_negative_max,
            m.popularity_half_life_s,
            seed=m.seed,
        )
    )
    if args.mode == "in-process":
        from streamrec.consumers.trainer import configure_tensorflow

        configure_tensorflow(cfg.trainer.tf_threads)
        from streamrec.model.online import OnlineRecommender

        models: dict[str, Any] = {"model": OnlineRecommender(cfg.model), **baselines}
        run = prequential_fresh if args.protocol == "fresh" else prequential
        report = run(events, models, eval_cfg, progress=args.progress)
    else:
        run_cfg = isolated_config(cfg)
        try:
            report = evaluate_pipeline(
                run_cfg,
                events,
                eval_cfg,
                compare_in_process=args.mode == "both",
                baselines=baselines,
                trainer=args.trainer,
                progress=args.progress,
            )
        finally:
            if not args.keep:
                cleanup(run_cfg)
    report["source"] = source
    out = Path(args.out)
    json_path = Path(args.json) if args.json else out / "quality.json"
    plot = plot_report(report, out / "quality.png", title=f"{report['mode']} prequential")
    report["files"] = {"json": str(json_path), "plot": str(plot)}
    write_report(report, json_path)
    print(format_summary(report))
    print(f"report: {json_path}   plot: {plot}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
