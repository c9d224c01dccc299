"""LmmFit accessors and the JSON export, on fits built by hand (no engine needed).

``_lmm_oracle.oracle_fit`` computes every engine field densely at the theta of a reference
fit; the resulting LmmFit must then reproduce the whole reference result to ~1e-9, which
checks the derived quantities (variance components, conditional SDs, information criteria,
coef, predictions) independently of the real engine.
"""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from _lmm_oracle import (
    HandFrame,
    cbpp_weighted_frame,
    dyestuff_frame,
    oracle_fit,
    pastes_frame,
    sleepstudy_frame,
)
from conftest import as_array, load_case, newdata_frame, rel_diff
from multilevel.datasets import load
from multilevel.design import ReTerm
from multilevel.errors import DataError, MultilevelError
from multilevel.results.lmm import LmmFit, RandomEffects, VarCorr
from multilevel.covariance import lambda_blocks, theta_names


def _frame_for(case_id: str):
    if case_id.startswith("sleepstudy_dblbar"):
        return sleepstudy_frame(load("sleepstudy"), "dblbar")
    if case_id.startswith("sleepstudy_intercept"):
        return sleepstudy_frame(load("sleepstudy"), "intercept")
    if case_id.startswith("sleepstudy_slope"):
        return sleepstudy_frame(load("sleepstudy"), "slope")
    if case_id == "dyestuff2_singular_reml":
        return dyestuff_frame(load("dyestuff2"))
    if case_id.startswith("dyestuff_"):
        return dyestuff_frame(load("dyestuff"))
    if case_id == "pastes_nested_reml":
        levels = load_case(case_id)["results"]["ranef"]["cask:batch"]["(Intercept)"]["levels"]
        return pastes_frame(load("pastes"), levels)
    if case_id == "cbpp_weighted_lmm_reml":
        return cbpp_weighted_frame(load("cbpp"))
    raise KeyError(case_id)


HAND_CASES = ["sleepstudy_slope_reml", "sleepstudy_slope_ml", "sleepstudy_intercept_reml",
              "sleepstudy_dblbar_reml", "dyestuff_reml", "dyestuff_ml", "dyestuff2_singular_reml",
              "pastes_nested_reml", "cbpp_weighted_lmm_reml"]


def hand_fit(case_id: str, **kw) -> LmmFit:
    case = load_case(case_id)
    return oracle_fit(_frame_for(case_id), list(case["results"]["theta"].values()), case["REML"],
                      weights_name=case.get("weights"), **kw)


def _assert_close(got, want, tol, label):
    if isinstance(want, dict):
        assert set(got) == set(want), label
        for k in want:
            _assert_close(got[k], want[k], tol, f"{label}.{k}")
    elif isinstance(want, list):
        assert len(got) == len(want), label
        for i, (g, w) in enumerate(zip(got, want)):
            _assert_close(g, w, tol, f"{label}[{i}]")
    elif isinstance(want, float) or (isinstance(want, int) and not isinstance(want, bool) and isinstance(got, float)):
        assert got is not None and abs(got - want) <= tol * max(1.0, abs(want)), f"{label}: {got!r} vs {want!r}"
    else:
        assert got == want, f"{label}: {got!r} vs {want!r}"


