"""The summary's small-batch rows: bench model's learn + recommend figure beside its target."""

from __future__ import annotations

import json
from pathlib import Path

from streamrec.consumers.bench_summary import summarize


def test_small_batch_rows_beside_their_targets(tmp_path: Path) -> None:
    detail = {
        "bpr:sgd/2000": {"items": 2000, "loss": "bpr", "optimizer": "sgd", "total_ms_p99": 2.5},
        "bpr:sgd/100000": {"items": 100000, "loss": "bpr", "optimizer": "sgd"},
    }
    data = {
        "learn": [],
        "small_batch_learn_recommend_ms": {"2000": 0.8, "100000": 3.4},
        "small_batch_detail": detail,
    }
    (tmp_path / "model.json").write_text(json.dumps(data))
    text = summarize(tmp_path, ["model"])
    rows = [line for line in text.splitlines() if "learn 1-16 events" in line]
    assert len(rows) == 2
    assert "2,000 items (bpr+sgd)" in rows[0] and "p50 0.80 ms, p99 2.50 ms" in rows[0]
    assert rows[0].endswith("| p50 <= 1 ms | yes |")  # 0.8 <= 1
    assert rows[1].endswith("| p50 <= 3 ms | **no** |")  # 3.4 > 3
