"""Real interaction logs in, validated events out, published to Kafka in timestamp order.

Why a loader of its own instead of `read_jsonl`: real logs (MovieLens, an export of an app's
events) come in other shapes, carry ratings rather than event types, and have bad rows. A
replay that silently dropped rows would make every figure computed on it lie, so every row
that cannot become an event is counted by reason, with its line number, in a `LoadReport`,
and every good row goes through the same `streaming.events.validate` as a Kafka record does:
what the replay publishes is exactly what the trainer would accept.

Formats: MovieLens `u.data` (tab-separated user item rating seconds), `ratings.dat` (`::`),
`ratings.csv` (header userId,movieId,rating,timestamp); any CSV with a header, and JSONL, with
a `ColumnMapping`. Ratings become event types through a `RatingMap`. Timestamps in seconds are
turned into milliseconds. A `.gz` suffix is read through gzip.
"""

from __future__ import annotations

import csv
import dataclasses
import gzip
import io
import itertools
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson

from streamrec.model.config import DEFAULT_EVENT_WEIGHTS
from streamrec.streaming.events import (
    INVALID_JSON,
    MISSING_FIELD,
    NOT_OBJECT,
    Event,
    EventRules,
    Rejected,
    validate,
)

__all__ = [
    "BAD_ENCODING",
    "BAD_NUMBER",
    "WRONG_FIELD_COUNT",
    "ColumnMapping",
    "LoadReport",
    "LoadedLog",
    "RatingMap",
    "ReplayStats",
    "detect_format",
    "load_csv",
    "load_jsonl",
    "load_log",
    "load_movielens",
    "publish_log",
]

# Reason codes of rows that fail before validation (validation adds `streaming.events.REASONS`).
WRONG_FIELD_COUNT = "wrong_field_count"
BAD_NUMBER = "bad_number"
BAD_ENCODING = "bad_encoding"

FORMATS = ("auto", "u.data", "ratings.dat", "ratings.csv", "csv", "jsonl")


# ----------------------------------------------------------------------------- mappings


@dataclass(frozen=True)
class RatingMap:
    """How a rating becomes an event: >= positive_min is a positive of `positive_type`,
    <= negative_max a `negative_type` (explicit negative), anything between a `neutral_type`
    event carrying the rating as its value (the model learns it as a soft label).

    The rating is kept as `value` on every event when `keep_value`, so nothing is lost.
    """

    positive_min: float = 4.0
    positive_type: str = "click"
    negative_max: float = 2.0
    negative_type: str = "dislike"
    neutral_type: str = "rating"
    keep_value: bool = True

    def __post_init__(self) -> None:
        if not (math.isfinite(self.positive_min) and math.isfinite(self.negative_max)):
            raise ValueError("positive_min and negative_max must be finite")
        if not self.negative_max < self.positive_min:
            raise ValueError(
                f"negative_max ({self.negative_max}) must be below positive_min "
                f"({self.positive_min})"
            )
        for name in ("positive_type", "negative_type", "neutral_type"):
            if not getattr(self, name):
                raise ValueError(f"{name} must not be empty")

    @property
    def types(self) -> frozenset[str]:
        return frozenset({self.positive_type, self.negative_type, self.neutral_type})

    def event(self, rating: float) -> tuple[str, float | None]:
        """(type, value) of a rating."""
        if rating >= self.positive_min:
            etype = self.positive_type
        elif rating <= self.negative_max:
            etype = self.negative_type
        else:
            return self.neutral_type, rating  # a neutral rating means nothing without its value
        return etype, rating if self.keep_value else None


