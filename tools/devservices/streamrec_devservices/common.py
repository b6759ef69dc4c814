"""What every module of the local servers shares: service names, the error type, the home's
folders, and small file and subprocess helpers (atomic writes, cross-process locks, log tails)."""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import subprocess
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from streamrec.streaming.config import ServicesConfig

KAFKA = "kafka"
REDIS = "redis"
SERVICES: tuple[str, ...] = (KAFKA, REDIS)


DOWNLOAD_TIMEOUT_S = 1800.0
INSTALL_TIMEOUT_S = 900.0
LOG_TAIL_LINES = 25


class ServicesError(RuntimeError):
    """A local server could not be installed, started or stopped; the message says what to do."""


def env_var(setting: str) -> str:
    """The variable a person sets to change a ServicesConfig field (see consumers.config)."""
    return f"STREAMREC_SERVICES_{setting.upper()}"


# --------------------------------------------------------------------------- small helpers


def elapsed(t0: float) -> str:
    return f"{time.monotonic() - t0:.1f} s"


def _tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 64 * 1024))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return f"  ({path} not found)"
    got = text.splitlines()[-lines:]
    return "\n".join(f"  | {line}" for line in got) if got else f"  ({path} is empty)"


def tails(paths: Iterable[Path]) -> str:
    return "\n".join(f"last lines of {p}:\n{_tail(p)}" for p in paths)


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Serialise `up`/`down` and downloads across processes (a test session and a shell)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def run_command(
    cmd: Sequence[str],
    *,
    timeout: float,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(cmd),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
        env=env,
        cwd=cwd,
        check=False,
    )


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def last_lines(text: str, n: int = LOG_TAIL_LINES) -> str:
    lines = [line for line in _ANSI.sub("", text).strip().splitlines() if line.strip()]
    return "\n".join(f"  | {line}" for line in lines[-n:])


@dataclass(frozen=True)
class Paths:
    home: Path
    cache: Path
    run: Path

    @classmethod
    def of(cls, cfg: ServicesConfig) -> Paths:
        home = Path(cfg.home).expanduser().resolve()
        cache = Path(cfg.cache_dir).expanduser().resolve() if cfg.cache_dir else home / "cache"
        return cls(home=home, cache=cache, run=home / "run")

    @property
    def lock(self) -> Path:
        return self.run / ".services.lock"


def cache_dir(cfg: ServicesConfig) -> Path:
    """The download cache in use (absolute); point another home's `cache_dir` here to share it."""
    return Paths.of(cfg).cache
