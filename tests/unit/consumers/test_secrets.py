"""Passwords in the process config: `*_FILE` variables, and a sentinel password that shows in
no repr, JSON dump, `streamrec config` output or configuration error."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import orjson
import pytest

from streamrec.consumers import cli
from streamrec.consumers.config import Config
from streamrec.model.config import ConfigError
from streamrec.streaming.security import Secret

SENTINEL = "s3ntinel-Pw-7f3a"

SASL_ENV = {
    "STREAMREC_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
    "STREAMREC_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
    "STREAMREC_KAFKA_SASL_USERNAME": "trainer",
}


def test_passwords_are_read_from_files(tmp_path: Path) -> None:
    (tmp_path / "kafka").write_text(SENTINEL + "\n")
    (tmp_path / "redis").write_text("r-" + SENTINEL)
    cfg = Config.from_env(
        {
            **SASL_ENV,
            "STREAMREC_KAFKA_SASL_PASSWORD_FILE": str(tmp_path / "kafka"),
            "STREAMREC_REDIS_USERNAME": "app",
            "STREAMREC_REDIS_PASSWORD_FILE": str(tmp_path / "redis"),
        }
    )
    assert cfg.kafka.sasl_password.reveal() == SENTINEL
    assert cfg.redis.password.reveal() == "r-" + SENTINEL
    assert isinstance(cfg.redis.password, Secret)


def test_a_password_from_the_environment(tmp_path: Path) -> None:
    cfg = Config.from_env({**SASL_ENV, "STREAMREC_KAFKA_SASL_PASSWORD": f" {SENTINEL} "})
    assert cfg.kafka.sasl_password.reveal() == f" {SENTINEL} "  # spaces kept, not stripped


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        (
            {"STREAMREC_REDIS_PASSWORD_FILE": "/nonexistent/pw"},
            "STREAMREC_REDIS_PASSWORD_FILE",
        ),
        (
            {
                "STREAMREC_REDIS_PASSWORD": SENTINEL,
                "STREAMREC_REDIS_PASSWORD_FILE": "/etc/hostname",
            },
            "STREAMREC_REDIS_PASSWORD",
        ),
        ({"STREAMREC_REDIS_URL_FILE": "/etc/hostname"}, "STREAMREC_REDIS_URL_FILE"),  # not a secret
        ({"STREAMREC_KAFKA_SASL_PASSWORD": SENTINEL}, "STREAMREC_KAFKA_SASL_PASSWORD"),  # PLAINTEXT
        ({**SASL_ENV}, "STREAMREC_KAFKA_SASL_PASSWORD"),  # SASL without a password
        (
            {
                **SASL_ENV,
                "STREAMREC_KAFKA_SASL_PASSWORD": SENTINEL,
                "STREAMREC_KAFKA_SSL_CAFILE": "x",
            },
            "STREAMREC_KAFKA_SSL_CAFILE",
        ),
        (
            {"STREAMREC_REDIS_URL": f"redis://u:{SENTINEL}@h/0", "STREAMREC_REDIS_PASSWORD": "x"},
            "STREAMREC_REDIS_PASSWORD",
        ),
    ],
)
def test_bad_security_settings_name_the_variable(env: dict[str, str], variable: str) -> None:
    with pytest.raises(ConfigError) as e:
        Config.from_env(env)
    assert e.value.setting == variable
    assert SENTINEL not in str(e.value)


def secret_config() -> Config:
    return Config.from_env(
        {
            **SASL_ENV,
            "STREAMREC_KAFKA_SASL_PASSWORD": SENTINEL,
            "STREAMREC_REDIS_URL": f"redis://app:{SENTINEL}@db:6379/0",
        }
    )


def test_no_dump_of_the_config_shows_the_password(caplog: pytest.LogCaptureFixture) -> None:
    cfg = secret_config()
    dumps = [
        repr(cfg),
        str(cfg),
        f"{cfg}",
        orjson.dumps(dataclasses.asdict(cfg), default=str).decode(),
    ]
    with caplog.at_level(logging.DEBUG):
        logging.getLogger("streamrec.test").debug("config: %s", cfg)
    dumps.append(caplog.text)
    for text in dumps:
        assert SENTINEL not in text
        assert "***" in text


def test_to_env_hands_the_password_to_a_child_process() -> None:
    cfg = secret_config()
    env = cfg.to_env()
    assert env["STREAMREC_KAFKA_SASL_PASSWORD"] == SENTINEL  # a child's env, not a log
    assert Config.from_env(env) == cfg


def test_streamrec_config_prints_no_password(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "pw").write_text(SENTINEL)
    for k, v in SASL_ENV.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("STREAMREC_KAFKA_SASL_PASSWORD_FILE", str(tmp_path / "pw"))
    monkeypatch.setenv("STREAMREC_REDIS_PASSWORD", SENTINEL)
    assert cli.main(["config"]) == 0
    out = capsys.readouterr()
    assert "STREAMREC_KAFKA_SASL_PASSWORD" in out.out
    assert SENTINEL not in out.out + out.err


def test_a_bad_config_error_shows_no_password(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("STREAMREC_KAFKA_SASL_PASSWORD", SENTINEL)  # PLAINTEXT: refused
    assert cli.main(["config"]) == 2
    err = capsys.readouterr().err
    assert "STREAMREC_KAFKA_SASL_PASSWORD" in err and SENTINEL not in err
