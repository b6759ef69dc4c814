"""`learn_columns` is `learn` without event objects: the same update, bit for bit.

The trainer and the evaluators call `learn(events)`; a caller that parses straight into columns
calls `learn_columns`. Both must leave identical tables, counters, popularity and sampler state,
on a stream with features, ratings (with and without a value), dislikes and unknown types.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from streamrec.model.config import ModelConfig
from streamrec.model.online import OnlineRecommender
from streamrec.model.runtime import configure_threads
from streamrec.model.testing import Event, planted_stream, table_state

configure_threads(1, 1)  # before the first TF op: 2 shared cores


def mixed_stream(n: int = 900) -> list[Event]:
    out = []
    for j, e in enumerate(planted_stream(50, 30, n, n_clusters=3, seed=5)):
        if j % 5 == 0:
            e = dataclasses.replace(e, user_features={"country": ["DE", "FR", "US"][j % 3]})
        if j % 9 == 0:
            e = dataclasses.replace(e, item_features={"genre": f"g{j % 4}"})
        if j % 13 == 0:
            e = dataclasses.replace(e, type="rating", value=float(j % 5 + 1))
        if j % 31 == 0:
            e = dataclasses.replace(e, type="rating", value=None)
        if j % 17 == 0:
            e = dataclasses.replace(e, type="dislike")
        if j % 23 == 0:
            e = dataclasses.replace(e, type="share")  # not in the config: ignored
        out.append(e)
    return out


def snapshot(rec: OnlineRecommender) -> dict[str, np.ndarray]:
    out = table_state(rec)
    for side in (rec.users, rec.items):
        out[f"{side.name}_count"] = side.count[: side.n_init].copy()
        out[f"{side.name}_ftrained"] = side.ftrained[: side.f_init].copy()
    out["popularity"] = rec.popularity._counts[: rec.n_items].copy()
    out["sampler"] = rec.sampler.buffer[: rec.sampler.filled].copy()
    return out


@pytest.mark.parametrize("optimizer", ["sgd", "adagrad"])
def test_learn_columns_matches_learn(optimizer: str) -> None:
    cfg = ModelConfig(dim=8, optimizer=optimizer, negatives=16, initial_capacity=4, seed=3)
    a, b = OnlineRecommender(cfg), OnlineRecommender(cfg)
    events = mixed_stream()
    for s in range(0, len(events), 100):
        part = events[s : s + 100]
        ra = a.learn(part)
        rb = b.learn_columns(
            [e.user for e in part],
            [e.item for e in part],
            [e.type for e in part],
            np.asarray([e.ts for e in part], dtype=np.int64),
            values=[e.value for e in part],
            user_features=[e.user_features for e in part],
            item_features=[e.item_features for e in part],
        )
        assert dataclasses.replace(ra, loss=0.0) == dataclasses.replace(rb, loss=0.0)
        np.testing.assert_array_equal(ra.loss, rb.loss)  # nan == nan here
        # the cached global bias follows every step that moves it
        assert a.global_bias == float(a.gbias.var.numpy()[0])
    sa, sb = snapshot(a), snapshot(b)
    assert sa.keys() == sb.keys()
    for k in sa:
        np.testing.assert_array_equal(sa[k], sb[k], err_msg=k)
    assert a.users.tokens == b.users.tokens and a.items.tokens == b.items.tokens
    # The stream did exercise every path: features, ratings and dislikes were learned.
    assert a.users.ftrained.any() and a.items.ftrained.any()
    assert a.global_bias != 0.0


def test_learn_columns_rejects_ragged_columns() -> None:
    rec = OnlineRecommender(ModelConfig(dim=4))
    with pytest.raises(ValueError, match="differ in length"):
        rec.learn_columns(["u1", "u2"], ["i1"], ["view", "view"], [1, 2])
    assert rec.n_users == 0  # nothing registered by a rejected batch


def test_feature_sums_equal_numpy_add_at_bit_for_bit() -> None:
    """Served vectors add feature rows with `_add_rows`, which must give np.add.at's sums in
    np.add.at's order (float addition is not associative): random rows, repeats, any order."""
    from streamrec.model.online import _add_rows

    rng = np.random.default_rng(1)
    for trial in range(300):
        n, d, pairs = int(rng.integers(1, 40)), int(rng.integers(1, 6)), int(rng.integers(0, 150))
        rows = rng.integers(0, n, pairs)
        values = rng.standard_normal((pairs, d)).astype(np.float32) * 10.0 ** rng.integers(-3, 4)
        want = rng.standard_normal((n, d)).astype(np.float32)
        got = want.copy()
        np.add.at(want, rows, values)
        _add_rows(got, rows, values)
        np.testing.assert_array_equal(got, want, err_msg=f"trial {trial}")
