"""The formula layer: lme4's formula language, parsed exactly as R reads it.

``parse_formula(text)`` returns a :class:`ParsedFormula`: the response expression, the fixed
part expanded into R's terms (:class:`ModelTerms`), and the random-effects bars expanded as
lme4 does (:class:`BarTerm`; ``||`` split into uncorrelated terms, ``a/b`` into ``b:a`` and
``a``; a covariance structure wrapping a bar, ``cs(x | g)``, is recorded on its terms as
``BarTerm.structure``). Nothing here looks at data; :mod:`multilevel.design` turns a parsed formula and a data
frame into arrays, evaluating expressions such as ``I(age^2)`` or ``scale(x)`` through
formulaic (:class:`NumericExpressions`); R's stateful ``scale()`` and ``poly()`` are our own
formulaic transforms (``_transforms.py``), which skip missing values as R's do because the
design layer evaluates expressions on all rows before dropping incomplete ones. Besides R's
functions a formula may centre variables: ``center(x)``, ``center(x, by = g)`` and
``group_mean(x, by = g)`` (``_centering.py``).

Layer: formula (the lowest above errors). May import: ``multilevel.errors``, formulaic. It
never sees data frames (design does), arrays of a model (engine) or fits (results).

>>> from multilevel.formula import parse_formula
>>> f = parse_formula("y ~ x * f + offset(log(n)) + (1 + x || g) + (1 | a/b)")
>>> f.fixed.labels, f.fixed.intercept, [b.text for b in f.bars]
(['x', 'f', 'x:f'], True, ['1 | g', '0 + x | g', '1 | b:a', '1 | a'])
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from multilevel.formula._model import BarTerm, ModelTerms, ParsedFormula, Term, expand_terms, parse_formula
from multilevel.formula._rsyntax import (Arg, BinOp, Call, Name, Node, Num, Paren, Str, Unary, deparse,
                       deparse_lines, format_r_number, names_in, parse_expression)

__all__ = [
    "parse_formula", "ParsedFormula", "ModelTerms", "Term", "BarTerm", "expand_terms",
    "NumericExpressions", "to_python", "is_logical",
    "parse_expression", "deparse", "deparse_lines", "format_r_number", "names_in",
    "Node", "Name", "Num", "Str", "Call", "Arg", "BinOp", "Unary", "Paren",
]

if TYPE_CHECKING:
    from multilevel.formula._python import NumericExpressions, is_logical, to_python

#: the parser above is plain Python; the evaluation of expressions needs numpy, pandas and
#: formulaic, so it is imported on first use (PEP 562): the command line checks a formula's
#: syntax before it loads them
_LAZY = ("NumericExpressions", "is_logical", "to_python")


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from multilevel.formula import _python

        value = getattr(_python, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
