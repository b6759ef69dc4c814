"""Kafka clients configured once: producers, the trainer's consumer, publishing and dead letters.

kafka-python is pinned to an exact version. Settings come from `KafkaConfig`; everything else is a
deliberate default written here once so every process behaves the same.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from kafka import KafkaConsumer, KafkaProducer

from streamrec.streaming.config import KafkaConfig
from streamrec.streaming.events import Rejected
from streamrec.streaming.security import (
    AccessDenied,
    client_principal,
    denial,
    kafka_client,
    kafka_params,
)

log = logging.getLogger(__name__)

DLQ_HEADER = "streamrec.dlq."
MAX_DLQ_VALUE_BYTES = 900 * 1024  # under the broker's default 1 MiB message limit
MAX_ERROR_BYTES = 1024


def make_producer(cfg: KafkaConfig, **overrides: Any) -> KafkaProducer:
    """An idempotent producer (acks=all) tuned for throughput: batches of 256 KiB, 5 ms linger."""
    params: dict[str, Any] = {
        **kafka_params(cfg),
        "acks": "all",
        "linger_ms": 5,
        "batch_size": 256 * 1024,
        "max_request_size": 1024 * 1024,
        "request_timeout_ms": cfg.request_timeout_ms,
        "client_id": "streamrec-producer",
    }
    params.update(overrides)
    return kafka_client(KafkaProducer, cfg, params)


def make_consumer(cfg: KafkaConfig, group_id: str | None, **overrides: Any) -> KafkaConsumer:
    """A consumer that never auto-commits: offsets of record live in Redis with the state."""
    params: dict[str, Any] = {
        **kafka_params(cfg),
        "group_id": group_id,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "max_poll_records": cfg.max_poll_records,
        "fetch_max_bytes": cfg.fetch_max_bytes,
        "max_partition_fetch_bytes": cfg.max_partition_fetch_bytes,
        "request_timeout_ms": cfg.request_timeout_ms,
        "session_timeout_ms": cfg.session_timeout_ms,
        "heartbeat_interval_ms": cfg.heartbeat_interval_ms,
        "client_id": "streamrec-trainer",
    }
    params.update(overrides)
    return kafka_client(KafkaConsumer, cfg, params)


def event_key(event: Mapping[str, Any]) -> bytes | None:
    """Events are keyed by user id, so each user's events stay in order on one partition."""
    user = event.get("user")
    if user is None or isinstance(user, bool):
        return None
    return str(user).encode("utf-8", "surrogatepass")


def publish(
    producer: KafkaProducer,
    topic: str,
    events: Iterable[Mapping[str, Any]],
    *,
    progress: bool = False,
    total: int | None = None,
) -> int:
    """Send events (dicts in the wire schema) keyed by user; flush; return how many were sent.

    Raises the first delivery error instead of losing records quietly.
    """
    it: Iterable[Mapping[str, Any]] = events
    if progress:
        from tqdm import tqdm

        it = tqdm(events, total=total, unit="ev", desc=f"publish {topic}", mininterval=0.5)
    n = 0
    errors: list[BaseException] = []
    for event in it:
        fut = producer.send(topic, key=event_key(event), value=orjson.dumps(event))
        fut.add_errback(errors.append)
        n += 1
        if errors:
            break
    producer.flush()
    if errors:
        found = denial(errors[0])
        if found is not None:
            who = client_principal(producer.config)
            raise AccessDenied(found.system, who, found.right) from errors[0]
        raise RuntimeError(f"publishing to {topic} failed: {errors[0]!r}")
    return n


@dataclass(frozen=True)
class DeadLetter:
    """One record that could not be learned, with where it came from and why."""

    topic: str
    partition: int
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]
    rejected: Rejected
    # A dead letter for a whole undecodable batch covers offset..last_offset (both included).
    last_offset: int | None = None

    @classmethod
    def of(cls, record: Any, rejected: Rejected) -> DeadLetter:
        """From a kafka-python ConsumerRecord, keeping its key, value and headers as they are."""
        return cls(
            record.topic,
            record.partition,
            record.offset,
            record.timestamp,
            record.key,
            record.value,
            list(record.headers or []),
            rejected,
        )


def dead_letter_headers(dl: DeadLetter, group: str) -> list[tuple[str, bytes]]:
    """Original headers byte for byte, then ours; the error text is capped at 1 KiB."""
    err = dl.rejected.error.encode("utf-8", "backslashreplace")[:MAX_ERROR_BYTES]
    ours = {
        "topic": dl.topic.encode(),
        "partition": str(dl.partition).encode(),
        "offset": str(dl.offset).encode(),
        "timestamp": str(dl.timestamp).encode(),
        "group": group.encode(),
        "stage": dl.rejected.stage.encode(),
        "reason": dl.rejected.reason.encode(),
        "error": err,
        "failed_at": str(int(time.time() * 1000)).encode(),
    }
    if dl.last_offset is not None:
        ours["last_offset"] = str(dl.last_offset).encode()
    out = list(dl.headers)
    out.extend((DLQ_HEADER + k, v) for k, v in ours.items())
    return out


def send_dead_letters(
    producer: KafkaProducer, dlq_topic: str, group: str, letters: Iterable[DeadLetter]
) -> int:
    """Send and wait for the broker's acknowledgement of every dead letter.

    Called before the batch's Redis transaction: a crash can then duplicate a dead letter
    (dedupe by the offset headers) but never lose one.
    """
    futures = []
    for dl in letters:
        headers = dead_letter_headers(dl, group)
        value = dl.value
        if value is not None and len(value) > MAX_DLQ_VALUE_BYTES:
            headers.append((DLQ_HEADER + "sha256", hashlib.sha256(value).hexdigest().encode()))
            headers.append((DLQ_HEADER + "original_bytes", str(len(value)).encode()))
            value = value[:MAX_DLQ_VALUE_BYTES]
        key = dl.key if dl.key is None or len(dl.key) <= 4096 else dl.key[:4096]
        futures.append(producer.send(dlq_topic, key=key, value=value, headers=headers))
    producer.flush()
    for fut in futures:
        fut.get(timeout=30)  # raises the delivery error, if any
    return len(futures)
