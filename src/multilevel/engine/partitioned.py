"""GLMMs evaluated partition by partition: every group's rows in one partition.

Layer: engine. Arrays only (the caller builds each partition's rows from the data).

Why this module: the criteria ``glmer`` optimises -- lme4's Laplace approximation, adaptive
Gauss-Hermite quadrature and the nAGQ = 0 criterion -- are, for a model whose random effects
nest in one grouping factor, sums over that factor's groups of terms that need only the
group's rows: the conditional modes of a group are found by PIRLS on its rows alone, given
(theta, beta). So the rows can live in partitions (files read one after another, or Dask
partitions persisted on the workers) that each hold whole groups, and every evaluation is a
map over the partitions followed by a sum of a few numbers. Only theta, beta and small sums
travel; the conditional modes stay where the rows are.

:class:`GlmmPartition` binds the rows of one partition to the compiled engine (the same
``GlmmCore`` an in-memory fit uses, on a sub-problem of whole groups) and gives its part of
each criterion. How the pieces add up:

- Laplace and AGQ: the partitions' criteria add up exactly to the criterion of all rows
  (every term of the core's -2 log p(y | u) + |u|^2 + log|L|^2 is a sum over rows or over
  groups, including the constants of -2 log p);
- the dispersion families (Gamma, inverse Gaussian): their -2 log p plugs the dispersion of
  *all* rows, phi = total deviance / sum(w), into R's ``family$aic``, so each partition gives
  its deviance, |u|^2 and log|L|^2 and the driver forms the criterion
  (:func:`dispersion_aic`, the engine's formula) from the totals;
- the exact gradient (one scalar term, or all-scalar terms with a canonical link) is the sum
  of the partitions' gradients;
- nAGQ = 0 (stage 1 of every fit) needs the joint mode of (u, beta). Given beta, each
  partition's modes follow from PIRLS over its u alone; the penalised deviance profiled over
  u, P(beta) = sum of (deviance + |u|^2), has gradient sum_j -2 X_j' (w (y - mu) mu_eta / V)
  (the modes are stationary) and Fisher information 2 sum_j S_j with S_j the Schur complement
  of the partition's random effects (the core's R_X R_X'). Newton steps on P with step
  halving (:meth:`PartitionedGlmmProblem.stage0`) converge to the joint mode that the
  in-memory PIRLS over (u, beta) finds, to the same tolerance; the criterion is the Laplace
  formula there.

A partition may lack some fixed-effect columns (a factor level or a between-group predictor
that does not vary inside it): its core gets a basis of its columns, ``X_j = X_K T``, and
sees ``T beta``; gradients and Schur complements map back through ``T``.

:class:`PartitionedGlmmProblem` is a :class:`~multilevel.engine.glmm.GlmmProblem` whose
evaluations map over the partitions through an *executor* (``map(method, *args)`` returning
one result per partition, in partition order, and ``close()``): :class:`LocalPartitions`
runs them in this process, one after another (out of core); the Dask executor
(``models.dask``) runs them where the partitions are persisted. The sums are formed on the
driver in partition order, so a fit is deterministic.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Protocol, Sequence

import numpy as np

from multilevel._core import GlmmCore, gauss_hermite
from multilevel.covariance import ParameterMap, theta_layout
from multilevel.engine.blocks import RowsNeededError
from multilevel.engine.centring import XCentring
from multilevel.engine.glmm import GlmmProblem
from multilevel.engine.input import EngineInput
from multilevel.engine.lmm import engine_terms
from multilevel.errors import DataError, FitError, ModelSpecError
from multilevel.families import Family

__all__ = ["PartitionTerm", "PartitionSpec", "GlmmPartition", "LocalPartitions",
           "PartitionedGlmmProblem", "dispersion_aic", "partition_spec"]

#: pieces of one evaluation, in this order, as numbers that add over partitions
_PIECES = ("objective", "aic", "dev", "usq", "ldl2")


def _stirlerr(a: float) -> float:
    """lgamma(a) - ((a - 1/2) log a - a + log(2 pi) / 2), as the engine computes it."""
    if a >= 15.0:
        r = 1.0 / a
        r2 = r * r
        return r * (1.0 / 12.0 - r2 * (1.0 / 360.0 - r2 * (1.0 / 1260.0 - r2 * (
            1.0 / 1680.0 - r2 * (1.0 / 1188.0)))))
    return math.lgamma(a) - ((a - 0.5) * math.log(a) - a + 0.5 * math.log(2.0 * math.pi))


def dispersion_aic(family: str, dev: float, sumw: float, sumwlogy: float) -> float:
    """R's ``family$aic`` of the dispersion families from the total deviance, sum(w) and
    sum(w log y), exactly as the engine forms it (``kernel::dispersion_aic``): Gamma's by
    Stirling's formula, without the cancellation of terms of size W a log a.

    >>> from multilevel.families import get_family
    >>> y, mu, w = np.array([1.0, 2.0, 4.0]), np.array([1.5, 2.5, 3.0]), np.ones(3)
    >>> fam = get_family("Gamma", "log")
    >>> dev = float(fam.dev_resids(y, mu, w).sum())
    >>> r_aic = fam.aic(y, None, mu, w)                    # R's Gamma()$aic
    >>> bool(abs(dispersion_aic("Gamma", dev, 3.0, float(np.log(y).sum())) - r_aic) < 1e-9)
    True
    """
    if not (np.isfinite(dev) and dev > 0 and sumw > 0):
        return math.inf
    phi = dev / sumw
    if family == "Gamma":
        a = 1.0 / phi
        return (sumw * math.log(2.0 * math.pi * phi) + 2.0 * sumw * _stirlerr(a) + sumw
                + 2.0 * sumwlogy + 2.0)
    if family == "inverse.gaussian":
        return sumw * (math.log(2.0 * math.pi * phi) + 1.0) + 3.0 * sumwlogy + 2.0
    raise ModelSpecError(f"the {family} family has no dispersion")


@dataclass(frozen=True)
class PartitionTerm:
    """One engine term (the random-effect terms of one grouping factor, merged as
    ``engine.lmm.engine_terms`` merges them): the input terms it holds, its columns and the
    (row, column, theta index) entries of Lambda, and its number of levels in all data."""

    blocks: tuple[int, ...]
    s: int
    lam: tuple[tuple[int, int, int], ...]
    nlev: int


@dataclass(frozen=True, eq=False)
class PartitionSpec:
    """What every partition shares (small; shipped to the workers with each partition).

    ``keep``: the fixed-effect columns kept by R's rank rule on all rows; ``shift``: the
    engine's centring of those columns (``engine.centring``, from all rows); ``use_ntrials``:
    R's ``any(n > 1)`` over all rows, which decides what binomial's aic counts."""

    family: str
    link: str
    param: float | None
    terms: tuple[PartitionTerm, ...]
    keep: tuple[int, ...]
    shift: np.ndarray
    use_ntrials: bool
    pirls_tol: float
    pirls_maxit: int
    has_dispersion: bool


def partition_spec(skeleton: EngineInput, family: Family, keep: Sequence[int], shift: np.ndarray,
                   use_ntrials: bool, pirls_tol: float = 1e-13, pirls_maxit: int = 200) -> PartitionSpec:
    """The spec of a model whose structure is ``skeleton`` (an input with the model's terms,
    levels and structures, no rows needed): the engine terms in the order an in-memory fit
    builds them (most levels first), so that every partition's core has the same layout."""
    slices, _, _ = theta_layout(skeleton.structures)
    terms = tuple(PartitionTerm(tuple(e.blocks), int(e.Z.shape[1]), tuple(map(tuple, e.lam)),
                                int(e.nlev)) for e in engine_terms(skeleton, slices))
    return PartitionSpec(family=family.name, link=family.link.name, param=family.param,
                         terms=terms, keep=tuple(int(k) for k in keep),
                         shift=np.asarray(shift, dtype=float), use_ntrials=bool(use_ntrials),
                         pirls_tol=float(pirls_tol), pirls_maxit=int(pirls_maxit),
                         has_dispersion=bool(family.has_dispersion))


