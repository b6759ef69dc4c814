"""Saving and restoring a model: which state goes into a checkpoint and how it comes back.

Everything needed to continue training bit for bit (tables with their Adagrad accumulators,
id and token vocabularies, entity features, counts, popularity, the negative sampler, the
RNG, the eviction clock) plus the caller's metadata. `checkpoint` makes the files crash-safe;
this module decides their content and checks a restore's settings against the saved ones.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from streamrec.model import checkpoint
from streamrec.model.base import CheckpointMismatch
from streamrec.model.config import ModelConfig
from streamrec.model.ids import IdMap, decode_strings, encode_strings, grow_rows
from streamrec.model.side import Side

if TYPE_CHECKING:
    from streamrec.model.online import OnlineRecommender

log = logging.getLogger(__name__)

# Settings a checkpoint's tables depend on: the shape of every table, which optimiser state
# exists, what a hashed feature row means, and the time unit of the stored popularity.
RESTORE_FIXED = ("dim", "optimizer", "feature_hash_buckets", "popularity_half_life_s")


def save(model: OnlineRecommender, path: str | Path, metadata: Mapping[str, Any] | None) -> None:
    """Write the model's state to the checkpoint folder `path` (atomically)."""
    arrays: dict[str, np.ndarray] = {}
    capacities: dict[str, int] = {}
    for side in (model.users, model.items):
        _side_arrays(side, arrays, capacities)
    arrays["global_bias"] = model.gbias.head(1)
    gacc = model.gbias.head_acc(1)
    if gacc is not None:
        arrays["global_bias_acc"] = gacc
    pop_arrays, pop_info = model.popularity.state()
    arrays.update(pop_arrays)
    neg_arrays, neg_info = model.sampler.state()
    arrays.update(neg_arrays)
    info = {
        "config": dataclasses.asdict(model.config),
        "version": model.version,
        "skipped_nonfinite": model.skipped_nonfinite,
        "rng": model.rng.bit_generator.state,
        "capacities": capacities,
        "popularity": pop_info,
        "sampler": neg_info,
        "evict": {"clock_ms": model._clock_ms, "evicted_at_ms": model._evicted_at_ms},
        "metadata": dict(metadata or {}),
    }
    checkpoint.write(path, arrays, info)


def _side_arrays(side: Side, arrays: dict[str, np.ndarray], capacities: dict[str, int]) -> None:
    s = side.name
    n, f = side.n_init, side.f_init
    for table, rows in ((side.emb, n), (side.bias, n), (side.femb, f)):
        arrays[table.name] = table.head(rows)
        acc = table.head_acc(rows)
        if acc is not None:
            arrays[f"{table.name}_acc"] = acc
        capacities[table.name] = table.capacity
    arrays[f"{s}_ids_blob"], arrays[f"{s}_ids_off"] = encode_strings(side.ids.ids)
    blob, off = encode_strings(side.features.tokens.ids)
    arrays[f"{s}_tokens_blob"], arrays[f"{s}_tokens_off"] = blob, off
    token_row = side.features.tokens.row
    ent = np.fromiter(side.tokens.keys(), np.int64, len(side.tokens))
    lens = np.fromiter((len(t) for t in side.tokens.values()), np.int64, len(side.tokens))
    indptr = np.zeros(len(side.tokens) + 1, dtype=np.int64)
    np.cumsum(lens, out=indptr[1:])
    toks = [token_row(t) for ts in side.tokens.values() for t in ts]
    arrays[f"{s}_feat_entities"] = ent
    arrays[f"{s}_feat_indptr"] = indptr
    arrays[f"{s}_feat_tokens"] = np.asarray(toks, dtype=np.int64)
    arrays[f"{s}_count"] = side.count[:n].copy()
    arrays[f"{s}_ftrained"] = side.ftrained[:f].copy()
    if side.last_ts is not None:
        arrays[f"{s}_last_ts"] = side.last_ts[:n].copy()


