"""Result objects of a fitted linear mixed model: estimates, random effects, predictions.

The fit driver (``multilevel.engine.lmm``) builds an :class:`LmmFit` from the engine's raw arrays;
everything a user reads from it (tables with names, variance components, conditional modes,
information criteria, the summary) is derived here, on first access, and cached. No method
of this module runs the optimiser.

Names follow lme4 (``fixef``, ``ranef``, ``coef``, ``varcorr``, ``theta``, ``sigma``) and so do
the definitions (logLik degrees of freedom, AIC/BIC, ``deviance`` for REML fits, ``isSingular``);
see ``README.md`` of the reference fits for the exact meaning of each number.

Example
-------
>>> import multilevel as ml
>>> from multilevel.datasets import load
>>> fit = ml.lmer("Reaction ~ Days + (Days | Subject)", data=load("sleepstudy"))
>>> fit.fixef.round(3)
(Intercept)    251.405
Days            10.467
Name: fixef, dtype: float64
>>> fit.ranef()["Subject"].round(1).head(2)
         (Intercept)  Days
Subject
308              2.3   9.2
309            -40.4  -8.6
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any, overload

import numpy as np
import pandas as pd

from multilevel.results.base import InformationCriteria
from multilevel.errors import DataError
from multilevel.covariance import SINGULAR_TOL, is_singular_theta, lambda_blocks, theta_names

if TYPE_CHECKING:  # pragma: no cover
    from multilevel.design.frame import ModelFrame
    from multilevel.report.summary import Summary

__all__ = ["LmmFit", "VarCorr", "VarCorrBlock", "RandomEffects", "lambda_blocks", "theta_names"]



# --- theta <-> relative covariance factors ------------------------------------------------










# --- variance components ----------------------------------------------------------------


@dataclass(frozen=True)
class VarCorrBlock:
    """Covariance of the random effects of one term (one block of lme4's VarCorr).

    group:      grouping factor (``"Subject"``, ``"cask:batch"``).
    block_name: lme4's VarCorr name; a group that has several blocks gets ``.1``, ``.2`` ...
    terms:      names of the random effects in the block.
    cov:        (k, k) covariance matrix, sigma² Λ Λᵀ.
    """

    group: str
    block_name: str
    terms: list[str]
    cov: np.ndarray

    @property
    def sd(self) -> pd.Series:
        """Standard deviations by term."""
        return pd.Series(np.sqrt(np.clip(np.diag(self.cov), 0.0, None)), index=self.terms, name="sd")

    @property
    def corr(self) -> np.ndarray:
        """(k, k) correlation matrix; 1 on the diagonal, NaN where a standard deviation is 0."""
        sd = self.sd.to_numpy()
        with np.errstate(invalid="ignore", divide="ignore"):
            c = self.cov / np.outer(sd, sd)
        np.fill_diagonal(c, 1.0)
        return c


class VarCorr(Sequence[VarCorrBlock]):
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

    def format(self, digits: int = 5, comp: Sequence[str] = ("Std.Dev.",)) -> str:
        """lme4's table of variance components (``formatVC``) as text."""
        from multilevel.report.summary import varcorr_lines

        return "\n".join(varcorr_lines(self, digits=digits, comp=comp))

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


# --- the fit ----------------------------------------------------------------------------


class LmmFit(InformationCriteria):
    """A fitted linear mixed model (what ``multilevel.lmer`` returns).

    The constructor only stores what the engine produced; all tables are built on first
    access. Accessors follow lme4:

    ==================  =============================================================
    ``fixef``, ``se``   fixed effects and their standard errors (Series)
    ``vcov``            covariance matrix of the fixed effects (DataFrame)
    ``theta``           relative covariance parameters with lme4's names (Series)
    ``sigma``           residual standard deviation
    ``varcorr``         variance components (prints as lme4's VarCorr)
    ``ranef()``         conditional modes (+ conditional SDs) per grouping factor
    ``coef()``          per-group coefficients, fixef + ranef
    ``fitted()``, ``residuals()``, ``predict(newdata)``
    ``loglik``, ``aic``, ``bic``, ``deviance``, ``reml_criterion``, ``npar``, ``df_resid``
    ``nobs``, ``ngroups``, ``is_singular``, ``converged``, ``warnings``
    ``summary()``, ``to_dict()``
    ==================  =============================================================

    Parameters are the engine's raw results: ``theta`` in lme4's order; ``b[k]`` the
    (n_levels, k) conditional modes of term k on the original scale; ``condvar()`` a lazy
    callable returning their (n_levels, k, k) conditional covariances; ``loglik`` the REML
    log-likelihood for REML fits; ``deviance_ml`` the ML deviance at the estimates;
    ``optinfo`` a dict with ``optimizer``, ``feval``, ``fit_log``, ``messages``, ``time``
    and optionally ``code``/``message`` (the optimiser's return code and text).
    ``data_name`` and ``weights_name`` only label the summary's ``Data:``/``Weights:`` lines.

    Example
    -------
    >>> fit = ml.lmer("Reaction ~ Days + (Days | Subject)", data=load("sleepstudy"))
    >>> round(fit.sigma, 2), fit.is_singular, fit.npar
    (25.59, False, 6)
    """

    def __init__(
        self,
        frame: ModelFrame,
        reml: bool,
        theta: np.ndarray,
        beta: np.ndarray,
        vcov: np.ndarray,
        sigma: float,
        b: list[np.ndarray],
        condvar: Callable[[], list[np.ndarray]],
        loglik: float,
        deviance_ml: float,
        reml_criterion: float | None,
        fitted: np.ndarray,
        converged: bool,
        warnings: list[str],
        optinfo: dict,
        *,
        data_name: str | None = None,
        weights_name: str | None = None,
        singular_tol: float = SINGULAR_TOL,
    ):
        self.frame = frame
        #: the tolerance the fit was made with (control ``singular_tol``): ``is_singular``
        #: and the singular-fit warning use the same one
        self.singular_tol = float(singular_tol)
        self.reml = bool(reml)
        self._theta = np.asarray(theta, dtype=float)
        self._beta = np.asarray(beta, dtype=float)
        self._vcov = np.asarray(vcov, dtype=float)
        self._sigma = float(sigma)
        self._b = [np.asarray(bk, dtype=float) for bk in b]
        self._condvar_fn = condvar
        self._loglik = float(loglik)
        self._deviance_ml = float(deviance_ml)
        self._reml_criterion = None if reml_criterion is None else float(reml_criterion)
        self._fitted = np.asarray(fitted, dtype=float)
        self._converged = bool(converged)
        self._warnings = list(warnings)
        self.optinfo = dict(optinfo)
        self.data_name = data_name
        self.weights_name = weights_name

    # -- model description ---------------------------------------------------------------

    @property
    def formula(self) -> str:
        """The model formula as given."""
        return self.frame.formula

    @property
    def family(self) -> str:
        return "gaussian"

    @property
    def link(self) -> str:
        return "identity"

    @property
    def nobs(self) -> int:
        """Number of observations used in the fit."""
        return self.frame.nobs

    @cached_property
    def ngroups(self) -> dict[str, int]:
        """Number of levels of each grouping factor (lme4's ``ngrps``), in lme4's order."""
        out: dict[str, int] = {}
        for rt in self.frame.reterms:
            out.setdefault(rt.group, rt.n_levels)
        return out

    # -- parameters ----------------------------------------------------------------------

    @cached_property
    def fixef(self) -> pd.Series:
        """Fixed-effects estimates by coefficient name."""
        return pd.Series(self._beta, index=list(self.frame.fixef_names), name="fixef")

    @cached_property
    def vcov(self) -> pd.DataFrame:
        """Covariance matrix of the fixed effects."""
        names = list(self.frame.fixef_names)
        return pd.DataFrame(self._vcov, index=names, columns=names)

    @cached_property
    def se(self) -> pd.Series:
        """Standard errors of the fixed effects."""
        return pd.Series(np.sqrt(np.diag(self._vcov)), index=list(self.frame.fixef_names), name="se")

    @property
    def sigma(self) -> float:
        """Residual standard deviation (REML or ML estimate, as fitted)."""
        return self._sigma

    @cached_property
    def theta_names(self) -> list[str]:
        rts = self.frame.reterms
        return theta_names([rt.group for rt in rts], [rt.terms for rt in rts])

    @cached_property
    def theta(self) -> pd.Series:
        """lme4's covariance parameters (lower triangles of the relative factors Λ)."""
        return pd.Series(self._theta, index=self.theta_names, name="theta")

    @cached_property
    def lambdas(self) -> list[np.ndarray]:
        """The relative covariance factor Λ of each random-effect term (lower triangular)."""
        return lambda_blocks(self._theta, [rt.n_terms for rt in self.frame.reterms])

    @cached_property
    def varcorr(self) -> VarCorr:
        """Variance components: per term the covariance sigma² Λ Λᵀ, SDs and correlations."""
        rts = self.frame.reterms
        from multilevel.report.rformat import make_unique_names

        names = make_unique_names([rt.group for rt in rts])
        blocks = [
            VarCorrBlock(rt.group, nm, list(rt.terms), self._sigma**2 * (L @ L.T))
            for rt, nm, L in zip(rts, names, self.lambdas)
        ]
        return VarCorr(blocks, self._sigma)

    # -- likelihood and information criteria ---------------------------------------------

    @property
    def npar(self) -> int:
        """Number of parameters: fixed effects + theta + residual variance (logLik df)."""
        return len(self._beta) + len(self._theta) + 1

    @property
    def df_resid(self) -> int:
        """Residual degrees of freedom, nobs - npar (lme4's ``df.residual``)."""
        return self.nobs - self.npar

    @property
    def loglik(self) -> float:
        """Maximised log-likelihood; the REML log-likelihood for REML fits (as lme4)."""
        return self._loglik

    @property
    def deviance(self) -> float:
        """ML fits: -2 logLik. REML fits: the ML deviance at the REML estimates
        (lme4's ``deviance(fit, REML = FALSE)``), not -2 times the REML logLik."""
        return -2.0 * self._loglik if not self.reml else self._deviance_ml

    @property
    def reml_criterion(self) -> float | None:
        """REML criterion at the optimum (-2 REML logLik); None for ML fits."""
        return self._reml_criterion

    # -- fit status --------------------------------------------------------------------------

    @property
    def converged(self) -> bool:
        return self._converged

    @property
    def warnings(self) -> list[str]:
        """Warnings of the fit in lme4's wording (singular fit, convergence, rows/columns dropped)."""
        return list(self._warnings)

    @cached_property
    def is_singular(self) -> bool:
        """lme4's ``isSingular(fit, tol)``: a diagonal element of some Λ is below the fit's
        ``singular_tol`` (control setting, default lme4's 1e-4)."""
        return is_singular_theta(self._theta, [rt.n_terms for rt in self.frame.reterms], self.singular_tol)

    # -- random effects ----------------------------------------------------------------------

    @cached_property
    def _condvar(self) -> list[np.ndarray]:
        return [np.asarray(v, dtype=float) for v in self._condvar_fn()]

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
        out = {}
        for g, df in re.items():
            val = pd.DataFrame(np.tile(base.to_numpy(), (len(df), 1)), index=df.index, columns=list(base.index))
            for t in dict.fromkeys(df.columns):  # a name used by two blocks adds both
                val[t] = val[t] + df.loc[:, [t]].sum(axis=1).to_numpy()
            out[g] = val
        return out

    # -- fitted values, residuals, predictions ---------------------------------------------

    def _row_index(self) -> pd.Index:
        rows = getattr(self.frame, "rows", None)
        if rows is not None and len(rows) == self.nobs:
            return pd.Index(np.asarray(rows))
        return pd.RangeIndex(self.nobs)

    def fitted(self) -> pd.Series:
        """Fitted values Xβ + Zb (+ offset) for the rows used, indexed by their position in the data."""
        return pd.Series(self._fitted, index=self._row_index(), name="fitted")

    def residuals(self, type: str = "response", scaled: bool = False) -> pd.Series:
        """Residuals: ``"response"`` y − fitted, or ``"pearson"`` √w (y − fitted).
        ``scaled=True`` divides by sigma (lme4's ``residuals(fit, scaled = TRUE)``)."""
        r = self.frame.y - self._fitted
        if type == "pearson":
            if self.frame.weights is not None:
                r = r * np.sqrt(self.frame.weights)
        elif type != "response":
            raise ValueError(f"type must be 'response' or 'pearson', not {type!r}")
        if scaled:
            r = r / self._sigma
        return pd.Series(r, index=self._row_index(), name="residuals")

    def predict(self, newdata: Any = None, re_form: str | None = None, allow_new_levels: bool = False,
                interval: str | None = None, level: float = 0.95) -> pd.Series | pd.DataFrame:
        """Predictions on the response scale (lme4's ``predict.merMod``).

        interval:         None for point predictions (a Series); "confidence" or "prediction"
                          for a DataFrame with fit, lwr, upr (see
                          ``multilevel.inference.predict_interval`` for what each includes).

        newdata:          a data frame (pandas or polars) with the model's variables; None
                          for the fitting data.
        re_form:          None: all random effects; ``"~0"`` (or ``"NA"``): fixed part only;
                          a formula such as ``"~(1 | school)"``: only those terms.
        allow_new_levels: if True, levels not seen in the fit get random effect 0 (the
                          population value); if False they are an error.

        >>> new = pd.DataFrame({"Days": [0.0, 5.0], "Subject": ["308", "999"]})
        >>> fit.predict(new, allow_new_levels=True).round(1).tolist()
        [253.7, 303.7]
        """
        if interval is not None:
            from multilevel.inference import predict_interval

            if newdata is None:
                raise DataError("intervals need newdata (the fitting data works: fit.frame rows)")
            return predict_interval(self, newdata, interval=interval, level=level, re_form=re_form,
                                    allow_new_levels=allow_new_levels)
        fixed_only = _is_fixed_only(re_form)
        if newdata is None:
            if re_form is None:
                return self.fitted().rename("predicted")
            if fixed_only:
                eta = self.frame.X @ self._beta
                if self.frame.offset is not None:
                    eta = eta + self.frame.offset
                return pd.Series(eta, index=self._row_index(), name="predicted")
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
        index = newdata.index if isinstance(newdata, pd.DataFrame) and len(newdata.index) == len(eta) else None
        return pd.Series(eta, index=index, name="predicted")

    # -- presentation ------------------------------------------------------------------------

    def summary(self, correlation: bool | None = None, ddf: str | None = None) -> Summary:
        """lme4's ``summary(fit)``: prints as lme4 does; ``_repr_html_`` for notebooks.

        correlation: show the correlation of the fixed effects (default: when p <= 20).
        ddf: "satterthwaite", "kenward-roger" or "residual" adds lmerTest's df and p-value
        columns to the fixed effects.

        >>> from multilevel.datasets import load
        >>> import multilevel as ml
        >>> fit = ml.lmer("Reaction ~ Days + (Days | Subject)", load("sleepstudy"))
        >>> print(fit.summary(ddf="satterthwaite").coefficients.round(2))
                     Estimate  Std. Error    df  t value  Pr(>|t|)
        (Intercept)    251.41        6.82  17.0    36.84       0.0
        Days            10.47        1.55  17.0     6.77       0.0
        """
        from multilevel.report.summary import Summary

        return Summary(self, correlation=correlation, ddf=ddf)

    # -- inference (see multilevel.inference for the methods and their references) ---------

    def coef_table(self, ddf: str | None = "satterthwaite") -> pd.DataFrame:
        """t tests of the fixed effects: columns estimate, se, df, t, p. ``ddf`` is
        "satterthwaite" (lmerTest), "kenward-roger" (pbkrtest, REML fits), "residual" (n - p)
        or None (z tests)."""
        from multilevel.inference import coef_table

        return coef_table(self, ddf)

    def anova_terms(self, ddf: str | None = "satterthwaite", type: int = 3) -> pd.DataFrame:
        """F tests of the model terms (lmerTest's ``anova(fit)``), type III by default."""
        from multilevel.inference import anova_terms

        return anova_terms(self, ddf, type=type)

    def confint(self, method: str = "profile", level: float = 0.95, n: int = 500,
                seed: int | None = None, which: list[str] | None = None) -> pd.DataFrame:
        """Confidence intervals named as lme4 names them (``sd_(Intercept)|Subject``,
        ``cor_Days.(Intercept)|Subject``, ``sigma``, fixed effects). ``method``: "profile"
        (lme4's default: likelihood-ratio profiles, REML fits refitted by ML first), "wald"
        (fixed effects only, others NaN, as lme4) or "bootstrap" (``n`` parametric replicates,
        percentile intervals)."""
        from multilevel.inference import confint

        return confint(self, method=method, level=level, n=n, seed=seed, which=which)

    def bootstrap(self, n: int = 1000, seed: int | None = None, func: Callable[[Any], Any] | None = None,
                  progress: bool | None = None, workers: int | None = None) -> pd.DataFrame:
        """Parametric bootstrap (lme4's ``bootMer``): one row of estimates per replicate,
        refitting with a new response only. Deterministic for a ``seed``."""
        from multilevel.inference import bootstrap

        return bootstrap(self, n=n, seed=seed, func=func, progress=progress, workers=workers)

    def simulate(self, n: int = 1, seed: int | None = None) -> np.ndarray:
        """``n`` responses simulated from the fitted model (new random effects and noise),
        an (n, nobs) array."""
        from multilevel.inference import simulate

        return simulate(self, n=n, seed=seed)

    def to_dict(self) -> dict:
        """All results in the field names of the lme4 reference JSON (JSON-serialisable)."""
        from multilevel.report.export import to_dict

        return to_dict(self)

    def __str__(self) -> str:
        return str(self.summary())

    def __repr__(self) -> str:
        return str(self.summary())

    def _repr_html_(self) -> str:
        return self.summary()._repr_html_()


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
