"""Likelihood-ratio comparison of nested models: lme4's ``anova(m0, m1, ...)``.

Definitions (lme4 1.1-31, ``anova.merMod``):

* every model's log-likelihood, number of parameters (``npar`` = logLik df), AIC, BIC and
  deviance (= -2 logLik) are listed, models sorted by ``npar`` (ties keep the given order);
* ``Chisq`` = 2 * max(0, difference in logLik to the previous row), ``Df`` = difference in
  ``npar``, ``Pr(>Chisq)`` its upper chi-square tail (NaN when Df = 0);
* ``refit=True`` (default): linear mixed models fitted by REML are first refitted by maximum
  likelihood (REML likelihoods of models with different fixed effects are not comparable);
  the table's ``attrs["note"]`` says so. ``refit=False`` compares the fits as they are, so
  for REML fits ``logLik`` is the REML log-likelihood and ``deviance`` the REML criterion.

Works for any fit object with ``loglik``, ``npar``, ``nobs``, ``formula`` (and ``reml``), so
GLMM fits (``glmer``) can be compared too; all models must be fitted to the same rows and
the same response.
"""
from __future__ import annotations

import copy
import math
import warnings
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import pandas as pd
# scipy.special's chi-squared tail, not scipy.stats.chi2 (the same function, 0.4 s less to import)
from scipy import special

from multilevel.errors import MultilevelError, RemlComparisonWarning
from multilevel.inference._common import is_lmm, ml_state
from multilevel.results.methods import AnovaMethods

if TYPE_CHECKING:
    from multilevel.results import AnyFit

__all__ = ["anova", "AnovaTable", "format_anova"]

REFIT_NOTE = "refitting model(s) with ML (instead of REML)"


class AnovaTable(AnovaMethods, pd.DataFrame):
    """The table of :func:`anova`: a :class:`pandas.DataFrame` (columns, ``.loc``, arithmetic
    and ``attrs`` as usual; derived frames are plain DataFrames) that prints as R prints
    lme4's ``anova(m0, m1)``: the heading (refit message, ``Data:``, ``Models:``), every
    column in R's number formats, stars and the ``Signif. codes`` legend. ``to_frame()``
    gives the plain DataFrame."""

    @property
    def _constructor(self):
        # operations on the table (slices, arithmetic, copies) give plain DataFrames, whose
        # printing shows what they hold rather than an anova layout with missing columns
        return pd.DataFrame

    def copy(self, deep: bool = True) -> "AnovaTable":
        """A copy that is still an :class:`AnovaTable` (``copy.deepcopy`` too)."""
        out = AnovaTable(pd.DataFrame.copy(self, deep=deep))
        out.attrs = copy.deepcopy(dict(self.attrs))
        return out


def _response(fit: AnyFit) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None]:
    """(rows used, response, prior weights) of a fit, as far as the object tells."""
    frame = getattr(fit, "frame", None)
    if frame is not None and getattr(frame, "out_of_core", False):
        # data read in chunks: the rows are not in memory; their summary (number of rows,
        # sum and sum of squares of the response) stands for them
        return None, np.asarray(frame.fingerprint, dtype=float), None
    if frame is not None:
        rows = getattr(frame, "rows", None)
        rows = None if rows is None or len(rows) == 0 else np.asarray(rows)
        return rows, np.asarray(frame.y, dtype=float), frame.weights
    y = getattr(fit, "y", None)
    if callable(y):
        y = y()
    return None, None if y is None else np.asarray(y, dtype=float), None


def _check_same_data(fits: Sequence[Any], names: Sequence[str]) -> None:
    nobs = [int(f.nobs) for f in fits]
    if len(set(nobs)) > 1:
        desc = ", ".join(f"{n}: {k}" for n, k in zip(names, nobs))
        raise MultilevelError(f"models were not all fitted to the same number of observations "
                              f"({desc}); a likelihood-ratio test needs the same data")
    ref_rows, ref_y, ref_w = _response(fits[0])
    for name, f in zip(names[1:], fits[1:]):
        rows, y, w = _response(f)
        if ref_rows is not None and rows is not None and not np.array_equal(ref_rows, rows):
            raise MultilevelError(f"model {name} was fitted to other rows of the data than "
                                  f"{names[0]} (different missing values?); refit both on the "
                                  f"same complete rows")
        if ref_y is not None and y is not None and (y.shape != ref_y.shape or not np.allclose(
                y, ref_y, rtol=1e-12, atol=0.0, equal_nan=True)):
            raise MultilevelError(f"model {name} has another response than {names[0]}; "
                                  f"likelihoods of different responses cannot be compared")
        if (ref_w is None) != (w is None) or (w is not None and not np.allclose(w, ref_w)):
            if is_lmm(f):
                continue  # different weights give different models of the same data
            raise MultilevelError(f"model {name} has other prior weights (binomial trials) "
                                  f"than {names[0]}; the responses differ")


