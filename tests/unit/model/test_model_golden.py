"""One optimiser step on a tiny model, checked against numbers derived by hand (TFRS style).

Set-up shared by both tests: dim 2, one user u, a positive item i and a negative item j that the
sampler is forced to return, one `view` event (weight 1), BPR, l2 = 0, no clipping, lr = 0.1, and
user_gradient_scale s = 4, all set explicitly rather than taken from the defaults: the user
row's gradient is s * dL/dp (items and biases as is).

    p  = (0.1, 0.2)    q_i = (0.3, -0.1)  b_i = 0.1    q_j = (0.2, 0.4)  b_j = -0.2
    s_pos = p.q_i + b_i = 0.03 - 0.02 + 0.1 = 0.11
    s_neg = p.q_j + b_j = 0.02 + 0.08 - 0.2 = -0.10
    x = s_pos - s_neg = 0.21
    loss = softplus(-x) = log(1 + e^-0.21) = log(1.8105842) = 0.5936
    g = sigmoid(-x) = 1 / (1 + e^0.21) = 1 / 2.2336781 = 0.4476920
    dL/dp   = -g (q_i - q_j) = -g (0.1, -0.5)  = (-0.0447692,  0.2238460)
    dL/dq_i = -g p           = -g (0.1, 0.2)   = (-0.0447692, -0.0895384)
    dL/dq_j = +g p                             = ( 0.0447692,  0.0895384)
    dL/db_i = -g = -0.4476920                  dL/db_j = +g = 0.4476920
"""

from __future__ import annotations

import numpy as np
import pytest

from streamrec.model.config import ModelConfig
from streamrec.model.online import OnlineRecommender
from streamrec.model.runtime import configure_threads
from streamrec.model.testing import Event

configure_threads(1, 1)  # before the first TF op: 2 shared cores

P = np.array([0.1, 0.2], np.float32)
QI = np.array([0.3, -0.1], np.float32)
QJ = np.array([0.2, 0.4], np.float32)
G_P = np.array([-0.0447692, 0.2238460])
G_QI = np.array([-0.0447692, -0.0895384])
G_QJ = np.array([0.0447692, 0.0895384])
G_BI = -0.4476920
G_BJ = 0.4476920


def tiny(optimizer: str, item_learning_rate: float = 0.0) -> tuple[OnlineRecommender, int, int]:
    cfg = ModelConfig(
        dim=2,
        learning_rate=0.1,
        optimizer=optimizer,
        loss="bpr",
        negatives=1,
        l2=0.0,
        clip_norm=0.0,
        user_gradient_scale=4.0,
        item_learning_rate=item_learning_rate,  # 0: items take learning_rate too
        initial_capacity=2,
    )
    rec = OnlineRecommender(cfg)
    rec.set_user_features("u", None)  # registers the ids, so rows can be hand-set
    rec.set_item_features("i", None)
    rec.set_item_features("j", None)
    rec._sync()  # initialise their rows now (lazily done by the next reading call otherwise)
    ri, rj = rec.items.ids.row("i"), rec.items.ids.row("j")
    rec.users.emb.set_rows(np.array([0]), P[None, :])
    rec.items.emb.set_rows(np.array([ri, rj]), np.stack([QI, QJ]))
    rec.items.bias.set_rows(np.array([ri, rj]), np.array([0.1, -0.2], np.float32))
    neg = (np.array([rj], np.int32), np.zeros(1, np.float32))
    rec.sampler.sample = lambda rng, n, n_items: neg  # type: ignore[method-assign]
    return rec, ri, rj


def test_one_sgd_step() -> None:
    rec, ri, rj = tiny("sgd")
    res = rec.learn([Event("u", "i", "view", None, 1)])
    assert res.loss == pytest.approx(0.5936, abs=1e-4)
    assert not res.skipped_nonfinite
    # x' = x - lr * dL/dx, and p' = p - lr * s * dL/dp with s = 4
    # p'   = (0.1 + 4 * 0.00447692, 0.2 - 4 * 0.0223846) = (0.11790768, 0.1104616)
    # q_i' = (0.3 + 0.00447692, -0.1 + 0.00895384)     = (0.30447692, -0.09104616)
    # q_j' = (0.2 - 0.00447692, 0.4 - 0.00895384)      = (0.19552308, 0.39104616)
    # b_i' = 0.1 + 0.0447692 = 0.1447692;  b_j' = -0.2 - 0.0447692 = -0.2447692
    np.testing.assert_allclose(
        rec.users.emb.get_rows(np.array([0]))[0], [0.11790768, 0.1104616], atol=1e-6
    )
    got = rec.items.emb.get_rows(np.array([ri, rj]))
    np.testing.assert_allclose(got[0], [0.30447692, -0.09104616], atol=1e-6)
    np.testing.assert_allclose(got[1], [0.19552308, 0.39104616], atol=1e-6)
    b = rec.items.bias.get_rows(np.array([ri, rj]))
    np.testing.assert_allclose(b, [0.1447692, -0.2447692], atol=1e-6)
    # BPR has no absolute target: user bias and global bias do not move.
    assert rec.users.bias.get_rows(np.array([0]))[0] == 0.0
    assert rec.global_bias == 0.0


