"""Least squares on a block-structured model matrix, one small QR per group.

Why this module: the no-pooling regression of :func:`multilevel.pooling` has an intercept and
a slope per group (hsb: 320 columns of which each row uses 2), plus the formula's common
level-1 terms. :class:`~multilevel.results.lm.LmFit` hands such a frame (a
:class:`~multilevel.design.GroupedFrame`) here instead of taking the QR of the dense
matrix, which cost n p^2 (0.1 s for hsb) where this costs n (m + g)^2.

The computation is a QR factorisation of X with its columns reordered, the local columns
group by group first, then the global ones::

    X P = [blockdiag(A_j) | C] = Q [[blockdiag(R_j), B], [0, R_C]]

per group j ``A_j = Q_j R_j`` (all groups at once: batched ``numpy.linalg.qr`` over groups
of similar size, zero-padded), ``B_j = Q_j' C_j``, and the QR of the global columns after
removing each group's part, ``C - Q_j B_j = Q_C R_C``. Least squares solutions, fitted
values, the residual sum of squares and (X'X)^-1 do not depend on the order of the columns,
so they are those of the dense QR up to rounding (~1e-15 relative for the data sets here);
which columns are kept is decided beforehand, in R's order, by the design layer.

A base column absent in a group (the group's slope column was dropped as aliased) becomes a
unit column on a padding row, which decouples it (R_j gets a 1 and zeros there) so that
every group is factorised by the same batched call.

>>> import numpy as np
>>> from multilevel.design.matrices import ColumnPlan
>>> from multilevel.design.grouped import grouped_columns
>>> plan = ColumnPlan(False, [], ["g1", "g2", "g1:x", "g2:x"], [1, 1, 2, 2],
...                   [[("g", 0)], [("g", 1)], [("g", 0), ("x", 0)], [("g", 1), ("x", 0)]])
>>> x = np.array([0.0, 1.0, 2.0, 0.0, 1.0, 2.0])
>>> values = {"g": ("fac", np.array([0, 0, 0, 1, 1, 1])), "x": ("num", x[:, None])}
>>> gc = grouped_columns(plan, values, 6, "g")
>>> sol = grouped_least_squares(gc, [0, 1, 2, 3], 1.0 + 2.0 * x)
>>> np.round(sol.beta, 12).tolist()
[1.0, 1.0, 2.0, 2.0]
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from multilevel.design.grouped import GroupedColumns, padded_rows, size_buckets

__all__ = ["GroupedSolution", "grouped_least_squares"]


@dataclass
class GroupedSolution:
    """beta and (X'X)^-1 in the order of ``keep`` (None when not asked for); ``logdet_r`` =
    sum log|diag R|; ``eta`` = X[:, keep] @ beta (without any offset)."""

    beta: np.ndarray
    xtx_inv: np.ndarray | None
    logdet_r: float
    eta: np.ndarray


def _solve_upper(R: np.ndarray, B: np.ndarray) -> np.ndarray:
    """R^-1 B for a stack of small upper triangular R (k, m, m) and B (k, m, r): back
    substitution vectorised over the stack (scipy's batched solve loops in Python)."""
    m = R.shape[1]
    X = np.empty(np.broadcast_shapes(R.shape[:1], B.shape[:1]) + B.shape[1:])
    for i in range(m - 1, -1, -1):
        acc = B[:, i, :] - np.einsum("km,kmr->kr", R[:, i, i + 1:], X[:, i + 1:, :])
        X[:, i, :] = acc / R[:, i, i][:, None]
    return X


def grouped_least_squares(gc: GroupedColumns, keep: Sequence[int], z: np.ndarray,
                          covariance: bool = True) -> GroupedSolution:
    """Least squares of ``z`` on the columns ``keep`` (plan indices, linearly independent)
    of the block-structured matrix ``gc``, without forming it (see the module docstring).

    covariance: False skips (X'X)^-1 (``xtx_inv`` is then None): the explorer's pooling
    lines need only the coefficients and fitted values, and the inverse cost as much as
    the solve."""
    from scipy.linalg import qr, solve_triangular

    keep = np.asarray(keep, dtype=np.int64)
    n, J, m = gc.n, gc.nlev, gc.bases.shape[1]
    is_loc = gc.group[keep] >= 0
    lpos = np.flatnonzero(is_loc)                       # positions in keep
    gpos = np.flatnonzero(~is_loc)
    lj, ls = gc.group[keep[lpos]], gc.slot[keep[lpos]]
    active = np.zeros((J, m), dtype=bool)
    active[lj, ls] = True
    gmap = {c: i for i, c in enumerate(gc.glob_cols)}
    C = gc.glob[:, [gmap[int(c)] for c in keep[gpos]]]
    pg = C.shape[1]
    rhs = np.column_stack([C, z])

    refs = gc.refs
    order, starts, sizes = padded_rows(gc)
    Rb = np.zeros((J, m, m))
    QtY = np.zeros((J, m, pg + 1))
    resid = np.empty((n, pg + 1))
    diag = np.arange(m)
    for gi in size_buckets(sizes):
        nb = int(sizes[gi].max())
        ar = np.arange(nb)
        valid = ar[None, :] < sizes[gi][:, None]
        ridx = order[np.where(valid, starts[gi][:, None] + ar[None, :], 0)]
        A = np.zeros((len(gi), nb + m, m))
        A[:, :nb, :] = np.where(valid[..., None] & active[gi][:, None, :], gc.bases[ridx], 0.0)
        A[:, nb + diag, diag] = ~active[gi]   # absent columns: unit columns on padding rows
        Y = np.zeros((len(gi), nb + m, pg + 1))
        Y[:, :nb, :] = np.where(valid[..., None], rhs[ridx], 0.0)
        Q, R = np.linalg.qr(A)
        qty = np.matmul(Q.transpose(0, 2, 1), Y)
        res = Y - np.matmul(Q, qty)
        resid[ridx[valid]] = res[:, :nb][valid]
        Rb[gi] = R
        QtY[gi] = qty

    if pg:
        Raug = qr(resid, mode="r", check_finite=False)[0]
        Rc = np.triu(Raug[:pg, :pg])
        gamma = solve_triangular(Rc, Raug[:pg, pg], check_finite=False)
    else:
        Rc = np.zeros((0, 0))
        gamma = np.zeros(0)
    b = _solve_upper(Rb, (QtY[:, :, pg] - QtY[:, :, :pg] @ gamma)[..., None])[..., 0]
    b = np.where(active, b, 0.0)

    p = len(keep)
    beta = np.empty(p)
    beta[lpos] = b[lj, ls]
    beta[gpos] = gamma
    logdet = float(np.sum(np.log(np.abs(Rb[lj, ls, ls])))) + \
        float(np.sum(np.log(np.abs(np.diag(Rc)))))
    eta = np.einsum("ns,ns->n", gc.bases, b[refs]) + (C @ gamma if pg else 0.0)
    if not covariance:
        return GroupedSolution(beta, None, logdet, eta)

    # (X'X)^-1 = R^-1 R^-T with R^-1 = [[Rb^-1, -H], [0, Rc^-1]], H = Rb^-1 B Rc^-1
    Rbinv = _solve_upper(Rb, np.broadcast_to(np.eye(m), (J, m, m)))
    V = np.zeros((p, p))
    posmap = np.full((J, m), -1, dtype=np.int64)
    posmap[lj, ls] = lpos
    blk = np.matmul(Rbinv, Rbinv.transpose(0, 2, 1))
    for s in range(m):
        for t in range(m):
            js = np.flatnonzero(active[:, s] & active[:, t])
            V[posmap[js, s], posmap[js, t]] += blk[js, s, t]
    if pg:
        Rcinv = solve_triangular(Rc, np.eye(pg), check_finite=False)
        H = (np.matmul(Rbinv, QtY[:, :, :pg]) @ Rcinv)[lj, ls]   # (local columns, pg)
        V[np.ix_(lpos, lpos)] += H @ H.T
        lg = -H @ Rcinv.T
        V[np.ix_(lpos, gpos)] = lg
        V[np.ix_(gpos, lpos)] = lg.T
        V[np.ix_(gpos, gpos)] = Rcinv @ Rcinv.T
    return GroupedSolution(beta, V, logdet, eta)
