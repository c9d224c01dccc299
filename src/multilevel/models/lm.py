"""lm: fit a linear model by (weighted) least squares."""
from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from multilevel.design import DataSource, build_fixed_frame, take_rows
from multilevel.models._arguments import r_arguments
from multilevel.errors import DataError
from multilevel.results.lm import LmFit


@r_arguments()
def lm(formula: str, data: Any, weights: Any = None, cluster: str | None = None,
       contrasts: dict | None = None) -> LmFit:
    """Fit a linear model by (weighted) least squares, as R's ``lm()``.

    Parameters
    ----------
    formula : str
        R syntax without random-effects terms: ``"y ~ x * f + factor(g) + center(x, by = g)"``.
    data : pandas or polars DataFrame (or a dict of columns)
    weights : column name or array, optional
        Precision weights, Var(e_i) = sigma² / w_i (rows with weight 0 do not count).
    cluster : column name, optional
        Cluster-robust (CR1, Stata's small-sample correction) standard errors by this column;
        t tests then use G - 1 df. The column must have no missing values in the rows used.
    contrasts : dict, optional
        R's ``contrasts=``: factor of the fixed part -> ``"treatment"``, ``"sum"``,
        ``"helmert"``, ``"poly"``, ``"SAS"`` (R's ``"contr.sum"`` spelling too) or a matrix
        (numpy array or DataFrame) with one row per level, e.g. ``{"sector": "sum"}``.
        Unnamed factors get R's defaults: treatment contrasts, ``contr.poly`` for ordered
        pandas Categoricals (columns ``f.L``, ``f.Q``, ``f.C``, ``f^4``, ...). The contrasts
        used are in ``fit.contrasts`` and ``fit.to_dict()["fixed_contrasts"]``; ``predict``
        re-applies them. A name that is not a factor of the fixed part, an unknown contrast or
        a matrix of the wrong shape raises :class:`~multilevel.errors.ModelSpecError`.

    Returns
    -------
    LmFit

    Examples
    --------
    >>> import multilevel as ml
    >>> fit = ml.lm("Reaction ~ Days", ml.datasets.load("sleepstudy"))
    >>> round(fit.loglik, 3), fit.npar, round(fit.fstatistic["value"], 2)
    (-950.147, 3, 71.46)
    """
    frame = build_fixed_frame(formula, data, weights=weights, contrasts=contrasts)
    _warn(frame)
    codes = None
    if cluster is not None:
        if not isinstance(cluster, str):
            raise DataError("cluster must be the name of a column of data")
        src = DataSource(data)
        col = src.column(cluster)
        c, _labels = col.factor()
        c = take_rows(c, frame.rows)
        if (c < 0).any():
            raise DataError(f"cluster column '{cluster}' has {int((c < 0).sum())} missing value(s) "
                            f"in the rows used; drop those rows first")
        codes = np.asarray(c, dtype=np.int64)
    return LmFit(frame, weights_name=weights if isinstance(weights, str) else None,
                 cluster=cluster, cluster_codes=codes)


def _warn(frame: Any) -> None:
    for rec in frame.warnings:
        # R's lm() is silent about dropped rows but warns, from model.matrix, when the
        # response was on the right-hand side; merged factor levels are our own warning
        if rec.code in ("response_on_rhs", "levels_merged"):
            warnings.warn(rec.message, rec.category, stacklevel=3)


def lm_by_group(formula: str, data: Any, group_key: str, contrasts: dict | None = None) -> LmFit:
    """``lm(formula, data, contrasts=contrasts)`` for a formula with one coefficient per
    group, e.g. ``y ~ 0 + factor(g) + factor(g):x + z``: the same fit (same columns, same
    aliased ones, same numbers up to rounding), computed group by group without forming
    the dense matrix of group dummies (:mod:`multilevel.design.grouped`,
    :mod:`multilevel.results.grouped_ls`). ``group_key`` is the factor's variable as the
    formula writes it (``"factor(g)"``). The fast path of :func:`multilevel.pooling`.

    >>> import multilevel as ml
    >>> f = "Reaction ~ 0 + factor(Subject) + factor(Subject):Days"
    >>> a = lm_by_group(f, ml.datasets.load("sleepstudy"), "factor(Subject)")
    >>> b = ml.lm(f, ml.datasets.load("sleepstudy"))
    >>> bool(np.allclose(a.coef(), b.coef(), rtol=1e-12)), round(a.sigma, 4) == round(b.sigma, 4)
    (True, True)
    """
    frame = build_fixed_frame(formula, data, contrasts=contrasts, group_key=group_key)
    _warn(frame)
    return LmFit(frame)
