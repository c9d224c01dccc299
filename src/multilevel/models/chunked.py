"""lmer on data read in chunks: Parquet / CSV files, Arrow datasets and readers, lazy frames,
DuckDB relations (out of core) and Dask frames (distributed).

Layer: models. The passes over the data are the design layer's
(:class:`~multilevel.design.chunked.ChunkedDesign`): learn the stateful transforms, learn the
levels from a skeleton, then build each chunk's rows; the engine accumulates the cells'
moments (:class:`~multilevel.engine.blocks.CellStats`) and optimises on the blocks they give
(:class:`~multilevel.engine.blocks.BlockLmmProblem`). The fit is an ordinary
:class:`~multilevel.results.lmm.LmmFit`, whose frame keeps no rows
(:class:`~multilevel.design.chunked.ChunkedModelFrame`). How the passes run is a *runner*:
:class:`StreamRunner` folds over Arrow batches in this process, the Dask runner
(``models.dask``) maps over partitions with Dask's tree reduction.

Peak memory: one batch (``batch_size`` rows of the model's columns and their Z, X rows) plus
the cells (one per observed combination of the random-effect terms' levels, each
``(dim + 2) * dim`` doubles with ``dim`` = Z columns + X columns + 1) plus the engine's blocks.
"""
from __future__ import annotations

from typing import Any, Callable, Iterator

import numpy as np
import pandas as pd

from multilevel.control import LmerControl
from multilevel.covariance import is_singular_theta
from multilevel.design.chunked import ChunkedDesign, ChunkedModelFrame, LevelSummary
from multilevel.design.stream import BatchStream, open_stream
from multilevel.engine.blocks import BlockLmmProblem, CellStats
from multilevel.engine.input import EngineInput, TermInput
from multilevel.engine.lmm import fit_theta
from multilevel.errors import DataError, FitError, ModelSpecError, singular_warning
from multilevel.formula._streaming import TransformLearner
from multilevel.models._warn import issue
from multilevel.models.input import check_cov_params, term_structures

__all__ = ["lmer_chunked", "StreamRunner", "fit_from_stats", "chunked_runner", "is_chunked"]

def is_chunked(data: Any) -> bool:
    """Whether ``data`` is read in chunks (files, datasets, readers, lazy frames, Dask)."""
    from multilevel.design.dasksource import is_dask_frame
    from multilevel.design.stream import is_stream_source

    return is_dask_frame(data) or is_stream_source(data)


def chunked_runner(data: Any, batch_size: int | None = None) -> Any:
    """The runner for data read in chunks, or None for in-memory data."""
    if batch_size is None and isinstance(data, (pd.DataFrame, dict)):
        return None  # in memory (the usual case, answered before the imports below)
    from multilevel.design.stream import is_stream_source

    from multilevel.design.dasksource import is_dask_frame

    if is_dask_frame(data):
        from multilevel.models.dask import DaskRunner

        return DaskRunner(data, batch_size)
    if is_stream_source(data):
        return StreamRunner(open_stream(data, batch_size))
    if batch_size is not None:
        raise DataError("batch_size= is for data read in chunks (files, datasets, readers, lazy "
                        "frames); an in-memory frame is fitted whole")
    return None


class StreamRunner:
    """Runs the passes over a :class:`~multilevel.design.stream.BatchStream` in this process,
    one batch in memory at a time."""

    def __init__(self, stream: BatchStream):
        self.stream = stream
        self.source = stream

    def _batches(self, design: ChunkedDesign) -> Iterator[Any]:
        return self.stream.batches(design.columns)

    def _fold(self, design: ChunkedDesign, fn: Callable, total: Any, merge: Callable) -> Any:
        for b in self._batches(design):
            if not getattr(design, "parsed", None):
                design.start(b.frame)
            try:
                part = fn(design, b.frame)
            except DataError as e:
                if str(e).startswith(b.where):
                    raise
                raise DataError(f"{b.describe()}: {e}") from e
            total = merge(total, part)
        return total

    def learn(self, design: ChunkedDesign) -> None:
        """Passes 1 and 2: the transforms' state (if any) and the levels."""
        started = {"transforms": False}

        def first(d: ChunkedDesign, frame):
            # the first pass learns the transforms if the formula has any, else the levels
            if d.needs_transform_pass:
                started["transforms"] = True
                return d.transform_stats(frame)
            return d.level_summary(frame)

        total = self._fold(design, first, None,
                           lambda t, p: p if t is None else t.merge(p))
        if total is None:
            raise DataError(f"{self.stream.what} has no rows")
        if isinstance(total, TransformLearner):
            design.set_transforms(total)
            total = self._fold(design, lambda d, f: d.level_summary(f), LevelSummary(),
                               lambda t, p: t.merge(p))
        design.set_levels(total)

    def accumulate(self, design: ChunkedDesign) -> CellStats:
        """Pass 3: the cells' moments."""
        stats = CellStats(design.n_cells, design.dim, design.xcols)
        for b in self._batches(design):
            cells, V, w = design.chunk_arrays(b.frame, b.describe())
            stats.add(cells, V, w)
        return stats


    # -- GLMMs: the rows partitioned by groups (``models.partitions``) ---------------------
    def glmm_pass(self, design: ChunkedDesign, chunk_fn: Callable, totals_of: Callable,
                  term: int, nlev: int) -> tuple[Any, Any]:
        from multilevel.models.partitions import bucket_pass

        return bucket_pass(self.stream, design, chunk_fn, totals_of, term, nlev)

    def glmm_executor(self, handle: Any, spec: Any) -> Any:
        from multilevel.models.partitions import local_executor

        return local_executor(handle, spec)

    def glmm_discard(self, handle: Any) -> None:
        handle[0].cleanup()


