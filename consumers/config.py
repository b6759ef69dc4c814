"""The one process config: every setting, its default, and its `STREAMREC_*` variable.

Each section is a frozen dataclass owned by the layer that uses it (Kafka/Redis/services in
`streaming.config`, the model in `model.config`, the trainer here). A field `f` of section `s`
is read from `STREAMREC_<S>_<F>`; for example `KafkaConfig.bootstrap` is
`STREAMREC_KAFKA_BOOTSTRAP`. Like kafka-python's configs, unknown keys are rejected: a
misspelt `STREAMREC_*` variable fails at start, naming itself, instead of being ignored.
"""

from __future__ import annotations

import dataclasses
import math
import os
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from streamrec.model.config import ConfigError, ModelConfig
from streamrec.streaming.config import KafkaConfig, RedisConfig, ServicesConfig
from streamrec.streaming.security import FILE_SUFFIX, Secret, read_secret_file

ENV_PREFIX = "STREAMREC_"


def _require(cond: bool, setting: str, message: str) -> None:
    if not cond:
        raise ConfigError(setting, message)


@dataclass(frozen=True)
class TrainerConfig:
    batch_max_events: int = 2048  # a batch closes at this many events ...
    batch_max_wait_ms: int = 20  # ... or after this long, whichever comes first
    top_k: int = 20  # recommendations precomputed per touched user
    # Duty cycle of the thread re-ranking precomputed lists, least recently refreshed users
    # first (after a job of t seconds it rests t * (1 - share) / share); readers rank users
    # whose list is older than their vector in real time meanwhile (streaming/client.py).
    # 1.0: no rests.
    recs_time_share: float = 0.25
    seen_max: int = 500  # items remembered per user for exclusion
    # item-matrix snapshot at most this often once it is 1 MiB (4k items at dimension 64);
    # a smaller one proportionally more often (item rows: every batch)
    matrix_every_ms: int = 1000
    checkpoint_dir: str = ".streamrec/checkpoints"
    checkpoint_every_events: int = 200_000
    checkpoint_every_s: float = 300.0
    checkpoint_keep: int = 3  # newest checkpoints kept
    lease_ttl_ms: int = 10_000  # a standby trainer takes over this long after the leader dies
    stop_when_idle_ms: int = 0  # 0: run forever; >0: exit after this long with nothing new
    metrics_port: int = 0  # 0: no HTTP endpoint (/metrics, /ready, /live)
    stop_grace_ms: int = 8000  # SIGTERM/SIGINT: the process exits within this long
    tf_threads: int = 1  # intra- and inter-op threads; TF's default oversubscribes 2 cores
    value_abs_max: float = 1e6  # events with |value| above this are dead letters
    max_ts_skew_ms: int = 24 * 3600 * 1000  # how far past now an event's ts may be
    max_event_bytes: int = 64 * 1024  # larger records are dead letters (too_large)
    # Live quality (docs/operations.md): share of each batch's events drawn to be scored
    # against the user's top-10 before the batch is learned (positives only count); 0: off
    quality_sample_rate: float = 0.02
    quality_max_per_batch: int = 16  # at most this many drawn per batch: a bounded cost
    quality_window: int = 2000  # sampled events per users label streamrec_live_hr10 is over
    # written top-K lists streamrec_served_catalogue_coverage and _popular_share are over
    quality_served_window: int = 10_000

    def __post_init__(self) -> None:
        _require(1 <= self.batch_max_events <= 1_000_000, "batch_max_events", "must be in 1..1e6")
        _require(self.batch_max_wait_ms >= 1, "batch_max_wait_ms", "must be >= 1")
        _require(1 <= self.top_k <= 10_000, "top_k", "must be in 1..10000")
        _require(0 < self.recs_time_share <= 1, "recs_time_share", "must be in (0, 1]")
        _require(self.seen_max >= 0, "seen_max", "must be >= 0")
        _require(self.matrix_every_ms >= 0, "matrix_every_ms", "must be >= 0")
        _require(bool(self.checkpoint_dir), "checkpoint_dir", "must not be empty")
        _require(self.checkpoint_every_events >= 1, "checkpoint_every_events", "must be >= 1")
        _require(
            math.isfinite(self.checkpoint_every_s) and self.checkpoint_every_s > 0,
            "checkpoint_every_s",
            "must be > 0",
        )
        _require(1 <= self.checkpoint_keep <= 100, "checkpoint_keep", "must be in 1..100")
        _require(self.lease_ttl_ms >= 1000, "lease_ttl_ms", "must be >= 1000")
        _require(self.stop_when_idle_ms >= 0, "stop_when_idle_ms", "must be >= 0")
        _require(0 <= self.metrics_port <= 65535, "metrics_port", "must be in 0..65535")
        _require(1000 <= self.stop_grace_ms <= 600_000, "stop_grace_ms", "must be in 1000..600000")
        _require(1 <= self.tf_threads <= 64, "tf_threads", "must be in 1..64")
        _require(
            math.isfinite(self.value_abs_max) and self.value_abs_max > 0,
            "value_abs_max",
            "must be > 0",
        )
        _require(self.max_ts_skew_ms >= 0, "max_ts_skew_ms", "must be >= 0")
        _require(self.max_event_bytes >= 256, "max_event_bytes", "must be >= 256")
        _require(0.0 <= self.quality_sample_rate <= 1.0, "quality_sample_rate", "must be in [0, 1]")
        _require(self.quality_max_per_batch >= 0, "quality_max_per_batch", "must be >= 0")
        _require(self.quality_window >= 1, "quality_window", "must be >= 1")
        _require(self.quality_served_window >= 1, "quality_served_window", "must be >= 1")


