"""Confidence intervals for the parameters of a mixed model, and intervals for predictions.

``confint(fit, method=...)`` returns one row per parameter, named and ordered as lme4's
``confint(fit, oldNames = FALSE)``: the random-effect SDs and correlations
(``sd_(Intercept)|Subject``, ``cor_Days.(Intercept)|Subject``, ...), ``sigma`` (LMMs), then
the fixed effects; columns ``"2.5 %"`` and ``"97.5 %"`` (for ``level=0.95``).

* ``"wald"``: beta-hat -/+ z SE for the fixed effects; NaN for the variance parameters (as lme4).
* ``"profile"``: likelihood-ratio (profile) intervals as lme4's ``confint(profile(fit))``.
  As lme4 does, a REML fit is first refitted by ML and the ML deviance is profiled. For each
  parameter the deviance is minimised over all other parameters with that one held fixed
  (variance parameters on the SD/correlation scale; fixed effects through an offset, as
  lme4 does), and the interval ends are where the signed square root of the deviance
  increase, zeta, equals -/+ qnorm((1 + level)/2). lme4 traces zeta on a grid and
  interpolates it with splines; here the ends are found by root finding on the exact
  profile (so they agree with lme4 to the spline's accuracy, ~1e-4). An end that the
  profile does not reach before a bound (SD 0, correlation -/+1) is that bound, as lme4
  reports it.
* ``"bootstrap"``: percentile intervals of ``bootstrap(fit, n, seed)`` replicates.

``predict_interval(fit, newdata, interval=...)``: see its docstring for what is included.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Callable

import nlopt
import numpy as np
import pandas as pd
from scipy import optimize, special

from multilevel.results.mixed import MixedFit
from multilevel.errors import ModelSpecError, MultilevelError
from multilevel.inference._common import (
    is_lmm,
    block_sizes,
    copy_problem,
    is_glmm,
    lmm_problem,
    require_unconstrained,
    ml_state,
    sdcor_kinds,
    sdcor_names,
    sdcor_to_theta,
    theta_to_sdcor,
)

if TYPE_CHECKING:
    from multilevel.results import AnyFit

__all__ = ["confint", "profile", "predict_interval", "wald_intervals", "ProfileResult"]


def _colnames(level: float) -> list[str]:
    a = (1.0 - level) / 2.0
    return [f"{100 * a:.3g} %", f"{100 * (1 - a):.3g} %"]


def _param_names(fit: AnyFit) -> tuple[list[str], list[str]]:
    """(variance-parameter names, fixed-effect names) in lme4's order."""
    glmm = is_glmm(fit)
    return sdcor_names(fit.frame, sigma=not glmm), list(fit.fixef.index)


def wald_intervals(fit: AnyFit, level: float = 0.95) -> pd.DataFrame:
    """lme4's ``confint(fit, method = "Wald")``: NaN for the variance parameters."""
    vnames, fnames = _param_names(fit)
    z = special.ndtri(0.5 + level / 2.0)
    beta = np.asarray(fit.fixef, float)
    se = np.asarray(fit.se, float)
    lo = np.concatenate([np.full(len(vnames), np.nan), beta - z * se])
    hi = np.concatenate([np.full(len(vnames), np.nan), beta + z * se])
    return pd.DataFrame({c: v for c, v in zip(_colnames(level), (lo, hi))}, index=vnames + fnames)


# --- inner optimisation -------------------------------------------------------------------


def _minimise(fun: Callable[[np.ndarray], float], x0: np.ndarray, lower: np.ndarray,
              upper: np.ndarray, step: np.ndarray | None = None) -> tuple[np.ndarray, float]:
    """BOBYQA (NLopt) with bounds, tight tolerances; returns (x, f)."""
    x0 = np.clip(np.asarray(x0, float), lower, upper)
    k = x0.size
    if k == 0:
        return x0, float(fun(x0))
    best = [x0.copy(), float("inf")]

    def f(x, grad):
        v = float(fun(x))
        if not np.isfinite(v):
            v = 1e300
        if v < best[1]:
            best[0], best[1] = x.copy(), v
        return v

    opt = nlopt.opt(nlopt.LN_BOBYQA, k)
    opt.set_min_objective(f)
    opt.set_lower_bounds(np.where(np.isfinite(lower), lower, -np.inf))
    opt.set_upper_bounds(np.where(np.isfinite(upper), upper, np.inf))
    opt.set_ftol_abs(1e-10)
    opt.set_xtol_abs(1e-9)
    opt.set_maxeval(20000)
    if step is None:
        step = 0.1 * np.maximum(np.abs(x0), 0.05)
    # the first trust region must fit inside the bounds
    room = np.minimum(x0 - lower, upper - x0)
    step = np.where(np.isfinite(room) & (room > 1e-8), np.minimum(step, np.maximum(room, 1e-8)), step)
    opt.set_initial_step(np.maximum(step, 1e-6))
    try:
        opt.optimize(x0)
    except (nlopt.RoundoffLimited, ValueError):
        pass
    return best[0], best[1]


