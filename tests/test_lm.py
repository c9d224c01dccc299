"""multilevel.results.lm: least squares with the mixed models' formula language, checked against R's
printed numbers for lm(Reaction ~ Days, sleepstudy) and against closed forms computed here
with numpy (no statsmodels)."""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

import multilevel as ml
from multilevel.datasets import load
from multilevel.errors import DataError, FormulaError


@pytest.fixture(scope="module")
def sleep():
    return load("sleepstudy")


@pytest.fixture(scope="module")
def sleep_fit(sleep):
    return ml.lm("Reaction ~ Days", sleep)


def _toy(n=120, seed=1):
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({
        "x": rng.normal(size=n),
        "f": pd.Categorical(rng.choice(["a", "b", "c"], size=n), categories=["a", "b", "c"]),
        "g": rng.integers(0, 12, size=n),
        "w": rng.uniform(0.2, 3.0, size=n),
    })
    df["y"] = 1.0 + 2.0 * df.x + (df.f == "b") * 0.5 - (df.f == "c") * 1.0 + rng.normal(size=n)
    return df


def _design(df):
    return np.column_stack([np.ones(len(df)), df.x, (df.f == "b"), (df.f == "c")]).astype(float)


# --- R's numbers ----------------------------------------------------------------------------


def test_sleepstudy_matches_r(sleep_fit):
    f = sleep_fit
    assert np.allclose(f.fixef.to_numpy(), [251.405105, 10.467286], atol=1e-6)
    assert np.allclose(f.se.to_numpy(), [6.610, 1.238], atol=5e-4)
    assert round(f.sigma, 2) == 47.71 and f.df_resid == 178
    assert round(f.r2, 4) == 0.2865 and round(f.adj_r2, 4) == 0.2825
    fs = f.fstatistic
    assert round(fs["value"], 2) == 71.46 and (fs["numdf"], fs["dendf"]) == (1, 178)
    assert fs["p"] == pytest.approx(9.894e-15, rel=1e-3)
    # logLik(lm(Reaction ~ Days, sleepstudy)): -950.1465 (df = 3), AIC 1906.293
    assert f.loglik == pytest.approx(-950.1465, abs=1e-4)
    assert f.npar == 3 and f.nobs == 180
    assert f.aic == pytest.approx(1906.293, abs=1e-3)
    assert f.bic == pytest.approx(-2 * f.loglik + math.log(180) * 3)
    assert f.reml is False and f.formula == "Reaction ~ Days"


def test_summary_layout_is_r(sleep_fit):
    text = str(sleep_fit.summary())
    lines = text.splitlines()
    # the bundled data carry their name, printed in the call as R prints its data argument
    assert lines[:2] == ["Call:", "lm(formula = Reaction ~ Days, data = sleepstudy)"]
    assert "Residuals:" in lines
    assert "            Estimate Std. Error t value Pr(>|t|)" in text
    assert "(Intercept)  251.405      6.610  38.033  < 2e-16 ***" in text
    assert "Days          10.467      1.238   8.454 9.89e-15 ***" in text
    assert "Signif. codes:  0 '***' 0.001 '**' 0.01 '*' 0.05 '.' 0.1 ' ' 1" in text
    assert "Residual standard error: 47.71 on 178 degrees of freedom" in text
    assert "Multiple R-squared:  0.2865,\tAdjusted R-squared:  0.2825" in text
    assert lines[-1] == "F-statistic: 71.46 on 1 and 178 DF,  p-value: 9.894e-15"
    assert str(sleep_fit) == text
    html = sleep_fit._repr_html_()
    assert "<table>" in html and "251.405" in html
    d = sleep_fit.to_dict()
    json.dumps(d)
    assert d["results"]["logLik"] == pytest.approx(sleep_fit.loglik)


# --- closed forms ---------------------------------------------------------------------------


def test_ols_with_factor_matches_closed_form():
    df = _toy()
    fit = ml.lm("y ~ x + f", df)
    X, y = _design(df), df.y.to_numpy()
    beta, *_ = np.linalg.lstsq(X, y, rcond=None)
    n, p = X.shape
    r = y - X @ beta
    s2 = r @ r / (n - p)
    V = s2 * np.linalg.inv(X.T @ X)
    assert list(fit.fixef.index) == ["(Intercept)", "x", "fb", "fc"]
    assert np.allclose(fit.fixef, beta, rtol=1e-10)
    assert np.allclose(fit.vcov.to_numpy(), V, rtol=1e-10)
    assert np.allclose(fit.fitted().to_numpy(), X @ beta)
    assert np.allclose(fit.residuals().to_numpy(), r)
    tss = np.sum((y - y.mean()) ** 2)
    assert fit.r2 == pytest.approx(1 - r @ r / tss, rel=1e-12)
    F = ((tss - r @ r) / (p - 1)) / s2
    assert fit.fstatistic["value"] == pytest.approx(F, rel=1e-10)
    assert fit.loglik == pytest.approx(np.sum(stats.norm.logpdf(r, scale=math.sqrt(r @ r / n))),
                                       rel=1e-12)
    t = beta / np.sqrt(np.diag(V))
    assert np.allclose(fit.pvalues, 2 * stats.t.sf(np.abs(t), n - p))
    ci = fit.conf_int()
    assert np.allclose(ci.iloc[:, 0], beta - stats.t.ppf(0.975, n - p) * np.sqrt(np.diag(V)))


