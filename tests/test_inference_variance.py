"""ICC, R², variance reduction and design effects."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

from _inference_helpers import fit_case
from conftest import read_dataset

import multilevel as ml
from multilevel.inference import design_effect, icc, r2, variance_reduction


def _hsb(formula):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ml.lmer(formula, read_dataset("Hsb82"))


def test_hsb_icc_and_variance_explained_by_meanses():
    """Raudenbush & Bryk's High School and Beyond numbers: ICC 0.18; meanses explains 69% of
    the between-school variance."""
    m0 = _hsb("mAch ~ 1 + (1 | school)")
    m1 = _hsb("mAch ~ meanses + (1 | school)")
    i = icc(m0)
    assert round(float(i["adjusted"]), 2) == 0.18
    tau2 = m0.varcorr[0].cov[0, 0]
    assert i["adjusted"] == pytest.approx(tau2 / (tau2 + m0.sigma**2), rel=1e-12)
    assert i["conditional"] == pytest.approx(i["adjusted"], rel=1e-12)  # no fixed effects
    red = variance_reduction(m0, m1)
    assert round(float(red.loc[("school", "(Intercept)"), "reduction"]), 2) == 0.69
    assert abs(red.loc[("Residual", ""), "reduction"]) < 0.01
    de = design_effect(m0)
    m = m0.nobs / 160
    assert de.loc["school", "deff"] == pytest.approx(1 + (m - 1) * i["adjusted"], rel=1e-12)


def test_sleepstudy_matches_performance():
    """performance::icc / r2_nakagawa for lmer(Reaction ~ Days + (Days | Subject), sleepstudy):
    ICC adjusted 0.722, unadjusted 0.521; R2 conditional 0.799, marginal 0.279."""
    fit = fit_case("sleepstudy_slope_reml")
    i, r = icc(fit), r2(fit)
    assert round(float(i["adjusted"]), 3) == 0.722
    assert round(float(i["conditional"]), 3) == 0.521
    assert round(float(r["conditional"]), 3) == 0.799
    assert round(float(r["marginal"]), 3) == 0.279


def test_random_slope_variance_is_johnsons_mean():
    fit = fit_case("sleepstudy_slope_reml")
    S = fit.varcorr[0].cov
    days = fit.frame.X[:, 1]
    vr = np.mean(S[0, 0] + 2 * S[0, 1] * days + S[1, 1] * days**2)
    vf = np.var(fit.frame.X @ fit.fixef.to_numpy(), ddof=1)
    tot = vf + vr + fit.sigma**2
    assert r2(fit)["marginal"] == pytest.approx(vf / tot, rel=1e-12)
    assert icc(fit)["adjusted"] == pytest.approx(vr / (vr + fit.sigma**2), rel=1e-12)


def test_icc_by_group_and_binomial():
    fit = fit_case("pastes_nested_reml")
    g = icc(fit, by_group=True)
    assert set(g.index) == {"cask:batch", "batch"}
    assert g.sum() == pytest.approx(icc(fit)["adjusted"], rel=1e-12)
    glmm = fit_case("cbpp_binomial_laplace")
    tau2 = glmm.varcorr[0].cov[0, 0]
    assert icc(glmm)["adjusted"] == pytest.approx(tau2 / (tau2 + np.pi**2 / 3), rel=1e-12)
    assert 0 < r2(glmm)["marginal"] < r2(glmm)["conditional"] < 1
