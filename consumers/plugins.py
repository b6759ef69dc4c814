"""Development tooling found at run time, never imported by name: the local Kafka and Redis
servers (`streamrec services`, the demo's "start local servers") live in the separate
`streamrec-devservices` distribution of a source checkout, which registers itself under the
`streamrec.plugins` entry point group. The runtime wheel works without it.
"""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import Any

GROUP = "streamrec.plugins"
SERVICES = "services"

NO_SERVICES = (
    "streamrec services is development tooling: run `make install` in a source checkout, or "
    "point STREAMREC_KAFKA_BOOTSTRAP / STREAMREC_REDIS_URL at your servers"
)


class PluginMissing(RuntimeError):
    """A development plugin is not installed; the message says what to do instead."""


def load(name: str, missing: str) -> Any:
    """The object the `streamrec.plugins` entry point `name` names, or PluginMissing."""
    found = list(entry_points(group=GROUP, name=name))
    if not found:
        raise PluginMissing(missing)
    return found[0].load()


def services() -> Any:
    """The local-servers module (`up`, `down`, `status`, `services_command`)."""
    return load(SERVICES, NO_SERVICES)
