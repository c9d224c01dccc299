"""Errors raised by the compiled core reach Python as the classes of ``multilevel.errors``.

Each case calls ``multilevel._core`` directly (no formula layer in between), so a bare
ValueError/RuntimeError from the bindings, or a wrong mapping of a core error variant,
fails here. The classes still derive from ValueError/RuntimeError, which older callers
catch.
"""
from __future__ import annotations

import numpy as np
import pytest

from multilevel import _core
from multilevel.errors import DataError, FitError, ModelSpecError, MultilevelError


def _intercepts(n: int, nlevs: list[int], rng: np.random.Generator):
    refs = [np.ascontiguousarray(np.arange(n, dtype=np.uint32) % m) for m in nlevs]
    z = [np.ones((n, 1)) for _ in nlevs]
    lambdas = [[(0, 0, k)] for k in range(len(nlevs))]
    x = np.ones((n, 1))
    return refs, z, lambdas, x


def _glmm(nlevs=(6, 3), n=60, y=None, family="binomial", link="logit", **kw):
    rng = np.random.default_rng(1)
    refs, z, lambdas, x = _intercepts(n, list(nlevs), rng)
    if y is None:
        y = (rng.random(n) < 0.4).astype(float)
    return _core.GlmmCore(refs, z, list(nlevs), lambdas, x, y, family, link, **kw)


def _lmm(n=40, y=None, **kw):
    rng = np.random.default_rng(2)
    refs, z, lambdas, x = _intercepts(n, [5], rng)
    if y is None:
        y = rng.normal(size=n)
    return _core.LmmCore(refs, z, [5], lambdas, x, y, **kw)


def _check(excinfo, cls, *words):
    err = excinfo.value
    assert type(err) is cls, f"{type(err).__name__} is not {cls.__name__}"
    assert isinstance(err, MultilevelError)
    for w in words:
        assert w in str(err), f"{w!r} not in {str(err)!r}"


def test_lmm_wrong_lengths_are_data_errors():
    with pytest.raises(DataError) as e:
        _lmm(w=np.ones(39))
    _check(e, DataError, "weights", "39", "40")
    with pytest.raises(ValueError):  # older callers catch ValueError
        _lmm(w=np.ones(39))


def test_lmm_per_term_lists_must_agree():
    refs, z, lambdas, x = _intercepts(10, [2], np.random.default_rng(0))
    with pytest.raises(DataError) as e:
        _core.LmmCore(refs, z, [2, 3], lambdas, x, np.zeros(10))
    _check(e, DataError, "one entry per term")


def test_lmm_level_out_of_range_is_a_data_error():
    refs, z, lambdas, x = _intercepts(10, [4], np.random.default_rng(0))
    with pytest.raises(DataError) as e:
        _core.LmmCore(refs, z, [3], lambdas, x, np.zeros(10))
    _check(e, DataError, "level 3", "nlev 3")


def test_lmm_lambda_not_lower_is_a_model_spec_error():
    n = 10
    refs = [np.arange(n, dtype=np.uint32) % 2]
    z = [np.ones((n, 2))]
    with pytest.raises(ModelSpecError) as e:
        _core.LmmCore(refs, z, [2], [[(0, 0, 0), (0, 1, 1)]], np.ones((n, 1)), np.zeros(n))
    _check(e, ModelSpecError, "not lower")


def test_lmm_short_theta_is_a_data_error():
    m = _lmm()
    with pytest.raises(DataError) as e:
        m.objective(np.zeros(0), False)
    _check(e, DataError, "theta", "need 1")


def test_lmm_dense_block_too_large():
    n = 12_500
    refs = [np.zeros(n, dtype=np.uint32), np.arange(n, dtype=np.uint32)]
    z = [np.ones((n, 1)), np.ones((n, 1))]
    with pytest.raises(ModelSpecError) as e:
        _core.LmmCore(refs, z, [1, n], [[(0, 0, 0)], [(0, 0, 1)]], np.ones((n, 1)), np.zeros(n))
    _check(e, ModelSpecError, "12502 x 12502", "at most 12000")


def test_lmm_non_contiguous_input_is_a_data_error():
    y = np.zeros(80)[::2]
    with pytest.raises(DataError) as e:
        _lmm(y=y)
    _check(e, DataError, "y", "C-contiguous")


def test_lmm_fitted_with_wrong_beta():
    m = _lmm()
    with pytest.raises(DataError) as e:
        m.fitted(np.zeros(3), [np.zeros(5)])
    _check(e, DataError, "beta has 3 values")


