"""The results layer: fitted models as plain data.

Layer: results (above engine). ``LmmFit``, ``GlmmFit`` and ``LmFit`` are siblings over
``FitBase`` (``LmmFit`` and ``GlmmFit`` over ``MixedFit``); they hold estimates and the
arrays needed to rebuild their engine problem, never run an optimiser and pickle. May import:
design, covariance, families, engine (to rebuild a problem lazily), errors, control.

The only upward edges of the package are the convenience methods on the fit objects
(``fit.summary()``, ``fit.confint()``, ``fit.anova_terms()``, ...), which import the
inference and report layers inside the method body; they are gathered in
:mod:`multilevel.results.methods`.
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
