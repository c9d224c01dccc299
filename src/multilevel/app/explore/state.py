"""The explorer's state: from a data frame and an lme4 formula to the JSON of every view.

``model_state(data, formula)`` fits the model with :func:`multilevel.lmer` and returns plain
JSON values: the summary as lme4 prints it, fixed effects and standard errors, variance
components and ICC, the caterpillar data (conditional modes with intervals), the pooling
comparison and shrinkage data when the model has one grouping factor, and the equivalent
Python and R code. Nothing here raises for bad input: a formula that does not parse, a
column that does not exist or a model that cannot be fitted gives ``{"ok": False, "error":
..., "position": ...}`` (the library's message, with the caret position of a formula
error), so the page shows the error instead of a stack trace.

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

import warnings
from typing import Any

import pandas as pd

from multilevel._blas import single_threaded
from multilevel.errors import FormulaError, MultilevelError

__all__ = ["model_state", "code_snippets"]


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


def model_state(data: pd.DataFrame, formula: str, *, reml: bool = True, groups: Any = 8,
                data_name: str = "data") -> dict[str, Any]:
    """Every view's numbers for one model, as plain JSON values (see the module docstring).

    groups: which groups the pooling view shows (a list of levels, or how many, spread
    from the smallest to the largest group).
    """
    # one BLAS thread: every step here is small, and on a busy machine a second OpenBLAS
    # thread waiting for a core made a 400 x 40 product take 20 ms instead of 0.04
    with single_threaded():
        return _model_state(data, formula, reml=reml, groups=groups, data_name=data_name)


def _model_state(data: pd.DataFrame, formula: str, *, reml: bool, groups: Any,
                 data_name: str) -> dict[str, Any]:
    import multilevel as ml
    from multilevel.report.plotdata import caterpillar_data, pooling_data, shrinkage_data
    from multilevel.results.export import jsonable

    with warnings.catch_warnings():
        # the fit's warnings are reported in the state (and the summary), not issued
        warnings.simplefilter("ignore")
        try:
            fit = ml.lmer(formula, data, reml=reml)
        except MultilevelError as e:
            return _error(e)
        vc = [{"group": b.group, "terms": list(b.terms), "sd": b.sd.tolist(),
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
        state["caterpillar"] = caterpillar_data(fit).to_dict()
        state["pooling"] = state["shrinkage"] = None
        if len({rt.group for rt in fit.frame.reterms}) == 1:
            try:
                # the REML fit is the partial pooling: reuse it rather than refit
                p = ml.pooling(formula, data, fit=fit if reml else None)
                state["pooling"] = pooling_data(p, groups=groups).to_dict()
                state["shrinkage"] = {c: shrinkage_data(p, c).to_dict() for c in p.coef_names}
                state["notes"] += list(p.notes)
                if not reml:  # say so rather than show ML numbers beside REML lines
                    state["notes"].append("the pooling and shrinkage views use the REML fit "
                                          "(ml.pooling has no ML option)")
            except MultilevelError as e:
                state["notes"].append(f"pooling: {str(e).splitlines()[0]}")
        else:
            state["notes"].append("pooling views need a model with one grouping factor")
    return jsonable(state)
