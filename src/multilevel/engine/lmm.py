"""The linear mixed model problem: the profiled deviance of an :class:`EngineInput`.

:class:`LmmProblem` binds the arrays to the compiled engine (``multilevel._core.LmmCore``:
blocked Cholesky, profiled deviance and its analytic gradient) and ``fit_theta`` optimises θ
inside the core (projected BFGS, ``LmmCore.optimize``) or with NLopt's BOBYQA
(``engine.optimize``; ``optimizer="bobyqa"``, cs() / ar1() terms), snaps θ onto the boundary
where that costs nothing and checks convergence. It knows nothing of formulas, data frames or column names; ``models.lmer``
builds the input and packs the estimates into a fit.
"""
from __future__ import annotations

import functools

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from multilevel._core import LmmCore
from multilevel.control import LmerControl
from multilevel.covariance import BOUNDARY_SNAP_TOL, ParameterMap, diagonal_theta, theta_layout
from multilevel.engine.centring import XCentring
from multilevel.engine.compiled import CompiledProblem
from multilevel.engine.input import EngineInput
from multilevel.errors import ControlError, FitWarning, ModelSpecError
from multilevel.engine.optimize import (OptResult, best_of_restarts, bobyqa, interior_start,
                                        newton_decrement, newton_polish, restart_if_boundary)


@dataclass
class EngineTerm:
    """Random-effect terms of one grouping factor merged for the engine: lme4 keeps
    ``(1|g) + (0+x|g)`` as two blocks, the engine sees one term with s = 2 whose Lambda has
    a structural zero, so that the term stays block diagonal instead of becoming dense."""

    blocks: list[int]  # indices into the input's terms (lme4's blocks)
    cols: list[slice]  # columns of each block inside the merged Z
    refs: np.ndarray
    Z: np.ndarray
    nlev: int
    lam: list[tuple[int, int, int]]  # (row, col, theta index) of Lambda's nonzeros




def engine_terms(inp: EngineInput, slices: list[slice]) -> list[EngineTerm]:
    """The input's terms merged by grouping factor, each with its Λ pattern (from the
    covariance structures) placed at its columns and θ positions."""
    groups: dict[int, list[int]] = {}
    for k, t in enumerate(inp.terms):
        groups.setdefault(t.factor, []).append(k)
    out = []
    for blocks in groups.values():
        first = inp.terms[blocks[0]]
        zs, cols, lam = [], [], []
        c0 = 0
        for k in blocks:
            t = inp.terms[k]
            s = t.Z.shape[1]
            zs.append(t.Z)
            cols.append(slice(c0, c0 + s))
            ti = slices[k].start
            lam.extend((c0 + r, c0 + c, ti + i) for r, c, i in t.structure.pattern())
            c0 += s
        Z = zs[0] if len(zs) == 1 else np.ascontiguousarray(np.hstack(zs))
        refs = np.ascontiguousarray(first.refs, dtype=np.uint32)
        out.append(EngineTerm(blocks, cols, refs, np.ascontiguousarray(Z, dtype=float), first.n_levels, lam))
    # the term with most levels goes first: its block never fills in (stable for ties)
    out.sort(key=lambda e: -e.nlev)
    return out


def _mean(y: np.ndarray) -> float:
    """``np.mean(y)``: for float64 the same sum and division without its wrapping, which
    costs more than the sum of a small response."""
    if y.dtype == np.float64 and y.ndim == 1:
        return float(np.add.reduce(y) / y.shape[0])
    return float(np.mean(y))


