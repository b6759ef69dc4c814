"""Outages of Redis and Kafka: pause and keep trying, never drop a batch.

redis-py's `Retry` already retries each command with backoff (streaming/store.py `connect`);
`Outage.call` sits on top of a whole call once those retries are spent: it keeps waiting,
logs once when a dependency goes down and once when it is back, and reports both to the
`Lifecycle` (/ready is 503 meanwhile). It gives up only when this trainer lost the lead, or
when a stop was asked and the grace period is down to `SHUTDOWN_RESERVE_S`: nothing is lost
then either, since the offsets in Redis did not move and the next trainer reads on from them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from kafka.errors import KafkaError
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from streamrec.consumers.lease import StandDown
from streamrec.consumers.lifecycle import Lifecycle
from streamrec.streaming.config import KafkaConfig, RedisConfig
from streamrec.streaming.security import denial

log = logging.getLogger("streamrec.trainer")
_T = TypeVar("_T")

# Of a stop's grace period, what the steps after the loop need (consumer close, lease,
# clients): lists, outage retries and the final checkpoint leave this much untouched.
SHUTDOWN_RESERVE_S = 4.0

REDIS_ERRORS: tuple[type[BaseException], ...] = (RedisConnectionError, RedisTimeoutError)
KAFKA_ERRORS: tuple[type[BaseException], ...] = (KafkaError,)


class Outage:
    """Logs an unavailable dependency once when it goes down and once when it is back."""

    def __init__(
        self,
        life: Lifecycle,
        lease_lost: threading.Event | None = None,
        backoff: RedisConfig | None = None,
        kafka: KafkaConfig | None = None,
    ) -> None:
        self.since: dict[str, float] = {}
        self._configs = (kafka, backoff)  # they name the principal of an AccessDenied
        self.life = life
        self.lease_lost = lease_lost or threading.Event()
        b = backoff or RedisConfig()
        self._backoff = (b.backoff_cap_ms / 1000, b.backoff_base_ms / 1000)

    def down(self, what: str, err: BaseException) -> None:
        if what not in self.since:
            self.since[what] = time.monotonic()
            log.warning("%s unavailable (%s): pausing, nothing is dropped", what, err)
            self.life.outage(what, f"{type(err).__name__}: {err}")

    def up(self, what: str) -> None:
        since = self.since.pop(what, None)
        if since is not None:
            log.info("%s is back after %.1f s: resuming", what, time.monotonic() - since)
            self.life.outage(what, None)

    def check_denied(self, err: BaseException) -> None:
        """A wrong password or a missing right is not an outage: raise it as AccessDenied."""
        found = denial(err, *self._configs)
        if found is not None:
            raise found from err

    def redis(self, fn: Callable[[], _T]) -> _T:
        """Call Redis until it answers: an outage pauses the trainer, it never drops a batch."""
        return self.call("Redis", fn, REDIS_ERRORS)

    def kafka(self, fn: Callable[[], _T]) -> _T:
        return self.call("Kafka", fn, KAFKA_ERRORS)

    def call(self, what: str, fn: Callable[[], _T], errors: tuple[type[BaseException], ...]) -> _T:
        """`fn()` once `what` answers; raises StandDown when waiting is no longer this
        trainer's job (the lead is lost, or a stop's grace period is nearly spent)."""
        cap, base = self._backoff
        backoff = ExponentialWithJitterBackoff(cap=cap, base=base)
        failures = 0
        while True:
            if self.lease_lost.is_set():
                raise StandDown("another trainer holds the lease")
            try:
                out = fn()
                self.up(what)
                return out
            except errors as e:
                self.check_denied(e)
                self.down(what, e)
                failures += 1
            if self.life.stop_requested.is_set() and self.life.remaining_s() < SHUTDOWN_RESERVE_S:
                # Redis's offsets did not move: these records are read again next time.
                raise StandDown(f"stopping while {what} is unavailable, as asked")
            self.life.beat()
            time.sleep(backoff.compute(failures))
