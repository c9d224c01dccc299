"""One module per family: the registry and the family-owned response checks."""
from __future__ import annotations

import numpy as np
import pytest

from multilevel.errors import DataError
from multilevel.families import (_FAMILIES, LINKS, Family, Gamma, Link, binomial, get_family, inverse_gaussian,
                                 negative_binomial, poisson, theta_ml)


def test_registry_maps_names_to_classes():
    assert _FAMILIES == {"binomial": binomial, "poisson": poisson, "Gamma": Gamma,
                         "inverse.gaussian": inverse_gaussian, "negative.binomial": negative_binomial}
    for name, cls in _FAMILIES.items():
        kw = {"theta": 1.5} if name == "negative.binomial" else {}
        assert issubclass(cls, Family) and get_family(name, **kw).name == name
        for alias in cls.aliases:  # R's spelling and the snake_case alias give the same family
            assert get_family(alias, **kw) == get_family(name, **kw)
        assert all(isinstance(LINKS[k], Link) for k in cls.links)


def test_binomial_owns_its_response_rules():
    fam = binomial()
    with pytest.raises(DataError, match="outside"):
        fam.check_response(np.array([0.0, 2.0]), None, None, False, name="y")
    with pytest.raises(DataError, match="0/1"):
        fam.check_response(np.array([0.0, 0.5]), None, None, False, name="y")
    with pytest.raises(DataError, match="3 levels"):
        fam.check_response(np.array([0.0, 1.0]), None, ["a", "b", "c"], False, name="y")
    assert fam.check_response(np.array([0.0, 1.0]), None, ["a", "b"], False) == []
    recs = fam.check_response(np.array([0.5, 0.25]), np.array([3.0, 4.0]), None, True)
    assert [r.code for r in recs] == ["non_integer_successes"]


def test_poisson_owns_its_response_rules():
    fam = poisson()
    with pytest.raises(DataError, match="negative"):
        fam.check_response(np.array([0.0, -1.0]), None, None, False, name="y")
    with pytest.raises(DataError, match="integers"):
        fam.check_response(np.array([0.0, 1.5]), None, None, False, name="y")
    assert fam.check_response(np.array([0.0, 3.0]), None, None, False) == []


# ---- Gamma, inverse Gaussian, negative binomial ------------------------------------------

def _frame(seed=3):
    import pandas as pd

    rng = np.random.default_rng(seed)
    g = np.repeat(np.arange(25), 12)
    x = rng.normal(size=g.size)
    mu = np.exp(0.8 + 0.3 * x + rng.normal(0, 0.4, 25)[g])
    return pd.DataFrame({"pos": rng.gamma(5.0, mu / 5.0), "cnt": rng.negative_binomial(2.0, 2.0 / (2.0 + mu)).astype(float),
                         "x": x, "g": g.astype(str)})


@pytest.mark.parametrize("family, column, bad, match", [
    ("Gamma", "pos", 0.0, "must be positive"),
    ("inverse_gaussian", "pos", -1.0, "must be positive"),
    ("negative_binomial", "cnt", 1.5, "not integers"),
    ("negative.binomial", "cnt", -2.0, "negative values"),
])
def test_dispersion_and_nb_families_own_their_response_rules(family, column, bad, match):
    import multilevel as ml

    df = _frame()
    df.loc[3, column] = bad
    with pytest.raises(DataError, match=match) as e:
        ml.glmer(f"{column} ~ x + (1 | g)", df, family=family, link="log", nb_theta=2.0 if "neg" in family else None)
    assert f"'{column}'" in str(e.value)  # the message names the column


def test_family_simulate_has_the_family_moments():
    rng = np.random.default_rng(7)
    mu = np.full(200_000, 2.5)
    y = Gamma("log").simulate(mu, rng, sigma=0.4)
    assert y.mean() == pytest.approx(2.5, rel=5e-3) and y.var() == pytest.approx(0.16 * 2.5**2, rel=2e-2)
    y = inverse_gaussian("log").simulate(mu, rng, sigma=0.3)
    assert y.mean() == pytest.approx(2.5, rel=5e-3) and y.var() == pytest.approx(0.09 * 2.5**3, rel=3e-2)
    y = negative_binomial(theta=1.7).simulate(mu, rng)
    assert y.mean() == pytest.approx(2.5, rel=1e-2) and y.var() == pytest.approx(2.5 + 2.5**2 / 1.7, rel=3e-2)
    assert np.all(y == np.round(y))


@pytest.mark.parametrize("family, column, kw", [
    ("Gamma", "pos", {}), ("inverse.gaussian", "pos", {}), ("negative.binomial", "cnt", {"nb_theta": 2.0})])
def test_fit_simulate_and_predict_on_the_response_scale(family, column, kw):
    import warnings

    import multilevel as ml

    df = _frame()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = ml.glmer(f"{column} ~ x + (1 | g)", df, family=family, link="log", **kw)
    sims = fit.simulate(50, seed=11)
    assert sims.shape == (50, len(df)) and np.all(np.isfinite(sims))
    assert np.all(sims > 0) if family != "negative.binomial" else np.all(sims >= 0)
    # the simulated means follow the fitted model (fixed part and random effects redrawn)
    assert np.mean(sims) == pytest.approx(np.mean(df[column]), rel=0.25)
    np.testing.assert_array_equal(sims, fit.simulate(50, seed=11))
    # predict(type="response") is the inverse link of the linear predictor
    nd = df.iloc[:5].copy()
    eta = fit.predict(nd, type="link").to_numpy()
    np.testing.assert_allclose(fit.predict(nd, type="response").to_numpy(), np.exp(eta), rtol=1e-12)
    np.testing.assert_allclose(fit.predict(type="response").to_numpy(), fit.fitted().to_numpy(), rtol=1e-12)


def test_negative_binomial_theta_fixed_or_estimated():
    import warnings

    import multilevel as ml

    df = _frame()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est = ml.glmer("cnt ~ x + (1 | g)", df, family="negative_binomial")
        fixed = ml.glmer("cnt ~ x + (1 | g)", df, family=negative_binomial(theta=est.nb_theta))
        lo = ml.glmer("cnt ~ x + (1 | g)", df, family="negative.binomial", nb_theta=est.nb_theta * 0.8)
        hi = ml.glmer("cnt ~ x + (1 | g)", df, family="negative.binomial", nb_theta=est.nb_theta * 1.25)
    # glmer.nb's search ends at the maximum over theta of the profile logLik
    assert fixed.loglik == pytest.approx(est.loglik, abs=1e-8)
    assert est.loglik > lo.loglik and est.loglik > hi.loglik
    assert est.npar == len(est.fixef) + 1 + 1 and fixed.family_string.startswith("Negative Binomial(")
    assert est.optinfo["nb"]["nevals"] >= 5
    # theta.ml: the score is zero at its estimate
    from scipy import special
    y, mu = df["cnt"].to_numpy(float), est.fitted().to_numpy()
    t = theta_ml(y, mu, limit=50, eps=1e-12)
    score = np.sum(special.digamma(t + y) - special.digamma(t) + np.log(t) + 1 - np.log(t + mu) - (y + t) / (mu + t))
    assert abs(score) < 1e-8


def test_anova_and_plots_take_dispersion_fits():
    import warnings

    import matplotlib

    matplotlib.use("Agg")
    import multilevel as ml
    from multilevel.report import plots

    df = _frame()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        f0 = ml.glmer("pos ~ 1 + (1 | g)", df, family="Gamma", link="log")
        f1 = ml.glmer("pos ~ x + (1 | g)", df, family="Gamma", link="log")
    tab = ml.anova(f0, f1)
    assert list(tab["npar"]) == [3, 4]  # fixed effects + theta + the dispersion, as lme4
    assert tab["Chisq"].iloc[1] == pytest.approx(2 * (f1.loglik - f0.loglik))
    for draw in (plots.plot_caterpillar, plots.plot_diagnostics, plots.plot_coefficients):
        draw(f1)
    plots.plot_fitted_lines(f1, "x")


def test_profile_of_a_dispersion_fit_is_refused_as_in_lme4():
    import warnings

    import multilevel as ml

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = ml.glmer("pos ~ x + (1 | g)", _frame(), family="Gamma", link="log")
    with pytest.raises(ml.ModelSpecError, match="scale parameter"):
        fit.confint()
    assert np.isfinite(fit.confint(method="wald").iloc[1:].to_numpy()).all()