@dataclass(frozen=True)
class ColumnMapping:
    """Which column (CSV header name or JSON key) holds each event field.

    `rating` set: the type comes from the RatingMap. Else `type` names the type column, or,
    when None, every row is a `default_type` event. `ts` None: rows get their row number as
    ts (file order is the time order). `ts_unit` is "s" or "ms".
    """

    user: str = "user"
    item: str = "item"
    ts: str | None = "ts"
    ts_unit: str = "ms"
    type: str | None = "type"
    value: str | None = "value"
    rating: str | None = None
    default_type: str = "view"
    user_features: str | None = "user_features"  # JSONL only: objects pass through
    item_features: str | None = "item_features"

    def __post_init__(self) -> None:
        if self.ts_unit not in ("s", "ms"):
            raise ValueError(f"ts_unit must be 's' or 'ms', got {self.ts_unit!r}")
        if not self.user or not self.item:
            raise ValueError("user and item columns must be named")

    @classmethod
    def parse(cls, spec: str, base: ColumnMapping | None = None) -> ColumnMapping:
        """From "user=userId,item=movieId,rating=rating,ts=timestamp,ts_unit=s"; an empty
        value ("type=") means "no such column"."""
        base = base or cls()
        names = {f.name for f in dataclasses.fields(cls)}
        changes: dict[str, Any] = {}
        for part in filter(None, (p.strip() for p in spec.split(","))):
            key, sep, val = part.partition("=")
            key = key.strip()
            if not sep or key not in names:
                raise ValueError(f"bad column mapping {part!r}; keys: {', '.join(sorted(names))}")
            changes[key] = val.strip() or None
        return dataclasses.replace(base, **changes)


#: MovieLens ratings files: ids, a 0.5..5 star rating and seconds since the epoch.
MOVIELENS_CSV = ColumnMapping(
    user="userId", item="movieId", ts="timestamp", ts_unit="s", type=None, value=None,
    rating="rating", user_features=None, item_features=None,
)  # fmt: skip


# ----------------------------------------------------------------------------- report


@dataclass
class LoadReport:
    """What a load did with every row: loaded, or bad with a reason and a line number."""

    path: str
    format: str
    lines: int = 0  # data rows read (header and blank lines not counted)
    loaded: int = 0
    bad: int = 0
    by_reason: dict[str, int] = field(default_factory=dict)
    first_bad: list[tuple[int, str, str]] = field(default_factory=list)  # (line, reason, error)
    max_examples: int = 20
    out_of_order: int = 0  # rows earlier than the row before them (the log is sorted on load)

    def add_bad(self, line: int, reason: str, error: str) -> None:
        self.bad += 1
        self.by_reason[reason] = self.by_reason.get(reason, 0) + 1
        if len(self.first_bad) < self.max_examples:
            self.first_bad.append((line, reason, error[:200]))

    @property
    def ok(self) -> bool:
        return self.bad == 0

    def summary(self) -> str:
        head = (
            f"{self.path} ({self.format}): {self.lines:,} rows, {self.loaded:,} events, "
            f"{self.bad:,} bad"
        )
        if self.out_of_order:
            head += f", {self.out_of_order:,} out of time order (sorted)"
        lines = [head]
        for reason, n in sorted(self.by_reason.items(), key=lambda p: (-p[1], p[0])):
            where = [str(ln) for ln, r, _ in self.first_bad if r == reason]
            shown = f" (lines {', '.join(where)}{', ...' if n > len(where) else ''})"
            lines.append(f"  {reason}: {n:,}{shown if where else ''}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "format": self.format,
            "lines": self.lines,
            "loaded": self.loaded,
            "bad": self.bad,
            "by_reason": dict(self.by_reason),
            "first_bad": [{"line": ln, "reason": r, "error": e} for ln, r, e in self.first_bad],
            "out_of_order": self.out_of_order,
        }


@dataclass
class LoadedLog:
    events: list[Event]  # sorted by ts, stable (file order among equal timestamps)
    report: LoadReport


# ----------------------------------------------------------------------------- reading


def _open_text(path: Path) -> IO[str]:
    """UTF-8 with undecodable bytes kept as surrogate escapes: a bad byte fails its own row
    (`bad_encoding`, with its line number) instead of the whole file, and is never replaced
    silently by U+FFFD."""
    raw: Any = gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")  # noqa: SIM115
    return io.TextIOWrapper(raw, encoding="utf-8", errors="surrogateescape", newline="")


def _has_surrogate_escape(s: str) -> bool:
    return any("\udc80" <= c <= "\udcff" for c in s)


def detect_format(path: str | Path) -> str:
    """By file name: MovieLens names, else the suffix (.csv, .jsonl/.json/.ndjson)."""
    name = Path(path).name.lower().removesuffix(".gz")
    if name == "u.data" or name.endswith(".data"):
        return "u.data"
    if name.endswith(".dat"):
        return "ratings.dat"
    if name == "ratings.csv":
        return "ratings.csv"
    if name.endswith(".csv"):
        return "csv"
    if name.endswith((".jsonl", ".ndjson", ".json")):
        return "jsonl"
    raise ValueError(f"cannot tell the format of {path}: pass --format")


