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
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from multilevel.results.base import FitBase
    from multilevel.results.glmm import GlmmFit
    from multilevel.results.lm import LmFit
    from multilevel.results.lmm import LmmFit
    from multilevel.results.mixed import MixedFit, RandomEffects, VarCorr, VarCorrBlock

__all__ = ["FitBase", "MixedFit", "LmmFit", "GlmmFit", "LmFit", "AnyFit", "VarCorr", "VarCorrBlock",
           "RandomEffects"]

#: name -> defining module. Imported on first access (PEP 562) so that importing
#: ``multilevel.results.methods`` -- which the package's front does -- loads no numpy or pandas.
_LAZY = {"FitBase": "base", "GlmmFit": "glmm", "LmFit": "lm", "LmmFit": "lmm", "MixedFit": "mixed",
         "RandomEffects": "mixed", "VarCorr": "mixed", "VarCorrBlock": "mixed"}


def __getattr__(name: str) -> Any:
    if name == "AnyFit":
        #: any fit object of the package, for type hints of functions that take one
        value: Any = __getattr__("LmmFit") | __getattr__("GlmmFit") | __getattr__("LmFit")
    elif name in _LAZY:
        value = getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
