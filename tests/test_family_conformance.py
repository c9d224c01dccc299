"""The compiled engine's families agree with the Python families.

PIRLS runs on the Rust copy of each family (``multilevel._core``); the Python copy
(``multilevel.families``) computes the reported deviance, AIC and residuals. For every
registered family and each link it accepts, both are evaluated on the same random rows
(binomial proportions with trial weights, Bernoulli rows, Poisson counts; y = 0 and y = 1
boundaries; eta out to where lme4's clamps act) and must agree. A new family or link in the
registry is picked up here without editing the test.
"""
from __future__ import annotations

import numpy as np
import pytest
from scipy import special

from multilevel import _core
from multilevel import families as fam_mod
from multilevel.errors import ModelSpecError
from multilevel.families import LINKS, get_family


#: parameters of the families that have one (the negative binomial's theta)
_PARAMS = {"negative.binomial": {"theta": 2.7}}


def _registry():
    out = []
    for name in sorted(fam_mod._FAMILIES):
        for link in sorted(LINKS):
            try:
                f = get_family(name, link, **_PARAMS.get(name, {}))
            except (ModelSpecError, ValueError, KeyError):
                continue  # this family does not take this link
            out.append(pytest.param(f, id=f"{name}-{link}"))
    return out


def _rows(family, rng, n=400):
    """y, eta, weights and binomial trials for the family, with boundary rows."""
    link = family.link.name
    if family.name == "binomial":
        bern = rng.random(n) < 0.5
        m = np.where(bern, 1.0, rng.integers(1, 21, n).astype(float))
        k = np.floor(rng.random(n) * (m + 1))  # 0..m: y = 0 and y = 1 included
        y = k / m
        wt = m.copy()
        ntrials = m.copy()
    elif family.name in ("Gamma", "inverse.gaussian"):
        y = rng.gamma(2.0, 1.5, n) + 1e-3  # positive
        wt = 0.5 + 2.0 * rng.random(n)
        ntrials = None
    else:
        y = rng.integers(0, 12, n).astype(float)
        y[:10] = 0.0
        wt = 0.5 + 2.0 * rng.random(n)
        ntrials = None
    eta = rng.uniform(-6.0, 6.0, n)
    extremes = np.array([-40.0, -36.04, -20.0, -8.0, 8.0, 20.0, 36.04, 40.0])
    idx = rng.choice(n, n // 5, replace=False)
    eta[idx] = rng.choice(extremes, idx.size)
    if link == "probit":
        # below -37.5 pnorm underflows to 0, which lme4 (and the engine) do not clamp: both
        # deviances are then infinite or undefined, nothing to compare
        eta = np.maximum(eta, -37.0)
    if link == "log" and family.name == "binomial":
        eta = -np.abs(eta) - 1e-3  # mu = exp(eta) must stay a probability
    elif link in ("identity", "sqrt"):
        eta = 0.05 + np.minimum(np.abs(eta), 30.0)  # a positive Poisson mean
    elif link in ("inverse", "1/mu^2"):
        eta = 0.02 + np.minimum(np.abs(eta), 30.0)  # a positive mean
    if family.name in ("Gamma", "inverse.gaussian") and link == "log":
        eta = np.clip(eta, -30.0, 30.0)  # keep y / mu and mu^3 finite
    return y, eta, wt, ntrials


def _close(a, b, rtol, atol=0.0):
    a, b = np.asarray(a, float), np.asarray(b, float)
    return np.abs(a - b) <= rtol * np.maximum(np.abs(a), np.abs(b)) + atol


@pytest.mark.parametrize("family", _registry())
def test_engine_family_matches_python(family):
    rng = np.random.default_rng(hash(family.name + family.link.name) % 2**32)
    y, eta, wt, ntrials = _rows(family, rng)
    r = _core.family_eval(family.name, family.link.name, y, eta, wt, ntrials, family_param=family.param)
    mu = family.linkinv(eta)
    # mean and d mu / d eta: the same formulas and clamps (the engine's exp/log are its own,
    # accurate to ~1 ulp)
    assert np.all(_close(r["mu"], mu, 1e-13)), np.max(np.abs(r["mu"] - mu) / mu)
    assert np.all(_close(r["mu_eta"], family.mu_eta(eta), 1e-13))
    assert np.all(_close(r["variance"], family.variance(mu), 1e-13))
    # deviance residuals and aic: the engine forms them as constant - 2 (y log mu + (1 - y)
    # log(1 - mu)) from logs it computes from eta (the logit kernel: log(1 - mu) = -eta -
    # log1p(e^-eta), exact), Python (like R) from the rounded mean. log(1 - mu) of a mean
    # rounded to 1 ulp is off by up to ~eps / (1 - mu) (2e-9 relative at eta = 20, and the
    # clamp at |eta| > 36): that conditioning, not a kernel difference, bounds the
    # agreement, so it is the absolute tolerance here; elsewhere it is 1e-12 relative.
    py_dev = family.dev_resids(y, mu, wt)
    eps = np.finfo(float).eps
    if family.name == "binomial":
        cond = 2.0 * wt * (y * 4 * eps / mu + (1.0 - y) * 4 * eps / np.maximum(1.0 - mu, eps))
    elif family.name == "Gamma":
        # the engine forms the deviance as 2 w (log mu + y / mu - log y - 1): terms that
        # cancel where mu is close to y, so their rounding bounds the agreement
        cond = 8 * eps * wt * (y / mu + np.abs(np.log(mu)) + np.abs(np.log(y)) + 1.0)
    elif family.name == "inverse.gaussian":
        cond = 8 * eps * wt * (1.0 / y + 2.0 / mu + y / mu**2)
    elif family.name == "negative.binomial":
        th = family.param
        cond = 8 * eps * wt * ((y + th) * (np.abs(np.log(mu + th)) + np.abs(np.log(y + th)))
                               + special.xlogy(y, y) + y * np.abs(np.log(mu)) + 1.0)
    else:
        cond = 2.0 * wt * (y * 4 * eps + 4 * eps * mu)
    ok = _close(r["dev_resids"], py_dev, 1e-12, cond)
    assert np.all(ok), (y[~ok], eta[~ok], r["dev_resids"][~ok], py_dev[~ok])
    # -2 log-likelihood with constants (R's family$aic); binomial weights are the trials
    n = ntrials if ntrials is not None else np.ones_like(y)
    py_aic = family.aic(y, n, mu, wt)
    assert abs(r["aic"] - py_aic) <= 1e-12 * abs(py_aic) + cond.sum(), (r["aic"], py_aic)
    # deviance totals
    assert abs(r["dev_resids"].sum() - py_dev.sum()) <= 1e-12 * abs(py_dev.sum()) + cond.sum()


def test_registry_is_not_empty():
    ids = [p.id for p in _registry()]
    assert "binomial-logit" in ids and "poisson-log" in ids
    for fam in ("Gamma-inverse", "Gamma-log", "Gamma-identity", "inverse.gaussian-1/mu^2",
                "inverse.gaussian-inverse", "inverse.gaussian-log", "inverse.gaussian-identity",
                "negative.binomial-log"):
        assert fam in ids, fam
