"""The negative binomial's theta estimated as lme4's ``glmer.nb`` does (``glmer_nb`` and
``glmer(family="negative.binomial")`` without ``nb_theta`` run this search).

Layer: models. It receives the ``glmer`` function rather than importing it (``glmer``
calls this module). lme4 (``glmer.nb``, ``est_theta``, ``optTheta``): fit the model as Poisson;
start theta at MASS's ``theta.ml`` of the Poisson fit's means (20 iterations, tolerance 1e-4);
then minimise -2 logLik over log(theta) on log(start) +- 3 by ``optimize()`` (Brent's
golden-section / parabolic search, tolerance 5e-5), refitting the GLMM at each theta; the
result is the fit at the minimiser. Here the same search is scipy's bounded Brent method
(R's ``optimize`` is the same algorithm, Forsythe-Malcolm-Moler's ``fmin``); each refit
starts the GLMM optimiser from the previous fit's covariance parameters.
"""
from __future__ import annotations

import math
import warnings
from typing import Any, Callable

import numpy as np
from scipy.optimize import minimize_scalar

from multilevel.errors import FitWarning, ModelSpecError
from multilevel.families import negative_binomial, theta_ml

__all__ = ["fit_nb"]


def fit_nb(glmer: Callable[..., Any], formula: str, data: Any, *, link: str = "log", nagq: int = 1,
           weights: Any = None, offset: Any = None, control: Any = None, init_theta: float | None = None,
           interval: tuple[float, float] | None = None, tol: float = 5e-5, contrasts: Any = None):
    """glmer.nb's search for theta with ``glmer`` doing the fits; see
    :func:`multilevel.glmer_nb` for the arguments. The fit's ``optinfo["nb"]`` records the
    search (start, interval, evaluations)."""
    from multilevel.models.chunked import is_chunked

    if is_chunked(data):
        raise ModelSpecError("estimating the negative binomial's theta (glmer.nb) needs the data "
                             "in memory (its start, MASS's theta.ml, reads every row); for data "
                             "read in chunks give theta: glmer(..., family='negative.binomial', "
                             "nb_theta=...)")
    kw = dict(nagq=nagq, weights=weights, offset=offset, control=control, contrasts=contrasts)
    if init_theta is None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the Poisson fit is only a start
            g0 = glmer(formula, data, family="poisson", **kw)
        init_theta = theta_ml(g0.frame.y, g0.fitted().to_numpy(), g0.prior_weights, limit=20, eps=2 * tol)
    init_theta = float(init_theta)
    if not (np.isfinite(init_theta) and init_theta > 0):
        raise ModelSpecError(f"the start of the negative binomial's theta must be positive, not {init_theta}")
    lo, hi = interval if interval is not None else (math.log(init_theta) - 3.0, math.log(init_theta) + 3.0)
    evals: list[tuple[float, float]] = []
    last: dict[str, Any] = {}

    def nbfun(t: float) -> float:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # only the final fit's warnings are the user's
            try:
                fit = glmer(formula, data, family=negative_binomial(link, math.exp(t)),
                            _theta_start=last.get("theta"), **kw)
            except Exception:  # noqa: BLE001 - a theta where the GLMM fails is not the optimum
                evals.append((math.exp(t), math.inf))
                return math.inf
        last["theta"] = fit.theta.to_numpy()
        val = -2.0 * fit.loglik
        evals.append((math.exp(t), val))
        return val

    res = minimize_scalar(nbfun, bounds=(lo, hi), method="bounded", options={"xatol": tol})
    th = float(math.exp(res.x))
    fit = glmer(formula, data, family=negative_binomial(link, th), _theta_start=last.get("theta"), **kw)
    fit.optinfo["nb"] = {"init_theta": init_theta, "interval_log_theta": [lo, hi], "evaluations": evals,
                         "nevals": len(evals), "tol": tol}
    near = min(abs(res.x - lo), abs(hi - res.x)) < 10 * tol
    if near:
        msg = (f"the estimate of the negative binomial's theta ({th:.6g}) is at the end of the search "
               f"interval exp([{lo:.3g}, {hi:.3g}]); give interval= or init_theta=")
        rec = FitWarning("nb_theta_boundary", msg)
        fit.warnings.append(rec)
        warnings.warn(msg, rec.category, stacklevel=2)
    return fit