# --- root finding on a profile ------------------------------------------------------------


def _profile_end(zeta: Callable[[float], float], xhat: float, target: float, step0: float,
                 lower: float, upper: float, tol: float = 1e-7) -> float:
    """x on the side of sign(target) where zeta(x) = target; a bound when zeta does not get
    there before it (lme4: the end is then the bound, or NaN where the bound is infinite)."""
    sgn = 1.0 if target > 0 else -1.0
    bound = upper if sgn > 0 else lower
    if (bound - xhat) * sgn <= 0:
        return bound
    x_prev, z_prev = xhat, 0.0
    x = xhat + sgn * step0
    if (x - bound) * sgn > 0:
        x = bound
    for _ in range(60):
        z = zeta(x)
        if not np.isfinite(z):
            raise MultilevelError("the profile could not be computed (non-finite deviance)")
        if (z - target) * sgn >= 0:
            # bracketed between x_prev and x
            if abs(z - target) < 1e-10:
                return x
            a, b = (x_prev, x) if x_prev < x else (x, x_prev)
            return optimize.brentq(lambda t: zeta(t) - target, a, b, xtol=tol * max(1.0, abs(xhat)),
                                   rtol=1e-10, maxiter=100)
        if x == bound:
            return bound
        # secant extrapolation to the target, overshooting a little to bracket it
        slope = (z - z_prev) / (x - x_prev)
        dx = x - x_prev
        if slope * sgn <= 0 or not np.isfinite(slope):
            new = x + 2 * dx
        else:
            new = x + 1.1 * (target - z) / slope
            lim = 10 * abs(dx)
            if abs(new - x) > lim:
                new = x + sgn * lim
        x_prev, z_prev = x, z
        x = new
        if (x - bound) * sgn > 0:
            x = bound
    raise MultilevelError("the profile did not reach the confidence limit (60 steps)")


class ProfileResult:
    """Profile-likelihood intervals with their ingredients: ``intervals`` (DataFrame),
    ``estimates`` (the ML estimates of the profiled parameters), ``deviance`` (the ML
    deviance at the optimum) and ``evaluations`` (inner optimisations run)."""

    def __init__(self, intervals: pd.DataFrame, estimates: pd.Series, deviance: float, evaluations: int):
        self.intervals = intervals
        self.estimates = estimates
        self.deviance = deviance
        self.evaluations = evaluations

    def __repr__(self) -> str:
        return f"ProfileResult(deviance={self.deviance:.6g})\n{self.intervals}"


def _bounds_sdcor(kinds: list[str]) -> tuple[np.ndarray, np.ndarray]:
    lo = np.array([0.0 if k == "sd" else -1.0 for k in kinds])
    hi = np.array([np.inf if k == "sd" else 1.0 for k in kinds])
    return lo, hi



