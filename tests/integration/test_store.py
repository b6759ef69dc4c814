"""The fenced batch write against a real Redis: what lands, the fence, replays, errors."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import pytest
import redis

from streamrec.streaming.keys import Keys, decode_vector
from streamrec.streaming.store import BatchWrite, FenceLost, ItemRow, RedisStore, UserRow

pytestmark = pytest.mark.integration


def batch(expected: dict[str, int | None], new: dict[str, int], version: int = 1) -> BatchWrite:
    v = np.arange(4, dtype=np.float32)
    return BatchWrite(
        expected_offsets=expected,
        new_offsets=new,
        version=version,
        users=[
            UserRow(
                "u1",
                v,
                0.5,
                recs=[("i2", 1.5), ("i3", 0.25)],
                seen=[("i1", 10)],
                count=5,
                features={"country": "DE"},
            ),
            UserRow("we{ird}:id", v + 1, -0.25, seen=[("i9", 11)]),
        ],
        items=[ItemRow("i1", v * 2, 0.125, features={"genre": "g1"})],
        matrix=(["i1", "i2"], np.stack([v, v]), np.array([0.1, 0.2], np.float32)),
        popularity={None: [("i1", 3.5)], "country=DE": [("i1", 2.0)]},
        user_feature_vectors={"country=DE": v * 3},
        item_features={"i7": {"genre": "g2"}, "i8": None},
        model_meta={"dim": 4},
        matrix_version=77,
        seen_max=2,
    )


def test_a_batch_lands_whole(redis_client: redis.Redis, redis_prefix: str) -> None:
    keys = Keys(redis_prefix)
    store = RedisStore(redis_client, keys, "g")
    redis_client.set(keys.item_features("i8"), b"{}")  # a deletion in the batch removes it
    assert store.write_batch(batch({"t:0": None, "t:1": None}, {"t:0": 5, "t:1": 1})) == "written"
    row: Any = redis_client.hgetall(keys.user("u1"))
    np.testing.assert_array_equal(decode_vector(row[b"vec"], 4), np.arange(4))
    # the whole row: nothing else costs memory per user (the 1.5x target of issue 6)
    assert set(row) == {b"vec", b"bias", b"ver", b"n"}
    assert (row[b"bias"], row[b"ver"], row[b"n"]) == (b"0.5", b"1", b"5")
    # biases travel as the shortest text of their float32, and read back exactly
    weird: Any = redis_client.hgetall(keys.user("we{ird}:id"))
    assert weird[b"bias"] == b"-0.25" and b"n" not in weird
    recs = orjson.loads(redis_client.get(keys.recs("u1")))
    assert recs["ver"] == 1 and recs["items"] == [["i2", 1.5], ["i3", 0.25]]
    assert redis_client.zrange(keys.seen("u1"), 0, -1, withscores=True) == [(b"i1", 10.0)]
    assert orjson.loads(redis_client.get(keys.user_features("u1"))) == {"country": "DE"}
    assert redis_client.hget(keys.item("i1"), "bias") == b"0.125"
    assert orjson.loads(redis_client.get(keys.item_features("i1"))) == {"genre": "g1"}
    assert orjson.loads(redis_client.get(keys.item_features("i7"))) == {"genre": "g2"}
    assert redis_client.get(keys.item_features("i8")) is None
    assert orjson.loads(redis_client.get(keys.items_ids)) == ["i1", "i2"]
    assert decode_vector(redis_client.get(keys.items_matrix)).shape == (8,)
    assert redis_client.get(keys.items_ver) == b"77"
    assert redis_client.zscore(keys.popularity(), "i1") == 3.5
    assert redis_client.zscore(keys.popularity("country=DE"), "i1") == 2.0
    ufe = decode_vector(redis_client.hget(keys.user_feature_vectors, "country=DE"), 4)
    np.testing.assert_array_equal(ufe, np.arange(4) * 3)
    assert redis_client.hget(keys.model, "dim") == b"4"
    assert store.read_offsets() == {"t:0": 5, "t:1": 1}


def test_a_replayed_batch_is_a_no_op_and_a_moved_fence_is_refused(
    redis_client: redis.Redis, redis_prefix: str
) -> None:
    store = RedisStore(redis_client, Keys(redis_prefix), "g")
    first = batch({"t:0": None}, {"t:0": 5})
    assert store.write_batch(first) == "written"
    # the same call again (a retry after a lost reply) finds its own offsets: nothing applied
    redis_client.hset(Keys(redis_prefix).user("u1"), "bias", "9")
    assert store.write_batch(first) == "already"
    assert redis_client.hget(Keys(redis_prefix).user("u1"), "bias") == b"9"
    # a writer that believes Redis holds 3 (a zombie) is refused and told what Redis holds
    with pytest.raises(FenceLost) as info:
        store.write_batch(batch({"t:0": 3}, {"t:0": 8}, version=2))
    assert info.value.stored == {"t:0": 5}
    assert redis_client.hget(Keys(redis_prefix).user("u1"), "ver") == b"1"
    assert store.write_batch(batch({"t:0": 5}, {"t:0": 8}, version=2)) == "written"


def test_seen_is_bounded_and_errors_surface(redis_client: redis.Redis, redis_prefix: str) -> None:
    keys = Keys(redis_prefix)
    store = RedisStore(redis_client, keys, "g")
    b = batch({"t:0": None}, {"t:0": 1})
    b.users[0].seen = [("a", 1), ("b", 2), ("c", 3)]
    store.write_batch(b)
    assert redis_client.zrange(keys.seen("u1"), 0, -1) == [b"b", b"c"]  # newest seen_max=2
    redis_client.delete(keys.item("i1"))
    redis_client.rpush(keys.item("i1"), "x")  # HSET on a list fails inside the script
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        store.write_batch(batch({"t:0": 1}, {"t:0": 2}, version=2))


def test_thousands_of_users_in_one_call(redis_client: redis.Redis, redis_prefix: str) -> None:
    keys = Keys(redis_prefix)
    store = RedisStore(redis_client, keys, "g")
    vec = np.ones(8, np.float32)
    users = [
        UserRow(
            f"u{n}",
            vec * n,
            0.0,
            recs=[("i1", 1.0)],
            seen=[(f"i{j}", j) for j in range(20)],
            count=n,
        )
        for n in range(5000)
    ]
    b = BatchWrite({"t:0": None}, {"t:0": 5000}, 3, users=users, seen_max=500)
    b.popularity = {None: [(f"i{j}", float(j)) for j in range(7000)]}
    assert store.write_batch(b) == "written"
    assert decode_vector(redis_client.hget(keys.user("u4999"), "vec"), 8)[0] == 4999
    assert redis_client.zcard(keys.seen("u123")) == 20
    assert redis_client.zcard(keys.popularity()) == 7000


def test_due_lists_are_remembered_until_written(
    redis_client: redis.Redis, redis_prefix: str
) -> None:
    """A user whose list a batch defers is in the group's due set until a later batch writes
    that list, with or without the user's row; a row written without a list changes nothing."""
    keys = Keys(redis_prefix)
    store = RedisStore(redis_client, keys, "g")
    v = np.ones(4, dtype=np.float32)
    first = BatchWrite(
        expected_offsets={"t:0": None},
        new_offsets={"t:0": 3},
        version=1,
        users=[
            UserRow("a", v, 0.0),  # no list: deferred
            UserRow("b", v, 0.0),
            UserRow("c", v, 0.0, recs=[("i1", 1.0)]),
        ],
        recs_due=["a", "b"],
    )
    assert store.write_batch(first) == "written"
    assert store.read_recs_due() == ["a", "b"]
    assert redis_client.get(keys.recs("a")) is None
    second = BatchWrite(
        expected_offsets={"t:0": 3},
        new_offsets={"t:0": 3},
        version=2,
        recs={"a": [("i2", 0.5)]},  # a deferred refresh: a list without the user's row
    )
    assert store.write_batch(second) == "written"
    assert store.read_recs_due() == ["b"]
    assert orjson.loads(redis_client.get(keys.recs("a")))["items"] == [["i2", 0.5]]
    assert redis_client.hget(keys.user("a"), "ver") == b"1"  # the row itself is untouched


def test_a_user_costs_one_small_allocation(redis_client: redis.Redis, redis_prefix: str) -> None:
    """Issue 6's memory target: a dim-64 user (256 vector bytes) with a long negative bias, a
    big version and count stays in jemalloc's 320-byte class for its listpack, 392 B in all
    with the key and Redis's object headers (1.53x; one field more took it to 456 B)."""
    keys = Keys(redis_prefix)
    store = RedisStore(redis_client, keys, "g")
    rng = np.random.default_rng(1)
    users = [
        UserRow(
            f"user{n:07d}",
            rng.standard_normal(64).astype(np.float32),
            -0.012345678,  # 12 characters as float32 text, the longest a bias usually takes
            count=123_456,
        )
        for n in range(50)
    ]
    store.write_batch(BatchWrite({"t:0": None}, {"t:0": 50}, 12_345_678, users=users))
    sizes = {redis_client.memory_usage(keys.user(u.user), samples=0) for u in users}
    assert redis_client.object("encoding", keys.user("user0000000")) == b"listpack"
    assert max(sizes) <= 392, sizes  # type: ignore[operator]
