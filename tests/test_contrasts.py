"""R's contrasts (ordered factors -> contr.poly, the contrasts= argument), stateful transforms
learnt from all rows, and the response on the right-hand side.

R numbers: ``fixtures/r_numbers/*.json`` (scripts and provenance beside them) and the
vendored reference cases ``cake_ordered_temperature_reml``, ``hsb_sector_sum_reml``,
``exam_vr_helmert_reml``.
"""
from __future__ import annotations

import json
import pickle
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import multilevel as ml
from conftest import load_case, load_case_frame, read_dataset
from multilevel.design.contrasts import contr_helmert, contr_poly, contr_sum, poly_names
from multilevel.errors import DataError, ModelSpecError, MultilevelError

R_NUMBERS = Path(__file__).parent / "fixtures" / "r_numbers"

# stats::contr.poly(k), printed by R with 17 significant digits
R_CONTR_POLY = {
    3: [[-7.0710678118654757e-01, 0.40824829046386307],
        [-7.8504622934188758e-17, -0.81649658092772603],
        [7.0710678118654746e-01, 0.40824829046386307]],
    4: [[-0.67082039324993692, 0.5, -0.22360679774997891],
        [-0.22360679774997896, -0.5, 0.67082039324993681],
        [0.22360679774997896, -0.5, -0.67082039324993692],
        [0.67082039324993692, 0.5, 0.22360679774997899]],
    5: [[-6.3245553203367588e-01, 0.53452248382484879, -3.1622776601683777e-01, 0.11952286093343928],
        [-3.1622776601683777e-01, -0.26726124191242440, 6.3245553203367577e-01, -0.47809144373375756],
        [-3.5108334685767005e-17, -0.53452248382484868, 1.7554167342883514e-16, 0.71713716560063634],
        [3.1622776601683783e-01, -0.26726124191242440, -6.3245553203367599e-01, -0.47809144373375728],
        [6.3245553203367588e-01, 0.53452248382484879, 3.1622776601683783e-01, 0.11952286093343928]],
    6: [[-0.59761430466719689, 0.54554472558998091, -0.37267799624996506, 0.18898223650461365, -0.062994078834871056],
        [-0.35856858280031806, -0.10910894511799603, 0.52174919474995096, -0.56694670951384107, 0.314970394174355461],
        [-0.11952286093343939, -0.43643578047198472, 0.29814239699997180, 0.37796447300922781, -0.629940788348711700],
        [0.11952286093343931, -0.43643578047198472, -0.29814239699997191, 0.37796447300922664, 0.629940788348712477],
        [0.35856858280031806, -0.10910894511799614, -0.52174919474995085, -0.56694670951384074, -0.314970394174356405],
        [0.59761430466719678, 0.54554472558998091, 0.37267799624996489, 0.18898223650461368, 0.062994078834871264]],
}


def _r(name: str) -> dict:
    return json.loads((R_NUMBERS / f"{name}.json").read_text())


def _quiet(fn, *args, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ml.MultilevelWarning)
        return fn(*args, **kw)


@pytest.fixture(scope="module")
def cake():
    return read_dataset("cake.csv")


@pytest.fixture(scope="module")
def exam():
    return read_dataset("Exam.csv")


# ---------------------------------------------------------------------------------------------
# the contrast functions
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("k", sorted(R_CONTR_POLY))
def test_contr_poly_equals_r(k):
    np.testing.assert_allclose(contr_poly(k), R_CONTR_POLY[k], rtol=0, atol=1e-15)
    assert poly_names(k) == [".L", ".Q", ".C", "^4", "^5"][: k - 1]


def test_contr_poly_is_orthonormal_for_many_levels():
    M = contr_poly(12)
    np.testing.assert_allclose(M.T @ M, np.eye(11), atol=1e-12)
    np.testing.assert_allclose(M.sum(axis=0), 0, atol=1e-12)
    assert poly_names(12)[-1] == "^11"
    assert np.all(np.diff(M[:, 0]) > 0)  # the linear contrast increases with the level


