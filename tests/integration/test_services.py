"""The local servers: idempotent start, real answers, and fast, clear failures.

The shared servers (default ports, or STREAMREC_SERVICES_*) are only read or re-`up`ed here,
never stopped; the tests that start, break or stop servers use a throwaway home on other ports
and share the download cache, so they neither disturb other tests nor download Kafka again.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

import streamrec_devservices as services
from streamrec.consumers.cli import run
from streamrec.consumers.config import Config
from streamrec.streaming.admin import create_topics
from streamrec.streaming.config import ServicesConfig
from streamrec_devservices import artifacts, common, kafka_server, prereqs, redis_server, supervise

integration = pytest.mark.integration


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _free_ports(n: int) -> list[int]:
    ports: set[int] = set()
    while len(ports) < n:
        ports.add(_free_port())
    return sorted(ports)


def _processes_using(home: str) -> list[int]:
    """Pids whose command line mentions `home` (our Kafka names its server.properties)."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if home.encode() in (proc / "cmdline").read_bytes():
                    found.append(int(proc.name))
            except OSError:
                continue
    return found


@pytest.fixture
def throwaway(tmp_path: Path, services_config: ServicesConfig) -> Iterator[ServicesConfig]:
    """Another home on free ports that reuses the shared download cache; stopped afterwards."""
    kafka, controller, redis_port = _free_ports(3)
    cfg = dataclasses.replace(
        services_config,
        home=str(tmp_path / "home"),
        cache_dir=str(services.cache_dir(services_config)),
        kafka_port=kafka,
        kafka_controller_port=controller,
        redis_port=redis_port,
        start_timeout_s=90.0,
    )
    yield cfg
    services.down(cfg)
    leaked = _processes_using(cfg.home)
    for pid in leaked:  # a safety net for this test's own servers, named by their home
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    assert not leaked, f"servers of the throwaway home outlived down(): {leaked}"


@integration
def test_up_again_reuses_the_running_servers(
    local_services: services.ServicesStatus, services_config: ServicesConfig
) -> None:
    t0 = time.monotonic()
    again = services.up(services_config)
    took = time.monotonic() - t0
    assert again.kafka is not None and again.redis is not None
    assert local_services.kafka is not None and local_services.redis is not None
    assert again.kafka.pid == local_services.kafka.pid
    assert again.redis.pid == local_services.redis.pid
    assert again.healthy
    assert took < 10, f"an up of running servers should only check them, took {took:.1f} s"


@integration
def test_status_reports_pid_port_and_health(
    local_services: services.ServicesStatus,
    services_config: ServicesConfig,
    capsys: pytest.CaptureFixture[str],
) -> None:
    st = services.status(services_config)
    assert st.healthy
    assert st.kafka is not None and st.kafka.port == services_config.kafka_port
    assert st.redis is not None and st.redis.port == services_config.redis_port
    assert st.kafka.pid and st.redis.pid
    assert run(["services", "status"], Config(services=services_config)) == 0
    out = capsys.readouterr().out
    assert f"pid {st.kafka.pid}" in out and f"pid {st.redis.pid}" in out
    assert "NOT healthy" not in out


@integration
def test_kafka_metadata_and_round_trip(local_services: services.ServicesStatus) -> None:
    from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer

    bootstrap = local_services.bootstrap
    assert bootstrap is not None
    assert services.kafka_probe(bootstrap) is None
    topic = f"t.services.{uuid.uuid4().hex[:10]}"
    got = create_topics(bootstrap, {topic: 2})
    assert got == {topic: 2}
    assert create_topics(bootstrap, {topic: 2}) == {topic: 2}  # idempotent
    try:
        producer = KafkaProducer(bootstrap_servers=bootstrap)
        sent = [f"m{i}".encode() for i in range(20)]
        for i, value in enumerate(sent):
            producer.send(topic, key=str(i % 3).encode(), value=value)
        producer.flush(timeout=30)
        producer.close()
        consumer = KafkaConsumer(
            topic,
            bootstrap_servers=bootstrap,
            group_id=f"g.{topic}",
            auto_offset_reset="earliest",
            enable_auto_commit=False,
        )
        received: list[bytes] = []
        deadline = time.monotonic() + 30
        while len(received) < len(sent) and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                received.extend(r.value for r in records)
        consumer.close()
        assert sorted(received) == sorted(sent)
    finally:
        admin = KafkaAdminClient(bootstrap_servers=bootstrap)
        admin.delete_topics([topic])
        admin.close()


