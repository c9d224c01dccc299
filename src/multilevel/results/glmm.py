"""The result of a generalized linear mixed model fit (what ``multilevel.glmer`` returns).

:class:`GlmmFit` is a sibling of :class:`~multilevel.results.lmm.LmmFit` over
:class:`~multilevel.results.mixed.MixedFit` (the same accessors: ``fixef``, ``se``, ``vcov``,
``theta``, ``varcorr``, ``ranef``, ``coef``, ``ngroups``, ``is_singular``, ``converged``,
``warnings``; ``isinstance(glmm_fit, LmmFit)`` is False) with what differs for a GLMM:

- no residual scale for binomial, Poisson and negative binomial fits: ``sigma`` is 1,
  ``varcorr`` has no Residual row, ``npar`` is p + length(theta) (+ 1 for the negative
  binomial's theta). Gamma and inverse Gaussian fits report lme4's ``sigma()``,
  sqrt((Pearson chi-square + |u|^2) / n), scale the SDs of ``varcorr`` by it and show it
  as the Residual row, as lme4 does; ``npar`` counts it (``family_extras`` has sigma,
  shape and nb_theta);
- ``fitted()`` is the mean mu (the response scale), ``linear_predictor()`` is eta;
- ``residuals(type=)``: ``"deviance"`` (lme4's default for glmer), ``"pearson"``,
  ``"response"``, ``"working"``;
- ``predict(newdata, *, re_form, allow_new_levels, type="link" | "response")``;
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

from multilevel.errors import ModelSpecError
from multilevel.results.methods import GlmmMethods, MixedMethods
from multilevel.results.mixed import MixedFit
from multilevel.covariance import SINGULAR_TOL

if TYPE_CHECKING:  # pragma: no cover
    from multilevel.design.frame import ModelFrame
    from multilevel.families import Family

__all__ = ["GlmmFit"]


class GlmmFit(GlmmMethods, MixedMethods, MixedFit):
    """A fitted generalized linear mixed model.

    ==================  =============================================================
    ``fixef``, ``se``   fixed effects and standard errors (``vcov``: lme4's default,
                        from the finite-difference Hessian when lme4 computes one)
    ``vcov_use_hessian_false``  covariance from R_X at the optimum (lme4's
                        ``vcov(fit, use.hessian = FALSE)``)
    ``theta``, ``varcorr``, ``ranef()``, ``coef()``
    ``fitted()``        mu; ``linear_predictor()`` eta
    ``residuals(type)``, ``predict(newdata, *, re_form, allow_new_levels, type)``
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
        problem: Any = None,
        singular_tol: float = SINGULAR_TOL,
        sigma: float = 1.0,
    ):
        super().__init__(frame, theta, beta, vcov, b, condvar, loglik, mu, converged, warnings,
                         optinfo, data_name=data_name, weights_name=weights_name, problem=problem,
                         singular_tol=singular_tol)
        self._sigma = 1.0  # inference code reads the scale of any mixed fit as _sigma
        self.family_object = family
        self.nagq = int(nagq)
        self._vcov_rx = np.asarray(vcov_rx, dtype=float)
        self._u = [np.asarray(x, dtype=float) for x in u]
        self._eta = np.asarray(eta, dtype=float)
        self._conditional_deviance = float(conditional_deviance)
        self._saturated = float(saturated_loglik)
        self._ntrials = ntrials
        # lme4's sigma(fit) of the dispersion families (1 otherwise); not the scale of b,
        # which the criterion keeps in absolute units (inference reads _sigma = 1)
        self._dispersion_sigma = float(sigma)

    _export_layout = "glmm"
    reml = False

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
        """lme4's ``sigma(fit)``: sqrt((Pearson chi-square + |u|^2) / n) for Gamma and inverse
        Gaussian fits (Var(y) = sigma^2 mu^2, sigma^2 mu^3); 1 for the other families."""
        return getattr(self, "_dispersion_sigma", 1.0) if self.family_object.has_dispersion else 1.0

    @property
    def _scale(self) -> float | None:
        # varcorr: Λ Λᵀ per term, no Residual row; lme4 scales the dispersion families' by sigma
        return self.sigma if self.family_object.has_dispersion else None

    @property
    def shape(self) -> float | None:
        """The Gamma family's shape, 1 / sigma^2 (None for other families)."""
        return 1.0 / self.sigma**2 if self.family == "Gamma" else None

    @property
    def nb_theta(self) -> float | None:
        """The negative binomial's theta (estimated by glmer.nb or given); None otherwise."""
        return self.family_object.param if self.family == "negative.binomial" else None

    @property
    def family_string(self) -> str:
        """R's ``family(fit)$family``: ``"Negative Binomial(3.3034)"`` for glmer.nb fits."""
        return self.family_object.family_string()

    @property
    def family_extras(self) -> dict | None:
        """The reference JSON's ``results.family_extras`` (Gamma, inverse Gaussian, negative
        binomial): family_string, link, sigma, shape, nb_theta; None for other families."""
        if self.family not in ("Gamma", "inverse.gaussian", "negative.binomial"):
            return None
        return {"family_string": self.family_string, "link": self.link, "sigma": self.sigma,
                "shape": self.shape, "nb_theta": self.nb_theta}

    @property
    def reml_criterion(self) -> None:
        """None: a GLMM is fitted by (approximate) maximum likelihood."""
        return None

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
        """Number of parameters: fixed effects + the covariance parameters (theta, or a
        structure's own), + 1 for the dispersion (Gamma, inverse Gaussian) or the negative
        binomial's theta, as lme4 counts them."""
        extra = self.family_object.has_dispersion or self.family == "negative.binomial"
        return len(self._beta) + self.n_cov_params + int(extra)

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

    def _row_pass(self, what: str, kind: str = "response", scaled: bool = False) -> Any:
        """Row values of a fit to data read in chunks, in a pass over the data (a pandas
        Series by position, or a lazy Dask Series for a Dask frame)."""
        sigma = self.sigma if scaled else None
        return self.frame.row_series(self._beta, self._b, what, kind=kind, sigma=sigma,
                                     family=self.family_object)

    def fitted(self) -> pd.Series:
        """Fitted means mu = linkinv(eta) for the rows used (proportions for binomial)."""
        if getattr(self.frame, "out_of_core", False):
            return self._row_pass("fitted")
        return super().fitted()

    def linear_predictor(self) -> pd.Series:
        """eta = X beta + Z b (+ offset) for the rows used."""
        if getattr(self.frame, "out_of_core", False):
            return self._row_pass("eta")
        return pd.Series(self._eta, index=self._row_index(), name="eta")

    def residuals(self, type: str = "deviance", scaled: bool = False) -> pd.Series:  # noqa: A002
        """Residuals as lme4's ``residuals.glmResp``: ``"deviance"`` (default),
        ``"pearson"`` ((y - mu) sqrt(w / V(mu))), ``"response"`` (y - mu) or ``"working"``
        ((y - mu) / mu_eta). ``scaled`` divides by sigma (lme4's
        ``sigma()``: 1 except for the dispersion families)."""
        if getattr(self.frame, "out_of_core", False):  # data read in chunks: a pass over them
            if type not in ("deviance", "pearson", "response", "working"):
                raise ValueError(f"type must be 'deviance', 'pearson', 'response' or 'working', "
                                 f"not {type!r}")
            return self._row_pass("residuals", kind=type, scaled=scaled)
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
        if scaled:
            r = r / self.sigma
        return pd.Series(r, index=self._row_index(), name="residuals")

    def predict(self, newdata: Any = None, *, re_form: str | None = None, allow_new_levels: bool = False,
                type: str = "link", interval: str | None = None,  # noqa: A002 - lme4's name
                level: float = 0.95) -> pd.Series:
        """Predictions as lme4's ``predict.merMod``; the same keywords on every fit type.

        type:             ``"link"`` (eta, lme4's default) or ``"response"`` (mu).
        re_form:          None: all random effects; ``"~0"`` / ``"NA"``: fixed part only.
        allow_new_levels: unseen levels get random effect 0 (else DataError).
        interval:         None only: intervals are available for linear mixed models.
        """
        self._check_predict_type(type)
        if interval is not None:
            raise ModelSpecError("predict(interval=...) is available for linear mixed models only, "
                                 f"not for a {self.family} GLMM")
        if newdata is None and re_form is None:
            if getattr(self.frame, "out_of_core", False):
                eta = self._row_pass("eta")
                if type == "response":
                    return self._row_pass("fitted")
                return eta
            eta = pd.Series(self._eta, index=self._row_index(), name="predicted")
        else:
            eta = self._linear_predictor(newdata, re_form, allow_new_levels)
        if type == "response":
            return pd.Series(self.family_object.linkinv(eta.to_numpy()), index=eta.index, name="predicted")
        return eta
