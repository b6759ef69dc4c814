"""The trainer: Kafka events in, one TF mini-batch step per batch, the new state out to Redis.

Loop: poll until a batch closes (N events or T ms), parse (bad records -> dead-letter topic,
acknowledged first), learn, write every changed row in one fenced Redis transaction together
with the next offsets, then commit to Kafka (for lag only; Redis holds the truth), and
checkpoint the model now and then. Kafka is the log, a checkpoint is a snapshot, Redis a view.

This module is the loop and the order of its steps; each step's work is in a module of its own:
streaming/group.py (the group consumer and its kafka-python work-arounds), batches.py (records
to a batch), batch_write.py (what a batch writes to Redis), writer.py (the write in flight),
lists.py (due lists and the ranking thread), checkpoints.py, outage.py (waiting out Redis and
Kafka), lease.py (who leads the group) and lifecycle.py (states, probes, stopping).
"""

from __future__ import annotations

import functools
import gc
import logging
import os
import socket
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from kafka import KafkaProducer, TopicPartition
from redis.exceptions import RedisError

from streamrec.consumers import batch_write, batches
from streamrec.consumers.catalogue import CatalogueReader
from streamrec.consumers.checkpoints import Checkpoints, folder_for
from streamrec.consumers.config import Config
from streamrec.consumers.lease import Lease, StandDown
from streamrec.consumers.lifecycle import ACTIVE, STANDBY, STARTING, STOPPING, Lifecycle
from streamrec.consumers.lists import DRAIN_S, DueLists
from streamrec.consumers.live_quality import LiveQuality, Pending
from streamrec.consumers.metrics import TrainerMetrics, TrainerStats
from streamrec.consumers.outage import SHUTDOWN_RESERVE_S, Outage
from streamrec.consumers.writer import BatchWriter
from streamrec.model.base import CheckpointMismatch
from streamrec.model.eval_state import PositiveRule
from streamrec.streaming import kafka_io
from streamrec.streaming.events import Event, EventRules
from streamrec.streaming.group import GroupConsumer
from streamrec.streaming.keys import Keys, offset_field
from streamrec.streaming.store import (
    RedisStore,
    connect,
)
from streamrec.streaming.undecodable import Undecodable

log = logging.getLogger("streamrec.trainer")


def configure_tensorflow(threads: int) -> None:
    """Pin TF's thread pools before any op runs, and numpy's BLAS to one thread: defaults
    oversubscribe 2 cores next to the Kafka and Redis clients."""
    from streamrec.model.runtime import configure_threads

    configure_threads(intra_op=threads, inter_op=threads, blas=1)


