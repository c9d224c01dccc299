"""multilevel.glmer against every lme4 GLMM reference case in fixtures/reference.

Acceptance tolerances (issue 3): logLik within 1e-5 relative; fixed effects within 2e-3 of
their SE; SEs and random-effect SDs within 2e-3 relative; conditional modes within 1e-3;
predictions on both scales within 1e-4 relative. The reference fits used tight optimiser
tolerances and tolPwrss = 1e-13 (see the README's "GLMM caveats"); nAGQ > 1 log-likelihoods
leave out the saturated-model term, as lme4 does.
"""
from __future__ import annotations

import functools
import json
import math
import warnings

import numpy as np
import pytest

from conftest import load_case, load_case_frame, newdata_frame, reference_index, rel_diff

# binomial and Poisson cases (no scale); the dispersion and negative binomial cases: test_reference_families.py
GLMM_IDS = [c["id"] for c in reference_index() if c["type"] == "fit" and c["model_type"] == "GLMM"
            and c.get("family") in ("binomial", "poisson")]


def test_there_are_glmm_cases():
    # 7 public cases: binomial (cbind, Bernoulli factor, crossed), Poisson (offset, AGQ)
    assert len(GLMM_IDS) >= 7


@functools.lru_cache(maxsize=None)
def fitted(case_id: str):
    import multilevel

    case = load_case(case_id)
    df = load_case_frame(case)
    kw = {"weights": case["weights"]} if case.get("weights") else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = multilevel.glmer(case["formula"], data=df, family=case["family"], link=case["link"],
                               nagq=int(case["nAGQ"]), **kw)
    return case, df, fit, fit.to_dict()


@pytest.mark.parametrize("case_id", GLMM_IDS)
def test_loglik_and_information_criteria(case_id):
    case, _, fit, d = fitted(case_id)
    ref, res = case["results"], d["results"]
    assert rel_diff(res["logLik"], ref["logLik"]) < 1e-5
    assert res["logLik_df"] == ref["logLik_df"]
    assert res["df_resid"] == ref["df_resid"]
    assert res["nobs"] == ref["nobs"]
    for key in ("AIC", "BIC", "deviance", "minus2logLik"):
        assert rel_diff(res[key], ref[key]) < 1e-5, key
    # lme4's deviance(glmerfit): the conditional deviance, not -2 logLik
    assert rel_diff(res["glmm_deviance_function_value"], ref["glmm_deviance_function_value"]) < 1e-4
    assert fit.deviance == pytest.approx(-2 * fit.loglik)
    assert fit.conditional_deviance == pytest.approx(res["glmm_deviance_function_value"])


@pytest.mark.parametrize("case_id", GLMM_IDS)
def test_fixed_effects_and_standard_errors(case_id):
    case, _, _, d = fitted(case_id)
    ref, res = case["results"], d["results"]
    assert d["fixef_names"] == case["fixef_names"]
    for name, val in ref["fixef"].items():
        se = ref["fixef_se"][name]
        assert abs(res["fixef"][name] - val) / se < 2e-3, name
        assert rel_diff(res["fixef_se"][name], se) < 2e-3, name
    # the covariance conditional on theta (use.hessian = FALSE) is a separate field
    vr = np.array(ref["vcov_fixef_use_hessian_FALSE"]["matrix"], dtype=float)
    vg = np.array(res["vcov_fixef_use_hessian_FALSE"]["matrix"], dtype=float)
    np.testing.assert_allclose(np.sqrt(np.diag(vg)), np.sqrt(np.diag(vr)), rtol=2e-3)
    # full default covariance matrix, relative to the SEs
    v = np.array(res["vcov_fixef"]["matrix"])
    r = np.array(ref["vcov_fixef"]["matrix"])
    s = np.sqrt(np.diag(r))
    assert np.max(np.abs(v - r) / np.outer(s, s)) < 4e-3