class _PDInner:
    """The inner problem of a variance-parameter profile in a parametrisation that is always
    positive semi-definite.

    Profiles hold one SD or correlation fixed and minimise over the others. With a box
    [-1, 1] on each correlation (lme4's scale), a term of 3 or more columns has points in the
    box whose correlation matrix is not positive definite; the deviance there is that of a
    projected matrix, and the inner minimisation stalls short of the constrained minimum
    near that edge (a 3 x 3 ``(0 + Machine | Worker)``: an upper limit 0.8365 where the
    deviance has risen by 1.24, not 3.84). Here each term's covariance is a lower Cholesky
    factor on the data scale, with its rows permuted so that the fixed parameter is an entry
    of the first column: an SD s_r fixed is L[0, 0] = s_r with row r first; a correlation c
    of rows (r, j) fixed is rows j, r first, L[0, 0] = s_j, (L[1, 0], L[1, 1]) = s_r (c,
    sqrt(1 - c^2)). Every point is a covariance matrix and the fixed value holds exactly.
    Only for unstructured terms (a diagonal term's factor has no off-diagonal entries).
    """

    def __init__(self, sizes: list[int], w: int, kind: str, nv: int):
        self.sizes = sizes
        self.w = w
        self.nv = nv  # number of variance parameters incl. sigma (the last)
        self.block = None
        self.order: list[list[int]] = []
        off = 0
        cells = []
        for b, s in enumerate(sizes):
            cs = [(r, c) for c in range(s) for r in range(c, s)]
            cells.append(cs)
            if off <= w < off + len(cs):
                self.block = b
                self.cell = cs[w - off]
            off += len(cs)
        self.kind = kind
        for b, s in enumerate(sizes):
            order = list(range(s))
            if b == self.block:
                r, c = self.cell
                first = [r] if kind == "sd" else [c, r]
                order = first + [k for k in range(s) if k not in first]
            self.order.append(order)

    def _layout(self) -> list[tuple[int, int, int]]:
        """(block, row, col) of the free factor entries, in z's order (sigma last)."""
        out = []
        for b, s in enumerate(self.sizes):
            for c in range(s):
                for r in range(c, s):
                    if b == self.block and c == 0 and (r == 0 or (self.kind == "cor" and r == 1)):
                        continue  # fixed by the profiled value (and s_j / s_r, below)
                    if b == self.block and self.kind == "cor" and r == 1 and c == 1:
                        continue
                    out.append((b, r, c))
        return out

    def lower(self) -> np.ndarray:
        lay = self._layout()
        lo = [0.0 if r == c else -np.inf for _, r, c in lay]
        if self.block is not None and self.kind == "cor":
            lo = [0.0, 0.0] + lo  # s_j, s_r
        return np.array(lo + ([0.0] if self.w != self.nv - 1 else []))

    def to_z(self, pars: np.ndarray) -> np.ndarray:
        """z from a full vector of SDs / correlations and sigma (a positive definite point)."""
        sigma = pars[-1]
        theta = sdcor_to_theta(pars[:-1], self.sizes, sigma)
        Ls = self._factors(theta, sigma)
        z = []
        if self.block is not None and self.kind == "cor":
            L = Ls[self.block]
            z += [L[0, 0], float(np.hypot(L[1, 0], L[1, 1]))]
        z += [Ls[b][r, c] for b, r, c in self._layout()]
        if self.w != self.nv - 1:
            z.append(sigma)
        return np.array(z)

    def _factors(self, theta: np.ndarray, sigma: float) -> list[np.ndarray]:
        from multilevel.covariance import lambda_blocks, psd_cholesky

        out = []
        for b, L in enumerate(lambda_blocks(theta, self.sizes)):
            S = sigma**2 * (L @ L.T)
            o = self.order[b]
            out.append(psd_cholesky(S[np.ix_(o, o)]))
        return out

    def to_pars(self, z: np.ndarray, x: float) -> np.ndarray:
        """The full vector (SDs / correlations, sigma) at z with the profiled value x."""
        from multilevel.covariance import psd_cholesky

        z = np.asarray(z, dtype=float)
        sigma = x if self.w == self.nv - 1 else z[-1]
        Ls = [np.zeros((s, s)) for s in self.sizes]
        k = 0
        if self.block is not None:
            L = Ls[self.block]
            if self.kind == "cor":
                sj, sr = z[0], z[1]
                L[0, 0], L[1, 0], L[1, 1] = sj, sr * x, sr * math.sqrt(max(0.0, 1.0 - x * x))
                k = 2
            else:
                L[0, 0] = x
        for b, r, c in self._layout():
            Ls[b][r, c] = z[k]
            k += 1
        thetas = []
        for b, L in enumerate(Ls):
            o = np.argsort(self.order[b])
            S = (L @ L.T)[np.ix_(o, o)]
            C = psd_cholesky(S) / sigma if sigma > 0 else np.zeros_like(S)
            thetas.extend(C[r, c] for c in range(S.shape[0]) for r in range(c, S.shape[0]))
        pars = np.concatenate([theta_to_sdcor(np.array(thetas), self.sizes, sigma), [sigma]])
        pars[self.w] = x  # exact (a correlation recomputed from the factor differs by rounding)
        return pars