@pytest.mark.parametrize("case_id", HAND_CASES)
def test_hand_built_fit_reproduces_reference(case_id):
    """At lme4's theta, every exported number equals lme4's."""
    case = load_case(case_id)
    d = hand_fit(case_id).to_dict()
    ref = case["results"]
    assert d["fixef_names"] == case["fixef_names"]
    assert d["re_structure"] == case["re_structure"]
    res = d["results"]
    for key in ("fixef", "fixef_se", "vcov_fixef", "theta", "sigma", "varcorr", "logLik", "logLik_df", "AIC",
                "BIC", "minus2logLik", "deviance", "df_resid", "nobs", "ngrps", "isSingular", "fitted_first20",
                "wald_ci_95"):
        _assert_close(res[key], ref[key], 1e-8, key)
    if case["REML"]:
        _assert_close(res["REMLcrit"], ref["REMLcrit"], 1e-10, "REMLcrit")
    else:
        assert "REMLcrit" not in res
    # conditional modes: compare on the scale of each term's SD
    for g, terms in ref["ranef"].items():
        for t, r in terms.items():
            assert res["ranef"][g][t]["levels"] == r["levels"]
            sd = max(abs(v) for v in r["condval"]) or 1.0
            assert np.allclose(res["ranef"][g][t]["condval"], r["condval"], atol=1e-9 * sd, rtol=0)
            assert np.allclose(res["ranef"][g][t]["condsd"], r["condsd"], atol=1e-9 * sd, rtol=1e-9)


@pytest.mark.parametrize("case_id", HAND_CASES)
def test_hand_built_predictions(case_id):
    case = load_case(case_id)
    fit = hand_fit(case_id)
    df = {"sleepstudy": load("sleepstudy"), "Dyestuff": load("dyestuff"), "Dyestuff2": load("dyestuff2"),
          "Pastes": load("pastes"), "cbpp": load("cbpp")}[case["dataset_name"]]
    nd = newdata_frame(case, df)
    ref = case["results"]
    got = fit.predict(nd, allow_new_levels=True)
    assert np.allclose(got.to_numpy(), ref["predict_allow_new_levels"], rtol=1e-10, atol=1e-10)
    assert list(got.index) == list(nd.index)
    got0 = fit.predict(nd, re_form="~0")
    assert np.allclose(got0.to_numpy(), ref["predict_re_form_NA"], rtol=1e-10, atol=1e-10)
    assert np.allclose(fit.predict(nd, re_form="NA").to_numpy(), got0.to_numpy())
    if any("NEW_LEVEL" in map(str, row.values()) for row in ref["newdata"]):
        with pytest.raises((MultilevelError, ValueError)):
            fit.predict(nd)


def test_accessors_sleepstudy():
    case = load_case("sleepstudy_slope_reml")
    ref = case["results"]
    fit = hand_fit("sleepstudy_slope_reml")
    assert list(fit.fixef.index) == ["(Intercept)", "Days"]
    assert isinstance(fit.vcov, pd.DataFrame) and list(fit.vcov.columns) == ["(Intercept)", "Days"]
    assert np.allclose(fit.vcov.to_numpy(), fit.vcov.to_numpy().T)
    assert np.allclose(fit.se.to_numpy(), np.sqrt(np.diag(fit.vcov.to_numpy())))
    assert list(fit.theta.index) == ["Subject.(Intercept)", "Subject.Days.(Intercept)", "Subject.Days"]
    assert fit.npar == 6 and fit.df_resid == 174 and fit.nobs == 180
    assert fit.ngroups == {"Subject": 18}
    assert math.isclose(fit.aic, -2 * fit.loglik + 12)
    assert math.isclose(fit.bic, -2 * fit.loglik + math.log(180) * 6)
    # REML fit: deviance is the ML deviance at the REML estimates, not -2 REML logLik
    assert math.isclose(fit.deviance, ref["deviance"], rel_tol=1e-10)
    assert not math.isclose(fit.deviance, -2 * fit.loglik, rel_tol=1e-6)
    assert math.isclose(fit.reml_criterion, -2 * fit.loglik)
    assert fit.converged and fit.warnings == [] and not fit.is_singular
    assert fit.formula == "Reaction ~ Days + (Days | Subject)"
    L = fit.lambdas[0]
    assert np.allclose(fit.varcorr[0].cov, fit.sigma**2 * L @ L.T)
    assert isinstance(fit.varcorr, VarCorr) and fit.varcorr["Subject"].terms == ["(Intercept)", "Days"]
    assert math.isclose(fit.varcorr["Subject"].corr[1, 0], ref["varcorr"][0]["corr"][1][0], rel_tol=1e-9)
    vf = fit.varcorr.to_frame()
    assert list(vf["grp"]) == ["Subject", "Subject", "Subject", "Residual"]
    assert math.isclose(vf["sdcor"].iloc[-1], fit.sigma)


