"""The learn step in numpy, for small batches: the same update as the compiled step.

A compiled step costs about a millisecond whatever the batch holds (a few hundred graph ops at
a few microseconds each); a batch of 1-16 events needs a few dozen small numpy operations on
the rows it touches. This path gathers those rows from the tables (one raw op per table),
computes the loss and its gradients by hand (the same formulas as `losses` and `step`, in
float32), and writes the updated rows back with one raw scatter per table. It reads the same packed
arrays as the compiled step (`batch.INT_FIELDS`, `batch.FLOAT_FIELDS`), so every variant
(bpr/softmax, sgd/adagrad, features, explicit feedback) is covered; results match the compiled
step to float32 rounding (tests/unit/model/test_small_step.py).
"""

from __future__ import annotations

import numpy as np

from streamrec.model import batch as packing
from streamrec.model.config import ModelConfig
from streamrec.model.losses import LOSS_SAMPLE_COLUMNS, MASKED_LOGIT, MASKED_PAIR
from streamrec.model.side import Side
from streamrec.model.step import ADAGRAD_EPS
from streamrec.model.tables import GrowingTable

# Batches of at most this many events take this path (`OnlineRecommender.small_batch_max`).
# Its cost grows with events x negatives while the compiled step's is mostly fixed; where the
# two cross is measured in docs/performance.md ("Small batches").
SMALL_BATCH_MAX_EVENTS = 64

_F = np.float32


