"""The per-cell moments of data read in chunks (engine.blocks.CellStats, accumulated by the
compiled core) against a brute-force dense computation, and the grouping-factor lookup of
integer columns (design.chunked) against the generic one.

CellStats keeps, per cell, a shift and the shifted moments; whatever the chunking, the merges
and the pickling (what Dask does), every cell's weighted sums of v and of v v' must be those
of its rows, and the pseudo rows must reproduce them.
"""
from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest

import multilevel as ml
from multilevel.design.chunked import ChunkedDesign
from multilevel.engine.blocks import CellStats
from multilevel.errors import DataError


def _rows(seed: int = 3, m: int = 2_000, n_cells: int = 37, dim: int = 5):
    rng = np.random.default_rng(seed)
    cells = rng.integers(0, n_cells - 2, m)  # the last two cells stay empty
    V = rng.normal(size=(m, dim)) * [1.0, 3.0, 0.1, 10.0, 2.0][:dim] + [1.0, 50.0, -3.0, 1e3, 7.0][:dim]
    V[:, 0] = 1.0  # an intercept column, as Z and X have
    w = rng.uniform(0.0, 3.0, m)
    w[::17] = 0.0
    return cells, V, w


def _brute(cells, V, w, n_cells):
    d = V.shape[1]
    S1 = np.zeros((n_cells, d))
    S2 = np.zeros((n_cells, d, d))
    W = np.zeros(n_cells)
    for k in range(n_cells):
        sel = cells == k
        wk = np.ones(sel.sum()) if w is None else w[sel]
        S1[k] = wk @ V[sel]
        S2[k] = (V[sel] * wk[:, None]).T @ V[sel]
        W[k] = wk.sum()
    return W, S1, S2


def _sums(st: CellStats):
    """Every cell's weighted sums of v and v v' from its shifted moments."""
    n, d = st.n_cells, st.dim
    M2 = np.zeros((n, d, d))
    i0, j0 = st.iu
    M2[:, i0, j0] = st.m2
    M2[:, j0, i0] = st.m2
    c, m1 = st.c, st.m1
    S1 = st.m1 + st.W[:, None] * c
    S2 = (M2 + m1[:, :, None] * c[:, None, :] + c[:, :, None] * m1[:, None, :]
          + st.W[:, None, None] * c[:, :, None] * c[:, None, :])
    return st.W, S1, S2


@pytest.mark.parametrize("weighted", [False, True])
def test_moments_over_chunks_merges_and_pickles_equal_brute_force(weighted):
    cells, V, w = _rows()
    w = w if weighted else None
    n = 37
    W0, S10, S20 = _brute(cells, V, w, n)
    xc = slice(1, 3)
    # chunks of uneven sizes into two accumulators, one pickled, then merged (a tree)
    a, b = CellStats(n, 5, xc), CellStats(n, 5, xc)
    bounds = [0, 1, 300, 301, 1100, 1500, 2000]
    for i, (s, e) in enumerate(zip(bounds[:-1], bounds[1:])):
        (a if i % 2 else b).add(cells[s:e], V[s:e], None if w is None else w[s:e])
    b = pickle.loads(pickle.dumps(b))
    a.merge(b)
    W, S1, S2 = _sums(a)
    assert np.array_equal(a.count, np.bincount(cells, minlength=n))
    assert np.allclose(W, W0, rtol=1e-13, atol=0)
    assert np.allclose(S1, S10, rtol=1e-12, atol=1e-9)
    assert np.allclose(S2, S20, rtol=1e-12, atol=1e-7)
    assert a.nrows == len(cells) and a.weighted == weighted
    assert np.isclose(a.sum_y, V[:, -1].sum(), rtol=1e-13)
    assert np.allclose(a.xtx, V[:, xc].T @ V[:, xc], rtol=1e-13)
    if weighted:
        assert np.isclose(a.sum_logw, np.log(w[w > 0]).sum(), rtol=1e-13)
    # the shift of a cell is near its mean: the shifted moments keep their digits
    used = a.count > 0
    means = S10[used] / np.maximum(W0[used], 1e-300)[:, None]
    assert np.all(np.abs(a.c[used] - means) < 5 * np.abs(V).std(axis=0) + 1e-9)
    # the pseudo rows have every cell's cross products
    shift = V.mean(axis=0)
    pc, R = a.pseudo_rows(shift)
    for k in np.flatnonzero(used):
        Rk = R[pc == k]
        sel = cells == k
        wk = np.ones(sel.sum()) if w is None else w[sel]
        D = V[sel] - shift
        assert np.allclose(Rk.T @ Rk, (D * wk[:, None]).T @ D, rtol=1e-10, atol=1e-8)


