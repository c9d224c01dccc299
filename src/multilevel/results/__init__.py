"""The results layer: fitted models as plain data.

Layer: results (above engine). ``LmmFit``, ``GlmmFit`` and ``LmFit`` are siblings over
``FitBase`` (``LmmFit`` and ``GlmmFit`` over ``MixedFit``); they hold estimates and the
arrays needed to rebuild their engine problem, never run an optimiser and pickle. May import:
design, covariance, families, engine (to rebuild a problem lazily), errors, control.

The convenience methods on the fit objects (``fit.summary()``, ``fit.confint()``,
``fit.anova_terms()``, ...) do their work in the inference and report layers without
importing them: they call the functions the package's front registers in
:mod:`multilevel.results.methods`, so there is no upward import and no cycle.
"""
from multilevel.results.base import FitBase
from multilevel.results.glmm import GlmmFit
from multilevel.results.lm import LmFit
from multilevel.results.lmm import LmmFit
from multilevel.results.mixed import MixedFit, RandomEffects, VarCorr, VarCorrBlock

#: any fit object of the package, for type hints of functions that take one
AnyFit = LmmFit | GlmmFit | LmFit

__all__ = ["FitBase", "MixedFit", "LmmFit", "GlmmFit", "LmFit", "AnyFit", "VarCorr", "VarCorrBlock",
           "RandomEffects"]
