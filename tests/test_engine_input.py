"""The engine's input: arrays only, buildable from row chunks, covariance structures."""
import numpy as np
import pytest

import multilevel as ml
from multilevel.covariance import Diagonal, Unstructured, lambda_blocks, sdcor_to_theta, theta_to_sdcor
from multilevel.design import build_model_frame
from multilevel.engine.input import EngineInput
from multilevel.engine.lmm import LmmProblem
from multilevel.errors import DataError
from multilevel.models import engine_input


@pytest.fixture(scope="module")
def frame():
    return build_model_frame("Reaction ~ Days + (Days | Subject)", ml.datasets.load("sleepstudy"))


def _chunks(inp: EngineInput, cuts):
    edges = [0, *cuts, inp.nobs]
    for a, b in zip(edges[:-1], edges[1:]):
        yield EngineInput(y=inp.y[a:b], X=inp.X[a:b],
                          terms=tuple(t.__class__(refs=t.refs[a:b], Z=t.Z[a:b], n_levels=t.n_levels,
                                                  factor=t.factor, structure=t.structure) for t in inp.terms),
                          intercept=inp.intercept)


def test_chunked_input_gives_the_same_objective(frame):
    inp = engine_input(frame)
    whole = LmmProblem(inp, reml=True)
    chunked = LmmProblem(EngineInput.from_chunks(_chunks(inp, [7, 100, 150])), reml=True)
    th = np.array([0.9, 0.02, 0.2])
    assert chunked.objective(th) == whole.objective(th)


def test_chunks_must_share_the_structure(frame):
    inp = engine_input(frame)
    a, b = list(_chunks(inp, [90]))
    b = b.replace(intercept=None)
    with pytest.raises(DataError, match="share its structure"):
        EngineInput.from_chunks([a, b])
    with pytest.raises(DataError, match="X has"):
        EngineInput(y=inp.y, X=inp.X[:5], terms=inp.terms)


def test_the_input_carries_no_names(frame):
    inp = engine_input(frame)
    assert inp.intercept == 0 and inp.structures == [Unstructured(2)]
    for v in vars(inp).values():
        assert not isinstance(v, str)


def test_diagonal_structure_fits_as_uncorrelated_terms():
    """One Diagonal block is lme4's (1 + Days || Subject): same deviance at the same θ."""
    sleep = ml.datasets.load("sleepstudy")
    split = engine_input(build_model_frame("Reaction ~ Days + (1 | Subject) + (0 + Days | Subject)", sleep))
    full = engine_input(build_model_frame("Reaction ~ Days + (1 + Days | Subject)", sleep))
    diag = full.replace(terms=(full.terms[0].__class__(refs=full.terms[0].refs, Z=full.terms[0].Z,
                                                         n_levels=18, factor=0, structure=Diagonal(2)),))
    th = np.array([0.95, 0.23])
    assert LmmProblem(diag, reml=True).objective(th) == pytest.approx(
        LmmProblem(split, reml=True).objective(th), rel=1e-12)


@pytest.mark.parametrize("cov", [Unstructured(1), Unstructured(3), Diagonal(3)])
def test_sdcor_round_trip(cov):
    rng = np.random.default_rng(1)
    theta = rng.uniform(0.2, 1.5, cov.ntheta) * np.where(cov.lower() == 0, 1, rng.choice([-1, 1], cov.ntheta))
    sd = theta_to_sdcor(theta, [cov], 2.0)
    L = lambda_blocks(theta, [cov])[0]
    S = 4.0 * L @ L.T
    assert np.allclose(sd[cov.diagonal()], np.sqrt(np.diag(S)))
    back = sdcor_to_theta(sd, [cov], 2.0)
    Lb = lambda_blocks(back, [cov])[0]
    assert np.allclose(Lb @ Lb.T, L @ L.T, rtol=1e-12)