@integration
def test_compacted_topics_are_compacted(local_services: services.ServicesStatus) -> None:
    from kafka import KafkaAdminClient
    from kafka.admin import ConfigResource, ConfigResourceType

    bootstrap = local_services.bootstrap
    assert bootstrap is not None
    topic = f"t.services.{uuid.uuid4().hex[:10]}"
    create_topics(bootstrap, {topic: 1}, compacted={topic})
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        res = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
        text = json.dumps(res, default=str)
        assert "cleanup.policy" in text and "compact" in text
    finally:
        admin.delete_topics([topic])
        admin.close()


@integration
def test_redis_answers_with_durable_settings(local_services: services.ServicesStatus) -> None:
    import redis

    assert local_services.redis_url is not None
    client = redis.Redis.from_url(local_services.redis_url)
    try:
        assert client.ping()
        assert client.config_get("appendonly") == {"appendonly": "yes"}
        assert client.config_get("appendfsync") == {"appendfsync": "everysec"}
        assert client.config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}
        limit = client.config_get("hash-max-listpack-value")
        assert limit == {"hash-max-listpack-value": "512"}
    finally:
        client.close()


@integration
def test_taken_kafka_port_fails_fast_naming_the_setting(throwaway: ServicesConfig) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", throwaway.kafka_port))
        squatter.listen()
        t0 = time.monotonic()
        with pytest.raises(services.ServicesError) as err:
            services.up(throwaway)
        assert time.monotonic() - t0 < 10
    msg = str(err.value)
    assert "STREAMREC_SERVICES_KAFKA_PORT" in msg and str(throwaway.kafka_port) in msg
    st = services.status(throwaway)
    assert st.kafka is not None and st.kafka.pid is None
    assert st.redis is not None and st.redis.pid is None


@integration
def test_failed_up_leaves_nothing_running(throwaway: ServicesConfig) -> None:
    """Kafka is spawned first; when Redis's port turns out taken, that Kafka is stopped."""
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", throwaway.redis_port))
        squatter.listen()
        with pytest.raises(services.ServicesError, match="STREAMREC_SERVICES_REDIS_PORT"):
            services.up(throwaway)
    st = services.status(throwaway)
    assert st.kafka is not None and st.kafka.pid is None
    assert supervise.port_free(throwaway.kafka_port)
    assert _processes_using(throwaway.home) == [], "the Kafka this up started is still alive"
    assert not Path(throwaway.home, "run", "kafka", "kafka.pid").exists()


@integration
@pytest.mark.slow
def test_throwaway_home_up_up_down(throwaway: ServicesConfig) -> None:
    """Full cycle on a second home: warm start from the shared cache, reuse, clean stop."""
    first = services.up(throwaway)
    assert first.healthy
    assert not Path(throwaway.home, "cache").exists(), "the shared cache should be used"
    second = services.up(throwaway)
    assert first.kafka is not None and second.kafka is not None
    assert first.redis is not None and second.redis is not None
    assert (second.kafka.pid, second.redis.pid) == (first.kafka.pid, first.redis.pid)
    log_text = Path(first.kafka.log_file).read_text()
    assert "Kafka Server started" in log_text
    out = Path(throwaway.home, "run", "kafka", "kafka.out").read_text()
    assert "SLF4J" not in out, "log4j-slf4j-impl should bind slf4j 1.7"
    stopped = services.down(throwaway)
    assert stopped.kafka is not None and stopped.kafka.pid is None
    assert stopped.redis is not None and stopped.redis.pid is None
    assert supervise.port_free(throwaway.kafka_port) and supervise.port_free(throwaway.redis_port)


@integration
def test_stale_pid_file_is_ignored(throwaway: ServicesConfig) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    pid_file = Path(throwaway.home, "run", "redis", "redis.pid")
    pid_file.parent.mkdir(parents=True)
    pid_file.write_text(json.dumps({"pid": dead.pid, "ports": [throwaway.redis_port]}))
    st = services.status(throwaway, [services.REDIS])
    assert st.redis is not None and st.redis.pid is None and not st.redis.healthy
    services.down(throwaway, [services.REDIS])
    assert not pid_file.exists()


# --------------------------------------------------------------------------- downloads


