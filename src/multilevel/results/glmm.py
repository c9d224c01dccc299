"""The result of a generalized linear mixed model fit (what ``multilevel.glmer`` returns).

:class:`GlmmFit` extends :class:`~multilevel.results.lmm.LmmFit` (same accessors: ``fixef``,
``se``, ``vcov``, ``theta``, ``varcorr``, ``ranef``, ``coef``, ``ngroups``, ``is_singular``,
``converged``, ``warnings``) with what differs for a GLMM:

- no residual scale: ``sigma`` is 1, ``varcorr`` has no Residual row, ``npar`` is
  p + length(theta);
- ``fitted()`` is the mean mu (the response scale), ``linear_predictor()`` is eta;
- ``residuals(type=)``: ``"deviance"`` (lme4's default for glmer), ``"pearson"``,
  ``"response"``, ``"working"``;
- ``predict(newdata, type="link" | "response", re_form, allow_new_levels)``;
- conditional SDs in ``ranef()`` use the PIRLS weights at the mode, as lme4.

**Three "deviances".** lme4 uses the word for three different numbers of a glmer fit; here
each has its own name:

=================================  ===============================================================
``fit.deviance``                   -2 logLik: the ``deviance`` column of ``summary()`` and
                                   ``anova()`` (the reference JSON's ``deviance``)
``fit.conditional_deviance``       sum of squared deviance residuals at the conditional modes:
                                   what ``deviance(glmerfit)`` returns in R (not -2 logLik)
``fit.criterion``                  the minimised objective: -2 logLik as lme4 reports it. For
                                   nAGQ > 1 lme4 leaves the saturated-model term out of it and
                                   out of logLik/AIC/BIC; ``fit.loglik_full`` adds it back
=================================  ===============================================================
"""
from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from multilevel.results.lmm import LmmFit, VarCorr, VarCorrBlock
from multilevel.covariance import SINGULAR_TOL

if TYPE_CHECKING:  # pragma: no cover
    from multilevel.design.frame import ModelFrame
    from multilevel.families import Family

__all__ = ["GlmmFit"]


