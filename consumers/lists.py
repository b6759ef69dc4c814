"""Which users' precomputed lists are due, and when to hand them to the ranking thread.

A user whose vector changed has a list older than their vector: they are due (readers rank
them in real time meanwhile, streaming/client.py). The loop hands the least recently
refreshed due users to the `Ranker` thread (consumers/ranker.py) in small jobs, with a
snapshot of what ranking needs, whenever the thread is idle and the model is caught up with
Redis; finished lists go out with the next batch's write (`finished`), stamped with the
oldest model version among them. Lists ranked before a restore are dropped (`epoch`).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from streamrec.consumers.config import Config
from streamrec.consumers.metrics import TrainerMetrics, TrainerStats
from streamrec.consumers.ranker import Lists, Ranker, RankJob
from streamrec.model.base import ItemMatrix
from streamrec.streaming.keys import matrix_interval

# Users per ranking job: a small job holds the interpreter lock and Redis (the script that
# writes its lists) only briefly, which keeps the stream's freshness tail short.
RANK_JOB_USERS = 128
DRAIN_S = 5.0  # at shutdown, refresh due lists for at most this long


class Seen(dict[str, None]):
    """A user's items for exclusion, oldest first, bounded: O(1) to re-add or evict."""

    def __init__(self, limit: int, items: Iterable[str] = ()):
        super().__init__()
        self.limit = limit
        self.add_all(items)

    def add_all(self, items: Iterable[str]) -> None:
        for item in items:
            self.pop(item, None)
            self[item] = None
            if len(self) > self.limit:
                del self[next(iter(self))]


