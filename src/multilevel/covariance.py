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

__all__ = ["Covariance", "Unstructured", "Diagonal", "CompoundSymmetry", "AR1", "STRUCTURES",
           "make_structure", "frame_structures", "ParameterMap", "structures", "theta_layout", "diagonal_theta",
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

    # -- the optimiser's parameters ---------------------------------------------------------
    # For structures whose parameters are entries of Λ (unstructured, diagonal) the optimiser
    # works on θ itself. Compound symmetry and AR(1) constrain Λ: their own parameters
    # ("par": SDs relative to the residual SD, then a transformed correlation) are what the
    # optimiser moves, and ``par_to_theta`` fills the engine's full lower-triangular Λ.

    #: lme4 2.0 / glmmTMB's name of the structure
    code = "us"
    #: True when the optimiser's parameters are θ itself
    native = True

    @property
    def npar(self) -> int:
        """Number of covariance parameters of the structure (what ``logLik_df`` counts)."""
        return self.ntheta

    def par_lower(self) -> np.ndarray:
        return self.lower()

    def par_diagonal(self) -> list[int]:
        """Positions (within the block's parameters) of SD-like parameters bounded by 0."""
        return self.diagonal()

    def par_to_theta(self, par: np.ndarray) -> np.ndarray:
        return np.asarray(par, dtype=float)

    def theta_to_par(self, theta: np.ndarray) -> np.ndarray:
        return np.asarray(theta, dtype=float)

    def corr_param(self, theta: np.ndarray) -> float | None:
        """The structure's correlation parameter (cs: the common rho, ar1: lag-1 rho)."""
        return None

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

    def __reduce__(self):  # subclasses take only the size
        return (type(self), (self.size,))

    def __hash__(self) -> int:
        return hash((type(self).__name__, self.size))


@functools.lru_cache(maxsize=64)
def _tri_cells(s: int) -> tuple[tuple[int, int], ...]:
    # cached: the layout is asked for many times per fit, and numpy's triu_indices is slow
    # next to a small fit
    r, c = _lower_tri_colwise(s)
    return tuple((int(i), int(j)) for i, j in zip(r, c))


class Unstructured(Covariance):
    """lme4's ``(x | g)`` (also ``us(x | g)``): Λ lower triangular and free, θ its lower
    triangle by columns."""

    code = "us"

    def cells(self) -> list[tuple[int, int]]:
        return list(_tri_cells(self.size))


class Diagonal(Covariance):
    """Independent terms (lme4's ``diag()``, glmmTMB's ``diag``): Λ diagonal, one θ per column.

    lme4's ``(x || g)`` is split by the formula layer into scalar terms, which gives the same
    model as one ``Diagonal`` block.
    """

    code = "diag"

    def cells(self) -> list[tuple[int, int]]:
        return [(j, j) for j in range(self.size)]

    def from_sdcor(self, pars: np.ndarray, sigma: float) -> np.ndarray:
        return np.asarray(pars, dtype=float) / sigma


def _expit(z: float) -> float:
    return 1.0 / (1.0 + np.exp(-z)) if z >= 0 else np.exp(z) / (1.0 + np.exp(z))


class _Correlated(Covariance):
    """Structures with SDs and one correlation parameter rho: Σ/σ² = D R(rho) D with D the
    diagonal of SD ratios. Then Λ = chol(Σ/σ²) = D chol(R): a zero SD gives a zero row of Λ
    exactly (a singular fit), and only chol(R) depends on rho. θ is Λ's full lower triangle
    (the engine consumes the unstructured pattern); ``par`` = (SD ratios, z) with rho = ρ(z)
    for unbounded z, so the optimiser needs lower bounds (0 on the SDs) only."""

    native = False

    def __init__(self, size: int):
        super().__init__(size)
        if self.size < 2:
            raise ValueError(f"a {self.code}() term needs at least two columns, not {self.size}")

    def cells(self) -> list[tuple[int, int]]:
        return list(_tri_cells(self.size))

    # subclasses: how many SDs, rho's range and map, chol(R(rho))
    n_sd: int = 0
    #: the lower end of rho's range (the upper is 1)
    rho_lower: float = -1.0

    def rho(self, z: float) -> float:  # pragma: no cover - abstract
        raise NotImplementedError

    def zeta(self, rho: float) -> float:  # pragma: no cover - abstract
        raise NotImplementedError

    def corr_chol(self, rho: float) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def corr_from_cov(self, S: np.ndarray) -> float:  # pragma: no cover - abstract
        raise NotImplementedError

    def corr_matrix(self, rho: float) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def npar(self) -> int:
        return self.n_sd + 1

    def _sds(self, par: np.ndarray) -> np.ndarray:
        return np.broadcast_to(np.asarray(par[: self.n_sd], dtype=float), (self.size,))

    def par_lower(self) -> np.ndarray:
        return np.concatenate([np.zeros(self.n_sd), [-np.inf]])

    def par_diagonal(self) -> list[int]:
        return list(range(self.n_sd))

    def par_to_theta(self, par: np.ndarray) -> np.ndarray:
        par = np.asarray(par, dtype=float)
        L = self._sds(par)[:, None] * self.corr_chol(self.rho(float(par[-1])))
        r, c = _lower_tri_colwise(self.size)
        return L[r, c]

    def theta_to_par(self, theta: np.ndarray) -> np.ndarray:
        """The parameters of a θ this structure produced (SDs from Σ's diagonal, rho from
        its correlations); a general θ is projected onto the structure."""
        L = self.lambda_block(theta)
        S = L @ L.T
        sd = np.sqrt(np.clip(np.diag(S), 0.0, None))
        sds = sd if self.n_sd == self.size else np.array([np.sqrt(np.mean(sd**2))])
        return np.concatenate([sds, [self.zeta(self.corr_from_cov(S))]])

    def corr_param(self, theta: np.ndarray) -> float | None:
        return float(self.rho(float(self.theta_to_par(theta)[-1])))

    def from_sdcor(self, pars: np.ndarray, sigma: float) -> np.ndarray:
        # SDs and correlations in θ's order, projected onto the structure
        theta = super().from_sdcor(pars, sigma)
        return self.par_to_theta(self.theta_to_par(theta))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.size})"


