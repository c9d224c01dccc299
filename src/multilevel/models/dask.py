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

from typing import Any

from multilevel.design.chunked import ChunkedDesign, LevelSummary
from multilevel.design.dasksource import DaskSource
from multilevel.engine.blocks import CellStats
from multilevel.formula._streaming import TransformLearner

__all__ = ["DaskRunner"]


class DaskRunner:
    """The passes of a chunked fit over the partitions of a Dask DataFrame."""

    def __init__(self, ddf: Any):
        self.source = DaskSource(ddf)
        self.names = self.source.names

    def learn(self, design: ChunkedDesign) -> None:
        design.start(self.source.first(design.columns))
        if design.needs_transform_pass:
            learner = self.source.reduce(design.columns, design.transform_stats,
                                         lambda a, b: a.merge(b))
            design.set_transforms(learner if learner is not None else TransformLearner())
        summary = self.source.reduce(design.columns, design.level_summary,
                                     lambda a, b: a.merge(b))
        design.set_levels(summary if summary is not None else LevelSummary())

    def accumulate(self, design: ChunkedDesign) -> CellStats:
        n_cells, dim, xcols = design.n_cells, design.dim, design.xcols

        def chunk(df):
            st = CellStats(n_cells, dim, xcols)
            st.add(*design.chunk_arrays(df, "a Dask partition"))
            return st

        return self.source.reduce(design.columns, chunk, lambda a, b: a.merge(b))
