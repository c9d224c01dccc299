"""Properties of multilevel.glmer that need no reference: the quadrature against direct
numerical integration, Laplace against a dense computation written independently here,
equivalent response forms, and errors for bad input.

The Rust engine has its own tests (``cargo test -p multilevel-core``): PIRLS and the Laplace
criterion against a dense brute force for both engines and several links, nAGQ = 0 as the
joint mode, the Gauss-Hermite rule, the vectorised exp/log.
"""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import integrate, optimize, special, stats

import multilevel as ml
from multilevel import families
from multilevel.engine.glmm import GlmmProblem, deriv12


def _fit(*args, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ml.glmer(*args, **kw)


def _sim_scalar(rng, sizes, family="binomial", theta=0.9, beta=(-0.3, 0.8)):
    rows = []
    for j, m in enumerate(sizes):
        b = theta * rng.standard_normal()
        x = rng.standard_normal(m)
        eta = beta[0] + beta[1] * x + b
        if family == "binomial":
            y = (rng.random(m) < special.expit(eta)).astype(float)
        else:
            y = rng.poisson(np.exp(eta)).astype(float)
        rows.append(pd.DataFrame({"y": y, "x": x, "g": f"g{j:03d}"}))
    return pd.concat(rows, ignore_index=True)


def _marginal_m2ll(df, family, theta, beta):
    """-2 log marginal likelihood with every constant, by adaptive numerical integration
    (scipy.integrate.quad) per group."""
    total = 0.0
    for _, d in df.groupby("g", sort=True):
        y, x = d["y"].to_numpy(), d["x"].to_numpy()
        fixed = beta[0] + beta[1] * x

        def loglik(u):
            eta = fixed + theta * u
            if family == "binomial":
                lp = stats.bernoulli.logpmf(y, special.expit(eta))
            else:
                lp = stats.poisson.logpmf(y, np.exp(eta))
            return lp.sum() + stats.norm.logpdf(u)

        mode = optimize.minimize_scalar(lambda u: -loglik(u), bounds=(-20, 20), method="bounded",
                                        options={"xatol": 1e-10}).x
        top = loglik(mode)
        val, _ = integrate.quad(lambda u: np.exp(loglik(u) - top), mode - 30, mode + 30,
                                points=[mode], epsabs=0, epsrel=1e-13, limit=200)
        total += -2.0 * (top + np.log(val))
    return total


# --------------------------------------------------------------------------------------------
# adaptive Gauss-Hermite quadrature
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("family", ["binomial", "poisson"])
def test_agq_with_many_nodes_equals_numerical_integration(family):
    rng = np.random.default_rng(1 if family == "binomial" else 2)
    df = _sim_scalar(rng, [3, 5, 8, 12, 20, 6, 9], family=family)
    fit = _fit("y ~ x + (1 | g)", df, family=family, nagq=25)
    pb: GlmmProblem = fit._problem
    fam = families.get_family(family)
    sat = fam.saturated_loglik(df["y"].to_numpy(), np.ones(len(df)), np.ones(len(df)))
    from multilevel._core import gauss_hermite

    z60, w60 = gauss_hermite(60)
    for theta, beta in [(0.9, (-0.3, 0.8)), (0.3, (0.2, 0.1)), (1.8, (-0.6, 1.1))]:
        # the core fits centred columns of X (engine.centring): its beta is beta_c
        agq = pb.core.agq(np.array([theta]), pb.xcentring.beta_in(np.array(beta)), z60, w60)
        want = _marginal_m2ll(df, family, theta, beta)
        # lme4's AGQ criterion leaves out -2 * (saturated log-likelihood)
        assert agq - 2.0 * sat == pytest.approx(want, rel=1e-11, abs=1e-10)
        # 25 nodes (the fit's rule) carry their own, small, quadrature error
        assert pb.devfun(np.array([theta, *beta])) - 2.0 * sat == pytest.approx(want, rel=1e-7)
    # at the estimates the reported full log-likelihood is the integral
    want = _marginal_m2ll(df, family, fit.theta.iloc[0], fit.fixef.to_numpy())
    assert -2 * fit.loglik_full == pytest.approx(want, rel=1e-8)


def test_agq_approaches_laplace_as_clusters_grow():
    rng = np.random.default_rng(7)
    sizes = (12, 48, 192, 768)
    gaps = []
    for m in sizes:
        df = _sim_scalar(rng, [m] * 10, family="binomial", theta=1.0, beta=(0.2, 0.5))
        fit = _fit("y ~ x + (1 | g)", df, nagq=25)
        pb = fit._problem
        x = np.array([1.0, 0.2, 0.5])
        agq = pb.devfun(x)
        xc = pb.x_in(x)  # the core's coordinates (centred X)
        lap = pb.core.laplace(xc[:1], xc[1:])  # Bernoulli: no saturated term, same scale
        gaps.append(abs(agq - lap) / 10)  # per group
    assert all(a > b for a, b in zip(gaps, gaps[1:])), gaps
    assert gaps[-1] < gaps[0] / 15, gaps
    # the Laplace error per group falls like 1/m
    scaled = [g * m for g, m in zip(gaps, sizes)]
    assert 0.3 < scaled[-1] / scaled[-2] < 3.0, scaled


def test_agq_with_one_node_is_laplace_and_nodes_match_numpy():
    from multilevel._core import gauss_hermite

    z, w = gauss_hermite(25)
    zz, ww = np.polynomial.hermite_e.hermegauss(25)
    np.testing.assert_allclose(z, zz, atol=1e-13)
    np.testing.assert_allclose(w, ww / ww.sum(), atol=1e-15)
    rng = np.random.default_rng(3)
    df = _sim_scalar(rng, [4, 6, 9, 5, 7], family="poisson")
    fit = _fit("y ~ x + (1 | g)", df, family="poisson", nagq=3)
    pb = fit._problem
    x = np.array([0.7, 0.1, 0.4])
    lap = pb.core.laplace(x[:1], x[1:])
    info = pb.core.info()
    z1, w1 = gauss_hermite(1)
    one = pb.core.agq(x[:1], x[1:], z1, w1)  # both in the core's coordinates
    # same approximation, without the saturated-model constant
    assert one == pytest.approx(lap - (info["aic"] - info["dev"]), rel=1e-12)


# --------------------------------------------------------------------------------------------
# Laplace against an independent dense computation
# --------------------------------------------------------------------------------------------

def _dense_laplace(fit, theta, beta):
    """Laplace criterion from dense matrices: Fisher scoring for the mode, then
    -2 log p(y|u) (all constants) + |u|^2 + log det(Lambda'Z'W Z Lambda + I), W the IRLS
    (expected-information) weights as lme4."""
    fr = fit.frame
    fam = fit.family_object
    n = fr.nobs
    cols = []
    sizes = [rt.n_terms for rt in fr.reterms]
    from multilevel.covariance import lambda_blocks

    lams = lambda_blocks(np.asarray(theta), sizes)
    for rt, lam in zip(fr.reterms, lams):
        zl = rt.Z @ lam  # (n, k): z_i' Lambda
        block = np.zeros((n, rt.n_levels * rt.n_terms))
        for c in range(rt.n_terms):
            block[np.arange(n), rt.refs * rt.n_terms + c] = zl[:, c]
        cols.append(block)
    ZL = np.hstack(cols)
    q = ZL.shape[1]
    off = fr.X @ beta + (fr.offset if fr.offset is not None else 0.0)
    wt = np.ones(n) if fr.weights is None else fr.weights
    y = fr.y
    u = np.zeros(q)
    for _ in range(100):
        eta = off + ZL @ u
        mu = fam.linkinv(eta)
        me = fam.mu_eta(eta)
        var = fam.variance(mu)
        W = wt * me**2 / var
        score = ZL.T @ (wt * me * (y - mu) / var) - u
        H = ZL.T @ (W[:, None] * ZL) + np.eye(q)
        step = np.linalg.solve(H, score)
        u = u + step
        if np.abs(step).max() < 1e-13:
            break
    eta = off + ZL @ u
    mu = fam.linkinv(eta)
    me = fam.mu_eta(eta)
    W = wt * me**2 / fam.variance(mu)
    H = ZL.T @ (W[:, None] * ZL) + np.eye(q)
    ntr = np.ones(n)
    aic = fam.aic(y, ntr, mu, wt)
    return aic + u @ u + np.linalg.slogdet(H)[1]


@pytest.mark.parametrize("link", ["logit", "probit", "cloglog"])
def test_laplace_equals_dense_computation_vector_term(link):
    rng = np.random.default_rng(11)
    n, G = 240, 12
    g = rng.integers(0, G, n)
    x = rng.standard_normal(n)
    b0, b1 = 0.8 * rng.standard_normal(G), 0.4 * rng.standard_normal(G)
    eta = -0.2 + 0.5 * x + b0[g] + b1[g] * x
    y = (rng.random(n) < special.expit(eta)).astype(float)
    df = pd.DataFrame({"y": y, "x": x, "g": [f"g{k:02d}" for k in g]})
    fit = _fit("y ~ x + (x | g)", df, link=link)
    pb = fit._problem
    for theta in ([0.8, 0.1, 0.4], [1.2, -0.3, 0.2], [0.5, 0.0, 0.0]):
        beta = np.array([-0.1, 0.4])
        got = pb.devfun(np.concatenate([theta, beta]))
        assert got == pytest.approx(_dense_laplace(fit, theta, beta), rel=1e-10)


def test_laplace_equals_dense_computation_crossed_poisson_with_offset():
    rng = np.random.default_rng(12)
    n = 300
    a, b = rng.integers(0, 15, n), rng.integers(0, 6, n)
    x = rng.standard_normal(n)
    expo = rng.uniform(0.5, 2.0, n)
    y = rng.poisson(expo * np.exp(0.3 + 0.2 * x + 0.5 * rng.standard_normal(15)[a]))
    df = pd.DataFrame({"y": y.astype(float), "x": x, "a": [f"a{k}" for k in a], "b": [f"b{k}" for k in b],
                       "expo": expo})
    fit = _fit("y ~ x + (1 | a) + (1 | b) + offset(log(expo))", df, family="poisson")
    pb = fit._problem
    for theta in ([0.5, 0.3], [1.0, 0.0]):
        beta = np.array([0.25, 0.15])
        got = pb.devfun(np.concatenate([theta, beta]))
        assert got == pytest.approx(_dense_laplace(fit, theta, beta), rel=1e-10)
    # and the fit is at a stationary point of that criterion
    x0 = np.concatenate([fit.theta.to_numpy(), fit.fixef.to_numpy()])
    free = x0 > 1e-6
    free[len(fit.theta):] = True
    g, _ = deriv12(pb.devfun, x0, lower=pb.lower_full)
    assert np.abs(g[free]).max() < 2e-3


# --------------------------------------------------------------------------------------------
# equivalent response forms
# --------------------------------------------------------------------------------------------

def _aggregated(rng):
    G, per = 9, 4
    g = np.repeat(np.arange(G), per)
    x = rng.standard_normal(G * per)
    ntr = rng.integers(1, 9, G * per)
    p = special.expit(-0.4 + 0.6 * x + 0.9 * rng.standard_normal(G)[g])
    s = rng.binomial(ntr, p)
    return pd.DataFrame({"s": s.astype(float), "f": (ntr - s).astype(float), "n": ntr.astype(float),
                         "prop": s / ntr, "x": x, "g": [f"g{k}" for k in g]})


def test_cbind_proportion_weights_and_bernoulli_rows_agree():
    agg = _aggregated(np.random.default_rng(5))
    a = _fit("cbind(s, f) ~ x + (1 | g)", agg)
    b = _fit("prop ~ x + (1 | g)", agg, weights="n")
    rows = []
    for _, r in agg.iterrows():
        rows += [{"y": 1.0, "x": r.x, "g": r.g}] * int(r.s) + [{"y": 0.0, "x": r.x, "g": r.g}] * int(r.f)
    bern = pd.DataFrame(rows)
    c = _fit("y ~ x + (1 | g)", bern)
    for other in (b, c):
        np.testing.assert_allclose(other.fixef.to_numpy(), a.fixef.to_numpy(), atol=2e-5)
        np.testing.assert_allclose(other.theta.to_numpy(), a.theta.to_numpy(), atol=2e-5)
        np.testing.assert_allclose(other.se.to_numpy(), a.se.to_numpy(), rtol=2e-3)
        np.testing.assert_allclose(other.ranef()["g"].to_numpy(), a.ranef()["g"].to_numpy(), atol=1e-4)
    assert b.loglik == pytest.approx(a.loglik, abs=1e-7)
    # Bernoulli rows differ only by the binomial coefficients
    lchoose = special.gammaln(agg.n + 1) - special.gammaln(agg.s + 1) - special.gammaln(agg.f + 1)
    assert c.loglik == pytest.approx(a.loglik - lchoose.sum(), abs=1e-6)
    assert c.nobs == int(agg.n.sum()) and a.nobs == len(agg)


def test_factor_and_boolean_responses_equal_zero_one():
    rng = np.random.default_rng(9)
    df = _sim_scalar(rng, [6] * 12)
    base = _fit("y ~ x + (1 | g)", df)
    df["yb"] = df.y == 1
    df["yf"] = pd.Categorical(np.where(df.y == 1, "yes", "no"), categories=["no", "yes"])
    for resp in ("yb", "yf"):
        other = _fit(f"{resp} ~ x + (1 | g)", df)
        np.testing.assert_allclose(other.fixef.to_numpy(), base.fixef.to_numpy(), atol=1e-7)
        assert other.loglik == pytest.approx(base.loglik, abs=1e-8)


# --------------------------------------------------------------------------------------------
# accessors
# --------------------------------------------------------------------------------------------

def test_accessors_are_consistent():
    rng = np.random.default_rng(21)
    df = _sim_scalar(rng, [8] * 15, family="poisson")
    fit = _fit("y ~ x + (1 | g)", df, family="poisson")
    eta = fit.predict(type="link").to_numpy()
    np.testing.assert_allclose(fit.predict(type="response").to_numpy(), np.exp(eta), rtol=1e-14)
    np.testing.assert_allclose(fit.fitted().to_numpy(), np.exp(eta), rtol=1e-14)
    np.testing.assert_allclose(fit.linear_predictor().to_numpy(), eta)
    # predicting the fitting data through newdata gives the same
    np.testing.assert_allclose(fit.predict(df, type="link").to_numpy(), eta, rtol=1e-12, atol=1e-12)
    dev = fit.residuals(type="deviance").to_numpy()
    assert (dev**2).sum() == pytest.approx(fit.conditional_deviance, rel=1e-10)
    pear = fit.residuals(type="pearson").to_numpy()
    np.testing.assert_allclose(pear, (df.y - np.exp(eta)) / np.sqrt(np.exp(eta)), rtol=1e-10)
    np.testing.assert_allclose(fit.residuals(type="response").to_numpy(), df.y - np.exp(eta), atol=1e-12)
    assert fit.npar == 3 and fit.df_resid == len(df) - 3
    assert fit.aic == pytest.approx(-2 * fit.loglik + 6)
    assert fit.bic == pytest.approx(-2 * fit.loglik + np.log(len(df)) * 3)
    assert fit.deviance == pytest.approx(-2 * fit.loglik)
    assert fit.loglik_full == fit.loglik  # Laplace keeps every constant
    re = fit.ranef()
    assert re.condsd["g"].shape == re["g"].shape and (re.condsd["g"].to_numpy() > 0).all()
    coef = fit.coef()["g"]
    np.testing.assert_allclose(coef["(Intercept)"], fit.fixef["(Intercept)"] + re["g"]["(Intercept)"])
    assert fit.vcov_method == "hessian"
    # calc_derivs=False: the covariance from R_X, as lme4 for >= 1e4 rows
    f2 = _fit("y ~ x + (1 | g)", df, family="poisson", control={"calc_derivs": False})
    assert f2.vcov_method == "RX"
    np.testing.assert_allclose(f2.vcov.to_numpy(), fit.vcov_use_hessian_false.to_numpy(), rtol=1e-6)
    with pytest.raises(ValueError):
        fit.predict(type="probability")


def test_family_objects_and_nagq0():
    rng = np.random.default_rng(4)
    df = _sim_scalar(rng, [10] * 14)
    a = _fit("y ~ x + (1 | g)", df, family=families.binomial("probit"))
    b = _fit("y ~ x + (1 | g)", df, family="binomial", link="probit")
    assert a.link == "probit" and a.family == "binomial"
    np.testing.assert_allclose(a.fixef.to_numpy(), b.fixef.to_numpy(), rtol=1e-10)
    lap = _fit("y ~ x + (1 | g)", df)
    zero = _fit("y ~ x + (1 | g)", df, nagq=0)
    assert zero.nagq == 0 and zero.vcov_method == "RX"
    # nAGQ = 0 estimates are close to, not equal to, the Laplace estimates
    np.testing.assert_allclose(zero.fixef.to_numpy(), lap.fixef.to_numpy(), atol=0.1)
    assert "nAGQ = 0" in str(zero.summary())


@pytest.mark.parametrize("formula, family, link", [
    ("y ~ x + (1 | g)", "binomial", "logit"),
    ("y ~ x + (1 | g)", "binomial", "cloglog"),
    ("y ~ x + (1 | g) + (1 | h)", "binomial", "logit"),
    ("cnt ~ x + (1 | g) + (1 | h)", "poisson", "log"),
])
def test_newton_and_bobyqa_reach_the_same_optimum(formula, family, link):
    rng = np.random.default_rng(17)
    n, G, H = 600, 30, 7
    g, h = rng.integers(0, G, n), rng.integers(0, H, n)
    x = rng.standard_normal(n)
    eta = 0.2 + 0.6 * x + 0.9 * rng.standard_normal(G)[g] + 0.5 * rng.standard_normal(H)[h]
    df = pd.DataFrame({"y": (rng.random(n) < special.expit(eta)).astype(float),
                       "cnt": rng.poisson(np.exp(0.5 * eta)).astype(float), "x": x,
                       "g": [f"g{k:02d}" for k in g], "h": [f"h{k}" for k in h]})
    a = _fit(formula, df, family=family, link=link)
    b = _fit(formula, df, family=family, link=link, control={"optimizer": "bobyqa"})
    assert a.optinfo["optimizer"] == "newton" and b.optinfo["optimizer"] == "bobyqa"
    assert a.loglik >= b.loglik - 1e-7  # Newton's optimum is at least as good
    assert a.loglik == pytest.approx(b.loglik, abs=1e-5)
    np.testing.assert_allclose(a.fixef.to_numpy(), b.fixef.to_numpy(), atol=2e-3 * a.se.to_numpy().min())
    np.testing.assert_allclose(a.theta.to_numpy(), b.theta.to_numpy(), atol=2e-3)
    # Hessians from the exact gradient and from deriv12 (criterion values) agree
    np.testing.assert_allclose(a.se.to_numpy(), b.se.to_numpy(), rtol=2e-3)
    assert a.optinfo["feval"] < b.optinfo["feval"]


def test_exact_gradient_matches_finite_differences_from_python():
    rng = np.random.default_rng(23)
    n = 400
    g, h = rng.integers(0, 25, n), rng.integers(0, 5, n)
    x = rng.standard_normal(n)
    y = rng.poisson(np.exp(0.3 + 0.4 * x + 0.6 * rng.standard_normal(25)[g])).astype(float)
    df = pd.DataFrame({"y": y, "x": x, "g": [f"g{k}" for k in g], "h": [f"h{k}" for k in h]})
    fit = _fit("y ~ x + (1 | g) + (1 | h)", df, family="poisson")
    pb = fit._problem
    assert pb.has_gradient
    x0 = np.array([0.7, 0.3, 0.2, 0.5])
    f0, g0 = pb.devfun_grad(x0)
    assert f0 == pytest.approx(pb.devfun(x0), rel=1e-13)
    fd, _ = deriv12(pb.devfun, x0)
    np.testing.assert_allclose(g0, fd, rtol=1e-6, atol=1e-6)


def test_deriv12_is_exact_for_quadratics():
    A = np.array([[4.0, 1.0, 0.5], [1.0, 3.0, -0.2], [0.5, -0.2, 2.0]])
    b = np.array([0.3, -1.0, 2.0])

    def f(x):
        return 0.5 * x @ A @ x + b @ x

    x0 = np.array([0.00005, 1.0, -2.0])
    g, H = deriv12(f, x0, lower=np.array([0.0, -np.inf, -np.inf]))  # first step hits the bound
    np.testing.assert_allclose(H, A, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(g, A @ x0 + b, rtol=1e-6, atol=1e-6)


# --------------------------------------------------------------------------------------------
# bad input
# --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def small():
    rng = np.random.default_rng(0)
    df = _sim_scalar(rng, [5] * 8)
    df["h"] = [f"h{k % 3}" for k in range(len(df))]
    df["cnt"] = np.arange(len(df)) % 4
    return df


@pytest.mark.parametrize("kw, exc, match", [
    (dict(formula="y2 ~ x + (1 | g)"), ml.DataError, "outside"),
    (dict(formula="yp ~ x + (1 | g)"), ml.DataError, "0/1"),
    (dict(formula="yneg ~ x + (1 | g)", family="poisson"), ml.DataError, "negative"),
    (dict(formula="yfrac ~ x + (1 | g)", family="poisson"), ml.DataError, "integers"),
    (dict(formula="y3 ~ x + (1 | g)"), ml.DataError, "3 levels"),
    (dict(formula="y ~ x + (1 | g) + (1 | h)", nagq=5), ml.ModelSpecError, "single scalar"),
    (dict(formula="y ~ x + (x | g)", nagq=9), ml.ModelSpecError, "single scalar"),
    (dict(formula="y ~ x + (1 | g)", family="Gamma"), ml.DataError, "must be positive"),
    (dict(formula="yfrac ~ x + (1 | g)", family="negative.binomial"), ml.DataError, "integers"),
    (dict(formula="yneg ~ x + (1 | g)", family="negative_binomial", nb_theta=2.0), ml.DataError, "negative"),
    (dict(formula="cnt ~ x + (1 | g)", family="negative.binomial", nb_theta=-1.0), ml.ModelSpecError, "nb_theta"),
    (dict(formula="cnt ~ x + (1 | g)", family="poisson", nb_theta=2.0), ml.ModelSpecError, "nb_theta"),
    (dict(formula="y ~ x + (1 | g)", family="gaussian"), ml.ModelSpecError, "lmer"),
    (dict(formula="cnt ~ x + (1 | g)", family="inverse.gaussian", nagq=5), ml.ModelSpecError, "nagq > 1"),
    (dict(formula="y ~ x + (1 | g)", family="tweedie"), ml.ModelSpecError, "unknown family"),
    (dict(formula="y ~ x + (1 | g)", link="log10"), ml.ModelSpecError, "link"),
    (dict(formula="cnt ~ x + (1 | g)", family="poisson", link="logit"), ml.ModelSpecError, "link"),
    (dict(formula="y ~ x + (1 | g)", nagq=-1), ml.ModelSpecError, "nagq"),
    (dict(formula="y ~ x + (1 | g)", control={"tolPwrss": 1}), ml.ModelSpecError, "control"),
])
def test_bad_input_raises_clear_errors(small, kw, exc, match):
    df = small.copy()
    df["y2"] = df.y * 2
    df["yp"] = np.where(df.y == 1, 0.75, 0.25)
    df["yneg"] = df.cnt - 1.0
    df["yfrac"] = df.cnt + 0.5
    df["y3"] = pd.Categorical(np.array(["a", "b", "c"])[np.arange(len(df)) % 3])
    kw = dict(kw)
    formula = kw.pop("formula")
    with pytest.raises(exc, match=match) as info:
        ml.glmer(formula, df, **kw)
    assert isinstance(info.value, ml.MultilevelError)


def test_glmer_is_exported():
    assert "glmer" in ml.__all__ and ml.glmer is not None
