"""`streamrec services up|down|status [kafka|redis]`: what it prints and its exit codes.

The runtime's command line owns the arguments and hands them here through the
`streamrec.plugins` entry point (see consumers/plugins.py); `python -m streamrec_devservices`
runs the same command on its own.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

from streamrec.model.config import ConfigError
from streamrec.streaming.config import ServicesConfig
from streamrec_devservices.api import down, status, up
from streamrec_devservices.common import ServicesError

ACTIONS = ("up", "down", "status")


def services_command(action: str, names: Sequence[str] | None, cfg: ServicesConfig) -> int:
    """Exit codes: 0 done, 1 a server failed (or an unknown one was named), 3 `status` found
    one not healthy (LSB's "program is not running")."""
    logging.getLogger("kafka").setLevel(logging.ERROR)  # connection chatter while probing
    which = list(names) if names else None
    try:
        if action == "up":
            st = up(cfg, which)
        elif action == "down":
            st = down(cfg, which)
        elif action == "status":
            st = status(cfg, which)
        else:
            raise ServicesError(f"unknown action {action!r}; expected one of {ACTIONS}")
    except (ServicesError, ConfigError) as e:
        print(f"streamrec services {action}: {e}", file=sys.stderr)
        return 1
    for line in st.lines():
        print(line)
    if action == "up":
        if st.bootstrap:
            print(f"STREAMREC_KAFKA_BOOTSTRAP={st.bootstrap}")
        if st.redis_url:
            print(f"STREAMREC_REDIS_URL={st.redis_url}")
    if action == "status" and not st.healthy:
        return 3
    return 0
