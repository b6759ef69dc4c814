"""Redis key layout, shared by the writer (store) and the readers (client).

`{user}` and `{item}` are real Redis Cluster hash tags: every key of one user lands in one slot.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Keys:
    prefix: str = "sr:"

    def user(self, user: str) -> str:
        return f"{self.prefix}u:{{{user}}}"

    def item(self, item: str) -> str:
        return f"{self.prefix}i:{{{item}}}"

    def recs(self, user: str) -> str:
        return f"{self.prefix}recs:{{{user}}}"

    def seen(self, user: str) -> str:
        return f"{self.prefix}seen:{{{user}}}"

    def user_features(self, user: str) -> str:
        return f"{self.prefix}uf:{{{user}}}"

    def item_features(self, item: str) -> str:
        return f"{self.prefix}if:{{{item}}}"

    def popularity(self, segment: str | None = None) -> str:
        return f"{self.prefix}pop" if segment is None else f"{self.prefix}pop:{segment}"

    def offsets(self, group: str) -> str:
        return f"{self.prefix}offsets:{group}"

    def recs_due(self, group: str) -> str:
        """Users whose precomputed list is older than their vector (a set): a trainer that
        restarts refreshes them, even if they never send another event."""
        return f"{self.prefix}recs-due:{group}"

    @property
    def items_matrix(self) -> str:
        return f"{self.prefix}items:matrix"

    @property
    def items_ids(self) -> str:
        return f"{self.prefix}items:ids"

    @property
    def items_bias(self) -> str:
        return f"{self.prefix}items:bias"

    @property
    def items_ver(self) -> str:
        return f"{self.prefix}items:ver"

    @property
    def model(self) -> str:
        return f"{self.prefix}model"

    @property
    def user_feature_vectors(self) -> str:
        """Hash: user-feature token ("country=DE") -> float32 LE embedding. Readers sum a new
        user's tokens into a vector, so cold-start users are scored without TensorFlow."""
        return f"{self.prefix}ufe"


MATRIX_FULL_BYTES = 1 << 20  # 4k items at dimension 64


def matrix_interval(interval: float, nbytes: int) -> float:
    """How long an item-matrix snapshot of `nbytes` is kept before the next one, for the
    writer (trainer) and every reader: `interval` at MATRIX_FULL_BYTES and more, shorter in
    proportion below, so a small snapshot moves no more bytes per `interval` than one of
    MATRIX_FULL_BYTES (a bigger one moves its own size once per `interval`).

    A fixed interval bounds the traffic of a big catalogue but leaves a small one (100 items,
    a few kB) stale for nothing: the pipeline's evaluation then trailed its in-process twin
    by 0.07-0.1 HR@10 (3k events, 100 items), all of it on the real-time path. At 8 MiB the
    trainer wrote its 5 MB matrix (20k items) every 0.6 s instead of 1 s, which cost its
    freshness at 5k events/s a third (p99 0.3 -> 0.45 s): hence 1 MiB.
    """
    return interval * min(1.0, nbytes / MATRIX_FULL_BYTES)


def encode_vector(vec: np.ndarray) -> bytes:
    """float32 little-endian, the layout every reader decodes with `decode_vector`."""
    return np.ascontiguousarray(vec, dtype="<f4").tobytes()


def decode_vector(raw: bytes, dim: int | None = None) -> np.ndarray:
    """Raises ValueError on bytes that cannot be a float32 vector (of `dim`, when given)."""
    if len(raw) % 4:
        raise ValueError(f"vector bytes length {len(raw)} is not a multiple of 4")
    vec = np.frombuffer(raw, dtype="<f4")
    if dim is not None and vec.shape[0] != dim:
        raise ValueError(f"vector has {vec.shape[0]} values, expected {dim}")
    if not np.all(np.isfinite(vec)):
        raise ValueError("vector holds non-finite values")
    return vec


def decode_member(x: object) -> str:
    """A set or zset member as text; ids are UTF-8, and a bad byte must not fail a read."""
    return x.decode("utf-8", "replace") if isinstance(x, bytes) else str(x)


def offset_field(topic: str, partition: int) -> str:
    return f"{topic}:{partition}"
