"""describe(): group sizes, level-1 / level-2 variables, the outcome's ICC, nested and crossed
groupings, and the printable / serialisable forms."""
from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest

import multilevel as ml
from multilevel.datasets import load
from multilevel.errors import DataError


@pytest.fixture(scope="module")
def pop():
    return load("popularity")


def test_one_grouping_sizes_levels_and_icc(pop):
    d = ml.describe(pop, "class", outcome="popular")
    sizes = pop.groupby("class", observed=True).size()
    lv = d.levels.iloc[0]
    assert (lv["group"], lv["n_groups"], lv["level"]) == ("class", 100, 2)
    assert (lv["size_min"], lv["size_max"]) == (sizes.min(), sizes.max())
    assert lv["size_median"] == sizes.median() and lv["size_mean"] == pytest.approx(20.0)
    v = d.variables.set_index("variable")
    assert v.loc["texp", "level"] == 2 and v.loc["texp", "level_name"] == "class"
    assert v.loc["texp", "varies_class"] == 0.0 and v.loc["texp", "between_class"] == 1.0
    for name in ("extrav", "sex", "popular"):
        assert v.loc[name, "level"] == 1 and v.loc[name, "varies_class"] > 0.9
    assert v.loc["sex", "type"] == "categorical" and np.isnan(v.loc["sex", "between_class"])
    # ICC from the null model, recomputed
    fit = ml.lmer("popular ~ 1 + (1 | class)", pop)
    tau2 = fit.varcorr[0].cov[0, 0]
    assert d.icc["class"] == pytest.approx(tau2 / (tau2 + fit.sigma ** 2), rel=1e-8)
    assert d.variance_shares is None and d.nobs == 2000


def test_between_share_is_the_eta_squared(pop):
    d = ml.describe(pop, "class")
    x = pop["extrav"].astype(float)
    means = x.groupby(pop["class"], observed=True).transform("mean")
    eta2 = np.sum((means - x.mean()) ** 2) / np.sum((x - x.mean()) ** 2)
    assert d.variables.set_index("variable").loc["extrav", "between_class"] == pytest.approx(eta2)


def _schools(seed=0):
    """Three-level data; class labels 1..4 repeat in every school."""
    rng = np.random.default_rng(seed)
    rows = []
    for s in range(6):
        size = rng.integers(100, 400)
        for c in range(1, 5):
            for i in range(rng.integers(5, 12)):
                rows.append({"school": f"S{s}", "class": c, "size": size,
                             "teacher_age": 30 + 3 * c + s, "x": rng.normal()})
    df = pd.DataFrame(rows)
    u_s = rng.normal(0, 1.0, 6)
    u_c = rng.normal(0, 0.7, 24)
    sc = df["school"].str[1].astype(int)
    df["y"] = u_s[sc] + u_c[sc * 4 + df["class"] - 1] + df.x + rng.normal(size=len(df))
    return df


def test_nested_levels_with_repeated_labels():
    df = _schools()
    d = ml.describe(df, ["school", "class"], outcome="y")
    lv = d.levels.set_index("group")
    assert lv.loc["school", "level"] == 3 and lv.loc["class", "level"] == 2
    assert lv.loc["school", "n_groups"] == 6 and lv.loc["class", "n_groups"] == 24
    assert lv.loc["class", "per_parent_min"] == 4 == lv.loc["class", "per_parent_max"]
    combos = df.groupby(["school", "class"]).size()
    assert lv.loc["class", "size_min"] == combos.min() and lv.loc["class", "size_max"] == combos.max()
    v = d.variables.set_index("variable")
    assert (v.loc["size", "level"], v.loc["size", "level_name"]) == (3, "school")
    assert (v.loc["teacher_age", "level"], v.loc["teacher_age", "level_name"]) == (2, "class")
    assert v.loc["x", "level"] == 1
    assert any("repeat across 'school'" in n for n in d.notes)
    assert set(d.icc) == {"school", "class"}
    assert sum(d.variance_shares.values()) == pytest.approx(1.0)
    assert list(d.variance_shares) == ["school", "class", "residual"]
    # the joint null model is lme4's (1 | school/class)
    fit = ml.lmer("y ~ 1 + (1 | school/class)", df)
    vc = {b.group: b.cov[0, 0] for b in fit.varcorr}
    total = sum(vc.values()) + fit.sigma ** 2
    assert d.variance_shares["school"] == pytest.approx(vc["school"] / total, rel=1e-6)
    assert d.variance_shares["class"] == pytest.approx(vc["class:school"] / total, rel=1e-6)


