"""Cold start: who gets served by which path, and new items recommended before any event."""

from __future__ import annotations

import numpy as np
import pytest

from streamrec.model.config import ModelConfig
from streamrec.model.online import (
    SOURCE_FEATURES,
    SOURCE_MODEL,
    SOURCE_POPULARITY,
    OnlineRecommender,
)
from streamrec.model.runtime import configure_threads
from streamrec.model.testing import Event

configure_threads(1, 1)  # before the first TF op: 2 shared cores

T0 = 1_700_000_000_000


def trained() -> OnlineRecommender:
    """Germans read krimis, French read romans; a few globally popular items on top.

    Items carry a genre feature, users a country feature, so both feature tables learn.
    """
    rec = OnlineRecommender(ModelConfig(dim=8, optimizer="adagrad", seed=1, negatives=8))
    rng = np.random.default_rng(0)
    krimis = [f"krimi{j}" for j in range(6)]
    romans = [f"roman{j}" for j in range(6)]
    for item in krimis:
        rec.set_item_features(item, {"genre": "krimi"})
    for item in romans:
        rec.set_item_features(item, {"genre": "roman"})
    events = []
    for j in range(3000):
        de = j % 2 == 0
        user = f"{'de' if de else 'fr'}{(j // 2) % 20}"
        pool = krimis if de else romans
        item = pool[int(rng.integers(0, len(pool)))]
        events.append(Event(user, item, "view", None, T0 + j, {"country": "DE" if de else "FR"}))
    for s in range(0, len(events), 200):
        rec.learn(events[s : s + 200])
    return rec


@pytest.fixture(scope="module")
def model() -> OnlineRecommender:
    return trained()


def test_known_user_is_served_by_the_model(model: OnlineRecommender) -> None:
    recs, source = model.recommend_with_source("de0", 5)
    assert source == SOURCE_MODEL
    assert all(i.startswith("krimi") for i, _ in recs)


def test_new_user_with_features_is_served_from_feature_embeddings(model: OnlineRecommender) -> None:
    rec = model
    recs, source = rec.recommend_with_source("newbie", 5, user_features={"country": "FR"})
    assert source == SOURCE_FEATURES
    assert all(i.startswith("roman") for i, _ in recs)
    assert rec.user_vector("newbie") is None  # features passed in a call are not remembered
    rec.set_user_features("catalogued", {"country": "DE"})
    recs, source = rec.recommend_with_source("catalogued", 5)
    assert source == SOURCE_FEATURES
    assert all(i.startswith("krimi") for i, _ in recs)


def test_user_with_nothing_gets_popularity_segment_then_global(model: OnlineRecommender) -> None:
    rec = model
    recs, source = rec.recommend_with_source("stranger", 4)
    assert source == SOURCE_POPULARITY and len(recs) == 4
    assert [i for i, _ in recs] == [i for i, _ in rec.popularity.top(4)]
    # Features never seen in training cannot embed, but an untrained token can still match
    # nothing: global popularity, with exclusions honoured and exactly k items.
    recs, source = rec.recommend_with_source("x", 3, exclude=[recs[0][0]], user_features={"a": "b"})
    assert source == SOURCE_POPULARITY and len(recs) == 3
    seg = rec.popularity.top(3, segment="country=DE")
    assert seg and all(i.startswith("krimi") for i, _ in seg)


def test_segment_popularity_when_features_are_untrained_but_segment_exists() -> None:
    rec = OnlineRecommender(ModelConfig(dim=4, seed=2))
    rec.learn([Event("a", "wurst", "view", None, T0, {"country": "DE"})])
    rec.learn([Event(f"b{j}", "brie", "view", None, T0) for j in range(5)])
    # Forget that the feature embeddings were trained, so that only the popularity segment
    # can serve the country (as for a feature that only ever came with catalogue records).
    rec.users.ftrained[:] = False
    recs, source = rec.recommend_with_source("new", 2, user_features={"country": "DE"})
    assert source == SOURCE_POPULARITY
    assert [i for i, _ in recs] == ["wurst", "brie"]  # segment first, then global fill


def test_new_item_with_features_is_recommended_before_its_first_event(
    model: OnlineRecommender,
) -> None:
    rec = model
    rec.set_item_features("krimi-new", {"genre": "krimi"})
    m = rec.item_vectors()
    j = m.ids.index("krimi-new")
    assert np.abs(m.vectors[j]).sum() > 0  # from the genre embedding, not random init
    krimi0 = m.vectors[m.ids.index("krimi0")]
    roman0 = m.vectors[m.ids.index("roman0")]
    assert m.vectors[j] @ krimi0 > m.vectors[j] @ roman0
    recs, source = rec.recommend_with_source("de1", k=7)
    assert source == SOURCE_MODEL
    assert "krimi-new" in {i for i, _ in recs}
    assert "krimi-new" not in {i for i, _ in rec.recommend("fr1", k=6)}


def test_recommend_many_mixes_paths(model: OnlineRecommender) -> None:
    rec = model
    out = rec.recommend_many(["de0", "stranger", "fr1"], k=3)
    assert set(out) == {"de0", "stranger", "fr1"} and all(len(v) == 3 for v in out.values())


def test_user_feature_vectors_serve_like_the_features_path(model: OnlineRecommender) -> None:
    """A reader summing the exported token vectors scores a new user like the model does."""
    vecs = model.user_feature_vectors(["country=DE", "country=XX"])
    assert list(vecs) == ["country=DE"]  # unknown tokens are left out
    assert set(model.user_feature_vectors()) == {"country=DE", "country=FR"}
    m = model.item_vectors()
    scores = m.vectors @ vecs["country=DE"] + m.biases
    expected = [m.ids[j] for j in np.argsort(-scores)[:5]]
    recs, source = model.recommend_with_source("nobody-yet", 5, user_features={"country": "DE"})
    assert source == SOURCE_FEATURES and [i for i, _ in recs] == expected


def test_hashed_features_cold_start() -> None:
    rec = OnlineRecommender(ModelConfig(dim=4, feature_hash_buckets=64, optimizer="adagrad"))
    rec.learn([Event(f"u{j}", "x", "view", None, T0, {"tag": "a"}) for j in range(50)])
    assert set(rec.user_feature_vectors(["tag=a", "tag=never"])) <= {"tag=a", "tag=never"}
    assert "tag=a" in rec.user_feature_vectors(["tag=a"])
    n_tokens = len(rec.users.features.tokens.ids)
    recs, source = rec.recommend_with_source("new", 1, user_features={"tag": "a"})
    assert source == SOURCE_FEATURES and recs[0][0] == "x"
    assert len(rec.users.features.tokens.ids) == n_tokens  # serving registers nothing
