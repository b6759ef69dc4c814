"""The thin end-to-end slice against a real Kafka broker and a real Redis server.

Publish events for a few users, run the trainer until it has consumed them, and read every
user's vector and recommendations back from Redis; then publish more events for one user,
run the trainer again (it restores its checkpoint and resumes at the stored offsets) and
check that this user's vector changed while the others stayed as they were.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import orjson
import pytest
from pipeline_helpers import run_trainer

from streamrec.consumers.config import Config
from streamrec.streaming import kafka_io
from streamrec.streaming.client import Recommender
from streamrec.streaming.keys import Keys, decode_vector

pytestmark = pytest.mark.integration

USERS = ["alice", "bob", "carol"]
ITEMS = [f"i{n}" for n in range(12)]


def _events(user: str, items: list[str], t0: int) -> list[dict[str, Any]]:
    return [{"user": user, "item": it, "type": "click", "ts": t0 + n} for n, it in enumerate(items)]


def test_events_to_redis_and_back(config: Config, redis_client: Any, tmp_path: Any) -> None:
    cfg = config.replace(
        trainer={"checkpoint_dir": str(tmp_path / "ckpt"), "top_k": 5, "seen_max": 7}
    )
    keys = Keys(cfg.redis.prefix)
    first: list[dict[str, Any]] = []
    for n, u in enumerate(USERS):
        # each user clicks a different half of the catalogue, so their tastes differ
        first += _events(u, ITEMS[n * 3 : n * 3 + 6], 1_700_000_000_000 + 100 * n)
    producer = kafka_io.make_producer(cfg.kafka)
    # an item known from the catalogue before anyone interacts with it
    producer.send(
        cfg.kafka.items_topic,
        key=b"fresh-item",
        value=orjson.dumps({"id": "fresh-item", "features": {"genre": "g1"}}),
    )
    assert kafka_io.publish(producer, cfg.kafka.events_topic, first) == len(first)

    t1 = run_trainer(cfg, len(first))
    assert t1.stats.events == len(first) and t1.stats.dead_letters == 0
    assert orjson.loads(redis_client.get(keys.item_features("fresh-item"))) == {"genre": "g1"}
    assert "fresh-item" in orjson.loads(redis_client.get(keys.items_ids))

    before: dict[str, np.ndarray] = {}
    for u in USERS:
        row = redis_client.hgetall(keys.user(u))
        assert row, f"no vector for {u}"
        vec = decode_vector(row[b"vec"], cfg.model.dim)
        assert np.all(np.isfinite(vec)) and np.linalg.norm(vec) > 0
        before[u] = vec.copy()
        assert int(row[b"n"]) == 6
        recs = orjson.loads(redis_client.get(keys.recs(u)))
        assert len(recs["items"]) == 5
        clicked = {e["item"] for e in first if e["user"] == u}
        assert not clicked & {i for i, _ in recs["items"]}, "seen items must be excluded"
        # the read client serves the precomputed list
        out = Recommender(redis_client, prefix=cfg.redis.prefix).recommend(u, k=3)
        assert out.source == "precomputed" and len(out.items) == 3
    stored = {
        k.decode(): int(v)
        for k, v in redis_client.hgetall(keys.offsets(cfg.kafka.group_id)).items()
    }
    assert sum(stored.values()) == len(first)

    more = _events("alice", ["i9", "i10", "i11"] * 3, 1_700_000_100_000)
    assert kafka_io.publish(producer, cfg.kafka.events_topic, more) == len(more)
    producer.close()

    t2 = run_trainer(cfg, len(more))
    # resumed from the checkpoint's offsets: only the new events were read
    assert t2.stats.events == len(more)
    after = {u: decode_vector(redis_client.hget(keys.user(u), "vec"), cfg.model.dim) for u in USERS}
    assert not np.allclose(after["alice"], before["alice"]), "alice's vector must change"
    for u in ("bob", "carol"):
        np.testing.assert_array_equal(after[u], before[u])
    assert int(redis_client.hget(keys.user("alice"), "n")) == 6 + len(more)
    # seen sets keep the newest seen_max items: alice's 9 distinct items were trimmed to 7
    seen = {x.decode() for x in redis_client.zrange(keys.seen("alice"), 0, -1)}
    assert len(seen) == 7 and {"i9", "i10", "i11"} <= seen, seen
    assert redis_client.zcard(keys.seen("bob")) == 6
    stored = {
        k.decode(): int(v)
        for k, v in redis_client.hgetall(keys.offsets(cfg.kafka.group_id)).items()
    }
    assert sum(stored.values()) == len(first) + len(more)


def test_deferred_lists_catch_up_when_idle(
    config: Config, redis_client: Any, tmp_path: Any
) -> None:
    """With a tiny recs_time_share a batch of 1,000 new users leaves most lists due (readers
    rank those users in real time meanwhile); the trainer refreshes them once events stop,
    and then every user's precomputed list is at least as new as their vector."""
    from streamrec.consumers.lists import RANK_JOB_USERS
    from streamrec.consumers.trainer import Trainer

    cfg = config.replace(
        trainer={
            "checkpoint_dir": str(tmp_path / "ckpt"),
            "top_k": 5,
            "batch_max_events": 1000,
            "batch_max_wait_ms": 2000,
            "recs_time_share": 0.001,
        }
    )
    users = [f"u{n}" for n in range(1000)]
    events = [
        {"user": u, "item": ITEMS[n % len(ITEMS)], "type": "click", "ts": 1_700_000_000_000 + n}
        for n, u in enumerate(users)
    ]
    producer = kafka_io.make_producer(cfg.kafka)
    assert kafka_io.publish(producer, cfg.kafka.events_topic, events) == len(events)
    producer.close()

    due_after_first: list[int] = []
    trainer: Trainer

    def on_batch(stats: Any) -> None:
        if stats.events and not due_after_first:
            due_after_first.append(len(trainer.recs_due))
        if stats.events >= len(events) and not trainer.recs_due:
            trainer.stop()

    trainer = Trainer(cfg, on_batch=on_batch)
    watchdog = threading.Timer(120, trainer.stop)
    watchdog.start()
    try:
        trainer.run()
    finally:
        watchdog.cancel()
    assert trainer.stats.events == len(events)
    # one ranking job at a time, resting 999x its time under the share: after the first
    # batch at most one job's users are out of the due set
    assert due_after_first and due_after_first[0] >= len(users) - RANK_JOB_USERS
    assert not trainer.recs_due

    keys = Keys(cfg.redis.prefix)
    pipe = redis_client.pipeline(transaction=False)
    for u in users:
        pipe.hget(keys.user(u), "ver")
        pipe.get(keys.recs(u))
    replies = pipe.execute()
    for u, ver, recs in zip(users, replies[::2], replies[1::2], strict=True):
        assert ver is not None and recs is not None, u
        doc = orjson.loads(recs)
        assert doc["ver"] >= int(ver) and len(doc["items"]) == 5, (u, doc, ver)
    answers = Recommender(redis_client, prefix=cfg.redis.prefix).recommend_many(users[:50], k=5)
    assert {a.source for a in answers} == {"precomputed"}


