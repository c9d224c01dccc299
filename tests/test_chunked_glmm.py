"""glmer on data read in chunks (Parquet, out of core) equals the in-memory fit.

Every GLMM reference case whose random effects nest in one grouping factor (one factor, or
grouseticks' broods inside locations) is written to Parquet with its rows shuffled (so the
partitioning pass must gather each group's rows) and read back in batches of a fifth of the
rows. Equality: logLik to 1e-10 relative; at the in-memory optimum the partitioned problem's
criteria (Laplace / AGQ, nAGQ = 0) agree to 1e-10 and its modes, R_X covariance and gradient
to 1e-8 (the same criterion, evaluated partition by partition); the optimised estimates then
agree to the optimiser's precision (1e-5 of a standard error: Newton stops at a predicted
decrease of 1e-10; an in-memory fit of the same rows in another order moves as much on the
flat Oxboys Gamma model). Crossed GLMMs
are refused with an error saying they need the data in memory.
"""
from __future__ import annotations

import pickle
import warnings

import numpy as np
import pandas as pd
import pytest

import multilevel as ml
import multilevel.models.partitions as partitions_mod
from multilevel.engine.blocks import RowsNeededError
from multilevel.errors import DataError, ModelSpecError, MultilevelError
from multilevel.models.glmer_chunked import CrossedGlmmError

from conftest import contrasts_kw, load_case, load_case_frame, reference_index

pa = pytest.importorskip("pyarrow")


def _rel(a, b):
    return abs(a - b) / max(abs(b), 1e-300)


def glmm_cases(nested: bool) -> list[str]:
    out = []
    for c in reference_index():
        if c["type"] != "fit" or c["model_type"] == "LMM" or c.get("fitted_by", "lme4") != "lme4":
            continue
        crossed = c["id"] in ("verbagg_crossed_laplace", "penicillin_gamma_inverse_laplace")
        if crossed != nested:
            out.append(c["id"])
    return out


NESTED = glmm_cases(True)
CROSSED = glmm_cases(False)


def _args(case: dict) -> dict:
    kw = dict(family=case["family"], link=case.get("link"), nagq=case["nAGQ"])
    kw.update(contrasts_kw(case))
    if case["family"] == "negative.binomial":  # theta fixed at lme4's estimate
        kw["nb_theta"] = case["results"]["family_extras"]["nb_theta"]
    if case.get("weights"):
        kw["weights"] = case["weights"]
    return kw


def _quiet(fn, *a, **k):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ml.MultilevelWarning)
        return fn(*a, **k)


def _shuffled(df: pd.DataFrame, seed: int = 7) -> pd.DataFrame:
    return df.sample(frac=1.0, random_state=seed).reset_index(drop=True)


def test_the_cases_cover_every_family():
    assert {load_case(c)["family"] for c in NESTED} == {"binomial", "poisson", "Gamma",
                                                        "inverse.gaussian", "negative.binomial"}
    assert any(load_case(c)["nAGQ"] > 1 for c in NESTED)
    assert "grouseticks_poisson_laplace" in NESTED  # two factors, broods nested in locations


