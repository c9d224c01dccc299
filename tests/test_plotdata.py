"""Plot data (``multilevel.report.plotdata``): the tidy frames behind each plot, their columns,
and their numbers against independent computations from the fits' public accessors and the
data (``fit.ranef()``, ``fit.coef()``, ``fit.fitted()``, least squares by hand...); the frames
pickle and convert to JSON; the module computes without matplotlib."""
from __future__ import annotations

import ast
import inspect
import json
import pickle
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy.stats import norm

import multilevel as ml
from multilevel.datasets import load
from multilevel.report import plotdata, plots
from multilevel.report.plotdata import (
    PlotData,
    caterpillar_data,
    coefficients_data,
    diagnostics_data,
    effect_data,
    fitted_lines_data,
    pooling_data,
    profile_data,
    shrinkage_data,
)

from conftest import load_case
from test_doctests import MODULES as DOCTEST_MODULES


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ml.MultilevelWarning)
        yield


@pytest.fixture(scope="module")
def sleep():
    return load("sleepstudy")


@pytest.fixture(scope="module")
def sleep_fit(sleep):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ml.lmer("Reaction ~ Days + (Days | Subject)", sleep)


@pytest.fixture(scope="module")
def school():
    """12 schools of 3 to 40 pupils, a pupil-level x, a school-level z, a two-level factor f."""
    rng = np.random.default_rng(11)
    rows = []
    for j, n in enumerate([3, 4, 5, 6, 8, 10, 12, 15, 20, 25, 30, 40]):
        a, b, z = rng.normal(0, 2), rng.normal(0, 0.5), rng.normal()
        for _ in range(n):
            x = rng.normal()
            f = "b" if rng.random() < 0.4 else "a"
            rows.append({"school": f"s{j:02d}", "x": x, "z": z, "f": f,
                         "y": 10 + a + (1.5 + b) * x + 0.8 * z + (1.0 if f == "b" else 0.0) + rng.normal()})
    df = pd.DataFrame(rows)
    df["f"] = pd.Categorical(df["f"], categories=["a", "b"])
    return df


@pytest.fixture(scope="module")
def school_fit(school):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ml.lmer("y ~ x + z + f + (1 + x | school)", school)


@pytest.fixture(scope="module")
def school_pooling(school):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ml.pooling("y ~ x + (x | school)", school)


