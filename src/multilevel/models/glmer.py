"""glmer: fit a generalized linear mixed model (lme4's glFormula -> mkGlmerDevfun -> optimizeGlmer -> mkMerMod)."""
from __future__ import annotations

import functools

import time
from typing import Any

import numpy as np

from multilevel.control import GlmerControl, LmerControl
from multilevel.covariance import BOUNDARY_SNAP_TOL, is_singular_theta
from multilevel.design import ModelFrame
from multilevel.models.input import engine_input
from multilevel.engine.glmm import (_NOBS_MAX, _NPAR_MAX, GlmmProblem, deriv12,
                                    hessian_from_gradient, newton_fd, rounding_level)
from multilevel.engine.optimize import (best_of_restarts, bobyqa, interior_start, newton_polish, newton_step,
                                       restart_if_boundary)
from multilevel.models._arguments import r_arguments
from multilevel.errors import FitError, FitWarning, ModelSpecError, singular_warning
from multilevel.models._warn import issue
from multilevel.families import Family, get_family
from multilevel.models.nb_theta import fit_nb
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


class _Skipped:
    """Stage 1's result when stage 2 starts at a given point (no evaluations of its own)."""

    feval = 0
    code, message = 0, "stage 1 skipped: stage 2 started at the given point"

    def __init__(self, x: np.ndarray, fun: float):
        self.x, self.fun = x, fun
        self.warnings: list = []
        self.log: list = []


_HESSIAN_MESSAGE = ("variance-covariance matrix computed from finite-difference Hessian is not "
                    "positive definite or contains NA values: falling back to var-cov estimated "
                    "from RX")


@functools.lru_cache(maxsize=16)
def _stage1_control(ctrl: GlmerControl, full: bool, newton_next: bool, has_theta: bool) -> GlmerControl:
    """The control of stage 1 (cached: controls are frozen). With a stage 2 to follow
    (``full``) stage 1 only provides its start; Newton on the exact gradient needs a rougher
    one than BOBYQA."""
    ctrl1 = ctrl
    if full:
        f1tol, x1tol = (1e-2, 1e-2) if newton_next else (ctrl.stage1_ftol_abs, ctrl.stage1_xtol_abs)
        ctrl1 = ctrl1.with_(ftol_abs=max(ctrl.ftol_abs, f1tol), xtol_abs=max(ctrl.xtol_abs, x1tol))
    if ctrl1.initial_step is None:
        ctrl1 = ctrl1.with_(initial_step=0.2 if has_theta else 0.5)
    return ctrl1


