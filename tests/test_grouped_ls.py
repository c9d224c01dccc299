"""The group-by-group no-pooling fit (design.grouped, results.grouped_ls, models.lm.lm_by_group)
against brute force: one ``lm`` per group, numpy least squares on explicitly built dummies,
the dense ``lm`` of the same formula, and R's rank rule on the dense matrix.

The explorer refits ``pooling()`` on every slider release; these tests pin that the fast path
gives the numbers of the slow one, including the awkward groups (one row, two rows for three
coefficients, x constant within the group, a factor level missing) whose coefficients R
reports as NA."""
from __future__ import annotations

import pickle
import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import multilevel as ml
from multilevel.design import GroupedFrame, ModelFrame, build_fixed_frame, rank_keep
from multilevel.design.grouped import _rank_keep_local, grouped_columns, rank_keep_grouped
from multilevel.design.matrices import ColumnPlan
from multilevel.errors import ModelSpecError
from multilevel.models.lm import lm_by_group


def _quiet(fn, *args, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kw)


def _awkward(seed: int = 0, J: int = 12) -> pd.DataFrame:
    """Unequal groups with the cases R leaves NA: a group of one row, groups of two rows,
    a group where x does not vary, and a factor f (levels a, b, c) and a level-2 w."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(3, 15, J)
    sizes[0], sizes[1], sizes[2] = 1, 2, 2
    g = np.repeat([f"g{j:02d}" for j in range(J)], sizes)
    refs = np.repeat(np.arange(J), sizes)
    n = int(sizes.sum())
    x = rng.normal(size=n)
    x[refs == 3] = 1.5                      # no variation in x: no own slope
    x2 = rng.normal(size=n)
    z = rng.normal(size=n)
    f = pd.Categorical(rng.choice(["a", "b", "c"], n), categories=["a", "b", "c"])
    w = rng.normal(size=J)[refs]
    u = rng.normal(size=(J, 2))
    y = 1 + u[refs, 0] + (0.5 + u[refs, 1]) * x + 0.3 * z + 0.2 * w + rng.normal(size=n)
    return pd.DataFrame({"y": y, "x": x, "x2": x2, "z": z, "f": f, "w": w, "g": g})


def _per_group_coefs(df: pd.DataFrame, rhs: str, names: list[str]) -> np.ndarray:
    """(J, len(names)) one lm per group: its own coefficients (NaN where R's lm says NA)."""
    out = np.full((df["g"].nunique(), len(names)), np.nan)
    for j, (_, part) in enumerate(df.groupby("g", sort=True, observed=True)):
        coef = _quiet(ml.lm, f"y ~ {rhs}", part).coef()
        for c, nm in enumerate(names):
            if nm in coef.index:
                out[j, c] = coef[nm]
    return out


@pytest.mark.parametrize("formula,rhs", [
    ("y ~ x + (1 + x | g)", "x"),
    ("y ~ x + x2 + (1 + x + x2 | g)", "x + x2"),      # 3 coefficients: 2-row groups fall short
    ("y ~ 1 + (1 | g)", "1"),
    ("y ~ x + (1 | g) + (0 + x | g)", "x"),
])
def test_no_pooling_equals_one_lm_per_group(formula, rhs):
    df = _awkward(1)
    p = _quiet(ml.pooling, formula, df)
    names = p.coef_names
    mine = np.column_stack([p.table[f"{c}_none"].to_numpy() for c in names])
    brute = _per_group_coefs(df, rhs, names)
    np.testing.assert_array_equal(np.isnan(mine), np.isnan(brute))
    np.testing.assert_allclose(mine, brute, rtol=1e-9, atol=1e-12)
    if rhs != "1":  # the awkward groups are there, and said so (an intercept always exists)
        assert np.isnan(mine).any() and p.notes
    # standard errors: per group (X_j'X_j)^-1 scaled by the pooled residual variance
    none = p.fits["none"]
    for j, (lv, part) in enumerate(df.groupby("g", sort=True, observed=True)):
        own = _quiet(ml.lm, f"y ~ {rhs}", part)
        if own.df_resid <= 0:
            continue
        for c, nm in enumerate(names):
            key = f"factor(g){lv}" if nm == "(Intercept)" else f"factor(g){lv}:{nm}"
            if nm in own.se.index:
                assert none.se[key] == pytest.approx(own.se[nm] * none.sigma / own.sigma, rel=1e-9)


def _dense_reference(df: pd.DataFrame, formula: str):
    """The dense lm of the same formula (X filled, R's rank rule on it, one QR)."""
    return _quiet(ml.lm, formula, df, contrasts={"factor(g)": "treatment"})


@pytest.mark.parametrize("formula", [
    "y ~ 0 + factor(g) + factor(g):x + z",
    "y ~ 0 + factor(g) + factor(g):x + z + f",          # a level-1 factor as a common term
    "y ~ 0 + factor(g) + factor(g):x + factor(g):x2 + z",
    "y ~ 0 + factor(g) + factor(g):f",                  # a factor slope, levels missing in groups
    "y ~ 0 + factor(g) + factor(g):x + w",              # w constant within groups: aliased
    "y ~ 1 + factor(g):x + z",                          # a common intercept and group slopes
    "y ~ x + factor(g)",                                # treatment-coded group effects
])
def test_grouped_fit_equals_the_dense_lm(formula):
    df = _awkward(2)
    fast = _quiet(lm_by_group, formula, df, "factor(g)", contrasts={"factor(g)": "treatment"})
    slow = _dense_reference(df, formula)
    assert isinstance(fast.frame, GroupedFrame) and not isinstance(slow.frame, GroupedFrame)
    assert fast.dropped_columns == slow.dropped_columns
    assert [str(w) for w in fast.warnings] == [str(w) for w in slow.warnings]
    pd.testing.assert_index_equal(fast.coef().index, slow.coef().index)
    np.testing.assert_allclose(fast.coef(), slow.coef(), rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(fast.se, slow.se, rtol=1e-9)
    np.testing.assert_allclose(fast.vcov, slow.vcov, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(fast.fitted(), slow.fitted(), rtol=1e-12, atol=1e-11)
    for attr in ("sigma", "loglik", "r2", "rss", "nobs", "df_resid", "_logdet_r"):
        assert getattr(fast, attr) == pytest.approx(getattr(slow, attr), rel=1e-11), attr
    assert fast.summary().text.splitlines()[3:] == slow.summary().text.splitlines()[3:]
    # and both are least squares: numpy's lstsq on the kept columns of X, built by fill_columns
    X = slow.frame.X
    beta, *_ = np.linalg.lstsq(X, df["y"].to_numpy(), rcond=None)
    np.testing.assert_allclose(fast.fixef.to_numpy(), beta, rtol=1e-8, atol=1e-10)


def test_explicit_dummies_by_hand():
    # no formula machinery at all on the reference side: dummies and products built by hand
    df = _awkward(3)
    fast = _quiet(lm_by_group, "y ~ 0 + factor(g) + factor(g):x + z", df, "factor(g)")
    levels = sorted(df["g"].unique())
    D = (df["g"].to_numpy()[:, None] == np.array(levels)[None, :]).astype(float)
    X = np.column_stack([D, D * df["x"].to_numpy()[:, None], df["z"].to_numpy()])
    names = ([f"factor(g){lv}" for lv in levels] + [f"factor(g){lv}:x" for lv in levels] + ["z"])
    # the slope of the one-row group and of the constant-x group are aliased (R: NA)
    alias = {"factor(g)g00:x", "factor(g)g03:x"}
    assert set(fast.dropped_columns) == alias
    keep = [k for k, nm in enumerate(names) if nm not in alias]
    beta, *_ = np.linalg.lstsq(X[:, keep], df["y"].to_numpy(), rcond=None)
    np.testing.assert_allclose(fast.coef()[[names[k] for k in keep]], beta, rtol=1e-9)
    r = df["y"].to_numpy() - X[:, keep] @ beta
    sigma = np.sqrt(r @ r / (len(r) - len(keep)))
    V = sigma ** 2 * np.linalg.inv(X[:, keep].T @ X[:, keep])
    assert fast.sigma == pytest.approx(sigma, rel=1e-11)
    kept = [names[k] for k in keep]   # (R orders z before the group slopes)
    np.testing.assert_allclose(fast.vcov.loc[kept, kept].to_numpy(), V, rtol=1e-8, atol=1e-12)


def _plan(J: int, m: int, glob: int) -> ColumnPlan:
    """``0 + factor(g) + [global columns] + factor(g):b1 + ...``: R's column order, globals
    between the group intercepts and the group slopes."""
    cols = [[("g", j)] for j in range(J)] + [[("c", k)] for k in range(glob)]
    for s in range(1, m):
        cols += [[("g", j), ("b", s - 1)] for j in range(J)]
    names = [f"c{k}" for k in range(len(cols))]
    return ColumnPlan(False, [], names, [1] * len(cols), cols)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), J=st.integers(1, 7), m=st.integers(1, 3),
       glob=st.integers(0, 2), small=st.booleans(), degenerate=st.booleans())
def test_rank_rule_is_rs_on_the_dense_matrix(seed, J, m, glob, small, degenerate):
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 4 if small else 12, J)
    refs = np.repeat(np.arange(J), sizes)
    n = len(refs)
    b = rng.normal(size=(n, max(m - 1, 1)))
    c = rng.normal(size=(n, max(glob, 1)))
    if degenerate:
        b[refs == 0, 0] = 2.0                           # constant within a group
        c[:, 0] = rng.normal(size=J)[refs]              # a level-2 global column
        if m > 2:
            b[:, 1] = 3.0 * b[:, 0] - 1.0               # a slope aliased with another
    values = {"g": ("fac", refs), "b": ("num", b), "c": ("num", c)}
    gc = grouped_columns(_plan(J, m, glob), values, n, "g")
    assert gc is not None
    dense = rank_keep(gc.dense())
    assert rank_keep_grouped(gc) == dense
    if not glob:  # the group-by-group rule itself, whether or not full rank is certified
        assert _rank_keep_local(gc, gc.sumsq(), 1e-7) == dense


