"""The markdown summary of `streamrec bench all`: one table of the figures people ask for,
each beside its target, then the plots, then every JSON file for the details.

Written from the JSON files alone, so a summary can be rebuilt after the fact
(`streamrec bench summary --out DIR`) and a missing or failed benchmark shows as such instead
of hiding the rest.
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

Row = tuple[str, str, str, str]  # figure, measured, target, met


def _load(out: Path, name: str) -> dict[str, Any] | None:
    path = out / f"{name}.json"
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data


def _met(ok: bool | None) -> str:
    return "n/a" if ok is None else ("yes" if ok else "**no**")


def _ratio(a: Any, b: Any) -> str:
    return (
        f"{a / b:.2f}x"
        if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b
        else "?"
    )


def _num(x: Any, fmt: str = ",.0f") -> str:
    return "n/a" if x is None else format(x, fmt)


def _model_rows(d: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    for r in d.get("learn", []):
        eps = r.get("events_per_s")
        rows.append(
            (
                f"model learn, batch {r['batch']} ({r.get('loss')}+{r.get('optimizer')}, "
                f"{r.get('negatives')} negatives)",
                f"{_num(eps)} events/s",
                ">= 500,000 events/s",
                _met(eps is not None and eps >= 500_000),
            )
        )
    for r in d.get("topk", []):
        rows.append(
            (
                f"model top-10 for one user, {r['items']:,} items",
                f"p50 {_num(r.get('top10_ms_p50'), '.2f')} ms, "
                f"p99 {_num(r.get('top10_ms_p99'), '.2f')} ms",
                "(reported)",
                "n/a",
            )
        )
    mem = d.get("memory") or {}
    if mem:
        acc = mem.get("accounted_bytes_per_id")
        rows.append(
            (
                "model memory per id vs raw parameter bytes (tables, id maps, counters; "
                "RSS growth, which varies 1.5-6x run to run with the allocator)",
                f"{_num(acc, ',.0f')} B = {_ratio(acc, mem.get('raw_parameter_bytes_per_id'))}"
                f"; RSS {_num(mem.get('overhead_factor'), '.2f')}x",
                "(reported)",
                "n/a",
            )
        )
    return rows


def _quality_rows(d: dict[str, Any]) -> list[Row]:
    if "regimes" in d:
        return _regime_rows(d)
    models = d.get("models", {})
    ref = models.get(d.get("reference", "model"), {}).get("overall")
    if not ref:
        return []
    rows: list[Row] = [
        (
            f"quality: model HR@{d.get('k', 10)} / NDCG@{d.get('k', 10)} "
            f"({d.get('stream', {}).get('events', '?'):,} events, prequential)",
            f"{ref['hr']:.4f} / {ref['ndcg']:.4f}",
            "beats every baseline",
            "",
        )
    ]
    beats = True
    for name, m in models.items():
        o = m.get("overall")
        if name == d.get("reference", "model") or not o:
            continue
        hr_ratio = ref["hr"] / o["hr"] if o["hr"] else float("inf")
        ndcg_ratio = ref["ndcg"] / o["ndcg"] if o["ndcg"] else float("inf")
        ok = hr_ratio > 1 and ndcg_ratio > 1
        beats &= ok
        rows.append(
            (
                f"quality: {name} HR / NDCG (model ratio)",
                f"{o['hr']:.4f} / {o['ndcg']:.4f} ({hr_ratio:.2f}x / {ndcg_ratio:.2f}x)",
                "model ratio > 1",
                _met(ok),
            )
        )
    figure, measured, target, _ = rows[0]
    rows[0] = (figure, measured, target, _met(beats))
    return rows


def _regime_rows(d: dict[str, Any]) -> list[Row]:
    """One row per regime of `bench quality`: the model beside its best baseline."""
    rows: list[Row] = []
    k, protocol = d.get("k", 10), d.get("protocol", "fresh")
    seeds = len(d.get("seeds", [])) or "?"
    for regime, recs in d["regimes"].items():
        model = recs.get("model") or {}
        others = {n: r for n, r in recs.items() if n != "model" and r.get("hr10") is not None}
        if model.get("hr10") is None or not others:
            continue
        best = max(others, key=lambda n: others[n]["hr10"])
        b = others[best]
        rows.append(
            (
                f"quality on {regime}: model HR@{k} vs the best baseline "
                f"({protocol} protocol, {seeds} seeds)",
                f"{model['hr10']:.4f} ± {model.get('hr10_se') or 0:.4f} vs {best} "
                f"{b['hr10']:.4f} ± {b.get('hr10_se') or 0:.4f} "
                f"({_ratio(model['hr10'], b['hr10'])})",
                "beats every baseline",
                _met(all(model["hr10"] > r["hr10"] for r in others.values())),
            )
        )
    return rows


def _pipeline_rows(d: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    t = d.get("throughput")
    if t:
        eps, ratio = t.get("trainer_events_per_s"), t.get("ratio_trainer_to_raw")
        rows += [
            (
                f"trainer consume -> learn -> Redis ({t['events']:,} events, batch "
                f"{t.get('batch_max_events')})",
                f"{_num(eps)} events/s",
                ">= 100,000 events/s",
                _met(eps is not None and eps >= 100_000),
            ),
            (
                "raw kafka-python consume of the same topic; trainer / raw",
                f"{_num(t.get('raw_consume_records_per_s'))} records/s; {_num(ratio, '.3f')}",
                "ratio >= 0.7",
                _met(ratio is not None and ratio >= 0.7),
            ),
        ]
        if t.get("serial_bound_events_per_s") is not None:
            rows.append(
                (
                    "floors: consume + parse alone; learn alone; both in one interpreter",
                    f"{_num(t.get('consume_parse_records_per_s'))} records/s; "
                    f"{_num(t.get('learn_alone_events_per_s'))} events/s; "
                    f"{_num(t.get('serial_bound_events_per_s'))} events/s",
                    "(what the trainer figure can reach)",
                    _met(None),
                )
            )
    f = d.get("freshness")
    if f:
        p99 = f.get("p99_ms")
        rows.append(
            (
                f"freshness publish -> readable in Redis at {_num(f.get('achieved_rate_per_s'))}"
                f" events/s ({f.get('samples')} samples)",
                f"p50 {_num(f.get('p50_ms'), ',.1f')} / p95 {_num(f.get('p95_ms'), ',.1f')} / "
                f"p99 {_num(p99, ',.1f')} ms",
                "p99 <= 100 ms",
                _met(p99 is not None and p99 <= 100),
            )
        )
    return rows


def _serving_rows(d: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    limits = {"precomputed": 1.0, "realtime": 5.0}
    for r in d.get("runs", []):
        limit = limits.get(r["path"])
        rows.append(
            (
                f"recommend(user, 10) {r['path']}, {r['threads']} client(s), "
                f"{d.get('items', 0):,} items",
                f"p50 {r['p50_ms']:.3f} / p99 {r['p99_ms']:.3f} ms "
                f"(plain GET p99 {r['get_p99_ms']:.3f} ms"
                + (
                    f"; scoring alone p99 {r['score_only_p99_ms']:.3f} ms)"
                    if "score_only_p99_ms" in r
                    else ")"
                ),
                "(reported)" if limit is None else f"p99 <= {limit:g} ms",
                "n/a" if limit is None else _met(r["p99_ms"] <= limit),
            )
        )
    mem = d.get("memory")
    if mem:
        # The deployed key names when the run measured them (default prefix, scratch
        # database); else the benchmark's own longer throwaway prefix, which costs more.
        lay = mem.get("default_layout") or {}
        if "user_hash_bytes" in lay:
            nbytes, where = lay["user_hash_bytes"], f"keys like {lay['key_example']}"
            floor = f"; bare string floor {lay['raw_string_floor_bytes']:.0f} B"
        else:
            nbytes, where = mem["bytes_per_user"]["user_hash"], "benchmark prefix"
            floor = ""
        ratio = nbytes / mem["raw_vector_bytes"]
        rows.append(
            (
                f"Redis memory of a user's vector hash vs raw vector bytes "
                f"({mem.get('user_hash_encoding')}, {where})",
                f"{ratio:.2f}x ({nbytes:.0f} B vs {mem['raw_vector_bytes']} B{floor})",
                "<= 1.5x",
                _met(ratio <= 1.5),
            )
        )
    return rows


_SECTIONS: dict[str, Callable[[dict[str, Any]], list[Row]]] = {
    "model": _model_rows,
    "quality": _quality_rows,
    "pipeline": _pipeline_rows,
    "serving": _serving_rows,
}


def _machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}; load {load}"


def summarize(out: Path, names: list[str], status: dict[str, str] | None = None) -> str:
    """The summary as markdown; `status` says how each benchmark's run ended."""
    status = status or {}
    lines = [
        f"# streamrec benchmarks, {time.strftime('%Y-%m-%d %H:%M %Z')}",
        "",
        f"Machine: {_machine()}.",
        "",
        "| figure | measured | target | met |",
        "|---|---|---|---|",
    ]
    missing = []
    for name in names:
        data = _load(out, name)
        if data is None:
            missing.append(name)
            continue
        for row in _SECTIONS.get(name, lambda _d: [])(data):
            lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    if status:
        lines.append("Runs: " + "; ".join(f"{n} {s}" for n, s in status.items()) + ".")
        lines.append("")
    if missing:
        lines += [f"No results from: {', '.join(missing)}.", ""]
    plots = sorted(p.relative_to(out) for p in out.rglob("*.png"))
    if plots:
        lines += ["Plots: " + ", ".join(f"`{p}`" for p in plots) + ".", ""]
    lines += ["## Details", ""]
    for name in names:
        data = _load(out, name)
        if data is not None:
            text = json.dumps(data, indent=1)
            cut = " (cut)" if len(text) > 6000 else ""
            lines += [f"### {name}.json{cut}", "", "```json", text[:6000], "```", ""]
    return "\n".join(lines)


