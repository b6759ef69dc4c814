"""Write docs/configuration.md from the config classes: one table per section.

    python tools/gen_config_docs.py           # (re)write docs/configuration.md
    python tools/gen_config_docs.py --check   # exit 1 if the file is not what this writes

Variables, defaults and types come from `streamrec.consumers.config.settings()`, the list
`streamrec config` prints. The one-line meaning of a setting is the comment its field carries
in the source of its dataclass, read with `tokenize`:

1. the trailing `# comment` on the field's line; else
2. the block of `#` lines right above the field: its first sentence, plus any later sentence
   that gives a special value ("0: never.");
3. else the text in `FALLBACK` below, for fields the source leaves uncommented.

A comment added in the source later wins over `FALLBACK`.
`tests/unit/consumers/test_config.py` checks the file is up to date, so a new setting fails the
tests until `make docs` is run.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import io
import re
import sys
import tokenize
import typing
from pathlib import Path
from typing import Any

ROOT = next(p for p in Path(__file__).resolve().parents if (p / "pyproject.toml").exists())
OUTPUT = ROOT / "docs" / "configuration.md"

SECTION_TITLES = {
    "kafka": "Kafka",
    "redis": "Redis",
    "services": "Local servers (`streamrec services`, `make demo`, the tests)",
    "model": "Model",
    "trainer": "Trainer",
}

# Meanings of the fields whose source has no comment. Keep them to one line; better still,
# write the comment on the field in the config class and delete the entry here.
FALLBACK = {
    "STREAMREC_KAFKA_BOOTSTRAP": "Kafka brokers, `host:port[,host:port...]`",
    "STREAMREC_KAFKA_EVENTS_TOPIC": "topic the trainer learns from (key = user id, JSON value)",
    "STREAMREC_KAFKA_DLQ_TOPIC": "dead-letter topic: invalid records, with the reason in headers",
    "STREAMREC_KAFKA_ITEMS_TOPIC": "compacted topic of item side features, keyed by item id",
    "STREAMREC_KAFKA_USERS_TOPIC": "compacted topic of user side features, keyed by user id",
    "STREAMREC_KAFKA_GROUP_ID": "consumer group of the trainers; also names their Redis lease "
    "and offsets",
    "STREAMREC_KAFKA_PARTITIONS": "partitions of the events topic when streamrec creates it (an "
    "existing topic is left as it is)",
    "STREAMREC_KAFKA_POLL_TIMEOUT_MS": "longest wait of one poll for records",
    "STREAMREC_KAFKA_MAX_POLL_RECORDS": "most records one poll returns",
    "STREAMREC_KAFKA_FETCH_MAX_BYTES": "most bytes of one fetch response (kafka-python "
    "`fetch_max_bytes`)",
    "STREAMREC_KAFKA_MAX_PARTITION_FETCH_BYTES": "most bytes per partition in one fetch "
    "(kafka-python `max_partition_fetch_bytes`)",
    "STREAMREC_KAFKA_REQUEST_TIMEOUT_MS": "Kafka client request timeout",
    "STREAMREC_KAFKA_HEARTBEAT_INTERVAL_MS": "consumer group heartbeat; at most a third of the "
    "session timeout",
    "STREAMREC_REDIS_URL": "Redis to write to and read from: `redis://`, `rediss://` or "
    "`unix://` URL",
    "STREAMREC_REDIS_PREFIX": "prefix of every key streamrec writes and reads",
    "STREAMREC_REDIS_SOCKET_TIMEOUT_MS": "timeout of one Redis command",
    "STREAMREC_REDIS_CONNECT_TIMEOUT_MS": "timeout of connecting to Redis",
    "STREAMREC_REDIS_RETRIES": "retries of a failed Redis call (jittered exponential backoff) "
    "before it counts as an outage",
    "STREAMREC_REDIS_BACKOFF_BASE_MS": "first backoff between Redis retries",
    "STREAMREC_REDIS_BACKOFF_CAP_MS": "longest backoff between Redis retries",
    "STREAMREC_SERVICES_KAFKA_VERSION": "Kafka release whose jars Maven downloads",
    "STREAMREC_SERVICES_KAFKA_PORT": "port of the local broker",
    "STREAMREC_SERVICES_KAFKA_CONTROLLER_PORT": "port of the local broker's KRaft controller",
    "STREAMREC_SERVICES_REDIS_PORT": "port of the local Redis",
    "STREAMREC_SERVICES_START_TIMEOUT_S": "a local server not healthy within this long is "
    "killed and `up` fails",
    "STREAMREC_SERVICES_KAFKA_HEAP_MB": "JVM heap of the local broker, in MiB",
    "STREAMREC_MODEL_DIM": "embedding dimension of users, items and features",
    "STREAMREC_MODEL_L2": "L2 regularisation of the rows a batch touches",
    "STREAMREC_MODEL_INIT_SCALE": "scale of the random initial embeddings",
    "STREAMREC_MODEL_SEED": "random seed (initial rows, negative sampling)",
    "STREAMREC_MODEL_EVENT_WEIGHTS": "the event types and their weights, `type=weight,...` (the "
    "whole map); a negative weight is an explicit negative",
    "STREAMREC_MODEL_POPULARITY_HALF_LIFE_S": "half-life of the time-decayed popularity, in "
    "event time",
    "STREAMREC_MODEL_STEPS_PER_BATCH": "optimiser steps per mini-batch",
    "STREAMREC_MODEL_ADAGRAD_INITIAL_ACCUMULATOR": "initial Adagrad accumulator (with "
    "`OPTIMIZER=adagrad`)",
    "STREAMREC_TRAINER_CHECKPOINT_DIR": "where the trainer saves model checkpoints",
    "STREAMREC_TRAINER_CHECKPOINT_EVERY_EVENTS": "checkpoint after this many events since the "
    "last one, or after `CHECKPOINT_EVERY_S`, whichever comes first",
    "STREAMREC_TRAINER_CHECKPOINT_EVERY_S": "checkpoint after this many seconds since the last "
    "one, or after `CHECKPOINT_EVERY_EVENTS` events, whichever comes first",
}

_SPECIAL_VALUE = re.compile(r"^-?[0-9][0-9.]*:\s")
# A sentence ends at a full stop followed by a capital, a digit or a quote; not at "i.e. a".
_SENTENCE_END = re.compile(r"(?<=\.)\s+(?=[A-Z0-9\"`*])")


def sections() -> list[tuple[str, type]]:
    """(section name, dataclass) in the order `settings()` lists them."""
    from streamrec.consumers.config import Config

    hints = typing.get_type_hints(Config)
    return [(f.name, hints[f.name]) for f in dataclasses.fields(Config)]


def field_comments(cls: type) -> dict[str, tuple[str, str]]:
    """Field name -> (trailing comment, comment block above), from the class's source file."""
    path = Path(inspect.getsourcefile(cls) or "")
    source = path.read_text()
    trailing: dict[int, str] = {}
    full_line: dict[int, str] = {}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type != tokenize.COMMENT:
            continue
        text = tok.string.lstrip("#").strip()
        if tok.line[: tok.start[1]].strip():
            trailing[tok.start[0]] = text
        else:
            full_line[tok.start[0]] = text
    node = next(
        n
        for n in ast.walk(ast.parse(source))
        if isinstance(n, ast.ClassDef) and n.name == cls.__name__
    )
    out: dict[str, tuple[str, str]] = {}
    for stmt in node.body:
        if not (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)):
            continue
        after = " ".join(
            trailing[n]
            for n in range(stmt.lineno, (stmt.end_lineno or stmt.lineno) + 1)
            if n in trailing
        )
        block: list[str] = []
        line = stmt.lineno - 1
        while line in full_line:
            block.insert(0, full_line[line])
            line -= 1
        out[stmt.target.id] = (after, " ".join(block))
    return out


