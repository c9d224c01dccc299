"""What every fit shares: the base class of :class:`~multilevel.results.LmmFit`,
:class:`~multilevel.results.GlmmFit` and :class:`~multilevel.results.LmFit`, and small pieces
other result objects use.

:class:`FitBase` holds the accessors that mean the same for every fit type (``formula``,
``fixef``, ``vcov``, ``se``, ``nobs``, ``loglik``, ``aic``, ``bic``, ``warnings``,
``fitted()``, ``to_dict()``) and the one signature of ``predict`` that all fit types share.
The three fit types are siblings over it: a GLMM is not a kind of LMM.

Example
-------
>>> import multilevel as ml
>>> from multilevel.datasets import load
>>> fit = ml.lm("Reaction ~ Days", load("sleepstudy"))
>>> isinstance(fit, FitBase), fit.nobs, round(fit.aic, 2)
(True, 180, 1906.29)
"""
from __future__ import annotations

import math
from functools import cached_property
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from multilevel.errors import ModelSpecError
from multilevel.results.export import to_dict

if TYPE_CHECKING:  # pragma: no cover
    from multilevel.design.frame import ModelFrame

__all__ = ["FitBase", "InformationCriteria", "TextResult", "PREDICT_TYPES"]

#: the scales ``predict(type=)`` accepts (lme4's ``predict.merMod``; the same numbers for a
#: Gaussian model with the identity link)
PREDICT_TYPES = ("link", "response")


class InformationCriteria:
    """AIC and BIC from ``loglik``, ``npar`` and ``nobs`` (R's definitions; for REML fits
    the REML log-likelihood, as lme4 does)."""

    loglik: float
    npar: int
    nobs: int

    @property
    def aic(self) -> float:
        """-2 logLik + 2 npar."""
        return -2.0 * self.loglik + 2.0 * self.npar

    @property
    def bic(self) -> float:
        """-2 logLik + log(nobs) npar."""
        return -2.0 * self.loglik + math.log(self.nobs) * self.npar


class TextResult:
    """A result that prints as its ``text`` (in the console and in ``repr``)."""

    text: str

    def __str__(self) -> str:
        return self.text

    def __repr__(self) -> str:
        return self.text


