"""Kafka with SASL/SCRAM and ACLs: a wrong password, an unknown user or a missing (revoked)
ACL stops `streamrec publish` within 15 s with one line naming Kafka, the principal and what
failed; the right password publishes, and at DEBUG the password shows nowhere.

The module runs a private single-node KRaft broker with a SASL_PLAINTEXT SCRAM-SHA-256
listener and the standard authorizer, from the jars `streamrec_devservices` downloads (read-only
use of `kafka_tool_command`); the session's shared broker is not touched.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from pipeline_helpers import free_ports, wait_until

import streamrec_devservices as services
from streamrec.consumers.config import Config
from streamrec.streaming.admin import create_topics
from streamrec.streaming.config import KafkaConfig, ServicesConfig
from streamrec.streaming.security import EXIT_ACCESS_DENIED, Secret

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SENTINEL = "s3ntinel-Kafka-91d4"
ADMIN_PASSWORD = "admin-" + uuid.uuid4().hex
WITHIN_S = 15.0
MECHANISM = "SCRAM-SHA-256"


def _properties(home: Path, port: int, controller: int) -> str:
    jaas = (
        "org.apache.kafka.common.security.scram.ScramLoginModule required "
        f'username="admin" password="{ADMIN_PASSWORD}";'
    )
    settings = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@127.0.0.1:{controller}",
        "listeners": f"SASL_PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller}",
        "advertised.listeners": f"SASL_PLAINTEXT://127.0.0.1:{port}",
        "listener.security.protocol.map": "SASL_PLAINTEXT:SASL_PLAINTEXT,CONTROLLER:PLAINTEXT",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "SASL_PLAINTEXT",
        "sasl.enabled.mechanisms": f"{MECHANISM},PLAIN",
        "sasl.mechanism.inter.broker.protocol": MECHANISM,
        f"listener.name.sasl_plaintext.{MECHANISM.lower()}.sasl.jaas.config": jaas,
        # PLAIN too (its users listed here), to check the password sent in the clear is not
        # logged by kafka-python at DEBUG
        "listener.name.sasl_plaintext.plain.sasl.jaas.config": (
            "org.apache.kafka.common.security.plain.PlainLoginModule required "
            f'username="admin" password="{ADMIN_PASSWORD}" user_admin="{ADMIN_PASSWORD}" '
            f'user_app="{SENTINEL}";'
        ),
        "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        # the controller listener is PLAINTEXT on loopback: its principal is ANONYMOUS
        "super.users": "User:admin;User:ANONYMOUS",
        "allow.everyone.if.no.acl.found": "false",
        "log.dirs": str(home / "data"),
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "2",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        "group.initial.rebalance.delay.ms": "0",
        "auto.create.topics.enable": "false",
        "num.network.threads": "2",
        "num.io.threads": "2",
    }
    return "".join(f"{k}={v}\n" for k, v in settings.items())


def admin_config(bootstrap: str) -> KafkaConfig:
    return KafkaConfig(
        bootstrap=bootstrap,
        security_protocol="SASL_PLAINTEXT",
        sasl_mechanism=MECHANISM,
        sasl_username="admin",
        sasl_password=Secret(ADMIN_PASSWORD),
    )


@pytest.fixture(scope="module")
def sasl_broker(
    services_config: ServicesConfig, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """host:port of a private SASL_PLAINTEXT broker with users admin (super user) and app
    (password SENTINEL, no ACLs)."""
    home = tmp_path_factory.mktemp("sasl-kafka")
    port, controller = free_ports(2)
    props = home / "server.properties"
    props.write_text(_properties(home, port, controller))
    cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
    fmt = [
        *services.kafka_tool_command(services_config, "kafka.tools.StorageTool"),
        "format",
        f"--cluster-id={cluster_id}",  # an id may start with "-"
        "--config",
        str(props),
        "--add-scram",
        f"{MECHANISM}=[name=admin,password={ADMIN_PASSWORD}]",
        "--add-scram",
        f"{MECHANISM}=[name=app,password={SENTINEL}]",
    ]
    done = subprocess.run(fmt, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    with open(home / "broker.log", "wb") as out:
        proc = subprocess.Popen(
            [*services.kafka_tool_command(services_config, "kafka.Kafka"), str(props)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    bootstrap = f"127.0.0.1:{port}"
    try:

        def ready() -> bool:
            assert proc.poll() is None, (home / "broker.log").read_text()[-3000:]
            try:
                create_topics(admin_config(bootstrap), {"sk.probe": 1}, timeout_s=5)
            except Exception:
                return False
            return True

        wait_until(ready, 120, "the SASL broker to answer")
        yield bootstrap
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@pytest.fixture
def kcfg(sasl_broker: str) -> Config:
    """User app on this test's own events topic (created by admin)."""
    tag = uuid.uuid4().hex[:8]
    cfg = Config.from_env({}).replace(
        kafka={
            "bootstrap": sasl_broker,
            "events_topic": f"sk.{tag}.events",
            "security_protocol": "SASL_PLAINTEXT",
            "sasl_mechanism": MECHANISM,
            "sasl_username": "app",
            "sasl_password": SENTINEL,
        }
    )
    create_topics(admin_config(sasl_broker), {cfg.kafka.events_topic: 1})
    return cfg


def run_cli(cfg: Config, *argv: str) -> tuple[int, float, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMREC_")}
    env.update(cfg.to_env())
    t0 = time.monotonic()
    try:
        done = subprocess.run(
            [sys.executable, "-m", "streamrec.consumers.cli", "-v", *argv],
            env=env,
            capture_output=True,
            timeout=WITHIN_S,
        )
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or b"") + (e.stderr or b"")
        raise AssertionError(
            f"streamrec {' '.join(argv)} still running after {WITHIN_S:.0f} s:\n"
            + out.decode(errors="replace")[-3000:]
        ) from None
    return (
        done.returncode,
        time.monotonic() - t0,
        (done.stdout + done.stderr).decode(errors="replace"),
    )