@r_arguments(nAGQ="nagq")
def glmer(
    formula: str,
    data: Any,
    family: str | Family = "binomial",
    link: str | None = None,
    nagq: int = 1,
    weights: Any = None,
    offset: Any = None,
    control: dict | GlmerControl | LmerControl | None = None,
    contrasts: dict | None = None,
    nb_theta: float | None = None,
    batch_size: int | None = None,
    _theta_start: np.ndarray | None = None,
    _keep_partitions: bool = False,
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
    data : pandas or polars DataFrame (or a dict of columns); or data read in chunks, as for
        :func:`multilevel.lmer`: Parquet / CSV files or a directory of them, a pyarrow Dataset
        or RecordBatchReader, a polars LazyFrame, a DuckDB relation, a Dask DataFrame. Those
        are fitted partition by partition (``models.glmer_chunked``) when the random effects
        nest in one grouping factor (``(1 | g)``, ``(1 + x | g)``, ``(1 | a/b)``); crossed
        GLMMs need the data in memory (:class:`~multilevel.models.glmer_chunked.CrossedGlmmError`).
    family : ``"binomial"`` (default), ``"poisson"``, ``"Gamma"``, ``"inverse.gaussian"``,
        ``"negative.binomial"`` (R's names; also ``"gamma"``, ``"inverse_gaussian"``,
        ``"negative_binomial"``), or a family object from :mod:`multilevel.families`; a
        gaussian model is :func:`multilevel.lmer`. Gamma and inverse Gaussian follow lme4's
        conventions for the dispersion (``fit.sigma`` as lme4's ``sigma()``; see
        ``multilevel.families.gamma``). The negative binomial's theta is ``nb_theta`` (or
        the family object's ``theta``); without one it is estimated as lme4's ``glmer.nb``
        does (:func:`multilevel.glmer_nb`).
    link : str, optional
        ``"logit"`` (default), ``"probit"``, ``"cloglog"`` for binomial; ``"log"`` (default),
        ``"identity"``, ``"sqrt"`` for Poisson; ``"inverse"`` (default), ``"log"``,
        ``"identity"`` for Gamma; ``"1/mu^2"`` (default), ``"inverse"``, ``"log"``,
        ``"identity"`` for the inverse Gaussian; ``"log"`` for the negative binomial.
        Non-canonical links use the expected (Fisher) information in the Laplace
        approximation, as lme4 does.
    nagq : int
        1 (default): Laplace approximation. > 1: adaptive Gauss-Hermite quadrature with that
        many nodes per group -- only for a single scalar random-effect term such as
        ``(1 | g)``. 0: the fast nAGQ = 0 fit (beta estimated inside PIRLS). R's spelling
        ``nAGQ=`` is accepted too.
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
    batch_size : int, optional
        Data read in chunks: rows per batch, and about the rows per partition of whole groups.
    contrasts : dict, optional
        lme4's ``contrasts=``: factor of the fixed part -> ``"treatment"``, ``"sum"``,
        ``"helmert"``, ``"poly"``, ``"SAS"`` (R's ``"contr.sum"`` spelling too) or a matrix
        (numpy array or DataFrame) with one row per level, e.g. ``{"sector": "sum"}``.
        Unnamed factors get R's defaults: treatment contrasts, ``contr.poly`` for ordered
        pandas Categoricals (columns ``f.L``, ``f.Q``, ``f.C``, ``f^4``, ...). The contrasts
        used are in ``fit.contrasts`` and ``fit.to_dict()["fixed_contrasts"]``; ``predict``
        re-applies them. A name that is not a factor of the fixed part, an unknown contrast or
        a matrix of the wrong shape raises :class:`~multilevel.errors.ModelSpecError`.

    Notes
    -----
    logLik, AIC, BIC and ``deviance`` (= -2 logLik) follow lme4, including its nAGQ > 1
    convention of leaving out the saturated-model term (``fit.loglik_full`` adds it);
    ``fit.conditional_deviance`` is what R's ``deviance(glmerfit)`` returns. For the families
    with a dispersion (Gamma, inverse Gaussian) the criterion is lme4's: R's ``family$aic`` at
    the modes with phi = sum of unit deviances / sum(w), + log det + |u|^2 (not the maximum
    likelihood glmmTMB computes); ``fit.sigma`` is lme4's ``sigma()``, sqrt((Pearson
    chi-square + |u|^2) / n), which also scales ``varcorr`` and ``vcov_use_hessian_false``;
    nagq > 1 is refused for them. ``fit.npar`` counts the dispersion and the negative
    binomial's theta, as lme4's logLik df.
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
    if fam.name == "negative.binomial":
        if nb_theta is not None:
            fam = fam.with_theta(nb_theta)
        elif fam.param is None:  # glmer.nb: theta estimated by an outer optimisation
            return fit_nb(glmer, formula, data, link=fam.link.name, nagq=nagq, weights=weights,
                          offset=offset, control=control, contrasts=contrasts)
    elif nb_theta is not None:
        raise ModelSpecError(f"nb_theta is the negative binomial's theta; family '{fam.name}' has none")
    try:
        nagq = int(nagq)
    except (TypeError, ValueError) as e:
        raise ModelSpecError(f"nagq must be a non-negative integer, not {nagq!r}") from e
    if nagq < 0:
        raise ModelSpecError(f"nagq must be a non-negative integer, not {nagq}")
    if nagq > 1 and fam.has_dispersion:
        raise ModelSpecError(f"nagq > 1 is not available for the {fam.name} family (lme4's quadrature "
                             f"leaves its dispersion out); use nagq=1 (Laplace)")
    ctrl = GlmerControl.from_user(control)
    from multilevel.models.chunked import chunked_runner
    runner = chunked_runner(data, batch_size)
    if runner is not None:  # data read in chunks: out of core or on Dask
        from multilevel.models.glmer_chunked import glmer_chunked

        return glmer_chunked(formula, data, fam=fam, nagq=nagq, weights=weights, offset=offset,
                             ctrl=ctrl, contrasts=contrasts, runner=runner,
                             fit_problem=_fit_problem, t_start=t_start, theta_start=_theta_start,
                             keep_partitions=_keep_partitions)
    frame = build_model_frame(formula, data, weights=weights, offset=offset, family=fam.name,
                              contrasts=contrasts, max_dense_gib=ctrl.max_dense_gib)
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
    problem = GlmmProblem(engine_input(frame, max_cov_params=ctrl.max_cov_params), fam, nagq,
                          ntrials, ctrl.pirls_tol, ctrl.pirls_maxit)
    weights_name = weights if isinstance(weights, str) else ("(prior weights)" if weights is not None else None)
    return _fit_problem(problem, frame, ctrl, resp_warnings, ntrials, weights_name, t_start,
                        theta_start=_theta_start, stacklevel=3)


