"""Dask frames as a source of row chunks: one chunk per partition, passes as Dask tasks.

Layer: design. May import: formula, errors, control.

Why a module of its own: a Dask DataFrame is data that the design layer reads (like the Arrow
batches of :mod:`~multilevel.design.stream`), but it is read where its partitions live: each
pass over the data maps a function over the partitions and merges the results with Dask's own
tree reduction (``dask.bag.Bag.reduction``), on whatever scheduler is active (a
``distributed.Client`` to a cluster, a ``LocalCluster``, or the local threads). Only the
per-partition results travel: transform statistics, level summaries, cell moments. Row values
after the fit (fitted values, residuals, predictions for new data) are lazy Dask Series, one
partition at a time.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np
import pandas as pd

from multilevel.errors import DataError

__all__ = ["DaskSource", "is_dask_frame", "map_new_data"]

#: partitions merged per node of the reduction tree
SPLIT_EVERY = 8


def is_dask_frame(data: Any) -> bool:
    mod = type(data).__module__ or ""
    return mod.startswith("dask") and hasattr(data, "npartitions") and hasattr(data, "columns")


def _tag(fn: Callable, where: str) -> Callable:
    def run(df: pd.DataFrame, i: int) -> Any:
        try:
            return fn(df)
        except DataError as e:
            raise DataError(f"{where} {i}: {e}") from e
    return run


#: whether this process's allocator was set to keep freed memory (see _keep_freed_memory)
_ALLOCATOR_SET = False


def _keep_freed_memory() -> None:
    """In a process started with a small ``MALLOC_TRIM_THRESHOLD_`` (distributed's nanny
    starts every worker with 65536, so that freed memory shows in its memory report), give
    glibc back its usual steady state (blocks up to 32 MiB from the heap, freed memory kept
    up to 64 MiB). Why: glibc fixes its mmap threshold at 128 KiB once the trim threshold
    is set, so every array of a partition (megabytes each) was a fresh mapping, page-faulted
    in and returned at once, again for every partition (measured: 4-7x the page faults,
    10-20 % of a partition's CPU time). The memory kept is at most one partition's working
    set. Nothing is done elsewhere (no variable, another C library)."""
    global _ALLOCATOR_SET
    if _ALLOCATOR_SET:
        return
    _ALLOCATOR_SET = True
    import os
    import sys

    try:
        small = int(os.environ.get("MALLOC_TRIM_THRESHOLD_", "")) < (64 << 20)
    except ValueError:
        return
    if not small or not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3  # glibc's malloc.h
        libc.mallopt(m_mmap_threshold, 32 << 20)
        libc.mallopt(m_trim_threshold, 64 << 20)
    except (OSError, AttributeError):  # not glibc
        pass


def _run_with_state(fn: Callable, state: Any, df: pd.DataFrame, i: int) -> list:
    """One partition's ``fn(state, partition)`` (in a list, for dask.bag), DataErrors
    naming the partition."""
    _keep_freed_memory()
    try:
        return [fn(state, df)]
    except DataError as e:
        raise DataError(f"Dask partition {i}: {e}") from e


class DaskSource:
    """A Dask DataFrame read partition by partition (see the module docstring)."""

    def __init__(self, ddf: Any):
        self.ddf = ddf
        self.names = [str(c) for c in ddf.columns]
        self.what = "the Dask DataFrame"

    def first(self, columns: list[str]) -> pd.DataFrame:
        """Some rows of the first non-empty partition (to classify the variables)."""
        sub = self.ddf[columns]
        head = sub.partitions[0].head(1000, compute=True)
        if len(head) == 0:
            head = sub.head(1000, npartitions=-1)
        if len(head) == 0:
            raise DataError("the Dask DataFrame has no rows")
        return head

    def reduce(self, columns: list[str], chunk: Callable, merge: Callable,
               state: Any = None) -> Any:
        """``merge`` over ``chunk(state, partition)`` of every partition, as a Dask tree
        reduction. ``state`` (the model's design: hundreds of kB, tens of MB for crossed
        factors) is one node of the graph, sent to each worker once per pass, not pickled
        into every task; ``chunk`` should be a module-level function (pickled by name)."""
        import uuid

        import dask
        import dask.bag as db

        parts = self.ddf[columns].to_delayed()
        # a fresh name per pass: the design changes between the passes (on the driver)
        st = dask.delayed(state, name=f"multilevel-state-{uuid.uuid4().hex}", traverse=False)
        # pure=False: fresh task keys for every pass (the passes differ only by the function,
        # whose token Dask might not tell apart, and must never share results)
        items = [dask.delayed(_run_with_state, pure=False)(chunk, st, p, i)
                 for i, p in enumerate(parts)]
        bag = db.from_delayed(items)

        def fold(xs: Any) -> Any:
            out = None
            for x in xs:
                out = x if out is None else merge(out, x)
            return out

        return bag.reduction(fold, fold, split_every=SPLIT_EVERY).compute()

    def batches(self, columns: list[str]) -> Any:
        """The partitions one after another as chunks in this process (no cluster)."""
        from multilevel.design.stream import Batch

        sub = self.ddf[columns]
        for i in range(sub.npartitions):
            df = sub.partitions[i].compute()
            yield Batch(df, f"Dask partition {i}", 0)

    def grouped(self, columns: list[str], by: list[str], chunk: Callable) -> list:
        """``chunk`` over partitions of whole groups: the rows shuffled by the columns
        ``by`` with Dask's own shuffle (every row of a combination of their values lands in
        one partition), each partition's rows back in the data's order (a shuffle gathers
        them in whatever order its inputs arrive; the order decides rounding, and a fit must
        be deterministic), then ``chunk(partition)``. Returns the delayed results, one per
        partition, for the caller to compute (or persist)."""
        import dask
        import dask.dataframe as dd

        sub = self.ddf[columns]
        meta = sub._meta.assign(**{_ROW: np.zeros(0, dtype=np.int64)})
        parts = [dask.delayed(_number_rows, pure=True)(p, i)
                 for i, p in enumerate(sub.to_delayed())]
        numbered = dd.from_delayed(parts, meta=meta, verify_meta=False)
        shuffled = numbered.shuffle(on=list(by), npartitions=max(1, sub.npartitions))
        run = _tag(chunk, "Dask partition")
        return [dask.delayed(_in_order, pure=False)(run, p, i)
                for i, p in enumerate(shuffled.to_delayed())]

    def row_series(self, design: Any, beta: np.ndarray, b: list[np.ndarray], what: str, *,
                   kind: str = "response", sigma: float | None = None,
                   family: Any = None) -> Any:
        """A lazy Dask Series of fitted values or residuals (rows used; the data's index)."""
        from multilevel.design.chunked import row_result

        def part(df: pd.DataFrame) -> pd.Series:
            v = design.row_values(df, beta, b, "a Dask partition")
            return pd.Series(row_result(v, what, kind, sigma, family),
                             index=df.index[v["rows"]], name=what)

        return self.ddf[design.columns].map_partitions(part, meta=(what, "f8"))


#: the data's row order, carried through a shuffle: partition number * 2^40 + row in it
_ROW = "__multilevel_row__"


def _number_rows(df: pd.DataFrame, i: int) -> pd.DataFrame:
    return df.assign(**{_ROW: (np.int64(i) << np.int64(40)) + np.arange(len(df), dtype=np.int64)})


def _in_order(run: Callable, df: pd.DataFrame, i: int) -> Any:
    df = df.sort_values(_ROW, kind="stable").drop(columns=[_ROW])
    return run(df.reset_index(drop=True), i)


def map_new_data(newdata: Any, fn: Callable[[pd.DataFrame], pd.Series], name: str) -> Any:
    """``fn`` over the partitions of a Dask frame (a lazy Series), or None for other data."""
    if not is_dask_frame(newdata):
        return None
    return newdata.map_partitions(fn, meta=(name, "f8"))
