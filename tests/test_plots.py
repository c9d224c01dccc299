"""Plots (``multilevel.report.plots``): each renders to PNG, and what it shows is checked from its
artists: one line per group, one point per level, the number of panels, labels, legends,
and the numbers behind the lines (fitted values, predictions, profile limits vs lme4)."""
from __future__ import annotations

import ast
import inspect
import io
import warnings

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("matplotlib")  # the `plot` extra; CI installs it with `test`

import multilevel as ml  # noqa: E402
from multilevel import plots  # noqa: E402
from multilevel.inference import profile_sd  # noqa: E402
from multilevel.datasets import load  # noqa: E402

from conftest import load_case  # noqa: E402


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ml.MultilevelWarning)
        yield


def png(fig) -> bytes:
    """Render the figure to PNG (this also runs the layout engine) and check it is one."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=60)
    data = buf.getvalue()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 2000
    return data


def gids(ax, prefix: str, kind: str = "lines") -> list:
    arts = ax.get_lines() if kind == "lines" else ax.collections if kind == "collections" else ax.get_children()
    return [a for a in arts if (a.get_gid() or "").startswith(prefix)]


def visible_axes(fig) -> list:
    return [a for a in fig.axes if a.get_visible()]


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
    """Small two-level data: 12 schools of 3 to 40 pupils, a pupil-level x, a school-level
    z and a two-level factor."""
    rng = np.random.default_rng(7)
    sizes = [3, 4, 5, 6, 8, 10, 12, 15, 20, 25, 30, 40]
    rows = []
    for j, n in enumerate(sizes):
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


# --- general --------------------------------------------------------------------------------


def test_no_pyplot_and_agg_canvas(sleep_fit):
    tree = ast.parse(inspect.getsource(plots))
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {f"{n.module}.{a.name}" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module
                 for a in n.names}
    assert "matplotlib.pyplot" not in imported  # no global figure state, no GUI backend
    assert not any(isinstance(n, ast.Name) and n.id == "plt" for n in ast.walk(tree))
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    fig = plots.plot_caterpillar(sleep_fit)
    assert isinstance(fig.canvas, FigureCanvasAgg)
    assert fig._repr_png_()[:4] == b"\x89PNG"  # notebooks display it


def test_draws_into_given_axes(sleep_fit, sleep):
    from matplotlib.figure import Figure

    fig = Figure()
    axs = fig.subplots(1, 3)
    assert plots.plot_fitted_lines(sleep_fit, "Days", ax=axs[0]) is fig
    assert plots.plot_effect(sleep_fit, "Days", data=sleep, ax=axs[1]) is fig
    assert plots.plot_coefficients(sleep_fit, ax=axs[2]) is fig
    assert len(fig.axes) == 3 and len(gids(axs[0], "group:")) == 18
    png(fig)
    fig2 = Figure()
    two = fig2.subplots(1, 2)
    assert plots.plot_caterpillar(sleep_fit, ax=two) is fig2
    assert [a.get_xlabel() for a in two] == ["(Intercept)", "Days"]
    with pytest.raises(ValueError, match="2 terms"):
        plots.plot_caterpillar(sleep_fit, ax=two[0])


# --- fitted lines ---------------------------------------------------------------------------


def test_fitted_lines_one_line_per_group(sleep_fit):
    fig = plots.plot_fitted_lines(sleep_fit, "Days")
    png(fig)
    (ax,) = fig.axes
    lines = gids(ax, "group:")
    assert len(lines) == 18
    assert {ln.get_gid()[6:] for ln in lines} == set(sleep_fit.ranef()["Subject"].index)
    assert ax.get_xlabel() == "Days" and ax.get_ylabel() == "Reaction"
    # each line runs through the fitted values of its subject: a + b * Days
    coef = sleep_fit.coef()["Subject"]
    for ln in lines:
        a, b = coef.loc[ln.get_gid()[6:]]
        np.testing.assert_allclose(ln.get_ydata(), a + b * np.asarray(ln.get_xdata()), rtol=1e-9)
    pop = gids(ax, "population")
    assert len(pop) == 1  # Days is the only predictor: the fixed-effects line is drawn
    assert ax.get_legend() is not None and len(ax.get_legend().get_texts()) == 19


def test_fitted_lines_subsets_and_population(school_fit, school):
    fig = plots.plot_fitted_lines(school_fit, "x", groups=["s00", "s05"])
    ax = fig.axes[0]
    assert [ln.get_gid() for ln in gids(ax, "group:")] == ["group:s00", "group:s05"]
    # z and f vary too: held at mean / reference level (the subtitle says so), and the
    # population line is drawn without the data
    assert len(gids(ax, "population")) == 1
    assert "z = " in ax.get_title() and "(mean)" in ax.get_title() and "f = a (reference)" in ax.get_title()
    fig = plots.plot_fitted_lines(school_fit, "x", groups=4, data=school)
    ax = fig.axes[0]
    assert len(gids(ax, "group:")) == 4
    (pop,) = gids(ax, "population")  # with the data: the same, others at typical values
    assert pop.get_label() == "population (fixed effects)"
    png(fig)


# --- pooling --------------------------------------------------------------------------------


def test_pooling_panels_and_lines(school_pooling):
    fig = plots.plot_pooling(school_pooling)
    png(fig)
    axs = visible_axes(fig)
    assert len(axs) == 8  # default: 8 groups from the smallest to the largest
    ns = []
    for ax in axs:
        kinds = [ln.get_gid() for ln in gids(ax, "pooling:")]
        assert kinds == ["pooling:complete", "pooling:none", "pooling:partial"]
        ns.append(int(ax.get_title().split("n = ")[1].rstrip(")")))
    assert ns == sorted(ns) and ns[0] == 3 and ns[-1] == 40
    assert len(fig.legends) == 1
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["complete pooling", "no pooling", "partial pooling"]
    # the lines are the table's coefficients
    tab = school_pooling.table.set_index("group")
    ax = axs[-1]
    lv = ax.get_title().split()[0]
    ln = gids(ax, "pooling:partial")[0]
    x, y = np.asarray(ln.get_xdata()), np.asarray(ln.get_ydata())
    np.testing.assert_allclose(y, tab.loc[lv, "(Intercept)_partial"] + tab.loc[lv, "x_partial"] * x)


def test_pooling_lines_include_other_terms(school):
    # z is a school-level predictor: the table's coefficients leave it out, the lines add the
    # school's contribution, so each approach's line passes through its own fitted values
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        p = ml.pooling("y ~ x + z + (x | school)", school)
    fig = plots.plot_pooling(p, groups=["s01", "s10"])
    partial = p.fits["partial"]
    fitted = np.asarray(partial.fitted())
    rt = partial.frame.reterms[0]
    xs = partial.frame.X[:, list(partial.frame.fixef_names).index("x")]
    for ax in visible_axes(fig):
        lv = ax.get_title().split()[0]
        m = rt.refs == list(rt.levels).index(lv)
        (ln,) = gids(ax, "pooling:partial")
        np.testing.assert_allclose(np.interp(xs[m], ln.get_xdata(), ln.get_ydata()), fitted[m], rtol=1e-8)


def test_pooling_choice_of_groups_and_grid(school_pooling):
    fig = plots.plot_pooling(school_pooling, groups=["s03", "s07", "s11"], ncols=2)
    axs = visible_axes(fig)
    assert [a.get_title().split()[0] for a in axs] == ["s03", "s07", "s11"]
    assert axs[0].get_subplotspec().get_gridspec().get_geometry() == (2, 2)
    with pytest.raises(ValueError, match="unknown group"):
        plots.plot_pooling(school_pooling, groups=["nope"])


def test_pooling_without_slope(school):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        p = ml.pooling("y ~ 1 + (1 | school)", school)
    fig = plots.plot_pooling(p, groups=3)
    png(fig)
    for ax in visible_axes(fig):
        lines = gids(ax, "pooling:")
        assert len(lines) == 3
        assert all(np.ptp(ln.get_ydata()) == 0 for ln in lines)  # horizontal: group means


def test_shrinkage_arrows(school_pooling):
    fig = plots.plot_shrinkage(school_pooling)
    png(fig)
    ax = fig.axes[0]
    segs = gids(ax, "shrinkage-segments", "collections")[0].get_segments()
    assert len(segs) == len(school_pooling.table)
    assert ax.get_xlabel().startswith("group size") and ax.get_xscale() == "log"  # 3 to 40
    assert ax.get_ylabel() == "(Intercept) estimate"
    assert {t.get_text() for t in ax.get_legend().get_texts()} == {
        "no pooling (own estimate)", "partial pooling", "complete pooling"}
    # segments go from the own estimate to the partial pooling estimate
    tab = school_pooling.table
    starts = sorted(sg[0, 1] for sg in segs)
    ends = sorted(sg[1, 1] for sg in segs)
    np.testing.assert_allclose(starts, np.sort(tab["(Intercept)_none"]))
    np.testing.assert_allclose(ends, np.sort(tab["(Intercept)_partial"]))
    # the partial-pooling points are coloured by the shrinkage factor, with its colour bar
    pts = gids(ax, "partial-pooling", "collections")[0]
    np.testing.assert_allclose(np.sort(pts.get_array()), np.sort(tab["(Intercept)_weight"]))
    assert pts.get_clim() == (0.0, 1.0)
    assert any("shrinkage factor" in a.get_ylabel() for a in fig.axes[1:])
    with pytest.raises(ValueError, match="no coefficient"):
        plots.plot_shrinkage(school_pooling, coef="nope")


def test_shrinkage_equal_group_sizes(sleep):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        p = ml.pooling("Reaction ~ Days + (Days | Subject)", sleep)
    fig = plots.plot_shrinkage(p, coef="Days")
    png(fig)
    ax = fig.axes[0]
    assert "every group has n = 10" in ax.get_xlabel()
    assert len(ax.get_xticklabels()) == 18  # subjects named, sorted by their own estimate


# --- caterpillar ----------------------------------------------------------------------------


def test_caterpillar_one_point_per_level(sleep_fit):
    fig = plots.plot_caterpillar(sleep_fit)
    png(fig)
    axs = fig.axes
    assert [a.get_xlabel() for a in axs] == ["(Intercept)", "Days"]
    re = sleep_fit.ranef()
    for a, term in zip(axs, ["(Intercept)", "Days"]):
        (pts,) = gids(a, "level-points")
        assert len(pts.get_xdata()) == 18
    x0 = np.asarray(gids(axs[0], "level-points")[0].get_xdata())
    assert np.all(np.diff(x0) >= 0)  # sorted by the first term
    labels = [t.get_text() for t in axs[0].get_yticklabels()]
    assert labels == list(re["Subject"]["(Intercept)"].sort_values(kind="stable").index)
    # the intervals are mode +- 1.96 condsd
    seg = [c for c in axs[0].collections if c.get_segments()][0].get_segments()
    half = np.array([abs(s[1][0] - s[0][0]) / 2 for s in seg])
    sd = re.condsd["Subject"]["(Intercept)"].loc[labels].to_numpy()
    np.testing.assert_allclose(half, 1.959964 * sd, rtol=1e-5)


def test_caterpillar_one_term_and_many_levels(sleep_fit):
    fig = plots.plot_caterpillar(sleep_fit, term="Days", level=0.5)
    assert len(fig.axes) == 1 and fig.axes[0].get_xlabel() == "Days"
    with pytest.raises(ValueError, match="no grouping factor"):
        plots.plot_caterpillar(sleep_fit, group="nope")
    rng = np.random.default_rng(3)
    g = np.repeat(np.arange(90), 3)
    df = pd.DataFrame({"g": g.astype(str), "y": rng.normal(size=g.size) + rng.normal(size=90)[g]})
    fit = ml.lmer("y ~ 1 + (1 | g)", df)
    fig = plots.plot_caterpillar(fit)
    png(fig)
    ax = fig.axes[0]
    assert len(gids(ax, "level-points")[0].get_xdata()) == 90
    assert ax.get_yticklabels() == [] and "90 levels" in ax.get_ylabel()  # too many to name


# --- coefficients ---------------------------------------------------------------------------


def test_coefficients_one_and_several_fits(sleep_fit, sleep):
    fig = plots.plot_coefficients(sleep_fit)
    png(fig)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["Days"]  # intercept left out
    (pts,) = gids(ax, "fit:")
    assert pts.get_xdata()[0] == pytest.approx(sleep_fit.fixef["Days"])
    fit0 = ml.lmer("Reaction ~ Days + (1 | Subject)", sleep)
    fig = plots.plot_coefficients(sleep_fit, fit0, names=["slopes", "intercepts"], intercept=True)
    png(fig)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["(Intercept)", "Days"]
    assert len(gids(ax, "fit:")) == 2
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["slopes", "intercepts"]
    assert ax.get_xlabel() == "estimate (95% Wald interval)"
    with pytest.raises(ValueError, match="names"):
        plots.plot_coefficients(sleep_fit, fit0, names=["one"])


# --- effect ---------------------------------------------------------------------------------


def test_effect_numeric_is_the_fixed_part_with_band(school_fit, school):
    fig = plots.plot_effect(school_fit, "x", data=school, n=30)
    png(fig)
    ax = fig.axes[0]
    (line,) = gids(ax, "effect")
    x, y = np.asarray(line.get_xdata()), np.asarray(line.get_ydata())
    assert len(x) == 30 and x[0] == pytest.approx(school["x"].min()) and x[-1] == pytest.approx(school["x"].max())
    b = school_fit.fixef
    expected = b["(Intercept)"] + b["x"] * x + b["z"] * school["z"].mean()  # f at its reference level a
    np.testing.assert_allclose(y, expected, rtol=1e-10)
    (band,) = [c for c in ax.collections if c.get_gid() == "band"]
    assert "f = a" in ax.get_title() and "z = " in ax.get_title()
    assert ax.get_xlabel() == "x" and ax.get_ylabel() == "predicted y"
    # band width at x: 2 * 1.96 * sqrt(c' V c)
    V = school_fit.vcov.to_numpy()
    c = np.array([1.0, x[0], school["z"].mean(), 0.0])
    verts = band.get_paths()[0].vertices
    at0 = verts[np.isclose(verts[:, 0], x[0])][:, 1]
    assert np.ptp(at0) == pytest.approx(2 * 1.959964 * np.sqrt(c @ V @ c), rel=1e-5)


def test_effect_factor_and_errors(school_fit, school, sleep_fit):
    fig = plots.plot_effect(school_fit, "f", data=school)
    png(fig)
    ax = fig.axes[0]
    (pts,) = gids(ax, "effect")
    assert len(pts.get_xdata()) == 2
    assert [t.get_text() for t in ax.get_xticklabels()] == ["a", "b"]
    diff = pts.get_ydata()[1] - pts.get_ydata()[0]
    assert diff == pytest.approx(school_fit.fixef["fb"])
    with pytest.raises(ValueError, match="needs the data"):
        plots.plot_effect(school_fit, "x")
    with pytest.raises(ValueError, match="not a variable of the fixed part"):
        plots.plot_effect(school_fit, "school", data=school)


def test_effect_glmm_on_response_scale():
    glmer = getattr(ml, "glmer", None)
    if glmer is None:
        pytest.fail("multilevel.glmer is missing")
    cbpp = load("cbpp")
    fit = glmer("cbind(incidence, size - incidence) ~ period + (1 | herd)", cbpp, family="binomial")
    fig = plots.plot_effect(fit, "period", data=cbpp)
    png(fig)
    ax = fig.axes[0]
    (pts,) = gids(ax, "effect")
    y = np.asarray(pts.get_ydata())
    eta = fit.fixef["(Intercept)"] + np.r_[0.0, fit.fixef[["period2", "period3", "period4"]].to_numpy()]
    np.testing.assert_allclose(y, 1 / (1 + np.exp(-eta)), rtol=1e-8)
    assert ax.get_ylabel() == "predicted probability"
    fig = plots.plot_diagnostics(fit)  # binomial: binned residuals, not Pearson residuals
    assert fig.axes[0].get_ylabel() == "average residual"
    poisson = glmer("TICKS ~ YEAR + (1 | BROOD)", load("grouseticks"), family="poisson")
    assert "Pearson" in plots.plot_diagnostics(poisson).axes[0].get_ylabel()


# --- diagnostics ----------------------------------------------------------------------------


def test_diagnostics_panels(sleep_fit):
    fig = plots.plot_diagnostics(sleep_fit)
    png(fig)
    axs = visible_axes(fig)
    assert len(axs) == 4  # residuals vs fitted, QQ residuals, QQ (Intercept), QQ Days
    assert [a.get_title() for a in axs] == ["Residuals vs fitted", "Normal QQ: residuals",
                                            "Normal QQ: Subject (Intercept)", "Normal QQ: Subject Days"]
    (res,) = [c for c in axs[0].collections if c.get_gid() == "residuals"]
    off = res.get_offsets()
    np.testing.assert_allclose(off[:, 0], sleep_fit.fitted())
    np.testing.assert_allclose(off[:, 1], sleep_fit.residuals())
    (qq,) = [c for c in axs[3].collections if c.get_gid() == "qq:Subject:Days"]
    assert len(qq.get_offsets()) == 18
    assert axs[0].get_xlabel() == "fitted values" and axs[1].get_xlabel() == "normal quantiles"


# --- profile --------------------------------------------------------------------------------


def _crossings(x, z, level=1.959964):
    o = np.argsort(x)
    x, z = np.asarray(x)[o], np.asarray(z)[o]
    lo = np.interp(-level, z, x) if z.min() < -level else 0.0
    return lo, np.interp(level, z, x)


def test_profile_sd_matches_lme4(sleep_fit):
    ref = load_case("sleepstudy_slope_reml")["results"]["profile_ci_95"]
    prof = profile_sd(sleep_fit)
    assert list(prof) == ["sd_(Intercept)|Subject", "sd_Days|Subject", "sigma"]
    for name, df in prof.items():
        lo, hi = _crossings(df["value"], df["zeta"])
        # linear interpolation between grid points (lme4 interpolates a spline)
        assert lo == pytest.approx(ref[name][0], rel=3e-3)
        assert hi == pytest.approx(ref[name][1], rel=3e-3)


def test_profile_plot_panels(sleep_fit):
    fig = plots.plot_profile(sleep_fit)
    png(fig)
    axs = visible_axes(fig)
    names = [a.get_xlabel() for a in axs]
    assert len(axs) >= 3 and {"sd_(Intercept)|Subject", "sd_Days|Subject", "sigma"} <= set(names)
    for a in axs:
        (ln,) = gids(a, "profile:")
        z = np.asarray(ln.get_ydata())
        assert z.min() < -1.96 and z.max() > 1.96 and np.all(np.diff(z) > 0)  # increasing through 0
    assert axs[0].get_ylabel() == "ζ"
    # the interval ends of multilevel.inference's profile sit where the curves cross -/+1.96
    ref = load_case("sleepstudy_slope_reml")["results"]["profile_ci_95"]
    for a in axs:
        ticks = gids(a, "limit:")
        assert len(ticks) == 2
        ends = sorted(t.get_xdata()[0] for t in ticks)
        np.testing.assert_allclose(ends, ref[a.get_xlabel()], rtol=2e-3)
        (ln,) = gids(a, "profile:")
        lo, hi = _crossings(ln.get_xdata(), ln.get_ydata())
        np.testing.assert_allclose([lo, hi], ends, rtol=3e-3)


def test_profile_boundary_and_precomputed():
    pastes = load("pastes")
    fit = ml.lmer("strength ~ 1 + (1 | batch/cask)", pastes)
    ref = load_case("pastes_nested_reml")["results"]["profile_ci_95"]
    prof = profile_sd(fit)
    lo, hi = _crossings(prof["sd_(Intercept)|batch"]["value"], prof["sd_(Intercept)|batch"]["zeta"])
    assert lo == 0.0 and hi == pytest.approx(ref["sd_(Intercept)|batch"][1], rel=3e-3)
    fig = plots.plot_profile(fit, profile={"a": (np.array([1.0, 2.0, 3.0]), np.array([-2.0, 0.0, 2.0]))})
    assert [a.get_xlabel() for a in visible_axes(fig)] == ["a"]


# --- data handling --------------------------------------------------------------------------


def test_rows_dropped_and_polars(sleep):
    pl = pytest.importorskip("polars")
    d = sleep.copy()
    d.loc[[3, 50, 51], "Reaction"] = np.nan  # the fit drops these rows
    fit = ml.lmer("Reaction ~ Days + (Days | Subject)", d)
    assert fit.nobs == 177
    fig = plots.plot_fitted_lines(fit, "Days", data=d)
    lines = gids(fig.axes[0], "group:")
    assert sum(len(ln.get_xdata()) for ln in lines) == 177
    fig = plots.plot_effect(fit, "Days", data=d)
    rug = gids(fig.axes[0], "rug")[0]
    assert sorted(rug.get_xdata()) == sorted(d["Days"].unique())
    # polars data (converted without pyarrow)
    pdf = pl.DataFrame({"Reaction": sleep["Reaction"].to_numpy(), "Days": sleep["Days"].to_numpy(),
                        "Subject": sleep["Subject"].astype(str).to_numpy()})
    pfit = ml.lmer("Reaction ~ Days + (Days | Subject)", pdf)
    (line,) = gids(plots.plot_effect(pfit, "Days", data=pdf).axes[0], "effect")
    np.testing.assert_allclose(line.get_ydata(), pfit.fixef["(Intercept)"] + pfit.fixef["Days"] * line.get_xdata())
    with pytest.raises(ValueError, match="rows"):
        plots.plot_effect(fit, "Days", data=d.iloc[:100])


def test_docstring_examples():
    import doctest

    result = doctest.testmod(plots, extraglobs={"ml": ml}, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


def test_the_readme_import_of_plots_works():
    """``from multilevel.plots import plot_pooling`` (the README's line) failed after the
    layered rebuild moved the drawing code to report/plots.py; ml.plots is the same module."""
    import multilevel as ml
    from multilevel.plots import plot_caterpillar, plot_pooling
    from multilevel.report import plots as report_plots

    assert plot_pooling is report_plots.plot_pooling and plot_caterpillar is report_plots.plot_caterpillar
    assert ml.plots.plot_pooling is report_plots.plot_pooling
