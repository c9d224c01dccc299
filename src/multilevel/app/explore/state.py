"""The explorer's state: from a data frame and an lme4 formula to the JSON of every view.

``model_state(data, formula)`` fits the model with :func:`multilevel.lmer` and returns plain
JSON values: the summary as lme4 prints it, fixed effects and standard errors, variance
components and ICC, the caterpillar data (conditional modes with intervals), the pooling
comparison and shrinkage data when the model has one grouping factor, and the equivalent
Python and R code. Nothing here raises for bad input: a formula that does not parse, a
column that does not exist or a model that cannot be fitted gives ``{"ok": False, "error":
..., "position": ...}`` (the library's message, with the caret position of a formula
error), so the page shows the error instead of a stack trace.

The plots' numbers are computed from the fit's arrays (:mod:`multilevel.toolkit.pooling_arrays`,
:mod:`multilevel.app.explore.payload`: the numbers of ``pooling()``, ``pooling_data``,
``shrinkage_data`` and ``caterpillar_data``, rounded to 6 significant digits), falling back
to ``pooling()`` itself for designs that path does not cover.

Example
-------
>>> import multilevel as ml
>>> s = model_state(ml.datasets.load("sleepstudy"), "Reaction ~ Days + (Days | Subject)")
>>> s["ok"], round(s["fit"]["loglik"], 3), s["pooling"]["meta"]["group"]
(True, -871.814, 'Subject')
>>> model_state(ml.datasets.load("sleepstudy"), "Reaction ~ Days + (Days | Subject")["ok"]
False
"""
from __future__ import annotations

import threading
import warnings
from collections import OrderedDict
from typing import Any

import pandas as pd

from multilevel._blas import single_threaded
from multilevel.errors import FormulaError, MultilevelError

__all__ = ["model_state", "code_snippets", "StateCache"]


def _error(e: MultilevelError) -> dict[str, Any]:
    out: dict[str, Any] = {"ok": False, "error": str(e), "kind": type(e).__name__,
                           "position": None}
    if isinstance(e, FormulaError):
        out["position"] = e.position
    return out


def code_snippets(formula: str, data_name: str, reml: bool = True) -> dict[str, str]:
    """The current model as Python (multilevel) and R (lme4) code.

    >>> code_snippets("y ~ x + (1 | g)", "d", reml=False)["r"]
    'library(lme4)\\nfit <- lmer(y ~ x + (1 | g), data = d, REML = FALSE)\\nsummary(fit)'
    """
    py_reml = "" if reml else ", reml=False"
    r_reml = "" if reml else ", REML = FALSE"
    return {
        "python": (f"import multilevel as ml\n{data_name} = ml.datasets.load({data_name!r})\n"
                   f"fit = ml.lmer({formula!r}, {data_name}{py_reml})\nprint(fit)"),
        "r": f"library(lme4)\nfit <- lmer({formula}, data = {data_name}{r_reml})\nsummary(fit)",
    }


class StateCache:
    """The last few models' fitted states, so that a change of the pooling view alone (which
    groups it shows) redraws without refitting. Keyed by the data frame's identity (the
    entry keeps the frame, so the identity cannot be reused while it is cached), the formula,
    REML and the data's name; thread-safe (the server answers from a thread pool)."""

    def __init__(self, maxsize: int = 8):
        self.maxsize = maxsize
        self._items: OrderedDict[tuple, tuple[Any, dict[str, Any], Any]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, data: Any, key: tuple) -> tuple[dict[str, Any], Any] | None:
        with self._lock:
            hit = self._items.get(key)
            if hit is None or hit[0] is not data:
                return None
            self._items.move_to_end(key)
            return hit[1], hit[2]

    def put(self, data: Any, key: tuple, base: dict[str, Any], pooling: Any) -> None:
        with self._lock:
            self._items[key] = (data, base, pooling)
            while len(self._items) > self.maxsize:
                self._items.popitem(last=False)


def model_state(data: pd.DataFrame, formula: str, *, reml: bool = True, groups: Any = 8,
                data_name: str = "data", cache: StateCache | None = None) -> dict[str, Any]:
    """Every view's numbers for one model, as plain JSON values (see the module docstring).

    groups: which groups the pooling view shows (a list of levels, or how many, spread
    from the smallest to the largest group).
    cache: a :class:`StateCache`: the same data, formula and REML setting again (another
    choice of groups) reuse the fit instead of refitting.
    """
    # one BLAS thread: every step here is small, and on a busy machine a second OpenBLAS
    # thread waiting for a core made a 400 x 40 product take 20 ms instead of 0.04
    with single_threaded():
        key = (id(data), formula, bool(reml), data_name)
        hit = cache.get(data, key) if cache is not None else None
        if hit is None:
            hit = _fitted_state(data, formula, reml=reml, data_name=data_name)
            if cache is not None and hit[0].get("ok"):
                cache.put(data, key, *hit)
        base, pooling = hit
        return _with_pooling_view(base, pooling, groups)


