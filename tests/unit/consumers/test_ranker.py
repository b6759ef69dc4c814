"""The ranking thread: the lists it returns are `rank_lists` of the snapshot it was given."""

from __future__ import annotations

import time

import numpy as np
import pytest

from streamrec.consumers.ranker import Ranker, RankJob
from streamrec.model.ranking import rank_lists


def _job(rng: np.random.Generator, version: int = 7, epoch: int = 1) -> RankJob:
    items = rng.standard_normal((50, 4)).astype(np.float32)
    items.flags.writeable = False
    return RankJob(
        users=["a", "b", "c"],
        vectors=rng.standard_normal((3, 4)).astype(np.float32),
        items=items,
        item_bias=rng.standard_normal(50).astype(np.float32),
        ids=[f"i{n}" for n in range(50)],
        exclude=[np.array([0, 1, 2]), None, np.arange(50)],  # c has seen everything
        version=version,
        epoch=epoch,
    )


def _wait(ranker: Ranker) -> list:
    deadline = time.monotonic() + 10
    while not ranker.ready:
        assert time.monotonic() < deadline
        time.sleep(0.001)
    return ranker.results()


def test_lists_are_those_of_the_snapshot() -> None:
    ranker = Ranker(k=5, share=1.0)
    try:
        job = _job(np.random.default_rng(0))
        ranker.submit(job)
        (res,) = _wait(ranker)
        expected = rank_lists(job.vectors, job.items, job.item_bias, job.ids, job.exclude, 5)
        assert res.lists == dict(zip(job.users, expected, strict=True))
        assert (res.version, res.epoch) == (7, 1)
        assert len(res.lists["a"]) == 5 and not {"i0", "i1", "i2"} & {i for i, _ in res.lists["a"]}
        assert res.lists["c"] == []  # nothing left to recommend
        # scores are <p, q> + b, best first
        i, score = res.lists["b"][0]
        row = job.ids.index(i)
        assert score == pytest.approx(float(job.vectors[1] @ job.items[row] + job.item_bias[row]))
    finally:
        ranker.close()


def test_rests_under_its_share_and_hurries_on_request() -> None:
    ranker = Ranker(k=3, share=1e-6)  # would rest for ages after any job
    try:
        ranker.submit(_job(np.random.default_rng(1)))
        _wait(ranker)
        assert not ranker.idle  # resting
        with pytest.raises(RuntimeError, match="check idle"):
            ranker.submit(_job(np.random.default_rng(2)))
        ranker.hurry()
        deadline = time.monotonic() + 5
        while not ranker.idle:
            assert time.monotonic() < deadline
            time.sleep(0.001)
    finally:
        ranker.close()


def test_a_failure_surfaces_in_the_loop() -> None:
    ranker = Ranker(k=3, share=1.0)
    try:
        bad = _job(np.random.default_rng(3))
        object.__setattr__(bad, "vectors", np.zeros((3, 9), np.float32))  # wrong dim
        ranker.submit(bad)
        deadline = time.monotonic() + 5
        with pytest.raises(RuntimeError, match="ranking thread failed"):
            while time.monotonic() < deadline:
                ranker.idle  # noqa: B018  (raises once the thread has failed)
                time.sleep(0.001)
    finally:
        ranker.close()