class LmmProblem(CompiledProblem):
    """The arrays of one linear mixed model bound to the compiled engine.

    The small interface inference code relies on: ``objective(theta)``, ``solution(theta)``,
    ``condvar(theta)``, ``set_y(y)`` (a new response, e.g. for the parametric bootstrap).
    """

    def __init__(self, inp: EngineInput, reml: bool):
        self.input = inp
        self.reml = reml
        self.slices, self.theta0, self.lower = theta_layout(inp.structures)
        # the optimiser's parameters (θ itself unless a term is cs() or ar1())
        self.pmap = ParameterMap(inp.structures)
        self.eterms = engine_terms(inp, self.slices)
        y = inp.y if inp.offset is None else inp.y - inp.offset
        # The penalised RSS comes from cross products (y'y - ...), which lose digits when the
        # response sits far from 0 (heights of 150 cm: ~5e-11 relative, enough to upset the
        # numerical derivatives of Satterthwaite's df). With an intercept, fitting y - mean(y)
        # gives the same fit with the intercept shifted back afterwards.
        self.intercept = inp.intercept
        self.yshift = _mean(y) if self.intercept is not None and len(y) else 0.0
        y = y - self.yshift
        self.w = None if inp.weights is None else np.ascontiguousarray(inp.weights, dtype=float)
        # lme4's log-likelihood of weighted data carries +0.5 sum(log w)
        self.logw = 0.0 if self.w is None else float(np.sum(np.log(self.w[self.w > 0])))
        # the compiled core cannot be pickled: keep the arrays it is built from (the current
        # response too, which set_y replaces) and rebuild it on first use after unpickling
        # X's columns are centred too (engine.centring): the core fits beta_c, and solution()
        # / fitted() speak the user's beta
        self.xcentring = XCentring.of(inp.X, self.intercept, self.w)
        self._X = self.xcentring.apply(inp.X)
        self._y = np.ascontiguousarray(y, dtype=float)
        self._core: LmmCore | None = None
        self._core = self._build_core()
        self.theta0, self.step0 = self._start()

    def _build_core(self) -> LmmCore:
        try:
            return LmmCore(
                [e.refs for e in self.eterms],
                [e.Z for e in self.eterms],
                [e.nlev for e in self.eterms],
                [e.lam for e in self.eterms],
                self._X,
                self._y,
                self.w,
            )
        except ModelSpecError as exc:  # the engine refuses a dense block beyond its size limit
            raise ModelSpecError(f"this model is too large for the engine: {exc}") from None

    def _start(self) -> tuple[np.ndarray, np.ndarray]:
        """Starting theta and BOBYQA's first step: moment estimates for the diagonals (from
        the engine's cross products), 0 for correlations; steps in proportion, since a start
        near the optimum wastes evaluations when the first trust region is wide."""
        theta0 = self.theta0.copy()
        step = np.full(theta0.size, 0.1)
        for e, diag in zip(self.eterms, self.core.moment_start()):
            for r, c, i in e.lam:
                if r == c:
                    theta0[i] = diag[r]
                    step[i] = 0.15 * diag[r] + 0.05
        return theta0, step

    @property
    def n(self) -> int:
        return self.input.nobs

    @property
    def p(self) -> int:
        return self.input.p

    def objective(self, theta: np.ndarray) -> float:
        """-2 log-likelihood (ML) or the REML criterion, profiled over beta and sigma."""
        core = self._core if self._core is not None else self.core  # the hot path: no property
        return core.objective(np.ascontiguousarray(theta, dtype=float), self.reml) - self.logw

    def ml_deviance(self, theta: np.ndarray) -> float:
        return self.core.objective(np.ascontiguousarray(theta, dtype=float), False) - self.logw

    def set_y(self, y: np.ndarray) -> None:
        off = self.input.offset
        y = np.ascontiguousarray((y if off is None else y - off) - self.yshift, dtype=float)
        self.core.set_y(y, self.w)
        self._y = y  # a rebuilt core must see the current response

    def solution(self, theta: np.ndarray) -> dict[str, Any]:
        sol = self.core.solution(np.ascontiguousarray(theta, dtype=float), self.reml)
        n, p = self.n, self.p
        sigma2 = sol["pwrss"] / (n - p if self.reml else n)
        b_blocks: list[np.ndarray] = [None] * len(self.input.terms)  # type: ignore[list-item]
        for e, bflat in zip(self.eterms, sol["b"]):
            b = np.asarray(bflat).reshape(e.nlev, -1)
            for k, cols in zip(e.blocks, e.cols):
                b_blocks[k] = np.ascontiguousarray(b[:, cols])
        rx = np.ascontiguousarray(np.asarray(sol["rx"]).reshape(p, p).T)  # column-major from Rust
        if p:
            # p is small: a plain inverse avoids scipy's per-call overhead, which dominated
            # the whole fit of small models
            rxinv = np.linalg.inv(rx)
            vcov = self.xcentring.cov_out(sigma2 * (rxinv.T @ rxinv))
        else:
            vcov = np.zeros((0, 0))
        beta = self.xcentring.beta_out(sol["beta"])
        if self.intercept is not None:
            beta[self.intercept] += self.yshift
        return {
            "beta": beta,
            "b": b_blocks,
            "sigma": float(np.sqrt(sigma2)),
            "vcov": vcov,
            "objective": sol["objective"] - self.logw,
            "pwrss": sol["pwrss"],
            "ldl2": sol["ldl2"],
            "ldrx2": sol["ldrx2"],
        }

    def condvar(self, theta: np.ndarray, sigma: float) -> list[np.ndarray]:
        """Conditional covariance of b per lme4 block: (n_levels, s, s) arrays."""
        cv = self.core.condvar(np.ascontiguousarray(theta, dtype=float))
        out: list[np.ndarray] = [None] * len(self.input.terms)  # type: ignore[list-item]
        for e, flat in zip(self.eterms, cv):
            s = e.Z.shape[1]
            # blocks are column-major; they are symmetric, so the transpose is harmless
            blocks = np.asarray(flat).reshape(e.nlev, s, s).transpose(0, 2, 1) * sigma**2
            for k, cols in zip(e.blocks, e.cols):
                out[k] = np.ascontiguousarray(blocks[:, cols, cols])
        return out

    def fitted(self, beta: np.ndarray, b: list[np.ndarray]) -> np.ndarray:
        """X beta + Z b (+ offset) for the rows of the fit; b per lme4 block."""
        b_engine = []
        for e in self.eterms:
            blocks = [np.asarray(b[k], dtype=float) for k in e.blocks]
            merged = blocks[0] if len(blocks) == 1 else np.hstack(blocks)
            b_engine.append(np.ascontiguousarray(merged).ravel())
        out = self.core.fitted(np.ascontiguousarray(self.xcentring.beta_in(beta)), b_engine)
        if self.input.offset is not None:
            out = out + self.input.offset
        return out




