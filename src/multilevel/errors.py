"""Errors and warnings raised by multilevel.

Every error a user can trigger with bad input is a subclass of :class:`MultilevelError`,
so ``except multilevel.MultilevelError`` catches them all; each also derives from the
built-in exception a Python user would expect (``ValueError``, ``KeyError``).
"""
from __future__ import annotations


class MultilevelError(Exception):
    """Base class of every error raised by multilevel for bad input or a failed fit."""


class FormulaError(MultilevelError, ValueError):
    """A formula that does not parse or cannot be used.

    ``position`` is the 0-based character offset of the problem in ``formula`` (or None);
    the message shows the formula with a caret under that position.
    """

    def __init__(self, message: str, formula: str | None = None, position: int | None = None):
        self.formula = formula
        self.position = position
        if formula is not None and position is not None:
            message = f"{message}\n  {formula}\n  {' ' * position}^"
        super().__init__(message)


class ColumnNotFoundError(MultilevelError, KeyError):
    """A formula, weights or offset names a column the data does not have."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class DataError(MultilevelError, ValueError):
    """The data cannot be used as given (non-numeric response, no rows left, ...)."""


class ModelSpecError(MultilevelError, ValueError):
    """The model cannot be estimated from these data (one-level grouping factor,
    more random effects than observations, nagq > 1 with vector-valued terms, ...)."""


class FitError(MultilevelError, RuntimeError):
    """The optimiser failed in a way that leaves no usable estimate."""


class ArgumentError(MultilevelError, TypeError):
    """A function was called with a keyword argument it does not take (``REML=`` is
    accepted as R's spelling of ``reml=``; a typo is named, with the nearest argument)."""


class MissingDependencyError(MultilevelError, ImportError):
    """An optional package that this input needs is not installed (pyarrow for Parquet and
    Feather files, pyreadstat for SPSS and Stata files); the message says what to install."""


class ControlError(ModelSpecError):
    """A ``control=`` setting that is unknown or has a value the fit cannot use.

    ``argument`` is the name of the setting (``"maxeval"``, ``"check_conv"``, ...). A subclass
    of :class:`ModelSpecError` (and so of ``ValueError``): code that caught the error of an
    unknown control setting as a ``ModelSpecError`` keeps working.

    >>> str(ControlError("maxeval", "a", "a positive integer"))
    "control setting maxeval='a' is not valid: it must be a positive integer"
    """

    def __init__(self, argument: str, value: object = None, expected: str | None = None,
                 message: str | None = None):
        self.argument = argument
        self.value = value
        if message is None:
            message = f"control setting {argument}={value!r} is not valid: it must be {expected}"
        super().__init__(message)


class CovarianceStructureError(FormulaError, ModelSpecError):
    """A covariance structure used where it cannot be: an unknown name (``toep(x | g)``),
    ``cs()`` / ``ar1()`` around anything but one ``(x | g)`` term, a structure in the fixed
    part. Both a :class:`FormulaError` (with the position in the formula) and a
    :class:`ModelSpecError`, like the errors of structures that do not fit their columns."""


# ============================================================================================
# warnings: one class per code, and the record a fit keeps
# ============================================================================================

class MultilevelWarning(UserWarning):
    """Warnings about a fit (singular, not converged, rows or columns dropped).

    Each kind has its own subclass (``SingularFitWarning``, ``ConvergenceWarning``, ...), so
    ``warnings.simplefilter("ignore", multilevel.errors.RowsDroppedWarning)`` silences one
    kind only. The same messages are kept on the result (``fit.warnings``, as
    :class:`FitWarning` records) and shown in its summary.
    """

    #: the code of the :class:`FitWarning` records issued as this class
    code = "other"


class SingularFitWarning(MultilevelWarning):
    """A boundary (singular) fit: a variance estimated as 0 or a correlation as +-1.

    The estimated covariance matrix of some random-effect term is singular: a diagonal
    element of its relative Cholesky factor Λ is below the fit's ``singular_tol`` (lme4's
    ``isSingular``, tolerance 1e-4; ``fit.is_singular`` says so). This is common with few
    groups or small variances and is not a failure of the optimiser: the likelihood is at
    its maximum on the boundary. The model is over-fitted for these data; usual remedies
    (as lme4's documentation suggests) are a simpler random-effects structure, e.g. dropping
    a slope's variance or its correlation (``(x || g)``), or a Bayesian / penalised fit.
    Inference that assumes an interior optimum (profiles, Satterthwaite's df, LRTs of the
    component) is at the edge of its validity.

    ``warnings.filterwarnings("ignore", category=ml.SingularFitWarning)`` silences it; the
    record stays in ``fit.warnings``; ``control={"check_singular": "error"}`` makes it an
    error.

    >>> import multilevel as ml, warnings
    >>> with warnings.catch_warnings():
    ...     warnings.simplefilter("ignore", ml.SingularFitWarning)
    ...     fit = ml.lmer("Yield ~ 1 + (1 | Batch)", ml.datasets.load("Dyestuff2"))
    >>> fit.is_singular, fit.warnings[0].code
    (True, 'singular')
    """

    code = "singular"


class ConvergenceWarning(MultilevelWarning):
    """The optimiser may have stopped short of the optimum (the Newton-decrement check)."""

    code = "not_converged"


class MaxevalWarning(ConvergenceWarning):
    """The optimiser stopped at its evaluation limit (``control={"maxeval": ...}``)."""

    code = "maxeval"


class RowsDroppedWarning(MultilevelWarning):
    """Rows with missing values in a variable of the model were left out."""

    code = "rows_dropped"


class RankDeficientWarning(MultilevelWarning):
    """Columns of the fixed-effect model matrix that are linear combinations of others were
    dropped."""

    code = "rank_deficient"


class NonIntegerResponseWarning(MultilevelWarning):
    """A binomial response whose numbers of successes are not whole numbers."""

    code = "non_integer_successes"


class HessianWarning(MultilevelWarning):
    """The finite-difference Hessian of a GLMM is not positive definite: the covariance of
    the fixed effects comes from the PIRLS factor instead."""

    code = "hessian_not_pd"


class PerfectFitWarning(MultilevelWarning):
    """The response is an exact linear function of the fixed effects (a constant response,
    as many estimable fixed effects as rows): zero residuals, sigma 0, an infinite
    log-likelihood."""

    code = "perfect_fit"


class LevelsMergedWarning(MultilevelWarning):
    """Values of a factor that differ but have the same text (``1`` and ``"1"`` in one column,
    0.1 + 0.2 and 0.3) were merged into one level, as R's ``factor()`` does."""

    code = "levels_merged"


class RemlComparisonWarning(MultilevelWarning):
    """Models compared by likelihood where some were fitted by REML and some by ML."""

    code = "reml_mixed"


#: code -> warning class; a code without a class of its own is issued as MultilevelWarning
WARNING_CLASSES: dict[str, type[MultilevelWarning]] = {
    cls.code: cls
    for cls in (SingularFitWarning, ConvergenceWarning, MaxevalWarning, RowsDroppedWarning,
                RankDeficientWarning, NonIntegerResponseWarning, HessianWarning,
                LevelsMergedWarning, PerfectFitWarning, RemlComparisonWarning)
}


class FitWarning(str):
    """One warning of a fit: the text (the record *is* that ``str``) and a ``code``.

    Being a ``str`` keeps ``"singular" in fit.warnings[0]`` and the summary text working; the
    code says what happened without parsing the text, and ``category`` is the warning class
    it is issued as.

    >>> w = FitWarning("rows_dropped", "2 rows with missing values dropped")
    >>> w.code, w.category.__name__, "missing" in w
    ('rows_dropped', 'RowsDroppedWarning', True)
    """

    code: str

    def __new__(cls, code: str, message: str) -> "FitWarning":
        obj = super().__new__(cls, message)
        obj.code = str(code)
        return obj

    @property
    def message(self) -> str:
        return str.__str__(self)

    @property
    def category(self) -> type[MultilevelWarning]:
        return WARNING_CLASSES.get(self.code, MultilevelWarning)

    def __reduce__(self):
        # str's default reduction would call __new__ with the text alone
        return (type(self), (self.code, self.message))


#: lme4's ``boundary (singular) fit`` message, said in words instead of R's help page
SINGULAR_MESSAGE = ("boundary (singular) fit: a variance is estimated as 0 or a correlation "
                    "as ±1; see help(multilevel.SingularFitWarning)")


def singular_warning() -> FitWarning:
    """The record of a singular fit."""
    return FitWarning("singular", SINGULAR_MESSAGE)