def test_contr_sum_and_helmert_values():
    assert contr_sum(3).tolist() == [[1, 0], [0, 1], [-1, -1]]
    assert contr_helmert(4).tolist() == [[-1, -1, -1], [1, -1, -1], [0, 2, -1], [0, 0, 3]]


# ---------------------------------------------------------------------------------------------
# ordered factors and contrasts= in models
# ---------------------------------------------------------------------------------------------

def test_ordered_factor_gets_contr_poly(cake):
    case = load_case("cake_ordered_temperature_reml")
    fit = ml.lmer(case["formula"], cake)
    assert list(fit.fixef.index) == case["fixef_names"]
    assert abs(fit.loglik - case["results"]["logLik"]) < 1e-6 * abs(case["results"]["logLik"])
    con = fit.contrasts["temperature"]
    assert con.type == "contr.poly" and con.columns == [".L", ".Q", ".C", "^4", "^5"]
    np.testing.assert_allclose(con.matrix, case["fixed_contrasts"]["temperature"]["matrix"], atol=1e-15)
    # the same data without the order: treatment coding and another REML logLik (-822.0597)
    flat = cake.assign(temperature=cake["temperature"].cat.as_unordered())
    fit2 = ml.lmer(case["formula"], flat)
    assert "temperature185" in fit2.fixef.index
    assert fit2.loglik == pytest.approx(-822.0597, abs=1e-4)


def test_ordered_factor_in_an_interaction_matches_lme4(cake):
    ref = _r("contrasts_extra")["cake_interaction_ordered"]
    fit = ml.lmer("angle ~ recipe * temperature + (1 | recipe:replicate)", cake)
    assert list(fit.fixef.index) == list(ref["fixef"])
    assert fit.loglik == pytest.approx(ref["logLik"], rel=1e-8)  # the issue: -819.31, not -816.62
    np.testing.assert_allclose(fit.fixef.to_numpy(), list(ref["fixef"].values()), rtol=1e-6, atol=1e-8)
    tab = fit.coef_table(ddf="satterthwaite")
    np.testing.assert_allclose(tab["df"].to_numpy(), list(ref["df"].values()), rtol=1e-3)


@pytest.mark.parametrize("case_id, spelled", [("hsb_sector_sum_reml", "sum"),
                                              ("hsb_sector_sum_reml", "contr.sum"),
                                              ("exam_vr_helmert_reml", "helmert"),
                                              ("exam_vr_helmert_reml", "contr.helmert")])
def test_contrasts_argument_sum_and_helmert(case_id, spelled):
    case = load_case(case_id)
    (factor, _), = case["contrasts_arg"].items()
    fit = ml.lmer(case["formula"], load_case_frame(case), contrasts={factor: spelled})
    ref = case["results"]
    assert list(fit.fixef.index) == case["fixef_names"]
    assert fit.loglik == pytest.approx(ref["logLik"], rel=1e-8)
    for name, val in ref["fixef"].items():
        assert abs(fit.fixef[name] - val) < 1e-4 * ref["fixef_se"][name]
    d = fit.to_dict()
    assert d["fixed_contrasts"][factor]["type"] == case["fixed_contrasts"][factor]["type"]
    assert d["fixed_contrasts"][factor]["matrix"] == case["fixed_contrasts"][factor]["matrix"]
    assert d["contrasts_arg"] == case["contrasts_arg"]
    assert d["contrasts"] == {factor: spelled.replace("contr.", "")}


