"""Power analysis by simulation: ``multilevel.power``, ``PowerDesign``, the extended designs
(``toolkit.extend``), the power curve plot and ``multilevel power`` on the command line."""
from __future__ import annotations

import doctest
import importlib
import json
import pickle
import time
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import stats

import multilevel as ml
from multilevel.app.cli import main
from multilevel.datasets import load
from multilevel.errors import ModelSpecError
from multilevel.toolkit.extend import extend_input, extend_rows

# sleep, sleep_fit: conftest.py


def _balanced(beta_w: float, J: int = 20, n: int = 10, tau: float = 1.0, sigma: float = 2.0):
    return ml.PowerDesign(n_groups=J, group_size=n, fixed={"(Intercept)": 0.5, "w": beta_w},
                          tau=tau, sigma=sigma, between={"w": "binary"})


def _exact_power(beta_w, J=20, n=10, tau=1.0, sigma=2.0, alpha=0.05, df=None):
    """The two-stage t test on group means: noncentral t with J - 2 df (w binary, half the
    groups treated: sum (w_j - wbar)^2 = J / 4)."""
    delta = beta_w / np.sqrt((tau**2 + sigma**2 / n) / (J / 4))
    df = J - 2 if df is None else df
    if np.isinf(df):
        zc = stats.norm.ppf(1 - alpha / 2)
        return stats.norm.sf(zc - delta) + stats.norm.cdf(-zc - delta)
    tc = stats.t.ppf(1 - alpha / 2, df)
    return stats.nct.sf(tc, df, delta) + stats.nct.cdf(-tc, df, delta)


# --- the closed-form check ----------------------------------------------------------------


@pytest.mark.parametrize("beta_w", [0.0, 1.2])
def test_power_matches_the_exact_two_stage_t_test(beta_w):
    design = _balanced(beta_w)
    res = ml.power(design, "w", nsim=2000, seed=11)
    exact = _exact_power(beta_w)
    lo, hi = res.ci
    assert lo <= exact <= hi, (res.power, res.ci, exact)
    assert res.method == "satterthwaite" and res.nsim_ok[0] == 2000
    if beta_w:
        # the interval is narrow enough to tell the t test from a z test (df = inf): the
        # normal power lies outside it
        assert not lo <= _exact_power(beta_w, df=np.inf) <= hi
        z = ml.power(design, "w", nsim=2000, seed=11, method="z")
        assert z.power > hi  # the Wald z test rejects too often with 20 groups


def test_satterthwaite_df_of_the_balanced_design_are_J_minus_2():
    design = _balanced(1.2)
    d = design.data()
    rng = np.random.default_rng(3)
    u = rng.normal(0, 1.0, 20)
    d["y"] = 0.5 + 1.2 * d["w"] + u[d["group"].cat.codes] + rng.normal(0, 2.0, len(d))
    fit = ml.lmer(design.formula, d)
    assert fit.coef_table()["df"]["w"] == pytest.approx(18.0, rel=1e-6)


# --- p-values are those of lmer + coef_table / anova on the same responses -----------------


def test_pvalues_equal_refits_by_lmer(sleep, sleep_fit):
    seed = 5
    res = ml.power(sleep_fit, "Days", nsim=4, seed=seed, fixef={"Days": 2.0})
    lrt = ml.power(sleep_fit, "Days", nsim=4, seed=seed, fixef={"Days": 2.0}, method="lrt")
    # the responses power() drew: stream i of SeedSequence(seed).spawn(1)[0].spawn(nsim),
    # the streams fit.simulate(n, seed=child) uses, around the changed fixed effect
    child = np.random.SeedSequence(seed).spawn(1)[0]
    ys = sleep_fit.simulate(4, seed=child)
    shift = (2.0 - sleep_fit.fixef["Days"]) * sleep["Days"].to_numpy()
    for i, y in enumerate(ys):
        d = sleep.assign(Reaction=y + shift)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            m1 = ml.lmer("Reaction ~ Days + (Days | Subject)", d)
            p_satt = m1.coef_table()["p"]["Days"]
            m0 = ml.lmer("Reaction ~ 1 + (Days | Subject)", d)
            p_lrt = ml.anova(m0, m1)["Pr(>Chisq)"].iloc[1]
        assert res.pvalues[0][i] == pytest.approx(p_satt, rel=2e-3)
        assert lrt.pvalues[0][i] == pytest.approx(p_lrt, rel=2e-3)


