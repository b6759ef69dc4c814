"""The numpy step for small batches (`small_step`) against the compiled TensorFlow step.

Two models with the same seed learn the same small batches, one through each path
(`small_batch_max` 0 forces the compiled step everywhere): every table, accumulator, count and
top-k list must agree, up to float32 rounding in the tables. Each variant the compiled step has
(bpr/softmax, sgd/adagrad, user and item features, explicit feedback, several steps) is run,
so a wrong formula in any branch fails here.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from streamrec.model.config import ModelConfig
from streamrec.model.online import OnlineRecommender
from streamrec.model.runtime import configure_threads
from streamrec.model.testing import Event

configure_threads(1, 1)  # before the first TF op: 2 shared cores


def _stream(seed: int, n_batches: int, features: bool, explicit: bool) -> list[list[Event]]:
    rng = np.random.default_rng(seed)
    types = ["view", "click", "purchase"] + (["dislike", "rating"] if explicit else [])
    out = []
    for b in range(n_batches):
        batch = []
        for j in range(int(rng.integers(1, 17))):
            u, i = int(rng.integers(0, 40)), int(min(rng.zipf(1.3), 60))
            t = types[int(rng.integers(0, len(types)))]
            value = float(rng.integers(1, 6)) if t == "rating" else None
            uf = {"country": ["DE", "FR", "US"][u % 3]} if features and u % 2 else None
            itf = {"genre": f"g{i % 4}", "tag": [f"t{i % 3}", "x"]} if features and i % 3 else None
            batch.append(Event(f"u{u}", f"i{i}", t, value, 1_000 * b + j, uf, itf))
        out.append(batch)
    return out


def _state(rec: OnlineRecommender) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {"gbias": rec.gbias.var.numpy()}
    for side in (rec.users, rec.items):
        for t in side.tables:
            out[t.name] = t.var.numpy()
            if t.acc is not None:
                out[t.name + "_acc"] = t.acc.numpy()
        out[side.name + "_count"] = side.count.copy()
        out[side.name + "_ftrained"] = side.ftrained.copy()
    return out


CASES: list[dict[str, Any]] = [
    {"loss": "bpr", "optimizer": "sgd"},
    {"loss": "bpr", "optimizer": "adagrad"},
    {"loss": "softmax", "optimizer": "sgd"},
    {"loss": "softmax", "optimizer": "adagrad"},
    {"loss": "bpr", "optimizer": "sgd", "negatives": 200},  # more negatives than the loss sample
    {"loss": "softmax", "optimizer": "adagrad", "negatives": 32, "steps_per_batch": 2},
    {"loss": "bpr", "optimizer": "sgd", "negatives": 16, "row_scaling": 0.0, "l2": 0.0},
    {"loss": "bpr", "optimizer": "adagrad", "negatives": 16, "clip_norm": 0.0},
]


@pytest.mark.parametrize("features", [False, True], ids=["plain", "features"])
@pytest.mark.parametrize("explicit", [False, True], ids=["implicit", "explicit"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(f"{v}" for v in c.values()))
def test_numpy_step_matches_compiled_step(
    case: dict[str, Any], features: bool, explicit: bool
) -> None:
    if case["optimizer"] == "sgd":
        # The defaults are tuned for Adagrad; plain SGD at them grows rows past 10 in these
        # steps, where float32 order alone moves results by 1e-3. SGD runs as it was tuned.
        case = {"clip_norm": 1.0, "user_gradient_scale": 4.0, **case}
    cfg = ModelConfig(dim=8, seed=3, initial_capacity=16, **case)
    fast, ref = OnlineRecommender(cfg), OnlineRecommender(cfg)
    ref.small_batch_max = 0
    assert fast.small_batch_max >= 16
    skipped = 0
    for batch in _stream(7, 40, features, explicit):
        a, b = fast.learn(batch), ref.learn(batch)
        assert a.skipped_nonfinite == b.skipped_nonfinite
        skipped += a.skipped_nonfinite
        assert a.touched_users == b.touched_users and a.touched_items == b.touched_items
        if np.isnan(b.loss):
            assert np.isnan(a.loss)
        else:
            np.testing.assert_allclose(a.loss, b.loss, rtol=1e-4, atol=1e-5)
    assert skipped == 0
    assert ref.tracing_count > 0 and fast.tracing_count == 0  # each path really ran
    sa, sb = _state(fast), _state(ref)
    assert sa.keys() == sb.keys()
    for name in sa:
        np.testing.assert_allclose(sa[name], sb[name], rtol=1e-3, atol=2e-5, err_msg=name)
    for u in ["u1", "u2", "u3", "u8", "u39"]:
        ra, rb = fast.recommend(u, 10, exclude={"i1"}), ref.recommend(u, 10, exclude={"i1"})
        assert [i for i, _ in ra] == [i for i, _ in rb]
        np.testing.assert_allclose([s for _, s in ra], [s for _, s in rb], rtol=1e-4, atol=1e-5)


def test_non_finite_batch_is_skipped_on_the_numpy_path() -> None:
    """A NaN rating value makes the loss non-finite: nothing is applied, as on the TF path."""
    cfg = ModelConfig(dim=4, seed=1, negatives=8)
    rec = OnlineRecommender(cfg)
    rec.learn([Event("u1", "i1"), Event("u2", "i2")])
    before = _state(rec)
    res = rec.learn([Event("u1", "i2", "rating", float("nan"))])
    assert res.skipped_nonfinite and rec.skipped_nonfinite == 1
    after = _state(rec)
    for name in before:
        np.testing.assert_array_equal(before[name], after[name], err_msg=name)


@pytest.mark.parametrize("features", [False, True], ids=["plain", "features"])
@pytest.mark.parametrize("optimizer", ["sgd", "adagrad"])
def test_item_matrix_updated_row_by_row_equals_a_rebuild(features: bool, optimizer: str) -> None:
    """After every learn (small batches on the numpy path, large ones on the compiled step,
    new items, catalogue features) the cached matrix equals one built from the tables; a
    snapshot handed out by item_vectors() does not change under later learns."""
    from streamrec.model import serving

    cfg = ModelConfig(dim=8, seed=5, initial_capacity=16, negatives=32, optimizer=optimizer)
    rec = OnlineRecommender(cfg)
    stream = _stream(11, 30, features, explicit=True)
    snapshot = None
    for j, batch in enumerate(stream):
        rec.learn(batch * (5 if j % 7 == 3 else 1))  # every seventh above small_batch_max
        if j % 10 == 5:
            rec.set_item_features(f"new{j}", {"genre": "g1"} if features else None)
        if j % 3 == 0:
            vecs, biases = rec._item_matrix()
            want_v, want_b = serving.matrix(rec.items)
            np.testing.assert_array_equal(vecs, want_v)
            np.testing.assert_array_equal(biases, want_b)
        if j == 12:
            snapshot = rec.item_vectors()
            frozen = snapshot.vectors.copy(), snapshot.biases.copy()
    assert snapshot is not None
    np.testing.assert_array_equal(snapshot.vectors, frozen[0])
    np.testing.assert_array_equal(snapshot.biases, frozen[1])
    vecs, biases = rec._item_matrix()
    assert vecs.shape[0] == rec.n_items > frozen[0].shape[0] - 1
    np.testing.assert_array_equal(vecs, serving.matrix(rec.items)[0])


def test_accidental_hits_same_pairs_in_the_same_order_on_both_paths() -> None:
    """Pairs compared directly (few events) or found by sorting (many): by event, then column."""
    from streamrec.model.batch import accidental_hits

    rng = np.random.default_rng(2)
    for b, n in [(16, 1024), (300, 1024), (70, 1000)]:  # 16k pairs: direct; 307k, 70k: sorted
        r_i = rng.integers(0, 50, b)
        neg = rng.integers(0, 50, n)
        rows, cols = accidental_hits(r_i, neg)
        want_rows, want_cols = np.nonzero(r_i[:, None] == neg[None, :])
        assert rows.tolist() == want_rows.tolist() and cols.tolist() == want_cols.tolist()
