"""Satterthwaite (lmerTest) and Kenward-Roger (pbkrtest) t tables of every LMM reference case,
type III F tests (lmerTest's anova(fit)), and the z / residual-df variants."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from _inference_helpers import fit_case
from conftest import lmm_case_ids, load_case

from multilevel.errors import ModelSpecError
from multilevel.inference import anova_terms, coef_table
from multilevel.inference.ddf import hessian, jacobian, type3_contrasts

SATT = [c for c in lmm_case_ids() if load_case(c)["results"].get("satterthwaite")]
KR = [c for c in lmm_case_ids() if load_case(c)["results"].get("kenward_roger")]


def _check(tab: pd.DataFrame, ref: dict) -> list[str]:
    bad = []
    for name, r in ref.items():
        row = tab.loc[name]
        if abs(row["df"] - r["df"]) > 1e-3 * max(1.0, r["df"]):
            bad.append(f"{name} df {row['df']:.8g} vs {r['df']:.8g}")
        if abs(row["p"] - r["p"]) > 1e-6 + 1e-3 * r["p"]:
            bad.append(f"{name} p {row['p']:.6g} vs {r['p']:.6g}")
        if abs(row["se"] - r["se"]) > 1e-3 * r["se"]:
            bad.append(f"{name} se {row['se']:.8g} vs {r['se']:.8g}")
        if abs(row["t"] - r["t"]) > 1e-3 * max(1.0, abs(r["t"])):
            bad.append(f"{name} t {row['t']:.8g} vs {r['t']:.8g}")
    return bad


def test_cases_are_parametrized():
    assert len(SATT) == 27 and len(KR) == 12


@pytest.mark.parametrize("case_id", SATT)
def test_satterthwaite_matches_lmertest(case_id):
    tab = coef_table(fit_case(case_id), "satterthwaite")
    assert list(tab.columns) == ["estimate", "se", "df", "t", "p"]
    assert _check(tab, load_case(case_id)["results"]["satterthwaite"]) == []


@pytest.mark.parametrize("case_id", KR)
def test_kenward_roger_matches_pbkrtest(case_id):
    tab = coef_table(fit_case(case_id), "kenward-roger")
    assert _check(tab, load_case(case_id)["results"]["kenward_roger"]) == []


def test_z_and_residual_tables():
    fit = fit_case("sleepstudy_slope_reml")
    z = coef_table(fit, None)
    assert np.all(np.isinf(z["df"]))
    np.testing.assert_allclose(z["se"], fit.se)
    np.testing.assert_allclose(z["p"], 2 * stats.norm.sf(np.abs(fit.fixef / fit.se)))
    r = coef_table(fit, "residual")
    assert np.all(r["df"] == fit.nobs - 2)
    with pytest.raises(ModelSpecError):
        coef_table(fit, "bogus")


def test_kenward_roger_needs_reml():
    with pytest.raises(ModelSpecError, match="REML"):
        coef_table(fit_case("sleepstudy_slope_ml"), "kr")


def test_glmm_tables_are_z_tests():
    fit = fit_case("cbpp_binomial_laplace")
    tab = coef_table(fit, "satterthwaite")
    assert np.all(np.isinf(tab["df"]))
    np.testing.assert_allclose(tab["se"], fit.se)


def test_numderiv_replicas():
    f = lambda x: np.exp(0.3 * x[0] * x[1]) + x[0] ** 3 * x[1] ** 2  # noqa: E731
    x = np.array([1.3, 0.7])
    a, b = x
    e = np.exp(0.3 * a * b)
    H = np.array([[0.09 * b * b * e + 6 * a * b * b, 0.3 * e + 0.09 * a * b * e + 6 * a * a * b],
                  [0.0, 0.09 * a * a * e + 2 * a**3]])
    H[1, 0] = H[0, 1]
    np.testing.assert_allclose(hessian(f, x), H, rtol=1e-7)
    J = jacobian(lambda x: np.array([x[0] ** 2 * x[1], np.sin(x[1])]), x)
    np.testing.assert_allclose(J, [[2 * a * b, a * a], [0, np.cos(b)]], rtol=1e-9)


# --- type III F tests ---------------------------------------------------------------------


def test_type3_single_column_terms_are_the_t_tests():
    """Without interactions every type III hypothesis of a one-column term is beta_j = 0:
    F = t^2 with the coefficient's Satterthwaite df."""
    fit = fit_case("star_missing_reml")
    av = anova_terms(fit)
    ct = coef_table(fit)
    for term, coef in (("sx", "sxF"), ("exp", "exp")):
        assert av.loc[term, "NumDF"] == 1
        assert av.loc[term, "F value"] == pytest.approx(ct.loc[coef, "t"] ** 2, rel=1e-10)
        assert av.loc[term, "DenDF"] == pytest.approx(ct.loc[coef, "df"], rel=1e-10)
        assert av.loc[term, "Pr(>F)"] == pytest.approx(ct.loc[coef, "p"], rel=1e-8)