def _default_rules(rating_map: RatingMap, extra_types: Iterable[str] = ()) -> EventRules:
    return EventRules(
        event_types=frozenset(DEFAULT_EVENT_WEIGHTS) | rating_map.types | frozenset(extra_types)
    )


def _number(text: Any) -> float | None:
    """A finite float from a field, or None."""
    if isinstance(text, bool):
        return None
    if isinstance(text, (int, float)):
        v = float(text)
    else:
        try:
            v = float(str(text).strip())
        except ValueError:
            return None
    return v if math.isfinite(v) else None


def _ts_ms(text: Any, unit: str) -> int | None:
    """Milliseconds from seconds or ms, integral or not; None when not a finite number."""
    if isinstance(text, int) and not isinstance(text, bool):
        return text * 1000 if unit == "s" else text
    s = str(text).strip()
    if s.lstrip("-").isdigit():
        n = int(s)
        return n * 1000 if unit == "s" else n
    v = _number(text)
    if v is None:
        return None
    return round(v * 1000) if unit == "s" else round(v)


class _Builder:
    """Turns raw fields into validated events, booking every failure in the report."""

    def __init__(
        self,
        report: LoadReport,
        mapping: ColumnMapping,
        rating_map: RatingMap,
        rules: EventRules,
        now_ms: int | None,
    ) -> None:
        self.report = report
        self.mapping = mapping
        self.rating_map = rating_map
        self.rules = rules
        self.now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        self.events: list[Event] = []
        self._last_ts: int | None = None

    def row(self, line: int, get: Callable[[str], Any], has: Callable[[str], bool]) -> None:
        """One data row; `get(column)` returns the raw field, `has(column)` says it exists."""
        m, rep = self.mapping, self.report
        rep.lines += 1
        obj: dict[str, Any] = {}
        for name in (m.user, m.item):
            if not has(name):
                rep.add_bad(line, MISSING_FIELD, f"missing column {name!r}")
                return
        obj["user"] = _id(get(m.user))
        obj["item"] = _id(get(m.item))
        if m.rating is not None:
            if not has(m.rating):
                rep.add_bad(line, MISSING_FIELD, f"missing column {m.rating!r}")
                return
            r = _number(get(m.rating))
            if r is None:
                rep.add_bad(line, BAD_NUMBER, f"rating {str(get(m.rating))[:40]!r}")
                return
            obj["type"], value = self.rating_map.event(r)
            if value is not None:
                obj["value"] = value
        else:
            if m.type is None:
                obj["type"] = m.default_type
            elif has(m.type):
                obj["type"] = get(m.type)  # a row without it is a missing_field dead row
            if m.value is not None and has(m.value):
                raw = get(m.value)
                if raw is not None and raw != "":
                    v = raw if isinstance(raw, (int, float)) else _number(raw)
                    if v is None:
                        rep.add_bad(line, BAD_NUMBER, f"value {str(raw)[:40]!r}")
                        return
                    obj["value"] = v
        if m.ts is None:
            obj["ts"] = rep.lines
        else:
            if not has(m.ts):
                rep.add_bad(line, MISSING_FIELD, f"missing column {m.ts!r}")
                return
            raw_ts = get(m.ts)
            ts = _ts_ms(raw_ts, m.ts_unit)
            if ts is None:
                rep.add_bad(line, BAD_NUMBER, f"timestamp {str(raw_ts)[:40]!r}")
                return
            obj["ts"] = ts
        for col, key in ((m.user_features, "user_features"), (m.item_features, "item_features")):
            if col is not None and has(col):
                obj[key] = get(col)
        for key in ("user", "item", "type"):
            v = obj.get(key)
            if isinstance(v, str) and _has_surrogate_escape(v):
                rep.add_bad(line, BAD_ENCODING, f"{key} is not valid UTF-8")
                return
        res = validate(obj, self.rules, default_ts=0, now_ms=self.now_ms)
        if isinstance(res, Rejected):
            rep.add_bad(line, res.reason, res.error)
            return
        if self._last_ts is not None and res.ts < self._last_ts:
            rep.out_of_order += 1
        self._last_ts = res.ts
        self.events.append(res)
        rep.loaded += 1

    def result(self) -> LoadedLog:
        if self.report.out_of_order:
            self.events.sort(key=lambda e: e.ts)  # stable: file order among equal timestamps
        return LoadedLog(self.events, self.report)