def ols(X: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.linalg.lstsq(X, y, rcond=None)[0]


# --- the module -----------------------------------------------------------------------------


def _imports(module) -> set[str]:
    tree = ast.parse(inspect.getsource(module))
    out = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    out |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    return out


def test_plotdata_imports_no_matplotlib_and_plots_computes_nothing():
    assert not any(m == "matplotlib" or m.startswith("matplotlib.") for m in _imports(plotdata))
    # the drawing module takes its numbers from plotdata: no statistics of its own
    drawn = _imports(plots)
    assert "multilevel.report.plotdata" in drawn
    assert not any(m.split(".")[0] in ("scipy", "pandas") for m in drawn)
    assert "Layer: report. Computes, never draws; imports no matplotlib" in plotdata.__doc__
    assert "draws only; no numbers computed here beyond layout" in " ".join(plots.__doc__.lower().split())
    for name in plots.__all__:  # each plot has its data function, and calls it
        data_fn = name.replace("plot_", "") + "_data"
        assert data_fn in plotdata.__all__
        assert f"{data_fn}(" in inspect.getsource(getattr(plots, name))
    for name in plotdata.__all__:  # an example each, run by tests/test_doctests.py
        assert ">>> " in (getattr(plotdata, name).__doc__ or ""), name
    assert "multilevel.report.plotdata" in DOCTEST_MODULES


def test_frames_pickle_and_convert_to_json(sleep_fit, sleep, school_pooling):
    datas = [fitted_lines_data(sleep_fit, "Days"), pooling_data(school_pooling),
             shrinkage_data(school_pooling), caterpillar_data(sleep_fit), coefficients_data(sleep_fit),
             effect_data(sleep_fit, "Days", data=sleep), diagnostics_data(sleep_fit),
             profile_data(None, profile={"a": ([1.0, 2.0, 3.0], [-2.0, 0.0, 2.0])})]
    assert sorted(d.kind for d in datas) == sorted(n.replace("plot_", "") for n in plots.__all__)
    for d in datas:
        assert isinstance(d, PlotData) and len(d) >= 1
        back = pickle.loads(pickle.dumps(d))
        assert back.kind == d.kind and back.meta == d.meta and list(back) == list(d)
        for name, frame in d.items():
            assert isinstance(frame, pd.DataFrame) and isinstance(frame.index, pd.RangeIndex)
            pd.testing.assert_frame_equal(pickle.loads(pickle.dumps(frame)), frame)
            pd.testing.assert_frame_equal(back[name], frame)
        js = json.loads(json.dumps(d.to_dict(), allow_nan=False))
        assert js["kind"] == d.kind and set(js["frames"]) == set(d)
        for name, frame in d.items():
            assert list(js["frames"][name]) == [str(c) for c in frame.columns]
            assert all(len(v) == len(frame) for v in js["frames"][name].values())
    # missing values become null, numpy scalars plain numbers
    d = PlotData("x", {"a": pd.DataFrame({"v": [np.nan, 1.5], "k": np.array([1, 2], dtype=np.int64)})},
                 {"n": np.int64(3)})
    assert json.loads(json.dumps(d.to_dict(), allow_nan=False)) == {
        "kind": "x", "meta": {"n": 3}, "frames": {"a": {"v": [None, 1.5], "k": [1, 2]}}}


# --- fitted lines ---------------------------------------------------------------------------


def test_fitted_lines_are_the_fitted_values_at_the_rows(sleep_fit, sleep):
    d = fitted_lines_data(sleep_fit, "Days")
    assert list(d) == ["points", "lines", "population"]
    assert d["points"].columns.tolist() == ["row", "group", "x", "y", "fitted"]
    assert d["lines"].columns.tolist() == ["group", "x", "fitted"]
    assert d.meta["levels"] == list(sleep_fit.ranef()["Subject"].index) and d.meta["group"] == "Subject"
    fitted = sleep_fit.fitted()
    pts = d["points"]
    np.testing.assert_array_equal(pts["row"], fitted.index)  # data order, every row
    np.testing.assert_array_equal(pts["y"], sleep["Reaction"].to_numpy())
    np.testing.assert_array_equal(pts["group"], sleep["Subject"].astype(str).to_numpy())
    for lv, ln in d["lines"].groupby("group", sort=False):
        rows = sleep.index[sleep["Subject"].astype(str) == lv]
        o = np.argsort(sleep.loc[rows, "Days"].to_numpy(), kind="stable")
        np.testing.assert_array_equal(ln["x"], sleep.loc[rows, "Days"].to_numpy()[o])
        np.testing.assert_allclose(ln["fitted"], fitted.loc[rows].to_numpy()[o], rtol=1e-12)
        a, b = sleep_fit.coef()["Subject"].loc[lv]
        np.testing.assert_allclose(ln["fitted"], a + b * ln["x"], rtol=1e-9)
    # the population line: the fixed effects over the range of Days
    pop = d["population"]
    np.testing.assert_allclose(pop["x"], np.linspace(0, 9, plotdata.POPULATION_POINTS))
    b = sleep_fit.fixef
    np.testing.assert_allclose(pop["y"], b["(Intercept)"] + b["Days"] * pop["x"], rtol=1e-12)
    assert d.meta["population_label"] == "population (fixed effects)" and d.meta["held"] == {}
    assert len(fitted_lines_data(sleep_fit, "Days", population=False)["population"]) == 0


def test_fitted_lines_subsets_population_and_dropped_rows(school_fit, school, sleep):
    d = fitted_lines_data(school_fit, "x", groups=["s05", "s00"])
    assert d.meta["levels"] == ["s05", "s00"] and d["lines"]["group"].unique().tolist() == ["s05", "s00"]
    assert set(d["points"]["group"]) == {"s00", "s05"}
    assert len(d["points"]) == int(school["school"].isin(["s00", "s05"]).sum())
    # z and f vary too: the population line holds them at mean / reference, with or
    # without the data (the fit's model matrices hold both)
    d_nodata = d
    d = fitted_lines_data(school_fit, "x", data=school, groups=["s05", "s00"])
    pop, b = d["population"], school_fit.fixef
    assert len(pop) == plotdata.POPULATION_POINTS and d.meta["population_label"] == "population (fixed effects)"
    np.testing.assert_allclose(pop["y"], b["(Intercept)"] + b["x"] * pop["x"] + b["z"] * school["z"].mean(),
                               rtol=1e-10)
    for name in ("population", "lines"):
        pd.testing.assert_frame_equal(d[name], d_nodata[name], rtol=1e-12)
    assert d.meta["held"] == pytest.approx({"z": school["z"].mean(), "f": "a"})
    assert d.meta["held_how"] == {"z": "mean", "f": "reference"}
    dd = sleep.copy()
    dd.loc[[3, 50, 51], "Reaction"] = np.nan
    fit = ml.lmer("Reaction ~ Days + (Days | Subject)", dd)
    pts = fitted_lines_data(fit, "Days", data=dd)["points"]
    assert len(pts) == 177 and not set(pts["row"]) & {3, 50, 51}
    np.testing.assert_array_equal(pts["y"], dd.loc[pts["row"], "Reaction"].to_numpy())
    np.testing.assert_array_equal(pts["fitted"], fit.fitted().loc[pts["row"]].to_numpy())


# --- pooling and shrinkage ------------------------------------------------------------------


def test_pooling_lines_are_the_three_estimates(school_pooling, school):
    d = pooling_data(school_pooling)
    assert d["groups"].columns.tolist() == ["group", "n"]
    assert d["points"].columns.tolist() == ["group", "x", "y"]
    assert d["lines"].columns.tolist() == ["group", "pooling", "x", "y"]
    sizes = school.groupby("school").size()
    chosen = d.meta["levels"]
    assert len(chosen) == 8 and d["groups"]["group"].tolist() == chosen
    np.testing.assert_array_equal(d["groups"]["n"], sizes.loc[chosen].to_numpy())
    assert list(sizes.loc[chosen]) == sorted(sizes.loc[chosen]) and sizes.loc[chosen].iloc[[0, -1]].tolist() == [3, 40]
    X = np.column_stack([np.ones(len(school)), school["x"]])
    complete = ols(X, school["y"].to_numpy())
    partial = school_pooling.fits["partial"].coef()["school"]
    for lv in chosen:
        m = (school["school"] == lv).to_numpy()
        pts = d["points"][d["points"]["group"] == lv]
        np.testing.assert_array_equal(pts["y"], school.loc[m, "y"].to_numpy())
        np.testing.assert_array_equal(pts["x"], school.loc[m, "x"].to_numpy())
        lines = {k: g for k, g in d["lines"][d["lines"]["group"] == lv].groupby("pooling", sort=False)}
        assert list(lines) == ["complete", "none", "partial"]
        own = ols(X[m], school.loc[m, "y"].to_numpy())  # no pooling: the school's own regression
        for kind, (a, b) in (("complete", complete), ("none", own), ("partial", partial.loc[lv])):
            ln = lines[kind]
            assert len(ln) == 50
            np.testing.assert_allclose(ln["y"], a + b * ln["x"], rtol=1e-7, atol=1e-7)
    xs = d["lines"]["x"].iloc[:50]
    span = school["x"].max() - school["x"].min()
    assert xs.iloc[0] == pytest.approx(school["x"].min() - 0.03 * span)
    assert xs.iloc[-1] == pytest.approx(school["x"].max() + 0.03 * span)


def test_pooling_without_slope_and_other_terms(school):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        p0 = ml.pooling("y ~ 1 + (1 | school)", school)
        pz = ml.pooling("y ~ x + z + (x | school)", school)
    d = pooling_data(p0, groups=["s02"])
    assert d.meta["x"] is None and d["points"]["x"].isna().all()
    lines = d["lines"]
    assert lines["x"].tolist() == [-0.5, 0.5] * 3
    ys = school.loc[school["school"] == "s02", "y"]
    assert lines.loc[lines["pooling"] == "none", "y"].tolist() == pytest.approx([ys.mean()] * 2)
    assert lines.loc[lines["pooling"] == "complete", "y"].tolist() == pytest.approx([school["y"].mean()] * 2)
    # z is school-level: each partial line passes through the partial fit's fitted values
    d = pooling_data(pz, groups=["s01", "s10"])
    fitted = pz.fits["partial"].fitted()
    for lv in ("s01", "s10"):
        ln = d["lines"][(d["lines"]["group"] == lv) & (d["lines"]["pooling"] == "partial")]
        m = (school["school"] == lv).to_numpy()
        np.testing.assert_allclose(np.interp(school.loc[m, "x"], ln["x"], ln["y"]), fitted[m], rtol=1e-8)


def test_shrinkage_estimates_are_coef_and_own_regressions(school_pooling, school):
    d = shrinkage_data(school_pooling, "x")
    g = d["groups"]
    assert g.columns.tolist() == ["group", "n", "no_pooling", "partial_pooling", "complete_pooling", "weight",
                                  "estimable", "rank"]
    coef = school_pooling.fits["partial"].coef()["school"]
    np.testing.assert_allclose(g["partial_pooling"], coef.loc[g["group"], "x"].to_numpy(), rtol=1e-12)
    sizes = school.groupby("school").size()
    np.testing.assert_array_equal(g["n"], sizes.loc[g["group"]].to_numpy())
    own = []
    for lv in g["group"]:
        s = school[school["school"] == lv]
        own.append(ols(np.column_stack([np.ones(len(s)), s["x"]]), s["y"].to_numpy())[1])
    np.testing.assert_allclose(g["no_pooling"], own, rtol=1e-8)
    complete = ols(np.column_stack([np.ones(len(school)), school["x"]]), school["y"].to_numpy())[1]
    assert d.meta["complete_pooling"] == pytest.approx(complete, rel=1e-10)
    # the shrinkage factor of the pooling table, 1 - condVar / tau for a random slope
    fit = school_pooling.fits["partial"]
    cv = fit.ranef(condvar=True).condvar["school"][0][:, 1, 1]
    np.testing.assert_allclose(g["weight"], 1 - cv / fit.varcorr[0].cov[1, 1], rtol=1e-10)
    assert g["weight"].between(0, 1).all()
    assert g["estimable"].all()
    assert g.sort_values("rank")["no_pooling"].is_monotonic_increasing
    assert sorted(g["rank"]) == list(range(len(g)))
    with pytest.raises(ml.MultilevelError, match="coef: no coefficient 'nope'"):
        shrinkage_data(school_pooling, "nope")


# --- caterpillar ----------------------------------------------------------------------------


@pytest.mark.parametrize("level", [0.95, 0.5])
def test_caterpillar_intervals_are_modes_plus_minus_z_condsd(sleep_fit, level):
    d = caterpillar_data(sleep_fit, level=level)
    f = d["intervals"]
    assert f.columns.tolist() == ["grpvar", "term", "grp", "condval", "condsd", "lower", "upper", "rank"]
    re = sleep_fit.ranef()
    z = norm.ppf(0.5 + level / 2)
    assert d.meta["z"] == pytest.approx(z, rel=1e-12) and d.meta["conf_level"] == level
    order = re["Subject"]["(Intercept)"].sort_values(kind="stable").index
    for t in ("(Intercept)", "Days"):
        rows = f[f["term"] == t]
        assert rows["grp"].tolist() == list(order) and rows["rank"].tolist() == list(range(18))
        assert (rows["grpvar"] == "Subject").all()
        mode = re["Subject"][t].loc[order].to_numpy()
        sd = re.condsd["Subject"][t].loc[order].to_numpy()
        np.testing.assert_allclose(rows["condval"], mode, rtol=1e-14)
        np.testing.assert_allclose(rows["condsd"], sd, rtol=1e-14)
        np.testing.assert_allclose(rows["lower"], mode - z * sd, rtol=1e-12)
        np.testing.assert_allclose(rows["upper"], mode + z * sd, rtol=1e-12)
    one = caterpillar_data(sleep_fit, term="Days")["intervals"]
    assert one["term"].unique().tolist() == ["Days"] and one["condval"].is_monotonic_increasing
    with pytest.raises(ml.MultilevelError, match="group: the fit has no grouping factor 'nope'"):
        caterpillar_data(sleep_fit, group="nope")
    with pytest.raises(ml.MultilevelError, match="term: 'Subject' has no random-effect term 'x'"):
        caterpillar_data(sleep_fit, term="x")
    with pytest.raises(ml.MultilevelError, match="level"):
        caterpillar_data(sleep_fit, level=95)


def test_caterpillar_second_grouping_factor():
    pastes = load("pastes")
    fit = ml.lmer("strength ~ 1 + (1 | batch/cask)", pastes)
    f = caterpillar_data(fit, group="batch")["intervals"]
    re = fit.ranef()
    assert len(f) == 10 and (f["grpvar"] == "batch").all()
    np.testing.assert_allclose(f["condval"], np.sort(re["batch"]["(Intercept)"].to_numpy()), rtol=1e-14)


# --- coefficients ---------------------------------------------------------------------------


def test_coefficients_are_wald_intervals(sleep_fit, sleep):
    fit0 = ml.lmer("Reaction ~ Days + (1 | Subject)", sleep)
    d = coefficients_data(sleep_fit, fit0, names=["slopes", "intercepts"], intercept=True, level=0.9)
    e = d["estimates"]
    assert e.columns.tolist() == ["model", "model_index", "term", "term_index", "estimate", "std_error",
                                  "lower", "upper"]
    assert d.meta["models"] == ["slopes", "intercepts"] and d.meta["terms"] == ["(Intercept)", "Days"]
    z = norm.ppf(0.95)
    for i, f in enumerate((sleep_fit, fit0)):
        rows = e[e["model_index"] == i]
        assert rows["term"].tolist() == ["(Intercept)", "Days"] and rows["term_index"].tolist() == [0, 1]
        se = np.sqrt(np.diag(f.vcov.to_numpy()))
        np.testing.assert_allclose(rows["estimate"], f.fixef.to_numpy(), rtol=1e-14)
        np.testing.assert_allclose(rows["std_error"], se, rtol=1e-12)
        np.testing.assert_allclose(rows["lower"], f.fixef.to_numpy() - z * se, rtol=1e-12)
        np.testing.assert_allclose(rows["upper"], f.fixef.to_numpy() + z * se, rtol=1e-12)
    # default: no intercept unless it is the only coefficient; a fit lacking a term has no row
    null = ml.lmer("Reaction ~ 1 + (1 | Subject)", sleep)
    e = coefficients_data(sleep_fit, null)["estimates"]
    assert e[["model_index", "term"]].values.tolist() == [[0, "Days"]]
    assert coefficients_data(null)["estimates"]["term"].tolist() == ["(Intercept)"]
    slope_only = ml.lmer("Reaction ~ 0 + Days + (1 | Subject)", sleep)
    e = coefficients_data(sleep_fit, slope_only, intercept=True)["estimates"]
    assert e[["model_index", "term", "term_index"]].values.tolist() == [
        [0, "(Intercept)", 0], [0, "Days", 1], [1, "Days", 1]]
    with pytest.raises(ml.MultilevelError, match="names: 1 names for 2 fits"):
        coefficients_data(sleep_fit, null, names=["one"])
    with pytest.raises(ml.MultilevelError, match="fits"):
        coefficients_data()


# --- effect ---------------------------------------------------------------------------------


def test_effect_numeric_is_the_fixed_part_with_its_band(school_fit, school):
    d = effect_data(school_fit, "x", data=school, n=30, level=0.9)
    e = d["effect"]
    assert list(d) == ["effect", "newdata", "rug"]
    assert e.columns.tolist() == ["x", "estimate", "lower", "upper"]
    assert d.meta["held"] == {"z": pytest.approx(school["z"].mean()), "f": "a"} and not d.meta["is_factor"]
    np.testing.assert_allclose(e["x"], np.linspace(school["x"].min(), school["x"].max(), 30))
    C = np.column_stack([np.ones(30), e["x"], np.full(30, school["z"].mean()), np.zeros(30)])
    b, V = school_fit.fixef.to_numpy(), school_fit.vcov.to_numpy()
    se = np.sqrt(np.einsum("ij,jk,ik->i", C, V, C))
    np.testing.assert_allclose(e["estimate"], C @ b, rtol=1e-10)
    np.testing.assert_allclose(e["lower"], C @ b - norm.ppf(0.95) * se, rtol=1e-10)
    np.testing.assert_allclose(e["upper"], C @ b + norm.ppf(0.95) * se, rtol=1e-10)
    # the same predictions as the fit's own predict on the new data, random effects 0
    np.testing.assert_allclose(e["estimate"], school_fit.predict(d["newdata"], re_form="~0"), rtol=1e-10)
    np.testing.assert_array_equal(d["rug"]["x"], np.sort(school["x"].unique()))


def test_effect_factor_glmm_and_errors(school_fit, school):
    e = effect_data(school_fit, "f", data=school)["effect"]
    assert e["x"].tolist() == ["a", "b"]
    assert e["estimate"].iloc[1] - e["estimate"].iloc[0] == pytest.approx(school_fit.fixef["fb"])
    cbpp = load("cbpp")
    fit = ml.glmer("cbind(incidence, size - incidence) ~ period + (1 | herd)", cbpp, family="binomial")
    d = effect_data(fit, "period", data=cbpp)
    assert d.meta["family"] == "binomial" and d.meta["is_factor"] and len(d["rug"]) == 0
    eta = fit.fixef["(Intercept)"] + np.r_[0.0, fit.fixef[["period2", "period3", "period4"]].to_numpy()]
    np.testing.assert_allclose(d["effect"]["estimate"], 1 / (1 + np.exp(-eta)), rtol=1e-8)
    se = np.sqrt(np.diag(fit.vcov.to_numpy()))[0]  # period 1: the intercept alone
    np.testing.assert_allclose(d["effect"]["upper"].iloc[0], 1 / (1 + np.exp(-(eta[0] + 1.959964 * se))),
                               rtol=1e-6)
    with pytest.raises(ml.MultilevelError, match="data: .*needs the data"):
        effect_data(school_fit, "x")
    with pytest.raises(ml.MultilevelError, match="x: 'school' is not a variable of the fixed part"):
        effect_data(school_fit, "school", data=school)
    with pytest.raises(ml.MultilevelError, match="n: "):
        effect_data(school_fit, "x", data=school, n=1)
    with pytest.raises(ml.MultilevelError, match="data: the data have 10 rows"):
        effect_data(school_fit, "x", data=school.iloc[:10])


# --- diagnostics ----------------------------------------------------------------------------


def test_diagnostics_residuals_qq_and_trend(sleep_fit):
    d = diagnostics_data(sleep_fit)
    assert list(d) == ["residuals", "trend", "binned", "qq", "qqline"] and len(d["binned"]) == 0
    r = d["residuals"]
    assert r.columns.tolist() == ["row", "fitted", "residual"]
    np.testing.assert_array_equal(r["fitted"], sleep_fit.fitted().to_numpy())
    np.testing.assert_allclose(r["residual"], (sleep_fit.frame.y - sleep_fit.fitted()).to_numpy(), rtol=1e-12)
    assert d.meta["residual_type"] == "response"
    assert [(p["grpvar"], p["term"]) for p in d.meta["panels"]] == [
        (None, None), ("Subject", "(Intercept)"), ("Subject", "Days")]
    qq = d["qq"]
    assert qq.columns.tolist() == ["panel", "grpvar", "term", "theoretical", "sample"]
    re = sleep_fit.ranef()
    for panel, values in ((0, r["residual"].to_numpy()), (2, re["Subject"]["Days"].to_numpy())):
        rows = qq[qq["panel"] == panel]
        m = len(values)
        np.testing.assert_allclose(rows["theoretical"], norm.ppf((np.arange(1, m + 1) - 0.5) / m), rtol=1e-12)
        np.testing.assert_array_equal(rows["sample"], np.sort(values))
        (line,) = d["qqline"][d["qqline"]["panel"] == panel].itertuples()
        q1, q3 = np.percentile(values, [25, 75])
        assert line.slope == pytest.approx((q3 - q1) / (norm.ppf(0.75) - norm.ppf(0.25)), rel=1e-12)
        assert (line.x0, line.y0) == pytest.approx((norm.ppf(0.25), q1), rel=1e-12)
    # trend: mean residual in 9 quantile bins of the fitted values (180 rows // 20)
    bins = pd.qcut(r["fitted"], 9, labels=False)
    expected = r.groupby(bins)[["fitted", "residual"]].mean()
    np.testing.assert_allclose(d["trend"]["fitted"], expected["fitted"], rtol=1e-12)
    np.testing.assert_allclose(d["trend"]["residual"], expected["residual"], rtol=1e-10, atol=1e-10)


def test_diagnostics_glmm_pearson_and_few_rows():
    cbpp = load("cbpp")
    fit = ml.glmer("cbind(incidence, size - incidence) ~ period + (1 | herd)", cbpp, family="binomial")
    d = diagnostics_data(fit)
    # binomial: binned residuals (56 rows: arm's 10 bins), response residuals, no trend line
    assert d.meta["residual_type"] == "binned" and len(d["trend"]) == 0 and 0 < len(d["binned"]) <= 10
    np.testing.assert_allclose(d["residuals"]["residual"], fit.residuals(type="response").to_numpy(), rtol=1e-12)
    np.testing.assert_allclose(d["residuals"]["fitted"], fit.fitted().to_numpy(), rtol=1e-12)
    sub = load("grouseticks").groupby("YEAR", observed=True).head(20)
    pois = ml.glmer("TICKS ~ YEAR + (1 | BROOD)", sub, family="poisson")
    d = diagnostics_data(pois)
    assert d.meta["residual_type"] == "pearson" and len(d["trend"]) == 0  # 60 rows: no trend line
    np.testing.assert_allclose(d["residuals"]["residual"], pois.residuals(type="pearson").to_numpy(), rtol=1e-12)


# --- profiles -------------------------------------------------------------------------------


def test_profile_curves_and_limits(sleep_fit):
    d = profile_data(sleep_fit)
    prof = ml.inference.profile_sd(sleep_fit)
    assert d.meta["parameters"] == list(prof) == ["sd_(Intercept)|Subject", "sd_Days|Subject", "sigma"]
    c = d["curves"]
    assert c.columns.tolist() == ["parameter", "value", "zeta"]
    for nm, df in prof.items():
        rows = c[c["parameter"] == nm]
        o = np.argsort(df["value"].to_numpy())
        np.testing.assert_array_equal(rows["value"], df["value"].to_numpy()[o])
        np.testing.assert_array_equal(rows["zeta"], df["zeta"].to_numpy()[o])
    lim = d["limits"].set_index("parameter")
    assert lim.columns.tolist() == ["lower", "upper"]
    ref = load_case("sleepstudy_slope_reml")["results"]["profile_ci_95"]
    for nm in prof:
        np.testing.assert_allclose(lim.loc[nm].to_numpy(), ref[nm], rtol=2e-3)
    given = profile_data(sleep_fit, profile={"a": (np.array([3.0, 1.0, 2.0]), np.array([2.0, -2.0, 0.0]))},
                         level=0.9)
    assert given["curves"]["value"].tolist() == [1.0, 2.0, 3.0] and given["curves"]["zeta"].tolist() == [-2, 0, 2]
    assert len(given["limits"]) == 0 and given.meta["z"] == pytest.approx(norm.ppf(0.95))
    with pytest.raises(ml.MultilevelError, match="profile: must be"):
        profile_data(sleep_fit, profile=[1, 2])


def test_profile_curve_limits_match_lme4_and_exact(sleep_fit):
    # limits="curve" reads the interval ends off the traced ζ curves (as lme4's confint of a
    # profile does); they must agree with lme4 and with the root-finding limits
    ref = load_case("sleepstudy_slope_reml")["results"]["profile_ci_95"]
    curve = profile_data(sleep_fit, limits="curve")["limits"].set_index("parameter")
    exact = profile_data(sleep_fit)["limits"].set_index("parameter")
    assert list(curve.index) == ["sd_(Intercept)|Subject", "sd_Days|Subject", "sigma"]
    for nm in curve.index:
        np.testing.assert_allclose(curve.loc[nm].to_numpy(float), ref[nm], rtol=2e-3)
        np.testing.assert_allclose(curve.loc[nm].to_numpy(float), exact.loc[nm].to_numpy(float), rtol=2e-3)
    with pytest.raises(ml.MultilevelError, match="limits"):
        profile_data(sleep_fit, limits="spline")


def test_profile_curve_limits_boundary():
    # pastes: the batch SD's profile stays above -1.96 all the way down to 0 -> lower limit 0
    fit = ml.lmer("strength ~ 1 + (1 | batch/cask)", load("pastes"))
    ref = load_case("pastes_nested_reml")["results"]["profile_ci_95"]
    lim = profile_data(fit, limits="curve")["limits"].set_index("parameter")
    lo, hi = lim.loc["sd_(Intercept)|batch"]
    assert lo == 0.0 and hi == pytest.approx(ref["sd_(Intercept)|batch"][1], rel=3e-3)


def test_pooling_lines_of_a_random_intercept_model_have_each_fits_common_slope():
    # y ~ x + (1 | g): no random slope, but x varies within groups: the lines are drawn
    # against x, each with its approach's coefficient of x (not flat at the group's mean)
    d = load("hsb")
    p = ml.pooling("mAch ~ ses + (1 | school)", d)
    pdat = pooling_data(p, groups=3)
    assert pdat.meta["x"] == "ses" and pdat.meta["common_slope"]
    assert pdat["points"]["x"].notna().all()
    for (g, kind), ln in pdat["lines"].groupby(["group", "pooling"]):
        slope = np.polyfit(ln["x"], ln["y"], 1)[0]
        assert slope == pytest.approx(p.fixed.loc["ses", kind], rel=1e-9)
    # the partial-pooling line of a group is its coef(fit) intercept + the fixed slope
    fit = p.fits["partial"]
    g0 = pdat.meta["levels"][0]
    ln = pdat["lines"].query("group == @g0 and pooling == 'partial'")
    cf = fit.coef()["school"].loc[g0]
    np.testing.assert_allclose(ln["y"], cf["(Intercept)"] + cf["ses"] * ln["x"], rtol=1e-10)
    # a level-2 predictor alone (constant within groups) keeps the horizontal lines
    q = ml.pooling("mAch ~ meanses + (1 | school)", d)
    assert pooling_data(q, groups=2).meta["x"] is None
