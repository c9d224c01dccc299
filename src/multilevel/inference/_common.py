"""Helpers shared by the inference functions: access to a fit's engine problem, lme4's
SD/correlation parameterisation of the random effects, and the ML refit of a REML fit.

The inference code talks to the engine through the small interface of
:class:`multilevel.engine.lmm.LmmProblem`: ``objective(theta)``, ``ml_deviance(theta)``,
``solution(theta)``, ``set_y(y)`` and ``fit_theta(problem, ctrl)``. Nothing here runs on a
data frame or a formula.
"""
from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from multilevel.results.mixed import MixedFit
from multilevel.covariance import diagonal_theta, lambda_blocks, psd_cholesky, sdcor_to_theta, theta_to_sdcor  # noqa: F401 - used by inference
from multilevel.covariance import frame_structures
from multilevel.covariance import sdcor_kinds as _sdcor_kinds
from multilevel.covariance import sdcor_names as _sdcor_names
from multilevel.errors import ModelSpecError, MultilevelError
from multilevel.results import GlmmFit, LmmFit

if TYPE_CHECKING:
    from multilevel.results import AnyFit


# --- what kind of fit is this -----------------------------------------------------------


def is_lmm(fit: AnyFit) -> bool:
    """True for a linear mixed model fit (lmer) that carries its engine problem. By type:
    LmmFit, GlmmFit and LmFit are siblings, so a GLMM or an lm fit is never taken for one."""
    return isinstance(fit, LmmFit) and (fit.getme("problem") if isinstance(fit, MixedFit) else None) is not None


def is_glmm(fit: AnyFit) -> bool:
    """True for a generalized linear mixed model fit (glmer)."""
    return isinstance(fit, GlmmFit)


def lmm_problem(fit: AnyFit, what: str):
    """The engine problem of an LMM fit, or a clear error for anything else."""
    if is_glmm(fit):
        raise ModelSpecError(f"{what} is available for linear mixed models (lmer) only, "
                             f"not for a {getattr(fit, 'family', '?')} GLMM")
    prob = (fit.getme("problem") if isinstance(fit, MixedFit) else None)
    if prob is None and isinstance(fit, LmmFit) and fit.sigma == 0:
        raise ModelSpecError(f"{what} is not available for a perfect fit: the fixed effects "
                             f"reproduce the response exactly (sigma = 0), so there is no "
                             f"uncertainty to describe")
    if prob is None:
        raise MultilevelError(f"{what} needs a fit made by multilevel.lmer (it keeps the engine "
                              f"problem); this object has none")
    return prob


def require_unconstrained(fit: AnyFit, what: str) -> None:
    """Refuse methods that differentiate or profile over θ as free entries of Λ when a term
    is cs() or ar1(): there θ is a function of the structure's parameters, and derivatives
    or profiles over θ would answer another model (diag() terms are fine: θ is their SDs)."""
    frame = getattr(fit, "frame", None)
    if frame is None:
        return
    bad = [f"{cv.code}() on {rt.group}" for rt, cv in zip(frame.reterms, block_sizes(frame)) if not cv.native]
    if bad:
        raise ModelSpecError(f"{what} is not available for models with structured covariance terms "
                             f"({', '.join(bad)}); use method='bootstrap' or Wald intervals, or "
                             f"ddf=None (z tests)")


def block_sizes(frame: Any) -> list:
    """The covariance structure of each term (the covariance layer's blocks)."""
    return frame_structures(frame.reterms)


def diag_positions(sizes: list[int]) -> np.ndarray:
    """Positions in theta of the diagonal entries (the covariance layer's layout)."""
    return diagonal_theta(sizes)


def sdcor_names(frame: Any, sigma: bool = True) -> list[str]:
    """lme4's names (``confint(..., oldNames = FALSE)``): ``sd_(Intercept)|Subject``,
    ``cor_Days.(Intercept)|Subject``, ..., ``sigma``; same order as theta."""
    return _sdcor_names([rt.group for rt in frame.reterms], [list(rt.terms) for rt in frame.reterms],
                        block_sizes(frame), sigma=sigma)


