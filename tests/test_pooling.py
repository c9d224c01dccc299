"""Complete / no / partial pooling and two-stage estimates: shrinkage identities, the
per-group table's layout (used by the plots), level-2 predictors, and the two-stage stage-two
regression recomputed by hand."""
from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import multilevel as ml
from multilevel.datasets import load
from multilevel.datasets.simulate import simulate_popularity
from multilevel.errors import DataError, ModelSpecError

POP_FORMULA = "popular ~ extrav + sex + texp + extrav:texp + (1 + extrav | class)"


@pytest.fixture(scope="module")
def pop():
    return load("popularity")


@pytest.fixture(scope="module")
def pop_pooling(pop):
    return ml.pooling(POP_FORMULA, pop)


def _balanced(seed=0, J=12, n=8, tau=1.5, sigma=2.0):
    rng = np.random.default_rng(seed)
    g = np.repeat([f"g{j:02d}" for j in range(J)], n)
    y = 10 + np.repeat(rng.normal(0, tau, J), n) + rng.normal(0, sigma, J * n)
    return pd.DataFrame({"y": y, "g": g})


@pytest.mark.parametrize("name,formula", [("dyestuff", "Yield ~ 1 + (1 | Batch)"),
                                          ("sim", "y ~ 1 + (1 | g)")])
def test_balanced_intercepts_shrink_by_the_textbook_weight(name, formula):
    df = load("dyestuff") if name == "dyestuff" else _balanced()
    p = ml.pooling(formula, df)
    fit = p.fits["partial"]
    y = df[p.data.columns[0] if name == "sim" else "Yield"]
    sigma2, tau2 = fit.sigma ** 2, float(fit.varcorr[0].cov[0, 0])
    n = p.table["n"].to_numpy()
    assert len(set(n)) == 1  # balanced
    w = (n / sigma2) / (n / sigma2 + 1 / tau2)
    t = p.table
    assert np.allclose(t["(Intercept)_weight"], w, rtol=1e-9, atol=1e-12)
    means = df.groupby(p.group_name, observed=True)[y.name].mean().to_numpy()
    grand = y.mean()
    assert np.allclose(t["(Intercept)_none"], means, rtol=1e-12)
    assert np.allclose(t["(Intercept)_complete"], grand, rtol=1e-12)
    assert np.allclose(t["(Intercept)_partial"], w * means + (1 - w) * grand, rtol=1e-10)


def test_table_layout_for_the_plots(pop_pooling, pop):
    p = pop_pooling
    assert p.coef_names == ["(Intercept)", "extrav"]
    assert p.group_name == "class" and p.x_name == "extrav"
    cols = ["group", "n"]
    for c in p.coef_names:
        cols += [f"{c}_complete", f"{c}_none", f"{c}_partial", f"{c}_weight"]
    assert list(p.table.columns) == cols
    assert p.table["n"].sum() == len(pop) == len(p.data)
    assert list(p.table["group"]) == list(pop["class"].cat.categories)
    # partial pooling is coef(fit), exactly
    coef = p.fits["partial"].coef()["class"]
    for c in p.coef_names:
        assert np.array_equal(p.table[f"{c}_partial"].to_numpy(), coef[c].to_numpy())
    # the weight is the shrinkage factor from the conditional covariance, in [0, 1]
    fit = p.fits["partial"]
    cv = fit.ranef(condvar=True).condvar["class"][0]
    tau = np.diag(fit.varcorr[0].cov)
    for c, cn in enumerate(p.coef_names):
        w = p.table[f"{cn}_weight"].to_numpy()
        assert np.allclose(w, 1 - cv[:, c, c] / tau[c], rtol=1e-12)
        assert ((w >= 0) & (w <= 1)).all()


def test_level2_terms_are_netted_out_of_no_pooling(pop_pooling, pop):
    p = pop_pooling
    assert set(p.absorbed) == {"texp", "extrav:texp"}
    none = p.fits["none"].coef()
    beta = p.fits["partial"].fixef
    texp = pop.groupby("class", observed=True)["texp"].first().to_numpy()
    own_int = np.array([none[f"factor(class){g}"] for g in p.table["group"]])
    own_slope = np.array([none[f"factor(class){g}:extrav"] for g in p.table["group"]])
    assert np.allclose(p.table["(Intercept)_none"], own_int - beta["texp"] * texp)
    assert np.allclose(p.table["extrav_none"], own_slope - beta["extrav:texp"] * texp)
    # the level-2 terms (aliased with the group coefficients) are left out of the no-pooling
    # fit; common level-1 terms are not
    assert not {"texp", "extrav:texp"} & set(none.index) and not p.fits["none"].dropped_columns
    full = ml.lm("popular ~ 0 + factor(class) + factor(class):extrav + sex + texp + extrav:texp",
                 pop)
    assert full.dropped_columns == ["texp", "extrav:texp"]
    assert np.allclose(full.fixef.reindex(none.index), none, equal_nan=True)
    assert not np.isnan(p.fixed.loc["sexgirl", "none"])
    # the shrinkage factors stay in [0, 1] with level-2 terms too
    for c in p.coef_names:
        w = p.table[f"{c}_weight"]
        assert w.between(0, 1).all() and 0 < w.median() < 1