class CompoundSymmetry(_Correlated):
    """glmmTMB's (and lme4 2.0's) ``cs(x | g)``: heterogeneous compound symmetry, one SD per
    term and one common correlation rho in (-1/(k-1), 1): Σ_ij = sd_i sd_j rho (i != j).

    The optimiser's rho is a logistic map of an unbounded z onto that interval.

    >>> cs = CompoundSymmetry(3)
    >>> th = cs.par_to_theta(np.array([1.0, 2.0, 3.0, cs.zeta(0.5)]))
    >>> L = cs.lambda_block(th); S = L @ L.T
    >>> np.round(S, 6).tolist()
    [[1.0, 1.0, 1.5], [1.0, 4.0, 3.0], [1.5, 3.0, 9.0]]
    >>> round(cs.corr_param(th), 12), cs.npar
    (0.5, 4)
    """

    code = "cs"

    @property
    def n_sd(self) -> int:  # type: ignore[override]
        return self.size

    @property
    def rho_lower(self) -> float:  # type: ignore[override]
        return -1.0 / (self.size - 1)

    def rho(self, z: float) -> float:
        lo = self.rho_lower
        return lo + (1.0 - lo) * _expit(z)

    def zeta(self, rho: float) -> float:
        lo = self.rho_lower
        q = (rho - lo) / (1.0 - lo)
        q = min(max(q, 1e-300), 1.0 - 1e-16)
        return float(np.log(q) - np.log1p(-q))

    def corr_matrix(self, rho: float) -> np.ndarray:
        k = self.size
        return (1.0 - rho) * np.eye(k) + rho * np.ones((k, k))

    def corr_chol(self, rho: float) -> np.ndarray:
        # R = (1 - rho) I + rho 11' is positive definite inside the range; at its edges the
        # factor of a semi-definite R (a correlation of 1 or -1/(k-1)) has zero columns
        R = self.corr_matrix(rho)
        try:
            return np.linalg.cholesky(R)
        except np.linalg.LinAlgError:
            return psd_cholesky(R)

    def corr_from_cov(self, S: np.ndarray) -> float:
        sd = np.sqrt(np.clip(np.diag(S), 0.0, None))
        iu = np.triu_indices(self.size, 1)
        den = np.outer(sd, sd)[iu]
        ok = den > 0
        if not ok.any():
            return 0.0
        rho = float(np.mean(S[iu][ok] / den[ok]))
        return min(max(rho, self.rho_lower), 1.0)


