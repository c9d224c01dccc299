"""Warnings as records: each code is issued once as its own class and kept on
``fit.warnings`` as a ``FitWarning`` (a ``str`` with a ``code``)."""
from __future__ import annotations

import pickle
import warnings

import numpy as np
import pandas as pd
import pytest

import multilevel as ml
from multilevel import errors
from multilevel.datasets import load
from multilevel.errors import FitWarning


def _fit(fun, *args, **kw):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit = fun(*args, **kw)
    return fit, [w for w in caught if issubclass(w.category, ml.MultilevelWarning)]


def _issued_as(fit, caught, code, cls):
    recs = [w for w in fit.warnings if isinstance(w, FitWarning) and w.code == code]
    assert len(recs) == 1, fit.warnings
    hits = [w for w in caught if w.category is cls]
    assert len(hits) == 1 and str(hits[0].message) == recs[0].message
    assert recs[0].category is cls
    return recs[0]


def test_singular_fit():
    fit, caught = _fit(ml.lmer, "Yield ~ 1 + (1 | Batch)", load("dyestuff2"))
    rec = _issued_as(fit, caught, "singular", errors.SingularFitWarning)
    assert "isSingular" not in rec and "see help(multilevel.SingularFitWarning)" in rec  # our doc, not R's help page
    assert fit.is_singular


def test_maxeval_limited_fit():
    fit, caught = _fit(ml.lmer, "Reaction ~ Days + (Days | Subject)", load("sleepstudy"),
                       control={"maxeval": 8})
    _issued_as(fit, caught, "maxeval", errors.MaxevalWarning)
    _issued_as(fit, caught, "not_converged", errors.ConvergenceWarning)
    assert issubclass(errors.MaxevalWarning, errors.ConvergenceWarning)
    assert not fit.converged


def test_rows_with_missing_values():
    sleep = load("sleepstudy").copy()
    sleep.loc[[0, 5], "Reaction"] = np.nan
    fit, caught = _fit(ml.lmer, "Reaction ~ Days + (1 | Subject)", sleep)
    rec = _issued_as(fit, caught, "rows_dropped", errors.RowsDroppedWarning)
    assert rec == "2 rows with missing values dropped"
    assert len(caught) == len(fit.warnings) == 1  # issued once


def test_rank_deficient_fixed_effects():
    sleep = load("sleepstudy")
    fit, caught = _fit(ml.lmer, "Reaction ~ Days + Days2 + (1 | Subject)", sleep.assign(Days2=2 * sleep["Days"]))
    rec = _issued_as(fit, caught, "rank_deficient", errors.RankDeficientWarning)
    assert "rank deficient" in rec and "Days2" in rec


def test_glmer_non_integer_successes_once():
    cbpp = load("cbpp").assign(inc=lambda d: d["incidence"] + 0.5)
    fit, caught = _fit(ml.glmer, "cbind(inc, size - inc) ~ period + (1 | herd)", cbpp)
    _issued_as(fit, caught, "non_integer_successes", errors.NonIntegerResponseWarning)
    assert len(caught) == len(fit.warnings)  # once, not once per layer


def test_anova_reml_mix_has_its_class():
    sleep = load("sleepstudy")
    a = ml.lmer("Reaction ~ Days + (1 | Subject)", sleep)
    b = ml.lmer("Reaction ~ Days + (Days | Subject)", sleep, reml=False)
    with pytest.warns(errors.RemlComparisonWarning):
        ml.anova(a, b, refit=False)


def test_record_is_a_picklable_str():
    rec = FitWarning("rows_dropped", "2 rows with missing values dropped")
    assert isinstance(rec, str) and "missing" in rec and rec == "2 rows with missing values dropped"
    back = pickle.loads(pickle.dumps(rec))
    assert type(back) is FitWarning and back.code == "rows_dropped" and back == rec
    assert pickle.loads(pickle.dumps(errors.singular_warning())).category is errors.SingularFitWarning


def test_records_survive_a_pickled_fit():
    fit, _ = _fit(ml.lmer, "Yield ~ 1 + (1 | Batch)", load("dyestuff2"))
    back = pickle.loads(pickle.dumps(fit.warnings))
    assert [w.code for w in back] == ["singular"]


def test_every_code_has_its_own_class():
    classes = errors.WARNING_CLASSES
    assert {"singular", "not_converged", "rows_dropped", "rank_deficient"} <= set(classes)
    assert len(set(classes.values())) == len(classes)
    assert all(issubclass(c, ml.MultilevelWarning) and c.code == k for k, c in classes.items())
    assert FitWarning("unheard_of", "x").category is ml.MultilevelWarning


def test_design_appends_records():
    from multilevel.design import build_model_frame

    df = pd.DataFrame({"y": [1.0, 2.0, np.nan, 4.0, 5.0, 7.0], "x": [1.0, 2, 3, 4, 5, 6],
                       "g": list("aabbcc")})
    mf = build_model_frame("y ~ x + I(2 * x) + (1 | g)", df)
    assert [w.code for w in mf.warnings] == ["rows_dropped", "rank_deficient"]