def test_fixed_table_shows_level2_se_too_small_under_complete_pooling(pop_pooling):
    f = pop_pooling.fixed
    assert list(f.columns) == ["complete", "complete_se", "none", "none_se", "partial",
                               "partial_se"]
    assert f.loc["texp", "complete_se"] < f.loc["texp", "partial_se"]
    assert np.isnan(f.loc["texp", "none"])  # not estimable without pooling
    assert f.loc["(Intercept)", "partial"] == pop_pooling.fits["partial"].fixef["(Intercept)"]


def test_rows_used_are_the_mixed_models(pop):
    df = pop.copy()
    df.loc[[0, 5, 77], "extrav"] = np.nan
    df.loc[9, "class"] = np.nan
    with pytest.warns(ml.MultilevelWarning, match="4 rows with missing values dropped"):
        p = ml.pooling("popular ~ extrav + (1 | class)", df)
    assert len(p.data) == len(df) - 4
    rows = p.fits["partial"].frame.rows
    assert np.array_equal(p.fits["complete"].frame.rows, np.arange(len(rows)))
    assert list(p.data.index) == list(rows)
    assert p.x_name is None and p.coef_names == ["(Intercept)"]


def test_presentation_and_errors(pop_pooling, pop):
    text = str(pop_pooling)
    assert "Pooling comparison" in text and "texp" in text
    assert "<table" in pop_pooling._repr_html_()
    json.dumps(pop_pooling.to_dict())
    with pytest.raises(ModelSpecError, match="exactly one grouping factor"):
        ml.pooling("Reaction ~ Days", load("sleepstudy"))
    with pytest.raises(ModelSpecError):
        ml.pooling("y ~ 1 + (1 | a) + (1 | b)", pd.DataFrame(
            {"y": np.arange(8.0), "a": list("aabbaabb"), "b": list("xyxyxyxy")}))


def test_uncorrelated_slopes_and_polars(pop):
    p = ml.pooling("popular ~ extrav + (extrav || class)", pop)
    assert p.coef_names == ["(Intercept)", "extrav"]
    pl = pytest.importorskip("polars")
    small = pop[pop["class"].cat.codes < 10]
    pdf = pl.DataFrame({"popular": small.popular.to_numpy(), "extrav": small.extrav.to_numpy(),
                        "class": small["class"].astype(str).to_numpy()})
    p1 = ml.pooling("popular ~ extrav + (1 | class)", pdf)
    p2 = ml.pooling("popular ~ extrav + (1 | class)", small.assign(**{"class": small["class"].astype(str)}))
    assert np.allclose(p1.table["(Intercept)_weight"], p2.table["(Intercept)_weight"])


# --- two-stage --------------------------------------------------------------------------------


def test_acceptance_level2_se_complete_smaller_than_mixed_and_two_stage(pop):
    ts = ml.two_stage(POP_FORMULA, pop)
    se = ts.table.loc["texp"]
    assert se["complete_se"] < se["mixed_se"]
    assert se["complete_se"] < se["two_stage_se"]
    # the random-intercept model shows the classic gap: design effect 1 + (m - 1) ICC
    ri = ml.two_stage("popular ~ texp + (1 | class)", pop).table.loc["texp"]
    assert ri["complete_se"] < 0.6 * ri["mixed_se"] and ri["complete_se"] < 0.6 * ri["two_stage_se"]


