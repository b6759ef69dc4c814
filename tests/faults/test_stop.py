"""SIGTERM and SIGINT in every state of a trainer: exit code 0 within 10 s, nothing lost.

Each test puts a real `streamrec train` process in one state, waits for the trainer's own
signal that it is there (a log line, /ready, a server that is down), then sends the signal.
The module has private Kafka and Redis servers, so outages disturb no other test.
"""

from __future__ import annotations

import signal
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from pipeline_helpers import TrainerProcess, private_services, stored_offsets, wait_until

import streamrec_devservices as services
from streamrec.consumers.config import Config
from streamrec.streaming import kafka_io
from streamrec.streaming.admin import create_topics
from streamrec.streaming.config import ServicesConfig
from streamrec.streaming.synthetic import SyntheticConfig, SyntheticStream

pytestmark = [pytest.mark.integration, pytest.mark.slow]

WITHIN_S = 10.0
NOTHING_TO_SAVE = "stopped, nothing to save"
OVERDUE = "exiting now"  # the watchdog's line: a graceful stop never needs it


@pytest.fixture(scope="module")
def stack(
    services_config: ServicesConfig, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServicesConfig]:
    with private_services(services_config, tmp_path_factory.mktemp("stop-home")) as cfg:
        yield cfg


@pytest.fixture
def cfg(stack: ServicesConfig, tmp_path: Path) -> Config:
    tag = uuid.uuid4().hex[:8]
    c = Config.from_env({}).replace(
        kafka={
            "bootstrap": f"127.0.0.1:{stack.kafka_port}",
            "events_topic": f"st.{tag}.events",
            "dlq_topic": f"st.{tag}.dlq",
            "items_topic": f"st.{tag}.items",
            "users_topic": f"st.{tag}.users",
            "group_id": f"st-{tag}",
            "partitions": 2,
        },
        redis={"url": f"redis://127.0.0.1:{stack.redis_port}/0", "prefix": f"st{tag}:"},
        trainer={"checkpoint_dir": str(tmp_path / "ckpt"), "lease_ttl_ms": 3000},
        model={"dim": 8, "negatives": 8},
    )
    k = c.kafka
    create_topics(
        k.bootstrap,
        {k.events_topic: k.partitions, k.dlq_topic: 1, k.items_topic: 1, k.users_topic: 1},
        compacted={k.items_topic, k.users_topic},
    )
    return c


@pytest.fixture
def trainer(cfg: Config, tmp_path: Path) -> Iterator[Callable[..., TrainerProcess]]:
    started: list[TrainerProcess] = []

    def start(name: str = "trainer") -> TrainerProcess:
        started.append(TrainerProcess(cfg, tmp_path / f"{name}.log").start())
        return started[-1]

    yield start
    for p in started:
        if p.alive():
            p.kill(signal.SIGKILL)


def events(n: int, seed: int = 1) -> list[dict[str, Any]]:
    return list(SyntheticStream(SyntheticConfig(seed=seed, n_users=50, n_events=n)).events())


def publish(cfg: Config, evs: list[dict[str, Any]]) -> None:
    producer = kafka_io.make_producer(cfg.kafka)
    try:
        kafka_io.publish(producer, cfg.kafka.events_topic, evs)
    finally:
        producer.close()


def assert_stops(p: TrainerProcess, sig: int = signal.SIGTERM) -> str:
    rc, took = p.stop(sig, within_s=WITHIN_S)
    log = p.log_text()
    assert rc == 0, f"exit code {rc} after {took:.1f} s:\n{p.log_tail()}"
    assert OVERDUE not in log, f"the watchdog had to end it:\n{p.log_tail()}"
    print(f"\n{signal.Signals(sig).name}: exit 0 in {took:.2f} s")
    return log


def test_while_importing(trainer: Callable[..., TrainerProcess]) -> None:
    p = trainer()
    p.wait_log("trainer starting")  # logged before Kafka, Redis and TensorFlow are imported
    assert NOTHING_TO_SAVE in assert_stops(p, signal.SIGINT)


