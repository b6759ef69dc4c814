"""Crash-safe checkpoint directories: one .npz of arrays plus one JSON commit record.

A checkpoint must describe exactly one point of the stream (the consumer stores its Kafka
offsets in the metadata), so a crash mid-save must leave either the old checkpoint or the new
one, never a mix. Two files cannot be replaced together atomically, so the JSON file is the
commit point: the arrays go to a fresh, uniquely named .npz (written, fsynced, renamed), then
`checkpoint.json`, naming that .npz and its sha256, replaces the old one with `os.replace`. A
crash before that rename leaves the old JSON pointing at the old, untouched .npz; files no
record names are removed by the next save.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

FORMAT = "streamrec.model/1"
RECORD = "checkpoint.json"


class CheckpointError(RuntimeError):
    """A checkpoint is missing, incomplete or does not match its record."""


def _fsync_dir(path: Path) -> None:
    # Directories cannot be opened for fsync on every platform; the rename is then best effort.
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write(path: str | Path, arrays: Mapping[str, np.ndarray], info: Mapping[str, Any]) -> None:
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    name = f"state-{uuid.uuid4().hex}.npz"
    tmp = folder / f".{name}.tmp"
    savez: Any = np.savez  # numpy's stub reads **arrays as if it could hold allow_pickle
    with open(tmp, "wb") as f:
        savez(f, **arrays)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, folder / name)
    record = {"format": FORMAT, "arrays": name, "sha256": _sha256(folder / name), **info}
    tmp_rec = folder / f".{RECORD}.{uuid.uuid4().hex}.tmp"
    with open(tmp_rec, "w", encoding="utf-8") as f:
        json.dump(record, f, allow_nan=False, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    _fsync_dir(folder)  # the .npz's directory entry is durable before the record names it
    os.replace(tmp_rec, folder / RECORD)
    _fsync_dir(folder)
    for stale in folder.iterdir():
        if stale.name != name and (
            (stale.name.startswith("state-") and stale.name.endswith(".npz"))
            or stale.name.endswith(".tmp")
        ):
            with contextlib.suppress(OSError):
                stale.unlink()


def read(path: str | Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    folder = Path(path)
    try:
        with open(folder / RECORD, encoding="utf-8") as f:
            record = json.load(f)
    except FileNotFoundError:
        raise CheckpointError(f"{folder}: no {RECORD}; not a model checkpoint") from None
    if record.get("format") != FORMAT:
        raise CheckpointError(f"{folder}: unknown checkpoint format {record.get('format')!r}")
    data = folder / record["arrays"]
    if not data.exists():
        raise CheckpointError(f"{data}: missing")
    if _sha256(data) != record["sha256"]:
        raise CheckpointError(f"{data}: sha256 does not match {RECORD}")
    with np.load(data, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    return arrays, record
