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
from multilevel.results import GlmmFit


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


# --- GLMMs ---------------------------------------------------------------------------------


def _glmm_case(case_id: str):
    from conftest import load_case, load_case_frame

    spec = load_case(case_id)
    return fit_case(case_id), spec, load_case_frame(spec)


def _fresh_fit(fit, spec: dict, df: pd.DataFrame, y: np.ndarray, **kw):
    """glmer() on a data frame holding the simulated response (the brute force: a new model
    frame, problem and a full fit from lme4's starting values)."""
    lhs, rhs = spec["formula"].split("~", 1)
    d = df.iloc[fit.frame.rows].reset_index(drop=True)
    if lhs.strip().startswith("cbind("):
        d["ysim"] = np.rint(y * fit.frame.weights)  # successes of the fit's trials
        formula = "cbind(ysim, size - ysim) ~" + rhs
    else:
        d["ysim"] = y
        formula = "ysim ~" + rhs
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ml.glmer(formula, d, family=fit.family_object, nagq=fit.nagq, **kw)


def _assert_row_is_fit(row: pd.Series, ref, sigma: bool = False) -> None:
    p = len(ref.fixef)
    np.testing.assert_allclose(row.iloc[:p].to_numpy(), ref.fixef.to_numpy(), rtol=1e-5, atol=1e-5)
    sd = np.array([vc.sd.iloc[0] for vc in ref.varcorr])  # scalar terms: varcorr's SDs
    np.testing.assert_allclose(row.iloc[p:p + sd.size].to_numpy(), sd, rtol=1e-5, atol=1e-5)
    if sigma:
        assert row["sigma"] == pytest.approx(ref.sigma, rel=1e-5)


@pytest.mark.parametrize("case_id", ["cbpp_binomial_laplace", "mmmec_poisson_offset_laplace",
                                     "early_gamma_log_laplace", "cbpp_binomial_agq25",
                                     "contraception_bernoulli_laplace"])
def test_glmm_bootstrap_rows_are_fresh_glmer_fits(case_id):
    """Replicate i is what glmer() gives on a data frame holding simulate(fit, n, seed)[i]:
    binomial (cbind, AGQ, Bernoulli), Poisson with an offset, Gamma."""
    fit, spec, df = _glmm_case(case_id)
    k = 2
    reps = bootstrap(fit, k, seed=7, progress=False)
    ys = simulate(fit, k, seed=7)
    disp = fit.family in ("Gamma", "inverse.gaussian")
    assert ("sigma" in reps.columns) == disp
    for i in range(k):
        _assert_row_is_fit(reps.iloc[i], _fresh_fit(fit, spec, df, ys[i]), sigma=disp)


def test_glmm_bootstrap_prior_weights_and_fixed_nb_theta():
    cbpp = read_dataset("cbpp")
    cbpp["prop"] = cbpp["incidence"] / cbpp["size"]
    fit = ml.glmer("prop ~ period + (1 | herd)", cbpp, family="binomial", weights="size")
    ys = simulate(fit, 2, seed=3)
    reps = bootstrap(fit, 2, seed=3, progress=False)
    np.testing.assert_allclose((ys * cbpp["size"].to_numpy()) % 1, 0, atol=1e-9)  # trials = weights
    for i in range(2):
        d = cbpp.assign(prop=ys[i])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref = ml.glmer("prop ~ period + (1 | herd)", d, family="binomial", weights="size")
        _assert_row_is_fit(reps.iloc[i], ref)
    # a negative binomial keeps its theta (lme4's refit keeps family(fit)): the replicates
    # equal glmer fits with that theta fixed
    ticks = read_dataset("grouseticks")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        nb = ml.glmer("TICKS ~ YEAR + (1 | BROOD)", ticks, family="negative.binomial", nb_theta=2.5)
    reps = bootstrap(nb, 2, seed=1, progress=False)
    thetas = bootstrap(nb, 2, seed=1, progress=False, func=lambda f: f.nb_theta)
    assert thetas["value"].tolist() == [2.5, 2.5]
    ys = simulate(nb, 2, seed=1)
    for i in range(2):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref = ml.glmer("TICKS ~ YEAR + (1 | BROOD)", ticks.assign(TICKS=ys[i]),
                           family="negative.binomial", nb_theta=2.5)
        _assert_row_is_fit(reps.iloc[i], ref)


@pytest.mark.parametrize("case_id, n", [("cbpp_binomial_laplace", 200), ("mmmec_poisson_offset_laplace", 200),
                                        ("early_gamma_log_laplace", 80)])