class FitBase(InformationCriteria):
    """The accessors every fitted model has (lmer, glmer and lm fits alike).

    Subclasses store ``frame`` (the :class:`~multilevel.design.ModelFrame`), ``_beta``,
    ``_vcov``, ``_fitted``, ``_warnings`` and ``_loglik`` (or override ``loglik``), and
    define ``npar``, ``summary()`` and ``predict()`` with the signature of
    :meth:`predict`.

    ``warnings`` is kept as given by the fit function and copied as is.
    """

    frame: ModelFrame
    _beta: np.ndarray
    _vcov: np.ndarray
    _fitted: np.ndarray
    _warnings: list
    _loglik: float

    # -- model description ---------------------------------------------------------------

    @property
    def formula(self) -> str:
        """The model formula as given."""
        return self.frame.formula

    @property
    def nobs(self) -> int:
        """Number of observations used in the fit."""
        return self.frame.nobs

    @property
    def contrasts(self) -> dict:
        """The coding of each factor of the fixed part (R's ``attr(X, "contrasts")``): factor
        -> :class:`~multilevel.design.contrasts.Contrast` (``type``, ``levels``, ``columns``,
        ``matrix``); ``predict`` re-applies them to new data.

        >>> import multilevel as ml, pandas as pd
        >>> df = ml.datasets.load("sleepstudy").assign(
        ...     week=lambda d: pd.Categorical(d.Days // 4, ordered=True))
        >>> fit = ml.lm("Reaction ~ week", df)
        >>> fit.contrasts["week"].type, fit.contrasts["week"].columns
        ('contr.poly', ['.L', '.Q'])
        """
        return dict(getattr(self.frame, "contrasts", None) or {})

    @property
    def _coef_names(self) -> list[str]:
        """Names of the estimated fixed effects, in the order of ``_beta``."""
        return list(self.frame.fixef_names)

    # -- the raw arrays (lme4's getME) ---------------------------------------------------

    #: names ``getme`` knows, with the attribute each reads
    _GETME = {"beta": "_beta", "vcov": "_vcov", "loglik": "loglik"}

    def getme(self, name: str) -> Any:
        """A raw piece of the fit as numpy data, as lme4's ``getME(fit, name)``: the interface
        inference and plotting code read instead of private attributes.

        ``"beta"`` (fixed effects, vector), ``"vcov"`` (their covariance, matrix),
        ``"loglik"``, ``"X"`` (the fixed-effects model matrix), ``"y"`` (the response);
        mixed models add ``"theta"``, ``"sigma"``, ``"b"`` (conditional modes per random-effect
        term, ``(levels, terms)`` arrays) and ``"condvar"`` (their conditional covariances,
        ``(levels, terms, terms)`` arrays) and ``"problem"``: the engine problem (``LmmProblem`` /
        ``GlmmProblem``, rebuilt from stored arrays after unpickling; None for a fit made
        without one), the interface of profiles, the bootstrap and the df methods. lm fits add
        ``"sigma"``.

        >>> import multilevel as ml
        >>> fit = ml.lmer("Reaction ~ Days + (Days | Subject)", ml.datasets.load("sleepstudy"))
        >>> fit.getme("beta").round(3).tolist(), fit.getme("b")[0].shape
        ([251.405, 10.467], (18, 2))
        """
        if name == "X":
            return self.frame.X
        if name == "y":
            return self.frame.y
        attr = self._GETME.get(name)
        if attr is None:
            known = ", ".join(sorted([*self._GETME, "X", "y"]))
            raise ModelSpecError(f"getme(): unknown name {name!r} for a {type(self).__name__}; "
                                 f"known: {known}")
        value = getattr(self, attr)
        return value() if callable(value) else value

    # -- parameters ----------------------------------------------------------------------

    @cached_property
    def fixef(self) -> pd.Series:
        """Fixed-effects estimates by coefficient name."""
        return pd.Series(self._beta, index=self._coef_names, name="fixef")

    @cached_property
    def vcov(self) -> pd.DataFrame:
        """Covariance matrix of the fixed effects."""
        names = self._coef_names
        return pd.DataFrame(self._vcov, index=names, columns=names)

    @cached_property
    def se(self) -> pd.Series:
        """Standard errors of the fixed effects."""
        return pd.Series(np.sqrt(np.diag(self._vcov)), index=self._coef_names, name="se")

    @property
    def loglik(self) -> float:
        """Maximised log-likelihood (the REML one for REML fits, as lme4)."""
        return self._loglik

    @property
    def warnings(self) -> list:
        """Warnings of the fit (rows dropped, singular fit, convergence, ...)."""
        return list(self._warnings)

    # -- fitted values and predictions ---------------------------------------------------

    def _row_index(self) -> pd.Index:
        """The data's row labels of the rows used (lme4 names fitted values and residuals by
        the data's row names), so that ``df["fit"] = fit.fitted()`` aligns by label after
        sorting or filtering; positions for data without labels (polars, dicts)."""
        labels = getattr(self.frame, "row_labels", None)  # None also for fits pickled before it
        if labels is not None and len(labels) == len(self._fitted):
            return pd.Index(labels)
        rows = getattr(self.frame, "rows", None)
        if rows is not None and len(rows) == len(self._fitted):
            return pd.Index(np.asarray(rows))
        return pd.RangeIndex(len(self._fitted))

    def fitted(self) -> pd.Series:
        """Fitted values (on the response scale) for the rows used, indexed by the data's
        row labels (its pandas index; positions for other data), as ``predict(df)``.

        >>> d = ml.datasets.load("sleepstudy").sort_values("Reaction")
        >>> f = ml.lmer("Reaction ~ Days + (Days | Subject)", d)
        >>> list(f.fitted().index) == list(d.index)
        True
        """
        if getattr(self.frame, "out_of_core", False):
            return self._chunked_values("fitted")
        return pd.Series(self._fitted, index=self._row_index(), name="fitted")

    def _chunked_values(self, what: str, kind: str = "response", scaled: bool = False) -> Any:
        """Fitted values or residuals of a fit to data read in chunks, computed in a pass over
        the data (the frame's ``row_series``: a pandas Series by position, or a lazy Dask
        Series for a Dask frame)."""
        sigma = getattr(self, "_sigma", None) if scaled else None
        return self.frame.row_series(self._beta, self._b, what, kind=kind, sigma=sigma)

    def predict(self, newdata: Any = None, *, re_form: str | None = None, allow_new_levels: bool = False,
                type: str = "link", interval: str | None = None,  # noqa: A002 - lme4's name
                level: float = 0.95) -> pd.Series | pd.DataFrame:  # pragma: no cover - overridden
        """Predictions for ``newdata`` (None: the fitting rows); every fit type takes these
        keywords (see the subclasses for what each means there)."""
        raise NotImplementedError

    @staticmethod
    def _check_predict_type(type: str) -> str:  # noqa: A002
        if type not in PREDICT_TYPES:
            raise ModelSpecError(f"type must be 'link' or 'response', not {type!r}")
        return type

    @staticmethod
    def _newdata_index(newdata: Any, n: int) -> pd.Index | None:
        return newdata.index if isinstance(newdata, pd.DataFrame) and len(newdata.index) == n else None

    # -- presentation --------------------------------------------------------------------

    def summary(self) -> Any:  # pragma: no cover - overridden (results.methods)
        raise NotImplementedError

    def save(self, path: Any) -> None:
        """Write the fit to the file ``path``; ``multilevel.load_fit(path)`` reads it back,
        and the reloaded fit prints, summarises and predicts as this one (a pickle: load only
        files you trust). See :mod:`multilevel.results.storage`."""
        from multilevel.results.storage import save_fit

        save_fit(self, path)

    def to_dict(self) -> dict:
        """All results as a JSON-serialisable dict (the field names of the lme4 reference
        JSON for mixed models; see :mod:`multilevel.results.export`)."""
        return to_dict(self)

    def __str__(self) -> str:
        return str(self.summary())

    def __repr__(self) -> str:
        return str(self.summary())

    def _repr_html_(self) -> str:
        return self.summary()._repr_html_()