def test_grouped_frame_is_an_ordinary_frame_to_everyone_else():
    df = _awkward(4)
    f = "y ~ 0 + factor(g) + factor(g):x + z"
    fast = build_fixed_frame(f, df, group_key="factor(g)")
    slow = build_fixed_frame(f, df)
    assert isinstance(fast, GroupedFrame) and type(slow) is ModelFrame
    np.testing.assert_array_equal(fast.X, slow.X)          # filled on first access
    assert fast.fixef_names == slow.fixef_names and fast.dropped_columns == slow.dropped_columns
    back = pickle.loads(pickle.dumps(fast))
    np.testing.assert_array_equal(back.X, slow.X)
    fit = _quiet(lm_by_group, f, df, "factor(g)")
    again = pickle.loads(pickle.dumps(fit))
    new = df.iloc[[0, 5, 9]]
    np.testing.assert_allclose(again.predict(new), _dense_reference(df, f).predict(new), rtol=1e-10)
    # a grouping factor coded by contrasts is no block structure: the ordinary frame
    other = build_fixed_frame("y ~ factor(g) + x", df, contrasts={"factor(g)": "sum"},
                              group_key="factor(g)")
    assert type(other) is ModelFrame
    assert type(build_fixed_frame("y ~ x + z", df, group_key="factor(g)")) is ModelFrame


