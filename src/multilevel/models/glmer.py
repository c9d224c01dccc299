"""glmer: fit a generalized linear mixed model (lme4's glFormula -> mkGlmerDevfun -> optimizeGlmer -> mkMerMod)."""
from __future__ import annotations

import time
import warnings as _warnings
from typing import Any

import numpy as np

from multilevel.covariance import diagonal_theta
from multilevel.design import ModelFrame
from multilevel.engine.glmm import GLMM_DEFAULTS, _NOBS_MAX, _NPAR_MAX, _SING_TOL, GlmmProblem, deriv12, hessian_from_gradient, newton_fd
from multilevel.engine.lmm import SINGULAR_MESSAGE
from multilevel.engine.optimize import bobyqa, control_options
from multilevel.errors import DataError, FitError, ModelSpecError, MultilevelWarning
from multilevel.families import Family, get_family
from multilevel.results.glmm import GlmmFit


def _user_weights_at(data: Any, weights: Any, rows: np.ndarray) -> np.ndarray | None:
    if weights is None:
        return None
    try:
        arr = np.asarray(data[weights] if isinstance(weights, str) else weights, dtype=float)
    except Exception:  # noqa: BLE001 - the frame already validated the weights
        return None
    return arr[rows] if arr.shape[0] > rows.max(initial=0) else None


def _check_response(frame: ModelFrame, fam: Family, weights_given: bool) -> bool:
    """lme4's response rules with clear errors; returns True for a cbind() response."""
    resp = frame.response.replace(" ", "")
    cbind = resp.startswith("cbind(")
    y = frame.y
    if fam.name == "binomial":
        levels = frame.factor_levels.get(frame.response)
        if levels is not None and len(levels) > 2:
            raise DataError(f"the binomial response '{frame.response}' is a factor with {len(levels)} "
                            f"levels ({', '.join(map(str, levels[:5]))}{', ...' if len(levels) > 5 else ''}); "
                            f"it must have two (the first is failure)")
        if not cbind and frame.weights is None:
            bad = (y != 0) & (y != 1)
            if bad.any():
                raise DataError(f"the binomial response '{frame.response}' must be 0/1 (or a two-level "
                                f"factor) when no weights are given; {int(bad.sum())} value(s) are "
                                f"proportions strictly between 0 and 1 -- give weights= (the number of "
                                f"trials) or use cbind(successes, failures)")
        elif frame.weights is not None:
            m = frame.weights * y
            if np.any(np.abs(m - np.round(m)) > 1e-3):
                msg = "non-integer #successes in a binomial glm!"
                if msg not in frame.warnings:
                    frame.warnings.append(msg)
    elif fam.name == "poisson":
        if np.any(y < 0):
            raise DataError(f"the Poisson response '{frame.response}' has negative values")
        nonint = np.abs(y - np.round(y)) > 1e-7
        if nonint.any():
            raise DataError(f"the Poisson response '{frame.response}' must be counts; "
                            f"{int(nonint.sum())} value(s) are not integers")
    return cbind


def _split_control(control: dict | None) -> tuple[dict, dict]:
    control = dict(control or {})
    glmm_opts = dict(GLMM_DEFAULTS)
    for k in list(control):
        if k in GLMM_DEFAULTS:
            glmm_opts[k] = control.pop(k)
    return control_options(control), glmm_opts