def _lmm_profile(fit: AnyFit, level: float, which: list[str] | None) -> ProfileResult:
    st = ml_state(fit)
    prob = st.problem
    frame = fit.frame
    n = prob.n
    sizes = block_sizes(frame)
    kinds = sdcor_kinds(frame) + ["sd"]  # sigma is bounded like an SD
    vnames = sdcor_names(frame, sigma=True)
    fnames = list(frame.fixef_names)
    opt_v = np.concatenate([theta_to_sdcor(st.theta, sizes, st.sigma), [st.sigma]])
    lo_v, hi_v = _bounds_sdcor(kinds)
    logw = prob.logw
    core = prob.core
    two_pi = 2 * math.pi
    nevals = [0]

    def dd(pars: np.ndarray) -> float:
        """ML deviance at (SDs/correlations, sigma) with beta profiled (lme4's devfun2)."""
        sigma = pars[-1]
        if sigma <= 0:
            return np.inf
        theta = sdcor_to_theta(pars[:-1], sizes, sigma)
        sol = core.solution(np.ascontiguousarray(theta), False)
        s2 = sigma * sigma
        return sol["ldl2"] + sol["pwrss"] / s2 + n * math.log(two_pi * s2) - logw

    base = st.objective
    z = special.ndtri(0.5 + level / 2.0)
    rows: dict[str, tuple[float, float]] = {}
    nv = opt_v.size
    want = set(which) if which is not None else None
    # terms of 3 or more columns: the box on the correlations holds non-positive-definite
    # points, so the inner minimisation runs on Cholesky factors (_PDInner)
    from multilevel.covariance import Unstructured

    ncols = [getattr(s, "size", s) for s in sizes]  # block_sizes gives structure objects
    pd_inner = (any(s >= 3 for s in ncols)
                and all(isinstance(cv, Unstructured) for cv in prob.input.structures))
    # rough scales for the first steps: the Wald SE of the fixed effects, 10-20% for SDs
    for w in range(nv):
        name = vnames[w]
        if want is not None and name not in want:
            continue
        free = [i for i in range(nv) if i != w]
        cache: list[tuple[float, np.ndarray]] = [(opt_v[w], opt_v[free].copy())]

        pdi = _PDInner(ncols, w, kinds[w], nv) if pd_inner else None

        def zeta(x: float, w=w, free=free, cache=cache, pdi=pdi) -> float:
            start = min(cache, key=lambda t: abs(t[0] - x))[1]
            pars = opt_v.copy()
            pars[w] = x
            if pdi is not None:
                full = opt_v.copy()
                full[free] = start
                full[w] = x
                z0 = pdi.to_z(full)
                zlo = pdi.lower()
                zf, f = _minimise(lambda z: dd(pdi.to_pars(z, x)), z0, zlo, np.full(zlo.size, np.inf),
                                  step=0.05 * np.maximum(np.abs(z0), 0.05 * max(1.0, float(np.abs(z0).max()))))
                v = pdi.to_pars(zf, x)[free]
                # the box route as well, from the same start: keep the lower (both are upper
                # bounds of the constrained minimum)
                pars[free] = start
                fb = dd(pars)
                if fb < f:
                    v, f = start.copy(), fb
            else:
                def inner(v):
                    pars[free] = v
                    return dd(pars)

                v, f = _minimise(inner, start, lo_v[free], hi_v[free])
            nevals[0] += 1
            cache.append((x, v.copy()))
            dev = max(0.0, f - base)
            return math.copysign(math.sqrt(dev), x - opt_v[w])

        xh = opt_v[w]
        step = 0.2 * abs(xh) if xh != 0 else 0.1 * opt_v[-1]
        if kinds[w] == "cor":
            step = 0.2 * (1 - abs(xh)) + 1e-3
        lo = _profile_end(zeta, xh, -z, step, lo_v[w], hi_v[w])
        hi = _profile_end(zeta, xh, z, step, lo_v[w], hi_v[w])
        rows[name] = (lo, hi)

    # fixed effects: drop column j, put beta_j * x_j into the offset, optimise theta (ML)
    X = np.asarray(frame.X, float)
    ml_se = np.sqrt(np.diag(st.vcov))
    for j, name in enumerate(fnames):
        if want is not None and name not in want:
            continue
        keep = [k for k in range(X.shape[1]) if k != j]
        pj = copy_problem(prob, X=X[:, keep], fixef_names=[fnames[k] for k in keep], reml=False)
        xj = X[:, j]
        cache = [(st.beta[j], st.theta.copy())]
        lower_t = prob.lower
        upper_t = np.full(lower_t.size, np.inf)

        def zeta_fe(bj: float, pj=pj, xj=xj, cache=cache, j=j) -> float:
            pj.set_y(frame.y - bj * xj)
            start = min(cache, key=lambda t: abs(t[0] - bj))[1]
            th, f = _minimise(pj.objective, start, lower_t, upper_t,
                              step=0.05 * np.maximum(np.abs(start), 0.05))
            nevals[0] += 1
            cache.append((bj, th.copy()))
            dev = max(0.0, f - base)
            return math.copysign(math.sqrt(dev), bj - st.beta[j])

        step = z * ml_se[j] if ml_se[j] > 0 else 0.1 * max(abs(st.beta[j]), 1.0)
        lo = _profile_end(zeta_fe, st.beta[j], -z, step, -np.inf, np.inf)
        hi = _profile_end(zeta_fe, st.beta[j], z, step, -np.inf, np.inf)
        rows[name] = (lo, hi)
    order = [nm for nm in vnames + fnames if nm in rows]
    tab = pd.DataFrame([rows[nm] for nm in order], index=order, columns=_colnames(level))
    est = pd.Series(np.concatenate([opt_v, st.beta]), index=vnames + fnames)
    return ProfileResult(tab, est.loc[order], base, nevals[0])


