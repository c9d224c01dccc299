"""Inference for fitted mixed models: model comparison, denominator degrees of freedom,
confidence intervals, the parametric bootstrap and variance decompositions.

Layer: inference (above models and results). Reads fits through their public accessors and
the engine interface of :mod:`multilevel.inference._common` (set theta, evaluate, refit with a
new response). May import: design, covariance, families, engine, models, results, errors,
control. Never toolkit, report or app: the model tables (``compare``, ``display``) are
presentation and live in :mod:`multilevel.report.tables`.

============================  =============================================================
``anova(*fits)``              likelihood-ratio tests of nested models (lme4's ``anova``)
``coef_table(fit, ddf)``      t tests of the fixed effects: Satterthwaite (lmerTest),
                              Kenward-Roger (pbkrtest), residual df, or z tests
``anova_terms(fit, ddf)``     type III F tests of the model terms (lmerTest's ``anova(fit)``)
``confint(fit, method)``      Wald, profile-likelihood (lme4) or parametric-bootstrap intervals
``bootstrap(fit, n)``         parametric bootstrap replicates; ``simulate(fit, n)`` responses
``predict_interval``          confidence / prediction intervals for new data
``icc``, ``r2``               intraclass correlations, Nakagawa-Schielzeth R² (performance)
``variance_reduction``        proportional reduction of each variance component
``design_effect``             1 + (m - 1) ICC
============================  =============================================================
"""
from __future__ import annotations

from multilevel.inference.anova import anova, format_anova
from multilevel.inference.bootstrap import bootstrap, simulate
from multilevel.inference.confint import confint, profile, profile_sd
from multilevel.inference.ddf import anova_terms, coef_table, kenward_roger, satterthwaite
from multilevel.inference.confint import predict_interval
from multilevel.inference.variance import design_effect, icc, r2, variance_reduction

__all__ = [
    "anova",
    "format_anova",
    "coef_table",
    "anova_terms",
    "satterthwaite",
    "kenward_roger",
    "confint",
    "profile",
    "profile_sd",
    "bootstrap",
    "simulate",
    "predict_interval",
    "icc",
    "r2",
    "variance_reduction",
    "design_effect",
]