def test_matrix_contrast_matches_r(exam):
    ref = _r("contrasts_extra")["exam_matrix"]
    M = np.array(ref["matrix"], dtype=float)
    for given in (M, pd.DataFrame(M, index=["bottom 25%", "mid 50%", "top 25%"]), M.tolist()):
        fit = ml.lmer("normexam ~ standLRT + vr + (1 | school)", exam, contrasts={"vr": given})
        assert list(fit.fixef.index) == list(ref["fixef"])
        assert fit.loglik == pytest.approx(ref["logLik"], rel=1e-8)
        np.testing.assert_allclose(fit.se.to_numpy(), list(ref["se"].values()), rtol=1e-4)
        for name, val in ref["fixef"].items():
            assert abs(fit.fixef[name] - val) < 1e-4 * ref["se"][name]
        new = exam.iloc[[0, 1, 4058]]
        np.testing.assert_allclose(fit.predict(new, re_form="NA").to_numpy(), ref["predict"], rtol=1e-6)
        fc = fit.to_dict()["fixed_contrasts"]["vr"]
        assert fc["type"] == "matrix" and fc["columns"] == ["1", "2"] and fc["matrix"] == ref["matrix"]
    # a DataFrame's row labels are matched to the levels; its column names name the columns
    shuffled = pd.DataFrame(M[[2, 0, 1]], index=["top 25%", "bottom 25%", "mid 50%"],
                            columns=["lin", "quad"])
    fit = ml.lmer("normexam ~ standLRT + vr + (1 | school)", exam, contrasts={"vr": shuffled})
    assert list(fit.fixef.index) == ["(Intercept)", "standLRT", "vrlin", "vrquad"]
    assert fit.fixef["vrlin"] == pytest.approx(ref["fixef"]["vr1"], rel=1e-6)


def test_lm_contrasts_interactions_and_no_intercept(cake):
    r = _r("contrasts_extra")
    cases = [("angle ~ recipe * temperature", {"recipe": "helmert"}, "cake_lm_helmert"),
             ("angle ~ 0 + temperature + recipe", None, "cake_lm_noint"),
             ("angle ~ 0 + recipe + temperature", {"recipe": "sum"}, "cake_lm_noint_sum"),
             ("angle ~ recipe + temperature", {"recipe": "SAS", "temperature": "treatment"},
              "cake_lm_sas")]
    for formula, con, key in cases:
        fit = ml.lm(formula, cake, contrasts=con)
        coef = fit.coef()
        assert list(coef.index) == list(r[key]["coef"]), key
        np.testing.assert_allclose(coef.to_numpy(), list(r[key]["coef"].values()), rtol=1e-9,
                                   atol=1e-9, err_msg=key)
    assert ml.lm("angle ~ recipe * temperature", cake,
                 contrasts={"recipe": "helmert"}).loglik == pytest.approx(r["cake_lm_helmert"]["logLik"], rel=1e-12)
    # a margin missing from an interaction: every level of both factors, as R
    fit = _quiet(ml.lm, "angle ~ temperature:recipe", cake)
    assert list(fit.coef().index) == r["cake_lm_inter_only"]["names"]


def test_glmer_takes_contrasts():
    cbpp = read_dataset("cbpp.csv")
    f = "cbind(incidence, size - incidence) ~ period + (1 | herd)"
    a = ml.glmer(f, cbpp)
    b = ml.glmer(f, cbpp, contrasts={"period": "sum"})
    assert list(b.fixef.index) == ["(Intercept)", "period1", "period2", "period3"]
    # ML: the log-likelihood and the fitted values do not depend on the coding
    assert b.loglik == pytest.approx(a.loglik, rel=1e-7)
    np.testing.assert_allclose(b.fitted(), a.fitted(), rtol=1e-5)
    assert b.to_dict()["fixed_contrasts"]["period"]["type"] == "contr.sum"


def test_predict_new_data_reapplies_contrasts(cake):
    case = load_case("cake_ordered_temperature_reml")
    fit = ml.lmer(case["formula"], cake)
    new = cake.iloc[[0, 7, 100, 269]].reset_index(drop=True)
    np.testing.assert_allclose(fit.predict(new).to_numpy(), fit.fitted().to_numpy()[[0, 7, 100, 269]],
                               rtol=1e-12)
    # new data with only some levels (and unordered text): the fitting data's coding is kept
    few = pd.DataFrame({"temperature": ["225", "175"], "recipe": ["C", "A"], "replicate": ["1", "2"]})
    X = fit.frame.new_design(few).X
    beta = fit.fixef.to_numpy()
    M = fit.contrasts["temperature"].matrix
    expected = [beta[0] + M[5] @ beta[1:6] + beta[7], beta[0] + M[0] @ beta[1:6]]
    np.testing.assert_allclose(X @ beta, expected, rtol=1e-12)
    with pytest.raises(DataError, match="temperature"):
        fit.predict(pd.DataFrame({"temperature": ["230"], "recipe": ["A"], "replicate": ["1"]}))


