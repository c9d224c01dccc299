"""The binomial family: 0/1 responses, proportions with trials as weights, cbind(s, f).

Layer: families.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy import special

from multilevel.errors import DataError, FitWarning
from multilevel.families.base import _EPS, Family, _ylogy

__all__ = ["binomial"]


class binomial(Family):  # noqa: N801 - R's name
    """Binomial family: y a proportion (0/1 for Bernoulli rows), weights the trials."""

    name = "binomial"
    links = ("logit", "probit", "cloglog", "log")

    def check_response(self, y: np.ndarray, weights: np.ndarray | None,
                       factor_levels: Sequence[str] | None, is_cbind: bool, *,
                       name: str = "y") -> list[FitWarning]:
        """0/1 (or a two-level factor) without weights; proportions with weights = trials;
        non-integer numbers of successes (weights * y) warn, as R's ``binomial()$initialize``.

        >>> binomial().check_response(np.array([0.5, 1.0]), np.array([3.0, 2.0]), None, False)
        ['non-integer #successes in a binomial glm!']
        """
        y = np.asarray(y, dtype=float)
        if ((y < 0) | (y > 1)).any():
            raise DataError(f"binomial response '{name}' must be 0/1, a proportion with "
                            f"weights = trials, a two-level factor or cbind(successes, failures)"
                            f"; it has values outside [0, 1]")
        levels = factor_levels
        if levels is not None and len(levels) > 2:
            raise DataError(f"the binomial response '{name}' is a factor with {len(levels)} "
                            f"levels ({', '.join(map(str, levels[:5]))}{', ...' if len(levels) > 5 else ''}); "
                            f"it must have two (the first is failure)")
        if not is_cbind and weights is None:
            bad = (y != 0) & (y != 1)
            if bad.any():
                raise DataError(f"the binomial response '{name}' must be 0/1 (or a two-level "
                                f"factor) when no weights are given; {int(bad.sum())} value(s) are "
                                f"proportions strictly between 0 and 1 -- give weights= (the number of "
                                f"trials) or use cbind(successes, failures)")
        elif weights is not None:
            # for cbind(s, f) the weights are the trials, so weights * y = s
            m = np.asarray(weights, dtype=float) * y
            if np.any(np.abs(m - np.round(m)) > 1e-3):
                return [FitWarning("non_integer_successes", "non-integer #successes in a binomial glm!")]
        return []

    def variance(self, mu):
        mu = np.asarray(mu, float)
        return np.maximum(mu * (1.0 - mu), _EPS)

    def dev_resids(self, y, mu, wt):
        y = np.asarray(y, float)
        return 2.0 * np.asarray(wt, float) * (_ylogy(y, mu) + _ylogy(1.0 - y, 1.0 - np.asarray(mu, float)))

    @staticmethod
    def _m(n, wt):
        n = np.asarray(n, float)
        return n if np.any(n > 1) else np.asarray(wt, float)

    def _counts(self, y, n, wt):
        """(successes, trials, weight per trial) as R's ``binomial()$aic`` rounds them."""
        wt = np.asarray(wt, float)
        m = self._m(n, wt)
        yy = np.round(m * np.asarray(y, float))
        m = np.round(m)
        with np.errstate(divide="ignore", invalid="ignore"):
            fac = np.where(m > 0, wt / np.where(m > 0, m, 1.0), 0.0)
        return yy, m, fac

    def aic(self, y, n, mu, wt) -> float:
        yy, m, fac = self._counts(y, n, wt)
        with np.errstate(divide="ignore", invalid="ignore"):
            from scipy.stats import binom

            lp = binom.logpmf(yy, m, np.asarray(mu, float))
        return float(-2.0 * np.sum(np.where(fac > 0, fac * lp, 0.0)))

    def _aic_at_saturated(self, y, n, wt):
        yy, m, fac = self._counts(y, n, wt)
        with np.errstate(divide="ignore", invalid="ignore"):
            p = np.where(m > 0, yy / np.where(m > 0, m, 1.0), 0.0)
            lp = (special.gammaln(m + 1) - special.gammaln(yy + 1) - special.gammaln(m - yy + 1)
                  + special.xlogy(yy, p) + special.xlog1py(m - yy, -p))
        return float(-2.0 * np.sum(np.where(fac > 0, fac * lp, 0.0)))