def test_glmm_crossed_dense_block_too_large():
    """The crossed solver's dense block (levels after term 0, plus X) is refused before it
    is allocated, with its size in the message."""
    n = 13_000
    refs = [np.zeros(n, dtype=np.uint32), np.arange(n, dtype=np.uint32)]
    z = [np.ones((n, 1)), np.ones((n, 1))]
    y = (np.arange(n) % 2).astype(float)
    with pytest.raises(ModelSpecError) as e:
        _core.GlmmCore(refs, z, [1, n], [[(0, 0, 0)], [(0, 0, 1)]], np.ones((n, 1)), y, "binomial", "logit")
    _check(e, ModelSpecError, "13000 levels", "13001 x 13001", "at most 12000")


def test_glmm_general_dense_block_too_large():
    n = 6_100
    refs = [np.zeros(n, dtype=np.uint32), np.arange(n, dtype=np.uint32)]
    z = [np.ones((n, 1)), np.ones((n, 2))]
    y = (np.arange(n) % 2).astype(float)
    with pytest.raises(ModelSpecError) as e:
        _core.GlmmCore(refs, z, [1, n], [[(0, 0, 0)], [(0, 0, 1), (1, 1, 2)]], np.ones((n, 1)), y,
                       "binomial", "logit")
    _check(e, ModelSpecError, "12200 coefficients", "12202 x 12202")


def test_glmm_unknown_family_and_link():
    with pytest.raises(ModelSpecError) as e:
        _glmm(family="weibull")
    _check(e, ModelSpecError, "weibull")
    # the negative binomial needs its theta
    with pytest.raises(ModelSpecError) as e:
        _glmm(family="negative.binomial", link="log")
    _check(e, ModelSpecError, "theta")
    with pytest.raises(ModelSpecError) as e:
        _glmm(link="cauchit")
    _check(e, ModelSpecError, "cauchit")


def test_glmm_response_outside_support_is_a_data_error():
    with pytest.raises(DataError) as e:
        _glmm(y=np.full(60, 1.5))
    _check(e, DataError, "binomial response")
    with pytest.raises(DataError) as e:
        _glmm(y=np.zeros(60), family="Gamma", link="log")
    _check(e, DataError, "Gamma response must be positive")
    with pytest.raises(DataError) as e:
        _glmm(y=np.full(60, -1.0), family="poisson", link="log")
    _check(e, DataError, "Poisson response")


def test_glmm_wrong_offset_length_is_a_data_error():
    with pytest.raises(DataError) as e:
        _glmm(offset=np.zeros(7))
    _check(e, DataError, "offset", "length 7", "expected 60")


def test_glmm_agq_on_crossed_terms_is_a_model_spec_error():
    m = _glmm()
    nodes, weights = _core.gauss_hermite(3)
    assert np.isinf(m.agq(np.ones(2), np.zeros(1), nodes, weights))  # agq reports inf ...
    with pytest.raises(ModelSpecError) as e:
        _core.gauss_hermite(0)  # ... the rule itself raises
    _check(e, ModelSpecError, "nodes")


def test_glmm_set_u_and_b_wrong_shapes():
    m = _glmm()
    with pytest.raises(DataError) as e:
        m.set_u([np.zeros(6)])
    _check(e, DataError, "one entry per term")
    with pytest.raises(DataError) as e:
        m.b(np.ones(1))
    _check(e, DataError, "theta has 1 values", "need 2")


def test_glmm_pirls_failure_is_a_fit_error():
    """try_laplace reports why PIRLS failed: with one iteration allowed it cannot converge."""
    m = _glmm()
    m.set_control(maxit=1)
    with pytest.raises(FitError) as e:
        m.try_laplace(np.array([3.0, 3.0]), np.array([0.5]))
    _check(e, FitError, "PIRLS")
    assert isinstance(e.value, RuntimeError)
    with pytest.raises(DataError) as e:
        m.try_laplace(np.array([1.0, 1.0]), np.zeros(4))
    _check(e, DataError, "beta has 4 values", "expected 1")


def test_glmm_joint_pirls_failure_is_a_fit_error():
    """try_laplace_joint (nAGQ = 0) reports why PIRLS failed where laplace_joint says inf."""
    m = _glmm()
    m.set_control(maxit=1)
    assert np.isinf(m.laplace_joint(np.array([3.0, 3.0])))
    with pytest.raises(FitError) as e:
        m.try_laplace_joint(np.array([3.0, 3.0]))
    _check(e, FitError, "PIRLS did not converge in 1 iterations")
    m.set_control(maxit=200)
    assert np.isfinite(m.try_laplace_joint(np.array([3.0, 3.0])))
