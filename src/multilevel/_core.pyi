"""Type stubs for the compiled engine ``multilevel._core`` (crates/py).

Errors are raised as the classes of :mod:`multilevel.errors`: ``DataError`` for
inconsistent arrays, ``ModelSpecError`` for a model the engine cannot set up (including a
dense block over its size limit), ``FitError`` for a failed factorisation or PIRLS.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

_F64 = npt.NDArray[np.float64]
_U32 = npt.NDArray[np.uint32]
_Lambda = list[tuple[int, int, int]]

class LmmCore:
    """A linear mixed model bound to the blocked-Cholesky engine (profiled deviance)."""

    def __init__(
        self,
        refs: list[_U32],
        z: list[_F64],
        nlev: list[int],
        lambdas: list[_Lambda],
        x: _F64,
        y: _F64,
        w: _F64 | None = None,
        layout: str = "auto",
    ) -> None:
        """Per term the level codes, Z columns, level count and Lambda pattern; X, y, weights;
        layout of the later terms' block: "auto" (from the pattern), "dense" or "sparse"."""
    @property
    def layout(self) -> str:
        """The layout chosen for the block of the later terms, X and y: "dense" or "sparse"."""
    def objective(self, theta: _F64, reml: bool) -> float:
        """Profiled deviance (reml=False) or REML criterion at theta, without the weights term."""
    def objective_gradient(self, theta: _F64, reml: bool) -> tuple[float, _F64]:
        """The criterion and its analytic gradient in theta (from the blocked factor)."""
    def optimize(self, theta0: _F64, lower: _F64, reml: bool, maxeval: int = 10000,
                 dec_tol: float = 1e-10) -> dict[str, Any]:
        """Minimise over theta >= lower inside the core (projected BFGS on the gradient):
        theta, fun, grad, hess, decrement, feval, stop, log_theta, log_fun."""
    def solution(self, theta: _F64, reml: bool) -> dict[str, Any]:
        """Estimates at theta: objective, beta, u, b, pwrss, ldl2, ldrx2, rx."""
    def condvar(self, theta: _F64) -> list[_F64]:
        """Conditional covariances of b relative to sigma^2, per term flat (nlev * s * s)."""
    def set_y(self, y: _F64, w: _F64 | None = None) -> None:
        """Replace the response (only its cross products are recomputed)."""
    def reweight(self, y: _F64, w: _F64 | None = None) -> None:
        """Replace weights and response, keeping the pattern."""
    def moment_start(self) -> list[list[float]]:
        """Starting values for the diagonals of Lambda, per term and column."""
    def fitted(self, beta: _F64, b: list[_F64]) -> _F64:
        """X beta + Z b for the model's rows (no offset)."""
    @property
    def rest_size(self) -> int:
        """Size of the engine's dense block (terms after the first, X and y)."""

class GlmmCore:
    """A generalized linear mixed model bound to the compiled PIRLS engine."""

    def __init__(
        self,
        refs: list[_U32],
        z: list[_F64],
        nlev: list[int],
        lambdas: list[_Lambda],
        x: _F64,
        y: _F64,
        family: str,
        link: str,
        wt: _F64 | None = None,
        ntrials: _F64 | None = None,
        offset: _F64 | None = None,
        family_param: float | None = None,
    ) -> None:
        """As LmmCore, plus family, link, prior weights, binomial trials, offset and the
        family's parameter (the negative binomial's theta)."""
    def laplace(self, theta: _F64, beta: _F64) -> float:
        """Laplace deviance at (theta, beta); inf if PIRLS fails."""
    def laplace_grad(self, theta: _F64, beta: _F64, jacobian: bool = True) -> tuple[float, _F64 | None]:
        """Laplace deviance and its gradient in (theta, beta), or None where unavailable."""
    def try_laplace(self, theta: _F64, beta: _F64) -> float:
        """Like laplace, but raises the PIRLS error (FitError) instead of returning inf."""
    def agq(self, theta: _F64, beta: _F64, nodes: _F64, weights: _F64) -> float:
        """Adaptive Gauss-Hermite deviance (one scalar term) with the given rule."""
    def laplace_joint(self, theta: _F64) -> float:
        """lme4's nAGQ = 0 criterion at theta (PIRLS over u and beta)."""
    def try_laplace_joint(self, theta: _F64) -> float:
        """Like laplace_joint, but raises the PIRLS error (FitError) instead of returning inf."""
    def info(self) -> dict[str, Any]:
        """Pieces of the last evaluation: objective, aic, dev, usq, ldl2, iterations."""
    @property
    def beta(self) -> _F64:
        """Fixed effects of the last evaluation."""
    @property
    def is_scalar(self) -> bool:
        """One scalar random-effect term (the matrix-free engine)."""
    @property
    def has_gradient(self) -> bool:
        """The engine gives the exact gradient of the Laplace criterion."""
    def u(self) -> list[_F64]:
        """Spherical random effects per term (level-major, flattened)."""
    def b(self, theta: _F64) -> list[_F64]:
        """b = Lambda(theta) u per term (level-major, flattened)."""
    def set_u(self, u: list[_F64]) -> None:
        """Set the warm start u (per term, level-major)."""
    def reset(self) -> None:
        """Forget the warm start."""
    def eta(self) -> _F64:
        """Linear predictor at the last evaluation (caller's row order)."""
    def mu(self) -> _F64:
        """Mean at the last evaluation."""
    def weights(self) -> _F64:
        """IRLS weights at the last evaluation."""
    def condvar(self, theta: _F64) -> list[_F64]:
        """Conditional covariances of b at the current weights, per term flat (nlev * s * s)."""
    def rx(self, theta: _F64) -> _F64:
        """R_X (p x p lower, column-major flattened) at the current weights."""
    def set_family_param(self, param: float) -> None:
        """Change the negative binomial's theta, keeping the warm start."""
    def set_control(self, tol: float | None = None, maxit: int | None = None) -> None:
        """PIRLS convergence tolerance and iteration limit."""

def gauss_hermite(n: int) -> tuple[_F64, _F64]:
    """Gauss-Hermite rule for the standard normal (lme4's GHrule): nodes, weights summing to 1."""

def family_eval(
    family: str,
    link: str,
    y: _F64,
    eta: _F64,
    wt: _F64,
    ntrials: _F64 | None = None,
    family_param: float | None = None,
) -> dict[str, Any]:
    """The engine's per-row mu, mu_eta, variance, dev_resids at eta, and aic (-2 log p summed)."""

def cell_moments_add(
    cells: npt.NDArray[np.int64],
    v: _F64,
    w: _F64 | None,
    count: npt.NDArray[np.int64],
    wsum: _F64,
    c: _F64,
    m1: _F64,
    m2: _F64,
) -> None:
    """Add rows to per-cell moments in place (count, wsum, shift c, shifted m1 and upper-
    triangular m2); a fresh cell's shift is the mean of its rows here. Nothing changes on
    bad input (DataError)."""
