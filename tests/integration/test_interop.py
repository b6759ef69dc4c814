"""Interop: clients we did not write publish and read, and the pipeline treats them as ours.

Users' producers are rarely kafka-python: most are librdkafka (confluent-kafka for Python, Go
and .NET; kcat here) or Java, and they compress. Each test publishes synthetic events with such
a client, proves from the broker's own bytes what the client sent (codec of every record
batch, partition of every key, headers, payload bytes), then runs a trainer and checks it
learned every event once. redis-cli reads back what the trainer wrote.

The broker is read with hand-written Fetch v4 requests (`raw_partition`): a client library
would decompress before we could look, and only the record batch header says which codec the
producer used. Every subprocess runs with a deadline and is killed on the way out.
"""

from __future__ import annotations

import ast
import contextlib
import socket
import struct
import subprocess
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
import pytest
from kafka import KafkaAdminClient
from kafka.partitioner.default import murmur2
from kafka.record import MemoryRecords
from pipeline_helpers import (
    assert_counts_match,
    assert_no_nan_in_redis,
    run_trainer,
    stored_offsets,
)

import streamrec_devservices as services
from streamrec.consumers.config import Config
from streamrec.streaming import kafka_io
from streamrec.streaming.admin import create_topics
from streamrec.streaming.config import KafkaConfig, ServicesConfig
from streamrec.streaming.keys import Keys, decode_vector, offset_field
from streamrec.streaming.synthetic import SyntheticConfig, SyntheticStream

pytestmark = pytest.mark.integration

N_EVENTS = 5_000
CLIENT_TIMEOUT_S = 120.0
CONSOLE_PRODUCER = "org.apache.kafka.tools.ConsoleProducer"
# The codec is bits 0-2 of a record batch's attributes (Kafka's protocol, magic 2).
CODEC_IDS = {"none": 0, "gzip": 1, "snappy": 2, "lz4": 3, "zstd": 4}


# --------------------------------------------------------------------------- clients


@pytest.fixture(scope="session")
def kcat(services_config: ServicesConfig) -> str:
    """kcat on PATH, apt-installed by the project when missing (root, non-interactive)."""
    return services.ensure_kcat(services_config)


@pytest.fixture(scope="session")
def redis_cli(services_config: ServicesConfig) -> str:
    return services.ensure_redis_cli(services_config)


@pytest.fixture(scope="session")
def console_producer(services_config: ServicesConfig) -> list[str]:
    """Kafka's own Java console producer, from the jars the project downloads."""
    return services.kafka_tool_command(services_config, CONSOLE_PRODUCER)


