"""Families and links of generalized linear mixed models, as R's ``family`` objects.

The compiled engine (``multilevel._core.GlmmCore``) runs PIRLS with its own copy of these
formulas; the objects here serve Python: fitted values and predictions (``linkinv``),
residuals (``variance``, ``dev_resids``), the log-likelihood pieces reported with a fit
(``aic``: -2 log p(y | mu) with every constant, as R's ``family$aic`` without the parameter
term; ``saturated_loglik``) and input checks. Names and clamping follow lme4's C++ families
(``glmFamily.cpp``): the inverse logit and complementary log-log are kept inside
[eps, 1 - eps], the inverse log link and ``mu_eta`` above eps.

>>> fam = get_family("binomial", "probit")
>>> fam.name, fam.link.name, round(float(fam.linkinv(0.0)), 3)
('binomial', 'probit', 0.5)

Supported: ``binomial`` (links ``logit``, ``probit``, ``cloglog``; also ``log``) and
``poisson`` (``log``; also ``identity``, ``sqrt``). ``Gamma`` and ``inverse.gaussian``
(families with a dispersion parameter) are not supported: lme4 fits them by Laplace with
a scale parameter whose treatment we do not reproduce; they raise ``ModelSpecError``.
``gaussian`` belongs to :func:`multilevel.lmer`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from scipy import special

from multilevel.errors import ModelSpecError

__all__ = ["Link", "Family", "get_family", "binomial", "poisson", "LINKS"]

_EPS = float(np.finfo(float).eps)


@dataclass(frozen=True)
class Link:
    """A link function g with its inverse and derivative d mu / d eta."""

    name: str
    linkfun: Callable[[np.ndarray], np.ndarray]
    linkinv: Callable[[np.ndarray], np.ndarray]
    mu_eta: Callable[[np.ndarray], np.ndarray]

    def __repr__(self) -> str:
        return f"Link({self.name!r})"


def _logit_inv(eta):
    return np.clip(special.expit(eta), _EPS, 1.0 - _EPS)


def _logit_mueta(eta):
    e = np.exp(-np.abs(eta))
    return np.maximum(e / (1.0 + e) ** 2, _EPS)


def _probit_inv(eta):
    return np.minimum(special.ndtr(eta), 1.0 - _EPS)


def _probit_mueta(eta):
    return np.exp(-0.5 * np.square(eta)) / np.sqrt(2.0 * np.pi)


def _cloglog_inv(eta):
    return np.clip(-np.expm1(-np.exp(eta)), _EPS, 1.0 - _EPS)


def _cloglog_mueta(eta):
    eta = np.asarray(eta, dtype=float)
    return np.maximum(np.exp(eta - np.exp(eta)), _EPS)


LINKS: dict[str, Link] = {
    "logit": Link("logit", special.logit, _logit_inv, _logit_mueta),
    "probit": Link("probit", special.ndtri, _probit_inv, _probit_mueta),
    "cloglog": Link("cloglog", lambda mu: np.log(-np.log1p(-np.asarray(mu, float))), _cloglog_inv, _cloglog_mueta),
    "log": Link("log", np.log, lambda eta: np.maximum(np.exp(eta), _EPS), lambda eta: np.maximum(np.exp(eta), _EPS)),
    "identity": Link("identity", lambda mu: np.asarray(mu, float), lambda eta: np.asarray(eta, float),
                     lambda eta: np.ones_like(np.asarray(eta, float))),
    "sqrt": Link("sqrt", np.sqrt, lambda eta: np.square(eta), lambda eta: 2.0 * np.asarray(eta, float)),
}


def _ylogy(y, mu):
    """y * log(y / mu) with 0 at y = 0."""
    y = np.asarray(y, float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(y > 0, y * np.log(np.where(y > 0, y, 1.0) / mu), 0.0)


class Family:
    """A response distribution with a link (R's ``family`` object).

    name, link:     ``"binomial"`` / ``"poisson"`` and a :class:`Link`.
    variance(mu):   V(mu).
    dev_resids(y, mu, wt): squared deviance residuals (R's ``dev.resids``).
    aic(y, n, mu, wt): -2 log p(y | mu) summed over rows with every constant (R's
                    ``family$aic`` without ``+ 2 * rank``; binomial uses ``n`` trials as R).
    saturated_loglik(y, n, wt): log p(y | mu = y), the term lme4 leaves out of nAGQ > 1
                    log-likelihoods.
    """

    #: links the family accepts (first = canonical)
    links: tuple[str, ...] = ()

    def __init__(self, link: str | Link | None = None):
        if isinstance(link, Link):
            self.link = link
        else:
            name = self.links[0] if link is None else str(link)
            if name not in self.links:
                raise ModelSpecError(f"link '{name}' is not available for the {self.name} family "
                                     f"(use one of: {', '.join(self.links)})")
            self.link = LINKS[name]

    name = "family"

    @property
    def canonical(self) -> bool:
        return self.link.name == self.links[0]

    def linkfun(self, mu):
        return self.link.linkfun(mu)

    def linkinv(self, eta):
        return self.link.linkinv(np.asarray(eta, float))

    def mu_eta(self, eta):
        return self.link.mu_eta(np.asarray(eta, float))

    def variance(self, mu):  # pragma: no cover - overridden
        raise NotImplementedError

    def dev_resids(self, y, mu, wt):  # pragma: no cover - overridden
        raise NotImplementedError

    def aic(self, y, n, mu, wt) -> float:  # pragma: no cover - overridden
        raise NotImplementedError

    def saturated_loglik(self, y, n, wt) -> float:
        """log p(y | mu = y) (0 for Bernoulli data)."""
        # evaluated exactly at mu = y (0 log 0 = 0), not at lme4's clamped means
        return -0.5 * self._aic_at_saturated(np.asarray(y, float), n, wt)

    def _aic_at_saturated(self, y, n, wt):  # pragma: no cover - overridden
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"Family({self.name!r}, link={self.link.name!r})"

    def __eq__(self, other) -> bool:
        return isinstance(other, Family) and other.name == self.name and other.link.name == self.link.name

    def __hash__(self) -> int:
        return hash((self.name, self.link.name))


class binomial(Family):  # noqa: N801 - R's name
    """Binomial family: y a proportion (0/1 for Bernoulli rows), weights the trials."""

    name = "binomial"
    links = ("logit", "probit", "cloglog", "log")

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

    def aic(self, y, n, mu, wt) -> float:
        wt = np.asarray(wt, float)
        m = self._m(n, wt)
        yy = np.round(m * np.asarray(y, float))
        m = np.round(m)
        with np.errstate(divide="ignore", invalid="ignore"):
            fac = np.where(m > 0, wt / np.where(m > 0, m, 1.0), 0.0)
            from scipy.stats import binom

            lp = binom.logpmf(yy, m, np.asarray(mu, float))
        return float(-2.0 * np.sum(np.where(fac > 0, fac * lp, 0.0)))

    def _aic_at_saturated(self, y, n, wt):
        wt = np.asarray(wt, float)
        m = self._m(n, wt)
        yy = np.round(m * np.asarray(y, float))
        m = np.round(m)
        with np.errstate(divide="ignore", invalid="ignore"):
            fac = np.where(m > 0, wt / np.where(m > 0, m, 1.0), 0.0)
            p = np.where(m > 0, yy / np.where(m > 0, m, 1.0), 0.0)
            lp = (special.gammaln(m + 1) - special.gammaln(yy + 1) - special.gammaln(m - yy + 1)
                  + special.xlogy(yy, p) + special.xlog1py(m - yy, -p))
        return float(-2.0 * np.sum(np.where(fac > 0, fac * lp, 0.0)))


class poisson(Family):  # noqa: N801 - R's name
    """Poisson family: y non-negative integer counts."""

    name = "poisson"
    links = ("log", "identity", "sqrt")

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


_FAMILIES = {"binomial": binomial, "poisson": poisson}
_UNSUPPORTED = {
    "gaussian": "use multilevel.lmer for a gaussian (identity-link) model",
    "gamma": "the Gamma family (with its scale parameter) is not supported by glmer",
    "inverse.gaussian": "the inverse Gaussian family is not supported by glmer",
    "inverse_gaussian": "the inverse Gaussian family is not supported by glmer",
    "quasibinomial": "quasi-likelihood families are not supported (lme4 does not fit them either)",
    "quasipoisson": "quasi-likelihood families are not supported (lme4 does not fit them either)",
    "negative.binomial": "the negative binomial family is not supported",
}


def get_family(family: str | Family = "binomial", link: str | None = None) -> Family:
    """A :class:`Family` from a name (``"binomial"``, ``"poisson"``) and optional link, or
    the family object itself (then ``link``, if given, must agree with its link).

    >>> get_family("poisson")
    Family('poisson', link='log')
    """
    if isinstance(family, Family):
        if link is not None and str(link) != family.link.name:
            return type(family)(link)
        return family
    if isinstance(family, type) and issubclass(family, Family):
        return family(link)
    name = str(family).strip()
    key = name.lower()
    if key in _FAMILIES:
        return _FAMILIES[key](link)
    if key in _UNSUPPORTED:
        raise ModelSpecError(f"family '{name}' is not supported: {_UNSUPPORTED[key]}")
    raise ModelSpecError(f"unknown family '{name}'; glmer supports 'binomial' and 'poisson'")
