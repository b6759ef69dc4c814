"""Losses over scores, separate from the towers (TFRS style).

Every loss returns a weighted *sum* over events, not a mean: embedding rows are sparse, and a
mean would divide each row's step by the batch size, so a user seen once in a batch of 4096
would barely move. The sum makes a row's step independent of how many other events share its
batch, as in per-event SGD (LightFM, implicit). Batch-size independence of the clip threshold is
handled where clipping happens.
"""

from __future__ import annotations

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
