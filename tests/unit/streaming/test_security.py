"""Secrets that never print, the Kafka/Redis security parameters, and which errors are denials
(streaming/security.py, the security fields of streaming/config.py)."""

from __future__ import annotations

import json
import logging
import pickle
from pathlib import Path
from typing import Any

import kafka.errors as ke
import orjson
import pytest
import redis.exceptions as rx

from streamrec.model.config import ConfigError
from streamrec.streaming import kafka_io
from streamrec.streaming.config import KafkaConfig, RedisConfig
from streamrec.streaming.security import (
    AccessDenied,
    Secret,
    denial,
    kafka_params,
    read_secret_file,
    redact_url,
    redis_params,
)

SENTINEL = "s3ntinel-Pw-7f3a"


def sasl(**kw: Any) -> KafkaConfig:
    base: dict[str, Any] = {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "SCRAM-SHA-256",
        "sasl_username": "trainer",
        "sasl_password": Secret(SENTINEL),
    }
    return KafkaConfig(**{**base, **kw})


def test_a_secret_prints_as_stars_everywhere_but_reveal(caplog: pytest.LogCaptureFixture) -> None:
    s = Secret(SENTINEL)
    shown = [repr(s), str(s), f"{s}", f"{s!r}", f"{s:>20}", "%s" % s, "%r" % (s,), "{}".format(s)]  # noqa: UP031, UP032  (the old ways of formatting too)
    assert all(SENTINEL not in text and "***" in text for text in shown), shown
    assert s.reveal() == SENTINEL
    with pytest.raises(TypeError):
        json.dumps({"p": s})
    with pytest.raises(TypeError):
        orjson.dumps({"p": s})
    assert SENTINEL not in json.dumps({"p": s}, default=str)
    with caplog.at_level(logging.DEBUG):
        logging.getLogger("t").debug("cfg %s %r", sasl(), sasl())
    assert SENTINEL not in caplog.text and "***" in caplog.text
    # an empty one hides nothing and says so; configs compare and pickle by value
    assert str(Secret()) == "" and not Secret() and Secret(SENTINEL)
    assert Secret("a") == Secret("a") and Secret("a") != Secret("b")
    assert pickle.loads(pickle.dumps(s)).reveal() == SENTINEL
    with pytest.raises(AttributeError):
        s._value = "x"  # type: ignore[misc]


def test_configs_print_no_password() -> None:
    k = sasl()
    r = RedisConfig(url=f"redis://app:{SENTINEL}@db:6379/0", username="")
    r2 = RedisConfig(url="redis://db:6379/0", username="app", password=Secret(SENTINEL))
    for text in (repr(k), str(k), repr(r), str(r), repr(r2), f"{r2}"):
        assert SENTINEL not in text, text
    assert "redis://app@db:6379/0" in repr(r) and r.password.reveal() == SENTINEL


def test_redact_url() -> None:
    assert redact_url("redis://u:pw@h:1/0") == "redis://u:***@h:1/0"
    assert redact_url("rediss://:pw@h/2") == "rediss://:***@h/2"
    assert redact_url("redis://h:1/0?password=pw&db=1") == "redis://h:1/0?password=***&db=1"
    assert redact_url("redis://h:1/0") == "redis://h:1/0"
    assert redact_url("unix:///run/redis.sock") == "unix:///run/redis.sock"


def test_secret_files_strip_one_newline_and_name_the_variable(tmp_path: Path) -> None:
    f = tmp_path / "pw"
    f.write_text(f" {SENTINEL} \n")  # spaces may be part of a password; the newline is not
    assert read_secret_file("V_FILE", str(f)).reveal() == f" {SENTINEL} "
    f.write_text(f"{SENTINEL}\r\n")
    assert read_secret_file("V_FILE", str(f)).reveal() == SENTINEL
    with pytest.raises(ConfigError) as e:
        read_secret_file("STREAMREC_REDIS_PASSWORD_FILE", str(tmp_path / "missing"))
    assert e.value.setting == "STREAMREC_REDIS_PASSWORD_FILE"
    assert "missing" in str(e.value)


@pytest.mark.parametrize(
    ("changes", "setting"),
    [
        ({"security_protocol": "TLS"}, "security_protocol"),
        ({"sasl_mechanism": "GSSAPI"}, "sasl_mechanism"),
        ({"sasl_username": ""}, "sasl_username"),
        ({"sasl_password": Secret()}, "sasl_password"),
        ({"ssl_cafile": "/nonexistent/ca.pem"}, "ssl_cafile"),  # SASL_PLAINTEXT: no TLS
        ({"security_protocol": "SASL_SSL", "ssl_cafile": "/nonexistent/ca.pem"}, "ssl_cafile"),
    ],
)
def test_bad_kafka_security_names_the_setting(changes: dict[str, Any], setting: str) -> None:
    with pytest.raises(ConfigError) as e:
        sasl(**changes)
    assert e.value.setting == setting
    assert SENTINEL not in str(e.value)


