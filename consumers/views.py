"""Looking inside the embeddings: a PCA map of the items and "because you had X" reasons.

Figures say how well the model ranks; these views say whether what it learned makes sense.
If items of one genre sit together on the PCA map, the model found the structure a person
would expect; a recommendation explained by the user's earlier items that are most similar to
it is one a person can check.

The explanation is item-item: with the user vector read as the sum of what the user had
(p_u ≈ Σ_h q_h / |H|, which is what SGD on the user's positives pushes it towards), the score
of item i splits into one term per earlier item h, <q_h, q_i> / |H|. The earlier items with
the largest terms explain the recommendation most; their cosine says how alike they are,
independently of vector norms (popularity inflates norms).

Pure functions over an `ItemMatrix` (from a model's `item_vectors()` or from Redis), plus a
CLI that reads the trainer's state from Redis.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from streamrec.consumers.config import Config
from streamrec.model.base import ItemMatrix

MAX_COLOURS = 12


def pca_2d(vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows projected on their first two principal components, and the share of variance
    each explains. Fewer than two dimensions (or rows) are padded with zeros."""
    x = np.asarray(vectors, dtype=np.float64)
    n = x.shape[0]
    out = np.zeros((n, 2))
    if n == 0:
        return out, np.zeros(2)
    x = x - x.mean(axis=0, keepdims=True)
    _, s, vt = np.linalg.svd(x, full_matrices=False)
    m = min(2, vt.shape[0])
    out[:, :m] = x @ vt[:m].T
    var = s**2
    share = np.zeros(2)
    if var.sum() > 0:
        share[:m] = var[:m] / var.sum()
    return out, share


def plot_item_pca(
    matrix: ItemMatrix,
    label_of: Mapping[str, str] | Callable[[str], str | None],
    path: str | Path,
    *,
    title: str = "Item embeddings (PCA)",
    max_items: int = 20_000,
    seed: int = 0,
) -> dict[str, Any]:
    """Scatter of the items' first two principal components, coloured by a label (a feature
    value such as the genre). Items never trained (all-zero vectors) are left out; the most
    frequent labels get their own colour, the rest are grey "other"."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    get = label_of.get if isinstance(label_of, Mapping) else label_of
    vecs = np.asarray(matrix.vectors, dtype=np.float64)
    keep = np.flatnonzero(np.linalg.norm(vecs, axis=1) > 0)
    if keep.shape[0] > max_items:
        keep = np.sort(np.random.default_rng(seed).choice(keep, max_items, replace=False))
    ids = [matrix.ids[j] for j in keep.tolist()]
    xy, share = pca_2d(vecs[keep])
    labels = [get(i) or "unknown" for i in ids]
    common = [lab for lab, _ in Counter(labels).most_common(MAX_COLOURS)]
    cmap = plt.get_cmap("tab20" if len(common) > 10 else "tab10")
    fig, ax = plt.subplots(figsize=(7.5, 6))
    lab_arr = np.asarray(labels, dtype=object)
    other = ~np.isin(lab_arr, common)
    if other.any():
        ax.scatter(xy[other, 0], xy[other, 1], s=8, c="lightgrey", label="other", alpha=0.6)
    for j, lab in enumerate(sorted(common)):
        m = lab_arr == lab
        ax.scatter(xy[m, 0], xy[m, 1], s=10, color=cmap(j % cmap.N), label=lab, alpha=0.8)
    ax.set_xlabel(f"PC1 ({share[0]:.0%} of variance)")
    ax.set_ylabel(f"PC2 ({share[1]:.0%} of variance)")
    ax.set_title(title)
    ax.legend(fontsize=7, markerscale=1.5, loc="best", ncol=2)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return {
        "path": str(path),
        "items": len(ids),
        "labelled": sum(1 for lab in labels if lab != "unknown"),
        "explained_variance": share.tolist(),
        "separation": label_separation(xy, labels, common),
    }


def label_separation(xy: np.ndarray, labels: Sequence[str], keep: Sequence[str]) -> float | None:
    """Between-label share of the variance of the 2-D map (0: labels mixed, 1: each label
    a point): one number saying whether the picture shows clusters."""
    lab = np.asarray(labels, dtype=object)
    m = np.isin(lab, [k for k in keep if k != "unknown"])
    if m.sum() < 2 or len(set(lab[m].tolist())) < 2:
        return None  # one label (or none known): nothing to separate
    pts, lab = xy[m], lab[m]
    total = ((pts - pts.mean(axis=0)) ** 2).sum()
    if total <= 0:
        return None
    within = sum(((pts[lab == v] - pts[lab == v].mean(axis=0)) ** 2).sum() for v in set(lab))
    return float(1.0 - within / total)


@dataclass(frozen=True)
class Reason:
    """One earlier item's part in a recommendation."""

    item: str  # the earlier item
    contribution: float  # <q_h, q_i> / |H|: its term of the item-based score
    share: float  # of the positive terms' sum
    cosine: float


