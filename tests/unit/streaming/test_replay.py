"""Replay loaders and publishing: small files written here, bad rows with line numbers.

Every loader must account for every row (loaded, or bad with a reason and its line), turn
ratings into event types through the RatingMap, seconds into milliseconds, and hand back the
log in timestamp order, stable for equal timestamps. Publishing keeps that order, keys by
user, and paces by the speed factor (tested with a fake clock, and once against real Kafka).
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import orjson
import pytest

from streamrec.consumers.cli import run
from streamrec.consumers.config import Config
from streamrec.streaming.events import ID_EMPTY, INVALID_JSON, MISSING_FIELD, UNKNOWN_TYPE
from streamrec.streaming.replay import (
    BAD_ENCODING,
    BAD_NUMBER,
    WRONG_FIELD_COUNT,
    ColumnMapping,
    RatingMap,
    detect_format,
    load_csv,
    load_jsonl,
    load_log,
    load_movielens,
    publish_log,
)

# 1997-09-20 and friends: MovieLens 100k timestamps must validate.
ML_TS = 881250949


def write(path: Path, text: str | bytes) -> Path:
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return path


def test_u_data_types_values_ms_and_bad_rows(tmp_path: Path) -> None:
    p = write(
        tmp_path / "u.data",
        f"196\t242\t3\t{ML_TS}\n"  # line 1: neutral -> rating 3
        f"186\t302\t5\t{ML_TS - 10}\n"  # line 2: positive, earlier -> sorted first
        "22\t377\t1\n"  # line 3: 3 fields
        f"244\t51\tfive\t{ML_TS}\n"  # line 4: rating not a number
        "\n"  # blank: not a row
        f"166\t346\t1\t{ML_TS + 5}\n"  # line 6: dislike
        f" \t346\t4\t{ML_TS}\n"  # line 7: empty user id
        f"298\t474\t4\t88125x\n",  # line 8: bad timestamp
    )
    got = load_movielens(p)
    r = got.report
    assert (r.lines, r.loaded, r.bad) == (7, 3, 4)
    assert r.by_reason == {WRONG_FIELD_COUNT: 1, BAD_NUMBER: 2, ID_EMPTY: 1}
    assert [(ln, reason) for ln, reason, _ in r.first_bad] == [
        (3, WRONG_FIELD_COUNT),
        (4, BAD_NUMBER),
        (7, ID_EMPTY),
        (8, BAD_NUMBER),
    ]
    assert r.out_of_order == 1
    ev = got.events
    assert [(e.user, e.item, e.type, e.value) for e in ev] == [
        ("186", "302", "click", 5.0),
        ("196", "242", "rating", 3.0),
        ("166", "346", "dislike", 1.0),
    ]
    assert [e.ts for e in ev] == [(ML_TS - 10) * 1000, ML_TS * 1000, (ML_TS + 5) * 1000]
    assert "wrong_field_count: 1 (lines 3)" in r.summary()
    assert r.to_dict()["first_bad"][0] == {
        "line": 3,
        "reason": WRONG_FIELD_COUNT,
        "error": "3 fields, expected 4",
    }


def test_ratings_dat_and_ratings_csv(tmp_path: Path) -> None:
    dat = write(tmp_path / "ratings.dat", "1::1193::5::978300760\n1::661::3::978302109\n2::3\n")
    got = load_log(dat)
    assert got.report.format == "ratings.dat"
    assert [(e.item, e.type) for e in got.events] == [("1193", "click"), ("661", "rating")]
    assert got.report.first_bad[0][:2] == (3, WRONG_FIELD_COUNT)

    csv_path = write(
        tmp_path / "ratings.csv",
        "userId,movieId,rating,timestamp\n1,1,4.0,964982703\n1,3,2.5,964981247\n1,6\n",
    )
    got = load_log(csv_path)
    assert got.report.format == "ratings.csv"
    # 2.5 is between the thresholds: a rating event with its value; sorted by ts
    assert [(e.item, e.type, e.value, e.ts) for e in got.events] == [
        ("3", "rating", 2.5, 964981247000),
        ("1", "click", 4.0, 964982703000),
    ]
    assert got.report.by_reason == {WRONG_FIELD_COUNT: 1}
    assert got.report.first_bad[0][0] == 4


def test_rating_map_is_configurable_and_checked() -> None:
    m = RatingMap(positive_min=3.5, positive_type="purchase", negative_max=1.0, keep_value=False)
    assert m.event(4.0) == ("purchase", None)
    assert m.event(3.0) == ("rating", 3.0)  # a neutral rating always keeps its value
    assert m.event(1.0) == ("dislike", None)
    with pytest.raises(ValueError, match="below"):
        RatingMap(positive_min=2.0, negative_max=2.0)


def test_generic_csv_with_mapping_and_missing_columns(tmp_path: Path) -> None:
    p = write(
        tmp_path / "log.csv",
        "uid;sku;kind;when\n"
        "a;x;view;1700000000\n"
        "b;y;teleport;1700000001\n"  # line 3: unknown event type
        "c;z;click;1700000000.5\n",  # fractional seconds -> ms
    )
    mapping = ColumnMapping.parse("user=uid,item=sku,type=kind,ts=when,ts_unit=s,value=")
    got = load_csv(p, mapping, delimiter=";")
    assert [(e.user, e.type, e.ts) for e in got.events] == [
        ("a", "view", 1_700_000_000_000),
        ("c", "click", 1_700_000_000_500),
    ]
    assert got.report.first_bad[0][:2] == (3, UNKNOWN_TYPE)
    # a header without the type column: every row is a default_type event
    p2 = write(tmp_path / "plain.csv", "user,item,ts\nu,i,5\n")
    assert [e.type for e in load_csv(p2, ColumnMapping()).events] == ["view"]
    with pytest.raises(ValueError, match="lacks column"):
        load_csv(write(tmp_path / "bad.csv", "who,what\nu,i\n"), ColumnMapping())
    with pytest.raises(ValueError, match="bad column mapping"):
        ColumnMapping.parse("usr=uid")


def test_jsonl_bad_rows_and_features(tmp_path: Path) -> None:
    lines = [
        b'{"user": "a", "item": "x", "type": "view", "ts": 10, "user_features": {"c": "DE"}}',
        b"{not json",  # line 2
        b"[1, 2]",  # line 3: not an object
        b'{"user": "b", "item": "y", "ts": 11}',  # line 4: no type
        b'{"user": 7, "item": "z", "type": "rating", "value": 4.5, "ts": 12}',
    ]
    p = write(tmp_path / "ev.jsonl.gz", gzip.compress(b"\n".join(lines) + b"\n"))
    got = load_log(p)
    assert got.report.format == "jsonl"
    assert [(ln, reason) for ln, reason, _ in got.report.first_bad] == [
        (2, INVALID_JSON),
        (3, "not_object"),
        (4, MISSING_FIELD),
    ]
    assert got.events[0].user_features == {"c": "DE"}
    assert got.events[1].user == "7" and got.events[1].value == 4.5


def test_bad_utf8_is_a_bad_row_not_a_failed_file(tmp_path: Path) -> None:
    p = write(tmp_path / "u.data", b"1\t2\t5\t881250949\n\xff\xfe\t2\t5\t881250949\n")
    got = load_movielens(p)
    assert got.report.loaded == 1
    assert got.report.first_bad == [(2, BAD_ENCODING, "user is not valid UTF-8")]


def test_equal_timestamps_keep_file_order(tmp_path: Path) -> None:
    rows = [("u1", "a", 20), ("u2", "b", 10), ("u3", "c", 20), ("u4", "d", 10)]
    p = write(
        tmp_path / "e.jsonl",
        "".join(
            json.dumps({"user": u, "item": i, "type": "view", "ts": t}) + "\n" for u, i, t in rows
        ),
    )
    got = load_jsonl(p)
    assert [e.item for e in got.events] == ["b", "d", "a", "c"]


def test_detect_format() -> None:
    assert detect_format("ml-100k/u.data") == "u.data"
    assert detect_format("ml-1m/ratings.dat") == "ratings.dat"
    assert detect_format("ml-25m/ratings.csv.gz") == "ratings.csv"
    assert detect_format("x.ndjson") == "jsonl"
    with pytest.raises(ValueError):
        detect_format("x.parquet")


# ----------------------------------------------------------------------------- publishing


class FakeFuture:
    def add_errback(self, fn: Any) -> FakeFuture:
        return self


class FakeProducer:
    def __init__(self, clock: list[float]) -> None:
        self.sent: list[tuple[float, bytes, dict[str, Any]]] = []
        self.clock = clock

    def send(self, topic: str, key: bytes, value: bytes) -> FakeFuture:
        self.sent.append((self.clock[0], key, orjson.loads(value)))
        return FakeFuture()

    def flush(self) -> None:
        pass


def test_publish_in_order_keyed_and_paced(tmp_path: Path) -> None:
    p = write(
        tmp_path / "u.data",
        f"1\ta\t5\t{ML_TS + 120}\n2\tb\t5\t{ML_TS}\n3\tc\t5\t{ML_TS + 60}\n4\td\t5\t{ML_TS}\n",
    )
    events = load_movielens(p).events
    now = [100.0]

    def sleep(s: float) -> None:
        now[0] += s

    prod = FakeProducer(now)
    stats = publish_log(
        prod, "t", events, speed=60.0, progress=False, clock=lambda: now[0], sleep=sleep
    )
    # order by ts, file order for the two at ML_TS; one minute of log = one second at 60x
    assert [(k, v["item"]) for _, k, v in prod.sent] == [
        (b"2", "b"),
        (b"4", "d"),
        (b"3", "c"),
        (b"1", "a"),
    ]
    assert [round(t - 100.0, 6) for t, _, _ in prod.sent] == [0.0, 0.0, 1.0, 2.0]
    assert stats.events == 4 and stats.slept_s == pytest.approx(2.0)
    fast = FakeProducer(now)
    publish_log(fast, "t", events, progress=False, clock=lambda: now[0], sleep=sleep)
    assert len({t for t, _, _ in fast.sent}) == 1  # no speed: no waiting
    with pytest.raises(ValueError):
        publish_log(fast, "t", events, speed=0.0, progress=False)


def test_cli_dry_run_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = write(tmp_path / "u.data", f"1\t2\t5\t{ML_TS}\n")
    assert run(["replay", str(good), "--dry-run"], Config()) == 0
    bad = write(tmp_path / "b.data", "1\t2\n")
    report = tmp_path / "r.json"
    assert run(["replay", str(bad), "--dry-run", "--report-json", str(report)], Config()) == 1
    assert json.loads(report.read_text())["by_reason"] == {WRONG_FIELD_COUNT: 1}
    assert run(["replay", str(tmp_path / "missing.data"), "--dry-run"], Config()) == 2
    assert run(["replay", str(good), "--dry-run", "--speed", "-1"], Config()) == 2
    assert "wrong_field_count: 1 (lines 1)" in capsys.readouterr().err


def test_replay_to_kafka(config: Any, tmp_path: Path) -> None:
    """End to end: the CLI publishes a MovieLens file; every record arrives, keyed by user,
    in time order within each user's partition."""
    from streamrec.streaming import kafka_io

    rows = "".join(
        f"{u}\t{i}\t{1 + (u + i) % 5}\t{ML_TS + 10 * i}\n" for u in range(4) for i in range(5)
    )
    p = write(tmp_path / "u.data", rows)
    assert run(["replay", str(p), "--no-progress"], config) == 0
    from kafka import TopicPartition

    consumer = kafka_io.make_consumer(config.kafka, None, consumer_timeout_ms=5000)
    try:
        topic = config.kafka.events_topic
        parts = consumer.partitions_for_topic(topic) or set()
        consumer.assign([TopicPartition(topic, p) for p in sorted(parts)])
        got = [(r.key, orjson.loads(r.value)) for r in consumer]
    finally:
        consumer.close()
    assert len(got) == 20
    for key, ev in got:
        assert key == ev["user"].encode()
    for u in range(4):
        ts = [ev["ts"] for _, ev in got if ev["user"] == str(u)]
        assert ts == sorted(ts) and len(ts) == 5
