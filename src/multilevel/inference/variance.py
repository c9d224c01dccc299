"""Variance decompositions of a fitted mixed model: intraclass correlations, R², the
proportional reduction of variance components, and design effects.

Definitions follow R's performance / insight packages (Nakagawa, Johnson & Schielzeth 2017):

* ``var_fixed``: the variance of the fixed-effects predictions X beta-hat over the rows used
  (sample variance, n - 1 denominator, as R's ``var``);
* ``var_random``: the mean random-effects variance (Johnson 2014): for every random-effect
  term with covariance Sigma and model-matrix rows z_i, the mean of z_i' Sigma z_i; for a
  random intercept this is its variance. As performance does, only random-effect columns
  that are also fixed-effect columns enter z (a slope without a fixed effect is left out);
* ``var_residual``: sigma^2 for LMMs; the distribution-specific variance for binomial GLMMs
  (pi^2/3 logit, 1 probit, pi^2/6 cloglog), as performance's latent-scale definitions.

Then ``ICC_adjusted = var_random / (var_random + var_residual)``,
``ICC_conditional = var_random / (var_fixed + var_random + var_residual)``,
``R2_marginal = var_fixed / total`` and ``R2_conditional = (var_fixed + var_random) / total``.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from multilevel.errors import ModelSpecError
from multilevel.inference._common import is_glmm

if TYPE_CHECKING:
    from multilevel.results import AnyFit

__all__ = ["variance_components", "icc", "r2", "variance_reduction", "design_effect"]

_LATENT_RESIDUAL = {"logit": math.pi**2 / 3, "probit": 1.0, "cloglog": math.pi**2 / 6}


def _residual_variance(fit: AnyFit) -> float:
    if not is_glmm(fit):
        return float(fit.sigma) ** 2
    if fit.family == "binomial" and fit.link in _LATENT_RESIDUAL:
        return _LATENT_RESIDUAL[fit.link]
    raise ModelSpecError(f"variance decompositions are implemented for LMMs and binomial GLMMs; "
                         f"the {fit.family} family needs a distribution-specific variance that "
                         f"is not available here")


def variance_components(fit: AnyFit) -> dict[str, Any]:
    """The pieces of the decomposition: ``fixed``, ``random`` (total), ``by_group``
    (random variance per grouping factor), ``residual`` and ``intercepts`` (random-intercept
    variance per grouping factor, where there is one)."""
    frame = fit.frame
    X = np.asarray(frame.X, float)
    beta = np.asarray(fit.getme("beta"), float)
    pred = X @ beta if X.shape[1] else np.zeros(frame.nobs)
    var_fixed = float(np.var(pred, ddof=1)) if pred.size > 1 else 0.0
    fixnames = list(frame.fixef_names)
    by_group: dict[str, float] = {}
    intercepts: dict[str, float] = {}
    for rt, blk in zip(frame.reterms, fit.varcorr):
        keep = [j for j, t in enumerate(rt.terms) if t in fixnames]
        if keep:
            Z = rt.Z[:, keep]
            S = blk.cov[np.ix_(keep, keep)]
            v = float(np.einsum("ij,jk,ik->i", Z, S, Z).mean())
        else:
            v = 0.0
        by_group[rt.group] = by_group.get(rt.group, 0.0) + v
        if "(Intercept)" in rt.terms:
            j = rt.terms.index("(Intercept)")
            intercepts[rt.group] = intercepts.get(rt.group, 0.0) + float(blk.cov[j, j])
    return {
        "fixed": var_fixed,
        "random": float(sum(by_group.values())),
        "by_group": by_group,
        "residual": _residual_variance(fit),
        "intercepts": intercepts,
    }


def icc(fit: AnyFit, by_group: bool = False) -> pd.Series:
    """Intraclass correlation coefficients (performance's ``icc``).

    Returns a Series with ``adjusted`` (random / (random + residual): the share of the
    variance not explained by the fixed effects that lies between groups) and
    ``conditional`` (random / (fixed + random + residual)). For a model without fixed
    effects besides the intercept both equal the classical ICC tau^2 / (tau^2 + sigma^2).

    ``by_group=True``: one ICC per grouping factor from the random-intercept variances,
    tau_g^2 / (sum of tau^2 + residual) (performance's ``by_group``), as a Series by group.

    >>> import multilevel as ml
    >>> fit = ml.lmer("mAch ~ 1 + (1 | school)", ml.datasets.load("hsb"))
    >>> round(float(ml.icc(fit)["adjusted"]), 2)
    0.18
    """
    vc = variance_components(fit)
    if by_group:
        tot = sum(vc["intercepts"].values()) + vc["residual"]
        return pd.Series({g: _ratio(v, tot) for g, v in vc["intercepts"].items()}, name="icc")
    r, e, f = vc["random"], vc["residual"], vc["fixed"]
    # a perfect fit has no variance left: 0 / 0 is NaN, not an error
    return pd.Series({"adjusted": _ratio(r, r + e), "conditional": _ratio(r, f + r + e)},
                     name="icc")


def r2(fit: AnyFit) -> pd.Series:
    """Nakagawa & Schielzeth's R² with Johnson's extension for random slopes
    (performance's ``r2_nakagawa``): ``marginal`` = var_fixed / total (the fixed effects),
    ``conditional`` = (var_fixed + var_random) / total (fixed and random effects)."""
    vc = variance_components(fit)
    tot = vc["fixed"] + vc["random"] + vc["residual"]
    return pd.Series({"marginal": _ratio(vc["fixed"], tot), "conditional": _ratio(vc["fixed"] + vc["random"], tot)},
                     name="r2")


def _component_variances(fit: AnyFit) -> dict[tuple[str, str], float]:
    out: dict[tuple[str, str], float] = {}
    for blk in fit.varcorr:
        for j, t in enumerate(blk.terms):
            out[(blk.group, t)] = float(blk.cov[j, j])
    if not is_glmm(fit):
        out[("Residual", "")] = float(fit.sigma) ** 2
    return out


def variance_reduction(fit_null: AnyFit, fit: AnyFit) -> pd.DataFrame:
    """Proportional reduction of each variance component from ``fit_null`` to ``fit``
    (Raudenbush & Bryk's "proportion of variance explained"): (var_null - var_fit) / var_null
    for every random-effect variance both models have (by grouping factor and term) and the
    residual variance. Negative values mean the component grew.

    Returns a DataFrame indexed by (group, term) with columns ``null``, ``model`` and
    ``reduction``.

    >>> import multilevel as ml
    >>> hsb = ml.datasets.load("hsb")
    >>> m0 = ml.lmer("mAch ~ 1 + (1 | school)", hsb)
    >>> m1 = ml.lmer("mAch ~ meanses + (1 | school)", hsb)
    >>> round(float(ml.inference.variance_reduction(m0, m1).loc[("school", "(Intercept)"), "reduction"]), 2)
    0.69
    """
    a, b = _component_variances(fit_null), _component_variances(fit)
    keys = [k for k in a if k in b]
    if not keys:
        raise ModelSpecError("the two models have no variance component in common")
    rows = [(a[k], b[k], (a[k] - b[k]) / a[k] if a[k] > 0 else np.nan) for k in keys]
    idx = pd.MultiIndex.from_tuples(keys, names=["group", "term"])
    return pd.DataFrame(rows, index=idx, columns=["null", "model", "reduction"])


def design_effect(fit: AnyFit) -> pd.DataFrame:
    """Design effect of the clustering by each grouping factor: ``1 + (m - 1) * ICC_g``
    with m the mean number of observations per group and ICC_g = var_g / (var_random +
    var_residual) (the random variance of that factor as in ``variance_components``).
    Also the effective sample size nobs / deff.

    Returns a DataFrame indexed by grouping factor with ``groups``, ``mean_size``, ``icc``,
    ``deff`` and ``n_effective``.
    """
    vc = variance_components(fit)
    tot = vc["random"] + vc["residual"]
    rows = []
    ng = fit.ngroups
    for g, v in vc["by_group"].items():
        m = fit.nobs / ng[g]
        rho = v / tot
        deff = 1 + (m - 1) * rho
        rows.append((g, ng[g], m, rho, deff, fit.nobs / deff))
    return pd.DataFrame(rows, columns=["group", "groups", "mean_size", "icc", "deff", "n_effective"]).set_index("group")


def _ratio(a: float, b: float) -> float:
    return float(a) / float(b) if b != 0 else float("nan")