def test_formula_comparison_is_anova_of_the_two_models(sleep, sleep_fit):
    null = "Reaction ~ Days + (1 | Subject)"
    res = ml.power(sleep_fit, null, nsim=3, seed=2, data=sleep)
    assert res.method == "lrt" and res.null_formula == null
    ys = sleep_fit.simulate(3, seed=np.random.SeedSequence(2).spawn(1)[0])
    for i, y in enumerate(ys):
        d = sleep.assign(Reaction=y)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            p = ml.anova(ml.lmer(null, d), ml.lmer(sleep_fit.formula, d))["Pr(>Chisq)"].iloc[1]
        assert res.pvalues[0][i] == pytest.approx(p, rel=1e-3, abs=1e-12)
    pair = ml.power(sleep_fit, (null, "Reaction ~ Days + (Days || Subject)"), nsim=3, seed=2, data=sleep)
    assert pair.formula == "Reaction ~ Days + (Days || Subject)"
    assert "Null model: Reaction ~ Days + (1 | Subject)" in str(pair)


# --- reproducibility, speed, warnings -----------------------------------------------------


def test_seeded_runs_reproduce_exactly(sleep_fit):
    kw = dict(nsim=30, fixef={"Days": 3.0}, along="n_groups", values=[6, 12])
    a = ml.power(sleep_fit, "Days", seed=42, **kw)
    b = ml.power(sleep_fit, "Days", seed=42, **kw)
    c = ml.power(sleep_fit, "Days", seed=43, **kw)
    for x, y in zip(a.pvalues, b.pvalues):
        np.testing.assert_array_equal(x, y)
    pd.testing.assert_frame_equal(a.to_frame(), b.to_frame())
    assert not all(np.array_equal(x, y) for x, y in zip(a.pvalues, c.pvalues))
    # design k draws from child k: one design alone repeats the first design of a curve
    one = ml.power(sleep_fit, "Days", seed=42, nsim=30, fixef={"Days": 3.0}, along="n_groups", values=[6])
    np.testing.assert_array_equal(one.pvalues[0], a.pvalues[0])


def test_extending_to_the_fitted_size_is_the_fitted_design(sleep_fit):
    plain = ml.power(sleep_fit, "Days", nsim=20, seed=1, fixef={"Days": 3.0})
    for along, v in (("n_groups", 18), ("group_size", 10)):
        same = ml.power(sleep_fit, "Days", nsim=20, seed=1, fixef={"Days": 3.0}, along=along, values=[v])
        np.testing.assert_allclose(same.pvalues[0], plain.pvalues[0], rtol=1e-9)


def test_thousand_simulations_of_sleepstudy_in_under_five_seconds(sleep_fit):
    t0 = time.process_time()
    res = ml.power(sleep_fit, "Days", nsim=1000, seed=1, fixef={"Days": 3.0})
    cpu = time.process_time() - t0
    assert res.nsim_ok[0] == 1000
    assert cpu < 5.0, f"1000 simulations took {cpu:.2f} s of CPU time"


def test_refit_warnings_are_counted_and_printed():
    # tau = 0: about half of the refits are singular
    design = ml.PowerDesign(n_groups=8, group_size=4, fixed={"w": 0.5}, tau=0.0, sigma=1.0,
                            between={"w": "binary"})
    res = ml.power(design, "w", nsim=40, seed=1)
    k = res.warnings[0].get("singular", 0)
    assert 5 < k < 40
    assert f"{k} singular" in str(res)
    assert res.to_frame()["singular"].tolist() == [k]


# --- the result object ----------------------------------------------------------------------