def test_a_password_for_a_plaintext_listener_is_refused() -> None:
    with pytest.raises(ConfigError) as e:
        KafkaConfig(sasl_password=Secret(SENTINEL))
    assert e.value.setting == "sasl_password" and SENTINEL not in str(e.value)


@pytest.mark.parametrize(
    ("kw", "setting"),
    [
        ({"url": "redis://u:pw@h/0", "password": Secret("pw2")}, "password"),
        ({"ssl_cafile": "/etc/hostname"}, "ssl_cafile"),  # exists, but TLS is off
        ({"ssl": True, "ssl_cafile": "/nonexistent/ca.pem"}, "ssl_cafile"),
        ({"url": "rediss://h/0", "ssl_certfile": "/nonexistent/c.pem"}, "ssl_certfile"),
        ({"url": "unix:///tmp/r.sock", "ssl": True}, "ssl"),
    ],
)
def test_bad_redis_security_names_the_setting(kw: dict[str, Any], setting: str) -> None:
    with pytest.raises(ConfigError) as e:
        RedisConfig(**kw)
    assert e.value.setting == setting


def test_kafka_params_per_protocol(tmp_path: Path) -> None:
    assert kafka_params(KafkaConfig(bootstrap="a:1,b:2")) == {
        "bootstrap_servers": ["a:1", "b:2"],
        "security_protocol": "PLAINTEXT",
    }
    assert kafka_params(sasl()) == {
        "bootstrap_servers": ["127.0.0.1:9092"],
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "SCRAM-SHA-256",
        "sasl_plain_username": "trainer",
        "sasl_plain_password": SENTINEL,
    }
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    p = kafka_params(sasl(security_protocol="SASL_SSL", ssl_cafile=str(ca)))
    assert p["ssl_cafile"] == str(ca) and p["ssl_check_hostname"] is True
    assert p["sasl_plain_password"] == SENTINEL and "ssl_certfile" not in p


def test_every_kafka_client_gets_the_same_security_params(monkeypatch: pytest.MonkeyPatch) -> None:
    """The producer, the consumer and the admin client are built from `kafka_params`."""
    import kafka

    from streamrec.streaming import admin

    seen: dict[str, dict[str, Any]] = {}

    def recorder(name: str) -> Any:
        def make(**params: Any) -> Any:
            seen[name] = params
            raise ke.KafkaTimeoutError()  # stop before any connection

        return make

    monkeypatch.setattr(kafka_io, "KafkaProducer", recorder("producer"))
    monkeypatch.setattr(kafka_io, "KafkaConsumer", recorder("consumer"))
    monkeypatch.setattr(kafka, "KafkaAdminClient", recorder("admin"))
    cfg = sasl()
    for build in (
        lambda: kafka_io.make_producer(cfg),
        lambda: kafka_io.make_consumer(cfg, "g"),
        lambda: admin.create_topics(cfg, {"t": 1}),
        lambda: admin.delete_topics(cfg, ["t"]),
    ):
        with pytest.raises(ke.KafkaTimeoutError):
            build()
    want = kafka_params(cfg)
    for name, params in seen.items():
        assert {k: params[k] for k in want} == want, name
    assert set(seen) == {"producer", "consumer", "admin"}


def test_redis_params() -> None:
    url, kw = redis_params(RedisConfig(url="redis://h:1/0", username="u", password=Secret("p")))
    assert url == "redis://h:1/0" and kw == {"username": "u", "password": "p"}
    url, kw = redis_params(RedisConfig(url="redis://h:1/0", ssl=True, ssl_cafile="/etc/hostname"))
    assert url == "rediss://h:1/0"
    assert kw == {"ssl_check_hostname": True, "ssl_ca_certs": "/etc/hostname"}
    # a password in the URL moves out of it, into the Secret
    assert redis_params(RedisConfig(url="redis://u:p%40ss@h/0")) == (
        "redis://u@h/0",
        {"password": "p@ss"},
    )
    assert redis_params(RedisConfig(url="redis://h/0?password=p&db=1")) == (
        "redis://h/0?db=1",
        {"password": "p"},
    )