@pytest.fixture
def linked_cache(tmp_path: Path, services_config: ServicesConfig) -> ServicesConfig:
    """A fresh jar cache whose Maven repository is the shared one: Maven runs for real, but
    resolves from disk (seconds) instead of Maven Central."""
    services.ensure_kafka_jars(services_config)  # makes sure the shared repository is filled
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "m2").symlink_to(services.cache_dir(services_config) / "m2")
    return ServicesConfig(home=str(tmp_path / "home"), cache_dir=str(cache))


@integration
@pytest.mark.slow
def test_damaged_download_is_redone(linked_cache: ServicesConfig) -> None:
    libs = services.ensure_kafka_jars(linked_cache)
    jar = libs / f"kafka-clients-{linked_cache.kafka_version}.jar"
    size = jar.stat().st_size
    jar.write_bytes(b"")  # a download cut short
    assert services.ensure_kafka_jars(linked_cache) == libs
    assert jar.stat().st_size == size


@integration
@pytest.mark.slow
def test_download_failure_names_what_failed(linked_cache: ServicesConfig) -> None:
    cfg = dataclasses.replace(linked_cache, kafka_version="9.9.9")
    with pytest.raises(services.ServicesError) as err:
        services.ensure_kafka_jars(cfg)
    msg = str(err.value)
    assert "org.apache.kafka:kafka_2.13:9.9.9" in msg
    assert "STREAMREC_SERVICES_KAFKA_VERSION" in msg
    assert "\x1b[" not in msg
    assert not (Path(cfg.cache_dir) / "kafka-9.9.9" / ".complete").exists()


# --------------------------------------------------------------------------- unit: no servers


def _fake_dist(root: Path, version: str = "4.1.1") -> Path:
    dist = root / f"kafka-{version}"
    (dist / "libs").mkdir(parents=True)
    jars = {"a.jar": b"aaaa", "b.jar": b"bb"}
    for name, data in jars.items():
        (dist / "libs" / name).write_bytes(data)
    stamp = {
        "kafka_version": version,
        "pom_sha256": artifacts._pom_digest(version),
        "jars": {n: len(d) for n, d in jars.items()},
    }
    (dist / ".complete").write_text(json.dumps(stamp))
    return dist


def test_jar_stamp_is_trusted_only_when_complete(tmp_path: Path) -> None:
    dist = _fake_dist(tmp_path)
    assert artifacts._jars_ready(dist, "4.1.1") == ["a.jar", "b.jar"]
    assert artifacts._jars_ready(dist, "4.1.0") is None  # another version's stamp
    (dist / "libs" / "b.jar").write_bytes(b"b")  # size differs from the stamp
    assert artifacts._jars_ready(dist, "4.1.1") is None
    (dist / "libs" / "b.jar").write_bytes(b"bb")
    stamp = json.loads((dist / ".complete").read_text())
    (dist / ".complete").write_text(json.dumps({**stamp, "pom_sha256": "0" * 64}))
    assert artifacts._jars_ready(dist, "4.1.1") is None  # made from another pom
    (dist / ".complete").unlink()  # the stamp is written last: no stamp, no trust
    assert artifacts._jars_ready(dist, "4.1.1") is None


