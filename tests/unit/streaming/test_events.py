"""Every validation rule of streaming.events has its reason code checked here."""

from __future__ import annotations

import pytest

from streamrec.streaming import events as ev
from streamrec.streaming.events import Event, EventRules, Rejected, parse

NOW = 1_780_000_000_000
RULES = EventRules(event_types={"view", "click", "rating", "dislike"}, max_ts_skew_ms=60_000)


def p(raw: bytes | None) -> Event | Rejected:
    return parse(raw, RULES, default_ts=NOW - 5, now_ms=NOW)


def reason(raw: bytes | None) -> str:
    res = p(raw)
    assert isinstance(res, Rejected), res
    assert res.error  # a human-readable explanation always comes with the code
    return res.reason


def test_valid_event_with_features() -> None:
    res = p(
        b'{"user": 42, "item": "i1", "type": "rating", "value": 4.5, "ts": 1000,'
        b' "user_features": {"country": "DE"}, "item_features": {"tags": ["a", "b"]}}'
    )
    assert res == Event("42", "i1", "rating", 4.5, 1000, {"country": "DE"}, {"tags": ["a", "b"]})


def test_ts_defaults_to_record_timestamp() -> None:
    res = p(b'{"user":"u","item":"i","type":"view"}')
    assert isinstance(res, Event) and res.ts == NOW - 5 and res.value is None


def test_roundtrip_to_json() -> None:
    e = Event("u", "i", "rating", 3.0, 7, {"c": "x"}, None)
    assert p(e.to_json()) == e


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (None, ev.TOMBSTONE),
        (b"\x00\xff garbage", ev.INVALID_JSON),
        (b'{"user":"u","item":"i","type":"view"', ev.INVALID_JSON),
        (b'{"user":"u","item":"i","type":"view","value":NaN}', ev.INVALID_JSON),
        (b'{"user":"u","item":"i","type":"view","value":Infinity}', ev.INVALID_JSON),
        (b'{"user":"u","item":"i","type":"view","value":1e400}', ev.INVALID_JSON),
        (b'{"user":"\\ud800","item":"i","type":"view"}', ev.INVALID_JSON),
        (b"[" * 5000 + b"]" * 5000, ev.INVALID_JSON),
        (b"[1,2]", ev.NOT_OBJECT),
        (b'"text"', ev.NOT_OBJECT),
        (b'{"user":"u","user":"v","item":"i","type":"view"}', ev.DUPLICATE_KEY),
        (b'{"user" :"u", "user" :"v","item":"i","type":"view"}', ev.DUPLICATE_KEY),
        (b'{"user":"a\\"b","item":"i","type":"view","item":"j"}', ev.DUPLICATE_KEY),
        (b'{"item":"i","type":"view"}', ev.MISSING_FIELD),
        (b'{"user":"u","type":"view"}', ev.MISSING_FIELD),
        (b'{"user":"u","item":"i"}', ev.MISSING_FIELD),
        (b'{"user":true,"item":"i","type":"view"}', ev.WRONG_TYPE),
        (b'{"user":1.5,"item":"i","type":"view"}', ev.WRONG_TYPE),
        (b'{"user":"u","item":["i"],"type":"view"}', ev.WRONG_TYPE),
        (b'{"user":"u","item":"i","type":7}', ev.WRONG_TYPE),
        (b'{"user":"u","item":"i","type":"view","value":"5"}', ev.WRONG_TYPE),
        (b'{"user":"u","item":"i","type":"view","ts":"yesterday"}', ev.WRONG_TYPE),
        (b'{"user":"","item":"i","type":"view"}', ev.ID_EMPTY),
        (b'{"user":"' + b"x" * 257 + b'","item":"i","type":"view"}', ev.ID_TOO_LONG),
        (b'{"user":"u","item":"a\\u0000b","type":"view"}', ev.CONTROL_CHAR),
        (b'{"user":"u\\n","item":"i","type":"view"}', ev.CONTROL_CHAR),
        (b'{"user":"u","item":"i","type":"teleport"}', ev.UNKNOWN_TYPE),
        (b'{"user":"u","item":"i","type":"view","value":1e308}', ev.OUT_OF_RANGE),
        (b'{"user":"u","item":"i","type":"view","value":-2e6}', ev.OUT_OF_RANGE),
        (b'{"user":"u","item":"i","type":"rating"}', ev.MISSING_VALUE),
        (b'{"user":"u","item":"i","type":"view","ts":-1}', ev.TS_OUT_OF_RANGE),
        (b'{"user":"u","item":"i","type":"view","ts":253402300799000}', ev.TS_OUT_OF_RANGE),
        (b'{"user":"u","item":"i","type":"view","user_features":["DE"]}', ev.BAD_FEATURES),
        (b'{"user":"u","item":"i","type":"view","user_features":{"c":1}}', ev.BAD_FEATURES),
        (b'{"user":"u","item":"i","type":"view","item_features":{"t":["a",2]}}', ev.BAD_FEATURES),
        (b'{"user":"u","item":"i","type":"view","item_features":{"":"x"}}', ev.BAD_FEATURES),
    ],
)
def test_rule(raw: bytes | None, code: str) -> None:
    assert code in ev.REASONS
    assert reason(raw) == code


