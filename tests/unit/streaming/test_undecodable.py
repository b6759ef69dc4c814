"""Undecodable record batches: found by their headers alone, dead-lettered whole, skipped.

Unit tests build real Kafka record batches with kafka-python's own builder; the integration
test makes a codec unavailable in the trainer's process (as it was before the codec extras
were dependencies) and checks that the partition reads on and the batch can be recovered.
"""

from __future__ import annotations

import struct
import threading
import time
from collections import Counter
from typing import Any

import kafka.codec
import orjson
import pytest
from kafka import KafkaConsumer, KafkaProducer
from kafka.record.memory_records import MemoryRecords, MemoryRecordsBuilder
from pipeline_helpers import stored_offsets, user_rows, wait_until

from streamrec.consumers.config import Config
from streamrec.consumers.trainer import Trainer
from streamrec.streaming.undecodable import batches, is_decode_error, locate

GZIP = 1


def batch(offset: int, values: list[bytes], codec: int = 0) -> bytes:
    """One v2 record batch whose first offset is `offset`, as a broker would store it."""
    b = MemoryRecordsBuilder(magic=2, compression_type=codec, batch_size=1 << 20)
    for v in values:
        b.append(timestamp=1_700_000_000_000, key=b"k", value=v, headers=[("h", b"1")])
    b.close()
    raw = bytearray(b.buffer())
    struct.pack_into(">q", raw, 0, offset)  # baseOffset: the broker assigns it
    return bytes(raw)


def values(raw: bytes) -> list[bytes]:
    out, records = [], MemoryRecords(raw)
    while (b := records.next_batch()) is not None:
        out += [r.value for r in b]
    return out


def test_batches_are_found_from_their_headers() -> None:
    a = batch(100, [b"a%d" % i for i in range(10)])
    b = batch(110, [b"b%d" % i for i in range(5)], GZIP)
    c = batch(115, [b"c0"])
    found = batches(a + b + c)
    # offsets 100-109, 110-114 (last offset delta 4), 115; byte spans back to back
    assert [(x.base_offset, x.next_offset) for x in found] == [(100, 110), (110, 115), (115, 116)]
    assert [(x.start, x.end) for x in found] == [
        (0, len(a)),
        (len(a), len(a) + len(b)),
        (len(a) + len(b), len(a) + len(b) + len(c)),
    ]
    # A fetch may end inside a batch: the partial one is left out.
    assert len(batches(a + b[:-3])) == 1


def test_the_failing_batch_is_dead_lettered_whole_and_can_be_read_back() -> None:
    a, b, c = batch(0, [b"a"] * 3), batch(3, [b"b1", b"b2"], GZIP), batch(5, [b"c"])
    bad = locate(a + b + c, "events", 2, position=3, error="CorruptRecordError: crc")
    assert (bad.offset, bad.next_offset, bad.raw) == (3, 5, b)
    assert values(bad.raw) == [b"b1", b"b2"]  # nothing lost: the records are all there
    dl = bad.dead_letter()
    assert (dl.topic, dl.partition, dl.offset, dl.last_offset) == ("events", 2, 3, 4)
    assert dl.rejected.reason == "undecodable_batch" and "crc" in dl.rejected.error
    # Offsets of the failing batch already delivered (a record-level CRC error) are not
    # claimed again, but reading resumes after the batch.
    mid = locate(a + b + c, "events", 2, position=4, error="x")
    assert (mid.offset, mid.next_offset) == (4, 5)


def test_bytes_that_cannot_be_split_skip_one_offset() -> None:
    garbage = b"\xff" * 40
    bad = locate(garbage, "t", 0, position=7, error="x")
    assert (bad.offset, bad.next_offset, bad.raw) == (7, 8, None)
    assert locate(None, "t", 0, position=7, error="x").next_offset == 8


def test_a_header_that_lies_about_its_last_offset_is_bounded_by_the_next_batch() -> None:
    a = bytearray(batch(0, [b"a"] * 3))
    struct.pack_into(">i", a, 23, 1000)  # lastOffsetDelta: 1000 instead of 2
    found = batches(bytes(a) + batch(3, [b"b"]))
    assert (found[0].base_offset, found[0].next_offset) == (0, 3)


def test_only_errors_from_decoding_count() -> None:
    def _unpack_records() -> None:  # the name of kafka-python's decoding frame
        raise ValueError("bad varint")

    with pytest.raises(ValueError) as decoding:
        _unpack_records()
    assert is_decode_error(decoding.value)
    with pytest.raises(ValueError) as other:
        int("x")
    assert not is_decode_error(other.value)


@pytest.mark.integration
def test_a_codec_the_client_lacks_is_dead_lettered_and_the_partition_reads_on(
    config: Config, redis_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    k = config.kafka
    plain = [{"user": f"u{i % 20}", "item": f"i{i % 30}", "type": "view"} for i in range(600)]
    packed = [{"user": f"z{i % 10}", "item": f"i{i % 30}", "type": "view"} for i in range(200)]
    for codec, evs in ((None, plain[:300]), ("zstd", packed), (None, plain[300:])):
        producer = KafkaProducer(
            bootstrap_servers=k.bootstrap, compression_type=codec, linger_ms=50
        )
        for e in evs:
            producer.send(k.events_topic, value=orjson.dumps(e), partition=0)
        producer.flush()
        producer.close()
    monkeypatch.setattr(kafka.codec, "zstd", None)  # this process can no longer read zstd

    trainer = Trainer(config.replace(trainer={"stop_when_idle_ms": 0}))
    runner = threading.Thread(target=trainer.run)
    t0 = time.monotonic()
    runner.start()
    try:
        wait_until(
            lambda: sum(stored_offsets(redis_client, config).values()) >= 800, 120, "the end"
        )
    finally:
        trainer.stop()
        runner.join(timeout=60)
    assert not runner.is_alive()
    print(f"\n800 records, one zstd batch skipped, in {time.monotonic() - t0:.1f} s")
    assert trainer.stats.events == 600
    assert trainer.metrics.undecodable.labels(k.events_topic)._value.get() >= 1
    expected = Counter(e["user"] for e in plain)
    rows = user_rows(redis_client, config, [*expected, "z0"])
    assert {u: int(rows[u][b"n"]) for u in expected} == dict(expected)
    assert rows["z0"] == {}  # its events are in the skipped batch

    monkeypatch.undo()  # read the dead letter back with zstd available again
    consumer = KafkaConsumer(
        k.dlq_topic,
        bootstrap_servers=k.bootstrap,
        auto_offset_reset="earliest",
        consumer_timeout_ms=10_000,
    )
    letters = [r for r in consumer]
    consumer.close()
    undecodable = [
        r for r in letters if dict(r.headers)["streamrec.dlq.reason"] == b"undecodable_batch"
    ]
    assert undecodable, [dict(r.headers) for r in letters]
    recovered: list[Any] = []
    for r in undecodable:
        h = dict(r.headers)
        assert h["streamrec.dlq.partition"] == b"0"
        assert int(h["streamrec.dlq.offset"]) >= 300 and int(h["streamrec.dlq.last_offset"]) < 500
        recovered += [orjson.loads(v) for v in values(r.value)]
    assert recovered == packed
