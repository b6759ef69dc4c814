"""Record batches the Kafka client cannot decode: dead-letter them whole and read on past them.

A batch with a bad CRC, a codec the client lacks or a record set it cannot parse makes
kafka-python 3.0.12's `poll` raise, and every later `poll` then loops inside
`Fetcher.fetched_records` at 100 % of a core without returning (the partition's record
iterator is closed but never drained): one bad batch stops every partition and SIGTERM with
them. The policy (docs/operations.md, "Undecodable batches"): the batch's raw bytes go to the
dead-letter topic with its offset range, an ERROR names topic, partition and offsets, and the
consumer seeks one past the batch. Nothing is lost: the bytes are kept, and the source topic
still holds the batch until its retention ends.

`GuardedPoll` returns that outcome as a value (bytewax's "errors as values"), so the caller
decides when to send the dead letter and when the skipped offsets count as consumed.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from kafka import KafkaConsumer, TopicPartition

from streamrec.streaming.events import UNDECODABLE_BATCH, Rejected
from streamrec.streaming.kafka_io import DeadLetter

log = logging.getLogger(__name__)

# The frames of kafka-python that decode fetched bytes into records. An exception whose
# traceback passes through one of them came from a batch's bytes, not from the network.
_DECODING_FRAMES = frozenset({"_unpack_records", "_parse_fetched_data"})
_DECODING_FILES = ("kafka/record/", "kafka/codec.py")
# Batch header (Kafka's message format v2; v0/v1 message sets share the first 12 bytes):
# baseOffset int64, batchLength int32, partitionLeaderEpoch int32, magic int8, crc uint32,
# attributes int16, lastOffsetDelta int32, firstTimestamp int64, maxTimestamp int64.
_HEAD = struct.Struct(">qi")
_V2_TAIL = struct.Struct(">ibIhiqq")
_MAX_OFFSET_DELTA = 1 << 20  # a delta above this is a corrupt header, not a real batch


@dataclass(frozen=True)
class Undecodable:
    """A batch that was skipped: where it was, where reading resumes, and its raw bytes."""

    topic: str
    partition: int
    offset: int  # the first offset not delivered
    next_offset: int  # where the consumer was sought to
    raw: bytes | None  # the batch as fetched; None when its bounds could not be found
    timestamp: int
    error: str

    @property
    def field(self) -> str:
        return f"{self.topic}:{self.partition}"

    def dead_letter(self) -> DeadLetter:
        return DeadLetter(
            topic=self.topic,
            partition=self.partition,
            offset=self.offset,
            timestamp=self.timestamp,
            key=None,
            value=self.raw,
            headers=[("streamrec.dlq.format", b"kafka-record-batch")],
            rejected=Rejected(UNDECODABLE_BATCH, self.error, stage="decode"),
            last_offset=self.next_offset - 1,
        )

    def describe(self) -> str:
        size = "unknown size" if self.raw is None else f"{len(self.raw)} bytes"
        return (
            f"{self.topic} partition {self.partition} offsets {self.offset}-{self.next_offset - 1}"
            f" ({size}): {self.error}"
        )


def is_decode_error(err: BaseException) -> bool:
    """Whether `err` was raised while kafka-python decoded fetched bytes."""
    tb: TracebackType | None = err.__traceback__
    while tb is not None:
        code = tb.tb_frame.f_code
        if code.co_name in _DECODING_FRAMES or any(f in code.co_filename for f in _DECODING_FILES):
            return True
        tb = tb.tb_next
    return False


@dataclass(frozen=True)
class _Batch:
    base_offset: int
    next_offset: int
    start: int
    end: int
    timestamp: int


def batches(raw: bytes | memoryview) -> list[_Batch]:
    """The batch boundaries in fetched bytes, from their headers alone (no CRC, no decoding).

    Stops at the first header that does not fit the bytes (a fetch may end with a partial
    batch, and a corrupt length cannot be trusted past itself).
    """
    view = memoryview(raw)
    out: list[_Batch] = []
    pos = 0
    while pos + _HEAD.size <= len(view):
        base, length = _HEAD.unpack_from(view, pos)
        end = pos + _HEAD.size + length
        if length <= 0 or end > len(view) or base < 0:
            break
        magic = view[pos + 16] if pos + 16 < len(view) else -1
        next_offset, ts = base + 1, -1
        if magic == 2 and pos + _HEAD.size + _V2_TAIL.size <= end:
            _, _, _, _, delta, _, max_ts = _V2_TAIL.unpack_from(view, pos + _HEAD.size)
            if 0 <= delta < _MAX_OFFSET_DELTA:
                next_offset = base + delta + 1
            ts = max_ts
        out.append(_Batch(base, next_offset, pos, end, ts))
        pos = end
    # A header that lies about its last offset is bounded by the batch that follows it.
    for i in range(len(out) - 1):
        b, nxt = out[i], out[i + 1]
        if b.base_offset < nxt.base_offset < b.next_offset:
            out[i] = _Batch(b.base_offset, nxt.base_offset, b.start, b.end, b.timestamp)
    return out


def locate(
    raw: bytes | memoryview | None, topic: str, partition: int, position: int, error: str
) -> Undecodable:
    """The batch of `raw` that holds `position`; a one-offset skip when none can be found."""
    for b in batches(raw) if raw is not None else []:
        if b.next_offset > position:  # the first batch not delivered
            assert raw is not None
            first = max(position, b.base_offset)
            return Undecodable(
                topic,
                partition,
                first,
                b.next_offset,
                bytes(raw[b.start : b.end]),
                b.timestamp,
                error,
            )
    return Undecodable(topic, partition, position, position + 1, None, -1, error)


class GuardedPoll:
    """`consumer.poll` that turns an undecodable batch into a value and seeks past it.

    Keeps a reference to each partition's last fetched bytes (kafka-python's fetcher parses
    them lazily, and once a batch fails they are out of reach), so the batch can be dead-
    lettered whole. Relies on kafka-python internals pinned by the exact version; the unit
    and fault tests fail if they move.
    """

    def __init__(self, consumer: KafkaConsumer) -> None:
        self.consumer = consumer
        self._raw: dict[TopicPartition, Any] = {}
        fetcher = consumer._fetcher
        parse: Callable[[Any], Any] = fetcher._parse_fetched_data
        raw = self._raw

        def remember(completed: Any) -> Any:
            raw[completed.topic_partition] = completed.partition_data.records
            return parse(completed)

        fetcher._parse_fetched_data = remember

    def poll(
        self, timeout_ms: int, max_records: int | None = None
    ) -> tuple[Mapping[TopicPartition, Sequence[Any]], Undecodable | None]:
        try:
            return self.consumer.poll(timeout_ms=timeout_ms, max_records=max_records), None
        except Exception as e:
            if not is_decode_error(e):
                raise
            return {}, self._skip(e)

    def _skip(self, err: Exception) -> Undecodable:
        fetcher = self.consumer._fetcher
        part = getattr(fetcher, "_next_partition_records", None)
        tp: TopicPartition | None = getattr(part, "topic_partition", None)
        if tp is None:
            meta = getattr(fetcher, "_next_in_line_exception_metadata", None)
            tp = getattr(meta, "partition", None)
        if tp is None:  # internals moved: nothing to seek, so the error cannot be handled
            raise err
        position = self.consumer.position(tp)
        bad = locate(
            self._raw.get(tp), tp.topic, tp.partition, position, f"{type(err).__name__}: {err}"
        )
        # Seeking away makes the fetcher drain the closed record iterator on the next poll
        # (its offset no longer matches), which ends kafka-python's spin.
        self.consumer.seek(tp, bad.next_offset)
        fetcher._next_partition_records = None
        fetcher._next_in_line_exception_metadata = None
        return bad