def test_bad_rows_raise_and_change_nothing():
    st = CellStats(3, 2)
    st.add(np.array([0, 1]), np.array([[1.0, 2.0], [1.0, 3.0]]))
    before = pickle.dumps(st)
    with pytest.raises(DataError, match="cell 3 is not in 0..3"):
        st.add(np.array([0, 3]), np.array([[1.0, 2.0], [1.0, 3.0]]))
    with pytest.raises(DataError, match="need 2 weights|2 rows need 2 weights"):
        st.add(np.array([0, 1]), np.array([[1.0, 2.0], [1.0, 3.0]]), np.array([1.0]))
    assert pickle.dumps(st) == before


def _design(df: pd.DataFrame, formula: str) -> ChunkedDesign:
    des = ChunkedDesign(formula, list(df.columns))
    des.start(df)
    des.set_levels([des.level_summary(df.iloc[:7]), des.level_summary(df.iloc[7:])])
    return des


@pytest.mark.parametrize("values", [
    np.array([5, -3, 12, 5, 40, -3, 7, 12, 40, 5, 7, 7], dtype=np.int64),
    np.array([5, 3, 12, 5, 40, 3, 7, 12, 40, 5, 7, 7], dtype=np.uint16),
    np.array([0, 10**12, 3, 0, 3, 10**12, 7, 7, 3, 0, 7, 10**12], dtype=np.int64),  # no table
])
def test_integer_grouping_lookup_equals_the_generic_one(values):
    rng = np.random.default_rng(1)
    df = pd.DataFrame({"y": rng.normal(size=12), "x": rng.normal(size=12), "g": values,
                       "h": values % 3})
    des = _design(df, "y ~ x + (1 + x | g) + (1 | g:h)")
    from multilevel.design.source import DataSource

    src = DataSource(df)
    rows = np.arange(12)[::-1].copy()
    for bs in des.frame0.spec.bars:
        fast = des._group_refs(bs.group, src, rows)
        slow = bs.group.refs(src)[rows]
        assert np.array_equal(fast, slow)
        assert (fast >= 0).all()
    # a value that was not a level: -1 (then a DataError naming the column in chunk_arrays)
    new = df.assign(g=df["g"].astype(values.dtype) + values.dtype.type(1))
    bs = des.frame0.spec.bars[0]
    fast = des._group_refs(bs.group, DataSource(new), np.arange(12))
    assert np.array_equal(fast, bs.group.refs(DataSource(new)))
    with pytest.raises(DataError, match="column 'g'.*not in the first pass"):
        des.chunk_arrays(new.iloc[:5].assign(g=new["g"].iloc[:5].to_numpy() * 0 + 999), "file x")


def test_integer_and_text_grouping_give_the_same_fit(tmp_path):
    rng = np.random.default_rng(4)
    n = 3_000
    g = rng.integers(0, 150, n) * 7 - 300
    x = rng.normal(size=n)
    df = pd.DataFrame({"y": 1 + x + rng.normal(size=150)[(g + 300) // 7] + rng.normal(size=n),
                       "x": x, "g": g})
    path = tmp_path / "d.parquet"
    df.to_parquet(path)
    a = ml.lmer("y ~ x + (1 + x | g)", df.assign(g=df["g"].astype(str)), reml=False)
    b = ml.lmer("y ~ x + (1 + x | g)", path, reml=False, batch_size=500)
    assert abs(b.loglik - a.loglik) <= 1e-10 * abs(a.loglik)
    assert sorted(b.ranef()["g"].index) == sorted(a.ranef()["g"].index)
