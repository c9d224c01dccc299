"""What lmer and glmer fits share: variance components, random effects, predictions.

:class:`MixedFit` is the common base of :class:`~multilevel.results.LmmFit` and
:class:`~multilevel.results.GlmmFit` (siblings: a GLMM is not an LMM). It holds the theta
parameterisation (``theta``, ``lambdas``, ``varcorr``, ``is_singular``), the conditional
modes (``ranef()``, ``coef()``) and the linear predictor for new data; each subclass says
what its scale is (``sigma`` for an LMM, none for a GLMM) and how the result is reported.

The conditional covariances of the random effects are arrays: given by the fit function,
or computed on first use from the fit's engine problem (``_problem``, which rebuilds its
compiled core from stored arrays after unpickling). A fit holds no closures, so it pickles.

Example
-------
>>> fit.ngroups, fit.theta.round(3).tolist()
({'Subject': 18}, [0.967, 0.015, 0.231])
>>> fit.ranef()["Subject"].round(1).head(2)
         (Intercept)  Days
Subject
308              2.3   9.2
309            -40.4  -8.6
"""
from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any, overload

import numpy as np
import pandas as pd

from multilevel.covariance import (SINGULAR_TOL, Covariance, frame_structures, is_singular_theta, lambda_blocks,
                                   theta_names)
from multilevel.errors import DataError, ModelSpecError, MultilevelError
from multilevel.results.base import FitBase
from multilevel.results.methods import VarCorrMethods
from multilevel.results.names import make_unique_names

if TYPE_CHECKING:  # pragma: no cover
    from multilevel.design.frame import ModelFrame

__all__ = ["MixedFit", "VarCorr", "VarCorrBlock", "RandomEffects", "se_ranef"]


# --- variance components ----------------------------------------------------------------


@dataclass(frozen=True)
class VarCorrBlock:
    """Covariance of the random effects of one term (one block of lme4's VarCorr).

    group:      grouping factor (``"Subject"``, ``"cask:batch"``).
    block_name: lme4's VarCorr name; a group that has several blocks gets ``.1``, ``.2`` ...
    terms:      names of the random effects in the block.
    cov:        (k, k) covariance matrix, sigma² Λ Λᵀ.
    structure:  its covariance structure (lme4 2.0's names): ``"us"`` for ``(x | g)``,
                ``"diag"``, ``"cs"``, ``"ar1"``.
    corr_param: the structure's correlation parameter: the common correlation of ``cs``, the
                lag-1 correlation of ``ar1``; None for the others.
    n_params:   number of covariance parameters of the term.
    """

    group: str
    block_name: str
    terms: list[str]
    cov: np.ndarray
    structure: str = "us"
    corr_param: float | None = None
    n_params: int | None = None

    @property
    def sd(self) -> pd.Series:
        """Standard deviations by term."""
        return pd.Series(self.sd_values, index=self.terms, name="sd")

    @property
    def sd_values(self) -> np.ndarray:
        """(k,) the standard deviations as an array, in the order of ``terms`` (a Series of
        text labels costs pandas ~0.1 ms, and the summary and the explorer ask per block)."""
        return np.sqrt(np.clip(np.diag(self.cov), 0.0, None))

    @property
    def corr(self) -> np.ndarray:
        """(k, k) correlation matrix; 1 on the diagonal, NaN where a standard deviation is 0."""
        sd = self.sd_values
        with np.errstate(invalid="ignore", divide="ignore"):
            c = self.cov / np.outer(sd, sd)
        np.fill_diagonal(c, 1.0)
        return c