def lmer_chunked(formula: str, data: Any, *, reml: bool, weights: Any, offset: Any,
                 ctrl: LmerControl, contrasts: dict | None, batch_size: int | None = None,
                 runner: Any = None) -> Any:
    """Fit an LMM on data read in chunks (see the module docstring); ``runner`` defaults to
    a :class:`StreamRunner` over ``open_stream(data, batch_size)``."""
    if runner is None:
        runner = StreamRunner(open_stream(data, batch_size))
    names = runner.stream.names if hasattr(runner, "stream") else runner.names
    design = ChunkedDesign(formula, names, weights=weights, offset=offset, family="gaussian",
                           contrasts=contrasts, max_dense_gib=ctrl.max_dense_gib)
    runner.learn(design)
    stats = runner.accumulate(design)
    return fit_from_stats(design, stats, reml=reml, ctrl=ctrl, weights=weights,
                          source=runner.source)


def fit_from_stats(design: ChunkedDesign, stats: CellStats, *, reml: bool, ctrl: LmerControl,
                   weights: Any, source: Any = None) -> Any:
    """The LmmFit of the accumulated cells (lmer's steps after the model frame)."""
    from multilevel.results.lmm import LmmFit

    n = int(stats.nrows)
    if n == 0:
        raise DataError("no rows left after dropping rows with missing values")
    frame: ChunkedModelFrame = design.model_frame(stats.xtx, n, source=source)
    # y without the offset: the response values themselves (the offset may differ by model)
    frame.fingerprint = (float(n), float(stats.sum_y), float(stats.sumsq(np.zeros(design.dim))[-1]))
    keep = design.keep
    p = len(keep)
    if reml and n <= p:
        raise ModelSpecError(f"REML needs more observations than fixed effects: {n} observations "
                             f"and {p} estimable fixed-effect columns; fit by maximum likelihood "
                             f"(reml=False) or with fewer fixed effects")
    if stats.weighted and not stats.W.sum() > 0:
        raise DataError(f"weights are all 0 (column '{weights}'): no row carries information")
    names = list(frame.fixef_names)
    intercept = names.index("(Intercept)") if "(Intercept)" in names else None
    q = sum(design.zdims)
    xc = design.xcols
    shift = np.zeros(design.dim)
    xshift = np.zeros(p)
    yshift = 0.0
    if intercept is not None:
        # the in-memory engine's centring (engine.centring, LmmProblem): X's columns at their
        # (weighted) means, y at its mean; any shift is exact, these keep the digits
        means = stats.means()
        xshift = means[xc][keep].copy()
        xshift[intercept] = 0.0
        yshift = stats.sum_y / n
        shift[q + np.asarray(keep)] = xshift
        shift[-1] = yshift
    cells, R = stats.pseudo_rows(shift)
    cref = design.cell_refs()
    structures = term_structures(frame)
    check_cov_params(frame, structures, ctrl.max_cov_params)
    factors: dict[str, int] = {}
    terms = []
    c0 = 0
    for k, (rt, cov) in enumerate(zip(frame.reterms, structures)):
        s = design.zdims[k]
        terms.append(TermInput(refs=np.ascontiguousarray(cref[k][cells]),
                               Z=np.ascontiguousarray(R[:, c0:c0 + s]), n_levels=rt.n_levels,
                               factor=factors.setdefault(rt.group, len(factors)), structure=cov))
        c0 += s
    X = np.ascontiguousarray(R[:, xc][:, keep])
    inp = EngineInput(y=np.ascontiguousarray(R[:, -1]), X=X, terms=tuple(terms),
                      intercept=intercept)
    problem = BlockLmmProblem(inp, reml, n, stats.sum_logw, yshift, xshift)
    if not np.isfinite(problem.objective(problem.theta0)):
        raise FitError("the fit failed: the mixed-model equations are singular at the start "
                       "(the response may be an exact linear function of the fixed effects, "
                       "which data read in chunks cannot fit)")
    theta, fval, optinfo, warns = fit_theta(problem, ctrl)
    sol = problem.solution(theta)
    ss = float(stats.sumsq(np.where(np.arange(design.dim) == design.dim - 1,
                                    stats.means(), 0.0))[-1]) if intercept is not None \
        else float(stats.sumsq(np.zeros(design.dim))[-1])
    if not (ss > 0 and sol["pwrss"] > 1e-10 * ss):
        raise FitError("the response is (nearly) an exact function of the fixed effects: every "
                       "residual is 0; data read in chunks cannot fit this (fit in memory)")
    if not np.isfinite(sol["objective"]):
        raise FitError("the fit failed: the objective is not finite at the estimate")
    sigma = sol["sigma"]
    is_sing = is_singular_theta(theta, problem.input.structures, ctrl.singular_tol)
    records = list(frame.warnings) + ([singular_warning()] if is_sing else []) + list(warns)
    messages = issue(records, ctrl, stacklevel=3)
    obj = sol["objective"]
    return LmmFit(
        frame=frame, reml=reml, theta=theta, beta=sol["beta"], vcov=sol["vcov"], sigma=sigma,
        b=sol["b"], condvar=None, loglik=-obj / 2.0, deviance_ml=problem.ml_deviance(theta),
        reml_criterion=obj if reml else None, fitted=np.zeros(0), converged=not warns,
        warnings=messages, optinfo={**optinfo, "chunked": {"cells": int(design.n_cells),
                                                           "pseudo_rows": int(len(cells))}},
        weights_name=weights if isinstance(weights, str) else None, problem=problem,
        singular_tol=ctrl.singular_tol)
