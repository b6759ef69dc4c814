"""Embedding tables that grow while the compiled training step keeps running.

Each table is one `tf.Variable` declared with an unknown first dimension, so the traced step
(which captures the variable, not its shape) never retraces when the table grows: growth is an
`assign` of a twice-as-large tensor with the learned rows copied. Capacity doubles, so copying
costs O(1) amortised per row. Rows are initialised when their id arrives, not when capacity
grows, so a table's content depends only on the order ids arrived in (and on evictions,
which compact it in place), never on capacities; a restored model therefore draws the same
initial rows as one that never stopped.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf


class GrowingTable:
    """A [capacity, dim] (or [capacity] when dim is 0) variable plus its Adagrad accumulator."""

    def __init__(
        self,
        name: str,
        dim: int,
        capacity: int,
        accumulator: float | None = None,
    ) -> None:
        self.name = name
        self.dim = dim
        self.capacity = max(1, capacity)
        self.accumulator_init = accumulator
        self.var = tf.Variable(
            tf.zeros(self._shape(self.capacity)),
            shape=tf.TensorShape(self._shape(None)),
            trainable=False,
            name=name,
        )
        self.acc: tf.Variable | None = None
        if accumulator is not None:
            self.acc = tf.Variable(
                tf.fill(self._shape(self.capacity), accumulator),
                shape=tf.TensorShape(self._shape(None)),
                trainable=False,
                name=f"{name}_acc",
            )

    def _shape(self, rows: int | None) -> list[int | None]:
        return [rows, self.dim] if self.dim else [rows]

    def ensure(self, rows: int) -> None:
        """Make room for `rows` rows, doubling; learned rows and accumulators are kept."""
        if rows <= self.capacity:
            return
        cap = self.capacity
        while cap < rows:
            cap *= 2
        extra = self._shape(cap - self.capacity)
        self.var.assign(tf.concat([self.var, tf.zeros(extra)], axis=0))
        if self.acc is not None:
            assert self.accumulator_init is not None
            self.acc.assign(tf.concat([self.acc, tf.fill(extra, self.accumulator_init)], axis=0))
        self.capacity = cap

    def keep_rows(self, rows: np.ndarray) -> None:
        """Keep `rows`, in their order, as rows 0..len(rows)-1 (eviction compacts a table);
        every other row becomes zero with its initial accumulator. Capacity is unchanged."""
        idx = tf.constant(np.asarray(rows, dtype=np.int32))
        extra = self._shape(self.capacity - int(rows.shape[0]))
        self.var.assign(tf.concat([tf.gather(self.var, idx), tf.zeros(extra)], axis=0))
        if self.acc is not None:
            assert self.accumulator_init is not None
            kept = tf.gather(self.acc, idx)
            self.acc.assign(tf.concat([kept, tf.fill(extra, self.accumulator_init)], axis=0))

    # Row reads and writes go straight to the raw ops: the trainer makes a dozen of them per
    # batch, and tf.gather / scatter_update's Python dispatch took 37-39 us a call against
    # 16-19 us here (120 rows of 32; the op itself is a few microseconds).

    def set_rows(self, rows: np.ndarray, values: np.ndarray) -> None:
        self.ensure(int(rows.max()) + 1 if rows.shape[0] else 0)
        tf.raw_ops.ResourceScatterUpdate(
            resource=self.var.handle,
            indices=np.asarray(rows, np.int32),
            updates=np.asarray(values, np.float32),
        )

    def get_rows(self, rows: np.ndarray) -> np.ndarray:
        out = tf.raw_ops.ResourceGather(
            resource=self.var.handle, indices=np.asarray(rows, np.int32), dtype=tf.float32
        )
        return out.numpy()

    def get_acc_rows(self, rows: np.ndarray) -> np.ndarray:
        assert self.acc is not None
        out = tf.raw_ops.ResourceGather(
            resource=self.acc.handle, indices=np.asarray(rows, np.int32), dtype=tf.float32
        )
        return out.numpy()

    def set_acc_rows(self, rows: np.ndarray, values: np.ndarray) -> None:
        assert self.acc is not None
        tf.raw_ops.ResourceScatterUpdate(
            resource=self.acc.handle,
            indices=np.asarray(rows, np.int32),
            updates=np.asarray(values, np.float32),
        )

    def head(self, n: int) -> np.ndarray:
        """The first n rows as numpy (a copy)."""
        return self.var[:n].numpy()

    def head_acc(self, n: int) -> np.ndarray | None:
        return None if self.acc is None else self.acc[:n].numpy()

    def load(self, values: np.ndarray, acc: np.ndarray | None, capacity: int) -> None:
        """Replace the content by saved rows (the rest zero / initial accumulator)."""
        n = values.shape[0]
        self.capacity = max(1, capacity, n)
        full = np.zeros(self._shape(self.capacity), dtype=np.float32)  # type: ignore[arg-type]
        full[:n] = values
        self.var.assign(full)
        if self.acc is not None:
            assert self.accumulator_init is not None
            fa = np.full(self._shape(self.capacity), self.accumulator_init, dtype=np.float32)  # type: ignore[arg-type]
            if acc is not None:
                fa[:n] = acc
            self.acc.assign(fa)