def explain(
    matrix: ItemMatrix,
    history: Sequence[str],
    item: str,
    top: int = 3,
    index: Mapping[str, int] | None = None,
) -> list[Reason]:
    """The user's earlier items that explain `item` most, largest contribution first.

    Earlier items unknown to the matrix are skipped; an unknown `item` has no reasons.
    """
    index = index if index is not None else {x: j for j, x in enumerate(matrix.ids)}
    j = index.get(item)
    rows = [(h, index[h]) for h in dict.fromkeys(history) if h in index and h != item]
    if j is None or not rows:
        return []
    vecs = np.asarray(matrix.vectors, dtype=np.float64)
    q = vecs[j]
    hv = vecs[[r for _, r in rows]]
    dots = hv @ q / len(rows)
    norms = np.linalg.norm(hv, axis=1) * np.linalg.norm(q)
    cos = np.divide(hv @ q, norms, out=np.zeros(len(rows)), where=norms > 0)
    positive = dots[dots > 0].sum()
    order = np.argsort(-dots, kind="stable")[:top]
    return [
        Reason(
            item=rows[t][0],
            contribution=float(dots[t]),
            share=float(dots[t] / positive) if positive > 0 and dots[t] > 0 else 0.0,
            cosine=float(cos[t]),
        )
        for t in order.tolist()
    ]


def explain_recommendations(
    matrix: ItemMatrix, history: Sequence[str], recs: Sequence[str], top: int = 3
) -> list[dict[str, Any]]:
    """`explain` for each recommended item, as JSON-able dicts."""
    index = {x: j for j, x in enumerate(matrix.ids)}
    return [
        {
            "item": r,
            "because": [vars(reason) for reason in explain(matrix, history, r, top, index)],
        }
        for r in recs
    ]


def write_views(
    model: Any,
    out_dir: str | Path,
    *,
    item_label: Mapping[str, str] | Callable[[str], str | None],
    histories: Mapping[str, Sequence[str]],
    users: Sequence[str],
    k: int = 5,
    label_name: str = "genre",
) -> dict[str, Any]:
    """PCA map of a model's items (`item_pca.png`) and explained top-k lists for `users`
    (`explanations.json`); returns what was written. `model` follows the model protocol."""
    import json

    out = Path(out_dir)
    matrix = model.item_vectors()
    pca = plot_item_pca(
        matrix, item_label, out / "item_pca.png", title=f"Item embeddings by {label_name} (PCA)"
    )
    explained = []
    for u in users:
        hist = list(histories.get(u, ()))
        recs = [i for i, _ in model.recommend(u, k, exclude=set(hist))]
        explained.append(
            {"user": u, "history": len(hist), "recs": explain_recommendations(matrix, hist, recs)}
        )
    path = out / "explanations.json"
    path.write_text(json.dumps(explained, indent=2) + "\n")
    return {"pca": pca, "explanations": str(path), "users": explained}


# ----------------------------------------------------------------------------- CLI (Redis)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="streamrec views",
        description="Embedding views from the trainer's state in Redis: a PCA map of the "
        "items coloured by a feature, and why a user's recommendations were made.",
    )
    p.add_argument("--pca", metavar="PNG", help="write the item PCA map here")
    p.add_argument("--feature", default="genre", help="item feature that colours the map")
    p.add_argument("--user", action="append", default=[], help="explain this user's top-k")
    p.add_argument("-k", type=int, default=5)
    p.add_argument("--top", type=int, default=3, help="reasons per recommended item")
    return p


def _redis_matrix(client: Any, prefix: str) -> ItemMatrix | None:
    from streamrec.streaming.client import Recommender

    m = Recommender(client, prefix=prefix).item_matrix()
    if m is None:
        return None
    return ItemMatrix(list(m.ids), np.asarray(m.vectors), np.asarray(m.biases))


def main(argv: Sequence[str] | None = None, cfg: Config | None = None) -> int:
    """`streamrec views`: exit 0 when done, 1 when Redis holds no item matrix yet."""
    import orjson

    from streamrec.streaming.client import Recommender
    from streamrec.streaming.keys import Keys
    from streamrec.streaming.store import connect

    args = _parser().parse_args(argv)
    cfg = cfg or Config.from_env()
    client = connect(cfg.redis)
    keys = Keys(cfg.redis.prefix)
    matrix = _redis_matrix(client, cfg.redis.prefix)
    if matrix is None:
        print(
            "streamrec views: no item matrix in Redis yet (has the trainer run?)", file=sys.stderr
        )
        return 1
    if args.pca:
        pipe = client.pipeline(transaction=False)
        for i in matrix.ids:
            pipe.get(keys.item_features(i))
        labels: dict[str, str] = {}
        for i, raw in zip(matrix.ids, pipe.execute(), strict=True):
            feats = orjson.loads(raw) if raw else {}
            v = feats.get(args.feature) if isinstance(feats, dict) else None
            if isinstance(v, list):
                v = v[0] if v else None
            if isinstance(v, str):
                labels[i] = v
        info = plot_item_pca(matrix, labels, args.pca, title=f"Items by {args.feature} (PCA)")
        print(
            f"wrote {info['path']}: {info['items']} items, {info['labelled']} with a "
            f"{args.feature!r} feature in Redis, separation {info['separation']}"
        )
    reader = Recommender(client, prefix=cfg.redis.prefix)
    for u in args.user:
        recs = reader.recommend(u, k=args.k)
        raw_seen: Any = client.zrange(keys.seen(u), 0, -1)
        hist = [x.decode() if isinstance(x, bytes) else str(x) for x in raw_seen]
        print(f"user {u} ({recs.source}, {len(hist)} earlier items):")
        for row in explain_recommendations(matrix, hist, recs.items, args.top):
            because = ", ".join(
                f"{r['item']} ({r['share']:.0%}, cos {r['cosine']:.2f})" for r in row["because"]
            )
            print(f"  {row['item']:<16} because of {because or '-'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