def _fit_problem(problem: GlmmProblem, frame: ModelFrame, ctrl: GlmerControl, resp_warnings: list,
                 ntrials: np.ndarray | None, weights_name: str | None, t_start: float, *,
                 theta_start: np.ndarray | None = None, x_start: np.ndarray | None = None,
                 emit: bool = True, stacklevel: int = 2) -> GlmmFit:
    """The fit of a built problem (glmer's stages 1 and 2, the checks and the packing).

    ``theta_start``: stage 1 starts there (glmer.nb's refits). ``x_start`` = (theta, beta) in
    the user's coordinates: stage 2 starts there and stage 1 is skipped (a bootstrap refit
    starting at the original estimates, as lme4's ``refit``); stage 1 still runs when the
    criterion is not finite at ``x_start`` or when nagq = 0 (then it starts at its theta).
    ``emit=False`` keeps the warnings in ``fit.warnings`` without issuing them."""
    fam = problem.family
    nagq = problem.nagq
    # with cs() or ar1() terms the optimiser moves the structures' parameters (pm), which the
    # covariance layer maps to the engine's θ; otherwise pm is the identity
    pm = problem.pmap
    nt = pm.npar
    diag = pm.diagonal  # SD-like parameters with bound 0 (Λ's diagonal for native structures)
    stage0 = pm.wrap(problem.stage0)

    # ---- stage 1: nAGQ = 0 criterion over theta ---------------------------------------------
    t0 = time.perf_counter()
    newton_next = problem.has_gradient and ctrl.optimizer in ("auto", "newton")
    try:
        ctrl1 = _stage1_control(ctrl, nagq > 0, newton_next, nt > 0)
    except TypeError:  # an unhashable setting (an array of first steps): not cached
        ctrl1 = _stage1_control.__wrapped__(ctrl, nagq > 0, newton_next, nt > 0)
    # glmer.nb's refits start from the previous theta-hat
    structures = problem.input.structures
    warm = None
    if x_start is not None:
        xs = np.asarray(x_start, float)
        th_s = np.maximum(xs[:problem.ntheta], problem.lower)
        if nagq == 0:
            theta_start = th_s
        else:
            xw = problem.x_in(np.concatenate([th_s, xs[problem.ntheta:]]))
            xw = np.concatenate([pm.start(th_s), xw[problem.ntheta:]])  # (par, beta_c)
            fw = pm.wrap_full(problem.devfun_c)(xw)
            if np.isfinite(fw):
                warm = (xw, fw)
    if warm is not None:
        # stage 2 starts at the given point: no stage 1 (an empty result in its place)
        res1 = _Skipped(warm[0][:nt].copy(), warm[1])
        theta1, f1 = res1.x.copy(), warm[1]
        beta1 = warm[0][nt:].copy()
    else:
        theta_init = problem.theta0 if theta_start is None else np.maximum(np.asarray(theta_start, float), problem.lower)
        res1 = bobyqa(stage0, pm.start(theta_init), pm.lower, ctrl1)
        # cs() / ar1(): the other side of each rho (bimodal)
        res1 = best_of_restarts(stage0, res1, pm.restarts(res1.x), pm.lower, ctrl1)
        if nagq == 0 and pm.native:  # stage 1 is the fit: a zero SD is checked from the interior
            res1 = restart_if_boundary(stage0, res1, pm.lower, structures, ctrl1)
        theta1 = res1.x.copy()
        f1 = stage0(theta1)
    if warm is not None:
        pass  # beta1 is the start's
    elif np.isfinite(f1):
        beta1 = np.asarray(problem.core.beta, dtype=float).copy()
    else:
        # the joint PIRLS failed at every theta tried: start stage 2 from the GLM's beta at
        # lme4's theta start, and say "separation" only when the GLM shows it
        beta_glm, separated = problem.glm_start()
        par0 = pm.start(problem.theta0)
        f_alt = pm.wrap_full(problem.devfun_c)(np.concatenate([par0, beta_glm])) if (
            beta_glm is not None and nagq > 0) else np.inf
        if not np.isfinite(f_alt):
            why = ("the response is completely separated by the fixed effects (some fitted "
                   "probabilities of the model without random effects are 0 or 1)" if separated
                   else "a numerical failure, not separation: check the scale of the response "
                   "and of the predictors")
            raise FitError(f"the fit failed: PIRLS does not converge at the starting values ({why})")
        theta1, beta1, f1 = par0, beta_glm, f_alt
    warns = list(res1.warnings)
    fit_log = [("stage1", x, v) for x, v in res1.log]

    # ---- stage 2: the full criterion over (theta, beta) ----------------------------------
    # the optimisers work in the engine's coordinates (theta or the structures' parameters,
    # beta_c: centred columns of X, engine.centring); the estimates are mapped back after the
    # optimum is found
    lower = np.concatenate([pm.lower, np.full(problem.p, -np.inf)])
    newton = None
    if nagq > 0:
        x0 = np.concatenate([theta1, beta1])
        crit = pm.wrap_full(problem.devfun_c)
        use_newton = problem.has_gradient and ctrl.optimizer in ("auto", "newton")
        if use_newton:
            newton = newton_fd(problem.devfun_grad_c, x0, lower, dec_tol=ctrl.newton_tol)
            fit_log += problem.log_out("stage2", newton.log)
            if not newton.converged:
                # a model the Newton iteration cannot handle: BOBYQA from where it stopped
                # (where it stopped only if that is better than the start on a fresh
                # evaluation: PIRLS warm-starts from the last evaluation, and a Newton run
                # that wandered off can leave a point it reached finite only from there)
                f_stop = crit(newton.x) if np.isfinite(newton.fun) else np.inf
                if np.isfinite(f_stop) and f_stop < crit(x0):
                    x0 = newton.x
                newton = None
            else:
                # a zero SD: check it against the optimum reached from the interior
                x1 = interior_start(newton.x, structures)
                if x1 is not None:
                    alt = newton_fd(problem.devfun_grad_c, x1, lower, dec_tol=ctrl.newton_tol)
                    fit_log += problem.log_out("stage2", alt.log)
                    alt.feval += newton.feval
                    if alt.converged and alt.fun < newton.fun - 1e-10:
                        newton = alt
                    else:
                        newton.feval = alt.feval
        if newton is not None:
            xopt, fval = newton.x.copy(), newton.fun
            feval = res1.feval + newton.feval
            code, message = 1, "Newton decrement below tolerance"
            optimizer = "newton"
        else:
            try:
                se1 = (np.sqrt(np.clip(np.diag(problem.vcov_rx(pm.to_theta(x0[:nt]), centred=True)), 0, None))
                       if problem.p else np.zeros(0))
            except FitError:  # the last evaluation failed (its weights are gone): unit steps
                se1 = np.full(problem.p, np.nan)
            step = np.concatenate([np.full(nt, 0.05) + 0.05 * np.abs(x0[:nt]),
                                   np.where(np.isfinite(se1) & (se1 > 0), 0.2 * se1, 0.1)])
            ctrl2 = ctrl if ctrl.initial_step is not None else ctrl.with_(initial_step=step)
            res2 = bobyqa(crit, x0, lower, ctrl2)
            if pm.native:  # a zero SD: check it against an optimum reached from the interior
                res2 = restart_if_boundary(crit, res2, lower, structures, ctrl2)
            # cs() / ar1() SDs at 0: try the interior
            res2 = best_of_restarts(crit, res2, [np.concatenate([st, res2.x[nt:]])
                                                 for st in pm.edge_restarts(res2.x[:nt])], lower, ctrl2)
            xopt, fval = res2.x.copy(), res2.fun
            warns += res2.warnings
            fit_log += problem.log_out("stage2", res2.log)
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

    # ---- Newton polish of a derivative-free optimum -----------------------------------------
    # BOBYQA over (theta, beta) stops where its trust region is small, which on a flat ridge
    # is short of the optimum (fixed effects that move by 1e-4 when rows are permuted; a
    # logLik 5.6e-4 low on glmmTMB's epilepsy model); Newton steps on finite differences pin
    # it down; their last decrement is the convergence check when no Hessian is taken below
    polished = None
    if nagq > 0 and optimizer == "bobyqa" and problem.n < _NOBS_MAX and nt + problem.p < _NPAR_MAX:
        # forward-difference off-diagonals (2n + n(n-1)/2 evaluations, not 2n^2): enough for
        # the steps; the covariance below takes lme4's central Hessian at the final point
        pol = newton_polish(crit, xopt, fval, lower, cross="forward", recheck_tol=1e-6)
        feval += pol.feval
        if pol.steps:
            fit_log += [("polish", problem.x_out(pol.x), pol.fun)]
        xopt, fval = pol.x, pol.fun
        polished = (pol.grad, pol.hess)

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
            f0, g = problem.devfun_grad_c(xopt)
            if g is None:  # no gradient at the optimum (PIRLS failed): NaN, never None
                g = np.full(xopt.size, np.nan)
            H = hessian_from_gradient(problem.devfun_grad_c, xopt, lower, 1e-4, g0=g, central=True)
        else:
            g, H = deriv12(crit, xopt, fx=fval, lower=lower)
        derivs = {"gradient": g, "Hessian": H}
        if ctrl.conv_check_on and not singular_opt:
            lower_chk = np.concatenate([pm.check_lower(xopt[:nt]), lower[nt:]])  # rho at an end: a bound
            free = ~(np.isfinite(lower_chk) & (xopt - lower_chk <= 1e-7))
            gi = g[free]
            # the predicted gain of a Newton step (damped where H is not positive definite)
            dec = newton_step(g, H, free)[0]
            if not (np.all(np.isfinite(H)) and np.all(np.isfinite(g))):
                warns.append(FitWarning("not_converged",
                                        "Model may not have converged: the derivatives at the "
                                        "optimum could not be computed (PIRLS fails at points "
                                        "next to it); predictors on very different scales? "
                                        "Consider rescaling them"))
            # (below the criterion's rounding level a predicted gain means nothing: counts
            # of 1e7 give a deviance of 7e9, known to 1e-5)
            elif not np.isfinite(dec) or dec > max(ctrl.conv_tol, rounding_level(fval)):
                warns.append(FitWarning("not_converged",
                                        f"Model may not have converged: a Newton step from the optimum "
                                        f"would lower the deviance by {dec:.2g} "
                                        f"(max|grad| = {np.abs(gi).max():.3g})"))
    elif polished is not None and ctrl.conv_check_on and pol.decrement > max(ctrl.conv_tol, rounding_level(fval)):
        warns.append(FitWarning("not_converged",
                                f"Model may not have converged: a Newton step from the optimum would "
                                f"lower the deviance by {pol.decrement:.2g}"))
    elif newton is not None and ctrl.conv_check_on and newton.decrement > max(ctrl.conv_tol, rounding_level(fval)):
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
    par_opt, beta_opt = problem.split(problem.x_out(xopt))
    theta_opt = pm.to_theta(par_opt)
    info = dict(problem.core.info())
    b = problem.blocks(problem.core.b(theta_opt))
    u = problem.blocks(problem.core.u())
    eta = np.asarray(problem.core.eta())
    mu = np.asarray(problem.core.mu())
    sigma = 1.0
    if fam.has_dispersion:
        # lme4's sigma(fit): sqrt((Pearson chi-square + |u|^2) / n), computed after the fit
        pearson = problem.pearson_chisq(frame, mu)
        sigma = float(np.sqrt((pearson + float(info["usq"])) / frame.nobs))
    vcov_rx = problem.vcov_rx(theta_opt)
    if fam.has_dispersion:
        vcov_rx = sigma**2 * vcov_rx  # lme4's vcov(use.hessian = FALSE): sigma^2 (R_X' R_X)^-1
    vcov = vcov_rx
    if derivs is not None:
        try:
            hinv = np.linalg.inv(derivs["Hessian"])
            vh = problem.xcentring.cov_out((hinv + hinv.T)[nt:, nt:])
            if np.all(np.isfinite(vh)) and (vh.size == 0 or np.linalg.eigvalsh(vh).min() > 0):
                vcov = vh
            else:
                warns.append(FitWarning("hessian_not_pd", _HESSIAN_MESSAGE))
        except np.linalg.LinAlgError:
            warns.append(FitWarning("hessian_not_pd", _HESSIAN_MESSAGE))
    if derivs is not None:  # reported in the user's coordinates
        derivs["gradient"], derivs["Hessian"] = problem.derivs_out(derivs["gradient"], derivs["Hessian"])
    condvar = problem.condvar(theta_opt)
    # the same test with the same tolerance as fit.is_singular (the fit stores ctrl.singular_tol)
    is_sing = is_singular_theta(theta_opt, sizes, ctrl.singular_tol)
    records = list(frame.warnings) + resp_warnings + ([singular_warning()] if is_sing else []) + warns
    messages = issue(records, ctrl, stacklevel=stacklevel, emit=emit)
    saturated = 0.0
    if nagq > 1:
        saturated = problem.saturated_loglik(frame, ntrials)
    optinfo = {
        "optimizer": optimizer,
        "feval": feval,
        "feval_total": problem.nevals,
        "code": code,
        "message": message,
        "fit_log": fit_log,
        "messages": list(warns),
        "derivs": derivs,
        "stage1": {"theta": pm.to_theta(theta1), "beta": problem.xcentring.beta_out(beta1), "objective": f1,
                   "feval": res1.feval},
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
        weights_name=weights_name,
        problem=problem,  # for inference code (profiles, bootstrap), not part of the API
        singular_tol=ctrl.singular_tol,
        sigma=sigma,
    )
    fit._control = ctrl  # the settings a refit (bootstrap) reuses
    return fit


