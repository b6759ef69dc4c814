"""The trainer's HTTP endpoint: Prometheus `/metrics`, and `/ready` and `/live` for probes.

Tests, compose health checks and Kubernetes probes wait on `/ready` instead of on time:
it answers 200 only while the trainer consumes with its partitions assigned and Kafka and
Redis reachable. `/live` fails only when the main loop has stopped beating (a wedge a restart
would cure). Both answer JSON with the state, so a person can read why.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import orjson
from prometheus_client import CollectorRegistry, make_wsgi_app

from streamrec.consumers.lifecycle import Lifecycle

_Start = Callable[[str, list[tuple[str, str]]], Any]


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # probes every second: no log
        pass


def app(registry: CollectorRegistry, life: Lifecycle) -> Callable[[dict[str, Any], _Start], Any]:
    metrics = make_wsgi_app(registry)

    def route(environ: dict[str, Any], start: _Start) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "/")
        if path not in ("/ready", "/live"):
            return metrics(environ, start)
        p = life.probe()
        ok = p.ready if path == "/ready" else p.live
        body = orjson.dumps(
            {"state": p.state, "ready": p.ready, "live": p.live, "detail": p.detail}
        )
        start(
            "200 OK" if ok else "503 Service Unavailable",
            [("Content-Type", "application/json"), ("Content-Length", str(len(body)))],
        )
        return [body]

    return route


def serve(registry: CollectorRegistry, life: Lifecycle, port: int, host: str = "0.0.0.0") -> Any:
    """Serve on a daemon thread; returns the server (its `server_port` is the bound port)."""
    server = make_server(host, port, app(registry, life), _Server, handler_class=_Quiet)
    threading.Thread(target=server.serve_forever, name="probes", daemon=True).start()
    return server
