"""The explorer's fast path (toolkit/pooling_arrays.py, app/explore/payload.py) gives the
numbers of the general functions: ``pooling()``, ``pooling_data``, ``shrinkage_data`` and
``caterpillar_data``, to 1e-12, on several designs; where it does not apply it says so (None)
and the explorer's answer is built from ``pooling()`` itself."""
from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest

import multilevel as ml
from multilevel.app.explore.payload import (arrays_from_pooling, caterpillar_payload,
                                            pooling_payload, rounded, shrinkage_payload)
from multilevel.datasets.simulate import simulate_two_level
from multilevel.report.plotdata import caterpillar_data, pooling_data, shrinkage_data
from multilevel.toolkit.pooling_arrays import KINDS, pooling_arrays


def _fit(formula, data, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ml.lmer(formula, data, **kw)


def _sim():
    return simulate_two_level(n_groups=20, group_size=20, tau1=0.4, seed=3)


def _unequal():
    # groups of 3 to 40 rows, not in order of the labels
    d = simulate_two_level(n_groups=12, group_size=40, tau1=0.5, seed=8)
    rng = np.random.default_rng(5)
    keep = rng.permutation(np.r_[3:41:3].repeat(1))[:12]
    parts = [g.iloc[:k] for (_, g), k in zip(d.groupby("group", sort=True, observed=True), keep)]
    return pd.concat(parts).sample(frac=1.0, random_state=1)


def _with_factor():
    d = _sim().copy()
    rng = np.random.default_rng(2)
    d["sex"] = pd.Categorical(rng.choice(["f", "m", "x"], len(d)))
    d["z"] = rng.normal(size=len(d))
    return d


FAST = [
    ("y ~ x + (x | group)", _sim),                      # random slopes
    ("y ~ 1 + (1 | group)", _sim),                      # random intercept, no predictor
    ("y ~ x + (1 | group)", _sim),                      # a level-1 predictor: its common slope
    ("y ~ x + w + (x | group)", _sim),                  # a level-2 predictor (absorbed)
    ("y ~ x + (x | group)", _unequal),                  # unequal group sizes
    ("y ~ x + sex + z + (x | group)", _with_factor),    # a factor and another covariate
    ("y ~ z + sex + (1 | group)", _with_factor),
    ("y ~ x + (x || group)", _sim),                     # two blocks of one group
    ("y ~ x + (0 + x | group)", _sim),                  # a slope without an intercept
    ("mAch ~ cses + sector + cses:sector + (cses | school)",   # a cross-level interaction
     lambda: ml.datasets.load("hsb")),
    ("Reaction ~ Days + (Days | Subject)", lambda: ml.datasets.load("sleepstudy")),
    ("mAch ~ cses + (1 + cses | school)", lambda: ml.datasets.load("hsb")),
]


def _close(a, b, tol=1e-12):
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    assert a.shape == b.shape
    np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
    ok = ~np.isnan(a)
    assert np.all(np.abs(a[ok] - b[ok]) <= tol * (1.0 + np.abs(b[ok]))), np.max(np.abs(a[ok] - b[ok]))


@pytest.mark.parametrize("formula,make", FAST, ids=[f"{f} [{m.__name__}]" for f, m in FAST])
def test_fast_arrays_equal_pooling(formula, make):
    d = make()
    fit = _fit(formula, d)
    fast = pooling_arrays(fit, d)
    assert fast is not None, "the fast path should apply to this design"
    p = ml.pooling(formula, d, fit=fit)
    ref = arrays_from_pooling(p)
    assert fast.levels == ref.levels and fast.coef_names == ref.coef_names
    assert (fast.n == ref.n).all() and fast.x_name == ref.x_name and fast.common_slope == ref.common_slope
    for k in KINDS:
        _close(fast.coef[k], ref.coef[k])
        _close(fast.line_a[k], ref.line_a[k])
        _close(fast.line_b[k], ref.line_b[k])
        _close(fast.offset[k], ref.offset[k])
    _close(fast.weight, ref.weight)
    # the table itself, column by column
    for c, cn in enumerate(p.coef_names):
        for k in KINDS:
            _close(fast.coef[k][:, c], p.table[f"{cn}_{k}"])
        _close(fast.weight[:, c], p.table[f"{cn}_weight"])

    # the payloads at full precision equal the general plot data
    pd_ = pooling_data(p, groups=5)
    pay = pooling_payload(fast, groups=5, digits=None)
    assert pay["meta"] == {k: pd_.meta[k] for k in pay["meta"]}
    assert pay["frames"]["groups"] == {c: pd_["groups"][c].tolist() for c in ("group", "n")}
    pts = pd_["points"]
    assert pay["frames"]["points"]["group"] == pts["group"].tolist()
    _close([np.nan if v is None else v for v in pay["frames"]["points"]["x"]], pts["x"])
    _close(pay["frames"]["points"]["y"], pts["y"])
    lines = pd_["lines"]
    ends = lines.groupby(["group", "pooling"], sort=False).nth([0, -1])  # a line's two ends
    assert pay["frames"]["lines"]["group"] == ends["group"].tolist()
    assert pay["frames"]["lines"]["pooling"] == ends["pooling"].tolist()
    _close(pay["frames"]["lines"]["x"], ends["x"])
    _close(pay["frames"]["lines"]["y"], ends["y"])
    for cn in p.coef_names:
        sd = shrinkage_data(p, cn)
        sp = shrinkage_payload(fast, cn, digits=None)
        g = sd["groups"]
        assert sp["frames"]["groups"]["group"] == g["group"].tolist()
        assert sp["frames"]["groups"]["n"] == g["n"].tolist()
        assert sp["frames"]["groups"]["estimable"] == g["estimable"].tolist()
        for col in ("no_pooling", "partial_pooling", "weight"):
            _close(sp["frames"]["groups"][col], g[col])
        assert sp["meta"]["complete_pooling"] == pytest.approx(sd.meta["complete_pooling"], rel=1e-12)


@pytest.mark.parametrize("formula,make", FAST[:3] + FAST[7:], ids=[f for f, _ in FAST[:3] + FAST[7:]])
def test_caterpillar_payload_equals_caterpillar_data(formula, make):
    fit = _fit(formula, make())
    ref = caterpillar_data(fit)
    iv = ref["intervals"]
    got = caterpillar_payload(fit, digits=None)
    assert got["meta"] == ref.meta
    fr = got["frames"]["intervals"]
    assert fr["term"] == iv["term"].tolist() and fr["grp"] == iv["grp"].tolist()
    assert fr["rank"] == iv["rank"].tolist()
    for col in ("condval", "lower", "upper"):
        _close(fr[col], iv[col])


@pytest.mark.parametrize("formula", ["mAch ~ sector + (1 + sector | school)",      # a factor slope
                                     # a level-1 interaction: coded anew in the no-pooling fit
                                     "mAch ~ cses + sx + cses:sx + (cses | school)"])
def test_designs_off_the_fast_path_use_pooling(formula):
    from multilevel.app.explore.state import model_state

    d = ml.datasets.load("hsb")
    fit = _fit(formula, d)
    assert pooling_arrays(fit, d) is None
    s = model_state(d, formula)
    ref = shrinkage_data(ml.pooling(formula, d, fit=fit), "(Intercept)")["groups"]
    got = s["shrinkage"]["(Intercept)"]["frames"]["groups"]
    np.testing.assert_allclose(got["partial_pooling"], ref["partial_pooling"], rtol=5e-6)
    np.testing.assert_allclose(got["no_pooling"], ref["no_pooling"], rtol=5e-6)


def test_weights_and_ml_fits_are_not_taken_by_the_fast_path():
    d = _sim()
    assert pooling_arrays(_fit("y ~ x + (x | group)", d, reml=False), d) is None
    w = np.linspace(0.5, 2.0, len(d))
    assert pooling_arrays(_fit("y ~ x + (x | group)", d, weights=w), d) is None


def test_rounding_and_strict_json():
    assert rounded([1.23456789e-7, -98765.4321, np.inf, -0.0], 3) == [1.23e-7, -98800.0, None, -0.0]
    assert rounded([2.0 / 3.0], None) == [2.0 / 3.0]
    assert rounded([5e-320, 123456789.0], 3) == [5e-320, 123000000.0]  # no overflow to NaN
    d = _sim()
    fit = _fit("y ~ x + (x | group)", d)
    pay = pooling_payload(pooling_arrays(fit, d))
    json.dumps(pay, allow_nan=False)
    # rounded to 6 significant digits: short numbers in the JSON text
    numbers = [v for fr in pay["frames"].values() for col in fr.values() for v in col
               if isinstance(v, float)]
    assert numbers and max(len(repr(v)) for v in numbers) <= 13


def test_the_payload_is_lighter():
    from multilevel.app.explore.state import model_state

    s = model_state(_sim(), "y ~ x + (1 + x | group)")
    size = len(json.dumps(s, allow_nan=False))
    assert size < 40_000, size  # 88 kB with the general plot data
