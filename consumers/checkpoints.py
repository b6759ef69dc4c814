"""The trainer's model checkpoints: where they live, which one to restore, when to save.

A checkpoint is a snapshot of the model with the offsets it has learned up to; Kafka is the
log and Redis the view (consumers/trainer.py). The one to restore is the newest at or before
the offsets Redis holds: one past them (Redis lost its last writes) would make the model skip
events Redis never saw, and an older one is caught up by re-learning quietly. A few are kept
for that reason.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from streamrec.consumers.config import TrainerConfig
from streamrec.consumers.lifecycle import Lifecycle
from streamrec.consumers.outage import SHUTDOWN_RESERVE_S
from streamrec.model.base import CheckpointMismatch

log = logging.getLogger("streamrec.trainer")

# path -> (model, the metadata saved with it); raises CheckpointMismatch for a checkpoint
# today's settings cannot continue, anything else for a damaged one
Loader = Callable[[Path], tuple[Any, Mapping[str, Any]]]


def folder_for(base: str | Path, name: str) -> Path:
    """The checkpoint folder of one trainer group below `base`: `name` made a safe file name."""
    return Path(base) / "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def complete(folder: Path) -> list[Path]:
    """Complete checkpoints, oldest first (names sort by time)."""
    return sorted(p for p in folder.glob("ckpt-*") if "tmp" not in p.name)


@dataclass
class Restored:
    path: Path
    model: Any
    offsets: dict[str, int]  # "topic:partition" -> next offset the model learns
    counts: dict[str, int]  # user -> events learned


class Checkpoints:
    """The checkpoints in `folder`, saved every `checkpoint_every_events` events or
    `checkpoint_every_s` seconds, whichever comes first; the newest `checkpoint_keep` kept."""

    def __init__(self, folder: Path, cfg: TrainerConfig) -> None:
        self.folder = folder
        self.cfg = cfg
        self.events_since = 0  # records consumed since the last save (or restore)
        self.saved_at = time.monotonic()

    def due(self) -> bool:
        c = self.cfg
        return (
            self.events_since >= c.checkpoint_every_events
            or time.monotonic() - self.saved_at >= c.checkpoint_every_s
        )

    def final_due(self, unwritten: bool, life: Lifecycle) -> bool:
        """Whether to save at shutdown: only what Redis holds, and only if time is left."""
        if not self.events_since or unwritten:
            return False
        if life.stop_requested.is_set() and life.remaining_s() < SHUTDOWN_RESERVE_S:
            # only a head start for the next trainer: it re-learns from the last checkpoint
            log.info("no final checkpoint: the stop's grace period is nearly spent")
            return False
        return True

    def save(self, model: Any, offsets: Mapping[str, int], counts: Mapping[str, int]) -> Path:
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"ckpt-{int(time.time() * 1000):015d}"
        model.save(path, metadata={"offsets": dict(offsets), "counts": dict(counts)})
        # keep a few: after Redis loses its last writes the newest may be past its offsets
        for old in complete(self.folder)[: -self.cfg.checkpoint_keep]:
            shutil.rmtree(old, ignore_errors=True) if old.is_dir() else old.unlink(missing_ok=True)
        self.events_since = 0
        self.saved_at = time.monotonic()
        log.info("checkpoint %s (offsets %s)", path.name, offsets)
        return path

    def newest_usable(self, stored: Mapping[str, int], load: Loader) -> Restored | None:
        """The newest checkpoint at or before the offsets Redis holds (`stored`), loaded;
        None if there is none. Damaged ones are skipped; CheckpointMismatch propagates."""
        for path in reversed(complete(self.folder)):
            try:
                # today's settings apply; one the saved tables depend on must not change
                model, meta = load(path)
            except CheckpointMismatch:
                raise
            except Exception as e:  # a damaged checkpoint: try the one before
                log.warning("cannot restore %s: %s", path.name, e)
                continue
            offsets = {k: int(v) for k, v in meta.get("offsets", {}).items()}
            if all(off <= stored.get(f, 0) for f, off in offsets.items()):
                counts = {k: int(v) for k, v in meta.get("counts", {}).items()}
                log.info("restored checkpoint %s (offsets %s)", path.name, offsets)
                return Restored(path, model, offsets, counts)
            log.info("checkpoint %s is past the offsets Redis holds: older one", path.name)
        return None
