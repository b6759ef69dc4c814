"""`up`, `down` and `status` of both local servers: idempotent, locked across processes, and
never leaving a half-started server behind."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable

from streamrec.streaming.config import ServicesConfig
from streamrec_devservices.common import (
    KAFKA,
    REDIS,
    SERVICES,
    Paths,
    ServicesError,
    elapsed,
    file_lock,
)
from streamrec_devservices.kafka_server import KafkaServer
from streamrec_devservices.redis_server import RedisServer
from streamrec_devservices.report import ServicesStatus, ServiceState
from streamrec_devservices.supervise import Server

log = logging.getLogger("streamrec.services")


def _servers(cfg: ServicesConfig, which: Iterable[str] | None) -> list[Server]:
    names = list(SERVICES if which is None else which)
    unknown = [n for n in names if n not in SERVICES]
    if unknown:
        raise ServicesError(f"unknown service {unknown[0]!r}; expected one of {SERVICES}")
    paths = Paths.of(cfg)
    made: dict[str, Server] = {KAFKA: KafkaServer(cfg, paths), REDIS: RedisServer(cfg, paths)}
    return [made[n] for n in SERVICES if n in names]


def _status_of(states: dict[str, ServiceState]) -> ServicesStatus:
    return ServicesStatus(kafka=states.get(KAFKA), redis=states.get(REDIS))


# --------------------------------------------------------------------------- API


def up(cfg: ServicesConfig, services: Iterable[str] | None = None) -> ServicesStatus:
    """Make sure the local servers run and answer; start what is missing, reuse what runs.

    Both servers are prepared and spawned before waiting, so Redis starts while the JVM boots.
    If any server fails, every server this call started is stopped again before raising.
    """
    t0 = time.monotonic()
    servers = _servers(cfg, services)
    paths = Paths.of(cfg)
    deadline = time.monotonic() + cfg.start_timeout_s
    started: list[tuple[Server, int]] = []
    states: dict[str, ServiceState] = {}
    with file_lock(paths.lock):
        try:
            pending: list[tuple[Server, int, float | None]] = []
            for srv in servers:
                run = srv.running()
                if run is not None:
                    pid, rec = run
                    if rec.get("ports") != [p for p, _ in srv.ports()]:
                        raise ServicesError(
                            f"{srv.name} of {paths.home} is already running (pid {pid}) on ports "
                            f"{rec.get('ports')}, not the configured "
                            f"{[p for p, _ in srv.ports()]}; run `streamrec services down` first"
                        )
                    log.info("%s: already running, pid %d", srv.name, pid)
                    pending.append((srv, pid, None))
                    continue
                if srv.pid_file.exists():
                    log.info("%s: removing stale pid file %s", srv.name, srv.pid_file)
                    srv.pid_file.unlink(missing_ok=True)
                srv.check_ports_free()
                pid = srv.spawn()
                started.append((srv, pid))
                pending.append((srv, pid, srv.spawned_at))
            # Quick ones first, so each "healthy after" line tells that server's own start time.
            for srv, pid, since in sorted(pending, key=lambda p: p[0].name != REDIS):
                srv.wait_healthy(pid, deadline, time.monotonic() if since is None else since)
                states[srv.name] = srv._state(pid, True, "running")
        except BaseException:
            for srv, pid in reversed(started):
                log.warning("%s: stopping pid %d after a failed start", srv.name, pid)
                try:
                    srv.stop()
                except Exception as e:  # report the original failure, not the cleanup's
                    log.error("%s: cleanup of pid %d failed: %s", srv.name, pid, e)
            raise
    log.info("services up in %s", elapsed(t0))
    return _status_of(states)


def down(cfg: ServicesConfig, services: Iterable[str] | None = None) -> ServicesStatus:
    """Stop our servers (never anything else on those ports); data and cache stay."""
    t0 = time.monotonic()
    servers = _servers(cfg, services)
    with file_lock(Paths.of(cfg).lock):
        for srv in reversed(servers):  # Redis first: it is quick, Kafka takes a few seconds
            if not srv.stop():
                log.info("%s: not running", srv.name)
    log.info("services down in %s", elapsed(t0))
    return status(cfg, services)


def status(cfg: ServicesConfig, services: Iterable[str] | None = None) -> ServicesStatus:
    """Pid, port and health of each server; changes nothing."""
    return _status_of({srv.name: srv.state() for srv in _servers(cfg, services)})