def test_two_stage_equations_recomputed_by_hand(pop):
    ts = ml.two_stage(POP_FORMULA, pop)
    assert ts.equations == {"(Intercept)": ["(Intercept)", "texp"],
                            "extrav": ["extrav", "extrav:texp"]}
    stage1 = ts.stage1.coef()
    groups = ts.group_estimates["group"]
    texp = pop.groupby("class", observed=True)["texp"].first().to_numpy()
    for coef, prefix, suffix, name in (("(Intercept)", "factor(class)", "", "texp"),
                                       ("extrav", "factor(class)", ":extrav", "extrav:texp")):
        est = np.array([stage1[f"{prefix}{g}{suffix}"] for g in groups])
        assert np.allclose(ts.group_estimates[coef], est)
        X = np.column_stack([np.ones(len(est)), texp])
        b, *_ = np.linalg.lstsq(X, est, rcond=None)
        r = est - X @ b
        V = r @ r / (len(est) - 2) * np.linalg.inv(X.T @ X)
        assert ts.table.loc[coef, "two_stage"] == pytest.approx(b[0])
        assert ts.table.loc[name, "two_stage"] == pytest.approx(b[1])
        assert ts.table.loc[name, "two_stage_se"] == pytest.approx(np.sqrt(V[1, 1]))
    # a level-1 covariate keeps its stage-one estimate
    assert ts.table.loc["sexgirl", "source"] == "stage 1"
    assert ts.table.loc["sexgirl", "two_stage"] == pytest.approx(ts.stage1.fixef["sexgirl"])
    # the mixed model's estimates sit beside them
    assert ts.table.loc["texp", "mixed"] == ts.fits["mixed"].fixef["texp"]
    assert "Two-stage estimates" in str(ts) and "<table" in ts._repr_html_()
    json.dumps(ts.to_dict())


def test_two_stage_explicit_level2_and_factors():
    hsb = load("hsb")
    hsb = hsb[hsb["school"].cat.codes < 60]  # 60 schools, both sectors: enough, and fast
    ts = ml.two_stage("mAch ~ ses + sector + (1 | school)", hsb)
    assert ts.table.loc["sectorCatholic", "source"] == "stage 2 ((Intercept))"
    assert ts.table.loc["ses", "source"] == "stage 1"
    row = ts.table.loc["sectorCatholic"]
    assert abs(row["two_stage"] - row["mixed"]) < 3 * row["mixed_se"]
    explicit = ml.two_stage("mAch ~ ses + sector + (1 | school)", hsb, level2=["sector"])
    assert np.allclose(explicit.table["two_stage"], ts.table["two_stage"])
    # a predictor not in the formula gets its own row
    extra = ml.two_stage("mAch ~ ses + (1 | school)", hsb, level2=["meanses"])
    assert "meanses" in extra.table.index and np.isnan(extra.table.loc["meanses", "mixed"])
    with pytest.raises(DataError, match="varies within groups"):
        ml.two_stage("mAch ~ ses + (1 | school)", hsb, level2=["ses"])


def test_two_stage_skips_groups_without_an_estimate():
    df = simulate_popularity(seed=5, n_classes=30, class_size=10)
    # one class where extraversion does not vary: no own slope there
    first = df["class"] == df["class"].cat.categories[0]
    df.loc[first, "extrav"] = 5
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ts = ml.two_stage("popular ~ extrav + texp + (1 + extrav | class)", df)
    assert np.isnan(ts.group_estimates["extrav"].iloc[0])
    assert ts.stage2["extrav"].nobs == 29 and ts.stage2["(Intercept)"].nobs == 30
    assert any("no-pooling estimate not defined" in n for n in ts.notes)


