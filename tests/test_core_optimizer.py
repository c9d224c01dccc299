"""The optimiser inside the core (issue 13): projected BFGS on the analytic gradient of the
profiled deviance reaches the optimum NLopt's BOBYQA (+ Newton polish) reaches, or a better
one, on every LMM reference case; its gradient is the derivative of the criterion; NLopt
stays selectable; the fit log and the checks work on the new path."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

import multilevel as ml
from conftest import contrasts_kw, fit_reference_case, lmm_case_ids, load_case, load_case_frame
from multilevel.datasets import load

SLEEP = "Reaction ~ Days + (Days | Subject)"


def _fit_bobyqa(case_id: str, optimizer: str = "bobyqa"):
    case = load_case(case_id)
    kw = {"weights": case["weights"]} if case.get("weights") else {}
    kw.update(contrasts_kw(case))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ml.MultilevelWarning)
        return ml.lmer(case["formula"], data=load_case_frame(case), reml=bool(case["REML"]),
                       control={"optimizer": optimizer}, **kw)


@pytest.mark.parametrize("case_id", lmm_case_ids())
def test_in_core_optimum_is_never_below_nlopts(case_id):
    core = _fit_bobyqa(case_id, "bfgs")
    nlopt = _fit_bobyqa(case_id)
    assert core.optinfo["optimizer"] == "bfgs" and nlopt.optinfo["optimizer"] == "bobyqa"
    tol = 1e-8 * abs(nlopt.loglik)
    assert core.loglik >= nlopt.loglik - tol, (core.loglik, nlopt.loglik)
    # the same optimum, not just as good a value: the estimates agree too
    np.testing.assert_allclose(core.fixef.to_numpy(), nlopt.fixef.to_numpy(),
                               rtol=1e-4, atol=1e-4 * float(nlopt.se.max()))
    assert core.is_singular == nlopt.is_singular
    assert core.converged or not nlopt.converged


@pytest.mark.parametrize("reml", [True, False])
@pytest.mark.parametrize("formula", [SLEEP, "Reaction ~ Days + (1 | Subject) + (0 + Days | Subject)"])
def test_gradient_is_the_derivative_of_the_criterion(formula, reml):
    fit = ml.lmer(formula, load("sleepstudy"), reml=reml)
    core = fit._problem.core
    rng = np.random.default_rng(1)
    for _ in range(3):
        th = np.abs(fit.theta.to_numpy()) * rng.uniform(0.5, 1.5, fit.theta.size) + 0.05
        f, g = core.objective_gradient(th, reml)
        assert f == pytest.approx(core.objective(th, reml), rel=1e-13)
        for i in range(th.size):
            h = 1e-5
            e = np.zeros_like(th)
            e[i] = h
            fd = (core.objective(th + e, reml) - core.objective(th - e, reml)) / (2 * h)
            assert g[i] == pytest.approx(fd, rel=1e-5, abs=1e-6)


def test_nlopt_is_selectable_and_reaches_the_same_fit():
    sleep = load("sleepstudy")
    a = ml.lmer(SLEEP, sleep)
    b = ml.lmer(SLEEP, sleep, control={"optimizer": "bobyqa"})
    assert a.optinfo["optimizer"] == "bfgs" and b.optinfo["optimizer"] == "bobyqa"
    assert a.loglik >= b.loglik - 1e-8 * abs(b.loglik)
    np.testing.assert_allclose(a.theta, b.theta, rtol=1e-4)
    # the in-core optimiser needs fewer evaluations, and logs every one
    assert a.optinfo["feval"] < b.optinfo["feval"]
    assert len(a.optinfo["fit_log"]) == a.optinfo["feval"]
    assert min(v for _, v in a.optinfo["fit_log"]) == pytest.approx(a.reml_criterion, abs=1e-8)
    assert a.optinfo["decrement"] < 1e-8
    with pytest.raises(ml.errors.ControlError, match="optimizer"):
        ml.lmer(SLEEP, sleep, control={"optimizer": "nelder-mead"})


def test_structured_covariances_fall_back_to_bobyqa():
    sleep = load("sleepstudy")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ml.MultilevelWarning)
        fit = ml.lmer("Reaction ~ Days + diag(Days | Subject) + ar1(0 + factor(Days) | Subject)",
                      sleep)
    assert fit.optinfo["optimizer"] == "bobyqa"  # ar1(): parameters that are not entries of Λ
    # diag(): Λ's entries, in the core
    assert ml.lmer("Reaction ~ Days + diag(Days | Subject)", sleep).optinfo["optimizer"] == "bfgs"


def test_singular_fit_is_exactly_on_the_boundary_in_core():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ml.MultilevelWarning)
        fit = ml.lmer("Yield ~ 1 + (1 | Batch)", load("dyestuff2"))
    assert fit.optinfo["optimizer"] == "bfgs"
    assert fit.theta.iloc[0] == 0.0 and fit.is_singular


def test_auto_runs_in_the_core_up_to_1000_random_effects():
    # q = 36 (sleepstudy): the in-core optimiser; q = 2541 (Chem97, crossed): BOBYQA, where a
    # gradient costs more than the evaluations it saves; "bfgs" forces the core
    assert ml.lmer(SLEEP, load("sleepstudy")).optinfo["optimizer"] == "bfgs"
    chem = load("Chem97")
    f = "score ~ gcsecnt + (1 | school) + (1 | lea)"
    auto = ml.lmer(f, chem)
    forced = ml.lmer(f, chem, control={"optimizer": "bfgs"})
    assert auto.optinfo["optimizer"] == "bobyqa" and forced.optinfo["optimizer"] == "bfgs"
    assert forced.loglik >= auto.loglik - 1e-8 * abs(auto.loglik)
