"""The specification learnt once on the fitting data, and its re-application to new data.

Layer: design. May import: formula, errors, control.

Why a module of its own: :class:`FrameSpec` (the parsed formula, the fixed scope and column
plan with the kept columns, one :class:`~multilevel.design.grouping.BarSpec` per random term,
the offset) is plain data whose only behaviour is building a :class:`NewDesign` for new data
(``re_form`` selection, unseen levels, the fitting data's encodings). It does not import
:mod:`multilevel.design.frame`, which builds it, so the graph stays acyclic: source ->
variables -> matrices, grouping -> newdata -> frame.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from multilevel.design.grouping import BarSpec
from multilevel.design.matrices import ColumnPlan, fill_columns
from multilevel.design.source import DataSource, column_not_found
from multilevel.design.variables import Scope
from multilevel.errors import DataError
from multilevel.formula import ParsedFormula, parse_formula
from multilevel.formula._model import CONSTANTS

__all__ = ["NewDesign", "FrameSpec"]


@dataclass
class NewDesign:
    """Matrices for new data (see ``ModelFrame.new_design``).

    ``refs[k]`` is -1 for a row whose level of term k was not in the fitting data.
    ``reterms`` holds only the terms kept by ``re_form``, as indices into ``ModelFrame.reterms``.
    """

    X: np.ndarray
    offset: np.ndarray | None
    term_index: list[int]
    refs: list[np.ndarray]
    Z: list[np.ndarray]


@dataclass
class FrameSpec:
    """What ``ModelFrame.new_design`` re-applies: learnt once by ``build_model_frame``.

    ``frame`` in the methods is the :class:`~multilevel.design.frame.ModelFrame` being
    re-applied, typed ``Any`` because this module must not import the frame module (which
    imports this one).
    """

    parsed: ParsedFormula
    fixed: Scope
    plan: ColumnPlan
    keep: list[int]
    bars: list[BarSpec]          # in the order of ModelFrame.reterms
    offset_column: str | None
    offset_array_given: bool

    def new_design(self, frame: Any, newdata: Any, re_form: Any, allow_new_levels: bool,
                   offset: Any) -> NewDesign:
        data = DataSource(newdata, "newdata")
        n = data.nrows
        kept = self._select_terms(re_form, frame)
        needed: dict[str, None] = {}
        for c in self.fixed.columns():
            needed.setdefault(c, None)
        if self.offset_column is not None:
            needed.setdefault(self.offset_column, None)
        for k, _cols in kept:
            b = self.bars[k]
            for c in b.scope.columns() + list(b.group.columns):
                needed.setdefault(c, None)
        for c in needed:
            if c not in data and c not in CONSTANTS:
                raise column_not_found(c, data.names)
        for c in needed:
            if c in data:
                m = data.column(c).na_mask()
                if m is not None:
                    raise DataError(f"newdata column '{c}' has {int(m.sum())} missing value(s); "
                                    f"remove or fill them before predicting")
        values, offs, bad = self.fixed.evaluate(data, None, n, fit=False)
        if bad is not None:
            raise DataError(f"an expression of the fixed part is NaN for {int(bad.sum())} "
                            f"row(s) of newdata")
        X = fill_columns(self.plan, values, n, self.keep)
        total = None
        for o in offs:
            total = o.astype(np.float64, copy=True) if total is None else total + o
        if self.offset_column is not None:
            o = data.column(self.offset_column).numeric()
            total = o.astype(np.float64, copy=True) if total is None else total + o
        if offset is not None:
            o = np.asarray(offset, dtype=np.float64).reshape(-1)
            if o.shape[0] != n:
                raise DataError(f"offset has {o.shape[0]} values, newdata has {n} rows")
            total = o.copy() if total is None else total + o
        refs, Zs, index = [], [], []
        for k, cols in kept:
            b = self.bars[k]
            vals, _, bad = b.scope.evaluate(data, None, n, fit=False)
            if bad is not None:
                raise DataError(f"an expression of ({b.bar.text}) is NaN for {int(bad.sum())} "
                                f"row(s) of newdata")
            Z = fill_columns(b.plan, vals, n)
            if cols is not None:
                for j, name in enumerate(b.plan.names):
                    if name not in cols:
                        Z[:, j] = 0.0
            r = b.group.refs(data)
            if not allow_new_levels and (r < 0).any():
                codes_new = sorted({_row_label(data, b.group.columns, i)
                                    for i in np.flatnonzero(r < 0)[:50]})
                raise DataError(f"new level(s) of grouping factor '{b.group.name}' in newdata: "
                                f"{', '.join(repr(c) for c in codes_new[:5])}; use "
                                f"allow_new_levels=True to predict them with zero random effects")
            refs.append(r)
            Zs.append(Z)
            index.append(k)
        return NewDesign(X=X, offset=total, term_index=index, refs=refs, Z=Zs)

    def _select_terms(self, re_form: Any, frame: Any) -> list[tuple[int, set | None]]:
        """Which terms (and which of their columns) re_form keeps."""
        all_terms = [(k, None) for k in range(len(self.bars))]
        if re_form is None:
            return all_terms
        if isinstance(re_form, float) and np.isnan(re_form):
            return []
        if not isinstance(re_form, str):
            raise DataError(f"re_form must be None, a formula string or '~0'/'NA', not "
                            f"{type(re_form).__name__}")
        txt = re_form.strip()
        if txt in ("NA", "0", "~0", "~ 0", "~1", "~ 1", "~-1", "NULL") or \
                txt.replace(" ", "") in ("~0", "~1"):
            return []
        if txt in ("~.", "~ ."):
            return all_terms
        rf = parse_formula(txt if "~" in txt else "~" + txt)
        if not rf.bars:
            return []
        wanted: dict[str, set] = {}
        for b in rf.bars:
            names = set()
            if b.lhs.intercept:
                names.add("(Intercept)")
            wanted.setdefault(b.group, set()).update(names | set(b.lhs.labels))
        out = []
        unknown = set(wanted)
        for k, b in enumerate(self.bars):
            if b.group.name in wanted:
                unknown.discard(b.group.name)
                labels = wanted[b.group.name]
                cols = {name for name in b.plan.names
                        if name in labels or _column_term(b, name) in labels}
                if cols:
                    out.append((k, cols))
        if unknown:
            raise DataError(f"re_form names grouping factor(s) {', '.join(sorted(unknown))} that "
                            f"the model does not have")
        return out


def _column_term(b: BarSpec, name: str) -> str:
    j = b.plan.names.index(name)
    a = b.plan.assign[j]
    return "(Intercept)" if a == 0 else b.scope.terms.terms[a - 1].label


def _row_label(data: DataSource, columns: Sequence[str], i: int) -> str:
    parts = []
    for c in columns:
        codes, labels = data.column(c).factor()
        parts.append(labels[codes[i]] if codes[i] >= 0 else "NA")
    return ":".join(parts)
