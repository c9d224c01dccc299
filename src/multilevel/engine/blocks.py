"""Cross products accumulated over row chunks, and the LMM problem built from them.

Layer: engine. Arrays only: the caller gives, chunk after chunk, the cell of each row (the
combination of the levels of every random-effect term), the row's values
``v = [z_1 .. z_k, x, y - offset]`` and its prior weight.

Why this module: a linear mixed model depends on its rows only through the weighted cross
products of ``v`` summed within each cell (the blocks of ``A = [Z X y]' W [Z X y]`` are sums
of those), plus the number of rows and the sum of log weights. :class:`CellStats` keeps, per
cell, the weight, a shift and the shifted first and second moments (merged exactly, in any
order, as Chan et al.'s parallel variance: chunks of a file, Dask partitions, tree
reductions). :meth:`CellStats.pseudo_rows` turns each cell's moment matrix into at most
``dim v`` rows with the same cross products (its eigen-decomposition), which the compiled
engine takes as if they were data: the blocks, and therefore the likelihood, are those of the
real rows. :class:`BlockLmmProblem` binds them and supplies what depends on the real number
of rows (the profiled deviance's ``n``, the moment start). Memory: the cells, never the rows.

>>> import numpy as np
>>> st = CellStats(n_cells=2, dim=2)
>>> st.add(np.array([0, 0, 1]), np.array([[1.0, 2.0], [1.0, 4.0], [1.0, 5.0]]))
>>> st.add(np.array([1]), np.array([[1.0, 7.0]]))
>>> cells, rows = st.pseudo_rows(np.zeros(2))
>>> bool(np.allclose(rows.T @ rows, [[4.0, 18.0], [18.0, 94.0]]))
True
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from multilevel._core import cell_moments_add
from multilevel.covariance import ParameterMap, theta_layout
from multilevel.engine.centring import XCentring
from multilevel.engine.input import EngineInput
from multilevel.engine.lmm import LmmProblem, engine_terms
from multilevel.errors import DataError, FitError

__all__ = ["CellStats", "BlockLmmProblem", "profiled_deviance", "RowsNeededError"]


class RowsNeededError(DataError):
    """Something needs the rows of data that were read in chunks and are not in memory."""


class CellStats:
    """Per-cell weighted moments of the row values ``v`` (see the module docstring), plus the
    totals the likelihood needs (rows, sum of log weights, the unweighted sum of ``y``, the
    unweighted ``X'X`` of the columns ``xcols`` for R's rank rule).

    Pickles only the cells that have rows (what travels between Dask workers)."""

    def __init__(self, n_cells: int, dim: int, xcols: slice | None = None, ycol: int | None = None):
        self.n_cells = int(n_cells)
        self.dim = int(dim)
        self.xcols = xcols if xcols is not None else slice(0, 0)
        self.ycol = dim - 1 if ycol is None else ycol
        self.iu = np.triu_indices(dim)
        t = len(self.iu[0])
        self.count = np.zeros(n_cells, dtype=np.int64)
        self.W = np.zeros(n_cells)
        self.c = np.zeros((n_cells, dim))
        self.m1 = np.zeros((n_cells, dim))
        self.m2 = np.zeros((n_cells, t))
        self.nrows = 0
        self.sum_logw = 0.0
        self.sum_y = 0.0
        px = self.xcols.stop - self.xcols.start
        self.xtx = np.zeros((px, px))
        self.weighted = False

    # -- accumulation -----------------------------------------------------------------------
    def add(self, cells: np.ndarray, V: np.ndarray, w: np.ndarray | None = None) -> None:
        """Add rows: ``cells`` (m,) cell index of each row, ``V`` (m, dim), weights (m,).

        The per-cell moments are one compiled pass over the rows
        (``multilevel_core::cells``): a fresh cell's shift is the unweighted mean of its
        rows here (close to the mean, so the shifted sums keep their digits; any shift
        would be exact in theory), then ``m1`` and ``m2`` about it."""
        m = len(cells)
        if m == 0:
            return
        V = np.ascontiguousarray(V, dtype=np.float64)
        if w is not None:
            w = np.ascontiguousarray(w, dtype=np.float64)
        cell_moments_add(np.ascontiguousarray(cells, dtype=np.int64), V, w, self.count, self.W,
                         self.c, self.m1, self.m2)
        self.weighted = self.weighted or w is not None
        self.nrows += m
        self.sum_y += float(V[:, self.ycol].sum())
        if w is not None:
            pos = w > 0
            self.sum_logw += float(np.log(w[pos]).sum())
        X = V[:, self.xcols]
        if X.shape[1]:
            self.xtx += X.T @ X

    def merge(self, other: CellStats) -> CellStats:
        """Add ``other``'s rows (in place; returns self)."""
        if other.n_cells != self.n_cells or other.dim != self.dim:
            raise DataError("cell statistics of different models cannot be merged")
        idx = np.flatnonzero(other.count)
        mine = self.count[idx] > 0
        new, old = idx[~mine], idx[mine]
        self.c[new] = other.c[new]
        if len(old):
            # move other's sums to this shift: sum w (v - a) = m1 + W (b - a), and so on
            delta = other.c[old] - self.c[old]
            Wb = other.W[old]
            m1b = other.m1[old]
            i0, j0 = self.iu
            self.m2[old] += (other.m2[old] + m1b[:, i0] * delta[:, j0] + delta[:, i0] * m1b[:, j0]
                             + Wb[:, None] * delta[:, i0] * delta[:, j0])
            self.m1[old] += m1b + Wb[:, None] * delta
        self.m1[new] = other.m1[new]
        self.m2[new] = other.m2[new]
        self.W[idx] += other.W[idx]
        self.count[idx] += other.count[idx]
        self.nrows += other.nrows
        self.sum_logw += other.sum_logw
        self.sum_y += other.sum_y
        self.xtx += other.xtx
        self.weighted = self.weighted or other.weighted
        return self

    def __getstate__(self) -> dict:
        st = self.__dict__.copy()
        idx = np.flatnonzero(self.count)
        st["_idx"] = idx
        for k in ("count", "W", "c", "m1", "m2"):
            st[k] = st[k][idx]
        return st

    def __setstate__(self, st: dict) -> None:
        idx = st.pop("_idx")
        n = st["n_cells"]
        for k in ("count", "W", "c", "m1", "m2"):
            small = st[k]
            full = np.zeros((n,) + small.shape[1:], dtype=small.dtype)
            full[idx] = small
            st[k] = full
        self.__dict__.update(st)

    # -- results ------------------------------------------------------------------------------
    def means(self) -> np.ndarray:
        """Weighted mean of each coordinate of v over all rows (NaN without weight)."""
        W = self.W.sum()
        tot = (self.W[:, None] * self.c + self.m1).sum(axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            return tot / W

    def sumsq(self, shift: np.ndarray) -> np.ndarray:
        """The weighted sums of squares of each coordinate of v - shift."""
        diag = np.flatnonzero(self.iu[0] == self.iu[1])
        d = self.c - shift
        return (self.m2[:, diag] + 2 * self.m1 * d + self.W[:, None] * d * d).sum(axis=0)

    def pseudo_rows(self, shift: np.ndarray, block: int = 1 << 16) -> tuple[np.ndarray, np.ndarray]:
        """(cell of each pseudo row, pseudo rows (N, dim)) whose cross products, summed per
        cell, are those of ``v - shift`` over the real rows (weights folded in): the
        eigen-decomposition of each cell's moment matrix, keeping at most as many rows as the
        cell has (a cell of one row gives that row back, up to sign)."""
        shift = np.asarray(shift, dtype=np.float64)
        idx = np.flatnonzero(self.count)
        d = self.dim
        i0, j0 = self.iu
        out_cells, out_rows = [], []
        for s in range(0, len(idx), block):
            ids = idx[s:s + block]
            g = len(ids)
            delta = self.c[ids] - shift
            M = np.zeros((g, d, d))
            M[:, i0, j0] = self.m2[ids]
            M[:, j0, i0] = self.m2[ids]
            m1 = self.m1[ids]
            M += m1[:, :, None] * delta[:, None, :] + delta[:, :, None] * m1[:, None, :]
            M += self.W[ids][:, None, None] * delta[:, :, None] * delta[:, None, :]
            lam, Q = np.linalg.eigh(M)
            lam = np.clip(lam, 0.0, None)
            # eigh sorts ascending: keep the largest min(count, d)
            rank = np.minimum(self.count[ids], d)
            keep = (np.arange(d)[None, :] >= (d - rank)[:, None]) & (lam > 0)
            rows = np.sqrt(lam)[:, None, :] * Q  # column j: sqrt(lam_j) q_j
            rows = np.transpose(rows, (0, 2, 1))  # (g, j, coordinate)
            out_rows.append(rows[keep])
            out_cells.append(np.broadcast_to(ids[:, None], (g, d))[keep])
        if not out_rows:
            return np.zeros(0, dtype=np.int64), np.zeros((0, d))
        return np.concatenate(out_cells), np.ascontiguousarray(np.concatenate(out_rows))


def profiled_deviance(n: int, p: int, ldl2: float, ldrx2: float, pwrss: float, reml: bool) -> float:
    """-2 log-likelihood profiled over beta and sigma (ML) or the REML criterion (the compiled
    engine's ``profiled``), for ``n`` real rows."""
    two_pi = 2.0 * np.pi
    if reml:
        nmp = float(n - p)
        return ldl2 + ldrx2 + nmp * (1.0 + np.log(two_pi * pwrss / nmp))
    return ldl2 + n * (1.0 + np.log(two_pi * pwrss / n))


class BlockLmmProblem(LmmProblem):
    """An :class:`~multilevel.engine.lmm.LmmProblem` whose rows are the pseudo rows of
    :meth:`CellStats.pseudo_rows` (already centred and weighted): the same interface
    (objective, solution, condvar) with the real number of rows ``n`` and sum of log
    weights; what needs the real rows (fitted values, a new response) raises
    :class:`RowsNeededError`.

    inp: the pseudo rows (no weights, no offset) with the model's terms and intercept.
    yshift, xshift: the shifts removed from y and from X's columns (0 at the intercept).
    """

    #: the compiled optimiser minimises the core's own criterion, whose n is the number of
    #: pseudo rows: these problems are optimised through ``objective`` (BOBYQA) instead
    in_core_optimizer = False

    def __init__(self, inp: EngineInput, reml: bool, n: int, logw: float, yshift: float,
                 xshift: np.ndarray):
        self.input = inp
        self.reml = reml
        self._n = int(n)
        self.slices, self.theta0, self.lower = theta_layout(inp.structures)
        self.pmap = ParameterMap(inp.structures)
        self.eterms = engine_terms(inp, self.slices)
        self.intercept = inp.intercept
        self.yshift = float(yshift)
        self.w = None
        self.logw = float(logw)
        xshift = np.asarray(xshift, dtype=float)
        self.xcentring = XCentring(int(self.intercept), xshift) \
            if self.intercept is not None and np.any(xshift) else XCentring(None, np.zeros(inp.p))
        self._X = np.ascontiguousarray(inp.X, dtype=float)
        self._y = np.ascontiguousarray(inp.y, dtype=float)
        self._core = None
        self._core = self._build_core()
        self.theta0, self.step0 = self._start()

    @property
    def n(self) -> int:
        return self._n

    def _pieces(self, theta: np.ndarray) -> dict | None:
        try:
            return self.core.solution(np.ascontiguousarray(theta, dtype=float), self.reml)
        except FitError:
            return None

    def _deviance(self, theta: np.ndarray, reml: bool) -> float:
        try:
            sol = self.core.solution(np.ascontiguousarray(theta, dtype=float), reml)
        except FitError:
            return float("inf")
        return profiled_deviance(self._n, self.p, sol["ldl2"], sol["ldrx2"], sol["pwrss"],
                                 reml) - self.logw

    def objective(self, theta: np.ndarray) -> float:
        return self._deviance(theta, self.reml)

    def ml_deviance(self, theta: np.ndarray) -> float:
        return self._deviance(theta, False)

    def solution(self, theta: np.ndarray) -> dict[str, Any]:
        sol = super().solution(theta)
        sol["objective"] = profiled_deviance(self._n, self.p, sol["ldl2"], sol["ldrx2"],
                                             sol["pwrss"], self.reml) - self.logw
        return sol

    def set_y(self, y: np.ndarray) -> None:
        raise RowsNeededError("a new response needs the rows, which were read in chunks and "
                              "are not in memory (fit the data in memory for this)")

    def fitted(self, beta: np.ndarray, b: list[np.ndarray]) -> np.ndarray:
        """X beta + Z b for the *pseudo* rows, in their coordinates (centred, weighted), so
        that ``input.y - fitted`` are pseudo residuals whose squares sum to the real rows'
        weighted residual sum of squares for any (beta, b): what inference code reads
        (``pwrss_from_residuals``). The real rows' fitted values are the fit's ``fitted()``."""
        bu = np.array(beta, dtype=float)
        if self.intercept is not None:
            bu[self.intercept] -= self.yshift
        b_engine = []
        for e in self.eterms:
            blocks = [np.asarray(b[k], dtype=float) for k in e.blocks]
            merged = blocks[0] if len(blocks) == 1 else np.hstack(blocks)
            b_engine.append(np.ascontiguousarray(merged).ravel())
        return self.core.fitted(np.ascontiguousarray(self.xcentring.beta_in(bu)), b_engine)

    def _start(self) -> tuple[np.ndarray, np.ndarray]:
        theta0 = self.theta0.copy()
        step = np.full(theta0.size, 0.1)
        for e, diag in zip(self.eterms, self._moment_start()):
            for r, c, i in e.lam:
                if r == c:
                    theta0[i] = diag[r]
                    step[i] = 0.15 * diag[r] + 0.05
        return theta0, step

    def _moment_start(self) -> list[list[float]]:
        """The compiled engine's ``moment_start`` (crates/core/src/lmm.rs) with the real
        number of rows: the same moments, from the pseudo rows' cross products."""
        fallback = [[1.0] * e.Z.shape[1] for e in self.eterms]
        X, y, n, p = self._X, self._y, float(self._n), self.p
        if p:
            xtx = X.T @ X
            xty = X.T @ y
            try:
                L = np.linalg.cholesky(xtx)
            except np.linalg.LinAlgError:
                return fallback
            beta = np.linalg.solve(L.T, np.linalg.solve(L, xty))
        else:
            beta, xty = np.zeros(0), np.zeros(0)
        rss = float(y @ y) - float(beta @ xty)
        s2tot = rss / n
        if not s2tot > 0:
            return fallback
        r = y - X @ beta if p else y
        comps = []
        for e in self.eterms:
            ck = []
            for c in range(e.Z.shape[1]):
                z = e.Z[:, c]
                d = np.bincount(e.refs, weights=z * z, minlength=e.nlev)
                sz = np.bincount(e.refs, weights=z * r, minlength=e.nlev)
                used = d > 0
                if used.sum() < 2:
                    ck.append((np.nan, 0.0))
                    continue
                ms = sz[used] / d[used]
                k = float(used.sum())
                var = float(((ms - ms.mean()) ** 2).sum() / (k - 1.0))
                noise = s2tot * float((1.0 / d[used]).sum()) / k
                ck.append((var - noise, float(d[used].sum()) / n))
            comps.append(ck)
        explained = sum(max(v, 0.0) * m for ck in comps for v, m in ck if np.isfinite(v))
        s2e = max(s2tot - explained, 0.05 * s2tot)
        return [[float(np.clip(np.sqrt(max(v, 0.0) / s2e), 0.1, 10.0)) if np.isfinite(v) else 1.0
                 for v, _ in ck] for ck in comps]
