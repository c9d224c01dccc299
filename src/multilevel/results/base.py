"""Small pieces the result classes share."""
from __future__ import annotations

import math


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
