"""A model's row arrays written to temporary files by bucket, and read back bucket by bucket.

Layer: design. May import: formula, errors, control.

Why a module of its own: a GLMM read in chunks needs every evaluation of its criterion to see
the rows of each group together (``engine.partitioned``), and the chunks of a file are in
whatever order the data came in. One pass over the data builds each chunk's arrays (the
rows of Z, X, y, weights, offset from the learnt specification) and appends each row to the
file of its bucket (a range of levels of the grouping factor), so that each bucket holds
whole groups, whatever the order of the data (sorted data need no special case). The files
are Arrow IPC files in a temporary directory: written with pyarrow's own writer, one record
batch per chunk and bucket, and read back memory-mapped, without the encoding and
compression of Parquet that temporary files do not need. The rows of a bucket keep the order
of the data, so a fit is deterministic.

>>> import numpy as np
>>> w = BucketWriter(2)
>>> arrays = {"refs": [np.array([0, 1, 1, 0])], "Z": [np.ones((4, 1))], "X": np.ones((4, 1)),
...           "y": np.array([1.0, 2.0, 3.0, 4.0]), "wt": None, "off": None, "nt": None}
>>> w.write(arrays, np.array([0, 1, 1, 0]))
>>> parts = w.close()
>>> [n for _, n in parts], w.load(parts[1][0])["y"].tolist()
([2, 2], [2.0, 3.0])
>>> w.cleanup()
"""
from __future__ import annotations

import os
import shutil
import tempfile
from typing import Any, Callable, Mapping

import numpy as np

from multilevel.errors import DataError

__all__ = ["BucketWriter"]

_OPTIONAL = ("wt", "off", "nt")


class BucketWriter:
    """Rows of a model's arrays appended to one temporary Arrow IPC file per bucket.

    ``write(arrays, bucket)``: the arrays of one chunk (``refs`` and ``Z`` per term, ``X``,
    ``y`` and the optional ``wt``, ``off``, ``nt``) and the bucket of each row; ``close()``:
    the (path, rows) of the non-empty buckets in bucket order; ``load(path)`` reads one back;
    ``cleanup()`` removes the directory."""

    def __init__(self, n_buckets: int, directory: str | None = None):
        self.n_buckets = int(n_buckets)
        self.dir = tempfile.mkdtemp(prefix="multilevel-glmm-", dir=directory)
        self._writers: dict[int, Any] = {}
        self._sinks: dict[int, Any] = {}
        self._rows = np.zeros(self.n_buckets, dtype=np.int64)
        self._schema = None
        self._layout: tuple | None = None

    def _path(self, b: int) -> str:
        return os.path.join(self.dir, f"bucket-{b:05d}.arrow")

    def _columns(self, arrays: Mapping[str, Any]) -> dict[str, np.ndarray]:
        layout = (len(arrays["refs"]), tuple(np.asarray(z).shape[1] for z in arrays["Z"]),
                  np.asarray(arrays["X"]).shape[1],
                  tuple(k for k in _OPTIONAL if arrays.get(k) is not None))
        if self._layout is None:
            self._layout = layout
        elif layout != self._layout:
            raise DataError("the chunks of the data give the model different columns (weights, "
                            "offset or trials present in some chunks only)")
        cols: dict[str, np.ndarray] = {}
        for k, r in enumerate(arrays["refs"]):
            cols[f"r{k}"] = np.asarray(r, dtype=np.int64)
        for k, Z in enumerate(arrays["Z"]):
            Z = np.asarray(Z, dtype=np.float64)
            for c in range(Z.shape[1]):
                cols[f"z{k}_{c}"] = Z[:, c]
        X = np.asarray(arrays["X"], dtype=np.float64)
        for j in range(X.shape[1]):
            cols[f"x{j}"] = X[:, j]
        cols["y"] = np.asarray(arrays["y"], dtype=np.float64)
        for k in _OPTIONAL:
            if arrays.get(k) is not None:
                cols[k] = np.asarray(arrays[k], dtype=np.float64)
        return cols

    def write(self, arrays: Mapping[str, Any], bucket: np.ndarray) -> None:
        """Append the rows of one chunk, each to the file of its bucket."""
        import pyarrow as pa
        import pyarrow.ipc as ipc

        bucket = np.asarray(bucket, dtype=np.int64)
        if bucket.size == 0:
            return
        cols = self._columns(arrays)
        # rows grouped by bucket, in their order inside each (a stable sort)
        order = np.argsort(bucket, kind="stable")
        bs = bucket[order]
        starts = np.flatnonzero(np.r_[True, bs[1:] != bs[:-1]])
        ends = np.r_[starts[1:], len(bs)]
        for s, e in zip(starts, ends):
            b = int(bs[s])
            idx = order[s:e]
            batch = pa.RecordBatch.from_pydict({k: v[idx] for k, v in cols.items()})
            if self._schema is None:
                self._schema = batch.schema
            w = self._writers.get(b)
            if w is None:
                sink = pa.OSFile(self._path(b), "wb")
                w = ipc.new_file(sink, self._schema)
                self._writers[b], self._sinks[b] = w, sink
            w.write_batch(batch)
            self._rows[b] += e - s

    def close(self) -> list[tuple[str, int]]:
        """Finish the files; (path, rows) of each non-empty bucket, in bucket order."""
        for b in sorted(self._writers):
            self._writers[b].close()
            self._sinks[b].close()
        self._writers, self._sinks = {}, {}
        return [(self._path(b), int(self._rows[b])) for b in range(self.n_buckets) if self._rows[b]]

    def load(self, path: str) -> dict[str, Any]:
        """The arrays of one bucket (the rows in the order they were written)."""
        import pyarrow as pa
        import pyarrow.ipc as ipc

        nterms, zdims, p, optional = self._layout
        with pa.memory_map(path, "r") as src:
            tab = ipc.open_file(src).read_all()

        def col(name: str) -> np.ndarray:
            return np.ascontiguousarray(tab.column(name).to_numpy())

        return {"refs": [col(f"r{k}") for k in range(nterms)],
                "Z": [np.column_stack([col(f"z{k}_{c}") for c in range(s)]) if s else
                      np.zeros((tab.num_rows, 0)) for k, s in enumerate(zdims)],
                "X": np.column_stack([col(f"x{j}") for j in range(p)]) if p else
                np.zeros((tab.num_rows, 0)),
                "y": col("y"), **{k: (col(k) if k in optional else None) for k in _OPTIONAL}}

    def loader(self, path: str) -> Callable[[], dict[str, Any]]:
        """A callable that loads one bucket (for ``engine.partitioned.LocalPartitions``)."""
        return lambda: self.load(path)

    def cleanup(self) -> None:
        """Remove the temporary files."""
        for w in list(self._writers.values()):
            try:
                w.close()
            except Exception:  # noqa: BLE001 - already broken: removed below anyway
                pass
        self._writers = {}
        for s in list(self._sinks.values()):
            try:
                s.close()
            except Exception:  # noqa: BLE001
                pass
        self._sinks = {}
        shutil.rmtree(self.dir, ignore_errors=True)

    def __del__(self) -> None:
        try:
            if os.path.isdir(self.dir):
                self.cleanup()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass
