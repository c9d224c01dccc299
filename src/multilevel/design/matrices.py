"""Model matrices (R's ``model.matrix``): the column plan of a scope, filling it, and R's rank rule.

Layer: design. May import: formula, errors, control.

Why a module of its own: turning encoded variables into columns is the same for the fixed part
and for each random-effect term: a :class:`ColumnPlan` (per term R's ``TermCode`` coding,
column names ``a2:b2`` with the first variable varying fastest, ``assign``) is made once from a
:class:`~multilevel.design.variables.Scope` and filled for the fitting rows or for new data by
:func:`fill_columns`. :func:`rank_keep` is R's LINPACK rule for dropping aliased columns.
Imports :mod:`multilevel.design.variables` and :mod:`multilevel.design.contrasts` (the type
of a plan's contrasts) among the design modules.
"""
from __future__ import annotations

import contextlib
import functools
import itertools
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from multilevel._blas import _FLOPS_WORTH_SWITCHING, dot_thread, one_thread

from multilevel.design.contrasts import Contrast
from multilevel.design.variables import Scope
from multilevel.errors import DataError

__all__ = ["ColumnPlan", "make_plan", "fill_columns", "gram", "column_sumsq", "rank_keep",
           "rank_keep_gram"]


@dataclass
class ColumnPlan:
    """Column plan of one model matrix: per term the variables and their coding
    (1 = treatment contrasts, 2 = one column per level), plus R's column names."""

    intercept: bool
    terms: list[list[tuple[str, int]]]
    names: list[str]
    assign: list[int]
    # per column: (variable key, sub-column or level), or (key, j, "contrast") for column j
    # of the factor's contrast matrix (other than treatment coding, which compares levels)
    columns: list[list[tuple]]
    # key -> its Contrast, whose (k, m) matrix is made when the columns are filled (after
    # the size of the model matrix was checked)
    contrasts: dict[str, Contrast] = field(default_factory=dict)


def make_plan(scope: Scope, intercept_name: str = "(Intercept)") -> ColumnPlan:
    mt = scope.terms
    termsets = [frozenset(v.key for v in t.variables) for t in mt.terms]
    plan_terms: list[list[tuple[str, int]]] = []
    for j, t in enumerate(mt.terms):
        codes = []
        for v in t.variables:
            rest = termsets[j] - {v.key}
            # R's TermCode: contrasts if the term without this variable is (contained in)
            # an earlier term or is empty; otherwise the variable needs all its levels
            contrast = (not rest) or any(rest <= termsets[k] for k in range(j))
            codes.append((v.key, 1 if contrast else 2))
        plan_terms.append(codes)
    if not mt.intercept:
        # model.matrix: without an intercept the first factor of the first term with a
        # factor is coded by dummy variables
        done = False
        for codes in plan_terms:
            for i, (key, _) in enumerate(codes):
                var = scope.vars[key]
                if var.is_factor and len(var.levels) > 1:
                    codes[i] = (key, 2)
                    done = True
                    break
            if done:
                break
    names: list[str] = []
    assign: list[int] = []
    columns: list[list[tuple]] = []
    contrasts: dict[str, Contrast] = {}
    if mt.intercept:
        names.append(intercept_name)
        assign.append(0)
        columns.append([])
    for j, codes in enumerate(plan_terms, start=1):
        blocks = []
        for key, code in codes:
            var = scope.vars[key]
            if var.is_factor:
                if len(var.levels) < 2 and code == 1:
                    only = repr(var.levels[0]) if var.levels else "none"
                    raise DataError(f"factor '{key}' has only one level ({only}) in the rows "
                                    f"used; contrasts need at least two levels")
                con = var.contrast
                if code == 1 and con is not None and not con.is_treatment:
                    # R's contrast matrix: one column per contrast, named by its suffix
                    contrasts[key] = con
                    blocks.append([(key, j, key + suf, "contrast")
                                   for j, suf in enumerate(con.columns)])
                    continue
                start = 1 if code == 1 else 0
                blocks.append([(key, lvl, key + var.levels[lvl])
                               for lvl in range(start, len(var.levels))])
            else:
                blocks.append([(key, k, key + suf) for k, suf in enumerate(var.suffixes)])
        # R varies the first variable fastest
        for combo in itertools.product(*reversed(blocks)):
            combo = combo[::-1]
            names.append(":".join(c[2] for c in combo))
            assign.append(j)
            columns.append([(c[0], c[1]) + tuple(c[3:]) for c in combo])
    return ColumnPlan(mt.intercept, plan_terms, names, assign, columns, contrasts)