def test_pooling_reuses_a_given_fit_and_checks_it():
    df = _awkward(5)
    f = "y ~ x + (1 + x | g)"
    fit = _quiet(ml.lmer, f, df)
    a, b = _quiet(ml.pooling, f, df), _quiet(ml.pooling, f, df, fit=fit)
    assert b.fits["partial"] is fit
    pd.testing.assert_frame_equal(a.table, b.table, check_exact=True)
    pd.testing.assert_frame_equal(a.fixed, b.fixed, check_exact=True)
    assert a.notes == b.notes
    with pytest.raises(ModelSpecError, match="fit: .*ML"):
        _quiet(ml.pooling, f, df, fit=_quiet(ml.lmer, f, df, reml=False))
    with pytest.raises(ModelSpecError, match="fit: .*formula"):
        _quiet(ml.pooling, "y ~ x + (1 | g)", df, fit=fit)
    with pytest.raises(ModelSpecError, match="fit: .*rows"):
        _quiet(ml.pooling, f, df.iloc[:-3], fit=fit)
    with pytest.raises(ModelSpecError, match="fit: .*LmmFit"):
        _quiet(ml.pooling, f, df, fit=_quiet(ml.lm, "y ~ x", df))


def test_model_state_is_the_slow_path_number_for_number():
    # the explorer's state against pooling() without the shortcuts (refit, dense lm)
    from multilevel.app.explore.state import model_state

    df = _awkward(6)
    f = "y ~ x + (1 + x | g)"
    before = df.copy()
    s = _quiet(model_state, df, f, groups=12)
    pd.testing.assert_frame_equal(df, before)
    p = _quiet(ml.pooling, f, df)
    dense = _dense_reference(df, "y ~ 0 + factor(g) + factor(g):x")
    sh = s["shrinkage"]["x"]["frames"]["groups"]
    own = [dense.coef().get(f"factor(g){lv}:x", np.nan) for lv in p.table["group"]]
    # (the state's plot numbers are rounded to 6 significant digits; at full precision the
    # explorer's payloads equal pooling()'s to 1e-12: test_explore_payload.py)
    np.testing.assert_allclose(np.array(sh["no_pooling"], dtype=float), own, rtol=5e-6)
    np.testing.assert_allclose(sh["partial_pooling"], p.table["x_partial"], rtol=5e-6)
    assert s["notes"] == list(p.notes)