def test_result_is_plain_data_and_prints_like_simr(sleep_fit):
    res = ml.power(sleep_fit, "Days", nsim=20, seed=1, fixef={"Days": 3.0}, along="group_size",
                   values=[4, 10])
    assert res.power.shape == (2,) and res.ci.shape == (2, 2)
    assert np.all((res.ci[:, 0] <= res.power) & (res.power <= res.ci[:, 1]))
    # Clopper-Pearson
    k, n = int(res.successes[0]), int(res.nsim_ok[0])
    assert res.ci[0, 0] == pytest.approx(stats.beta.ppf(0.025, k, n - k + 1) if k else 0.0)
    back = pickle.loads(pickle.dumps(res))
    pd.testing.assert_frame_equal(back.to_frame(), res.to_frame())
    json.dumps(res.to_dict())
    tab = res.to_frame()
    assert tab["group_size"].tolist() == [4, 10] and tab["nobs"].tolist() == [72, 180]
    text = str(res)
    assert text.startswith("Power for predictor 'Days' (Satterthwaite t test), 95% confidence "
                           "interval (Clopper-Pearson),\nby rows per group (Subject):")
    assert "   4: " in text and "72 rows, 18 groups" in text
    single = ml.power(sleep_fit, "Days", nsim=10, seed=1)
    assert isinstance(single.power, float) and single.ci.shape == (2,)
    assert "Based on 10 simulations (0 failed" in str(single)


def test_plot_power_curve(sleep_fit, tmp_path):
    from multilevel.report.power_plot import plot_power_curve

    res = ml.power(sleep_fit, "Days", nsim=10, seed=1, along="n_groups", values=[6, 12, 24])
    fig = plot_power_curve(res)
    ax = fig.axes[0]
    line = next(a for a in ax.lines if a.get_gid() == "power")
    np.testing.assert_allclose(line.get_ydata(), res.power)
    np.testing.assert_allclose(line.get_xdata(), [6, 12, 24])
    assert ax.get_xlabel() == "number of groups (Subject)"
    assert {a.get_gid() for a in ax.lines} >= {"power", "target", "alpha"}
    fig.savefig(tmp_path / "curve.png")
    assert (tmp_path / "curve.png").stat().st_size > 1000


# --- extended designs --------------------------------------------------------------------------


def test_extend_rows_cycles_groups_and_rows():
    refs = np.array([0, 0, 1, 1, 1])
    src, g = extend_rows(refs, 2, "n_groups", 5)
    assert src.tolist() == [0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 0, 1]
    assert g.tolist() == [0, 0, 1, 1, 1, 2, 2, 3, 3, 3, 4, 4]
    assert extend_rows(refs, 2, "n_groups", 1)[0].tolist() == [0, 1]
    src, g = extend_rows(refs, 2, "group_size", 4)
    assert src.tolist() == [0, 1, 0, 1, 2, 3, 4, 2] and g.tolist() == [0] * 4 + [1] * 4


def test_extend_nested_factors_get_new_levels_crossed_keep_theirs():
    rng = np.random.default_rng(0)
    d = pd.DataFrame({"school": np.repeat(["a", "b"], 6), "cls": np.repeat(["a1", "a2", "b1", "b2"], 3),
                      "item": np.tile(["i1", "i2", "i3"], 4), "y": rng.normal(size=12)})
    fit = ml.lmer("y ~ 1 + (1 | school) + (1 | cls) + (1 | item)", d, control={"check_singular": "ignore"})
    inp = fit.getme("problem").input
    by = {rt.group: rt for rt in fit.frame.reterms}
    ext = extend_input(inp, by["school"].refs, 2, "n_groups", 4)
    nlev = {rt.group: t.n_levels for rt, t in zip(fit.frame.reterms, ext.terms)}
    assert nlev == {"school": 4, "cls": 8, "item": 3}
    assert ext.nobs == 24
    np.testing.assert_array_equal(ext.X, np.ones((24, 1)))


def test_fitted_design_extended_within_groups(sleep_fit):
    inp = sleep_fit.getme("problem").input
    refs = sleep_fit.frame.reterms[0].refs
    ext = extend_input(inp, refs, 18, "group_size", 20)
    assert ext.nobs == 360
    days = ext.X[:20, 1]
    assert days.tolist() == list(range(10)) * 2  # Subject 308's rows twice, in order


# --- bad input -----------------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs, match", [
    (dict(test="Nights"), "'Nights' is neither a fixed effect"),
    (dict(test="Days", method="kr"), "method must be"),
    (dict(test="Days", along="n_groups"), "along and values go together"),
    (dict(test="Days", along="n_subjects", values=[4]), "along must be"),
    (dict(test="Days", along="group_size", values=[1]), "group_size = 1"),
    (dict(test="Days", nsim=0), "nsim must be"),
    (dict(test="Days", alpha=1.5), "alpha must be"),
    (dict(test="Days", fixef={"Dayz": 1.0}), "fixef: 'Dayz' is not a fixed effect"),
    (dict(test="Reaction ~ 1 + (1 | Subject)"), "needs data="),
    (dict(test="Reaction ~ 1 + (1 | Subject)", method="satterthwaite"), "likelihood-ratio"),
    (dict(test="Days", group="Day"), "group: 'Day' is not a grouping factor"),
])
def test_bad_arguments_are_clear_errors(sleep_fit, kwargs, match):
    with pytest.raises(ModelSpecError, match=match):
        ml.power(sleep_fit, nsim=kwargs.pop("nsim", 5), **kwargs)


