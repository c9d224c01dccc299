"""center(x), center(x, by = g) and group_mean(x, by = g) in formulas: the same fits as
centring the columns by hand, and predict(newdata) with the fitting data's means."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import multilevel as ml
from multilevel.datasets import load
from multilevel.errors import ColumnNotFoundError, DataError, FormulaError

WITHIN = "center(ses, by = school)"
BETWEEN = "group_mean(ses, by = school)"


@pytest.fixture(scope="module")
def hsb():
    return load("hsb")


@pytest.fixture(scope="module")
def by_hand(hsb):
    d = hsb.copy()
    d["gm"] = d.groupby("school", observed=True)["ses"].transform("mean")
    d["cw"] = d["ses"] - d["gm"]
    d["cg"] = d["ses"] - d["ses"].mean()
    return d


@pytest.fixture(scope="module")
def formula_fit(hsb):
    return ml.lmer(f"mAch ~ {WITHIN} + {BETWEEN} + (1 + {WITHIN} | school)", hsb)


def test_group_mean_centring_equals_centring_by_hand(hsb, by_hand, formula_fit):
    hand = ml.lmer("mAch ~ cw + gm + (1 + cw | school)", by_hand)
    assert list(formula_fit.fixef.index) == ["(Intercept)", WITHIN, BETWEEN]
    assert np.allclose(formula_fit.fixef, hand.fixef, rtol=1e-9)
    assert np.allclose(formula_fit.theta, hand.theta, rtol=1e-7)
    assert formula_fit.loglik == pytest.approx(hand.loglik, rel=1e-12)
    assert formula_fit.frame.reterms[0].terms == ["(Intercept)", WITHIN]
    # mlmRev's cses and meanses are the same centring
    assert np.allclose(formula_fit.frame.X[:, 1], hsb["cses"])
    assert np.allclose(formula_fit.frame.X[:, 2], hsb["meanses"])


def test_grand_mean_centring_in_lm_and_lmer(by_hand):
    a = ml.lm("mAch ~ center(ses) + sector", by_hand)
    b = ml.lm("mAch ~ cg + sector", by_hand)
    assert np.allclose(a.fixef, b.fixef) and a.loglik == pytest.approx(b.loglik)
    c = ml.lmer("mAch ~ I(center(ses)^2) + (1 | school)", by_hand)
    d = ml.lmer("mAch ~ I(cg^2) + (1 | school)", by_hand)
    assert np.allclose(c.fixef, d.fixef, rtol=1e-9)


def test_predict_uses_the_fitting_datas_means(hsb, by_hand, formula_fit):
    schools = list(hsb["school"].cat.categories[:3])
    new = pd.DataFrame({"school": pd.Categorical(schools, categories=hsb["school"].cat.categories),
                        "ses": [0.0, 1.0, -2.0]})
    gm = by_hand.groupby("school", observed=True)["gm"].first().loc[schools].to_numpy()
    hand = ml.lmer("mAch ~ cw + gm + (1 + cw | school)", by_hand)
    expect = hand.predict(new.assign(cw=new.ses - gm, gm=gm))
    got = formula_fit.predict(new)
    assert np.allclose(got, expect, rtol=1e-7)  # two fits: equal to the optimiser's tolerance
    # the new data's own means (here the ses values themselves) are not used
    X = formula_fit.frame.new_design(new).X
    assert np.allclose(X[:, 1], new.ses - gm) and np.allclose(X[:, 2], gm)
    # same for lm, and grand-mean centring keeps the fitting mean
    f = ml.lm("mAch ~ center(ses)", hsb)
    assert np.allclose(f.predict(new), f.fixef.iloc[0] + f.fixef.iloc[1] * (new.ses - hsb.ses.mean()))


def test_new_groups_raise_unless_allowed(hsb, formula_fit):
    new = pd.DataFrame({"school": ["no such school"], "ses": [0.5]})
    with pytest.raises(DataError, match="not in the fitting data"):
        formula_fit.predict(new)
    grand = hsb["ses"].mean()
    got = formula_fit.predict(new, allow_new_levels=True)
    b = formula_fit.fixef.to_numpy()
    assert got.iloc[0] == pytest.approx(b[0] + b[1] * (0.5 - grand) + b[2] * grand)
    X = formula_fit.frame.new_design(new, allow_new_levels=True).X
    assert X[0, 1] + X[0, 2] == pytest.approx(0.5)  # within + between == x, new groups too
    f = ml.lm("mAch ~ group_mean(ses, by = school)", hsb)
    with pytest.raises(DataError):
        f.predict(new)
    assert f.predict(new, allow_new_levels=True).iloc[0] == pytest.approx(
        f.fixef.iloc[0] + f.fixef.iloc[1] * grand)


def test_missing_values_and_numeric_group_labels():
    rng = np.random.default_rng(3)
    df = pd.DataFrame({"g": np.repeat(np.arange(10), 6), "x": rng.normal(size=60)})
    df["y"] = df.x + rng.normal(size=60)
    df.loc[[4, 17], "x"] = np.nan
    f = ml.lm("y ~ center(x, by = g) + group_mean(x, by = g)", df)
    ok = df.dropna()
    gm = ok.groupby("g")["x"].transform("mean")
    hand = ml.lm("y ~ cw + gm", ok.assign(cw=ok.x - gm, gm=gm))
    assert f.nobs == 58 and np.allclose(f.fixef, hand.fixef)
    # labels compare as R text: 3 and 3.0 are the same group
    new = pd.DataFrame({"g": [3.0, 7.0], "x": [0.0, 0.0]})
    means = ok.groupby("g")["x"].mean()
    X = f.frame.new_design(new).X
    assert np.allclose(X[:, 2], means.loc[[3, 7]].to_numpy())


def test_polars_data():
    pl = pytest.importorskip("polars")
    rng = np.random.default_rng(4)
    g = np.repeat(["a", "b", "c", "d"], 5)
    x = rng.normal(size=20)
    y = x + rng.normal(size=20)
    a = ml.lm("y ~ center(x, by = g)", pl.DataFrame({"y": y, "x": x, "g": g}))
    b = ml.lm("y ~ center(x, by = g)", pd.DataFrame({"y": y, "x": x, "g": g}))
    assert np.allclose(a.fixef, b.fixef)


def test_formula_errors():
    df = pd.DataFrame({"y": [1.0, 2, 3, 4], "x": [1.0, 2, 3, 5], "g": list("aabb")})
    with pytest.raises(FormulaError, match="group_mean\\(\\) needs by"):
        ml.lm("y ~ group_mean(x)", df)
    with pytest.raises(FormulaError, match="by must be the name of a data column"):
        ml.lm("y ~ center(x, by = g + 1)", df)
    with pytest.raises(ColumnNotFoundError):
        ml.lm("y ~ center(x, by = nope)", df)


@pytest.mark.parametrize("module", ["multilevel.formula._centering"])
def test_docstring_examples(module):
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(module),
                             optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0 and result.attempted > 0
