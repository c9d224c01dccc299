"""multilevel: multilevel (mixed-effects) models with lme4's formula language and numbers.

>>> import multilevel as ml
>>> fit = ml.lmer("Reaction ~ Days + (Days | Subject)", ml.datasets.load("sleepstudy"))
>>> round(fit.loglik, 3)
-871.814
"""
from __future__ import annotations

from .errors import (
    ColumnNotFoundError,
    DataError,
    FitError,
    FormulaError,
    ModelSpecError,
    MultilevelError,
    MultilevelWarning,
)
from .glmm import glmer
from .lmm import lmer
from .lm import LmFit, lm
from .describe import describe
from .pooling import pooling, two_stage
from .inference import anova, compare, icc, r2

__all__ = [
    "lmer",
    "lm",
    "LmFit",
    "describe",
    "pooling",
    "two_stage",
    "glmer",
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
]

__version__ = "0.1.0"


def __getattr__(name: str):
    # datasets and plots (matplotlib) are imported on first use so that `import multilevel`
    # stays light
    if name in ("datasets", "plots"):
        import importlib

        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'multilevel' has no attribute {name!r}")