#: Newton polish (full finite-difference Hessian, 2 k^2 evaluations) up to this many θ; beyond
#: it the convergence check's diagonal Hessian (2 k evaluations)
_POLISH_MAX = 8
_DEFAULT_FTOL = LmerControl.ftol_abs  # lme4's default, 1e-8
_POLISH_FTOL = 1e-6


@functools.lru_cache(maxsize=16)
def _polish_control(ctrl: LmerControl) -> LmerControl:
    """``ctrl`` with BOBYQA's ftol_abs at _POLISH_FTOL (cached: controls are frozen)."""
    return ctrl.with_(ftol_abs=_POLISH_FTOL)


#: the in-core optimiser up to this many θ (a dense BFGS model: k^2 memory, k^3 per step;
#: beyond it, BOBYQA's k^2 interpolation points are no cheaper but a known quantity)
_CORE_MAX = 200
#: ... and up to this many random effects q (levels x columns, all terms): one evaluation of
#: the gradient costs 2.5-4 objectives in its per-level loop, which the 2-3x fewer
#: evaluations repay only where BOBYQA's cost per evaluation is mostly the Python callback
#: (measured interleaved: sleepstudy q=36 0.67x, hsb82 q=320 0.74x the BOBYQA fit's time;
#: slopes_1e5 q=2000 2.1x, chem97 q=2541 1.8x); beyond it BOBYQA with its Newton polish
_CORE_MAX_Q = 1000
#: ... and beyond it from this many θ: BOBYQA's evaluations (and its polish's, 2k + k(k-1)/2)
#: grow with k^2 while the gradient's cost does not grow with k, so the in-core optimiser
#: pays on large models with many θ (measured interleaved on star, 20,992 + 1,448 random
#: effects and 7 θ, interleaved: BFGS 38 evaluations, 2.66-2.68 s; BOBYQA 169, 2.78-3.14 s,
#: and a logLik 3e-12 higher)
_CORE_MIN_NPAR_LARGE = 6
#: the in-core optimiser stops when a Newton step would gain less than this (deviance units)
_CORE_DEC_TOL = 1e-10
_CORE_STOPS = {"converged": (0, "converged: a Newton step would lower the criterion by < 1e-10"),
               "no_progress": (0, "converged: no step lowers the criterion (its rounding floor)"),
               "maxeval": (5, "maxeval reached"),
               "not_finite": (-1, "the criterion or its gradient is not finite at the start")}


