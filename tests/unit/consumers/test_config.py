"""The one config: env names, parsing, unknown keys and bad values fail naming the setting."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from streamrec.consumers.config import Config, env_name, settings
from streamrec.model.config import ConfigError

ROOT = next(p for p in Path(__file__).resolve().parents if (p / "pyproject.toml").exists())


def test_defaults_are_valid_and_every_setting_has_a_unique_env_name() -> None:
    cfg = Config.from_env({})
    assert cfg.kafka.bootstrap == "127.0.0.1:9092"
    names = [n for n, _, _ in settings()]
    assert len(names) == len(set(names))
    assert "STREAMREC_KAFKA_BOOTSTRAP" in names and "STREAMREC_REDIS_URL" in names
    assert all(n.startswith("STREAMREC_") and n.isupper() for n in names)


def test_values_are_parsed_by_type() -> None:
    cfg = Config.from_env(
        {
            "STREAMREC_KAFKA_BOOTSTRAP": "k1:9092,k2:9092",
            "STREAMREC_KAFKA_PARTITIONS": "8",
            "STREAMREC_MODEL_LEARNING_RATE": "0.1",
            "STREAMREC_MODEL_EVENT_WEIGHTS": "view=1, buy=2.5",
            "STREAMREC_REDIS_PREFIX": "x:",
        }
    )
    assert cfg.kafka.partitions == 8 and cfg.model.learning_rate == 0.1
    assert cfg.model.event_weights == {"view": 1.0, "buy": 2.5}
    assert cfg.redis.prefix == "x:"


@pytest.mark.parametrize(
    ("env", "setting"),
    [
        ({"STREAMREC_KAFKA_BOOTSTARP": "x:1"}, "STREAMREC_KAFKA_BOOTSTARP"),
        ({"STREAMREC_KAFKA_BOOTSTRAP": "no-port"}, "STREAMREC_KAFKA_BOOTSTRAP"),
        ({"STREAMREC_KAFKA_POLL_TIMEOUT_MS": "0"}, "STREAMREC_KAFKA_POLL_TIMEOUT_MS"),
        ({"STREAMREC_KAFKA_PARTITIONS": "four"}, "STREAMREC_KAFKA_PARTITIONS"),
        ({"STREAMREC_MODEL_DIM": "0"}, "STREAMREC_MODEL_DIM"),
        ({"STREAMREC_MODEL_LEARNING_RATE": "nan"}, "STREAMREC_MODEL_LEARNING_RATE"),
        ({"STREAMREC_MODEL_OPTIMIZER": "adam2"}, "STREAMREC_MODEL_OPTIMIZER"),
        ({"STREAMREC_MODEL_EVENT_WEIGHTS": "view"}, "STREAMREC_MODEL_EVENT_WEIGHTS"),
        ({"STREAMREC_REDIS_URL": "http://x"}, "STREAMREC_REDIS_URL"),
        ({"STREAMREC_SERVICES_REDIS_PORT": "70000"}, "STREAMREC_SERVICES_REDIS_PORT"),
        ({"STREAMREC_TRAINER_TOP_K": "0"}, "STREAMREC_TRAINER_TOP_K"),
    ],
)
def test_bad_settings_fail_naming_the_variable(env: dict[str, str], setting: str) -> None:
    with pytest.raises(ConfigError) as info:
        Config.from_env(env)
    assert info.value.setting == setting
    assert setting in str(info.value)


def test_replace_validates_and_names_the_variable() -> None:
    cfg = Config.from_env({})
    assert cfg.replace(trainer={"top_k": 5}).trainer.top_k == 5
    with pytest.raises(ConfigError, match="STREAMREC_TRAINER_TOP_K"):
        cfg.replace(trainer={"top_k": -1})
    assert env_name("kafka", "bootstrap") == "STREAMREC_KAFKA_BOOTSTRAP"


def test_cli_reports_bad_configuration_without_a_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from streamrec.consumers.cli import main

    monkeypatch.setenv("STREAMREC_MODEL_DIM", "-3")
    assert main(["config"]) == 2
    assert "STREAMREC_MODEL_DIM" in capsys.readouterr().err


def test_to_env_round_trips() -> None:
    cfg = Config.from_env({}).replace(
        kafka={"bootstrap": "h:1", "partitions": 7},
        model={"learning_rate": 0.123, "event_weights": {"view": 1.5, "dislike": -2.0}},
        services={"auto_install": False},
    )
    assert Config.from_env(cfg.to_env()) == cfg


def _config_docs_generator() -> Any:
    """tools/gen_config_docs.py, loaded as a module (tools/ is not a package)."""
    import importlib.util
    import sys

    path = ROOT / "tools" / "gen_config_docs.py"
    spec = importlib.util.spec_from_file_location("gen_config_docs", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("gen_config_docs", module)
    spec.loader.exec_module(module)
    return module


def test_configuration_doc_is_what_the_generator_writes() -> None:
    """A setting added (or a comment changed) without `make docs` fails here."""
    expected = _config_docs_generator().render()
    current = (ROOT / "docs" / "configuration.md").read_text()
    assert current == expected, "docs/configuration.md is out of date: run `make docs`"


def test_configuration_doc_gives_every_setting_a_meaning_from_its_source() -> None:
    gen = _config_docs_generator()
    meanings = gen.meanings()
    assert set(meanings) == {name for name, _, _ in settings()}
    assert not [name for name, text in meanings.items() if not text]
    # trailing comments, the comment block above a field, one sentence split over two fields
    assert meanings["STREAMREC_TRAINER_TOP_K"] == "recommendations precomputed per touched user"
    assert meanings["STREAMREC_MODEL_EVICT_AFTER_S"].endswith("0: never")
    assert meanings["STREAMREC_TRAINER_BATCH_MAX_WAIT_MS"] == (
        "a batch closes at this many events or after this long, whichever comes first"
    )
    assert "| sgd \\| adagrad |" in gen.render()


def test_every_subcommand_parses_its_documented_options() -> None:
    from streamrec.consumers.cli import build_parser

    p = build_parser()
    for argv in (
        ["demo", "--events", "10", "--seed", "1", "--no-services", "--no-eval"],
        ["recommend", "--user", "u1", "-k", "3", "--feature", "country=DE", "--json"],
        ["serve", "--port", "8081"],
        ["publish", "--synthetic", "10"],
        ["services", "status"],
        ["services", "up", "redis"],
        ["generate", "--out", "-", "--events", "10", "--seed", "1", "--users", "5"],
        ["replay", "u.data", "--speed", "2", "--limit", "5", "--dry-run", "--no-progress"],
        ["bench", "model", "--quick"],
    ):
        args, extra = p.parse_known_args(argv)
        assert callable(args.func) and (not extra or argv[0] == "bench"), argv
