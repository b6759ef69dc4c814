"""The trainer's life as others see it: its state for probes, and how a stop request ends it.

Standard library only, so `streamrec train` installs the signal handlers before it imports
Kafka, Redis or TensorFlow: a SIGTERM that arrives while TensorFlow loads must still end the
process with exit code 0 (docs/operations.md, "Stopping").

Until the trainer consumes (starting, compiling, standing by) nothing is held that a stop
could lose, so a signal then unwinds at once with `Stopped`. Once it consumes, a signal only
sets `stop_requested`; the loop finishes its batch, and every shutdown step takes its time
from `remaining_s()`. Should a step still hang, a watchdog ends the process when the grace
period is over: like any crash, that loses nothing, since Redis keeps the offsets of every
batch it holds and the next trainer reads on from there.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger("streamrec.lifecycle")

STARTING, STANDBY, ACTIVE, STOPPING = "starting", "standby", "active", "stopping"
STATES = (STARTING, STANDBY, ACTIVE, STOPPING)
LIVE_TIMEOUT_S = 120.0  # no beat for this long: /live fails (compiling beats once, at its end)


class Stopped(BaseException):
    """A stop request while nothing is held: unwinds start-up and standby at once.

    A BaseException, so handlers of ordinary errors on the way do not swallow it.
    """


@dataclass(frozen=True)
class Probe:
    """What /ready and /live answer."""

    state: str
    ready: bool
    live: bool
    detail: str


class Lifecycle:
    def __init__(self, grace_s: float = 8.0) -> None:
        self.grace_s = grace_s
        self.stop_requested = threading.Event()
        self.state = STARTING
        self.detail = "importing and compiling"
        self.abortable = True  # a signal now raises Stopped
        self.outages: dict[str, str] = {}
        self.on_change: Callable[[str, bool], None] | None = None
        self._beat = time.monotonic()
        self._stop_at: float | None = None
        self._lock = threading.Lock()

    # -- signals ---------------------------------------------------------------------------

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)

    def _on_signal(self, signum: int, _frame: object) -> None:
        first = not self.stop_requested.is_set()
        self.request_stop()
        if first:
            # Not through logging: the interrupted code may hold a handler's lock.
            name = signal.Signals(signum).name
            os.write(2, f"{name} received while {self.state}: stopping\n".encode())
            # Only a signal arms the watchdog: stop() in a test's process must never exit it.
            timer = threading.Timer(self.grace_s, self._overdue)
            timer.daemon = True
            timer.name = "stop-watchdog"
            timer.start()
        if self.abortable:
            self.abortable = False  # a second signal must not cut the unwinding short
            raise Stopped(signal.Signals(signum).name)

    def request_stop(self) -> None:
        with self._lock:
            if self._stop_at is not None:
                return
            self._stop_at = time.monotonic()
            self.stop_requested.set()

    def remaining_s(self, floor: float = 0.1) -> float:
        """Seconds left of the grace period once a stop was requested (the full one before)."""
        if self._stop_at is None:
            return self.grace_s
        return max(floor, self.grace_s - (time.monotonic() - self._stop_at))

    def _overdue(self) -> None:
        log.error(
            "still %s %.0f s after the stop request (%s): exiting now; nothing is lost, the "
            "next trainer reads on from the offsets Redis holds",
            self.state,
            self.grace_s,
            self.detail,
        )
        for handler in logging.getLogger().handlers:
            handler.flush()
        sys.stderr.flush()
        os._exit(0)

    # -- state -----------------------------------------------------------------------------

    def enter(self, state: str, detail: str = "") -> None:
        if state not in STATES:
            raise ValueError(f"unknown state {state!r}")
        self.state, self.detail = state, detail
        self.abortable = state in (STARTING, STANDBY) and not self.stop_requested.is_set()
        self.beat()
        if self.on_change is not None:
            self.on_change(state, self.ready)

    def outage(self, what: str, error: str | None) -> None:
        """Record a dependency going down (error) or coming back (None)."""
        was_ready = self.ready
        if error is None:
            self.outages.pop(what, None)
        else:
            self.outages[what] = error
        if self.on_change is not None and self.ready != was_ready:
            self.on_change(self.state, self.ready)

    def beat(self) -> None:
        self._beat = time.monotonic()

    @property
    def ready(self) -> bool:
        return self.state == ACTIVE and not self.outages and not self.stop_requested.is_set()

    def probe(self) -> Probe:
        live = time.monotonic() - self._beat < LIVE_TIMEOUT_S
        detail = "; ".join(f"{k} unavailable: {v}" for k, v in self.outages.items())
        return Probe(self.state, self.ready, live, detail or self.detail)
