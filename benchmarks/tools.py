"""One adapter per tool: how each package fits a benchmark case.

An adapter is ``setup(case, df) -> (fit, describe)``. ``setup`` does the imports and any
reshaping the tool needs (a derived column, a formula in its own dialect); none of that is
timed. ``fit()`` is the timed call: from the data frame to a fitted model, the way a user
calls the package. ``describe(result)`` returns the log-likelihood on lme4's scale (the REML
log-likelihood for REML fits) and a note ("not converged", or ""); it is not timed either.

An adapter raises ``NotApplicable`` when the tool cannot fit the model (the cell reads
``n/a: reason``); any other exception becomes ``error: ...`` in the table.
"""

from __future__ import annotations

import importlib.metadata
import re
from collections.abc import Callable

import numpy as np
import pandas as pd

from cases import Case


class NotApplicable(Exception):
    """The tool cannot fit this model (or is not installed); the reason goes in the cell."""


FitFns = tuple[Callable[[], object], Callable[[object], tuple[float, str]]]

_CBIND = re.compile(r"^\s*cbind\(\s*(\w+)\s*,\s*(.+?)\)\s*~\s*(.+)$")
_BAR = re.compile(r"\(([^()|]+)\|\s*(\w+)\s*\)")


def version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _split_cbind(formula: str) -> tuple[str, str, str] | None:
    """``cbind(s, f_expr) ~ rhs`` -> (s, f_expr, rhs), None for any other response."""
    m = _CBIND.match(formula)
    return None if m is None else (m.group(1), m.group(2).strip(), m.group(3).strip())


def _note(converged) -> str:
    return "" if converged is None or bool(converged) else "not converged"


def _import(module: str):
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise NotApplicable(f"cannot import {module} ({exc})") from exc


# --------------------------------------------------------------------------- ours


def _describe_ours(fit) -> tuple[float, str]:
    """Our fit object is young: accept the spellings DESIGN.md allows."""
    for name in ("loglik", "logLik"):
        value = getattr(fit, name, None)
        if value is not None:
            loglik = float(value() if callable(value) else value)
            break
    else:
        loglik = float(fit.to_dict()["logLik"])
    return loglik, _note(getattr(fit, "converged", None))


def setup_ours(case: Case, df: pd.DataFrame) -> FitFns:
    ml = _import("multilevel")
    fn_name = "glmer" if case.is_glmm else "lmer"
    fn = getattr(ml, fn_name, None)
    if fn is None:
        raise NotApplicable(f"multilevel has no {fn_name}() yet")
    if case.is_glmm:
        return (lambda: fn(case.formula, data=df, family=case.family)), _describe_ours
    return (lambda: fn(case.formula, data=df, reml=True)), _describe_ours


# --------------------------------------------------------------------------- glmm


def setup_glmm(case: Case, df: pd.DataFrame) -> FitFns:
    """``glmm.fit(data, formula, family, reml=, satterthwaite=False)``; ``Fit.loglik``,
    ``Fit.converged``.

    glmm's ``cbind()`` takes two column names, so the failures column is derived here.
    Satterthwaite df (on by default for LMMs) are switched off: lme4's fit computes none.
    """
    glmm = _import("glmm")
    formula = case.formula
    parts = _split_cbind(formula)
    if parts is not None:
        succ, fail_expr, rhs = parts
        df = df.assign(failures=df.eval(fail_expr))
        formula = f"cbind({succ}, failures) ~ {rhs}"
    reml = None if case.is_glmm else True

    def fit():
        return glmm.fit(df, formula, case.family, reml=reml, satterthwaite=False)

    return fit, lambda r: (float(r.loglik), _note(r.converged))


# --------------------------------------------------------------------------- mixedlm


def setup_mixedlm(case: Case, df: pd.DataFrame) -> FitFns:
    """``mixedlm.lmer(formula, data, REML=True)`` / ``mixedlm.glmer(formula, data,
    family=mixedlm.families.Binomial())``; ``result.logLik()``.

    mixedlm writes powers as ``I(x**2)`` and a binomial count response as
    ``successes / trials`` (it has no ``cbind()``), so both are rewritten here.
    """
    mlm = _import("mixedlm")
    formula = re.sub(r"I\(([^()]*)\)", lambda m: "I(" + m.group(1).replace("^", "**") + ")",
                     case.formula)
    parts = _split_cbind(formula)
    if parts is not None:
        succ, fail_expr, rhs = parts
        df = df.assign(trials=df[succ] + df.eval(fail_expr))
        formula = f"{succ} / trials ~ {rhs}"
    if case.is_glmm:
        family = mlm.families.Binomial()
        glmer = mlm.glmer  # resolve the lazy export outside the timed call

        def fit():
            return glmer(formula, df, family=family)
    else:
        lmer = mlm.lmer

        def fit():
            return lmer(formula, df, REML=True)

    return fit, lambda r: (float(r.logLik()), _note(getattr(r, "converged", None)))


