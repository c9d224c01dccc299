"""Centring of the fixed-effects columns inside the engine, undone exactly for the results.

Layer: engine. Cross products such as X'X and X'y lose digits when a column sits far from 0
(a predictor shifted by 1e5 cost 5e-4 in the ML log-likelihood, by 1e7 0.16), and BOBYQA over
(theta, beta) in a GLMM meets an intercept and slope that are nearly collinear. With an
intercept column, fitting on ``X_c = X - 1 m'`` (every other column centred at its mean ``m``)
is a reparametrisation ``X_c = X T^-1`` with ``T = I - e_int m'`` unit triangular: the same
column space, so the same fitted values, and ``det T = 1``, so REML's ``log|R_X|^2`` is the
same. Estimates map back exactly: ``beta = T beta_c``, ``vcov = T V_c T'``.

Without an intercept column nothing is centred (a shift is then not a reparametrisation).

>>> import numpy as np
>>> X = np.c_[np.ones(3), [1e7 + 1, 1e7 + 2, 1e7 + 3]]
>>> c = XCentring.of(X, intercept=0)
>>> c.apply(X)[:, 1].tolist()
[-1.0, 0.0, 1.0]
>>> beta = np.array([2.0, 0.5])
>>> bool(np.allclose(c.apply(X) @ c.beta_in(beta), X @ beta))
True
>>> c.beta_out(c.beta_in(beta)).tolist()
[2.0, 0.5]
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["XCentring"]


@dataclass(frozen=True, eq=False)
class XCentring:
    """The column means ``shift`` (0 at the intercept) removed from X, and the maps between
    the user's coefficients ``beta`` and the engine's ``beta_c``. ``intercept`` None: no-op."""

    intercept: int | None
    shift: np.ndarray

    @classmethod
    def of(cls, X: np.ndarray, intercept: int | None, weights: np.ndarray | None = None) -> XCentring:
        """The centring of ``X`` (weighted means with prior weights: the cross products are
        weighted). Only where column ``intercept`` is all ones."""
        X = np.asarray(X, dtype=float)
        p = X.shape[1]
        # (array methods rather than np.all / np.any: a small fit pays their wrapping)
        if intercept is None or X.shape[0] == 0 or not (X[:, intercept] == 1.0).all():
            return cls(None, np.zeros(p))
        if weights is not None and np.sum(weights) > 0:
            m = np.asarray(weights, float) @ X / float(np.sum(weights))
        else:  # a matrix-vector product: much faster than a strided mean over the rows
            m = np.ones(X.shape[0]) @ X / float(X.shape[0])
        m = np.asarray(m, dtype=float)  # the quotient is a new array: no copy needed
        m[intercept] = 0.0
        if not m.any():  # intercept only, or columns already at mean 0: nothing to undo
            return cls(None, np.zeros(p))
        return cls(int(intercept), m)

    @property
    def active(self) -> bool:
        return self.intercept is not None

    def apply(self, X: np.ndarray) -> np.ndarray:
        """``X_c = X - 1 shift'`` (C-contiguous)."""
        X = np.asarray(X, dtype=float)
        if not self.active:
            return np.ascontiguousarray(X)
        return np.ascontiguousarray(X - self.shift[None, :])

    def beta_out(self, beta_c: np.ndarray) -> np.ndarray:
        """The user's coefficients from the engine's: ``T beta_c``."""
        b = np.array(beta_c, dtype=float)
        if self.active:
            b[self.intercept] -= float(self.shift @ b)
        return b

    def beta_in(self, beta: np.ndarray) -> np.ndarray:
        """The engine's coefficients from the user's: ``T^-1 beta``."""
        b = np.array(beta, dtype=float)
        if self.active:
            b[self.intercept] += float(self.shift @ b)
        return b

    def cov_out(self, V: np.ndarray) -> np.ndarray:
        """The covariance of ``beta`` from that of ``beta_c``: ``T V T'``."""
        if not self.active or V.size == 0:
            return V
        # T = I - e_int m': T V T' changes only the intercept's row and column (no p x p
        # products: this runs at every Satterthwaite derivative step of a simulation study)
        i, m = self.intercept, self.shift
        Vm = V @ m
        out = np.array(V, dtype=float)
        out[i, :] -= Vm
        out[:, i] -= Vm
        out[i, i] += float(m @ Vm)
        return out

    def grad_out(self, g: np.ndarray) -> np.ndarray:
        """A gradient with respect to ``beta`` from one with respect to ``beta_c``:
        ``T^-T g`` (since ``beta_c = T^-1 beta``)."""
        if not self.active:
            return g
        return np.linalg.solve(self.matrix().T, g)

    def hess_out(self, H: np.ndarray) -> np.ndarray:
        """A Hessian with respect to ``beta`` from one with respect to ``beta_c``."""
        if not self.active or H.size == 0:
            return H
        Ti = np.linalg.inv(self.matrix())
        return Ti.T @ H @ Ti

    def matrix(self) -> np.ndarray:
        """T, with ``beta = T beta_c``."""
        p = self.shift.size
        T = np.eye(p)
        T[self.intercept, :] -= self.shift
        return T