def test_items_take_their_own_learning_rate() -> None:
    rec, ri, rj = tiny("sgd", item_learning_rate=0.2)
    rec.learn([Event("u", "i", "view", None, 1)])
    # The user row as in test_one_sgd_step (lr 0.1, s = 4); item rows and biases with lr 0.2:
    # q_i' = (0.3 + 0.2 * 0.0447692, -0.1 + 0.2 * 0.0895384) = (0.30895384, -0.08209232)
    # q_j' = (0.2 - 0.00895384, 0.4 - 0.01790768)          = (0.19104616, 0.38209232)
    # b_i' = 0.1 + 0.2 * 0.447692 = 0.1895384;  b_j' = -0.2 - 0.0895384 = -0.2895384
    np.testing.assert_allclose(
        rec.users.emb.get_rows(np.array([0]))[0], [0.11790768, 0.1104616], atol=1e-6
    )
    got = rec.items.emb.get_rows(np.array([ri, rj]))
    np.testing.assert_allclose(got[0], [0.30895384, -0.08209232], atol=1e-6)
    np.testing.assert_allclose(got[1], [0.19104616, 0.38209232], atol=1e-6)
    b = rec.items.bias.get_rows(np.array([ri, rj]))
    np.testing.assert_allclose(b, [0.1895384, -0.2895384], atol=1e-6)


def test_one_adagrad_step() -> None:
    rec, ri, rj = tiny("adagrad")
    rec.learn([Event("u", "i", "view", None, 1)])
    # Adagrad (Keras form): acc = 0.1 + g^2;  x' = x - lr * g / (sqrt(acc) + 1e-7)
    # The user row's g is s * dL/dp with s = 4 (user_gradient_scale):
    # p[0]:   g = -0.1790768, acc = 0.1 + 0.0320685 = 0.1320685, sqrt = 0.3634123
    #         step = 0.1 * -0.1790768 / 0.3634123 = -0.0492765  -> p[0]' = 0.1492765
    # p[1]:   g =  0.8953840, acc = 0.1 + 0.8017125 = 0.9017125, sqrt = 0.9495854
    #         step = 0.1 * 0.8953840 / 0.9495854 = 0.0942921    -> p[1]' = 0.1057079
    # q_i[0]: g = -0.0447692, acc = 0.1 + 0.0020043 = 0.1020043, sqrt = 0.3193811
    #         step = 0.1 * -0.0447692 / 0.3193811 = -0.0140175  -> 0.3 + 0.0140175 = 0.3140175
    # q_i[1]: g = -0.0895384, acc = 0.1080171, sqrt = 0.3286596
    #         step = 0.1 * -0.0895384 / 0.3286596 = -0.0272435   -> -0.1 + 0.0272435 = -0.0727565
    # q_j mirrors q_i:                                  (0.2 - 0.0140175, 0.4 - 0.0272435)
    # b_i:    g = -0.4476920, acc = 0.1 + 0.2004282 = 0.3004282, sqrt = 0.5481133
    #         step = 0.1 * -0.4476920 / 0.5481133 = -0.0816787   -> 0.1 + 0.0816787 = 0.1816787
    # b_j mirrors b_i:                                           -0.2 - 0.0816787 = -0.2816787
    u = rec.users.emb.get_rows(np.array([0]))[0]
    np.testing.assert_allclose(u, [0.1492765, 0.1057079], atol=1e-6)
    got = rec.items.emb.get_rows(np.array([ri, rj]))
    np.testing.assert_allclose(got[0], [0.3140175, -0.0727565], atol=1e-6)
    np.testing.assert_allclose(got[1], [0.1859825, 0.3727565], atol=1e-6)
    b = rec.items.bias.get_rows(np.array([ri, rj]))
    np.testing.assert_allclose(b, [0.1816787, -0.2816787], atol=1e-6)
    acc = rec.users.emb.acc.numpy()[0]  # type: ignore[union-attr]
    np.testing.assert_allclose(acc, 0.1 + (4 * G_P) ** 2, atol=2e-6)


def test_hand_gradients_match_constants() -> None:
    """The constants above, recomputed in float64, so a typo in the comment cannot hide."""
    x = (P @ QI + 0.1) - (P @ QJ - 0.2)
    g = 1.0 / (1.0 + np.exp(x))
    np.testing.assert_allclose(-g * (QI - QJ), G_P, atol=1e-6)
    np.testing.assert_allclose(-g * P, G_QI, atol=1e-6)
    np.testing.assert_allclose(g * P, G_QJ, atol=1e-6)
    assert -g == pytest.approx(G_BI, abs=1e-6) and g == pytest.approx(G_BJ, abs=1e-6)
    assert np.log1p(np.exp(-x)) == pytest.approx(0.5936, abs=1e-4)
