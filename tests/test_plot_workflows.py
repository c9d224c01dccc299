"""The courses' plots end to end (issue 10): fitted lines with a second within-group
predictor, without ``data=``, for ``lm`` fits with group dummies; diagnostics of ``lm`` fits;
the binned residual plot of binomial GLMMs against a direct computation."""
from __future__ import annotations

import io
import warnings

import numpy as np
import pandas as pd
import pytest

import multilevel as ml
from multilevel.datasets import load
from multilevel.errors import DataError
from multilevel.report import plots
from multilevel.report.plotdata import binned_residuals, diagnostics_data, fitted_lines_data


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ml.MultilevelWarning)
        yield


@pytest.fixture(scope="module")
def pop():
    return load("popularity")


@pytest.fixture(scope="module")
def pop_fit(pop):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ml.lmer("popular ~ extrav + sex + texp + (1 + extrav | class)", pop)


def _straight(x: np.ndarray, y: np.ndarray) -> float:
    """Largest distance of the points from their least-squares line."""
    A = np.column_stack([np.ones_like(x), x])
    coef, *_ = np.linalg.lstsq(A, y, rcond=None)
    return float(np.max(np.abs(A @ coef - y)))


def test_lines_hold_a_second_within_group_predictor_at_its_reference(pop_fit, pop):
    # old code joined the fitted values at the rows: boys' and girls' values alternate, so a
    # class's line zigzagged; now it is the class's prediction at sex = boy, texp = mean
    d = fitted_lines_data(pop_fit, "extrav", data=pop)
    coef = pop_fit.coef()["class"]
    texp = pop["texp"].mean()
    assert d.meta["held"] == pytest.approx({"sex": "boy", "texp": texp})
    assert d.meta["held_how"] == {"sex": "reference", "texp": "mean"}
    for lv, ln in d["lines"].groupby("group", sort=False):
        x, f = ln["x"].to_numpy(), ln["fitted"].to_numpy()
        assert np.all(np.diff(x) > 0) and _straight(x, f) < 1e-9
        c = coef.loc[lv]
        np.testing.assert_allclose(f, c["(Intercept)"] + c["extrav"] * x + c["texp"] * texp, rtol=1e-10)
        own = pop.loc[pop["class"].astype(str) == lv, "extrav"]
        assert x.min() == own.min() and x.max() == own.max()  # the class's own range


def test_lines_at_each_groups_own_values(pop_fit, pop):
    d = fitted_lines_data(pop_fit, "extrav", data=pop, groups=["1", "2", "3"], others="group")
    coef = pop_fit.coef()["class"]
    for lv, ln in d["lines"].groupby("group", sort=False):
        rows = pop[pop["class"].astype(str) == lv]
        girl = float(rows["sex"].value_counts().reindex(["boy", "girl"]).idxmax() == "girl")
        c = coef.loc[lv]
        want = c["(Intercept)"] + c["extrav"] * ln["x"] + c["sexgirl"] * girl + c["texp"] * rows["texp"].mean()
        np.testing.assert_allclose(ln["fitted"], want, rtol=1e-10)
    fig = plots.plot_fitted_lines(pop_fit, "extrav", groups=3, others="group")
    assert "each class's mean / most frequent level" in fig.axes[0].get_title()
    with pytest.raises(DataError, match="others"):
        fitted_lines_data(pop_fit, "extrav", others="rows")


def test_population_line_without_data(pop_fit, pop):
    # old code: no data= and a second predictor: the population line vanished silently
    fig = plots.plot_fitted_lines(pop_fit, "extrav", groups=4)
    (line,) = [ln for ln in fig.axes[0].get_lines() if ln.get_gid() == "population"]
    b = pop_fit.fixef
    x = np.asarray(line.get_xdata())
    np.testing.assert_allclose(line.get_ydata(), b["(Intercept)"] + b["extrav"] * x + b["texp"] * pop["texp"].mean(),
                               rtol=1e-10)
    assert "sex = boy (reference)" in fig.axes[0].get_title()
    # the same frames with and without the data
    a = fitted_lines_data(pop_fit, "extrav", groups=4)
    c = fitted_lines_data(pop_fit, "extrav", data=pop, groups=4)
    for name in ("lines", "population", "points"):
        pd.testing.assert_frame_equal(a[name], c[name], rtol=1e-12)


def test_a_variable_seen_only_through_a_transformation_needs_the_data(pop):
    fit = ml.lmer("popular ~ extrav + log(texp) + (1 | class)", pop)
    with pytest.raises(DataError, match="texp.*data="):
        fitted_lines_data(fit, "extrav")
    assert len(fitted_lines_data(fit, "extrav", data=pop)["population"]) > 0
    with pytest.raises(DataError, match="factor"):
        fitted_lines_data(ml.lmer("popular ~ sex + (1 | class)", pop), "sex", data=pop)


