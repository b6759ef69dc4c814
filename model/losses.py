"""Losses over scores, separate from the towers (TFRS style).

Every loss returns a weighted *sum* over events, not a mean: embedding rows are sparse, and a
mean would divide each row's step by the batch size, so a user seen once in a batch of 4096
would barely move. The sum makes a row's step independent of how many other events share its
batch, as in per-event SGD (LightFM, implicit). Batch-size independence of the clip threshold is
handled where clipping happens.
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf

# Logit of a masked candidate: far below any real score, yet finite, so that the softmax of a
# row whose candidates are all masked stays finite and such a row adds nothing.
MASKED_LOGIT = -1e9


def bpr(
    pos_scores: tf.Tensor, neg_scores: tf.Tensor, weights: tf.Tensor, mask: tf.Tensor
) -> tf.Tensor:
    """Bayesian personalised ranking against negatives shared by the batch.

    pos_scores [B], neg_scores [B, N], weights [B], mask [B, N] (0 where a sampled negative is
    the event's own positive item). Each event's loss is the mean over its valid negatives of
    -log sigmoid(s_pos - s_neg) = softplus(s_neg - s_pos).
    """
    per_pair = tf.nn.softplus(neg_scores - pos_scores[:, None]) * mask
    per_event = tf.reduce_sum(per_pair, axis=1) / tf.maximum(tf.reduce_sum(mask, axis=1), 1.0)
    return tf.reduce_sum(weights * per_event)


# Columns of the shared negatives whose softplus is summed for the *reported* BPR loss of
# `bpr_shared`: the gradient uses every negative, the loss value (a log and metric figure) is
# estimated from this many evenly spread ones, exact up to it. At 1,024 negatives the exact
# softplus over [4096, 1024] took 9 ms of a 39 ms step (log and exp are slow on CPU).
LOSS_SAMPLE_COLUMNS = 128

# A masked (accidental-hit) pair's score: softplus and sigmoid of it are exactly 0 in float32.
MASKED_PAIR = -1e30


def bpr_shared(
    pr: tf.Tensor,
    pos: tf.Tensor,
    neg_q: tf.Tensor,
    neg_b: tf.Tensor,
    weights: tf.Tensor,
    hit_rows: tf.Tensor,
    hit_cols: tf.Tensor,
) -> tf.Tensor:
    """`bpr` against the batch's shared negatives, with its gradient written out.

    pr [B, D] event user vectors, pos [B] positive scores, neg_q [N, D] and neg_b [N] the
    negatives' vectors and biases, weights [B]; (hit_rows, hit_cols) name the accidental hits
    (negative hit_cols is event hit_rows's own positive), masked as `bpr`'s mask does. With
    c_b = w_b / (valid negatives of b) and z_bj = pr_b.q_j + b_j - pos_b, the loss is
    sum_b c_b sum_j softplus(z_bj) and dL/dz_bj = c_b sigmoid(z_bj). So:

        dL/dpr_b = c_b sum_j s_bj q_j      dL/dpos_b = -c_b sum_j s_bj
        dL/dq_j  = sum_b s_bj c_b pr_b     dL/db_j   = sum_b s_bj c_b

    Why by hand: autodiff of `bpr` makes some twenty passes over the [B, N] pairs (compare,
    cast, add, subtract, softplus, mask, reductions and each of their gradients), which cost
    more than the three matrix products at N = 1,024. Here the biases and -pos ride in the
    forward product as two extra columns, the row sums in the backward products as a column of
    ones, and c is applied to [B, D] operands instead of the [B, N] pairs: one product, one
    scatter of the hits and one sigmoid over the pairs. The reported value is estimated from
    `LOSS_SAMPLE_COLUMNS` of the negatives (exact up to that many).
    """
    b = tf.shape(pr)[0]
    n = tf.shape(neg_q)[0]
    hits = tf.stack([hit_rows, hit_cols], axis=1)
    n_hits = tf.math.unsorted_segment_sum(tf.ones_like(hit_rows, tf.float32), hit_rows, b)
    valid = tf.cast(n, tf.float32) - n_hits
    c = weights / tf.maximum(valid, 1.0)
    ones_b = tf.ones([b, 1])
    ones_n = tf.ones([n, 1])
    cols = tf.range(LOSS_SAMPLE_COLUMNS) * n // LOSS_SAMPLE_COLUMNS

    @tf.custom_gradient
    def loss_of(
        pr: tf.Tensor, pos: tf.Tensor, neg_q: tf.Tensor, neg_b: tf.Tensor
    ) -> tuple[tf.Tensor, Any]:
        z = tf.matmul(
            tf.concat([pr, ones_b, -pos[:, None]], axis=1),
            tf.concat([neg_q, neg_b[:, None], ones_n], axis=1),
            transpose_b=True,
        )
        z = tf.tensor_scatter_nd_update(z, hits, tf.fill(tf.shape(hit_rows), MASKED_PAIR))

        def sampled() -> tuple[tf.Tensor, tf.Tensor]:
            zs = tf.gather(z, cols, axis=1)
            return zs, tf.reduce_sum(tf.cast(zs > MASKED_PAIR, tf.float32), axis=1)

        # Up to the sample size every column counts (a gather of all would cost a copy).
        zs, valid_s = tf.cond(n > LOSS_SAMPLE_COLUMNS, sampled, lambda: (z, valid))
        per_event = tf.reduce_sum(tf.nn.softplus(zs), axis=1) / tf.maximum(valid_s, 1.0)
        loss = tf.reduce_sum(weights * per_event)

        def grad(upstream: tf.Tensor) -> tuple[tf.Tensor, ...]:
            sig = tf.math.sigmoid(z)
            cu = c * upstream
            by_row = tf.matmul(sig, tf.concat([neg_q, ones_n], axis=1))  # [B, D + 1]
            by_col = tf.matmul(  # [N, D + 1]
                sig, tf.concat([pr * cu[:, None], cu[:, None]], axis=1), transpose_a=True
            )
            return by_row[:, :-1] * cu[:, None], -by_row[:, -1] * cu, by_col[:, :-1], by_col[:, -1]

        return loss, grad

    return loss_of(pr, pos, neg_q, neg_b)


def sampled_softmax(
    logits: tf.Tensor, labels: tf.Tensor, logq: tf.Tensor, weights: tf.Tensor, mask: tf.Tensor
) -> tf.Tensor:
    """Softmax cross-entropy over candidates with the log-q correction (Yi et al., 2019).

    logits [B, C] raw scores of every candidate, labels [B] the column of each event's positive,
    logq [C] log of each candidate's expected count among the candidates (popular items are
    candidates more often and would otherwise be over-penalised), mask [B, C] 0 for accidental
    hits (a sampled negative that is the event's own positive).
    """
    corrected = logits - logq[None, :]
    corrected = tf.where(mask > 0, corrected, tf.constant(MASKED_LOGIT, corrected.dtype))
    pos = tf.gather(corrected, labels, axis=1, batch_dims=1)
    per_event = tf.reduce_logsumexp(corrected, axis=1) - pos
    return tf.reduce_sum(weights * per_event)


def pointwise(scores: tf.Tensor, labels: tf.Tensor, weights: tf.Tensor) -> tf.Tensor:
    """Sigmoid cross-entropy for explicit feedback: dislikes (label 0) and ratings (soft label).

    Implicit losses only rank items against each other; an explicit "no" needs an absolute
    target. softplus(s) - y*s is -y log sigmoid(s) - (1-y) log(1 - sigmoid(s)), overflow-free.
    """
    return tf.reduce_sum(weights * (tf.nn.softplus(scores) - labels * scores))
