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


def deriv12(fun, x: np.ndarray, delta: float = 1e-4, fx: float | None = None,
            lower: np.ndarray | None = None, cross: str = "central") -> tuple[np.ndarray, np.ndarray]:
    """Gradient and Hessian of ``fun`` at ``x`` by central differences with steps ``delta``,
    as lme4's ``deriv12``: diagonal from f(x +- delta e_j), off-diagonal from the four
    points (x_i +- delta, x_j +- delta); 2 n^2 evaluations.

    Where x - delta would cross a lower bound the backward step is shortened to the bound
    (as lme4); the formulas here are the correct ones for unequal steps (lme4's reduce to
    them only for equal steps), and at the bound itself the diagonal uses the forward points
    x + delta, x + 2 delta.

    ``cross="forward"`` takes each off-diagonal from the one point x + delta e_i + delta e_j
    and the diagonal points already evaluated (O(delta) instead of O(delta^2) error; 2n +
    n(n-1)/2 evaluations instead of 2 n^2): enough for a Newton step, whose accuracy comes
    from the gradient; the central rule serves covariances reported to users (lme4's).
    """
    x = np.asarray(x, dtype=float)
    nx = x.size
    if fx is None:
        fx = float(fun(x))
    ud = np.full(nx, float(delta))
    ld = np.full(nx, float(delta))
    if lower is not None:
        lo = np.asarray(lower, dtype=float)
        active = np.isfinite(lo) & (x - delta < lo)
        ld = np.where(active, np.maximum(x - lo, 0.0), ld)
    H = np.zeros((nx, nx))
    g = np.zeros(nx)
    fplus = np.zeros(nx)

    def at(*moves):  # fun at x moved by (index, step) pairs
        xx = x.copy()
        for k, v in moves:
            xx[k] += v
        return float(fun(xx))

    for j in range(nx):
        u, l_ = ud[j], ld[j]
        fadd = at((j, u))
        fplus[j] = fadd
        if l_ > 0:
            fsub = at((j, -l_))
            H[j, j] = 2.0 * (l_ * fadd - (u + l_) * fx + u * fsub) / (u * l_ * (u + l_))
            g[j] = (l_ * l_ * (fadd - fx) + u * u * (fx - fsub)) / (u * l_ * (u + l_))
        else:  # on the bound: forward differences
            f2 = at((j, 2 * u))
            H[j, j] = (f2 - 2.0 * fadd + fx) / u**2
            g[j] = (-3.0 * fx + 4.0 * fadd - f2) / (2.0 * u)
        for i in range(j):
            ui, li = ud[i], ld[i]
            if cross == "forward":
                fij = at((i, ui), (j, u))
                H[i, j] = H[j, i] = (fij - fplus[i] - fadd + fx) / (ui * u)
                continue
            vals = [at((i, si), (j, sj)) for si, sj in ((ui, u), (ui, -l_), (-li, u), (-li, -l_))]
            H[i, j] = H[j, i] = (vals[0] - vals[1] - vals[2] + vals[3]) / ((ui + li) * (u + l_))
    return g, H


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


def interior_start(x: np.ndarray, structures: list, frac: float = 0.25,
                   floor: float = 0.05) -> np.ndarray | None:
    """A point off the boundary near ``x`` (θ first, any further entries kept), or None when
    no diagonal of a Λ is (nearly) 0.

    On the SD / correlation scale of each term (``Covariance.to_sdcor`` / ``from_sdcor``, so
    any structure works) every SD below ``BOUNDARY_SNAP_TOL`` becomes ``frac`` times the
    term's largest SD (at least ``floor``), its correlations 0, the other SDs and
    correlations unchanged; where no SD is 0 (correlations at +-1), every correlation of the
    term is halved. Why not a small step off the bound: with a zero diagonal in a
    Cholesky factor, the entries below it only enter through their squares, so the optimiser
    sits on a flat valley where both signs of the off-diagonal look the same; a point with
    the same SDs but a non-degenerate factor lets it choose the correlation's sign again
    (the LMM and binomial fits of the issue ended at sd(intercept) = 0, 0.43 and 0.59 below
    lme4's log-likelihood at correlation +-1)."""
    from multilevel.covariance import BOUNDARY_SNAP_TOL

    x = np.array(x, dtype=float)
    out = x.copy()
    moved = False
    i = 0
    for cov in structures:
        k = cov.ntheta
        diag = [x[i + j] for j in cov.diagonal()]
        if diag and min(diag) < BOUNDARY_SNAP_TOL:  # (the usual case, none: no conversions)
            th = x[i:i + k]
            pars = cov.to_sdcor(th, 1.0)
            kinds = cov.sdcor_kinds()
            sds = np.array([p for p, kd in zip(pars, kinds) if kd == "sd"])
            target = max(frac * (sds.max() if sds.size else 0.0), floor)
            cells = cov.cells()
            small = {cells[j][0] for j, kd in enumerate(kinds) if kd == "sd" and pars[j] < BOUNDARY_SNAP_TOL}
            new = pars.copy()
            for j, (r, c) in enumerate(cells):
                if kinds[j] == "sd" and r in small:
                    new[j] = target
                elif kinds[j] == "cor":
                    # no SD at 0 but a zero diagonal of Λ: correlations at +-1. Halving them
                    # all gives the correlation matrix (C + I) / 2, positive definite
                    new[j] = 0.0 if (r in small or c in small) else (new[j] if small else 0.5 * new[j])
            out[i:i + k] = cov.from_sdcor(new, 1.0)
            moved = True
        i += k
    return out if moved else None


