"""The inverse Gaussian family: positive continuous responses with Var(y) = phi mu^3.

Layer: families. lme4's conventions are those of the Gamma family (see
``families/gamma.py``): the criterion is R's ``inverse.gaussian()$aic`` at the conditional
modes with phi = sum of unit deviances / sum(w) (+ 2), + log det + |u|^2; ``sigma(fit)`` =
sqrt((Pearson chi-square + |u|^2) / n) is computed after the fit and scales the SDs of
``VarCorr``. glmmTMB 1.1.5 has no inverse Gaussian family to compare with.

>>> inverse_gaussian().link.name
'1/mu^2'
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from multilevel.errors import FitWarning
from multilevel.families.base import Family
from multilevel.families.gamma import _positive_response

__all__ = ["inverse_gaussian"]


class inverse_gaussian(Family):  # noqa: N801 - R's name (inverse.gaussian)
    """Inverse Gaussian family (R's ``inverse.gaussian``): y > 0, V(mu) = mu^3, links
    ``1/mu^2`` (canonical), ``inverse``, ``log``, ``identity``."""

    name = "inverse.gaussian"
    aliases = ("inverse_gaussian",)
    links = ("1/mu^2", "inverse", "log", "identity")
    has_dispersion = True

    def check_response(self, y: np.ndarray, weights: np.ndarray | None,
                       factor_levels: Sequence[str] | None, is_cbind: bool, *,
                       name: str = "y") -> list[FitWarning]:
        """Positive numbers.

        >>> inverse_gaussian().check_response(np.array([0.5, 2.0]), None, None, False)
        []
        """
        _positive_response(self.name, y, factor_levels, is_cbind, name)
        return []

    def variance(self, mu):
        mu = np.asarray(mu, float)
        return mu**3

    def dev_resids(self, y, mu, wt):
        y = np.asarray(y, float)
        mu = np.asarray(mu, float)
        return np.asarray(wt, float) * ((y - mu) ** 2) / (y * mu**2)

    def aic(self, y, n, mu, wt) -> float:
        """R's ``inverse.gaussian()$aic``: sum(w) (log(2 pi phi) + 1) + 3 sum(w log y) + 2,
        phi = sum of deviance residuals / sum(w)."""
        wt = np.asarray(wt, float)
        sw = float(np.sum(wt))
        disp = float(np.sum(self.dev_resids(y, mu, wt))) / sw
        return float(sw * (np.log(disp * 2.0 * np.pi) + 1.0) + 3.0 * np.sum(np.log(np.asarray(y, float)) * wt) + 2.0)

    def _aic_at_saturated(self, y, n, wt):
        raise NotImplementedError("the inverse Gaussian family has no saturated log-likelihood without a dispersion")

    def simulate(self, mu: np.ndarray, rng: np.random.Generator, *, sigma: float,
                 weights: np.ndarray | None = None) -> np.ndarray:
        """Draws with mean mu and dispersion sigma^2 / w (R's ``SuppDists::rinvGauss(nu = mu,
        lambda = w / phi)``): numpy's Wald distribution with scale lambda."""
        mu = np.asarray(mu, float)
        w = np.ones_like(mu) if weights is None else np.asarray(weights, float)
        return rng.wald(mu, w / sigma**2)

    def family_string(self) -> str:
        return "inverse.gaussian"
