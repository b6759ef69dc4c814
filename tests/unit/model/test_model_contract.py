"""The trainer's contract with its model (`base.StreamModel`), and the model's layering."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from streamrec.model.base import PopularityScores, StreamModel
from streamrec.model.config import ModelConfig
from streamrec.model.online import OnlineRecommender
from streamrec.model.runtime import configure_threads

configure_threads(1, 1)  # before the first TF op: 2 shared cores

ROOT = next(p for p in Path(__file__).resolve().parents if (p / "pyproject.toml").exists())


def _members(proto: type) -> set[str]:
    return {n for n in vars(proto) if not n.startswith("_")}


def _model_calls(path: Path) -> set[str]:
    """Every `self.model.<name>` and `OnlineRecommender.<name>` a module uses."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if not isinstance(node, ast.Attribute):
            continue
        v = node.value
        if isinstance(v, ast.Attribute) and v.attr == "model":
            if isinstance(v.value, ast.Name) and v.value.id == "self":
                out.add(node.attr)
        elif isinstance(v, ast.Name) and v.id == "OnlineRecommender":
            out.add(node.attr)
    return out


def test_the_online_model_fits_the_trainer_contract() -> None:
    rec = OnlineRecommender(ModelConfig(dim=4))
    assert isinstance(rec, StreamModel)
    assert isinstance(rec.popularity, PopularityScores)
    assert _members(StreamModel) <= set(dir(rec))


def test_the_contract_names_everything_the_trainer_calls() -> None:
    # every consumer module, so that the check follows the trainer's code wherever it moves
    used = set().union(*map(_model_calls, sorted((ROOT / "consumers").glob("*.py"))))
    assert {"learn", "restore"} <= used  # the scan does see the trainer's calls
    assert used <= _members(StreamModel), sorted(used - _members(StreamModel))


def test_the_online_model_loads_no_transport_and_no_consumer() -> None:
    code = (
        "import sys\n"
        "import streamrec.model.online\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('kafka', 'redis')\n"
        "             or m.startswith(('streamrec.streaming', 'streamrec.consumers')))\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
