"""Layering rules of `streamrec.model`, checked rather than trusted."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

MODEL_DIR = (
    next(p for p in Path(__file__).resolve().parents if (p / "pyproject.toml").exists()) / "model"
)


def test_package_and_light_modules_do_not_import_tensorflow() -> None:
    code = (
        "import sys\n"
        "import streamrec.model, streamrec.model.config, streamrec.model.base\n"
        "import streamrec.model.popularity, streamrec.model.ranking, streamrec.model.ids\n"
        "import streamrec.model.testing, streamrec.model.sampling\n"
        "assert 'tensorflow' not in sys.modules, 'tensorflow was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_no_kafka_or_redis_imports_and_future_annotations_everywhere() -> None:
    for path in sorted(MODEL_DIR.glob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        names = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                names.add(node.module.split(".")[0])
        assert not names & {"kafka", "redis"}, path.name
        first = next(
            (n for n in tree.body if not isinstance(n, ast.Expr)), None
        )  # after the docstring
        assert isinstance(first, ast.ImportFrom) and first.module == "__future__", path.name


def test_lazy_export() -> None:
    import streamrec.model as pkg
    from streamrec.model.online import OnlineRecommender

    assert pkg.OnlineRecommender is OnlineRecommender