def best_of_restarts(fun: Callable[[np.ndarray], float], res: OptResult, starts: list,
                     lower: np.ndarray, ctrl: LmerControl, initial_step: Any = None) -> OptResult:
    """BOBYQA again from each of ``starts``; the best optimum of ``res`` and the restarts,
    with every run's evaluations in its log and ``feval`` (a restart counts only if it is
    better by more than 1e-10)."""
    for start in starts:
        alt = bobyqa(fun, start, lower, ctrl, initial_step=initial_step)
        alt.feval += res.feval
        alt.log = res.log + alt.log
        if alt.fun < res.fun - 1e-10:
            res = alt
        else:
            res.feval, res.log = alt.feval, alt.log
    return res


def restart_if_boundary(fun: Callable[[np.ndarray], float], res: OptResult, lower: np.ndarray,
                        structures: list, ctrl: LmerControl, initial_step: Any = None) -> OptResult:
    """lme4's ``restart_edge``, done for every structure: when the optimum ``res`` has a
    zero SD, optimise again from a point in the interior (``interior_start``) and keep the
    better optimum. Both runs' evaluations are in the log and ``feval``."""
    x1 = interior_start(res.x, structures)
    if x1 is None:
        return res
    res2 = bobyqa(fun, x1, lower, ctrl, initial_step=initial_step)
    best = res2 if res2.fun < res.fun - 1e-10 else res
    return OptResult(x=best.x, fun=best.fun, feval=res.feval + res2.feval, code=best.code,
                     message=best.message, log=res.log + res2.log, warnings=best.warnings)


@dataclass
class PolishResult:
    x: np.ndarray
    fun: float
    grad: np.ndarray
    hess: np.ndarray
    decrement: float  # predicted decrease of fun by a Newton step at x (free coordinates)
    feval: int
    steps: int  # Newton steps taken
    log: list[tuple[np.ndarray, float]] = field(default_factory=list)  # the points stepped to


def newton_polish(fun: Callable[[np.ndarray], float], x: np.ndarray, fx: float, lower: np.ndarray,
                  *, delta: float = 1e-4, dec_tol: float = 1e-13, maxit: int = 4,
                  recheck_tol: float = 0.0, cross: str = "central") -> PolishResult:
    """Newton steps from a derivative-free optimum ``x`` (value ``fx``) with the gradient and
    Hessian from central differences (lme4's ``deriv12``, step ``delta``: 2 n^2 evaluations
    each), until the predicted decrease is below ``dec_tol``, a step gains nothing or
    ``maxit`` steps were taken. Coordinates on their lower bound whose gradient points out
    of the feasible set stay there.

    BOBYQA stops when its trust region has shrunk below its tolerances, which on a flat ridge
    can be short of the optimum by more than the data can tell apart (fixed effects that move
    by 1e-4 relative when the rows are permuted); the Newton steps pin the optimum down to the
    finite-difference error, O(delta^2). The last gradient and Hessian are those at the
    returned point: the caller's convergence check and Hessian-based covariance reuse them --
    unless ``recheck_tol`` > 0: a step whose predicted gain was below it is not followed by
    new derivatives (they cost 2 n^2 evaluations), and the decrement returned is what the
    step left of the prediction (the gradient and Hessian are then those before the step)."""
    x = np.asarray(x, dtype=float).copy()
    lower = np.asarray(lower, dtype=float)
    calls = [0]

    def counted(z):
        calls[0] += 1
        return float(fun(z))

    steps = 0
    log: list[tuple[np.ndarray, float]] = []
    while True:
        g, H = deriv12(counted, x, delta, fx, lower, cross=cross)
        at_bound = np.isfinite(lower) & (x - lower <= 0.0)
        free = ~(at_bound & (g > 0))
        dec, step = newton_step(g, H, free)
        if dec <= dec_tol or steps >= maxit or not np.isfinite(dec):
            return PolishResult(x, fx, g, H, dec, calls[0], steps, log)
        alpha, moved, f_before = 1.0, False, fx
        for _ in range(6):
            xn = np.maximum(x + alpha * step, lower)
            fn = counted(xn)
            if np.isfinite(fn) and fn < fx:
                x, fx, moved = xn, fn, True
                break
            alpha *= 0.5
        if not moved:  # the quadratic model is no better than the finite-difference noise
            return PolishResult(x, fx, g, H, dec, calls[0], steps, log)
        log.append((x.copy(), fx))
        steps += 1
        if dec <= recheck_tol:
            return PolishResult(x, fx, g, H, max(dec - (f_before - fx), 0.0), calls[0], steps, log)


def newton_step(g: np.ndarray, H: np.ndarray, free: np.ndarray) -> tuple[float, np.ndarray]:
    """(g' H^-1 g / 2, -H^-1 g) over the free coordinates; a Hessian that is not positive
    definite there is shifted to be (the step is then a damped gradient step and the
    decrement its predicted gain)."""
    step = np.zeros_like(g)
    idx = np.flatnonzero(free)
    if idx.size == 0:
        return 0.0, step
    gf, Hf = g[idx], H[np.ix_(idx, idx)]
    if not (np.all(np.isfinite(gf)) and np.all(np.isfinite(Hf))):
        return float("inf"), step
    # one symmetric eigendecomposition gives both the test and the solve
    ev, V = np.linalg.eigh(Hf)
    if ev.min() <= 1e-10 * max(1.0, abs(ev).max()):
        ev = ev + (abs(ev.min()) + 1e-6 * max(1.0, abs(ev).max()))
    s = -(V @ ((V.T @ gf) / ev))
    step[idx] = s
    return 0.5 * float(-(gf @ s)), step
