"""Structured covariance terms (``diag()``, ``cs()``, ``ar1()``) against glmmTMB 1.1.5.

The five public cases marked ``"fitted_by": "glmmTMB"`` in fixtures/reference (glmmTMB fitted
them; lme4 1.1-31 has no structured terms; see the README's "fitted_by: glmmTMB cases").
Tolerances as for the lme4 cases: logLik 1e-6 relative; fixed effects 1e-3 x SE; SEs 1e-3
relative against glmmTMB's or lme4's conditional definition (the README: they differ by up to
1 %, and ours is lme4's); SDs and sigma 1e-3 relative; the correlation parameter 1e-3
absolute; conditional modes 1e-3 x the term's SD; predictions 1e-4 x max(|value|, sigma).
"""
from __future__ import annotations

import re
import warnings

import numpy as np
import pytest

import multilevel
from conftest import load_case, load_case_frame, newdata_frame, reference_index, rel_diff

# every glmmTMB case of the public index (structured covariances)
CASES = [c["id"] for c in reference_index() if c.get("fitted_by") == "glmmTMB"]


def test_every_glmmtmb_case_is_here():
    assert sorted(CASES) == sorted(["early_ar1_ml", "early_ar1_reml", "stark_cs_ml",
                                    "sleepstudy_diag_reml", "sleepstudy_diag_ar1_reml"])


_FITS: dict = {}


def _fit(case_id: str):
    if case_id not in _FITS:
        case = load_case(case_id)
        assert case["fitted_by"] == "glmmTMB"
        df = load_case_frame(case)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", multilevel.MultilevelWarning)
            _FITS[case_id] = (case, df, multilevel.lmer(case["formula"], data=df, reml=bool(case["REML"])))
    return _FITS[case_id]


@pytest.mark.parametrize("case_id", CASES)
def test_likelihood_and_counts(case_id):
    case, _df, fit = _fit(case_id)
    ref, got = case["results"], fit.to_dict()["results"]
    assert rel_diff(got["logLik"], ref["logLik"]) < 1e-6, (got["logLik"], ref["logLik"])
    for k in ("AIC", "BIC", "minus2logLik", "REMLcrit" if case["REML"] else "deviance"):
        assert rel_diff(got[k], ref[k]) < 1e-6, (k, got[k], ref[k])
    for k in ("logLik_df", "df_resid", "nobs", "ngrps"):
        assert got[k] == ref[k], (k, got[k], ref[k])
    assert rel_diff(got["sigma"], ref["sigma"]) < 1e-3


@pytest.mark.parametrize("case_id", CASES)
def test_fixed_effects(case_id):
    case, _df, fit = _fit(case_id)
    ref = case["results"]
    assert list(fit.fixef.index) == case["fixef_names"]
    for name, val in ref["fixef"].items():
        se = ref["fixef_se"][name]
        assert abs(fit.fixef[name] - val) < 1e-3 * se, name
        # lme4's conditional SE, (X'V^-1 X)^-1 at the estimates
        assert rel_diff(fit.se[name], ref["fixef_se_conditional"][name]) < 1e-3, name


@pytest.mark.parametrize("case_id", CASES)
def test_covstruct(case_id):
    case, _df, fit = _fit(case_id)
    ref = case["results"]
    got = fit.to_dict()["results"]["covstruct"]
    assert len(got) == len(ref["covstruct"])
    for g, r in zip(got, ref["covstruct"]):
        assert (g["group"], g["structure"], g["terms"], g["n_levels"], g["n_params"]) == \
            (r["group"], r["structure"], r["terms"], r["n_levels"], r["n_params"])
        np.testing.assert_allclose(g["sd"], r["sd"], rtol=1e-3)
        if r["corr_param"] is None:
            assert g["corr_param"] is None
        else:
            assert abs(g["corr_param"] - r["corr_param"]) < 1e-3
        scale = max(r["sd"]) ** 2
        np.testing.assert_allclose(np.array(g["cov_matrix"]), np.array(r["cov_matrix"]), atol=2e-3 * scale)
        np.testing.assert_allclose(np.array(g["corr_matrix"]), np.array(r["corr_matrix"]), atol=1e-3)
    # the same covariances in lme4's VarCorr layout
    for g, r in zip(fit.to_dict()["results"]["varcorr"], ref["varcorr"]):
        assert (g["group"], g["block_name"], g["terms"]) == (r["group"], r["block_name"], r["terms"])
        for t in r["terms"]:
            assert rel_diff(g["sd"][t], r["sd"][t]) < 1e-3


@pytest.mark.parametrize("case_id", CASES)
def test_conditional_modes_and_predictions(case_id):
    case, df, fit = _fit(case_id)
    ref = case["results"]
    re = fit.ranef(condvar=True)
    sigma = ref["sigma"]
    for grp, terms in ref["ranef"].items():
        for term, r in terms.items():
            sd = max(ref["covstruct"][k]["sd"][ref["covstruct"][k]["terms"].index(term)]
                     for k in range(len(ref["covstruct"])) if term in ref["covstruct"][k]["terms"])
            got = re[grp][term]
            assert list(got.index) == r["levels"]
            # (a term name used by two blocks would be a DataFrame; these cases have none)
            np.testing.assert_allclose(got.to_numpy(), r["condval"], atol=1e-3 * max(sd, 1e-3 * sigma))
            np.testing.assert_allclose(re.condsd[grp][term].to_numpy(), r["condsd_conditional"],
                                       atol=1e-3 * max(sd, 1e-3 * sigma))
    np.testing.assert_allclose(fit.fitted().to_numpy()[:20], ref["fitted_first20"],
                               atol=1e-4 * max(sigma, 1.0), rtol=1e-4)
    nd = newdata_frame(case, df)
    p_new = fit.predict(nd, allow_new_levels=True).to_numpy()
    np.testing.assert_allclose(p_new, ref["predict_allow_new_levels"], rtol=1e-4, atol=1e-4 * sigma)
    p_fix = fit.predict(nd, re_form="NA").to_numpy()
    np.testing.assert_allclose(p_fix, ref["predict_re_form_NA"], rtol=1e-4, atol=1e-4 * sigma)


def test_summary_prints_the_structure():
    _case, _df, fit = _fit("sleepstudy_diag_ar1_reml")
    txt = str(fit.summary())
    # glmmTMB's layout: the structure's one correlation on the block's first row
    assert re.search(r"factor\(Days\)0 802\.6[78]   28\.332   0\.57 \(ar1\)", txt), txt
    assert "factor(Days)9" in txt
    assert "0.00" not in txt.split("Random effects:")[1].split("Residual")[0]  # diag: no correlations
    assert "0.57 (ar1)" in fit.summary()._repr_html_()
    _case, _df, fit = _fit("stark_cs_ml")
    assert "0.672 (cs)" in str(fit.varcorr)


def test_structured_fit_pickles():
    import pickle

    _case, _df, fit = _fit("early_ar1_ml")
    back = pickle.loads(pickle.dumps(fit))
    assert back.to_dict()["results"]["covstruct"] == fit.to_dict()["results"]["covstruct"]
    assert back.structures == fit.structures
