"""Optimiser wrapper: BOBYQA from NLopt with bounds, a fit log, and the checks users need.

The objective of a mixed model is a smooth function of a few covariance parameters (theta),
some bounded below by 0. BOBYQA builds quadratic models from function values only, which
suits an objective whose gradient would cost as much as many evaluations.

Convergence checks: lme4 tests the finite-difference gradient against a fixed tolerance,
which raises false alarms on large data (the gradient of a deviance grows with n while the
estimate is already exact). We instead ask what a Newton step from the reported optimum would
gain: if the predicted decrease of the deviance is below ``conv_tol`` (default 1e-4 deviance
units, a change in the log-likelihood of 5e-5), the optimum is as good as the data can tell.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import nlopt
import numpy as np

from multilevel.control import LmerControl
from multilevel.errors import FitWarning


@dataclass
class OptResult:
    x: np.ndarray
    fun: float
    feval: int
    code: int
    message: str
    log: list[tuple[np.ndarray, float]] = field(default_factory=list)
    warnings: list[FitWarning] = field(default_factory=list)


_NLOPT_MESSAGES = {
    1: "NLOPT_SUCCESS",
    2: "NLOPT_STOPVAL_REACHED",
    3: "NLOPT_FTOL_REACHED",
    4: "NLOPT_XTOL_REACHED",
    5: "NLOPT_MAXEVAL_REACHED",
    6: "NLOPT_MAXTIME_REACHED",
}

def bobyqa(fun: Callable[[np.ndarray], float], x0: np.ndarray, lower: np.ndarray,
           ctrl: LmerControl, initial_step: Any = None) -> OptResult:
    """Minimise ``fun`` from ``x0`` subject to ``x >= lower`` with NLopt's BOBYQA, with the
    tolerances, evaluation limit and first step of ``ctrl``. ``initial_step`` is the caller's
    own first step (an engine's start values), used where the user set none in ``ctrl``."""
    x0 = np.asarray(x0, dtype=float)
    log: list[tuple[np.ndarray, float]] = []
    first = [None]

    def f(x, grad):
        v = float(fun(x))
        if not np.isfinite(v):
            # Inf would spoil BOBYQA's quadratic model: report the starting value instead
            v = first[0] if first[0] is not None else 1e300
        elif first[0] is None:
            first[0] = v
        log.append((x.copy(), v))
        return v

    n = x0.size
    opt = nlopt.opt(nlopt.LN_BOBYQA, n)
    opt.set_min_objective(f)
    opt.set_lower_bounds(np.where(np.isfinite(lower), lower, -np.inf))
    opt.set_ftol_abs(ctrl.ftol_abs)
    opt.set_ftol_rel(ctrl.ftol_rel)
    opt.set_xtol_abs(ctrl.xtol_abs)
    opt.set_maxeval(ctrl.maxeval)
    step = ctrl.initial_step
    if step is None:
        step = 0.5 if initial_step is None else initial_step
    try:
        steps = np.broadcast_to(np.asarray(step, dtype=float), (n,)).copy()
    except ValueError:
        from multilevel.errors import ControlError

        raise ControlError("initial_step", ctrl.initial_step, f"a number or {n} numbers (one per "
                           f"parameter)") from None
    opt.set_initial_step(steps)
    try:
        x = opt.optimize(x0)
        code = opt.last_optimize_result()
    except nlopt.RoundoffLimited:
        # the best point found is still the answer; NLopt reports it through the log
        x = min(log, key=lambda t: t[1])[0]
        code = 3
    fbest = opt.last_optimum_value() if log else float(fun(x))
    best = min(log, key=lambda t: t[1]) if log else (x, fbest)
    if best[1] < fbest:
        x, fbest = best
    res = OptResult(x=np.asarray(x, float), fun=float(fbest), feval=len(log), code=int(code),
                    message=_NLOPT_MESSAGES.get(int(code), str(code)), log=log)
    if code == 5:
        res.warnings.append(FitWarning("maxeval", f"optimizer (bobyqa) reached maxeval = {ctrl.maxeval} "
                                              f"before converging"))
    return res


def newton_decrement(fun: Callable[[np.ndarray], float], x: np.ndarray, lower: np.ndarray,
                     fx: float) -> tuple[float, np.ndarray]:
    """Predicted decrease of ``fun`` from a Newton step at ``x`` over the free coordinates
    (those not on their lower bound), from central finite differences: 2k evaluations for k
    free parameters. The Hessian is taken as diagonal, which keeps the check's cost linear in
    k (a full one costs k^2/2 more); a stop short of the optimum shows in the gradient either
    way. Returns (decrease, gradient)."""
    x = np.asarray(x, float)
    free = ~(np.isfinite(lower) & (x - lower <= 1e-7))
    idx = np.flatnonzero(free)
    k = idx.size
    g = np.zeros(x.size)
    if k == 0:
        return 0.0, g
    h = 1e-4 * np.maximum(np.abs(x[idx]), 0.1)
    hd = np.empty(k)
    for a, i in enumerate(idx):
        e = np.zeros_like(x)
        e[i] = h[a]
        fp, fm = fun(x + e), fun(x - e)
        g[i] = (fp - fm) / (2 * h[a])
        hd[a] = (fp - 2 * fx + fm) / h[a] ** 2
    gi = g[idx]
    if np.all(hd > 0):
        dec = 0.5 * float(np.sum(gi**2 / hd))
    else:
        # negative curvature: x is not a minimum of the local quadratic model along that
        # coordinate, unless the slope there is negligible
        dec = float(np.abs(gi).max()) if np.abs(gi).max() > 1e-3 else 0.0
    return dec, g
