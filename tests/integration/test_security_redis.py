"""Redis with ACL users: the right password works, a wrong one, an unknown user or a missing
right stops `streamrec train` and `streamrec serve` within 15 s with one line naming Redis,
the user and what failed; a sentinel password shows in no log line (at DEBUG), metric, config
dump, exception or dead-letter header.

The module runs a Redis of its own on a free port with an ACL file (default user off), so
the shared Redis stays open. Kafka is the session's shared broker (PLAINTEXT).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
from pipeline_helpers import free_ports, wait_until

from streamrec.consumers.config import Config
from streamrec.streaming import kafka_io
from streamrec.streaming.client import Recommender, StoreUnavailable
from streamrec.streaming.keys import Keys
from streamrec.streaming.security import EXIT_ACCESS_DENIED, AccessDenied, Secret, denial
from streamrec.streaming.store import RedisStore, connect
from streamrec.streaming.synthetic import SyntheticConfig, SyntheticStream
from streamrec_devservices import prereqs

pytestmark = [pytest.mark.integration]

SENTINEL = "s3ntinel-Pw-2c9e"
WITHIN_S = 15.0
PREFIX = "sec:"


def _redis_server() -> str:
    """The binary the local services use, installed from Debian by them when missing."""
    return prereqs.redis_server(Config.from_env().services)


@pytest.fixture(scope="module")
def acl_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """redis://127.0.0.1:PORT/0 of a private Redis whose users are:
    trainer (every command on sec:* keys), noscript (no EVALSHA/EVAL), readonly (reads
    sec:* keys only); the default user is off."""
    home = tmp_path_factory.mktemp("acl-redis")
    (home / "users.acl").write_text(
        "user default off\n"
        f"user trainer on >{SENTINEL} ~{PREFIX}* resetchannels +@all -@dangerous\n"
        f"user noscript on >{SENTINEL} ~{PREFIX}* resetchannels +@all -evalsha -eval\n"
        f"user readonly on >{SENTINEL} %R~{PREFIX}* resetchannels +@all\n"
    )
    port = free_ports(1)[0]
    proc = subprocess.Popen(
        [
            _redis_server(),
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--aclfile",
            str(home / "users.acl"),
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(home),
        ],
        stdout=open(home / "redis.log", "wb"),  # noqa: SIM115 - the server's lifetime
        stderr=subprocess.STDOUT,
    )
    try:
        probe = redis.Redis(port=port, username="trainer", password=SENTINEL, socket_timeout=1)
        wait_until(lambda: _answers(probe), 10, "the ACL Redis to answer")
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _answers(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False


@pytest.fixture
def cfg(config: Config, acl_redis: str, tmp_path: Path) -> Config:
    """The test's topics on the shared Kafka; the ACL Redis as user `trainer`."""
    return config.replace(
        redis={"url": acl_redis, "prefix": PREFIX, "username": "trainer", "password": SENTINEL},
        trainer={"stop_when_idle_ms": 3000, "lease_ttl_ms": 3000},
    )


def as_user(cfg: Config, user: str, password: str = SENTINEL) -> Config:
    return cfg.replace(redis={"username": user, "password": Secret(password)})


