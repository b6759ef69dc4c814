"""Leadership of a consumer group's trainer: one active trainer, any number on standby.

Why not share partitions between trainers: each trainer holds a whole model, and item rows are
shared by every user, so two active trainers would each write their own item matrix over the
other's. Until items get one owner (the scale-out design), a second trainer stands
by and takes over when the first dies. The lease is a Redis key with a TTL; correctness does
not rest on it: the offset fence in `streaming.store` still rejects a zombie's writes.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import redis

log = logging.getLogger("streamrec.lease")


class StandDown(Exception):
    """This trainer is no longer the group's writer: stop consuming, go back to standby."""


# Take or keep the lease: free, or already ours. Keeping it needs no second round trip, and a
# lease that expired during a Redis outage is simply taken back when nobody else took it.
_ACQUIRE = """
local cur = redis.call('GET', KEYS[1])
if cur == false or cur == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class Lease:
    def __init__(self, client: redis.Redis, key: str, owner: str, ttl_ms: int) -> None:
        self.client = client
        self.key = key
        self.owner = owner
        self.ttl_ms = ttl_ms
        self._acquire: Any = client.register_script(_ACQUIRE)
        self._release: Any = client.register_script(_RELEASE)
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def try_acquire(self) -> bool:
        return bool(self._acquire(keys=[self.key], args=[self.owner, self.ttl_ms]))

    def holder(self) -> str | None:
        raw: Any = self.client.get(self.key)
        return None if raw is None else raw.decode("utf-8", "replace")

    def keep(self) -> None:
        """Renew in the background every third of the TTL; set `lost` if someone else has it."""
        self.lost.clear()
        self._stop.clear()
        self._thread = threading.Thread(target=self._renew, name="lease", daemon=True)
        self._thread.start()

    def _renew(self) -> None:
        failing = False
        while not self._stop.wait(self.ttl_ms / 3000):
            try:
                if not self.try_acquire():
                    log.warning("lease %s taken by %s: standing down", self.key, self.holder())
                    self.lost.set()
                    return
                if failing:
                    log.info("lease %s renewed again", self.key)
                failing = False
            except redis.RedisError as e:  # the trainer's own writes will wait for Redis too
                if not failing:
                    log.warning("cannot renew lease %s: %s", self.key, e)
                failing = True

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        try:
            self._release(keys=[self.key], args=[self.owner])
        except redis.RedisError as e:
            log.warning("could not release lease %s (it expires by itself): %s", self.key, e)
