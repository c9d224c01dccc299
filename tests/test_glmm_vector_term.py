"""GLMMs with one vector-valued random-effect term (``(1 + x | g)``): the engine's block
representation gives the exact gradient of the Laplace criterion, so glmer takes Newton
steps instead of BOBYQA over (theta, beta).

Checked here: the gradient against central finite differences of the criterion (binomial
and Poisson, with prior weights and an offset), Newton reaching at least the optimum of the
BOBYQA path (kept as ``control={"optimizer": "bobyqa"}``) and of lme4 on Contraception
``(urban | district)``, and the chunked path agreeing. The Rust engine has its own tests
(brute-force Laplace, nAGQ = 0, conditional variances, R_X; ``cargo test -p multilevel-core
block``).
"""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import special

import multilevel as ml
from tests.conftest import read_dataset

#: lme4 1.1-31 (R 4.2), glmer(use ~ age + I(age^2) + urban + livch + (urban | district),
#: Contraception, binomial, glmerControl(optimizer = "bobyqa")), on this data file: logLik
#: -1180.3053704210 (lme4 warns max|grad| = 0.003, it stops short of the optimum); the default
#: Nelder-Mead gives -1180.3053704736.
LME4_CONTRACEPTION_LOGLIK = -1180.3053704210
CONTRACEPTION = "use ~ age + I(age^2) + urban + livch + (urban | district)"


def _fit(*args, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ml.glmer(*args, **kw)


def _contraception() -> pd.DataFrame:
    return read_dataset("Contraception")


def _sim_slopes(rng, ngroups=25, family="binomial") -> pd.DataFrame:
    rows = []
    for j in range(ngroups):
        m = int(rng.integers(4, 30))
        b0, b1 = rng.multivariate_normal([0, 0], [[0.8, 0.2], [0.2, 0.3]])
        x = rng.standard_normal(m)
        eta = -0.3 + 0.6 * x + b0 + b1 * x
        w = rng.uniform(0.5, 2.0, m)
        off = 0.3 * rng.standard_normal(m)
        if family == "binomial":
            y = (rng.random(m) < special.expit(eta + off)).astype(float)
        else:
            y = rng.poisson(np.exp(eta + off)).astype(float)
        rows.append(pd.DataFrame({"y": y, "x": x, "w": w, "off": off, "g": f"g{j:02d}"}))
    return pd.concat(rows, ignore_index=True)


def _check_gradient(problem, x0: np.ndarray, rel: float = 1e-5) -> None:
    f0, g = problem.devfun_grad_c(x0)
    assert g is not None and np.all(np.isfinite(g))
    # steps of 1e-5 on the scale of eta: a column of X in units of 400 (Contraception's
    # I(age^2)) would otherwise make the third-order error of the difference 1e-3
    nt = x0.size - problem.p
    scale = np.r_[np.ones(nt), np.maximum(1.0, np.abs(problem._X).max(axis=0))]
    for j in range(x0.size):
        h = 1e-5 / scale[j]
        xp, xm = x0.copy(), x0.copy()
        xp[j] += h
        xm[j] -= h
        fd = (problem.devfun_c(xp) - problem.devfun_c(xm)) / (2 * h)
        assert abs(fd - g[j]) <= rel * (1 + abs(fd)), (j, fd, g[j])


def test_contraception_gradient_matches_finite_differences():
    fit = _fit(CONTRACEPTION, _contraception(), family="binomial")
    pr = fit.getme("problem")
    assert pr.has_gradient
    xopt = pr.x_in(np.concatenate([fit.getme("theta"), fit.getme("beta")]))
    rng = np.random.default_rng(3)
    for shift in (0.0, 0.1, 0.3):
        x0 = xopt + shift * rng.standard_normal(xopt.size) * np.r_[np.ones(3), 0.2 * np.ones(xopt.size - 3)]
        x0[[0, 2]] = np.abs(x0[[0, 2]])
        _check_gradient(pr, x0)


@pytest.mark.parametrize("family", ["binomial", "poisson"])
def test_gradient_with_weights_and_offset(family):
    df = _sim_slopes(np.random.default_rng(11 if family == "binomial" else 12), family=family)
    fit = _fit("y ~ x + (1 + x | g)", df, family=family, weights="w", offset="off")
    pr = fit.getme("problem")
    assert pr.has_gradient and fit.optinfo["optimizer"] == "newton"
    xopt = pr.x_in(np.concatenate([fit.getme("theta"), fit.getme("beta")]))
    for x0 in (xopt, xopt + np.r_[0.2, -0.1, 0.15, 0.1, -0.1]):
        _check_gradient(pr, x0)
    # the optimum: no lower point in BOBYQA's hands
    bob = _fit("y ~ x + (1 + x | g)", df, family=family, weights="w", offset="off",
               control={"optimizer": "bobyqa"})
    assert bob.optinfo["optimizer"] == "bobyqa"
    assert fit.loglik >= bob.loglik - 1e-8 * abs(bob.loglik)


def test_contraception_newton_reaches_the_optimum():
    df = _contraception()
    fit = _fit(CONTRACEPTION, df, family="binomial")
    assert fit.optinfo["optimizer"] == "newton" and fit.converged, fit.warnings
    bob = _fit(CONTRACEPTION, df, family="binomial", control={"optimizer": "bobyqa"})
    assert bob.optinfo["optimizer"] == "bobyqa"
    # at least BOBYQA's optimum and lme4's (which stops short: see the constant's note)
    assert fit.loglik >= bob.loglik - 1e-8 * abs(bob.loglik)
    assert fit.loglik >= LME4_CONTRACEPTION_LOGLIK - 1e-6 * abs(LME4_CONTRACEPTION_LOGLIK)
    assert abs(fit.loglik - LME4_CONTRACEPTION_LOGLIK) < 1e-3
    # the same estimates (BOBYQA's stop is within its tolerances of them)
    assert np.allclose(fit.fixef.to_numpy(), bob.fixef.to_numpy(), atol=2e-3)
    assert np.allclose(fit.theta.to_numpy(), bob.theta.to_numpy(), atol=2e-3)
    # Newton needs a handful of evaluations where BOBYQA over (theta, beta) needs hundreds
    assert fit.optinfo["feval"] < bob.optinfo["feval"] / 4
