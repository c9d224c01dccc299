"""lmer: fit a linear mixed model (lme4's lFormula -> mkLmerDevfun -> optimizeLmer -> mkMerMod)."""
from __future__ import annotations

from typing import Any

import numpy as np

from multilevel._blas import dot_thread
from multilevel.control import LmerControl
from multilevel.covariance import is_singular_theta
from multilevel.models.input import engine_input
from multilevel.engine.lmm import LmmProblem, fit_theta
from multilevel.models._arguments import r_arguments
from multilevel.errors import FitError, FitWarning, ModelSpecError, singular_warning
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
    batch_size: int | None = None,
) -> LmmFit:
    """Fit a linear mixed model by REML (default) or maximum likelihood.

    Parameters
    ----------
    formula : str
        lme4 syntax: ``"Reaction ~ Days + (Days | Subject)"``, ``(1 | a/b)``, ``(x || g)``...
        and lme4 2.0's structured covariances ``diag(x | g)``, ``cs(x | g)`` (compound
        symmetry), ``ar1(0 + factor(t) | g)`` (AR(1) over the levels of t), as glmmTMB fits them.
    data : pandas or polars DataFrame (or a dict of columns); or data read in chunks: a path
        or list of paths to Parquet / CSV files (or a directory of them), a
        ``pyarrow.dataset.Dataset``, a ``pyarrow.RecordBatchReader``, a polars ``LazyFrame``,
        a DuckDB relation (out of core: ``multilevel.models.chunked``), or a Dask DataFrame
        (each pass a Dask computation). The fit equals the in-memory fit of the same rows.
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
    batch_size : int, optional
        Rows per batch for data read in chunks (default 262,144); peak memory grows with it.

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
    from multilevel.models.chunked import chunked_runner, lmer_chunked
    runner = chunked_runner(data, batch_size)
    if runner is not None:  # data read in chunks: out of core or on Dask
        return lmer_chunked(formula, data, reml=reml, weights=weights, offset=offset, ctrl=ctrl,
                            contrasts=contrasts, runner=runner)
    frame = build_model_frame(formula, data, weights=weights, offset=offset, family="gaussian",
                              contrasts=contrasts, max_dense_gib=ctrl.max_dense_gib)
    n, p = frame.X.shape
    if reml and n <= p:
        # lme4: "objective in x0 returns NA" (REML has n - p = 0 residual degrees of freedom)
        raise ModelSpecError(f"REML needs more observations than fixed effects: {n} observations "
                             f"and {p} estimable fixed-effect columns; fit by maximum likelihood "
                             f"(reml=False) or with fewer fixed effects")
    problem = LmmProblem(engine_input(frame, max_cov_params=ctrl.max_cov_params), reml)
    # a response the fixed effects reproduce exactly (y in the span of X): the factorisation
    # fails at every theta; the start's objective is the optimiser's first evaluation, which
    # the engine keeps, so the check costs nothing
    if not np.isfinite(problem.objective(problem.theta0)):
        exact = _exact_beta(frame, np.inf)
        if exact is None:
            raise FitError("the fit failed: the mixed-model equations are singular at the start "
                           "(the block of the fixed effects and the response is not positive "
                           "definite)")
        return _perfect_fit(frame, problem, exact, reml, ctrl, weights)
    theta, fval, optinfo, warns = fit_theta(problem, ctrl)
    sol = problem.solution(theta)
    exact = _exact_beta(frame, sol["pwrss"])  # or the residuals are rounding noise
    if exact is not None:
        return _perfect_fit(frame, problem, exact, reml, ctrl, weights)
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


def _exact_beta(frame, pwrss: float) -> np.ndarray | None:
    """The fixed effects when y lies in the span of X (a constant response, y = 2x + 1, as
    many estimable columns as rows), else None. ``pwrss``: the engine's penalised RSS (inf
    where its factorisation failed, as it does at every theta for an exact zero residual);
    its cross products lose half the digits, so an exact fit shows as ~1e-16 of the sum of
    squares, which least squares on X (QR, accurate to rounding) then confirms."""
    y = frame.y if frame.offset is None else frame.y - frame.offset
    w = frame.weights
    if np.isfinite(pwrss):
        # (np.average without weights is the mean: the same sum and division, without its
        # argument checks, which cost as much as the rest of this test for a small fit)
        centre = (float(np.add.reduce(y)) / len(y) if w is None else np.average(y, weights=w)) \
            if frame.has_intercept else 0.0
        yc = y - centre
        with dot_thread(len(yc)):  # (no product with 1.0: a copy of y)
            ss = float(np.dot(yc if w is None else yc * w, yc))
        if ss > 0 and pwrss > 1e-10 * ss:
            return None
    X = frame.X
    sw = None if w is None else np.sqrt(w)
    Xw, yw = (X, y) if sw is None else (X * sw[:, None], y * sw)
    beta = np.linalg.lstsq(Xw, yw, rcond=None)[0] if X.shape[1] else np.zeros(0)
    resid = float(np.linalg.norm(yw - Xw @ beta))
    if resid > 1e-10 * max(float(np.linalg.norm(yw)), np.finfo(float).tiny):
        return None
    return beta


def _perfect_fit(frame, problem: LmmProblem, beta: np.ndarray, reml: bool, ctrl: LmerControl,
                 weights: Any) -> LmmFit:
    """The fit of a response that the fixed effects reproduce exactly (zero residuals).

    The likelihood is unbounded (sigma -> 0), so there is no optimum to search: the limit is
    beta from least squares, sigma = 0, every random-effect variance 0 (theta = 0, a singular
    fit), b = 0, standard errors 0 and log-likelihood +Inf. lme4 fits the same model and
    reports rounding noise of that limit (sigma ~ 1e-16, a REML criterion of -4000, "Model
    failed to converge"); here the numbers are exact and the warning names the cause."""
    from multilevel.results.lmm import LmmFit

    X = frame.X
    y = frame.y if frame.offset is None else frame.y - frame.offset
    what = ("the response is constant" if np.ptp(y) == 0 else
            "the response is an exact linear function of the fixed effects")
    records = list(frame.warnings) + [
        FitWarning("perfect_fit", f"{what} (every residual is 0): sigma and every random-effect "
                                  f"variance are 0 and the log-likelihood is infinite"),
        singular_warning()]
    messages = issue(records, ctrl, stacklevel=3)
    rts = frame.reterms
    p = X.shape[1]
    return LmmFit(
        frame=frame, reml=reml, theta=np.zeros_like(problem.theta0), beta=beta,
        vcov=np.zeros((p, p)), sigma=0.0,
        b=[np.zeros((rt.n_levels, rt.n_terms)) for rt in rts],
        condvar=[np.zeros((rt.n_levels, rt.n_terms, rt.n_terms)) for rt in rts],
        loglik=np.inf, deviance_ml=-np.inf, reml_criterion=-np.inf if reml else None,
        fitted=X @ beta + (0.0 if frame.offset is None else frame.offset), converged=False,
        warnings=messages,
        optinfo={"optimizer": "none", "feval": 0, "code": 0,
                 "message": "perfect fit: the likelihood is unbounded, nothing to optimise",
                 "fit_log": [], "messages": list(messages), "time": 0.0},
        weights_name=weights if isinstance(weights, str) else None,
        problem=None, singular_tol=ctrl.singular_tol)