def _unbalanced(seed: int, J: int = 15, slope_sd: float = 0.5, corr: float = 0.0):
    """Groups of 2 to 30 rows, a within-group x, random intercepts and slopes."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(2, 31, J)
    g = np.repeat([f"g{j:02d}" for j in range(J)], sizes)
    cov = np.array([[1.0, corr * slope_sd], [corr * slope_sd, slope_sd ** 2]])
    b = rng.multivariate_normal([0, 0], cov, J)
    refs = np.repeat(np.arange(J), sizes)
    x = rng.normal(0, 1, sizes.sum())
    y = 2 + b[refs, 0] + (0.5 + b[refs, 1]) * x + rng.normal(0, 1.0, sizes.sum())
    return pd.DataFrame({"y": y, "x": x, "g": g})


def test_intercept_weight_is_the_textbook_shrinkage_factor_with_covariates_and_unequal_groups():
    # with a covariate and unequal groups the old empirical ratio (partial - complete) /
    # (none - complete) left [0, 1]; the shrinkage factor is n_j/s2 / (n_j/s2 + 1/tau2)
    df = _unbalanced(3)
    p = ml.pooling("y ~ x + (1 | g)", df)
    fit = p.fits["partial"]
    sigma2, tau2 = fit.sigma ** 2, float(fit.varcorr[0].cov[0, 0])
    n = p.table["n"].to_numpy()
    assert len(set(n)) > 5
    w = (n / sigma2) / (n / sigma2 + 1 / tau2)
    assert np.allclose(p.table["(Intercept)_weight"], w, rtol=1e-12)
    # the same number as 1 - condVar / tau2 (lme4's conditional variance)
    cv = fit.ranef(condvar=True).condvar["g"][0][:, 0, 0]
    assert np.allclose(p.table["(Intercept)_weight"], 1 - cv / tau2, rtol=1e-9)
    assert "shrinkage factor" in str(p)


def test_shrinkage_factors_of_uncorrelated_terms_and_singular_fits():
    from multilevel.toolkit.pooling import shrinkage_factors

    sleep = load("sleepstudy")
    fit = ml.lmer("Reaction ~ Days + (Days || Subject)", sleep)
    f = shrinkage_factors(fit, "Subject")
    cv = fit.ranef(condvar=True).condvar["Subject"]
    assert list(f.columns) == ["(Intercept)", "Days"] and len(f) == 18
    assert np.allclose(f["Days"], 1 - cv[1][:, 0, 0] / fit.varcorr[1].cov[0, 0])
    # tau = 0 (a singular fit): complete pooling, factor 0
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"y": rng.normal(size=60), "g": np.repeat(list("abcdef"), 10)})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sing = ml.lmer("y ~ 1 + (1 | g)", df)
    if float(sing.varcorr[0].cov[0, 0]) == 0.0:
        assert (shrinkage_factors(sing, "g").to_numpy() == 0).all()
    with pytest.raises(DataError, match="group"):
        shrinkage_factors(fit, "nope")


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), slope_sd=st.floats(0.05, 2.0), corr=st.floats(-0.9, 0.9))
def test_shrinkage_weights_never_leave_0_1_with_random_slopes(seed, slope_sd, corr):
    df = _unbalanced(seed, slope_sd=slope_sd, corr=corr)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        p = ml.pooling("y ~ x + (1 + x | g)", df)
    for c in p.coef_names:
        w = p.table[f"{c}_weight"].to_numpy()
        assert np.isfinite(w).all() and (w >= 0).all() and (w <= 1).all()


def test_ordered_grouping_factor_with_many_levels():
    # hsb's school is an ordered factor of 160 levels: the no-pooling dummies are indicator
    # columns, not contr.poly (which refuses more than 95 levels)
    hsb = load("hsb")
    assert hsb["school"].cat.ordered and hsb["school"].nunique() > 95
    p = ml.pooling("mAch ~ cses + (1 | school)", hsb)
    assert len(p.table) == 160 and np.isfinite(p.table["(Intercept)_none"]).all()


def test_two_stage_regressions_use_the_users_names(pop):
    ts = ml.two_stage(POP_FORMULA, pop)
    slope, icpt = str(ts.stage2["extrav"]), str(ts.stage2["(Intercept)"])
    assert "lm(formula = extrav ~ texp)" in slope and "p1" not in slope and "est" not in slope
    assert "lm(formula = `(Intercept)` ~ texp)" in icpt
    assert list(ts.stage2["extrav"].fixef.index) == ["(Intercept)", "texp"]
    explicit = ml.two_stage(POP_FORMULA, pop, level2=["texp"])
    assert "extrav ~ texp" in str(explicit.stage2["extrav"])
    assert np.allclose(explicit.table["two_stage"], ts.table["two_stage"])


@pytest.mark.parametrize("module", ["multilevel.toolkit.pooling"])
def test_docstring_examples(module):
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(module),
                             optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0 and result.attempted > 0


def test_ordered_grouping_factor_with_many_levels():
    # hsb's school is an ordered factor with 160 levels (as in mlmRev): the no-pooling
    # regression's group dummies must not ask for polynomial contrasts (the README example)
    import warnings

    import multilevel as ml

    hsb = ml.datasets.load("hsb")
    assert hsb["school"].cat.ordered and hsb["school"].nunique() > 95
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        p = ml.pooling("mAch ~ cses + (cses | school)", hsb)
    assert len(p.table) == 160
    fit = ml.lmer("mAch ~ cses + (cses | school)", hsb)
    np.testing.assert_allclose(p.table["cses_partial"], fit.coef()["school"]["cses"].to_numpy())
    assert hsb["school"].cat.ordered  # the user's frame is not modified