class Trainer:
    """One trainer process. Construct, then `run()`; `stop()` (or SIGTERM) ends it cleanly.

    Only the holder of the group's lease consumes; others stand by (see consumers/lease.py).
    """

    def __init__(
        self,
        cfg: Config,
        *,
        model: Any | None = None,
        on_batch: Callable[[TrainerStats], None] | None = None,
        owner: str | None = None,
        life: Lifecycle | None = None,
    ) -> None:
        self.cfg = cfg
        # its state for /ready and /live; its stop request ends the loop (SIGTERM, stop())
        self.life = life or Lifecycle(cfg.trainer.stop_grace_ms / 1000)
        self.keys = Keys(cfg.redis.prefix)
        self.redis = connect(cfg.redis)
        self.store = RedisStore(self.redis, self.keys, cfg.kafka.group_id)
        self.rules = event_rules(cfg)
        self.ckpt_dir = folder_for(
            cfg.trainer.checkpoint_dir, cfg.redis.prefix + cfg.kafka.group_id
        )
        self.checkpoints = Checkpoints(self.ckpt_dir, cfg.trainer)
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.lease = Lease(
            self.redis,
            f"{cfg.redis.prefix}lease:{cfg.kafka.group_id}",
            self.owner,
            cfg.trainer.lease_ttl_ms,
        )
        self.stats = TrainerStats()
        self.metrics = TrainerMetrics()
        self.on_batch = on_batch
        self.life.on_change = self.metrics.set_state
        self._stop = self.life.stop_requested
        self._given_model = model
        self.model: Any = None
        # next offset to read, per "topic:partition": what the model has learned / Redis holds
        self.model_offsets: dict[str, int] = {}
        self.stored_offsets: dict[str, int] = {}
        self.user_counts: Counter[str] = Counter()
        # ids the model evicted, to delete from Redis with the next write
        self._evicted_users: list[str] = []
        self._evicted_items: list[str] = []
        self._lag: dict[str, int] = {}  # records behind each partition's end, at its last batch
        self.lists = DueLists(
            cfg, self.metrics, self.stats, caught_up=self._caught_up, read_seen=self._read_seen
        )
        self._unwritten = False  # the model learned a batch Redis has not received
        self._matrix_written_at: float | None = None
        self._matrix_dirty = False
        self.group = GroupConsumer(
            cfg.kafka,
            on_assigned=self.on_assigned,
            on_revoked=self.on_revoked,
            before_rebalance=self.flush_writes,
            on_rejoin=self.metrics.rejoins.inc,
            log=log,
        )
        # batches skipped as undecodable since the last processed batch: dead-lettered and
        # counted as consumed with it (streaming/undecodable.py)
        self._undecodable: list[Undecodable] = []
        self.producer: KafkaProducer | None = None
        self.catalogue: CatalogueReader | None = None
        self.outage = Outage(self.life, self.lease.lost, cfg.redis, cfg.kafka)
        self.writes = BatchWriter(self.store, self.outage, self.metrics, self.stats)
        self._announced_ready = False  # the "ready" line, once per time this trainer leads
        tc = cfg.trainer
        self.quality = LiveQuality(
            sample_rate=tc.quality_sample_rate,
            max_per_batch=tc.quality_max_per_batch,
            window=tc.quality_window,
            served_window=tc.quality_served_window,
            positives=PositiveRule.from_model_config(cfg.model),
        )
        # known users' sampled queries of the last batch, scored once its write is submitted
        self._live_pending: Pending | None = None
        self._served_published_at = 0.0
        self._served_changed = False  # lists or popularity changed since the last publish

    @property
    def recs_due(self) -> dict[str, None]:
        """Users whose precomputed list is older than their vector, least recently refreshed
        first."""
        return self.lists.due

    # -- lifecycle -------------------------------------------------------------------------

    def stop(self, *_: Any) -> None:
        self.life.request_stop()

    def run(self) -> TrainerStats:
        """Stand by until this trainer holds the lease, then train until stopped."""
        from streamrec.streaming.admin import create_topics

        k = self.cfg.kafka
        # Credentials first: a wrong Redis password stops the trainer here, before its threads.
        try:
            self.redis.ping()
        except RedisError as e:
            self.outage.check_denied(e)  # an outage is waited out later, like any other
        create_topics(
            k,
            {k.events_topic: k.partitions, k.dlq_topic: 1, k.items_topic: 1, k.users_topic: 1},
            compacted={k.items_topic, k.users_topic},
        )
        if self.cfg.trainer.metrics_port:
            from streamrec.consumers import probes

            port = probes.serve(self.metrics.registry, self.life, self.cfg.trainer.metrics_port)
            log.info(
                "metrics and probes on http://0.0.0.0:%d (/metrics, /ready, /live)",
                port.server_port,
            )
        self.producer = kafka_io.make_producer(k)
        self.catalogue = CatalogueReader(k, self.cfg.trainer.max_event_bytes)
        self.catalogue.start()
        self.lists.start()
        self.writes.start()
        unwatch_gc = self.metrics.watch_gc()
        try:
            while not self._stop.is_set():
                if not self._wait_for_lease():
                    break
                try:
                    self._active()
                except StandDown as e:
                    if self._stop.is_set():
                        log.warning("%s; the next trainer reads on from the offsets Redis holds", e)
                    else:
                        log.warning("standing down: %s", e)
                        self.metrics.stand_downs.inc()
                finally:
                    self._leave()
        finally:
            self.life.enter(STOPPING, "closing clients")
            unwatch_gc()
            self.writes.shutdown()
            self.lists.close()
            self.catalogue.stop()
            self.catalogue.join(timeout=min(10, self.life.remaining_s()))
            self.producer.close(timeout=self.life.remaining_s())
            log.info(
                "trainer stopped: %d events, %d dead letters, %d batches, %.0f events/s",
                self.stats.events,
                self.stats.dead_letters,
                self.stats.batches,
                self.stats.rate(),
            )
        return self.stats

    def _wait_for_lease(self) -> bool:
        announced = False
        while not self._stop.is_set():
            self.life.beat()
            try:
                if self.lease.try_acquire():
                    log.info("%s leads group %s", self.owner, self.cfg.kafka.group_id)
                    self.life.enter(STARTING, "restoring the model and compiling")
                    self.lease.keep()
                    return True
                if not announced:
                    holder = self.lease.holder()
                    log.info("standing by: group %s is led by %s", self.cfg.kafka.group_id, holder)
                    self.life.enter(STANDBY, f"group {self.cfg.kafka.group_id} is led by {holder}")
                    announced = True
            except RedisError as e:
                self.outage.check_denied(e)
                self.outage.down("Redis", e)
            self._stop.wait(self.cfg.trainer.lease_ttl_ms / 3000)
        return False

    def _active(self) -> None:
        """Restore, subscribe, train; returns on stop, raises StandDown on losing the lead."""
        assert self.catalogue is not None
        self.stored_offsets = self.outage.redis(self.store.read_offsets)
        self._restore(self.stored_offsets)
        # Each learn-step variant compiles when a batch first needs it, a stall: compile now.
        log.info("learn steps compiled in %.1f s", self.model.warm_up())
        # Frozen, the millions of objects TensorFlow's import leaves are never scanned again.
        gc.collect()
        gc.freeze()
        gc.set_threshold(*_GC_THRESHOLDS)
        # lists a previous trainer left due (it may have been killed before refreshing them)
        self.lists.due = dict.fromkeys(self.outage.redis(self.store.read_recs_due))
        # Features first: learning a batch before its items' features are known would give
        # those items id-only updates and recommend catalogue items too late.
        if not self.catalogue.caught_up.wait(timeout=60):
            log.warning("catalogue not read to its end after 60 s: starting anyway")
        k = self.cfg.kafka
        self._announced_ready = False
        self.group.subscribe()
        log.info("trainer active: group %s, topic %s", k.group_id, k.events_topic)
        self._loop()
        self.life.enter(STOPPING, "writing the last batch and lists")
        if self._matrix_dirty:  # readers get the last batch's items before we go
            self._write([], {}, self.model.version, {}, force_matrix=True)
            self.flush_writes()
        self._drain_lists()
        if self.lists.due:
            log.info(
                "%d precomputed lists left due at shutdown (kept in Redis for the next "
                "trainer); readers rank those users in real time meanwhile",
                len(self.lists.due),
            )
        self._final_checkpoint()

    def _leave(self) -> None:
        # Each step waits at most what is left of a stop's grace period (the whole of it,
        # 8 s by default, when no stop was asked for): a shutdown must end within it.
        self.writes.abandon(self.life.remaining_s())  # standing down or failing
        self.group.close(self.life.remaining_s)
        self.lease.release()

    def _restore(self, stored: dict[str, int]) -> None:
        """The newest checkpoint at or before the offsets Redis holds, else a new model."""
        configure_tensorflow(self.cfg.trainer.tf_threads)
        from streamrec.model.online import OnlineRecommender

        self.lists.reset()
        self._matrix_written_at = None
        self._matrix_dirty = False
        self.user_counts = Counter()
        self.checkpoints.events_since = 0
        self._unwritten = False
        if self._given_model is not None:
            self.model, self._given_model = self._given_model, None
            self.model_offsets = {}
            return
        restored = self.checkpoints.newest_usable(
            stored, lambda path: OnlineRecommender.restore(path, self.cfg.model)
        )
        if restored is not None:
            self.model = restored.model
            self.model_offsets = restored.offsets
            self.user_counts.update(restored.counts)
            return
        log.info("no usable checkpoint in %s: starting a new model", self.ckpt_dir)
        self.model = OnlineRecommender(self.cfg.model)
        self.model_offsets = {}

    def _final_checkpoint(self) -> None:
        if self.checkpoints.final_due(self._unwritten, self.life):
            self.checkpoint()

    # -- rebalance ---------------------------------------------------------------------------

    def on_assigned(self, assigned: list[TopicPartition]) -> None:
        """Seek to what the model has learned; learn forward to what Redis holds, quietly.
        (The group consumer has written the batch in flight and counted the partitions.)"""
        self.stored_offsets = self.outage.redis(self.store.read_offsets)
        for tp in assigned:
            f = offset_field(tp.topic, tp.partition)
            self.group.seek(tp, self.model_offsets.get(f))
        log.info(
            "assigned %s; model at %s; Redis holds %s",
            sorted(f"{tp.topic}:{tp.partition}" for tp in assigned),
            self.model_offsets,
            self.stored_offsets,
        )
        owned = sorted(f"{tp.topic}:{tp.partition}" for tp in self.group.owned)
        self.life.enter(ACTIVE, f"consuming {', '.join(owned)}")
        if not self._announced_ready:
            self._announced_ready = True
            log.info("ready: consuming %s as group %s", owned, self.cfg.kafka.group_id)

    def on_revoked(self, revoked: list[TopicPartition]) -> None:
        """(The group consumer has written what we learned from them before they go.)"""
        gone = {offset_field(tp.topic, tp.partition) for tp in revoked}
        for f in gone:
            self._lag.pop(f, None)
        self._undecodable = [u for u in self._undecodable if u.field not in gone]
        if revoked:
            log.info("revoked %s", sorted(f"{tp.topic}:{tp.partition}" for tp in revoked))

    # -- the loop ----------------------------------------------------------------------------

    def _loop(self) -> None:
        tcfg, kcfg = self.cfg.trainer, self.cfg.kafka
        batch: list[Any] = []
        batch_started = 0.0
        last_record = time.monotonic()
        listened_at = time.monotonic()  # when the last poll returned
        last_summary = time.monotonic()
        while not self._stop.is_set():
            self.life.beat()
            if self.lease.lost.is_set():
                raise StandDown("another trainer holds the lease")
            self._reap_write()
            now = time.monotonic()
            timeout_ms = kcfg.poll_timeout_ms
            if not batch and (self.lists.work() or self.lists.running() or self.writes.pending):
                # lists to hand out or to collect: look for events, do not wait long for
                # them (not 0: kafka-python then never finishes a rebalance, a stalled group)
                timeout_ms = min(timeout_ms, 10)
            if batch:
                remaining = tcfg.batch_max_wait_ms - (now - batch_started) * 1000
                timeout_ms = max(1, min(timeout_ms, int(remaining)))
            t_poll = time.perf_counter()
            # A broker restart can surface here (the coordinator lookup): pause, then poll
            # again; a poll that raises has returned nothing, so nothing is skipped.
            poll = functools.partial(
                self.group.poll,
                timeout_ms=timeout_ms,
                max_records=tcfg.batch_max_events - len(batch),
            )
            assignments = self.group.assignments
            polled, bad = self.outage.kafka(poll)
            self._phase("poll", t_poll)
            if bad is not None:
                self._skipped(bad)
            if self.group.assignments != assignments and batch:
                # The rebalance sought every partition to what the model has learned: records
                # polled before it and not learned yet come again (else twice in one batch).
                # What this poll returned was read after the seeks.
                log.info("rebalance: %d records not yet learned are read again", len(batch))
                batch = []
            if not polled and not batch:
                self.group.check_assignment()
            now = time.monotonic()
            if polled and not batch:
                batch_started = batches.arrival(polled, now, time.time() * 1000, listened_at)
            for records in polled.values():
                batch.extend(records)
                if records:
                    last_record = now
            listened_at = now
            full = len(batch) >= tcfg.batch_max_events
            due = batch and (now - batch_started) * 1000 >= tcfg.batch_max_wait_ms
            if self.catalogue is not None and self.catalogue.error is not None:
                raise RuntimeError("catalogue reader failed") from self.catalogue.error
            catalogue_only = not batch and self.catalogue is not None and self.catalogue.pending()
            idle_work = not batch and (
                self.lists.work() or self._matrix_due() or bool(self._undecodable)
            )
            if full or due or catalogue_only or idle_work:
                self.process(batch)
                batch = []
            self._publish_served(now)
            if now - last_summary >= 10:
                last_summary = now
                self._log_summary()
            idle_ms = (now - last_record) * 1000
            idle = tcfg.stop_when_idle_ms and not batch and idle_ms >= tcfg.stop_when_idle_ms
            if idle and self.group.assignment():
                log.info("no new events for %.1f s: stopping", idle_ms / 1000)
                self.stop()
        if batch:
            self.process(batch)
        self.flush_writes()

    def _log_summary(self) -> None:
        ages = self.writes.take_freshness()
        behind = sum(self._lag.values())
        if not ages:
            fresh = "nothing written"
        elif behind > self.cfg.trainer.batch_max_events or np.percentile(ages, 50) > 1.0:
            # Records published before the trainer got to them waited in Kafka: that is a
            # backlog being worked off, not how fresh the pipeline is.
            fresh = (
                f"catching up a backlog ({behind} records behind): records waited "
                f"p50 {np.percentile(ages, 50):.1f} s, p99 {np.percentile(ages, 99):.1f} s"
            )
        else:
            fresh = (
                f"record -> Redis p50 {np.percentile(ages, 50) * 1000:.0f} ms, "
                f"p99 {np.percentile(ages, 99) * 1000:.0f} ms"
            )
        log.info(
            "%d events (%.0f/s), %d dead letters, loss %.4f; %s; %d lists ranked, %d "
            "due; seconds per phase %s",
            self.stats.events,
            self.stats.rate(),
            self.stats.dead_letters,
            self.stats.last_loss,
            fresh,
            self.stats.lists_refreshed,
            len(self.lists.due),
            {k: round(v, 1) for k, v in self.stats.phase_seconds.items()},
        )

    def process(self, records: Sequence[Any]) -> None:
        """Parse, dead-letter, learn, write, commit: one batch, in that order."""
        assert self.producer is not None and self.group.consumer is not None
        producer = self.producer
        t0 = time.perf_counter()
        kcfg = self.cfg.kafka
        now_ms = int(time.time() * 1000)
        good, dead, ends = batches.parse_records(records, self.rules, now_ms, self._undecodable)
        self._undecodable = []
        self._phase("parse", t0)
        cat = {} if self.catalogue is None else self.catalogue.apply(self.model, dead)
        if dead:
            # acknowledged by the broker before the Redis transaction: never lost
            self.outage.kafka(
                lambda: kafka_io.send_dead_letters(producer, kcfg.dlq_topic, kcfg.group_id, dead)
            )
            for d in dead:
                self.stats.dead_by_reason[d.rejected.reason] += 1
                self.metrics.dead_letters.labels(d.rejected.reason).inc()
        # features given inline are remembered by learn itself, like catalogue records
        events = [e for _, e in good]
        fresh = batches.past_stored(good, self.stored_offsets)
        self._score_live(fresh)
        t_learn = time.perf_counter()
        result = self.model.learn(events, touched=False)
        self._phase("learn", t_learn)
        if result.evicted_users or result.evicted_items:
            self._forget(result.evicted_users, result.evicted_items)
        self._unwritten = True
        if result.skipped_nonfinite:
            self.stats.skipped_nonfinite += 1
            self.metrics.skipped.inc()
            log.warning("batch of %d events skipped: non-finite loss or gradients", len(events))
        elif events:
            self.stats.last_loss = result.loss
            self.metrics.loss.set(result.loss)
        self.user_counts.update(e.user for _, e in good)
        self.model_offsets.update(ends)
        write_needed = any(ends[f] > self.stored_offsets.get(f, -1) for f in ends)
        if write_needed or cat or self.lists.work() or self._matrix_due():
            # Kafka's commit follows once this write has landed (flush_writes)
            self._write(fresh, ends, result.version, cat)
        else:
            self._unwritten = False
            self._commit(ends)
        self.stats.events += len(good)
        self.stats.dead_letters += len(dead)
        self.stats.batches += 1
        self.checkpoints.events_since += len(records)
        if self.checkpoints.due():
            self.checkpoint()
        self.metrics.events.inc(len(good))
        self.metrics.batches.inc()
        self.metrics.batch_size.observe(len(records))
        self.metrics.batch_seconds.observe(time.perf_counter() - t0)
        self._update_lag(ends)
        self._served_changed = True  # popularity moved
        if self.on_batch is not None:
            self.on_batch(self.stats)

    def _score_live(self, fresh: list[tuple[Any, Event]]) -> None:
        """Live quality: a sample of the batch's new events scored before it is learned
        (consumers/live_quality.py); events re-learned to catch up are not new."""
        picked = self.quality.pick(len(fresh))
        self._live_pending = None  # a batch that wrote nothing left it: dropped
        if not picked:
            return
        t0 = time.perf_counter()
        scored, self._live_pending = self.quality.begin(
            self.model,
            [e for _, e in fresh],
            counts=self.user_counts,
            picked=picked,
            matrix=self.lists.ranking_matrix(self.model),
        )
        self.quality.publish_samples(self.metrics, scored)
        self._phase("quality", t0)

    def _finish_live(self) -> None:
        """Score the known users sampled from the batch being written, against their seen
        sets as the previous write left them: that write has landed and this one is not
        sent yet, so Redis answers at once; the sets join the ranking thread's cache (those
        users are due)."""
        pending, self._live_pending = self._live_pending, None
        if pending is None:
            return
        t0 = time.perf_counter()
        users = list(pending.rows)
        seen = self.lists.seen
        self.lists.load_seen([u for u in users if u not in seen])
        scored = self.quality.finish(self.model, pending, {u: seen[u] for u in users})
        self.quality.publish_samples(self.metrics, scored)
        self._phase("quality", t0)

    def _publish_served(self, now: float) -> None:
        """Coverage and popular share of the served lists, at most once a second (the top
        1 % by popularity is a pass over the catalogue)."""
        if self._served_changed and now - self._served_published_at >= 1.0:
            self._served_published_at = now
            self._served_changed = False
            self.quality.publish_served(self.metrics, self.model)

    def _skipped(self, bad: Undecodable) -> None:
        """An undecodable batch was sought past: dead-letter it with the next batch."""
        log.error(
            "undecodable batch skipped: %s; its raw bytes go to %s (reason undecodable_batch)",
            bad.describe(),
            self.cfg.kafka.dlq_topic,
        )
        self.metrics.undecodable.labels(bad.topic).inc()
        self._undecodable.append(bad)

    def _forget(self, users: list[str], items: list[str]) -> None:
        """The model evicted these ids (ModelConfig.evict_after_s): drop them here, and from
        Redis with the next write, which also rewrites the item matrix without the items."""
        for u in users:
            self.user_counts.pop(u, None)
        self.lists.forget(users)
        self.quality.forget(items)
        self._evicted_users += users
        self._evicted_items += items
        self.metrics.evicted.labels("user").inc(len(users))
        self.metrics.evicted.labels("item").inc(len(items))

    def _matrix_due(self) -> bool:
        """A batch skipped the item matrix and none has come since: write it now, so readers
        never wait for the next event to see the last one's items."""
        return self._matrix_dirty and (
            self._matrix_written_at is None
            or (time.monotonic() - self._matrix_written_at) * 1000 >= self._matrix_interval_ms()
        )

    def _matrix_interval_ms(self) -> float:
        return batch_write.matrix_interval_ms(self.model.n_items, self.cfg)

    def _phase(self, name: str, since: float) -> None:
        self.stats.phase_seconds[name] += time.perf_counter() - since

    def _write(
        self,
        fresh: list[tuple[Any, Event]],
        ends: dict[str, int],
        version: int,
        catalogue: dict[tuple[str, str], Any],
        force_matrix: bool = False,
    ) -> None:
        evicted_users, evicted_items = self._evicted_users, self._evicted_items
        self._evicted_users, self._evicted_items = [], []
        gone_users, gone_items = set(evicted_users), set(evicted_items)
        by = batch_write.by_user(fresh, gone_users)
        users = by.users
        t_seen = time.perf_counter()
        due = self.lists.due
        for u in users:
            due.setdefault(u)
        self._phase("seen", t_seen)
        t_recs = time.perf_counter()
        recs, recs_version = self.lists.finished()
        if evicted_users or evicted_items:  # lists ranked before the eviction
            recs = batch_write.drop_evicted(recs, gone_users, gone_items)
        if recs:
            self.quality.served(recs)
            self._served_changed = True
        self._phase("recommend", t_recs)
        t_rows = time.perf_counter()
        out = batch_write.assemble(
            cfg=self.cfg,
            model=self.model,
            fresh=fresh,
            by=by,
            ends=ends,
            stored=self.stored_offsets,
            version=version,
            catalogue=catalogue,
            counts=self.user_counts,
            recs=recs,
            recs_version=recs_version,
            due=due,
            evicted_users=evicted_users,
            evicted_items=evicted_items,
            matrix_written_at=self._matrix_written_at,
            matrix_dirty=self._matrix_dirty,
            force_matrix=force_matrix,
            now=time.monotonic(),
            wall_ns=time.time_ns(),
        )
        self._matrix_written_at, self._matrix_dirty = out.matrix_written_at, out.matrix_dirty
        batch, new_seen = out.batch, by.seen
        self._phase("rows", t_rows)
        # One write in flight: the previous batch's lands first (offsets fence each other).
        self.flush_writes()
        self._finish_live()  # before this batch's items join the cached seen sets
        self.lists.note_seen(users, new_seen)
        self.writes.submit(batch, ends, out.newest)
        # what Redis holds once it lands: the next batch fences on it, and skips re-learned
        # events below it
        self.stored_offsets.update(batch.new_offsets)

    def flush_writes(self) -> None:
        """Wait for the write in flight, then what follows it: Kafka commit, freshness, the
        next ranking job (its seen sets must be complete in Redis)."""
        ends = self.writes.wait()
        if ends is None:
            return
        self._unwritten = False
        self._commit(ends)
        t_recs = time.perf_counter()
        self.lists.submit(self.model, self._lag)
        self._phase("recommend", t_recs)

    def _reap_write(self) -> None:
        """flush_writes() if the write in flight has landed: never waits."""
        if self.writes.landed():
            self.flush_writes()

    def _drain_lists(self) -> None:
        budget = DRAIN_S
        if self._stop.is_set():
            budget = min(budget, self.life.remaining_s() - SHUTDOWN_RESERVE_S)
        self.lists.drain(budget, self._write_lists)

    def _write_lists(self) -> None:
        self._write([], {}, self.model.version, {})
        self.flush_writes()

    def _caught_up(self) -> bool:
        """The model has learned everything Redis holds (restores re-learn quietly first)."""
        return all(self.model_offsets.get(f, 0) >= off for f, off in self.stored_offsets.items())

    def _update_lag(self, ends: dict[str, int]) -> None:
        for f, behind in self.group.lag(ends).items():
            self._lag[f] = behind
            self.metrics.lag.labels(f.rpartition(":")[2]).set(behind)

    def _read_seen(self, users: list[str]) -> dict[str, list[str]]:
        return self.outage.redis(lambda: self.store.read_seen(users))

    def _commit(self, ends: dict[str, int]) -> None:
        """Kafka's committed offsets are for lag monitoring only: a failure is harmless."""
        if not ends:
            return
        t0 = time.perf_counter()
        self.group.commit(ends)
        self._phase("commit", t0)

    def checkpoint(self) -> Path:
        return self.checkpoints.save(self.model, self.model_offsets, self.user_counts)


def event_rules(cfg: Config) -> EventRules:
    """What the trainer accepts as an event under `cfg`."""
    return EventRules(
        event_types=frozenset(cfg.model.event_weights),
        value_abs_max=cfg.trainer.value_abs_max,
        max_ts_skew_ms=cfg.trainer.max_ts_skew_ms,
        max_bytes=cfg.trainer.max_event_bytes,
    )


# Collector thresholds (default 700, 10, 10): young passes small and frequent (every poll
# that times out leaves a reference cycle), full passes over the growing id maps rare.
_GC_THRESHOLDS = (5_000, 10, 50)


def main(cfg: Config | None = None, life: Lifecycle | None = None) -> int:
    """`streamrec train`; `life` carries the signal handlers installed before the imports."""
    cfg = cfg or Config.from_env()
    if life is None:
        life = Lifecycle(cfg.trainer.stop_grace_ms / 1000)
        life.install_signal_handlers()
    trainer = Trainer(cfg, life=life)
    try:
        trainer.run()
    except CheckpointMismatch as e:
        log.error("bad configuration: %s", e)
        return 2
    return 0
