"""Recommendation quality on log-like regimes: HR@10 / NDCG@10 of the model vs the baselines.

    streamrec bench quality                       # every regime, seeds 0 and 1, size medium
    streamrec bench quality --size tiny --json q.json
    streamrec bench quality --regimes ml_like_small,drifting --seeds 0,1,2 --size full
    streamrec bench quality --model negatives=64 --model learning_rate=0.1   # a variant

Each regime (`streaming.loglike.REGIMES`: sessions, long-tail popularity, 1-5 stars with only
4 and 5 as positives, users arriving over the log, drift; plus `synthetic`, the planted stream
the defaults were tuned on) is generated per seed and replayed test-then-train under two
protocols (`model.evaluate`):

- fresh: one event at a time, each user's own earlier events learned before their next
  request (others' in mini-batches of --batch-size): what a log replayed event by event gives;
- minibatch: every batch of --batch-size events scored before any of it is learned.

The model (`OnlineRecommender`, default config unless --model) runs beside popularity,
decayed popularity and `OnlineMF` on the same queries. Printed and written per regime: HR@10
and NDCG@10 with standard errors (user-clustered within a seed, combined over seeds), HR@10
of cold users, and the events per second of each protocol. `--json` writes
`regimes.<regime>.<recommender>.{hr10,hr10_se,ndcg10,ndcg10_se}` (mean over seeds, for the
first of --protocols: fresh unless told) with `.minibatch` and `.seeds` (per seed) beside
them, the regimes' shapes under `streams` and the speeds under `throughput`.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, fields, replace
from pathlib import Path
from typing import Any

#: --size: share of each regime's full size (users and events; items by its square root).
SIZES = {"tiny": 0.02, "small": 0.1, "medium": 0.25, "full": 1.0}
RECOMMENDERS = ("model", "popularity", "decayed_popularity", "online_mf")
PROTOCOLS = ("fresh", "minibatch")
SYNTHETIC = "synthetic"


def _parser() -> argparse.ArgumentParser:
    from streamrec.streaming.loglike import REGIMES

    ap = argparse.ArgumentParser(
        prog="streamrec bench quality", description=(__doc__ or "").splitlines()[0]
    )
    ap.add_argument("--json", type=Path, help="write the figures here (default: OUT/quality.json)")
    ap.add_argument("--out", type=Path, default=Path("reports/quality"), help="the plot goes here")
    ap.add_argument("--size", choices=SIZES, default="medium", help="default: medium")
    ap.add_argument("--scale", type=float, help="share of the full size (overrides --size)")
    ap.add_argument(
        "--regimes",
        default=",".join([*REGIMES, SYNTHETIC]),
        help="comma-separated; default: all",
    )
    ap.add_argument("--seeds", default="0,1", help="comma-separated; default: 0,1")
    ap.add_argument("--protocols", default=",".join(PROTOCOLS), help="fresh, minibatch or both")
    ap.add_argument(
        "--recommenders",
        default=",".join(RECOMMENDERS),
        help="comma-separated subset (e.g. model, to try model variants); default: all four",
    )
    ap.add_argument("-k", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=256, help="events learned together")
    ap.add_argument("--warmup", type=float, default=0.1, help="share learned, not scored")
    ap.add_argument(
        "--model",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="override a ModelConfig field (repeatable), e.g. negatives=64",
    )
    ap.add_argument("--no-progress", action="store_true", help="no progress bars")
    return ap


def _model_overrides(pairs: Sequence[str]) -> dict[str, Any]:
    """FIELD=VALUE pairs as typed ModelConfig values (int, float, str, as the field's default)."""
    from streamrec.model.config import ModelConfig

    defaults = ModelConfig()
    names = {f.name for f in fields(ModelConfig)}
    out: dict[str, Any] = {}
    for pair in pairs:
        name, sep, raw = pair.partition("=")
        if not sep or name not in names:
            raise SystemExit(f"--model {pair!r}: want FIELD=VALUE with a ModelConfig field")
        kind = type(getattr(defaults, name))
        if kind not in (int, float, str):
            raise SystemExit(f"--model {pair!r}: {name} is not a number or a string")
        out[name] = raw if kind is str else kind(float(raw)) if kind is int else kind(raw)
    return out


def _events(regime: str, scale: float, seed: int) -> tuple[list[Any], dict[str, Any]]:
    """The regime's events as model events, and its config and log statistics."""
    from streamrec.model.testing import Event
    from streamrec.streaming.loglike import LogLikeStream, config_dict, log_stats, regime_config
    from streamrec.streaming.synthetic import SyntheticConfig, SyntheticStream

    if regime == SYNTHETIC:
        base = SyntheticConfig()
        scfg = replace(
            base,
            seed=seed,
            n_users=max(10, round(base.n_users * scale)),
            n_items=max(50, round(base.n_items * math.sqrt(scale))),
            n_events=max(200, round(base.n_events * scale)),
        )
        raw = list(SyntheticStream(scfg).events())
        config: dict[str, Any] = asdict(scfg)
        n_items = scfg.n_items
    else:
        lcfg = regime_config(regime, scale=scale, seed=seed)
        raw = list(LogLikeStream(lcfg).events())
        config = config_dict(lcfg)
        n_items = lcfg.n_items
    stats = log_stats(raw, n_items=n_items)
    return [Event.from_dict(d) for d in raw], {"config": config, "stats": stats}


def _models(mcfg: Any, names: Sequence[str]) -> dict[str, Any]:
    from streamrec.model.baselines import make_baselines
    from streamrec.model.online import OnlineRecommender

    models: dict[str, Any] = {"model": OnlineRecommender(mcfg)}
    models.update(
        make_baselines(
            mcfg.event_weights,
            mcfg.rating_positive_min,
            mcfg.rating_negative_max,
            mcfg.popularity_half_life_s,
            seed=mcfg.seed,
        )
    )
    return {name: models[name] for name in names}


def _run(events: list[Any], protocol: str, mcfg: Any, args: argparse.Namespace) -> dict[str, Any]:
    """One protocol over one stream: per recommender its figures and its speed."""
    from streamrec.model.evaluate import EvalConfig, PositiveRule, prequential, prequential_fresh

    cfg = EvalConfig(
        k=args.k,
        batch_size=args.batch_size,
        warmup=args.warmup,
        auc_negatives=0,
        positives=PositiveRule.from_model_config(mcfg),
        seed=mcfg.seed,
    )
    run = prequential_fresh if protocol == "fresh" else prequential
    report = run(events, _models(mcfg, args.names), cfg, progress=not args.no_progress)
    n = report["stream"]["events"]
    out: dict[str, Any] = {
        "queries": report["stream"]["queries"],
        "seconds": report["seconds"],
        "events_per_s": n / report["seconds"] if report["seconds"] else None,
        "recommenders": {},
    }
    for name, m in report["models"].items():
        o, cold = m["overall"], m["cold_start"]["user"]
        busy = m["seconds"]["learn"] + m["seconds"]["recommend"]
        out["recommenders"][name] = {
            "hr10": o["hr"],
            "hr10_se": o["hr_se"],
            "ndcg10": o["ndcg"],
            "ndcg10_se": o["ndcg_se"],
            "n": o["n"],
            "cold_user_hr10": cold["hr"],
            "cold_user_n": cold["n"],
            "events_per_s": n / busy if busy else None,
        }
    return out


def _combine(per_seed: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Mean over seeds; its s.e. from each seed's own (independent streams): sqrt(sum se^2)/S."""
    out: dict[str, Any] = {}
    for metric in ("hr10", "ndcg10", "cold_user_hr10"):
        vals = [r[metric] for r in per_seed if r.get(metric) is not None]
        out[metric] = sum(vals) / len(vals) if vals else None
        if metric + "_se" in per_seed[0]:
            ses = [r[metric + "_se"] for r in per_seed]
            ok = all(s is not None and math.isfinite(s) for s in ses)
            out[metric + "_se"] = math.sqrt(sum(s * s for s in ses)) / len(ses) if ok else None
    out["n"] = sum(r["n"] for r in per_seed)
    return out


def _fmt(x: Any, se: Any = None) -> str:
    if x is None:
        return "-"
    return f"{x:.3f}" if se is None else f"{x:.3f} ± {se:.3f}"


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:,.0f}"


def _table(result: Mapping[str, Any], protocols: Sequence[str]) -> str:
    head = f"{'regime':<16} {'recommender':<19}"
    for p in protocols:
        head += f" {p + ' HR@10':>16} {p + ' NDCG@10':>18}"
    head += f" {'cold HR@10 (' + protocols[0] + ')':>19}"
    lines = [head]
    for regime, recs in result["regimes"].items():
        for name, r in recs.items():
            line = f"{regime:<16} {name:<19}"
            for p in protocols:
                d = r if p == protocols[0] else r[p]
                line += f" {_fmt(d['hr10'], d['hr10_se']):>16}"
                line += f" {_fmt(d['ndcg10'], d['ndcg10_se']):>18}"
            line += f" {_fmt(r['cold_user_hr10']):>19}"
            lines.append(line)
    lines.append("")
    lines.append("events/s (all four recommenders; the model alone):")
    for regime, t in result["throughput"].items():
        parts = [
            f"{p} {_num(t[p]['events_per_s'])}; model {_num(t[p]['model_events_per_s'])}"
            for p in protocols
        ]
        lines.append(f"  {regime:<16} " + " | ".join(parts))
    return "\n".join(lines)


def _plot(
    result: Mapping[str, Any], protocols: Sequence[str], names: Sequence[str], path: Path
) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    regimes = list(result["regimes"])
    fig, axes = plt.subplots(1, len(protocols), figsize=(6.5 * len(protocols), 4.2), squeeze=False)
    width = 0.8 / len(names)
    for ax, p in zip(axes[0], protocols, strict=True):
        for j, name in enumerate(names):
            rows = [result["regimes"][r][name] for r in regimes]
            rows = [row if p == protocols[0] else row[p] for row in rows]
            ax.bar(
                np.arange(len(regimes)) + j * width,
                [row["hr10"] or 0.0 for row in rows],
                width,
                yerr=[row["hr10_se"] or 0.0 for row in rows],
                label=name,
                capsize=2,
            )
        ax.set_xticks(np.arange(len(regimes)) + 0.4 - width / 2, regimes, rotation=15)
        ax.set_ylabel("HR@10")
        ax.set_title(f"HR@10, {p} protocol (± s.e.)")
        ax.grid(alpha=0.3, axis="y")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from streamrec.model.config import ModelConfig
    from streamrec.model.evaluate import write_report
    from streamrec.model.runtime import configure_threads
    from streamrec.streaming.loglike import REGIMES

    configure_threads(1, 1)
    scale = args.scale if args.scale is not None else SIZES[args.size]
    regimes = [r.strip() for r in args.regimes.split(",") if r.strip()]
    unknown = set(regimes) - {*REGIMES, SYNTHETIC}
    protocols = [p.strip() for p in args.protocols.split(",") if p.strip()]
    if unknown or not regimes or not protocols or set(protocols) - set(PROTOCOLS):
        raise SystemExit(f"regimes from {[*REGIMES, SYNTHETIC]}, protocols from {PROTOCOLS}")
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    args.names = [n.strip() for n in args.recommenders.split(",") if n.strip()]
    if not args.names or set(args.names) - set(RECOMMENDERS):
        raise SystemExit(f"recommenders from {RECOMMENDERS}")
    overrides = _model_overrides(args.model)

    t0, load0 = time.perf_counter(), os.getloadavg()
    result: dict[str, Any] = {
        "benchmark": "quality",
        "k": args.k,
        "size": args.size if args.scale is None else None,
        "scale": scale,
        "seeds": seeds,
        "protocol": protocols[0],
        "protocols": protocols,
        "batch_size": args.batch_size,
        "warmup": args.warmup,
        "model_overrides": overrides,
        "regimes": {},
        "throughput": {},
        "streams": {},
    }
    from tqdm import tqdm

    runs = [(r, s) for r in regimes for s in seeds]
    outer = tqdm(runs, desc="quality", unit="run", disable=args.no_progress, position=0)
    raw: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for regime, seed in outer:
        outer.set_postfix_str(f"{regime} seed {seed}")
        events, info = _events(regime, scale, seed)
        result["streams"].setdefault(regime, {"config": info["config"], "stats": []})
        result["streams"][regime]["stats"].append({"seed": seed, **info["stats"]})
        mcfg = ModelConfig(**{"seed": seed, **overrides})
        for p in protocols:
            raw.setdefault(regime, {}).setdefault(p, []).append(
                {"seed": seed, **_run(events, p, mcfg, args)}
            )
    outer.close()

    for regime, by_protocol in raw.items():
        recs: dict[str, Any] = {}
        for name in args.names:
            for j, p in enumerate(protocols):
                per_seed = [
                    {"seed": run["seed"], **run["recommenders"][name]} for run in by_protocol[p]
                ]
                combined = _combine(per_seed) | {"seeds": per_seed}
                if j == 0:
                    recs[name] = combined
                else:
                    recs[name][p] = combined
        result["regimes"][regime] = recs
        result["throughput"][regime] = {
            p: {
                "events_per_s": _mean(run["events_per_s"] for run in by_protocol[p]),
                "model_events_per_s": _mean(
                    run["recommenders"]["model"]["events_per_s"]
                    for run in by_protocol[p]
                    if "model" in run["recommenders"]
                ),
                "seconds": sum(run["seconds"] for run in by_protocol[p]),
            }
            for p in protocols
        }

    import numpy as np
    import tensorflow as tf

    result["machine"] = {
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "numpy": np.__version__,
        "cpus": os.cpu_count(),
        "loadavg_start": load0,
        "loadavg_end": os.getloadavg(),
    }
    result["wall_seconds"] = time.perf_counter() - t0
    print(_table(result, protocols))
    json_path = args.json or args.out / "quality.json"
    write_report(result, json_path)
    plot = _plot(result, protocols, args.names, args.out / "quality_regimes.png")
    print(
        f"{len(regimes)} regimes x {len(seeds)} seeds at scale {scale:g}, "
        f"{result['wall_seconds']:.0f} s; wrote {json_path} and {plot}"
    )
    return 0


def _mean(xs: Any) -> float | None:
    vals = [x for x in xs if x is not None]
    return sum(vals) / len(vals) if vals else None


if __name__ == "__main__":
    sys.exit(main())
