"""The learn/score protocol every streamrec model follows.

One protocol serves the trainer consumer, the replay evaluator and the benchmarks (River's
`reco.base` idea): ranking is derived from scoring, and nothing here knows about Kafka or Redis.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

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
