"""Families of generalized linear mixed models, as R's ``family`` objects: the base class
and the registry.

The compiled engine (``multilevel._core.GlmmCore``) runs PIRLS with its own copy of the
formulas; the objects here serve Python: the response checks (``check_response``), fitted
values and predictions (``linkinv``), residuals (``variance``, ``dev_resids``), the
log-likelihood pieces reported with a fit (``aic``: -2 log p(y | mu) with every constant, as
R's ``family$aic`` without the parameter term; ``saturated_loglik``).

>>> fam = get_family("binomial", "probit")
>>> fam.name, fam.link.name, round(float(fam.linkinv(0.0)), 3)
('binomial', 'probit', 0.5)

Supported: ``binomial`` (links ``logit``, ``probit``, ``cloglog``; also ``log``),
``poisson`` (``log``; also ``identity``, ``sqrt``), ``Gamma`` (``inverse``, ``log``,
``identity``), ``inverse.gaussian`` (``1/mu^2``, ``inverse``, ``log``, ``identity``) and
``negative.binomial`` (``log``; its ``theta`` fixed or estimated as ``glmer.nb`` does), one
module each, named as R spells them with snake_case aliases (``"gamma"``,
``"inverse_gaussian"``, ``"negative_binomial"``). The dispersion families (Gamma, inverse
Gaussian: ``has_dispersion``) follow lme4's conventions, described in ``families/gamma.py``.
``gaussian`` belongs to :func:`multilevel.lmer`.

Adding a family: see CONTRIBUTING.md (a module beside binomial.py, one line in
``families/__init__.py``'s registry).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from multilevel.errors import DataError, FitWarning, ModelSpecError
from multilevel.families.links import LINKS, Link

__all__ = ["Family", "get_family", "register", "_FAMILIES"]

_EPS = float(np.finfo(float).eps)


def _ylogy(y, mu):
    """y * log(y / mu) with 0 at y = 0."""
    y = np.asarray(y, float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(y > 0, y * np.log(np.where(y > 0, y, 1.0) / mu), 0.0)


def check_counts(y, name: str, family: str) -> None:
    """Raise ``DataError`` unless ``y`` holds non-negative integers (Poisson and negative
    binomial responses)."""
    y = np.asarray(y, dtype=float)
    if np.any(y < 0):
        raise DataError(f"the {family} response '{name}' has negative values")
    nonint = np.abs(y - np.round(y)) > 1e-7
    if nonint.any():
        raise DataError(f"the {family} response '{name}' must be counts; "
                        f"{int(nonint.sum())} value(s) are not integers")


class Family:
    """A response distribution with a link (R's ``family`` object).

    name, link:     ``"binomial"`` / ``"poisson"`` and a :class:`Link`.
    check_response(y, weights, factor_levels, is_cbind): the family's rules for the
                    response: raises ``DataError``, returns warning records.
    variance(mu):   V(mu).
    dev_resids(y, mu, wt): squared deviance residuals (R's ``dev.resids``).
    aic(y, n, mu, wt): -2 log p(y | mu) summed over rows with every constant (R's
                    ``family$aic`` without ``+ 2 * rank``; binomial uses ``n`` trials as R).
    saturated_loglik(y, n, wt): log p(y | mu = y), the term lme4 leaves out of nAGQ > 1
                    log-likelihoods.
    """

    #: links the family accepts (first = canonical)
    links: tuple[str, ...] = ()
    #: other names ``get_family`` accepts (snake_case spellings of R's names)
    aliases: tuple[str, ...] = ()
    #: a dispersion parameter reported as lme4's sigma (Gamma, inverse Gaussian)
    has_dispersion: bool = False
    #: the family's parameter handed to the engine (the negative binomial's theta)
    param: float | None = None

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

    def check_response(self, y: np.ndarray, weights: np.ndarray | None,
                       factor_levels: Sequence[str] | None, is_cbind: bool, *,
                       name: str = "y") -> list[FitWarning]:
        """lme4's rules for this family's response, with clear errors: raises
        :class:`~multilevel.errors.DataError` for values the family cannot take and returns
        the warning records for values it accepts with a warning.

        ``y`` is the response as the model frame reads it (a factor response as 0/1 with its
        ``factor_levels``, ``cbind(s, f)`` as proportions with the trials in ``weights``),
        ``name`` its label in messages. The base class accepts any finite response.
        """
        return []

    def family_string(self) -> str:
        """R's ``family(fit)$family`` (``"Negative Binomial(3.3034)"`` for glmer.nb)."""
        return self.name

    def simulate(self, mu: np.ndarray, rng: np.random.Generator, *, sigma: float = 1.0,
                 weights: np.ndarray | None = None) -> np.ndarray:
        """Responses drawn from the family at means ``mu`` (``sigma``: lme4's sigma of the
        dispersion families)."""
        raise NotImplementedError(f"simulate() is not available for the {self.name} family")

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


#: family name -> class; filled by :func:`register` in ``families/__init__.py``
_FAMILIES: dict[str, type[Family]] = {}


def register(cls: type[Family]) -> type[Family]:
    """Add a family class to the registry under its ``name`` (what ``get_family`` and
    ``glmer(family=...)`` accept; its ``aliases`` too)."""
    _FAMILIES[cls.name] = cls
    for a in cls.aliases:
        _ALIASES[a.lower()] = cls.name
    _ALIASES[cls.name.lower()] = cls.name
    return cls


#: lower-case name or alias -> registered name
_ALIASES: dict[str, str] = {}


_UNSUPPORTED = {
    "gaussian": "use multilevel.lmer for a gaussian (identity-link) model",
    "quasibinomial": "quasi-likelihood families are not supported (lme4 does not fit them either)",
    "quasipoisson": "quasi-likelihood families are not supported (lme4 does not fit them either)",
}


def get_family(family: str | Family = "binomial", link: str | None = None, **params) -> Family:
    """A :class:`Family` from a name (``"binomial"``, ``"poisson"``, ``"Gamma"``,
    ``"inverse.gaussian"``, ``"negative.binomial"`` or a snake_case alias) and optional link,
    or the family object itself (then ``link``, if given, must agree with its link).
    ``params``: the family's parameters (``theta`` of the negative binomial).

    >>> get_family("poisson")
    Family('poisson', link='log')
    >>> get_family("gamma", "log")
    Family('Gamma', link='log')
    """
    if isinstance(family, Family):
        if link is not None and str(link) != family.link.name:
            kw = {"theta": family.param} if family.param is not None else {}
            return type(family)(link, **kw)
        return family
    if isinstance(family, type) and issubclass(family, Family):
        return family(link, **params)
    name = str(family).strip()
    key = name.lower()
    if key in _ALIASES:
        return _FAMILIES[_ALIASES[key]](link, **params)
    if key in _UNSUPPORTED:
        raise ModelSpecError(f"family '{name}' is not supported: {_UNSUPPORTED[key]}")
    raise ModelSpecError(f"unknown family '{name}'; glmer supports "
                         f"{', '.join(repr(n) for n in _FAMILIES)}")