def run_cli(cfg: Config, *argv: str, timeout_s: float = WITHIN_S) -> tuple[int, float, str]:
    """`streamrec -v ARGV` (DEBUG logging) with `cfg` as STREAMREC_* variables: (exit code,
    seconds, stdout+stderr). Fails when it runs past `timeout_s`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMREC_")}
    env.update(cfg.to_env())
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    t0 = time.monotonic()
    try:
        done = subprocess.run(
            [sys.executable, "-m", "streamrec.consumers.cli", "-v", *argv],
            env=env,
            capture_output=True,
            timeout=timeout_s,
        )
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or b"") + (e.stderr or b"")
        raise AssertionError(
            f"streamrec {' '.join(argv)} still running after {timeout_s:.0f} s:\n"
            + out.decode(errors="replace")[-3000:]
        ) from None
    took = time.monotonic() - t0
    return done.returncode, took, (done.stdout + done.stderr).decode(errors="replace")


def assert_one_denial_line(output: str, *needles: str) -> str:
    lines = [ln for ln in output.splitlines() if "denied access" in ln]
    assert len(lines) == 1, output[-3000:]
    line = lines[0]
    for needle in ("redis", *needles):
        assert needle in line, line
    assert "Traceback" not in output, output[-3000:]
    assert SENTINEL not in output
    return line


def test_the_right_password_works_for_the_store_and_the_read_client(cfg: Config) -> None:
    client = connect(cfg.redis)
    assert client.ping()
    store = RedisStore(client, Keys(PREFIX), cfg.kafka.group_id)
    assert store.read_offsets() == {}
    assert Recommender(cfg.redis).health()["redis"] == "ok"
    # the same credentials in the URL instead: taken out of it, into the Secret
    port = cfg.redis.url.split(":")[-1].split("/")[0]
    in_url = cfg.replace(
        redis={"url": f"redis://trainer:{SENTINEL}@127.0.0.1:{port}/0", "password": Secret()}
    )
    assert SENTINEL not in repr(in_url) and SENTINEL not in in_url.redis.url
    assert connect(in_url.redis).ping()


@pytest.mark.parametrize(
    ("user", "password"), [("trainer", "wrong-password"), ("nobody", SENTINEL)]
)
def test_a_wrong_password_or_unknown_user_is_denied_not_retried(
    cfg: Config, user: str, password: str
) -> None:
    bad = as_user(cfg, user, password)
    t0 = time.monotonic()
    with pytest.raises(StoreUnavailable) as e:
        Recommender(bad.redis).health()
    assert time.monotonic() - t0 < 2.0  # redis-py's Retry did not retry it
    assert not e.value.retriable and SENTINEL not in str(e.value)
    found = denial(e.value, redis=bad.redis)
    assert isinstance(found, AccessDenied) and found.principal == user

    rc, took, out = run_cli(bad, "train")
    assert rc == EXIT_ACCESS_DENIED, out[-3000:]
    line = assert_one_denial_line(out, repr(user), "authentication failed")
    print(f"\ntrain as {user}: exit {rc} in {took:.1f} s: {line}")

    port = str(free_ports(1)[0])
    rc, took, out = run_cli(bad, "serve", "--port", port)
    assert rc == EXIT_ACCESS_DENIED, out[-3000:]
    line = assert_one_denial_line(out, repr(user), "authentication failed")
    print(f"serve as {user}: exit {rc} in {took:.1f} s: {line}")


@pytest.mark.parametrize(
    ("user", "right"),
    [
        ("noscript", "'evalsha' command"),
        ("readonly", "no permissions to access one of the keys"),
    ],
)
def test_a_missing_right_stops_the_trainer_naming_it(cfg: Config, user: str, right: str) -> None:
    rc, took, out = run_cli(as_user(cfg, user), "train")
    assert rc == EXIT_ACCESS_DENIED, out[-3000:]
    line = assert_one_denial_line(out, repr(user), "missing ACL right", right)
    print(f"\ntrain as {user}: exit {rc} in {took:.1f} s: {line}")


def test_the_password_shows_nowhere(cfg: Config, tmp_path: Path) -> None:
    """A working trainer at DEBUG, its metrics, its dead letters, `serve` and `config`."""
    events = list(SyntheticStream(SyntheticConfig(seed=3, n_users=20, n_events=300)).events())
    producer = kafka_io.make_producer(cfg.kafka)
    try:
        kafka_io.publish(producer, cfg.kafka.events_topic, events)
        producer.send(cfg.kafka.events_topic, key=b"u1", value=b"{not json").get(timeout=30)
    finally:
        producer.close()
    (tmp_path / "pw").write_text(SENTINEL + "\n")
    port = free_ports(1)[0]
    c = cfg.replace(trainer={"metrics_port": port})
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMREC_")}
    env.update(c.to_env())
    del env["STREAMREC_REDIS_PASSWORD"]  # the file convention, as a container image would
    env["STREAMREC_REDIS_PASSWORD_FILE"] = str(tmp_path / "pw")
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    log_path = tmp_path / "trainer.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamrec.consumers.cli", "-v", "train"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    metrics = ""
    try:

        def scraped() -> bool:
            nonlocal metrics
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
                    metrics = r.read().decode()
            except OSError:
                return False
            return "streamrec_" in metrics and proc.poll() is None

        wait_until(scraped, 120, "the trainer's /metrics")
        rc = proc.wait(timeout=120)  # stop_when_idle_ms ends it
    finally:
        if proc.poll() is None:
            proc.kill()
    log_text = log_path.read_text(errors="replace")
    assert rc == 0, log_text[-3000:]
    assert "DEBUG" in log_text  # it did run at DEBUG
    assert SENTINEL not in log_text
    assert SENTINEL not in metrics

    letters = _read_all(cfg, cfg.kafka.dlq_topic)
    assert letters, "the bad record was dead-lettered"
    for rec in letters:
        for key, value in rec.headers or []:
            assert SENTINEL not in key and SENTINEL.encode() not in value
        assert SENTINEL.encode() not in (rec.value or b"")

    served = _serve_briefly(c, tmp_path / "serve.log")
    assert "/healthz" in served and "DEBUG" in served
    assert SENTINEL not in served

    rc, _, out = run_cli(c, "config")
    assert rc == 0 and SENTINEL not in out
    assert SENTINEL not in repr(c) and SENTINEL not in orjson.dumps(c.redis, default=str).decode()


def _serve_briefly(cfg: Config, log_path: Path) -> str:
    """`streamrec -v serve` with the right password: /healthz, a recommendation, SIGTERM."""
    port = free_ports(1)[0]
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMREC_")}
    env.update(cfg.to_env())
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamrec.consumers.cli", "-v", "serve", "--port", str(port)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    bodies: list[bytes] = []
    try:

        def get(path: str) -> bool:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as r:
                    bodies.append(r.read())
                    return True
            except OSError:
                return False

        wait_until(lambda: get("/healthz"), 60, "streamrec serve to answer")
        assert get("/recommend/u1?k=3")
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert all(SENTINEL.encode() not in b for b in bodies)
    return log_path.read_text(errors="replace")


def _read_all(cfg: Config, topic: str) -> list[Any]:
    consumer = kafka_io.make_consumer(cfg.kafka, None, consumer_timeout_ms=5000)
    try:
        consumer.subscribe([topic])
        return list(consumer)
    finally:
        consumer.close()


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """rediss://127.0.0.1:PORT/0 of a private TLS-only Redis, and the folder with its CA
    (ca.pem) and an unrelated CA (other-ca.pem); certificates made here with openssl."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    d = tmp_path_factory.mktemp("tls-redis")
    _openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=streamrec-test-ca",
        cwd=d,
    )
    _openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "other.key",
        "-out",
        "other-ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=another-ca",
        cwd=d,
    )
    _openssl(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=localhost",
        cwd=d,
    )
    (d / "ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost")
    _openssl(
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "ext",
        cwd=d,
    )
    port = free_ports(1)[0]
    with open(d / "redis.log", "wb") as out:
        proc = subprocess.Popen(
            [_redis_server(), "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
             "--tls-cert-file", str(d / "server.pem"), "--tls-key-file", str(d / "server.key"),
             "--tls-ca-cert-file", str(d / "ca.pem"), "--tls-auth-clients", "no",
             "--save", "", "--appendonly", "no", "--dir", str(d)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        time.sleep(0.3)
        if proc.poll() is not None:
            pytest.skip("this redis-server has no TLS: " + (d / "redis.log").read_text()[-300:])
        url = f"rediss://127.0.0.1:{port}/0"
        probe = redis.Redis.from_url(url, ssl_ca_certs=str(d / "ca.pem"), socket_timeout=1)
        wait_until(lambda: _answers(probe), 10, "the TLS Redis to answer")
        yield url, d
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_a_certificate_that_does_not_verify_is_denied(
    tls_redis: tuple[str, Path], config: Config
) -> None:
    url, d = tls_redis
    good = config.replace(redis={"url": url, "ssl_cafile": str(d / "ca.pem")})
    assert connect(good.redis).ping()
    assert Recommender(good.redis).health()["redis"] == "ok"
    # the same server on a redis:// URL with ssl=true
    as_redis = good.replace(redis={"url": url.replace("rediss://", "redis://"), "ssl": True})
    assert connect(as_redis.redis).ping()

    bad = good.replace(redis={"ssl_cafile": str(d / "other-ca.pem")})
    rc, took, out = run_cli(bad, "serve", "--port", str(free_ports(1)[0]))
    assert rc == EXIT_ACCESS_DENIED, out[-3000:]
    line = assert_one_denial_line(out, "'default'", "TLS handshake failed", "certificate verify")
    print(f"\nserve with the wrong CA: exit {rc} in {took:.1f} s: {line}")
