"""Confidence intervals: profile (lme4's confint(profile(fit))) for every reference case that
carries profile_ci_95, Wald, bootstrap percentiles; prediction intervals."""
from __future__ import annotations


import numpy as np
import pytest

from _inference_helpers import fit_case
from conftest import load_case, newdata_frame, load_case_frame, reference_index

from multilevel.errors import ModelSpecError
from multilevel.inference import confint, predict_interval, profile

PROFILE = [c["id"] for c in reference_index() if c["type"] == "fit"
           and load_case(c["id"])["results"].get("profile_ci_95")]


def test_profile_cases_are_parametrized():
    assert len(PROFILE) == 7  # 6 LMMs and the cbpp GLMM


@pytest.mark.parametrize("case_id", PROFILE)
def test_profile_intervals_match_lme4(case_id):
    ref = load_case(case_id)["results"]["profile_ci_95"]
    ci = confint(fit_case(case_id), method="profile")
    assert list(ci.columns) == ["2.5 %", "97.5 %"]
    assert list(ci.index) == list(ref)  # lme4's names and order
    bad = []
    for name, ends in ref.items():
        for got, want in zip(ci.loc[name], ends):
            scale = abs(want) if want != 0 else 1.0
            if abs(got - want) > 1e-3 * scale:
                bad.append(f"{name}: {got!r} vs {want!r}")
    assert bad == []


def test_profile_level_and_which():
    fit = fit_case("sleepstudy_slope_reml")
    pr = profile(fit, level=0.8, which=["Days", "sigma"])
    assert list(pr.intervals.index) == ["sigma", "Days"]
    assert list(pr.intervals.columns) == ["10 %", "90 %"]
    full = confint(fit, method="profile")
    lo80, hi80 = pr.intervals.loc["Days"]
    lo95, hi95 = full.loc["Days"]
    assert lo95 < lo80 < pr.estimates["Days"] < hi80 < hi95


def test_wald_intervals():
    for cid in ("sleepstudy_slope_reml", "pastes_nested_reml", "cbpp_binomial_laplace"):
        case = load_case(cid)
        ci = confint(fit_case(cid), method="wald")
        for name, (lo, hi) in case["results"]["wald_ci_95"].items():
            se = case["results"]["fixef_se"][name]
            assert abs(ci.loc[name, "2.5 %"] - lo) < 2e-3 * se
            assert abs(ci.loc[name, "97.5 %"] - hi) < 2e-3 * se
        # variance parameters are NA, as in lme4
        assert ci.iloc[: len(ci) - len(case["results"]["fixef"])].isna().all().all()


def test_bootstrap_intervals_are_close_to_profile():
    fit = fit_case("sleepstudy_slope_ml")
    boot = confint(fit, method="bootstrap", n=300, seed=11, progress=False)
    prof = confint(fit, method="profile")
    assert list(boot.index) == list(prof.index)
    for name in ("(Intercept)", "Days", "sigma"):
        width = prof.loc[name].diff().iloc[-1]
        assert np.all(np.abs(boot.loc[name] - prof.loc[name]) < 0.25 * width)


def test_bad_arguments():
    fit = fit_case("dyestuff_reml")
    with pytest.raises(ModelSpecError):
        confint(fit, method="nope")
    with pytest.raises(ModelSpecError):
        confint(fit, level=1.5)


# --- prediction intervals ------------------------------------------------------------------


def _sleep():
    fit = fit_case("sleepstudy_slope_reml")
    case = load_case("sleepstudy_slope_reml")
    nd = newdata_frame(case, load_case_frame(case))
    return fit, nd


def test_predict_interval_point_predictions_are_predict():
    fit, nd = _sleep()
    for re_form in (None, "~0"):
        pi = predict_interval(fit, nd, re_form=re_form)
        pred = fit.predict(nd, re_form=re_form, allow_new_levels=True)
        np.testing.assert_allclose(pi["fit"], pred, rtol=1e-12)


def test_predict_interval_variances():
    fit, nd = _sleep()
    conf = predict_interval(fit, nd, "confidence")
    pred = predict_interval(fit, nd, "prediction")
    assert np.all(pred["se"] > conf["se"])
    X = np.column_stack([np.ones(len(nd)), nd["Days"].to_numpy(float)])
    V = fit.vcov.to_numpy()
    vfix = np.einsum("ij,jk,ik->i", X, V, X)
    new = (nd["Subject"].astype(str) == "NEW_LEVEL").to_numpy()
    # new level, confidence: the population mean, only beta's uncertainty
    np.testing.assert_allclose(conf["se"][new] ** 2, vfix[new], rtol=1e-10)
    # new level, prediction: + z' Sigma_b z + sigma^2
    S = fit.varcorr[0].cov
    vre = np.einsum("ij,jk,ik->i", X, S, X)
    np.testing.assert_allclose(pred["se"][new] ** 2, vfix[new] + vre[new] + fit.sigma**2, rtol=1e-10)
    # known level: + the conditional variance of its random effects
    cv = fit.ranef().condvar["Subject"][0]
    levels = list(fit.frame.reterms[0].levels)
    i = int(np.flatnonzero(~new)[0])
    c = cv[levels.index(str(nd["Subject"].iloc[i]))]
    assert conf["se"].iloc[i] ** 2 == pytest.approx(vfix[i] + X[i] @ c @ X[i], rel=1e-10)
    assert pred["se"].iloc[i] ** 2 == pytest.approx(vfix[i] + X[i] @ c @ X[i] + fit.sigma**2, rel=1e-10)
    z = 1.959963984540054
    np.testing.assert_allclose(pred["upr"] - pred["fit"], z * pred["se"], rtol=1e-10)


def test_predict_interval_population_level():
    fit, nd = _sleep()
    pop = predict_interval(fit, nd, "prediction", re_form="~0")
    X = np.column_stack([np.ones(len(nd)), nd["Days"].to_numpy(float)])
    vfix = np.einsum("ij,jk,ik->i", X, fit.vcov.to_numpy(), X)
    vre = np.einsum("ij,jk,ik->i", X, fit.varcorr[0].cov, X)
    np.testing.assert_allclose(pop["se"] ** 2, vfix + vre + fit.sigma**2, rtol=1e-10)
