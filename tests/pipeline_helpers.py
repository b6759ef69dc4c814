"""Helpers for tests that drive the real pipeline: trainers in-process or as child processes,
private Kafka/Redis servers that a test may stop and restart, and Redis state readers."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import orjson

import streamrec_devservices as services
from streamrec.consumers.config import Config
from streamrec.consumers.trainer import Trainer
from streamrec.streaming.config import ServicesConfig
from streamrec.streaming.keys import Keys, decode_vector


def free_ports(n: int) -> list[int]:
    ports: set[int] = set()
    while len(ports) < n:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            ports.add(int(s.getsockname()[1]))
    return sorted(ports)


@contextlib.contextmanager
def private_services(base: ServicesConfig, home: Path) -> Iterator[ServicesConfig]:
    """A Kafka and a Redis of this test's own, on free ports, sharing the download cache:
    fault tests stop and restart them without disturbing the session's shared servers."""
    kafka, controller, redis_port = free_ports(3)
    cfg = dataclasses.replace(
        base,
        home=str(home),
        cache_dir=str(services.cache_dir(base)),
        kafka_port=kafka,
        kafka_controller_port=controller,
        redis_port=redis_port,
    )
    st = services.up(cfg)
    assert st.healthy, st.lines()
    try:
        yield cfg
    finally:
        services.down(cfg)


def run_trainer(cfg: Config, expected: int, timeout_s: float = 90.0) -> Trainer:
    """Run a trainer in this process until it has consumed `expected` records."""
    trainer: Trainer

    def on_batch(stats: Any) -> None:
        if stats.events + stats.dead_letters >= expected:
            trainer.stop()

    trainer = Trainer(cfg, on_batch=on_batch)
    watchdog = threading.Timer(timeout_s, trainer.stop)
    watchdog.start()
    try:
        trainer.run()
    finally:
        watchdog.cancel()
    return trainer


# Every trainer a test starts, so the guard in conftest.py can stop and report any that
# outlive their test (an orphan retried a torn-down broker for minutes once).
STARTED: list[TrainerProcess] = []


class TrainerProcess:
    """`streamrec train` as a child process, configured through STREAMREC_* variables.

    With `probes=True` it serves /ready on a free port, and `wait_ready` waits on that: the
    trainer's own word that it consumes, never on time.
    """

    def __init__(self, cfg: Config, log_path: Path, *, probes: bool = True) -> None:
        if probes:
            cfg = cfg.replace(trainer={"metrics_port": free_ports(1)[0]})
        self.cfg = cfg
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> TrainerProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMREC_")}
        env.update(self.cfg.to_env())
        env["TF_CPP_MIN_LOG_LEVEL"] = "2"
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "streamrec.consumers.cli", "train"],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        STARTED.append(self)
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self, sig: int = signal.SIGKILL, timeout_s: float = 60) -> int:
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(sig)
        return self.proc.wait(timeout=timeout_s)

    def stop(self, sig: int = signal.SIGTERM, within_s: float = 10.0) -> tuple[int, float]:
        """Send `sig`; return the exit code and the seconds it took. Fails past `within_s`."""
        assert self.proc is not None
        t0 = time.monotonic()
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout=within_s)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(
                f"trainer still running {within_s:.0f} s after {signal.Signals(sig).name}:\n"
                + self.log_tail()
            ) from None
        return rc, time.monotonic() - t0

    def probe(self, path: str = "/ready") -> tuple[int, dict[str, Any]]:
        """(HTTP status, JSON body) of a probe; (0, {}) while nothing answers."""
        import urllib.error
        import urllib.request

        url = f"http://127.0.0.1:{self.cfg.trainer.metrics_port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                return resp.status, orjson.loads(resp.read())
        except urllib.error.HTTPError as e:
            return e.code, orjson.loads(e.read())
        except OSError:
            return 0, {}

    def wait_ready(self, timeout_s: float = 120) -> None:
        def ready() -> bool:
            assert self.alive(), f"trainer exited before it was ready:\n{self.log_tail()}"
            return self.probe()[0] == 200

        wait_until(ready, timeout_s, f"{self.log_path.name} to be ready")

    def wait_log(self, text: str, timeout_s: float = 120) -> None:
        def logged() -> bool:
            if text in self.log_text():
                return True
            assert self.alive(), f"trainer exited before logging {text!r}:\n{self.log_tail()}"
            return False

        wait_until(logged, timeout_s, f"{text!r} in {self.log_path.name}")

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, n: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-n:])


def reap_trainers() -> list[str]:
    """SIGKILL every trainer a test started that is still running; return their logs' names."""
    left = []
    while STARTED:
        p = STARTED.pop()
        if p.alive():
            left.append(p.log_path.name)
            p.kill(signal.SIGKILL, timeout_s=30)
    return left


def stored_offsets(redis_client: Any, cfg: Config) -> dict[str, int]:
    raw = redis_client.hgetall(Keys(cfg.redis.prefix).offsets(cfg.kafka.group_id))
    return {k.decode(): int(v) for k, v in raw.items()}


def wait_until(cond: Callable[[], bool], timeout_s: float, what: str, tick_s: float = 0.2) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(tick_s)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")


def user_counts(events: Iterable[Mapping[str, Any]]) -> Counter[str]:
    return Counter(str(e["user"]) for e in events)


def user_rows(redis_client: Any, cfg: Config, users: Iterable[str]) -> dict[str, dict[bytes, Any]]:
    keys = Keys(cfg.redis.prefix)
    users = list(users)
    pipe = redis_client.pipeline(transaction=False)
    for u in users:
        pipe.hgetall(keys.user(u))
    return dict(zip(users, pipe.execute(), strict=True))


def assert_counts_match(r: Any, cfg: Config, events: Iterable[Mapping[str, Any]]) -> None:
    """Every user's event count in Redis (`n`) equals what was published: nothing lost, nothing
    applied twice."""
    expected = user_counts(events)
    rows = user_rows(r, cfg, expected)
    wrong = {
        u: (int(rows[u].get(b"n", -1)), n)
        for u, n in expected.items()
        if int(rows[u].get(b"n", -1)) != n
    }
    assert not wrong, f"{len(wrong)} users with wrong event counts, e.g. {list(wrong.items())[:5]}"


def assert_no_nan_in_redis(redis_client: Any, cfg: Config) -> int:
    """Every vector, bias and score under the prefix is finite; returns how many were read."""
    keys = Keys(cfg.redis.prefix)
    n = 0
    for key in redis_client.scan_iter(match=f"{cfg.redis.prefix}*", count=1000):
        kind = redis_client.type(key)
        if kind == b"hash":
            row = redis_client.hgetall(key)
            if b"vec" in row:
                decode_vector(row[b"vec"])  # raises on NaN/Inf
                assert np.isfinite(float(row[b"bias"])), key
                n += 1
        elif key.decode() == keys.items_matrix:
            decode_vector(redis_client.get(key))
            n += 1
        elif key.decode().startswith(cfg.redis.prefix + "recs:"):
            recs = orjson.loads(redis_client.get(key))
            assert all(np.isfinite(s) for _, s in recs["items"]), key
        elif kind == b"zset" and key.decode().startswith(cfg.redis.prefix + "pop"):
            assert all(np.isfinite(s) for _, s in redis_client.zrange(key, 0, -1, withscores=True))
    return n
