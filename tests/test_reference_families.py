"""glmer with the Gamma, inverse Gaussian and negative binomial families against lme4's
reference fits (fixtures/reference, the cases added in 2026-12), and lme4's conventions for
them (README "results.family_extras"): -2 logLik = R's family aic at the modes (phi = sum
of unit deviances / sum(w), + 2) + log det(I + Lambda'Z'WZ Lambda) + |u|^2; sigma =
sqrt((Pearson chi-square + |u|^2) / n); VarCorr SDs = sigma x Lambda; logLik df counts the
dispersion or the negative binomial's theta.
"""
from __future__ import annotations

import functools
import math
import pickle
import warnings

import numpy as np
import pytest

import multilevel as ml
from conftest import load_case, load_case_frame, newdata_frame, rel_diff

FAMILY_IDS = ["early_gamma_log_laplace", "penicillin_gamma_inverse_laplace", "oxboys_gamma_identity_laplace",
              "early_invgauss_log_laplace", "grouseticks_nb_laplace"]


@functools.lru_cache(maxsize=None)
def fitted(case_id: str):
    case = load_case(case_id)
    df = load_case_frame(case)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = ml.glmer(case["formula"], data=df, family=case["family"], link=case["link"],
                       nagq=int(case["nAGQ"]))
    return case, df, fit, fit.to_dict()


@pytest.mark.parametrize("case_id", FAMILY_IDS)
def test_loglik_and_information_criteria(case_id):
    case, _, fit, d = fitted(case_id)
    ref, res = case["results"], d["results"]
    # never below lme4's optimum by more than the README's tolerance
    assert res["logLik"] > ref["logLik"] - 1e-5 * abs(ref["logLik"])
    assert rel_diff(res["logLik"], ref["logLik"]) < 1e-5
    assert res["logLik_df"] == ref["logLik_df"] == len(ref["fixef"]) + len(ref["theta"]) + 1
    assert res["df_resid"] == ref["df_resid"] and res["nobs"] == ref["nobs"]
    for key in ("AIC", "BIC", "deviance", "minus2logLik"):
        assert rel_diff(res[key], ref[key]) < 1e-5, key
    assert rel_diff(res["glmm_deviance_function_value"], ref["glmm_deviance_function_value"]) < 1e-3


@pytest.mark.parametrize("case_id", FAMILY_IDS)
def test_fixed_effects_and_standard_errors(case_id):
    case, _, _, d = fitted(case_id)
    ref, res = case["results"], d["results"]
    assert d["fixef_names"] == case["fixef_names"]
    for name, val in ref["fixef"].items():
        se = ref["fixef_se"][name]
        assert abs(res["fixef"][name] - val) / se < 2e-3, name
        if case_id == "oxboys_gamma_identity_laplace" and name == "(Intercept)":
            # lme4's Hessian is noise here: its criterion jumps by 1.35e-7 between points
            # 1e-4 apart in theta (= 251; measured with Rscript), so its theta-theta entry is
            # 13.57 where the criterion's curvature is 0.0232 (ours is smooth to 1e-12); the
            # intercept's SE, correlated with theta, is 2.0696 in lme4 and 2.1699 here
            assert rel_diff(res["fixef_se"][name], se) < 0.06
            continue
        assert rel_diff(res["fixef_se"][name], se) < 2e-3, name
    # lme4's vcov(use.hessian = FALSE): sigma^2 (R_X' R_X)^-1 for the dispersion families
    vr = np.array(ref["vcov_fixef_use_hessian_FALSE"]["matrix"], dtype=float)
    vg = np.array(res["vcov_fixef_use_hessian_FALSE"]["matrix"], dtype=float)
    np.testing.assert_allclose(np.sqrt(np.diag(vg)), np.sqrt(np.diag(vr)), rtol=2e-3)