def test_glmm_bootstrap_moments(case_id, n):
    """The replicates' means are near the estimates and their SDs near the Wald SEs.

    Tolerances: the mean of n replicates has sampling SD se / sqrt(n) (4 of them), plus 0.15
    se for the small-sample bias of the ML estimates of a GLMM (cbpp's period4, 15
    herds: ~0.12 se measured with 400 replicates); the SD of the replicates has a relative
    sampling error of ~1 / sqrt(2 n) (5 - 8 %), and the Wald SE is itself a large-sample
    approximation: 25 %."""
    fit = fit_case(case_id)
    reps = bootstrap(fit, n, seed=11, progress=False)
    assert reps.attrs["failed"] == 0
    se = fit.se
    if fit.family_object.has_dispersion:
        # the Gamma fit's default vcov is the Hessian of lme4's criterion, which carries its
        # dispersion plug-in (phi from the deviance inside family$aic) and is not the
        # sampling covariance of the estimates: trtY, a between-child effect, has Hessian SE
        # 0.0305, RX SE 0.0195, bootstrap SD 0.0197 (80 reps; 400: 0.020). The replicates
        # follow lme4's vcov(use.hessian = FALSE) = sigma^2 (R_X' R_X)^-1
        se = pd.Series(np.sqrt(np.diag(fit.vcov_use_hessian_false.to_numpy())), index=se.index)
    for name in fit.fixef.index:
        assert abs(reps[name].mean() - fit.fixef[name]) < 4 * se[name] / np.sqrt(n) + 0.15 * se[name], name
        assert reps[name].std() == pytest.approx(se[name], rel=0.25), name
    sd = fit.varcorr[0].sd.iloc[0]
    assert abs(reps.iloc[:, len(se)].median() - sd) < 0.35 * sd  # the SD of b, skewed: the median


def test_glmm_bootstrap_determinism_workers_and_func():
    fit = fit_case("cbpp_binomial_laplace")
    theta0 = fit.theta.to_numpy().copy()
    a = bootstrap(fit, 12, seed=5, progress=False, workers=1)
    b = bootstrap(fit, 12, seed=5, progress=False, workers=2)
    assert a.attrs["workers"] == 1 and b.attrs["workers"] == 2
    pd.testing.assert_frame_equal(a, b, check_exact=True)  # the split between threads changes nothing
    assert not np.allclose(a.to_numpy(), bootstrap(fit, 12, seed=6, progress=False).to_numpy())
    assert np.isfinite(a.to_numpy()).all()
    # func sees a full GlmmFit of the replicate: the same estimates as the default columns
    seen = []

    def f(rep):
        seen.append(rep)
        return pd.Series(np.concatenate([rep.fixef.to_numpy(), rep.theta.to_numpy()]), index=list(a.columns))

    c = bootstrap(fit, 3, seed=5, progress=False, func=f)
    np.testing.assert_allclose(c.to_numpy(), a.iloc[:3].to_numpy(), rtol=1e-7, atol=1e-9)
    assert all(isinstance(r, GlmmFit) and r.family == "binomial" for r in seen)
    np.testing.assert_allclose(seen[0].frame.y, simulate(fit, 1, seed=5)[0])
    assert seen[0].loglik < 0 and seen[0].se.notna().all()
    # the fit is left as it was, and its methods reach the same bootstrap
    np.testing.assert_array_equal(fit.theta.to_numpy(), theta0)
    pd.testing.assert_frame_equal(fit.bootstrap(n=12, seed=5, progress=False), a)


def test_glmm_confint_boot_and_pickled_fit():
    import pickle

    fit = fit_case("cbpp_binomial_laplace")
    ci = fit.confint(method="boot", n=60, seed=2)
    assert list(ci.index) == ["sd_(Intercept)|herd", "(Intercept)", "period2", "period3", "period4"]
    assert np.all(ci.iloc[:, 0] < ci.iloc[:, 1])
    wald = fit.confint(method="wald")
    assert abs(ci.loc["period2"].mean() - wald.loc["period2"].mean()) < 0.2
    back = pickle.loads(pickle.dumps(fit))
    pd.testing.assert_frame_equal(bootstrap(back, 3, seed=1, progress=False),
                                  bootstrap(fit, 3, seed=1, progress=False), check_exact=True)
    g = fit_case("early_gamma_log_laplace")
    assert "sigma" in g.confint(method="boot", n=10, seed=1).index


def test_gamma_random_effects_scale_varcorr_or_lme4():
    """Gamma / inverse Gaussian: b is drawn from the fit's varcorr (sigma x Lambda u) by
    default, from Lambda u with re_sd="lme4" (lme4 1.1-31's simulate). Early's log-link
    model: the between-child variance of mean log(y) is sd_b^2 + (within) / 3."""
    fit = fit_case("early_gamma_log_laplace")
    ids = fit.frame.reterms[0].refs
    out = {}
    for how in ("varcorr", "lme4"):
        ys = simulate(fit, 30, seed=4, re_sd=how)
        means = np.array([[np.log(y[ids == j]).mean() for j in np.unique(ids)] for y in ys])
        out[how] = means.var(axis=1).mean()
    sd_vc, theta = fit.varcorr[0].sd.iloc[0], fit.theta.iloc[0]
    assert sd_vc == pytest.approx(fit.sigma * theta, rel=1e-12)
    assert out["varcorr"] == pytest.approx(sd_vc**2 + fit.sigma**2 / 3, rel=0.35)
    assert out["lme4"] == pytest.approx(theta**2, rel=0.35)
    with pytest.raises(ml.ModelSpecError, match="re_sd"):
        simulate(fit, 1, re_sd="scaled")