class DueLists:
    """The due users, the ranking thread, and the seen sets ranking has needed.

    `caught_up()` tells whether the model has learned everything Redis holds (only such a
    model ranks: a list from a model behind Redis would look newer than it is);
    `read_seen(users)` reads seen sets from Redis.
    """

    def __init__(
        self,
        cfg: Config,
        metrics: TrainerMetrics,
        stats: TrainerStats,
        *,
        caught_up: Callable[[], bool],
        read_seen: Callable[[list[str]], Mapping[str, Iterable[str]]],
    ) -> None:
        self.cfg = cfg
        self.metrics = metrics
        self.stats = stats
        self.caught_up = caught_up
        self.read_seen = read_seen
        # users whose precomputed list is older than their vector, least recently refreshed
        # first (a dict keeps insertion order; a user touched again keeps their place)
        self.due: dict[str, None] = {}
        # the seen sets ranking has needed, kept up to date by `note_seen`
        self.seen: dict[str, Seen] = {}
        self.ranker: Ranker | None = None  # the thread ranking them, while running
        self.epoch = 0  # restores so far: lists ranked before the last one are dropped
        self._matrix: tuple[float, ItemMatrix] | None = None  # (built at, snapshot)

    def start(self) -> None:
        self.ranker = Ranker(self.cfg.trainer.top_k, self.cfg.trainer.recs_time_share)

    def close(self) -> None:
        if self.ranker is not None:
            self.ranker.close()

    def reset(self) -> None:
        """A new model (a restore): nothing is due or cached, running jobs are void."""
        self.seen.clear()
        self.due.clear()
        self.epoch += 1
        self._matrix = None

    def forget(self, users: Iterable[str]) -> None:
        """The model evicted these users."""
        for u in users:
            self.seen.pop(u, None)
            self.due.pop(u, None)

    def note_seen(
        self, users: Iterable[str], new_seen: Mapping[str, list[tuple[str, int]]]
    ) -> None:
        """Add a batch's items to the cached seen sets (the others are not read here). Call
        after the previous write landed: a set its ranking job loaded from Redis lacks this
        batch's items, not yet written."""
        for u in users:
            cached = self.seen.get(u)
            if cached is not None:
                cached.add_all(item for item, _ in new_seen[u])

    def running(self) -> bool:
        return self.ranker is not None and not self.ranker.idle

    def work(self) -> bool:
        """Finished lists to write, or due users to hand to an idle ranker."""
        r = self.ranker
        if r is None:
            return False
        return r.ready or (bool(self.due) and r.idle and self.caught_up())

    def finished(self) -> tuple[Lists, int | None]:
        """Lists the ranker finished since the last write, and the oldest model version among
        them (their stamp: a list never claims to be newer than the model it came from)."""
        out: Lists = {}
        version: int | None = None
        assert self.ranker is not None
        for res in self.ranker.results():
            if res.epoch != self.epoch:
                continue  # ranked before a restore: that model is gone
            out.update(res.lists)
            version = res.version if version is None else min(version, res.version)
            self.stats.phase_seconds["ranker thread"] += res.seconds
        self.metrics.lists_refreshed.inc(len(out))
        self.stats.lists_refreshed += len(out)
        return out, version

    def submit(self, model: Any, lag: Mapping[str, int]) -> None:
        """Hand the oldest due users to the ranker, with a snapshot of what ranking needs.

        The users leave the due set now; one who gets events before their list is written
        comes back into it, and the write keeps them due in Redis. `lag`: records behind
        each partition's end.
        """
        r = self.ranker
        if r is None or not self.due or not r.idle or not self.caught_up():
            return
        chunk = list(itertools.islice(self.due, RANK_JOB_USERS))
        self.load_seen([u for u in chunk if u not in self.seen])
        known, vecs, _ = model.user_vectors(chunk)
        for u in chunk:
            del self.due[u]
        self.metrics.lists_due.set(len(self.due))
        if not known:
            return
        matrix = self.ranking_matrix(model)
        n_items = len(matrix.ids)
        # More than a batch waiting in Kafka: the stream comes first. Lists are served in
        # real time meanwhile; the ranker rests four times longer after this job.
        share = self.cfg.trainer.recs_time_share
        if sum(lag.values()) > self.cfg.trainer.batch_max_events:
            share /= 4
        r.submit(
            RankJob(
                users=known,
                vectors=vecs,
                items=matrix.vectors,
                item_bias=matrix.biases,
                ids=matrix.ids,  # item_vectors() gives a fresh list
                # item rows never move: rows past an older snapshot are items it lacks
                exclude=[
                    rows[rows < n_items]
                    for rows in (model.exclude_rows(self.seen[u]) for u in known)
                ],
                version=int(model.version),
                epoch=self.epoch,
            ),
            share=share,
        )

    def ranking_matrix(self, model: Any) -> ItemMatrix:
        """The item matrix ranking jobs score against, rebuilt at most as often as readers
        re-read theirs (`keys.matrix_interval`): every learn step changes it, and rebuilding
        it per job would cost more than anything but learning. A list ranked against a
        matrix up to that old is what a reader's real-time answer is too."""
        now = time.monotonic()
        cached = self._matrix
        if cached is not None:
            built_at, m = cached
            age_ms = (now - built_at) * 1000
            nbytes = m.vectors.nbytes + m.biases.nbytes  # as a reader counts its snapshot
            if age_ms < matrix_interval(self.cfg.trainer.matrix_every_ms, nbytes):
                return m
        m = model.item_vectors()  # cached by the model until its next step
        self._matrix = (now, m)
        return m

    def drain(self, budget_s: float, write: Callable[[], None]) -> None:
        """At shutdown: the ranker without rests, its lists written (`write` writes and
        waits for the write), for at most `budget_s`."""
        if self.ranker is None:
            return
        self.ranker.hurry()
        deadline = time.monotonic() + budget_s
        while self.caught_up() and time.monotonic() < deadline:
            if self.work():
                write()
            elif self.running():
                time.sleep(0.005)
            else:
                return

    def load_seen(self, users: list[str]) -> None:
        if not users:
            return
        limit = max(self.cfg.trainer.seen_max, 1)
        for u, items in self.read_seen(users).items():
            self.seen[u] = Seen(limit, items)
        for u in users:
            if u not in self.seen:
                self.seen[u] = Seen(limit)
