"""Linear models by (weighted) least squares, with the formula language of the mixed models.

``lm(formula, data)`` is R's ``lm()`` for the models an analyst puts next to a mixed model:
the same formula (minus random-effects terms: write ``factor(g)`` for one coefficient per
group), the same rows (missing values dropped), factor coding, transforms (``scale()``,
``poly()``, ``center(x, by = g)``) and column names, so a table of ``lm`` and ``lmer`` fits
lines up. Numbers follow R: ``summary.lm``'s layout, R², F, ``logLik.lm`` (with weights),
AIC/BIC with ``npar = rank + 1``, rank-deficient columns reported as ``NA``.

Cluster-robust standard errors (``cluster="school"``) are the CR1 sandwich with Stata's
small-sample factor, ``G/(G-1) * (N-1)/(N-K)``, which is also ``sandwich::vcovCL(fit,
cluster = ~school, type = "HC1")`` in R; t tests and confidence intervals then use ``G - 1``
degrees of freedom and the F statistic is the cluster-robust Wald test on
``(K - 1, G - 1)`` df, as Stata's ``regress ..., vce(cluster g)`` reports.

Example
-------
>>> import multilevel as ml
>>> fit = ml.lm("Reaction ~ Days", ml.datasets.load("sleepstudy"))
>>> fit.fixef.round(3).tolist(), round(fit.sigma, 2), round(fit.r2, 4)
([251.405, 10.467], 47.71, 0.2865)
>>> robust = ml.lm("Reaction ~ Days", ml.datasets.load("sleepstudy"), cluster="Subject")
>>> robust.se.round(3).tolist()
[6.844, 1.55]
"""
from __future__ import annotations

import math
from functools import cached_property
from typing import Any

import numpy as np

from multilevel._blas import one_thread
import pandas as pd

from multilevel.design import ModelFrame, rank_keep
from multilevel.errors import DataError, FitWarning, ModelSpecError
from multilevel.results.base import FitBase
from multilevel.results.methods import LmMethods

__all__ = ["LmFit"]

# the design layer words rank deficiency as lme4 does; an lm fit replaces that record (same
# code, rank_deficient) by R's wording (NA coefficients, "not defined because of singularities")