class AR1(_Correlated):
    """glmmTMB's (and lme4 2.0's) ``ar1(0 + t | g)``: the columns are the levels of a factor
    t, taken as consecutive unit-spaced times in level order; one SD for all of them and the
    lag-1 correlation rho in (-1, 1): Σ_ij = sd² rho^|i-j|. The optimiser's rho is tanh(z).

    chol(R) is known in closed form: column 0 is rho^i, column j >= 1 is
    sqrt(1 - rho²) rho^(i-j) below the diagonal (the innovations of the AR(1) recursion).

    >>> ar = AR1(3)
    >>> L = ar.lambda_block(ar.par_to_theta(np.array([2.0, np.arctanh(0.5)])))
    >>> np.round(L @ L.T, 12).tolist()
    [[4.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 4.0]]
    """

    code = "ar1"
    n_sd = 1

    def rho(self, z: float) -> float:
        return float(np.tanh(z))

    def zeta(self, rho: float) -> float:
        return float(np.arctanh(min(max(rho, -1.0 + 1e-16), 1.0 - 1e-16)))

    def corr_matrix(self, rho: float) -> np.ndarray:
        i = np.arange(self.size)
        return rho ** np.abs(i[:, None] - i[None, :]).astype(float)

    def corr_chol(self, rho: float) -> np.ndarray:
        k = self.size
        i = np.arange(k)
        lag = i[:, None] - i[None, :]
        L = np.where(lag >= 0, rho ** np.clip(lag, 0, None).astype(float), 0.0)
        L[:, 1:] *= np.sqrt(max(1.0 - rho * rho, 0.0))
        return L

    def corr_from_cov(self, S: np.ndarray) -> float:
        sd = np.sqrt(np.clip(np.diag(S), 0.0, None))
        den = sd[:-1] * sd[1:]
        ok = den > 0
        if not ok.any():
            return 0.0
        return float(np.clip(np.mean(np.diag(S, 1)[ok] / den[ok]), -1.0, 1.0))


#: lme4 2.0's structure names -> classes (``(x | g)`` is ``us``)
STRUCTURES: dict[str, type[Covariance]] = {"us": Unstructured, "diag": Diagonal,
                                           "cs": CompoundSymmetry, "ar1": AR1}


def make_structure(code: str, size: int) -> Covariance:
    """The structure object of a term: ``make_structure("cs", 3)`` -> ``CompoundSymmetry(3)``.

    >>> make_structure("ar1", 4), make_structure("us", 2)
    (AR1(4), Unstructured(2))
    """
    try:
        cls = STRUCTURES[code]
    except KeyError:
        raise ValueError(f"unknown covariance structure {code!r} (known: {', '.join(STRUCTURES)})") from None
    return cls(size)


def frame_structures(reterms: Sequence) -> list[Covariance]:
    """The structure of each random-effect term of a model frame, in the terms' order (the
    formula layer records ``structure`` on each term; ``(x | g)`` is unstructured)."""
    return [make_structure(getattr(rt, "structure", "us") or "us", rt.n_terms) for rt in reterms]


