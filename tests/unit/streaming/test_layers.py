"""The layers at run time: what `make lint`'s import contracts check statically.

A static graph misses imports made by name at run time; importing every module of streaming/
in a fresh interpreter catches those too.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = next(p for p in Path(__file__).resolve().parents if (p / "pyproject.toml").exists())


def test_streaming_loads_neither_tensorflow_nor_consumers() -> None:
    modules = sorted(p.stem for p in (ROOT / "streaming").glob("*.py") if p.stem != "__init__")
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module('streamrec.streaming.' + name)\n"
        "loaded = [m for m in sys.modules if m.split('.')[0] == 'tensorflow'\n"
        "          or m.startswith('streamrec.consumers')]\n"
        "assert not loaded, loaded[:3]\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
