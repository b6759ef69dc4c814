"""What `up`, `down` and `status` return: each server's pid, port and health, in words too."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ServiceState:
    """One server as seen now; `detail` is for people, `healthy` for code."""

    name: str
    host: str
    port: int
    pid: int | None
    healthy: bool
    detail: str
    log_file: str

    def line(self) -> str:
        pid = f"pid {self.pid}" if self.pid else "pid -"
        health = "healthy" if self.healthy else "NOT healthy"
        return (
            f"{self.name:<6} {pid:<11} {self.host}:{self.port:<6} {health:<12} "
            f"{self.detail}  (log {self.log_file})"
        )


@dataclass(frozen=True)
class ServicesStatus:
    """What `up`, `down` and `status` report; `None` for a service that was not asked about."""

    kafka: ServiceState | None
    redis: ServiceState | None

    @property
    def healthy(self) -> bool:
        states = [s for s in (self.kafka, self.redis) if s is not None]
        return bool(states) and all(s.healthy for s in states)

    @property
    def bootstrap(self) -> str | None:
        return f"{self.kafka.host}:{self.kafka.port}" if self.kafka else None

    @property
    def redis_url(self) -> str | None:
        return f"redis://{self.redis.host}:{self.redis.port}/0" if self.redis else None

    def lines(self) -> list[str]:
        return [s.line() for s in (self.kafka, self.redis) if s is not None]
