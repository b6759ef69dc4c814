"""top_k against the definition it promises: the k best finite scores, ties by id."""

from __future__ import annotations

import numpy as np
import pytest

from streamrec.model.ranking import top_k, top_k_rows


def reference(scores: np.ndarray, k: int, ids: list[str]) -> list[int]:
    ok = [j for j in range(len(scores)) if np.isfinite(scores[j])]
    return sorted(ok, key=lambda j: (-scores[j], ids[j]))[:k]


@pytest.mark.parametrize("seed", range(40))
def test_top_k_is_the_definition(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 60))
    # few distinct values: ties inside, across and below the k-th place are common
    scores = rng.integers(0, 6, n).astype(np.float32)
    holes = rng.random(n)
    scores[holes < 0.15] = -np.inf
    scores[(holes >= 0.15) & (holes < 0.2)] = np.nan
    if seed % 4 == 0:
        scores = rng.standard_normal(n).astype(np.float32)  # no ties: the fast path
    ids = [f"i{int(x)}" for x in rng.permutation(n)]
    for k in (1, 3, 10, n, n + 5):
        assert top_k(scores, k, ids) == reference(scores, k, ids), (seed, k)
    if np.isfinite(scores).all():
        rows = np.stack([scores, scores[::-1].copy()])
        for k in (1, 3, n):
            assert top_k_rows(rows, k, ids) == [reference(r, k, ids) for r in rows]


def test_rows_without_ties_never_take_the_exact_path(monkeypatch: pytest.MonkeyPatch) -> None:
    # The vectorised selection must settle every tie-free row itself: a wrong partition
    # still gives right lists through `top_k`, but several times slower, unseen otherwise.
    from streamrec.model import ranking

    rng = np.random.default_rng(0)
    scores = rng.standard_normal((64, 500)).astype(np.float32)
    ids = [f"i{j}" for j in range(500)]
    exact_rows: list[int] = []
    monkeypatch.setattr(
        ranking, "top_k", lambda s, k, i: exact_rows.append(1) or reference(s, k, i)
    )
    got = ranking.top_k_rows(scores, 10, ids)
    assert got == [reference(r, 10, ids) for r in scores]
    assert exact_rows == []
    scores[3, :2] = scores[3].max() + 1.0  # a tie in row 3's top 10
    ranking.top_k_rows(scores, 10, ids)
    assert len(exact_rows) == 1
