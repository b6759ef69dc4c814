"""Topic creation for the trainer, the tools and the tests.

Why it is code and not broker auto-creation: the local broker runs with
`auto.create.topics.enable=false` (see `streamrec_devservices`), because an auto-created topic
gets the broker's default partition count and no compaction, silently. The events topic's
partition count fixes which trainer owns which user and the catalogue topics must
be compacted, so every topic is created here, explicitly and idempotently.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator, Mapping, Set
from contextlib import closing, contextmanager
from typing import TYPE_CHECKING, Any

from streamrec.streaming.security import (
    AccessDenied,
    denial,
    kafka_client,
    kafka_params,
    kafka_principal,
)

if TYPE_CHECKING:
    from streamrec.streaming.config import KafkaConfig

log = logging.getLogger("streamrec.admin")

TOPIC_ALREADY_EXISTS = 36  # Kafka protocol error code


class TopicError(RuntimeError):
    """A topic could not be created, or exists with a shape that does not match the request."""


def _config(kafka: KafkaConfig | str) -> KafkaConfig:
    """A bare bootstrap string (tests, older callers) means a PLAINTEXT listener."""
    from streamrec.streaming.config import KafkaConfig

    return KafkaConfig(bootstrap=kafka) if isinstance(kafka, str) else kafka


@contextmanager
def _denials(cfg: KafkaConfig) -> Iterator[None]:
    """A wrong password or a missing ACL as AccessDenied, the one error the commands report."""
    try:
        yield
    except Exception as e:
        found = denial(e, kafka=cfg)
        if found is None:
            raise
        raise found from None


def _admin(cfg: KafkaConfig, client_id: str, **extra: Any) -> Any:
    """A KafkaAdminClient with the same connection and security parameters as every other
    client (`security.kafka_params`)."""
    from kafka import KafkaAdminClient  # deferred: importing this module stays cheap

    return kafka_client(
        KafkaAdminClient, cfg, {**kafka_params(cfg), "client_id": client_id, **extra}
    )


def create_topics(
    kafka: KafkaConfig | str,
    topics: Mapping[str, int],
    compacted: Set[str] = frozenset(),
    *,
    replication_factor: int = 1,
    configs: Mapping[str, Mapping[str, str]] | None = None,
    timeout_s: float = 30.0,
    client_id: str = "streamrec-admin",
) -> dict[str, int]:
    """Create missing topics, then wait until every partition of every topic has a leader.

    `topics` maps name -> partitions; names in `compacted` get `cleanup.policy=compact`;
    `configs` adds topic configs per name. A topic that already exists is left as it is (this
    is what makes the call idempotent and safe from many processes at once); if it has fewer
    partitions than asked, that is logged as a warning, because keyed ownership depends on the
    count and silently adding partitions would move keys. Returns name -> actual partitions.

    The wait matters: CreateTopics returns before the partition leaders are elected, and a
    producer or consumer that starts in that window sees errors or an empty assignment.
    """
    from kafka.errors import AuthorizationError, for_code

    if not topics:
        return {}
    unknown = set(compacted) - set(topics)
    if unknown:
        raise ValueError(f"compacted names topics not being created: {sorted(unknown)}")
    for name, n in topics.items():
        if not name or n < 1:
            raise ValueError(f"topic {name!r}: partitions must be >= 1, got {n}")
    t0 = time.monotonic()
    request: dict[str, dict[str, Any]] = {}
    for name, partitions in topics.items():
        topic_configs = dict((configs or {}).get(name, {}))
        if name in compacted:
            topic_configs.setdefault("cleanup.policy", "compact")
        request[name] = {
            "num_partitions": partitions,
            "replication_factor": replication_factor,
            "configs": topic_configs,
        }
    timeout_ms = int(timeout_s * 1000)
    cfg = _config(kafka)
    admin = _admin(cfg, client_id, request_timeout_ms=timeout_ms, bootstrap_timeout_ms=timeout_ms)
    with _denials(cfg), closing(admin):
        result = admin.create_topics(request, timeout_ms=timeout_ms, raise_errors=False)
        created: list[str] = []
        for entry in result.get("topics", []):
            name, code = entry.get("name"), entry.get("error_code", 0)
            if code == 0:
                created.append(name)
            elif code != TOPIC_ALREADY_EXISTS:
                if issubclass(for_code(code), AuthorizationError):
                    raise AccessDenied(
                        "kafka",
                        kafka_principal(cfg),
                        f"no ACL allowing to create topic {name} ({for_code(code).__name__})",
                    )
                message = entry.get("error_message") or for_code(code).__name__
                raise TopicError(f"creating topic {name!r} failed: {message} (error {code})")
        admin.wait_for_topics(list(topics), timeout_ms=timeout_ms)
        actual = {
            t["name"]: len(t.get("partitions") or []) for t in admin.describe_topics(list(topics))
        }
    for name, wanted in topics.items():
        got = actual.get(name, 0)
        if got < wanted:
            log.warning(
                "topic %s exists with %d partitions, fewer than the %d asked for; left as is",
                name,
                got,
                wanted,
            )
    existed = sorted(set(topics) - set(created))
    # Said once: every later check (the trainer's own, at each start) finds them there.
    log.log(
        logging.INFO if created else logging.DEBUG,
        "topics ready in %.1f s: created %s%s",
        time.monotonic() - t0,
        ", ".join(sorted(created)) or "none",
        f"; already there: {', '.join(existed)}" if existed else "",
    )
    return actual


def delete_topics(
    kafka: KafkaConfig | str, topics: Iterable[str], timeout_s: float = 30.0
) -> list[str]:
    """Delete those of `topics` that exist and wait until the broker no longer lists them.

    For tools that reset their own scratch topics (demo, evaluation, benchmarks); returns the
    names that were deleted.
    """
    cfg = _config(kafka)
    admin = _admin(cfg, "streamrec-admin")
    with _denials(cfg), closing(admin):
        doomed = sorted(set(topics) & set(admin.list_topics()))
        if doomed:
            admin.delete_topics(doomed, timeout_ms=int(timeout_s * 1000))
            deadline = time.monotonic() + timeout_s
            while set(admin.list_topics()) & set(doomed) and time.monotonic() < deadline:
                time.sleep(0.2)
        return doomed