def fit_theta(problem: LmmProblem, ctrl: LmerControl) -> tuple[np.ndarray, float, dict, list[FitWarning]]:
    """Optimise theta; snap diagonals that the data cannot tell from 0 onto the boundary;
    check convergence. Returns (theta, objective, optinfo, warning records).

    By default (``ctrl.optimizer == "auto"``) the optimisation runs inside the compiled core
    on the analytic gradient (``_fit_theta_core``); NLopt's BOBYQA with a Python callback per
    evaluation serves ``optimizer="bobyqa"`` and the structures whose parameters are not
    entries of Λ (cs, ar1)."""
    t0 = time.perf_counter()
    # Structured terms (cs, ar1): the optimiser moves the structures' own parameters, mapped
    # to the engine's θ (problem.pmap); otherwise it moves θ itself (pm.native).
    pm = getattr(problem, "pmap", None) or ParameterMap(problem.input.structures)
    q = sum(e.nlev * e.Z.shape[1] for e in problem.eterms)
    core_ok = pm.native and 0 < pm.npar <= _CORE_MAX and getattr(problem, "in_core_optimizer", True)
    auto_core = q <= _CORE_MAX_Q or pm.npar >= _CORE_MIN_NPAR_LARGE
    if core_ok and (ctrl.optimizer == "bfgs" or (ctrl.optimizer == "auto" and auto_core)):
        return _fit_theta_core(problem, pm, ctrl, t0)
    objective = pm.wrap(problem.objective)
    x0, lower, step0 = pm.start(problem.theta0), pm.lower, pm.step(problem.step0)
    if not pm.native and np.ndim(ctrl.initial_step) and np.size(ctrl.initial_step) != pm.npar:
        ctrl = ctrl.with_(initial_step=None)  # a step for θ (a bootstrap's warm start) does not fit
    # the engine's moment-based first step unless the user set one (no control copy per fit)
    ctrl_b = ctrl
    if pm.npar <= _POLISH_MAX and ctrl.ftol_abs == _DEFAULT_FTOL:
        # the Newton polish below pins the optimum down, so BOBYQA may stop at 1e-6 deviance
        # units instead of lme4's 1e-8: the evaluations it saves pay for the polish (a
        # tolerance the user set is kept)
        try:
            ctrl_b = _polish_control(ctrl)
        except TypeError:  # an unhashable setting (an array of first steps)
            ctrl_b = ctrl.with_(ftol_abs=_POLISH_FTOL)
    res = bobyqa(objective, x0, lower, ctrl_b, initial_step=step0)
    if pm.native:
        # a zero SD: check it against an optimum reached from the interior
        res = restart_if_boundary(objective, res, lower, problem.input.structures, ctrl,
                                  initial_step=step0)
    # cs() / ar1(): the other side of each rho (bimodal), and SDs at 0 started inside
    res = best_of_restarts(objective, res, pm.restarts(res.x) + pm.edge_restarts(res.x), lower,
                           ctrl, initial_step=step0)
    theta, fval = res.x.copy(), res.fun
    warns = list(res.warnings)
    # Exact singular fits: a diagonal of Lambda at ~1e-6 is the optimiser approaching the
    # boundary it cannot reach exactly. Put it there if that costs nothing.
    diag = pm.diagonal  # SD-like parameters with bound 0 (Λ's diagonal for native structures)
    for i in diag:
        if 0 < theta[i] < BOUNDARY_SNAP_TOL:
            trial = theta.copy()
            trial[i] = 0.0
            ft = objective(trial)
            if ft <= fval + 1e-10:
                theta, fval = trial, min(ft, fval)
    extra = polish_evals = 0
    dec = grad = None
    if theta.size <= _POLISH_MAX:
        # Newton steps on finite differences: BOBYQA's stop on a flat ridge moves with the
        # order of the rows (fixed effects by up to 1e-4 relative); the last derivatives give
        # the convergence check (2 k^2 evaluations, k = len(theta))
        # (off-diagonals from forward differences: 2k + k(k-1)/2 evaluations instead of 2k^2)
        pol = newton_polish(objective, theta, fval, pm.check_lower(theta), recheck_tol=1e-4,
                            cross="forward")
        theta, fval, polish_evals = pol.x, pol.fun, pol.feval
        res.log.extend(pol.log)  # the fit log ends at the optimum
        dec, grad = pol.decrement, pol.grad
    if ctrl.conv_check_on:
        count = len(res.log)
        calls = [0]

        def counted(x):
            calls[0] += 1
            return objective(x)

        if dec is None:
            dec, grad = newton_decrement(counted, theta, pm.check_lower(theta), fval)
        extra += calls[0]
        if dec > ctrl.conv_tol:
            warns.append(FitWarning(
                "not_converged",
                f"Model may not have converged: a Newton step from the optimum would lower the "
                f"{'REML criterion' if problem.reml else 'deviance'} by {dec:.2g} "
                f"(max|grad| = {np.abs(grad).max():.3g})"
            ))
        del count
    if not pm.native:
        par, theta = theta, pm.to_theta(theta)
    optinfo = {
        "optimizer": "bobyqa",
        "feval": len(res.log),
        "feval_checks": extra,
        "feval_polish": polish_evals,
        "code": res.code,
        "message": res.message,
        "fit_log": res.log,
        "messages": list(warns),
        "time": time.perf_counter() - t0,
    }
    if not pm.native:
        optinfo["par"] = par  # the structures' parameters (ParameterMap) at the optimum
    return theta, fval, optinfo, warns




