"""Test and benchmark helpers: a plain event type and a planted-structure stream.

Lives in the package (not under tests/) so that the benchmarks and other layers' tests can use
the same events without importing test modules. numpy only; no TensorFlow.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from streamrec.model.base import Features


@dataclass(frozen=True)
class Event:
    """The smallest object that satisfies `EventLike`."""

    user: str
    item: str
    type: str = "view"
    value: float | None = None
    ts: int = 0
    user_features: Features | None = None
    item_features: Features | None = None

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Event:
        """From the wire schema (e.g. `streamrec.streaming.synthetic` records)."""
        return cls(
            user=str(d["user"]),
            item=str(d["item"]),
            type=str(d["type"]),
            value=d.get("value"),
            ts=int(d.get("ts", 0)),
            user_features=d.get("user_features"),
            item_features=d.get("item_features"),
        )


def planted_stream(
    n_users: int = 300,
    n_items: int = 200,
    n_events: int = 20_000,
    n_clusters: int = 8,
    in_cluster: float = 0.9,
    zipf: float = 1.1,
    seed: int = 0,
    start_ms: int = 1_700_000_000_000,
) -> Iterator[Event]:
    """Users and items in latent clusters with power-law popularity inside each cluster.

    A user picks an item of their own cluster with probability `in_cluster`, else any item by
    global popularity; within a cluster, items follow rank^-zipf. User activity is power-law
    too. A personal model can learn the clusters; popularity cannot.
    """
    rng = np.random.default_rng(seed)
    user_cluster = rng.integers(0, n_clusters, n_users)
    item_cluster = rng.integers(0, n_clusters, n_items)
    item_pop = (rng.permutation(n_items) + 1.0) ** -zipf
    user_act = (rng.permutation(n_users) + 1.0) ** -0.8
    user_act /= user_act.sum()
    global_p = item_pop / item_pop.sum()
    members = [np.flatnonzero(item_cluster == c) for c in range(n_clusters)]
    cluster_p = [item_pop[m] / item_pop[m].sum() if m.size else None for m in members]
    users = rng.choice(n_users, size=n_events, p=user_act)
    local = rng.random(n_events) < in_cluster
    for j in range(n_events):
        u = int(users[j])
        c = int(user_cluster[u])
        if local[j] and members[c].size:
            i = int(rng.choice(members[c], p=cluster_p[c]))
        else:
            i = int(rng.choice(n_items, p=global_p))
        yield Event(f"u{u}", f"i{i}", "view", None, start_ms + j * 1000)


def table_state(rec: Any) -> dict[str, np.ndarray]:
    """Every table, accumulator and the global bias of an `OnlineRecommender`, as numpy
    arrays keyed by table name: what exact (bit-for-bit) comparisons of two models check."""
    out: dict[str, np.ndarray] = {}
    for side in (rec.users, rec.items):
        for t in side.tables:
            n = side.n_init if t is not side.femb else side.f_init
            out[t.name] = t.head(n)
            acc = t.head_acc(n)
            if acc is not None:
                out[f"{t.name}_acc"] = acc
    out["global_bias"] = rec.gbias.head(1)
    return out