def test_denials_name_system_principal_and_right() -> None:
    k = sasl()
    r = RedisConfig(username="reader", password=Secret(SENTINEL))
    cases: list[tuple[BaseException, str, str, str]] = [
        (ke.SaslAuthenticationFailedError("bad creds"), "kafka", "User:trainer", "authentication"),
        (ke.TopicAuthorizationFailedError({"events"}), "kafka", "User:trainer", "topic events"),
        (ke.GroupAuthorizationFailedError("g1"), "kafka", "User:trainer", "consumer group g1"),
        (ke.ClusterAuthorizationFailedError(), "kafka", "User:trainer", "cluster"),
        (ke.TransactionalIdAuthorizationFailedError(), "kafka", "User:trainer", "transactional"),
        (rx.AuthenticationError("invalid username-password pair"), "redis", "reader", "password"),
        (rx.NoPermissionError("no permissions to run the 'evalsha' command"), "redis", "reader",
         "'evalsha'"),
        (rx.ResponseError("NOPERM No permissions to access a key"), "redis", "reader", "key"),
    ]  # fmt: skip
    for err, system, principal, right in cases:
        found = denial(err, k, r)
        assert isinstance(found, AccessDenied), err
        assert (found.system, found.principal) == (system, principal)
        assert right in found.right, found
        text = str(found)
        assert system in text and principal in text and "\n" not in text
        assert SENTINEL not in text
    # raised from a denial (the client wraps redis-py's error): still found
    try:
        try:
            raise rx.AuthenticationError("wrong")
        except rx.AuthenticationError as inner:
            raise RuntimeError("Redis unavailable") from inner
    except RuntimeError as outer:
        assert denial(outer, redis=r) is not None
    # outages are not denials: they are waited out
    for err in (
        rx.ConnectionError("Connection refused"),
        rx.TimeoutError(),
        ke.KafkaConnectionError("refused"),
        ke.KafkaTimeoutError(),
        ValueError("bug"),
    ):
        assert denial(err, k, r) is None, err


def test_a_password_given_as_str_is_kept_as_a_secret() -> None:
    r = RedisConfig(password=SENTINEL)  # type: ignore[arg-type]
    k = sasl(sasl_password=SENTINEL)
    assert isinstance(r.password, Secret) and isinstance(k.sasl_password, Secret)
    assert r.password.reveal() == SENTINEL and SENTINEL not in repr(r) + repr(k)


def test_a_denied_bootstrap_is_told_from_a_down_broker() -> None:
    """kafka-python retries a denied bootstrap until its timeout; the reasons of the failed
    attempts (its warnings) tell which it was."""
    from streamrec.streaming.security import _bootstrap_denial

    cfg = sasl()
    line = "Bootstrap connection to bootstrap-0 failed: {} (backoff 0.05 secs)"
    refused = line.format("KafkaConnectionError: 111 ECONNREFUSED")
    dropped = line.format("KafkaConnectionError: socket disconnected")
    sasl_failed = line.format(
        "[Error 58] SaslAuthenticationFailedError: SaslAuthenticationFailedError: "
        "Authentication failed during authentication due to invalid credentials"
    )
    assert _bootstrap_denial([], cfg) is None
    assert _bootstrap_denial([refused, refused], cfg) is None  # down: not a denial
    assert _bootstrap_denial([refused, dropped], cfg) is None  # restarting, maybe
    found = _bootstrap_denial([refused, sasl_failed], cfg)
    assert found is not None and "invalid credentials" in found.right
    assert found.principal == "User:trainer"
    found = _bootstrap_denial([dropped] * 3, cfg)  # the broker's delayed close: no response
    assert found is not None and "closed all 3 connections" in found.right
    tls = line.format("KafkaConnectionError: Handshake failed: [SSL: CERTIFICATE_VERIFY_FAILED]")
    found = _bootstrap_denial([tls], KafkaConfig(security_protocol="SSL"))
    assert found is not None and "TLS" in found.right and found.principal == "User:ANONYMOUS"


def test_kafka_python_debug_records_lose_the_password(caplog: pytest.LogCaptureFixture) -> None:
    from streamrec.streaming.security import _REDACT

    _REDACT.add(Secret(SENTINEL))
    with caplog.at_level(logging.DEBUG, logger="kafka"):
        logging.getLogger("kafka.protocol.parser").debug(
            "Send: %r", bytearray(b"\x00app\x00" + SENTINEL.encode())
        )
    assert "Send: bytearray(b'\\x00app\\x00***')" in caplog.text
    assert SENTINEL not in caplog.text
