"""lmer: fit a linear mixed model (lme4's lFormula -> mkLmerDevfun -> optimizeLmer -> mkMerMod)."""
from __future__ import annotations

from typing import Any

import numpy as np

from multilevel.control import LmerControl
from multilevel.covariance import is_singular_theta
from multilevel.models.input import engine_input
from multilevel.engine.lmm import LmmProblem, fit_theta
from multilevel.models._arguments import r_arguments
from multilevel.errors import FitError, ModelSpecError, singular_warning
from multilevel.models._warn import issue
from multilevel.results.lmm import LmmFit


@r_arguments(REML="reml")
def lmer(
    formula: str,
    data: Any,
    reml: bool = True,
    weights: Any = None,
    offset: Any = None,
    control: dict | LmerControl | None = None,
    contrasts: dict | None = None,
) -> LmmFit:
    """Fit a linear mixed model by REML (default) or maximum likelihood.

    Parameters
    ----------
    formula : str
        lme4 syntax: ``"Reaction ~ Days + (Days | Subject)"``, ``(1 | a/b)``, ``(x || g)``...
        and lme4 2.0's structured covariances ``diag(x | g)``, ``cs(x | g)`` (compound
        symmetry), ``ar1(0 + factor(t) | g)`` (AR(1) over the levels of t), as glmmTMB fits them.
    data : pandas or polars DataFrame (or a dict of columns)
    reml : bool
        REML (True, lme4's default) or ML (False). R's spelling ``REML=`` is accepted too.
    weights : column name or array, optional
        Prior (precision) weights: Var(e_i) = sigma^2 / w_i.
    offset : column name or array, optional
        A known term added to the linear predictor (adds to ``offset()`` in the formula).
    control : dict or :class:`~multilevel.control.LmerControl`, optional
        Optimiser settings and checks: ``ftol_abs``, ``ftol_rel``, ``xtol_abs``, ``maxeval``,
        ``initial_step``, ``conv_tol``, ``singular_tol``, and the actions (``"warning"``,
        ``"ignore"``, ``"error"``) of ``check_conv`` (Newton-decrement convergence check;
        True / False also work), ``check_singular`` and ``check_rank``. A bad key or value
        raises :class:`~multilevel.errors.ControlError` naming it.
    contrasts : dict, optional
        lme4's ``contrasts=``: factor of the fixed part -> ``"treatment"``, ``"sum"``,
        ``"helmert"``, ``"poly"``, ``"SAS"`` (R's ``"contr.sum"`` spelling too) or a matrix
        (numpy array or DataFrame) with one row per level, e.g. ``{"sector": "sum"}``.
        Unnamed factors get R's defaults: treatment contrasts, ``contr.poly`` for ordered
        pandas Categoricals (columns ``f.L``, ``f.Q``, ``f.C``, ``f^4``, ...). The contrasts
        used are in ``fit.contrasts`` and ``fit.to_dict()["fixed_contrasts"]``; ``predict``
        re-applies them. A name that is not a factor of the fixed part, an unknown contrast or
        a matrix of the wrong shape raises :class:`~multilevel.errors.ModelSpecError`.

    Returns
    -------
    LmmFit

    Examples
    --------
    >>> import multilevel as ml
    >>> fit = ml.lmer("Reaction ~ Days + (Days | Subject)", ml.datasets.load("sleepstudy"))
    >>> fit.fixef.round(3).tolist()
    [251.405, 10.467]
    >>> hsb = ml.datasets.load("hsb")   # lme4: contrasts = list(sector = "contr.sum")
    >>> ml.lmer("mAch ~ sector + cses + (1 | school)", hsb, contrasts={"sector": "sum"}).fixef.round(3).to_dict()
    {'(Intercept)': 12.796, 'sector1': -1.403, 'cses': 2.191}
    """
    from multilevel.design.frame import build_model_frame
    from multilevel.results.lmm import LmmFit

    ctrl = LmerControl.from_user(control)
    if not isinstance(reml, (bool, np.bool_)):
        raise ModelSpecError(f"reml must be True (REML) or False (maximum likelihood), not {reml!r}")
    reml = bool(reml)
    frame = build_model_frame(formula, data, weights=weights, offset=offset, family="gaussian",
                              contrasts=contrasts)
    problem = LmmProblem(engine_input(frame), reml)
    theta, fval, optinfo, warns = fit_theta(problem, ctrl)
    sol = problem.solution(theta)
    if not np.isfinite(sol["objective"]):
        raise FitError("the fit failed: the objective is not finite at the estimate")
    sigma = sol["sigma"]
    # the same test with the same tolerance as fit.is_singular (the fit stores ctrl.singular_tol)
    is_sing = is_singular_theta(theta, problem.input.structures, ctrl.singular_tol)
    records = list(frame.warnings) + ([singular_warning()] if is_sing else []) + list(warns)
    messages = issue(records, ctrl, stacklevel=2)
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
        singular_tol=ctrl.singular_tol,
    )
    return fit