def test_ml_fit_deviance_is_minus_two_loglik():
    fit = hand_fit("sleepstudy_slope_ml")
    assert math.isclose(fit.deviance, -2 * fit.loglik) and fit.reml_criterion is None and not fit.reml


def test_singular_fit_flags():
    fit = hand_fit("dyestuff2_singular_reml")
    assert fit.is_singular
    assert "boundary (singular) fit: a variance is estimated as 0 or a correlation as ±1; see help(multilevel.SingularFitWarning)" in fit.warnings
    assert np.all(fit.ranef()["Batch"].to_numpy() == 0)
    # a near-zero diagonal below lme4's tolerance 1e-4 is singular too, even with a large off-diagonal
    early = load_case("early_singular_slope_reml")["results"]
    assert early["isSingular"] and 0 < early["theta"]["id.age"] < 1e-4


def test_ranef_merges_blocks_of_one_group_and_is_lazy():
    # the conditional variances of an lmer fit come lazily from its engine problem (a hand
    # fit is given them as arrays): count the engine calls
    import warnings as _w

    import multilevel as ml

    calls = []
    with _w.catch_warnings():
        _w.simplefilter("ignore")
        fit = ml.lmer("Reaction ~ Days + (1 | Subject) + (0 + Days | Subject)", load("sleepstudy"))
    inner = fit._problem.condvar
    fit._problem.condvar = lambda theta, sigma: calls.append(1) or inner(theta, sigma)
    re0 = fit.ranef(condvar=False)
    assert calls == [] and re0.condsd is None and re0.condvar is None
    re = fit.ranef()
    assert isinstance(re, RandomEffects) and list(re) == ["Subject"]
    assert list(re["Subject"].columns) == ["(Intercept)", "Days"]
    assert re.condsd["Subject"].shape == (18, 2)
    assert [v.shape for v in re.condvar["Subject"]] == [(18, 1, 1), (18, 1, 1)]
    fit.ranef()
    assert calls == [1]  # computed once, then cached
    long = re.to_frame()
    assert list(long.columns) == ["grpvar", "term", "grp", "condval", "condsd"] and len(long) == 36
    assert [b.block_name for b in fit.varcorr] == ["Subject", "Subject.1"]


def test_coef_adds_fixef_and_handles_terms_missing_from_fixef():
    fit = hand_fit("sleepstudy_slope_reml")
    cf = fit.coef()["Subject"]
    re = fit.ranef(condvar=False)["Subject"]
    assert np.allclose(cf["Days"], fit.fixef["Days"] + re["Days"])
    assert np.allclose(cf["(Intercept)"], fit.fixef["(Intercept)"] + re["(Intercept)"])
    # random slope without a fixed slope: lme4 puts the missing column first, fixed part 0
    df = load("sleepstudy")
    base = sleepstudy_frame(df, "slope")
    frame = HandFrame("Reaction ~ 1 + (Days | Subject)", "Reaction", base.y, base.X[:, :1], ["(Intercept)"],
                      base.reterms, rows=base.rows)
    f2 = oracle_fit(frame, [1.0, 0.1, 0.3], reml=True)
    c2 = f2.coef()["Subject"]
    assert list(c2.columns) == ["Days", "(Intercept)"]
    assert np.allclose(c2["Days"], f2.ranef(condvar=False)["Subject"]["Days"])
    # cbpp: columns without random effects are constant
    c3 = hand_fit("cbpp_weighted_lmm_reml").coef()["herd"]
    assert (c3["period2"].nunique(), c3["(Intercept)"].nunique()) == (1, 15)


