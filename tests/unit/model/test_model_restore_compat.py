"""A checkpoint keeps training the way it was trained, across a change of defaults.

`user_gradient_scale` arrived with a default of 4; a checkpoint written before it existed has no
such key and was trained with the old behaviour (1). Restoring it must not switch the update
rule under a running model; a checkpoint that has the key keeps its value.
"""

from __future__ import annotations

from pathlib import Path

from streamrec.model import checkpoint
from streamrec.model.config import ModelConfig
from streamrec.model.online import OnlineRecommender
from streamrec.model.runtime import configure_threads
from streamrec.model.testing import Event

configure_threads(1, 1)  # before the first TF op: 2 shared cores


def test_old_checkpoint_restores_without_user_gradient_scale(tmp_path: Path) -> None:
    rec = OnlineRecommender(ModelConfig(dim=4, negatives=8))
    rec.learn([Event("u1", "i1", "view", None, 1), Event("u2", "i2", "view", None, 2)])
    rec.save(tmp_path / "new")
    default = ModelConfig().user_gradient_scale
    assert default != 1.0  # otherwise this test could not tell the two apart
    assert OnlineRecommender.restore(tmp_path / "new")[0].config.user_gradient_scale == default

    arrays, record = checkpoint.read(tmp_path / "new")
    info = {k: v for k, v in record.items() if k not in ("format", "arrays", "sha256")}
    del info["config"]["user_gradient_scale"]  # what a checkpoint of the earlier code holds
    checkpoint.write(tmp_path / "old", arrays, info)
    restored, _ = OnlineRecommender.restore(tmp_path / "old")
    assert restored.config.user_gradient_scale == 1.0
    assert restored.n_users == 2 and restored.version == rec.version