def test_weighted_fit_and_loglik_match_closed_form():
    df = _toy(seed=2)
    fit = ml.lm("y ~ x + f", df, weights="w")
    X, y, w = _design(df), df.y.to_numpy(), df.w.to_numpy()
    sw = np.sqrt(w)
    beta, *_ = np.linalg.lstsq(X * sw[:, None], y * sw, rcond=None)
    n, p = X.shape
    r = y - X @ beta
    rss = np.sum(w * r ** 2)
    assert np.allclose(fit.fixef, beta, rtol=1e-10)
    assert fit.sigma == pytest.approx(math.sqrt(rss / (n - p)))
    assert np.allclose(fit.vcov, rss / (n - p) * np.linalg.inv(X.T @ (w[:, None] * X)))
    # logLik.lm: independent normals with variance sigma_ML^2 / w_i
    s2_ml = rss / n
    ll = np.sum(stats.norm.logpdf(y, loc=X @ beta, scale=np.sqrt(s2_ml / w)))
    assert fit.loglik == pytest.approx(ll, rel=1e-12)
    # summary.lm's weighted R²
    f = X @ beta
    m = np.sum(w * f) / np.sum(w)
    mss = np.sum(w * (f - m) ** 2)
    assert fit.r2 == pytest.approx(mss / (mss + rss))
    assert "Weighted Residuals:" in str(fit.summary())
    assert "weights = w" in str(fit.summary())


def test_zero_weights_do_not_count():
    df = _toy(seed=3)
    df["w0"] = df.w
    df.loc[:9, "w0"] = 0.0
    fit = ml.lm("y ~ x + f", df, weights="w0")
    sub = ml.lm("y ~ x + f", df.iloc[10:], weights="w0")
    assert fit.nobs == len(df) - 10 and fit.df_resid == sub.df_resid
    assert np.allclose(fit.fixef, sub.fixef) and fit.loglik == pytest.approx(sub.loglik)
    assert len(fit.fitted()) == len(df)  # zero-weight rows still get fitted values


def test_rank_deficient_columns_are_na_as_in_r():
    df = _toy(seed=4)
    df["z"] = df.x * 2.0 + 1.0
    fit = ml.lm("y ~ x + z + f", df)
    assert list(fit.coef().index) == ["(Intercept)", "x", "z", "fb", "fc"]
    assert np.isnan(fit.coef()["z"]) and list(fit.fixef.index) == ["(Intercept)", "x", "fb", "fc"]
    assert fit.dropped_columns == ["z"] and fit.npar == 5 and fit.rank == 4
    ref = ml.lm("y ~ x + f", df)
    assert np.allclose(fit.fixef, ref.fixef) and fit.loglik == pytest.approx(ref.loglik)
    text = str(fit.summary())
    assert "Coefficients: (1 not defined because of singularities)" in text
    assert "\nz                 NA         NA      NA       NA\n" in text
    assert np.isnan(fit.summary().coefficients.loc["z", "Estimate"])
    assert np.allclose(fit.predict(df.head(5)), ref.predict(df.head(5)))


def test_cluster_robust_cr1_by_hand():
    df = _toy(seed=5)
    fit = ml.lm("y ~ x + f", df, cluster="g")
    X, y = _design(df), df.y.to_numpy()
    n, k = X.shape
    beta = np.linalg.solve(X.T @ X, X.T @ y)
    e = y - X @ beta
    bread = np.linalg.inv(X.T @ X)
    meat = np.zeros((k, k))
    groups = np.unique(df.g)
    for gv in groups:
        s = X[df.g == gv].T @ e[df.g == gv]
        meat += np.outer(s, s)
    G = len(groups)
    V = G / (G - 1) * (n - 1) / (n - k) * bread @ meat @ bread
    assert fit.vcov_type == "CR1" and fit.n_clusters == G and fit.df_test == G - 1
    assert np.allclose(fit.vcov.to_numpy(), V, rtol=1e-10)
    assert np.allclose(fit.fixef, beta)  # the estimates do not change
    t = beta / np.sqrt(np.diag(V))
    assert np.allclose(fit.pvalues, 2 * stats.t.sf(np.abs(t), G - 1))
    b, Vs = beta[1:], V[1:, 1:]
    assert fit.fstatistic["value"] == pytest.approx(b @ np.linalg.solve(Vs, b) / 3)
    assert fit.fstatistic["dendf"] == G - 1
    text = str(fit.summary())
    assert "cluster-robust (CR1" in text and f"{G} clusters" in text
    assert np.allclose(fit.vcov_classical, (e @ e / (n - k)) * bread)


