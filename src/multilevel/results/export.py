"""A fit as a plain dict with the field names of the lme4 reference JSON.

Layer: results (``fit.to_dict()`` is a method of every fit; the toolkit's result objects use
``jsonable``). Imports nothing from the package.

``to_dict(fit)`` (also ``fit.to_dict()`` and ``multilevel fit --json``) returns the schema of
``tests/fixtures/reference/README.md`` so that any fit can be compared field by field with
lme4's: ``{"formula", "REML", "family", "link", "fixef_names", "re_structure", "results"}``.
GLMM fits add their fields (``nAGQ``, ``vcov_fixef_use_hessian_FALSE``, ...); ``lm`` fits
have a layout of their own (``"model": "lm"``, R², F, ...).
Everything is JSON-serialisable: Python floats and ints, NaN and ±Inf as ``None``.

Example
-------
>>> import json
>>> d = fit.to_dict()                               # doctest: +SKIP
>>> d["results"]["logLik"], d["results"]["theta"]   # doctest: +SKIP
(-871.8141359792453, {'Subject.(Intercept)': 0.96673, ...})
>>> json.dumps(d)                                   # doctest: +SKIP
"""
from __future__ import annotations

import math
from typing import Any  # fits: results.base imports this module, so no hint import back

import numpy as np


__all__ = ["to_dict", "jsonable"]

_Z975 = 1.959963984540054  # qnorm(0.975), as in lme4's Wald intervals