def _glmm_profile(fit: AnyFit, level: float, which: list[str] | None) -> ProfileResult:
    prob = (fit.getme("problem") if isinstance(fit, MixedFit) else None)
    if prob is None or not hasattr(prob, "devfun"):
        raise MultilevelError("profile intervals need a fit made by multilevel.glmer")
    if getattr(prob, "nagq", 1) == 0:
        raise ModelSpecError("profile intervals are not available for nagq = 0 fits")
    frame = fit.frame
    sizes = block_sizes(frame)
    kinds = sdcor_kinds(frame)
    vnames = sdcor_names(frame, sigma=False)
    fnames = list(fit.fixef.index)
    theta = np.asarray(fit.getme("theta"), float)
    beta = np.asarray(fit.getme("beta"), float)
    nv = theta.size
    opt = np.concatenate([theta_to_sdcor(theta, sizes, 1.0), beta])
    lo_v, hi_v = _bounds_sdcor(kinds)
    lo_all = np.concatenate([lo_v, np.full(beta.size, -np.inf)])
    hi_all = np.concatenate([hi_v, np.full(beta.size, np.inf)])
    nevals = [0]

    def dd(pars: np.ndarray) -> float:
        th = sdcor_to_theta(pars[:nv], sizes, 1.0)
        return prob.devfun(np.concatenate([th, pars[nv:]]))

    base = dd(opt)
    z = special.ndtri(0.5 + level / 2.0)
    se = np.asarray(fit.se, float)
    names = vnames + fnames
    want = set(which) if which is not None else None
    rows = {}
    for w in range(opt.size):
        if want is not None and names[w] not in want:
            continue
        free = [i for i in range(opt.size) if i != w]
        cache: list[tuple[float, np.ndarray]] = [(opt[w], opt[free].copy())]

        def zeta(x: float, w=w, free=free, cache=cache) -> float:
            start = min(cache, key=lambda t: abs(t[0] - x))[1]
            pars = opt.copy()
            pars[w] = x

            def inner(v):
                pars[free] = v
                return dd(pars)

            step = 0.05 * np.maximum(np.abs(start), 0.05)
            v, f = _minimise(inner, start, lo_all[free], hi_all[free], step=step)
            nevals[0] += 1
            cache.append((x, v.copy()))
            dev = max(0.0, f - base)
            return math.copysign(math.sqrt(dev), x - opt[w])

        xh = opt[w]
        if w < nv:
            step = 0.2 * abs(xh) if xh != 0 else 0.1
            if kinds[w] == "cor":
                step = 0.2 * (1 - abs(xh)) + 1e-3
        else:
            step = z * se[w - nv]
        rows[names[w]] = (_profile_end(zeta, xh, -z, step, lo_all[w], hi_all[w]),
                          _profile_end(zeta, xh, z, step, lo_all[w], hi_all[w]))
    order = [nm for nm in names if nm in rows]
    tab = pd.DataFrame([rows[nm] for nm in order], index=order, columns=_colnames(level))
    return ProfileResult(tab, pd.Series(opt, index=names).loc[order], base, nevals[0])