def test_cache_of_an_older_pom_is_completed_in_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cache from before kafka-tools was in the pom gets it, without the libs folder a
    running broker uses ever being removed; a jar the new set lacks goes."""
    version = "4.1.1"
    old = {f"kafka_2.13-{version}.jar": b"k", f"kafka-clients-{version}.jar": b"cc"}
    old |= {"log4j-slf4j-impl-2.24.3.jar": b"l", "stale-1.0.jar": b"s"}
    libs = tmp_path / "cache" / f"kafka-{version}" / "libs"
    libs.mkdir(parents=True)
    for name, data in old.items():
        (libs / name).write_bytes(data)
    stamp = {"kafka_version": version, "jars": {n: len(d) for n, d in old.items()}}
    (libs.parent / ".complete").write_text(json.dumps(stamp))  # no pom_sha256: an older pom
    new = sorted([*old.keys() - {"stale-1.0.jar"}, f"kafka-tools-{version}.jar"])
    # A stand-in for Maven: writes the new jar set where it is told to.
    fake_mvn = tmp_path / "mvn"
    fake_mvn.write_text(
        "#!/bin/sh\nfor a; do case $a in -DoutputDirectory=*) out=${a#*=};; esac; done\n"
        "printf k > $out/kafka_2.13-4.1.1.jar; printf cc > $out/kafka-clients-4.1.1.jar\n"
        "printf l > $out/log4j-slf4j-impl-2.24.3.jar; printf t > $out/kafka-tools-4.1.1.jar\n"
    )
    fake_mvn.chmod(0o755)
    monkeypatch.setattr(prereqs, "maven", lambda cfg: str(fake_mvn))
    folder, kept = libs.stat().st_ino, (libs / f"kafka-clients-{version}.jar").stat().st_ino

    cfg = ServicesConfig(home=str(tmp_path / "home"), cache_dir=str(tmp_path / "cache"))
    assert services.ensure_kafka_jars(cfg) == libs
    assert sorted(p.name for p in libs.iterdir()) == new
    assert libs.stat().st_ino == folder
    assert (libs / f"kafka-clients-{version}.jar").stat().st_ino == kept  # same artifact: kept
    assert artifacts._jars_ready(libs.parent, version) == new
    assert not (libs.parent / "libs.partial").exists()


def test_missing_java_is_reported(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("JAVA_HOME", str(tmp_path))
    with pytest.raises(services.ServicesError, match=r"Java 17 or newer.*JAVA_HOME"):
        prereqs.java()


def test_old_java_is_reported(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    java = tmp_path / "bin" / "java"
    java.parent.mkdir()
    java.write_text("#!/bin/sh\necho 'java version \"1.8.0_292\"' >&2\n")
    java.chmod(0o755)
    monkeypatch.setenv("JAVA_HOME", str(tmp_path))
    with pytest.raises(services.ServicesError, match="is Java 8"):
        prereqs.java()


def test_missing_maven_is_reported(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(services.ServicesError, match=r"apt-get install -y maven"):
        prereqs.maven(ServicesConfig(auto_install=False))


def test_generated_configs(tmp_path: Path) -> None:
    cfg = ServicesConfig(
        home=str(tmp_path), kafka_port=19092, kafka_controller_port=19093, redis_port=16379
    )
    paths = common.Paths.of(cfg)
    props = kafka_server.KafkaServer(cfg, paths)._properties()
    assert "listeners=PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093\n" in props
    assert "controller.quorum.voters=1@127.0.0.1:19093\n" in props
    assert "auto.create.topics.enable=false\n" in props
    assert "offsets.topic.replication.factor=1\n" in props
    assert f"log.dirs={tmp_path / 'run' / 'kafka' / 'data'}\n" in props
    conf = redis_server.RedisServer(cfg, paths)._conf()
    for line in ("bind 127.0.0.1", "port 16379", "appendonly yes", "appendfsync everysec"):
        assert f"{line}\n" in conf
    assert "maxmemory-policy noeviction\n" in conf
    assert "hash-max-listpack-value 512\n" in conf
    assert 'save ""\n' in conf and "auto-aof-rewrite-percentage 400\n" in conf
    pom = artifacts.POM_TEMPLATE.substitute(
        kafka_version="4.1.1", log4j_version="2.24.3", plugin_version="3.8.1"
    )
    assert "<artifactId>kafka_2.13</artifactId>" in pom and "log4j-slf4j-impl" in pom
    # the tools (ConsoleProducer) without Connect's REST server
    assert "<artifactId>kafka-tools</artifactId>" in pom and "connect-runtime" in pom
    assert services.kafka_pom("4.1.1") == pom


def test_cluster_id_is_a_kafka_uuid() -> None:
    import base64

    for _ in range(200):
        cid = kafka_server._kafka_cluster_id()
        assert len(cid) == 22 and not cid.startswith("-")
        assert len(base64.urlsafe_b64decode(cid + "==")) == 16


def test_settings_are_validated() -> None:
    from streamrec.model.config import ConfigError

    with pytest.raises(ConfigError, match="kafka_heap_mb"):
        ServicesConfig(kafka_heap_mb=64)
    with pytest.raises(ConfigError, match="kafka_version"):
        ServicesConfig(kafka_version="4.1.1</version><x>")
    with pytest.raises(ConfigError, match="stop_timeout_s"):
        ServicesConfig(stop_timeout_s=0)


def test_main_rejects_unknown_service(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    cfg = Config(services=ServicesConfig(home=str(tmp_path)))
    assert run(["services", "status", "zookeeper"], cfg) == 1
    assert "unknown service 'zookeeper'" in capsys.readouterr().err