def test_type3_multi_column_term_wald_statistic():
    """The F value of a multi-column term is the Wald statistic / q whatever the ddf."""
    fit = fit_case("star_missing_reml")
    av = anova_terms(fit)
    names = list(fit.fixef.index)
    idx = [names.index(c) for c in ("cltypereg", "cltypereg+A")]
    b = fit.fixef.to_numpy()[idx]
    V = fit.vcov.to_numpy()[np.ix_(idx, idx)]
    F = float(b @ np.linalg.solve(V, b)) / 2
    assert av.loc["cltype", "NumDF"] == 2
    assert av.loc["cltype", "F value"] == pytest.approx(F, rel=1e-10)
    assert 2 < av.loc["cltype", "DenDF"] < fit.nobs
    assert av.loc["cltype", "Sum Sq"] == pytest.approx(2 * F * fit.sigma**2, rel=1e-10)


def test_type3_contrasts_cake():
    """SAS type III for recipe * temp: recipe is tested at temp = 0 (not contained in the
    interaction, which has a covariate), temp's slope is averaged over recipes."""
    fit = fit_case("cake_interaction_group_reml")
    L = type3_contrasts(fit)
    names = list(fit.fixef.index)
    assert names == ["(Intercept)", "recipeB", "recipeC", "temp", "recipeB:temp", "recipeC:temp"]
    np.testing.assert_allclose(L["recipe"], [[0, 1, 0, 0, 0, 0], [0, 0, 1, 0, 0, 0]], atol=1e-12)
    np.testing.assert_allclose(L["temp"], [[0, 0, 0, 1, 1 / 3, 1 / 3]], atol=1e-7)
    np.testing.assert_allclose(L["recipe:temp"], [[0, 0, 0, 0, 1, 0], [0, 0, 0, 0, 0, 1]], atol=1e-12)
    av = anova_terms(fit)
    assert list(av.index) == ["recipe", "temp", "recipe:temp"]
    assert list(av["NumDF"]) == [2, 1, 2]
    kr = anova_terms(fit, "kenward-roger")
    # balanced design: KR and Satterthwaite agree
    np.testing.assert_allclose(kr["F value"], av["F value"], rtol=1e-6)
    np.testing.assert_allclose(kr["DenDF"], av["DenDF"], rtol=1e-4)


def test_type1_is_sequential():
    fit = fit_case("cake_interaction_group_reml")
    t1 = anova_terms(fit, type=1)
    t3 = anova_terms(fit, type=3)
    # the last term is the same hypothesis in both
    assert t1.loc["recipe:temp", "F value"] == pytest.approx(t3.loc["recipe:temp", "F value"], rel=1e-8)
    assert t1.loc["recipe", "F value"] != pytest.approx(t3.loc["recipe", "F value"], rel=1e-3)


def test_kenward_roger_refuses_large_models():
    with pytest.raises(ModelSpecError, match="satterthwaite"):
        coef_table(fit_case("insteval_crossed_reml"), "kenward-roger")


def test_glmm_terms_are_wald_chisquare_tests():
    fit = fit_case("cbpp_binomial_laplace")
    av = anova_terms(fit)
    assert list(av.index) == ["period"] and av.loc["period", "NumDF"] == 3
    b = fit.fixef.to_numpy()[1:]
    V = fit.vcov.to_numpy()[1:, 1:]
    chisq = float(b @ np.linalg.solve(V, b))
    assert av.loc["period", "F value"] == pytest.approx(chisq / 3, rel=1e-8)
    assert av.loc["period", "Pr(>F)"] == pytest.approx(stats.chi2.sf(chisq, 3), rel=1e-8)