def refit_response(fit: GlmmFit, y: np.ndarray, *, control: dict | GlmerControl | None = None,
                   calc_derivs: bool | None = None, emit: bool = False) -> GlmmFit:
    """The fit of the same model to a new response ``y`` (lme4's ``refit(fit, newresp)``).

    The same family (a negative binomial keeps the fit's theta: lme4's ``refit`` does not
    re-estimate it), link, nagq, offset, prior weights and trials, and the fit's own control
    settings (or ``control``); the optimiser starts at the fit's (theta, beta) and goes
    straight to stage 2. ``y`` is on the frame's scale (binomial: proportions of the
    trials). Warnings are kept in the refit's ``warnings``, issued only with ``emit``.
    ``calc_derivs=False`` skips the finite-difference Hessian (its default covariance is then
    lme4's ``use.hessian = FALSE`` one).
    """
    import dataclasses

    prob0 = fit.getme("problem")
    if prob0 is None:
        raise ModelSpecError("this GLMM fit keeps no engine problem (it was not made by multilevel.glmer)")
    y = np.ascontiguousarray(y, dtype=float)
    if y.shape != (fit.frame.nobs,):
        raise ModelSpecError(f"the new response must have {fit.frame.nobs} values (one per row used), "
                             f"not shape {y.shape}")
    ctrl = getattr(fit, "_control", None) or GlmerControl()
    if control is not None:
        ctrl = GlmerControl.from_user(control)
    if calc_derivs is not None:
        ctrl = ctrl.with_(calc_derivs=bool(calc_derivs))
    problem = GlmmProblem(prob0.input.replace(y=y), fit.family_object, fit.nagq, fit._ntrials,
                          ctrl.pirls_tol, ctrl.pirls_maxit)
    frame = dataclasses.replace(fit.frame, y=y)
    x0 = np.concatenate([np.asarray(fit.getme("theta"), float), np.asarray(fit.getme("beta"), float)])
    out = _fit_problem(problem, frame, ctrl, [], fit._ntrials, fit.weights_name, time.perf_counter(),
                       x_start=x0, emit=emit, stacklevel=3)
    out.data_name = getattr(fit, "data_name", None)
    return out