def test_evicted_ids_leave_redis(config: Config, redis_client: Any, tmp_path: Any) -> None:
    """With evict_after_s, users and items idle that long leave the model and Redis: rows,
    lists, seen sets, the item matrix and popularity. Ids still active stay."""
    cfg = config.replace(
        trainer={"checkpoint_dir": str(tmp_path / "ckpt")}, model={"evict_after_s": 60}
    )
    keys = Keys(cfg.redis.prefix)
    t0 = 1_700_000_000_000
    old_users, old_items = ["o0", "o1", "o2"], ["x0", "x1", "x2", "x3"]
    first = [e for n, u in enumerate(old_users) for e in _events(u, old_items, t0 + 10 * n)]
    first += _events("stay", ["keep", "x0"], t0)
    producer = kafka_io.make_producer(cfg.kafka)
    kafka_io.publish(producer, cfg.kafka.events_topic, first)
    run_trainer(cfg, len(first))
    assert redis_client.exists(keys.user("o0")) and redis_client.exists(keys.item("x1"))
    assert redis_client.zscore(keys.popularity(), "x1") is not None

    later = t0 + 10 * 60_000  # ten minutes on: the old ids are idle for longer than 60 s
    second = _events("stay", ["keep", "y0"], later) + _events("new", ["y0", "y1"], later)
    kafka_io.publish(producer, cfg.kafka.events_topic, second)
    producer.close()
    t2 = run_trainer(cfg, len(second))
    assert t2.stats.events == len(second)
    for u in old_users:
        assert not redis_client.exists(keys.user(u), keys.recs(u), keys.seen(u)), u
    ids = set(orjson.loads(redis_client.get(keys.items_ids)))
    assert ids >= {"keep", "y0", "y1"} and not ids & {"x1", "x2", "x3"}
    for it in ("x1", "x2", "x3"):
        assert not redis_client.exists(keys.item(it))
        assert redis_client.zscore(keys.popularity(), it) is None
    for u in ("stay", "new"):
        assert redis_client.hget(keys.user(u), "vec") is not None
    # a reader never offers an evicted item
    out = Recommender(redis_client, prefix=cfg.redis.prefix).recommend("new", k=10)
    assert not set(out.items) & {"x1", "x2", "x3"}


def test_trainer_refuses_a_checkpoint_its_settings_cannot_continue(
    config: Config, tmp_path: Any, caplog: Any
) -> None:
    """Changing the dimension under a trained model is bad configuration: the trainer stops
    at start with exit code 2 and a message naming the setting (it used to keep the saved
    settings without a word)."""
    from streamrec.consumers import trainer

    cfg = config.replace(trainer={"checkpoint_dir": str(tmp_path / "ckpt")})
    events = _events("alice", ITEMS[:5], 1_700_000_000_000)
    producer = kafka_io.make_producer(cfg.kafka)
    kafka_io.publish(producer, cfg.kafka.events_topic, events)
    producer.close()
    run_trainer(cfg, len(events))  # leaves a checkpoint at dimension 8
    with caplog.at_level("ERROR", logger="streamrec.trainer"):
        assert trainer.main(cfg.replace(model={"dim": 16})) == 2
    assert "dim: saved 8, configured 16" in caplog.text
