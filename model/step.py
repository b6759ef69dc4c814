"""The compiled learn step: gather a batch's rows, compute the loss, update the tables.

One `tf.function` per combination of batch contents (`batch.StepKey`), with a fixed signature
of three flat tensors (`batch.INT_FIELDS`, `batch.FLOAT_FIELDS`) whose sizes are unknown: each
variant is traced once per model, whatever the batch size and however far the tables grow.
The towers (`towers`) build representations and the losses (`losses`) score them (TFRS's
split); this module owns the optimiser: gradient scaling and clipping, lazy weight decay, and
the sparse SGD or Adagrad update, applied only when the loss and every gradient are finite.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import tensorflow as tf

from streamrec.model import batch as packing
from streamrec.model import losses, towers
from streamrec.model.config import ModelConfig
from streamrec.model.side import Side
from streamrec.model.tables import GrowingTable

log = logging.getLogger(__name__)

ADAGRAD_EPS = 1e-7  # Keras's Adagrad epsilon
_I32 = tf.TensorSpec([None], tf.int32)
_F32 = tf.TensorSpec([None], tf.float32)


def warm_keys(config: ModelConfig) -> list[packing.StepKey]:
    """The variants a stream is likely to need: ranking events with and without user and item
    features, and with explicit feedback when the config weighs any (ratings, dislikes)."""
    weights = config.event_weights
    explicit = min(weights.values()) < 0 or weights.get("rating", 0.0) > 0
    return [
        (True, has_pt, has_uf, has_if)
        for has_pt in ((False, True) if explicit else (False,))
        for has_uf in (False, True)
        for has_if in (False, True)
    ]


def compile_step(
    config: ModelConfig, users: Side, items: Side, gbias: GrowingTable, key: packing.StepKey
) -> Any:
    """`build_step`, then run once on an empty batch: the first call of a graph pays TF's
    graph optimisation (as long again as the trace), which belongs here, not in a batch."""
    t0 = time.perf_counter()
    step = build_step(config, users, items, gbias, *key)
    # The loss of no events is 0 and every gradient is 0 (the global bias has no weight
    # decay), so an Adagrad or SGD update leaves every value as it was.
    step(*(tf.constant(a) for a in packing.empty()))
    log.debug("learn step %s compiled in %.0f ms", key, (time.perf_counter() - t0) * 1e3)
    return step


def run(step: Any, batch: packing.Batch, repeats: int) -> tuple[float, bool]:
    """(loss of the last step, whether every step applied); stops at the first step whose
    loss or gradients were not finite (that step applied nothing, earlier ones stay)."""
    packed = (tf.constant(batch.ints), tf.constant(batch.sizes), tf.constant(batch.floats))
    total = 0.0
    for _ in range(repeats):
        loss_t, ok_t = step(*packed)
        if not bool(ok_t):
            return total, False
        total = float(loss_t)
    return total, True


def build_step(
    config: ModelConfig,
    users: Side,
    items: Side,
    gbias: GrowingTable,
    has_rank: bool,
    has_pt: bool,
    has_uf: bool,
    has_if: bool,
) -> Any:
    """The compiled step for one combination of batch contents.

    Parts a batch does not have (features, explicit feedback) are left out of the graph
    rather than fed empty tensors: every op has a fixed cost, paid on every batch. At most
    16 variants exist, each traced once.
    """
    cfg = config
    lr = cfg.learning_rate
    l2 = cfg.l2
    clip = cfg.clip_norm
    adagrad = cfg.optimizer == "adagrad"
    softmax = cfg.loss == "softmax"
    scaled = cfg.row_scaling > 0 or cfg.user_gradient_scale != 1.0
    n_ints, n_floats = packing.N_INTS, packing.N_FLOATS

    item_tables = [id(t) for t in items.tables]
    item_lr = cfg.item_learning_rate or lr

    def apply(table: GrowingTable, idx: tf.Tensor, g: tf.Tensor) -> Any:
        lr_t = item_lr if id(table) in item_tables else lr
        if adagrad:
            assert table.acc is not None
            table.acc.scatter_add(tf.IndexedSlices(g * g, idx))
            a = tf.gather(table.acc, idx)
            step = lr_t * g / (tf.sqrt(a) + ADAGRAD_EPS)
            return table.var.scatter_sub(tf.IndexedSlices(step, idx))
        return table.var.scatter_sub(tf.IndexedSlices(lr_t * g, idx))

    signature = [_I32, _I32, _F32]

    # autograph off: the step is plain graph code (tf.cond below), and tracing without the
    # source transformation is several times faster, which every new variant pays once.
    @tf.function(input_signature=signature, autograph=False)
    def step(ints: tf.Tensor, sizes: tf.Tensor, floats: tf.Tensor) -> tuple[Any, Any]:
        (
            u_set, uf_set, uf_e, uf_f, i_set, if_set, if_e, if_f,
            r_u, r_i, neg, cand, r_cand, p_u, p_i, hit_b, hit_j,
        ) = tf.split(ints, sizes[:n_ints], num=n_ints)  # fmt: skip
        (
            r_w, neg_logq, cand_logq, p_w, p_y, n_active,
            s_u, s_i, s_uf, s_b0, s_if,
        ) = tf.split(floats, sizes[n_ints:], num=n_floats)  # fmt: skip
        row_scale = {"eu": s_u, "bu": s_u, "ei": s_i, "bi": s_i, "fu": s_uf, "fi": s_if}
        row_scale["b0"] = s_b0
        zero = tf.zeros([1], tf.int32)
        slots: dict[str, tuple[GrowingTable, tf.Tensor]] = {
            "eu": (users.emb, u_set),
            "ei": (items.emb, i_set),
            "bi": (items.bias, i_set),
        }
        if has_uf:
            slots["fu"] = (users.femb, uf_set)
        if has_if:
            slots["fi"] = (items.femb, if_set)
        if has_pt:
            slots["bu"] = (users.bias, u_set)
            slots["b0"] = (gbias, zero)
        names = list(slots)
        params = [tf.gather(table.var, idx) for table, idx in slots.values()]
        with tf.GradientTape() as tape:
            tape.watch(params)
            x = dict(zip(names, params, strict=True))
            p = towers.embed(x["eu"], x["fu"], uf_e, uf_f) if has_uf else x["eu"]
            qv = towers.embed(x["ei"], x["fi"], if_e, if_f) if has_if else x["ei"]
            bi = x["bi"]
            loss = tf.constant(0.0)
            if has_rank:
                pr = tf.gather(p, r_u)
                neg_q = tf.gather(qv, neg)
                neg_b = tf.gather(bi, neg)
                if softmax:
                    not_hit = tf.cast(neg[None, :] != r_i[:, None], tf.float32)
                    negs = tf.matmul(pr, neg_q, transpose_b=True) + neg_b[None, :]
                    cq = tf.gather(qv, cand)
                    in_batch = tf.matmul(pr, cq, transpose_b=True) + tf.gather(bi, cand)[None]
                    mask = tf.concat([tf.ones_like(in_batch), not_hit], axis=1)
                    loss += losses.sampled_softmax(
                        tf.concat([in_batch, negs], axis=1),
                        r_cand,
                        tf.concat([cand_logq, neg_logq], axis=0),
                        r_w,
                        mask,
                    )
                else:
                    pos = tf.reduce_sum(pr * tf.gather(qv, r_i), axis=1) + tf.gather(bi, r_i)
                    loss += losses.bpr_shared(pr, pos, neg_q, neg_b, r_w, hit_b, hit_j)
            if has_pt:
                scores = (
                    x["b0"][0]
                    + tf.gather(x["bu"], p_u)
                    + tf.gather(bi, p_i)
                    + tf.reduce_sum(tf.gather(p, p_u) * tf.gather(qv, p_i), axis=1)
                )
                loss += losses.pointwise(scores, p_y, p_w)
        grads = tape.gradient(loss, params, unconnected_gradients=tf.UnconnectedGradients.ZERO)
        # Gradients of gathers over the batch's own (small) unique-row sets may come back
        # as IndexedSlices; densify those, never the tables'.
        grads = [tf.convert_to_tensor(g) for g in grads]
        ok = tf.math.is_finite(loss)
        for g in grads:
            ok = tf.logical_and(ok, tf.reduce_all(tf.math.is_finite(g)))
        if scaled:
            grads = [
                g * (row_scale[n][:, None] if g.shape.rank == 2 else row_scale[n])
                for n, g in zip(names, grads, strict=True)
            ]
        if clip > 0:
            norm = tf.linalg.global_norm(grads)
            limit = clip * tf.sqrt(tf.maximum(n_active[0], 1.0))
            scale = tf.minimum(1.0, limit / tf.maximum(norm, 1e-30))
            grads = [g * scale for g in grads]
        if l2 > 0:
            # Lazy weight decay: only rows in the batch, as a sparse model must; the
            # global bias is not decayed.
            grads = [
                g if name == "b0" else g + l2 * v
                for name, g, v in zip(names, grads, params, strict=True)
            ]

        def update() -> tf.Tensor:
            ops = [
                apply(table, idx, g) for (table, idx), g in zip(slots.values(), grads, strict=True)
            ]
            with tf.control_dependencies(ops):
                return tf.constant(True)

        # Nothing at all is applied unless the loss and every gradient are finite.
        applied = tf.cond(ok, update, lambda: tf.constant(False))
        return loss, applied

    # Every variant is traced exactly once (fixed signature), but all share this code
    # object, so TF's "frequent retracing" heuristic would warn about a non-problem.
    step._omit_frequent_tracing_warning = True
    return step


def tracing_count(steps: dict[packing.StepKey, Any]) -> int:
    """Traces of these compiled steps: one per variant, never one per batch."""
    return sum(int(f.experimental_get_tracing_count()) for f in steps.values())