def jsonable(x: Any) -> Any:
    """Convert numpy scalars/arrays, tuples and non-finite floats to plain JSON values.

    >>> jsonable({"a": np.float64(1.5), "b": [np.nan, np.int64(2)], "c": np.array([[1.0, np.inf]])})
    {'a': 1.5, 'b': [None, 2], 'c': [[1.0, None]]}
    """
    # exact-type checks first: the explorer converts tens of thousands of plain floats per
    # refit, for which the isinstance chain below cost more than the numbers (a float f is
    # finite exactly when f - f == 0: NaN and the infinities give NaN)
    t = type(x)
    if t is float:
        return x if x - x == 0.0 else None
    if t is list or t is tuple:
        return [(v if v - v == 0.0 else None) if type(v) is float
                else v if (v is None or type(v) is str or type(v) is int or type(v) is bool)
                else jsonable(v) for v in x]
    if t is str or t is int or t is bool or x is None:
        return x
    if t is dict:
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return jsonable(x.tolist())
    if isinstance(x, (bool, np.bool_)):
        return bool(x)
    if isinstance(x, (int, np.integer)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        v = float(x)
        return v if math.isfinite(v) else None
    if x is None or isinstance(x, str):
        return x
    return str(x)


def _re_structure(fit: Any) -> list[dict]:
    out = []
    names = fit.theta_names
    pos = 0
    for rt, cv in zip(fit.frame.reterms, fit.structures):
        m = cv.ntheta
        out.append({"group": rt.group, "terms": list(rt.terms), "n_levels": rt.n_levels,
                    "theta_index0": list(range(pos, pos + m)), "theta_names": names[pos:pos + m]})
        pos += m
    return out


def _covstruct(fit: Any) -> list[dict]:
    """Per term its covariance structure and parameters (the reference README's
    ``results.covstruct``): SDs in natural units, the structure's correlation parameter."""
    out = []
    for rt, blk in zip(fit.frame.reterms, fit.varcorr):
        out.append({"group": blk.group, "structure": blk.structure, "terms": list(blk.terms),
                    "n_levels": rt.n_levels, "sd": blk.sd.to_numpy().tolist(),
                    "corr_param": blk.corr_param, "cov_matrix": blk.cov.tolist(),
                    "corr_matrix": blk.corr.tolist(), "n_params": blk.n_params})
    return out


def _varcorr(fit: Any) -> list[dict]:
    out = []
    for blk in fit.varcorr:
        sd = blk.sd
        corr = blk.corr
        out.append({"group": blk.group, "block_name": blk.block_name, "terms": list(blk.terms),
                    "sd": {t: float(sd.iloc[i]) for i, t in enumerate(blk.terms)},
                    "cov": blk.cov.tolist(), "corr": corr.tolist()})
    return out


def _ranef(fit: Any) -> dict:
    re = fit.ranef(condvar=True)
    out: dict[str, dict] = {}
    for g, df in re.items():
        sd = re.condsd[g] if re.condsd is not None else None
        terms: dict[str, dict] = {}
        for j, t in enumerate(df.columns):
            terms[t] = {"levels": [str(v) for v in df.index],
                        "condval": df.iloc[:, j].to_numpy().tolist(),
                        "condsd": sd.iloc[:, j].to_numpy().tolist() if sd is not None else None}
        out[g] = terms
    return out


def to_dict(fit: Any) -> dict:
    """All results of ``fit`` in the reference-JSON layout (see the module docstring).

    The layout follows the fit's ``_export_layout``: ``"lmm"``, ``"glmm"`` or ``"lm"``.
    """
    layout = getattr(fit, "_export_layout", "lmm")
    if layout == "lm":
        return _lm_dict(fit)
    d = _mixed_dict(fit)
    if layout == "glmm":
        d = _glmm_extra(fit, d)
    return jsonable(d)


def _mixed_dict(fit: Any) -> dict:
    fe = fit.fixef
    se = fit.se
    names = list(fe.index)
    optinfo = getattr(fit, "optinfo", {}) or {}
    results: dict[str, Any] = {
        "fixef": {n: float(fe.iloc[i]) for i, n in enumerate(names)},
        "fixef_se": {n: float(se.iloc[i]) for i, n in enumerate(names)},
        "vcov_fixef": {"names": names, "matrix": fit.vcov.to_numpy().tolist()},
        "theta": {n: float(v) for n, v in zip(fit.theta_names, fit.theta.to_numpy())},
        "sigma": float(fit.sigma),
        "varcorr": _varcorr(fit),
        "covstruct": _covstruct(fit),
        "logLik": float(fit.loglik),
        "logLik_df": int(fit.npar),
        "AIC": float(fit.aic),
        "BIC": float(fit.bic),
        "minus2logLik": -2.0 * float(fit.loglik),
        "deviance": float(fit.deviance),
    }
    if fit.reml:
        results["REMLcrit"] = float(fit.reml_criterion)
    results.update({
        "df_resid": int(fit.df_resid),
        "nobs": int(fit.nobs),
        "ngrps": {g: int(n) for g, n in fit.ngroups.items()},
        "isSingular": bool(fit.is_singular),
        "ranef": _ranef(fit),
        "fitted_first20": fit.fitted().to_numpy()[:20].tolist(),
        "wald_ci_95": {n: [float(fe.iloc[i] - _Z975 * se.iloc[i]), float(fe.iloc[i] + _Z975 * se.iloc[i])]
                       for i, n in enumerate(names)},
        "convergence": {"optimizer": optinfo.get("optimizer"), "feval": optinfo.get("feval"),
                        "messages": list(optinfo.get("messages", []) or []), "warnings": list(fit.warnings)},
    })
    out = {
        "formula": fit.formula,
        "REML": bool(fit.reml),
        "family": fit.family,
        "link": fit.link,
        "fixef_names": names,
        **_contrast_fields(fit),
        "re_structure": _re_structure(fit),
        "results": results,
    }
    return out


def _contrast_fields(fit: Any) -> dict:
    """``fixed_contrasts`` (what each factor of the fixed part used, as the reference JSON:
    type, and levels / columns / matrix unless treatment; None without factors), the
    ``contrasts=`` argument as given (short names, matrices as rows) and ``contrasts_arg``
    (the same in R's spelling, ``contr.sum``, as the reference's field)."""
    frame = fit.frame
    used = getattr(frame, "contrasts", None) or {}
    arg = getattr(frame, "contrasts_arg", None) or {}
    given = {k: (v if isinstance(v, str) else np.asarray(v.values).tolist()) for k, v in arg.items()}
    r_spelled = {k: (f"contr.{v}" if isinstance(v, str) else v) for k, v in given.items()}
    return {
        "fixed_contrasts": {k: c.to_dict() for k, c in used.items()} or None,
        "contrasts": given or None,
        "contrasts_arg": r_spelled or None,
    }


def _glmm_extra(fit: Any, d: dict) -> dict:
    """The fields of a GLMM fit beyond an LMM's."""
    d["REML"] = None
    d["nAGQ"] = fit.nagq
    res = d["results"]
    names = list(fit.frame.fixef_names)
    res["vcov_fixef_use_hessian_FALSE"] = {"names": names, "matrix": fit._vcov_rx.tolist()}
    res["linear_predictor_first20"] = fit._eta[:20].tolist()
    res["glmm_deviance_function_value"] = fit.conditional_deviance
    if fit.nagq > 1:
        res["saturated_logLik"] = fit.saturated_loglik
        res["logLik_full"] = fit.loglik_full
    res["vcov_method"] = fit.vcov_method
    extras = fit.family_extras
    if extras is not None:
        res["family_extras"] = extras
    return d


def _lm_dict(fit: Any) -> dict:
    """An ``lm`` fit: coefficients (NaN for aliased ones), R², F, logLik, ..."""
    coef = fit.coef()
    fs = fit.fstatistic
    return jsonable({
        "formula": fit.formula,
        "model": "lm",
        "REML": False,
        "family": "gaussian",
        "link": "identity",
        "coef_names": list(coef.index),
        **_contrast_fields(fit),
        "results": {
            "coefficients": dict(zip(coef.index, coef.to_numpy())),
            "se": dict(zip(fit.se.index, fit.se.to_numpy())),
            "vcov": fit._vcov,
            "vcov_type": fit.vcov_type,
            "cluster": fit.cluster,
            "n_clusters": fit.n_clusters,
            "sigma": fit.sigma,
            "df_residual": fit.df_resid,
            "r_squared": fit.r2,
            "adj_r_squared": fit.adj_r2,
            "fstatistic": fs,
            "logLik": fit.loglik,
            "AIC": fit.aic,
            "BIC": fit.bic,
            "rss": fit.rss,
            "nobs": fit.nobs,
            "npar": fit.npar,
            "aliased": fit.dropped_columns,
            "warnings": fit.warnings,
        },
    })
