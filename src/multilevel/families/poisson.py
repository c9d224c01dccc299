"""The Poisson family: non-negative integer counts.

Layer: families.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy import special

from multilevel.errors import FitWarning
from multilevel.families.base import Family, _ylogy, check_counts

__all__ = ["poisson"]


class poisson(Family):  # noqa: N801 - R's name
    """Poisson family: y non-negative integer counts."""

    name = "poisson"
    links = ("log", "identity", "sqrt")

    def check_response(self, y: np.ndarray, weights: np.ndarray | None,
                       factor_levels: Sequence[str] | None, is_cbind: bool, *,
                       name: str = "y") -> list[FitWarning]:
        """Non-negative integer counts; anything else is an error (lme4 only warns about
        non-integer counts, and then fits a likelihood that is not one).

        >>> poisson().check_response(np.array([0.0, 3.0]), None, None, False)
        []
        """
        check_counts(y, name, "Poisson")
        return []

    def variance(self, mu):
        return np.asarray(mu, float)

    def dev_resids(self, y, mu, wt):
        y = np.asarray(y, float)
        mu = np.asarray(mu, float)
        return 2.0 * np.asarray(wt, float) * (_ylogy(y, mu) - (y - mu))

    def aic(self, y, n, mu, wt) -> float:
        y = np.asarray(y, float)
        mu = np.asarray(mu, float)
        lp = special.xlogy(y, mu) - mu - special.gammaln(y + 1)
        return float(-2.0 * np.sum(np.asarray(wt, float) * lp))

    def _aic_at_saturated(self, y, n, wt):
        y = np.asarray(y, float)
        lp = special.xlogy(y, y) - y - special.gammaln(y + 1)
        return float(-2.0 * np.sum(np.asarray(wt, float) * lp))