def test_null_model_must_have_the_simulated_response(sleep, sleep_fit):
    with pytest.raises(ModelSpecError, match="response 'Days'"):
        ml.power(sleep_fit, "Days ~ 1 + (1 | Subject)", nsim=2, data=sleep)


def test_glmm_and_other_objects_are_refused():
    cbpp = load("cbpp")
    g = ml.glmer("cbind(incidence, size - incidence) ~ period + (1 | herd)", cbpp, family="binomial")
    with pytest.raises(ModelSpecError, match="linear mixed models"):
        ml.power(g, "period2", nsim=2)
    with pytest.raises(ModelSpecError, match="an lmer fit or a PowerDesign"):
        ml.power("fit", "x", nsim=2)


@pytest.mark.parametrize("kwargs, match", [
    (dict(n_groups=0), "n_groups must be"),
    (dict(sigma=0.0), "sigma must be > 0"),
    (dict(between={"w": "uniform"}), r"between\['w'\] must be one of"),
    (dict(fixed={"v": 1.0}), r"fixed\['v'\] is not a predictor"),
    (dict(fixed={}), "fixed has no value for 'w'"),
    (dict(slopes={"w": 0.3}), "a random slope needs a level-1"),
])
def test_power_design_checks_its_settings(kwargs, match):
    base = dict(n_groups=4, group_size=3, fixed={"w": 1.0}, tau=1.0, sigma=1.0, between={"w": "binary"})
    with pytest.raises(ModelSpecError, match=match):
        ml.PowerDesign(**{**base, **kwargs})


def test_power_design_with_random_slopes():
    d = ml.PowerDesign(n_groups=12, group_size=6, fixed={"(Intercept)": 1.0, "t": 0.3, "w": 0.5},
                       tau=0.8, sigma=1.0, within={"t": "time"}, slopes={"t": 0.2},
                       between={"w": "binary"})
    assert d.formula == "y ~ t + w + (1 + t || group)"
    assert d.data()["t"].tolist()[:7] == [0, 1, 2, 3, 4, 5, 0]
    res = ml.power(d, "t", nsim=20, seed=4, along="group_size", values=[4, 8])
    assert res.nobs == [48, 96] and res.n_groups == [12, 12]
    assert np.all(np.isfinite(res.power))


# --- the command line and the docstrings -----------------------------------------------------


def test_cli_power(capsys, tmp_path):
    png = tmp_path / "p.png"
    assert main(["power", "Reaction ~ Days + (Days | Subject)", "--data", "sleepstudy", "--test", "Days",
                 "--fixef", "Days=3", "--nsim", "10", "--seed", "1", "--along", "n_groups",
                 "--values", "6,12", "--plot", str(png)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Power for predictor 'Days' (Satterthwaite t test)")
    assert "Effect size: Days = 3" in out and png.stat().st_size > 1000
    assert main(["power", "Reaction ~ Days + (Days | Subject)", "--data", "sleepstudy",
                 "--null", "Reaction ~ Days + (1 | Subject)", "--nsim", "5", "--seed", "1", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["method"] == "lrt" and d["designs"][0]["nsim"] == 5


@pytest.mark.parametrize("args, match", [
    (["--test", "Days", "--values", "6,x", "--along", "n_groups"], "--values"),
    (["--test", "Days", "--fixef", "Days"], "--fixef"),
    (["--test", "Nights"], "'Nights' is neither"),
])
def test_cli_power_errors(capsys, args, match):
    assert main(["power", "Reaction ~ Days + (Days | Subject)", "--data", "sleepstudy", "--nsim", "2",
                 *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and match in err


@pytest.mark.parametrize("name", ["multilevel.toolkit.power", "multilevel.toolkit.power_design",
                                  "multilevel.toolkit.extend", "multilevel.report.power_plot"])
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name), extraglobs={"ml": ml},
                             optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0
