"""Which checkpoint a trainer restores, and when it saves one (consumers/checkpoints.py):
the newest at or before the offsets Redis holds, damaged ones skipped, a settings mismatch
raised; no server and no TensorFlow needed."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from streamrec.consumers.checkpoints import Checkpoints, complete, folder_for
from streamrec.consumers.config import TrainerConfig
from streamrec.consumers.lifecycle import Lifecycle
from streamrec.model.base import CheckpointMismatch


class _Model:
    def __init__(self, name: str = "m") -> None:
        self.name = name

    def save(self, path: Path, metadata: Mapping[str, Any]) -> None:
        path.mkdir()
        (path / "meta.json").write_text(json.dumps(dict(metadata)))


def _load(path: Path) -> tuple[Any, Mapping[str, Any]]:
    if (path / "broken").exists():
        raise OSError("truncated")
    if (path / "mismatch").exists():
        raise CheckpointMismatch("dim: saved 8, configured 16")
    return _Model(path.name), json.loads((path / "meta.json").read_text())


def _saved(tmp_path: Path, *offsets: int, keep: int = 10) -> tuple[Checkpoints, list[Path]]:
    ckpts = Checkpoints(tmp_path / "group", TrainerConfig(checkpoint_keep=keep))
    paths = []
    for n, off in enumerate(offsets):
        path = ckpts.save(_Model(), {"t:0": off}, {"alice": n})
        paths.append(path)
        time.sleep(0.002)  # names carry the time in ms: the next one is newer
    return ckpts, paths


def test_the_newest_checkpoint_at_or_before_the_stored_offsets_is_restored(
    tmp_path: Path,
) -> None:
    ckpts, paths = _saved(tmp_path, 10, 20, 30)
    got = ckpts.newest_usable({"t:0": 25}, _load)
    assert got is not None and got.path == paths[1]
    assert got.offsets == {"t:0": 20} and got.counts == {"alice": 1}
    assert ckpts.newest_usable({"t:0": 5}, _load) is None  # every one is past Redis


def test_a_damaged_checkpoint_is_skipped_and_a_mismatch_raised(tmp_path: Path) -> None:
    ckpts, paths = _saved(tmp_path, 10, 20)
    (paths[1] / "broken").touch()
    got = ckpts.newest_usable({"t:0": 100}, _load)
    assert got is not None and got.path == paths[0]
    (paths[0] / "mismatch").touch()
    with pytest.raises(CheckpointMismatch):
        ckpts.newest_usable({"t:0": 100}, _load)


def test_saving_keeps_the_newest_few_and_restarts_the_count(tmp_path: Path) -> None:
    ckpts, paths = _saved(tmp_path, 1, 2, 3, 4, keep=2)
    assert complete(ckpts.folder) == paths[-2:]
    ckpts.events_since = 5
    ckpts.save(_Model(), {}, {})
    assert ckpts.events_since == 0 and not ckpts.due()
    ckpts.events_since = ckpts.cfg.checkpoint_every_events
    assert ckpts.due()


def test_no_final_checkpoint_of_unwritten_state_or_when_the_grace_is_spent(
    tmp_path: Path,
) -> None:
    ckpts = Checkpoints(tmp_path, TrainerConfig())
    life = Lifecycle(grace_s=8)
    assert not ckpts.final_due(unwritten=False, life=life)  # nothing new
    ckpts.events_since = 1
    assert ckpts.final_due(unwritten=False, life=life)
    assert not ckpts.final_due(unwritten=True, life=life)
    short = Lifecycle(grace_s=1)
    short.request_stop()
    assert not ckpts.final_due(unwritten=False, life=short)


def test_folder_names_are_safe() -> None:
    assert folder_for("/ck", "sr:streamrec/trainer") == Path("/ck/sr_streamrec_trainer")
