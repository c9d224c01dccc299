"""Partitions of whole groups for a GLMM read in chunks, in this process (out of core).

Layer: models. One pass over a stream of chunks (the batches of files, or the partitions of a
Dask frame read one after another when there is no cluster) builds each chunk's GLMM arrays
and writes every row to the temporary file of its bucket -- a range of levels of the factor
the others nest in, so each bucket holds whole groups whatever the order of the data
(:class:`~multilevel.design.buckets.BucketWriter`) -- while the sums the frame needs are
merged. The buckets then become the partitions of
:class:`~multilevel.engine.partitioned.LocalPartitions`, evaluated one after another.
Used by :class:`~multilevel.models.chunked.StreamRunner` and, without a cluster, by the Dask
runner.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np

from multilevel.errors import DataError

__all__ = ["RESIDENT_BYTES", "n_buckets", "bucket_pass", "local_executor"]

#: a GLMM read out of core keeps its partitions' compiled cores in memory between
#: evaluations while their rows take less than this (about twice the rows' arrays); above
#: it, each evaluation loads one partition at a time from its temporary file
RESIDENT_BYTES = 1 << 30


def n_buckets(n_rows: int, target_rows: int, n_levels: int, limit: int = 512) -> int:
    """How many partitions of whole groups for ``n_rows`` rows of ``n_levels`` groups: about
    ``target_rows`` rows each, at most one per group and ``limit`` in all (open files).

    >>> n_buckets(1_000_000, 262_144, 5000), n_buckets(50, 1000, 15)
    (4, 1)
    """
    return int(max(1, min(math.ceil(max(n_rows, 1) / max(target_rows, 1)), n_levels, limit)))


def bucket_pass(stream: Any, design: Any, chunk_fn: Callable, totals_of: Callable, term: int,
                nlev: int) -> tuple[Any, Any]:
    """One pass over ``stream`` (``batches(columns)``, ``batch_size``, ``what``): each
    batch's arrays (``chunk_fn(frame, where)``) written by bucket of the levels of term
    ``term``, their sums (``totals_of``) merged. Returns (handle, totals)."""
    from multilevel.design.buckets import BucketWriter

    nb = n_buckets(design.summary.n_complete, stream.batch_size, nlev)
    writer = BucketWriter(nb)
    totals = None
    try:
        for b in stream.batches(design.columns):
            arr = chunk_fn(b.frame, b.describe())
            t = totals_of(arr)
            totals = t if totals is None else totals.merge(t)
            if len(arr["y"]):
                # a range of levels per bucket: buckets in level order, rows in data order
                writer.write(arr, np.asarray(arr["refs"][term], dtype=np.int64) * nb // nlev)
        parts = writer.close()
    except BaseException:
        writer.cleanup()
        raise
    if totals is None:
        writer.cleanup()
        raise DataError(f"{stream.what} has no rows")
    return (writer, parts, design.dim), totals


def local_executor(handle: Any, spec: Any) -> Any:
    """The buckets of :func:`bucket_pass` as partitions evaluated here: kept in memory below
    :data:`RESIDENT_BYTES`, else loaded from their files at each evaluation."""
    from multilevel.engine.partitioned import LocalPartitions

    writer, parts, dim = handle
    rows = sum(n for _, n in parts)
    resident = rows * (dim + 12) * 8 * 2 <= RESIDENT_BYTES
    try:
        return LocalPartitions([writer.loader(p) for p, _ in parts], spec, resident,
                               cleanup=writer.cleanup)
    except BaseException:
        writer.cleanup()
        raise
