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

   - Where the engine gives the exact gradient of the Laplace criterion (one scalar term, any
     link; all terms scalar -- crossed or nested intercepts -- with a canonical link), Newton
     steps with the Hessian from finite differences of that gradient (``newton_fd``): some 10
     - 20 evaluations, and each starts PIRLS from modes predicted to first order.
   - Otherwise (vector-valued terms, non-canonical links with several terms, AGQ) BOBYQA, as
     lme4 (lme4 uses Nelder-Mead by default and BOBYQA in the reference fits).
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
from multilevel.engine.compiled import CompiledProblem
from multilevel.engine.input import EngineInput
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
        self._X = np.ascontiguousarray(inp.X, dtype=float)
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
        )
        core.set_control(tol=self.pirls_tol, maxit=self.pirls_maxit)
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
        x = np.asarray(x, dtype=float)
        return np.ascontiguousarray(x[: self.ntheta]), np.ascontiguousarray(x[self.ntheta:])

    def stage0(self, theta: np.ndarray) -> float:
        """lme4's nAGQ = 0 criterion at theta (PIRLS over u and beta)."""
        self.nevals += 1
        return self.core.laplace_joint(np.ascontiguousarray(theta, dtype=float))

    def devfun(self, x: np.ndarray) -> float:
        """The nAGQ >= 1 criterion at x = (theta, beta): Laplace or AGQ deviance."""
        self.nevals += 1
        theta, beta = self.split(x)
        if self.nagq > 1:
            return self.core.agq(theta, beta, self.nodes, self.weights)
        return self.core.laplace(theta, beta)

    @property
    def has_gradient(self) -> bool:
        """The engine gives the exact gradient of the criterion: Laplace with one scalar term,
        or with all terms scalar (crossed / nested intercepts) and a canonical link."""
        # (over θ: with cs() or ar1() terms the optimiser's parameters are not θ)
        return self.nagq == 1 and self.core.has_gradient and self.pmap.native

    def devfun_grad(self, x: np.ndarray, jacobian: bool = True) -> tuple[float, np.ndarray | None]:
        """The Laplace criterion at x = (theta, beta) and its gradient (see ``has_gradient``).
        ``jacobian=False`` for points not revisited (finite-difference Hessian columns)."""
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

    def vcov_rx(self, theta: np.ndarray) -> np.ndarray:
        """(R_X R_X')^-1 at the current weights: lme4's ``vcov(fit, use.hessian = FALSE)``."""
        p = self.p
        if p == 0:
            return np.zeros((0, 0))
        rx = np.asarray(self.core.rx(np.ascontiguousarray(theta, dtype=float))).reshape(p, p).T
        rxinv = np.linalg.inv(rx)
        return rxinv.T @ rxinv


def deriv12(fun, x: np.ndarray, delta: float = 1e-4, fx: float | None = None,
            lower: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Gradient and Hessian of ``fun`` at ``x`` by central differences with steps ``delta``,
    as lme4's ``deriv12``: diagonal from f(x +- delta e_j), off-diagonal from the four
    points (x_i +- delta, x_j +- delta); 2 n^2 evaluations.

    Where x - delta would cross a lower bound the backward step is shortened to the bound
    (as lme4); the formulas here are the correct ones for unequal steps (lme4's reduce to
    them only for equal steps), and at the bound itself the diagonal uses the forward points
    x + delta, x + 2 delta.
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

    def at(**moves):
        xx = x.copy()
        for k, v in moves.items():
            xx[int(k[1:])] += v
        return float(fun(xx))

    for j in range(nx):
        u, l_ = ud[j], ld[j]
        fadd = at(**{f"i{j}": u})
        if l_ > 0:
            fsub = at(**{f"i{j}": -l_})
            H[j, j] = 2.0 * (l_ * fadd - (u + l_) * fx + u * fsub) / (u * l_ * (u + l_))
            g[j] = (l_ * l_ * (fadd - fx) + u * u * (fx - fsub)) / (u * l_ * (u + l_))
        else:  # on the bound: forward differences
            f2 = at(**{f"i{j}": 2 * u})
            H[j, j] = (f2 - 2.0 * fadd + fx) / u**2
            g[j] = (-3.0 * fx + 4.0 * fadd - f2) / (2.0 * u)
        for i in range(j):
            ui, li = ud[i], ld[i]
            vals = [at(**{f"i{i}": si, f"i{j}": sj}) for si, sj in ((ui, u), (ui, -l_), (-li, u), (-li, -l_))]
            H[i, j] = H[j, i] = (vals[0] - vals[1] - vals[2] + vals[3]) / ((ui + li) * (u + l_))
    return g, H


def hessian_from_gradient(fg, x: np.ndarray, lower: np.ndarray, h: float = 1e-5,
                          g0: np.ndarray | None = None, central: bool = False) -> np.ndarray:
    """Hessian from finite differences of an exact gradient ``fg(x, jacobian) -> (f, g)``.

    Forward differences (n gradients) by default: with h = 1e-5 the error is about h times
    the ratio of third to second derivatives, ~1e-5 relative, well inside the
    finite-difference error of lme4's own Hessian; ``central`` for O(h^2) (2n gradients;
    forward for coordinates within h of a lower bound). lme4's ``deriv12`` needs 2 n^2
    criterion values."""
    x = np.asarray(x, dtype=float)
    n = x.size
    H = np.zeros((n, n))
    if g0 is None:
        g0 = fg(x, True)[1]
    for j in range(n):
        xp = x.copy()
        xp[j] += h
        gp = fg(xp, False)[1]
        if central and not (np.isfinite(lower[j]) and x[j] - h < lower[j]):
            xm = x.copy()
            xm[j] -= h
            H[:, j] = (gp - fg(xm, False)[1]) / (2.0 * h)
        else:
            H[:, j] = (gp - g0) / h
    return 0.5 * (H + H.T)


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
    Newton decrement g' H^-1 g / 2 (the predicted decrease of f) is below ``dec_tol``."""
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
    dec = np.inf
    for _ in range(maxit):
        if H is None:
            H = hessian_from_gradient(call, x, lower, h, g0=g)
            fresh = True
        at_bound = np.isfinite(lower) & (x <= lower)
        free = ~(at_bound & (g > 0))
        step = np.zeros_like(x)
        Hf = H[np.ix_(free, free)]
        try:
            c = np.linalg.cholesky(Hf)
        except np.linalg.LinAlgError:
            if not fresh:
                H = None
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
                if not fresh:
                    break
                return NewtonResult(x, f, g, H, dec / 2.0, nev[0], dec / 2.0 < 1e-6, log)
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