# --------------------------------------------------------------------------- statsmodels

# statsmodels builds the variance-component design of each group as a dense matrix; with all
# rows in one group (crossed factors) that is n x (total levels) doubles. Past this size the
# fit cannot finish in any useful time on the 2-core benchmark machine.
_SM_MAX_DENSE_BYTES = 1e9


def _statsmodels_spec(case: Case, df: pd.DataFrame) -> tuple[str, dict]:
    """lme4 formula -> (fixed formula, keyword arguments of ``smf.mixedlm``).

    One random term ``(expr | g)``: ``groups=g, re_formula="~expr"``. Several scalar
    ``(1 | g)`` terms: statsmodels has one grouping factor plus variance components inside
    it, so a factor whose levels each sit inside one level of another factor is nested in it
    (``groups`` = the outer factor, ``vc_formula`` = the inner one); truly crossed factors go
    into a single all-rows group as variance components.
    """
    bars = _BAR.findall(case.formula)
    fixed = _BAR.sub("", case.formula)
    fixed = re.sub(r"\+\s*(?=\+|$)", "", fixed).strip().rstrip("+").strip()
    if len(bars) == 1:
        expr, group = (s.strip() for s in bars[0])
        terms = [t.strip() for t in expr.split("+") if t.strip() not in ("1", "")]
        return fixed, {"groups": group, "re_formula": "~" + " + ".join(terms) if terms else "1"}
    if any(expr.strip() != "1" for expr, _ in bars):
        raise NotApplicable("several random terms with slopes")
    factors = [g for _, g in bars]
    outer = next((o for o in factors if all(
        f == o or df.groupby(f, observed=True)[o].nunique().max() == 1 for f in factors)), None)
    inner = [f for f in factors if f != outer]
    if outer is None:
        levels = sum(df[f].nunique() for f in factors)
        size = len(df) * levels * 8
        if size > _SM_MAX_DENSE_BYTES:
            raise NotApplicable(f"crossed factors need a dense {len(df)} x {levels} "
                                f"variance-component design ({size / 1e9:.1f} GB)")
        outer, inner = "_one_group", factors
    return fixed, {"groups": outer, "re_formula": "1",
                   "vc_formula": {f: f"0 + C({f})" for f in inner}}


def setup_statsmodels(case: Case, df: pd.DataFrame) -> FitFns:
    """``smf.mixedlm(fixed, data, groups=, re_formula=, vc_formula=).fit(reml=True)``;
    ``result.llf`` (statsmodels' REML log-likelihood, on lme4's scale), ``result.converged``.

    statsmodels' GLMMs (``BinomialBayesMixedGLM``) are Bayesian (variational Bayes or the
    posterior mode under priors on the variances), not Laplace maximum likelihood, so the
    GLMM cases are n/a.
    """
    if case.is_glmm:
        raise NotApplicable("no Laplace ML GLMM in statsmodels")
    smf = _import("statsmodels.formula.api")
    fixed, kwargs = _statsmodels_spec(case, df)
    if kwargs["groups"] == "_one_group":
        df = df.assign(_one_group=np.zeros(len(df), dtype=np.int8))
    # patsy expands ``C(f)`` to every category of a pandas categorical, in every group: a
    # nested factor then costs (rows in the group) x (all levels) per group (Chem97: 7 GB and
    # > 10 min). Plain integer codes give each group only the levels it has.
    df = df.assign(**{f: df[f].cat.codes for f in kwargs.get("vc_formula", {})})

    def fit():
        return smf.mixedlm(fixed, df, **kwargs).fit(reml=True)

    return fit, lambda r: (float(r.llf), _note(r.converged))


TOOLS: dict[str, Callable[[Case, pd.DataFrame], FitFns]] = {
    "ours": setup_ours,
    "glmm": setup_glmm,
    "mixedlm": setup_mixedlm,
    "statsmodels": setup_statsmodels,
}
PACKAGES = {"ours": "multilevel", "glmm": "glmm", "mixedlm": "mixedlm",
            "statsmodels": "statsmodels"}
