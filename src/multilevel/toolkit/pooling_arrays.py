"""The numbers of the pooling views as plain arrays, computed from an lmer fit's own arrays.

Why this module: the explorer (``multilevel explore``) redraws the pooling and shrinkage views
after every slider release. :func:`multilevel.pooling` builds them the general way (two more
model frames, ``lm`` and ``lm_by_group`` fits, pandas tables per call), which cost 20 times
the mixed-model fit itself for a 20 x 20 design. Here the same numbers come from arrays the
fit already holds: X, y, Z and the group codes of its model frame, the fixed effects, the
conditional modes and variances:

* complete pooling: least squares of y on the fit's X (one QR, as ``lm`` solves it);
* no pooling: least squares with a block per group (the random-effect columns of Z, times
  the group indicator) and the formula's other level-1 columns of X as common ones, solved
  by :func:`~multilevel.results.grouped_ls.grouped_least_squares` (what ``lm_by_group``
  calls), without formulas or model frames;
* partial pooling: ``coef(fit)`` from the fixed effects and the conditional modes, and the
  shrinkage factors of :func:`~multilevel.toolkit.pooling.shrinkage_factors`.

:func:`pooling_arrays` gives these only where they are the general path's numbers by
construction: no weights or offset, no fixed-effect column dropped, random-effect terms that
are numeric data columns, main effects only among the common terms, a no-pooling design that
is certified of full rank. Elsewhere it returns None and the caller uses
:func:`multilevel.pooling` (``multilevel.app.explore.payload.arrays_from_pooling`` turns its result into
the same arrays). The tests check both ways agree to 1e-12.

Layer: toolkit (reads results and design arrays; no pandas per group).

Example
-------
>>> import multilevel as ml
>>> fit = ml.lmer("Reaction ~ Days + (Days | Subject)", ml.datasets.load("sleepstudy"))
>>> pa = pooling_arrays(fit)
>>> pa.coef_names, pa.x_name, pa.none.shape
(['(Intercept)', 'Days'], 'Days', (18, 2))
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["PoolingArrays", "pooling_arrays", "KINDS"]

#: the three approaches, in the order the views draw them
KINDS = ("complete", "none", "partial")


@dataclass
class PoolingArrays:
    """One pooling comparison as arrays (J groups in lme4's order, q coefficients).

    group_name, coef_names, levels, n:  the grouping column, the random-effect coefficients,
                                        the group labels and sizes.
    coef:        kind -> (J, q) the groups' coefficients on the scale of ``coef(fit)``
                 (``Pooling.table``'s ``{c}_complete``, ``{c}_none``, ``{c}_partial``).
    weight:      (J, q) the shrinkage factors (``{c}_weight``).
    x_name:      the variable the lines are drawn over (the first slope, or a fixed-only
                 level-1 predictor when ``common_slope``), or None.
    line_a, line_b: kind -> (J,) intercept and slope of each group's line (0 where the model
                 has no such coefficient; NaN where the approach has no estimate).
    offset:      kind -> (J,) the mean contribution of the model's other terms to that
                 approach's fitted values (NaN where undefined; the lines then use 0).
    y, x, codes: the rows used: response, the line's variable (None without one), group code.
    response:    the response's name.
    notes:       remarks of the pooling comparison.
    """

    group_name: str
    coef_names: list[str]
    levels: list[str]
    n: np.ndarray
    coef: dict[str, np.ndarray]
    weight: np.ndarray
    x_name: str | None
    common_slope: bool
    line_a: dict[str, np.ndarray]
    line_b: dict[str, np.ndarray]
    offset: dict[str, np.ndarray]
    y: np.ndarray
    x: np.ndarray | None
    codes: np.ndarray
    response: str
    notes: list[str] = field(default_factory=list)


def _numeric_columns(data: Any) -> set[str]:
    """The numeric (not boolean) columns of a pandas frame (by dtype, without reading one)."""
    import pandas as pd

    if not isinstance(data, pd.DataFrame):
        return set()
    return {str(c) for c, t in data.dtypes.items()
            if t.kind in "iuf"}  # numpy int, unsigned, float: bool is kind "b"


def _group_means(values: np.ndarray, codes: np.ndarray, J: int) -> np.ndarray:
    """Per group the mean of the finite values (NaN for a group without one), as
    ``plotdata._pooling_offsets`` takes it."""
    ok = ~np.isnan(values)
    cnt = np.bincount(codes[ok], minlength=J)
    tot = np.bincount(codes[ok], weights=values[ok], minlength=J)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = tot / cnt
    return np.where(np.isfinite(means), means, np.nan)


def pooling_arrays(fit: Any, data: Any = None) -> PoolingArrays | None:
    """The pooling comparison of ``fit`` (a REML lmer fit with one grouping factor) as
    arrays, the numbers of ``multilevel.pooling(fit.formula, data, fit=fit)`` and of
    :func:`~multilevel.report.plotdata.pooling_data` and
    :func:`~multilevel.report.plotdata.shrinkage_data` of it; None where this path does
    not apply (see the module docstring) and the general one must be used.

    data: the data frame the fit was fitted to (to tell numeric columns from others).
    """
    from scipy.linalg import qr, solve_triangular

    from multilevel.design.grouped import GroupedColumns, _certified
    from multilevel.design.matrices import ColumnPlan
    from multilevel.formula import parse_formula
    from multilevel.toolkit.pooling import bar_terms
    from multilevel.results.grouped_ls import grouped_least_squares
    from multilevel.toolkit.pooling import _absorbed, _shrinkage_arrays

    fr = fit.frame
    if (not getattr(fit, "reml", False) or fr.weights is not None or fr.offset is not None
            or fr.dropped_columns or getattr(fr, "out_of_core", False)
            or list(fr.all_fixef_names) != list(fr.fixef_names)):
        return None
    parsed = parse_formula(str(fit.formula))
    if len({b.group for b in parsed.bars}) != 1:
        return None
    bar_vars = parsed.bars[0].group_vars
    if len(bar_vars) != 1 or parsed.bars[0].group != bar_vars[0]:
        return None
    g = bar_vars[0]
    rts = [rt for rt in fr.reterms if rt.group == g]
    if len(rts) != len(fr.reterms) or not rts:
        return None
    has_int, slope_labels = bar_terms(parsed)
    coef_names: list[str] = []
    for rt in rts:
        coef_names += [t for t in rt.terms if t not in coef_names]
    # the no-pooling group columns are factor(g) and factor(g):x: the random-effect columns
    # themselves only when those are the intercept and numeric data columns by their name
    if coef_names != (["(Intercept)"] if has_int else []) + slope_labels:
        return None
    numeric = _numeric_columns(data)
    if not all(lab in numeric for lab in slope_labels):
        return None
    Z = np.column_stack([rt.Z for rt in rts])
    _, first = np.unique(sum(([t for t in rt.terms] for rt in rts), []), return_index=True)
    Z = Z[:, sorted(first)]
    levels = [str(lv) for lv in rts[0].levels]
    refs = np.asarray(rts[0].refs, dtype=np.int64)
    J, q, n = len(levels), len(coef_names), fr.nobs
    X = np.asarray(fr.X, dtype=float)
    y = np.asarray(fr.y, dtype=float)
    names = list(fr.fixef_names)
    beta = np.asarray(fit._beta, dtype=float)

    absorbed = _absorbed(X, names, Z, refs, J, coef_names)
    assign = np.asarray(fr.assign)
    level2 = {lab for t, lab in enumerate(fr.term_labels, start=1)
              if (assign == t).any() and all(names[k] in absorbed for k in np.flatnonzero(assign == t))}
    common_terms = [lab for lab in parsed.fixed.labels if lab not in slope_labels and lab not in level2]
    if any(":" in lab for lab in common_terms):
        return None  # an interaction is coded anew without its main effects: general path
    label_of = {t: lab for t, lab in enumerate(fr.term_labels, start=1)}
    common = [k for k in range(len(names))
              if (assign[k] == 0 and not has_int) or label_of.get(int(assign[k])) in common_terms]
    if not has_int and not parsed.fixed.intercept:
        common = [k for k in common if assign[k] != 0]

    # complete pooling: lm's QR of [X y]
    p = X.shape[1]
    if p:
        Raug = qr(np.column_stack([X, y]), mode="r", check_finite=False)[0]
        R = np.triu(Raug[:p, :p])
        if np.min(np.abs(np.diag(R))) <= 1e-7 * np.max(np.abs(np.diag(R))):
            return None
        beta_c = solve_triangular(R, Raug[:p, p], check_finite=False)
    else:
        beta_c = np.zeros(0)
    fitted_c = X @ beta_c

    # no pooling: group blocks on the Z columns, the common X columns global
    P = J * q + len(common)
    group = np.concatenate([np.repeat(np.arange(J), q), np.full(len(common), -1)]).astype(np.int64)
    slot = np.concatenate([np.tile(np.arange(q), J), np.full(len(common), -1)]).astype(np.int64)
    plan = ColumnPlan(False, [], [f"c{i}" for i in range(P)], [0] * P, [[] for _ in range(P)])
    gc = GroupedColumns(plan, {}, n, "group", refs, J, group, slot, np.ascontiguousarray(Z),
                        list(range(J * q, P)), np.ascontiguousarray(X[:, common]))
    ss = gc.sumsq()
    nz = ss > 0
    if not nz.all() or not _certified(gc, ss, nz):
        return None  # a column R's rank rule might drop: the general path decides
    sol = grouped_least_squares(gc, list(range(P)), y, covariance=False)
    none_full = sol.beta[:J * q].reshape(J, q)
    gamma = dict(zip([names[k] for k in common], sol.beta[J * q:]))
    net = none_full.copy()
    for nm, load in absorbed.items():
        net -= float(beta[names.index(nm)]) * load

    # partial pooling: coef(fit) = fixed effect (0 if none) + the modes of that name
    fe = dict(zip(names, beta))
    partial = np.empty((J, q))
    for c, cn in enumerate(coef_names):
        tot = np.zeros(J)
        for k, rt in enumerate(fr.reterms):
            for t, term in enumerate(rt.terms):
                if term == cn:
                    m = np.asarray(fit._b[k])[:, t]
                    tot = tot + np.where(np.isnan(m), 0.0, m)  # nansum, as coef() sums
        partial[:, c] = fe.get(cn, 0.0) + tot
    comp = np.array([fe_c if np.isfinite(fe_c) else 0.0 for fe_c in
                     (dict(zip(names, beta_c)).get(cn, 0.0) for cn in coef_names)])
    complete = np.tile(comp, (J, 1))
    weight_d = _shrinkage_arrays(fit, g)[1]
    weight = np.column_stack([weight_d[cn] for cn in coef_names])

    notes: list[str] = []
    sizes = np.bincount(refs, minlength=J).astype(np.int64)

    # the line variable: the first slope, or (no slope) the first fixed numeric data column
    # that varies within groups and has an estimate under every approach
    x_name, common_slope, xv = (slope_labels[0], False, Z[:, coef_names.index(slope_labels[0])]) \
        if slope_labels else (None, False, None)
    line_b: dict[str, np.ndarray]
    icpt = 0 if "(Intercept)" in coef_names else None
    coefs = {"complete": complete, "none": net, "partial": partial}
    if x_name is None:
        for k, nm in enumerate(names):
            if nm == "(Intercept)" or nm not in numeric or nm not in gamma:
                continue
            xk = X[:, k]
            cnt = np.bincount(refs, minlength=J)
            mean = np.bincount(refs, weights=xk, minlength=J) / np.maximum(cnt, 1)
            if np.any(np.abs(xk - mean[refs]) > 1e-12 * (1.0 + np.abs(xk))):
                x_name, common_slope, xv = nm, True, xk
                slopes = {"complete": float(beta_c[k]), "none": float(gamma[nm]),
                          "partial": float(beta[k])}
                line_b = {kind: np.full(J, slopes[kind]) for kind in KINDS}
                break
    if not common_slope:
        sc = coef_names.index(x_name) if x_name is not None else None
        line_b = {kind: coefs[kind][:, sc] if sc is not None else np.zeros(J) for kind in KINDS}
    line_a = {kind: coefs[kind][:, icpt] if icpt is not None else np.zeros(J) for kind in KINDS}
    fitted = {"complete": fitted_c, "none": sol.eta, "partial": np.asarray(fit._fitted, float)}
    offset = {}
    for kind in KINDS:
        rest = fitted[kind] - (line_a[kind][refs] + (line_b[kind][refs] * xv if xv is not None else 0.0))
        offset[kind] = _group_means(rest, refs, J)
    return PoolingArrays(g, coef_names, levels, sizes, coefs, weight, x_name, common_slope,
                         line_a, line_b, offset, y, None if xv is None else np.asarray(xv, float),
                         refs, fr.response, notes)