def test_weighted_cluster_robust_scores():
    df = _toy(seed=6)
    fit = ml.lm("y ~ x", df, weights="w", cluster="g")
    X = np.column_stack([np.ones(len(df)), df.x])
    w, y = df.w.to_numpy(), df.y.to_numpy()
    A = X.T @ (w[:, None] * X)
    beta = np.linalg.solve(A, X.T @ (w * y))
    e = y - X @ beta
    meat = np.zeros((2, 2))
    for gv in np.unique(df.g):
        m = (df.g == gv).to_numpy()
        s = X[m].T @ (w[m] * e[m])
        meat += np.outer(s, s)
    G, n = len(np.unique(df.g)), len(df)
    V = G / (G - 1) * (n - 1) / (n - 2) * np.linalg.solve(A, np.linalg.solve(A, meat).T)
    assert np.allclose(fit.vcov.to_numpy(), V, rtol=1e-10)


# --- data handling --------------------------------------------------------------------------


def test_missing_rows_are_dropped_and_reported():
    df = _toy(seed=7)
    df.loc[[3, 8, 20], "x"] = np.nan
    fit = ml.lm("y ~ x + f", df)
    assert fit.nobs == len(df) - 3
    assert 3 not in fit.frame.rows and len(fit.frame.y) == fit.nobs
    assert list(fit.fitted().index) == list(fit.frame.rows)
    assert "(3 observations deleted due to missingness)" in str(fit.summary())


def test_predict_reapplies_encoding_and_transforms():
    df = _toy(seed=8)
    fit = ml.lm("y ~ scale(x) + f + I(x^2)", df)
    new = pd.DataFrame({"x": [0.0, 1.5], "f": ["c", "a"]})
    mu, sd = df.x.mean(), df.x.std()
    Xn = np.array([[1, (0 - mu) / sd, 0, 1, 0.0], [1, (1.5 - mu) / sd, 0, 0, 2.25]])
    assert np.allclose(fit.predict(new), Xn @ fit.fixef.to_numpy())
    assert np.allclose(fit.predict(), fit.fitted())
    with pytest.raises(DataError):
        fit.predict(pd.DataFrame({"x": [0.0], "f": ["zz"]}))


def test_group_dummies_and_polars():
    pl = pytest.importorskip("polars")
    df = _toy(seed=9)
    fit = ml.lm("y ~ x + factor(g)", df)
    assert fit.fixef.index[2] == "factor(g)1" and len(fit.fixef) == 2 + 11
    pfit = ml.lm("y ~ x + factor(g)", pl.DataFrame({c: df[c].to_numpy() for c in ("y", "x", "g")}))
    assert np.allclose(pfit.fixef, fit.fixef)


def test_bar_terms_are_rejected(sleep):
    with pytest.raises(FormulaError, match="no random effects"):
        ml.lm("Reaction ~ Days + (1 | Subject)", sleep)
    with pytest.raises(DataError):
        ml.lm("Reaction ~ Days", sleep.assign(S=sleep.Subject.astype(object).where(
            sleep.Days > 0, None)), cluster="S")


def test_intercept_only_and_no_intercept():
    df = _toy(seed=10)
    f0 = ml.lm("y ~ 1", df)
    assert f0.r2 == 0 and f0.fstatistic is None and f0.fixef.iloc[0] == pytest.approx(df.y.mean())
    f1 = ml.lm("y ~ 0 + x", df)
    x, y = df.x.to_numpy(), df.y.to_numpy()
    b = x @ y / (x @ x)
    assert f1.fixef.iloc[0] == pytest.approx(b)
    r = y - b * x
    assert f1.r2 == pytest.approx(1 - r @ r / (y @ y))  # uncentred, as R without intercept


# --- beside mixed models --------------------------------------------------------------------


def test_usable_beside_mixed_models(sleep, sleep_fit):
    mixed = ml.lmer("Reaction ~ Days + (Days | Subject)", sleep, reml=False)
    assert np.array_equal(sleep_fit.frame.rows, mixed.frame.rows)
    assert np.array_equal(sleep_fit.frame.y, mixed.frame.y)
    assert sleep_fit.ngroups == {} and sleep_fit.varcorr.sigma == sleep_fit.sigma
    inference = pytest.importorskip("multilevel.inference")
    tab = inference.anova(sleep_fit, mixed)
    assert tab["npar"].tolist() == [3, 6]
    # R: anova(lmer(..., REML = FALSE), lm(...)): Chisq 148.35 on 3 df
    assert tab["Chisq"].iloc[1] == pytest.approx(148.35, abs=0.01)


@pytest.mark.parametrize("module", ["multilevel.results.lm", "multilevel.report.lm_summary"])
def test_docstring_examples(module):
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(module),
                             optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0 and result.attempted > 0