def fill_columns(plan: ColumnPlan, values: dict[str, tuple], n: int,
                 keep: Sequence[int] | None = None, out: np.ndarray | None = None) -> np.ndarray:
    """The (n, columns) float64 model matrix of ``plan`` (only the columns ``keep`` if given).

    ``values`` maps each variable key to ``("num", (n, k) array)`` or ``("fac", level codes)``
    as :meth:`Scope.evaluate <multilevel.design.variables.Scope.evaluate>` returns them; a
    column is the product of its variables' sub-columns or level indicators.

    >>> plan = ColumnPlan(True, [[("x", 1)]], ["(Intercept)", "x"], [0, 1], [[], [("x", 0)]])
    >>> fill_columns(plan, {"x": ("num", np.array([[2.0], [3.0]]))}, 2).tolist()
    [[1.0, 2.0], [1.0, 3.0]]

    ``out``: an (n, columns) float64 array (a view into a wider one: data read in chunks
    build each chunk's rows in place) to fill and return instead of a new one.
    """
    cols = plan.columns if keep is None else [plan.columns[i] for i in keep]
    if out is not None:
        if out.shape != (n, len(cols)) or out.dtype != np.float64:
            raise ValueError(f"out must be a float64 array of shape {(n, len(cols))}")
        M = out
    else:
        M = np.empty((n, len(cols)), dtype=np.float64)
    for c, comps in enumerate(cols):
        if not comps:
            M[:, c] = 1.0
            continue
        acc = None
        for comp in comps:
            key, sub = comp[0], comp[1]
            kind, data = values[key]
            if len(comp) > 2:  # a contrast column: the level's row of the contrast matrix
                vec = plan.contrasts[key].matrix[data, sub]
                acc = vec if acc is None else acc * vec
                continue
            vec = data[:, sub] if kind == "num" else (data == sub)
            if acc is None:
                acc = vec.astype(np.float64, copy=True) if kind == "fac" else vec
            else:
                acc = acc * vec
        M[:, c] = acc
    return M


#: at most this many columns, and at least _GRAM_PAIRWISE_ROWS rows: :func:`gram` takes one
#: dot product per pair of columns; a general matrix product over a tall matrix of a few
#: columns is slow (measured: 0.6 ms for 1e5 x 3 against 0.11 ms for its 6 dot products)
_GRAM_PAIRWISE_COLS = 8
_GRAM_PAIRWISE_ROWS = 2000


def gram(M: np.ndarray) -> np.ndarray:
    """The cross products ``M'M`` (p x p) of an (n, p) model matrix, by the quicker of one
    dot product per pair of columns (tall, few columns) and a matrix product.

    >>> gram(np.array([[1.0, 2.0], [1.0, 3.0]])).tolist()
    [[2.0, 5.0], [5.0, 13.0]]
    """
    n, p = M.shape
    # an overflow gives inf, left to the caller's checks (no numpy warning on the way)
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        if p > _GRAM_PAIRWISE_COLS or n < _GRAM_PAIRWISE_ROWS:
            # a frame-sized product: see multilevel._blas. Below one_thread's range, a tall
            # product still goes on one thread (dot_thread's rule, by rows): star's
            # 23,758 x 26 took 0.5-2 s on OpenBLAS's two threads on the busy 2-core machine
            # and 3-40 ms on one
            small = float(n) * p * p < _FLOPS_WORTH_SWITCHING
            with one_thread(n, p), dot_thread(n) if small else contextlib.nullcontext():
                return M.T @ M
        G = np.empty((p, p))
        with dot_thread(n):
            for j in range(p):
                mj = M[:, j]
                for k in range(j + 1):
                    G[j, k] = G[k, j] = np.dot(mj, M[:, k])
    return G


def column_sumsq(M: np.ndarray) -> list[float]:
    """Each column's sum of squares of a tall (n, p) matrix, by one dot product per column
    (a strided reduction over the rows of a C-ordered matrix is much slower); an overflow is
    an infinite sum, without numpy's warning.

    >>> column_sumsq(np.array([[1.0, 2.0], [1.0, 3.0]]))
    [2.0, 13.0]
    """
    p = M.shape[1]
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        if p > 16:
            return np.einsum("ij,ij->j", M, M).tolist()
        with dot_thread(M.shape[0]):
            return [float(np.dot(M[:, j], M[:, j])) for j in range(p)]


@functools.cache
def _dpotrf() -> Any:
    """LAPACK's dpotrf from scipy (imported on first use: scipy is not loaded with the
    package)."""
    from scipy.linalg.lapack import dpotrf

    return dpotrf