def _id(v: Any) -> Any:
    """Ids are strings; CSV fields are stripped, JSON ints pass to `validate` unchanged."""
    return v.strip() if isinstance(v, str) else v


def load_movielens(
    path: str | Path,
    rating_map: RatingMap | None = None,
    *,
    fmt: str = "auto",
    rules: EventRules | None = None,
    max_examples: int = 20,
    now_ms: int | None = None,
) -> LoadedLog:
    """A MovieLens ratings file: `u.data` (tab), `ratings.dat` (`::`) or `ratings.csv`."""
    path = Path(path)
    fmt = detect_format(path) if fmt == "auto" else fmt
    rating_map = rating_map or RatingMap()
    if fmt == "ratings.csv":
        return load_csv(
            path, MOVIELENS_CSV, rating_map, rules=rules, max_examples=max_examples, now_ms=now_ms
        )
    if fmt not in ("u.data", "ratings.dat"):
        raise ValueError(f"not a MovieLens format: {fmt!r}")
    sep = "\t" if fmt == "u.data" else "::"
    report = LoadReport(str(path), fmt, max_examples=max_examples)
    mapping = ColumnMapping(
        user="user", item="item", ts="ts", ts_unit="s", type=None, value=None, rating="rating"
    )
    b = _Builder(report, mapping, rating_map, rules or _default_rules(rating_map), now_ms)
    cols = ("user", "item", "rating", "ts")
    with _open_text(path) as fh:
        for line_no, line in enumerate(fh, 1):
            text = line.rstrip("\r\n")
            if not text.strip():
                continue
            parts = text.split(sep)
            if fmt == "u.data" and len(parts) != 4:
                parts = text.split()  # some copies use spaces
            if len(parts) != 4:
                report.lines += 1
                report.add_bad(line_no, WRONG_FIELD_COUNT, f"{len(parts)} fields, expected 4")
                continue
            row = dict(zip(cols, parts, strict=True))
            b.row(line_no, row.__getitem__, row.__contains__)
    return b.result()


def _getter(row: list[str], index: dict[str, int]) -> Callable[[str], str]:
    return lambda column: row[index[column]]


def load_csv(
    path: str | Path,
    mapping: ColumnMapping,
    rating_map: RatingMap | None = None,
    *,
    delimiter: str = ",",
    rules: EventRules | None = None,
    max_examples: int = 20,
    now_ms: int | None = None,
) -> LoadedLog:
    """A CSV file with a header row; columns named by `mapping`.

    A header without the user, item, ts or rating column named by the mapping is an error
    (nothing could load); one without the type or value column means every row is a
    `default_type` event without a value.
    """
    path = Path(path)
    rating_map = rating_map or RatingMap()
    fmt = "ratings.csv" if mapping is MOVIELENS_CSV else "csv"
    report = LoadReport(str(path), fmt, max_examples=max_examples)
    b = _Builder(report, mapping, rating_map, rules or _default_rules(rating_map), now_ms)
    with _open_text(path) as fh:
        reader = csv.reader(fh, delimiter=delimiter)
        header: list[str] | None = None
        for row in reader:
            line_no = reader.line_num
            if not row or not any(x.strip() for x in row):
                continue
            if header is None:
                header = [h.strip().lstrip("\ufeff") for h in row]
                required = [mapping.user, mapping.item, mapping.ts, mapping.rating]
                missing = [c for c in required if c is not None and c not in header]
                if missing:
                    raise ValueError(
                        f"{path}: header {header} lacks column(s) {missing}; "
                        "pass a column mapping (--columns)"
                    )
                # Optional columns the file does not have: every row gets the default type
                # and no value (a decision for the whole file, not a bad row each time).
                absent: dict[str, Any] = {
                    name: None
                    for name in ("type", "value", "user_features", "item_features")
                    if getattr(mapping, name) is not None and getattr(mapping, name) not in header
                }
                if absent:
                    mapping = dataclasses.replace(mapping, **absent)
                    b.mapping = mapping
                index = {h: j for j, h in enumerate(header)}
                continue
            if len(row) != len(header):
                report.lines += 1
                report.add_bad(
                    line_no, WRONG_FIELD_COUNT, f"{len(row)} fields, header has {len(header)}"
                )
                continue
            b.row(line_no, _getter(row, index), index.__contains__)
    return b.result()


