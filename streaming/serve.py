"""`streamrec serve`: the read client behind HTTP, for callers that are not Python.

FastAPI for the typed query parsing and the OpenAPI document (`/docs`, `/openapi.json`) it
derives from the same signatures, uvicorn as the server. The endpoints are plain `def`s: the
client blocks on Redis, and FastAPI runs them in its thread pool, which the `Recommender`
supports (its matrix cache is an immutable snapshot, redis-py's pool is thread-safe).

Errors are JSON with a stable `error` code, never a stack trace: 422 for bad input (`k` out
of range, a malformed feature), 503 with `Retry-After` when Redis does not answer, 500 for a
bug (logged here, not shown).
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from typing import Any, Literal

import orjson
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import BaseModel

from streamrec.streaming.client import (
    DEFAULT_MATRIX_REFRESH_MS,
    DEFAULT_MAX_K,
    DEFAULT_PRECOMPUTED_MAX_AGE_MS,
    InvalidRequest,
    Recommender,
    StoreUnavailable,
    parse_feature_args,
)
from streamrec.streaming.config import RedisConfig
from streamrec.streaming.security import denial

log = logging.getLogger(__name__)

DEFAULT_PORT = 8080


class ScoredItem(BaseModel):
    item: str
    score: float


class RecommendationsOut(BaseModel):
    user: str
    source: Literal["precomputed", "realtime", "features", "popularity"]
    items: list[ScoredItem]


class ErrorOut(BaseModel):
    error: Literal["invalid_request", "store_unavailable", "internal"]
    message: str
    retriable: bool


class HealthOut(BaseModel):
    status: Literal["ok", "unavailable"]
    redis: str
    model_version: int | None = None
    items_ver: str | None = None
    cached_items: int = 0
    cached_items_ver: str | None = None


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status, headers, media_type="application/json")


def _error(status: int, code: str, message: str, retriable: bool) -> Response:
    headers = {"Retry-After": "1"} if retriable else None
    return _json({"error": code, "message": message, "retriable": retriable}, status, headers)


def create_app(recommender: Recommender | None = None, redis_cfg: RedisConfig | None = None) -> Any:
    """The ASGI app. Pass a `Recommender` (tests, embedding) or a RedisConfig to build one."""
    rec = recommender if recommender is not None else Recommender(redis_cfg or RedisConfig())
    max_k = rec.max_k
    app = FastAPI(
        title="streamrec",
        summary="Recommendations read from the streaming trainer's Redis state.",
        version="0.1.0",
    )
    app.state.recommender = rec
    errors: dict[int | str, dict[str, Any]] = {
        422: {"model": ErrorOut, "description": "bad k, user or feature"},
        503: {"model": ErrorOut, "description": "Redis unavailable; retry after Retry-After"},
    }

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        parts = []
        for err in exc.errors():
            where = ".".join(str(x) for x in err.get("loc", ()) if x != "query")
            parts.append(f"{where}: {err.get('msg', 'invalid')}")
        return _error(422, "invalid_request", "; ".join(parts), False)

    @app.exception_handler(InvalidRequest)
    async def _bad(request: Request, exc: InvalidRequest) -> Response:
        return _error(422, "invalid_request", str(exc), False)

    @app.exception_handler(StoreUnavailable)
    async def _down(request: Request, exc: StoreUnavailable) -> Response:
        return _error(503, "store_unavailable", str(exc), exc.retriable)

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error serving %s", request.url.path)
        return _error(500, "internal", "internal error (logged by the server)", False)

    @app.get(
        "/recommend/{user:path}",
        response_model=RecommendationsOut,
        responses=errors,
        summary="Top-k items for a user, and which path served them",
    )
    def recommend(
        user: str,
        k: int = Query(10, ge=1, le=max_k, description="how many items"),
        feature: list[str] = Query(  # noqa: B008
            [], description="user feature name=value for a cold-start user (repeatable)"
        ),
        exclude_seen: bool = Query(True, description="drop items the user has seen"),
    ) -> Response:
        feats = parse_feature_args(feature) if feature else None
        out = rec.recommend(user, k=k, exclude_seen=exclude_seen, user_features=feats)
        return _json(out.to_dict())

    @app.get("/healthz", response_model=HealthOut, responses={503: {"model": HealthOut}})
    def healthz() -> Response:
        """200 when Redis answers (with the model and matrix versions), else 503."""
        try:
            return _json({"status": "ok", **rec.health()})
        except StoreUnavailable as e:
            return _json({"status": "unavailable", "redis": str(e)}, 503, {"Retry-After": "1"})

    return app


def add_serve_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The options of `streamrec serve`, for the main CLI's subparser."""
    p.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"default {DEFAULT_PORT}")
    p.add_argument("--max-k", type=int, default=DEFAULT_MAX_K, help="largest k accepted")
    p.add_argument(
        "--precomputed-max-age-ms",
        type=int,
        default=DEFAULT_PRECOMPUTED_MAX_AGE_MS,
        help="precomputed lists older than this are re-scored (-1: no limit)",
    )
    p.add_argument(
        "--matrix-refresh-ms",
        type=int,
        default=DEFAULT_MATRIX_REFRESH_MS,
        help="re-read a changed item matrix at most this often",
    )
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    return p


def build_parser() -> argparse.ArgumentParser:
    return add_serve_arguments(
        argparse.ArgumentParser(prog="streamrec serve", description=__doc__.split("\n")[0])
    )


def check_access(rec: Recommender, redis_cfg: RedisConfig) -> None:
    """Before listening: a wrong password or a missing read right stops the server (raised as
    `AccessDenied`); Redis merely down is served through (/healthz answers 503 until it is back)."""
    try:
        rec.health()
    except StoreUnavailable as e:
        found = denial(e, redis=redis_cfg)
        if found is not None:
            raise found from None
        log.warning("Redis not answering at start (%s): serving 503 until it is back", e)


def run_serve(args: argparse.Namespace, redis_cfg: RedisConfig) -> int:
    """Run the server until interrupted (uvicorn handles SIGINT/SIGTERM)."""
    import uvicorn
    from threadpoolctl import threadpool_limits

    # Request threads score in parallel already: BLAS threads on top only spin against them.
    threadpool_limits(1, user_api="blas")
    # Options a caller's parser left out take their defaults (the main CLI may define fewer).
    opt = {**vars(build_parser().parse_args([])), **vars(args)}
    age = opt["precomputed_max_age_ms"]
    rec = Recommender(
        redis_cfg,
        max_k=opt["max_k"],
        precomputed_max_age_ms=None if age < 0 else age,
        matrix_refresh_ms=opt["matrix_refresh_ms"],
    )
    check_access(rec, redis_cfg)
    uvicorn.run(create_app(rec), host=opt["host"], port=opt["port"], log_level=opt["log_level"])
    return 0


def main(argv: Sequence[str] | None = None, redis_cfg: RedisConfig | None = None) -> int:
    """`streamrec serve [--host H] [--port P] ...`. Redis settings come from the caller (the
    CLI passes the process config's `redis` section, i.e. `STREAMREC_REDIS_*`)."""
    return run_serve(build_parser().parse_args(argv), redis_cfg or RedisConfig())
