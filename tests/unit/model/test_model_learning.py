"""The model must learn planted structure that popularity cannot see.

Prequential evaluation (test-then-train): every batch is first scored with the model as it is,
then learned. HR@10 = share of positive events whose item was in the user's top 10 just before.
The stream is the project's shared synthetic generator when it is there (genre-clustered
tastes, Zipf popularity, features, ratings, dislikes), else the model package's own planted one.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from streamrec.model.config import ModelConfig
from streamrec.model.online import OnlineRecommender
from streamrec.model.runtime import configure_threads
from streamrec.model.testing import Event, planted_stream

# The defaults before softmax and Adagrad (and the settings they were tuned with), kept
# learning: a deployment may still set them.
_BPR_SGD = {
    "loss": "bpr",
    "optimizer": "sgd",
    "learning_rate": 0.25,
    "item_learning_rate": 0.0,
    "user_gradient_scale": 4.0,
    "clip_norm": 1.0,
}

configure_threads(1, 1)  # before the first TF op: 2 shared cores

POSITIVE = ("view", "click", "add_to_cart", "purchase")


def synthetic_events() -> list[Event]:
    try:
        from streamrec.streaming.synthetic import SyntheticConfig, SyntheticStream
    except ImportError:  # the shared generator is another layer's; fall back to ours
        return list(planted_stream(400, 200, 15_000, n_clusters=12, seed=1))
    world = SyntheticStream(SyntheticConfig(seed=1, n_users=400, n_items=200, n_events=15_000))
    return [Event.from_dict(d) for d in world.events()]


def prequential_hr(
    rec: OnlineRecommender, events: list[Event], warmup: int = 5000, batch: int = 256
) -> tuple[float, float]:
    """(HR@10 of the model, HR@10 of the model's own decayed popularity)."""
    hits = pop_hits = total = 0
    for start in range(0, len(events), batch):
        part = events[start : start + batch]
        if start >= warmup:
            pos = [e for e in part if e.type in POSITIVE]
            recs = rec.recommend_many(sorted({e.user for e in pos}), 10)
            popular = {i for i, _ in rec.popularity.top(10)}
            for e in pos:
                total += 1
                hits += e.item in {i for i, _ in recs[e.user]}
                pop_hits += e.item in popular
        rec.learn(part)
    assert total > 1000
    return hits / total, pop_hits / total


@pytest.fixture(scope="module")
def events() -> list[Event]:
    return synthetic_events()


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda: ModelConfig(dim=16), id="defaults"),
        pytest.param(lambda: ModelConfig(dim=16, **_BPR_SGD), id="bpr-sgd"),
        pytest.param(lambda: ModelConfig(dim=16, **{**_BPR_SGD, "loss": "softmax"}), id="softmax"),
        pytest.param(
            lambda: ModelConfig(dim=16, **{**_BPR_SGD, "optimizer": "adagrad"}), id="adagrad"
        ),
    ],
)
def test_model_beats_decayed_popularity(
    events: list[Event], make: Callable[[], ModelConfig]
) -> None:
    rec = OnlineRecommender(make())
    hr, hr_pop = prequential_hr(rec, events)
    # Measured 2026-11-25 on this stream: model 0.636-0.642 (0.59-0.62 with the earlier
    # defaults, 64 negatives and user_gradient_scale 1), popularity 0.51.
    assert hr > hr_pop + 0.04, (hr, hr_pop)
    assert rec.skipped_nonfinite == 0


def test_planted_clusters_beat_popularity() -> None:
    """The package's own generator: clusters only, no features, so only ids can learn them."""
    rec = OnlineRecommender(ModelConfig(dim=16))
    hr, hr_pop = prequential_hr(rec, list(planted_stream(300, 200, 12_000, seed=3)))
    assert hr > hr_pop + 0.04, (hr, hr_pop)