@pytest.mark.parametrize("case_id", GLMM_IDS)
def test_variance_components(case_id):
    case, _, fit, d = fitted(case_id)
    ref, res = case["results"], d["results"]
    assert list(res["theta"]) == list(ref["theta"])  # names in lme4's order
    for k, v in ref["theta"].items():
        assert abs(res["theta"][k] - v) <= 2e-3 * max(abs(v), 1e-3), k
    assert [b["block_name"] for b in res["varcorr"]] == [b["block_name"] for b in ref["varcorr"]]
    for got, want in zip(res["varcorr"], ref["varcorr"]):
        for t, sd in want["sd"].items():
            assert rel_diff(got["sd"][t], sd) < 2e-3, (got["group"], t)
    assert res["sigma"] == 1.0
    assert fit.varcorr.sigma is None
    assert res["ngrps"] == ref["ngrps"]
    assert res["isSingular"] == ref["isSingular"]


@pytest.mark.parametrize("case_id", GLMM_IDS)
def test_conditional_modes_and_sds(case_id):
    case, _, _, d = fitted(case_id)
    ref, res = case["results"], d["results"]
    for g, terms in ref["ranef"].items():
        for t, want in terms.items():
            got = res["ranef"][g][t]
            assert got["levels"] == want["levels"]
            np.testing.assert_allclose(got["condval"], want["condval"], atol=1e-3)
            np.testing.assert_allclose(got["condsd"], want["condsd"], rtol=2e-3)


@pytest.mark.parametrize("case_id", GLMM_IDS)
def test_fitted_values_and_linear_predictor(case_id):
    case, _, _, d = fitted(case_id)
    ref, res = case["results"], d["results"]
    np.testing.assert_allclose(res["fitted_first20"], ref["fitted_first20"], rtol=1e-4)
    np.testing.assert_allclose(res["linear_predictor_first20"], ref["linear_predictor_first20"],
                               rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("case_id", GLMM_IDS)
def test_predictions_on_both_scales(case_id):
    case, df, fit, _ = fitted(case_id)
    ref = case["results"]
    nd = newdata_frame(case, df)
    for typ in ("link", "response"):
        # relative 1e-4; on the link scale values near 0 (e.g. 0.04) make a relative
        # comparison meaningless, so there the difference may also be 1e-4 absolute
        atol = 1e-4 if typ == "link" else 0.0
        got = fit.predict(nd, type=typ, allow_new_levels=True).to_numpy()
        np.testing.assert_allclose(got, ref[f"predict_{typ}_allow_new_levels"], rtol=1e-4, atol=atol)
        got = fit.predict(nd, type=typ, re_form="~0").to_numpy()
        np.testing.assert_allclose(got, ref[f"predict_{typ}_re_form_NA"], rtol=1e-4, atol=atol)
    # without allow_new_levels an unseen level is an error
    if any(v == "NEW_LEVEL" for row in ref["newdata"] for v in row.values()):
        import multilevel

        with pytest.raises(multilevel.DataError):
            fit.predict(nd, type="link")


@pytest.mark.parametrize("case_id", [i for i in GLMM_IDS if load_case(i)["nAGQ"] > 1])
def test_agq_saturated_term(case_id):
    case, _, fit, d = fitted(case_id)
    ref, res = case["results"], d["results"]
    assert fit.nagq == case["nAGQ"]
    assert res["saturated_logLik"] == pytest.approx(ref["saturated_logLik"], rel=1e-10, abs=1e-10)
    assert rel_diff(res["logLik_full"], ref["logLik_full"]) < 1e-5
    # the marginal log-likelihood by numerical integration at lme4's estimates
    assert rel_diff(fit.loglik_full, ref["crosscheck_integrate_logLik"]) < 1e-5


@pytest.mark.parametrize("case_id", GLMM_IDS)
def test_to_dict_is_json_and_summary_prints(case_id):
    case, _, fit, d = fitted(case_id)
    json.dumps(d)
    assert d["family"] == case["family"] and d["link"] == case["link"]
    assert d["nAGQ"] == case["nAGQ"] and d["REML"] is None
    assert [b["group"] for b in d["re_structure"]] == [b["group"] for b in case["re_structure"]]
    text = str(fit.summary())
    assert text.startswith("Generalized linear mixed model fit by maximum likelihood")
    assert "[glmerMod]" in text
    assert f" Family: {case['family']}  ( {case['link']} )" in text
    assert "z value" in text and "Pr(>|z|)" in text
    assert "Residual" not in text.split("Random effects:")[1].split("Number of obs")[0]
    quad = "Laplace" if case["nAGQ"] == 1 else f"nAGQ = {case['nAGQ']}"
    assert quad in text
    assert math.isfinite(fit.aic) and fit.converged
