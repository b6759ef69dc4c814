"""The synthetic quality run: the demo's report, the model against the baselines.

It joins a generator from `streaming/` to an evaluator from `model/`, so it lives here: model/
imports nothing from streaming/, and streaming/ nothing that brings TensorFlow.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from streamrec.model.config import ModelConfig
from streamrec.model.evaluate import evaluate_stream
from streamrec.streaming.synthetic import SyntheticConfig, SyntheticStream


def evaluate_synthetic(
    stream_cfg: SyntheticConfig | None = None,
    model_cfg: ModelConfig | None = None,
    k: int = 10,
    out_dir: str | Path | None = None,
    **options: Any,
) -> dict[str, Any]:
    """Prequential quality on `SyntheticStream(stream_cfg)` (default: its defaults, 50k
    events); `options` are `model.evaluate.evaluate_stream`'s (batch_size, warmup, auc_share,
    baselines, progress, models_out), and so is the report."""
    stream = SyntheticStream(stream_cfg or SyntheticConfig())
    return evaluate_stream(stream, model_cfg, k, out_dir, **options)
