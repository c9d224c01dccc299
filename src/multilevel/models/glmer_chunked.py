"""glmer on data read in chunks: out of core (files, datasets, readers, lazy frames) and on Dask.

Layer: models. A GLMM needs a pass over the rows at every evaluation of its criterion (PIRLS
for the conditional modes), so the rows are kept -- in temporary files or in the workers'
memory -- partitioned by the grouping factor every other one nests in (one factor, or
``(1 | a/b)``-style nesting): each partition holds whole groups, PIRLS runs where the rows
are, and each evaluation is one map over the partitions
(:mod:`multilevel.engine.partitioned`). The steps:

1. the design's passes learn the transforms and the levels (``ChunkedDesign``), and tell
   which factor the others nest in; crossed factors are refused (:class:`CrossedGlmmError`);
2. one more pass builds every chunk's rows (Z, X, y, weights, offset, trials), checks the
   response as the family does, sums what the frame needs (X'X for R's rank rule, the column
   means for the engine's centring, sum(w) and sum(w log y) for the dispersion families) and
   puts the rows into partitions: the runner's business -- buckets of temporary Arrow files
   read one after another in this process (:class:`~multilevel.models.chunked.StreamRunner`),
   or a Dask shuffle by the grouping columns whose partitions are persisted on the workers
   (:class:`~multilevel.models.dask.DaskRunner`);
3. ``glmer``'s own stages (``models.glmer._fit_problem``: nAGQ = 0, then Laplace / AGQ,
   Newton or BOBYQA, derivatives, checks) run on the driver against the partitioned problem;
   the partitions are released when the fit is done.

The fit is the same :class:`~multilevel.results.glmm.GlmmFit` as in memory (summary, fixef,
ranef, vcov, varcorr); its frame keeps no rows, so fitted values and residuals are computed
in a pass over the data, and what needs the rows again (profiles, the bootstrap, refits)
asks for the data in memory.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np

from multilevel.control import GlmerControl
from multilevel.design.chunked import ChunkedDesign
from multilevel.engine.input import EngineInput, TermInput
from multilevel.engine.partitioned import PartitionedGlmmProblem, partition_spec
from multilevel.errors import DataError, FitWarning, ModelSpecError
from multilevel.families import Family
from multilevel.models.input import check_cov_params, term_structures

__all__ = ["glmer_chunked", "GlmmTotals", "CrossedGlmmError"]


class CrossedGlmmError(ModelSpecError):
    """A GLMM with crossed random effects was given data read in chunks."""


@dataclass
class GlmmTotals:
    """What the partitioning pass sums over the rows (mergeable, in any order): rows, the
    unweighted X'X (R's rank rule) and column sums (the engine's centring) of every
    fixed-effect column, sum and sum of squares of y (the fit's fingerprint), sum(w) and
    sum(w log y) (the dispersion families' aic), whether some row has more than one binomial
    trial (R's ``any(n > 1)``), the response's warnings (by code)."""

    p: int
    n: int = 0
    xtx: np.ndarray = None  # type: ignore[assignment]
    xsum: np.ndarray = None  # type: ignore[assignment]
    ysum: float = 0.0
    ysq: float = 0.0
    sumw: float = 0.0
    sumwlogy: float = 0.0
    any_nt_gt1: bool = False
    warnings: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.xtx is None:
            self.xtx = np.zeros((self.p, self.p))
        if self.xsum is None:
            self.xsum = np.zeros(self.p)

    @classmethod
    def of(cls, arrays: Mapping[str, Any], dispersion: bool) -> GlmmTotals:
        X = np.asarray(arrays["X"], dtype=float)
        y = np.asarray(arrays["y"], dtype=float)
        t = cls(p=X.shape[1], n=len(y))
        if not len(y):
            return t
        t.xtx = X.T @ X
        t.xsum = np.ones(len(y)) @ X
        t.ysum, t.ysq = float(y.sum()), float(y @ y)
        w = arrays.get("wt")
        w = np.ones(len(y)) if w is None else np.asarray(w, dtype=float)
        t.sumw = float(w.sum())
        if dispersion:
            pos = w > 0
            t.sumwlogy = float(np.sum(w[pos] * np.log(y[pos])))
        nt = arrays.get("nt")
        t.any_nt_gt1 = bool(nt is not None and np.any(np.asarray(nt) > 1.0))
        for rec in arrays.get("warnings") or []:
            t.warnings.setdefault(rec.code, rec)
        return t

    def merge(self, o: GlmmTotals) -> GlmmTotals:
        self.n += o.n
        self.xtx = self.xtx + o.xtx
        self.xsum = self.xsum + o.xsum
        self.ysum += o.ysum
        self.ysq += o.ysq
        self.sumw += o.sumw
        self.sumwlogy += o.sumwlogy
        self.any_nt_gt1 = self.any_nt_gt1 or o.any_nt_gt1
        for k, v in o.warnings.items():
            self.warnings.setdefault(k, v)
        return self


def crossed_message(design: ChunkedDesign) -> str:
    groups = list(dict.fromkeys(rt.group for rt in design.frame0.reterms))
    return (f"a GLMM with crossed random effects ({', '.join(groups)}: no grouping factor that "
            f"the others nest in) needs the data in memory: its conditional modes couple all "
            f"groups, so it cannot be fitted partition by partition from data read in chunks. "
            f"Load the data (e.g. pandas.read_parquet) and call glmer on the frame; nested "
            f"models such as (1 | a) + (1 | a:b) and single grouping factors can be read in "
            f"chunks")


def glmer_chunked(formula: str, data: Any, *, fam: Family, nagq: int, weights: Any, offset: Any,
                  ctrl: GlmerControl, contrasts: dict | None, runner: Any,
                  fit_problem: Callable[..., Any], t_start: float | None = None,
                  theta_start: np.ndarray | None = None, keep_partitions: bool = False) -> Any:
    """Fit a GLMM on data read in chunks (see the module docstring); ``runner`` is a
    :class:`~multilevel.models.chunked.StreamRunner` or a Dask runner; ``fit_problem`` is
    ``models.glmer._fit_problem`` (passed in: ``glmer`` calls this module).
    ``keep_partitions``: leave
    the partitions in place after the fit, so that ``fit._problem`` can still evaluate the
    criterion (tests, benchmarks; ``fit._problem.release()`` frees them)."""
    t_start = time.perf_counter() if t_start is None else t_start
    names = runner.stream.names if hasattr(runner, "stream") else runner.names
    design = ChunkedDesign(formula, names, weights=weights, offset=offset, family=fam.name,
                           contrasts=contrasts, max_dense_gib=ctrl.max_dense_gib)
    runner.learn(design)
    if design.partition_term is None:
        raise CrossedGlmmError(crossed_message(design))
    f0 = design.frame0
    if nagq > 1 and (len(f0.reterms) != 1 or f0.reterms[0].n_terms != 1):
        desc = ", ".join(f"({rt.label})" if rt.label else rt.group for rt in f0.reterms)
        raise ModelSpecError(f"nagq > 1 (adaptive Gauss-Hermite quadrature) is only available for "
                             f"a model with a single scalar random-effect term such as (1 | g); "
                             f"this model has {desc}. Use nagq=1 (Laplace)")
    resp_levels = f0.factor_levels.get(f0.response)
    cbind = bool(design.response.cbind)
    resp_name = f0.response
    dispersion = bool(fam.has_dispersion)

    def chunk_fn(frame: Any, where: str) -> dict:
        arr = design.glmm_arrays(frame, where)
        if len(arr["y"]):
            try:
                arr["warnings"] = fam.check_response(arr["y"], arr["wt"], resp_levels, cbind,
                                                     name=resp_name)
            except DataError as e:
                raise DataError(f"{where}: {e}") from e
        return arr

    def totals_of(arr: Mapping[str, Any]) -> GlmmTotals:
        return GlmmTotals.of(arr, dispersion)

    k0 = design.partition_term
    handle, totals = runner.glmm_pass(design, chunk_fn, totals_of, k0, design.nlev[k0])
    try:
        n = int(totals.n)
        if n == 0:
            raise DataError("no rows left after dropping rows with missing values")
        frame = design.model_frame(totals.xtx, n, source=runner.source)
        frame.fingerprint = (float(n), float(totals.ysum), float(totals.ysq))
        if cbind:  # the frame's weights are the trials (in memory: frame.weights)
            from multilevel.design.chunked import OutOfCore

            frame.weights = OutOfCore("the weights")
        kept = list(design.keep)
        fnames = list(frame.fixef_names)
        intercept = fnames.index("(Intercept)") if "(Intercept)" in fnames else None
        shift = np.zeros(len(kept))
        if intercept is not None:
            # the in-memory engine's centring (engine.centring; unweighted column means)
            shift = totals.xsum[kept] / n
            shift[intercept] = 0.0
        structures = term_structures(frame)
        check_cov_params(frame, structures, ctrl.max_cov_params)
        factors: dict[str, int] = {}
        terms = tuple(TermInput(refs=np.zeros(0, dtype=np.uint32), Z=np.zeros((0, rt.n_terms)),
                                n_levels=rt.n_levels,
                                factor=factors.setdefault(rt.group, len(factors)), structure=cov)
                      for rt, cov in zip(frame.reterms, structures))
        skeleton = EngineInput(y=np.zeros(0), X=np.zeros((0, len(kept))), terms=terms,
                               intercept=intercept)
        spec = partition_spec(skeleton, fam, kept, shift, totals.any_nt_gt1, ctrl.pirls_tol,
                              ctrl.pirls_maxit)
        executor = runner.glmm_executor(handle, spec)
        handle = None
    finally:
        if handle is not None:
            runner.glmm_discard(handle)
    problem = PartitionedGlmmProblem(skeleton, fam, nagq, executor, spec, n, totals.sumw,
                                     totals.sumwlogy)
    resp_warnings: list[FitWarning] = list(totals.warnings.values())
    weights_name = weights if isinstance(weights, str) else None
    try:
        fit = fit_problem(problem, frame, ctrl, resp_warnings, None, weights_name, t_start,
                           theta_start=theta_start, stacklevel=4)
        fit.optinfo["chunked"] = {"partitions": int(getattr(executor, "n_partitions", 0)),
                                  "partitioned_by": "+".join(design.partition_columns),
                                  "resident": bool(getattr(executor, "resident", True))}
    finally:
        if not keep_partitions:
            problem.release()
    return fit

