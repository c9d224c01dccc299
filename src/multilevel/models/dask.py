"""lmer on a Dask DataFrame: every pass over the rows is a Dask computation.

Layer: models. :class:`DaskRunner` runs the passes of
:class:`~multilevel.design.chunked.ChunkedDesign` as per-partition tasks merged by Dask's tree
reduction (:class:`~multilevel.design.dasksource.DaskSource`): the transforms' statistics, the
level summaries, then the cells' moments (:class:`~multilevel.engine.blocks.CellStats`, which
pickle only the cells a partition has). The optimisation then runs on the driver on the
blocks, as for any chunked fit. A worker lost during a pass costs only its tasks: Dask reruns
them (they are pure functions of their partition), and the fit is the same.
"""
from __future__ import annotations

from typing import Any, Callable

from multilevel.design.chunked import ChunkedDesign, LevelSummary
from multilevel.design.dasksource import DaskSource
from multilevel.design.stream import DEFAULT_BATCH_SIZE
from multilevel.engine.blocks import CellStats
from multilevel.formula._streaming import TransformLearner

__all__ = ["DaskRunner", "DaskPartitions"]


def _client() -> Any:
    """The active ``distributed`` client, or None (no cluster: the local scheduler)."""
    try:
        from distributed import default_client
    except ImportError:
        return None
    try:
        return default_client()
    except ValueError:
        return None


def _arrays_and_totals(df: Any, chunk_fn: Callable, totals_of: Callable) -> tuple:
    arr = chunk_fn(df, "a Dask partition")
    return arr, totals_of(arr)


def _second(pair: tuple) -> Any:
    return pair[1]


def _make_partition(pair: tuple, spec: Any) -> Any:
    from multilevel.engine.partitioned import GlmmPartition

    return GlmmPartition(pair[0], spec)


def _call(part: Any, method: str, args: tuple) -> Any:
    return getattr(part, method)(*args)


class DaskPartitions:
    """GLMM partitions persisted on the workers of a ``distributed`` cluster: each
    evaluation is one task per partition, run where it lives (the scheduler places a task
    with its data), and only its small result comes back. The partitions are mutated in
    place by their tasks (PIRLS's warm start); a copy that Dask moves elsewhere is correct
    too, since reads of the state name the evaluation they refer to
    (``engine.partitioned.GlmmPartition``)."""

    resident = True

    def __init__(self, client: Any, futures: list):
        self.client = client
        self.futures = list(futures)
        self.n_partitions = len(self.futures)

    def map(self, method: str, *args: Any) -> list:
        futs = self.client.map(_call, self.futures, method=method, args=args, pure=False)
        return self.client.gather(futs)

    def close(self) -> None:
        if self.futures:
            self.client.cancel(self.futures)
        self.futures = []


class _StreamOfPartitions:
    """A Dask frame read partition by partition in this process (the bucket pass of a GLMM
    when there is no cluster to persist partitions on)."""

    def __init__(self, source: DaskSource, batch_size: int | None = None):
        self.source = source
        self.batch_size = int(batch_size or DEFAULT_BATCH_SIZE)
        self.what = source.what
        self.names = source.names

    def batches(self, columns: list[str]) -> Any:
        return self.source.batches(columns)


class DaskRunner:
    """The passes of a chunked fit over the partitions of a Dask DataFrame."""

    def __init__(self, ddf: Any, batch_size: int | None = None):
        self.source = DaskSource(ddf)
        self.names = self.source.names
        #: rows per partition of whole groups when there is no cluster (out of core)
        self.batch_size = batch_size

    def learn(self, design: ChunkedDesign) -> None:
        design.start(self.source.first(design.columns))
        if design.needs_transform_pass:
            learner = self.source.reduce(design.columns, ChunkedDesign.transform_stats,
                                         _merge, state=design)
            design.set_transforms(learner if learner is not None else TransformLearner())
        summary = self.source.reduce(design.columns, ChunkedDesign.level_summary, _merge,
                                     state=design)
        design.set_levels(summary if summary is not None else LevelSummary())

    def accumulate(self, design: ChunkedDesign) -> CellStats:
        return self.source.reduce(design.columns, _cell_stats, _merge, state=design)

    # -- GLMMs: partitions of whole groups ----------------------------------------------------
    def glmm_pass(self, design: ChunkedDesign, chunk_fn: Callable, totals_of: Callable,
                  term: int, nlev: int) -> tuple[Any, Any]:
        """On a cluster: the rows shuffled by the grouping columns the others nest in (Dask's
        shuffle), each partition's GLMM arrays built and kept on its worker, their sums
        merged on the driver. Without one (the local scheduler): the partitions read one
        after another into temporary files by bucket, as out of core."""
        client = _client()
        if client is None:
            from multilevel.models.partitions import bucket_pass

            handle, totals = bucket_pass(_StreamOfPartitions(self.source, self.batch_size),
                                         design, chunk_fn, totals_of, term, nlev)
            return ("local", handle), totals
        delayed = self.source.grouped(design.columns, list(design.partition_columns),
                                      lambda df: _arrays_and_totals(df, chunk_fn, totals_of))
        futs = client.compute(delayed)
        try:
            parts = client.gather(client.map(_second, futs, pure=False))
        except BaseException:
            client.cancel(futs)
            raise
        totals = None
        for t in parts:
            totals = t if totals is None else totals.merge(t)
        return ("dask", client, futs, [t.n for t in parts]), totals

    def glmm_executor(self, handle: Any, spec: Any) -> Any:
        """The partitions bound to the compiled engine where they are (see
        :class:`DaskPartitions`); the rows' arrays are then released."""
        if handle[0] == "local":
            from multilevel.models.partitions import local_executor

            return local_executor(handle[1], spec)
        _, client, futs, ns = handle
        keep = [f for f, n in zip(futs, ns) if n > 0]
        try:
            parts = client.map(_make_partition, keep, spec=spec, pure=False)
            client.gather(client.map(_second_ok, parts, pure=False))  # errors surface here
        finally:
            # the rows' arrays: released once nothing refers to them (not cancelled, which
            # could reach the partitions built from them)
            keep.clear()
            futs.clear()
        return DaskPartitions(client, parts)

    def glmm_discard(self, handle: Any) -> None:
        if handle[0] == "local":
            handle[1][0].cleanup()
        else:
            handle[2].clear()


def _second_ok(part: Any) -> bool:
    return True


def _merge(a: Any, b: Any) -> Any:
    return a.merge(b)


def _cell_stats(design: ChunkedDesign, df: Any) -> CellStats:
    """One partition's cell moments (a task of the accumulation pass)."""
    st = CellStats(design.n_cells, design.dim, design.xcols)
    st.add(*design.chunk_arrays(df, "a Dask partition"))
    return st
