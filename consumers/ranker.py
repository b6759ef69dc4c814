"""Precomputed top-K lists, ranked in a thread beside the batch loop.

Ranking a user costs more than learning their event (a dim x n_items product plus a
selection). Done inline, it sat on every batch's path: at 2k events/s it took a quarter of
the trainer's time, and each event waited for it before its user's vector reached Redis. Here
the loop hands a snapshot (user vectors, the read-only item matrix, exclusions, the model
version) to one thread and carries on; numpy releases the GIL in the product and the
selection, so the two overlap on 2 cores. Finished lists go out with the next batch's write,
stamped with the version they were ranked at, so readers never take a list for newer than
it is (see streaming/client.py).

`share` bounds the thread's duty cycle: after a job that took t seconds it rests
t * (1 - share) / share, leaving the cores to the loop, Kafka and Redis.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass

import numpy as np

from streamrec.model.ranking import rank_lists

log = logging.getLogger("streamrec.trainer")

Lists = dict[str, list[tuple[str, float]]]


@dataclass(frozen=True)
class RankJob:
    users: list[str]
    vectors: np.ndarray  # [len(users), dim], the users' served vectors at `version`
    items: np.ndarray  # [n_items, dim], read-only snapshot
    item_bias: np.ndarray  # [n_items]
    ids: list[str]  # item ids of the rows (a list the model no longer changes)
    exclude: list[np.ndarray | None]  # item rows each user has seen
    version: int  # model version of the snapshot
    epoch: int  # the trainer's restore count: results of an older epoch are dropped


@dataclass(frozen=True)
class RankResult:
    lists: Lists
    version: int
    epoch: int
    seconds: float


class Ranker:
    """One ranking thread, one job at a time."""

    def __init__(self, k: int, share: float):
        self.k = k
        self.share = share
        self._jobs: queue.Queue[RankJob | None] = queue.Queue()
        self._results: queue.Queue[RankResult] = queue.Queue()
        self._idle = threading.Event()
        self._idle.set()
        self._wake = threading.Event()  # ends a rest early: shutting down or hurrying
        self._job_share = share
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="streamrec-ranker", daemon=True)
        self._thread.start()

    @property
    def idle(self) -> bool:
        """No job running or resting: the next one would start now."""
        if self._error is not None:
            raise RuntimeError("the ranking thread failed") from self._error
        return self._idle.is_set()

    def submit(self, job: RankJob, share: float | None = None) -> None:
        """Start `job`; `share` (default: the ranker's own) sets the rest after it."""
        if not self.idle:
            raise RuntimeError("submit() while a job is running: check idle first")
        self._job_share = self.share if share is None else min(share, 1.0)
        self._idle.clear()
        self._jobs.put(job)

    def results(self) -> list[RankResult]:
        """Finished jobs, oldest first, without waiting."""
        out: list[RankResult] = []
        while not self._results.empty():
            out.append(self._results.get_nowait())
        return out

    @property
    def ready(self) -> bool:
        return not self._results.empty()

    def hurry(self) -> None:
        """No more rests (draining lists at shutdown)."""
        self.share = 1.0
        self._wake.set()

    def close(self) -> None:
        self.hurry()
        self._jobs.put(None)  # after a queued job, if any
        self._thread.join(timeout=10)

    def _run(self) -> None:
        try:
            while True:
                job = self._jobs.get()
                if job is None:
                    return
                t0 = time.perf_counter()
                lists = rank_lists(
                    job.vectors, job.items, job.item_bias, job.ids, job.exclude, self.k
                )
                dt = time.perf_counter() - t0
                self._results.put(
                    RankResult(dict(zip(job.users, lists, strict=True)), job.version, job.epoch, dt)
                )
                share = self._job_share  # a hurry() sets _wake: the wait ends at once
                if share < 1:
                    self._wake.wait(dt * (1 - share) / share)
                self._idle.set()
        except BaseException as e:  # surfaced to the loop by `idle`
            log.exception("ranking thread failed")
            self._error = e