class VarCorr(VarCorrMethods, Sequence[VarCorrBlock]):
    """Variance components of a fit: one :class:`VarCorrBlock` per random-effect term plus
    the residual standard deviation. Prints like lme4's ``VarCorr(fit)``.

    Index by position or by block name: ``fit.varcorr["Subject"].sd``.
    """

    def __init__(self, blocks: list[VarCorrBlock], sigma: float | None):
        self.blocks = blocks
        self.sigma = sigma  # None when the model has no residual scale (binomial, Poisson)

    @overload
    def __getitem__(self, key: int | str) -> VarCorrBlock: ...
    @overload
    def __getitem__(self, key: slice) -> list[VarCorrBlock]: ...

    def __getitem__(self, key):  # type: ignore[override]
        if isinstance(key, str):
            for blk in self.blocks:
                if blk.block_name == key:
                    return blk
            raise KeyError(key)
        return self.blocks[key]

    def __len__(self) -> int:
        return len(self.blocks)

    def __iter__(self) -> Iterator[VarCorrBlock]:
        return iter(self.blocks)

    def to_frame(self) -> pd.DataFrame:
        """Long format like R's ``as.data.frame(VarCorr(fit))``: grp, var1, var2, vcov, sdcor."""
        rows = []
        for blk in self.blocks:
            sd, corr = blk.sd.to_numpy(), blk.corr
            for i, t in enumerate(blk.terms):
                rows.append((blk.block_name, t, None, blk.cov[i, i], sd[i]))
            for j in range(len(blk.terms)):
                for i in range(j + 1, len(blk.terms)):
                    rows.append((blk.block_name, blk.terms[i], blk.terms[j], blk.cov[i, j], corr[i, j]))
        if self.sigma is not None:
            rows.append(("Residual", None, None, self.sigma**2, self.sigma))
        return pd.DataFrame(rows, columns=["grp", "var1", "var2", "vcov", "sdcor"])

    # format(digits, comp): lme4's printed table, in results.methods (it uses the report layer)

    def __str__(self) -> str:
        return self.format()

    def __repr__(self) -> str:
        return self.format()


# --- random effects ---------------------------------------------------------------------


class RandomEffects(dict):
    """Conditional modes of the random effects, as lme4's ``ranef(fit)``.

    A dict ``group -> DataFrame`` (rows: levels of the grouping factor in lme4's order;
    columns: random-effect terms). Terms of several blocks on one grouping factor, like
    ``(1 | Subject) + (0 + Days | Subject)``, share one frame as in lme4.

    ``condsd[group]`` has the conditional standard deviations in the same layout and
    ``condvar[group]`` the (n_levels, k, k) conditional covariance arrays, one per block
    (``None`` if computed with ``condvar=False``). ``to_frame()`` gives the long format
    of R's ``as.data.frame(ranef(fit, condVar = TRUE))``.
    """

    def __init__(self, modes: dict[str, pd.DataFrame], condsd: dict[str, pd.DataFrame] | None,
                 condvar: dict[str, list[np.ndarray]] | None):
        super().__init__(modes)
        self.condsd = condsd
        self.condvar = condvar

    def to_frame(self) -> pd.DataFrame:
        """Long format: grpvar, term, grp, condval (and condsd when available)."""
        parts = []
        for g, df in self.items():
            for j, t in enumerate(df.columns):
                part = pd.DataFrame({"grpvar": g, "term": t, "grp": df.index.astype(str),
                                     "condval": df.iloc[:, j].to_numpy()})
                if self.condsd is not None:
                    part["condsd"] = self.condsd[g].iloc[:, j].to_numpy()
                parts.append(part)
        return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(
            columns=["grpvar", "term", "grp", "condval"])


# --- the shared base of lmer and glmer fits -------------------------------------------------


