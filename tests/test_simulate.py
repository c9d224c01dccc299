"""Simulated teaching data: reproducible, loadable by name, with the documented design, and the
generating parameters recovered by the models."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import multilevel as ml
from multilevel.datasets import info, list_datasets, load
from multilevel.datasets.simulate import (DEFAULT_SEED, simulate_nurses, simulate_popularity,
                                          simulate_salaries)


@pytest.mark.parametrize("fn", [simulate_popularity, simulate_salaries, simulate_nurses])
def test_seeded_and_loadable(fn):
    a, b, c = fn(seed=11), fn(seed=11), fn(seed=12)
    pd.testing.assert_frame_equal(a, b)
    assert not a.equals(c)
    name = {simulate_popularity: "popularity", simulate_salaries: "salaries",
            simulate_nurses: "nurses"}[fn]
    pd.testing.assert_frame_equal(load(name), fn(seed=DEFAULT_SEED))
    assert load(name) is not load(name)  # a fresh copy each time
    tab = list_datasets().set_index("name")
    # the catalogue records the default seed's sizes (listing draws nothing): they must match
    assert (tab.loc[name, "rows"], tab.loc[name, "columns"]) == load(name).shape
    assert tab.loc[name, "package"] == "multilevel (simulated)"
    assert info(name)["nrow"] == len(a)


def test_popularity_design():
    d = simulate_popularity(seed=1)
    assert d.shape == (2000, 6) and d["class"].nunique() == 100
    sizes = d.groupby("class", observed=True).size()
    assert sizes.sum() == 2000 and sizes.min() >= 16
    assert (d.groupby("class", observed=True)["texp"].nunique() == 1).all()
    assert d["extrav"].between(1, 10).all() and d["popular"].between(1, 10).all()
    assert list(d["sex"].cat.categories) == ["boy", "girl"]
    bal = simulate_popularity(seed=1, n_classes=10, class_size=7, balanced=True)
    assert (bal.groupby("class", observed=True).size() == 7).all()


def test_popularity_parameters_are_recovered():
    d = simulate_popularity(seed=2)
    fit = ml.lmer("popular ~ extrav + sex + texp + extrav:texp + (1 + extrav | class)", d)
    truth = {"(Intercept)": -1.21, "extrav": 0.80, "sexgirl": 1.24, "texp": 0.23,
             "extrav:texp": -0.025}
    for name, value in truth.items():
        assert abs(fit.fixef[name] - value) < 4 * fit.se[name], name
    assert fit.sigma == pytest.approx(np.sqrt(0.55), rel=0.1)


def test_salaries_design_and_recovery():
    d = simulate_salaries(seed=3)
    assert d.shape == (200, 3) and d["department"].nunique() == 10
    assert d["experience"].between(0, 35).all() and (d["salary"] % 100 == 0).all()
    fit = ml.lmer("salary ~ experience + (experience | department)", d)
    assert abs(fit.fixef["experience"] - 1500) < 4 * fit.se["experience"]
    assert fit.sigma == pytest.approx(5000, rel=0.15)
    many = simulate_salaries(seed=3, n_departments=12)
    assert list(many["department"].cat.categories)[-1] == "Department 12"


def test_nurses_design_and_associations():
    d = simulate_nurses(seed=4)
    assert len(d) == 1404 and d["hospital"].nunique() == 18
    assert (d.groupby("hospital", observed=True)["location"].nunique() == 1).all()
    assert d.groupby("hospital", observed=True)["location"].first().value_counts().to_dict() \
        == {"outer": 9, "inner": 9}
    assert set(d["leave"].unique()) <= {0, 1}
    assert (d["experience"] <= d["age"] - 21).all() and d["valued"].between(1, 5).all()
    # the generating model's directions show in the raw data
    low = d[d["valued"] < 2.6]["leave"].mean()
    high = d[d["valued"] > 3.4]["leave"].mean()
    assert low > high
    rate = d.groupby("location", observed=True)["leave"].mean()
    assert rate["inner"] > rate["outer"]


def test_acceptance_complete_pooling_understates_the_level2_se():
    d = simulate_popularity(seed=6)
    ts = ml.two_stage("popular ~ extrav + sex + texp + extrav:texp + (1 + extrav | class)", d)
    row = ts.table.loc["texp"]
    assert row["complete_se"] < row["mixed_se"] and row["complete_se"] < row["two_stage_se"]


@pytest.mark.parametrize("module", ["multilevel.datasets.simulate"])
def test_docstring_examples(module):
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(module),
                             optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0 and result.attempted > 0
