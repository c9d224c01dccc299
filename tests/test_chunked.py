"""lmer on data read in chunks (files, datasets, readers, lazy frames) equals the in-memory fit.

Equality: every LMM reference case written to Parquet and read back 1,000 rows at a time gives
the in-memory fit's logLik to 1e-10 relative; at the in-memory optimum the chunked problem's
objective agrees to 1e-10 and its fixed effects and sigma to 1e-8 (the blocks are the same).
The optimised estimates then agree to the optimiser's own precision (1e-6 of a standard error
for fixed effects, 1e-4 in theta: fits of the same rows in another order in memory differ by
as much on flat ridges, e.g. oxboys' six thetas).
"""
from __future__ import annotations

import pickle
import warnings

import numpy as np
import pandas as pd
import pytest

import multilevel as ml
from multilevel.design.chunked import ChunkedDesign, RowsNeededError
from multilevel.errors import DataError, MultilevelError

from conftest import contrasts_kw, fit_reference_case, lmm_case_ids, load_case, load_case_frame

pa = pytest.importorskip("pyarrow")


def _rel(a, b):
    return abs(a - b) / abs(b)


def _close(x, y, tol: float) -> bool:
    """max |x - y| <= tol * max |y| (values near 0 compared on the scale of the others)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    return x.shape == y.shape and float(np.max(np.abs(x - y))) <= tol * float(np.max(np.abs(y)))


@pytest.mark.parametrize("case_id", lmm_case_ids())
def test_reference_case_from_parquet_equals_in_memory(case_id, tmp_path):
    case = load_case(case_id)
    df = load_case_frame(case)
    kw = {"weights": case["weights"]} if case.get("weights") else {}
    kw.update(contrasts_kw(case))
    a = fit_reference_case(case_id)
    path = tmp_path / "d.parquet"
    df.to_parquet(path)
    bs = 10_000 if len(df) > 50_000 else 1_000  # InstEval: 8 batches, not 74 (time)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ml.MultilevelWarning)
        b = ml.lmer(case["formula"], path, reml=bool(case["REML"]), batch_size=bs, **kw)
    assert type(b) is type(a)
    assert b.nobs == a.nobs and list(b.fixef.index) == list(a.fixef.index)
    assert b.ngroups == a.ngroups
    assert [w.code for w in b.warnings if w.code in ("rows_dropped", "rank_deficient")] == \
        [w.code for w in a.warnings if w.code in ("rows_dropped", "rank_deficient")]
    assert _rel(b.loglik, a.loglik) < 1e-10
    # the same blocks: the same objective and estimates at the same theta
    th = a.getme("theta")
    assert _rel(b._problem.objective(th), a._problem.objective(th)) < 1e-10
    sa, sb = a._problem.solution(th), b._problem.solution(th)
    scale = np.maximum(np.abs(sa["beta"]), a.se.to_numpy())
    assert np.all(np.abs(sb["beta"] - sa["beta"]) <= 1e-8 * scale)
    assert _rel(sb["sigma"], sa["sigma"]) < 1e-8
    # the optimised estimates, to the optimiser's precision
    assert np.all(np.abs(b.fixef.to_numpy() - a.fixef.to_numpy()) <= 1e-6 * a.se.to_numpy())
    assert np.all(np.abs(b.theta.to_numpy() - a.theta.to_numpy()) <= 1e-4)
    assert np.allclose(b.se.to_numpy(), a.se.to_numpy(), rtol=1e-5)


def _synthetic(n=900, seed=3):
    rng = np.random.default_rng(seed)
    g = rng.integers(0, 30, n)
    x = rng.normal(5, 2, n)
    z = rng.normal(size=n)
    f = rng.choice(["lo", "mid", "hi"], n)
    w = rng.uniform(0.5, 2.0, n)
    off = rng.normal(0, 0.1, n)
    y = 1 + 0.5 * x - z + rng.normal(0, 1, 30)[g] + 0.3 * rng.normal(size=30)[g] * x \
        + rng.normal(size=n) + off
    df = pd.DataFrame({"y": y, "x": x, "z": z, "g": [f"s{k:02d}" for k in g],
                       "f": pd.Categorical(f, categories=["mid", "lo", "hi"]), "w": w, "off": off})
    df.loc[rng.choice(n, 25, replace=False), "x"] = np.nan
    df.loc[rng.choice(n, 10, replace=False), "y"] = np.nan
    df.loc[rng.choice(n, 10, replace=False), "f"] = None
    return df


FORMULAS = [
    "y ~ scale(x) + f + (1 + scale(x) | g)",
    "y ~ center(x, by = g) + group_mean(x, by = g) + z + (1 | g)",
    "y ~ poly(x, 2) + f * z + (z || g)",
    "y ~ center(x) + I(z^2) + offset(off) + (1 | g)",
]


@pytest.mark.parametrize("formula", FORMULAS)
@pytest.mark.parametrize("weighted", [False, True])
def test_stateful_transforms_missing_weights_offsets(formula, weighted, tmp_path):
    df = _synthetic()
    df.to_parquet(tmp_path / "s.parquet")
    kw = {"weights": "w"} if weighted else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ml.MultilevelWarning)
        a = ml.lmer(formula, df, reml=False, **kw)
        b = ml.lmer(formula, tmp_path / "s.parquet", reml=False, batch_size=37, **kw)
    assert _rel(b.loglik, a.loglik) < 1e-10
    assert list(b.fixef.index) == list(a.fixef.index)
    # at the same theta the same estimates; optimised, the optimiser's precision (1e-4 in
    # theta: an in-memory fit of the rows in another order moves as much)
    sa, sb = a._problem.solution(a.getme("theta")), b._problem.solution(a.getme("theta"))
    assert np.all(np.abs(sb["beta"] - sa["beta"]) <= 1e-8 * np.maximum(
        np.abs(sa["beta"]), a.se.to_numpy()))
    assert np.all(np.abs(b.fixef.to_numpy() - a.fixef.to_numpy()) <= 1e-3 * a.se.to_numpy())
    assert np.allclose(b.theta.to_numpy(), a.theta.to_numpy(), rtol=0, atol=1e-4)
    assert b.nobs == a.nobs
    # row values by a pass over the data, in the data's order of the rows used
    assert _close(b.fitted(), a.fitted(), 1e-4)
    assert _close(b.residuals("pearson", scaled=True), a.residuals("pearson", scaled=True), 1e-3)
    # new data get the transforms learnt from all rows
    new = df.dropna().head(5)
    assert _close(b.predict(new), a.predict(new), 1e-4)


def test_every_kind_of_source_gives_the_same_fit(tmp_path):
    import duckdb
    import polars as pl
    import pyarrow.dataset as pads
    import pyarrow.parquet as pq

    df = _synthetic()
    # text, not a Categorical: DuckDB and polars read a Parquet dictionary as text (sorted
    # levels), the category order is checked by the reference cases
    df["f"] = df["f"].astype(object)
    f = "y ~ scale(x) + f + (1 + z | g)"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ml.MultilevelWarning)
        ref = ml.lmer(f, df)
        d = tmp_path / "parts"
        d.mkdir()
        for i, part in enumerate(np.array_split(np.arange(len(df)), 3)):
            df.iloc[part].to_parquet(d / f"part{i}.parquet")
        table = pa.Table.from_pandas(df, preserve_index=False)
        pq.write_table(table, tmp_path / "all.parquet")
        sources = {
            "directory": d,
            "list of files": sorted(d.glob("*.parquet")),
            "dataset": pads.dataset(d),
            "reader": pa.RecordBatchReader.from_batches(table.schema, table.to_batches(200)),
            "lazyframe": pl.scan_parquet(tmp_path / "all.parquet"),
            "duckdb": duckdb.connect().read_parquet(str(tmp_path / "all.parquet")),
        }
        for name, src in sources.items():
            fit = ml.lmer(f, src, batch_size=100)
            assert _rel(fit.loglik, ref.loglik) < 1e-10, name
            assert np.all(np.abs(fit.fixef.to_numpy() - ref.fixef.to_numpy())
                          <= 1e-3 * ref.se.to_numpy()), name
        # CSV: text columns sort their levels (no categories in a CSV); the in-memory fit of
        # the same file agrees
        df.to_csv(tmp_path / "d.csv", index=False)
        a = ml.lmer(f, pd.read_csv(tmp_path / "d.csv"))
        b = ml.lmer(f, tmp_path / "d.csv", batch_size=150)
        assert _rel(b.loglik, a.loglik) < 1e-10
        assert list(b.fixef.index) == list(a.fixef.index)


def test_chunked_fit_is_a_full_lmm_fit(tmp_path):
    sleep = ml.datasets.load("sleepstudy")
    sleep.to_parquet(tmp_path / "s.parquet")
    # chunked problems are optimised by BOBYQA (the in-core optimiser works on the core's
    # own criterion, whose n would be the pseudo rows'): the same optimiser in memory, so
    # that the flat optimum is reached at the same point
    bq = {"optimizer": "bobyqa"}
    a1 = ml.lmer("Reaction ~ Days + (Days | Subject)", sleep, reml=False, control=bq)
    a0 = ml.lmer("Reaction ~ 1 + (Days | Subject)", sleep, reml=False, control=bq)
    b1 = ml.lmer("Reaction ~ Days + (Days | Subject)", tmp_path / "s.parquet", reml=False,
                 batch_size=40)
    b0 = ml.lmer("Reaction ~ 1 + (Days | Subject)", tmp_path / "s.parquet", reml=False,
                 batch_size=40)
    ta, tb = ml.anova(a0, a1), ml.anova(b0, b1)
    assert np.allclose(tb["Chisq"].to_numpy()[1], ta["Chisq"].to_numpy()[1], rtol=1e-7)
    assert "Scaled residuals" in str(b1.summary()) and "Random effects" in str(b1)
    sa = a1.summary(ddf="satterthwaite")
    sb = b1.summary(ddf="satterthwaite")
    assert str(sa).splitlines()[-8:] == str(sb).splitlines()[-8:]
    assert np.allclose(b1.ranef()["Subject"].to_numpy(), a1.ranef()["Subject"].to_numpy(),
                       rtol=1e-6, atol=1e-6)
    assert _close(b1.se_ranef()["Subject"], a1.se_ranef()["Subject"], 1e-6)
    assert np.allclose(b1.coef()["Subject"].to_numpy(), a1.coef()["Subject"].to_numpy(), rtol=1e-6)
    # a saved fit keeps no rows: it prints and predicts; row values say what they need
    c = pickle.loads(pickle.dumps(b1))
    assert np.allclose(c.predict(sleep.head(4)).to_numpy(), a1.predict(sleep.head(4)).to_numpy())
    with pytest.raises(RowsNeededError, match="data source is not kept"):
        c.fitted()
    with pytest.raises(MultilevelError, match="not in memory"):
        b1.confint(method="profile")
    with pytest.raises(MultilevelError, match="new response needs the rows"):
        b1._problem.set_y(np.zeros(3))


def test_malformed_batches_name_the_file_and_column(tmp_path):
    df = _synthetic(200)
    df.iloc[:100].to_parquet(tmp_path / "a.parquet")
    bad = df.iloc[100:].copy()
    bad["x"] = bad["x"].astype(str)  # numbers as text in the second file
    bad.to_parquet(tmp_path / "b.parquet")
    with pytest.raises(DataError, match=r"b\.parquet.*column 'x'"):
        ml.lmer("y ~ x + (1 | g)", [tmp_path / "a.parquet", tmp_path / "b.parquet"])
    with pytest.raises(MultilevelError, match="not found"):
        ml.lmer("y ~ nope + (1 | g)", tmp_path / "a.parquet")
    with pytest.raises(DataError, match="column name"):
        ml.lmer("y ~ x + (1 | g)", tmp_path / "a.parquet", weights=np.ones(100))


def test_a_level_new_in_the_second_pass_is_an_error_naming_the_column():
    df = _synthetic(300)
    des = ChunkedDesign("y ~ f + z + (1 | g)", list(df.columns))
    parts = [df.iloc[:150], df.iloc[150:]]
    des.start(parts[0])
    des.set_levels([des.level_summary(p) for p in parts])
    changed = parts[1].copy()
    changed["g"] = changed["g"].where(changed.index % 2 == 0, "s99")
    with pytest.raises(DataError, match=r"file x\.parquet.*'g'.*s99"):
        des.chunk_arrays(changed, "file x.parquet, rows 151-300")
    changed = parts[1].copy()
    changed["f"] = changed["f"].cat.add_categories("new").fillna("new")
    with pytest.raises(DataError, match=r"file y\.parquet.*'new'.*factor 'f'"):
        des.chunk_arrays(changed, "file y.parquet")


def test_cli_fits_parquet_in_batches(tmp_path, capsys):
    from multilevel.app.cli import main

    sleep = ml.datasets.load("sleepstudy")
    sleep.to_parquet(tmp_path / "s.parquet")
    f = "Reaction ~ Days + (Days | Subject)"
    assert main(["fit", f, "--data", str(tmp_path / "s.parquet"), "--batch-size", "40",
                 "--json"]) == 0
    import json

    got = json.loads(capsys.readouterr().out)
    ref = ml.lmer(f, sleep).to_dict()
    assert _rel(got["results"]["logLik"], ref["results"]["logLik"]) < 1e-10
    assert got["fixef_names"] == ref["fixef_names"]
    # GLMMs too, partitioned by their grouping factor; crossed ones need the data in memory
    cbpp = ml.datasets.load("cbpp")
    cbpp.to_parquet(tmp_path / "c.parquet")
    g = "cbind(incidence, size - incidence) ~ period + (1 | herd)"
    assert main(["fit", g, "--data", str(tmp_path / "c.parquet"), "--batch-size", "12",
                 "--family", "binomial", "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert _rel(got["results"]["logLik"], ml.glmer(g, cbpp).loglik) < 1e-10
    cbpp["obs"] = np.arange(len(cbpp)) % 4
    cbpp.to_parquet(tmp_path / "c2.parquet")
    assert main(["fit", g + " + (1 | obs)", "--data", str(tmp_path / "c2.parquet"),
                 "--batch-size", "12", "--family", "binomial"]) != 0
    assert "needs the data in memory" in capsys.readouterr().err