def load_jsonl(
    path: str | Path,
    mapping: ColumnMapping | None = None,
    rating_map: RatingMap | None = None,
    *,
    rules: EventRules | None = None,
    max_examples: int = 20,
    now_ms: int | None = None,
) -> LoadedLog:
    """One JSON object per line; keys named by `mapping` (default: the wire schema)."""
    path = Path(path)
    mapping = mapping or ColumnMapping()
    rating_map = rating_map or RatingMap()
    report = LoadReport(str(path), "jsonl", max_examples=max_examples)
    b = _Builder(report, mapping, rating_map, rules or _default_rules(rating_map), now_ms)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        for line_no, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                obj = orjson.loads(line)
            except orjson.JSONDecodeError as e:
                report.lines += 1
                report.add_bad(line_no, INVALID_JSON, str(e))
                continue
            if not isinstance(obj, dict):
                report.lines += 1
                report.add_bad(line_no, NOT_OBJECT, f"expected an object, got {type(obj).__name__}")
                continue
            b.row(line_no, obj.__getitem__, obj.__contains__)
    return b.result()


def load_log(
    path: str | Path,
    fmt: str = "auto",
    mapping: ColumnMapping | None = None,
    rating_map: RatingMap | None = None,
    *,
    rules: EventRules | None = None,
    max_examples: int = 20,
    now_ms: int | None = None,
) -> LoadedLog:
    """Any supported format; `fmt="auto"` decides by the file name."""
    fmt = detect_format(path) if fmt == "auto" else fmt
    kw: dict[str, Any] = {"rules": rules, "max_examples": max_examples, "now_ms": now_ms}
    if fmt in ("u.data", "ratings.dat", "ratings.csv") and mapping is None:
        return load_movielens(path, rating_map, fmt=fmt, **kw)
    if fmt in ("csv", "ratings.csv"):
        return load_csv(path, mapping or ColumnMapping(), rating_map, **kw)
    if fmt == "jsonl":
        return load_jsonl(path, mapping, rating_map, **kw)
    raise ValueError(f"unknown format {fmt!r}; one of {', '.join(FORMATS)}")


# ----------------------------------------------------------------------------- publishing


@dataclass
class ReplayStats:
    events: int = 0
    seconds: float = 0.0
    slept_s: float = 0.0  # time spent waiting for the replay clock (speed factor)
    first_ts: int | None = None
    last_ts: int | None = None


def _in_order(events: Sequence[Event]) -> Sequence[Event]:
    if all(a.ts <= b.ts for a, b in itertools.pairwise(events)):
        return events
    return sorted(events, key=lambda e: e.ts)  # stable for equal ts


def publish_log(
    producer: Any,
    topic: str,
    events: Sequence[Event],
    *,
    speed: float | None = None,
    progress: bool = True,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> ReplayStats:
    """Send events in ts order (stable for equal ts), key = user; flush; raise the first
    delivery error.

    `speed` None: as fast as the producer goes. `speed` 60: an hour of the log takes a
    minute; each event leaves no earlier than (ts - first ts) / speed after the start.
    """
    if speed is not None and not (math.isfinite(speed) and speed > 0):
        raise ValueError(f"speed must be a positive number, got {speed}")
    ordered = _in_order(events)
    stats = ReplayStats()
    if not ordered:
        return stats
    errors: list[BaseException] = []
    it: Iterable[Event] = ordered
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(ordered, total=len(ordered), unit="ev", desc=f"replay {topic}", mininterval=0.5)
        it = bar
    t0 = clock()
    ts0 = ordered[0].ts
    stats.first_ts, stats.last_ts = ts0, ordered[-1].ts
    for e in it:
        if speed is not None:
            wait = t0 + (e.ts - ts0) / 1000.0 / speed - clock()
            if wait > 0.001:
                sleep(wait)
                stats.slept_s += wait
        fut = producer.send(topic, key=e.user.encode("utf-8", "surrogatepass"), value=e.to_json())
        fut.add_errback(errors.append)
        stats.events += 1
        if errors:
            break
    producer.flush()
    if bar is not None:
        bar.close()
    stats.seconds = clock() - t0
    if errors:
        raise RuntimeError(f"publishing to {topic} failed: {errors[0]!r}")
    return stats
