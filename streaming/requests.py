"""What a caller may ask the read client and what it gets back: argument checks, errors, answers.

Kept apart from the read paths so that the HTTP layer, the CLI and the client reject a bad
request with the same words and exception types, before any Redis round trip.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
from redis.exceptions import AuthenticationError, RedisError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from streamrec.model.ids import feature_tokens

SOURCES = ("precomputed", "realtime", "features", "popularity")
MAX_USER_BYTES = 256  # the event rules' id limit: a longer id cannot have been written

Features = Mapping[str, "str | Sequence[str]"]


# --------------------------------------------------------------------------- errors


class InvalidRequest(ValueError):
    """The caller's fault: the same request fails the same way again (HTTP 422)."""

    retriable = False

    def __init__(self, argument: str, message: str) -> None:
        super().__init__(f"{argument}: {message}")
        self.argument = argument
        self.message = message


class InvalidRequestType(InvalidRequest, TypeError):
    """An argument of the wrong type; also a TypeError, so both idioms catch it."""


class StoreUnavailable(RuntimeError):
    """Redis did not answer after the client's retries (HTTP 503).

    `retriable` is True for connection errors and timeouts (try again later, the data is
    fine) and False for errors a retry cannot fix (authentication, a misconfigured server).
    """

    def __init__(self, message: str, *, retriable: bool = True) -> None:
        hint = "retriable: try again later" if retriable else "not retriable: check the config"
        super().__init__(f"Redis unavailable ({hint}): {message}")
        self.retriable = retriable


@contextmanager
def store_errors() -> Iterator[None]:
    """Turn redis-py's exceptions into one typed error; never log the URL (it may carry a
    password: CVE-2026-32597)."""
    try:
        yield
    except AuthenticationError as e:
        raise StoreUnavailable(
            f"authentication failed ({type(e).__name__})", retriable=False
        ) from e
    except (RedisConnectionError, RedisTimeoutError) as e:
        raise StoreUnavailable(f"{type(e).__name__}: {e}") from e
    except RedisError as e:
        raise StoreUnavailable(f"{type(e).__name__}: {e}", retriable=False) from e


# --------------------------------------------------------------------------- answers


@dataclass(frozen=True)
class Recommendations:
    user: str
    items: list[str]
    scores: list[float]
    source: str  # one of SOURCES

    def pairs(self) -> list[tuple[str, float]]:
        return list(zip(self.items, self.scores, strict=True))

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape shared by the CLI and the HTTP endpoint."""
        return {
            "user": self.user,
            "source": self.source,
            "items": [{"item": i, "score": s} for i, s in self.pairs()],
        }


# --------------------------------------------------------------------------- input checks


def check_k(k: object, max_k: int) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise InvalidRequestType("k", f"must be an int, got {type(k).__name__} {k!r}")
    if not 1 <= int(k) <= max_k:
        raise InvalidRequest("k", f"must be in 1..{max_k}, got {k}")
    return int(k)


def check_user(user: object) -> str:
    """Ids are strings; ints are accepted and normalised, as in events."""
    if isinstance(user, bool) or not isinstance(user, (str, int)):
        raise InvalidRequestType("user", f"must be a string, got {type(user).__name__}")
    s = str(user)
    try:
        n = len(s.encode("utf-8"))
    except UnicodeEncodeError as e:
        raise InvalidRequest("user", "is not valid UTF-8 (lone surrogate)") from e
    if not 1 <= n <= MAX_USER_BYTES:
        raise InvalidRequest("user", f"must be 1..{MAX_USER_BYTES} bytes of UTF-8, got {n}")
    return s


def check_features(features: object) -> tuple[str, ...]:
    """Caller-given features -> tokens ("name=value"), the writer's own tokenisation."""
    if not isinstance(features, Mapping):
        raise InvalidRequestType(
            "user_features", f"must be a mapping name -> value(s), got {type(features).__name__}"
        )
    for name, value in features.items():
        if not isinstance(name, str) or not name:
            raise InvalidRequestType("user_features", f"names must be non-empty strings: {name!r}")
        values = [value] if isinstance(value, str) else value
        if not isinstance(values, (list, tuple)) or not all(isinstance(v, str) for v in values):
            raise InvalidRequestType(
                "user_features",
                f"{name!r}: expected a string or a list of strings, got {type(value).__name__}",
            )
    return feature_tokens(features)


def parse_feature_args(args: Sequence[str]) -> dict[str, str | list[str]]:
    """`["country=DE", "genre=a", "genre=b"]` -> `{"country": "DE", "genre": ["a", "b"]}`;
    shared by the CLI and the HTTP query string so both read features the same way."""
    out: dict[str, str | list[str]] = {}
    for arg in args:
        name, sep, value = arg.partition("=")
        if not sep or not name or not value:
            raise InvalidRequest("feature", f"expected name=value, got {arg!r}")
        prev = out.get(name)
        if prev is None:
            out[name] = value
        elif isinstance(prev, list):
            prev.append(value)
        else:
            out[name] = [prev, value]
    return out