def run_client(
    cmd: Sequence[str], stdin: bytes = b"", timeout_s: float = CLIENT_TIMEOUT_S
) -> subprocess.CompletedProcess[bytes]:
    """Run a client to completion within `timeout_s`; it is killed in any case on the way out,
    so a client that hangs (no broker, a prompt) fails the test instead of hanging the suite."""
    proc = subprocess.Popen(
        list(cmd), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        out, err = proc.communicate(stdin, timeout=timeout_s)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return subprocess.CompletedProcess(list(cmd), proc.returncode, out, err)


def kcat_produce(
    kcat: str, bootstrap: str, topic: str, lines: bytes, codec: str, *extra: str
) -> None:
    """`kcat -P` with keys before a tab, one message a line, the murmur2 partitioner."""
    res = run_client(
        [
            kcat, "-P", "-b", bootstrap, "-t", topic, "-z", codec, "-K", "\t",
            "-H", "source=kcat", "-X", "partitioner=murmur2_random", *extra,
        ],
        lines,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr.decode(errors="replace")


def console_produce(cmd: list[str], bootstrap: str, topic: str, lines: bytes, codec: str) -> None:
    """Kafka's ConsoleProducer reading `headers<TAB>key<TAB>value` lines from stdin."""
    res = run_client(
        [
            *cmd, "--bootstrap-server", bootstrap, "--topic", topic,
            "--compression-codec", codec,
            "--property", "parse.key=true", "--property", "key.separator=\t",
            "--property", "parse.headers=true", "--property", "headers.delimiter=\t",
        ],
        lines,
    )  # fmt: skip
    err = res.stderr.decode(errors="replace")
    # It exits 0 even when sends fail, logging them instead: any ERROR is a failure here.
    assert res.returncode == 0 and "ERROR" not in err, err


# --------------------------------------------------------------------------- events


def synthetic(n: int = N_EVENTS, seed: int = 7) -> list[dict[str, Any]]:
    cfg = SyntheticConfig(seed=seed, n_users=300, n_items=150, n_events=n)
    return list(SyntheticStream(cfg).events())


def key_of(event: Mapping[str, Any]) -> bytes:
    key = kafka_io.event_key(event)
    assert key is not None and b"\t" not in key and b"\n" not in key
    return key


def keyed_lines(events: Sequence[Mapping[str, Any]], headers: bytes | None = None) -> bytes:
    """One `[headers<TAB>]key<TAB>json` line per event; JSON from orjson has no raw tab or
    newline (it escapes control characters), so the lines split where we mean."""
    head = b"" if headers is None else headers + b"\t"
    return b"".join(head + key_of(e) + b"\t" + orjson.dumps(e) + b"\n" for e in events)


def java_partition(key: bytes, partitions: int) -> int:
    """Where Java's and kafka-python's default partitioner put a keyed record."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


# --------------------------------------------------------------------------- the broker's bytes


@dataclass(frozen=True)
class Record:
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]


@dataclass(frozen=True)
class Batch:
    codec: int
    records: list[Record]


@dataclass(frozen=True)
class PartitionLog:
    high_watermark: int
    batches: list[Batch]

    @property
    def records(self) -> list[Record]:
        return [r for b in self.batches for r in b.records]


def _kstring(s: str) -> bytes:
    raw = s.encode()
    return struct.pack(">h", len(raw)) + raw


def _recv(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("broker closed the connection mid-response")
        buf += chunk
    return bytes(buf)


def leaders(bootstrap: str, topic: str) -> dict[int, tuple[str, int]]:
    """partition -> (host, port) of its leader, from the admin API."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap.split(","), request_timeout_ms=10_000)
    try:
        brokers = {
            b["broker_id"]: (b["host"], b["port"]) for b in admin.describe_cluster()["brokers"]
        }
        (desc,) = admin.describe_topics([topic])
        return {p["partition_index"]: brokers[p["leader_id"]] for p in desc["partitions"]}
    finally:
        admin.close()


def raw_partition(
    leader: tuple[str, int], topic: str, partition: int, timeout_s: float = 30.0
) -> PartitionLog:
    """Every record batch of a partition as the broker stores it, via Fetch v4 (the oldest
    version Kafka 4 answers, the newest without fetch sessions or tagged fields).

    Topics keep the producer's codec (`compression.type=producer`, the default), so a batch's
    codec is the one the client chose, and only a batch header can show it: clients
    decompress before handing records over.
    """
    max_bytes = 32 << 20
    offset, corr, hw = 0, 0, 0
    batches: list[Batch] = []
    with socket.create_connection(leader, timeout=timeout_s) as sock:
        while True:
            corr += 1
            header = struct.pack(">hhi", 1, 4, corr) + _kstring("streamrec-interop-test")
            body = (
                struct.pack(">iiiib", -1, 100, 1, max_bytes, 0)  # replica, wait, min, max, isol.
                + struct.pack(">i", 1)
                + _kstring(topic)
                + struct.pack(">iiqi", 1, partition, offset, max_bytes)
            )
            sock.sendall(struct.pack(">i", len(header) + len(body)) + header + body)
            (size,) = struct.unpack(">i", _recv(sock, 4))
            resp = _recv(sock, size)
            got_corr, _throttle, n_topics = struct.unpack_from(">iii", resp, 0)
            assert got_corr == corr and n_topics == 1
            pos = 12 + 2 + struct.unpack_from(">h", resp, 12)[0]  # topic name
            n_parts, part, error, hw, _lso, n_aborted = struct.unpack_from(">iihqqi", resp, pos)
            assert n_parts == 1 and part == partition
            assert error == 0, f"fetch {topic}-{partition} at {offset}: error code {error}"
            pos += struct.calcsize(">iihqqi") + max(n_aborted, 0) * 16
            (n_bytes,) = struct.unpack_from(">i", resp, pos)
            blob = resp[pos + 4 : pos + 4 + max(n_bytes, 0)]
            records = MemoryRecords(blob)
            before = offset
            while (batch := records.next_batch()) is not None:
                recs = [Record(r.offset, r.key, r.value, list(r.headers)) for r in batch]
                batches.append(Batch(batch.compression_type, recs))
                offset = batch.next_offset
            if offset >= hw:
                return PartitionLog(hw, batches)
            assert offset > before, f"no progress fetching {topic}-{partition} at {offset}"


def topic_logs(bootstrap: str, topic: str) -> dict[int, PartitionLog]:
    return {
        p: raw_partition(leader, topic, p)
        for p, leader in sorted(leaders(bootstrap, topic).items())
    }


def assert_broker_holds(
    logs: Mapping[int, PartitionLog],
    events: Sequence[Mapping[str, Any]],
    codec: str,
    header: tuple[str, bytes],
) -> None:
    """The topic holds exactly `events`: each on its key's murmur2 partition, in publishing
    order there, byte for byte, with the client's header, in batches of `codec`."""
    n = len(logs)
    expected: dict[int, list[tuple[bytes, bytes]]] = {p: [] for p in logs}
    for e in events:
        key = key_of(e)
        expected[java_partition(key, n)].append((key, orjson.dumps(e)))
    for p, plog in logs.items():
        got = [(r.key, r.value) for r in plog.records]
        counts = (len(got), len(expected[p]), plog.high_watermark)
        assert len(set(counts)) == 1, f"partition {p}: records, expected, end offset {counts}"
        wrong = sum(g != x for g, x in zip(got, expected[p], strict=True))
        assert not wrong, f"partition {p}: {wrong} records differ from the publishing order"
        assert all(r.headers == [header] for r in plog.records), plog.records[0].headers
        want = CODEC_IDS[codec]
        codecs = {b.codec for b in plog.batches}
        # librdkafka sends a batch uncompressed when compressing would not shrink it (a
        # batch of a few records at the end of a send): allowed, but only for small ones.
        plain = [b for b in plog.batches if b.codec != want]
        assert codecs <= {want, CODEC_IDS["none"]}, f"partition {p}: batch codecs {codecs}"
        assert all(len(b.records) <= 8 for b in plain), (
            f"partition {p}: uncompressed batches of {[len(b.records) for b in plain]} records"
        )
        packed = sum(len(b.records) for b in plog.batches if b.codec == want)
        assert packed >= 0.9 * len(got), f"partition {p}: {packed} of {len(got)} records {codec}"
    print(
        f"\n{codec}: {sum(len(v.batches) for v in logs.values())} batches, "
        f"{sum(len(v.records) for v in logs.values())} records"
    )


# --------------------------------------------------------------------------- learning


def assert_learned(
    cfg: Config, r: Any, events: Sequence[Mapping[str, Any]], logs: Mapping[int, PartitionLog]
) -> None:
    """A trainer learns every published event once: offsets in Redis at the end of each
    partition, no dead letter, every user's count as published, nothing non-finite."""
    trainer = run_trainer(cfg, len(events))
    assert trainer.stats.events == len(events), trainer.stats
    assert trainer.stats.dead_letters == 0, dict(trainer.stats.dead_by_reason)
    ends = {offset_field(cfg.kafka.events_topic, p): log.high_watermark for p, log in logs.items()}
    assert stored_offsets(r, cfg) == ends
    assert sum(ends.values()) == len(events)
    (dlq,) = topic_logs(cfg.kafka.bootstrap, cfg.kafka.dlq_topic).values()
    assert dlq.high_watermark == 0, "records reached the dead-letter topic"
    assert_counts_match(r, cfg, events)
    assert assert_no_nan_in_redis(r, cfg) > 0


# --------------------------------------------------------------------------- tests


@pytest.mark.parametrize("codec", ["none", "gzip", "snappy", "lz4", "zstd"])
def test_kcat_events_are_learned(codec: str, kcat: str, config: Config, redis_client: Any) -> None:
    events = synthetic(seed=11)
    kcat_produce(
        kcat, config.kafka.bootstrap, config.kafka.events_topic, keyed_lines(events), codec
    )
    logs = topic_logs(config.kafka.bootstrap, config.kafka.events_topic)
    assert_broker_holds(logs, events, codec, ("source", b"kcat"))
    assert_learned(config, redis_client, events, logs)


def test_console_producer_events_are_learned(
    console_producer: list[str], config: Config, redis_client: Any
) -> None:
    events = synthetic(seed=12)
    lines = keyed_lines(events, headers=b"source:console-producer")
    console_produce(
        console_producer, config.kafka.bootstrap, config.kafka.events_topic, lines, "lz4"
    )
    logs = topic_logs(config.kafka.bootstrap, config.kafka.events_topic)
    assert_broker_holds(logs, events, "lz4", ("source", b"console-producer"))
    assert_learned(config, redis_client, events, logs)


@pytest.fixture
def wide_topic(kafka_bootstrap: str) -> Iterator[str]:
    """A 12-partition topic of its own: with 2, a wrong partitioner still agrees on half."""
    topic = f"t.{uuid.uuid4().hex[:10]}.partitioner"
    create_topics(kafka_bootstrap, {topic: 12})
    yield topic
    with contextlib.suppress(Exception):  # as conftest's `names`: a leftover is not a failure
        admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap, request_timeout_ms=10_000)
        try:
            admin.delete_topics([topic], timeout_ms=10_000)
        finally:
            admin.close()


def test_keys_land_on_the_same_partitions_from_every_client(
    kcat: str, console_producer: list[str], kafka_bootstrap: str, wide_topic: str
) -> None:
    """kafka-python, Java and kcat with `partitioner=murmur2_random` put each user on the same
    partition; kcat's default (librdkafka's CRC32 `consistent_random`) does not, which is why
    librdkafka producers must set it: a user's events would otherwise be split between two
    partitions, and their order lost, whenever two kinds of producer publish for them."""
    users = sorted({str(e["user"]) for e in synthetic(2_000, seed=13)})
    events = [{"user": u, "item": "i1", "type": "view"} for u in users]
    producer = kafka_io.make_producer(KafkaConfig(bootstrap=kafka_bootstrap))
    try:
        for e in events:
            producer.send(wide_topic, key=key_of(e), value=b"py", headers=[("c", b"py")])
        producer.flush()
    finally:
        producer.close()
    lines = keyed_lines(events)
    console_produce(
        console_producer, kafka_bootstrap, wide_topic, keyed_lines(events, b"c:java"), "none"
    )
    kcat_produce(kcat, kafka_bootstrap, wide_topic, lines, "none", "-H", "c=murmur2")
    res = run_client(
        [kcat, "-P", "-b", kafka_bootstrap, "-t", wide_topic, "-K", "\t", "-H", "c=default"],
        lines,
    )
    assert res.returncode == 0, res.stderr.decode(errors="replace")

    placed: dict[bytes, dict[bytes, int]] = {}
    for p, plog in topic_logs(kafka_bootstrap, wide_topic).items():
        for r in plog.records:
            tag = dict(r.headers)["c"]
            assert r.key is not None and r.key not in placed.setdefault(tag, {})
            placed[tag][r.key] = p
    assert set(placed) == {b"py", b"java", b"murmur2", b"default"}
    assert all(len(v) == len(users) for v in placed.values()), {
        k: len(v) for k, v in placed.items()
    }
    murmur = {key_of(e): java_partition(key_of(e), 12) for e in events}
    assert placed[b"py"] == murmur
    assert placed[b"java"] == murmur
    assert placed[b"murmur2"] == murmur
    differ = sum(placed[b"default"][k] != p for k, p in murmur.items())
    print(f"\nkcat's default partitioner placed {differ} of {len(murmur)} users elsewhere")
    assert differ > len(murmur) // 2


def _cli(redis_cli: str, url: str, *args: str, raw: bool = True) -> bytes:
    res = run_client([redis_cli, "-u", url, "--raw" if raw else "--no-raw", *args], timeout_s=30)
    assert res.returncode == 0 and not res.stderr, res.stderr.decode(errors="replace")
    return res.stdout


def test_redis_cli_reads_what_python_reads(
    kcat: str, redis_cli: str, config: Config, redis_client: Any
) -> None:
    """What the trainer writes is plain Redis: redis-cli gets the same vector bytes, the same
    JSON list and the same offsets as redis-py."""
    events = synthetic(1_000, seed=14)
    kcat_produce(
        kcat, config.kafka.bootstrap, config.kafka.events_topic, keyed_lines(events), "zstd"
    )
    run_trainer(config, len(events))
    keys, url = Keys(config.redis.prefix), config.redis.url
    users = sorted({str(e["user"]) for e in events})
    for user in users[:5]:
        want = redis_client.hget(keys.user(user), "vec")
        vec = decode_vector(want, config.model.dim)
        # --raw prints the bytes as they are and one newline; the bytes may hold newlines too.
        raw = _cli(redis_cli, url, "HGET", keys.user(user), "vec")
        assert raw.endswith(b"\n") and raw[:-1] == want
        # --no-raw quotes them as a C-style string literal ("\x8f..."), which Python reads.
        quoted = _cli(redis_cli, url, "HGET", keys.user(user), "vec", raw=False).strip()
        assert quoted.startswith(b'"') and ast.literal_eval("b" + quoted.decode("ascii")) == want
        np.testing.assert_array_equal(decode_vector(raw[:-1], config.model.dim), vec)

        recs = orjson.loads(_cli(redis_cli, url, "GET", keys.recs(user)))
        assert recs == orjson.loads(redis_client.get(keys.recs(user)))
        assert len(recs["items"]) > 0 and all(isinstance(i, str) for i, _ in recs["items"])

    lines = _cli(redis_cli, url, "HGETALL", keys.offsets(config.kafka.group_id)).splitlines()
    from_cli = {f.decode(): int(v) for f, v in zip(lines[::2], lines[1::2], strict=True)}
    assert from_cli == stored_offsets(redis_client, config)
    assert sum(from_cli.values()) == len(events)