def test_lm_school_dummies_one_line_per_group(pop):
    # the lesson's no-pooling model: old code refused lm fits
    fit = ml.lm("popular ~ extrav + sex + factor(class)", pop)
    d = fitted_lines_data(fit, "extrav", groups=["1", "7"], group="class")
    b = fit.fixef
    for lv, ln in d["lines"].groupby("group", sort=False):
        dummy = b.get(f"factor(class){lv}", 0.0)
        np.testing.assert_allclose(ln["fitted"], b["(Intercept)"] + dummy + b["extrav"] * ln["x"], rtol=1e-10)
    # the population line: the average of every class's line
    dummies = np.array([b.get(f"factor(class){lv}", 0.0) for lv in pop["class"].cat.categories])
    pl = d["population"]
    np.testing.assert_allclose(pl["y"], b["(Intercept)"] + dummies.mean() + b["extrav"] * pl["x"], rtol=1e-10)
    assert d.meta["population_label"] == "average of the class lines"
    with_data = fitted_lines_data(fit, "extrav", pop, groups=["1", "7"], group="class")
    pd.testing.assert_frame_equal(with_data["lines"], d["lines"], rtol=1e-12)
    fig = plots.plot_fitted_lines(fit, "extrav", groups=5, group="class")
    assert len([ln for ln in fig.axes[0].get_lines() if (ln.get_gid() or "").startswith("group:")]) == 5
    fig.savefig(io.BytesIO(), format="png", dpi=50)
    with pytest.raises(DataError, match="group"):
        fitted_lines_data(fit, "extrav")


def test_diagnostics_of_lm_fits(pop):
    # old code: AttributeError ('LmFit' object has no attribute 'ranef')
    fit = ml.lm("popular ~ extrav + sex", pop)
    d = diagnostics_data(fit)
    assert [p["grpvar"] for p in d.meta["panels"]] == [None]
    np.testing.assert_allclose(d["residuals"]["residual"], fit.residuals().to_numpy())
    fig = plots.plot_diagnostics(fit)
    assert len(fig.axes) == 2
    fig.savefig(io.BytesIO(), format="png", dpi=50)


def _direct_binned(p: np.ndarray, y: np.ndarray, m: np.ndarray, k: int):
    """Binned residuals by hand: sort by p, cut at the quantiles, means and 2 sqrt(p(1-p)/n)."""
    edges = np.quantile(p, np.linspace(0, 1, k + 1))
    rows = []
    for i in range(k):
        lo, hi = edges[i], edges[i + 1]
        inb = (p >= lo) & ((p < hi) if i < k - 1 else (p <= hi))
        n = m[inb].sum()
        pb = (m[inb] * p[inb]).sum() / n
        rows.append((n, pb, (m[inb] * (y[inb] - p[inb])).sum() / n, 2 * np.sqrt(pb * (1 - pb) / n)))
    return np.array(rows)


def test_binned_residuals_of_a_binary_glmm():
    c = load("Contraception")
    fit = ml.glmer("use ~ age + urban + (1 | district)", c, family="binomial")
    d = diagnostics_data(fit)
    assert d.meta["residual_type"] == "binned"
    # no QQ plot of residuals, only of the random effects
    assert [p["grpvar"] for p in d.meta["panels"]] == ["district"]
    b = d["binned"]
    y = (c["use"] == "Y").to_numpy(dtype=float)
    p = fit.fitted().to_numpy()
    k = int(np.floor(np.sqrt(len(c))))  # arm's default: sqrt(n) bins
    assert len(b) == k == 43
    want = _direct_binned(p, y, np.ones_like(p), k)
    np.testing.assert_allclose(b[["n", "fitted", "residual", "upper"]].to_numpy(), want, rtol=1e-10)
    np.testing.assert_allclose(b["lower"], -b["upper"])
    assert b["rows"].sum() == len(c)
    fig = plots.plot_diagnostics(fit)
    ax = fig.axes[0]
    assert ax.get_title().startswith("Binned residuals") and "outside ±2 SE" in ax.get_title()
    pts = [col for col in ax.collections if (col.get_gid() or "").startswith("binned")]
    assert sum(len(col.get_offsets()) for col in pts) == k
    assert not [a for a in fig.axes if "Pearson" in a.get_title()]
    fig.savefig(io.BytesIO(), format="png", dpi=50)


def test_binned_residuals_of_binomial_trials():
    cbpp = load("cbpp")
    fit = ml.glmer("cbind(incidence, size - incidence) ~ period + (1 | herd)", cbpp, family="binomial")
    b = diagnostics_data(fit)["binned"]
    y = (cbpp["incidence"] / cbpp["size"]).to_numpy()
    m = cbpp["size"].to_numpy(dtype=float)
    p = fit.fitted().to_numpy()
    assert b["n"].sum() == m.sum()  # trials, not rows
    direct = binned_residuals(p, y, m, bins=5)
    want = _direct_binned(p, y, m, 5)
    np.testing.assert_allclose(direct[["n", "fitted", "residual", "upper"]].to_numpy(), want, rtol=1e-10)


def test_large_qq_panels_show_evenly_spaced_order_statistics():
    from multilevel.report import plotdata

    hsb = load("hsb")
    fit = ml.lmer("mAch ~ cses + (1 | school)", hsb)
    d = diagnostics_data(fit)
    qq = d["qq"][d["qq"]["panel"] == 0]
    res = np.sort(fit.residuals().to_numpy())
    assert len(qq) == plotdata.QQ_MAX < len(res)
    assert qq["sample"].iloc[0] == res[0] and qq["sample"].iloc[-1] == res[-1]
    assert np.isin(qq["sample"], res).all() and qq["sample"].is_monotonic_increasing
    # the line still from all the values
    q1, q3 = np.percentile(res, [25, 75])
    assert d["qqline"].iloc[0]["y0"] == pytest.approx(q1)
