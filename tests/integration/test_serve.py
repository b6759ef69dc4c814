"""The HTTP endpoint: JSON answers, OpenAPI, status codes for bad input and a dead Redis."""

from __future__ import annotations

import socket
from typing import Any

import numpy as np
import orjson
import pytest

pytest.importorskip("fastapi")

from fastapi.testclient import TestClient

from streamrec.streaming.client import Recommender
from streamrec.streaming.config import RedisConfig
from streamrec.streaming.keys import Keys, encode_vector
from streamrec.streaming.serve import build_parser, create_app


@pytest.fixture
def http(redis_client: Any, redis_prefix: str) -> TestClient:
    return TestClient(create_app(Recommender(redis_client, prefix=redis_prefix, max_k=50)))


@pytest.fixture
def keys(redis_client: Any, redis_prefix: str) -> Keys:
    k = Keys(redis_prefix)
    redis_client.zadd(k.popularity(), {"i1": 3.0, "i2": 2.0, "i3": 1.0})
    redis_client.zadd(k.popularity("country=DE"), {"de1": 1.0})
    ids = ["i1", "i2", "i3", "a/b"]
    redis_client.set(k.items_ids, orjson.dumps(ids))
    redis_client.set(k.items_matrix, encode_vector(np.eye(4, dtype=np.float32)))
    redis_client.set(k.items_bias, encode_vector(np.zeros(4)))
    redis_client.set(k.items_ver, 1)
    redis_client.hset(k.user("a/b"), mapping={"vec": encode_vector(np.eye(4)[3]), "ver": 1})
    return k


def test_recommend_json(http: TestClient, keys: Keys) -> None:
    r = http.get("/recommend/nobody", params={"k": 2})
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    assert r.json() == {
        "user": "nobody",
        "source": "popularity",
        "items": [{"item": "i1", "score": 3.0}, {"item": "i2", "score": 2.0}],
    }
    r = http.get("/recommend/nobody?k=1&feature=country=DE")
    assert (r.json()["source"], r.json()["items"][0]["item"]) == ("features", "de1")
    # any id, even one with a slash, is a user
    r = http.get("/recommend/a/b?k=1")
    assert r.json()["source"] == "realtime" and r.json()["items"][0]["item"] == "a/b"
    assert r.json()["user"] == "a/b"
    assert http.get("/recommend/a%2Fb?k=1").json()["user"] == "a/b"


@pytest.mark.parametrize(
    ("query", "fragment"),
    [
        ("k=0", "k:"),
        ("k=51", "k:"),
        ("k=ten", "k:"),
        ("feature=country", "feature: expected name=value"),
        ("exclude_seen=maybe", "exclude_seen"),
    ],
)
def test_bad_input_is_422_json(http: TestClient, keys: Keys, query: str, fragment: str) -> None:
    r = http.get(f"/recommend/u?{query}")
    assert r.status_code == 422
    body = r.json()
    assert body["error"] == "invalid_request" and body["retriable"] is False
    assert fragment in body["message"]


def test_too_long_user_is_422(http: TestClient, keys: Keys) -> None:
    r = http.get("/recommend/" + "x" * 300)
    assert r.status_code == 422 and "user" in r.json()["message"]


def test_healthz(http: TestClient, keys: Keys) -> None:
    r = http.get("/healthz")
    assert r.status_code == 200
    assert r.json()["status"] == "ok" and r.json()["redis"] == "ok"


def test_redis_down_is_503(redis_prefix: str) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = RedisConfig(
        url=f"redis://127.0.0.1:{port}/0",
        prefix=redis_prefix,
        retries=1,
        backoff_base_ms=1,
        backoff_cap_ms=2,
        connect_timeout_ms=200,
    )
    http = TestClient(create_app(redis_cfg=cfg))
    r = http.get("/recommend/u")
    assert r.status_code == 503 and r.headers["retry-after"] == "1"
    assert r.json()["error"] == "store_unavailable" and r.json()["retriable"] is True
    assert "Traceback" not in r.text
    r = http.get("/healthz")
    assert r.status_code == 503 and r.json()["status"] == "unavailable"


def test_openapi_documents_the_endpoint(http: TestClient) -> None:
    spec = http.get("/openapi.json").json()
    op = spec["paths"]["/recommend/{user}"]["get"]
    params = {p["name"]: p for p in op["parameters"]}
    assert set(params) == {"user", "k", "feature", "exclude_seen"}
    assert params["k"]["schema"]["maximum"] == 50
    assert {"200", "422", "503"} <= set(op["responses"])
    assert "/healthz" in spec["paths"]


def test_cli_parser_defaults() -> None:
    args = build_parser().parse_args([])
    assert (args.host, args.port) == ("127.0.0.1", 8080)


def test_run_serve_fills_options_the_caller_left_out(monkeypatch: pytest.MonkeyPatch) -> None:
    """The main CLI may define only some options; the rest take serve's defaults."""
    import argparse

    import uvicorn

    from streamrec.streaming.serve import run_serve

    seen: dict[str, Any] = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: seen.update(app=app, **kw))
    ns = argparse.Namespace(port=9123, max_k=7)
    assert run_serve(ns, RedisConfig(url="redis://127.0.0.1:1/0")) == 0
    assert (seen["host"], seen["port"], seen["log_level"]) == ("127.0.0.1", 9123, "info")
    assert seen["app"].state.recommender.max_k == 7
