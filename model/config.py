"""Hyper-parameters of the online model.

A plain frozen dataclass: `model/` knows nothing about environment variables, Kafka or Redis.
`streamrec.consumers.config` composes it into the one process config and fills it from
`STREAMREC_MODEL_*` variables.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

DEFAULT_EVENT_WEIGHTS: dict[str, float] = {
    "view": 1.0,
    "click": 2.0,
    "add_to_cart": 3.0,
    "purchase": 4.0,
    # A rating's sign and weight come from its value (see rating_* below).
    "rating": 1.0,
    # Negative weights are explicit negatives: the item is pushed below the user's others.
    "dislike": -1.0,
}


class ConfigError(ValueError):
    """A setting has a value that cannot work; `setting` names the field."""

    def __init__(self, setting: str, message: str) -> None:
        super().__init__(f"{setting}: {message}")
        self.setting = setting
        self.message = message


def _require(cond: bool, setting: str, message: str) -> None:
    if not cond:
        raise ConfigError(setting, message)


@dataclass(frozen=True)
class ModelConfig:
    """Model and optimiser settings; every field is documented in docs/configuration.md."""

    dim: int = 32
    # Base step of user rows and the global bias (items: item_learning_rate). 0.1 rather than
    # 0.25: on the synthetic stream larger user steps cost HR@10 (docs/performance.md,
    # "Defaults on the regimes").
    learning_rate: float = 0.1
    # Base step of item rows (embedding, bias, feature rows); 0: learning_rate. Items want a
    # larger step than users: the sparse regimes gain from it, the synthetic stream loses
    # when users take it too (docs/performance.md, "Defaults on the regimes").
    item_learning_rate: float = 0.25
    # Multiplies the gradient of user id rows (embedding and user bias) before the clip and
    # the step. A user row gets one step per mini-batch from its few events there, while an
    # item row sums the gradients of every event and negative that touches it; scaled up, the
    # user rows take a larger share of the clipped step (clip_norm) and items a smaller one.
    # Most of the gain comes through the clip: with clip_norm 0 the same scale gains nothing.
    # Measured by bench_quality (50k events, seed 0, 1024 negatives), HR@10 / NDCG@10:
    # batch 512: 0.344 / 0.196 at 1, 0.353 / 0.202 at 4, 0.354 / 0.204 at 8;
    # batch 2048: 0.201 / 0.111 at 1 (64 negatives), 0.334 / 0.190 at 4.
    # Under Adagrad the scale matters for a row's first steps (until its squared gradients
    # outgrow adagrad_initial_accumulator): 8 lets a new user's first events move it at once.
    user_gradient_scale: float = 8.0
    # Adagrad and sampled softmax beat SGD and BPR on every regime (docs/performance.md,
    # "Defaults on the regimes").
    optimizer: str = "adagrad"  # sgd | adagrad
    loss: str = "softmax"  # bpr | softmax
    # Negatives shared by the whole mini-batch (one gather, one matmul). More of them give each
    # event's BPR gradient a better estimate of the catalogue; the cost grows with
    # batch * negatives * dim. bench_quality (50k events, batch 512, seed 0), HR@10: 0.303 at
    # 64, 0.333 at 256, 0.344 at 1024, 0.345 at 2048 (with user_gradient_scale 1).
    negatives: int = 1024
    l2: float = 1e-4
    init_scale: float = 0.05
    # Global-norm clip of a batch's gradient at clip_norm * sqrt(events in the batch), i.e. a
    # bound on the RMS per-event gradient norm, so the same value works at any batch size; 0 = off.
    # Off by default: Adagrad already bounds each step, and the clip (global over the batch)
    # shrank every row's step whenever the user rows' scaled gradients were large
    # (docs/performance.md, "Defaults on the regimes").
    clip_norm: float = 0.0
    seed: int = 0
    initial_capacity: int = 1024  # rows per table before the first growth
    feature_hash_buckets: int = 0  # 0: one row per feature value; >0: hash values into buckets
    event_weights: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_EVENT_WEIGHTS))
    rating_positive_min: float = 4.0  # ratings >= this are positives
    rating_negative_max: float = 2.0  # ratings <= this are explicit negatives
    popularity_half_life_s: float = 7 * 24 * 3600.0
    steps_per_batch: int = 1
    # A row's gradient in a batch is the sum over its occurrences; scaling it by
    # occurrences^-row_scaling keeps hot rows (a popular item 50 times in a batch, the global
    # bias) from overshooting with SGD. 0: plain sum, 1: mean per row.
    row_scaling: float = 0.5
    # Share of the shared negatives drawn by recent popularity (the rest uniformly over items).
    # Popularity-drawn negatives push popular items down: less popularity bias, but lower
    # hit rate on streams where popular items are what people take (measured on the planted
    # synthetic stream: HR@10 0.546 at 0.0 vs 0.472 at 0.5), hence 0 by default.
    negative_popularity_mix: float = 0.0
    # Recent positive items remembered for popularity-sampled negatives (a ring buffer).
    negative_buffer_size: int = 100_000
    adagrad_initial_accumulator: float = 0.1
    # User-feature names that get their own popularity segment ("country" -> "country=DE"),
    # comma-separated; "*": every user feature; "": global popularity only. A string, not a
    # tuple, so that one STREAMREC_MODEL_POPULARITY_SEGMENTS variable can set it.
    popularity_segments: str = "*"
    popularity_max_segments: int = 10_000  # new segments beyond this are not tracked
    popularity_max_future_s: float = 24 * 3600.0  # timestamps later than now + this are clamped
    # Users and items without an event for this long (event time) are forgotten: their rows
    # are freed (the tables compacted) and `learn` reports them, so a stream of short-lived ids
    # (sessions, expiring listings) does not grow the model for ever. 0: never.
    evict_after_s: float = 0.0

    def __post_init__(self) -> None:
        _require(1 <= self.dim <= 4096, "dim", f"must be in 1..4096, got {self.dim}")
        _require(
            math.isfinite(self.learning_rate) and self.learning_rate > 0,
            "learning_rate",
            f"must be a positive finite number, got {self.learning_rate}",
        )
        _require(
            math.isfinite(self.item_learning_rate) and self.item_learning_rate >= 0,
            "item_learning_rate",
            f"must be a finite number >= 0 (0: learning_rate), got {self.item_learning_rate}",
        )
        _require(
            math.isfinite(self.user_gradient_scale) and self.user_gradient_scale > 0,
            "user_gradient_scale",
            f"must be a positive finite number, got {self.user_gradient_scale}",
        )
        _require(
            self.optimizer in ("sgd", "adagrad"),
            "optimizer",
            f"must be 'sgd' or 'adagrad', got {self.optimizer!r}",
        )
        _require(
            self.loss in ("bpr", "softmax"),
            "loss",
            f"must be 'bpr' or 'softmax', got {self.loss!r}",
        )
        _require(1 <= self.negatives <= 100_000, "negatives", "must be in 1..100000")
        _require(math.isfinite(self.l2) and self.l2 >= 0, "l2", "must be finite and >= 0")
        _require(
            math.isfinite(self.init_scale) and self.init_scale > 0, "init_scale", "must be > 0"
        )
        _require(math.isfinite(self.clip_norm) and self.clip_norm >= 0, "clip_norm", "must be >= 0")
        _require(self.initial_capacity >= 1, "initial_capacity", "must be >= 1")
        _require(self.feature_hash_buckets >= 0, "feature_hash_buckets", "must be >= 0")
        _require(bool(self.event_weights), "event_weights", "must name at least one event type")
        for name, w in self.event_weights.items():
            _require(
                bool(name) and math.isfinite(w),
                "event_weights",
                f"weight of {name!r} must be a finite number, got {w}",
            )
        _require(
            self.rating_negative_max < self.rating_positive_min,
            "rating_negative_max",
            "must be below rating_positive_min",
        )
        _require(
            math.isfinite(self.popularity_half_life_s) and self.popularity_half_life_s > 0,
            "popularity_half_life_s",
            "must be > 0",
        )
        _require(1 <= self.steps_per_batch <= 100, "steps_per_batch", "must be in 1..100")
        _require(
            math.isfinite(self.evict_after_s) and self.evict_after_s >= 0,
            "evict_after_s",
            f"must be a finite number >= 0 (0: never), got {self.evict_after_s}",
        )
        _require(
            math.isfinite(self.negative_popularity_mix) and 0 <= self.negative_popularity_mix <= 1,
            "negative_popularity_mix",
            f"must be in [0, 1], got {self.negative_popularity_mix}",
        )
        _require(
            math.isfinite(self.row_scaling) and 0 <= self.row_scaling <= 1,
            "row_scaling",
            f"must be in [0, 1], got {self.row_scaling}",
        )
        _require(self.negative_buffer_size >= 1, "negative_buffer_size", "must be >= 1")
        _require(
            math.isfinite(self.adagrad_initial_accumulator)
            and self.adagrad_initial_accumulator > 0,
            "adagrad_initial_accumulator",
            "must be a positive finite number",
        )
        _require(
            isinstance(self.popularity_segments, str)
            and (
                self.popularity_segments in ("*", "")
                or all(n.strip() for n in self.popularity_segments.split(","))
            ),
            "popularity_segments",
            f'must be "*", "" or comma-separated feature names, got {self.popularity_segments!r}',
        )
        _require(self.popularity_max_segments >= 0, "popularity_max_segments", "must be >= 0")
        _require(
            math.isfinite(self.popularity_max_future_s) and self.popularity_max_future_s >= 0,
            "popularity_max_future_s",
            "must be finite and >= 0",
        )

    def segment_features(self) -> frozenset[str] | None:
        """Feature names with popularity segments; None means every feature name."""
        if self.popularity_segments == "*":
            return None
        return frozenset(n.strip() for n in self.popularity_segments.split(",") if n.strip())