def profile(fit: AnyFit, level: float = 0.95, which: list[str] | None = None) -> ProfileResult:
    """Profile-likelihood confidence intervals (lme4's ``confint(profile(fit))``); REML fits
    are refitted by ML first. ``which`` restricts the parameters (names as in the result)."""
    require_unconstrained(fit, "the likelihood profile")
    if is_glmm(fit):
        if getattr(fit.family_object, "has_dispersion", False):
            # lme4 refuses too ("can't (yet) profile GLMMs with non-fixed scale parameters"):
            # its VarCorr scale (sigma x Lambda) is not a parameter of the criterion
            raise ModelSpecError(f"profile intervals are not available for a {fit.family} GLMM (a "
                                 f"family with a scale parameter, as in lme4); use method='wald'")
        return _glmm_profile(fit, level, which)
    lmm_problem(fit, "profile")
    return _lmm_profile(fit, level, which)


def confint(fit: AnyFit, method: str = "profile", level: float = 0.95, n: int = 500,
            seed: int | None = None, which: list[str] | None = None,
            progress: bool | None = None) -> pd.DataFrame:
    """Confidence intervals for all parameters (lme4's ``confint.merMod``).

    Parameters
    ----------
    method : ``"profile"`` (likelihood profile, the default, as in lme4), ``"wald"`` (fixed
        effects only, NaN rows for the variance parameters) or ``"bootstrap"`` (percentiles
        of ``n`` parametric bootstrap replicates).
    level : confidence level.
    n, seed, progress : bootstrap replicates, random seed, progress bar (bootstrap only).
    which : optional parameter names to restrict the profile.

    Returns
    -------
    DataFrame with rows ``sd_...|group``, ``cor_...|group``, ``sigma`` (LMMs) and the fixed
    effects, columns ``"2.5 %"`` and ``"97.5 %"`` (for level 0.95).

    >>> import multilevel as ml
    >>> fit = ml.lmer("Reaction ~ Days + (Days | Subject)", ml.datasets.load("sleepstudy"))
    >>> ci = ml.inference.confint(fit, method="profile")
    >>> ci.loc["Days"].round(2).tolist()
    [7.36, 13.58]
    """
    if not 0 < level < 1:
        raise ModelSpecError("level must be between 0 and 1")
    m = str(method).lower()
    if m == "wald":
        return wald_intervals(fit, level)
    if m == "profile":
        return profile(fit, level, which).intervals
    if m in ("bootstrap", "boot"):
        from multilevel.inference.bootstrap import bootstrap

        reps = bootstrap(fit, n, seed=seed, progress=progress)
        vnames, fnames = _param_names(fit)
        if is_glmm(fit) and "sigma" in reps.columns and "sigma" not in vnames:
            vnames = vnames + ["sigma"]  # Gamma / inverse Gaussian (lme4's bootFun has it)
        a = (1 - level) / 2
        rows = [nm for nm in vnames + fnames if nm in reps.columns]
        lo = [float(np.nanquantile(reps[nm], a)) for nm in rows]
        hi = [float(np.nanquantile(reps[nm], 1 - a)) for nm in rows]
        return pd.DataFrame({c: v for c, v in zip(_colnames(level), (lo, hi))}, index=rows)
    raise ModelSpecError(f"method must be 'wald', 'profile' or 'bootstrap', not {method!r}")


# --- intervals for predictions -----------------------------------------------------------