@dataclass(frozen=True)
class Config:
    kafka: KafkaConfig = field(default_factory=KafkaConfig)
    redis: RedisConfig = field(default_factory=RedisConfig)
    services: ServicesConfig = field(default_factory=ServicesConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Config:
        """Read every `STREAMREC_*` variable; `overrides` (section -> {field: value}) win."""
        env = os.environ if environ is None else environ
        known = {name for name, _, _ in settings()}
        known |= {name + FILE_SUFFIX for name, _, tp in settings() if tp == Secret.__name__}
        unknown = sorted(k for k in env if k.startswith(ENV_PREFIX) and k not in known)
        if unknown:
            raise ConfigError(
                unknown[0],
                f"unknown setting (see docs/configuration.md); all unknown: {', '.join(unknown)}",
            )
        sections: dict[str, Any] = {}
        for sec in dataclasses.fields(cls):
            sec_type = _section_types()[sec.name]
            hints = typing.get_type_hints(sec_type)
            values: dict[str, Any] = {}
            for f in dataclasses.fields(sec_type):
                var = env_name(sec.name, f.name)
                if var in env:
                    values[f.name] = _parse(env[var], hints[f.name], var)
                if hints[f.name] is Secret and var + FILE_SUFFIX in env:
                    # the container-image convention: the secret is mounted as a file
                    if var in env:
                        raise ConfigError(var, f"set both {var} and {var}{FILE_SUFFIX}: keep one")
                    path = env[var + FILE_SUFFIX]
                    values[f.name] = read_secret_file(var + FILE_SUFFIX, path)
            values.update(overrides.get(sec.name, {}))
            try:
                sections[sec.name] = sec_type(**values)
            except ConfigError as e:
                raise ConfigError(env_name(sec.name, e.setting), e.message) from None
        return cls(**sections)

    def to_env(self) -> dict[str, str]:
        """Every setting as `STREAMREC_*` variables: how a parent hands its config to a child
        process (tests, supervisors). `from_env(to_env())` gives back an equal config."""
        out: dict[str, str] = {}
        for sec in dataclasses.fields(self):
            section = getattr(self, sec.name)
            for f in dataclasses.fields(section):
                value = getattr(section, f.name)
                if isinstance(value, dict):
                    text = ",".join(f"{k}={v!r}" for k, v in value.items())
                elif isinstance(value, bool):
                    text = "true" if value else "false"
                elif isinstance(value, float):
                    text = repr(value)
                elif isinstance(value, Secret):
                    text = value.reveal()  # the child needs the password; env is no log
                else:
                    text = str(value)
                out[env_name(sec.name, f.name)] = text
        return out

    def replace(self, **sections: Mapping[str, Any]) -> Config:
        """A copy with some fields of some sections changed, validated again."""
        new: dict[str, Any] = {}
        for name, changes in sections.items():
            try:
                new[name] = dataclasses.replace(getattr(self, name), **changes)
            except ConfigError as e:
                raise ConfigError(env_name(name, e.setting), e.message) from None
        return dataclasses.replace(self, **new)


def env_name(section: str, field_name: str) -> str:
    return f"{ENV_PREFIX}{section}_{field_name}".upper()


def _section_types() -> dict[str, type]:
    hints = typing.get_type_hints(Config)
    return {f.name: hints[f.name] for f in dataclasses.fields(Config)}


def settings() -> list[tuple[str, Any, str]]:
    """(variable, default, type) of every setting: docs/configuration.md, `streamrec config`."""
    out: list[tuple[str, Any, str]] = []
    for sec_name, sec_type in _section_types().items():
        hints = typing.get_type_hints(sec_type)
        default = sec_type()
        for f in dataclasses.fields(sec_type):
            out.append(
                (env_name(sec_name, f.name), getattr(default, f.name), _type_name(hints[f.name]))
            )
    return out


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is dict:
        return "map"
    return getattr(tp, "__name__", str(tp))


def _parse(raw: str, tp: Any, var: str) -> Any:
    text = raw.strip()
    try:
        if tp is bool:
            low = text.lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ValueError("expected true/false")
        if tp is int:
            return int(text)
        if tp is float:
            value = float(text)
            if not math.isfinite(value):
                raise ValueError("must be finite")
            return value
        if tp is str:
            return text
        if tp is Secret:
            return Secret(raw.rstrip("\r\n"))  # spaces may belong to a password
        if typing.get_origin(tp) is dict:
            # "view=1,click=2.5": the whole map, not a patch of the default.
            out: dict[str, float] = {}
            for part in filter(None, (p.strip() for p in text.split(","))):
                key, sep, val = part.partition("=")
                if not sep or not key.strip():
                    raise ValueError(f"expected name=number pairs, got {part!r}")
                out[key.strip()] = float(val)
            return out
    except ValueError as e:
        raise ConfigError(var, f"cannot parse {raw!r}: {e}") from None
    raise ConfigError(var, f"unsupported setting type {tp!r}")