def test_while_restoring_and_compiling(trainer: Callable[..., TrainerProcess]) -> None:
    p = trainer()
    p.wait_log("leads group")  # next: TensorFlow's import, the restore and the compilation
    assert NOTHING_TO_SAVE in assert_stops(p)


def test_while_standing_by(cfg: Config, trainer: Callable[..., TrainerProcess]) -> None:
    r = redis.Redis.from_url(cfg.redis.url)
    r.set(f"{cfg.redis.prefix}lease:{cfg.kafka.group_id}", "another-trainer", px=60_000)
    p = trainer()
    p.wait_log("standing by")
    wait_until(lambda: p.probe()[1].get("state") == "standby", 30, "/ready to say standby")
    assert p.probe()[0] == 503
    assert NOTHING_TO_SAVE in assert_stops(p)


def test_while_consuming_then_a_second_time_nothing_lost(
    cfg: Config, trainer: Callable[..., TrainerProcess]
) -> None:
    r = redis.Redis.from_url(cfg.redis.url)
    evs = events(3000)
    p = trainer("first")
    p.wait_ready()
    status, body = p.probe("/live")
    assert status == 200 and body["state"] == "active", body
    publish(cfg, evs[:2000])
    wait_until(lambda: sum(stored_offsets(r, cfg).values()) >= 2000, 60, "2,000 events stored")
    log = assert_stops(p)
    assert "trainer stopped" in log
    q = trainer("second")
    q.wait_ready()
    publish(cfg, evs[2000:])
    wait_until(lambda: sum(stored_offsets(r, cfg).values()) >= 3000, 60, "the end of the stream")
    assert_stops(q, signal.SIGINT)


def test_during_a_rebalance(cfg: Config, trainer: Callable[..., TrainerProcess]) -> None:
    from kafka import KafkaConsumer

    p = trainer()
    p.wait_ready()
    # A second member joins the group: the trainer's partitions are revoked and the group
    # rebalances while this member keeps polling.
    other = KafkaConsumer(
        bootstrap_servers=cfg.kafka.bootstrap,
        group_id=cfg.kafka.group_id,
        enable_auto_commit=False,
        session_timeout_ms=10_000,
    )
    other.subscribe([cfg.kafka.events_topic])
    done = threading.Event()
    poller = threading.Thread(target=lambda: [other.poll(100) for _ in iter(done.is_set, True)])
    poller.start()
    try:
        p.wait_log("revoked")
        assert_stops(p)
    finally:
        done.set()
        poller.join(timeout=10)
        other.close(autocommit=False, timeout_ms=2000)


def test_during_a_redis_outage_nothing_lost(
    stack: ServicesConfig, cfg: Config, trainer: Callable[..., TrainerProcess]
) -> None:
    r = redis.Redis.from_url(cfg.redis.url)
    evs = events(2000, seed=2)
    p = trainer("first")
    p.wait_ready()
    publish(cfg, evs[:1000])
    wait_until(lambda: sum(stored_offsets(r, cfg).values()) >= 1000, 60, "1,000 events stored")
    services.down(stack, [services.REDIS])
    try:
        publish(cfg, evs[1000:])  # learned, but Redis cannot take them
        p.wait_log("Redis unavailable")
        wait_until(lambda: p.probe()[0] == 503, 30, "/ready to fail during the outage")
        assert_stops(p)
    finally:
        services.up(stack, [services.REDIS])
    assert sum(stored_offsets(r, cfg).values()) < 2000
    q = trainer("second")
    q.wait_ready()
    wait_until(lambda: sum(stored_offsets(r, cfg).values()) >= 2000, 60, "the end of the stream")
    assert_stops(q)


def test_during_a_kafka_outage(
    stack: ServicesConfig, cfg: Config, trainer: Callable[..., TrainerProcess]
) -> None:
    r = redis.Redis.from_url(cfg.redis.url)
    p = trainer()
    p.wait_ready()
    publish(cfg, events(500, seed=3))
    wait_until(lambda: sum(stored_offsets(r, cfg).values()) >= 500, 60, "500 events stored")
    services.down(stack, [services.KAFKA])
    try:
        assert p.alive()
        assert_stops(p)
    finally:
        services.up(stack, [services.KAFKA])
