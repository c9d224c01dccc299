"""Covariance structures of the random effects: the theta layout lives here only.

Layer: covariance (above design, beside families; imported by engine, results, inference).
May import: ``multilevel.errors``, ``multilevel.control``, numpy. Nothing else of the package.

Each random-effect term (lme4's "block": one grouping factor, s columns of Z) has a relative
covariance factor Λ (s x s, lower triangular) filled from its slice of θ. A covariance
structure object owns everything about that map: how many θ it takes, the start values and
bounds, the pattern of Λ's nonzeros handed to the engine (``pattern``), lme4's parameter
names, and the conversion between θ and SDs / correlations. Functions below that take
``blocks`` accept structure objects or plain ints (an int s means ``Unstructured(s)``, lme4's
default for ``(x | g)``).

>>> cov = Unstructured(2)
>>> cov.ntheta, cov.start().tolist(), cov.lower().tolist()
(3, [1.0, 0.0, 1.0], [0.0, -inf, 0.0])
>>> Diagonal(2).pattern()
[(0, 0, 0), (1, 1, 1)]
"""
from __future__ import annotations

import functools
from typing import Sequence, Union

import numpy as np

# lme4's default tolerance of ``isSingular()``, defined with the other control defaults
from multilevel.control import SINGULAR_TOL as SINGULAR_TOL

__all__ = ["Covariance", "Unstructured", "Diagonal", "structures", "theta_layout", "diagonal_theta",
           "lambda_blocks", "theta_names", "sdcor_names", "sdcor_kinds", "theta_to_sdcor",
           "sdcor_to_theta", "is_singular_theta", "SINGULAR_TOL", "BOUNDARY_SNAP_TOL"]


def _lower_tri_colwise(s: int) -> tuple[np.ndarray, np.ndarray]:
    """(rows, cols) of the lower triangle of an s x s matrix, column by column (lme4's order)."""
    cols, rows = np.triu_indices(s)  # (i <= j) row-major == (col, row) column-major lower
    return rows, cols


class Covariance:
    """A covariance structure of one random-effect term with ``size`` columns.

    Subclasses define ``cells``: the (row, col) positions of Λ that θ fills, in θ's order.
    Everything else follows from it; a structure whose parameters are not entries of Λ
    (compound symmetry, AR(1)) overrides ``lambda_block`` and the conversions.
    """

    def __init__(self, size: int):
        if int(size) < 1:
            raise ValueError(f"a covariance structure needs at least one column, not {size}")
        self.size = int(size)

    # -- the layout --------------------------------------------------------------------

    def cells(self) -> list[tuple[int, int]]:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def ntheta(self) -> int:
        return len(self.cells())

    def start(self) -> np.ndarray:
        """θ at Λ = I (lme4's start)."""
        return np.array([1.0 if r == c else 0.0 for r, c in self.cells()])

    def lower(self) -> np.ndarray:
        """Lower bounds: 0 on Λ's diagonal, none below it."""
        return np.array([0.0 if r == c else -np.inf for r, c in self.cells()])

    def diagonal(self) -> list[int]:
        """Positions (within this block's θ) of Λ's diagonal entries."""
        return [k for k, (r, c) in enumerate(self.cells()) if r == c]

    def pattern(self) -> list[tuple[int, int, int]]:
        """Λ's nonzeros as (row, col, θ index within the block): what the engine consumes."""
        return [(r, c, k) for k, (r, c) in enumerate(self.cells())]

    def lambda_block(self, theta: np.ndarray) -> np.ndarray:
        """Λ (size x size) from this block's θ."""
        L = np.zeros((self.size, self.size))
        for (r, c), v in zip(self.cells(), np.asarray(theta, dtype=float)):
            L[r, c] = v
        return L

    # -- names and the SD / correlation scale ----------------------------------------------

    def theta_names(self, group: str, terms: Sequence[str]) -> list[str]:
        """lme4's names: ``group.term`` on the diagonal, ``group.row_term.col_term`` below."""
        return [f"{group}.{terms[r]}" if r == c else f"{group}.{terms[r]}.{terms[c]}" for r, c in self.cells()]

    def sdcor_names(self, group: str, terms: Sequence[str]) -> list[str]:
        """lme4's ``confint`` names: ``sd_(Intercept)|g``, ``cor_Days.(Intercept)|g``."""
        return [f"sd_{terms[r]}|{group}" if r == c else f"cor_{terms[r]}.{terms[c]}|{group}"
                for r, c in self.cells()]

    def sdcor_kinds(self) -> list[str]:
        return ["sd" if r == c else "cor" for r, c in self.cells()]

    def to_sdcor(self, theta: np.ndarray, sigma: float) -> np.ndarray:
        """lme4's ``Cv_to_Sv``: θ -> SDs and correlations on the data scale, in θ's order (a
        correlation with a zero SD is reported as 0)."""
        L = self.lambda_block(theta)
        S = L @ L.T
        sd = np.sqrt(np.clip(np.diag(S), 0.0, None))
        out = []
        for r, c in self.cells():
            if r == c:
                out.append(sigma * sd[r])
            else:
                den = sd[r] * sd[c]
                out.append(S[r, c] / den if den > 0 else 0.0)
        return np.array(out)

    def from_sdcor(self, pars: np.ndarray, sigma: float) -> np.ndarray:
        """lme4's ``Sv_to_Cv``: SDs and correlations (θ's order) -> θ relative to sigma."""
        v = np.asarray(pars, dtype=float)
        cells = self.cells()
        if self.size == 1:
            return np.array([v[0] / sigma])
        sd = np.zeros(self.size)
        C = np.eye(self.size)
        for k, (r, c) in enumerate(cells):
            if r == c:
                sd[r] = v[k]
            else:
                C[r, c] = C[c, r] = v[k]
        L = psd_cholesky(sd[:, None] * C * sd[None, :]) / sigma
        return np.array([L[r, c] for r, c in cells], dtype=float)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.size})"

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self.size == other.size  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash((type(self).__name__, self.size))


