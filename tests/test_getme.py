"""``fit.getme(name)``: the raw arrays inference and plots read (lme4's getME)."""
import numpy as np
import pytest

import multilevel as ml
from multilevel.errors import ModelSpecError


@pytest.fixture(scope="module")
def sleep():
    return ml.datasets.load("sleepstudy")


def test_getme_agrees_with_the_public_accessors(sleep):
    fit = ml.lmer("Reaction ~ Days + (Days | Subject)", sleep)
    np.testing.assert_array_equal(fit.getme("beta"), fit.fixef.to_numpy())
    np.testing.assert_array_equal(fit.getme("theta"), fit.theta.to_numpy())
    np.testing.assert_array_equal(fit.getme("vcov"), fit.vcov.to_numpy())
    assert fit.getme("sigma") == fit.sigma and fit.getme("loglik") == fit.loglik
    re = fit.ranef()
    np.testing.assert_array_equal(fit.getme("b")[0], re["Subject"].to_numpy())
    sd = np.sqrt(np.stack([np.diag(v) for v in fit.getme("condvar")[0]]))
    np.testing.assert_allclose(sd, re.condsd["Subject"].to_numpy(), rtol=1e-12)
    assert fit.getme("X").shape == (180, 2) and fit.getme("y").shape == (180,)
    assert fit.getme("problem") is not None


def test_getme_for_glmm_and_lm(sleep):
    cbpp = ml.datasets.load("cbpp")
    g = ml.glmer("cbind(incidence, size - incidence) ~ period + (1 | herd)", cbpp)
    np.testing.assert_array_equal(g.getme("beta"), g.fixef.to_numpy())
    assert g.getme("b")[0].shape == (15, 1)
    m = ml.lm("Reaction ~ Days", sleep)
    assert m.getme("sigma") == m.sigma
    with pytest.raises(ModelSpecError, match="'theta'"):
        m.getme("theta")


def test_unknown_name_is_a_clear_error(sleep):
    fit = ml.lmer("Reaction ~ Days + (1 | Subject)", sleep)
    with pytest.raises(ModelSpecError, match=r"getme\(\): unknown name 'Lambdat'.*known: "):
        fit.getme("Lambdat")
