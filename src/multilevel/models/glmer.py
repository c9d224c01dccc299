"""glmer: fit a generalized linear mixed model (lme4's glFormula -> mkGlmerDevfun -> optimizeGlmer -> mkMerMod)."""
from __future__ import annotations

import time
from typing import Any

import numpy as np

from multilevel.control import GlmerControl, LmerControl
from multilevel.covariance import BOUNDARY_SNAP_TOL, is_singular_theta
from multilevel.design import ModelFrame
from multilevel.models.input import engine_input
from multilevel.engine.glmm import _NOBS_MAX, _NPAR_MAX, GlmmProblem, deriv12, hessian_from_gradient, newton_fd
from multilevel.engine.optimize import bobyqa
from multilevel.errors import FitError, FitWarning, ModelSpecError, singular_warning
from multilevel.models._warn import issue
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


def _is_cbind(frame: ModelFrame) -> bool:
    """A ``cbind(successes, failures)`` response (its trials are in the frame's weights)."""
    return frame.response.replace(" ", "").startswith("cbind(")


_HESSIAN_MESSAGE = ("variance-covariance matrix computed from finite-difference Hessian is not "
                    "positive definite or contains NA values: falling back to var-cov estimated "
                    "from RX")


def glmer(
    formula: str,
    data: Any,
    family: str | Family = "binomial",
    link: str | None = None,
    nagq: int = 1,
    weights: Any = None,
    offset: Any = None,
    control: dict | GlmerControl | LmerControl | None = None,
) -> GlmmFit:
    """Fit a generalized linear mixed model by maximum likelihood (lme4's ``glmer``).

    Parameters
    ----------
    formula : str
        lme4 syntax, with lme4 2.0's ``diag()``, ``cs()`` and ``ar1()`` random-effect terms
        (see :func:`multilevel.lmer`). Binomial responses: 0/1 (numbers or booleans), a two-level factor (the
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
    control : dict or :class:`~multilevel.control.GlmerControl`, optional
        Optimiser settings and checks as for :func:`multilevel.lmer` (``ftol_abs``,
        ``xtol_abs``, ``maxeval``, ``check_conv``, ``conv_tol``, ``singular_tol``,
        ``check_singular``, ``check_rank``; the tolerances apply to BOBYQA) plus
        ``optimizer`` (``"auto"``: Newton on the exact gradient where the engine has one,
        else BOBYQA; ``"newton"``; ``"bobyqa"``), ``newton_tol`` (predicted decrease of the
        deviance at which Newton stops, 1e-10), ``pirls_tol`` (1e-13), ``pirls_maxit``,
        ``calc_derivs`` (True / False to force or skip the Hessian behind the default
        covariance; None: lme4's rule), ``stage1_ftol_abs`` / ``stage1_xtol_abs`` and
        ``check_hessian``. A bad key or value raises :class:`~multilevel.errors.ControlError`.

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
    ctrl = GlmerControl.from_user(control)
    frame = build_model_frame(formula, data, weights=weights, offset=offset, family=fam.name)
    cbind = _is_cbind(frame)
    # the family owns its response rules (design only reads the response)
    resp_warnings = fam.check_response(frame.y, frame.weights, frame.factor_levels.get(frame.response),
                                       cbind, name=frame.response)
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
    problem = GlmmProblem(engine_input(frame), fam, nagq, ntrials, ctrl.pirls_tol, ctrl.pirls_maxit)
    # with cs() or ar1() terms the optimiser moves the structures' parameters (pm), which the
    # covariance layer maps to the engine's θ; otherwise pm is the identity
    pm = problem.pmap
    nt = pm.npar
    diag = pm.diagonal  # SD-like parameters with bound 0 (Λ's diagonal for native structures)
    stage0 = pm.wrap(problem.stage0)

    # ---- stage 1: nAGQ = 0 criterion over theta ---------------------------------------------
    t0 = time.perf_counter()
    ctrl1 = ctrl
    if nagq > 0:
        # stage 1 only provides the start of stage 2; Newton on the exact gradient needs a
        # rougher one than BOBYQA
        newton_next = problem.has_gradient and ctrl.optimizer in ("auto", "newton")
        f1tol, x1tol = (1e-2, 1e-2) if newton_next else (ctrl.stage1_ftol_abs, ctrl.stage1_xtol_abs)
        ctrl1 = ctrl1.with_(ftol_abs=max(ctrl.ftol_abs, f1tol), xtol_abs=max(ctrl.xtol_abs, x1tol))
    if ctrl1.initial_step is None:
        ctrl1 = ctrl1.with_(initial_step=0.2 if nt else 0.5)
    res1 = bobyqa(stage0, pm.start(problem.theta0), pm.lower, ctrl1)
    for start in pm.restarts(res1.x):  # cs() / ar1(): the other side of each rho (bimodal)
        alt = bobyqa(stage0, start, pm.lower, ctrl1)
        alt.feval += res1.feval
        alt.log = res1.log + alt.log
        if alt.fun < res1.fun - 1e-10:
            res1 = alt
        else:
            res1.feval, res1.log = alt.feval, alt.log
    theta1 = res1.x.copy()
    f1 = stage0(theta1)
    if not np.isfinite(f1):
        raise FitError("the fit failed: PIRLS does not converge at the starting values "
                       "(check the response and the model for complete separation)")
    beta1 = np.asarray(problem.core.beta, dtype=float).copy()
    warns = list(res1.warnings)
    fit_log = [("stage1", x, v) for x, v in res1.log]

    # ---- stage 2: the full criterion over (theta, beta) ----------------------------------
    lower = np.concatenate([pm.lower, np.full(problem.p, -np.inf)])
    newton = None
    if nagq > 0:
        x0 = np.concatenate([theta1, beta1])
        crit = pm.wrap_full(problem.devfun)
        use_newton = problem.has_gradient and ctrl.optimizer in ("auto", "newton")
        if use_newton:
            newton = newton_fd(problem.devfun_grad, x0, lower, dec_tol=ctrl.newton_tol)
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
            se1 = np.sqrt(np.clip(np.diag(problem.vcov_rx(pm.to_theta(x0[:nt]))), 0, None)) if problem.p else np.zeros(0)
            step = np.concatenate([np.full(nt, 0.05) + 0.05 * np.abs(x0[:nt]),
                                   np.where(np.isfinite(se1) & (se1 > 0), 0.2 * se1, 0.1)])
            ctrl2 = ctrl if ctrl.initial_step is not None else ctrl.with_(initial_step=step)
            res2 = bobyqa(crit, x0, lower, ctrl2)
            for start in pm.edge_restarts(res2.x[:nt]):  # cs() / ar1() SDs at 0: try the interior
                alt = bobyqa(crit, np.concatenate([start, res2.x[nt:]]), lower, ctrl2)
                alt.feval += res2.feval
                alt.log = res2.log + alt.log
                if alt.fun < res2.fun - 1e-10:
                    res2 = alt
                else:
                    res2.feval, res2.log = alt.feval, alt.log
            xopt, fval = res2.x.copy(), res2.fun
            warns += res2.warnings
            fit_log += [("stage2", x, v) for x, v in res2.log]
            feval = res1.feval + res2.feval
            code, message = res2.code, res2.message
            optimizer = "bobyqa"
    else:
        xopt, fval = np.concatenate([theta1, beta1]), f1

        def crit(x):
            return stage0(np.asarray(x)[:nt])

        feval = res1.feval
        code, message = res1.code, res1.message
        optimizer = "bobyqa"

    # ---- boundary: theta that the data cannot tell from 0 ---------------------------------
    for i in diag:
        if 0 < xopt[i] < BOUNDARY_SNAP_TOL:
            trial = xopt.copy()
            trial[i] = 0.0
            ft = crit(trial)
            if ft <= fval + 1e-10:
                xopt, fval = trial, ft

    # ---- derivatives (lme4's calc.derivs rule) -------------------------------------------
    theta_opt = pm.to_theta(xopt[:nt])
    # lme4's getSingTol(): the singular tolerance also decides whether derivatives are taken
    sizes = problem.input.structures
    singular_opt = is_singular_theta(theta_opt, sizes, ctrl.singular_tol)
    npar = nt + problem.p
    calc = ctrl.calc_derivs
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
        if ctrl.conv_check_on and not singular_opt:
            lower_chk = np.concatenate([pm.check_lower(xopt[:nt]), lower[nt:]])  # rho at an end: a bound
            free = ~(np.isfinite(lower_chk) & (xopt - lower_chk <= 1e-7))
            gi, Hi = g[free], H[np.ix_(free, free)]
            try:
                dec = 0.5 * float(gi @ np.linalg.solve(Hi, gi))
            except np.linalg.LinAlgError:
                dec = float("inf")
            if not np.isfinite(dec) or dec < 0 or dec > ctrl.conv_tol:
                warns.append(FitWarning("not_converged",
                                        f"Model may not have converged: a Newton step from the optimum "
                                        f"would lower the deviance by {dec:.2g} "
                                        f"(max|grad| = {np.abs(gi).max():.3g})"))
    elif newton is not None and ctrl.conv_check_on and newton.decrement > ctrl.conv_tol:
        warns.append(FitWarning("not_converged",
                                f"Model may not have converged: a Newton step from the optimum would "
                                f"lower the deviance by {newton.decrement:.2g}"))

    # ---- the state at the optimum ----------------------------------------------------------
    if nagq > 0:
        fval = crit(xopt)
    else:
        fval = problem.stage0(theta_opt)
        xopt = np.concatenate([xopt[:nt], np.asarray(problem.core.beta, dtype=float)])
    if not np.isfinite(fval):
        raise FitError("the fit failed: the criterion is not finite at the estimate")
    par_opt, beta_opt = xopt[:nt].copy(), xopt[nt:].copy()
    theta_opt = pm.to_theta(par_opt)
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
                warns.append(FitWarning("hessian_not_pd", _HESSIAN_MESSAGE))
        except np.linalg.LinAlgError:
            warns.append(FitWarning("hessian_not_pd", _HESSIAN_MESSAGE))
    condvar = problem.condvar(theta_opt)
    # the same test with the same tolerance as fit.is_singular (the fit stores ctrl.singular_tol)
    is_sing = is_singular_theta(theta_opt, sizes, ctrl.singular_tol)
    records = list(frame.warnings) + resp_warnings + ([singular_warning()] if is_sing else []) + warns
    messages = issue(records, ctrl, stacklevel=2)
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
        "stage1": {"theta": pm.to_theta(theta1), "beta": beta1, "objective": f1, "feval": res1.feval},
        "time": time.perf_counter() - t0,
        "time_total": time.perf_counter() - t_start,
    }
    if not pm.native:
        optinfo["par"] = par_opt  # the structures' parameters (ParameterMap) at the optimum
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
        singular_tol=ctrl.singular_tol,
    )
    return fit
