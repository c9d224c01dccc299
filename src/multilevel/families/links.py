"""Link functions of generalized linear models (R's ``make.link``), with lme4's clamping.

Layer: families. Names and clamping follow lme4's C++ families (``glmFamily.cpp``): the
inverse logit and complementary log-log are kept inside [eps, 1 - eps], the inverse log link
and ``mu_eta`` above eps.

>>> float(LINKS["probit"].linkinv(0.0))
0.5
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from scipy import special

__all__ = ["Link", "LINKS"]

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

    def __reduce__(self):
        # the functions are module-level but some links are lambdas, which pickle cannot
        # store: a registered link pickles as its name and unpickles as the registered object
        if LINKS.get(self.name) is self:
            return (_registered_link, (self.name,))
        return super().__reduce__()


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
    # R's make.link: no clamps (lme4's glmFamily.cpp has none for these either)
    "inverse": Link("inverse", lambda mu: 1.0 / np.asarray(mu, float), lambda eta: 1.0 / np.asarray(eta, float),
                    lambda eta: -1.0 / np.square(np.asarray(eta, float))),
    "1/mu^2": Link("1/mu^2", lambda mu: 1.0 / np.square(np.asarray(mu, float)),
                   lambda eta: 1.0 / np.sqrt(np.asarray(eta, float)),
                   lambda eta: -1.0 / (2.0 * np.asarray(eta, float) ** 1.5)),
}


def _registered_link(name: str) -> Link:
    """The registered link of this name (the unpickling side of ``Link.__reduce__``)."""
    return LINKS[name]
