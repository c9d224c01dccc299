"""Brute-force dense evaluation of a linear mixed model's profiled likelihood.

Straight from the definitions, with no cleverness: V = Z Lambda Lambda' Z' + W^-1 and
generalised least squares. Used by the tests to check the blocked engine.
"""
from __future__ import annotations

import numpy as np


def dense_z(refs: np.ndarray, Z: np.ndarray, nlev: int) -> np.ndarray:
    """The n x (nlev * s) indicator-times-columns matrix of one term, level-major."""
    n, s = Z.shape
    out = np.zeros((n, nlev * s))
    for i in range(n):
        out[i, refs[i] * s:(refs[i] + 1) * s] = Z[i]
    return out


def profiled_objective(y, X, Zfull, Lam, w=None, reml=False) -> float:
    """-2 log-likelihood (ML) or REML criterion, profiled over beta and sigma, including
    the -sum(log w) term of prior weights."""
    n, p = X.shape
    w = np.ones(n) if w is None else np.asarray(w, float)
    ZL = Zfull @ Lam
    V0 = ZL @ ZL.T + np.diag(1.0 / w)
    V0inv = np.linalg.inv(V0)
    XtVX = X.T @ V0inv @ X
    beta = np.linalg.solve(XtVX, X.T @ V0inv @ y)
    r = y - X @ beta
    q = float(r @ V0inv @ r)
    _, logdetV0 = np.linalg.slogdet(V0)
    if reml:
        _, ldx = np.linalg.slogdet(XtVX)
        return logdetV0 + ldx + (n - p) * (1 + np.log(2 * np.pi * q / (n - p)))
    return logdetV0 + n * (1 + np.log(2 * np.pi * q / n))
