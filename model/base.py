"""The protocols streamrec models follow, and the values they exchange.

`Recommender` is the learn/score contract every model follows (the in-process evaluator and
the baselines; River's `reco.base` idea: ranking is derived from scoring). `StreamModel` is
what the trainer consumer calls on its model: learning, the rows and matrices it writes out,
checkpoints. Nothing here knows about Kafka or Redis, or imports TensorFlow.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

if TYPE_CHECKING:
    from streamrec.model.config import ModelConfig

FeatureValue = str | Sequence[str]
Features = Mapping[str, FeatureValue]


class EventLike(Protocol):
    """What the model reads from an event; `streamrec.streaming.events.Event` fits it."""

    @property
    def user(self) -> str: ...
    @property
    def item(self) -> str: ...
    @property
    def type(self) -> str: ...
    @property
    def value(self) -> float | None: ...
    @property
    def ts(self) -> int: ...  # ms since epoch
    @property
    def user_features(self) -> Features | None: ...
    @property
    def item_features(self) -> Features | None: ...


class CheckpointMismatch(ValueError):
    """A checkpoint cannot continue under the given model settings (a setting its tables
    depend on differs): bad configuration, not a damaged file."""


@dataclass(frozen=True)
class LearnResult:
    """What one `learn` call did, for metrics and for deciding what to write out."""

    n_events: int
    loss: float  # mean loss of the batch; nan when skipped or empty
    skipped_nonfinite: bool
    touched_users: list[str] = field(default_factory=list)
    touched_items: list[str] = field(default_factory=list)
    version: int = 0
    # ids forgotten after this batch (ModelConfig.evict_after_s): their stored state is stale
    evicted_users: list[str] = field(default_factory=list)
    evicted_items: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ItemMatrix:
    """All item vectors, for real-time scoring outside the model (e.g. from Redis)."""

    ids: list[str]
    vectors: np.ndarray  # float32 [n, dim], id + feature embeddings summed
    biases: np.ndarray  # float32 [n]


class Recommender(Protocol):
    def learn(self, events: Sequence[EventLike]) -> LearnResult: ...

    def recommend(
        self,
        user: str,
        k: int = 10,
        exclude: Collection[str] = (),
        user_features: Features | None = None,
    ) -> list[tuple[str, float]]: ...

    def recommend_many(
        self,
        users: Sequence[str],
        k: int = 10,
        exclude: Mapping[str, Collection[str]] | None = None,
    ) -> dict[str, list[tuple[str, float]]]: ...

    def user_vector(self, user: str) -> tuple[np.ndarray, float] | None: ...

    def item_vectors(self) -> ItemMatrix: ...

    def save(self, path: str | Path, metadata: Mapping[str, Any] | None = None) -> None: ...


@runtime_checkable
class PopularityScores(Protocol):
    """The popularity a trainer writes out (`popularity.DecayedPopularity` fits it)."""

    def segments(self) -> list[str]: ...

    def log_scores(
        self, items: Iterable[str] | None = None, segment: str | None = None
    ) -> dict[str, float]: ...


@runtime_checkable
class StreamModel(Protocol):
    """What the trainer consumer calls on its model (`online.OnlineRecommender` fits it).

    Restoring is the class's part: `restore` is called on the class, not on a model.
    """

    @property
    def version(self) -> int: ...  # learn calls so far; stamps what is written out
    @property
    def n_items(self) -> int: ...
    @property
    def global_bias(self) -> float: ...
    @property
    def popularity(self) -> PopularityScores: ...

    def warm_up(self) -> float: ...

    def learn(self, events: Sequence[EventLike], *, touched: bool = True) -> LearnResult: ...

    def set_user_features(self, user: str, features: Features | None) -> None: ...

    def set_item_features(self, item: str, features: Features | None) -> None: ...

    def user_vectors(self, users: Sequence[str]) -> tuple[list[str], np.ndarray, np.ndarray]: ...

    def item_rows(self, items: Sequence[str]) -> tuple[list[str], np.ndarray, np.ndarray]: ...

    def item_vectors(self) -> ItemMatrix: ...

    def exclude_rows(self, exclude: Collection[str]) -> np.ndarray: ...

    def user_segments(self, user: str) -> tuple[str, ...]: ...

    def user_tokens(self, user: str) -> tuple[str, ...]: ...

    def user_feature_vectors(
        self, tokens: Iterable[str] | None = None
    ) -> dict[str, np.ndarray]: ...

    def save(self, path: str | Path, metadata: Mapping[str, Any] | None = None) -> None: ...

    @classmethod
    def restore(
        cls, path: str | Path, config: ModelConfig | None = None
    ) -> tuple[StreamModel, dict[str, Any]]: ...
