"""lmer and glmer on Dask frames, on a LocalCluster of 2 worker processes (one cluster for the
module).

The same equality as for files (tests/test_chunked.py): logLik to 1e-10 relative, the same
estimates at the same theta to 1e-8; a worker killed during the accumulation pass gives the
same fit (Dask reruns its tasks); a malformed partition is a DataError naming the column.
GLMMs whose random effects nest in one factor (every such reference case): the equality of
tests/test_chunked_glmm.py with the partitions persisted on the workers; crossed GLMMs are
refused.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import multilevel as ml
from multilevel.errors import DataError

from conftest import contrasts_kw, fit_reference_case, load_case, load_case_frame
from test_chunked import _close, _rel, _synthetic

dd = pytest.importorskip("dask.dataframe")
distributed = pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def client():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                           dashboard_address=None, memory_limit="2GiB")
        c = distributed.Client(cluster)
    yield c
    c.close()
    cluster.close()


CASES = ["sleepstudy_slope_reml", "pastes_nested_reml", "star_missing_reml",
         "cbpp_weighted_lmm_reml", "exam_categorical_reml", "hsb_sector_sum_reml",
         "cake_ordered_temperature_reml"]


@pytest.mark.parametrize("case_id", CASES)
def test_reference_case_on_dask_equals_in_memory(client, case_id):
    case = load_case(case_id)
    df = load_case_frame(case)
    kw = {"weights": case["weights"]} if case.get("weights") else {}
    kw.update(contrasts_kw(case))
    a = fit_reference_case(case_id)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ml.MultilevelWarning)
        b = ml.lmer(case["formula"], dd.from_pandas(df, npartitions=5), reml=bool(case["REML"]),
                    **kw)
    assert type(b) is type(a) and b.nobs == a.nobs
    assert list(b.fixef.index) == list(a.fixef.index)
    assert _rel(b.loglik, a.loglik) < 1e-10
    th = a.getme("theta")
    sa, sb = a._problem.solution(th), b._problem.solution(th)
    assert np.all(np.abs(sb["beta"] - sa["beta"]) <= 1e-8 * np.maximum(np.abs(sa["beta"]),
                                                                       a.se.to_numpy()))
    assert np.all(np.abs(b.fixef.to_numpy() - a.fixef.to_numpy()) <= 1e-6 * a.se.to_numpy())


def test_transforms_weights_offsets_and_lazy_row_values(client):
    df = _synthetic()
    f = "y ~ scale(x) + center(z, by = g) + f + offset(off) + (1 + scale(x) | g)"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ml.MultilevelWarning)
        a = ml.lmer(f, df, weights="w")
        ddf = dd.from_pandas(df, npartitions=4)
        b = ml.lmer(f, ddf, weights="w")
    assert _rel(b.loglik, a.loglik) < 1e-10
    assert np.all(np.abs(b.fixef.to_numpy() - a.fixef.to_numpy()) <= 1e-3 * a.se.to_numpy())
    fitted = b.fitted()
    assert isinstance(fitted, dd.Series)  # lazy: computed where the partitions are
    got = fitted.compute()
    assert list(got.index) == list(a.fitted().index)
    assert _close(got, a.fitted(), 1e-4)
    res = b.residuals("pearson").compute()
    assert _close(res, a.residuals("pearson"), 1e-3)
    new = df.dropna()
    pred = b.predict(dd.from_pandas(new, npartitions=3))
    assert isinstance(pred, dd.Series)
    assert _close(pred.compute(), a.predict(new), 1e-4)


def _killer(part: pd.DataFrame, marker: str) -> pd.DataFrame:
    """Kills the worker process the first time it reaches the accumulation pass's first
    partition (its third read: classification, levels, accumulation)."""
    if len(part) and part.index[0] == 0:
        d = Path(marker)
        calls = len(list(d.glob("call*")))
        (d / f"call{calls}-{os.getpid()}").touch()
        if calls == 2:
            os._exit(1)
    return part


def test_a_worker_killed_during_accumulation_gives_the_same_fit(client, tmp_path):
    df = _synthetic(600)
    f = "y ~ x + f + (1 + z | g)"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ml.MultilevelWarning)
        a = ml.lmer(f, df)
        ddf = dd.from_pandas(df, npartitions=4).map_partitions(_killer, str(tmp_path),
                                                               meta=df.iloc[:0])
        b = ml.lmer(f, ddf)
    assert len(list(tmp_path.glob("call*"))) >= 4  # killed once, then rerun
    assert _rel(b.loglik, a.loglik) < 1e-10
    assert np.all(np.abs(b.fixef.to_numpy() - a.fixef.to_numpy()) <= 1e-3 * a.se.to_numpy())


def _text_x_late(part: pd.DataFrame) -> pd.DataFrame:
    """Numbers as text in the second partition (rows 100 on)."""
    if len(part) and part.index[0] >= 100:
        part = part.assign(x=part["x"].astype(str))
    return part


def test_a_malformed_partition_names_the_column(client):
    df = _synthetic(200)
    ddf = dd.from_pandas(df, npartitions=2).map_partitions(_text_x_late, meta=df.iloc[:0])
    with pytest.raises(DataError, match=r"Dask partition 1.*column 'x' is text"):
        ml.lmer("y ~ x + (1 | g)", ddf)


# -- GLMMs: partitions of whole groups persisted on the workers --------------------------------

def _glmm_cases() -> list[str]:
    from test_chunked_glmm import NESTED

    return list(NESTED)


#: every GLMM reference case the nested-partition path covers (one grouping factor, or
#: factors nested in one), as from Parquet in tests/test_chunked_glmm.py
GLMM_CASES = _glmm_cases()


def test_the_dask_glmm_cases_are_every_nested_case():
    assert len(GLMM_CASES) >= 10
    assert {"cbpp_binomial_agq25", "grouseticks_nb_laplace", "mmmec_poisson_offset_laplace",
            "oxboys_gamma_identity_laplace", "early_invgauss_log_laplace",
            "contraception_bernoulli_laplace"} <= set(GLMM_CASES)


@pytest.mark.parametrize("case_id", GLMM_CASES)
def test_glmm_reference_case_on_dask_equals_in_memory(client, case_id):
    """The rows shuffled by the grouping factor, each partition bound to the compiled engine
    on its worker; every evaluation one task per partition (tests/test_chunked_glmm.py has
    the equality checked here, at the optimum and at the same point)."""
    from test_chunked_glmm import _args, _shuffled, check_same_fit

    case = load_case(case_id)
    df = load_case_frame(case)
    kw = _args(case)
    a = _quiet_fit(ml.glmer, case["formula"], df, **kw)
    b = _quiet_fit(ml.glmer, case["formula"], dd.from_pandas(_shuffled(df), npartitions=4),
                   _keep_partitions=True, **kw)
    try:
        assert b.optinfo["chunked"]["partitions"] > 1
        check_same_fit(a, b)
    finally:
        b._problem.release()


def test_glmm_row_values_are_lazy_and_crossed_glmms_are_refused(client):
    from multilevel.models.glmer_chunked import CrossedGlmmError

    cbpp = ml.datasets.load("cbpp")
    f = "cbind(incidence, size - incidence) ~ period + (1 | herd)"
    a = ml.glmer(f, cbpp)
    b = ml.glmer(f, dd.from_pandas(cbpp, npartitions=3))
    mu = b.fitted()
    assert isinstance(mu, dd.Series)
    assert _close(mu.compute().sort_index(), a.fitted(), 1e-6)
    assert _close(b.residuals("deviance").compute().sort_index(), a.residuals("deviance"), 1e-5)
    case = load_case("verbagg_crossed_laplace")
    with pytest.raises(CrossedGlmmError, match="needs the data in memory"):
        ml.glmer(case["formula"], dd.from_pandas(load_case_frame(case), npartitions=2),
                 family="binomial")


def _quiet_fit(fn, *a, **k):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ml.MultilevelWarning)
        return fn(*a, **k)
