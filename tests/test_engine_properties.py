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

# (kind, structure): random intercepts, correlated slopes, nested, crossed, and the designs of
# the sparse rest block: three nested levels, and students crossed with teachers nested in
# schools (a few students change school)
DESIGNS = ["intercept", "slopes", "nested", "crossed", "crossed_slopes", "same_group_split",
           "three_level", "partially_crossed"]
#: how the engine holds the block of the later terms, X and y
LAYOUTS = ["auto", "dense", "sparse"]


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
    if kind == "three_level":  # pupils' classes (slopes) in schools in districts (slopes)
        cls = rng.integers(0, 12, n)
        cls[:12] = np.arange(12)
        sch = cls // 3
        dis = sch // 2
        return [(cls, np.c_[ones, x], 12, [(0, 0, 0), (1, 0, 1), (1, 1, 2)]),
                (sch, ones, 4, [(0, 0, 3)]),
                (dis, np.c_[ones, x], 2, [(0, 0, 4), (1, 0, 5), (1, 1, 6)])]
    if kind == "partially_crossed":  # students x teachers (in schools, slopes)
        nst, nsch, tper = 10, 3, 3
        stud = np.arange(n) % nst
        home = rng.integers(0, nsch, nst)
        moved = rng.random(n) < 0.15
        sch = np.where(moved, rng.integers(0, nsch, n), home[stud])
        tch = sch * tper + rng.integers(0, tper, n)
        return [(stud, np.c_[ones, x], nst, [(0, 0, 0), (1, 0, 1), (1, 1, 2)]),
                (tch, ones, nsch * tper, [(0, 0, 3)]),
                (sch, np.c_[ones, x], nsch, [(0, 0, 4), (1, 0, 5), (1, 1, 6)])]
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


def _core(terms, X, y, w, layout="auto"):
    return LmmCore(
        [np.ascontiguousarray(t[0], dtype=np.uint32) for t in terms],
        [np.ascontiguousarray(t[1], dtype=float) for t in terms],
        [t[2] for t in terms],
        [t[3] for t in terms],
        np.ascontiguousarray(X),
        y,
        w,
        layout,
    )


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    kind=st.sampled_from(DESIGNS),
    seed=st.integers(0, 2**31 - 1),
    weighted=st.booleans(),
    reml=st.booleans(),
    layout=st.sampled_from(LAYOUTS),
)
def test_blocked_objective_equals_dense(kind, seed, weighted, reml, layout):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(40, 90))
    terms = _design(kind, n, rng)
    X = np.c_[np.ones(n), rng.normal(size=n)]
    y = rng.normal(size=n) * 3 + X @ [1.0, 0.5]
    w = rng.uniform(0.3, 3.0, n) if weighted else None
    core = _core(terms, X, y, w, layout)
    # the sparse layout where it was asked for and there are random effects after term 0
    assert core.layout == ("sparse" if layout == "sparse" and len(terms) > 1 else "dense")
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
    # the conditional modes and variances of b: E(b | y) = Lam Lam' Z' V^-1 (y - X beta),
    # Var(b | y) / sigma^2 = Lam (Lam' Z' W Z Lam + I)^-1 Lam'
    Lam = _dense_lambda(terms, theta)
    G = Lam @ Lam.T
    bhat = G @ Zfull.T @ Vi @ (y - X @ beta)
    np.testing.assert_allclose(np.concatenate(sol["b"]), bhat, rtol=1e-6, atol=1e-8)
    W = np.diag(np.ones(n) if w is None else w)
    M = Lam.T @ Zfull.T @ W @ Zfull @ Lam + np.eye(Lam.shape[0])
    V = Lam @ np.linalg.solve(M, Lam.T)
    o = 0
    for t, cv in zip(terms, core.condvar(theta)):
        s = t[1].shape[1]
        for lv, blk in enumerate(np.asarray(cv).reshape(t[2], s, s)):
            want_blk = V[o + lv * s:o + (lv + 1) * s, o + lv * s:o + (lv + 1) * s]
            np.testing.assert_allclose(blk, want_blk, rtol=1e-6, atol=1e-10)
        o += t[2] * s


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    kind=st.sampled_from(["nested", "crossed", "crossed_slopes", "three_level", "partially_crossed"]),
    seed=st.integers(0, 2**31 - 1),
    weighted=st.booleans(),
    reml=st.booleans(),
)
def test_sparse_layout_gradient_equals_dense_and_finite_differences(kind, seed, weighted, reml):
    """The analytic gradient on the sparse rest block: as the dense layout's, and as central
    differences of the objective."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(40, 90))
    terms = _design(kind, n, rng)
    X = np.c_[np.ones(n), rng.normal(size=n)]
    y = rng.normal(size=n) * 3 + X @ [1.0, 0.5]
    w = rng.uniform(0.3, 3.0, n) if weighted else None
    sparse, dense = _core(terms, X, y, w, "sparse"), _core(terms, X, y, w, "dense")
    ntheta = 1 + max(i for t in terms for _, _, i in t[3])
    theta = rng.uniform(0.2, 1.5, ntheta)
    f, g = sparse.objective_gradient(theta, reml)
    fd, gd = dense.objective_gradient(theta, reml)
    assert f == pytest.approx(fd, rel=1e-10)
    np.testing.assert_allclose(g, gd, rtol=1e-7, atol=1e-7 * max(1.0, abs(f)) * 1e-3)
    h = 1e-5
    for i in range(ntheta):
        e = np.zeros(ntheta)
        e[i] = h
        num = (sparse.objective(theta + e, reml) - sparse.objective(theta - e, reml)) / (2 * h)
        assert g[i] == pytest.approx(num, rel=1e-4, abs=1e-4)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    kind=st.sampled_from(DESIGNS),
    seed=st.integers(0, 2**31 - 1),
    p=st.integers(1, 6),
    weighted=st.booleans(),
    reml=st.booleans(),
    layout=st.sampled_from(LAYOUTS),
)
def test_gradient_equals_dense_brute_force_for_any_number_of_fixed_effects(kind, seed, p, weighted,
                                                                          reml, layout):
    """The analytic gradient with 1-6 fixed effects (its X part of the selected inverse is
    read as dense blocks), in every layout: central differences of the dense brute-force
    likelihood (dense_reference), and the objective equal to it."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(50, 90))
    terms = _design(kind, n, rng)
    X = np.c_[np.ones(n), rng.normal(size=(n, p - 1))]
    y = rng.normal(size=n) * 3 + X @ rng.normal(size=p)
    w = rng.uniform(0.3, 3.0, n) if weighted else None
    core = _core(terms, X, y, w, layout)
    ntheta = 1 + max(i for t in terms for _, _, i in t[3])
    theta = rng.uniform(0.2, 1.5, ntheta)
    Zfull = np.hstack([dense_z(t[0], t[1], t[2]) for t in terms])
    logw = 0.0 if w is None else float(np.log(w).sum())

    def dense(th):
        return profiled_objective(y, X, Zfull, _dense_lambda(terms, th), w, reml=reml)

    f, g = core.objective_gradient(theta, reml)
    assert f - logw == pytest.approx(dense(theta), rel=1e-8)
    h = 1e-5
    for i in range(ntheta):
        e = np.zeros(ntheta)
        e[i] = h
        num = (dense(theta + e) - dense(theta - e)) / (2 * h)
        assert g[i] == pytest.approx(num, rel=1e-4, abs=1e-4)


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
