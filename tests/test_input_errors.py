"""Input that used to end in someone else's exception (numpy, formulaic, Python's parser,
RecursionError, MemoryError): each case is now a MultilevelError subclass whose message names
the cause, or a fit with lme4's warnings where lme4 fits (issue 10)."""
from __future__ import annotations

import subprocess
import sys
import warnings

import numpy as np
import pandas as pd
import pytest

import multilevel as ml
from multilevel.errors import DataError, FormulaError, ModelSpecError, MultilevelError


@pytest.fixture()
def df() -> pd.DataFrame:
    rng = np.random.default_rng(1)
    n = 60
    return pd.DataFrame({"y": rng.normal(size=n), "x": rng.normal(size=n),
                         "g": np.repeat(np.arange(10), 6),
                         "s": np.where(np.arange(n) % 3 == 0, "`a`",
                                       np.where(np.arange(n) % 3 == 1, "))}", "b"))})


# ---- formulas --------------------------------------------------------------------------------

@pytest.mark.parametrize("formula", ["y ~ x + I(", "y ~ I(", "y ~ log(x,", "y ~ I(x = "])
def test_formula_ending_inside_a_call(df, formula):
    with pytest.raises(FormulaError, match="missing argument|unexpected"):
        ml.lmer(formula, df)


@pytest.mark.parametrize("formula", [
    "y ~ " + " + ".join(["x"] * 1000) + " + (1 | g)",            # 1000 terms
    "y ~ " + "(" * 400 + "x" + ")" * 400 + " + (1 | g)",          # 400 nested parentheses
    "y ~ " + "I(" * 400 + "x" + ")" * 400 + " + (1 | g)",         # 400 nested calls
    "y ~ " + "-" * 500 + "x + (1 | g)",
    "y ~ I(x" + "^1" * 3000 + ") + (1 | g)",                      # right-associative chain
])
def test_deep_formulas_are_refused_not_a_recursion_error(df, formula):
    with pytest.raises(FormulaError, match="nested too deeply"):
        ml.lmer(formula, df)


def test_formulas_at_the_depth_limit_still_fit(df):
    # 300 terms and 90 nested parentheses are below the limits and must work from pytest's
    # own (deep) stack
    fit = ml.lm("y ~ " + " + ".join(["x"] * 300), df)
    assert fit.fixef.index.tolist() == ["(Intercept)", "x"]
    fit = ml.lmer("y ~ " + "(" * 90 + "x" + ")" * 90 + " + (1 | g)", df)
    assert "x" in fit.fixef.index


