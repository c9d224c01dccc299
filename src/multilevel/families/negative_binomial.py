"""The negative binomial family (MASS's ``negative.binomial(theta)``) and glmer.nb's start
for theta.

Layer: families. Var(y) = mu + mu^2 / theta. For a given theta it is an ordinary
one-parameter family: lme4's criterion is -2 sum w log dnbinom(y; size = theta, mu) (MASS's
``aic``, no "+ 2") + log det(Lambda' Z' W Z Lambda + I) with the Fisher weights of the
non-canonical log link + |u|^2. ``glmer(..., family="negative.binomial")`` without a theta
estimates it as ``glmer.nb`` does: a Poisson fit, MASS's ``theta.ml`` at its fitted means
(:func:`theta_ml`) for the start, then a one-dimensional minimisation of -2 logLik over
log(theta) on log(start) +- 3 with a GLMM fit at each theta (see ``models/glmer_nb.py``).
``sigma`` is 1; the logLik's degrees of freedom count theta.

>>> fam = negative_binomial(theta=3.30344)
>>> fam.family_string()
'Negative Binomial(3.3034)'
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy import special

from multilevel.errors import DataError, FitWarning, ModelSpecError
from multilevel.families.base import Family, _ylogy, check_counts
from multilevel.families.links import Link

__all__ = ["negative_binomial", "theta_ml"]


class negative_binomial(Family):  # noqa: N801 - R's name (negative.binomial)
    """Negative binomial family with parameter ``theta`` (None: to be estimated by
    ``glmer``, as ``glmer.nb``); log link."""

    name = "negative.binomial"
    aliases = ("negative_binomial", "nb", "glmer.nb")
    links = ("log",)

    def __init__(self, link: str | Link | None = None, theta: float | None = None):
        super().__init__(link)
        if theta is not None:
            try:
                theta = float(theta)
            except (TypeError, ValueError) as e:
                raise ModelSpecError(f"nb_theta must be a positive number, not {theta!r}") from e
            if not (np.isfinite(theta) and theta > 0):
                raise ModelSpecError(f"nb_theta must be a positive, finite number, not {theta!r}")
        self.theta = theta

    @property
    def param(self) -> float | None:
        return self.theta

    def with_theta(self, theta: float) -> "negative_binomial":
        return negative_binomial(self.link, theta)

    def _theta(self) -> float:
        if self.theta is None:
            raise ModelSpecError("the negative binomial family needs theta here (nb_theta=...)")
        return self.theta

    def check_response(self, y: np.ndarray, weights: np.ndarray | None,
                       factor_levels: Sequence[str] | None, is_cbind: bool, *,
                       name: str = "y") -> list[FitWarning]:
        """Non-negative integer counts.

        >>> negative_binomial(theta=1.0).check_response(np.array([0.0, 3.0]), None, None, False)
        []
        """
        if factor_levels is not None or is_cbind:
            raise DataError(f"the negative binomial response '{name}' must be counts, not a factor or cbind()")
        check_counts(y, name, "negative binomial")
        return []

    def variance(self, mu):
        mu = np.asarray(mu, float)
        return mu + mu * mu / self._theta()

    def dev_resids(self, y, mu, wt):
        th = self._theta()
        y = np.asarray(y, float)
        mu = np.asarray(mu, float)
        return 2.0 * np.asarray(wt, float) * (_ylogy(y, mu) - (y + th) * np.log((y + th) / (mu + th)))

    def aic(self, y, n, mu, wt) -> float:
        """MASS's ``negative.binomial(theta)$aic``: -2 sum w log dnbinom(y; theta, mu)."""
        th = self._theta()
        y = np.asarray(y, float)
        mu = np.asarray(mu, float)
        term = ((y + th) * np.log(mu + th) - special.xlogy(y, mu) + special.gammaln(y + 1)
                - th * np.log(th) + special.gammaln(th) - special.gammaln(th + y))
        return float(2.0 * np.sum(term * np.asarray(wt, float)))

    def _aic_at_saturated(self, y, n, wt):
        return self.aic(y, n, np.asarray(y, float), wt)

    def simulate(self, mu: np.ndarray, rng: np.random.Generator, *, sigma: float = 1.0,
                 weights: np.ndarray | None = None) -> np.ndarray:
        """Negative binomial draws with mean mu and size theta (MASS's ``rnegbin``)."""
        th = self._theta()
        mu = np.asarray(mu, float)
        return rng.negative_binomial(th, th / (th + mu)).astype(float)

    def family_string(self) -> str:
        """R's family name, ``Negative Binomial(3.3034)`` (theta rounded to 4 decimals)."""
        th = self._theta()
        return f"Negative Binomial({float('%.7g' % round(th, 4)):g})" if th < 1e6 else f"Negative Binomial({th:.7g})"

    def __repr__(self) -> str:
        return f"Family({self.name!r}, link={self.link.name!r}, theta={self.theta!r})"

    def __eq__(self, other) -> bool:
        return super().__eq__(other) and getattr(other, "theta", None) == self.theta

    def __hash__(self) -> int:
        return hash((self.name, self.link.name, self.theta))


def theta_ml(y: np.ndarray, mu: np.ndarray, weights: np.ndarray | None = None, *,
             limit: int = 20, eps: float = 1e-4) -> float:
    """Maximum-likelihood theta of a negative binomial with known means (MASS's
    ``theta.ml``): Newton's method on the score from the moment start
    n / sum(w (y / mu - 1)^2); glmer.nb calls it with limit 20, eps 2 * 5e-5.

    >>> round(theta_ml(np.array([0., 2, 5, 1, 9, 3]), np.full(6, 10 / 3)), 4)
    1.8783
    """
    y = np.asarray(y, float)
    mu = np.asarray(mu, float)
    w = np.ones_like(y) if weights is None else np.asarray(weights, float)
    n = float(np.sum(w))
    t0 = n / float(np.sum(w * (y / mu - 1.0) ** 2))
    it, delta = 0, 1.0
    while True:
        it += 1
        if not (it < limit and abs(delta) > eps):
            break
        t0 = abs(t0)
        score = np.sum(w * (special.digamma(t0 + y) - special.digamma(t0) + np.log(t0) + 1.0
                            - np.log(t0 + mu) - (y + t0) / (mu + t0)))
        info = np.sum(w * (-special.polygamma(1, t0 + y) + special.polygamma(1, t0) - 1.0 / t0
                           + 2.0 / (mu + t0) - (y + t0) / (mu + t0) ** 2))
        delta = float(score / info)
        t0 = t0 + delta
    return max(float(t0), 0.0)