def predict_interval(fit: AnyFit, newdata: Any, interval: str = "confidence", level: float = 0.95,
                     re_form: str | None = None, allow_new_levels: bool = True) -> pd.DataFrame:
    """Point predictions with approximate confidence or prediction intervals (LMMs).

    The prediction is ``fit.predict(newdata, re_form, allow_new_levels)``: the fixed part
    plus the conditional modes of the random effects of the groups seen in the fit (0 for new
    levels and for terms left out by ``re_form``). Its variance is built from

    * ``x' V_beta x``: the covariance of the fixed effects (``fit.vcov``);
    * for every random-effect term kept and a level seen in the fit, ``z' C z`` with C the
      conditional covariance of that level's random effects given the estimates (lme4's
      ``ranef(condVar = TRUE)``);
    * ``interval="prediction"`` only: for a term that is left out by ``re_form`` or whose
      level is new, ``z' Sigma_b z`` with Sigma_b the estimated covariance of the random
      effects (the new group's effect is unknown), and the residual variance sigma^2 of a
      new observation.

    ``interval="confidence"`` is thus an interval for the conditional mean of the groups
    seen (for the population mean where the random effects are set to 0);
    ``"prediction"`` for a new observation (of a new group where the level is new). The
    terms are added as if independent: the covariance between beta-hat and the conditional
    modes and the uncertainty of the variance parameters are ignored, so the intervals are
    approximate (use ``bootstrap`` for more). Normal quantiles.

    Returns a DataFrame with columns ``fit``, ``se``, ``lwr``, ``upr``.
    """
    if is_glmm(fit):
        raise ModelSpecError("predict_interval is available for linear mixed models only")
    kind = str(interval).lower()
    if kind not in ("confidence", "prediction"):
        raise ModelSpecError("interval must be 'confidence' or 'prediction'")
    frame = fit.frame
    from multilevel.results.lmm import _is_fixed_only

    fixed_only = _is_fixed_only(re_form)
    nd = frame.new_design(newdata, re_form="~0" if fixed_only else re_form,
                          allow_new_levels=allow_new_levels)
    X = np.asarray(nd.X, float)
    beta = np.asarray(fit.getme("beta"), float)
    V = np.asarray(fit.getme("vcov"), float)
    pred = X @ beta
    if nd.offset is not None:
        pred = pred + np.asarray(nd.offset, float)
    var = np.einsum("ij,jk,ik->i", X, V, X)
    kept = set()
    condvar = fit.getme("condvar")
    covs = [blk.cov for blk in fit.varcorr]
    if not fixed_only:
        for j, k in enumerate(nd.term_index):
            kept.add(k)
            refs = np.asarray(nd.refs[j])
            Z = np.asarray(nd.Z[j], float)
            new = refs < 0
            safe = np.where(new, 0, refs)
            bk = fit.getme("b")[k][safe]
            pred = pred + np.where(new, 0.0, np.einsum("ij,ij->i", Z, bk))
            cv = condvar[k][safe]
            v_known = np.einsum("ij,ijk,ik->i", Z, cv, Z)
            v_new = np.einsum("ij,jk,ik->i", Z, covs[k], Z)
            var = var + np.where(new, v_new if kind == "prediction" else 0.0, v_known)
    if kind == "prediction":
        # terms left out: their random effects for these rows are unknown
        left = [k for k in range(len(frame.reterms)) if k not in kept]
        if left:
            try:
                full = frame.new_design(newdata, re_form=None, allow_new_levels=True)
            except MultilevelError:
                # without the grouping columns: fine for random intercepts (z = 1)
                if any(list(frame.reterms[k].terms) != ["(Intercept)"] for k in left):
                    raise
                for k in left:
                    var = var + float(covs[k][0, 0])
            else:
                for j, k in enumerate(full.term_index):
                    if k in left:
                        Z = np.asarray(full.Z[j], float)
                        var = var + np.einsum("ij,jk,ik->i", Z, covs[k], Z)
        var = var + float(fit.getme("sigma")) ** 2
    se = np.sqrt(var)
    zq = special.ndtri(0.5 + level / 2.0)
    index = newdata.index if isinstance(newdata, pd.DataFrame) and len(newdata.index) == len(pred) else None
    return pd.DataFrame({"fit": pred, "se": se, "lwr": pred - zq * se, "upr": pred + zq * se}, index=index)


