"""The demo's closing commands: they must name its prefix, or they read nothing."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from streamrec.consumers.config import Config
from streamrec.consumers.demo import demo_config, read_back_commands
from streamrec.streaming.keys import Keys, encode_vector


def test_the_read_back_commands_carry_the_demo_prefix(tmp_path: Path) -> None:
    cfg = demo_config(Config.from_env({}), tmp_path)
    text = read_back_commands(cfg, "u0")
    assert "STREAMREC_REDIS_PREFIX=srdemo: " in text
    assert "recommend --user u0 -k 5" in text
    assert "redis-cli -h 127.0.0.1 -p 6379 GET 'srdemo:recs:{u0}'" in text
    assert "STREAMREC_REDIS_URL" not in text  # the default server needs no URL
    other = cfg.replace(redis={"url": "redis://10.0.0.5:6390/2"})
    text = read_back_commands(other, "u0")
    assert "STREAMREC_REDIS_URL=redis://10.0.0.5:6390/2" in text
    assert "redis-cli -h 10.0.0.5 -p 6390 -n 2 GET" in text


@pytest.mark.integration
def test_the_printed_recommend_command_reads_the_demo_keys(
    redis_url: str, redis_client: Any, redis_prefix: str
) -> None:
    """The printed `streamrec recommend` line, run as a user pastes it, finds the list."""
    cfg = Config.from_env({}).replace(redis={"url": redis_url, "prefix": redis_prefix})
    k = Keys(redis_prefix)
    vec = encode_vector(np.ones(4, np.float32))
    redis_client.hset(k.user("u0"), mapping={"vec": vec, "bias": "0.0", "ver": 5, "ts": 1})
    body = {"ver": 5, "ts": int(time.time() * 1000), "items": [["i7", 2.5], ["i9", 1.0]]}
    redis_client.set(k.recs("u0"), orjson.dumps(body))
    redis_client.set(k.items_ids, orjson.dumps(["i7", "i9"]))
    redis_client.set(k.items_matrix, encode_vector(np.ones((2, 4), np.float32)))
    redis_client.set(k.items_bias, encode_vector(np.zeros(2, np.float32)))
    redis_client.set(k.items_ver, 1)
    line = read_back_commands(cfg, "u0").splitlines()[1]
    words = shlex.split(line)
    env = dict(w.split("=", 1) for w in words if "=" in w and w.startswith("STREAMREC_"))
    args = words[words.index("recommend") :]
    clean = {n: v for n, v in os.environ.items() if not n.startswith("STREAMREC_")}
    out = subprocess.run(
        [sys.executable, "-m", "streamrec.consumers.cli", *args],
        env={**clean, **env, "STREAMREC_REDIS_URL": redis_url},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    # the user's own vector or list was found under the prefix (not the popularity fallback)
    assert out.stdout.startswith("user u0 (") and "popularity" not in out.stdout, out.stdout
    assert "i7" in out.stdout, out.stdout