def sdcor_kinds(frame: Any) -> list[str]:
    """'sd' or 'cor' for each theta position."""
    return _sdcor_kinds(block_sizes(frame))


# --- the ML fit of a model ---------------------------------------------------------------


@dataclass
class LmmState:
    """An LMM at its optimum: the problem and the estimates (ML or REML as ``problem.reml``)."""

    problem: Any
    theta: np.ndarray
    beta: np.ndarray
    sigma: float
    vcov: np.ndarray
    objective: float  # -2 logLik (ML) or REML criterion

    @property
    def loglik(self) -> float:
        return -0.5 * self.objective


def state_of(fit: AnyFit) -> LmmState:
    """The fit's own estimates as an :class:`LmmState`."""
    prob = lmm_problem(fit, "this method")
    return LmmState(prob, np.asarray(fit.getme("theta"), float).copy(), np.asarray(fit.getme("beta"), float).copy(),
                    float(fit.getme("sigma")), np.asarray(fit.getme("vcov"), float), -2.0 * float(fit.getme("loglik")))


_ML_CACHE: "weakref.WeakKeyDictionary[Any, LmmState]" = weakref.WeakKeyDictionary()


def ml_state(fit: AnyFit, control: dict | None = None) -> LmmState:
    """The ML estimates of an LMM: the fit itself when it is an ML fit, otherwise lme4's
    ``refitML``: the same model refitted by maximum likelihood, starting at the REML theta.
    The result is cached per fit object."""
    prob = lmm_problem(fit, "the ML refit")
    if not prob.reml:
        return state_of(fit)
    hit = _ML_CACHE.get(fit)
    if hit is not None:
        return hit
    from multilevel.engine.lmm import LmmProblem, fit_theta
    from multilevel.control import LmerControl

    mlp = LmmProblem(prob.input, reml=False)
    opts = LmerControl.from_user(control, check_conv=False)
    start = np.asarray(fit.getme("theta"), float).copy()
    mlp.theta0 = start  # lme4's refitML also starts from the REML estimates
    theta, fval, _info, _w = fit_theta(mlp, opts)
    sol = mlp.solution(theta)
    st = LmmState(mlp, theta, sol["beta"], sol["sigma"], sol["vcov"], sol["objective"])
    _ML_CACHE[fit] = st
    return st


def copy_problem(problem: Any, X: np.ndarray | None = None, fixef_names: list[str] | None = None,
                 reml: bool | None = None):
    """A new engine problem on the same random-effects structure (optionally other fixed
    columns): its own cross products, so it can take new responses independently."""
    from multilevel.engine.lmm import LmmProblem

    inp = problem.input
    if X is not None:
        names = list(fixef_names or [])
        inp = inp.replace(X=np.ascontiguousarray(X, dtype=float),
                          intercept=names.index("(Intercept)") if "(Intercept)" in names else None)
    return LmmProblem(inp, problem.reml if reml is None else reml)


def pwrss_from_residuals(problem: Any, theta: np.ndarray, sol: dict) -> float:
    """The penalised weighted residual sum of squares ||W^1/2 (y - X beta - Z b)||^2 + ||u||^2
    recomputed from the residuals of ``problem.solution(theta)``.

    The engine gets the PWRSS from the cross products (the last diagonal element of the
    Cholesky factor), which cancels digits when the mean of y is large relative to the
    residual SD (rounding noise ~1e-10 relative). Numerical derivatives of the deviance
    amplify that noise; the PWRSS is stationary in (beta, u), so recomputing it from the
    residuals of the solution is accurate to rounding of the sums.
    """
    inp = problem.input
    r = inp.y - problem.fitted(sol["beta"], sol["b"])
    rss = float(np.dot(inp.weights * r, r)) if inp.weights is not None else float(np.dot(r, r))
    u2 = 0.0
    for L, b in zip(lambda_blocks(theta, inp.structures), sol["b"]):
        d = np.abs(np.diag(L))
        Linv = np.linalg.inv(L) if np.all(d > 0) else np.linalg.pinv(L)
        u = np.asarray(b) @ Linv.T  # b_l = Lambda u_l for every level l
        u2 += float(np.sum(u * u))
    return rss + u2
