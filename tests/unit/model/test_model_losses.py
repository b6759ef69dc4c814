"""`losses.bpr_shared`'s hand-written gradient against autodiff of the definition (`bpr`),
and the host-side search for accidental hits against all pairs compared."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from streamrec.model import losses
from streamrec.model.online import _accidental_hits
from streamrec.model.runtime import configure_threads

configure_threads(1, 1)


def _case(b: int, n: int, seed: int) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    r_i = rng.integers(0, 12, b).astype(np.int32)  # few items: hits and repeats are common
    neg = rng.integers(0, 12, n).astype(np.int32)
    return (
        rng.standard_normal((b, 5)).astype(np.float32),
        rng.standard_normal((b, 5)).astype(np.float32),  # the positives' vectors
        rng.standard_normal((n, 5)).astype(np.float32),
        rng.standard_normal(n).astype(np.float32),
        rng.uniform(0.5, 2.0, b).astype(np.float32),
        r_i,
        neg,
    )


def _grads(fn: object, case: tuple[np.ndarray, ...]) -> tuple[float, list[np.ndarray]]:
    pr, q_pos, neg_q, neg_b, w, r_i, neg = (tf.constant(x) for x in case)
    with tf.GradientTape() as tape:
        tape.watch([pr, q_pos, neg_q, neg_b])
        pos = tf.reduce_sum(pr * q_pos, axis=1)
        loss = fn(pr, pos, neg_q, neg_b, w, r_i, neg)  # type: ignore[operator]
    return float(loss), [g.numpy() for g in tape.gradient(loss, [pr, q_pos, neg_q, neg_b])]


def _reference(pr, pos, neg_q, neg_b, w, r_i, neg):  # type: ignore[no-untyped-def]
    negs = tf.matmul(pr, neg_q, transpose_b=True) + neg_b[None, :]
    return losses.bpr(pos, negs, w, tf.cast(neg[None, :] != r_i[:, None], tf.float32))


def _fused(pr, pos, neg_q, neg_b, w, r_i, neg):  # type: ignore[no-untyped-def]
    rows, cols = _accidental_hits(r_i.numpy(), neg.numpy())
    return losses.bpr_shared(
        pr, pos, neg_q, neg_b, w, tf.constant(rows, tf.int32), tf.constant(cols, tf.int32)
    )


@pytest.mark.parametrize("b,n,seed", [(1, 1, 0), (7, 3, 1), (40, 100, 2), (33, 128, 3)])
def test_bpr_shared_matches_autodiff_of_bpr(b: int, n: int, seed: int) -> None:
    case = _case(b, n, seed)
    want_loss, want = _grads(_reference, case)
    got_loss, got = _grads(_fused, case)
    assert got_loss == pytest.approx(want_loss, rel=1e-5)  # exact up to 128 negatives
    for g, r in zip(got, want, strict=True):
        np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-5)


def test_bpr_shared_estimates_the_loss_beyond_128_negatives() -> None:
    case = _case(64, 1000, 4)
    want_loss, want = _grads(_reference, case)
    got_loss, got = _grads(_fused, case)
    for g, r in zip(got, want, strict=True):  # the gradient is still exact
        np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-5)
    # 128 of 1,000 columns: an estimate, close but not equal.
    assert got_loss != want_loss and got_loss == pytest.approx(want_loss, rel=0.1)


def test_a_batch_whose_negatives_are_all_hits_adds_nothing() -> None:
    case = list(_case(3, 4, 5))
    case[5] = np.full(3, 7, np.int32)
    case[6] = np.full(4, 7, np.int32)
    loss, grads = _grads(_fused, tuple(case))
    assert loss == 0.0 and all(not g.any() for g in grads)


def test_accidental_hits_are_every_equal_pair() -> None:
    rng = np.random.default_rng(6)
    for _ in range(200):
        r_i = rng.integers(0, 20, rng.integers(0, 30))
        neg = rng.integers(0, 20, rng.integers(0, 30))
        rows, cols = _accidental_hits(r_i, neg)
        want = sorted(zip(*np.nonzero(r_i[:, None] == neg[None, :]), strict=True))
        assert sorted(zip(rows.tolist(), cols.tolist(), strict=True)) == want
