"""The Gamma family: positive continuous responses with Var(y) = phi mu^2.

Layer: families.

**lme4's convention** (what ``glmer(family=Gamma(link))`` reports, and what
``multilevel.glmer(family="Gamma")`` reproduces): PIRLS finds the conditional modes by
minimising the sum of unit deviances plus |u|^2, with no dispersion factor; the Laplace
criterion lme4 minimises over (theta, beta), and reports as -2 logLik, is R's
``Gamma()$aic`` at those modes with the dispersion phi = sum of unit deviances / sum(w)
(including R's "+ 2" for the dispersion parameter) + log det(Lambda' Z' W Z Lambda + I)
(Fisher weights) + |u|^2. After the fit lme4 reports ``sigma(fit)`` =
sqrt((Pearson chi-square + |u|^2) / n), a *different* estimate of sqrt(phi), and scales the
random-effect SDs of ``VarCorr`` by it (b = Lambda u in the criterion, but VarCorr shows
sigma Lambda); ``shape`` is 1 / sigma^2.

This is not the maximum-likelihood fit of the Gamma GLMM: glmmTMB maximises the Laplace
approximation of the likelihood with phi as a parameter (exact Hessian, the dispersion inside
the penalised deviance) and reports other numbers (Early, ``cog ~ age + trt + (1 | id)``,
Gamma(log): logLik -1194.44 in glmmTMB, -1146.56 in lme4; between-boy SD of height in Oxboys
7.90 against lme4's 3.32). We follow lme4, so that users can lay our numbers beside R's.

>>> import numpy as np
>>> fam = Gamma("log")
>>> fam.name, fam.link.name, float(fam.variance(np.array([2.0]))[0])
('Gamma', 'log', 4.0)
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from multilevel.errors import DataError, FitWarning
from multilevel.families.base import Family

__all__ = ["Gamma"]


class Gamma(Family):  # noqa: N801 - R's name
    """Gamma family (R's ``Gamma``): y > 0, V(mu) = mu^2, links ``inverse`` (canonical),
    ``log``, ``identity``. A dispersion family: see the module docstring for lme4's
    conventions."""

    name = "Gamma"
    aliases = ("gamma",)
    links = ("inverse", "log", "identity")
    has_dispersion = True

    def check_response(self, y: np.ndarray, weights: np.ndarray | None,
                       factor_levels: Sequence[str] | None, is_cbind: bool, *,
                       name: str = "y") -> list[FitWarning]:
        """Positive numbers (R: "non-positive values not allowed for the 'Gamma' family").

        >>> Gamma().check_response(np.array([0.5, 2.0]), None, None, False)
        []
        """
        _positive_response(self.name, y, factor_levels, is_cbind, name)
        return []

    def variance(self, mu):
        mu = np.asarray(mu, float)
        return mu * mu

    def dev_resids(self, y, mu, wt):
        y = np.asarray(y, float)
        mu = np.asarray(mu, float)
        # R: -2 * wt * (log(ifelse(y == 0, 1, y/mu)) - (y - mu)/mu)
        with np.errstate(divide="ignore", invalid="ignore"):
            return -2.0 * np.asarray(wt, float) * (np.log(np.where(y == 0, 1.0, y / mu)) - (y - mu) / mu)

    def aic(self, y, n, mu, wt) -> float:
        """R's ``Gamma()$aic`` with dev = the sum of deviance residuals at ``mu``: -2 sum w
        log dgamma(y; shape 1/phi, scale mu phi) + 2 with phi = dev / sum(w)."""
        wt = np.asarray(wt, float)
        disp = float(np.sum(self.dev_resids(y, mu, wt))) / float(np.sum(wt))
        from scipy import stats  # here: scipy.stats costs 0.4 s to import, aic is rarely needed

        lp = stats.gamma.logpdf(np.asarray(y, float), 1.0 / disp, scale=np.asarray(mu, float) * disp)
        return float(-2.0 * np.sum(lp * wt) + 2.0)

    def _aic_at_saturated(self, y, n, wt):
        raise NotImplementedError("the Gamma family has no saturated log-likelihood without a dispersion")

    def simulate(self, mu: np.ndarray, rng: np.random.Generator, *, sigma: float,
                 weights: np.ndarray | None = None) -> np.ndarray:
        """Draws with mean mu and shape 1 / sigma^2 (times the prior weights), as R's
        ``simulate`` for a Gamma fit (``rgamma(shape = w / phi, rate = w / (phi mu))``)."""
        mu = np.asarray(mu, float)
        w = np.ones_like(mu) if weights is None else np.asarray(weights, float)
        shape = w / sigma**2
        return rng.gamma(shape, mu / shape)

    def family_string(self) -> str:
        return "Gamma"


def _positive_response(fam: str, y, factor_levels, is_cbind, name: str) -> None:
    if factor_levels is not None or is_cbind:
        raise DataError(f"the {fam} response '{name}' must be positive numbers, not a factor or cbind()")
    y = np.asarray(y, dtype=float)
    bad = ~(y > 0)
    if bad.any():
        raise DataError(f"the {fam} response '{name}' must be positive; {int(bad.sum())} value(s) are "
                        f"zero or negative (R: non-positive values not allowed for the '{fam}' family)")
