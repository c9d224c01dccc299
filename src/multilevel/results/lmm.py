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

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from multilevel.covariance import lambda_blocks, theta_names
from multilevel.errors import DataError
from multilevel.results.methods import LmmMethods, MixedMethods
from multilevel.results.mixed import MixedFit, RandomEffects, VarCorr, VarCorrBlock, _is_fixed_only
from multilevel.covariance import SINGULAR_TOL

if TYPE_CHECKING:  # pragma: no cover
    from multilevel.design.frame import ModelFrame

__all__ = ["LmmFit", "VarCorr", "VarCorrBlock", "RandomEffects", "lambda_blocks", "theta_names",
           "_is_fixed_only"]


# --- the fit ----------------------------------------------------------------------------


class LmmFit(LmmMethods, MixedMethods, MixedFit):
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
    ``fitted()``, ``residuals()``, ``predict(newdata, *, re_form, allow_new_levels, type,
    interval, level)``
    ``loglik``, ``aic``, ``bic``, ``deviance``, ``reml_criterion``, ``npar``, ``df_resid``
    ``nobs``, ``ngroups``, ``is_singular``, ``converged``, ``warnings``
    ``summary()``, ``to_dict()``
    ==================  =============================================================

    Parameters are the engine's raw results: ``theta`` in lme4's order; ``b[k]`` the
    (n_levels, k) conditional modes of term k on the original scale; ``condvar`` their
    (n_levels, k, k) conditional covariances, or None to compute them on first use from
    ``problem`` (the :class:`~multilevel.engine.lmm.LmmProblem`); ``loglik`` the REML
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

    _export_layout = "lmm"

    def __init__(
        self,
        frame: ModelFrame,
        reml: bool,
        theta: np.ndarray,
        beta: np.ndarray,
        vcov: np.ndarray,
        sigma: float,
        b: list[np.ndarray],
        condvar: Sequence[np.ndarray] | None,
        loglik: float,
        deviance_ml: float,
        reml_criterion: float | None,
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
        super().__init__(frame, theta, beta, vcov, b, condvar, loglik, fitted, converged, warnings,
                         optinfo, data_name=data_name, weights_name=weights_name, problem=problem,
                         singular_tol=singular_tol)
        self.reml = bool(reml)
        self._sigma = float(sigma)
        self._deviance_ml = float(deviance_ml)
        self._reml_criterion = None if reml_criterion is None else float(reml_criterion)

    # -- model description ---------------------------------------------------------------

    @property
    def family(self) -> str:
        return "gaussian"

    @property
    def link(self) -> str:
        return "identity"

    # -- parameters ----------------------------------------------------------------------

    @property
    def sigma(self) -> float:
        """Residual standard deviation (REML or ML estimate, as fitted)."""
        return self._sigma

    @property
    def _scale(self) -> float | None:
        return self._sigma

    # -- likelihood and information criteria ---------------------------------------------

    @property
    def npar(self) -> int:
        """Number of parameters: fixed effects + theta + residual variance (logLik df)."""
        return len(self._beta) + self.n_cov_params + 1

    @property
    def deviance(self) -> float:
        """ML fits: -2 logLik. REML fits: the ML deviance at the REML estimates
        (lme4's ``deviance(fit, REML = FALSE)``), not -2 times the REML logLik."""
        return -2.0 * self._loglik if not self.reml else self._deviance_ml

    @property
    def reml_criterion(self) -> float | None:
        """REML criterion at the optimum (-2 REML logLik); None for ML fits."""
        return self._reml_criterion

    # -- random effects ----------------------------------------------------------------------

    def _compute_condvar(self) -> list[np.ndarray]:
        # lazily, from the engine problem: cheap to store, costly for many levels to compute
        if self._problem is None:
            return super()._compute_condvar()
        return self._problem.condvar(self._theta, self._sigma)

    # -- residuals, predictions ----------------------------------------------------------------

    def residuals(self, type: str = "response", scaled: bool = False) -> pd.Series:  # noqa: A002
        """Residuals: ``"response"`` y − fitted, or ``"pearson"`` √w (y − fitted).
        ``scaled=True`` divides by sigma (lme4's ``residuals(fit, scaled = TRUE)``)."""
        if getattr(self.frame, "out_of_core", False):  # data read in chunks: a pass over them
            if type not in ("response", "pearson"):
                raise ValueError(f"type must be 'response' or 'pearson', not {type!r}")
            return self._chunked_values("residuals", kind=type, scaled=scaled)
        return pd.Series(self._residual_array(type, scaled), index=self._row_index(), name="residuals")

    def _residual_array(self, type: str = "response", scaled: bool = False) -> np.ndarray:  # noqa: A002
        """The values of :meth:`residuals` (in-memory fits) without the Series: the summary
        takes their quantiles, and a Series of the data's row labels cost more than that."""
        r = self.frame.y - self._fitted
        if type == "pearson":
            if self.frame.weights is not None:
                r = r * np.sqrt(self.frame.weights)
        elif type != "response":
            raise ValueError(f"type must be 'response' or 'pearson', not {type!r}")
        if scaled:
            with np.errstate(invalid="ignore"):  # 0 / 0 of a perfect fit (sigma = 0): NaN
                r = r / self._sigma
        return r

    def predict(self, newdata: Any = None, *, re_form: str | None = None, allow_new_levels: bool = False,
                type: str = "link", interval: str | None = None,  # noqa: A002 - lme4's name
                level: float = 0.95) -> pd.Series | pd.DataFrame:
        """Predictions (lme4's ``predict.merMod``); the same keywords on every fit type.

        newdata:          a data frame (pandas or polars) with the model's variables; None
                          for the fitting data.
        re_form:          None: all random effects; ``"~0"`` (or ``"NA"``): fixed part only;
                          a formula such as ``"~(1 | school)"``: only those terms.
        allow_new_levels: if True, levels not seen in the fit get random effect 0 (the
                          population value); if False they are an error.
        type:             ``"link"`` or ``"response"``: the same for a linear mixed model
                          (identity link); accepted as for a GLMM.
        interval:         None for point predictions (a Series); "confidence" or "prediction"
                          for a DataFrame with fit, se, lwr, upr (see
                          ``multilevel.inference.predict_interval`` for what each includes).
        level:            the confidence level of ``interval``.

        >>> new = pd.DataFrame({"Days": [0.0, 5.0], "Subject": ["308", "999"]})
        >>> fit.predict(new, allow_new_levels=True).round(1).tolist()
        [253.7, 303.7]
        """
        self._check_predict_type(type)
        from multilevel.design.dasksource import map_new_data
        lazy = None if interval is not None else map_new_data(
            newdata, lambda part: self.predict(part, re_form=re_form,
                                               allow_new_levels=allow_new_levels, type=type),
            "predicted")
        if lazy is not None:  # a Dask frame: a lazy Series, one partition at a time
            return lazy
        if interval is not None:
            if newdata is None:
                raise DataError("intervals need newdata (the fitting data works: fit.frame rows)")
            return self._predict_interval(newdata, interval, level, re_form, allow_new_levels)
        if newdata is None and re_form is None:
            return self.fitted().rename("predicted")
        return self._linear_predictor(newdata, re_form, allow_new_levels)


