"""Generalized linear mixed models: the fit driver (lme4's ``glmer``).

``glmer`` builds the model frame (design.py), binds the arrays to the compiled PIRLS engine
(``multilevel._core.GlmmCore``), optimises and packs the estimates into a
:class:`~multilevel.glmm_results.GlmmFit`. The criterion and the estimates are lme4's; the
route to them is faster:

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

import time
import warnings as _warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ._core import GlmmCore, gauss_hermite
from .design import ModelFrame
from .errors import DataError, FitError, ModelSpecError, MultilevelWarning
from .families import Family, get_family
from .lmm import SINGULAR_MESSAGE, diagonal_theta, engine_terms, theta_layout
from .optimize import bobyqa, control_options

if TYPE_CHECKING:  # for the return hint only; glmm_results is imported lazily in glmer
    from .glmm_results import GlmmFit

__all__ = ["glmer", "GlmmProblem", "deriv12", "hessian_from_gradient", "newton_fd"]

#: GLMM-only control settings and their defaults (the rest are optimize.DEFAULTS)
GLMM_DEFAULTS: dict[str, Any] = {
    # PIRLS stops when no coordinate of u (beta) moves by more than this (relative to 1 + |.|)
    "pirls_tol": 1e-13,
    "pirls_maxit": 200,
    # lme4's calc.derivs: None = lme4's rule (nobs < 1e4 and npar < 100, non-singular fit)
    "calc_derivs": None,
    # stage 2 optimiser: "auto" (Newton on the exact gradient where the engine has one, i.e.
    # Laplace with one scalar term; else BOBYQA), "newton", "bobyqa"
    "optimizer": "auto",
    # Newton: stop when the predicted decrease of the deviance is below this
    "newton_tol": 1e-10,
    # stage 1 tolerances when it only provides the start of a BOBYQA stage 2 (Newton on the
    # exact gradient needs a rougher start: 1e-2)
    "stage1_ftol_abs": 1e-6,
    "stage1_xtol_abs": 1e-5,
}

#: lme4's glmerControl(check.conv.nobsmax, check.conv.nparmax)
_NOBS_MAX = 10_000
_NPAR_MAX = 100
#: lme4's getSingTol(): a fit is singular (no derivatives) when a diagonal theta is below this
_SING_TOL = 1e-4


class GlmmProblem:
    """The arrays of one GLMM bound to the compiled engine, with lme4's criteria.

    The small interface inference code relies on: ``stage0(theta)`` (nAGQ = 0 criterion,
    beta in PIRLS), ``devfun(x)`` with ``x = (theta, beta)`` (the nAGQ >= 1 criterion),
    ``state(x)`` (modes, fitted values, weights at x), ``condvar``, ``vcov_rx``.
    """

    def __init__(self, frame: ModelFrame, family: Family, nagq: int, ntrials: np.ndarray | None = None,
                 pirls_tol: float = 1e-13, pirls_maxit: int = 200):
        self.frame = frame
        self.family = family
        self.nagq = int(nagq)
        self.slices, self.theta0, self.lower = theta_layout(frame)
        self.eterms = engine_terms(frame, self.slices)
        self.ntheta = len(self.theta0)
        self.p = frame.X.shape[1]
        w = None if frame.weights is None else np.ascontiguousarray(frame.weights, dtype=float)
        off = None if frame.offset is None else np.ascontiguousarray(frame.offset, dtype=float)
        nt = None if ntrials is None else np.ascontiguousarray(ntrials, dtype=float)
        self.core = GlmmCore(
            [e.refs for e in self.eterms],
            [e.Z for e in self.eterms],
            [e.nlev for e in self.eterms],
            [e.lam for e in self.eterms],
            np.ascontiguousarray(frame.X, dtype=float),
            np.ascontiguousarray(frame.y, dtype=float),
            family.name,
            family.link.name,
            w,
            nt,
            off,
        )
        self.core.set_control(tol=float(pirls_tol), maxit=int(pirls_maxit))
        if self.nagq > 1:
            if not self.core.is_scalar:
                raise ModelSpecError("nagq > 1 needs a single scalar random-effect term")
            self.nodes, self.weights = gauss_hermite(self.nagq)
        self.nevals = 0

    @property
    def n(self) -> int:
        return self.frame.nobs

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
        return self.nagq == 1 and self.core.has_gradient

    def devfun_grad(self, x: np.ndarray, jacobian: bool = True) -> tuple[float, np.ndarray | None]:
        """The Laplace criterion at x = (theta, beta) and its gradient (see ``has_gradient``).
        ``jacobian=False`` for points not revisited (finite-difference Hessian columns)."""
        self.nevals += 1
        theta, beta = self.split(x)
        f, g = self.core.laplace_grad(theta, beta, jacobian)
        return f, (None if g is None else np.asarray(g))

    def blocks(self, per_term: list[np.ndarray]) -> list[np.ndarray]:
        """Engine-term arrays (level-major flat) -> lme4 blocks (n_levels, k)."""
        out: list[np.ndarray] = [None] * len(self.frame.reterms)  # type: ignore[list-item]
        for e, flat in zip(self.eterms, per_term):
            arr = np.asarray(flat).reshape(e.nlev, -1)
            for k, cols in zip(e.blocks, e.cols):
                out[k] = np.ascontiguousarray(arr[:, cols])
        return out

    def condvar(self, theta: np.ndarray) -> list[np.ndarray]:
        """Conditional covariance of b per lme4 block at the current weights: (n_levels, s, s)."""
        cv = self.core.condvar(np.ascontiguousarray(theta, dtype=float))
        out: list[np.ndarray] = [None] * len(self.frame.reterms)  # type: ignore[list-item]
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


def _user_weights_at(data: Any, weights: Any, rows: np.ndarray) -> np.ndarray | None:
    if weights is None:
        return None
    try:
        arr = np.asarray(data[weights] if isinstance(weights, str) else weights, dtype=float)
    except Exception:  # noqa: BLE001 - the frame already validated the weights
        return None
    return arr[rows] if arr.shape[0] > rows.max(initial=0) else None


def _check_response(frame: ModelFrame, fam: Family, weights_given: bool) -> bool:
    """lme4's response rules with clear errors; returns True for a cbind() response."""
    resp = frame.response.replace(" ", "")
    cbind = resp.startswith("cbind(")
    y = frame.y
    if fam.name == "binomial":
        levels = frame.factor_levels.get(frame.response)
        if levels is not None and len(levels) > 2:
            raise DataError(f"the binomial response '{frame.response}' is a factor with {len(levels)} "
                            f"levels ({', '.join(map(str, levels[:5]))}{', ...' if len(levels) > 5 else ''}); "
                            f"it must have two (the first is failure)")
        if not cbind and frame.weights is None:
            bad = (y != 0) & (y != 1)
            if bad.any():
                raise DataError(f"the binomial response '{frame.response}' must be 0/1 (or a two-level "
                                f"factor) when no weights are given; {int(bad.sum())} value(s) are "
                                f"proportions strictly between 0 and 1 -- give weights= (the number of "
                                f"trials) or use cbind(successes, failures)")
        elif frame.weights is not None:
            m = frame.weights * y
            if np.any(np.abs(m - np.round(m)) > 1e-3):
                msg = "non-integer #successes in a binomial glm!"
                if msg not in frame.warnings:
                    frame.warnings.append(msg)
    elif fam.name == "poisson":
        if np.any(y < 0):
            raise DataError(f"the Poisson response '{frame.response}' has negative values")
        nonint = np.abs(y - np.round(y)) > 1e-7
        if nonint.any():
            raise DataError(f"the Poisson response '{frame.response}' must be counts; "
                            f"{int(nonint.sum())} value(s) are not integers")
    return cbind