# --- small batches (bench model's small_batch_learn_recommend_ms) ---------------------------

_SMALL_BATCH_TARGET_MS = {"2000": 1.0, "100000": 3.0}


def _small_batch_rows(d: dict[str, Any]) -> list[Row]:
    """Learn 1-16 events, then top-10 for one of their users: p50 per catalogue size."""
    rows: list[Row] = []
    detail: dict[str, dict[str, Any]] = d.get("small_batch_detail") or {}
    for items, p50 in (d.get("small_batch_learn_recommend_ms") or {}).items():
        row: dict[str, Any] = next((r for r in detail.values() if str(r.get("items")) == items), {})
        target = _SMALL_BATCH_TARGET_MS.get(items)
        rows.append(
            (
                f"model learn 1-16 events + recommend top-10, {int(items):,} items "
                f"({row.get('loss', '?')}+{row.get('optimizer', '?')})",
                f"p50 {_num(p50, '.2f')} ms, p99 {_num(row.get('total_ms_p99'), '.2f')} ms "
                f"(replaced paths in the same run: p50 "
                f"{_num(row.get('reference_total_ms_p50'), '.2f')} ms)",
                f"p50 <= {target:g} ms" if target else "(reported)",
                _met(p50 <= target) if target and p50 is not None else "n/a",
            )
        )
    return rows


def _model_and_small_batch_rows(d: dict[str, Any]) -> list[Row]:
    return _model_rows(d) + _small_batch_rows(d)


_SECTIONS["model"] = _model_and_small_batch_rows