def _sigmoid(z: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        return _F(1.0) / (_F(1.0) + np.exp(-z))


def _softplus(z: np.ndarray) -> np.ndarray:
    return np.logaddexp(_F(0.0), z)


def _scatter(out: np.ndarray, idx: np.ndarray, values: np.ndarray) -> None:
    """out[idx] += values, repeated indices summed (the gradient of a gather)."""
    if idx.shape[0]:
        np.add.at(out, idx, values)


def _unpack(batch: packing.Batch) -> dict[str, np.ndarray]:
    """The packed fields by name (views; np.split costs four times as much)."""
    sizes = batch.sizes.tolist()
    out: dict[str, np.ndarray] = {}
    start = 0
    for name, size in zip(packing.INT_FIELDS, sizes, strict=False):
        out[name] = batch.ints[start : start + size]
        start += size
    start = 0
    for name, size in zip(packing.FLOAT_FIELDS, sizes[packing.N_INTS :], strict=True):
        out[name] = batch.floats[start : start + size]
        start += size
    return out


def run(
    config: ModelConfig,
    users: Side,
    items: Side,
    gbias: GrowingTable,
    batch: packing.Batch,
    repeats: int,
    written: dict[str, np.ndarray] | None = None,
) -> tuple[float, bool]:
    """`step.run` for this batch without TensorFlow's graph: (loss of the last step, whether
    every step applied); stops at the first step whose loss or gradients were not finite.

    `written` receives the new values of the rows updated ("ei", "bi": item embeddings and
    biases at batch.i_set), bit for bit what the tables now hold."""
    a = _unpack(batch)
    has_rank, has_pt, has_uf, has_if = batch.key
    slots: dict[str, tuple[GrowingTable, np.ndarray]] = {
        "eu": (users.emb, a["u_set"]),
        "ei": (items.emb, a["i_set"]),
        "bi": (items.bias, a["i_set"]),
    }
    if has_uf:
        slots["fu"] = (users.femb, a["uf_set"])
    if has_if:
        slots["fi"] = (items.femb, a["if_set"])
    if has_pt:
        slots["bu"] = (users.bias, a["u_set"])
        slots["b0"] = (gbias, np.zeros(1, np.int32))
    total = 0.0
    for _ in range(repeats):
        loss, ok = _once(config, slots, a, has_rank, has_pt, has_uf, has_if, written)
        if not ok:
            return total, False
        total = loss
    return total, True


def _once(
    cfg: ModelConfig,
    slots: dict[str, tuple[GrowingTable, np.ndarray]],
    a: dict[str, np.ndarray],
    has_rank: bool,
    has_pt: bool,
    has_uf: bool,
    has_if: bool,
    written: dict[str, np.ndarray] | None,
) -> tuple[float, bool]:
    x = {name: table.get_rows(idx) for name, (table, idx) in slots.items()}
    g = {name: np.zeros_like(v) for name, v in x.items()}
    # towers: p = e(user) + sum of its feature rows, q likewise
    p = x["eu"].copy()
    if has_uf:
        _scatter(p, a["uf_e"], x["fu"][a["uf_f"]])
    qv = x["ei"].copy()
    if has_if:
        _scatter(qv, a["if_e"], x["fi"][a["if_f"]])
    bi = x["bi"]
    gp = np.zeros_like(p)
    gq = np.zeros_like(qv)
    gbi = g["bi"]
    loss = _F(0.0)
    if has_rank:
        r_u, r_i, w = a["r_u"], a["r_i"], a["r_w"]
        pr = p[r_u]
        # Repeated negatives (draws with replacement) have equal columns everywhere: each
        # distinct one is computed once and counted `mult` times, which also turns the
        # scatter of their gradients into a plain indexed add.
        neg, neg_inv, mult = np.unique(a["neg"], return_inverse=True, return_counts=True)
        mult = mult.astype(_F)
        neg_q = qv[neg]
        neg_b = bi[neg]
        if cfg.loss == "softmax":
            cand, r_cand = a["cand"], a["r_cand"]
            cq = qv[cand]
            logits = np.concatenate([pr @ cq.T + bi[cand][None, :], pr @ neg_q.T + neg_b], axis=1)
            neg_logq = np.zeros(neg.shape[0], _F)
            neg_logq[neg_inv] = a["neg_logq"]  # the same for every copy of a negative
            logq = np.concatenate([a["cand_logq"], neg_logq - np.log(mult)])
            mask = np.concatenate(
                [np.ones((pr.shape[0], cand.shape[0]), bool), neg[None, :] != r_i[:, None]],
                axis=1,
            )
            corrected = np.where(mask, logits - logq[None, :], _F(MASKED_LOGIT))
            top = corrected.max(axis=1, keepdims=True)
            ex = np.exp(corrected - top)
            sums = ex.sum(axis=1, keepdims=True)
            rows = np.arange(pr.shape[0])
            per_event = (np.log(sums) + top)[:, 0] - corrected[rows, r_cand]
            loss = loss + (w * per_event).sum(dtype=_F)
            d = ex / sums
            d[rows, r_cand] -= _F(1.0)
            d *= w[:, None]
            d *= mask  # tf.where passes no gradient to the masked candidates
            nc = cand.shape[0]
            dc, dn = d[:, :nc], d[:, nc:]
            gpr = dc @ cq + dn @ neg_q
            _scatter(gq, cand, dc.T @ pr)
            _scatter(gbi, cand, dc.sum(axis=0))
            gq[neg] += dn.T @ pr
            gbi[neg] += dn.sum(axis=0)
        else:
            q_pos = qv[r_i]
            pos = (pr * q_pos).sum(axis=1) + bi[r_i]
            n = a["neg"].shape[0]
            hb, hj = a["hit_b"], neg_inv[a["hit_j"]]
            n_hits = np.bincount(hb, minlength=pr.shape[0]).astype(_F)
            c = w / np.maximum(_F(n) - n_hits, _F(1.0))
            z = pr @ neg_q.T + neg_b[None, :] - pos[:, None]
            z[hb, hj] = _F(MASKED_PAIR)
            if n > LOSS_SAMPLE_COLUMNS:
                zs = z[:, neg_inv[np.arange(LOSS_SAMPLE_COLUMNS) * n // LOSS_SAMPLE_COLUMNS]]
                valid_s = (zs > _F(MASKED_PAIR)).sum(axis=1).astype(_F)
            else:
                zs, valid_s = z[:, neg_inv], _F(n) - n_hits
            per_event = _softplus(zs).sum(axis=1) / np.maximum(valid_s, _F(1.0))
            loss = loss + (w * per_event).sum(dtype=_F)
            sig = _sigmoid(z) * mult
            gpr = (sig @ neg_q) * c[:, None]
            gpos = -sig.sum(axis=1) * c
            gq[neg] += sig.T @ (pr * c[:, None])
            gbi[neg] += sig.T @ c
            gpr = gpr + gpos[:, None] * q_pos
            _scatter(gq, r_i, gpos[:, None] * pr)
            _scatter(gbi, r_i, gpos)
        _scatter(gp, r_u, gpr)
    if has_pt:
        p_u, p_i, pw, py = a["p_u"], a["p_i"], a["p_w"], a["p_y"]
        pp, qp = p[p_u], qv[p_i]
        scores = x["b0"][0] + x["bu"][p_u] + bi[p_i] + (pp * qp).sum(axis=1)
        loss = loss + (pw * (_softplus(scores) - py * scores)).sum(dtype=_F)
        ds = pw * (_sigmoid(scores) - py)
        g["b0"][0] = ds.sum(dtype=_F)
        _scatter(g["bu"], p_u, ds)
        _scatter(gbi, p_i, ds)
        _scatter(gp, p_u, ds[:, None] * qp)
        _scatter(gq, p_i, ds[:, None] * pp)
    # towers' gradients: the id rows get p's, each feature row the sum over its entities
    g["eu"] = gp
    g["ei"] = gq
    if has_uf:
        _scatter(g["fu"], a["uf_f"], gp[a["uf_e"]])
    if has_if:
        _scatter(g["fi"], a["if_f"], gq[a["if_e"]])
    return _apply(cfg, slots, x, g, a, float(loss), written)


def _apply(
    cfg: ModelConfig,
    slots: dict[str, tuple[GrowingTable, np.ndarray]],
    x: dict[str, np.ndarray],
    g: dict[str, np.ndarray],
    a: dict[str, np.ndarray],
    loss: float,
    written: dict[str, np.ndarray] | None,
) -> tuple[float, bool]:
    """`step`'s optimiser: finiteness guard, row scales, global-norm clip, lazy L2, update."""
    if not np.isfinite(loss) or not all(np.isfinite(v).all() for v in g.values()):
        return loss, False
    scale_of = {"eu": "s_u", "bu": "s_u", "ei": "s_i", "bi": "s_i", "fu": "s_uf", "fi": "s_if"}
    scale_of["b0"] = "s_b0"
    if cfg.row_scaling > 0 or cfg.user_gradient_scale != 1.0:
        for name, v in g.items():
            s = a[scale_of[name]]
            g[name] = v * (s[:, None] if v.ndim == 2 else s)
    if cfg.clip_norm > 0:
        norm = np.sqrt(sum(float(np.square(v, dtype=_F).sum(dtype=_F)) for v in g.values()))
        limit = cfg.clip_norm * np.sqrt(max(float(a["n_active"][0]), 1.0))
        scale = _F(min(1.0, limit / max(norm, 1e-30)))
        g = {name: v * scale for name, v in g.items()}
    if cfg.l2 > 0:
        l2 = _F(cfg.l2)
        g = {name: v if name == "b0" else v + l2 * x[name] for name, v in g.items()}
    lr_users = _F(cfg.learning_rate)
    # item rows (embeddings, biases, item features) take their own rate, as in model.step
    lr_items = _F(cfg.item_learning_rate or cfg.learning_rate)
    for name, (table, idx) in slots.items():
        v = g[name]
        lr = lr_items if name in ("ei", "bi", "fi") else lr_users
        if cfg.optimizer == "adagrad":
            acc = table.get_acc_rows(idx) + v * v
            table.set_acc_rows(idx, acc)
            update = lr * v / (np.sqrt(acc) + _F(ADAGRAD_EPS))
        else:
            update = lr * v
        # x - update is the float32 subtraction a scatter-sub would do, row by row (the rows
        # are unique); writing the result costs half as much as TF's scatter-sub.
        new = x[name] - update
        table.set_rows(idx, new)
        if written is not None and name in ("ei", "bi"):
            written[name] = new
    return loss, True