def test_too_large() -> None:
    raw = b'{"user":"u","item":"i","type":"view","pad":"' + b"x" * 70_000 + b'"}'
    assert reason(raw) == ev.TOO_LARGE


def test_id_of_256_bytes_is_accepted_and_unicode_counts_bytes() -> None:
    ok = b'{"user":"' + b"x" * 256 + b'","item":"i","type":"view"}'
    assert isinstance(p(ok), Event)
    too_long = ('{"user":"' + "é" * 129 + '","item":"i","type":"view"}').encode()  # 258 bytes
    assert reason(too_long) == ev.ID_TOO_LONG


def test_ts_in_the_near_future_and_the_distant_past_is_accepted() -> None:
    old = p(b'{"user":"u","item":"i","type":"view","ts":874965758000}')  # MovieLens, 1997
    assert isinstance(old, Event)
    soon = p(b'{"user":"u","item":"i","type":"view","ts":%d}' % (NOW + 59_000))
    assert isinstance(soon, Event)


def test_string_values_with_colons_and_escapes_are_not_duplicates() -> None:
    res = p(b'{"user":"a\\":b","item":"x\\":","type":"view","ts":5}')
    assert isinstance(res, Event) and res.user == 'a":b'


def test_integer_ids_are_normalised_even_beyond_int64() -> None:
    res = p(b'{"user":123456789012345678901234567890,"item":-5,"type":"view"}')
    # orjson reads integers beyond 64 bits as floats: those are rejected, never truncated
    assert isinstance(res, Rejected) and res.reason == ev.WRONG_TYPE
    res = p(b'{"user":9223372036854775807,"item":-5,"type":"view"}')
    assert isinstance(res, Event) and res.user == "9223372036854775807" and res.item == "-5"


def test_catalogue_records() -> None:
    from streamrec.streaming.events import CatalogueRecord, parse_catalogue

    ok = parse_catalogue("item", b"i1", b'{"id":"i1","features":{"genre":"g1"}}', 5)
    assert ok == CatalogueRecord("item", "i1", {"genre": "g1"}, 5)
    keyed = parse_catalogue("user", b"u1", b'{"features":{"country":"DE"}}', 5)
    assert isinstance(keyed, CatalogueRecord) and keyed.id == "u1"
    deletion = parse_catalogue("item", b"i1", None, 5)
    assert deletion == CatalogueRecord("item", "i1", None, 5)
    for key, raw, code in [
        (None, None, ev.TOMBSTONE),
        (b"i1", b"{", ev.INVALID_JSON),
        (b"i1", b'{"id":"i2"}', ev.WRONG_TYPE),
        (None, b'{"features":{}}', ev.MISSING_FIELD),
        (b"i1", b'{"features":{"genre":7}}', ev.BAD_FEATURES),
        (b"\xff", b"{}", ev.INVALID_JSON),
    ]:
        res = parse_catalogue("item", key, raw, 5)
        assert isinstance(res, Rejected) and res.reason == code, (key, raw, res)