class MixedFit(FitBase):
    """Accessors of a mixed model fit (lmer and glmer); see ``LmmFit`` and ``GlmmFit``.

    Parameters are the engine's raw results: ``theta`` in lme4's order; ``b[k]`` the
    (n_levels, k) conditional modes of term k on the original scale; ``condvar`` their
    (n_levels, k, k) conditional covariances per term, or None to compute them on first
    use from ``problem`` (the engine problem, kept for inference: profiles, bootstrap,
    Satterthwaite); ``fitted`` on the response scale; ``optinfo`` a dict with ``optimizer``,
    ``feval``, ``fit_log``, ``messages``, ``time`` and optionally ``code``/``message``.
    ``data_name`` and ``weights_name`` only label the summary's ``Data:``/``Weights:`` lines.
    """

    _GETME = {**FitBase._GETME, "theta": "_theta", "sigma": "_sigma", "b": "_b", "condvar": "_condvar",
              "problem": "_problem"}

    reml: bool = False

    def __init__(
        self,
        frame: ModelFrame,
        theta: np.ndarray,
        beta: np.ndarray,
        vcov: np.ndarray,
        b: list[np.ndarray],
        condvar: Sequence[np.ndarray] | None,
        loglik: float,
        fitted: np.ndarray,
        converged: bool,
        warnings: list,
        optinfo: dict,
        *,
        data_name: str | None = None,
        weights_name: str | None = None,
        problem: Any = None,
        singular_tol: float = SINGULAR_TOL,
    ):
        if callable(condvar):
            raise TypeError("condvar must be the arrays (or None to compute them from problem), "
                            "not a function: a fit holds no closures, so that it pickles")
        self.frame = frame
        self._theta = np.asarray(theta, dtype=float)
        self._beta = np.asarray(beta, dtype=float)
        self._vcov = np.asarray(vcov, dtype=float)
        self._b = [np.asarray(bk, dtype=float) for bk in b]
        self._condvar_given = None if condvar is None else [np.asarray(v, dtype=float) for v in condvar]
        self._loglik = float(loglik)
        self._fitted = np.asarray(fitted, dtype=float)
        self._converged = bool(converged)
        self._warnings = list(warnings)
        self.optinfo = dict(optinfo)
        # the name given, else the one the data carried (the bundled data sets carry theirs)
        self.data_name = data_name if data_name is not None else getattr(frame, "data_name", None)
        self.weights_name = weights_name
        self._problem = problem  # for inference code (profiles, bootstrap), not part of the API
        #: the tolerance the fit was made with (control ``singular_tol``): ``is_singular``
        #: and the singular-fit warning use the same one
        self.singular_tol = float(singular_tol)

    # -- model description ---------------------------------------------------------------

    @cached_property
    def ngroups(self) -> dict[str, int]:
        """Number of levels of each grouping factor (lme4's ``ngrps``), in lme4's order."""
        out: dict[str, int] = {}
        for rt in self.frame.reterms:
            out.setdefault(rt.group, rt.n_levels)
        return out

    # -- parameters ----------------------------------------------------------------------

    @property
    def _scale(self) -> float | None:
        """The residual standard deviation, None when the family has no scale."""
        raise NotImplementedError  # pragma: no cover

    @cached_property
    def structures(self) -> list[Covariance]:
        """The covariance structure of each random-effect term (``Unstructured`` for lme4's
        ``(x | g)``; ``Diagonal``, ``CompoundSymmetry``, ``AR1`` for ``diag()``, ``cs()``,
        ``ar1()``), in lme4's order of the terms."""
        return frame_structures(self.frame.reterms)

    @property
    def n_cov_params(self) -> int:
        """Number of covariance parameters of the random effects (θ's length for unstructured
        and diagonal terms; k + 1 for cs() and 2 for ar1()): what ``npar`` counts."""
        return sum(cv.npar for cv in self.structures)

    @cached_property
    def theta_names(self) -> list[str]:
        rts = self.frame.reterms
        return theta_names([rt.group for rt in rts], [rt.terms for rt in rts], self.structures)

    @cached_property
    def theta(self) -> pd.Series:
        """lme4's covariance parameters (lower triangles of the relative factors Λ). For a
        ``cs()`` or ``ar1()`` term θ is the full lower triangle of the Λ its parameters imply
        (those are in ``optinfo["par"]``, their meaning in ``varcorr`` and ``to_dict()``'s
        ``covstruct``); a ``diag()`` term has one θ per column."""
        return pd.Series(self._theta, index=self.theta_names, name="theta")

    @cached_property
    def lambdas(self) -> list[np.ndarray]:
        """The relative covariance factor Λ of each random-effect term (lower triangular)."""
        return lambda_blocks(self._theta, self.structures)

    @cached_property
    def varcorr(self) -> VarCorr:
        """Variance components: per term the covariance sigma² Λ Λᵀ (Λ Λᵀ without a residual
        scale), SDs and correlations; a Residual row when the model has a scale."""
        rts = self.frame.reterms
        names = make_unique_names([rt.group for rt in rts])
        s = self._scale
        blocks = []
        for rt, nm, L, cv, th in zip(rts, names, self.lambdas, self.structures, self._theta_blocks()):
            blocks.append(VarCorrBlock(rt.group, nm, list(rt.terms), (L @ L.T) if s is None else s**2 * (L @ L.T),
                                       structure=cv.code, corr_param=cv.corr_param(th), n_params=cv.npar))
        return VarCorr(blocks, s)

    def _theta_blocks(self) -> list[np.ndarray]:
        out, i = [], 0
        for cv in self.structures:
            out.append(self._theta[i:i + cv.ntheta])
            i += cv.ntheta
        return out

    @property
    def df_resid(self) -> int:
        """Residual degrees of freedom, nobs - npar (lme4's ``df.residual``)."""
        return self.nobs - self.npar

    # -- fit status --------------------------------------------------------------------------

    @property
    def converged(self) -> bool:
        return self._converged

    @cached_property
    def is_singular(self) -> bool:
        """lme4's ``isSingular(fit, tol)``: a diagonal element of some Λ is below the fit's
        ``singular_tol`` (control setting, default lme4's 1e-4), i.e. a variance is estimated
        as 0 or a correlation as ±1. What that means and what to do:
        ``help(multilevel.SingularFitWarning)``."""
        return is_singular_theta(self._theta, self.structures, self.singular_tol)

    # -- random effects ----------------------------------------------------------------------

    def _compute_condvar(self) -> list[np.ndarray]:
        """The conditional covariances when the fit function did not give them."""
        raise MultilevelError("this fit has no conditional variances (condvar) and no engine problem "
                              "to compute them from")

    @cached_property
    def _condvar(self) -> list[np.ndarray]:
        if self._condvar_given is not None:
            return self._condvar_given
        return [np.asarray(v, dtype=float) for v in self._compute_condvar()]

    def ranef(self, condvar: bool = True) -> RandomEffects:
        """Conditional modes of the random effects by grouping factor.

        With ``condvar=True`` the result also carries the conditional SDs
        (``.condsd[group]``) and covariances (``.condvar[group]``), computed given the
        estimates (no allowance for the uncertainty of beta or theta), as lme4 does.

        >>> re = fit.ranef()
        >>> re.condsd["Subject"].loc["308"].round(2).tolist()
        [12.07, 2.3]
        """
        modes: dict[str, list[pd.DataFrame]] = {}
        sds: dict[str, list[pd.DataFrame]] = {}
        cvs: dict[str, list[np.ndarray]] = {}
        cv = self._condvar if condvar else None
        for k, rt in enumerate(self.frame.reterms):
            idx = pd.Index([str(lv) for lv in rt.levels], name=rt.group)
            modes.setdefault(rt.group, []).append(pd.DataFrame(self._b[k], index=idx, columns=list(rt.terms)))
            if cv is not None:
                d = np.sqrt(np.clip(np.diagonal(cv[k], axis1=1, axis2=2), 0.0, None))
                sds.setdefault(rt.group, []).append(pd.DataFrame(d, index=idx, columns=list(rt.terms)))
                cvs.setdefault(rt.group, []).append(cv[k])
        merged = {g: pd.concat(v, axis=1) for g, v in modes.items()}
        merged_sd = {g: pd.concat(v, axis=1) for g, v in sds.items()} if cv is not None else None
        return RandomEffects(merged, merged_sd, cvs if cv is not None else None)

    def se_ranef(self) -> dict[str, pd.DataFrame]:
        """Standard errors of the conditional modes, as arm's ``se.ranef(fit)``: by grouping
        factor, a DataFrame shaped like ``ranef()[group]`` (levels x terms) holding the square
        roots of the diagonals of lme4's ``condVar`` (the same as ``ranef().condsd``).

        >>> fit.se_ranef()["Subject"].loc["308"].round(2).tolist()
        [12.07, 2.3]
        """
        return dict(self.ranef(condvar=True).condsd)

    def coef(self) -> dict[str, pd.DataFrame]:
        """Per-group coefficients: the fixed effects plus the group's random effects for
        terms of the same name (lme4's ``coef.merMod``). Random-effect terms that are not
        fixed effects get a column of their own (fixed part 0), placed first as in lme4."""
        fe = self.fixef
        re = self.ranef(condvar=False)
        missing: list[str] = []
        for df in re.values():
            for t in df.columns:
                if t not in fe.index and t not in missing:
                    missing.append(t)
        base = pd.concat([pd.Series(0.0, index=missing), fe]) if missing else fe
        names = list(base.index)
        out = {}
        for g, df in re.items():
            val = np.tile(base.to_numpy(), (len(df), 1))
            modes = df.to_numpy(dtype=float)
            cols = np.asarray(df.columns, dtype=object)
            for t in dict.fromkeys(df.columns):  # a name used by two blocks adds both
                j = names.index(t)
                val[:, j] = val[:, j] + np.nansum(modes[:, cols == t], axis=1)  # as pandas sum()
            # (the sums in numpy, one frame at the end: column-wise pandas assignment cost
            # ~2 ms per call, and coef() is in every refit of the explorer)
            out[g] = pd.DataFrame(val, index=df.index, columns=names)
        return out

    # -- the linear predictor ------------------------------------------------------------------

    def _eta_fixed(self) -> np.ndarray:
        """X beta (+ offset) for the rows of the fit."""
        eta = self.frame.X @ self._beta
        if self.frame.offset is not None:
            eta = eta + self.frame.offset
        return eta

    def _linear_predictor(self, newdata: Any, re_form: Any, allow_new_levels: bool) -> pd.Series:
        """eta = X beta + Z b (+ offset) for ``newdata`` (lme4's ``predict(type = "link")``);
        ``newdata=None`` with a ``re_form`` other than None or the fixed part is an error."""
        fixed_only = _is_fixed_only(re_form)
        if newdata is None:
            if fixed_only:
                return pd.Series(self._eta_fixed(), index=self._row_index(), name="predicted")
            raise DataError("predict(re_form=<formula>) needs newdata; pass the fitting data as newdata")
        nd = self.frame.new_design(newdata, re_form="~0" if fixed_only else re_form,
                                   allow_new_levels=allow_new_levels)
        eta = np.asarray(nd.X, dtype=float) @ self._beta
        if nd.offset is not None:
            eta = eta + np.asarray(nd.offset, dtype=float)
        if not fixed_only:
            for j, k in enumerate(nd.term_index):
                refs = np.asarray(nd.refs[j])
                new = refs < 0
                if new.any() and not allow_new_levels:
                    raise DataError(f"new levels of {self.frame.reterms[k].group!r} in newdata; "
                                    "use allow_new_levels=True to predict them with random effect 0")
                bk = self._b[k][np.where(new, 0, refs)]
                contrib = np.einsum("ij,ij->i", np.asarray(nd.Z[j], dtype=float), bk)
                eta = eta + np.where(new, 0.0, contrib)
        return pd.Series(eta, index=self._newdata_index(newdata, len(eta)), name="predicted")


def se_ranef(fit: MixedFit) -> dict[str, pd.DataFrame]:
    """arm's ``se.ranef(fit)``: :meth:`MixedFit.se_ranef` as a function (``ml.se_ranef(fit)``).

    >>> import multilevel as ml
    >>> fit = ml.lmer("mAch ~ 1 + (1 | school)", ml.datasets.load("hsb"))
    >>> ml.se_ranef(fit)["school"].shape
    (160, 1)
    """
    if not isinstance(fit, MixedFit):
        raise ModelSpecError(f"se_ranef() needs a mixed model (lmer or glmer fit), not a {type(fit).__name__}")
    return fit.se_ranef()


def _is_fixed_only(re_form: Any) -> bool:
    """True for the spellings of lme4's ``re.form = NA`` / ``~0``."""
    if re_form is None:
        return False
    if isinstance(re_form, float) and math.isnan(re_form):
        return True
    if isinstance(re_form, str):
        s = re_form.replace(" ", "")
        return s in ("~0", "0", "NA", "~-1", "-1")
    return False