@r_arguments(nAGQ="nagq")
def glmer_nb(formula: str, data: Any, *, link: str = "log", nagq: int = 1, weights: Any = None,
             offset: Any = None, control: dict | GlmerControl | LmerControl | None = None,
             init_theta: float | None = None, interval: tuple[float, float] | None = None,
             tol: float = 5e-5, contrasts: dict | None = None) -> GlmmFit:
    """Fit a negative binomial GLMM, estimating theta as lme4's ``glmer.nb``.

    A Poisson fit, MASS's ``theta.ml`` at its means for the start, then a one-dimensional
    minimisation of -2 logLik over log(theta) on log(start) +- 3 (lme4's ``optimize`` with
    tolerance 5e-5) with a GLMM fit at each theta. ``glmer(formula, data,
    family="negative.binomial")`` without ``nb_theta`` does the same; with ``nb_theta=`` theta
    is fixed.

    Parameters
    ----------
    formula, data, nagq, weights, offset, control, contrasts : as :func:`glmer`.
    link : the negative binomial's link (``"log"``).
    init_theta : start of theta (default: MASS's ``theta.ml`` at a Poisson fit's means).
    interval : the search interval for log(theta) (default log(start) +- 3, lme4's).
    tol : the tolerance of the search on log(theta) (lme4's 5e-5).

    Returns
    -------
    GlmmFit, with ``fit.nb_theta`` the estimate and ``fit.optinfo["nb"]`` the search.

    Examples
    --------
    >>> import multilevel as ml
    >>> ticks = ml.datasets.load("grouseticks")                                # doctest: +SKIP
    >>> fit = ml.glmer_nb("TICKS ~ YEAR + scale(HEIGHT) + (1 | BROOD) + (1 | LOCATION)", ticks)  # doctest: +SKIP
    >>> round(fit.nb_theta, 3)                                                   # doctest: +SKIP
    3.303
    """
    return fit_nb(glmer, formula, data, link=link, nagq=nagq, weights=weights, offset=offset,
                  control=control, init_theta=init_theta, interval=interval, tol=tol,
                  contrasts=contrasts)