@functools.lru_cache(maxsize=64)
def _tri_cells(s: int) -> tuple[tuple[int, int], ...]:
    # cached: the layout is asked for many times per fit, and numpy's triu_indices is slow
    # next to a small fit
    r, c = _lower_tri_colwise(s)
    return tuple((int(i), int(j)) for i, j in zip(r, c))


class Unstructured(Covariance):
    """lme4's ``(x | g)``: Λ lower triangular and free, θ its lower triangle by columns."""

    def cells(self) -> list[tuple[int, int]]:
        return list(_tri_cells(self.size))


class Diagonal(Covariance):
    """Independent terms (lme4's ``diag()``, glmmTMB's ``diag``): Λ diagonal, one θ per column.

    lme4's ``(x || g)`` is split by the formula layer into scalar terms, which gives the same
    model as one ``Diagonal`` block.
    """

    def cells(self) -> list[tuple[int, int]]:
        return [(j, j) for j in range(self.size)]

    def from_sdcor(self, pars: np.ndarray, sigma: float) -> np.ndarray:
        return np.asarray(pars, dtype=float) / sigma


Block = Union[int, Covariance]


def structures(blocks: Sequence[Block]) -> list[Covariance]:
    """Structure objects for ``blocks`` (ints become ``Unstructured``)."""
    return [b if isinstance(b, Covariance) else Unstructured(int(b)) for b in blocks]


def psd_cholesky(S: np.ndarray) -> np.ndarray:
    """Lower Cholesky factor of a positive semi-definite matrix (zero pivots give zero
    columns, as lme4's ``safe_chol`` does for SDs at 0 or correlations at +-1)."""
    s = S.shape[0]
    L = np.zeros_like(S)
    for j in range(s):
        d = S[j, j] - L[j, :j] @ L[j, :j]
        if d <= 1e-14 * max(1.0, abs(S[j, j])):
            continue
        L[j, j] = np.sqrt(d)
        for i in range(j + 1, s):
            L[i, j] = (S[i, j] - L[i, :j] @ L[j, :j]) / L[j, j]
    return L


# -- theta of several blocks -------------------------------------------------------------


def _slices(covs: Sequence[Covariance]) -> list[slice]:
    out, i = [], 0
    for cv in covs:
        out.append(slice(i, i + cv.ntheta))
        i += cv.ntheta
    return out


def theta_layout(blocks: Sequence[Block]) -> tuple[list[slice], np.ndarray, np.ndarray]:
    """Per block the slice of θ it owns, the starting value (Λ = I) and the lower bounds.

    >>> sl, start, lower = theta_layout([2, 1])
    >>> sl, start.tolist()
    ([slice(0, 3, None), slice(3, 4, None)], [1.0, 0.0, 1.0, 1.0])
    """
    covs = structures(blocks)
    start = np.concatenate([cv.start() for cv in covs]) if covs else np.zeros(0)
    lower = np.concatenate([cv.lower() for cv in covs]) if covs else np.zeros(0)
    return _slices(covs), start, lower