def _first_sentence(block: str) -> str:
    parts = _SENTENCE_END.split(block)
    keep = [parts[0]] + [p for p in parts[1:] if _SPECIAL_VALUE.match(p)]
    return " ".join(keep)


def meanings() -> dict[str, str]:
    """Variable -> its one-line meaning ("" when neither the source nor FALLBACK has one)."""
    from streamrec.consumers.config import env_name

    out: dict[str, str] = {}
    for sec_name, cls in sections():
        comments = field_comments(cls)
        names = [f.name for f in dataclasses.fields(cls)]
        for i, name in enumerate(names):
            var = env_name(sec_name, name)
            after, block = comments.get(name, ("", ""))
            # "a batch closes at this many events ..." / "... or after this long": one
            # sentence split over two fields is given whole to both.
            if after.endswith("...") and i + 1 < len(names):
                nxt = comments.get(names[i + 1], ("", ""))[0]
                if nxt.startswith("..."):
                    after = f"{after[:-3].strip()} {nxt[3:].strip()}"
            if after.startswith("...") and i > 0:
                prev = comments.get(names[i - 1], ("", ""))[0]
                if prev.endswith("..."):
                    after = f"{prev[:-3].strip()} {after[3:].strip()}"
            text = after or (_first_sentence(block) if block else "") or FALLBACK.get(var, "")
            out[var] = text.removesuffix(".")
    return out