def anova(*fits: AnyFit, refit: bool = True, names: Sequence[str] | None = None) -> pd.DataFrame:
    """Likelihood-ratio tests of nested mixed models (lme4's ``anova(m0, m1, ...)``).

    Parameters
    ----------
    *fits : two or more fitted models (``lmer``/``glmer`` results) of the same data.
    refit : bool
        Refit REML fits by ML first (default, as lme4). With False REML fits are compared
        as they are (only meaningful for models with the same fixed effects).
    names : model names for the index (default ``m0``, ``m1``, ... in the order given).

    Returns
    -------
    :class:`AnovaTable`, a pandas DataFrame indexed by model name, sorted by ``npar``, with
    columns ``npar``, ``AIC``, ``BIC``, ``logLik``, ``deviance``, ``Chisq``, ``Df``,
    ``Pr(>Chisq)``; ``print()`` shows it in R's layout (``.to_frame()``: a plain DataFrame).
    ``attrs["note"]`` tells whether models were refitted by ML; ``attrs["formulas"]`` maps
    names to formulas; ``attrs["data_name"]`` is the data's name when the fits know it.

    Examples
    --------
    >>> import multilevel as ml
    >>> d = ml.datasets.load("sleepstudy")
    >>> m0 = ml.lmer("Reaction ~ Days + (1 | Subject)", d)
    >>> m1 = ml.lmer("Reaction ~ Days + (Days | Subject)", d)
    >>> tab = ml.anova(m0, m1)
    >>> tab.attrs["note"]
    'refitting model(s) with ML (instead of REML)'
    >>> round(float(tab.loc["m1", "Chisq"]), 3), int(tab.loc["m1", "Df"])
    (42.139, 2)
    """
    if len(fits) == 1 and isinstance(fits[0], (list, tuple)):
        fits = tuple(fits[0])
    if len(fits) < 2:
        raise MultilevelError("anova() compares two or more models; for tests of the terms of "
                              "one model use multilevel.inference.anova_terms(fit)")
    if names is None:
        names = [f"m{i}" for i in range(len(fits))]
    names = [str(n) for n in names]
    if len(names) != len(fits):
        raise MultilevelError(f"{len(names)} names for {len(fits)} models")
    if len(set(names)) != len(names):
        raise MultilevelError("model names must be unique")
    for n, f in zip(names, fits):
        if not all(hasattr(f, a) for a in ("loglik", "npar", "nobs")):
            raise MultilevelError(f"{n} is not a fitted model (needs loglik, npar and nobs)")
    _check_same_data(fits, names)

    reml = [bool(getattr(f, "reml", False)) for f in fits]
    note = ""
    loglik = []
    for f, r in zip(fits, reml):
        if refit and r and is_lmm(f):
            loglik.append(ml_state(f).loglik)
        else:
            loglik.append(float(f.loglik))
    if refit and any(r and is_lmm(f) for f, r in zip(fits, reml)):
        note = REFIT_NOTE
    elif not refit and any(reml) and not all(reml):
        warnings.warn("some models fit with REML = TRUE, some not", RemlComparisonWarning, stacklevel=2)
    npar = [int(f.npar) for f in fits]
    nobs = int(fits[0].nobs)
    order = sorted(range(len(fits)), key=lambda i: npar[i])  # stable, as R's order()
    rows = []
    prev = None
    for i in order:
        ll, k = loglik[i], npar[i]
        row = {"npar": k, "AIC": -2 * ll + 2 * k, "BIC": -2 * ll + math.log(nobs) * k,
               "logLik": ll, "deviance": -2 * ll, "Chisq": np.nan, "Df": np.nan,
               "Pr(>Chisq)": np.nan}
        if prev is not None:
            chisq = 2.0 * max(0.0, ll - prev[0])
            df = k - prev[1]
            row["Chisq"] = chisq
            row["Df"] = df
            row["Pr(>Chisq)"] = float(special.chdtrc(df, chisq)) if df != 0 else np.nan
        rows.append(row)
        prev = (ll, k)
    table = AnovaTable(pd.DataFrame(rows, index=pd.Index([names[i] for i in order], name="model")))
    table.attrs["note"] = note
    table.attrs["formulas"] = {names[i]: getattr(fits[i], "formula", "") for i in order}
    data_names = {getattr(f, "data_name", None) for f in fits}
    table.attrs["data_name"] = data_names.pop() if len(data_names) == 1 else None
    return table


def format_anova(table: pd.DataFrame, digits: int = 5) -> str:
    """The table as text in R's layout (``print.anova``: the heading with the models'
    formulas, then every column in R's formats, stars and their legend): what
    ``print(ml.anova(m0, m1))`` shows, for a table that is a plain DataFrame too."""
    from multilevel.results.methods import _impl

    return _impl("anova_text")(table, digits)