def test_fitted_residuals_predict_without_newdata():
    fit = hand_fit("cbpp_weighted_lmm_reml")
    fr = fit.frame
    r = fit.residuals()
    assert np.allclose(r.to_numpy(), fr.y - fit.fitted().to_numpy())
    assert np.allclose(fit.residuals("pearson").to_numpy(), np.sqrt(fr.weights) * r.to_numpy())
    assert np.allclose(fit.residuals("pearson", scaled=True).to_numpy() * fit.sigma,
                       fit.residuals("pearson").to_numpy())
    assert np.allclose(fit.predict().to_numpy(), fit.fitted().to_numpy())
    assert np.allclose(fit.predict(re_form="~0").to_numpy(), fr.X @ fit.fixef.to_numpy())
    with pytest.raises(ValueError):
        fit.residuals("deviance")
    with pytest.raises(DataError):
        fit.predict(re_form="~(1 | herd)")


def test_to_dict_is_json_and_uses_none_for_undefined_correlations():
    # intercept SD exactly 0 in a 2x2 block: the correlation is undefined (NA in lme4)
    fit = oracle_fit(sleepstudy_frame(load("sleepstudy")), [0.0, 0.2, 0.3], reml=True)
    d = fit.to_dict()
    text = json.dumps(d, allow_nan=False)
    assert json.loads(text) == d
    corr = d["results"]["varcorr"][0]["corr"]
    assert corr[0][0] == 1 and corr[1][1] == 1 and corr[0][1] is None and corr[1][0] is None
    assert d["results"]["isSingular"] is True
    assert d["family"] == "gaussian" and d["link"] == "identity"
    assert d["results"]["convergence"]["optimizer"] == "bobyqa"
    assert len(d["results"]["fitted_first20"]) == 20
    lo, hi = d["results"]["wald_ci_95"]["Days"]
    assert math.isclose((hi - lo) / 2, 1.959963984540054 * fit.se["Days"])


def test_theta_helpers():
    assert theta_names(["g", "h"], [["(Intercept)", "x", "z"], ["(Intercept)"]]) == [
        "g.(Intercept)", "g.x.(Intercept)", "g.z.(Intercept)", "g.x", "g.z.x", "g.z", "h.(Intercept)"]
    L3, L1 = lambda_blocks(np.arange(1.0, 8.0), [3, 1])
    assert L3.tolist() == [[1, 0, 0], [2, 4, 0], [3, 5, 6]] and L1.tolist() == [[7]]
    with pytest.raises(ValueError):
        lambda_blocks(np.ones(4), [2])


def test_ngroups_keeps_lme4_order_for_interaction_groups():
    fit = hand_fit("pastes_nested_reml")
    assert fit.ngroups == {"cask:batch": 30, "batch": 10}
    assert list(fit.ranef()) == ["cask:batch", "batch"]
    assert isinstance(fit.frame.reterms[0], ReTerm)


def test_reference_tolerance_helper():
    assert rel_diff(1.0, 1.0) == 0 and rel_diff(1.0, 0.0) == 1.0
    assert as_array([1, 2]).dtype == float


def test_first_use_loader_runs_once_when_threads_race():
    """Two threads calling a fit method for the first time at once (the explorer's server
    fits in a thread pool): the loader runs once and both find the name."""
    import threading
    import time

    from multilevel.results import methods

    calls = []

    def slow_loader():
        calls.append(1)
        time.sleep(0.05)  # long enough for the second thread to arrive meanwhile
        methods.provide(_race_test=lambda: "ok")

    methods.provide_loader(slow_loader)
    errors, got = [], []

    def use():
        try:
            got.append(methods._impl("_race_test")())
        except Exception as e:  # noqa: BLE001 -- collected for the assertion
            errors.append(e)

    threads = [threading.Thread(target=use) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    methods._IMPL.pop("_race_test", None)
    assert errors == [] and got == ["ok"] * 4 and calls == [1]
