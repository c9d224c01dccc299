"""Bad input through the public entry point: each error is a MultilevelError subclass with a
message that names the problem, and the user's frame is never modified by a fit."""
from __future__ import annotations

import copy
import warnings

import numpy as np
import pandas as pd
import pytest

import multilevel as ml
from multilevel.datasets import load


@pytest.fixture()
def sleep() -> pd.DataFrame:
    return load("sleepstudy")


@pytest.mark.parametrize(
    "formula, kind, message",
    [
        ("Reaction ~ Dayz + (Days | Subject)", ml.ColumnNotFoundError, "'Dayz'.*'Days'"),
        ("Subject ~ Days + (1 | Subject)", ml.DataError, "'Subject'"),
        ("Reaction ~ Days + (1 | one)", ml.ModelSpecError, "'one' has only one level"),
        ("Reaction ~ Days + (1 | row)", ml.ModelSpecError, "must be < number of observations"),
        ("Reaction ~ Days + (Days | pair)", ml.ModelSpecError, "number of random effects"),
        ("Reaction ~ Days + (Days | Subject", ml.FormulaError, r"\^"),
        ("Reaction ~ Days", ml.FormulaError, "no random-effects terms"),
    ],
)
def test_bad_input_errors(sleep, formula, kind, message):
    df = sleep.assign(one="k", row=np.arange(len(sleep)), pair=np.arange(len(sleep)) // 2)
    with pytest.raises(kind, match=message) as info:
        ml.lmer(formula, df)
    assert isinstance(info.value, ml.MultilevelError)


def test_empty_after_dropping_missing_rows(sleep):
    df = sleep.assign(Days=np.nan)
    with pytest.raises(ml.DataError, match="no rows left"):
        ml.lmer("Reaction ~ Days + (1 | Subject)", df)


def test_formula_error_points_at_position(sleep):
    with pytest.raises(ml.FormulaError) as info:
        ml.lmer("Reaction ~ Days + (Days || Subject))", sleep)
    assert info.value.position is not None
    assert "^" in str(info.value)


def test_frame_unchanged_by_fit(sleep):
    df = sleep.copy()
    df.loc[3, "Reaction"] = np.nan
    before = copy.deepcopy(df)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = ml.lmer("Reaction ~ Days + (Days | Subject)", df, weights=np.ones(len(df)))
    pd.testing.assert_frame_equal(df, before)
    assert fit.nobs == len(df) - 1
    assert any("missing" in w for w in fit.warnings)


def test_warnings_on_result_and_summary():
    dy2 = load("dyestuff2")
    with pytest.warns(ml.MultilevelWarning, match="singular"):
        fit = ml.lmer("Yield ~ 1 + (1 | Batch)", dy2)
    assert fit.is_singular
    assert any("singular" in w for w in fit.warnings)
    assert "boundary (singular) fit" in str(fit.summary())


def test_too_large_dense_block_is_a_clear_error():
    # 13,000 levels of a, each meeting 12 of b's 12,500 at random: the b effects are linked
    # so densely that a sparse factor fills in as much as a dense block of 12,502 rows
    rng = np.random.default_rng(1)
    n = 156_000
    rows = np.arange(n)
    df = pd.DataFrame({"y": rng.normal(size=n), "a": rows // 12, "b": rng.integers(0, 12_500, n)})
    with pytest.raises(ml.ModelSpecError, match="too large for the engine.*fills in too much.*dense"):
        ml.lmer("y ~ 1 + (1 | a) + (1 | b)", df)


def test_many_upper_levels_of_a_sparse_design_are_fitted():
    # 12,500 levels of b after term 0 (beyond a dense block's limit), but each level of a
    # meets two neighbouring levels of b: the sparse rest block factors without fill
    n = 26_000
    rows = np.arange(n)
    df = pd.DataFrame({"y": np.sin(rows) + (rows % 12_500 // 2 % 7), "a": rows // 2, "b": rows % 12_500})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = ml.lmer("y ~ 1 + (1 | a) + (1 | b)", df)
    assert fit._problem.core.layout == "sparse" and fit._problem.core.rest_size == 12_502
    assert np.isfinite(fit.loglik) and fit.theta.size == 2