class ParameterMap:
    """The optimiser's parameters of several blocks and their map to the engine's θ.

    Identity (``native``) when every block's parameters are entries of Λ; otherwise each
    structure maps its slice of the parameters to its slice of θ.

    >>> pm = ParameterMap([Unstructured(1), AR1(3)])
    >>> pm.native, pm.npar, pm.ntheta, pm.lower.tolist()
    (False, 3, 7, [0.0, 0.0, -inf])
    >>> th = pm.to_theta(np.array([0.5, 2.0, 0.3]))
    >>> bool(np.allclose(pm.to_theta(pm.to_par(th)), th))
    True
    """

    def __init__(self, blocks: Sequence[Block]):
        self.covs = structures(blocks)
        self.native = all(cv.native for cv in self.covs)
        self.theta_slices = _slices(self.covs)
        out, i = [], 0
        for cv in self.covs:
            out.append(slice(i, i + cv.npar))
            i += cv.npar
        self.par_slices = out
        self.npar = i
        self.ntheta = self.theta_slices[-1].stop if self.covs else 0
        self.lower = _joined([cv.par_lower() for cv in self.covs])
        self.diagonal = np.array([sl.start + k for cv, sl in zip(self.covs, self.par_slices)
                                  for k in cv.par_diagonal()], dtype=int)

    def to_theta(self, par: np.ndarray) -> np.ndarray:
        par = np.asarray(par, dtype=float)
        if self.native:
            return par
        return np.concatenate([cv.par_to_theta(par[ps]) for cv, ps in zip(self.covs, self.par_slices)])

    def to_par(self, theta: np.ndarray) -> np.ndarray:
        theta = np.asarray(theta, dtype=float)
        if self.native:
            return theta.copy()
        return np.concatenate([cv.theta_to_par(theta[ts]) for cv, ts in zip(self.covs, self.theta_slices)])

    def start(self, theta0: np.ndarray) -> np.ndarray:
        """The optimiser's start from θ's: the engines' start is a diagonal Λ (moment
        estimates), which gives those SDs and rho = 0; a warm start from an estimate (the ML
        refit of a REML fit, a bootstrap refit) keeps its correlation."""
        return self.to_par(theta0)

    def restarts(self, par: np.ndarray) -> list[np.ndarray]:
        """Other starts for an optimum ``par``: the likelihood of a correlation parameter is
        often bimodal (an optimum near rho = -0.8 and a better one at rho -> 1), so each cs() /
        ar1() block is restarted with its rho on the other side, one block at a time. Empty
        when every structure is native."""
        if self.native:
            return []
        par = np.asarray(par, dtype=float)
        out = []
        for cv, ps in zip(self.covs, self.par_slices):
            if cv.native:
                continue
            rho = cv.rho(float(par[ps][-1]))
            lo = cv.rho_lower  # type: ignore[attr-defined]
            for alt in (0.9, 0.4, 0.6 * lo):
                if abs(alt - rho) > 0.25:
                    p = par.copy()
                    p[ps.stop - 1] = cv.zeta(alt)
                    # SDs at 0 (a singular start) would hide the correlation: start them off it
                    sl = slice(ps.start, ps.stop - 1)
                    p[sl] = np.where(p[sl] > 0, p[sl], 0.5 * max(float(np.max(par[sl])), 0.1))
                    out.append(p)
        return out

    def check_lower(self, par: np.ndarray, tol: float = 1e-5) -> np.ndarray:
        """Lower bounds for a convergence check at ``par``: a correlation within ``tol`` of
        an end of its range (z far out, where the criterion is flat) counts as on a bound,
        like an SD at 0, so that the check does not ask for a Newton step towards infinity."""
        lower = self.lower.copy()
        if self.native:
            return lower
        par = np.asarray(par, dtype=float)
        for cv, ps in zip(self.covs, self.par_slices):
            if cv.native:
                continue
            i = ps.stop - 1
            rho = cv.rho(float(par[i]))
            lo = cv.rho_lower  # type: ignore[attr-defined]
            if rho - lo < tol or 1.0 - rho < tol:
                lower[i] = par[i]
        return lower

    def edge_restarts(self, par: np.ndarray) -> list[np.ndarray]:
        """An interior start for an optimum with SDs of cs() / ar1() blocks at 0 (lme4's
        ``restart_edge``, for the structures' parameters): those SDs at half the block's
        largest (0.1 if all are 0). Empty when no such SD is at 0."""
        if self.native:
            return []
        par = np.asarray(par, dtype=float)
        p = par.copy()
        moved = False
        for cv, ps in zip(self.covs, self.par_slices):
            if cv.native:
                continue
            sl = slice(ps.start, ps.stop - 1)
            if np.any(p[sl] <= 0):
                p[sl] = np.where(p[sl] > 0, p[sl], 0.5 * max(float(np.max(par[sl])), 0.2))
                moved = True
        return [p] if moved else []

    def step(self, theta_step: np.ndarray) -> np.ndarray:
        """A first optimiser step from θ's (SD steps from θ's diagonal steps, 0.3 for z)."""
        theta_step = np.asarray(theta_step, dtype=float)
        if self.native:
            return theta_step.copy()
        parts = []
        for cv, ts in zip(self.covs, self.theta_slices):
            st = theta_step[ts]
            if cv.native:
                parts.append(st)
                continue
            d = np.array([st[k] for k in cv.diagonal()])
            sds = d if cv.npar - 1 == cv.size else np.array([float(np.mean(d))])
            parts.append(np.concatenate([sds, [0.3]]))
        return np.concatenate(parts)

    def wrap(self, fun):
        """``fun`` of θ as a function of the parameters (``fun`` itself when native)."""
        if self.native:
            return fun
        return lambda par: fun(self.to_theta(par))

    def wrap_full(self, fun):
        """``fun`` of (θ, β) as a function of (parameters, β)."""
        if self.native:
            return fun
        k = self.npar

        def f(x):
            x = np.asarray(x, dtype=float)
            return fun(np.concatenate([self.to_theta(x[:k]), x[k:]]))

        return f


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
    return _slices(covs), _joined([cv.start() for cv in covs]), _joined([cv.lower() for cv in covs])


def _joined(parts: list[np.ndarray]) -> np.ndarray:
    """The blocks' vectors end to end (one block's own fresh array as it is: a small fit has
    one term, and numpy's concatenate costs more than the rest of the layout)."""
    if len(parts) == 1:
        return parts[0]
    return np.concatenate(parts) if parts else np.zeros(0)


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
    if not pos:
        return False
    th = np.asarray(theta, dtype=float).tolist()  # a few values: Python floats are quicker
    return any(th[i] < tol for i in pos)