def check_same_fit(a, b, *, kept: bool = True) -> None:
    """b (data read in chunks) against a (in memory): see the module docstring."""
    assert type(b) is type(a) and b.nobs == a.nobs and b.ngroups == a.ngroups
    assert list(b.fixef.index) == list(a.fixef.index)
    assert _rel(b.loglik, a.loglik) < 1e-10
    assert _rel(b.conditional_deviance, a.conditional_deviance) < 1e-5
    # the optimised estimates, to the optimiser's precision (Newton stops at a predicted
    # decrease of 1e-10: some 1e-5 of a standard error)
    se = a.se.to_numpy()
    assert np.all(np.abs(b.fixef.to_numpy() - a.fixef.to_numpy()) <= 1e-5 * se)
    th_a = a.theta.to_numpy()
    assert np.all(np.abs(b.theta.to_numpy() - th_a) <= 1e-5 * np.maximum(np.abs(th_a), 1.0))
    assert np.allclose(b.se.to_numpy(), se, rtol=1e-3)
    assert b.optinfo["optimizer"] == a.optinfo["optimizer"]
    # stage 1 (BOBYQA over theta at nAGQ = 0) took the same path
    assert _rel(b.optinfo["stage1"]["objective"], a.optinfo["stage1"]["objective"]) < 1e-8
    assert abs(b.sigma - a.sigma) <= 1e-6 * a.sigma
    for k, ra in a.ranef().items():
        rb = b.ranef()[k]
        assert list(rb.index) == list(ra.index)
        assert np.allclose(rb.to_numpy(), ra.to_numpy(), rtol=0, atol=1e-5 * np.abs(ra.to_numpy()).max())
    if not kept:
        return
    # at the same point, the same criterion, modes, covariance and gradient
    pa_, pb = a._problem, b._problem
    x = np.concatenate([np.asarray(a.getme("theta")), np.asarray(a.getme("beta"))])
    fa, fb = pa_.devfun(x), pb.devfun(x)
    assert _rel(fb, fa) < 1e-10
    ia, ib = pa_.core.info(), pb.core.info()
    for k in ("dev", "usq", "ldl2"):
        assert _rel(ib[k], ia[k]) < 1e-8, k
    for ea, eb in zip(pa_.blocks(pa_.core.b(a.getme("theta"))), pb.blocks(pb.core.b(a.getme("theta")))):
        assert np.allclose(eb, ea, rtol=1e-8, atol=1e-10)
    va, vb = pa_.vcov_rx(a.getme("theta")), pb.vcov_rx(a.getme("theta"))
    assert np.allclose(vb, va, rtol=1e-8, atol=1e-12 * np.abs(va).max())
    ca, cb = pa_.condvar(a.getme("theta")), pb.condvar(a.getme("theta"))
    for u, v in zip(ca, cb):
        assert np.allclose(v, u, rtol=1e-8, atol=1e-12)
    if pa_.has_gradient:
        assert pb.has_gradient
        ga, gb = pa_.devfun_grad(x)[1], pb.devfun_grad(x)[1]
        assert np.allclose(gb, ga, rtol=1e-6, atol=1e-8 * max(1.0, np.abs(ga).max()))
    else:
        assert not pb.has_gradient
    # stage 1 (nAGQ = 0: beta at the joint mode) at theta-hat
    th = np.asarray(a.getme("theta"))
    s0a, s0b = pa_.stage0(th), pb.stage0(th)
    assert _rel(s0b, s0a) < 1e-10
    assert np.allclose(pb.core.beta, pa_.core.beta, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("case_id", NESTED)
def test_reference_case_from_parquet_equals_in_memory(case_id, tmp_path):
    case = load_case(case_id)
    df = load_case_frame(case)
    kw = _args(case)
    a = _quiet(ml.glmer, case["formula"], df, **kw)
    path = tmp_path / "d.parquet"
    _shuffled(df).to_parquet(path)
    b = _quiet(ml.glmer, case["formula"], path, batch_size=max(10, len(df) // 5),
               _keep_partitions=True, **kw)
    try:
        assert b.optinfo["chunked"]["partitions"] > 1
        check_same_fit(a, b)
    finally:
        b._problem.release()
    # released: evaluations say why they cannot run
    with pytest.raises(RowsNeededError, match="in memory"):
        b._problem.devfun(np.concatenate([np.asarray(b.getme("theta")), np.asarray(b.getme("beta"))]))


@pytest.mark.parametrize("case_id", ["cbpp_binomial_laplace", "grouseticks_poisson_laplace",
                                     "early_gamma_log_laplace"])
def test_partitions_loaded_at_each_evaluation_give_the_same_fit(case_id, tmp_path, monkeypatch):
    """Above the memory threshold each evaluation loads one partition at a time from its
    file (its modes kept as the warm start): the same fit."""
    case = load_case(case_id)
    df = load_case_frame(case)
    kw = _args(case)
    a = _quiet(ml.glmer, case["formula"], df, **kw)
    path = tmp_path / "d.parquet"
    _shuffled(df, 3).to_parquet(path)
    monkeypatch.setattr(partitions_mod, "RESIDENT_BYTES", 0)
    b = _quiet(ml.glmer, case["formula"], path, batch_size=max(10, len(df) // 4),
               _keep_partitions=True, **kw)
    try:
        assert b.optinfo["chunked"]["resident"] is False
        check_same_fit(a, b)
    finally:
        b._problem.release()


def _synthetic(n_groups: int = 40, seed: int = 11) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for g in range(n_groups):
        m = int(rng.integers(3, 25))
        x = rng.normal(size=m)
        level2 = rng.normal()  # a predictor constant within the group
        b0, b1 = rng.normal(0, 0.8), rng.normal(0, 0.4)
        eta = -0.3 + 0.6 * x + 0.5 * level2 + b0 + b1 * x
        for i in range(m):
            rows.append({"g": f"g{g:02d}", "sub": f"s{int(rng.integers(0, 3))}", "x": x[i],
                         "w2": level2, "f": rng.choice(["a", "b", "c"]),
                         "exposure": float(rng.uniform(0.5, 2.0)),
                         "y": float(rng.random() < 1 / (1 + np.exp(-eta[i]))),
                         "k": int(rng.poisson(np.exp(0.2 + 0.3 * x[i] + b0 / 2))),
                         "w": float(rng.uniform(0.5, 2.0))})
    df = pd.DataFrame(rows)
    df["yes"] = pd.Categorical(np.where(df.y > 0, "yes", "no"), categories=["no", "yes"])
    df.loc[rng.choice(len(df), 12, replace=False), "x"] = np.nan
    df.loc[rng.choice(len(df), 5, replace=False), "f"] = None
    return df


SYNTHETIC = [
    # a vector-valued term, a factor response, a group-level predictor and scale()
    ("yes ~ scale(x) + w2 + f + (1 + x | g)", dict(family="binomial")),
    # weights, an offset column and uncorrelated slopes
    ("k ~ x + f + offset(log(exposure)) + (x || g)", dict(family="poisson", weights="w")),
    # nested grouping factors: sub within g
    ("k ~ x + (1 | g/sub)", dict(family="poisson")),
    # nAGQ = 0 alone
    ("y ~ x + w2 + (1 | g)", dict(family="binomial", nagq=0)),
]


@pytest.mark.parametrize("formula,kw", SYNTHETIC)
def test_synthetic_models_missing_values_weights_offsets(formula, kw, tmp_path):
    df = _synthetic()
    a = _quiet(ml.glmer, formula, df, **kw)
    path = tmp_path / "s.parquet"
    _shuffled(df).to_parquet(path)
    # small batches: partitions of a few groups, some lacking levels of f
    b = _quiet(ml.glmer, formula, path, batch_size=60, _keep_partitions=True, **kw)
    try:
        assert b.optinfo["chunked"]["partitions"] >= 5
        check_same_fit(a, b)
    finally:
        b._problem.release()
    # row values in a pass over the data, in the file's row order (rows used)
    c = _quiet(ml.glmer, formula, _shuffled(df), **kw)
    assert np.allclose(b.fitted().to_numpy(), c.fitted().to_numpy(), rtol=1e-6, atol=1e-9)
    assert np.allclose(b.linear_predictor().to_numpy(), c.linear_predictor().to_numpy(),
                       rtol=1e-6, atol=1e-8)
    for t in ("deviance", "pearson", "response", "working"):
        assert np.allclose(b.residuals(t).to_numpy(), c.residuals(t).to_numpy(), rtol=1e-5,
                           atol=1e-7), t
    assert np.allclose(b.residuals("pearson", scaled=True).to_numpy(),
                       c.residuals("pearson", scaled=True).to_numpy(), rtol=1e-5, atol=1e-7)


def test_partitions_with_single_groups_lack_columns(tmp_path):
    """One group per partition: the group-level predictor and absent factor levels make the
    partition's own columns collinear; its core sees a basis of them."""
    df = _synthetic(12)
    f = "y ~ x + w2 + f + (1 | g)"
    a = _quiet(ml.glmer, f, df, family="binomial")
    df.to_parquet(tmp_path / "g.parquet")
    b = _quiet(ml.glmer, f, tmp_path / "g.parquet", family="binomial", batch_size=1,
               _keep_partitions=True)
    try:
        assert b.optinfo["chunked"]["partitions"] == 12
        check_same_fit(a, b)
    finally:
        b._problem.release()


def test_summary_pickle_and_determinism(tmp_path):
    cbpp = ml.datasets.load("cbpp")
    f = "cbind(incidence, size - incidence) ~ period + (1 | herd)"
    a = ml.glmer(f, cbpp)
    _shuffled(cbpp).to_parquet(tmp_path / "c.parquet")
    b = ml.glmer(f, tmp_path / "c.parquet", batch_size=12)
    b2 = ml.glmer(f, tmp_path / "c.parquet", batch_size=12)
    assert b2.loglik == b.loglik and np.array_equal(b2.fixef.to_numpy(), b.fixef.to_numpy())
    sa = str(a.summary()).splitlines()
    sb = str(b.summary()).splitlines()
    # the same text but for the data's name (a file here)
    assert [s for s in sb if not s.strip().startswith("Data:")] == \
        [s for s in sa if not s.strip().startswith("Data:")]
    c = pickle.loads(pickle.dumps(b))
    assert c.loglik == b.loglik and c.fixef.equals(b.fixef)
    with pytest.raises(RowsNeededError):
        c.confint(method="profile")
    assert np.allclose(b.confint(method="Wald").iloc[1:].to_numpy(),
                       a.confint(method="Wald").iloc[1:].to_numpy(), rtol=1e-6)


@pytest.mark.parametrize("case_id", CROSSED)
def test_crossed_glmm_from_chunks_needs_the_data_in_memory(case_id, tmp_path):
    case = load_case(case_id)
    df = load_case_frame(case)
    df.to_parquet(tmp_path / "x.parquet")
    with pytest.raises(CrossedGlmmError, match="needs the data in memory") as e:
        ml.glmer(case["formula"], tmp_path / "x.parquet", **_args(case))
    assert isinstance(e.value, MultilevelError)


def test_refusals(tmp_path):
    ticks = ml.datasets.load("grouseticks")
    ticks.to_parquet(tmp_path / "t.parquet")
    with pytest.raises(ModelSpecError, match="nb_theta"):
        ml.glmer_nb("TICKS ~ YEAR + (1 | BROOD)", tmp_path / "t.parquet")
    with pytest.raises(ModelSpecError, match="single scalar"):
        ml.glmer("TICKS ~ YEAR + (1 | BROOD) + (1 | LOCATION)", tmp_path / "t.parquet",
                 family="poisson", nagq=5)
    bad = ticks.copy()
    bad.loc[3, "TICKS"] = -1
    bad.to_parquet(tmp_path / "bad.parquet")
    with pytest.raises(DataError, match="negative") as e:
        ml.glmer("TICKS ~ YEAR + (1 | BROOD)", tmp_path / "bad.parquet", family="poisson",
                 batch_size=100)
    assert "file" in str(e.value) and "rows" in str(e.value)


def test_dask_frame_without_a_cluster(tmp_path):
    """A Dask frame on the local scheduler: its partitions are read one after another into
    temporary files by group, as out of core."""
    dd = pytest.importorskip("dask.dataframe")
    case = load_case("cbpp_binomial_laplace")
    df = load_case_frame(case)
    a = ml.glmer(case["formula"], df)
    b = _quiet(ml.glmer, case["formula"], dd.from_pandas(_shuffled(df), npartitions=3),
               batch_size=12, _keep_partitions=True)
    try:
        check_same_fit(a, b)
    finally:
        b._problem.release()


def _cbpp_partitions():
    from multilevel.engine.glmm import GlmmProblem
    from multilevel.engine.input import EngineInput
    from multilevel.engine.partitioned import GlmmPartition, partition_spec
    from multilevel.models.input import engine_input
    from multilevel.design import build_model_frame
    from multilevel.families import get_family
    import dataclasses

    cbpp = ml.datasets.load("cbpp")
    fr = build_model_frame("cbind(incidence, size - incidence) ~ period + (1 | herd)", cbpp,
                           family="binomial")
    inp = engine_input(fr)
    fam = get_family("binomial")
    whole = GlmmProblem(inp, fam, 1, fr.weights)
    skel = inp.replace(y=np.zeros(0), X=np.zeros((0, inp.p)), weights=None, terms=tuple(
        dataclasses.replace(t, refs=np.zeros(0, np.uint32), Z=np.zeros((0, 1))) for t in inp.terms))
    spec = partition_spec(skel, fam, range(inp.p), whole.xcentring.shift, True)
    herd = inp.terms[0].refs

    def part(rows):
        return GlmmPartition({"refs": [herd[rows]], "Z": [inp.terms[0].Z[rows]], "X": inp.X[rows],
                              "y": inp.y[rows], "wt": fr.weights[rows], "nt": fr.weights[rows]},
                             spec)
    return whole, [part(np.flatnonzero(herd < 7)), part(np.flatnonzero(herd >= 7))], part


def test_partition_criteria_add_up_to_the_whole():
    whole, parts, _ = _cbpp_partitions()
    th, beta = np.array([0.8]), np.array([-1.3, -0.9, -1.1, -1.5])
    pieces = sum(p.laplace(th, beta) for p in parts)
    assert _rel(pieces[0], whole.devfun_c(np.concatenate([th, beta]))) < 1e-13
    info = whole.core.info()
    for i, k in enumerate(("objective", "aic", "dev", "usq", "ldl2")):
        assert _rel(pieces[i], info[k]) < 1e-12, k
    S = sum(p.schur(th) for p in parts)
    rx = np.asarray(whole.core.rx(th)).reshape(4, 4).T
    assert np.allclose(S, rx @ rx.T, rtol=1e-12, atol=1e-12)
    # the dense Schur complement (small partitions) is the same matrix
    for p in parts:
        dense = p._schur_dense(th, np.asarray(p.core.weights()))
        assert np.allclose(dense, p.schur(th), rtol=1e-10, atol=1e-12)
    nodes_w = __import__("multilevel._core", fromlist=["gauss_hermite"]).gauss_hermite(7)
    agq = sum(p.agq(th, beta, *nodes_w)[0] for p in parts)
    assert _rel(agq, whole.core.agq(th, beta, *nodes_w)) < 1e-13


def test_state_reads_name_the_evaluation_they_refer_to():
    """A copy of a partition (Dask moved a task) ran the last evaluation: reading the state
    from the original repeats that evaluation first, so the modes are those of the copy."""
    _, parts, _ = _cbpp_partitions()
    p = parts[0]
    th0, b0 = np.array([0.5]), np.array([-1.0, -1.0, -1.0, -1.0])
    th1, b1 = np.array([0.9]), np.array([-1.4, -0.9, -1.1, -1.6])
    p.laplace(th0, b0)
    copy = pickle.loads(pickle.dumps(p))
    copy.laplace(th1, b1)
    last = ("laplace", (th1, b1))
    lv_c, u_c, bb_c = copy.modes(th1, last)
    lv_o, u_o, bb_o = p.modes(th1, last)
    assert np.allclose(u_o[0], u_c[0], rtol=1e-12, atol=1e-14)
    assert np.allclose(p.schur(th1, last), copy.schur(th1, last), rtol=1e-12)
    # without naming it, the original's own last evaluation is read (other modes)
    assert not np.allclose(p.modes(th0, ("laplace", (th0, b0)))[1][0], u_c[0])
