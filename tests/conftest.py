"""Shared fixtures: where the Kafka broker and Redis come from, and per-test isolation.

Servers, in this order, per server:
1. `STREAMREC_KAFKA_BOOTSTRAP` / `STREAMREC_REDIS_URL` when set: CI or a person already runs
   them, and tests must not start a second copy;
2. testcontainers, when a Docker engine answers (the usual way on a developer's machine);
3. the project's own local servers (`streamrec_devservices`), which need only Java and Debian's
   redis-server: this is what runs where there is no Docker engine.

Local servers that were already running before the session are reused and left running; the
ones this session started are stopped at its end. Servers are shared by the whole session, so
each test gets its own topics, consumer group and Redis key prefix (`names`), and its keys are
deleted afterwards with SCAN + DEL (never KEYS, which blocks a shared Redis).
"""

from __future__ import annotations

import contextlib
import logging
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

import streamrec_devservices as services
from streamrec.consumers.config import Config
from streamrec.streaming.admin import create_topics
from streamrec.streaming.config import ServicesConfig
from streamrec.streaming.store import delete_prefix

log = logging.getLogger("streamrec.tests")

ROOT = Path(__file__).resolve().parent.parent
SERVER_FIXTURES = frozenset(
    {"kafka_bootstrap", "redis_url", "local_services", "names", "config", "redis_client"}
)
# Pinned images for the testcontainers path (KafkaContainer's KRaft set-up is written for
# Confluent's image).
KAFKA_IMAGE = "confluentinc/cp-kafka:7.6.0"
REDIS_IMAGE = "redis:7.4.2"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests that use a server fixture are integration tests even if their author forgot."""
    for item in items:
        if SERVER_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)


# --------------------------------------------------------------------------- no orphans


def _trainer_children() -> list[str]:
    """Trainer processes whose parent is this pytest process, started by any means."""
    me, found = str(os.getpid()), []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = stat.read_text().rsplit(")", 1)[1].split()[1]
            if ppid != me:
                continue
            cmd = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, IndexError):
            continue  # gone meanwhile
        if "consumers.cli train" in cmd or "streamrec train" in cmd:
            found.append(f"{stat.parent.name}: {cmd.strip()}")
    return found


@pytest.fixture(autouse=True)
def _no_orphans() -> Iterator[None]:
    """Fail the test that leaves a trainer running (after stopping it): an orphan keeps
    retrying torn-down servers and takes CPU from every test after it."""
    yield
    from pipeline_helpers import reap_trainers

    left = reap_trainers()
    others = _trainer_children()
    for line in others:
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(line.split(":", 1)[0]), 9)
    if left or others:
        pytest.fail(f"the test left trainer processes running (now killed): {left + others}")


# --------------------------------------------------------------------------- where servers live


@pytest.fixture(scope="session")
def services_config() -> ServicesConfig:
    """The local servers' settings from STREAMREC_SERVICES_*; a relative home is anchored at
    the repository root, so running pytest from another folder reuses the same servers and
    download cache instead of starting a second set."""
    cfg = Config.from_env().services
    if not Path(cfg.home).is_absolute():
        import dataclasses

        cfg = dataclasses.replace(cfg, home=str(ROOT / cfg.home))
    return cfg


@dataclass
class LocalServices:
    """Starts local servers on demand; remembers which ones this session started."""

    cfg: ServicesConfig
    started: list[str] = field(default_factory=list)
    _checked: set[str] = field(default_factory=set)

    def ensure(self, *names: str) -> services.ServicesStatus:
        for name in names:
            if name in self._checked:
                continue
            before = getattr(services.status(self.cfg, [name]), name)
            services.up(self.cfg, [name])
            if before is None or before.pid is None:
                self.started.append(name)
            self._checked.add(name)
        return services.status(self.cfg, list(names))

    def stop_started(self) -> None:
        if self.started:
            services.down(self.cfg, self.started)
            self.started.clear()


@pytest.fixture(scope="session")
def _local(services_config: ServicesConfig) -> Iterator[LocalServices]:
    local = LocalServices(services_config)
    yield local
    local.stop_started()


@pytest.fixture(scope="session")
def local_services(_local: LocalServices) -> services.ServicesStatus:
    """Both local servers, running and healthy (for the tests of `streamrec_devservices`)."""
    st = _local.ensure(services.KAFKA, services.REDIS)
    assert st.healthy, st.lines()
    return st


@pytest.fixture(scope="session")
def docker_engine() -> bool:
    """True when a Docker engine answers within a few seconds (a docker CLI alone is not)."""
    try:
        import docker

        client = docker.from_env(timeout=3)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:  # no SDK, no socket, no daemon, wrong permissions: all mean "no"
        return False


@pytest.fixture(scope="session")
def kafka_bootstrap(
    request: pytest.FixtureRequest, docker_engine: bool, _local: LocalServices
) -> str:
    env = os.environ.get("STREAMREC_KAFKA_BOOTSTRAP")
    if env:
        return env
    if docker_engine:
        try:
            from testcontainers.community.kafka import KafkaContainer
        except ImportError:  # older testcontainers
            from testcontainers.kafka import KafkaContainer

        container = KafkaContainer(KAFKA_IMAGE).with_kraft()
        container.start(timeout=120)
        request.addfinalizer(container.stop)
        return str(container.get_bootstrap_server())
    st = _local.ensure(services.KAFKA)
    assert st.bootstrap and st.healthy, st.lines()
    return st.bootstrap


@pytest.fixture(scope="session")
def redis_url(request: pytest.FixtureRequest, docker_engine: bool, _local: LocalServices) -> str:
    env = os.environ.get("STREAMREC_REDIS_URL")
    if env:
        return env
    if docker_engine:
        try:
            from testcontainers.community.redis import RedisContainer
        except ImportError:
            from testcontainers.redis import RedisContainer

        container = RedisContainer(REDIS_IMAGE).with_command(
            ["redis-server", *services.redis_arguments()]
        )
        container.start()
        request.addfinalizer(container.stop)
        host = container.get_container_host_ip()
        return f"redis://{host}:{container.get_exposed_port(6379)}/0"
    st = _local.ensure(services.REDIS)
    assert st.redis_url and st.healthy, st.lines()
    return st.redis_url


# --------------------------------------------------------------------------- per-test isolation


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[Any]:
    import redis

    client = redis.Redis.from_url(redis_url, socket_timeout=5, socket_connect_timeout=5)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def redis_prefix(redis_url: str) -> Iterator[str]:
    """A unique key prefix; its keys are deleted after the test."""
    import redis

    prefix = f"srt{uuid.uuid4().hex[:10]}:"
    yield prefix
    client = redis.Redis.from_url(redis_url, socket_timeout=5, socket_connect_timeout=5)
    try:
        delete_prefix(client, prefix)
    finally:
        client.close()


@dataclass(frozen=True)
class Names:
    run: str
    events: str
    dlq: str
    items: str
    users: str
    group: str
    prefix: str
    partitions: int


@pytest.fixture
def names(kafka_bootstrap: str, redis_prefix: str) -> Iterator[Names]:
    """Unique topics (created, deleted after), consumer group and Redis prefix for one test."""
    run = uuid.uuid4().hex[:10]
    n = Names(
        run=run,
        events=f"t.{run}.events",
        dlq=f"t.{run}.events.dlq",
        items=f"t.{run}.items",
        users=f"t.{run}.users",
        group=f"g.{run}",
        prefix=redis_prefix,
        partitions=2,
    )
    create_topics(
        kafka_bootstrap,
        {n.events: n.partitions, n.dlq: 1, n.items: 1, n.users: 1},
        compacted={n.items, n.users},
    )
    yield n
    # The shared broker outlives the session; without this every run leaves four topics behind.
    with contextlib.suppress(Exception):
        from kafka import KafkaAdminClient

        admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap, request_timeout_ms=10_000)
        try:
            admin.delete_topics([n.events, n.dlq, n.items, n.users], timeout_ms=10_000)
        finally:
            admin.close()


@pytest.fixture
def config(names: Names, kafka_bootstrap: str, redis_url: str, tmp_path: Path) -> Config:
    """The process config aimed at this test's topics, group and prefix, sized for speed.

    `stop_when_idle_ms` is set so a trainer run by a test ends on its own instead of hanging
    the suite when a test forgets to stop it.
    """
    return Config().replace(
        kafka={
            "bootstrap": kafka_bootstrap,
            "events_topic": names.events,
            "dlq_topic": names.dlq,
            "items_topic": names.items,
            "users_topic": names.users,
            "group_id": names.group,
            "partitions": names.partitions,
            "poll_timeout_ms": 100,
            "max_poll_records": 512,
        },
        redis={"url": redis_url, "prefix": names.prefix},
        trainer={
            "batch_max_events": 256,
            "batch_max_wait_ms": 50,
            "checkpoint_dir": str(tmp_path / "checkpoints"),
            "stop_when_idle_ms": 3000,
            "tf_threads": 1,
        },
        model={"dim": 8, "negatives": 8, "initial_capacity": 64},
    )
