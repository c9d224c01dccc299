"""Parametric bootstrap and simulation."""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from _inference_helpers import fit_case
from conftest import read_dataset

import multilevel as ml
from multilevel.inference import bootstrap, simulate


def test_bootstrap_shape_names_and_determinism():
    fit = fit_case("sleepstudy_slope_reml")
    a = bootstrap(fit, 40, seed=3, progress=False)
    assert list(a.columns) == ["(Intercept)", "Days", "sd_(Intercept)|Subject",
                               "cor_Days.(Intercept)|Subject", "sd_Days|Subject", "sigma"]
    assert a.shape == (40, 6) and np.isfinite(a.to_numpy()).all()
    b = bootstrap(fit, 40, seed=3, progress=False, workers=2)
    pd.testing.assert_frame_equal(a, b)  # the split between threads changes nothing
    c = bootstrap(fit, 40, seed=4, progress=False)
    assert not np.allclose(a.to_numpy(), c.to_numpy())
    # the fit's own problem is left as it was
    assert fit._problem.objective(fit._theta) == pytest.approx(fit.reml_criterion, rel=1e-12)


def test_bootstrap_refits_the_simulated_responses():
    """Replicate i is the fit of simulate(fit, n, seed)[i] by the model's own criterion."""
    fit = fit_case("dyestuff_ml")
    reps = bootstrap(fit, 3, seed=5, progress=False)
    ys = simulate(fit, 3, seed=5)
    df = read_dataset("Dyestuff")
    for i in range(3):
        d = df.copy()
        d["Yield"] = ys[i]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref = ml.lmer("Yield ~ 1 + (1 | Batch)", d, reml=False)
        assert reps["(Intercept)"][i] == pytest.approx(ref.fixef.iloc[0], rel=1e-6)
        assert reps["sigma"][i] == pytest.approx(ref.sigma, rel=1e-4)
        assert reps["sd_(Intercept)|Batch"][i] == pytest.approx(ref.varcorr[0].sd.iloc[0], rel=1e-3, abs=1e-3)


def test_bootstrap_moments():
    fit = fit_case("sleepstudy_slope_ml")
    reps = bootstrap(fit, 300, seed=1, progress=False)
    se = fit.se
    for name in ("(Intercept)", "Days"):
        assert abs(reps[name].mean() - fit.fixef[name]) < 4 * se[name] / np.sqrt(300)
        assert reps[name].std() == pytest.approx(se[name], rel=0.15)


def test_bootstrap_func_and_progress(capsys):
    fit = fit_case("dyestuff_reml")
    out = bootstrap(fit, 5, seed=1, func=lambda f: f.fixef.iloc[0], progress=True)
    assert list(out.columns) == ["value"] and len(out) == 5
    err = capsys.readouterr().err
    assert "5/5" in err and "bootstrap" in err
    out = bootstrap(fit, 4, seed=1, func=lambda f: {"ll": f.loglik, "s": f.sigma}, progress=False)
    assert list(out.columns) == ["ll", "s"]
    assert capsys.readouterr().err == ""


def test_bootstrap_refuses_glmm():
    with pytest.raises(ml.MultilevelError):
        bootstrap(fit_case("cbpp_binomial_laplace"), 2)


def test_simulate_moments_and_weights():
    fit = fit_case("cbpp_weighted_lmm_reml")
    ys = simulate(fit, 4000, seed=2)
    assert ys.shape == (4000, fit.nobs)
    np.testing.assert_array_equal(ys, simulate(fit, 4000, seed=2))
    tau2 = float(fit.varcorr[0].cov[0, 0])
    w = fit.frame.weights
    expected = tau2 + fit.sigma**2 / w  # Var(y_i) = tau^2 + sigma^2 / w_i
    np.testing.assert_allclose(ys.var(axis=0), expected, rtol=0.12)
    mean = fit.predict(re_form="~0").to_numpy()
    assert np.all(np.abs(ys.mean(axis=0) - mean) < 5 * np.sqrt(expected / 4000))
    # rows of one group share their random effect: covariance tau^2
    refs = fit.frame.reterms[0].refs
    i, j = np.flatnonzero(refs == refs[0])[:2]
    assert np.cov(ys[:, i], ys[:, j])[0, 1] == pytest.approx(tau2, rel=0.15)


def test_simulate_glmm():
    fit = fit_case("cbpp_binomial_laplace")
    ys = simulate(fit, 200, seed=1)
    trials = fit.frame.weights
    assert np.all((ys >= 0) & (ys <= 1))
    np.testing.assert_allclose((ys * trials) % 1, 0, atol=1e-9)  # proportions of the trials
