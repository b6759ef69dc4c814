"""From polled Kafka records to a batch the model learns: when its window opened, its valid
events and dead letters, the offsets it covers, and which of its events Redis has not seen.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from streamrec.streaming import kafka_io
from streamrec.streaming.events import Event, EventRules, Rejected, parse
from streamrec.streaming.keys import offset_field
from streamrec.streaming.undecodable import Undecodable

Good = list[tuple[Any, Event]]  # (Kafka record, its event)


def arrival(polled: Mapping[Any, Sequence[Any]], now: float, wall_ms: float, since: float) -> float:
    """When the oldest record of a new batch arrived, on the monotonic clock: what the batch
    window (batch_max_wait_ms) counts from.

    Records that came while the loop was busy with the previous batch have already waited:
    counting from the poll that found them would make them wait a full window more. Their
    Kafka timestamps say how long, bounded by the loop's own clock: no earlier than the poll
    before (a clock skewed behind, or an old replayed stream, must not close every batch at
    once) and no later than now (a clock ahead).
    """
    oldest = min((recs[0].timestamp for recs in polled.values() if recs), default=wall_ms)
    age_s = max(0.0, (wall_ms - oldest) / 1000)
    return max(since, now - age_s)


def parse_records(
    records: Sequence[Any], rules: EventRules, now_ms: int, undecodable: Sequence[Undecodable]
) -> tuple[Good, list[kafka_io.DeadLetter], dict[str, int]]:
    """The batch's valid events, its dead letters (invalid records, then the undecodable
    batches skipped since the last batch) and the next offset of each partition it covers."""
    good: Good = []
    dead: list[kafka_io.DeadLetter] = []
    ends: dict[str, int] = {}
    for r in records:
        ends[offset_field(r.topic, r.partition)] = r.offset + 1
        res = parse(r.value, rules, r.timestamp, now_ms)
        if isinstance(res, Rejected):
            dead.append(kafka_io.DeadLetter.of(r, res))
        else:
            good.append((r, res))
    for u in undecodable:  # records of the batch may come before or after it
        ends[u.field] = max(ends.get(u.field, 0), u.next_offset)
        dead.append(u.dead_letter())
    return good, dead, ends


def past_stored(good: Good, stored: Mapping[str, int]) -> Good:
    """The events at or past the offsets Redis holds: events before them were learned to
    catch the model up, and only users with newer events get their rows rewritten."""
    floor: dict[tuple[str, int], int] = {}
    for r, _ in good:
        tp = (r.topic, r.partition)
        if tp not in floor:
            floor[tp] = stored.get(offset_field(*tp), 0)
    return [(r, e) for r, e in good if r.offset >= floor[(r.topic, r.partition)]]