def test_crossed_groupings():
    df = load("penicillin")
    d = ml.describe(df, ["plate", "sample"], outcome="diameter", nested=False)
    lv = d.levels.set_index("group")
    assert lv.loc["plate", "n_groups"] == 24 and lv.loc["sample", "n_groups"] == 6
    assert set(lv["level"]) == {2}
    assert d.variance_shares is not None and "crossed" in str(d)


def test_missing_labels_and_outcome_errors(pop):
    df = pop.copy()
    df["class"] = df["class"].astype(object)
    df.loc[[0, 1], "class"] = None
    df.loc[5, "extrav"] = np.nan
    d = ml.describe(df, "class")
    assert d.nobs == 1998 and any("without a group label" in n for n in d.notes)
    assert d.variables.set_index("variable").loc["extrav", "n_missing"] == 1
    three = pop.assign(grade=pd.Categorical(np.resize(["a", "b", "c"], len(pop))))
    with pytest.raises(DataError, match="not numeric"):
        ml.describe(three, "class", outcome="grade")
    # a two-level factor is a binary outcome: its ICC is the logistic null model's
    assert ml.describe(pop, "class", outcome="sex").family == "binomial"


def test_text_html_and_dict(pop):
    d = ml.describe(pop, "class", outcome="popular")
    text = str(d)
    assert "100" in text and "ICC of popular by class" in text and "texp" in text
    assert "<table" in d._repr_html_()
    out = d.to_dict()
    json.dumps(out)
    assert out["levels"][0]["n_groups"] == 100 and out["icc"]["class"] == d.icc["class"]


@pytest.mark.parametrize("module", ["multilevel.toolkit.describe"])
def test_docstring_examples(module):
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(module),
                             optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0 and result.attempted > 0


def test_binary_outcome_icc_is_the_latent_scale_icc_of_icc():
    # a 0/1 outcome: the logistic null model's tau2 / (tau2 + pi^2/3), the number ml.icc gives,
    # not the ICC of a linear probability model (the old describe fitted lmer to 0/1)
    import math

    c = load("Contraception")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        null = ml.glmer("use ~ 1 + (1 | district)", c, family="binomial")
        d = ml.describe(c.assign(u=(c["use"] == "Y").astype(int)), "district", outcome="u")
        factor = ml.describe(c, "district", outcome="use")  # a two-level factor outcome
        linear = ml.describe(c.assign(u=(c["use"] == "Y").astype(int)), "district", outcome="u",
                             family="gaussian")
    tau2 = float(null.varcorr[0].cov[0, 0])
    assert d.icc["district"] == pytest.approx(tau2 / (tau2 + math.pi ** 2 / 3), rel=1e-6)
    assert d.icc["district"] == pytest.approx(float(ml.icc(null)["adjusted"]), rel=1e-6)
    assert factor.icc["district"] == pytest.approx(d.icc["district"], rel=1e-9)
    assert d.family == "binomial" and "latent scale" in str(d) and d.to_dict()["family"] == "binomial"
    assert linear.family == "gaussian" and abs(linear.icc["district"] - d.icc["district"]) > 0.01
    with pytest.raises(ml.errors.DataError, match="not binary"):
        ml.describe(c, "district", outcome="age", family="binomial")
