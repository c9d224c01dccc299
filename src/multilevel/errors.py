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


class MultilevelWarning(UserWarning):
    """Warnings about a fit (singular, not converged, rows or columns dropped).

    The same messages are kept on the result (``fit.warnings``) and shown in its summary.
    """