@pytest.mark.parametrize("case_id", FAMILY_IDS)
def test_sigma_theta_and_variance_components(case_id):
    case, _, fit, d = fitted(case_id)
    ref, res = case["results"], d["results"]
    ex, rex = res["family_extras"], ref["family_extras"]
    assert rel_diff(res["sigma"], ref["sigma"]) < 1e-3
    assert ex["sigma"] == res["sigma"] and ex["link"] == rex["link"] == case["link"]
    for k, v in ref["theta"].items():
        assert abs(res["theta"][k] - v) <= 2e-3 * max(abs(v), 1e-3), k
    for got, want in zip(res["varcorr"], ref["varcorr"]):
        assert got["block_name"] == want["block_name"]
        for t, sd in want["sd"].items():
            assert rel_diff(got["sd"][t], sd) < 2e-3, (got["group"], t)
    if case["family"] == "negative.binomial":
        assert rel_diff(ex["nb_theta"], rex["nb_theta"]) < 2e-3
        assert ex["family_string"] == rex["family_string"] == "Negative Binomial(3.3034)"
        assert res["sigma"] == 1.0 and fit.varcorr.sigma is None and ex["shape"] is None
    else:
        assert ex["family_string"] == rex["family_string"] == case["family"] and ex["nb_theta"] is None
        # VarCorr = sigma x Lambda: lme4 scales the dispersion families' SDs by sigma
        sd0 = res["varcorr"][0]["sd"][res["varcorr"][0]["terms"][0]]
        assert sd0 == pytest.approx(res["sigma"] * list(res["theta"].values())[0], rel=1e-12)
        assert fit.varcorr.sigma == pytest.approx(res["sigma"])
        if case["family"] == "Gamma":
            assert rel_diff(ex["shape"], rex["shape"]) < 2e-3
            assert ex["shape"] == pytest.approx(1 / res["sigma"] ** 2)


@pytest.mark.parametrize("case_id", FAMILY_IDS)
def test_modes_fitted_values_and_predictions(case_id):
    case, df, fit, d = fitted(case_id)
    ref, res = case["results"], d["results"]
    for g, terms in ref["ranef"].items():
        for t, want in terms.items():
            got = res["ranef"][g][t]
            scale = np.max(np.abs(want["condval"]))
            np.testing.assert_allclose(got["condval"], want["condval"], atol=2e-3 * scale)
    np.testing.assert_allclose(res["fitted_first20"], ref["fitted_first20"], rtol=1e-4)
    nd = newdata_frame(case, df)
    for typ in ("link", "response"):
        got = fit.predict(nd, type=typ, allow_new_levels=True).to_numpy()
        np.testing.assert_allclose(got, ref[f"predict_{typ}_allow_new_levels"], rtol=1e-4, atol=1e-4)
        got = fit.predict(nd, type=typ, re_form="~0").to_numpy()
        np.testing.assert_allclose(got, ref[f"predict_{typ}_re_form_NA"], rtol=1e-4, atol=1e-4)


def _dense_criterion(fit):
    """-2 logLik recomputed densely in numpy from the fit's modes, with the Python family's
    R aic (scipy's densities): lme4's formula, independent of the compiled engine."""
    frame = fit.frame
    fam = fit.family_object
    cols, lam = [], []
    for rt, L in zip(frame.reterms, fit.lambdas):
        k = rt.n_terms
        Z = np.zeros((frame.nobs, rt.n_levels * k))
        for j in range(k):
            Z[np.arange(frame.nobs), rt.refs * k + j] = rt.Z[:, j]
        cols.append(Z)
        lam.append(np.kron(np.eye(rt.n_levels), L))
    Z = np.hstack(cols)
    Lam = np.zeros((Z.shape[1], Z.shape[1]))
    o = 0
    for B in lam:
        Lam[o:o + B.shape[0], o:o + B.shape[0]] = B
        o += B.shape[0]
    u = np.concatenate([np.asarray(x).ravel() for x in fit._u])
    eta = frame.X @ fit.fixef.to_numpy() + Z @ Lam @ u
    mu = fam.linkinv(eta)
    wt = fit.prior_weights
    W = wt * fam.mu_eta(eta) ** 2 / fam.variance(mu)
    ZL = Z @ Lam
    M = np.eye(ZL.shape[1]) + ZL.T @ (W[:, None] * ZL)
    ldl2 = np.linalg.slogdet(M)[1]
    return fam.aic(frame.y, np.ones(frame.nobs), mu, wt) + ldl2 + u @ u, mu, u