def _f64(x: Any) -> np.ndarray:
    """A C-contiguous, aligned float64 array for the compiled core (arrays that arrive
    through Dask's serialisation may be neither: the core refuses those)."""
    return np.require(np.asarray(x, dtype=np.float64), requirements=["C", "A"])


def _column_basis(X: np.ndarray) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(K, T) with ``X = X[:, K] @ T`` when X lacks full column rank, (None, None) when it
    has it. K: the columns chosen by pivoted QR (numpy's rank tolerance); T solves for the
    others exactly (they are exact combinations: an all-zero factor level, a constant
    between-group predictor); anything short of an exact combination is refused."""
    n, p = X.shape
    if p == 0:
        return None, None
    from scipy.linalg import qr

    R, piv = qr(X, mode="r", pivoting=True)
    d = np.abs(np.diag(R))
    tol = (d[0] if d.size else 0.0) * max(n, p) * np.finfo(float).eps
    r = int(np.sum(d > tol))
    if r == p:
        return None, None
    K = np.sort(piv[:r])
    XK = X[:, K]
    T = np.linalg.lstsq(XK, X, rcond=None)[0] if r else np.zeros((0, p))
    if r:
        T[np.abs(T) < 1e-14] = 0.0
        for j, k in enumerate(K):  # the basis columns map to themselves exactly
            T[:, k] = 0.0
            T[j, k] = 1.0
    err = float(np.max(np.abs(XK @ T - X))) if r else float(np.max(np.abs(X)))
    if err > 1e-9 * max(1.0, float(np.max(np.abs(X)))):
        raise FitError("a partition's fixed-effect columns are nearly but not exactly collinear; "
                       "fit the data in memory")
    return K, T


class GlmmPartition:
    """The rows of whole groups of a GLMM bound to the compiled engine (see the module
    docstring). ``arrays``: ``refs`` and ``Z`` (one per input term; levels in all data),
    ``X`` (every fixed-effect column before the rank rule), ``y`` and optional ``wt`` (prior
    weights), ``off``, ``nt`` (binomial trials when they are not the weights).

    Every method returns small things (numbers, arrays of p or p x p values, the modes of its
    groups); the core keeps its warm start between calls. Picklable (the core is rebuilt,
    warm-started from the last modes).

    >>> import numpy as np
    >>> from multilevel.covariance import Unstructured
    >>> from multilevel.engine.input import EngineInput, TermInput
    >>> from multilevel.families import get_family
    >>> g = np.repeat(np.arange(4), 5)
    >>> rng = np.random.default_rng(1)
    >>> y = (rng.random(20) < 0.5).astype(float)
    >>> t = TermInput(refs=np.zeros(0, np.uint32), Z=np.zeros((0, 1)), n_levels=4, factor=0,
    ...               structure=Unstructured(1))
    >>> skel = EngineInput(y=np.zeros(0), X=np.zeros((0, 1)), terms=(t,), intercept=0)
    >>> spec = partition_spec(skel, get_family("binomial"), [0], np.zeros(1), False)
    >>> a, b = (GlmmPartition({"refs": [g[r]], "Z": [np.ones((10, 1))], "X": np.ones((10, 1)),
    ...                        "y": y[r]}, spec) for r in (slice(0, 10), slice(10, 20)))
    >>> whole = GlmmPartition({"refs": [g], "Z": [np.ones((20, 1))], "X": np.ones((20, 1)),
    ...                        "y": y}, spec)
    >>> th, beta = np.array([0.7]), np.array([0.1])
    >>> parts = a.laplace(th, beta)[0] + b.laplace(th, beta)[0]
    >>> bool(abs(parts - whole.laplace(th, beta)[0]) < 1e-12)
    True
    """

    def __init__(self, arrays: Mapping[str, Any], spec: PartitionSpec):
        self.spec = spec
        refs_in = arrays["refs"]
        Z_in = arrays["Z"]
        self.levels: list[np.ndarray] = []
        self._refs: list[np.ndarray] = []
        self._Z: list[np.ndarray] = []
        for t in spec.terms:
            r = np.asarray(refs_in[t.blocks[0]], dtype=np.int64)
            lev, loc = np.unique(r, return_inverse=True)
            self.levels.append(lev)
            self._refs.append(np.ascontiguousarray(loc, dtype=np.uint32))
            zs = [np.asarray(Z_in[k], dtype=float).reshape(len(r), -1) for k in t.blocks]
            self._Z.append(np.ascontiguousarray(zs[0] if len(zs) == 1 else np.hstack(zs)))
        X = np.asarray(arrays["X"], dtype=float)
        if list(spec.keep) != list(range(X.shape[1])):
            X = X[:, list(spec.keep)]
        if np.any(spec.shift):
            X = X - spec.shift[None, :]
        self.nrows = int(X.shape[0])
        self.p = int(X.shape[1])
        self._Xfull = np.ascontiguousarray(X)
        self.K, self.T = _column_basis(self._Xfull)
        self._X = self._Xfull if self.K is None else np.ascontiguousarray(self._Xfull[:, self.K])
        self._y = np.ascontiguousarray(arrays["y"], dtype=float)
        wt = arrays.get("wt")
        self._wt = None if wt is None else np.ascontiguousarray(wt, dtype=float)
        off = arrays.get("off")
        self._off = None if off is None else np.ascontiguousarray(off, dtype=float)
        nt = arrays.get("nt")
        self._nt = None
        if nt is not None:
            nt = np.ascontiguousarray(nt, dtype=float)
            if spec.use_ntrials:
                # R's binomial aic counts the trials when any row in all data has more than
                # one; the core decides that from its own rows, so a partition whose rows
                # have at most one trial each would count its weights instead
                if not np.any(nt > 1.0):
                    w = np.ones_like(nt) if self._wt is None else self._wt
                    if not np.array_equal(w, nt):
                        raise DataError("a partition of whole groups has at most one binomial "
                                        "trial per row while other rows have more, and prior "
                                        "weights that differ from the trials: this aic cannot be "
                                        "split by group; fit the data in memory")
                self._nt = nt
        w = np.ones(self.nrows) if self._wt is None else self._wt
        #: sum(w) and sum(w log y) of the rows (the dispersion families' aic)
        self.sumw = float(np.sum(w))
        self.sumwlogy = float(np.sum(w[w > 0] * np.log(self._y[w > 0]))) if spec.has_dispersion \
            else 0.0
        self._core: GlmmCore | None = None
        self._warm: list[np.ndarray] | None = None
        #: the last evaluation (method, args): a core rebuilt from the stored rows (after
        #: unpickling, or each call when partitions are not kept in memory) repeats it,
        #: warm-started at its modes, before its state (weights, modes) is read
        self._last: tuple | None = None
        self._state_ok = False

    # -- the core -----------------------------------------------------------------------------
    @property
    def core(self) -> GlmmCore:
        if self._core is None:
            s = self.spec
            opt = [None if a is None else _f64(a) for a in (self._wt, self._nt, self._off)]
            core = GlmmCore([np.require(r, np.uint32, ["C", "A"]) for r in self._refs],
                            [_f64(z) for z in self._Z], [len(lv) for lv in self.levels],
                            [list(t.lam) for t in s.terms], _f64(self._X), _f64(self._y),
                            s.family, s.link, *opt, family_param=s.param)
            tol = s.pirls_tol * (1e-2 if s.has_dispersion else 1.0)
            core.set_control(tol=tol, maxit=s.pirls_maxit)
            if self._warm is not None:
                core.set_u([_f64(u) for u in self._warm])
            self._core = core
            self._state_ok = False
        return self._core

    def _state(self, last: tuple | None = None) -> GlmmCore:
        """The core at the state of the evaluation ``last`` (method, args) -- by default its
        own last one -- repeated (warm-started, so at no cost but a check) when the core was
        rebuilt or its last evaluation was another: a copy of this partition may have run
        the driver's last evaluation (Dask moves a task now and then), so the driver names
        the evaluation whose state it reads."""
        core = self.core
        if last is not None and not _same_call(self._last, last):
            getattr(self, last[0])(*last[1])
        elif not self._state_ok:
            if self._last is None:
                raise FitError("no evaluation of this partition yet: its state is undefined")
            method, args = self._last
            getattr(self, method)(*args)
        return core

    def _record(self, method: str, *args: Any) -> None:
        self._last = (method, args)
        self._state_ok = True

    def __getstate__(self) -> dict:
        st = self.__dict__.copy()
        if self._core is not None:
            st["_warm"] = [np.asarray(u, dtype=float) for u in self._core.u()]
        st["_core"] = None
        st["_state_ok"] = False
        return st

    def _beta(self, beta: np.ndarray) -> np.ndarray:
        """The core's coefficients (of the basis columns) for the model's beta_c."""
        beta = np.asarray(beta, dtype=float)
        return _f64(beta if self.T is None else self.T @ beta)

    def _pieces(self, value: float) -> np.ndarray:
        if not np.isfinite(value):
            return np.full(len(_PIECES), np.inf)
        info = self.core.info()
        return np.array([value, info["aic"], info["dev"], info["usq"], info["ldl2"]])

    # -- criteria -------------------------------------------------------------------------------
    def laplace(self, theta: np.ndarray, beta: np.ndarray) -> np.ndarray:
        """The Laplace pieces (objective, aic, dev, |u|^2, log|L|^2) at (theta, beta_c)."""
        th = _f64(theta)
        out = self._pieces(self.core.laplace(th, self._beta(beta)))
        self._record("laplace", th, np.asarray(beta, dtype=float))
        return out

    def agq(self, theta: np.ndarray, beta: np.ndarray, nodes: np.ndarray,
            weights: np.ndarray) -> np.ndarray:
        """The adaptive Gauss-Hermite pieces (one scalar term)."""
        th = _f64(theta)
        out = self._pieces(self.core.agq(th, self._beta(beta), _f64(nodes), _f64(weights)))
        self._record("agq", th, np.asarray(beta, dtype=float), nodes, weights)
        return out

    def laplace_grad(self, theta: np.ndarray, beta: np.ndarray, jacobian: bool = True
                     ) -> tuple[np.ndarray, np.ndarray | None]:
        """The Laplace pieces and the gradient in (theta, beta_c) (None where the engine has
        none)."""
        th = _f64(theta)
        f, g = self.core.laplace_grad(th, self._beta(beta), jacobian)
        pieces = self._pieces(f)
        self._record("laplace", th, np.asarray(beta, dtype=float))
        if g is None or not np.isfinite(f):
            return pieces, None
        g = np.asarray(g, dtype=float)
        if self.T is not None:
            nt = g.size - self._X.shape[1]
            g = np.concatenate([g[:nt], self.T.T @ g[nt:]])
        return pieces, g

    def schur(self, theta: np.ndarray, last: tuple | None = None) -> np.ndarray:
        """S = X'WX - X'WZ Lambda (Lambda'Z'WZ Lambda + I)^-1 Lambda'Z'WX (p x p) at the
        current weights: the partition's part of the fixed effects' information (R_X R_X')."""
        p = self.p
        if p == 0:
            return np.zeros((0, 0))
        r = self._X.shape[1]
        core = self._state(last)
        if r:
            try:
                rx = np.asarray(core.rx(_f64(theta))).reshape(r, r).T
                S = rx @ rx.T
                return S if self.T is None else self.T.T @ S @ self.T
            except FitError:
                pass  # numerically not positive definite: a small partition, formed directly
        return self._schur_dense(theta, np.asarray(core.weights(), dtype=float))

    #: the largest partition (random effects; rows times random effects) whose Schur
    #: complement is formed from dense matrices when the core's Cholesky factor fails
    _DENSE_Q, _DENSE_NQ = 4000, 50_000_000

    def _schur_dense(self, theta: np.ndarray, w: np.ndarray) -> np.ndarray:
        """X'WX - X'WZ Lambda M^-1 Lambda'Z'WX from dense matrices, M = Lambda'Z'WZ Lambda + I
        (positive definite whatever the weights): for partitions with about as many rows as
        fixed effects, where S is positive semi-definite but the core's Cholesky factor of it
        fails on rounding (the sum over partitions is what must be positive definite)."""
        n = self.nrows
        q = sum(len(lv) * t.s for lv, t in zip(self.levels, self.spec.terms))
        if q > self._DENSE_Q or n * q > self._DENSE_NQ:
            raise FitError("the fixed effects' information of a partition is not positive "
                           "definite (its fixed-effect columns are nearly collinear); fit the "
                           "data in memory")
        theta = np.asarray(theta, dtype=float)
        ZL = np.zeros((n, q))
        off = 0
        rows = np.arange(n)
        for t, refs, Z, lv in zip(self.spec.terms, self._refs, self._Z, self.levels):
            lam = np.zeros((t.s, t.s))
            for i, j, k in t.lam:
                lam[i, j] = theta[k]
            zl = Z @ lam  # each row's z' Lambda, placed at its level's columns
            for c in range(t.s):
                ZL[rows, off + refs.astype(np.int64) * t.s + c] = zl[:, c]
            off += len(lv) * t.s
        X = self._Xfull
        WZL = ZL * w[:, None]
        M = ZL.T @ WZL + np.eye(q)
        B = WZL.T @ X
        L = np.linalg.cholesky(M)
        C = np.linalg.solve(L, B)
        S = X.T @ (X * w[:, None]) - C.T @ C
        return 0.5 * (S + S.T)

    def profile(self, theta: np.ndarray, beta: np.ndarray, schur: bool = True
                ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        """Stage 1's pieces at (theta, beta_c): the Laplace pieces with the modes of u given
        beta, the gradient in beta_c of the penalised deviance profiled over u (deviance +
        |u|^2; the modes are stationary, so only the deviance's explicit derivative enters:
        -2 X' [w (y - mu) mu_eta / V], from the core's means) and, with ``schur``, the Schur
        complement (the Fisher information / 2)."""
        pieces = self.laplace(theta, beta)
        if not np.isfinite(pieces[0]):
            return pieces, None, None
        core = self._state()
        eta = np.asarray(core.eta(), dtype=float)
        mu = np.asarray(core.mu(), dtype=float)
        wt = np.ones(self.nrows) if self._wt is None else self._wt
        fam = self._family()
        with np.errstate(invalid="ignore", divide="ignore"):
            score = wt * (self._y - mu) * (np.asarray(fam.mu_eta(eta), dtype=float)
                                           / np.asarray(fam.variance(mu), dtype=float))
        if not np.all(np.isfinite(score)):
            return pieces, None, None
        g = -2.0 * (self._Xfull.T @ score)
        S = None
        if schur:
            try:
                S = self.schur(theta)
            except FitError:
                return pieces, None, None
        return pieces, g, S

    def _family(self) -> Family:
        fam = getattr(self, "_fam", None)
        if fam is None or fam.param != self.spec.param:
            from multilevel.families import get_family

            s = self.spec
            fam = get_family(s.family, s.link, **({"theta": s.param} if s.param is not None else {}))
            self._fam = fam
        return fam

    # -- the state after an evaluation ------------------------------------------------------------
    def modes(self, theta: np.ndarray, last: tuple | None = None
              ) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
        """(global levels, u, b) per engine term, level-major (levels x s), at the last
        evaluation."""
        core = self._state(last)
        u = [np.asarray(x, dtype=float) for x in core.u()]
        b = [np.asarray(x, dtype=float) for x in core.b(_f64(theta))]
        return self.levels, u, b

    def condvar(self, theta: np.ndarray, last: tuple | None = None
                ) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """(global levels, conditional covariances (levels * s * s, flat)) per engine term."""
        cv = self._state(last).condvar(_f64(theta))
        return self.levels, [np.asarray(x, dtype=float) for x in cv]

    def pearson(self, last: tuple | None = None) -> float:
        """The Pearson chi-square sum w (y - mu)^2 / V(mu) at the last evaluation."""
        from multilevel.families import get_family

        s = self.spec
        fam = get_family(s.family, s.link, **({"theta": s.param} if s.param is not None else {}))
        mu = np.asarray(self._state(last).mu(), dtype=float)
        wt = np.ones(self.nrows) if self._wt is None else self._wt
        return float(np.sum(wt * (self._y - mu) ** 2 / fam.variance(mu)))

    def saturated(self) -> float:
        """log p(y | mu = y) summed over the rows (lme4 leaves it out of nAGQ > 1)."""
        from multilevel.families import get_family

        s = self.spec
        fam = get_family(s.family, s.link, **({"theta": s.param} if s.param is not None else {}))
        wt = np.ones(self.nrows) if self._wt is None else self._wt
        ntr = self._nt if self._nt is not None else np.ones(self.nrows)
        return float(fam.saturated_loglik(self._y, ntr, wt))

    def set_family_param(self, value: float) -> None:
        """Change the negative binomial's theta (glmer.nb's outer search), keeping the modes."""
        self.spec = _with_param(self.spec, value)
        if self._core is not None:
            self._core.set_family_param(float(value))
        self._state_ok = False

    # -- the GLM without random effects (a start for stage 1) -----------------------------------
    def glm_step(self, beta: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, float, float, int]:
        """One IRLS step's sums of the GLM without random effects at beta_c (None: from the
        family's starting means, as ``glm``'s initialize): X'WX, X'Wz, the deviance, the
        largest |eta| and the number of fitted probabilities at 0 or 1."""
        from multilevel.families import get_family

        s = self.spec
        fam = get_family(s.family, s.link, **({"theta": s.param} if s.param is not None else {}))
        X, y = self._Xfull, self._y
        n = self.nrows
        w = np.ones(n) if self._wt is None else self._wt
        if self._nt is not None and s.family == "binomial":
            w = w * self._nt
        off = np.zeros(n) if self._off is None else self._off
        if beta is None:
            mu = (w * y + 0.5) / (w + 1.0) if s.family == "binomial" else y + 0.1
            eta = np.asarray(fam.linkfun(mu), dtype=float)
        else:
            eta = X @ np.asarray(beta, dtype=float) + off
            mu = np.asarray(fam.linkinv(eta), dtype=float)
        mu_eta = np.asarray(fam.mu_eta(eta), dtype=float)
        var = np.asarray(fam.variance(mu), dtype=float)
        good = (w > 0) & (var > 0) & np.isfinite(mu_eta) & (mu_eta != 0)
        z = eta - off + (y - mu) / np.where(good, mu_eta, 1.0)
        ww = np.where(good, w * mu_eta**2 / np.where(good, var, 1.0), 0.0)
        dev = float(np.sum(fam.dev_resids(y, mu, w))) if beta is not None else math.inf
        edge = int(np.sum(((mu < 1e-8) | (mu > 1 - 1e-8)) & (w > 0))) if s.family == "binomial" else 0
        return (X.T @ (X * ww[:, None]), X.T @ (ww * z), dev,
                float(np.max(np.abs(eta))) if n else 0.0, edge)


def _same_call(a: tuple | None, b: tuple | None) -> bool:
    """Whether two recorded evaluations (method, args) are the same call."""
    if a is None or b is None or a[0] != b[0] or len(a[1]) != len(b[1]):
        return False
    return all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(a[1], b[1]))


def _with_param(spec: PartitionSpec, value: float) -> PartitionSpec:
    import dataclasses

    return dataclasses.replace(spec, param=float(value))


class Executor(Protocol):
    """Runs a :class:`GlmmPartition` method on every partition (results in partition order)."""

    def map(self, method: str, *args: Any) -> list: ...

    def close(self) -> None: ...


class LocalPartitions:
    """Partitions evaluated one after another in this process.

    ``loaders``: one callable per partition returning its arrays (from a temporary file).
    ``resident``: build every partition once and keep its core (memory: all rows, about
    twice); otherwise each evaluation loads a partition, builds its core, evaluates it and
    drops it, keeping only its modes as the next warm start (memory: one partition).
    ``cleanup``: called by :meth:`close` (removes the temporary files)."""

    def __init__(self, loaders: Sequence[Callable[[], Mapping[str, Any]]], spec: PartitionSpec,
                 resident: bool = True, cleanup: Callable[[], None] | None = None):
        self.spec = spec
        self._loaders = list(loaders)
        self.resident = bool(resident)
        self._cleanup = cleanup
        self._parts: list[GlmmPartition] | None = None
        self._state: list[dict | None] = [None] * len(self._loaders)
        if self.resident:
            self._parts = [GlmmPartition(load(), spec) for load in self._loaders]
        self.n_partitions = len(self._loaders)

    def map(self, method: str, *args: Any) -> list:
        if self._loaders is None:
            raise RowsNeededError("the partitions of this fit were released after the fit (data "
                                  "read in chunks): refit to evaluate the model again")
        out = []
        for i in range(len(self._loaders)):
            if self._parts is not None:
                out.append(getattr(self._parts[i], method)(*args))
                continue
            part = GlmmPartition(self._loaders[i](), self.spec)
            st = self._state[i]
            if st is not None:
                part._warm, part.spec, part._last = st["warm"], st["spec"], st["last"]
            out.append(getattr(part, method)(*args))
            kept = part.__getstate__()
            self._state[i] = {"warm": kept["_warm"], "spec": part.spec, "last": part._last}
            del part
        return out

    def close(self) -> None:
        self._parts = None
        self._loaders = None  # type: ignore[assignment]
        if self._cleanup is not None:
            self._cleanup()
            self._cleanup = None

    def __del__(self) -> None:
        try:
            if self._cleanup is not None:
                self._cleanup()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass


@dataclass
class _CoreView:
    """What ``models.glmer`` reads from ``problem.core`` after an evaluation, assembled from
    the partitions: beta (nAGQ = 0), the pieces of the criterion, the modes."""

    problem: "PartitionedGlmmProblem"
    info_: dict = field(default_factory=dict)

    @property
    def beta(self) -> np.ndarray:
        b = self.problem._beta_joint
        return np.zeros(self.problem.p) if b is None else b.copy()

    def info(self) -> dict:
        return dict(self.info_)

    def _scatter(self, which: int, theta: np.ndarray) -> list[np.ndarray]:
        pr = self.problem
        res = pr._map("modes", np.ascontiguousarray(theta, dtype=float), pr._last_eval)
        out = [np.zeros(t.nlev * t.s) for t in pr.spec.terms]
        for levels, u, b in res:
            vals = (u, b)[which]
            for k, t in enumerate(pr.spec.terms):
                arr = out[k].reshape(t.nlev, t.s)
                arr[levels[k]] = np.asarray(vals[k]).reshape(-1, t.s)
        return out

    def u(self) -> list[np.ndarray]:
        return self._scatter(0, self.problem._last_theta)

    def b(self, theta: np.ndarray) -> list[np.ndarray]:
        return self._scatter(1, theta)

    def eta(self) -> np.ndarray:
        return np.zeros(0)  # the rows are in the partitions: a fit computes them in a pass

    def mu(self) -> np.ndarray:
        return np.zeros(0)

    @property
    def is_scalar(self) -> bool:
        t = self.problem.spec.terms
        return len(t) == 1 and t[0].s == 1


class PartitionedGlmmProblem(GlmmProblem):
    """A :class:`~multilevel.engine.glmm.GlmmProblem` over partitions of whole groups (see the
    module docstring); the same interface for ``models.glmer`` (stage 0, the criteria, their
    gradient, the modes, R_X, conditional variances), every evaluation one map over the
    partitions.

    ``skeleton``: an input with the model's terms (levels, structures, factors), p columns
    and intercept, no rows. ``executor``: runs :class:`GlmmPartition` methods (see
    :class:`Executor`). ``n``: rows in all partitions; ``xcentring``: the centring in the
    spec; ``sumw``/``sumwlogy``: the dispersion families' sums over all rows."""

    partitioned = True

    def __init__(self, skeleton: EngineInput, family: Family, nagq: int, executor: Executor,
                 spec: PartitionSpec, n: int, sumw: float, sumwlogy: float):
        self.input = skeleton
        self.family = family
        self.nagq = int(nagq)
        self.slices, self.theta0, self.lower = theta_layout(skeleton.structures)
        self.pmap = ParameterMap(skeleton.structures)
        self.eterms = engine_terms(skeleton, self.slices)
        self.ntheta = len(self.theta0)
        self.p = skeleton.p
        self.spec = spec
        self.executor = executor
        self._n = int(n)
        self.sumw, self.sumwlogy = float(sumw), float(sumwlogy)
        shift = np.asarray(spec.shift, dtype=float)
        self.xcentring = XCentring(skeleton.intercept, shift) if (
            skeleton.intercept is not None and np.any(shift)) else XCentring(None, np.zeros(self.p))
        self.pirls_tol = spec.pirls_tol
        self.pirls_maxit = spec.pirls_maxit
        self._beta_joint: np.ndarray | None = None
        #: the last evaluation (method, args): what reads of the state refer to
        self._last_eval: tuple | None = None
        self._last_theta = np.asarray(self.theta0, dtype=float).copy()
        self._view = _CoreView(self)
        self._core = self._view
        if self.nagq > 1:
            if not self._view.is_scalar:
                raise ModelSpecError("nagq > 1 needs a single scalar random-effect term")
            self.nodes, self.weights = gauss_hermite(self.nagq)
        self.nevals = 0

    # -- plumbing -------------------------------------------------------------------------------
    def _build_core(self) -> Any:
        return self._view

    @property
    def core(self) -> Any:
        return self._view

    def __getstate__(self) -> dict:
        st = self.__dict__.copy()
        st["executor"] = None  # the partitions stay where they are (or are gone)
        return st

    def __setstate__(self, st: dict) -> None:
        self.__dict__.update(st)

    @property
    def n(self) -> int:
        return self._n

    def _map(self, method: str, *args: Any) -> list:
        if self.executor is None:
            raise RowsNeededError("this GLMM was fitted to data read in chunks and its partitions "
                                  "are not kept (they are released after the fit, or the fit "
                                  "was saved): profiles, the bootstrap and refits need the data "
                                  "in memory")
        return self.executor.map(method, *args)

    def release(self) -> None:
        """Free the partitions (temporary files, memory on the workers); later evaluations
        raise :class:`~multilevel.errors.DataError`."""
        if self.executor is not None:
            self.executor.close()
            self.executor = None

    def _evaluate(self, method: str, *args: Any) -> float:
        """One evaluation over the partitions; remembered as the one whose state (modes,
        weights) later reads refer to."""
        out = self._total(self._map(method, *args))
        self._last_eval = (method, tuple(args))
        return out

    def _total(self, pieces: list[np.ndarray]) -> float:
        """The criterion from the partitions' pieces (summed in partition order)."""
        P = np.sum(np.vstack(pieces), axis=0) if pieces else np.zeros(len(_PIECES))
        if not np.all(np.isfinite(P)):
            self._view.info_ = {"objective": math.inf}
            return math.inf
        if self.spec.has_dispersion:
            aic = dispersion_aic(self.family.name, float(P[2]), self.sumw, self.sumwlogy)
            obj = aic + float(P[3]) + float(P[4])
        else:
            aic, obj = float(P[1]), float(P[0])
        self._view.info_ = {"objective": obj, "aic": aic, "dev": float(P[2]),
                            "usq": float(P[3]), "ldl2": float(P[4]), "iterations": 0}
        return obj if np.isfinite(obj) else math.inf

    # -- criteria -------------------------------------------------------------------------------
    def devfun_c(self, x: np.ndarray) -> float:
        self.nevals += 1
        theta, beta = self.split(x)
        self._last_theta = theta.copy()
        if self.nagq > 1:
            return self._evaluate("agq", theta, beta, self.nodes, self.weights)
        return self._evaluate("laplace", theta, beta)

    @property
    def has_gradient(self) -> bool:
        # the engine's rule (solver/mod.rs): one term (scalar or vector-valued, any link),
        # or all terms scalar with a canonical link; never for the dispersion families
        if self.nagq != 1 or not self.pmap.native or self.spec.has_dispersion:
            return False
        terms = self.spec.terms
        if len(terms) == 1:
            return True
        return all(t.s == 1 for t in terms) and (self.family.name, self.family.link.name) in (
            ("binomial", "logit"), ("poisson", "log"))

    def devfun_grad_c(self, x: np.ndarray, jacobian: bool = True) -> tuple[float, np.ndarray | None]:
        self.nevals += 1
        theta, beta = self.split(x)
        self._last_theta = theta.copy()
        res = self._map("laplace_grad", theta, beta, bool(jacobian))
        self._last_eval = ("laplace", (theta, beta))
        f = self._total([r[0] for r in res])
        if not np.isfinite(f) or any(r[1] is None for r in res):
            return f, None
        return f, np.sum(np.vstack([r[1] for r in res]), axis=0)

    def stage0(self, theta: np.ndarray) -> float:
        """lme4's nAGQ = 0 criterion at theta: the Laplace formula at the joint mode of
        (u, beta), found by Newton steps on the penalised deviance profiled over u (see the
        module docstring) with the in-memory PIRLS's convergence rule."""
        self.nevals += 1
        theta = np.ascontiguousarray(theta, dtype=float)
        self._last_theta = theta.copy()
        p = self.p
        if p == 0:
            return self._evaluate("laplace", theta, np.zeros(0))
        beta = self._beta_joint
        if beta is None:
            beta, _ = self.glm_start()
            if beta is None:
                beta = np.zeros(p)
        tol = self.pirls_tol * (1e-2 if self.spec.has_dispersion else 1.0)
        floor = 1e-12 if self.spec.has_dispersion else 1e-8

        def evaluate(b: np.ndarray, fresh: bool):
            res = self._map("profile", theta, b, fresh)
            self._last_eval = ("laplace", (theta, b))
            pieces = [r[0] for r in res]
            P = np.sum(np.vstack(pieces), axis=0)
            if not np.all(np.isfinite(P)) or any(r[1] is None for r in res):
                return None
            g = np.sum(np.vstack([r[1] for r in res]), axis=0)
            S = np.sum(np.stack([r[2] for r in res]), axis=0) if fresh else None
            return pieces, float(P[2] + P[3]), g, S

        # Newton steps with the information from this theta's first point (the chord
        # method: near the joint mode it changes little, and forming it costs as much as the
        # rest of an evaluation), formed afresh when a step contracts poorly or fails
        cur = evaluate(beta, True)
        if cur is None:
            self._beta_joint = None
            return self._total([np.full(len(_PIECES), np.inf)])
        S = cur[3]
        prev = math.inf
        fresh_next = False
        for _ in range(self.pirls_maxit + 1):
            pieces, pdev, g, S_new = cur
            if S_new is not None:
                S = S_new
            try:
                step = np.linalg.solve(S, -0.5 * g)
            except np.linalg.LinAlgError:
                self._beta_joint = None
                return self._total([np.full(len(_PIECES), np.inf)])
            rel = float(np.max(np.abs(step) / (1.0 + np.abs(beta))))
            if not np.isfinite(rel):
                break
            if rel <= tol or (rel <= floor and rel >= 0.5 * prev):
                # converged: the criterion at the current point, as the in-memory PIRLS
                # reports it where its next step would be below the tolerance (the
                # partitions' last evaluation was at this beta: a trial is evaluated last
                # only when it is accepted)
                self._beta_joint = beta.copy()
                return self._total(pieces)
            fresh_next = rel > 0.1 * prev and S_new is None
            prev = rel
            fac = 1.0
            nxt = None
            for _h in range(41):  # the engine's max_halvings
                trial = beta + fac * step
                nxt = evaluate(trial, fresh_next or _h > 0)
                if nxt is not None and nxt[1] <= pdev + 1e-12 * (1.0 + abs(pdev)):
                    break
                nxt = None
                fac *= 0.5
            if nxt is None:
                break
            beta, cur = trial, nxt
        self._beta_joint = None
        return self._total([np.full(len(_PIECES), np.inf)])

    def glm_start(self, maxit: int = 50) -> tuple[np.ndarray | None, bool]:
        """The GLM without random effects by IRLS over the partitions (see
        ``engine.glmm.glm_start``, whose rules this follows)."""
        p = self.p
        beta = None
        dev_old = math.inf
        norms: list[float] = []
        edge = 0
        for _ in range(maxit + 1):
            # one map per iteration: the deviance at beta and the sums for the next step
            res = self._map("glm_step", beta)
            if beta is not None:
                dev = float(sum(r[2] for r in res))
                norms.append(max(r[3] for r in res))
                edge = sum(r[4] for r in res)
                if not np.isfinite(dev):
                    return None, False
                if abs(dev - dev_old) < 1e-10 * (abs(dev) + 0.1):
                    break
                dev_old = dev
            A = np.sum(np.stack([r[0] for r in res]), axis=0)
            c = np.sum(np.vstack([r[1] for r in res]), axis=0)
            try:
                beta = np.linalg.lstsq(A, c, rcond=None)[0] if p else np.zeros(0)
            except np.linalg.LinAlgError:
                return None, False
            if not np.all(np.isfinite(beta)):
                return None, False
        separated = False
        if self.family.name == "binomial" and beta is not None:
            growing = len(norms) > 3 and norms[-1] > norms[-3] + 1.0
            separated = edge > 0 and (growing or norms[-1] > 15)
        return beta, separated

    # -- the state at the optimum ----------------------------------------------------------------
    def condvar(self, theta: np.ndarray) -> list[np.ndarray]:
        res = self._map("condvar", np.ascontiguousarray(theta, dtype=float), self._last_eval)
        flat = [np.zeros(t.nlev * t.s * t.s) for t in self.spec.terms]
        for levels, cv in res:
            for k, t in enumerate(self.spec.terms):
                flat[k].reshape(t.nlev, t.s * t.s)[levels[k]] = np.asarray(cv[k]).reshape(-1, t.s * t.s)
        out: list[np.ndarray] = [None] * len(self.input.terms)  # type: ignore[list-item]
        for e, f in zip(self.eterms, flat):
            s = e.Z.shape[1]
            blocks = f.reshape(e.nlev, s, s).transpose(0, 2, 1)
            for k, cols in zip(e.blocks, e.cols):
                out[k] = np.ascontiguousarray(blocks[:, cols, cols])
        return out

    def vcov_rx(self, theta: np.ndarray, centred: bool = False) -> np.ndarray:
        p = self.p
        if p == 0:
            return np.zeros((0, 0))
        S = np.sum(np.stack(self._map("schur", np.ascontiguousarray(theta, dtype=float),
                                      self._last_eval)), axis=0)
        try:
            c = np.linalg.cholesky(0.5 * (S + S.T))
        except np.linalg.LinAlgError as e:
            raise FitError("the fixed effects' information matrix is not positive definite at "
                           "the estimate") from e
        ci = np.linalg.inv(c)
        V = ci.T @ ci
        return V if centred else self.xcentring.cov_out(V)

    def pearson_chisq(self, frame: Any, mu: np.ndarray) -> float:
        return float(sum(self._map("pearson", self._last_eval)))

    def saturated_loglik(self, frame: Any, ntrials: np.ndarray | None) -> float:
        return float(sum(self._map("saturated")))

    def set_family(self, family: Family) -> None:
        """A negative binomial with another theta (glmer.nb's search): every partition's core
        changes its constants and keeps its modes."""
        self.family = family
        import dataclasses

        self.spec = dataclasses.replace(self.spec, param=family.param)
        self._map("set_family_param", float(family.param))