def diagonal_theta(blocks: Sequence[Block]) -> np.ndarray:
    """Indices of the θ entries on the diagonal of some Λ (lower bound 0)."""
    return np.array(_diag_positions(blocks), dtype=int)


def _diag_positions(blocks: Sequence[Block]) -> list[int]:
    """Positions in θ of the diagonal elements of each Λ (those with lower bound 0)."""
    covs = structures(blocks)
    return [sl.start + k for cv, sl in zip(covs, _slices(covs)) for k in cv.diagonal()]


def lambda_blocks(theta: np.ndarray, blocks: Sequence[Block]) -> list[np.ndarray]:
    """Split θ into the relative factors Λ of each block.

    >>> [L.tolist() for L in lambda_blocks(np.array([1.0, 0.5, 2.0, 3.0]), [2, 1])]
    [[[1.0, 0.0], [0.5, 2.0]], [[3.0]]]
    """
    covs = structures(blocks)
    sl = _slices(covs)
    theta = np.asarray(theta, dtype=float)
    need = sl[-1].stop if sl else 0
    if need != len(theta):
        raise ValueError(f"theta has {len(theta)} elements, the blocks need {need}")
    return [cv.lambda_block(theta[s]) for cv, s in zip(covs, sl)]


def theta_names(groups: Sequence[str], terms: Sequence[Sequence[str]],
                blocks: Sequence[Block] | None = None) -> list[str]:
    """lme4's names of θ: ``group.term`` on the diagonal, ``group.row_term.col_term`` below it.

    >>> theta_names(["Subject"], [["(Intercept)", "Days"]])
    ['Subject.(Intercept)', 'Subject.Days.(Intercept)', 'Subject.Days']
    """
    covs = structures(blocks if blocks is not None else [len(t) for t in terms])
    return [n for cv, g, tt in zip(covs, groups, terms) for n in cv.theta_names(g, tt)]


def sdcor_names(groups: Sequence[str], terms: Sequence[Sequence[str]],
                blocks: Sequence[Block] | None = None, sigma: bool = True) -> list[str]:
    """lme4's ``confint(..., oldNames = FALSE)`` names in θ's order, then ``sigma``."""
    covs = structures(blocks if blocks is not None else [len(t) for t in terms])
    names = [n for cv, g, tt in zip(covs, groups, terms) for n in cv.sdcor_names(g, tt)]
    return names + (["sigma"] if sigma else [])


def sdcor_kinds(blocks: Sequence[Block]) -> list[str]:
    """'sd' or 'cor' for each θ position."""
    return [k for cv in structures(blocks) for k in cv.sdcor_kinds()]


def theta_to_sdcor(theta: np.ndarray, blocks: Sequence[Block], sigma: float) -> np.ndarray:
    """lme4's ``Cv_to_Sv`` over all blocks."""
    covs = structures(blocks)
    theta = np.asarray(theta, dtype=float)
    parts = [cv.to_sdcor(theta[s], sigma) for cv, s in zip(covs, _slices(covs))]
    return np.concatenate(parts) if parts else np.zeros(0)


def sdcor_to_theta(pars: np.ndarray, blocks: Sequence[Block], sigma: float) -> np.ndarray:
    """lme4's ``Sv_to_Cv`` over all blocks."""
    covs = structures(blocks)
    pars = np.asarray(pars, dtype=float)
    parts = [cv.from_sdcor(pars[s], sigma) for cv, s in zip(covs, _slices(covs))]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=float)


#: After optimisation a diagonal of Lambda below this is tried at exactly 0 (the optimiser
#: approaches the boundary without reaching it) and kept there if the criterion does not
#: rise. A numerical guard, not the user's ``singular_tol``: the estimates must not depend
#: on how singularity is reported.
BOUNDARY_SNAP_TOL = 1e-4


def is_singular_theta(theta: np.ndarray, sizes: Sequence[Block], tol: float = SINGULAR_TOL) -> bool:
    """lme4's ``isSingular(fit, tol)``: some diagonal element of a Lambda is below ``tol``.

    >>> is_singular_theta(np.array([1.0, 0.3, 5e-5]), [2], tol=1e-4)
    True
    """
    pos = _diag_positions(sizes)
    return bool(np.any(np.asarray(theta, dtype=float)[pos] < tol)) if pos else False