def _default_text(value: Any) -> str:
    """The default as one would write the variable (as `streamrec config` prints it)."""
    if isinstance(value, dict):
        return ",".join(f"{k}={v:g}" for k, v in value.items())
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _cell(text: str) -> str:
    """Markdown table cell: `|` escaped everywhere, `<` outside code spans (not a tag)."""
    parts = text.replace("|", "\\|").split("`")
    return "`".join(p if i % 2 else p.replace("<", "&lt;") for i, p in enumerate(parts))


def render() -> str:
    from streamrec.consumers.config import settings

    rows = {name: (default, tp) for name, default, tp in settings()}
    meaning = meanings()
    out = [
        "# Configuration",
        "",
        "<!-- Generated by tools/gen_config_docs.py from the config classes: run `make docs`,",
        "     do not edit by hand. -->",
        "",
        "streamrec reads every setting from an environment variable. A field `f` of section `s`",
        "is `STREAMREC_<S>_<F>`: `KafkaConfig.bootstrap` is `STREAMREC_KAFKA_BOOTSTRAP`. Every",
        "`streamrec` command reads the same variables. An unknown `STREAMREC_*` variable (a",
        "typo) or a value that cannot work stops the command at start with a message naming the",
        "variable. `streamrec config` prints every variable with its default.",
        "",
        "Types: `int` and `float` are plain numbers; `bool` is `true`/`false` (also `1`/`0`,",
        "`yes`/`no`, `on`/`off`); `map` is `name=number,name=number`, and replaces the whole",
        'default map. An empty default is shown as `""`.',
        "",
        "A trainer restoring a checkpoint applies today's `STREAMREC_MODEL_*` settings to it,",
        "except four the saved tables depend on: `DIM`, `OPTIMIZER`, `FEATURE_HASH_BUCKETS` and",
        "`POPULARITY_HALF_LIFE_S`. Changed, they stop the trainer at start with a message",
        "naming them: set them back, or start from an empty checkpoint folder (a new model).",
    ]
    for sec_name, cls in sections():
        prefix = f"STREAMREC_{sec_name.upper()}_"
        # streamrec.streaming.config -> streaming/config.py, the folder in this repository
        src = "/".join(cls.__module__.split(".")[1:]) + ".py"
        out += [
            "",
            f"## {SECTION_TITLES.get(sec_name, sec_name.capitalize())}",
            "",
            f"`{prefix}*`, from `{cls.__name__}` in `{src}`.",
            "",
            "| variable | default | type | meaning |",
            "|---|---|---|---|",
        ]
        for f in dataclasses.fields(cls):
            var = f"{prefix}{f.name.upper()}"
            default, tp = rows[var]
            text = _default_text(default)
            shown = f"`{text}`" if text else '`""`'
            out.append(f"| `{var}` | {shown} | {tp} | {_cell(meaning[var] or '(undocumented)')} |")
    return "\n".join(out) + "\n"


def undocumented() -> list[str]:
    """Settings with no comment in the source (FALLBACK or nothing describes them)."""
    out = []
    for sec_name, cls in sections():
        comments = field_comments(cls)
        for f in dataclasses.fields(cls):
            if not any(comments.get(f.name, ("", ""))):
                out.append(f"STREAMREC_{sec_name.upper()}_{f.name.upper()}")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--check", action="store_true", help="exit 1 if the file is out of date")
    p.add_argument("--list-uncommented", action="store_true", help="settings without a comment")
    p.add_argument("--out", type=Path, default=OUTPUT)
    args = p.parse_args(argv)
    if args.list_uncommented:
        print("\n".join(undocumented()))
        return 0
    text = render()
    if args.check:
        current = args.out.read_text() if args.out.exists() else ""
        if current != text:
            print(f"{args.out} is out of date: run `make docs`", file=sys.stderr)
            return 1
        return 0
    missing = [v for v, m in meanings().items() if not m]
    for var in missing:
        print(f"warning: {var} has no comment in its config class", file=sys.stderr)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