def test_glmm_bootstrap_failed_replicates_are_counted():
    """Draws outside the family's range (Gamma with the inverse link and lme4's unscaled
    random effects: eta below 0; lme4's simulate gives NaN there too) are failed
    replicates: NaN rows, counted in attrs, one warning -- as lme4's bootMer."""
    fit = fit_case("penicillin_gamma_inverse_laplace")
    assert np.isfinite(simulate(fit, 3, seed=1)).all()  # the varcorr scale stays in range
    with pytest.warns(ml.MultilevelWarning, match="NaN"):
        ys = simulate(fit, 3, seed=1, re_sd="lme4")
    bad = ~np.isfinite(ys).all(axis=1)
    assert bad.any()
    with pytest.warns(ml.MultilevelWarning, match="bootstrap runs failed"):
        reps = bootstrap(fit, 3, seed=1, progress=False, re_sd="lme4")
    assert reps.attrs["failed"] == int(bad.sum())
    assert reps[bad].isna().all(axis=None)
    assert np.isfinite(reps[~bad].to_numpy()).all()


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


def test_glmm_bootstrap_structured_covariance_term():
    """A cs() term: the refit starts at the fit's structure parameters and reaches what
    glmer() gives on the simulated response."""
    ticks = read_dataset("grouseticks")
    formula = "TICKS ~ YEAR + cs(0 + YEAR | LOCATION)"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = ml.glmer(formula, ticks, family="poisson")
    reps = bootstrap(fit, 2, seed=1, progress=False)
    assert reps.shape[1] == 3 + len(fit.theta) and reps.columns[3].startswith("sd_")
    ys = simulate(fit, 2, seed=1)
    for i in range(2):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref = ml.glmer(formula, ticks.assign(TICKS=ys[i]), family="poisson")
        np.testing.assert_allclose(reps.iloc[i, :3].to_numpy(), ref.fixef.to_numpy(), rtol=1e-5, atol=1e-5)
        sd = np.sqrt(np.diag(ref.varcorr[0].cov))
        got = reps.iloc[i][[c for c in reps.columns if c.startswith("sd_")]].to_numpy()
        np.testing.assert_allclose(got, sd, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("case_id", ["cbpp_binomial_laplace", "mmmec_poisson_offset_laplace",
                                     "early_gamma_log_laplace"])
def test_glmm_refit_equals_lme4_refit(case_id):
    """A bootstrap refit is lme4's refit(fit, newresp): the same estimates on a stored
    response (fixtures/r_numbers/bootstrap_refit.json, lme4 1.1-31), at the reference
    tolerances (1e-4 relative for parameters, |difference| / SE < 1e-3, logLik 1e-6)."""
    import json
    from pathlib import Path

    ref = json.loads((Path(__file__).parent / "fixtures" / "r_numbers" / "bootstrap_refit.json").read_text())
    case = ref["cases"][case_id]
    fit = fit_case(case_id)
    y = np.asarray(case["y"], float)
    if fit.family == "binomial":
        y = y / fit.frame.weights  # successes -> proportions of the trials
    rep = fit._refit_response(y)
    assert np.all(np.abs(rep.fixef.to_numpy() - case["fixef"]) / rep.se.to_numpy() < 1e-3)
    np.testing.assert_allclose(rep.theta.to_numpy(), np.atleast_1d(case["theta"]), rtol=1e-4)
    assert rep.loglik == pytest.approx(case["loglik"], rel=1e-6)
    if "sigma" in case:
        assert rep.sigma == pytest.approx(case["sigma"], rel=1e-4)
    assert rep.warnings == [] and rep.converged


def test_glmm_bootstrap_nagq0():
    """nagq = 0 (theta by the joint PIRLS criterion, beta inside PIRLS): the refit's stage 1
    starts at theta-hat and ends where a fresh glmer(nagq=0) ends."""
    cbpp = read_dataset("cbpp")
    formula = "cbind(incidence, size - incidence) ~ period + (1 | herd)"
    fit = ml.glmer(formula, cbpp, nagq=0)
    reps = bootstrap(fit, 2, seed=2, progress=False)
    ys = simulate(fit, 2, seed=2)
    for i in range(2):
        d = cbpp.assign(inc=np.rint(ys[i] * cbpp["size"]))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref = ml.glmer("cbind(inc, size - inc) ~ period + (1 | herd)", d, nagq=0)
        _assert_row_is_fit(reps.iloc[i], ref)
