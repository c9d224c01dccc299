"""From a model frame to the engine's input: where names end and arrays begin.

Layer: models. The model frame (design) knows the column names, factor levels and formula;
the engine must not. ``engine_input`` keeps the arrays, numbers the grouping factors, gives
each random-effect term its covariance structure and finds the intercept column.

>>> import multilevel as ml
>>> from multilevel.design import build_model_frame
>>> frame = build_model_frame("Reaction ~ Days + (Days | Subject)", ml.datasets.load("sleepstudy"))
>>> inp = engine_input(frame)
>>> inp.nobs, inp.intercept, inp.structures
(180, 0, [Unstructured(2)])
"""
from __future__ import annotations

import numpy as np

from multilevel.covariance import Covariance, frame_structures
from multilevel.design import ModelFrame
from multilevel.engine.input import EngineInput, TermInput
from multilevel.errors import ModelSpecError

__all__ = ["engine_input", "term_structures", "check_cov_params"]


def _check_ar1(rt) -> None:
    """glmmTMB's rule for ``ar1()``, with the term named."""
    label = rt.label or f"... | {rt.group}"
    # the columns must be the indicators of the levels of one factor (the times), without an
    # intercept: ar1(0 + t | g)
    spec = rt.spec
    plan = getattr(spec, "plan", None)
    ok = plan is not None and not plan.intercept and len(plan.terms) == 1 and len(plan.terms[0]) == 1
    if ok:
        key, coding = plan.terms[0][0]
        var = spec.scope.vars.get(key)
        ok = var is not None and var.is_factor and coding == 2
    if not ok:
        raise ModelSpecError(f"ar1() needs the levels of one factor as its columns, without an "
                             f"intercept, as in ar1(0 + factor(time) | g): the factor's levels are "
                             f"the consecutive times; ({label}) has columns {', '.join(rt.terms)}")


def term_structures(frame: ModelFrame) -> list[Covariance]:
    """The covariance structure of each random-effect term of the frame: lme4's ``(x | g)``
    is unstructured (``||`` was split into scalar terms by the formula layer); ``diag()``,
    ``cs()`` and ``ar1()`` give :class:`~multilevel.covariance.Diagonal`,
    :class:`~multilevel.covariance.CompoundSymmetry` and :class:`~multilevel.covariance.AR1`.
    Raises :class:`~multilevel.errors.ModelSpecError` naming the term when a structure does
    not fit its columns (``cs()`` with one column, ``ar1()`` on anything but ``0 + factor``)."""
    rts = frame.reterms
    out = []
    for rt in rts:
        code = getattr(rt, "structure", "us") or "us"
        if code == "ar1":
            _check_ar1(rt)
        if code in ("cs", "ar1") and rt.n_terms < 2:
            raise ModelSpecError(f"{code}() needs a term with at least two columns (one correlation "
                                 f"between them); ({rt.label or rt.group}) has {rt.n_terms}: "
                                 f"{', '.join(rt.terms)}")
        out.append(frame_structures([rt])[0])
    return out


def check_cov_params(frame: ModelFrame, structures: list[Covariance], limit: int) -> None:
    """Refuse more covariance parameters than ``limit`` (control ``max_cov_params``) before
    the optimiser allocates its model of them: ``(0 + factor(k) | g)`` with 150 levels of k
    has 11,325, which BOBYQA cannot search (its work and memory grow with their square)."""
    counts = [cov.npar for cov in structures]
    total = sum(counts)
    if total > limit:
        worst = max(range(len(counts)), key=counts.__getitem__)
        rt = frame.reterms[worst]
        raise ModelSpecError(f"the model has {total:,} covariance parameters, above the limit of "
                             f"{limit:,} (control max_cov_params): ({rt.label or rt.group}) alone "
                             f"has {counts[worst]:,} ({rt.n_terms} correlated columns); "
                             f"uncorrelated terms, diag(... | g), or cs(... | g) need fewer")


def _as_uint32(refs: np.ndarray) -> np.ndarray:
    """The level codes as the engine's uint32: a view of the frame's int32 codes (the same
    bits a cast gives; a fit's codes are >= 0), without a copy as large as a column."""
    refs = np.asarray(refs)
    if refs.dtype == np.int32 and refs.flags.c_contiguous:
        return refs.view(np.uint32)
    return np.ascontiguousarray(refs, dtype=np.uint32)


def engine_input(frame: ModelFrame, y: np.ndarray | None = None,
                 max_cov_params: int | None = None) -> EngineInput:
    """The arrays of ``frame`` for an engine (``y`` replaces the response if given);
    ``max_cov_params``: refuse more covariance parameters (see :func:`check_cov_params`)."""
    factors: dict[str, int] = {}
    structures = term_structures(frame)
    if max_cov_params is not None:
        check_cov_params(frame, structures, max_cov_params)
    terms = tuple(
        TermInput(refs=_as_uint32(rt.refs), Z=np.asarray(rt.Z, dtype=float),
                  n_levels=rt.n_levels, factor=factors.setdefault(rt.group, len(factors)), structure=cov)
        for rt, cov in zip(frame.reterms, structures))
    names = list(frame.fixef_names)
    return EngineInput(
        y=np.asarray(frame.y if y is None else y, dtype=float),
        X=np.asarray(frame.X, dtype=float),
        terms=terms,
        weights=frame.weights,
        offset=frame.offset,
        intercept=names.index("(Intercept)") if "(Intercept)" in names else None,
    )
