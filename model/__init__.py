"""streamrec model package.

Importing the package (or `streamrec.model.config`) must not import TensorFlow: the producer,
the read path and the config loader use this package without paying for it. The TensorFlow
model is loaded on first access to `OnlineRecommender`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from streamrec.model.online import OnlineRecommender

__all__ = ["OnlineRecommender"]


def __getattr__(name: str) -> Any:
    if name == "OnlineRecommender":
        from streamrec.model.online import OnlineRecommender

        return OnlineRecommender
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
