"""multilevel: multilevel (mixed-effects) models with lme4's formula language and numbers.

>>> import multilevel as ml
>>> fit = ml.lmer("Reaction ~ Days + (Days | Subject)", ml.datasets.load("sleepstudy"))
>>> round(fit.loglik, 3)
-871.814

``import multilevel`` is cheap: it loads only the error classes and this table of names. Each
public name (``ml.lmer``, ``from multilevel import anova``) imports its module on first use
(PEP 562 module ``__getattr__``), so the command line answers ``--help`` without loading
numpy, pandas, scipy, formulaic or matplotlib, and a script pays only for what it uses.
"""
from __future__ import annotations

import importlib
import importlib.util
from typing import TYPE_CHECKING, Any

from multilevel.errors import (
    ColumnNotFoundError,
    ControlError,
    ConvergenceWarning,
    DataError,
    FitError,
    FitWarning,
    FormulaError,
    ModelSpecError,
    MultilevelError,
    MultilevelWarning,
    RankDeficientWarning,
    RowsDroppedWarning,
    SingularFitWarning,
)
from multilevel.results.methods import provide_loader

if TYPE_CHECKING:  # the names __getattr__ resolves, for type checkers and editors
    from multilevel.control import GlmerControl, LmerControl
    from multilevel.inference import anova, icc, r2
    from multilevel.models.glmer import glmer, glmer_nb
    from multilevel.models.lm import lm
    from multilevel.models.lmer import lmer
    from multilevel.report.tables import compare
    from multilevel.results.lm import LmFit
    from multilevel.toolkit.describe import describe
    from multilevel.toolkit.pooling import pooling, two_stage
    from multilevel.toolkit.power import PowerDesign, power
    from multilevel.inference import variance_reduction
    from multilevel.report.display import display
    from multilevel.results.mixed import se_ranef
    from multilevel.results.storage import load_fit

__all__ = [
    "lmer",
    "lm",
    "LmFit",
    "describe",
    "pooling",
    "two_stage",
    "power",
    "PowerDesign",
    "display",
    "variance_reduction",
    "se_ranef",
    "load_fit",
    "glmer",
    "glmer_nb",
    "anova",
    "compare",
    "icc",
    "r2",
    "MultilevelError",
    "FormulaError",
    "ColumnNotFoundError",
    "DataError",
    "ModelSpecError",
    "FitError",
    "MultilevelWarning",
    "ControlError",
    "FitWarning",
    "SingularFitWarning",
    "ConvergenceWarning",
    "RowsDroppedWarning",
    "RankDeficientWarning",
    "LmerControl",
    "GlmerControl",
    "explore",
]

__version__ = "0.1.0"

#: public name -> the module that defines it, imported on first access
_LAZY: dict[str, str] = {
    "lmer": "multilevel.models.lmer",
    "glmer": "multilevel.models.glmer",
    "glmer_nb": "multilevel.models.glmer",
    "lm": "multilevel.models.lm",
    "LmFit": "multilevel.results.lm",
    "describe": "multilevel.toolkit.describe",
    "pooling": "multilevel.toolkit.pooling",
    "two_stage": "multilevel.toolkit.pooling",
    "power": "multilevel.toolkit.power",
    "PowerDesign": "multilevel.toolkit.power",
    "display": "multilevel.report.display",
    "variance_reduction": "multilevel.inference",
    "se_ranef": "multilevel.results.mixed",
    "load_fit": "multilevel.results.storage",
    "anova": "multilevel.inference",
    "icc": "multilevel.inference",
    "r2": "multilevel.inference",
    "compare": "multilevel.report.tables",
    "LmerControl": "multilevel.control",
    "GlmerControl": "multilevel.control",
    # the one name of the app layer the front offers (the explorer, a local web app): the
    # only entry above the front, resolved on first access, never by `import multilevel`
    # (tests/test_layers.py checks that no other entry points up)
    "explore": "multilevel.app.explore",
}
#: attributes that are modules: ``ml.datasets.load``, ``ml.plots`` (matplotlib)
_LAZY_MODULES: dict[str, str] = {"datasets": "multilevel.datasets", "plots": "multilevel.plots"}


def _wire_methods() -> None:
    """The fit objects' methods that reach up the layers (``fit.summary()``, ``fit.confint()``,
    ...) find their functions here, registered at the top of the package, so that no module
    imports a layer above its own (see ``multilevel.results.methods``). It runs the first
    time such a method is called (``provide_loader`` below), not at ``import multilevel``:
    inference and report load scipy."""
    from multilevel import inference
    from multilevel.models.glmer import refit_response
    from multilevel.report.glmm_summary import GlmmSummary
    from multilevel.report.lm_summary import LmSummary
    from multilevel.report.summary import Summary, varcorr_lines
    from multilevel.report.anova_table import anova_html, anova_text
    from multilevel.results.methods import provide

    provide(coef_table=inference.coef_table, anova_terms=inference.anova_terms,
            confint=inference.confint, bootstrap=inference.bootstrap, simulate=inference.simulate,
            predict_interval=inference.predict_interval, Summary=Summary, GlmmSummary=GlmmSummary,
            LmSummary=LmSummary, varcorr_lines=varcorr_lines, refit_response=refit_response,
            anova_text=anova_text, anova_html=anova_html)


provide_loader(_wire_methods)


def __getattr__(name: str) -> Any:
    """Import a public name's module on first access and keep the name (PEP 562)."""
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
    elif name in _LAZY_MODULES:
        value = importlib.import_module(_LAZY_MODULES[name])
    elif not name.startswith("_") and importlib.util.find_spec(f"{__name__}.{name}") is not None:
        # a subpackage (ml.inference, ml.report, ...): what `import multilevel` used to load
        value = importlib.import_module(f"{__name__}.{name}")
    else:
        raise AttributeError(f"module 'multilevel' has no attribute {name!r}")
    globals()[name] = value  # later accesses skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__) | set(_LAZY_MODULES))