def profile_sd(fit: AnyFit, zmax: float = 2.6, npoints: int = 12) -> dict[str, pd.DataFrame]:
    """Likelihood profiles of the random-effect standard deviations and of sigma, as lme4's
    ``profile(fit)`` computes them for these parameters (a fallback for fits without
    :mod:`multilevel.inference`'s profile; no correlations, no fixed effects).

    As lme4, the model is first refitted by maximum likelihood and the ML deviance is
    profiled, also for REML fits. For a standard deviation sd_j = σ·‖row j of Λ(θ)‖ fixed
    at s, σ is determined by θ and the deviance n·log(2πσ²) + PWRSS(θ)/σ² + log|L_θ|² is
    minimised over all of θ; for σ fixed, likewise. ζ = sign(s − ŝ)·√(d(s) − d̂). The grid
    steps out from the estimate (on the log scale) until |ζ| ≥ ``zmax`` or the parameter
    is near 0. Returns ``{name: DataFrame(value, zeta)}`` with lme4's names
    (``sd_(Intercept)|Subject``, ``sigma``).

    Uses the fit's engine problem (``ml_deviance``, ``solution``) and the optimiser; only
    ``lmer`` fits have one. (It lives here, not with the plots, since drawing never fits.)
    """
    from multilevel.control import LmerControl
    from multilevel.engine.optimize import bobyqa
    from multilevel.covariance import lambda_blocks

    require_unconstrained(fit, "the likelihood profile")
    prob = (fit.getme("problem") if isinstance(fit, MixedFit) else None)
    if prob is None or not hasattr(prob, "ml_deviance") or not is_lmm(fit):
        raise ValueError("this fit cannot be profiled here (only lmer fits keep their engine)")
    n = prob.n
    rts = fit.frame.reterms
    sizes = block_sizes(fit.frame)
    lower = np.asarray(prob.lower, dtype=float)
    step = np.full(lower.size, 0.05)
    opts = LmerControl(ftol_abs=1e-9, xtol_abs=1e-7, check_conv=False, initial_step=step)
    res = bobyqa(prob.ml_deviance, np.asarray(fit.theta, dtype=float), lower, opts)
    theta_ml, dev_ml = res.x.copy(), float(res.fun)

    core = prob.core  # the compiled solution alone: the profile needs only PWRSS and log|L|²

    def pieces(theta: np.ndarray) -> tuple[float, float]:
        sol = core.solution(np.ascontiguousarray(theta, dtype=float), False)
        return float(sol["pwrss"]), float(sol["ldl2"])

    def row_norm(theta: np.ndarray, k: int, j: int) -> float:
        return float(np.linalg.norm(lambda_blocks(theta, sizes)[k][j]))

    pw, _ = pieces(theta_ml)
    sigma_ml = math.sqrt(pw / n)
    params: list[tuple[str, int | None, int | None, float]] = []
    for k, rt in enumerate(rts):
        for j, t in enumerate(rt.terms):
            params.append((f"sd_{t}|{rt.group}", k, j, sigma_ml * row_norm(theta_ml, k, j)))
    params.append(("sigma", None, None, sigma_ml))
    out: dict[str, pd.DataFrame] = {}
    for name, k, j, s_hat in params:
        if not s_hat > 0:
            continue  # a standard deviation estimated at 0 (singular fit): no profile

        def deviance(theta: np.ndarray, s: float, k=k, j=j) -> float:
            r = 1.0 if k is None else row_norm(theta, k, j)
            if not r > 0:
                return float("inf")
            sigma2 = (s / r) ** 2
            pwrss, ldl2 = pieces(theta)
            return n * math.log(2 * math.pi * sigma2) + pwrss / sigma2 + ldl2

        rows = [(s_hat, 0.0)]
        for direction in (-1.0, 1.0):
            theta = theta_ml.copy()
            logs, h = math.log(s_hat), 0.03
            for _ in range(4 * npoints):
                logs += direction * h
                s = math.exp(logs)
                r = bobyqa(lambda th, s=s: deviance(th, s), theta, lower, opts)
                theta = r.x.copy()
                zeta = direction * math.sqrt(max(float(r.fun) - dev_ml, 0.0))
                rows.append((s, zeta))
                if abs(zeta) >= zmax or s < 1e-3 * s_hat:
                    break
                # aim for steps of about zmax / npoints in zeta; where the profile is flat
                # (an SD whose deviance hardly changes on the way to 0) steps of up to a
                # factor e^1.5 reach the boundary in a few fits instead of a dozen
                slope = abs(zeta) / abs(logs - math.log(s_hat))
                if slope > 0:
                    h = float(np.clip((zmax / npoints) / slope, 0.02, 1.5))
        rows.sort()
        out[name] = pd.DataFrame(rows, columns=["value", "zeta"])
    return out
