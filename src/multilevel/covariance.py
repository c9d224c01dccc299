"""Covariance structures of the random effects: the theta layout lives here only.

Layer: covariance (above design, beside families; imported by engine, results, inference).
May import: ``multilevel.errors``, ``multilevel.control``, numpy. Nothing else of the package.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import numpy as np

# lme4's default tolerance of ``isSingular()``, defined with the other control defaults
from multilevel.control import SINGULAR_TOL as SINGULAR_TOL

if TYPE_CHECKING:
    from multilevel.design import ModelFrame


def theta_layout(frame: ModelFrame) -> tuple[list[slice], np.ndarray, np.ndarray]:
    """Per block the slice of theta it owns (lme4 order: lower triangle by columns), the
    starting value (Lambda = I) and the lower bounds (0 on diagonals)."""
    slices, start, lower = [], [], []
    i = 0
    for t in frame.reterms:
        s = t.n_terms
        m = s * (s + 1) // 2
        slices.append(slice(i, i + m))
        for c in range(s):
            for r in range(c, s):
                start.append(1.0 if r == c else 0.0)
                lower.append(0.0 if r == c else -np.inf)
        i += m
    return slices, np.array(start), np.array(lower)


def diagonal_theta(frame: ModelFrame, slices: list[slice]) -> np.ndarray:
    """Indices of the theta entries on the diagonal of some Lambda (lower bound 0)."""
    idx = []
    for t, sl in zip(frame.reterms, slices):
        s = t.n_terms
        k = sl.start
        for c in range(s):
            idx.append(k)
            k += s - c
    return np.array(idx, dtype=int)


#: After optimisation a diagonal of Lambda below this is tried at exactly 0 (the optimiser
#: approaches the boundary without reaching it) and kept there if the criterion does not
#: rise. A numerical guard, not the user's ``singular_tol``: the estimates must not depend
#: on how singularity is reported.
BOUNDARY_SNAP_TOL = 1e-4


def is_singular_theta(theta: np.ndarray, sizes: Sequence[int], tol: float = SINGULAR_TOL) -> bool:
    """lme4's ``isSingular(fit, tol)``: some diagonal element of a Lambda is below ``tol``.

    >>> is_singular_theta(np.array([1.0, 0.3, 5e-5]), [2], tol=1e-4)
    True
    """
    pos = _diag_positions(sizes)
    return bool(np.any(np.asarray(theta, dtype=float)[pos] < tol)) if pos else False


def _lower_tri_colwise(s: int) -> tuple[np.ndarray, np.ndarray]:
    """(rows, cols) of the lower triangle of an s x s matrix, column by column (lme4's order)."""
    cols, rows = np.triu_indices(s)  # (i <= j) row-major == (col, row) column-major lower
    return rows, cols


def lambda_blocks(theta: np.ndarray, sizes: Sequence[int]) -> list[np.ndarray]:
    """Split lme4's theta into the lower-triangular relative factors Λ of each block.

    >>> [L.tolist() for L in lambda_blocks(np.array([1.0, 0.5, 2.0, 3.0]), [2, 1])]
    [[[1.0, 0.0], [0.5, 2.0]], [[3.0]]]
    """
    out = []
    pos = 0
    for s in sizes:
        m = s * (s + 1) // 2
        L = np.zeros((s, s))
        r, c = _lower_tri_colwise(s)
        L[r, c] = theta[pos : pos + m]
        out.append(L)
        pos += m
    if pos != len(theta):
        raise ValueError(f"theta has {len(theta)} elements, the blocks need {pos}")
    return out


def theta_names(groups: Sequence[str], terms: Sequence[Sequence[str]]) -> list[str]:
    """lme4's names of theta: ``group.term`` on the diagonal, ``group.row_term.col_term`` below it.

    >>> theta_names(["Subject"], [["(Intercept)", "Days"]])
    ['Subject.(Intercept)', 'Subject.Days.(Intercept)', 'Subject.Days']
    """
    names = []
    for g, tt in zip(groups, terms):
        r, c = _lower_tri_colwise(len(tt))
        for i, j in zip(r, c):
            names.append(f"{g}.{tt[i]}" if i == j else f"{g}.{tt[i]}.{tt[j]}")
    return names


def _diag_positions(sizes: Sequence[int]) -> list[int]:
    """Positions in theta of the diagonal elements of each Λ (those with lower bound 0)."""
    pos, out = 0, []
    for s in sizes:
        r, c = _lower_tri_colwise(s)
        out.extend(pos + int(k) for k in np.flatnonzero(r == c))
        pos += s * (s + 1) // 2
    return out
