"""multilevel: multilevel (mixed-effects) models with lme4's formula language and numbers.

>>> import multilevel as ml
>>> fit = ml.lmer("Reaction ~ Days + (Days | Subject)", ml.datasets.load("sleepstudy"))
>>> round(fit.loglik, 3)
-871.814
"""
from __future__ import annotations

from multilevel.control import GlmerControl, LmerControl
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
from multilevel.models.glmer import glmer, glmer_nb
from multilevel.models.lmer import lmer
from multilevel.results.lm import LmFit
from multilevel.models.lm import lm
from multilevel.toolkit.describe import describe
from multilevel.toolkit.pooling import pooling, two_stage
from multilevel.toolkit.power import PowerDesign, power
from multilevel.inference import anova, icc, r2
from multilevel.report.tables import compare

# --- issue 10, course names (helper "out"): arm's display, Barron's variance explained,
# --- arm's se.ranef, saving fits. Kept in one block for the merge with lazy loading.
from multilevel.inference import variance_reduction
from multilevel.report.display import display
from multilevel.results.mixed import se_ranef
from multilevel.results.storage import load_fit
_COURSE_NAMES = ["display", "variance_reduction", "se_ranef", "load_fit"]
# --- end of the course names block

__all__ = [
    "lmer",
    "lm",
    "LmFit",
    "describe",
    "pooling",
    "two_stage",
    "power",
    "PowerDesign",
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
    *_COURSE_NAMES,
]

__version__ = "0.1.0"


def _wire_methods() -> None:
    """The fit objects' methods that reach up the layers (``fit.summary()``, ``fit.confint()``,
    ...) find their functions here, registered once at the top of the package, so that no
    module imports a layer above its own (see ``multilevel.results.methods``)."""
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


_wire_methods()


_LAZY = {"datasets": "multilevel.datasets", "plots": "multilevel.report.plots"}


def __getattr__(name: str):
    # datasets and plots (matplotlib) are imported on first use so that `import multilevel`
    # stays light
    if name in _LAZY:
        import importlib

        return importlib.import_module(_LAZY[name])
    raise AttributeError(f"module 'multilevel' has no attribute {name!r}")
