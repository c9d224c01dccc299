"""Property tests: the blocked engine against a dense brute-force likelihood, and fits that do
not depend on the order of the rows."""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import multilevel as ml
from multilevel._core import LmmCore
from multilevel.design import ModelFrame, ReTerm
from multilevel.engine.lmm import LmmProblem
from multilevel.models import engine_input

from dense_reference import dense_z, profiled_objective

# (kind, structure): random intercepts, correlated slopes, nested, crossed
DESIGNS = ["intercept", "slopes", "nested", "crossed", "crossed_slopes", "same_group_split"]


def _design(kind: str, n: int, rng: np.random.Generator):
    """Return terms as (refs, Z, nlev, lambda pattern) with term 0 the largest."""
    ones = np.ones((n, 1))
    x = rng.normal(size=n)
    if kind == "intercept":
        g = rng.integers(0, 6, n)
        return [(g, ones, 6, [(0, 0, 0)])]
    if kind == "slopes":
        g = rng.integers(0, 5, n)
        return [(g, np.c_[ones, x], 5, [(0, 0, 0), (1, 0, 1), (1, 1, 2)])]
    if kind == "nested":
        inner = rng.integers(0, 12, n)
        outer = inner // 3  # each inner level in exactly one outer level
        return [(inner, ones, 12, [(0, 0, 0)]), (outer, ones, 4, [(0, 0, 1)])]
    if kind == "crossed":
        a = rng.integers(0, 9, n)
        b = rng.integers(0, 4, n)
        return [(a, ones, 9, [(0, 0, 0)]), (b, ones, 4, [(0, 0, 1)])]
    if kind == "crossed_slopes":
        a = rng.integers(0, 7, n)
        b = rng.integers(0, 3, n)
        return [(a, np.c_[ones, x], 7, [(0, 0, 0), (1, 0, 1), (1, 1, 2)]),
                (b, np.c_[ones, x], 3, [(0, 0, 3), (1, 0, 4), (1, 1, 5)])]
    if kind == "same_group_split":  # (1|g) + (0+x|g) merged: structural zero in Lambda
        g = rng.integers(0, 6, n)
        return [(g, np.c_[ones, x], 6, [(0, 0, 0), (1, 1, 1)])]
    raise ValueError(kind)


def _dense_lambda(terms, theta):
    blocks = []
    for refs, Z, nlev, lam in terms:
        s = Z.shape[1]
        L = np.zeros((s, s))
        for r, c, i in lam:
            L[r, c] = theta[i]
        blocks.append(np.kron(np.eye(nlev), L))
    q = sum(b.shape[0] for b in blocks)
    out = np.zeros((q, q))
    o = 0
    for b in blocks:
        out[o:o + b.shape[0], o:o + b.shape[0]] = b
        o += b.shape[0]
    return out


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    kind=st.sampled_from(DESIGNS),
    seed=st.integers(0, 2**31 - 1),
    weighted=st.booleans(),
    reml=st.booleans(),
)
def test_blocked_objective_equals_dense(kind, seed, weighted, reml):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(40, 90))
    terms = _design(kind, n, rng)
    X = np.c_[np.ones(n), rng.normal(size=n)]
    y = rng.normal(size=n) * 3 + X @ [1.0, 0.5]
    w = rng.uniform(0.3, 3.0, n) if weighted else None
    core = LmmCore(
        [np.ascontiguousarray(t[0], dtype=np.uint32) for t in terms],
        [np.ascontiguousarray(t[1], dtype=float) for t in terms],
        [t[2] for t in terms],
        [t[3] for t in terms],
        np.ascontiguousarray(X),
        y,
        w,
    )
    ntheta = 1 + max(i for t in terms for _, _, i in t[3])
    theta = rng.uniform(0.0, 1.5, ntheta)
    Zfull = np.hstack([dense_z(t[0], t[1], t[2]) for t in terms])
    want = profiled_objective(y, X, Zfull, _dense_lambda(terms, theta), w, reml=reml)
    logw = 0.0 if w is None else float(np.log(w).sum())
    got = core.objective(theta, reml) - logw
    assert got == pytest.approx(want, rel=1e-8)
    # and the solution's beta is the GLS estimate
    sol = core.solution(theta, reml)
    V0 = Zfull @ _dense_lambda(terms, theta) @ _dense_lambda(terms, theta).T @ Zfull.T
    V0 += np.diag(1.0 / (np.ones(n) if w is None else w))
    Vi = np.linalg.inv(V0)
    beta = np.linalg.solve(X.T @ Vi @ X, X.T @ Vi @ y)
    np.testing.assert_allclose(sol["beta"], beta, rtol=1e-7, atol=1e-9)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(kind=st.sampled_from(["intercept", "slopes", "crossed", "nested"]), seed=st.integers(0, 2**31 - 1))
def test_fit_invariant_to_row_order(kind, seed):
    rng = np.random.default_rng(seed)
    n = 120
    g = rng.integers(0, 8, n)
    h = rng.integers(0, 4, n) if kind != "nested" else g // 2
    x = rng.normal(size=n)
    y = 2 + 0.5 * x + rng.normal(size=8)[g] + 0.7 * rng.normal(size=4)[h] + rng.normal(size=n)
    if kind == "slopes":
        y = y + rng.normal(size=8)[g] * x
    df = pd.DataFrame({"y": y, "x": x, "g": [f"g{v}" for v in g], "h": [f"h{v}" for v in h]})
    formula = {
        "intercept": "y ~ x + (1 | g)",
        "slopes": "y ~ x + (x | g)",
        "crossed": "y ~ x + (1 | g) + (1 | h)",
        "nested": "y ~ x + (1 | h/g)",
    }[kind]
    perm = rng.permutation(n)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # singular fits are possible on random data
        a = ml.lmer(formula, df)
        b = ml.lmer(formula, df.iloc[perm].reset_index(drop=True))
    assert b.loglik == pytest.approx(a.loglik, rel=1e-8)
    np.testing.assert_allclose(b.fixef.values, a.fixef.values, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(b.sigma, a.sigma, rtol=1e-5)


def test_set_y_equals_new_fit_with_that_response():
    """The bootstrap path: replacing y in the engine gives the objective of a fresh problem."""
    rng = np.random.default_rng(3)
    n = 200
    g = rng.integers(0, 10, n)
    Z = np.c_[np.ones(n), rng.normal(size=n)]
    X = Z.copy()
    y1, y2 = rng.normal(size=n), rng.normal(size=n)
    term = ReTerm("g", ["(Intercept)", "x"], [str(i) for i in range(10)], g.astype(np.int32), Z)
    p1 = LmmProblem(engine_input(ModelFrame("f", "y", y1, X, ["(Intercept)", "x"], [term])), reml=True)
    p2 = LmmProblem(engine_input(ModelFrame("f", "y", y2, X, ["(Intercept)", "x"], [term])), reml=True)
    p1.set_y(y2)
    th = np.array([0.8, 0.1, 0.4])
    assert p1.objective(th) == pytest.approx(p2.objective(th), rel=1e-12)