def test_contrasts_survive_pickling(exam):
    fit = ml.lmer("normexam ~ standLRT + vr + (1 | school)", exam, contrasts={"vr": "helmert"})
    back = pickle.loads(pickle.dumps(fit))
    assert back.contrasts["vr"].type == "contr.helmert"
    assert back.to_dict()["fixed_contrasts"] == fit.to_dict()["fixed_contrasts"]
    assert back.to_dict()["contrasts"] == {"vr": "helmert"}
    new = exam.iloc[:5]
    np.testing.assert_array_equal(back.predict(new).to_numpy(), fit.predict(new).to_numpy())


def test_to_dict_without_factors_and_with_treatment():
    sleep = ml.datasets.load("sleepstudy")
    d = ml.lmer("Reaction ~ Days + (1 | Subject)", sleep).to_dict()
    assert d["fixed_contrasts"] is None and d["contrasts"] is None and d["contrasts_arg"] is None
    d = ml.lm("Reaction ~ factor(Days)", sleep).to_dict()
    assert d["fixed_contrasts"] == {"factor(Days)": {"type": "contr.treatment"}}


def test_grouping_factors_ignore_order():
    hsb = read_dataset("Hsb82.csv")  # school is an R ordered factor
    assert hsb["school"].cat.ordered
    fit = ml.lmer("mAch ~ cses + (1 | school)", hsb)
    assert fit.contrasts == {} and fit.ngroups["school"] == 160


@pytest.mark.parametrize("arg, match", [
    ({"recipe": "contr.bogus"}, "unknown contrast 'contr.bogus' for factor 'recipe'"),
    ({"recipe": 3}, "factor 'recipe'"),
    ({"nope": "sum"}, "'nope' is not a variable of the fixed part"),
    ({"temp": "sum"}, "'temp' is not a factor"),
    ({"replicate": "sum"}, "'replicate' is not a variable of the fixed part"),
    ({"recipe": np.ones((2, 1))}, "factor 'recipe' has 2 rows, the factor has 3 levels"),
    ({"recipe": np.ones((3, 3))}, "factor 'recipe' has 3 columns"),
    ({"recipe": np.array([[1.0], [np.nan], [0.0]])}, "factor 'recipe' has missing"),
    (["recipe"], "contrasts must be a dict"),
])
def test_bad_contrasts_argument(cake, arg, match):
    with pytest.raises(ModelSpecError, match=match):
        ml.lmer("angle ~ recipe + temp + (1 | replicate)", cake, contrasts=arg)
    assert issubclass(ModelSpecError, MultilevelError)


def test_relevel_of_an_ordered_factor_is_refused_as_in_r(cake):
    with pytest.raises(DataError, match="relevel"):
        ml.lm("angle ~ relevel(temperature, ref = '185')", cake)


# ---------------------------------------------------------------------------------------------
# stateful transforms learn from all rows
# ---------------------------------------------------------------------------------------------

def _star_k() -> pd.DataFrame:
    df = read_dataset("star.csv")
    df = df[df["gr"].astype(object) == "K"].reset_index(drop=True)
    for c in df.columns:
        if isinstance(df[c].dtype, pd.CategoricalDtype):
            df[c] = df[c].cat.remove_unused_categories()
    df["t"] = (np.arange(len(df)) % 17).astype(float)
    return df


