"""The optimiser wrapper: convergence checks that fire when the optimum was not reached and
stay quiet when it was, the fit log, exact singular fits and control settings."""
from __future__ import annotations

import numpy as np
import pytest

import multilevel as ml
from multilevel.datasets import load


def test_stopping_early_is_reported():
    sleep = load("sleepstudy")
    with pytest.warns(ml.MultilevelWarning, match="may not have converged"):
        fit = ml.lmer("Reaction ~ Days + (Days | Subject)", sleep, control={"maxeval": 8})
    assert not fit.converged
    assert any("maxeval" in w for w in fit.warnings)
    assert "may not have converged" in str(fit.summary())


def test_converged_fit_has_no_warning_and_a_log():
    sleep = load("sleepstudy")
    fit = ml.lmer("Reaction ~ Days + (Days | Subject)", sleep)
    assert fit.converged and fit.warnings == []
    log = fit.optinfo["fit_log"]
    assert len(log) == fit.optinfo["feval"]
    # the log ends at (or passes through) the reported optimum
    assert min(v for _, v in log) == pytest.approx(fit.reml_criterion, abs=1e-8)


def test_singular_fit_is_exactly_on_the_boundary():
    with pytest.warns(ml.MultilevelWarning, match="singular"):
        fit = ml.lmer("Yield ~ 1 + (1 | Batch)", load("dyestuff2"))
    assert fit.theta.iloc[0] == 0.0


def test_unknown_control_setting():
    with pytest.raises(ml.ModelSpecError, match="unknown control setting 'maxiter'"):
        ml.lmer("Reaction ~ Days + (1 | Subject)", load("sleepstudy"), control={"maxiter": 3})


def test_same_data_same_numbers():
    sleep = load("sleepstudy")
    a = ml.lmer("Reaction ~ Days + (Days | Subject)", sleep)
    b = ml.lmer("Reaction ~ Days + (Days | Subject)", sleep)
    assert a.loglik == b.loglik
    np.testing.assert_array_equal(a.theta.values, b.theta.values)