def _core_run(problem: LmmProblem, start: np.ndarray, lower: np.ndarray, ctrl: LmerControl,
              maxeval: int) -> tuple[OptResult, dict]:
    """One in-core optimisation from ``start``: the result as BOBYQA's (weights term added,
    every evaluation in the log) and the core's raw answer (gradient, decrement)."""
    out = problem.core.optimize(np.ascontiguousarray(start, dtype=float), lower, problem.reml,
                                maxeval, _CORE_DEC_TOL)
    logw = problem.logw
    k = start.size
    thetas = out["log_theta"].reshape(-1, k)
    funs = (out["log_fun"] - logw).tolist()
    code, message = _CORE_STOPS[out["stop"]]
    res = OptResult(x=out["theta"], fun=float(out["fun"]) - logw, feval=int(out["feval"]),
                    code=code, message=message, log=list(zip(thetas, funs)))
    if out["stop"] == "maxeval":
        res.warnings.append(FitWarning("maxeval", f"optimizer (bfgs) reached maxeval = "
                                                  f"{ctrl.maxeval} before converging"))
    return res, out


def _fit_theta_core(problem: LmmProblem, pm: ParameterMap, ctrl: LmerControl,
                    t0: float) -> tuple[np.ndarray, float, dict, list[FitWarning]]:
    """``fit_theta`` with the optimiser inside the core (θ native, k <= _CORE_MAX).

    The same checks as on the BOBYQA path: lme4's ``restart_edge`` (an optimum with an SD at
    0 is checked against a run from an interior point, ``interior_start``: at a zero
    diagonal of Λ the deviance is even in that column, so its slope there is 0 and a
    gradient method cannot leave the point by itself), the snap of diagonals below
    BOUNDARY_SNAP_TOL onto 0 where that costs nothing, and the convergence check -- here
    the core's own Newton decrement, on a Hessian from differences of the exact gradient at
    the returned point, so no polish is needed and no evaluation runs in Python but the
    snap's."""
    step = ctrl.initial_step
    if step is not None and np.ndim(step) and np.size(step) != pm.npar:
        # BOBYQA's setting, unused here, but a wrong one is still the user's error
        raise ControlError("initial_step", step, f"a number or {pm.npar} numbers (one per "
                           f"parameter)")
    lower = np.ascontiguousarray(pm.lower, dtype=float)
    res, out = _core_run(problem, problem.theta0, lower, ctrl, ctrl.maxeval)
    x1 = interior_start(res.x, problem.input.structures)
    if x1 is not None and res.feval < ctrl.maxeval:
        res2, out2 = _core_run(problem, x1, lower, ctrl, ctrl.maxeval - res.feval)
        log = res.log + res2.log
        if res2.fun < res.fun - 1e-10:
            res, out = res2, out2
        res.log, res.feval = log, len(log)
    theta, fval = res.x.copy(), res.fun
    warns = list(res.warnings)
    for i in pm.diagonal:
        if 0 < theta[i] < BOUNDARY_SNAP_TOL:
            trial = theta.copy()
            trial[i] = 0.0
            ft = problem.objective(trial)
            if ft <= fval + 1e-10:
                theta, fval = trial, min(ft, fval)
    dec, grad = float(out["decrement"]), out["grad"]
    if ctrl.conv_check_on and dec > ctrl.conv_tol:
        warns.append(FitWarning(
            "not_converged",
            f"Model may not have converged: a Newton step from the optimum would lower the "
            f"{'REML criterion' if problem.reml else 'deviance'} by {dec:.2g} "
            f"(max|grad| = {np.abs(grad).max():.3g})"
        ))
    optinfo = {
        "optimizer": "bfgs",
        "feval": len(res.log),
        "feval_checks": 0,
        "feval_polish": 0,
        "code": res.code,
        "message": res.message,
        "fit_log": res.log,
        "messages": list(warns),
        "decrement": dec,
        "grad": grad,
        "time": time.perf_counter() - t0,
    }
    return theta, fval, optinfo, warns
