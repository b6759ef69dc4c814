"""Thread pools of TensorFlow and of numpy's BLAS.

On 2 cores TF's default thread pools oversubscribe next to the Kafka and Redis clients
(PITFALLS), and the pools can only be sized before TF runs its first op, so the entry points
call this first. numpy's OpenBLAS is worse: its threads spin between calls, and on a busy
2-core machine a 64 x 10k matrix-vector product for one top-k took 6-8 ms with the default
threads against 0.09 ms with one (measured 2026-11-25), while also stealing the training step's
core.
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)


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
    import tensorflow as tf

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