def _with_pooling_view(base: dict[str, Any], pooling: Any, groups: Any) -> dict[str, Any]:
    """The state with the pooling view of ``groups`` (a new dict; ``base`` is not changed).
    ``pooling``: the :class:`~multilevel.toolkit.pooling_arrays.PoolingArrays` or None."""
    from multilevel.app.explore.payload import pooling_payload

    if not base.get("ok"):
        return base
    state = dict(base)
    state["notes"] = list(base["notes"])
    state["pooling"] = None
    if pooling is not None:
        try:
            state["pooling"] = pooling_payload(pooling, groups=groups)
        except MultilevelError as e:
            state["notes"].append(f"pooling: {str(e).splitlines()[0]}")
    return state


def _pooling_arrays(fit: Any, formula: str, data: pd.DataFrame, reml: bool) -> Any:
    """The pooling comparison as arrays: from the fit's arrays where that path applies
    (:func:`~multilevel.toolkit.pooling_arrays.pooling_arrays`), else from
    :func:`multilevel.pooling` (which raises for models it cannot compare)."""
    import multilevel as ml
    from multilevel.app.explore.payload import arrays_from_pooling
    from multilevel.toolkit.pooling_arrays import pooling_arrays

    # partial pooling is the REML fit: reuse it, or fit it (an ML model) once
    reml_fit = fit if reml else ml.lmer(formula, data, reml=True)
    pa = pooling_arrays(reml_fit, data)
    if pa is None:
        pa = arrays_from_pooling(ml.pooling(formula, data, fit=reml_fit))
    return pa


def _fitted_state(data: pd.DataFrame, formula: str, *, reml: bool,
                  data_name: str) -> tuple[dict[str, Any], Any]:
    """(every view but the pooling lines, as JSON values; the PoolingArrays or None)."""
    import multilevel as ml
    from multilevel.app.explore.payload import caterpillar_payload, shrinkage_payload
    from multilevel.results.export import jsonable

    with warnings.catch_warnings():
        # the fit's warnings are reported in the state (and the summary), not issued
        warnings.simplefilter("ignore")
        try:
            fit = ml.lmer(formula, data, reml=reml)
        except MultilevelError as e:
            return _error(e), None
        vc = [{"group": b.group, "terms": list(b.terms), "sd": b.sd_values.tolist(),
               "corr": b.corr.tolist()} for b in fit.varcorr]
        state: dict[str, Any] = {
            "ok": True,
            "formula": formula,
            "summary": str(fit.summary()),
            "fit": {"loglik": fit.loglik, "aic": fit.aic, "bic": fit.bic, "reml": reml,
                    "nobs": int(fit.nobs), "ngroups": dict(fit.ngroups),
                    "fixef": fit.fixef.to_dict(), "se": fit.se.to_dict(),
                    "sigma": fit.sigma, "varcorr": vc, "singular": bool(fit.is_singular),
                    "warnings": [str(w) for w in fit.warnings]},
            "code": code_snippets(formula, data_name, reml),
            "notes": [],
        }
        try:
            state["icc"] = ml.icc(fit).to_dict()
        except MultilevelError as e:
            state["icc"] = None
            state["notes"].append(f"ICC: {e}")
        state = jsonable(state)
        # (the plots' payloads are plain JSON values already)
        state["caterpillar"] = caterpillar_payload(fit)
        state["shrinkage"] = None
        pa = None
        if len({rt.group for rt in fit.frame.reterms}) == 1:
            try:
                pa = _pooling_arrays(fit, formula, data, reml)
                state["shrinkage"] = {c: shrinkage_payload(pa, c) for c in pa.coef_names}
                state["notes"] += list(pa.notes)
                if not reml:  # say so rather than show ML numbers beside REML lines
                    state["notes"].append("the pooling and shrinkage views use the REML fit "
                                          "(ml.pooling has no ML option)")
            except MultilevelError as e:
                pa = None
                state["notes"].append(f"pooling: {str(e).splitlines()[0]}")
        else:
            state["notes"].append("pooling views need a model with one grouping factor")
    return state, pa
