"""docker-compose.yml and the Dockerfile, checked without a Docker engine.

Why: compose files rot silently where nobody runs Docker (this project's CI runs the local
services instead). These checks catch what breaks a `docker compose up` later: a moving image
tag, a trainer that starts before its servers are healthy, and a `STREAMREC_*` variable that
no longer exists (the trainer rejects unknown ones at start, so a renamed setting would crash
it in production only).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

import streamrec_devservices as services
from streamrec.consumers.config import settings

ROOT = next(p for p in Path(__file__).resolve().parents if (p / "pyproject.toml").exists())
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict)
    return data


def _pinned(image: str) -> bool:
    """`name:tag` with a concrete version, or a digest; never `latest` or no tag."""
    if "@sha256:" in image:
        return True
    name, sep, tag = image.rpartition(":")
    if not sep or "/" in tag or not name:
        return False
    return tag != "latest" and re.search(r"\d", tag) is not None


def _environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):  # the "KEY=value" list form
        return dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(k): str(v) for k, v in env.items()}


def test_services_are_named(compose: dict[str, Any]) -> None:
    assert {"kafka", "redis", "trainer"} <= set(compose["services"])


def test_images_are_pinned(compose: dict[str, Any]) -> None:
    for name, svc in compose["services"].items():
        if "image" in svc:
            assert _pinned(svc["image"]), f"{name}: image {svc['image']!r} is not pinned"
    assert compose["services"]["kafka"]["image"].startswith("apache/kafka:")
    froms = re.findall(r"^FROM\s+(\S+)", DOCKERFILE.read_text(), flags=re.M)
    assert froms, "Dockerfile has no FROM"
    for image in froms:
        assert _pinned(image), f"Dockerfile: base image {image!r} is not pinned"


@pytest.mark.parametrize("image", ["redis", "redis:latest", "python:3-slim:latest", "x:y"])
def test_pin_check_rejects(image: str) -> None:
    assert not _pinned(image)


def test_trainer_is_built_and_waits_for_healthy_servers(compose: dict[str, Any]) -> None:
    trainer = compose["services"]["trainer"]
    assert "build" in trainer
    command = trainer.get("command")
    text = command if isinstance(command, str) else " ".join(command or [])
    assert text.split()[:2] == ["streamrec", "train"]
    depends = trainer["depends_on"]
    for dep in ("kafka", "redis"):
        assert isinstance(depends, dict) and depends[dep]["condition"] == "service_healthy"


def test_servers_have_healthchecks(compose: dict[str, Any]) -> None:
    for name in ("kafka", "redis"):
        check = compose["services"][name].get("healthcheck") or {}
        test = check.get("test")
        assert test and test != ["NONE"] and not check.get("disable"), f"{name}: no healthcheck"


def test_trainer_points_at_the_compose_servers(compose: dict[str, Any]) -> None:
    env = _environment(compose["services"]["trainer"])
    host, _, port = env["STREAMREC_KAFKA_BOOTSTRAP"].partition(":")
    assert host == "kafka" and port.isdigit()
    listeners = _environment(compose["services"]["kafka"])["KAFKA_ADVERTISED_LISTENERS"]
    assert f"//kafka:{port}" in listeners, "the trainer must use the broker's internal listener"
    assert env["STREAMREC_REDIS_URL"].startswith("redis://redis:6379")


def test_redis_has_the_project_settings(compose: dict[str, Any]) -> None:
    # durable (AOF), never evicting, compact user hashes, rare AOF rewrites: the same
    # arguments as the local server and the testcontainers fixture
    command = compose["services"]["redis"]["command"]
    assert [str(c) for c in command] == ["redis-server", *services.redis_arguments()]


def test_environment_names_are_real_settings(compose: dict[str, Any]) -> None:
    known = {name for name, _, _ in settings()}
    docker_env = set(re.findall(r"\b(STREAMREC_[A-Z0-9_]+)=", DOCKERFILE.read_text()))
    for name, svc in compose["services"].items():
        for var in _environment(svc):
            if var.startswith("STREAMREC_"):
                assert var in known, f"{name}: {var} is not a streamrec setting"
    for var in docker_env:
        assert var in known, f"Dockerfile: {var} is not a streamrec setting"


def test_dockerignore_keeps_local_state_out() -> None:
    lines = {
        line.strip().rstrip("/")
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".streamrec", ".venv", ".git"} <= lines


def test_the_trainer_is_healthy_when_it_is_ready(compose: dict[str, Any]) -> None:
    trainer = compose["services"]["trainer"]
    port = _environment(trainer)["STREAMREC_TRAINER_METRICS_PORT"]
    probe = " ".join(trainer["healthcheck"]["test"])
    assert f"127.0.0.1:{port}/ready" in probe, probe
    # Docker's SIGKILL must not come before the trainer's own grace period is over.
    grace_ms = int(_environment(trainer).get("STREAMREC_TRAINER_STOP_GRACE_MS", "8000"))
    assert int(trainer["stop_grace_period"].rstrip("s")) * 1000 > grace_ms