def rank_keep(X: np.ndarray, tol: float = 1e-7, *, xtx: np.ndarray | None = None) -> list[int]:
    """Columns kept by R's LINPACK rule (see ``_rank_keep``), on one BLAS thread for a
    frame-sized X (``multilevel._blas``). ``xtx``: ``X'X`` if the caller has it (see
    :func:`gram`), for the full-rank certificate."""
    with one_thread(*X.shape):
        return _rank_keep(X, tol, xtx)


def _rank_keep(X: np.ndarray, tol: float = 1e-7, G: np.ndarray | None = None) -> list[int]:
    """Columns kept by R's LINPACK rule (``qr(X, tol = 1e-7, LAPACK = FALSE)``): left to
    right, a column is dropped when its residual norm after projection on the earlier
    columns is below ``tol`` times its own norm.

    >>> rank_keep(np.array([[1.0, 2.0, 0.0], [1.0, 2.0, 1.0], [1.0, 2.0, 3.0]]))
    [0, 2]
    """
    n, p = X.shape
    if p == 0:
        return []
    # fast path: a Cholesky factor of X'X gives the residual norms; when every one is far
    # above the tolerance (squaring X costs precision only near it), X has full rank
    if n >= p:
        if G is None:
            G = X.T @ X
        d = np.sqrt(G.diagonal())
        # (the tests on Python floats: numpy's reductions cost more for a few columns; a NaN
        # fails them)
        if all(0 < v < np.inf for v in d.tolist()):
            if p == 1:  # one non-zero column is its own residual
                return [0]
            # LAPACK's Cholesky without numpy.linalg's wrapping (which was a third of a small
            # fit's rank check); info > 0: not positive definite
            L, info = _dpotrf()(G / np.multiply.outer(d, d), lower=1, clean=0)
            if info == 0 and min(L.diagonal().tolist()) > 1e-4:
                return list(range(p))
    norms = np.sqrt(np.einsum("ij,ij->j", X, X)) if n else np.zeros(p)
    keep: list[int] = []
    Q = np.zeros((n, 0))
    for j in range(p):
        if norms[j] == 0:
            continue
        x = X[:, j]
        r = x - Q @ (Q.T @ x)
        r = r - Q @ (Q.T @ r)  # re-orthogonalise (classical Gram-Schmidt twice)
        rn = np.linalg.norm(r)
        if rn >= tol * norms[j]:
            keep.append(j)
            Q = np.column_stack([Q, r / rn])
    return keep


def rank_keep_gram(G: np.ndarray, tol: float = 1e-7) -> list[int]:
    """R's LINPACK rule (:func:`rank_keep`) from the cross products ``G = X'X`` alone, for X
    accumulated over row chunks: the same fast path (a Cholesky factor of the scaled G far
    from singular keeps every column), else left to right a column is dropped when its
    squared residual norm after projection on the kept columns, a Schur complement of G,
    is below ``tol**2`` times its squared norm. Squaring costs digits only for columns near
    the tolerance (residual norms of ~1e-7 of the column's norm); exactly aliased columns
    (a missing combination of factor levels) come out as in :func:`rank_keep`.

    >>> X = np.array([[1.0, 2.0, 0.0], [1.0, 2.0, 1.0], [1.0, 2.0, 3.0]])
    >>> rank_keep_gram(X.T @ X)
    [0, 2]
    """
    G = np.asarray(G, dtype=np.float64)
    p = G.shape[0]
    if p == 0:
        return []
    d = np.sqrt(np.clip(np.diag(G), 0.0, None))
    if np.all(d > 0) and np.all(np.isfinite(d)):
        try:
            L = np.linalg.cholesky(G / np.outer(d, d))
            if np.all(np.abs(np.diag(L)) > 1e-4):
                return list(range(p))
        except np.linalg.LinAlgError:
            pass
    keep: list[int] = []
    L = np.zeros((p, p))
    for j in range(p):
        gjj = G[j, j]
        if not gjj > 0:
            continue
        k = len(keep)
        if k:
            from scipy.linalg import solve_triangular

            lj = solve_triangular(L[:k, :k], G[keep, j], lower=True)
            r2 = gjj - float(lj @ lj)
        else:
            lj, r2 = np.zeros(0), gjj
        if r2 > 0 and r2 >= tol * tol * gjj:
            L[k, :k] = lj
            L[k, k] = np.sqrt(r2)
            keep.append(j)
    return keep