def glmer(
    formula: str,
    data: Any,
    family: str | Family = "binomial",
    link: str | None = None,
    nagq: int = 1,
    weights: Any = None,
    offset: Any = None,
    control: dict | None = None,
) -> GlmmFit:
    """Fit a generalized linear mixed model by maximum likelihood (lme4's ``glmer``).

    Parameters
    ----------
    formula : str
        lme4 syntax. Binomial responses: 0/1 (numbers or booleans), a two-level factor (the
        first level is failure), ``cbind(successes, failures)``, or a proportion with
        ``weights`` = trials. Poisson responses: non-negative integer counts.
        ``offset(log(exposure))`` adds a known term to the linear predictor.
    data : pandas or polars DataFrame (or a dict of columns)
    family : ``"binomial"`` (default), ``"poisson"``, or a family object from
        :mod:`multilevel.families`. Gamma and inverse Gaussian are not supported (a
        ``ModelSpecError`` says so); a gaussian model is :func:`multilevel.lmer`.
    link : str, optional
        ``"logit"`` (default), ``"probit"``, ``"cloglog"`` for binomial; ``"log"`` (default),
        ``"identity"``, ``"sqrt"`` for Poisson. Non-canonical links use the expected (Fisher)
        information in the Laplace approximation, as lme4 does.
    nagq : int
        1 (default): Laplace approximation. > 1: adaptive Gauss-Hermite quadrature with that
        many nodes per group -- only for a single scalar random-effect term such as
        ``(1 | g)``. 0: the fast nAGQ = 0 fit (beta estimated inside PIRLS).
    weights : column name or array, optional
        Prior weights (for a proportion response, the numbers of trials).
    offset : column name or array, optional
    control : dict, optional
        Optimiser settings as for :func:`multilevel.lmer` (``ftol_abs``, ``xtol_abs``,
        ``maxeval``, ``check_conv``, ``conv_tol``; these apply to BOBYQA) plus
        ``optimizer`` (``"auto"``: Newton on the exact gradient where the engine has one,
        else BOBYQA; ``"newton"``; ``"bobyqa"``), ``newton_tol`` (predicted decrease of the
        deviance at which Newton stops, 1e-10), ``pirls_tol`` (1e-13), ``pirls_maxit``,
        ``calc_derivs`` (True / False to force or skip the Hessian behind the default
        covariance; None: lme4's rule) and ``stage1_ftol_abs`` / ``stage1_xtol_abs``.

    Notes
    -----
    logLik, AIC, BIC and ``deviance`` (= -2 logLik) follow lme4, including its nAGQ > 1
    convention of leaving out the saturated-model term (``fit.loglik_full`` adds it);
    ``fit.conditional_deviance`` is what R's ``deviance(glmerfit)`` returns. Families with a
    dispersion parameter (Gamma, inverse Gaussian) are not supported: ``ModelSpecError``.
    lme4 accepts a factor response with more than two levels (first level = failure);
    glmer refuses it (``DataError``) since that is almost always a mistake -- recode it.

    Returns
    -------
    GlmmFit

    Examples
    --------
    >>> import multilevel as ml
    >>> cbpp = ml.datasets.load("cbpp")
    >>> fit = ml.glmer("cbind(incidence, size - incidence) ~ period + (1 | herd)", cbpp)
    >>> round(fit.loglik, 2)
    -92.03
    """
    from multilevel.design.frame import build_model_frame
    from multilevel.results.glmm import GlmmFit

    t_start = time.perf_counter()
    fam = get_family(family, link)
    try:
        nagq = int(nagq)
    except (TypeError, ValueError) as e:
        raise ModelSpecError(f"nagq must be a non-negative integer, not {nagq!r}") from e
    if nagq < 0:
        raise ModelSpecError(f"nagq must be a non-negative integer, not {nagq}")
    opts, gopts = _split_control(control)
    frame = build_model_frame(formula, data, weights=weights, offset=offset, family=fam.name)
    # design.py only warns about non-integer counts; glmer refuses them
    frame.warnings[:] = [w for w in frame.warnings if not w.startswith("non-integer counts")]
    cbind = _check_response(frame, fam, weights is not None)
    if nagq > 1:
        rts = frame.reterms
        if len(rts) != 1 or rts[0].n_terms != 1:
            desc = ", ".join(f"({rt.label})" if rt.label else rt.group for rt in rts)
            raise ModelSpecError(f"nagq > 1 (adaptive Gauss-Hermite quadrature) is only available for "
                                 f"a model with a single scalar random-effect term such as (1 | g); "
                                 f"this model has {desc}. Use nagq=1 (Laplace)")
    ntrials = None
    if fam.name == "binomial" and cbind and frame.weights is not None:
        uw = _user_weights_at(data, weights, frame.rows)
        ntrials = frame.weights if uw is None else np.where(uw > 0, frame.weights / np.where(uw > 0, uw, 1), 0.0)
    problem = GlmmProblem(frame, fam, nagq, ntrials, gopts["pirls_tol"], gopts["pirls_maxit"])
    nt = problem.ntheta
    diag = diagonal_theta(frame, problem.slices)

    # ---- stage 1: nAGQ = 0 criterion over theta ---------------------------------------------
    t0 = time.perf_counter()
    opts1 = dict(opts)
    if nagq > 0:
        # stage 1 only provides the start of stage 2; Newton on the exact gradient needs a
        # rougher one than BOBYQA
        newton_next = problem.has_gradient and gopts["optimizer"] in ("auto", "newton")
        f1tol, x1tol = (1e-2, 1e-2) if newton_next else (gopts["stage1_ftol_abs"], gopts["stage1_xtol_abs"])
        opts1["ftol_abs"] = max(opts["ftol_abs"], f1tol)
        opts1["xtol_abs"] = max(opts["xtol_abs"], x1tol)
    if opts1.get("initial_step") is None:
        opts1["initial_step"] = 0.2 if nt else 0.5
    res1 = bobyqa(problem.stage0, problem.theta0, problem.lower, opts1)
    theta1 = res1.x.copy()
    f1 = problem.stage0(theta1)
    if not np.isfinite(f1):
        raise FitError("the fit failed: PIRLS does not converge at the starting values "
                       "(check the response and the model for complete separation)")
    beta1 = np.asarray(problem.core.beta, dtype=float).copy()
    warns = list(res1.warnings)
    fit_log = [("stage1", x, v) for x, v in res1.log]

    # ---- stage 2: the full criterion over (theta, beta) ----------------------------------
    lower = problem.lower_full
    newton = None
    if nagq > 0:
        x0 = np.concatenate([theta1, beta1])
        crit = problem.devfun
        use_newton = problem.has_gradient and gopts["optimizer"] in ("auto", "newton")
        if use_newton:
            newton = newton_fd(problem.devfun_grad, x0, lower, dec_tol=gopts["newton_tol"])
            fit_log += [("stage2", x, v) for x, v in newton.log]
            if not newton.converged:
                # a model the Newton iteration cannot handle: BOBYQA from where it stopped
                x0 = newton.x if np.isfinite(newton.fun) else x0
                newton = None
        if newton is not None:
            xopt, fval = newton.x.copy(), newton.fun
            feval = res1.feval + newton.feval
            code, message = 1, "Newton decrement below tolerance"
            optimizer = "newton"
        else:
            se1 = np.sqrt(np.clip(np.diag(problem.vcov_rx(x0[:nt])), 0, None)) if problem.p else np.zeros(0)
            step = np.concatenate([np.full(nt, 0.05) + 0.05 * np.abs(x0[:nt]),
                                   np.where(np.isfinite(se1) & (se1 > 0), 0.2 * se1, 0.1)])
            opts2 = dict(opts)
            if opts2.get("initial_step") is None:
                opts2["initial_step"] = step
            res2 = bobyqa(problem.devfun, x0, lower, opts2)
            xopt, fval = res2.x.copy(), res2.fun
            warns += res2.warnings
            fit_log += [("stage2", x, v) for x, v in res2.log]
            feval = res1.feval + res2.feval
            code, message = res2.code, res2.message
            optimizer = "bobyqa"
    else:
        xopt, fval = np.concatenate([theta1, beta1]), f1

        def crit(x):
            return problem.stage0(np.asarray(x)[:nt])

        feval = res1.feval
        code, message = res1.code, res1.message
        optimizer = "bobyqa"

    # ---- boundary: theta that the data cannot tell from 0 ---------------------------------
    for i in diag:
        if 0 < xopt[i] < _SING_TOL:
            trial = xopt.copy()
            trial[i] = 0.0
            ft = crit(trial)
            if ft <= fval + 1e-10:
                xopt, fval = trial, ft

    # ---- derivatives (lme4's calc.derivs rule) -------------------------------------------
    theta_opt = xopt[:nt]
    singular_opt = bool(np.any(theta_opt[diag] < _SING_TOL)) if diag.size else False
    npar = nt + problem.p
    calc = gopts["calc_derivs"]
    if calc is None:
        calc = problem.n < _NOBS_MAX and npar < _NPAR_MAX and not singular_opt
    derivs = None
    if nagq > 0 and calc:
        if problem.has_gradient:
            # central differences (lme4's step 1e-4) of the exact gradient: 2n gradients
            # instead of deriv12's 2 n^2 criterion values, the same O(h^2) accuracy
            f0, g = problem.devfun_grad(xopt)
            H = hessian_from_gradient(problem.devfun_grad, xopt, lower, 1e-4, g0=g, central=True)
        else:
            g, H = deriv12(crit, xopt, fx=fval, lower=lower)
        derivs = {"gradient": g, "Hessian": H}
        if opts["check_conv"] and not singular_opt:
            free = ~(np.isfinite(lower) & (xopt - lower <= 1e-7))
            gi, Hi = g[free], H[np.ix_(free, free)]
            try:
                dec = 0.5 * float(gi @ np.linalg.solve(Hi, gi))
            except np.linalg.LinAlgError:
                dec = float("inf")
            if not np.isfinite(dec) or dec < 0 or dec > opts["conv_tol"]:
                warns.append(f"Model may not have converged: a Newton step from the optimum would lower "
                             f"the deviance by {dec:.2g} (max|grad| = {np.abs(gi).max():.3g})")
    elif newton is not None and opts["check_conv"] and newton.decrement > opts["conv_tol"]:
        warns.append(f"Model may not have converged: a Newton step from the optimum would lower the "
                     f"deviance by {newton.decrement:.2g}")

    # ---- the state at the optimum ----------------------------------------------------------
    if nagq > 0:
        fval = crit(xopt)
    else:
        fval = problem.stage0(theta_opt)
        xopt = np.concatenate([theta_opt, np.asarray(problem.core.beta, dtype=float)])
    if not np.isfinite(fval):
        raise FitError("the fit failed: the criterion is not finite at the estimate")
    theta_opt, beta_opt = problem.split(xopt)
    info = dict(problem.core.info())
    b = problem.blocks(problem.core.b(theta_opt))
    u = problem.blocks(problem.core.u())
    eta = np.asarray(problem.core.eta())
    mu = np.asarray(problem.core.mu())
    vcov_rx = problem.vcov_rx(theta_opt)
    vcov = vcov_rx
    if derivs is not None:
        try:
            hinv = np.linalg.inv(derivs["Hessian"])
            vh = (hinv + hinv.T)[nt:, nt:]
            if np.all(np.isfinite(vh)) and (vh.size == 0 or np.linalg.eigvalsh(vh).min() > 0):
                vcov = vh
            else:
                warns.append("variance-covariance matrix computed from finite-difference Hessian is "
                             "not positive definite or contains NA values: falling back to var-cov "
                             "estimated from RX")
        except np.linalg.LinAlgError:
            warns.append("variance-covariance matrix computed from finite-difference Hessian is not "
                         "positive definite or contains NA values: falling back to var-cov estimated "
                         "from RX")
    condvar = problem.condvar(theta_opt)
    is_sing = bool(np.any(theta_opt[diag] < opts["singular_tol"])) if diag.size else False
    messages = list(frame.warnings)
    if is_sing:
        messages.append(SINGULAR_MESSAGE)
    messages.extend(warns)
    for m in messages:
        _warnings.warn(m, MultilevelWarning, stacklevel=2)
    saturated = 0.0
    if nagq > 1:
        wt = np.ones(frame.nobs) if frame.weights is None else frame.weights
        ntr = ntrials if ntrials is not None else np.ones(frame.nobs)
        saturated = fam.saturated_loglik(frame.y, ntr, wt)
    optinfo = {
        "optimizer": optimizer,
        "feval": feval,
        "feval_total": problem.nevals,
        "code": code,
        "message": message,
        "fit_log": fit_log,
        "messages": list(warns),
        "derivs": derivs,
        "stage1": {"theta": theta1, "beta": beta1, "objective": f1, "feval": res1.feval},
        "time": time.perf_counter() - t0,
        "time_total": time.perf_counter() - t_start,
    }
    fit = GlmmFit(
        frame=frame,
        family=fam,
        nagq=nagq,
        theta=theta_opt,
        beta=beta_opt,
        vcov=vcov,
        vcov_rx=vcov_rx,
        b=b,
        u=u,
        condvar=condvar,
        loglik=-fval / 2.0,
        conditional_deviance=float(info["dev"]),
        saturated_loglik=saturated,
        eta=eta,
        mu=mu,
        ntrials=ntrials,
        converged=not warns,
        warnings=messages,
        optinfo=optinfo,
        weights_name=weights if isinstance(weights, str) else ("(prior weights)" if weights is not None else None),
        problem=problem,  # for inference code (profiles, bootstrap), not part of the API
    )
    return fit
