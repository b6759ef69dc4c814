"""Recommendation quality: prequential HR@10 / NDCG@10 of the model vs the baselines.

    python benchmarks/bench_quality.py --json reports/bench_quality.json --out reports/quality
    streamrec bench quality -- --quick

Test-then-train over the seeded synthetic stream (`streaming.synthetic`, 50k events by
default): each positive event after a 10 % warm-up is scored against the top-K every model
serves before it learns the event's batch (`model.evaluate`). The same run scores the three
numpy baselines (`model.baselines`) on the same batches and queries, so the ratios compare
like with like. Writes the JSON report, the metric-over-the-stream plot and, with `--views`,
the item PCA map coloured by genre plus explained recommendations for a few users.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", type=Path, help="write the report here (default: OUT/quality.json)")
    ap.add_argument("--out", type=Path, default=Path("reports/quality"), help="plots go here")
    ap.add_argument("--quick", action="store_true", help="10k events: seconds, not a minute")
    ap.add_argument("--events", type=int, default=50_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("-k", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=512, help="events per test-then-learn step")
    ap.add_argument("--drift", type=float, default=0.0, help="synthetic taste drift (radians)")
    ap.add_argument("--dim", type=int, default=32)
    ap.add_argument("--views", action="store_true", help="also write the embedding views")
    args = ap.parse_args(argv)
    if args.quick:
        args.events = 10_000

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import numpy as np

    from streamrec.consumers.quality import evaluate_synthetic
    from streamrec.model.config import ModelConfig
    from streamrec.model.evaluate import format_summary, write_report
    from streamrec.streaming.synthetic import SyntheticConfig

    scfg = SyntheticConfig(seed=args.seed, n_events=args.events, drift_rate=args.drift)
    mcfg = ModelConfig(dim=args.dim, seed=args.seed)
    load0 = os.getloadavg()
    t0 = time.perf_counter()
    models: dict[str, Any] = {}
    report = evaluate_synthetic(
        scfg, mcfg, k=args.k, out_dir=args.out, batch_size=args.batch_size, models_out=models
    )
    import tensorflow as tf

    report["machine"] = {
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "numpy": np.__version__,
        "cpus": os.cpu_count(),
        "loadavg_start": load0,
        "loadavg_end": os.getloadavg(),
        "wall_seconds": time.perf_counter() - t0,
    }
    # Learn speed of each model on this stream, in the same run (a ratio survives the noise of
    # a shared machine better than an absolute figure; the load is in report["machine"]).
    n_events = report["stream"]["events"]
    report["throughput"] = {
        name: {
            "learn_events_per_s": n_events / m["seconds"]["learn"]
            if m["seconds"]["learn"]
            else None,
            "learn_s": m["seconds"]["learn"],
            "recommend_s": m["seconds"]["recommend"],
        }
        for name, m in report["models"].items()
        if "seconds" in m
    }
    if args.views:
        report["views"] = _views(models, args.out)
    json_path = args.json or args.out / "quality.json"
    write_report(report, json_path)
    print(format_summary(report))
    for name, t in report["throughput"].items():
        eps = t["learn_events_per_s"]
        print(
            f"{name:<20} learn {eps or 0:>10,.0f} events/s ({t['learn_s']:.1f} s), "
            f"recommend + scoring {t['recommend_s']:.1f} s"
        )
    s = report["stream"]
    print(
        f"{s['events']:,} events, {s['queries']:,} scored after a {s['warmup_events']:,}-event "
        f"warm-up ({s['skipped_repeats']:,} repeats skipped); batch {args.batch_size}; "
        f"{report['machine']['wall_seconds']:.1f} s"
    )
    print(f"wrote {json_path} and {report['files']['plot']}")
    return 0


def _views(models: dict[str, Any], out: Path) -> dict[str, Any]:
    from streamrec.consumers.views import write_views

    stream = models["stream"]
    histories: dict[str, list[str]] = {}
    for e in stream.events():
        histories.setdefault(e["user"], []).append(e["item"])
    busiest = sorted(histories, key=lambda u: -len(histories[u]))
    users = [busiest[len(busiest) // 10], busiest[len(busiest) // 3], busiest[len(busiest) // 2]]
    genre = {i: stream.item_features(i)["genre"] for i in stream.item_ids}
    info = write_views(
        models["model"], out, item_label=genre, histories=histories, users=users, k=5
    )
    for row in info["users"]:
        liked = ", ".join(stream.preferred_genres(row["user"]))
        print(f"user {row['user']} ({row['history']} events, likes {liked}):")
        for rec in row["recs"]:
            because = ", ".join(
                f"{b['item']} [{genre.get(b['item'])}] {b['share']:.0%}" for b in rec["because"]
            )
            print(f"  {rec['item']} [{genre.get(rec['item'])}] because of {because}")
    print(
        f"item PCA by genre: {info['pca']['path']} "
        f"(genre separation {info['pca']['separation']:.2f})"
    )
    return {"pca": info["pca"], "explanations": info["explanations"]}


if __name__ == "__main__":
    sys.exit(main())
