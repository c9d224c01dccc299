"""lmer: fit a linear mixed model (lme4's lFormula -> mkLmerDevfun -> optimizeLmer -> mkMerMod)."""
from __future__ import annotations

import warnings as _warnings
from typing import Any

import numpy as np

from multilevel.covariance import diagonal_theta
from multilevel.engine.lmm import SINGULAR_MESSAGE, LmmProblem, fit_theta
from multilevel.engine.optimize import control_options
from multilevel.errors import FitError, MultilevelWarning
from multilevel.results.lmm import LmmFit


def lmer(
    formula: str,
    data: Any,
    reml: bool = True,
    weights: Any = None,
    offset: Any = None,
    control: dict | None = None,
) -> LmmFit:
    """Fit a linear mixed model by REML (default) or maximum likelihood.

    Parameters
    ----------
    formula : str
        lme4 syntax: ``"Reaction ~ Days + (Days | Subject)"``, ``(1 | a/b)``, ``(x || g)``...
    data : pandas or polars DataFrame (or a dict of columns)
    reml : bool
        REML (True, lme4's default) or ML (False).
    weights : column name or array, optional
        Prior (precision) weights: Var(e_i) = sigma^2 / w_i.
    offset : column name or array, optional
        A known term added to the linear predictor (adds to ``offset()`` in the formula).
    control : dict, optional
        Optimiser settings: ``ftol_abs``, ``ftol_rel``, ``xtol_abs``, ``maxeval``,
        ``check_conv`` (finite-difference convergence check, default True), ``conv_tol``.

    Returns
    -------
    LmmFit

    Examples
    --------
    >>> import multilevel as ml
    >>> fit = ml.lmer("Reaction ~ Days + (Days | Subject)", ml.datasets.load("sleepstudy"))
    >>> fit.fixef.round(3).tolist()
    [251.405, 10.467]
    """
    from multilevel.design.frame import build_model_frame
    from multilevel.results.lmm import LmmFit

    opts = control_options(control)
    frame = build_model_frame(formula, data, weights=weights, offset=offset, family="gaussian")
    problem = LmmProblem(frame, reml)
    theta, fval, optinfo, warns = fit_theta(problem, opts)
    sol = problem.solution(theta)
    if not np.isfinite(sol["objective"]):
        raise FitError("the fit failed: the objective is not finite at the estimate")
    sigma = sol["sigma"]
    is_sing = bool(np.any(theta[diagonal_theta(frame, problem.slices)] < opts["singular_tol"]))
    messages = list(frame.warnings)
    if is_sing:
        messages.append(SINGULAR_MESSAGE)
    messages.extend(warns)
    for m in messages:
        _warnings.warn(m, MultilevelWarning, stacklevel=2)
    obj = sol["objective"]
    dev_ml = problem.ml_deviance(theta)
    fit = LmmFit(
        frame=frame,
        reml=reml,
        theta=theta,
        beta=sol["beta"],
        vcov=sol["vcov"],
        sigma=sigma,
        b=sol["b"],
        condvar=None,  # computed on first use from the problem (it pickles; a lambda would not)
        loglik=-obj / 2.0,
        deviance_ml=dev_ml,
        reml_criterion=obj if reml else None,
        fitted=problem.fitted(sol["beta"], sol["b"]),
        converged=not warns,
        warnings=messages,
        optinfo=optinfo,
        weights_name=weights if isinstance(weights, str) else None,
        problem=problem,  # for inference code (profiles, bootstrap), not part of the API
    )
    return fit
