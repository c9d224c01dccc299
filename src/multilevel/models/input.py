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

from multilevel.covariance import Covariance, Unstructured
from multilevel.design import ModelFrame
from multilevel.engine.input import EngineInput, TermInput

__all__ = ["engine_input", "term_structures"]


def term_structures(frame: ModelFrame) -> list[Covariance]:
    """The covariance structure of each random-effect term of the frame (lme4's ``(x | g)``:
    unstructured; ``||`` was split into scalar terms by the formula layer)."""
    return [Unstructured(rt.n_terms) for rt in frame.reterms]


def engine_input(frame: ModelFrame, y: np.ndarray | None = None) -> EngineInput:
    """The arrays of ``frame`` for an engine (``y`` replaces the response if given)."""
    factors: dict[str, int] = {}
    terms = tuple(
        TermInput(refs=np.ascontiguousarray(rt.refs, dtype=np.uint32), Z=np.asarray(rt.Z, dtype=float),
                  n_levels=rt.n_levels, factor=factors.setdefault(rt.group, len(factors)), structure=cov)
        for rt, cov in zip(frame.reterms, term_structures(frame)))
    names = list(frame.fixef_names)
    return EngineInput(
        y=np.asarray(frame.y if y is None else y, dtype=float),
        X=np.asarray(frame.X, dtype=float),
        terms=terms,
        weights=frame.weights,
        offset=frame.offset,
        intercept=names.index("(Intercept)") if "(Intercept)" in names else None,
    )
