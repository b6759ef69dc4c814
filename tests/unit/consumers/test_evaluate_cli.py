"""`streamrec evaluate --protocol`: the in-process run in mini-batches (the default) or per
event (`prequential_fresh`), on a tiny synthetic stream."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from streamrec.consumers import evaluate
from streamrec.consumers.config import Config

ARGS = ["--synthetic", "800", "--no-baselines", "--batch-size", "64", "--auc-share", "0"]


@pytest.mark.parametrize(("protocol", "mode"), [("fresh", "fresh"), (None, "in-process")])
def test_protocols_run_on_a_tiny_stream(
    tmp_path: Path, protocol: str | None, mode: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [*ARGS, "--out", str(tmp_path)]
    if protocol is not None:
        argv += ["--protocol", protocol]
    assert evaluate.main(argv, cfg=Config()) == 0
    report = orjson.loads((tmp_path / "quality.json").read_bytes())
    assert report["mode"] == mode
    assert report["stream"]["events"] == 800
    overall = report["models"]["model"]["overall"]
    assert report["stream"]["queries"] == overall["n"] > 0
    assert 0.0 <= overall["hr"] <= 1.0
    assert "report:" in capsys.readouterr().out


def test_fresh_is_in_process_only(capsys: pytest.CaptureFixture[str]) -> None:
    assert evaluate.main([*ARGS, "--mode", "pipeline", "--protocol", "fresh"]) == 2
    assert "in-process only" in capsys.readouterr().err
