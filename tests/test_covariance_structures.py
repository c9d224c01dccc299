"""Structured covariance terms: the structures' maps, equivalences with other terms, a dense
brute-force likelihood, and the errors of bad use.

- ``diag(x | g)`` is the model of lme4's ``(x || g)`` (split scalar terms): LMM and GLMM;
- ``cs(x | g)`` with two columns is an unstructured 2 x 2 term (rho spans (-1, 1));
- Λ Λ' of AR1 / CompoundSymmetry equals the dense Σ of their definitions;
- the ML and REML log-likelihoods of an ``ar1`` fit equal the dense Gaussian likelihood of y
  with V = Z G Z' + sigma² I at the fitted parameters (and GLS fixed effects);
- bad use raises ``ModelSpecError`` naming the term.
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import multilevel as ml
from conftest import read_dataset
from multilevel.covariance import AR1, CompoundSymmetry, Diagonal, ParameterMap, Unstructured, make_structure
from multilevel.errors import FormulaError, ModelSpecError, MultilevelError


def _quiet(fn, *a, **k):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ml.MultilevelWarning)
        return fn(*a, **k)


@pytest.fixture(scope="module")
def sleep():
    return read_dataset("sleepstudy")


@pytest.fixture(scope="module")
def early():
    return read_dataset("Early")


# --- the structures' maps -----------------------------------------------------------------


@pytest.mark.parametrize("k", [2, 3, 5])
@pytest.mark.parametrize("rho", [-0.6, 0.0, 0.3, 0.95])
def test_ar1_lambda_matches_dense_sigma(k, rho):
    ar = AR1(k)
    sd = 1.7
    th = ar.par_to_theta(np.array([sd, ar.zeta(rho)]))
    L = ar.lambda_block(th)
    i = np.arange(k)
    dense = sd**2 * rho ** np.abs(i[:, None] - i[None, :]).astype(float)
    np.testing.assert_allclose(L @ L.T, dense, atol=1e-12)
    assert np.allclose(np.triu(L, 1), 0) and np.all(np.diag(L) >= 0)
    assert ar.corr_param(th) == pytest.approx(rho, abs=1e-12)
    np.testing.assert_allclose(ar.par_to_theta(ar.theta_to_par(th)), th, atol=1e-12)


@pytest.mark.parametrize("k", [2, 3, 4])
def test_cs_lambda_matches_dense_sigma(k):
    cs = CompoundSymmetry(k)
    sds = np.linspace(0.5, 2.0, k)
    for rho in (-0.99 / (k - 1), -0.2 / (k - 1), 0.0, 0.4, 0.99):
        th = cs.par_to_theta(np.concatenate([sds, [cs.zeta(rho)]]))
        L = cs.lambda_block(th)
        dense = np.outer(sds, sds) * ((1 - rho) * np.eye(k) + rho)
        np.testing.assert_allclose(L @ L.T, dense, atol=1e-12)
        assert cs.corr_param(th) == pytest.approx(rho, abs=1e-10)
    assert cs.npar == k + 1 and cs.ntheta == k * (k + 1) // 2


def test_structure_objects():
    assert make_structure("diag", 2) == Diagonal(2) and make_structure("us", 3) == Unstructured(3)
    with pytest.raises(ValueError):
        make_structure("toep", 2)
    with pytest.raises(ValueError):
        CompoundSymmetry(1)
    pm = ParameterMap([Unstructured(2), CompoundSymmetry(3)])
    assert (pm.npar, pm.ntheta, pm.native) == (7, 9, False)
    assert pm.diagonal.tolist() == [0, 2, 3, 4, 5] and False or pm.diagonal.tolist() == [0, 2, 3, 4, 5]
    assert ParameterMap([Unstructured(2), Diagonal(2)]).native
    # a zero SD gives a zero row of Λ exactly (a singular fit the optimiser can reach)
    ar = AR1(3)
    assert np.all(ar.par_to_theta(np.array([0.0, 0.4])) == 0.0)


# --- equivalences -------------------------------------------------------------------------


@pytest.mark.parametrize("reml", [True, False])
def test_diag_equals_double_bar_lmm(sleep, reml):
    a = ml.lmer("Reaction ~ Days + diag(Days | Subject)", sleep, reml=reml)
    b = ml.lmer("Reaction ~ Days + (Days || Subject)", sleep, reml=reml)
    assert a.loglik == pytest.approx(b.loglik, rel=1e-10, abs=1e-8)
    np.testing.assert_allclose(a.fixef, b.fixef, rtol=1e-6)
    np.testing.assert_allclose(a.se, b.se, rtol=1e-5)
    sd_a = a.varcorr[0].sd.to_numpy()
    sd_b = np.array([blk.sd.iloc[0] for blk in b.varcorr])
    np.testing.assert_allclose(sd_a, sd_b, rtol=1e-5)
    assert a.npar == b.npar == 5
    assert a.to_dict()["results"]["covstruct"][0]["structure"] == "diag"


def test_diag_equals_double_bar_glmm():
    cbpp = read_dataset("cbpp")
    cbpp = cbpp.assign(t=cbpp["period"].cat.codes.astype(float))
    a = _quiet(ml.glmer, "cbind(incidence, size - incidence) ~ t + diag(1 + t | herd)", cbpp, family="binomial")
    b = _quiet(ml.glmer, "cbind(incidence, size - incidence) ~ t + (1 + t || herd)", cbpp, family="binomial")
    assert a.loglik == pytest.approx(b.loglik, abs=1e-6)
    np.testing.assert_allclose(a.fixef, b.fixef, rtol=1e-4, atol=1e-5)
    sd_a = a.varcorr[0].sd.to_numpy()
    sd_b = np.array([blk.sd.iloc[0] for blk in b.varcorr])
    np.testing.assert_allclose(sd_a, sd_b, rtol=1e-3, atol=1e-4)
    assert a.npar == b.npar


@pytest.mark.parametrize("reml", [True, False])
def test_cs_with_two_columns_equals_unstructured(sleep, reml):
    a = ml.lmer("Reaction ~ Days + cs(Days | Subject)", sleep, reml=reml)
    b = ml.lmer("Reaction ~ Days + (Days | Subject)", sleep, reml=reml)
    assert a.loglik == pytest.approx(b.loglik, rel=1e-10, abs=1e-8)
    np.testing.assert_allclose(a.fixef, b.fixef, rtol=1e-6)
    np.testing.assert_allclose(a.varcorr[0].sd, b.varcorr[0].sd, rtol=2e-4)
    assert a.varcorr[0].corr_param == pytest.approx(b.varcorr[0].corr[1, 0], abs=1e-4)
    assert a.varcorr[0].corr[1, 0] == pytest.approx(a.varcorr[0].corr_param, abs=1e-12)
    assert a.npar == b.npar == 6  # k + 1 = 3 covariance parameters, as unstructured 2 x 2


# --- a dense brute-force likelihood ---------------------------------------------------------


def _dense_loglik(fit, reml: bool) -> tuple[float, np.ndarray]:
    """(RE)ML log-likelihood and GLS beta from V = Z G Z' + sigma² I at the fit's estimates."""
    frame = fit.frame
    y, X = frame.y, frame.X
    n, p = X.shape
    V = fit.sigma**2 * np.eye(n)
    for rt, blk in zip(frame.reterms, fit.varcorr):
        Z = np.zeros((n, rt.n_levels * rt.n_terms))
        for j in range(rt.n_terms):
            Z[np.arange(n), rt.refs * rt.n_terms + j] = rt.Z[:, j]
        G = np.kron(np.eye(rt.n_levels), blk.cov)
        V += Z @ G @ Z.T
    Vi = np.linalg.inv(V)
    XtViX = X.T @ Vi @ X
    beta = np.linalg.solve(XtViX, X.T @ Vi @ y)
    r = y - X @ beta
    ll = -0.5 * (n * np.log(2 * np.pi) + np.linalg.slogdet(V)[1] + r @ Vi @ r)
    if reml:
        ll += -0.5 * np.linalg.slogdet(XtViX)[1] + 0.5 * p * np.log(2 * np.pi)
    return ll, beta


@pytest.mark.parametrize("reml", [True, False])
def test_ar1_loglik_equals_dense_likelihood(early, reml):
    fit = ml.lmer("cog ~ age + trt + ar1(0 + factor(age) | id)", early, reml=reml)
    ll, beta = _dense_loglik(fit, reml)
    assert fit.loglik == pytest.approx(ll, abs=1e-7)
    np.testing.assert_allclose(fit.fixef.to_numpy(), beta, rtol=1e-8)
    cov = fit.varcorr[0].cov
    rho = fit.varcorr[0].corr_param
    i = np.arange(3)
    np.testing.assert_allclose(cov, cov[0, 0] * rho ** np.abs(i[:, None] - i[None, :]), rtol=1e-10)


@pytest.mark.parametrize("reml", [True, False])
def test_cs_loglik_equals_dense_likelihood(sleep, reml):
    # three periods of the study, several days each: a cs() term over the periods
    d = sleep.assign(period=pd.Categorical(np.where(sleep["Days"] < 4, "a", np.where(sleep["Days"] < 7, "b", "c"))))
    fit = _quiet(ml.lmer, "Reaction ~ Days + cs(0 + period | Subject)", d, reml=reml)
    ll, beta = _dense_loglik(fit, reml)
    assert fit.loglik == pytest.approx(ll, abs=1e-7)
    np.testing.assert_allclose(fit.fixef.to_numpy(), beta, rtol=1e-7)
    blk = fit.varcorr[0]
    sd = blk.sd.to_numpy()
    np.testing.assert_allclose(blk.cov, np.outer(sd, sd) * ((1 - blk.corr_param) * np.eye(3) + blk.corr_param),
                               rtol=1e-10)
    assert len(set(np.round(sd, 6))) == 3  # heterogeneous SDs
    assert fit.npar == 2 + 4 + 1


# --- bad use --------------------------------------------------------------------------------


@pytest.mark.parametrize("formula, words", [
    ("cog ~ age + cs(1 | id)", ["cs()", "1 | id", "two columns"]),
    ("cog ~ age + ar1(0 + age | id)", ["ar1()", "factor", "0 + age | id"]),
    ("cog ~ age + ar1(factor(age) | id)", ["ar1()", "intercept", "factor(age) | id"]),
    ("cog ~ age + ar1(0 + age + trt | id)", ["ar1()", "0 + age + trt | id"]),
    ("cog ~ age + toep(0 + factor(age) | id)", ["unknown covariance structure 'toep'"]),
    ("cog ~ cs(age) + (1 | id)", ["cs()", "fixed part"]),
    ("cog ~ age + cs(factor(age) || id)", ["cs()", "'||'", "diag(x | g)"]),
    ("cog ~ age + cs(age, 2 | id)", ["cs()", "one random-effects term"]),
])
def test_bad_structure_use_is_a_model_spec_error(early, formula, words):
    with pytest.raises(ModelSpecError) as err:
        ml.lmer(formula, early)
    msg = str(err.value)
    for w in words:
        assert w in msg, msg


def test_structure_errors_are_formula_errors_with_a_position(early):
    with pytest.raises(FormulaError) as err:
        ml.lmer("cog ~ age + toep(0 + factor(age) | id)", early)
    assert err.value.position == len("cog ~ age + ")


# --- inference on structured fits -------------------------------------------------------------


def test_inference_on_ar1_fit(early):
    fit = ml.lmer("cog ~ age + trt + ar1(0 + factor(age) | id)", early, reml=False)
    # derivatives and profiles over θ as free entries of Λ would answer another model
    with pytest.raises(MultilevelError, match="structured covariance"):
        ml.lmer("cog ~ age + trt + ar1(0 + factor(age) | id)", early).coef_table(ddf="kenward-roger")
    with pytest.raises(MultilevelError, match="structured covariance"):
        fit.confint(method="profile")
    sims = ml.inference.simulate(fit, 3, seed=1)
    assert sims.shape == (3, fit.nobs)
    boot = ml.inference.bootstrap(fit, 4, seed=2, workers=1)
    assert boot.shape[0] == 4 and np.isfinite(boot.to_numpy()).all()
    # the refits are ar1 fits: every bootstrap covariance keeps the structure
    assert list(boot.columns[:3]) == list(fit.fixef.index)
    pred = fit.predict(early.head(5))
    np.testing.assert_allclose(pred.to_numpy(), fit.fitted().to_numpy()[:5], rtol=1e-10)
    # anova refits by ML through the structured optimiser too
    m0 = ml.lmer("cog ~ age + trt + (1 | id)", early, reml=False)
    tab = ml.anova(m0, fit)
    assert list(tab["npar"]) == [5, 6]


@pytest.mark.parametrize("reml", [True, False])
def test_satterthwaite_over_structure_parameters(sleep, reml):
    # the df do not depend on how the covariance is parametrised: cs() with two columns
    # (SDs and a transformed rho) gives the df of the unstructured term (θ)
    a = ml.lmer("Reaction ~ Days + cs(Days | Subject)", sleep, reml=reml)
    b = ml.lmer("Reaction ~ Days + (Days | Subject)", sleep, reml=reml)
    np.testing.assert_allclose(a.coef_table(ddf="satterthwaite")["df"], b.coef_table(ddf="satterthwaite")["df"],
                               rtol=2e-4)
    # ar1: finite, and below the residual df
    early = read_dataset("Early")
    tab = ml.lmer("cog ~ age + trt + ar1(0 + factor(age) | id)", early).coef_table(ddf="satterthwaite")
    assert np.all(np.isfinite(tab["df"])) and np.all(tab["df"] < 309)


def test_diag_fit_keeps_satterthwaite(sleep):
    a = ml.lmer("Reaction ~ Days + diag(Days | Subject)", sleep)
    b = ml.lmer("Reaction ~ Days + (Days || Subject)", sleep)
    np.testing.assert_allclose(a.coef_table(ddf="satterthwaite")["df"], b.coef_table(ddf="satterthwaite")["df"],
                               rtol=1e-4)


# --- GLMMs against glmmTMB -------------------------------------------------------------------

_GLMM_REF = Path(__file__).parent / "fixtures" / "covstruct"


def _glmm_data(key: str) -> pd.DataFrame:
    if key == "cbpp_ar1":
        return read_dataset("cbpp")
    d = pd.read_csv(_GLMM_REF / "poisson_cs.csv", dtype={"subj": str, "tf": str})
    d["subj"] = pd.Categorical(d["subj"], categories=[str(i) for i in range(1, 41)])
    d["tf"] = pd.Categorical(d["tf"], categories=["1", "2", "3", "4"])
    return d


@pytest.mark.parametrize("key", ["cbpp_ar1", "pois_cs", "pois_ar1", "pois_diag"])
def test_glmm_structures_match_glmmtmb(key):
    """Binomial ar1() on cbpp and Poisson cs() / ar1() / diag() on simulated repeated counts
    (tests/fixtures/covstruct/glmm_ref.R), fitted by glmmTMB 1.1.5 (Laplace)."""
    ref = json.loads((_GLMM_REF / "glmm_covstruct_glmmTMB.json").read_text())[key]
    fit = _quiet(ml.glmer, ref["formula"], _glmm_data(key), family=ref["family"])
    assert fit.loglik == pytest.approx(ref["logLik"], rel=1e-6)
    assert fit.npar == ref["df"]
    for name, val in ref["fixef"].items():
        assert abs(fit.fixef[name] - val) < 2e-3 * ref["fixef_se"][name], name
        assert fit.se[name] == pytest.approx(ref["fixef_se"][name], rel=2e-3), name
    blk = fit.to_dict()["results"]["covstruct"][0]
    rb = ref["blocks"][0]
    assert blk["structure"] == key.split("_")[1]
    np.testing.assert_allclose(blk["sd"], rb["sd"], rtol=2e-3)
    if blk["structure"] != "diag":
        assert blk["corr_param"] == pytest.approx(rb["corr"][1][0], abs=1e-3)
    np.testing.assert_allclose(np.array(blk["corr_matrix"]), np.array(rb["corr"]), atol=1e-3)
    assert not fit.warnings


def test_glmm_structured_fit_pickles_predicts_simulates():
    import pickle

    d = _glmm_data("pois_ar1")
    fit = _quiet(ml.glmer, "y ~ x + time + ar1(0 + tf | subj)", d, family="poisson")
    back = pickle.loads(pickle.dumps(fit))
    assert back.to_dict()["results"]["covstruct"] == fit.to_dict()["results"]["covstruct"]
    np.testing.assert_allclose(back.predict(d.head(4), type="response"), fit.predict(d.head(4), type="response"))
    assert ml.inference.simulate(fit, 2, seed=3).shape == (2, fit.nobs)
    assert "(ar1)" in str(fit.summary())


# --- boundaries -------------------------------------------------------------------------------


def _repeated(seed: int, sd_int: float, n_g: int = 30, n_t: int = 4, reps: int = 2) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    g = np.repeat(np.arange(n_g), n_t * reps)
    t = np.tile(np.repeat(np.arange(n_t), reps), n_g)
    x = rng.normal(size=g.size)
    y = 1.0 + 0.5 * x + sd_int * rng.normal(size=n_g)[g] + rng.normal(size=g.size)
    return pd.DataFrame({"y": y, "x": x, "g": pd.Categorical(g.astype(str)),
                         "t": pd.Categorical(t.astype(str), categories=[str(i) for i in range(n_t)])})


@pytest.mark.parametrize("structure", ["ar1", "cs", "diag"])
def test_no_group_variation_is_an_exact_singular_fit(structure):
    # x constant within each (g, t) cell and noise with zero cell means: the data show no
    # variation of the cells (the term's random effects) beyond the residual, so every SD of
    # the term is 0 at the optimum, and the fit must get there exactly (SDs have bound 0)
    rng = np.random.default_rng(5)
    d = _repeated(5, 0.0)
    cell = d["g"].astype(str) + ":" + d["t"].astype(str)
    xc = pd.Series(rng.normal(size=cell.nunique()), index=cell.unique())
    d["x"] = xc[cell].to_numpy()
    e = rng.normal(size=len(d))
    e = e - pd.Series(e).groupby(cell.to_numpy()).transform("mean").to_numpy()
    d["y"] = 1.0 + 0.5 * d["x"] + e
    fit = _quiet(ml.lmer, f"y ~ x + {structure}(0 + t | g)", d, reml=False)
    assert fit.is_singular
    assert any("singular" in w for w in fit.warnings)
    assert np.all(fit.varcorr[0].sd.to_numpy() == 0.0)
    lm0 = ml.lm("y ~ x", d)
    assert fit.loglik == pytest.approx(lm0.loglik, abs=1e-7)


def test_ar1_rho_near_one_nests_the_random_intercept():
    # data from a random intercept: AR(1) with rho -> 1 is that model (Σ = sd² J), so the
    # ar1 fit may not end below it
    d = _repeated(11, 2.0)
    ri = ml.lmer("y ~ x + (1 | g)", d, reml=False)
    ar = _quiet(ml.lmer, "y ~ x + ar1(0 + t | g)", d, reml=False)
    assert ar.loglik >= ri.loglik - 1e-6
    assert ar.varcorr[0].corr_param > 0.9
    cs = _quiet(ml.lmer, "y ~ x + cs(0 + t | g)", d, reml=False)
    assert cs.loglik >= ri.loglik - 1e-6


def test_us_is_the_default_and_parsing_records_structures(sleep):
    from multilevel.formula import parse_formula

    f = parse_formula("y ~ x + us(x | g) + cs(0 + f | g/h) + (1 | k)")
    assert [(b.structure, b.group) for b in f.bars] == [("us", "g"), ("cs", "h:g"), ("cs", "g"), ("us", "k")]
    assert f.bars[1].text == "cs(0 + f | h:g)" and f.fixed.labels == ["x"]
    a = ml.lmer("Reaction ~ Days + us(Days | Subject)", sleep)
    b = ml.lmer("Reaction ~ Days + (Days | Subject)", sleep)
    assert a.loglik == b.loglik and a.structures == b.structures
    c = ml.lmer("Reaction ~ Days + diag(1 | Subject)", sleep)
    d = ml.lmer("Reaction ~ Days + (1 | Subject)", sleep)
    assert c.loglik == pytest.approx(d.loglik, abs=1e-9)


def test_predict_with_re_form_naming_a_structured_term(sleep):
    fit = ml.lmer("Reaction ~ Days + diag(Days | Subject) + ar1(0 + factor(Days) | Subject)", sleep)
    full = fit.predict(sleep.head(12)).to_numpy()
    np.testing.assert_allclose(full, fit.fitted().to_numpy()[:12], rtol=1e-10)
    part = fit.predict(sleep.head(12), re_form="~ diag(Days | Subject)").to_numpy()
    fixed = fit.predict(sleep.head(12), re_form="NA").to_numpy()
    assert not np.allclose(part, full) and not np.allclose(part, fixed)


def test_start_values_and_warm_starts():
    pm = ParameterMap([CompoundSymmetry(3), AR1(4)])
    # the engines' start: a diagonal Λ of moment estimates -> those SDs, rho = 0
    th0 = np.array([2.0, 0, 0, 3.0, 0, 4.0] + [1.0, 0, 0, 0, 1.0, 0, 0, 1.0, 0, 1.0])
    par = pm.start(th0)
    np.testing.assert_allclose(par[:3], [2.0, 3.0, 4.0])
    assert CompoundSymmetry(3).rho(par[3]) == pytest.approx(0.0, abs=1e-12)
    assert par[4] == pytest.approx(1.0) and AR1(4).rho(par[5]) == pytest.approx(0.0, abs=1e-12)
    # a warm start from an estimate keeps its correlation
    est = pm.to_theta(np.array([1.0, 2.0, 3.0, 0.7, 1.5, -0.4]))
    np.testing.assert_allclose(pm.start(est), [1.0, 2.0, 3.0, 0.7, 1.5, -0.4], atol=1e-10)


def test_a_bar_inside_r_functions_keeps_its_old_error():
    from multilevel.formula import parse_formula

    with pytest.raises(FormulaError, match="must be added to the formula with"):
        parse_formula("y ~ I(a | b) + (1 | g)")
    with pytest.raises(FormulaError, match=r"diag\(x \| g\) or \(x \|\| g\)"):
        parse_formula("y ~ diag(x || g)")


def test_bimodal_rho_reaches_the_better_optimum():
    # a random design (the first of a fuzz run against a dense optimiser) whose AR(1)
    # likelihood has a local optimum at rho = -0.82 and the global one at rho -> 1: started at
    # rho = 0 the optimiser found the local one (0.29 lower in logLik) before each rho was
    # restarted on its other side
    from scipy import optimize

    rng = np.random.default_rng(0)
    k, ng, reps = int(rng.integers(2, 5)), int(rng.integers(6, 15)), int(rng.integers(1, 4))
    g = np.repeat(np.arange(ng), k * reps)
    t = np.tile(np.repeat(np.arange(k), reps), ng)
    x = rng.normal(size=g.size)
    sd, rho = rng.uniform(0, 2), rng.uniform(-0.5, 0.95)
    i = np.arange(k)
    b = rng.multivariate_normal(np.zeros(k), sd**2 * rho ** np.abs(i[:, None] - i[None, :]), size=ng, method="svd")
    y = 1 + 0.5 * x + b[g, t] + rng.normal(size=g.size)
    d = pd.DataFrame({"y": y, "x": x, "g": pd.Categorical(g.astype(str)),
                      "t": pd.Categorical(t.astype(str), categories=[str(j) for j in range(k)])})
    fit = ml.lmer("y ~ x + ar1(0 + t | g)", d, reml=False)
    frame, rt = fit.frame, fit.frame.reterms[0]
    ar = AR1(k)

    def nll(v):  # dense -logLik over (log sd, z, log sigma)
        sig = np.exp(v[2])
        L = ar.lambda_block(ar.par_to_theta(np.array([np.exp(v[0]), v[1]])))
        Z = np.zeros((len(y), ng * k))
        Z[np.arange(len(y)), rt.refs * k + np.argmax(rt.Z, axis=1)] = 1.0
        V = sig**2 * np.eye(len(y)) + Z @ np.kron(np.eye(ng), L @ L.T) @ Z.T
        Vi = np.linalg.inv(V)
        X = frame.X
        beta = np.linalg.solve(X.T @ Vi @ X, X.T @ Vi @ frame.y)
        r = frame.y - X @ beta
        return 0.5 * (len(y) * np.log(2 * np.pi) + np.linalg.slogdet(V)[1] + r @ Vi @ r)

    best = min(optimize.minimize(nll, np.array([np.log(0.3), z, 0.0]), method="Nelder-Mead",
                                 options={"xatol": 1e-8, "fatol": 1e-10, "maxiter": 5000}).fun
               for z in (-1.0, 2.0))
    assert -fit.loglik <= best + 1e-6
    assert fit.varcorr[0].corr_param > 0.9


def test_glmm_cs_sd_at_zero_is_restarted_inside():
    # a random Poisson design (fixtures/covstruct/poisson_fuzz1.csv, 5 times x 26 groups) on
    # which stage 1 puts the first SD of cs() at 0 and stage 2 stayed there, 0.068 below
    # glmmTMB 1.1.5 (logLik -233.64468588, SD of t0 0.28603, rho 0.092); ar1: -234.18252354
    d = pd.read_csv(_GLMM_REF / "poisson_fuzz1.csv")
    d["g"] = pd.Categorical(d["g"].astype(str))
    d["t"] = pd.Categorical(d["t"].astype(str), categories=[str(i) for i in range(5)])
    fit = _quiet(ml.glmer, "y ~ x + cs(0 + t | g)", d, family="poisson")
    assert fit.loglik == pytest.approx(-233.64468588, abs=1e-6)
    assert fit.varcorr[0].sd.iloc[0] == pytest.approx(0.28603, rel=2e-3)
    assert fit.varcorr[0].corr_param == pytest.approx(0.092, abs=2e-3)
    fit = _quiet(ml.glmer, "y ~ x + ar1(0 + t | g)", d, family="poisson")
    assert fit.loglik == pytest.approx(-234.18252354, abs=1e-6)