class LmFit(LmMethods, FitBase):
    """A fitted linear model (what :func:`lm` returns).

    ==========================  ========================================================
    ``fixef``, ``se``, ``vcov``  estimable coefficients, their SEs and covariance (robust
                                 with ``cluster=``); aliased columns are left out, as
                                 lme4's ``fixef`` leaves them out
    ``coef()``                   all coefficients, NaN for aliased ones (R's ``coef.lm``)
    ``tvalues``, ``pvalues``     t statistics and two-sided p-values (on ``df_test`` df)
    ``conf_int(level)``          t-based confidence intervals
    ``sigma``, ``rss``           residual standard error, (weighted) residual sum of squares
    ``r2``, ``adj_r2``,          R², adjusted R², F statistic (value, numdf, dendf, p)
    ``fstatistic``
    ``loglik``, ``aic``,         R's ``logLik.lm`` (ML), AIC, BIC; ``deviance`` is
    ``bic``, ``deviance``        -2 logLik (R's ``deviance(lm)`` is the RSS: ``rss``)
    ``nobs``, ``npar``,          observations (nonzero weights), rank + 1, nobs - rank
    ``df_resid``
    ``fitted()``, ``residuals()``, ``predict(newdata, *, ...)``, ``summary()``, ``to_dict()``
    ==========================  ========================================================

    ``frame`` is the :class:`~multilevel.design.ModelFrame` (``frame.y``, ``frame.rows``: the
    response and the rows used), so "same data" checks treat lm and lmer fits alike.
    ``reml`` is always False: the log-likelihood is the ML one, directly comparable with
    ML fits of mixed models.
    """

    _GETME = {**FitBase._GETME, "sigma": "_sigma"}

    _export_layout = "lm"
    reml = False
    family = "gaussian"
    link = "identity"
    converged = True
    is_singular = False

    def __init__(self, frame: ModelFrame, *, weights_name: str | None = None,
                 cluster: str | None = None, cluster_codes: np.ndarray | None = None,
                 data_name: str | None = None):
        self.frame = frame
        self.data_name = data_name if data_name is not None else getattr(frame, "data_name", None)
        self.weights_name = weights_name
        self.cluster = cluster
        self._warnings = [m for m in frame.warnings if getattr(m, "code", None) != "rank_deficient"]
        # (one BLAS thread for frame-sized dense algebra: multilevel._blas); a GroupedFrame
        # is fitted group by group, with no such dense step (and no X to look at)
        blocks = getattr(frame, "grouped", None) if frame.weights is None \
            and cluster_codes is None else None
        if blocks is not None:
            self._fit_grouped(blocks)
        else:
            with one_thread(*self.frame.X.shape):
                self._fit(cluster_codes)

    # -- estimation --------------------------------------------------------------------------

    def _fit(self, cluster_codes: np.ndarray | None) -> None:
        fr = self.frame
        y = fr.y
        n_all = y.shape[0]
        w = fr.weights
        z = y - fr.offset if fr.offset is not None else y
        X = fr.X
        # R's lm.wfit fits on the rows with nonzero weight only (they alone count for df,
        # logLik and nobs); residuals and fitted values are still given for every row
        nz = np.ones(n_all, dtype=bool) if w is None else (w != 0)
        sw = np.ones(n_all) if w is None else np.sqrt(w)
        Xw = X[nz] * sw[nz, None]
        zw = z[nz] * sw[nz]
        # the design layer checked the rank of the unweighted X on all rows; with weights
        # R decides on sqrt(w) X over the nonzero-weight rows, which can alias more columns
        cols = list(range(X.shape[1]))
        if w is not None and X.shape[1]:
            cols = rank_keep(Xw)
        self._cols = cols
        all_names = fr.all_fixef_names
        kept = [fr.fixef_names[j] for j in cols]
        self._names = kept
        kept_set = set(kept)
        self._aliased = [nm for nm in all_names if nm not in kept_set]
        if self._aliased:
            self._warnings.append(self._aliased_warning())
        Xk = Xw[:, cols]
        n = int(nz.sum())
        p = len(cols)
        if n <= 0:
            raise DataError("no observations with a nonzero weight")
        if p:
            from scipy.linalg import qr, solve_triangular

            # R of the QR of [X z]: its last column is Q'z (and the residual norm), so Q
            # itself is never formed, which would cost as much again for wide X (group dummies)
            Raug = qr(np.column_stack([Xk, zw]), mode="r", check_finite=False)[0]
            R = np.triu(Raug[:p, :p])
            beta = solve_triangular(R, Raug[:p, p], check_finite=False)
            Rinv = solve_triangular(R, np.eye(p), check_finite=False)
            xtx_inv = Rinv @ Rinv.T
            self._logdet_r = float(np.sum(np.log(np.abs(np.diag(R)))))
        else:
            beta = np.zeros(0)
            xtx_inv = np.zeros((0, 0))
            self._logdet_r = 0.0
        eta = X[:, cols] @ beta
        rw = self._store(beta, xtx_inv, eta, w, nz, sw)
        if cluster_codes is not None:
            self._vcov = self._cluster_vcov(Xk, rw, cluster_codes[nz])

    def _fit_grouped(self, grouped: Any) -> None:
        """The fit of a block-structured X (a GroupedFrame: group intercepts and slopes),
        without forming X: :mod:`multilevel.results.grouped_ls`. No weights, no clusters
        (those frames take the dense path); the columns were chosen by the frame."""
        from multilevel.results.grouped_ls import grouped_least_squares

        fr = self.frame
        n = fr.nobs
        if n <= 0:
            raise DataError("no observations with a nonzero weight")
        z = fr.y - fr.offset if fr.offset is not None else fr.y
        self._cols = list(range(len(fr.fixef_names)))
        self._names = list(fr.fixef_names)
        kept = set(self._names)
        self._aliased = [nm for nm in fr.all_fixef_names if nm not in kept]
        if self._aliased:
            self._warnings.append(self._aliased_warning())
        if self._cols:
            sol = grouped_least_squares(grouped, fr.spec.keep, z)
            beta, xtx_inv, eta = sol.beta, sol.xtx_inv, sol.eta
            self._logdet_r = sol.logdet_r
        else:
            beta, xtx_inv, eta = np.zeros(0), np.zeros((0, 0)), np.zeros(n)
            self._logdet_r = 0.0
        self._store(beta, xtx_inv, eta, None, np.ones(n, dtype=bool), np.ones(n))

    def _aliased_warning(self) -> FitWarning:
        k = len(self._aliased)
        return FitWarning("rank_deficient", f"{k} coefficient{'s' if k != 1 else ''} not defined "
                          f"because of singularities: {', '.join(self._aliased)}")

    def _store(self, beta: np.ndarray, xtx_inv: np.ndarray, eta: np.ndarray,
               w: np.ndarray | None, nz: np.ndarray, sw: np.ndarray) -> np.ndarray:
        """Keep the solution and what follows from it (fitted values without the offset
        in ``eta``); returns the weighted residuals of the nonzero-weight rows."""
        fr = self.frame
        if fr.offset is not None:
            eta = eta + fr.offset
        n = int(nz.sum())
        p = len(beta)
        self._beta = beta
        self._fitted = eta
        self._resid = fr.y - eta
        self._w = w
        self._nz = nz
        self._n = n
        self._p = p
        rw = (self._resid * sw)[nz]
        self._rss = float(rw @ rw)
        self._rdf = n - p
        self._sigma = math.sqrt(self._rss / self._rdf) if self._rdf > 0 else float("nan")
        self._xtx_inv = xtx_inv
        self._vcov_ols = self._sigma ** 2 * xtx_inv
        self._n_clusters: int | None = None
        self._vcov = self._vcov_ols
        return rw

    def _cluster_vcov(self, Xk: np.ndarray, score_w: np.ndarray, codes: np.ndarray) -> np.ndarray:
        """CR1: bread (X'WX)^-1, meat sum_g s_g s_g' with s_g = sum_{i in g} x_i w_i e_i,
        times Stata's G/(G-1) (N-1)/(N-K)."""
        # Xk holds sqrt(w_i) x_i and score_w the weighted residuals sqrt(w_i) e_i: their
        # product is the score x_i w_i e_i
        _, codes = np.unique(codes, return_inverse=True)
        G = int(codes.max()) + 1 if codes.size else 0
        if G < 2:
            raise ModelSpecError(f"cluster-robust standard errors need at least 2 clusters; "
                                 f"'{self.cluster}' has {G}")
        self._n_clusters = G
        S = Xk * score_w[:, None]
        sums = np.zeros((G, S.shape[1]))
        np.add.at(sums, codes, S)
        meat = sums.T @ sums
        n, k = self._n, self._p
        factor = G / (G - 1) * (n - 1) / (n - k) if n > k else float("nan")
        return factor * (self._xtx_inv @ meat @ self._xtx_inv)

    # -- model description -------------------------------------------------------------------

    @property
    def _coef_names(self) -> list[str]:
        """The estimable coefficients (aliased ones are left out of fixef, vcov, se)."""
        return list(self._names)

    @property
    def nobs(self) -> int:
        """Number of observations (with a nonzero weight), R's ``nobs.lm``."""
        return self._n

    @property
    def ngroups(self) -> dict[str, int]:
        """No grouping factors (an empty dict), for tables that list mixed and linear models."""
        return {}

    @property
    def rank(self) -> int:
        """Number of estimable coefficients."""
        return self._p

    @property
    def npar(self) -> int:
        """Number of parameters, rank + 1 (the coefficients and sigma): R's logLik df."""
        return self._p + 1

    @property
    def df_resid(self) -> int:
        """Residual degrees of freedom, nobs - rank."""
        return self._rdf

    @property
    def n_clusters(self) -> int | None:
        """Number of clusters of the robust standard errors (None without ``cluster=``)."""
        return self._n_clusters

    @property
    def vcov_type(self) -> str:
        """``"classical"`` (sigma² (X'WX)⁻¹) or ``"CR1"`` (cluster-robust, Stata's factor)."""
        return "classical" if self._n_clusters is None else "CR1"

    @property
    def df_test(self) -> int:
        """Degrees of freedom of the t tests: df_resid, or G - 1 with cluster-robust SEs."""
        return self._rdf if self._n_clusters is None else self._n_clusters - 1

    @property
    def dropped_columns(self) -> list[str]:
        """Names of the aliased (rank-deficient) columns, whose coefficients are NA."""
        return list(self._aliased)

    # -- coefficients ------------------------------------------------------------------------

    def coef(self) -> pd.Series:
        """All coefficients in model-matrix order, NaN for aliased columns (R's ``coef(fit)``)."""
        names = self.frame.all_fixef_names
        values = np.full(len(names), np.nan)
        # (by position: a label-based .loc assignment cost more than the fit of a small lm)
        at = {nm: i for i, nm in enumerate(names)}
        values[[at[nm] for nm in self._names]] = self._beta
        return pd.Series(values, index=names, name="coef")

    @cached_property
    def vcov_classical(self) -> pd.DataFrame:
        """sigma² (X'WX)⁻¹ whatever ``cluster=`` says."""
        return pd.DataFrame(self._vcov_ols, index=list(self._names), columns=list(self._names))

    @cached_property
    def tvalues(self) -> pd.Series:
        return (self.fixef / self.se).rename("t value")

    @cached_property
    def pvalues(self) -> pd.Series:
        """Two-sided p-values of the t tests on ``df_test`` degrees of freedom."""
        from scipy.stats import t as t_dist

        p = 2.0 * t_dist.sf(np.abs(self.tvalues.to_numpy()), self.df_test)
        return pd.Series(p, index=list(self._names), name="Pr(>|t|)")

    def conf_int(self, level: float = 0.95) -> pd.DataFrame:
        """t intervals ``estimate ± t(df_test) se`` (R's ``confint.lm``; with ``cluster=``
        the robust SEs on G - 1 df)."""
        from scipy.stats import t as t_dist

        a = (1.0 - level) / 2.0
        q = t_dist.ppf(1.0 - a, self.df_test)
        lo = self.fixef - q * self.se
        hi = self.fixef + q * self.se
        return pd.DataFrame({f"{100 * a:g} %": lo, f"{100 * (1 - a):g} %": hi})

    # -- fit statistics ------------------------------------------------------------------------

    @property
    def sigma(self) -> float:
        """Residual standard error sqrt(RSS / df_resid)."""
        return self._sigma

    @property
    def rss(self) -> float:
        """Weighted residual sum of squares (R's ``deviance(lm_fit)``)."""
        return self._rss

    @cached_property
    def _mss(self) -> float:
        """Model sum of squares as summary.lm computes it (about the (weighted) mean of the
        fitted values without the offset when there is an intercept, about 0 otherwise)."""
        f = self._fitted - (self.frame.offset if self.frame.offset is not None else 0.0)
        f = f[self._nz]
        w = np.ones_like(f) if self._w is None else self._w[self._nz]
        if self._has_intercept:
            m = float(np.sum(w * f) / np.sum(w))
            return float(np.sum(w * (f - m) ** 2))
        return float(np.sum(w * f ** 2))

    @property
    def _has_intercept(self) -> bool:
        return bool(self.frame.spec.parsed.fixed.intercept) if self.frame.spec is not None \
            else self.frame.has_intercept

    @property
    def _df_int(self) -> int:
        return 1 if self._has_intercept else 0

    @cached_property
    def r2(self) -> float:
        """Multiple R² (0 for an intercept-only model, as R reports)."""
        if self._p == self._df_int:
            return 0.0
        return self._mss / (self._mss + self._rss)

    @cached_property
    def adj_r2(self) -> float:
        """Adjusted R², 1 - (1 - R²)(n - df_int)/df_resid."""
        if self._p == self._df_int:
            return 0.0
        return 1.0 - (1.0 - self.r2) * ((self._n - self._df_int) / self._rdf)

    @cached_property
    def fstatistic(self) -> dict[str, float] | None:
        """The overall F test of the model against the intercept-only model: ``value``,
        ``numdf``, ``dendf``, ``p``. With cluster-robust SEs the Wald F on (K - 1, G - 1) df.
        None for an intercept-only model."""
        from scipy.stats import f as f_dist

        q = self._p - self._df_int
        if q <= 0 or self._rdf <= 0:
            return None
        if self._n_clusters is None:
            value = (self._mss / q) / (self._rss / self._rdf)
            dendf = float(self._rdf)
        else:
            idx = [j for j, nm in enumerate(self._names) if nm != "(Intercept)"]
            b = self._beta[idx]
            V = self._vcov[np.ix_(idx, idx)]
            value = float(b @ np.linalg.pinv(V) @ b) / q
            dendf = float(self._n_clusters - 1)
        p = float(f_dist.sf(value, q, dendf))
        return {"value": float(value), "numdf": float(q), "dendf": dendf, "p": p}

    @cached_property
    def loglik(self) -> float:
        """Log-likelihood, R's ``logLik.lm`` (ML; weights as precision weights, zero
        weights left out)."""
        n = self._n
        w = np.ones(n) if self._w is None else self._w[self._nz]
        return 0.5 * (float(np.sum(np.log(w))) - n * (math.log(2 * math.pi) + 1.0 - math.log(n)
                                                       + math.log(self._rss)))

    @property
    def deviance(self) -> float:
        """-2 logLik, as for an ML mixed-model fit (the RSS is :attr:`rss`)."""
        return -2.0 * self.loglik

    @cached_property
    def varcorr(self):
        """No random effects, only the residual standard deviation (prints like lme4)."""
        from multilevel.results.mixed import VarCorr

        return VarCorr([], self._sigma)

    @property
    def theta(self) -> pd.Series:
        """No covariance parameters (an empty Series)."""
        return pd.Series([], dtype=float, name="theta")

    # -- fitted values, residuals, predictions ------------------------------------------------

    def residuals(self, type: str = "response") -> pd.Series:
        """``"response"``: y - fitted (R's ``residuals(fit)``); ``"pearson"``: sqrt(w) (y - fitted)."""
        r = self._resid
        if type == "pearson":
            if self._w is not None:
                r = r * np.sqrt(self._w)
        elif type != "response":
            raise ValueError(f"type must be 'response' or 'pearson', not {type!r}")
        return pd.Series(r, index=self._row_index(), name="residuals")

    def predict(self, newdata: Any = None, *, re_form: str | None = None, allow_new_levels: bool = False,
                type: str = "link", interval: str | None = None,  # noqa: A002 - lme4's name
                level: float = 0.95) -> pd.Series:
        """Predictions X β (+ offset) for ``newdata`` (None: the fitting rows); the keywords
        of every fit type's ``predict``.

        New data are encoded as the fitting data were: same factor levels, same parameters of
        ``scale()``, ``poly()`` and ``center()``. ``allow_new_levels`` only matters for
        ``center(x, by = g)`` / ``group_mean(x, by = g)``: an unseen group is an error unless
        it is True (then the fitting data's grand mean is used). ``re_form`` may only be None
        or the fixed part (``"~0"``, ``"NA"``): a linear model has no random effects.
        ``type`` "link" and "response" are the same (identity link). ``interval`` must be
        None (use ``conf_int`` for the coefficients).
        """
        from multilevel.results.mixed import _is_fixed_only

        self._check_predict_type(type)
        if re_form is not None and not _is_fixed_only(re_form):
            raise ModelSpecError(f"re_form={re_form!r}: an lm fit has no random effects (use None or '~0')")
        if interval is not None:
            raise ModelSpecError("predict(interval=...) is available for linear mixed models only, "
                                 "not for an lm fit")
        if newdata is None:
            return self.fitted().rename("predicted")
        nd = self.frame.new_design(newdata, allow_new_levels=allow_new_levels)
        eta = np.asarray(nd.X, dtype=float)[:, self._cols] @ self._beta
        if nd.offset is not None:
            eta = eta + np.asarray(nd.offset, dtype=float)
        return pd.Series(eta, index=self._newdata_index(newdata, len(eta)), name="predicted")
