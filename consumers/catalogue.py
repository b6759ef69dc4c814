"""Catalogue reader: side features of users and items from the compacted catalogue topics.

Every trainer needs every item's features (items are shared), so this reader is not in the
consumer group: it assigns itself all partitions of `streamrec.items` and `streamrec.users`,
reads them from the beginning (compaction keeps them small) and keeps following. It runs on
its own thread and only hands records over through a queue; the trainer applies them between
batches, so the model is only ever touched by the trainer's thread.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass
from typing import Any

from kafka import TopicPartition

from streamrec.streaming import kafka_io
from streamrec.streaming.config import KafkaConfig
from streamrec.streaming.events import CatalogueRecord, Rejected, parse_catalogue
from streamrec.streaming.undecodable import GuardedPoll

log = logging.getLogger("streamrec.catalogue")


@dataclass(frozen=True)
class BadCatalogueRecord:
    letter: kafka_io.DeadLetter


class CatalogueReader(threading.Thread):
    def __init__(self, cfg: KafkaConfig, max_bytes: int = 64 * 1024) -> None:
        super().__init__(name="catalogue", daemon=True)
        self.cfg = cfg
        self.max_bytes = max_bytes
        self.records: queue.Queue[CatalogueRecord | BadCatalogueRecord] = queue.Queue()
        self.caught_up = threading.Event()  # set once the topics were read to their end
        self._stop_event = threading.Event()
        self.error: BaseException | None = None
        self.kinds = {cfg.items_topic: "item", cfg.users_topic: "user"}

    def stop(self) -> None:
        self._stop_event.set()

    def run(self) -> None:
        try:
            self._run()
        except BaseException as e:  # surfaced by the trainer, which owns the process
            self.error = e
            log.exception("catalogue reader failed")

    def _run(self) -> None:
        consumer = kafka_io.make_consumer(self.cfg, None, client_id="streamrec-catalogue")
        try:
            tps = self._partitions(consumer)
            consumer.assign(tps)
            consumer.seek_to_beginning(*tps)
            ends = consumer.end_offsets(tps)
            n = 0
            guard = GuardedPoll(consumer)
            while not self._stop_event.is_set():
                polled, bad = guard.poll(timeout_ms=self.cfg.poll_timeout_ms, max_records=4096)
                if bad is not None:
                    log.error("undecodable catalogue batch skipped: %s", bad.describe())
                    self.records.put(BadCatalogueRecord(bad.dead_letter()))
                for records in polled.values():
                    for r in records:
                        self.records.put(self._parse(r))
                        n += 1
                if not self.caught_up.is_set() and all(
                    consumer.position(tp) >= end for tp, end in ends.items()
                ):
                    log.info("catalogue read to its end: %d records", n)
                    self.caught_up.set()
        finally:
            consumer.close(autocommit=False, timeout_ms=2000)

    def _partitions(self, consumer: Any) -> list[TopicPartition]:
        deadline = time.monotonic() + 30
        tps: list[TopicPartition] = []
        for topic in self.kinds:
            parts = consumer.partitions_for_topic(topic)
            while parts is None and time.monotonic() < deadline:
                time.sleep(0.2)
                parts = consumer.partitions_for_topic(topic)
            if parts is None:
                raise RuntimeError(f"catalogue topic {topic} does not exist")
            tps.extend(TopicPartition(topic, p) for p in sorted(parts))
        return tps

    def _parse(self, r: Any) -> CatalogueRecord | BadCatalogueRecord:
        res = parse_catalogue(self.kinds[r.topic], r.key, r.value, r.timestamp, self.max_bytes)
        if isinstance(res, Rejected):
            return BadCatalogueRecord(kafka_io.DeadLetter.of(r, res))
        return res

    def pending(self) -> bool:
        return not self.records.empty()

    def drain(self) -> list[CatalogueRecord | BadCatalogueRecord]:
        out = []
        while True:
            try:
                out.append(self.records.get_nowait())
            except queue.Empty:
                return out

    def apply(self, model: Any, dead: list[kafka_io.DeadLetter]) -> dict[tuple[str, str], Any]:
        """Hand the records read so far to `model` (on the trainer's thread), bad ones to
        `dead`; return (kind, id) -> features of what changed."""
        changed: dict[tuple[str, str], Any] = {}
        for rec in self.drain():
            if isinstance(rec, BadCatalogueRecord):
                dead.append(rec.letter)
                continue
            if rec.kind == "item":
                model.set_item_features(rec.id, rec.features)
            else:
                model.set_user_features(rec.id, rec.features)
            changed[(rec.kind, rec.id)] = rec.features
        return changed
