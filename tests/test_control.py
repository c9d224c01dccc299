"""Control settings: validated objects, bad values named, one singular tolerance for the
warning and ``fit.is_singular``, and the actions of the checks."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

import multilevel as ml
from multilevel.control import GlmerControl, LmerControl
from multilevel.datasets import load
from multilevel.errors import ControlError, SingularFitWarning

SLEEP = "Reaction ~ Days + (Days | Subject)"
CBPP = "cbind(incidence, size - incidence) ~ period + (1 | herd)"


def _fit(fun, formula, data, **kw):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit = fun(formula, data, **kw)
    return fit, [w for w in caught if issubclass(w.category, ml.MultilevelWarning)]


@pytest.mark.parametrize("fun, control, argument", [
    ("lmer", {"maxeval": "a"}, "maxeval"),
    ("lmer", {"maxeval": 0}, "maxeval"),
    ("lmer", {"maxeval": 2.5}, "maxeval"),
    ("lmer", {"ftol_abs": -1.0}, "ftol_abs"),
    ("lmer", {"xtol_abs": float("nan")}, "xtol_abs"),
    ("lmer", {"check_conv": "maybe"}, "check_conv"),
    ("lmer", {"check_singular": "stop!"}, "check_singular"),
    ("lmer", {"singular_tol": "big"}, "singular_tol"),
    ("lmer", {"initial_step": [0.1, -1.0, 0.1]}, "initial_step"),
    ("lmer", {"initial_step": [0.1, 0.1]}, "initial_step"),  # 3 parameters
    ("lmer", {"maxiter": 3}, "maxiter"),
    ("lmer", {"pirls_tol": 1e-8}, "pirls_tol"),  # a glmer setting
    ("glmer", {"pirls_maxit": -1}, "pirls_maxit"),
    ("glmer", {"optimizer": "lbfgs"}, "optimizer"),
    ("glmer", {"calc_derivs": "yes"}, "calc_derivs"),
    ("glmer", {"newton_tol": 0}, "newton_tol"),
    ("glmer", {"tolPwrss": 1}, "tolPwrss"),
])
def test_bad_control_values_name_the_setting(fun, control, argument):
    data = load("sleepstudy") if fun == "lmer" else load("cbpp")
    formula = SLEEP if fun == "lmer" else CBPP
    with pytest.raises(ControlError, match=f"'?{argument}'?") as info:
        getattr(ml, fun)(formula, data, control=control)
    assert info.value.argument == argument
    assert isinstance(info.value, ml.MultilevelError) and isinstance(info.value, ValueError)


def test_control_must_be_a_dict_or_object():
    with pytest.raises(ControlError, match="control must be a dict"):
        ml.lmer(SLEEP, load("sleepstudy"), control=[("maxeval", 10)])


@pytest.mark.parametrize("reml", ["no", 1, None])
def test_reml_must_be_a_bool(reml):
    with pytest.raises(ml.ModelSpecError, match="reml"):
        ml.lmer(SLEEP, load("sleepstudy"), reml=reml)


def test_numpy_bool_reml_accepted():
    fit = ml.lmer(SLEEP, load("sleepstudy"), reml=np.False_)
    assert fit.reml is False


def test_control_object_and_dict_are_the_same_fit():
    sleep = load("sleepstudy")
    a = ml.lmer(SLEEP, sleep, control={"ftol_abs": 1e-10})
    b = ml.lmer(SLEEP, sleep, control=LmerControl(ftol_abs=1e-10))
    assert a.loglik == b.loglik
    c = ml.glmer(CBPP, load("cbpp"), control=GlmerControl(optimizer="bobyqa"))
    d = ml.glmer(CBPP, load("cbpp"), control={"optimizer": "bobyqa"})
    assert c.loglik == d.loglik and c.optinfo["optimizer"] == "bobyqa"


def test_check_conv_bools_are_actions():
    assert LmerControl(check_conv=False).check_conv == "ignore"
    assert LmerControl(check_conv=True).check_conv == "warning"
    # check_conv=False skips the check and its evaluations, as before
    fit = ml.lmer(SLEEP, load("sleepstudy"), control={"check_conv": False})
    assert fit.optinfo["feval_checks"] == 0


def test_controls_are_immutable_and_validated_on_change():
    ctrl = LmerControl()
    with pytest.raises(AttributeError):
        ctrl.maxeval = 3  # type: ignore[misc]
    with pytest.raises(ControlError, match="maxeval"):
        ctrl.with_(maxeval=-3)


@pytest.mark.parametrize("fun, formula, dataset, tol", [
    ("lmer", SLEEP, "sleepstudy", 0.5),  # Subject.Days ~ 0.23 < 0.5
    ("glmer", CBPP, "cbpp", 0.7),  # herd ~ 0.64 < 0.7
])
def test_singular_tol_warning_iff_is_singular(fun, formula, dataset, tol):
    data = load(dataset)
    fit, caught = _fit(getattr(ml, fun), formula, data)
    assert not fit.is_singular and not any(issubclass(w.category, SingularFitWarning) for w in caught)
    fit, caught = _fit(getattr(ml, fun), formula, data, control={"singular_tol": tol})
    assert fit.singular_tol == tol
    assert fit.is_singular
    assert [w.category for w in caught].count(SingularFitWarning) == 1
    assert [w.code for w in fit.warnings] == ["singular"]


def test_check_singular_error_and_ignore():
    dye = load("dyestuff2")
    with pytest.raises(ml.FitError, match="singular"):
        ml.lmer("Yield ~ 1 + (1 | Batch)", dye, control={"check_singular": "error"})
    fit, caught = _fit(ml.lmer, "Yield ~ 1 + (1 | Batch)", dye, control={"check_singular": "ignore"})
    assert fit.is_singular and caught == [] and fit.warnings == []
    with pytest.raises(ml.FitError, match="singular"):
        ml.glmer(CBPP, load("cbpp"), control={"singular_tol": 0.7, "check_singular": "error"})


def test_check_conv_error_and_rank_ignore():
    sleep = load("sleepstudy")
    with pytest.raises(ml.FitError, match="may not have converged"):
        ml.lmer(SLEEP, sleep, control={"maxeval": 8, "check_conv": "error"})
    df = sleep.assign(Days2=2 * sleep["Days"])
    fit, caught = _fit(ml.lmer, "Reaction ~ Days + Days2 + (1 | Subject)", df,
                       control={"check_rank": "ignore"})
    assert caught == [] and fit.frame.dropped_columns == ["Days2"]
