"""The generalized linear mixed model problem and its optimisers (what ``glmer`` drives).

:class:`GlmmProblem` binds an :class:`EngineInput` to the compiled PIRLS engine
(``multilevel._core.GlmmCore``); ``models.glmer`` runs the stages below and packs the
estimates into a fit. The criterion and the estimates are lme4's; the route to them is faster:

1. **stage 1 (lme4's nAGQ = 0 criterion)**: BOBYQA over theta; at each theta PIRLS finds the
   conditional modes of u *and* beta together, and the criterion is the Laplace formula at
   that joint mode. It only provides the start of stage 2 (unless ``nagq=0``).
2. **stage 2 (nAGQ >= 1)**: the criterion over (theta, beta), PIRLS over u only: the Laplace
   approximation (nAGQ = 1) or adaptive Gauss-Hermite quadrature (nAGQ > 1, one scalar
   random-effect term) of -2 log-likelihood.

   - Where the engine gives the exact gradient of the Laplace criterion (one term, scalar or
     vector-valued such as ``(1 + x | g)``, any link; all terms scalar -- crossed or nested
     intercepts -- with a canonical link), Newton steps with the Hessian from finite
     differences of that gradient (``newton_fd``): some 10 - 20 evaluations, and each starts
     PIRLS from modes predicted to first order.
   - Otherwise (several terms of which one is vector-valued, non-canonical links with
     several terms, AGQ, cs() / ar1() structures) BOBYQA, as lme4 (lme4 uses Nelder-Mead by
     default and BOBYQA in the reference fits). ``control={"optimizer": "bobyqa"}`` forces it.
3. theta values within 1e-4 of the boundary are put on it when that does not raise the
   criterion; a final evaluation at the optimum sets the modes, fitted values and weights.
4. The default covariance of beta is lme4's: the beta block of 2 H^-1 with H the Hessian of
   the criterion in (theta, beta) -- computed when lme4 computes it (fewer than 1e4
   observations, fewer than 100 parameters, a non-singular fit) by central differences with
   lme4's step 1e-4, of the exact gradient where there is one (2n gradients) and of the
   criterion otherwise (lme4's ``deriv12``, 2 n^2 values). Otherwise, and always as
   ``vcov_use_hessian_false``, the covariance from the PIRLS factor R_X at the optimum.

The criterion is what lme4 reports: logLik = -criterion / 2. For nAGQ > 1 it leaves out the
saturated-model term sum log p(y_i | mu_i = y_i), as lme4 does (see ``GlmmFit.loglik_full``).
PIRLS runs to steps of 1e-13, so the criterion is smooth to ~1e-12 and finite differences of
it are meaningful (lme4's default tolPwrss = 1e-7 leaves noise that its own Hessian sees).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from multilevel._core import GlmmCore, gauss_hermite
from multilevel.engine.centring import XCentring
from multilevel.engine.compiled import CompiledProblem
from multilevel.engine.input import EngineInput
from multilevel.engine.optimize import deriv12  # noqa: F401 - re-exported (lme4's name)
from multilevel.errors import ModelSpecError
from multilevel.families import Family
from multilevel.engine.lmm import engine_terms
from multilevel.covariance import ParameterMap, theta_layout

if TYPE_CHECKING:  # for the return hint only; glmm_results is imported lazily in glmer
    pass

__all__ = ["GlmmProblem", "deriv12", "hessian_from_gradient", "newton_fd"]

#: lme4's glmerControl(check.conv.nobsmax, check.conv.nparmax)
_NOBS_MAX = 10_000
_NPAR_MAX = 100


class GlmmProblem(CompiledProblem):
    """The arrays of one GLMM bound to the compiled engine, with lme4's criteria.

    The small interface inference code relies on: ``stage0(theta)`` (nAGQ = 0 criterion,
    beta in PIRLS), ``devfun(x)`` with ``x = (theta, beta)`` (the nAGQ >= 1 criterion),
    ``state(x)`` (modes, fitted values, weights at x), ``condvar``, ``vcov_rx``.

    The core fits centred columns of X (``engine.centring``): ``devfun``, ``devfun_grad`` and
    ``vcov_rx`` speak the user's beta; the optimisers use ``devfun_c`` / ``devfun_grad_c``
    and ``core.beta`` in the engine's ``beta_c`` (better conditioned: a predictor far from 0
    no longer ties the intercept to its slope), mapped back by ``x_out``.
    """

    def __init__(self, inp: EngineInput, family: Family, nagq: int, ntrials: np.ndarray | None = None,
                 pirls_tol: float = 1e-13, pirls_maxit: int = 200):
        self.input = inp
        self.family = family
        self.nagq = int(nagq)
        self.slices, self.theta0, self.lower = theta_layout(inp.structures)
        # the optimiser's parameters (θ itself unless a term is cs() or ar1())
        self.pmap = ParameterMap(inp.structures)
        self.eterms = engine_terms(inp, self.slices)
        self.ntheta = len(self.theta0)
        self.p = inp.p
        # the compiled core cannot be pickled: keep the arrays and settings it is built from
        # and rebuild it on first use after unpickling (PIRLS then starts cold, from u = 0)
        self._w = None if inp.weights is None else np.ascontiguousarray(inp.weights, dtype=float)
        self._off = None if inp.offset is None else np.ascontiguousarray(inp.offset, dtype=float)
        self._ntrials = None if ntrials is None else np.ascontiguousarray(ntrials, dtype=float)
        self.xcentring = XCentring.of(inp.X, inp.intercept)
        self._X = self.xcentring.apply(inp.X)
        self._y = np.ascontiguousarray(inp.y, dtype=float)
        self.pirls_tol = float(pirls_tol)
        self.pirls_maxit = int(pirls_maxit)
        self._core: GlmmCore | None = None
        self._warm_u: list[np.ndarray] | None = None
        self._core = self._build_core()
        if self.nagq > 1:
            if not self.core.is_scalar:
                raise ModelSpecError("nagq > 1 needs a single scalar random-effect term")
            self.nodes, self.weights = gauss_hermite(self.nagq)
        self.nevals = 0

    def _build_core(self) -> GlmmCore:
        core = GlmmCore(
            [e.refs for e in self.eterms],
            [e.Z for e in self.eterms],
            [e.nlev for e in self.eterms],
            [e.lam for e in self.eterms],
            self._X,
            self._y,
            self.family.name,
            self.family.link.name,
            self._w,
            self._ntrials,
            self._off,
            family_param=self.family.param,
        )
        # the dispersion families' criterion moves to first order with the error of the
        # modes (times 1 / phi, see families/gamma.py): PIRLS runs 100 times tighter there
        tol = self.pirls_tol * (1e-2 if self.family.has_dispersion else 1.0)
        core.set_control(tol=tol, maxit=self.pirls_maxit)
        warm = getattr(self, "_warm_u", None)
        if warm is not None:
            core.set_u([np.ascontiguousarray(x) for x in warm])
        return core

    def __getstate__(self) -> dict[str, Any]:
        # the core's only other state is PIRLS's warm start (below)
        state = super().__getstate__()
        # PIRLS's warm start: the modes u of the last evaluation, so that a rebuilt core starts
        # where this one would (a cold start lands on the same modes to ~1e-15, not bit for bit)
        if self._core is not None:
            u = [np.asarray(x, dtype=float) for x in self._core.u()]
            state["_warm_u"] = u if any(np.any(x != 0.0) for x in u) else None
        return state

    @property
    def n(self) -> int:
        return self.input.nobs

    @property
    def lower_full(self) -> np.ndarray:
        return np.concatenate([self.lower, np.full(self.p, -np.inf)])

    def split(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        # the leading part is θ, or the structures' parameters (ParameterMap) when the
        # optimiser moves those: beta is always the last p entries
        x = np.asarray(x, dtype=float)
        nt = x.size - self.p
        return np.ascontiguousarray(x[:nt]), np.ascontiguousarray(x[nt:])

    def stage0(self, theta: np.ndarray) -> float:
        """lme4's nAGQ = 0 criterion at theta (PIRLS over u and beta)."""
        self.nevals += 1
        return self.core.laplace_joint(np.ascontiguousarray(theta, dtype=float))

    def x_in(self, x: np.ndarray) -> np.ndarray:
        """(theta, beta) -> (theta, beta_c), the engine's coordinates."""
        theta, beta = self.split(x)
        return np.concatenate([theta, self.xcentring.beta_in(beta)])

    def x_out(self, xc: np.ndarray) -> np.ndarray:
        """(theta, beta_c) -> (theta, beta), the user's coordinates."""
        theta, beta_c = self.split(xc)
        return np.concatenate([theta, self.xcentring.beta_out(beta_c)])

    def log_out(self, stage: str, log: list) -> list:
        """Fit-log entries (x in the engine's coordinates, value) -> (stage, x, value) in
        the user's, converted in one array operation (a log has hundreds of entries)."""
        if not log:
            return []
        xs = np.array([x for x, _ in log], dtype=float)
        c = self.xcentring
        if c.active:
            nt = xs.shape[1] - self.p
            xs[:, nt + c.intercept] -= xs[:, nt:] @ c.shift
        return [(stage, x, v) for x, (_, v) in zip(xs, log)]

    def derivs_out(self, g: np.ndarray, H: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Gradient and Hessian in (theta, beta_c) -> in (theta, beta)."""
        nt = np.size(g) - self.p
        g = np.array(g, dtype=float)
        H = np.array(H, dtype=float)
        if not self.xcentring.active:
            return g, H
        T = np.eye(g.size)
        T[nt:, nt:] = self.xcentring.matrix()
        Ti = np.linalg.inv(T)
        return Ti.T @ g, Ti.T @ H @ Ti

    def devfun(self, x: np.ndarray) -> float:
        """The nAGQ >= 1 criterion at x = (theta, beta): Laplace or AGQ deviance."""
        return self.devfun_c(self.x_in(x))

    def devfun_c(self, x: np.ndarray) -> float:
        """``devfun`` at x = (theta, beta_c), the engine's coordinates."""
        self.nevals += 1
        theta, beta = self.split(x)
        if self.nagq > 1:
            return self.core.agq(theta, beta, self.nodes, self.weights)
        return self.core.laplace(theta, beta)

    @property
    def has_gradient(self) -> bool:
        """The engine gives the exact gradient of the criterion: Laplace with one term (scalar
        or vector-valued, any link), or with all terms scalar (crossed / nested intercepts)
        and a canonical link; not for the dispersion families."""
        # (over θ: with cs() or ar1() terms the optimiser's parameters are not θ)
        return self.nagq == 1 and self.core.has_gradient and self.pmap.native

    def devfun_grad(self, x: np.ndarray, jacobian: bool = True) -> tuple[float, np.ndarray | None]:
        """The Laplace criterion at x = (theta, beta) and its gradient (see ``has_gradient``).
        ``jacobian=False`` for points not revisited (finite-difference Hessian columns)."""
        f, g = self.devfun_grad_c(self.x_in(x), jacobian)
        if g is None or not self.xcentring.active:
            return f, g
        nt = self.ntheta
        return f, np.concatenate([g[:nt], self.xcentring.grad_out(g[nt:])])

    def devfun_grad_c(self, x: np.ndarray, jacobian: bool = True) -> tuple[float, np.ndarray | None]:
        """``devfun_grad`` at x = (theta, beta_c), the gradient in those coordinates."""
        self.nevals += 1
        theta, beta = self.split(x)
        f, g = self.core.laplace_grad(theta, beta, jacobian)
        return f, (None if g is None else np.asarray(g))

    def blocks(self, per_term: list[np.ndarray]) -> list[np.ndarray]:
        """Engine-term arrays (level-major flat) -> lme4 blocks (n_levels, k)."""
        out: list[np.ndarray] = [None] * len(self.input.terms)  # type: ignore[list-item]
        for e, flat in zip(self.eterms, per_term):
            arr = np.asarray(flat).reshape(e.nlev, -1)
            for k, cols in zip(e.blocks, e.cols):
                out[k] = np.ascontiguousarray(arr[:, cols])
        return out

    def condvar(self, theta: np.ndarray) -> list[np.ndarray]:
        """Conditional covariance of b per lme4 block at the current weights: (n_levels, s, s)."""
        cv = self.core.condvar(np.ascontiguousarray(theta, dtype=float))
        out: list[np.ndarray] = [None] * len(self.input.terms)  # type: ignore[list-item]
        for e, flat in zip(self.eterms, cv):
            s = e.Z.shape[1]
            blocks = np.asarray(flat).reshape(e.nlev, s, s).transpose(0, 2, 1)
            for k, cols in zip(e.blocks, e.cols):
                out[k] = np.ascontiguousarray(blocks[:, cols, cols])
        return out

    def glm_start(self, maxit: int = 50) -> tuple[np.ndarray | None, bool]:
        """The GLM without random effects and whether it shows separation (:func:`glm_start`)."""
        return glm_start(self, maxit)

    def pearson_chisq(self, frame: Any, mu: np.ndarray) -> float:
        """The Pearson chi-square sum w (y - mu)^2 / V(mu) of the frame's rows at ``mu``
        (lme4's sigma() of the dispersion families)."""
        wt = np.ones(frame.nobs) if frame.weights is None else frame.weights
        return float(np.sum(wt * (frame.y - mu) ** 2 / self.family.variance(mu)))

    def saturated_loglik(self, frame: Any, ntrials: np.ndarray | None) -> float:
        """log p(y | mu = y) summed over the frame's rows (left out of nAGQ > 1 criteria)."""
        wt = np.ones(frame.nobs) if frame.weights is None else frame.weights
        ntr = ntrials if ntrials is not None else np.ones(frame.nobs)
        return self.family.saturated_loglik(frame.y, ntr, wt)

    def vcov_rx(self, theta: np.ndarray, centred: bool = False) -> np.ndarray:
        """(R_X R_X')^-1 at the current weights: lme4's ``vcov(fit, use.hessian = FALSE)``
        (of beta_c with ``centred``)."""
        p = self.p
        if p == 0:
            return np.zeros((0, 0))
        rx = np.asarray(self.core.rx(np.ascontiguousarray(theta, dtype=float))).reshape(p, p).T
        rxinv = np.linalg.inv(rx)
        V = rxinv.T @ rxinv
        return V if centred else self.xcentring.cov_out(V)


def hessian_from_gradient(fg, x: np.ndarray, lower: np.ndarray, h: float = 1e-5,
                          g0: np.ndarray | None = None, central: bool = False) -> np.ndarray:
    """Hessian from finite differences of an exact gradient ``fg(x, jacobian) -> (f, g)``.

    Forward differences (n gradients) by default: with h = 1e-5 the error is about h times
    the ratio of third to second derivatives, ~1e-5 relative, well inside the
    finite-difference error of lme4's own Hessian; ``central`` for O(h^2) (2n gradients;
    forward for coordinates within h of a lower bound). lme4's ``deriv12`` needs 2 n^2
    criterion values.

    Where the engine has no gradient at a stepped point (PIRLS failed there: a predictor in
    units of 1e6 makes h a huge step in the linear predictor) the other one-sided difference
    is used; a column with neither is NaN, which callers read as a Hessian that cannot be
    used (not converged / ``hessian_not_pd``), never as a TypeError."""
    x = np.asarray(x, dtype=float)
    n = x.size
    H = np.full((n, n), np.nan)

    def grad(z: np.ndarray, jacobian: bool) -> np.ndarray | None:
        g = fg(z, jacobian)[1]
        return None if g is None or not np.all(np.isfinite(g)) else np.asarray(g, dtype=float)

    if g0 is None or not np.all(np.isfinite(g0)):
        g0 = grad(x, True)
        if g0 is None:
            return H
    for j in range(n):
        xp = x.copy()
        xp[j] += h
        gp = grad(xp, False)
        gm = None
        if central and not (np.isfinite(lower[j]) and x[j] - h < lower[j]):
            xm = x.copy()
            xm[j] -= h
            gm = grad(xm, False)
        if gp is not None and gm is not None:
            H[:, j] = (gp - gm) / (2.0 * h)
        elif gp is not None:
            H[:, j] = (gp - g0) / h
        elif gm is not None:
            H[:, j] = (g0 - gm) / h
    return 0.5 * (H + H.T)


def rounding_level(f: float) -> float:
    """The rounding level of a GLMM criterion of value ``f``: a sum of n terms of its own
    size (-2 log p, |u|^2, log det), evaluated at modes found to that precision: some 10 ulps
    of it. 2e-12 for a deviance of 1e3, 1.5e-5 for the 7e9 of counts of 1e7, where a
    predicted gain of a Newton step below it says nothing about convergence."""
    return 10.0 * np.finfo(float).eps * abs(float(f))


@dataclass
class NewtonResult:
    x: np.ndarray
    fun: float
    grad: np.ndarray
    hess: np.ndarray | None
    decrement: float
    feval: int
    converged: bool
    log: list


def newton_fd(fg, x0: np.ndarray, lower: np.ndarray, *, h: float = 1e-5, dec_tol: float = 1e-10,
              maxit: int = 60) -> NewtonResult:
    """Minimise ``fg(x) -> (f, gradient)`` subject to ``x >= lower`` by Newton steps.

    The Hessian comes from central differences of the gradient (``hessian_from_gradient``)
    and is reused for further steps (the chord method: one evaluation per step, linear
    convergence at a rate of the Hessian's relative change) until a step fails to give the
    predicted decrease; coordinates on their bound with the gradient pointing outwards are
    held there; each step is backtracked along the projected path. Converged when the
    Newton decrement g' H^-1 g / 2 (the predicted decrease of f) is below ``dec_tol``; when
    no step from a fresh Hessian can be backtracked to a decrease (f's rounding hides it),
    converged if the decrement is below 1e-6 or the criterion's rounding level
    (``rounding_level``), whichever is larger.

    A fresh Hessian that is not positive definite, or whose step cannot be backtracked to a
    decrease, is taken again by central differences with step 1e-4 (lme4's derivative step)
    for the rest of the run: the gradient carries rounding errors that forward differences
    with step h amplify by 1 / h, ~1e-5 at counts of 1e7 (the criterion ~7e9) and so errors
    of order 1 in the Hessian, against 0.05 centrally at 1e-4."""
    x = np.asarray(x0, dtype=float).copy()
    lower = np.asarray(lower, dtype=float)
    nev = [0]
    log: list = []

    def call(z, jacobian=True):
        nev[0] += 1
        f, g = fg(z, jacobian)
        log.append((z.copy(), f))
        return f, g

    f, g = call(x)
    if not np.isfinite(f) or g is None:
        return NewtonResult(x, f, g, None, np.inf, nev[0], False, log)
    H = None
    fresh = False
    central = False
    dec = np.inf
    for _ in range(maxit):
        if H is None:
            H = (hessian_from_gradient(call, x, lower, 1e-4, g0=g, central=True) if central
                 else hessian_from_gradient(call, x, lower, h, g0=g))
            fresh = True
            if not np.all(np.isfinite(H)):  # no gradient around x: leave it to BOBYQA
                return NewtonResult(x, f, g, None, np.inf, nev[0], False, log)
        at_bound = np.isfinite(lower) & (x <= lower)
        free = ~(at_bound & (g > 0))
        step = np.zeros_like(x)
        Hf = H[np.ix_(free, free)]
        try:
            c = np.linalg.cholesky(Hf)
        except np.linalg.LinAlgError:
            if not fresh or not central:
                H, central = None, central or fresh
                continue
            # not convex here: shift the spectrum (a trust-region-like damped step)
            ev = np.linalg.eigvalsh(Hf)
            Hf = Hf + (abs(ev.min()) + 1e-6 * max(1.0, abs(ev).max())) * np.eye(Hf.shape[0])
            c = np.linalg.cholesky(Hf)
        step[free] = -np.linalg.solve(c.T, np.linalg.solve(c, g[free]))
        dec = float(-(g @ step))
        if dec / 2.0 < dec_tol:
            return NewtonResult(x, f, g, H if fresh else None, dec / 2.0, nev[0], True, log)
        alpha = 1.0
        while True:
            xn = np.maximum(x + alpha * step, lower)
            fn, gn = call(xn)
            if np.isfinite(fn) and gn is not None and fn <= f + 1e-4 * float(g @ (xn - x)):
                break
            alpha *= 0.5
            if alpha < 1e-10:
                if not fresh or not central:
                    central = central or fresh
                    break
                return NewtonResult(x, f, g, H, dec / 2.0, nev[0], dec / 2.0 < max(1e-6, rounding_level(f)), log)
        if alpha < 1e-10:  # the chord step failed: a fresh Hessian
            H = None
            continue
        predicted = alpha * dec * (1.0 - alpha / 2.0)
        actual = f - fn
        x, f, g = xn, fn, gn
        # keep the Hessian while it predicts well; else recompute it at the new point
        if alpha < 1.0 or actual < 0.25 * predicted:
            H = None
        fresh = False
    return NewtonResult(x, f, g, None, dec / 2.0, nev[0], False, log)










def glm_start(problem: GlmmProblem, maxit: int = 50) -> tuple[np.ndarray | None, bool]:
    """The fixed effects of the GLM without random effects (IRLS in the engine's centred
    coordinates), and whether the fit shows complete or quasi-complete separation: a binomial
    fit whose linear predictor keeps growing while some fitted probabilities reach 0 or 1.

    A start for stage 2 when the joint PIRLS of stage 1 fails at every theta -- which happens
    for reasons other than separation (Poisson counts of 1e7: the family's starting means
    put eta = log(0.1) for zero counts, far from the fitted ~16) -- and the evidence behind
    the error message when even that fails. Returns (None, separated) when IRLS fails."""
    fam = problem.family
    X, y = problem._X, problem._y
    n = y.size
    w = np.ones(n) if problem._w is None else problem._w
    if problem._ntrials is not None and fam.name == "binomial":
        w = w * problem._ntrials
    off = np.zeros(n) if problem._off is None else problem._off
    ok = w > 0
    if fam.name == "binomial":
        mu = (w * y + 0.5) / (w + 1.0)  # glm's binomial initialize
    else:
        mu = y + 0.1
    eta = np.asarray(fam.linkfun(mu), dtype=float)
    beta = None
    dev_old = np.inf
    norms = []
    for _ in range(maxit):
        mu_eta = np.asarray(fam.mu_eta(eta), dtype=float)
        var = np.asarray(fam.variance(mu), dtype=float)
        good = ok & (var > 0) & np.isfinite(mu_eta) & (mu_eta != 0)
        if not np.any(good):
            return None, False
        z = eta - off + (y - mu) / np.where(good, mu_eta, 1.0)
        ww = np.where(good, w * mu_eta**2 / np.where(good, var, 1.0), 0.0)
        sw = np.sqrt(ww)
        try:
            beta = np.linalg.lstsq(X * sw[:, None], z * sw, rcond=None)[0]
        except np.linalg.LinAlgError:
            return None, False
        eta = X @ beta + off
        mu = np.asarray(fam.linkinv(eta), dtype=float)
        if not np.all(np.isfinite(mu)):
            return None, False
        dev = float(np.sum(fam.dev_resids(y, mu, w)))
        norms.append(float(np.abs(eta).max()))
        if abs(dev - dev_old) < 1e-10 * (abs(dev) + 0.1):
            break
        dev_old = dev
    separated = False
    if fam.name == "binomial" and beta is not None:
        eps = 1e-8
        at_edge = (mu < eps) | (mu > 1 - eps)
        growing = len(norms) > 3 and norms[-1] > norms[-3] + 1.0
        separated = bool(np.any(at_edge & ok)) and (growing or norms[-1] > 15)
    return beta, separated