def test_scale_and_poly_learn_from_all_rows_as_r():
    ref = _r("star_scale_poly_missing")
    df = _star_k()
    fit = _quiet(ml.lmer, ref["formula"], df)
    assert fit.nobs == ref["nobs"] == 5850
    assert list(fit.fixef.index) == list(ref["fixef"])
    assert fit.loglik == pytest.approx(ref["logLik"], rel=1e-8)
    for name, val in ref["fixef"].items():
        assert abs(fit.fixef[name] - val) < 1e-4 * ref["se"][name], name
    np.testing.assert_allclose(fit.se.to_numpy(), list(ref["se"].values()), rtol=1e-4)
    assert fit.sigma == pytest.approx(ref["sigma"], rel=1e-5)
    new = df.iloc[ref["newdata_rows0"]]
    np.testing.assert_allclose(fit.predict(new).to_numpy(), ref["predict"], rtol=1e-6)
    np.testing.assert_allclose(fit.predict(new, re_form="NA").to_numpy(), ref["predict_re_form_NA"], rtol=1e-6)
    # the state of scale() is R's attr(scale(exp), "scaled:center" / "scaled:scale")
    x = df["exp"].to_numpy(float)
    assert np.nanmean(x) == pytest.approx(ref["scale_exp_center"], rel=1e-14)
    assert np.nanstd(x, ddof=1) == pytest.approx(ref["scale_exp_scale"], rel=1e-14)
    assert fit.to_dict()["fixed_contrasts"]["hdeg"]["type"] == ref["contrasts"]["hdeg"]


def test_scale_on_the_star_model_differs_from_learning_on_complete_rows():
    case = load_case("star_missing_reml")
    df = load_case_frame(case)
    fit = _quiet(ml.lmer, "math ~ cltype + sx + scale(exp) + (1 | sch) + (1 | tch)", df)
    # lme4 (R 4.2.2, same data and control): 2.85050999544232, i.e. 0.49072 x sd(exp) of all rows
    assert fit.fixef["scale(exp)"] == pytest.approx(2.85050999544232, rel=1e-5)
    used = df.iloc[fit.frame.rows]
    assert fit.fixef["scale(exp)"] == pytest.approx(
        case["results"]["fixef"]["exp"] * np.nanstd(df["exp"].to_numpy(float), ddof=1), rel=1e-5)
    assert np.nanstd(df["exp"].to_numpy(float), ddof=1) != pytest.approx(
        np.std(used["exp"].to_numpy(float), ddof=1), rel=1e-4)


def test_center_learns_from_all_rows():
    df = pd.DataFrame({"y": [1.0, np.nan, 3.0, 4.0, 2.0, 6.0, 5.0, 8.0],
                       "x": [1.0, 10.0, 2.0, 3.0, np.nan, 5.0, 2.0, 7.0],
                       "g": ["a", "a", "a", "b", "b", "b", None, "b"]})
    fit = _quiet(ml.lm, "y ~ center(x) + center(x, by = g)", df)
    assert fit.nobs == 5  # rows 1 (y), 4 (x) and 6 (g) dropped
    X = fit.frame.X
    grand = np.nanmean(df["x"])                  # includes row 1 (y missing) and row 6 (g missing)
    ma = np.mean([1.0, 10.0, 2.0])               # group a, including row 1
    mb = np.mean([3.0, 5.0, 7.0])                # group b, x of row 4 missing
    rows = fit.frame.rows
    np.testing.assert_allclose(X[:, 1], df["x"].to_numpy()[rows] - grand)
    expected = [v - (ma if g == "a" else mb) for v, g in zip(df["x"].to_numpy()[rows], df["g"].to_numpy()[rows])]
    np.testing.assert_allclose(X[:, 2], expected)


# ---------------------------------------------------------------------------------------------
# the response on the right-hand side
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("formula", ["Reaction ~ Reaction + Days + (1 | Subject)",
                                     "Reaction ~ I(Reaction) + Days + (1 | Subject)",
                                     "log(Reaction) ~ log(Reaction) + Days + (1 | Subject)"])
def test_response_on_the_rhs_is_dropped_with_a_warning(formula):
    sleep = ml.datasets.load("sleepstudy")
    with pytest.warns(ml.MultilevelWarning, match="the response appeared on the right-hand side and was dropped"):
        fit = ml.lmer(formula, sleep)
    plain = ml.lmer(formula.replace(formula.split("~")[1].split("+")[0], " "), sleep)
    assert list(fit.fixef.index) == ["(Intercept)", "Days"]
    assert fit.loglik == pytest.approx(plain.loglik, rel=1e-12)
    rec = [w for w in fit.warnings if w.code == "response_on_rhs"]
    assert len(rec) == 1 and "problem with term 1 in model.matrix: no columns are assigned" in rec[0]
    # new data need no response column
    assert np.isfinite(fit.predict(sleep.drop(columns="Reaction").iloc[:3]).to_numpy()).all()


