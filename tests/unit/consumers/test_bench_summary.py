"""`streamrec bench all`'s summary: figures beside targets, failures visible, from JSON alone."""

from __future__ import annotations

import json
from pathlib import Path

from streamrec.consumers.bench_summary import summarize


def _write(out: Path, name: str, data: object) -> None:
    (out / f"{name}.json").write_text(json.dumps(data))


def test_summary_marks_targets_met_and_missed(tmp_path: Path) -> None:
    _write(
        tmp_path,
        "pipeline",
        {
            "throughput": {
                "events": 1000,
                "batch_max_events": 256,
                "trainer_events_per_s": 150_000,
                "raw_consume_records_per_s": 200_000,
                "ratio_trainer_to_raw": 0.75,
                "consume_parse_records_per_s": 90_000,
                "learn_alone_events_per_s": 150_000,
                "serial_bound_events_per_s": 56_250,
            },
            "freshness": {
                "achieved_rate_per_s": 5000,
                "samples": 10,
                "p50_ms": 20.0,
                "p95_ms": 80.0,
                "p99_ms": 120.0,
            },
        },
    )
    _write(
        tmp_path,
        "quality",
        {
            "k": 10,
            "reference": "model",
            "stream": {"events": 5000},
            "models": {
                "model": {"overall": {"hr": 0.3, "ndcg": 0.2}},
                "popularity": {"overall": {"hr": 0.2, "ndcg": 0.1}},
                "online_mf": {"overall": {"hr": 0.3, "ndcg": 0.1}},  # a tie on HR is no win
            },
        },
    )
    text = summarize(tmp_path, ["model", "pipeline", "quality"], {"model": "failed (X)"})
    rows = {line.split(" | ")[0].lstrip("| "): line for line in text.splitlines() if "|" in line}
    trainer = next(v for k, v in rows.items() if k.startswith("trainer consume"))
    assert "150,000 events/s" in trainer and trainer.endswith("| yes |")
    floors = next(v for k, v in rows.items() if k.startswith("floors: consume"))
    assert "90,000 records/s; 150,000 events/s; 56,250 events/s" in floors
    fresh = next(v for k, v in rows.items() if k.startswith("freshness"))
    assert "p99 120.0 ms" in fresh and fresh.endswith("| **no** |")
    pop = next(v for k, v in rows.items() if k.startswith("quality: popularity"))
    assert "(1.50x / 2.00x)" in pop and pop.endswith("| yes |")
    mf = next(v for k, v in rows.items() if k.startswith("quality: online_mf"))
    assert mf.endswith("| **no** |")
    overall = next(v for k, v in rows.items() if k.startswith("quality: model"))
    assert overall.endswith("| **no** |")  # it must beat every baseline
    assert "No results from: model." in text
    assert "model failed (X)" in text


def test_memory_row_prefers_the_deployed_key_layout(tmp_path: Path) -> None:
    # 376 / 256 = 1.47 (met) under the default prefix; 392 / 256 = 1.53 (missed) under the
    # benchmark's own prefix, the figure used only when the scratch database was not free.
    mem = {
        "raw_vector_bytes": 256,
        "bytes_per_user": {"user_hash": 392.0},
        "user_hash_encoding": "listpack",
        "default_layout": {
            "key_example": "sr:u:{user0}",
            "user_hash_bytes": 376.0,
            "raw_string_floor_bytes": 376.0,
        },
    }
    _write(tmp_path, "serving", {"runs": [], "memory": mem})
    row = next(x for x in summarize(tmp_path, ["serving"], {}).splitlines() if "Redis memory" in x)
    assert "1.47x (376 B vs 256 B; bare string floor 376 B)" in row and row.endswith("| yes |")
    mem["default_layout"] = {"skipped": "scratch db 15 is not empty"}
    _write(tmp_path, "serving", {"runs": [], "memory": mem})
    row = next(x for x in summarize(tmp_path, ["serving"], {}).splitlines() if "Redis memory" in x)
    assert "1.53x (392 B vs 256 B)" in row and "benchmark prefix" in row
    assert row.endswith("| **no** |")


def test_quality_rows_per_regime(tmp_path: Path) -> None:
    """`bench quality` over regimes: one row each, the model beside its best baseline."""

    def rec(hr: float) -> dict[str, float]:
        return {"hr10": hr, "hr10_se": 0.01, "ndcg10": hr / 2, "ndcg10_se": 0.005}

    _write(
        tmp_path,
        "quality",
        {
            "k": 10,
            "protocol": "fresh",
            "seeds": [0, 1],
            "regimes": {
                "ml_like_small": {
                    "model": rec(0.129),
                    "popularity": rec(0.1),
                    "decayed_popularity": rec(0.1),
                    "online_mf": rec(0.142),
                },
                "synthetic": {
                    "model": rec(0.4),
                    "popularity": rec(0.3),
                    "decayed_popularity": rec(0.3),
                    "online_mf": rec(0.35),
                },
            },
        },
    )
    text = summarize(tmp_path, ["quality"])
    rows = [line for line in text.splitlines() if line.startswith("| quality on")]
    assert len(rows) == 2
    assert "0.1290 ± 0.0100 vs online_mf 0.1420 ± 0.0100 (0.91x)" in rows[0]
    assert rows[0].endswith("| **no** |") and rows[1].endswith("| yes |")
    assert "fresh protocol, 2 seeds" in rows[0]
