"""String ids and feature tokens to table rows.

Ids are strings (PITFALLS: ids above 2^63 or negative overflow an int64 tensor), and the
vocabulary is never fixed up front: a stream keeps bringing new users and items, so an id gets
the next free row the first time it is seen. Rows move only when the model evicts idle ids
(`ModelConfig.evict_after_s`): the survivors are renumbered in order and every row-indexed
structure follows, so a row's learned embedding stays attached to its id across checkpoints.
"""

from __future__ import annotations

import itertools
import zlib
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from streamrec.model.base import Features


class IdMap(dict[str, int]):
    """id -> row; a missing id is added on lookup with `rows(..., add=True)`.

    A dict subclass so that the hot path is `map(self.__getitem__, ids)` at C speed, with
    `__missing__` only running for ids seen for the first time.
    """

    def __init__(self, ids: Iterable[str] = ()) -> None:
        super().__init__()
        self.ids: list[str] = []
        for x in ids:
            self.add(x)

    def __missing__(self, key: str) -> int:
        return self.add(key)

    def add(self, key: str) -> int:
        row = dict.get(self, key)
        if row is None:
            row = len(self.ids)
            dict.__setitem__(self, key, row)
            self.ids.append(key)
        return row

    def row(self, key: str) -> int:
        """The row of a known id, -1 for an unknown one (never adds)."""
        return dict.get(self, key, -1)

    def rows(self, keys: Sequence[str], add: bool = True) -> np.ndarray:
        """Rows of `keys` as int32; unknown ids are added when `add`, else -1."""
        get = self.__getitem__ if add else self.row
        return np.fromiter(map(get, keys), dtype=np.int32, count=len(keys))


class FeatureSpace:
    """Feature token ("name=value") -> row of a feature table.

    With `buckets > 0` a token's row is a stable hash (crc32, never Python's salted `hash()`,
    so rows survive a restart) modulo `buckets`: the table has a fixed size however many values
    a stream invents. With `buckets == 0` every token gets its own row, like an id.
    """

    def __init__(self, buckets: int = 0) -> None:
        self.buckets = buckets
        self.tokens = IdMap()  # every token seen, hashed or not: segments and saves need names

    @property
    def n_rows(self) -> int:
        return self.buckets if self.buckets else len(self.tokens.ids)

    def rows(self, tokens: Sequence[str]) -> np.ndarray:
        """Rows of tokens, registering new ones (learning and catalogue records)."""
        ids = self.tokens.rows(tokens, add=True)
        return self._hashed(tokens) if self.buckets else ids

    def known_rows(self, tokens: Sequence[str]) -> np.ndarray:
        """Rows without registering anything (serving); -1 for an unknown unhashed token."""
        return self._hashed(tokens) if self.buckets else self.tokens.rows(tokens, add=False)

    def _hashed(self, tokens: Sequence[str]) -> np.ndarray:
        return np.fromiter(
            (zlib.crc32(t.encode("utf-8", "surrogatepass")) % self.buckets for t in tokens),
            dtype=np.int32,
            count=len(tokens),
        )


def feature_tokens(features: Features | None) -> tuple[str, ...]:
    """Tokens of a feature mapping, first occurrence order, duplicates dropped.

    A multi-valued feature gives one token per value; a non-string value is turned into a
    string so that `{"age": 30}` and `{"age": "30"}` are the same feature.
    """
    if not features:
        return ()
    out: dict[str, None] = {}
    for name, value in features.items():
        if isinstance(value, str):
            out[f"{name}={value}"] = None
        elif isinstance(value, Mapping):
            raise TypeError(f"feature {name!r}: expected a string or a list of strings")
        elif isinstance(value, Iterable):
            for v in value:
                out[f"{name}={v}"] = None
        elif value is not None:
            out[f"{name}={value}"] = None
    return tuple(out)


def encode_strings(strings: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Strings as one UTF-8 byte blob plus offsets: compact in an .npz, any content allowed.

    A numpy unicode array would pad every id to the longest one (256 bytes -> 1 KiB each).
    """
    encoded = [s.encode("utf-8", "surrogatepass") for s in strings]
    offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
    if encoded:
        np.cumsum([len(b) for b in encoded], out=offsets[1:])
    blob = np.frombuffer(b"".join(encoded), dtype=np.uint8).copy()
    return blob, offsets


def decode_strings(blob: np.ndarray, offsets: np.ndarray) -> list[str]:
    raw = blob.tobytes()
    off = offsets.tolist()
    return [raw[a:b].decode("utf-8", "surrogatepass") for a, b in itertools.pairwise(off)]


def grow_rows(a: np.ndarray, n: int) -> np.ndarray:
    """`a` with room for n rows (new rows zero), doubling, so growth is O(1) amortised per row.

    The numpy counterpart of `tables.GrowingTable` for counters, flags and baseline tables.
    """
    if n <= a.shape[0]:
        return a
    cap = max(64, a.shape[0])
    while cap < n:
        cap *= 2
    out = np.zeros((cap, *a.shape[1:]), dtype=a.dtype)
    out[: a.shape[0]] = a
    return out


def keep_rows(a: np.ndarray, live: np.ndarray) -> np.ndarray:
    """`a` with rows `live` moved to the front, in order, and zeros after (same length): the
    numpy counterpart of `GrowingTable.keep_rows`, for counters when ids are evicted."""
    out = np.zeros_like(a)
    out[: live.shape[0]] = a[live]
    return out