def test_response_in_an_interaction_is_kept_as_in_r():
    sleep = ml.datasets.load("sleepstudy")
    with warnings.catch_warnings():
        warnings.simplefilter("error", ml.MultilevelWarning)
        mf = ml.lm("Reaction ~ Days + Reaction:Days", sleep)
    assert list(mf.coef().index) == ["(Intercept)", "Days", "Days:Reaction"]


def test_response_on_the_rhs_with_lm_and_glmer():
    sleep = ml.datasets.load("sleepstudy")
    with pytest.warns(ml.MultilevelWarning, match="right-hand side"):
        fit = ml.lm("Reaction ~ Reaction + Days", sleep)
    assert list(fit.coef().index) == ["(Intercept)", "Days"]
    cbpp = read_dataset("cbpp.csv")
    with pytest.warns(ml.MultilevelWarning, match="right-hand side"):
        g = ml.glmer("incidence ~ incidence + period + (1 | herd)", cbpp, family="poisson")
    assert "incidence" not in g.fixef.index


# ---------------------------------------------------------------------------------------------
# design details and docstrings
# ---------------------------------------------------------------------------------------------

def test_ordered_factor_in_a_random_term_gets_contr_poly_as_lme4(cake):
    from multilevel.design import build_model_frame

    # lme4's mkReTrms uses R's default contrasts; the contrasts= argument is for X only
    mf = build_model_frame("angle ~ recipe + (temperature | replicate)", cake,
                           contrasts={"recipe": "sum"})
    assert mf.reterms[0].terms == ["(Intercept)", "temperature.L", "temperature.Q", "temperature.C",
                                   "temperature^4", "temperature^5"]
    assert mf.fixef_names == ["(Intercept)", "recipe1", "recipe2"]
    mf = build_model_frame("angle ~ recipe + (0 + temperature | replicate)", cake)
    assert mf.reterms[0].terms == [f"temperature{t}" for t in range(175, 226, 10)]


@pytest.mark.parametrize("name", ["multilevel.design.contrasts", "multilevel.formula._transforms",
                                  "multilevel.formula._centering"])
def test_docstring_examples(name):
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


def test_model_matrix_is_the_contrast_rows_dense_check():
    """Brute force: each column block of X is the contrast matrix indexed by the level codes
    (and their products for an interaction, first factor fastest)."""
    from multilevel.design import build_fixed_frame

    rng = np.random.default_rng(3)
    f = pd.Categorical(rng.choice(list("abcd"), 60), categories=list("abcd"), ordered=True)
    g = pd.Categorical(rng.choice(list("xyz"), 60), categories=list("xyz"))
    df = pd.DataFrame({"y": rng.normal(size=60), "f": f, "g": g})
    mf = build_fixed_frame("y ~ f * g", df, contrasts={"g": "helmert"})
    Cf, Cg = contr_poly(4), contr_helmert(3)
    A, B = Cf[f.codes], Cg[g.codes]
    inter = np.column_stack([A[:, i] * B[:, j] for j in range(2) for i in range(3)])
    np.testing.assert_allclose(mf.X, np.column_stack([np.ones(60), A, B, inter]), atol=1e-15)
    assert mf.fixef_names[1:4] == ["f.L", "f.Q", "f.C"] and mf.fixef_names[4:6] == ["g1", "g2"]
    assert mf.fixef_names[6:8] == ["f.L:g1", "f.Q:g1"]


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), k=st.integers(2, 6))
def test_coding_changes_neither_ml_loglik_nor_fitted_values(seed, k):
    """Property: every full-rank coding spans the same column space, so ML logLik and fitted
    values do not change (the REML logLik does, by log det of the change of basis)."""
    rng = np.random.default_rng(seed)
    n = 40
    levels = [f"l{i}" for i in range(k)]
    f = pd.Categorical(np.concatenate([levels, rng.choice(levels, n - k)]), categories=levels)
    df = pd.DataFrame({"y": rng.normal(size=n), "x": rng.normal(size=n), "f": f,
                       "g": rng.integers(0, 6, n).astype(str)})
    base = ml.lm("y ~ f * x", df)
    M = rng.normal(size=(k, k - 1))  # almost surely a full-rank contrast
    for con in ("sum", "helmert", "poly", "SAS", M):
        other = ml.lm("y ~ f * x", df, contrasts={"f": con})
        assert other.loglik == pytest.approx(base.loglik, rel=1e-10)
        np.testing.assert_allclose(other.fitted(), base.fitted(), rtol=1e-8, atol=1e-8)
    a = _quiet(ml.lmer, "y ~ f + x + (1 | g)", df, reml=False)
    b = _quiet(ml.lmer, "y ~ f + x + (1 | g)", df, reml=False, contrasts={"f": "helmert"})
    assert b.loglik == pytest.approx(a.loglik, rel=1e-9, abs=1e-9)