def test_deep_formula_on_the_command_line_is_one_line_not_a_traceback(tmp_path):
    path = tmp_path / "d.csv"
    pd.DataFrame({"y": [1.0, 2, 3, 4], "x": [0.0, 1, 0, 1], "g": [1, 1, 2, 2]}).to_csv(path)
    formula = "y ~ " + " + ".join(["x"] * 1000) + " + (1 | g)"
    proc = subprocess.run([sys.executable, "-m", "multilevel.app.cli", "fit", formula, "--data",
                           str(path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "nested too deeply" in proc.stderr


@pytest.mark.parametrize("formula", ["y ~ ifelse(x > 0, 'a', 'b') + (1 | g)",
                                     "y ~ ifelse(x > 0, 1, ('b')) + (1 | g)",
                                     "y ~ factor(ifelse(x > 0, 'a', 'b')) + (1 | g)"])
def test_ifelse_with_a_text_branch(df, formula):
    with pytest.raises(FormulaError, match=r"ifelse\(\): the (yes|no) value \"[ab]\" is text"):
        ml.lmer(formula, df)


@pytest.mark.parametrize("literal", ["'`a`'", "'))}'", "'`'", "\"}{`'\""])
def test_string_literals_are_data_not_code(df, literal):
    # a literal is handed to formulaic as a variable, never as code: a backtick or '))}' in
    # it must not end formulaic's quoted factor or Python's string early
    fit = ml.lmer(f"y ~ I(s == {literal}) + (1 | g)", df)
    expected = (df["s"] == literal[1:-1]).astype(float)
    col = [c for c in fit.fixef.index if c.startswith("I(")]
    assert len(col) == (1 if expected.any() else 0)
    ref = ml.lmer("y ~ flag + (1 | g)", df.assign(flag=expected > 0))
    assert np.allclose(fit.fixef.to_numpy(), ref.fixef.to_numpy())
    # the literal survives pickling and is re-applied to new data
    import pickle
    again = pickle.loads(pickle.dumps(fit))
    assert np.allclose(again.predict(df.iloc[:6]), fit.predict(df.iloc[:6]))


def test_string_literal_in_ifelse_test(df):
    fit = ml.lmer("y ~ ifelse(s == '))}', x, 0) + (1 | g)", df)
    ref = ml.lmer("y ~ z + (1 | g)", df.assign(z=np.where(df.s == "))}", df.x, 0.0)))
    assert np.allclose(fit.fixef.to_numpy(), ref.fixef.to_numpy())


# ---- data: complex numbers, labels that collide as text ------------------------------------

@pytest.mark.parametrize("values", [lambda x: x + 1j, lambda x: pd.Series(list(x + 0j), dtype=object),
                                    lambda x: pd.Series([1, 1j] * (len(x) // 2), dtype=object)])
@pytest.mark.parametrize("formula", ["y ~ cx + (1 | g)", "cx ~ x + (1 | g)", "y ~ x + (1 | cx)"])
def test_complex_columns_are_refused(df, values, formula):
    data = df.assign(cx=values(df.x.to_numpy()))
    with pytest.raises(DataError, match="column 'cx' has complex numbers"):
        ml.lmer(formula, data)


def test_complex_weights_are_refused(df):
    with pytest.raises(DataError, match="weights has complex numbers"):
        ml.lmer("y ~ x + (1 | g)", df, weights=np.ones(len(df)) + 0j)


def test_float_labels_with_the_same_text_are_one_level_as_in_r(df):
    # R: factor(c(0.1 + 0.2, 0.3)) has one level, "0.3" (as.character gives 15 digits)
    g = np.where(np.arange(len(df)) % 2 == 0, 0.1 + 0.2, 0.3) + df.g.to_numpy()
    with pytest.warns(ml.errors.LevelsMergedWarning, match=r"'gf'.*0\.3 \(from 0\.3, "
                                                           r"0\.30000000000000004\)"):
        fit = ml.lmer("y ~ x + (1 | gf)", df.assign(gf=g))
    assert [w.code for w in fit.warnings].count("levels_merged") == 1
    ref = ml.lmer("y ~ x + (1 | g)", df)
    assert fit.ranef()["gf"].shape[0] == 10
    assert np.isclose(fit.loglik, ref.loglik) and np.allclose(fit.fixef, ref.fixef)


def test_int_and_text_labels_are_one_level_as_in_r(df):
    # 1 and "1" in one object column: R's factor() sees the text "1" twice
    mixed = pd.Series([gi if i % 2 else str(gi) for i, gi in enumerate(df.g)], dtype=object)
    with pytest.warns(ml.errors.LevelsMergedWarning, match=r"'gm'.*1 \(from 1, '1'\)|"
                                                           r"'gm'.*1 \(from '1', 1\)"):
        fit = ml.lmer("y ~ x + (1 | gm)", df.assign(gm=mixed))
    ref = ml.lmer("y ~ x + (1 | g)", df)
    assert fit.ranef()["gm"].index.tolist() == sorted(str(k) for k in range(10))
    assert np.isclose(fit.loglik, ref.loglik)
    # in the fixed part too: one coefficient per distinct text
    with pytest.warns(ml.errors.LevelsMergedWarning):
        lm = ml.lm("y ~ gm", df.assign(gm=mixed))
    assert len(lm.coef()) == 10


# ---- responses the fixed effects reproduce exactly; weights; magnitudes ---------------------

def _small(rng_seed: int = 2, n: int = 12, p: int = 12) -> pd.DataFrame:
    rng = np.random.default_rng(rng_seed)
    d = pd.DataFrame({"y": rng.normal(size=n), "g": np.repeat(np.arange(3), n // 3)})
    for j in range(1, p + 1):
        d[f"x{j}"] = rng.normal(size=n)
    return d


@pytest.mark.parametrize("response, reml", [("c", True), ("c", False), ("lin", True),
                                            ("lin", False)])
def test_response_reproduced_by_the_fixed_effects_is_a_perfect_fit(df, response, reml):
    # lme4 fits these (sigma ~ 1e-16, "Model failed to converge"): here the exact limit
    data = df.assign(c=3.0, lin=2 * df.x + 1)
    with pytest.warns(ml.errors.PerfectFitWarning, match="every residual is 0"):
        fit = ml.lmer(f"{response} ~ x + (x | g)", data, reml=reml)
    assert np.allclose(fit.fixef.to_numpy(), [3.0, 0.0] if response == "c" else [1.0, 2.0],
                       atol=1e-12)
    assert fit.sigma == 0 and np.all(fit.theta == 0) and fit.is_singular
    assert fit.loglik == np.inf and fit.deviance == -np.inf
    assert {w.code for w in fit.warnings} >= {"perfect_fit", "singular"}
    assert np.allclose(fit.predict(data.iloc[:5]), data[response].iloc[:5])
    assert np.all(fit.se == 0)
    assert "every residual is 0" in str(fit)
    with pytest.raises(ModelSpecError, match="perfect fit"):
        fit.confint()


def test_as_many_fixed_effects_as_rows_ml_is_a_perfect_fit():
    # lme4 (ML): sigma 1.6e-15, logLik 390.8 (rounding noise), with convergence warnings
    d = _small()
    formula = "y ~ " + " + ".join(f"x{j}" for j in range(1, 12)) + " + (1 | g)"
    with pytest.warns(ml.errors.PerfectFitWarning):
        fit = ml.lmer(formula, d, reml=False)
    assert fit.sigma == 0 and fit.loglik == np.inf
    X = np.column_stack([np.ones(12)] + [d[f"x{j}"] for j in range(1, 12)])
    assert np.allclose(fit.fixef.to_numpy(), np.linalg.solve(X, d.y))


@pytest.mark.parametrize("p", [11, 12])
def test_reml_with_as_many_fixed_effects_as_rows_is_refused(p):
    # lme4: "objective in x0 returns NA" (p = 12 is rank deficient, one column is dropped)
    d = _small()
    formula = "y ~ " + " + ".join(f"x{j}" for j in range(1, p + 1)) + " + (1 | g)"
    with pytest.raises(ModelSpecError, match="REML needs more observations than fixed effects: "
                                             "12 observations and 12"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ml.errors.RankDeficientWarning)
            ml.lmer(formula, d)


def test_all_zero_weights_are_refused(df):
    with pytest.raises(DataError, match="weights are all 0 \\(column 'w'\\)"):
        ml.lmer("y ~ x + (1 | g)", df.assign(w=0.0), weights="w")
    with pytest.raises(DataError, match="weights are all 0"):
        ml.lmer("y ~ x + (1 | g)", df, weights=np.zeros(len(df)))
    # some zero weights are fine (lme4 fits them)
    w = np.r_[np.zeros(6), np.ones(len(df) - 6)]
    assert np.isfinite(ml.lmer("y ~ x + (1 | g)", df, weights=w).loglik)


@pytest.mark.parametrize("column, factor, what", [
    ("y", 1e200, "the response 'y' has values up to .*e\\+200.*divide it by 1e\\+200"),
    ("x", 1e200, "fixed-effect column 'x' has values up to .*e\\+200"),
    ("y", 1e-200, "the response 'y' has values no larger than .*e-200.*multiply it by 1e\\+200"),
    ("x", 1e-170, "fixed-effect column 'x' has values no larger than"),
])
def test_values_whose_squares_leave_double_precision_are_refused(df, column, factor, what):
    # lme4 returns an infinite REML criterion for y * 1e200; we refuse with the cause
    with pytest.raises(DataError, match=what):
        ml.lmer("y ~ x + (1 | g)", df.assign(**{column: df[column] * factor}))


def test_random_slope_with_huge_values_is_refused(df):
    with pytest.raises(DataError, match=r"random-effects term \(z \| g\) 'z'"):
        ml.lmer("y ~ x + (z | g)", df.assign(z=df.x * 1e160))


def test_large_but_representable_values_still_fit(df):
    ref = ml.lmer("y ~ x + (1 | g)", df)
    fit = ml.lmer("y ~ x + (1 | g)", df.assign(y=df.y * 1e100))
    assert np.allclose(fit.fixef / 1e100, ref.fixef, rtol=1e-6)


# ---- sizes: refused before anything big is allocated ------------------------------------------

def test_fixed_factor_with_30000_levels_is_refused_before_allocating():
    import tracemalloc
    n = 51_900
    rng = np.random.default_rng(3)
    d = pd.DataFrame({"y": rng.normal(size=n), "f": np.arange(n) % 30_000, "g": np.arange(n) % 50})
    tracemalloc.start()
    try:
        with pytest.raises(ModelSpecError, match=r"fixed-effect model matrix would be 51,900 x "
                                                 r"30,000 doubles = 11\.6 GiB.*max_dense_gib"):
            ml.lmer("y ~ factor(f) + (1 | g)", d)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2**30  # the 11.6 GiB matrix (and R's 30,000 x 29,999 contrast) never existed


def test_covariance_parameters_beyond_the_limit_are_refused():
    n = 7_000  # more rows than the 40 x 150 random effects (lme4's identifiability check)
    rng = np.random.default_rng(4)
    d = pd.DataFrame({"y": rng.normal(size=n), "k": np.arange(n) % 150, "g": np.arange(n) % 40})
    with pytest.raises(ModelSpecError, match=r"11,325 covariance parameters, above the limit of "
                                             r"2,000 \(control max_cov_params\).*150 correlated"):
        ml.lmer("y ~ 1 + (0 + factor(k) | g)", d)
    with pytest.raises(ModelSpecError, match="11,325 covariance parameters"):
        ml.glmer("I(y > 0) ~ 1 + (0 + factor(k) | g)", d, family="binomial")


def test_size_limits_are_control_settings(df):
    with pytest.raises(ModelSpecError, match=r"random-effects term \(x \| g\) would be 60 x 2 "
                                             r"doubles"):
        ml.lmer("y ~ 1 + (x | g)", df, control={"max_dense_gib": 1e-7})
    with pytest.raises(ModelSpecError, match="3 covariance parameters, above the limit of 2"):
        ml.lmer("y ~ x + (x | g)", df, control={"max_cov_params": 2})
    fit = ml.lmer("y ~ x + (x | g)", df, control={"max_cov_params": 3, "max_dense_gib": 1e-3})
    assert len(fit.theta) == 3
    with pytest.raises(ml.ControlError, match="max_dense_gib"):
        ml.lmer("y ~ x + (1 | g)", df, control={"max_dense_gib": -1})
    with pytest.raises(ml.ControlError, match="max_cov_params"):
        ml.glmer("I(y > 0) ~ x + (1 | g)", df, family="binomial", control={"max_cov_params": 0.5})


# ---- GLMM: a predictor in units of 1e6 ---------------------------------------------------------

def test_binomial_glmm_with_a_predictor_times_1e6_fits_with_warnings():
    # lme4 stops in deriv12 ("PIRLS step-halvings failed to reduce deviance"); the engine has
    # no gradient at the Hessian's stepped points: the fit keeps R_X's covariance and says so
    rng = np.random.default_rng(1)
    n = 60
    data = pd.DataFrame({"y": rng.normal(size=n), "x": rng.normal(size=n),
                         "g": np.repeat(np.arange(10), 6), "s": rng.integers(0, 5, n)})
    data["z"] = rng.normal(size=n) * 1e6
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        fit = ml.glmer("cbind(s, 5 - s) ~ z + (1 | g)", data, family="binomial")
    assert np.all(np.isfinite(fit.fixef)) and np.all(np.isfinite(fit.se))
    codes = {w.code for w in fit.warnings}
    assert {"not_converged", "hessian_not_pd"} <= codes
    assert any("could not be computed" in str(w.message) for w in rec)


def test_hessian_from_gradient_without_gradients_is_nan_not_a_type_error():
    from multilevel.engine.glmm import hessian_from_gradient

    def fg(x, jacobian=True):  # no gradient away from 0 (PIRLS failed there)
        return (0.0, np.zeros(2)) if np.all(x == 0) else (np.inf, None)

    H = hessian_from_gradient(fg, np.zeros(2), np.full(2, -np.inf), central=True)
    assert H.shape == (2, 2) and np.all(np.isnan(H))

    def fg_half(x, jacobian=True):  # a gradient on one side only: one-sided differences
        return (0.0, 2.0 * x) if np.all(x <= 0) else (np.inf, None)

    H = hessian_from_gradient(fg_half, np.zeros(2), np.full(2, -np.inf), central=True)
    assert np.allclose(H, 2.0 * np.eye(2))


# ---- found by fuzzing formulas and odd data ------------------------------------------------------

@pytest.mark.parametrize("term", ["pi", "NA", "TRUE", "Inf", "I(2)", "log(2)", "I('a')"])
def test_a_constant_is_not_a_model_term(df, term):
    # R: "variable lengths differ (found for 'pi')"; here it used to be numpy's "axis 1 is
    # out of bounds"
    with pytest.raises(FormulaError, match="is a constant, not a variable of the data"):
        ml.lmer(f"y ~ x + {term} + (1 | g)", df)


@pytest.mark.parametrize("expr", ["ifelse(x > 0, s, 1)", "log(s)", "I(x + s)", "scale(s)",
                                  "as.numeric(s)", "pmin(s, 1)"])
def test_text_column_in_arithmetic_is_named(df, expr):
    # ifelse() with a text column branch was a bare ValueError from numpy
    with pytest.raises(DataError, match=r"column 's' is text \(or a factor\), not numbers"):
        ml.lmer(f"y ~ {expr} + (1 | g)", df)


@pytest.mark.parametrize("expr", ["I(x^'a')", "round(x, 'a')", "I(x > 'a')"])
def test_text_literal_where_a_number_is_needed(df, expr):
    with pytest.raises(DataError, match="the text 'a' is used where a number is needed"):
        ml.lmer(f"y ~ {expr} + (1 | g)", df)


@pytest.mark.parametrize("formula, message", [
    ("y ~ I(dt) + (1 | g)", "column 'dt' .*cannot be used in a model; convert it to numbers"),
    ("y ~ log(dt) + (1 | g)", "column 'dt' .*cannot be used in a model"),
    ("y ~ x + (1 | dt)", "column 'dt' .*cannot be used as a factor or grouping variable"),
])
def test_datetime_columns_are_named(df, formula, message):
    with pytest.raises(DataError, match=message):
        ml.lmer(formula, df.assign(dt=pd.date_range("2020-01-01", periods=len(df))))
