"""An evaluation's report: JSON, plots, and the table people read."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from streamrec.model.eval_state import HISTORY_BUCKETS

# ----------------------------------------------------------------------------- output


def _jsonable(x: Any) -> Any:
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (np.floating, np.integer)):
        return _jsonable(x.item())
    return x


def write_report(report: Mapping[str, Any], path: str | Path) -> Path:
    """JSON with NaN written as null (strict JSON readers reject NaN)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_jsonable(report), indent=2, allow_nan=False) + "\n")
    return path


def plot_report(report: Mapping[str, Any], path: str | Path, title: str | None = None) -> Path:
    """HR@K and NDCG@K over the stream for every model, and HR@K by history length."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    k = report["k"]
    models = report["models"]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for name, m in models.items():
        c = m["curve"]
        axes[0].plot(c["position"], c["hr"], label=name, lw=1.6)
        axes[1].plot(c["position"], c["ndcg"], label=name, lw=1.6)
    for ax, what in ((axes[0], f"HR@{k}"), (axes[1], f"NDCG@{k}")):
        ax.set_xlabel("position in the stream")
        ax.set_ylabel(what)
        ax.set_title(f"{what} over the stream (prequential)")
        ax.grid(alpha=0.3)
        ax.set_ylim(bottom=0)
    axes[0].legend(fontsize=8)
    labels = [b[0] for b in HISTORY_BUCKETS]
    width = 0.8 / max(len(models), 1)
    for j, (name, m) in enumerate(models.items()):
        vals = [m["by_history"][b]["hr"] or 0.0 for b in labels]
        axes[2].bar(np.arange(len(labels)) + j * width, vals, width, label=name)
    axes[2].set_xticks(np.arange(len(labels)) + 0.4 - width / 2, labels)
    axes[2].set_xlabel("user's earlier events")
    axes[2].set_ylabel(f"HR@{k}")
    axes[2].set_title(f"HR@{k} by history length")
    axes[2].grid(alpha=0.3, axis="y")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def format_summary(report: Mapping[str, Any]) -> str:
    """A fixed-width table of the overall figures, for terminals and logs."""
    k = report["k"]
    lines = [
        f"{'recommender':<20} {'HR@' + str(k):>8} {'NDCG@' + str(k):>8} {'MRR@' + str(k):>8} "
        f"{'AUC':>7} {'cover':>7} {'pop%':>6} {'n':>7}"
    ]

    def f(x: Any, w: int, p: int = 4) -> str:
        return f"{x:>{w}.{p}f}" if isinstance(x, (int, float)) else f"{'-':>{w}}"

    for name, m in report["models"].items():
        o = m["overall"]
        lines.append(
            f"{name:<20} {f(o.get('hr'), 8)} {f(o.get('ndcg'), 8)} {f(o.get('mrr'), 8)} "
            f"{f(o.get('auc'), 7, 3)} {f(o.get('coverage'), 7, 3)} "
            f"{f(o.get('mean_rec_pop_pct'), 6, 2)} {o['n']:>7}"
        )
    for pair, r in report.get("ratios", {}).items():
        hr, nd = r.get("hr"), r.get("ndcg")
        lines.append(
            f"ratio {pair:<30} HR {hr:.2f}x  NDCG {nd:.2f}x"
            if hr is not None and nd is not None
            else f"ratio {pair:<30} n/a"
        )
    return "\n".join(lines)