def test_lm_summary_call_shows_the_contrasts_argument():
    sleep = ml.datasets.load("sleepstudy")
    text = str(ml.lm("Reaction ~ factor(Days)", sleep, contrasts={"factor(Days)": "sum"}).summary())
    assert 'lm(formula = Reaction ~ factor(Days), data = sleepstudy, contrasts = list(`factor(Days)` = "contr.sum"))' in text
    assert "factor(Days)1 " in text


def test_response_and_random_terms_learn_from_all_rows_too():
    from multilevel.design import build_model_frame

    rng = np.random.default_rng(5)
    n = 60
    df = pd.DataFrame({"y": rng.normal(size=n), "x": rng.normal(size=n), "z": rng.normal(size=n),
                       "g": np.repeat(list("abcdef"), 10)})
    df.loc[[3, 17, 40], "x"] = np.nan     # rows dropped because x is missing
    df.loc[[8], "y"] = np.nan
    df.loc[[22], "z"] = np.nan
    mf = build_model_frame("scale(y) ~ x + (scale(z) | g)", df)
    keep = mf.rows
    assert len(keep) == n - 5
    y, z = df["y"].to_numpy(), df["z"].to_numpy()
    np.testing.assert_allclose(mf.y, ((y - np.nanmean(y)) / np.nanstd(y, ddof=1))[keep], rtol=1e-13)
    np.testing.assert_allclose(mf.reterms[0].Z[:, 1], ((z - np.nanmean(z)) / np.nanstd(z, ddof=1))[keep],
                               rtol=1e-13)


def test_type3_anova_with_poly_and_helmert_contrasts_matches_lmertest(cake, exam):
    """lmerTest maps the type III contrasts of treatment coding to the coding used; the
    numbers are lmerTest 3.1-3's anova(m) (R 4.2.2, the reference control)."""
    from multilevel.inference.ddf import anova_terms

    fit = ml.lmer("angle ~ recipe * temperature + (1 | recipe:replicate)", cake)
    tab = anova_terms(fit)
    np.testing.assert_allclose(tab["Sum Sq"], [10.185861528, 2100.300016867, 205.977777778], rtol=1e-5)
    np.testing.assert_allclose(tab["DenDF"], [41.9999998211, 210.000000075, 210.0000000742], rtol=1e-4)
    assert tab["NumDF"].tolist() == [2, 5, 10]
    kr = anova_terms(fit, "kenward-roger")
    np.testing.assert_allclose(kr["DenDF"], [42, 210, 210], rtol=1e-4)
    fit = ml.lmer("normexam ~ standLRT * vr + (1 | school)", exam, contrasts={"vr": "helmert"})
    tab = anova_terms(fit)
    np.testing.assert_allclose(tab["Sum Sq"], [874.391375124, 4.686262984, 12.206760689], rtol=1e-5)
    np.testing.assert_allclose(tab["DenDF"], [4004.0456459, 61.4227051, 4003.95190324], rtol=1e-3)
