"""User and item towers: an id embedding plus the sum of its feature embeddings (LightFM).

The towers only build representations from rows already gathered out of the tables; they know
nothing about losses or optimisers (TFRS's split), so the same code serves every loss.
"""

from __future__ import annotations

import tensorflow as tf


def embed(
    id_rows: tf.Tensor, feature_rows: tf.Tensor, pair_entity: tf.Tensor, pair_feature: tf.Tensor
) -> tf.Tensor:
    """[n, d] representations: id_rows[e] + sum of feature_rows[f] over pairs (e, f).

    Features come as (entity, feature) pairs rather than a padded [n, max_features] block, so
    one user with ten thousand tags costs ten thousand rows, not ten thousand per user.
    """
    summed = tf.math.unsorted_segment_sum(
        tf.gather(feature_rows, pair_feature), pair_entity, num_segments=tf.shape(id_rows)[0]
    )
    return id_rows + summed