class GlmmFit(LmmFit):
    """A fitted generalized linear mixed model.

    ==================  =============================================================
    ``fixef``, ``se``   fixed effects and standard errors (``vcov``: lme4's default,
                        from the finite-difference Hessian when lme4 computes one)
    ``vcov_use_hessian_false``  covariance from R_X at the optimum (lme4's
                        ``vcov(fit, use.hessian = FALSE)``)
    ``theta``, ``varcorr``, ``ranef()``, ``coef()``
    ``fitted()``        mu; ``linear_predictor()`` eta
    ``residuals(type)``, ``predict(newdata, type, re_form, allow_new_levels)``
    ``loglik``, ``aic``, ``bic``, ``deviance``, ``conditional_deviance``,
    ``loglik_full``, ``npar``, ``df_resid``, ``nobs``, ``ngroups``
    ``is_singular``, ``converged``, ``warnings``, ``summary()``, ``to_dict()``
    ==================  =============================================================

    >>> fit = multilevel.glmer("y ~ x + (1 | g)", df, family="binomial")   # doctest: +SKIP
    >>> fit.predict(new, type="response", allow_new_levels=True)         # doctest: +SKIP
    """

    def __init__(
        self,
        frame: ModelFrame,
        family: Family,
        nagq: int,
        theta: np.ndarray,
        beta: np.ndarray,
        vcov: np.ndarray,
        vcov_rx: np.ndarray,
        b: list[np.ndarray],
        u: list[np.ndarray],
        condvar: list[np.ndarray],
        loglik: float,
        conditional_deviance: float,
        saturated_loglik: float,
        eta: np.ndarray,
        mu: np.ndarray,
        ntrials: np.ndarray | None,
        converged: bool,
        warnings: list[str],
        optinfo: dict,
        *,
        data_name: str | None = None,
        weights_name: str | None = None,
        singular_tol: float = SINGULAR_TOL,
    ):
        cv = [np.asarray(c, dtype=float) for c in condvar]
        super().__init__(
            frame=frame,
            reml=False,
            theta=theta,
            beta=beta,
            vcov=vcov,
            sigma=1.0,
            b=b,
            condvar=lambda: cv,
            loglik=loglik,
            deviance_ml=-2.0 * loglik,
            reml_criterion=None,
            fitted=mu,
            converged=converged,
            warnings=warnings,
            optinfo=optinfo,
            data_name=data_name,
            weights_name=weights_name,
            singular_tol=singular_tol,
        )
        self.family_object = family
        self.nagq = int(nagq)
        self._vcov_rx = np.asarray(vcov_rx, dtype=float)
        self._u = [np.asarray(x, dtype=float) for x in u]
        self._eta = np.asarray(eta, dtype=float)
        self._conditional_deviance = float(conditional_deviance)
        self._saturated = float(saturated_loglik)
        self._ntrials = ntrials

    # -- model description ---------------------------------------------------------------

    @property
    def family(self) -> str:  # type: ignore[override]
        """Name of the family (``"binomial"``, ``"poisson"``); the object is ``family_object``."""
        return self.family_object.name

    @property
    def link(self) -> str:  # type: ignore[override]
        return self.family_object.link.name

    @property
    def prior_weights(self) -> np.ndarray:
        """Prior weights of the rows used (trials for cbind responses); 1 when none."""
        w = self.frame.weights
        return np.ones(self.nobs) if w is None else np.asarray(w, dtype=float)

    # -- parameters ----------------------------------------------------------------------

    @property
    def sigma(self) -> float:  # type: ignore[override]
        """1: binomial and Poisson models have no residual scale."""
        return 1.0

    @cached_property
    def varcorr(self) -> VarCorr:  # type: ignore[override]
        """Variance components: per term the covariance Λ Λᵀ (no residual row)."""
        from multilevel.report.rformat import make_unique_names

        rts = self.frame.reterms
        names = make_unique_names([rt.group for rt in rts])
        blocks = [VarCorrBlock(rt.group, nm, list(rt.terms), L @ L.T)
                  for rt, nm, L in zip(rts, names, self.lambdas)]
        return VarCorr(blocks, None)

    @cached_property
    def vcov_use_hessian_false(self) -> pd.DataFrame:
        """Covariance of the fixed effects from the PIRLS factor R_X at the optimum,
        conditional on theta (lme4's ``vcov(fit, use.hessian = FALSE)``)."""
        names = list(self.frame.fixef_names)
        return pd.DataFrame(self._vcov_rx, index=names, columns=names)

    @property
    def vcov_method(self) -> str:
        """``"hessian"`` when ``vcov`` comes from the finite-difference Hessian, else ``"RX"``."""
        d = self.optinfo.get("derivs")
        return "hessian" if d is not None and not np.array_equal(self._vcov, self._vcov_rx) else "RX"

    # -- likelihood ----------------------------------------------------------------------

    @property
    def npar(self) -> int:
        """Number of parameters: fixed effects + theta (no scale parameter)."""
        return len(self._beta) + len(self._theta)

    @property
    def deviance(self) -> float:  # type: ignore[override]
        """-2 logLik (summary()/anova()'s ``deviance`` column). Not R's ``deviance(glmerfit)``,
        which is :attr:`conditional_deviance`."""
        return -2.0 * self._loglik

    @property
    def criterion(self) -> float:
        """The minimised criterion (Laplace / AGQ / nAGQ = 0 deviance), = -2 logLik."""
        return -2.0 * self._loglik

    @property
    def conditional_deviance(self) -> float:
        """Sum of squared deviance residuals at the conditional modes: R's ``deviance(fit)``
        for a glmer fit."""
        return self._conditional_deviance

    @property
    def saturated_loglik(self) -> float:
        """log p(y | mu = y) summed over rows: the term lme4 leaves out of nAGQ > 1 fits
        (0 for Bernoulli data)."""
        return self._saturated

    @property
    def loglik_full(self) -> float:
        """The marginal log-likelihood with every constant: ``loglik`` for Laplace fits,
        ``loglik + saturated_loglik`` for nAGQ > 1 (comparable across nAGQ and software)."""
        return self._loglik + (self._saturated if self.nagq > 1 else 0.0)

    # -- fitted values, residuals, predictions ---------------------------------------------

    def fitted(self) -> pd.Series:
        """Fitted means mu = linkinv(eta) for the rows used (proportions for binomial)."""
        return pd.Series(self._fitted, index=self._row_index(), name="fitted")

    def linear_predictor(self) -> pd.Series:
        """eta = X beta + Z b (+ offset) for the rows used."""
        return pd.Series(self._eta, index=self._row_index(), name="eta")

    def residuals(self, type: str = "deviance", scaled: bool = False) -> pd.Series:  # noqa: A002
        """Residuals as lme4's ``residuals.glmResp``: ``"deviance"`` (default),
        ``"pearson"`` ((y - mu) sqrt(w / V(mu))), ``"response"`` (y - mu) or ``"working"``
        ((y - mu) / mu_eta). ``scaled`` divides by sigma = 1 (kept for symmetry with LMMs)."""
        fam = self.family_object
        y = self.frame.y
        mu = self._fitted
        wt = self.prior_weights
        if type == "response":
            r = y - mu
        elif type == "pearson":
            with np.errstate(invalid="ignore", divide="ignore"):
                r = (y - mu) * np.sqrt(wt) / np.sqrt(fam.variance(mu))
        elif type == "deviance":
            d = np.clip(fam.dev_resids(y, mu, wt), 0.0, None)
            r = np.sign(y - mu) * np.sqrt(d)
        elif type == "working":
            r = (y - mu) / fam.mu_eta(self._eta)
        else:
            raise ValueError(f"type must be 'deviance', 'pearson', 'response' or 'working', not {type!r}")
        return pd.Series(r, index=self._row_index(), name="residuals")

    def predict(self, newdata: Any = None, type: str = "link", re_form: str | None = None,  # noqa: A002
                allow_new_levels: bool = False) -> pd.Series:
        """Predictions as lme4's ``predict.merMod``.

        type:             ``"link"`` (eta, lme4's default) or ``"response"`` (mu).
        re_form:          None: all random effects; ``"~0"`` / ``"NA"``: fixed part only.
        allow_new_levels: unseen levels get random effect 0 (else DataError).
        """
        if type not in ("link", "response"):
            raise ValueError(f"type must be 'link' or 'response', not {type!r}")
        if newdata is None and re_form is None:
            eta = pd.Series(self._eta, index=self._row_index(), name="predicted")
        else:
            eta = LmmFit.predict(self, newdata, re_form=re_form, allow_new_levels=allow_new_levels)
        if type == "response":
            return pd.Series(self.family_object.linkinv(eta.to_numpy()), index=eta.index, name="predicted")
        return eta

    # -- presentation ------------------------------------------------------------------------

    def summary(self, correlation: bool | None = None):
        """lme4's ``summary(glmerfit)``: prints as lme4 does."""
        from multilevel.report.glmm_summary import GlmmSummary

        return GlmmSummary(self, correlation=correlation)

    def to_dict(self) -> dict:
        """All results in the field names of the lme4 reference JSON (JSON-serialisable)."""
        from multilevel.report.export import jsonable, to_dict

        d = to_dict(self)
        d["REML"] = None
        d["nAGQ"] = self.nagq
        res = d["results"]
        names = list(self.frame.fixef_names)
        res["vcov_fixef_use_hessian_FALSE"] = {"names": names, "matrix": self._vcov_rx.tolist()}
        res["linear_predictor_first20"] = self._eta[:20].tolist()
        res["glmm_deviance_function_value"] = self._conditional_deviance
        if self.nagq > 1:
            res["saturated_logLik"] = self._saturated
            res["logLik_full"] = self.loglik_full
        res["vcov_method"] = self.vcov_method
        return jsonable(d)

