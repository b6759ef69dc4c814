"""TensorFlow's start-up notices stay off the console; anything else on fd 2 still shows.

The notices come from TensorFlow's C++ layer on fd 2 (not Python's sys.stderr), so these tests
run the import in a fresh interpreter and read what reached its stderr.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from streamrec.model.runtime import TF_STARTUP_NOTICES

# Fragments of the notices TensorFlow 2.x prints while it loads (see model/runtime.py).
NOTICES = ("absl::InitializeLog", "oneDNN custom operations", "cpu_feature_guard")


def _python(code: str, tmp_path: Path, extra_path: Path | None = None) -> str:
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    if extra_path is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(extra_path), env.get("PYTHONPATH", "")])
    res = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=tmp_path,
        check=False,
    )
    assert res.returncode == 0, res.stderr
    return res.stderr


@pytest.mark.slow
def test_the_model_imports_without_startup_notices(tmp_path: Path) -> None:
    bare = _python("import tensorflow", tmp_path)
    if not any(n in bare for n in NOTICES):
        pytest.skip("this TensorFlow prints no start-up notice: nothing to filter")
    quiet = _python(
        """
        from streamrec.model.runtime import configure_threads
        configure_threads(1, 1)
        import streamrec.model.online
        """,
        tmp_path,
    )
    assert not [n for n in NOTICES if n in quiet], quiet


def test_other_fd2_lines_during_the_import_are_passed_on(tmp_path: Path) -> None:
    """A stand-in `tensorflow` writes a known notice and a real error to fd 2 while it loads:
    the notice is dropped, the error reaches stderr unchanged."""
    fake = tmp_path / "fake" / "tensorflow"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text(
        "import os\n"
        "os.write(2, b'WARNING: All log messages before absl::InitializeLog() is called are "
        "written to STDERR\\n')\n"
        "os.write(2, b'E0000 00:00:1.5 77 loader.cc:12] could not open libcuda: disk on fire\\n')\n"
        "os.write(2, b'I0000 00:00:1.6 77 port.cc:153] oneDNN custom operations are on. x\\n')\n"
        "os.write(2, b'last line without newline')\n"
    )
    err = _python(
        """
        from streamrec.model.runtime import import_tensorflow
        tf = import_tensorflow()
        assert tf.__file__.endswith("fake/tensorflow/__init__.py"), tf.__file__
        assert import_tensorflow() is tf
        """,
        tmp_path,
        extra_path=tmp_path / "fake",
    )
    assert "could not open libcuda: disk on fire" in err
    assert "last line without newline" in err
    assert "absl::InitializeLog" not in err and "oneDNN" not in err


def test_the_notice_patterns_match_only_notices() -> None:
    assert TF_STARTUP_NOTICES.match(
        "I0000 00:00:1796408218.409759    6814 port.cc:153] oneDNN custom operations are on. "
        "You may see slightly different numerical results"
    )
    assert TF_STARTUP_NOTICES.match(
        "I0000 00:00:1796408218.587723    6814 cpu_feature_guard.cc:227] This TensorFlow binary "
        "is optimized to use available CPU instructions in performance-critical operations."
    )
    assert TF_STARTUP_NOTICES.match(
        "To enable the following instructions: AVX2 FMA, in other operations, rebuild "
        "TensorFlow with the appropriate compiler flags."
    )
    for line in (
        "E0000 00:00:1.5 77 loader.cc:12] could not open libcuda",
        "Traceback (most recent call last):",
        "ImportError: oneDNN custom operations are on.",
        "W0000 00:00:1.5 77 x.cc:1] oneDNN custom operations are off.",
    ):
        assert not TF_STARTUP_NOTICES.match(line), line
