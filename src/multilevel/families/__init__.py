"""Families of generalized linear mixed models, one module per family.

Layer: families (above design, beside covariance). A family object owns what is particular to
it: the response checks, variance, deviance residuals, aic, the saturated log-likelihood and
the code handed to the Rust kernel. May import: ``multilevel.errors``, numpy, scipy.
"""
from multilevel.families.base import _FAMILIES as _FAMILIES, LINKS, Family, Link, binomial, get_family, poisson

__all__ = ["Link", "Family", "get_family", "binomial", "poisson", "LINKS"]