@pytest.mark.parametrize("case_id", FAMILY_IDS)
def test_criterion_is_lme4s_formula_computed_densely(case_id):
    case, _, fit, _ = fitted(case_id)
    crit, mu, u = _dense_criterion(fit)
    assert crit == pytest.approx(-2 * fit.loglik, rel=1e-9)
    np.testing.assert_allclose(mu, fit.fitted().to_numpy(), rtol=1e-9)
    dec = case["results"]["family_extras"]["laplace_decomposition"]
    assert u @ u == pytest.approx(dec["sum_u_squared"], rel=2e-3, abs=1e-6)
    if fit.family_object.has_dispersion:
        wt = fit.prior_weights
        pearson = np.sum(wt * (fit.frame.y - mu) ** 2 / fit.family_object.variance(mu))
        assert fit.sigma == pytest.approx(math.sqrt((pearson + u @ u) / fit.nobs), rel=1e-9)
        assert rel_diff(pearson, dec["pearson_chisq"]) < 2e-3


@pytest.mark.parametrize("case_id", FAMILY_IDS)
def test_summary_prints_as_lme4(case_id):
    case, _, fit, d = fitted(case_id)
    text = str(fit.summary())
    fam = d["results"]["family_extras"]["family_string"]
    assert f" Family: {fam}  ( {case['link']} )" in text
    re_part = text.split("Random effects:")[1].split("Number of obs")[0]
    if fit.family_object.has_dispersion:
        # lme4: a Residual row with sigma, and "t value" beside Pr(>|z|)
        assert " Residual " in re_part and "t value Pr(>|z|)" in text
        assert f"{fit.sigma:.4g}"[:5] in re_part
    else:
        assert "Residual" not in re_part and "z value Pr(>|z|)" in text
    assert pickle.loads(pickle.dumps(fit)).to_dict()["results"]["family_extras"] == d["results"]["family_extras"]


def test_nb_summary_is_lme4s_layout():
    # measured with Rscript (lme4 1.1-31): summary(glmer.nb(TICKS ~ YEAR + scale(HEIGHT) + ...))
    _, _, fit, _ = fitted("grouseticks_nb_laplace")
    text = str(fit.summary())
    for line in [" Family: Negative Binomial(3.3034)  ( log )",
                 "  1791.7   1819.7   -888.8   1777.7      396",
                 "-1.4798 -0.6080 -0.3085  0.4916  3.4182",
                 " BROOD    (Intercept) 0.5012   0.7079",
                 " LOCATION (Intercept) 0.3341   0.5780",
                 "scale(HEIGHT)  -0.8479     0.1250  -6.783 1.18e-11 ***"]:
        assert line in text, line
    nb = fit.optinfo["nb"]
    assert nb["nevals"] >= 5 and nb["interval_log_theta"][1] - nb["interval_log_theta"][0] == pytest.approx(6)


@pytest.mark.parametrize("nagq, loglik, theta, fixef", [
    # lme4 1.1-31 (Rscript on this machine): glmer(TICKS ~ YEAR + (1 | BROOD), grouseticks,
    # family = MASS::negative.binomial(2), nAGQ = nagq), control as the reference fits
    (1, -920.7317491462, 1.2021214430, [0.3861213530, 1.3279052051, -0.9058948307]),
    (9, -269.8585581942, 1.2149551517, [0.4597549052, 1.3261755098, -0.9165730559]),
])
def test_negative_binomial_with_fixed_theta_laplace_and_agq(nagq, loglik, theta, fixef):
    df = load_case_frame(load_case("grouseticks_nb_laplace"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = ml.glmer("TICKS ~ YEAR + (1 | BROOD)", df, family="negative.binomial", nb_theta=2.0, nagq=nagq)
    assert rel_diff(fit.loglik, loglik) < 1e-8
    assert fit.theta.iloc[0] == pytest.approx(theta, rel=1e-4)
    np.testing.assert_allclose(fit.fixef.to_numpy(), fixef, rtol=1e-4, atol=1e-5)
    assert fit.npar == 5 and fit.nb_theta == 2.0
