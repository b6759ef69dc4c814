"""A side's padded feature matrix (vectorised batch lookups) against its dictionary."""

from __future__ import annotations

import numpy as np

from streamrec.model.config import ModelConfig
from streamrec.model.online import _PAD_MAX_WIDTH, _Side


def _reference(side: _Side, rows: np.ndarray) -> tuple[list[int], list[int]]:
    ents: list[int] = []
    feats: list[int] = []
    for j, r in enumerate(rows.tolist()):
        fr = side.frows.get(r)
        if fr is not None:
            ents += [j] * fr.shape[0]
            feats += fr.tolist()
    return ents, feats


def _check(side: _Side, rng: np.random.Generator, n: int) -> None:
    rows = rng.integers(0, n + 50, 300)  # some past every row ever given features
    ents, feats = side.feature_pairs(rows)
    assert (ents.tolist(), feats.tolist()) == _reference(side, rows)


def _churn(side: _Side, rng: np.random.Generator, n: int, width: int) -> None:
    for _ in range(400):
        row = int(rng.integers(0, n))
        k = int(rng.integers(0, width + 1))  # 0: the entity loses its features
        side.set_tokens(row, tuple(f"t{t}" for t in rng.integers(0, 40, k)))


def test_padded_pairs_match_the_dictionary_through_growth_deletes_and_eviction() -> None:
    rng = np.random.default_rng(0)
    side = _Side("items", ModelConfig(dim=4, evict_after_s=60))
    _churn(side, rng, 150, 3)
    _check(side, rng, 150)
    _churn(side, rng, 700, 9)  # more rows and wider rows than the matrix had
    _check(side, rng, 700)
    assert side._fpad is not None and side._fpad.shape[1] >= 9
    for t in range(700):  # register the ids, so that eviction has rows to keep
        side.ids.add(f"i{t}")
    side.n_init = 700
    side.last_ts = np.zeros(700, np.int64)
    side.count = np.zeros(700, np.int64)
    live = np.sort(rng.choice(700, 300, replace=False))
    side.keep(live)
    _check(side, rng, 300)


def test_a_very_wide_entity_hands_lookups_back_to_the_dictionary() -> None:
    rng = np.random.default_rng(1)
    side = _Side("users", ModelConfig(dim=4))
    _churn(side, rng, 100, 4)
    side.set_tokens(5, tuple(f"w{t}" for t in range(_PAD_MAX_WIDTH + 1)))
    assert side._fpad is None
    _churn(side, rng, 100, 4)
    _check(side, rng, 100)
    side.clear_features()
    assert side._fpad is not None and not side.frows
