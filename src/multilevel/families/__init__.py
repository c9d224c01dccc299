"""Families of generalized linear mixed models, one module per family.

Layer: families (above design, beside covariance). A family object owns what is particular to
it: the response checks, variance, deviance residuals, aic, the saturated log-likelihood and
the code handed to the Rust kernel. May import: ``multilevel.errors``, numpy, scipy.

- ``links``: :class:`Link` and ``LINKS`` (the link functions).
- ``base``: :class:`Family` (the base class), ``get_family`` and the registry ``_FAMILIES``.
- ``binomial``, ``poisson``, ``gamma`` (``Gamma``), ``inverse_gaussian``,
  ``negative_binomial`` (with MASS's ``theta_ml``): one family each.
"""
from multilevel.families.base import _FAMILIES as _FAMILIES, Family, get_family, register
from multilevel.families.binomial import binomial
from multilevel.families.links import LINKS, Link
from multilevel.families.poisson import poisson
from multilevel.families.gamma import Gamma
from multilevel.families.inverse_gaussian import inverse_gaussian
from multilevel.families.negative_binomial import negative_binomial, theta_ml

# the registry: one line per family (name -> class, see CONTRIBUTING.md)
register(binomial)
register(poisson)
register(Gamma)
register(inverse_gaussian)
register(negative_binomial)

__all__ = ["Link", "Family", "get_family", "binomial", "poisson", "Gamma", "inverse_gaussian",
           "negative_binomial", "theta_ml", "LINKS"]
