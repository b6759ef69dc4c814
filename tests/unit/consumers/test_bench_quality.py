"""`streamrec bench quality` end to end at the tiny size: the JSON the issue asks for.

Runs the real command (the benchmark script in its own process, TF model included) on two
regimes at the tiny size, so the keys other tools read and the figures' ranges are pinned.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from streamrec.consumers import cli

RECOMMENDERS = {"model", "popularity", "decayed_popularity", "online_mf"}


@pytest.mark.slow
def test_bench_quality_tiny_writes_every_regime_and_recommender(tmp_path: Path) -> None:
    out = tmp_path / "q.json"
    argv = ["bench", "quality", "--size", "tiny", "--seeds", "0", "--no-progress"]
    argv += ["--regimes", "ml_like_small,sessions_sparse", "--json", str(out)]
    argv += ["--out", str(tmp_path / "plots")]
    assert cli.main(argv) == 0
    d = json.loads(out.read_text())
    assert d["size"] == "tiny" and d["seeds"] == [0] and d["protocol"] == "fresh"
    assert set(d["regimes"]) == {"ml_like_small", "sessions_sparse"}
    for regime, recs in d["regimes"].items():
        assert set(recs) == RECOMMENDERS
        for r in recs.values():
            for sub in (r, r["minibatch"]):
                for key in ("hr10", "ndcg10"):
                    assert 0.0 <= sub[key] <= 1.0
                    assert 0.0 < sub[key + "_se"] < 0.5
                assert sub["ndcg10"] <= sub["hr10"]
                assert sub["n"] > 100 and len(sub["seeds"]) == 1
        # the same queries for every recommender and both protocols
        assert (
            len({r["n"] for r in recs.values()} | {r["minibatch"]["n"] for r in recs.values()}) == 1
        )
        for p in ("fresh", "minibatch"):
            eps = d["throughput"][regime][p]
            assert eps["events_per_s"] > 0 and eps["model_events_per_s"] > 0
        stats = d["streams"][regime]["stats"][0]
        assert stats["repeats"] == 0 and math.isclose(stats["positive_share"], 0.56, abs_tol=0.01)
    assert (tmp_path / "plots" / "quality_regimes.png").stat().st_size > 10_000