def restore(
    cls: type[OnlineRecommender], path: str | Path, config: ModelConfig | None
) -> tuple[OnlineRecommender, dict[str, Any]]:
    """The model saved at `path` and the caller's metadata; see `OnlineRecommender.restore`."""
    arrays, info = checkpoint.read(path)
    saved = dict(info["config"])
    # Checkpoints from before user_gradient_scale existed were trained without it (1.0):
    # continue them as they were trained, not with today's default.
    saved.setdefault("user_gradient_scale", 1.0)
    # Likewise item_learning_rate: before it, items took learning_rate (its 0).
    saved.setdefault("item_learning_rate", 0.0)
    saved_config = ModelConfig(**saved)
    if config is not None:
        _check_settings(Path(path).name, saved_config, config)
    config = saved_config if config is None else config
    # Build without drawing hashed-feature rows twice: a fresh model draws them from the
    # seed, then everything, RNG included, is overwritten by the saved state.
    model = cls(config)
    for side in (model.users, model.items):
        _load_side(side, arrays, info["capacities"])
    # Checkpoints from before eviction existed hold no clock: popularity's is the same
    # (the newest positive's time); ids without a saved time count as seen at it.
    evict = info.get("evict", {})
    model._clock_ms = int(evict.get("clock_ms", info["popularity"].get("now_ms") or 0))
    model._evicted_at_ms = int(evict.get("evicted_at_ms", model._clock_ms))
    for side in (model.users, model.items):
        if side.last_ts is not None:
            saved_ts = arrays.get(f"{side.name}_last_ts")
            if saved_ts is None:
                saved_ts = np.full(side.n_init, model._clock_ms, np.int64)
            side.last_ts = grow_rows(saved_ts.astype(np.int64), max(64, side.n_init))
    model.gbias.load(arrays["global_bias"], arrays.get("global_bias_acc"), 1)
    model._gbias = None
    model.popularity.items = model.items.ids
    model.popularity.load_state(arrays, info["popularity"])
    model.sampler.load_state(arrays, info["sampler"])
    model.rng.bit_generator.state = info["rng"]
    model.version = int(info["version"])
    model.skipped_nonfinite = int(info["skipped_nonfinite"])
    model._mutations += 1
    return model, dict(info["metadata"])


def _check_settings(name: str, saved: ModelConfig, config: ModelConfig) -> None:
    """Raise CheckpointMismatch naming every RESTORE_FIXED setting that differs; log the
    other changed settings, which apply from here on."""
    fixed = [
        f"{field}: saved {getattr(saved, field)!r}, configured {getattr(config, field)!r}"
        for field in RESTORE_FIXED
        if getattr(saved, field) != getattr(config, field)
    ]
    if fixed:
        raise CheckpointMismatch(
            f"checkpoint {name} cannot continue with these settings "
            f"({'; '.join(fixed)}): set them back, or start from an empty checkpoint "
            "folder (a new model)"
        )
    changed = {
        f.name: (getattr(saved, f.name), getattr(config, f.name))
        for f in dataclasses.fields(ModelConfig)
        if getattr(saved, f.name) != getattr(config, f.name)
    }
    if changed:
        log.info(
            "checkpoint %s continues with changed settings: %s",
            name,
            ", ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in changed.items()),
        )


def _load_side(side: Side, arrays: Mapping[str, np.ndarray], capacities: Mapping[str, int]) -> None:
    s = side.name
    side.ids = IdMap(decode_strings(arrays[f"{s}_ids_blob"], arrays[f"{s}_ids_off"]))
    side.features.tokens = IdMap(
        decode_strings(arrays[f"{s}_tokens_blob"], arrays[f"{s}_tokens_off"])
    )
    names = side.features.tokens.ids
    indptr = arrays[f"{s}_feat_indptr"].tolist()
    toks = arrays[f"{s}_feat_tokens"].tolist()
    side.clear_features()
    for j, ent in enumerate(arrays[f"{s}_feat_entities"].tolist()):
        side.set_tokens(ent, tuple(names[t] for t in toks[indptr[j] : indptr[j + 1]]))
    for table in side.tables:
        table.load(arrays[table.name], arrays.get(f"{table.name}_acc"), capacities[table.name])
    side.n_init = len(side.ids.ids)
    side.f_init = arrays[side.femb.name].shape[0]
    side.count = grow_rows(arrays[f"{s}_count"].astype(np.int64), side.n_init)
    side.ftrained = grow_rows(arrays[f"{s}_ftrained"].astype(bool), side.f_init)
