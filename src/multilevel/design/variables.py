"""Variables and their encoding: what each variable of a term is and how it is coded.

Layer: design. May import: formula, errors, control.

Why a module of its own: a :class:`Scope` (the fixed part, or the left side of one bar) holds
one :class:`Variable` per variable of its terms: a numeric column or expression, or a factor
with its levels after dropping unused ones (lme4's ``drop.unused.levels = TRUE``),
``factor(x, levels =)`` and ``relevel(f, ref =)``, and its contrast. The levels are learnt on the
fitting rows, the state of stateful transforms on all rows (:meth:`Scope.learn_expressions`),
and both are re-applied to new data, so it is the state both the model matrices and the
new-data path read. Imports :mod:`multilevel.design.contrasts` (each factor's coding) and
:mod:`multilevel.design.source` among the design modules.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import pandas as pd

from multilevel.design.contrasts import Contrast, contrast_for
from multilevel.design.source import (DataSource, column_not_found, level_label,
                                      merge_same_labels, take_rows)
from multilevel.errors import DataError, FormulaError, ModelSpecError
from multilevel.formula import (Call, ModelTerms, Name, Node, NumericExpressions, Num, Paren, Str,
                                deparse, format_r_number, is_logical, names_in)
from multilevel.formula._model import CONSTANTS

__all__ = ["Variable", "Scope", "strip_parens", "drop_unused"]


@dataclass
class Variable:
    """One model variable (R's "factor" of a term): a numeric column or expression, or a
    factor (column, ``factor(...)``, logical expression)."""

    key: str                      # R's text, e.g. "I(age^2)", "sector"
    node: Node
    source: str                   # "column" | "expr"
    column: str | None = None     # data column, for source == "column"
    expr: int | None = None       # index into the scope's evaluator, for source == "expr"
    is_factor: bool = False
    logical: bool = False         # a logical expression (levels FALSE, TRUE)
    explicit_levels: list[str] | None = None   # factor(x, levels = c(...))
    relevel_ref: str | None = None              # relevel(f, ref = "...")
    levels: list[str] = field(default_factory=list)  # after dropping unused levels
    ordered: bool = False         # an ordered factor (R's default contrast: contr.poly)
    contrast: Contrast | None = None  # its coding where R codes it by contrasts (fit time)
    suffixes: list[str] = field(default_factory=lambda: [""])
    _index: dict[str, int] | None = None

    def level_index(self) -> dict[str, int]:
        if self._index is None:
            self._index = {lab: i for i, lab in enumerate(self.levels)}
        return self._index


def strip_parens(node: Node) -> Node:
    while isinstance(node, Paren):
        node = node.inner
    return node


def _literal_labels(node: Node, text: str) -> list[str]:
    """Labels from ``c("a", "b")`` / ``c(1, 2)`` / a single literal."""
    node = strip_parens(node)
    items = node.args if isinstance(node, Call) and node.func == "c" else None
    values = [a.value for a in items] if items is not None else [node]
    out = []
    for v in values:
        v = strip_parens(v)
        if isinstance(v, Str):
            out.append(v.value)
        elif isinstance(v, Num):
            out.append(format_r_number(v.value))
        elif isinstance(v, Name) and v.name in ("TRUE", "FALSE"):
            out.append(v.name)
        else:
            raise FormulaError("levels must be given as literals, e.g. c(\"a\", \"b\")",
                               text, v.pos)
    return out


class Scope:
    """The variables of one model matrix (the fixed part, or the left side of one bar) with
    one formulaic evaluator for its numeric expressions."""

    def __init__(self, terms: ModelTerms, offsets: Sequence[Node], text: str, data: DataSource,
                 contrasts: dict[str, Any] | None = None):
        self.terms = terms
        self.text = text
        self.vars: dict[str, Variable] = {}
        #: factor expressions whose values with the same text were merged (key -> levels)
        self.merged: dict[str, list[str]] = {}
        # the normalized contrasts= argument (design/contrasts.py); only the fixed part has one
        self.contrasts: dict[str, Any] = dict(contrasts or {})
        expr_nodes: list[Node] = []

        def add_expr(node: Node) -> int:
            expr_nodes.append(node)
            return len(expr_nodes) - 1

        for node in terms.variables:
            self.vars[node.key] = self._classify(node, data, add_expr)
        self.offsets: list[Variable] = []
        for node in offsets:
            n = strip_parens(node)
            if isinstance(n, Name) and n.name in data:
                self.offsets.append(Variable(node.key, node, "column", column=n.name))
            else:
                self.offsets.append(Variable(node.key, node, "expr", expr=add_expr(node)))
        self.evaluator = NumericExpressions(expr_nodes, text)
        for name in self.contrasts:
            v = self.vars.get(name)
            if v is None or not v.is_factor:
                what = "is not a factor (contrasts apply only to factors)" if v is not None \
                    else "is not a variable of the fixed part"
                factors = [k for k, x in self.vars.items() if x.is_factor]
                raise ModelSpecError(f"contrasts: '{name}' {what}; the factors of the fixed part "
                                     f"are: {', '.join(factors) if factors else 'none'}")

    def _classify(self, node: Node, data: DataSource, add_expr) -> Variable:
        n = strip_parens(node)
        key = node.key
        if isinstance(n, Name) and n.name in data:
            col = data.column(n.name)
            if col.kind == "other":
                raise DataError(f"column '{n.name}' ({col.describe()}) cannot be used in a model")
            return Variable(key, node, "column", column=n.name, is_factor=not col.is_numeric,
                            ordered=col.ordered)
        if isinstance(n, Name) and n.name not in CONSTANTS:
            raise column_not_found(n.name, data.names)
        if isinstance(n, Call) and n.func in ("factor", "as.factor", "relevel"):
            inner = strip_parens(n.args[0].value)
            v = Variable(key, node, "column", is_factor=True)
            if isinstance(inner, Name) and inner.name in data:
                v.column = inner.name
                # R's factor(x) and as.factor(x) keep an ordered factor ordered
                v.ordered = data.column(inner.name).ordered
                if v.ordered and n.func == "relevel":
                    raise DataError(f"relevel() is only for unordered factors ('{inner.name}' is "
                                    f"an ordered factor), as in R")
            else:
                v.source, v.expr = "expr", add_expr(n.args[0].value)
                v.logical = is_logical(n.args[0].value)
            for a in n.args[1:]:
                if n.func == "factor" and a.name == "levels":
                    v.explicit_levels = _literal_labels(a.value, self.text)
                elif n.func == "relevel" and a.name in (None, "ref"):
                    labs = _literal_labels(a.value, self.text)
                    if len(labs) != 1:
                        raise FormulaError("relevel() needs one reference level", self.text,
                                           a.value.pos)
                    v.relevel_ref = labs[0]
                else:
                    raise FormulaError(f"argument {a.name or '(unnamed)'} of {n.func}() is not "
                                       f"supported", self.text, a.value.pos)
            if n.func == "relevel" and v.relevel_ref is None:
                raise FormulaError("relevel() needs ref = \"level\"", self.text, n.pos)
            return v
        if not any(nm.name in data for nm in names_in(node)):
            # R: "variable lengths differ (found for 'pi')": one value is no column
            raise FormulaError(f"'{key}' is a constant, not a variable of the data: it cannot "
                               f"be a term of the model", self.text, node.pos)
        if is_logical(node):
            return Variable(key, node, "expr", expr=add_expr(node), is_factor=True, logical=True)
        return Variable(key, node, "expr", expr=add_expr(node))

    def columns(self) -> list[str]:
        """Data columns this scope reads (for missing-value dropping)."""
        out: dict[str, None] = {}
        for v in list(self.vars.values()) + self.offsets:
            if v.column is not None:
                out.setdefault(v.column, None)
        for nm in self.evaluator.names:
            out.setdefault(nm, None)
        return list(out)

    # ---------------------------------------------------------------------------------------
    def learn_expressions(self, data: DataSource) -> tuple[list[np.ndarray], np.ndarray | None]:
        """Evaluate the numeric expressions on *all* rows of ``data``, learning the state of
        stateful transforms (``scale()``, ``poly()``, ``center()``) there: R's model frame
        evaluates every variable before ``na.omit`` drops incomplete rows. Returns the
        (n_all, k) blocks and the rows where some expression is NaN (None if none)."""
        if not self.evaluator.nodes:
            return [], None
        return evaluate_on_all_rows(self.evaluator, data)

    def evaluate(self, data: DataSource, rows: np.ndarray | None, n: int, fit: bool,
                 exprs: list[np.ndarray] | None = None
                 ) -> tuple[dict[str, tuple], list[np.ndarray], np.ndarray | None]:
        """Encode every variable on the given rows.

        exprs: the expressions already evaluated on these rows (at fit time, the rows of
            :meth:`learn_expressions`' blocks); otherwise they are evaluated here (learning
            their state if ``fit``).

        Returns ({key: ("num", (n, k) array) | ("fac", codes)}, offsets, rows_with_nan) where
        rows_with_nan flags rows where an expression gave NaN (fit: to be dropped as R's
        na.omit would; new data: an error)."""
        if exprs is None:
            env = {}
            for nm in self.evaluator.names:
                if nm in data:
                    env[nm] = take_rows(data.column(nm).raw(), rows)
            exprs = (self.evaluator.fit(env, n) if fit else self.evaluator.transform(env, n)) \
                if self.evaluator.nodes else []
        bad = None
        for arr in exprs:
            m = np.isnan(arr).any(axis=1)
            if m.any():
                bad = m if bad is None else (bad | m)
        out: dict[str, tuple] = {}
        for key, v in self.vars.items():
            if v.is_factor:
                out[key] = ("fac", self._factor_codes(v, data, rows, exprs, fit))
            elif v.source == "column":
                col = data.column(v.column)
                if not col.is_numeric:
                    raise DataError(f"column '{v.column}' was numeric in the fitting data but is "
                                    f"{col.describe()} in the new data")
                out[key] = ("num", take_rows(col.numeric(), rows)[:, None])
            else:
                block = exprs[v.expr]
                if fit:
                    v.suffixes = list(self.evaluator.suffixes[v.expr])
                out[key] = ("num", block)
        offs = []
        for v in self.offsets:
            if v.source == "column":
                col = data.column(v.column)
                offs.append(take_rows(col.numeric(), rows))
            else:
                block = exprs[v.expr]
                if block.shape[1] != 1:
                    raise DataError(f"offset({v.key}) must be a single column")
                offs.append(block[:, 0])
        return out, offs, bad

    def _factor_codes(self, v: Variable, data: DataSource, rows: np.ndarray | None,
                      exprs: list[np.ndarray], fit: bool) -> np.ndarray:
        """Level codes of a factor variable; at fit time also fixes its levels."""
        logical = v.logical
        if v.source == "column":
            col = data.column(v.column)
            codes, labels = col.factor()
            codes = take_rows(codes, rows)
            logical = col.kind == "bool" and v.explicit_levels is None and v.relevel_ref is None \
                and v.node is not None and isinstance(strip_parens(v.node), Name)
        else:
            vals = exprs[v.expr][:, 0]
            if v.logical:
                codes = np.where(np.isnan(vals), -1, vals != 0).astype(np.int64)
                labels = ["FALSE", "TRUE"]
            else:
                codes, uniq = pd.factorize(vals, sort=True)
                labels = [level_label(u) for u in uniq]
                # factor(x / 10): values R prints the same are one level, as in R
                codes, labels, merged = merge_same_labels(codes, labels, uniq.tolist())
                if merged and fit:
                    self.merged[v.key] = merged
        if fit:
            order = labels
            if v.explicit_levels is not None:
                order = v.explicit_levels
            elif v.relevel_ref is not None:
                if v.relevel_ref not in labels:
                    raise DataError(f"relevel(): '{v.relevel_ref}' is not a level of "
                                    f"{deparse(v.node.args[0].value)}")
                order = [v.relevel_ref] + [lab for lab in labels if lab != v.relevel_ref]
            if order is not labels:
                idx = {lab: i for i, lab in enumerate(order)}
                lut = np.array([idx.get(lab, -1) for lab in labels] + [-1], dtype=np.int64)
                codes = lut[codes]
                if (codes < 0).any():
                    raise DataError(f"{v.key}: values outside the given levels")
                labels = list(order)
            # lme4's model frame drops unused levels (drop.unused.levels = TRUE); a logical
            # is no factor there, and model.matrix always codes it with levels FALSE, TRUE
            if not logical:
                codes, labels = drop_unused(codes, labels)
            v.levels = labels
            v._index = None
            # R's contrast of the factor (used where TermCode codes it by contrasts): the
            # contrasts= argument, else contr.poly for an ordered factor, contr.treatment else
            v.contrast = contrast_for(v.key, labels, self.contrasts.get(v.key),
                                      ordered=v.ordered and not logical)
            return codes
        idx = v.level_index()
        lut = np.array([idx.get(lab, -1) for lab in labels] + [-1], dtype=np.int64)
        new = lut[codes]
        if (new < 0).any():
            missing = sorted({labels[c] for c in np.unique(codes[new < 0]) if c >= 0})
            raise DataError(f"new data has level(s) {', '.join(repr(m) for m in missing[:5])} of "
                            f"factor '{v.key}' that the fitting data did not have (levels: "
                            f"{', '.join(v.levels[:10])}{', ...' if len(v.levels) > 10 else ''})")
        return new


def drop_unused(codes: np.ndarray, labels: list[str]) -> tuple[np.ndarray, list[str]]:
    used = np.bincount(codes, minlength=len(labels)) > 0 if len(codes) else \
        np.zeros(len(labels), bool)
    if used.all():
        return codes, list(labels)
    remap = np.cumsum(used) - 1
    return remap[codes].astype(codes.dtype, copy=False), [lab for lab, u in zip(labels, used) if u]


def evaluate_on_all_rows(evaluator: Any, data: DataSource) -> tuple[list[np.ndarray], np.ndarray | None]:
    """Fit ``evaluator``'s numeric expressions on every row of ``data`` (their stateful
    transforms learn there, as R's model frame does before ``na.omit``); the (n_all, k)
    blocks and the rows where some block is NaN (None if none)."""
    env = {nm: data.column(nm).raw() for nm in evaluator.names if nm in data}
    blocks = evaluator.fit(env, data.nrows)
    bad = None
    for b in blocks:
        m = np.isnan(b).any(axis=1)
        if m.any():
            bad = m if bad is None else bad | m
    return blocks, bad