def _split_control(control: dict | None) -> tuple[dict, dict]:
    control = dict(control or {})
    glmm_opts = dict(GLMM_DEFAULTS)
    for k in list(control):
        if k in GLMM_DEFAULTS:
            glmm_opts[k] = control.pop(k)
    return control_options(control), glmm_opts


def glmer(
    formula: str,
    data: Any,
    family: str | Family = "binomial",
    link: str | None = None,
    nagq: int = 1,
    weights: Any = None,
    offset: Any = None,
    control: dict | None = None,
) -> GlmmFit:
    """Fit a generalized linear mixed model by maximum likelihood (lme4's ``glmer``).

    Parameters
    ----------
    formula : str
        lme4 syntax. Binomial responses: 0/1 (numbers or booleans), a two-level factor (the
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
    control : dict, optional
        Optimiser settings as for :func:`multilevel.lmer` (``ftol_abs``, ``xtol_abs``,
        ``maxeval``, ``check_conv``, ``conv_tol``; these apply to BOBYQA) plus
        ``optimizer`` (``"auto"``: Newton on the exact gradient where the engine has one,
        else BOBYQA; ``"newton"``; ``"bobyqa"``), ``newton_tol`` (predicted decrease of the
        deviance at which Newton stops, 1e-10), ``pirls_tol`` (1e-13), ``pirls_maxit``,
        ``calc_derivs`` (True / False to force or skip the Hessian behind the default
        covariance; None: lme4's rule) and ``stage1_ftol_abs`` / ``stage1_xtol_abs``.

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
    from .design import build_model_frame
    from .glmm_results import GlmmFit

    t_start = time.perf_counter()
    fam = get_family(family, link)
    try:
        nagq = int(nagq)
    except (TypeError, ValueError) as e:
        raise ModelSpecError(f"nagq must be a non-negative integer, not {nagq!r}") from e
    if nagq < 0:
        raise ModelSpecError(f"nagq must be a non-negative integer, not {nagq}")
    opts, gopts = _split_control(control)
    frame = build_model_frame(formula, data, weights=weights, offset=offset, family=fam.name)
    # design.py only warns about non-integer counts; glmer refuses them
    frame.warnings[:] = [w for w in frame.warnings if not w.startswith("non-integer counts")]
    cbind = _check_response(frame, fam, weights is not None)
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
    problem = GlmmProblem(frame, fam, nagq, ntrials, gopts["pirls_tol"], gopts["pirls_maxit"])
    nt = problem.ntheta
    diag = diagonal_theta(frame, problem.slices)

    # ---- stage 1: nAGQ = 0 criterion over theta ---------------------------------------------
    t0 = time.perf_counter()
    opts1 = dict(opts)
    if nagq > 0:
        # stage 1 only provides the start of stage 2; Newton on the exact gradient needs a
        # rougher one than BOBYQA
        newton_next = problem.has_gradient and gopts["optimizer"] in ("auto", "newton")
        f1tol, x1tol = (1e-2, 1e-2) if newton_next else (gopts["stage1_ftol_abs"], gopts["stage1_xtol_abs"])
        opts1["ftol_abs"] = max(opts["ftol_abs"], f1tol)
        opts1["xtol_abs"] = max(opts["xtol_abs"], x1tol)
    if opts1.get("initial_step") is None:
        opts1["initial_step"] = 0.2 if nt else 0.5
    res1 = bobyqa(problem.stage0, problem.theta0, problem.lower, opts1)
    theta1 = res1.x.copy()
    f1 = problem.stage0(theta1)
    if not np.isfinite(f1):
        raise FitError("the fit failed: PIRLS does not converge at the starting values "
                       "(check the response and the model for complete separation)")
    beta1 = np.asarray(problem.core.beta, dtype=float).copy()
    warns = list(res1.warnings)
    fit_log = [("stage1", x, v) for x, v in res1.log]

    # ---- stage 2: the full criterion over (theta, beta) ----------------------------------
    lower = problem.lower_full
    newton = None
    if nagq > 0:
        x0 = np.concatenate([theta1, beta1])
        crit = problem.devfun
        use_newton = problem.has_gradient and gopts["optimizer"] in ("auto", "newton")
        if use_newton:
            newton = newton_fd(problem.devfun_grad, x0, lower, dec_tol=gopts["newton_tol"])
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
            se1 = np.sqrt(np.clip(np.diag(problem.vcov_rx(x0[:nt])), 0, None)) if problem.p else np.zeros(0)
            step = np.concatenate([np.full(nt, 0.05) + 0.05 * np.abs(x0[:nt]),
                                   np.where(np.isfinite(se1) & (se1 > 0), 0.2 * se1, 0.1)])
            opts2 = dict(opts)
            if opts2.get("initial_step") is None:
                opts2["initial_step"] = step
            res2 = bobyqa(problem.devfun, x0, lower, opts2)
            xopt, fval = res2.x.copy(), res2.fun
            warns += res2.warnings
            fit_log += [("stage2", x, v) for x, v in res2.log]
            feval = res1.feval + res2.feval
            code, message = res2.code, res2.message
            optimizer = "bobyqa"
    else:
        xopt, fval = np.concatenate([theta1, beta1]), f1

        def crit(x):
            return problem.stage0(np.asarray(x)[:nt])

        feval = res1.feval
        code, message = res1.code, res1.message
        optimizer = "bobyqa"

    # ---- boundary: theta that the data cannot tell from 0 ---------------------------------
    for i in diag:
        if 0 < xopt[i] < _SING_TOL:
            trial = xopt.copy()
            trial[i] = 0.0
            ft = crit(trial)
            if ft <= fval + 1e-10:
                xopt, fval = trial, ft

    # ---- derivatives (lme4's calc.derivs rule) -------------------------------------------
    theta_opt = xopt[:nt]
    singular_opt = bool(np.any(theta_opt[diag] < _SING_TOL)) if diag.size else False
    npar = nt + problem.p
    calc = gopts["calc_derivs"]
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
        if opts["check_conv"] and not singular_opt:
            free = ~(np.isfinite(lower) & (xopt - lower <= 1e-7))
            gi, Hi = g[free], H[np.ix_(free, free)]
            try:
                dec = 0.5 * float(gi @ np.linalg.solve(Hi, gi))
            except np.linalg.LinAlgError:
                dec = float("inf")
            if not np.isfinite(dec) or dec < 0 or dec > opts["conv_tol"]:
                warns.append(f"Model may not have converged: a Newton step from the optimum would lower "
                             f"the deviance by {dec:.2g} (max|grad| = {np.abs(gi).max():.3g})")
    elif newton is not None and opts["check_conv"] and newton.decrement > opts["conv_tol"]:
        warns.append(f"Model may not have converged: a Newton step from the optimum would lower the "
                     f"deviance by {newton.decrement:.2g}")

    # ---- the state at the optimum ----------------------------------------------------------
    if nagq > 0:
        fval = crit(xopt)
    else:
        fval = problem.stage0(theta_opt)
        xopt = np.concatenate([theta_opt, np.asarray(problem.core.beta, dtype=float)])
    if not np.isfinite(fval):
        raise FitError("the fit failed: the criterion is not finite at the estimate")
    theta_opt, beta_opt = problem.split(xopt)
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
                warns.append("variance-covariance matrix computed from finite-difference Hessian is "
                             "not positive definite or contains NA values: falling back to var-cov "
                             "estimated from RX")
        except np.linalg.LinAlgError:
            warns.append("variance-covariance matrix computed from finite-difference Hessian is not "
                         "positive definite or contains NA values: falling back to var-cov estimated "
                         "from RX")
    condvar = problem.condvar(theta_opt)
    is_sing = bool(np.any(theta_opt[diag] < opts["singular_tol"])) if diag.size else False
    messages = list(frame.warnings)
    if is_sing:
        messages.append(SINGULAR_MESSAGE)
    messages.extend(warns)
    for m in messages:
        _warnings.warn(m, MultilevelWarning, stacklevel=2)
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
        "stage1": {"theta": theta1, "beta": beta1, "objective": f1, "feval": res1.feval},
        "time": time.perf_counter() - t0,
        "time_total": time.perf_counter() - t_start,
    }
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
    )
    fit._problem = problem  # for inference code (profiles, bootstrap), not part of the API
    return fit
