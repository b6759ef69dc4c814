"""Thread pools of TensorFlow and of numpy's BLAS.

On 2 cores TF's default thread pools oversubscribe next to the Kafka and Redis clients
(PITFALLS), and the pools can only be sized before TF runs its first op, so the entry points
call this first. numpy's OpenBLAS is worse: its threads spin between calls, and on a busy
2-core machine a 64 x 10k matrix-vector product for one top-k took 6-8 ms with the default
threads against 0.09 ms with one (measured 2026-11-25), while also stealing the training step's
core.

TensorFlow's C++ layer also writes start-up notices straight to fd 2 while it loads (absl's
"before InitializeLog" warning, oneDNN and CPU-instruction notices), which
TF_CPP_MIN_LOG_LEVEL does not silence: `import_tensorflow` captures fd 2 during the import,
logs those at DEBUG and writes every other line back to stderr, so real errors still show.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import tempfile
import threading
from collections.abc import Iterator
from types import ModuleType

log = logging.getLogger(__name__)

# What TensorFlow prints while it loads that no user needs to act on; anything else written to
# fd 2 during the import (an error, a warning of another library) is passed on unchanged.
# An absl line starts with severity, date, time, thread and source: "I0000 00:00:17.1 42 x.cc:1] ".
_ABSL = r"[IWE]\d{4} [\d:.]+\s+\d+ [\w.]+:\d+\] "
TF_STARTUP_NOTICES = re.compile(
    "|".join(
        (
            r"WARNING: All log messages before absl::InitializeLog\(\) is called are written to "
            r"STDERR",
            _ABSL + r"oneDNN custom operations are on\.",
            _ABSL + r"This TensorFlow binary is optimized to use available CPU instructions",
            r"To enable the following instructions: .*, in other operations, rebuild TensorFlow "
            r"with the appropriate compiler flags\.",
            _ABSL + r"Could not find cuda drivers on your machine, GPU will not be used\.",
            _ABSL + r"Unable to register cu(?:DNN|FFT|BLAS) factory: Attempting to register "
            r"factory for plugin cu(?:DNN|FFT|BLAS) when one has already been registered",
        )
    )
)
_IMPORT_LOCK = threading.Lock()


@contextlib.contextmanager
def filtered_stderr_fd(notices: re.Pattern[str] = TF_STARTUP_NOTICES) -> Iterator[None]:
    """Send fd 2 to a temporary file for the block, then log the lines `notices` matches at
    DEBUG and write every other line back to stderr, in order, even if the block raised."""
    with contextlib.suppress(Exception):
        sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        finally:
            with contextlib.suppress(Exception):
                sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            text = tmp.read().decode("utf-8", "replace")
            kept = []
            for line in text.splitlines():
                if notices.match(line):
                    log.debug("tensorflow start-up: %s", line)
                else:
                    kept.append(line + "\n")
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()


def import_tensorflow() -> ModuleType:
    """`import tensorflow`, with its start-up notices kept off the console (see above).

    The entry points reach it first through `configure_threads`; once TensorFlow is loaded,
    every later `import tensorflow` is a dictionary look-up and prints nothing.
    """
    loaded = sys.modules.get("tensorflow")
    if loaded is not None:
        return loaded
    with _IMPORT_LOCK, filtered_stderr_fd():
        import tensorflow

    return tensorflow


def limit_blas_threads(n: int = 1) -> list[str]:
    """Cap the threads of every BLAS numpy loaded (threadpoolctl); returns their libraries."""
    import numpy  # noqa: F401  (loads numpy's OpenBLAS, if any)
    from threadpoolctl import threadpool_info, threadpool_limits

    threadpool_limits(n, user_api="blas")
    return [str(lib["filepath"]) for lib in threadpool_info() if lib.get("user_api") == "blas"]


def configure_threads(intra_op: int = 1, inter_op: int = 1, blas: int = 1) -> bool:
    """Size TF's thread pools and numpy's BLAS threads.

    BLAS defaults to one thread: the model's numpy products (top-k scoring) are small and
    latency-bound. Returns False (and warns) if TF already started with other sizes.
    """
    tf = import_tensorflow()
    limit_blas_threads(blas)
    try:
        tf.config.threading.set_intra_op_parallelism_threads(intra_op)
        tf.config.threading.set_inter_op_parallelism_threads(inter_op)
        return True
    except RuntimeError:
        current = (
            tf.config.threading.get_intra_op_parallelism_threads(),
            tf.config.threading.get_inter_op_parallelism_threads(),
        )
        if current != (intra_op, inter_op):
            log.warning(
                "TF threads already initialised as %s; wanted %s", current, (intra_op, inter_op)
            )
        return current == (intra_op, inter_op)
