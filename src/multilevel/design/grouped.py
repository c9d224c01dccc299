"""A model matrix kept as its parts: group indicator times a shared column, and the rest.

Layer: design. Imports only ``matrices`` of this layer.

Why this module: the no-pooling regression of :func:`multilevel.pooling` has one intercept
and one slope per group (``0 + factor(g) + factor(g):x``): for hsb that is a dense
7,185 x 320 matrix of which 99% are zeros, whose fill, rank check and QR took most of the
explorer's refit. Every such column is *local*: the indicator of one level j of the factor
``g`` times a *base* column shared by all levels (the constant 1 for ``factor(g)j``, ``x``
for ``factor(g)j:x``); the other columns (``sex``, ``(Intercept)``) are *global*. Kept as
(group codes, bases, global columns), the cross products are per-group sums and the least
squares fit is a small QR per group plus one over the global columns
(:mod:`multilevel.results.lm`), with the same numbers.

The rank rule stays R's (:func:`~multilevel.design.matrices.rank_keep`: left to right, a
column whose residual after the kept columns before it is below 1e-7 of its norm is
dropped). :func:`rank_keep_grouped` certifies full rank cheaply from the blocks; a matrix it
cannot certify (a group with too few rows, or without variation in x) is checked by the same
rule group by group when all its columns are local (then a column's residual involves only
its own group's columns), else by ``rank_keep`` itself on the dense matrix, so the columns
dropped are exactly those R drops.

>>> import numpy as np
>>> from multilevel.design.matrices import ColumnPlan
>>> plan = ColumnPlan(False, [], ["g1", "g2", "g1:x", "g2:x"], [1, 1, 2, 2],
...                   [[("g", 0)], [("g", 1)], [("g", 0), ("x", 0)], [("g", 1), ("x", 0)]])
>>> values = {"g": ("fac", np.array([0, 0, 1, 1, 1])),
...           "x": ("num", np.array([[1.0], [2.0], [1.0], [2.0], [4.0]]))}
>>> gc = grouped_columns(plan, values, 5, "g")
>>> gc.group.tolist(), gc.slot.tolist(), gc.bases[:, 1].tolist()
([0, 1, 0, 1], [0, 0, 1, 1], [1.0, 2.0, 1.0, 2.0, 4.0])
>>> rank_keep_grouped(gc)
[0, 1, 2, 3]
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from multilevel.design.matrices import ColumnPlan, fill_columns, rank_keep

__all__ = ["GroupedColumns", "grouped_columns", "rank_keep_grouped", "size_buckets", "padded_rows"]

#: the full-rank certificate: the column-scaled Gram matrix minus this times I must be
#: positive definite, i.e. the smallest singular value of the column-scaled matrix is above
#: 1e-4, so every column's residual after any others is above 1e-4 of its norm: far above
#: the 1e-7 of R's rule, and far above the rounding of the per-group sums (~1e-13)
_CERTIFY_SHIFT = 1e-8


@dataclass
class GroupedColumns:
    """The columns of one column plan as local (level j of ``key`` times a base) or global.

    plan, values, n: the plan and the evaluated variables it was filled from (``dense``
                     fills the ordinary matrix from them, exactly as ``fill_columns``).
    key:             the factor variable (``factor(g)``) whose levels make the blocks.
    refs:            (n,) level code of each row; ``nlev`` levels.
    group, slot:     (P,) per plan column its level and base index, -1 for a global column.
    bases:           (n, m) the base columns (products of the column's other variables).
    glob_cols, glob: plan indices of the global columns and their (n, g) values.
    """

    plan: ColumnPlan
    values: dict
    n: int
    key: str
    refs: np.ndarray
    nlev: int
    group: np.ndarray
    slot: np.ndarray
    bases: np.ndarray
    glob_cols: list[int]
    glob: np.ndarray

    @property
    def ncol(self) -> int:
        return len(self.plan.columns)

    def dense(self, keep: list[int] | None = None) -> np.ndarray:
        """The ordinary (n, P) model matrix (only the columns ``keep`` if given)."""
        return fill_columns(self.plan, self.values, self.n, keep)

    def local_sums(self, w: np.ndarray) -> np.ndarray:
        """(nlev, m, k) per level sum over its rows of base_s * w_k (w: (n, k))."""
        m, k = self.bases.shape[1], w.shape[1]
        out = np.empty((self.nlev, m, k))
        for s in range(m):
            for c in range(k):
                out[:, s, c] = np.bincount(self.refs, weights=self.bases[:, s] * w[:, c],
                                           minlength=self.nlev)
        return out

    def local_gram(self) -> np.ndarray:
        """(nlev, m, m) per level the cross products of the bases over its rows."""
        m = self.bases.shape[1]
        out = np.empty((self.nlev, m, m))
        for s in range(m):
            for t in range(s, m):
                out[:, s, t] = out[:, t, s] = np.bincount(
                    self.refs, weights=self.bases[:, s] * self.bases[:, t], minlength=self.nlev)
        return out

    def sumsq(self) -> np.ndarray:
        """(P,) each plan column's sum of squares."""
        ss = np.empty(self.ncol)
        loc = self.group >= 0
        if loc.any():
            g = self.local_gram()
            ss[loc] = g[self.group[loc], self.slot[loc], self.slot[loc]]
        if self.glob_cols:
            ss[self.glob_cols] = np.einsum("ij,ij->j", self.glob, self.glob)
        return ss

    def nonzeros(self) -> np.ndarray:
        """(P,) each plan column's number of nonzero entries."""
        nnz = np.empty(self.ncol)
        loc = self.group >= 0
        if loc.any():
            cnt = np.stack([np.bincount(self.refs, weights=(self.bases[:, s] != 0),
                                        minlength=self.nlev)
                            for s in range(self.bases.shape[1])], axis=1)
            nnz[loc] = cnt[self.group[loc], self.slot[loc]]
        if self.glob_cols:
            nnz[self.glob_cols] = np.count_nonzero(self.glob, axis=0)
        return nnz


def grouped_columns(plan: ColumnPlan, values: dict, n: int, key: str) -> GroupedColumns | None:
    """The columns of ``plan`` split by the levels of the factor ``key``, or None when the
    plan does not have that shape (``key`` not a factor coded by indicators, a column with
    it twice, a non-finite value): the caller then uses the dense matrix.

    ``values`` maps each variable key to ``("num", (n, k) array)`` or ``("fac", codes)`` as
    for :func:`~multilevel.design.matrices.fill_columns`.
    """
    if key not in values or values[key][0] != "fac":
        return None
    refs = np.asarray(values[key][1])
    if refs.shape != (n,) or n == 0 or refs.min() < 0:
        return None
    refs = refs.astype(np.int64, copy=False)
    P = len(plan.columns)
    group = np.full(P, -1, dtype=np.int64)
    slot = np.full(P, -1, dtype=np.int64)
    sigs: dict[tuple, int] = {}
    glob_cols: list[int] = []
    for c, comps in enumerate(plan.columns):
        mine = [comp for comp in comps if comp[0] == key]
        if not mine:
            glob_cols.append(c)
            continue
        if len(mine) != 1 or len(mine[0]) != 2:  # contrast-coded, or the factor twice
            return None
        rest = tuple(comp for comp in comps if comp[0] != key)
        group[c] = int(mine[0][1])
        slot[c] = sigs.setdefault(rest, len(sigs))
    if not sigs:
        return None
    nlev = int(max(refs.max(), group.max())) + 1
    # the bases through fill_columns itself: the same products in the same order, so a
    # local column is exactly its base on the group's rows (x * 1.0 = x) and 0 elsewhere
    base_plan = dataclasses.replace(plan, columns=[list(sig) for sig in sigs])
    bases = fill_columns(base_plan, values, n)
    glob = fill_columns(plan, values, n, glob_cols) if glob_cols else np.zeros((n, 0))
    with np.errstate(over="ignore", invalid="ignore"):
        if not (np.isfinite(bases.sum()) and np.isfinite(glob.sum())):
            return None
    return GroupedColumns(plan, values, n, key, refs, nlev, group, slot, bases, glob_cols, glob)


def rank_keep_grouped(gc: GroupedColumns, tol: float = 1e-7) -> list[int]:
    """The columns R's rule keeps (as :func:`~multilevel.design.matrices.rank_keep` on the
    dense matrix): all non-zero ones when the blocks certify full rank, else the dense rule.

    The certificate: the Gram matrix of the columns scaled to norm 1, minus 1e-8 I, is
    positive definite. Its Cholesky factor is blockwise (a small one per level, then the
    Schur complement of the global columns), at the cost of the per-level sums.
    """
    P = gc.ncol
    ss = gc.sumsq()
    nz = ss > 0
    if _certified(gc, ss, nz):
        return [k for k in range(P) if nz[k]]
    if not any(nz[c] for c in gc.glob_cols):
        local = _rank_keep_local(gc, ss, tol)
        if local is not None:
            return local
    return rank_keep(gc.dense(), tol)


def size_buckets(sizes: np.ndarray) -> list[np.ndarray]:
    """Groups (indices) in batches of similar size (the largest at most twice the smallest,
    or 8 rows more), so that zero-padding each batch to its largest group costs at most
    about as much again as the rows themselves."""
    order = np.argsort(sizes, kind="stable")
    out, start = [], 0
    for i in range(1, len(order) + 1):
        if i == len(order) or sizes[order[i]] > max(2 * sizes[order[start]], sizes[order[start]] + 8):
            out.append(order[start:i])
            start = i
    return out


def padded_rows(gc: GroupedColumns) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(order, starts, sizes): the rows sorted by level (stable), where each level's rows
    start in that order, and how many it has."""
    order = np.argsort(gc.refs, kind="stable")
    sizes = np.bincount(gc.refs, minlength=gc.nlev)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    return order, starts, sizes


def _rank_keep_local(gc: GroupedColumns, ss: np.ndarray, tol: float) -> list[int] | None:
    """R's rule when every non-zero column is local: columns of different levels have
    disjoint rows, so a column's residual after the kept columns before it is its residual
    after its own level's kept columns before it, and the rule runs level by level (all
    levels at once, Gram-Schmidt twice as ``rank_keep``). None when the levels do not visit
    their bases in one common order (then the dense rule decides)."""
    J, m = gc.nlev, gc.bases.shape[1]
    loc = np.flatnonzero((gc.group >= 0) & (ss > 0))
    pidx = np.full((J, m), -1, dtype=np.int64)
    pidx[gc.group[loc], gc.slot[loc]] = loc
    # each level must meet its bases in slot order (slots are numbered by first appearance
    # in the plan; R's plans have one run of columns per base)
    for s in range(1, m):
        both = (pidx[:, s] >= 0) & (pidx[:, :s] >= 0).any(axis=1)
        if both.any() and (pidx[both, s] < pidx[both, :s].max(axis=1)).any():
            return None
    norm = np.zeros((J, m))
    norm[gc.group[loc], gc.slot[loc]] = np.sqrt(ss[loc])
    kept = np.zeros((J, m), dtype=bool)
    order, starts, sizes = padded_rows(gc)
    for gi in size_buckets(sizes):
        nb = int(sizes[gi].max())
        ar = np.arange(nb)
        valid = ar[None, :] < sizes[gi][:, None]
        ridx = order[np.where(valid, starts[gi][:, None] + ar[None, :], 0)]
        A = np.where(valid[..., None], gc.bases[ridx], 0.0)       # (B, nb, m)
        Q = np.zeros_like(A)
        for s in range(m):
            x = A[:, :, s]
            r = x - np.einsum("bnk,bk->bn", Q, np.einsum("bnk,bn->bk", Q, x))
            r = r - np.einsum("bnk,bk->bn", Q, np.einsum("bnk,bn->bk", Q, r))
            rn = np.sqrt(np.einsum("bn,bn->b", r, r))
            ok = (pidx[gi, s] >= 0) & (rn >= tol * norm[gi, s])
            kept[gi, s] = ok
            with np.errstate(invalid="ignore", divide="ignore"):
                Q[:, :, s] = np.where(ok[:, None], r / rn[:, None], 0.0)
    return sorted(int(pidx[j, s]) for j, s in zip(*np.nonzero(kept)))


def _certified(gc: GroupedColumns, ss: np.ndarray, nz: np.ndarray) -> bool:
    J, m = gc.nlev, gc.bases.shape[1]
    if int(nz.sum()) > gc.n:
        return False
    loc = (gc.group >= 0) & nz
    active = np.zeros((J, m), dtype=bool)
    active[gc.group[loc], gc.slot[loc]] = True
    norm = np.ones((J, m))
    norm[gc.group[loc], gc.slot[loc]] = np.sqrt(ss[loc])
    G = gc.local_gram() / (norm[:, :, None] * norm[:, None, :])
    both = active[:, :, None] & active[:, None, :]
    eye = np.eye(m, dtype=bool)[None]
    # an absent (level, base) pair is an identity row: it stays out of everything else
    G = np.where(both, G, np.where(eye, 1.0 + _CERTIFY_SHIFT, 0.0))
    M = G - _CERTIFY_SHIFT * np.eye(m)
    try:
        L = np.linalg.cholesky(M)
    except np.linalg.LinAlgError:
        return False
    gsel = [i for i, c in enumerate(gc.glob_cols) if nz[c]]
    if not gsel:
        return True
    C = gc.glob[:, gsel] / np.sqrt(ss[[gc.glob_cols[i] for i in gsel]])
    B = gc.local_sums(C) / norm[:, :, None]
    B = np.where(active[:, :, None], B, 0.0)
    W = np.linalg.solve(L, B)  # L^-1 B, level by level
    S = C.T @ C - _CERTIFY_SHIFT * np.eye(C.shape[1]) - np.einsum("jsg,jsh->gh", W, W)
    try:
        np.linalg.cholesky(S)
    except np.linalg.LinAlgError:
        return False
    return True