def assert_one_denial_line(output: str, *needles: str) -> str:
    lines = [ln for ln in output.splitlines() if "denied access" in ln]
    assert len(lines) == 1, output[-3000:]
    for needle in ("kafka", *needles):
        assert needle in lines[0], lines[0]
    assert "Traceback" not in output, output[-3000:]
    assert SENTINEL not in output
    return lines[0]


@pytest.mark.parametrize(("user", "password"), [("app", "wrong-" + SENTINEL), ("nobody", SENTINEL)])
def test_a_wrong_password_or_unknown_user_stops_the_publisher(
    kcfg: Config, user: str, password: str
) -> None:
    bad = kcfg.replace(kafka={"sasl_username": user, "sasl_password": password})
    rc, took, out = run_cli(bad, "publish", "--synthetic", "10")
    assert rc == EXIT_ACCESS_DENIED, out[-3000:]
    line = assert_one_denial_line(out, f"'User:{user}'", "authentication failed")
    print(f"\npublish as {user}: exit {rc} in {took:.1f} s: {line}")


def _acls(bootstrap: str, topic: str, grant: bool) -> None:
    from kafka.admin import (
        ACL,
        ACLFilter,
        ACLOperation,
        ACLPermissionType,
        ACLResourcePatternType,
        KafkaAdminClient,
        ResourcePattern,
        ResourcePatternFilter,
        ResourceType,
    )

    from streamrec.streaming.security import kafka_params

    admin = KafkaAdminClient(**kafka_params(admin_config(bootstrap)))
    try:
        if grant:
            acl = ACL(
                principal="User:app",
                host="*",
                operation=ACLOperation.ALL,
                permission_type=ACLPermissionType.ALLOW,
                resource_pattern=ResourcePattern(
                    ResourceType.TOPIC, topic, ACLResourcePatternType.LITERAL
                ),
            )
            result = admin.create_acls([acl])
            assert not result["failed"], result
        else:
            flt = ACLFilter(
                principal="User:app",
                host="*",
                operation=ACLOperation.ANY,
                permission_type=ACLPermissionType.ANY,
                resource_pattern=ResourcePatternFilter(
                    ResourceType.TOPIC, topic, ACLResourcePatternType.LITERAL
                ),
            )
            admin.delete_acls([flt])
    finally:
        admin.close()


def test_the_right_password_publishes_and_a_revoked_acl_stops_it(kcfg: Config) -> None:
    topic = kcfg.kafka.events_topic
    rc, took, out = run_cli(kcfg, "publish", "--synthetic", "10")
    assert rc == EXIT_ACCESS_DENIED, out[-3000:]  # no ACL yet
    line = assert_one_denial_line(out, "'User:app'", f"topic {topic}")
    print(f"\npublish without an ACL: exit {rc} in {took:.1f} s: {line}")

    _acls(kcfg.kafka.bootstrap, topic, grant=True)
    ok = False
    deadline = time.monotonic() + 30  # ACLs reach the broker's authorizer asynchronously
    while not ok and time.monotonic() < deadline:
        rc, took, out = run_cli(kcfg, "publish", "--synthetic", "10")
        ok = rc == 0
    assert ok, out[-3000:]
    assert "published 10 events" in out and SENTINEL not in out

    _acls(kcfg.kafka.bootstrap, topic, grant=False)
    denied = False
    deadline = time.monotonic() + 30
    while not denied and time.monotonic() < deadline:
        rc, took, out = run_cli(kcfg, "publish", "--synthetic", "10")
        denied = rc == EXIT_ACCESS_DENIED
    assert denied, out[-3000:]
    line = assert_one_denial_line(out, "'User:app'", f"topic {topic}")
    print(f"publish after the ACL was revoked: exit {rc} in {took:.1f} s: {line}")


def test_kafka_python_at_debug_logs_no_password(
    kcfg: Config, caplog: pytest.LogCaptureFixture
) -> None:
    """`streamrec -v` keeps kafka-python at WARNING; a library user may turn it to DEBUG,
    where it logs every request it sends: the password must not be in them either."""
    from streamrec.streaming import kafka_io

    plain = kcfg.replace(kafka={"sasl_mechanism": "PLAIN"})  # PLAIN sends it in the clear
    with caplog.at_level(logging.DEBUG, logger="kafka"):
        for cfg in (kcfg, plain):
            kafka_io.make_producer(cfg.kafka).close()
    assert "SaslAuthenticateRequest" in caplog.text  # DEBUG was on for the exchange
    assert SENTINEL not in caplog.text


def test_the_trainer_is_denied_in_one_line(kcfg: Config, redis_url: str, tmp_path: Path) -> None:
    """No ACL: the trainer's topic check is refused; it exits, it does not wait it out."""
    cfg = kcfg.replace(
        redis={"url": redis_url, "prefix": f"sk{uuid.uuid4().hex[:6]}:"},
        trainer={"checkpoint_dir": str(tmp_path / "ckpt")},
    )
    with contextlib.suppress(Exception):
        _acls(kcfg.kafka.bootstrap, kcfg.kafka.events_topic, grant=False)
    rc, took, out = run_cli(cfg, "train")
    assert rc == EXIT_ACCESS_DENIED, out[-3000:]
    line = assert_one_denial_line(out, "'User:app'", "no ACL")
    print(f"\ntrain without ACLs: exit {rc} in {took:.1f} s: {line}")
