"""Model frame and design matrices: from a formula and a data frame to the arrays the engines use.

This module is the only place that looks at a data frame. It returns plain numpy arrays
(``y``, ``X``, one :class:`ReTerm` per random-effect term) plus everything needed to build
the same matrices for new data (``ModelFrame.new_design``). Engines never see data frames
or formula strings.

What it reproduces from lme4 (``lFormula``/``glFormula``, ``mkReTrms``, ``model.matrix``):

- rows with a missing value in any variable of the model are dropped (``na.omit``), then
  unused factor levels are dropped (lme4 sets ``drop.unused.levels = TRUE``);
- treatment contrasts; which factor of an interaction gets full dummy coding follows R's
  ``TermCode`` rule, so ``y ~ x:f`` or ``(0 + f | g)`` give one column per level as in R;
  columns of an interaction vary the first variable fastest, named ``a2:b2``;
- rank-deficient fixed-effect columns are found with R's LINPACK rule (a column is dropped
  when its norm after projection on the kept columns to its left falls below 1e-7 of its
  norm) and dropped with lme4's message;
- random-effect terms are ordered as ``mkReTrms`` orders them: ``rev(order(n_levels))`` when
  some later term has more levels than an earlier one (note: this reverses ties), else as
  written;
- lme4's checks: grouping factors need >= 2 levels and fewer levels than observations, and
  each term fewer random effects than observations (``<=`` for GLMMs).

Known differences: stateful transforms (``scale()``, ``poly()``) learn their parameters on the
rows used, whereas R computes them before dropping rows with missing values; strings are
sorted by code point, not by the locale's collation.
"""
from __future__ import annotations

import difflib
import itertools
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from multilevel.errors import ColumnNotFoundError, DataError, FitWarning, FormulaError, ModelSpecError
from multilevel.formula import (BarTerm, Call, ModelTerms, Name, Node, NumericExpressions, ParsedFormula,
                      Paren, Str, Num, deparse, format_r_number, is_logical, parse_formula)
from multilevel.formula._centering import allow_new_groups
from multilevel.formula._model import CONSTANTS

__all__ = ["ReTerm", "NewDesign", "ModelFrame", "build_model_frame", "build_fixed_frame"]


@dataclass
class ReTerm:
    """One random-effect term ``(expr | group)`` as lme4 builds it.

    group:  lme4's name of the grouping factor: ``"Subject"``, ``"recipe:replicate"``,
            ``"cask:batch"`` for the inner term of ``(1 | batch/cask)``.
    terms:  names of the columns of ``Z`` in R's naming: ``"(Intercept)"``, ``"Days"``,
            ``"I(age^2)"``, ``"sexgirl"``.
    levels: level labels of the grouping factor in lme4's order (category order, else sorted;
            an interaction ``a:b`` orders by ``a`` then ``b`` and keeps observed combinations).
    refs:   int32 array (n,), the 0-based level of each row used in the fit.
    Z:      float64 array (n, len(terms)), C-contiguous: the term's model-matrix columns.
    spec:   how to rebuild Z and refs for new data (a private ``_BarSpec``).
    label:  lme4's name of the term, e.g. ``"Days | Subject"`` (used in messages).
    """

    group: str
    terms: list[str]
    levels: list[str]
    refs: np.ndarray
    Z: np.ndarray
    spec: Any = None  # whatever the builder needs to rebuild Z and refs for new data
    label: str = ""

    @property
    def n_levels(self) -> int:
        return len(self.levels)

    @property
    def n_terms(self) -> int:
        return len(self.terms)


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
class ModelFrame:
    """Everything about the data of one fit, as arrays.

    y, X:           response (n,) and fixed-effects matrix (n, p), float64, C-contiguous,
                    after dropping missing rows and rank-deficient columns.
    fixef_names:    column names of X in R's naming.
    dropped_columns: names of rank-deficient columns dropped from X (warned).
    reterms:        random-effect terms in lme4's order: bars expanded (``||`` split into
                    uncorrelated terms, ``a/b`` into ``b:a`` and ``a``), then sorted by
                    decreasing number of levels the way lme4 1.1 does it (``rev(order(nl))``,
                    applied only when some term has more levels than the one before it; ties
                    then come out in reverse order of appearance).
    weights:        prior weights (n,) or None; for ``cbind(s, f)`` responses the trials s + f.
    offset:         (n,) or None (sum of ``offset()`` terms and the ``offset=`` argument).
    rows:           int64 positions (0-based) in the user's frame of the rows used.
    n_dropped:      number of rows dropped for missing values.
    warnings:       records (:class:`~multilevel.errors.FitWarning`) for the fit's warnings
                    (codes ``rows_dropped``, ``rank_deficient``).
    spec:           a private ``_FrameSpec``: the parsed formula and every encoding (factor
                    levels, formulaic ModelSpecs of stateful transforms, column plans) that
                    ``new_design`` re-applies.

    Added beyond the contract:

    family:         the family the frame was built for (response checks differ).
    assign:         (p,) int array: the fixed term of each column of X (0 = intercept), R's
                    ``attr(X, "assign")`` after dropping columns.
    term_labels:    R's labels of the fixed terms (``assign`` k > 0 is ``term_labels[k-1]``).
    factor_levels:  level order (first = reference) of each factor in the fixed part (and of
                    a factor response), as in the reference JSON's ``factor_levels``.
    """

    formula: str
    response: str
    y: np.ndarray
    X: np.ndarray
    fixef_names: list[str]
    reterms: list[ReTerm]
    weights: np.ndarray | None = None
    offset: np.ndarray | None = None
    rows: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    n_dropped: int = 0
    dropped_columns: list[str] = field(default_factory=list)
    warnings: list[FitWarning] = field(default_factory=list)
    spec: Any = None  # what new_design needs (formulaic model spec, factor levels, ...)
    family: str = "gaussian"
    assign: np.ndarray | None = None
    term_labels: list[str] = field(default_factory=list)
    factor_levels: dict[str, list[str]] = field(default_factory=dict)

    @property
    def nobs(self) -> int:
        return int(self.y.shape[0])

    @property
    def has_intercept(self) -> bool:
        return "(Intercept)" in self.fixef_names

    def new_design(self, newdata: Any, re_form: str | None = None,
                   allow_new_levels: bool = False, *,
                   offset: np.ndarray | Sequence[float] | None = None) -> NewDesign:
        """Build X, offset and (refs, Z) of the random terms for new data.

        The encoding is the fitting data's: same factor levels (a fixed-effect level that
        was not seen is an error), same ``scale()``/``poly()`` parameters, same dropped
        columns. The response column is not needed.

        re_form: None keeps every random term; ``"~0"``, ``"0"`` or ``"NA"`` keeps none; a
            formula such as ``"~ (1 | Subject)"`` keeps the terms whose grouping factor
            appears in it, with only the columns it names (others are zeroed in Z).
        allow_new_levels: if False, a grouping level not seen in the fit raises DataError;
            if True its ``refs`` entry is -1 (the caller gives it a zero random effect).
        offset: an array for the ``offset=`` argument of the fit when that was an array
            (a column name given at fit time is looked up in ``newdata``).

        >>> mf = build_model_frame("y ~ x + (1 | g)", {"y": [1., 2, 3, 4], "x": [0., 1, 0, 1],
        ...                        "g": ["a", "a", "b", "b"]})
        >>> nd = mf.new_design({"x": [0.5], "g": ["b"]})
        >>> nd.X.tolist(), nd.refs[0].tolist()
        ([[1.0, 0.5]], [1])
        """
        spec: _FrameSpec = self.spec
        # center(x, by = g) / group_mean(x, by = g) of an unseen group use the grand mean only
        # when new levels are allowed (see formula/_centering.py)
        with allow_new_groups(allow_new_levels):
            return spec.new_design(self, newdata, re_form, allow_new_levels, offset)

    @property
    def all_fixef_names(self) -> list[str]:
        """Names of every fixed-effect column before rank-deficient ones were dropped, in
        model-matrix order (R's ``names(coef(lm_fit))``, aliased ones included)."""
        spec = self.spec
        plan = getattr(spec, "plan", None)
        return list(plan.names) if plan is not None else list(self.fixef_names)


# ============================================================================================
# data access
# ============================================================================================

def _label_of(value: Any) -> str:
    """R's label of a factor level (``as.character``): 308 -> "308", 2.5 -> "2.5",
    True -> "TRUE"."""
    if isinstance(value, (bool, np.bool_)):
        return "TRUE" if value else "FALSE"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return format_r_number(float(value))
    return str(value)


class _Column:
    """One data column, classified once (numeric / bool / categorical / string) with cached
    numeric values, missing-value mask and factor coding."""

    def __init__(self, name: str, values: Any):
        self.name = name
        s = values if isinstance(values, pd.Series) else pd.Series(_as_array(values), copy=False)
        self.series = s
        self._factor: tuple[np.ndarray, list[str]] | None = None
        self._numeric: np.ndarray | None = None
        self._na: np.ndarray | None | bool = False  # False = not computed yet
        dt = s.dtype
        if isinstance(dt, pd.CategoricalDtype):
            self.kind = "categorical"
        elif pd.api.types.is_bool_dtype(dt):
            self.kind = "bool"
        elif pd.api.types.is_numeric_dtype(dt):
            self.kind = "numeric"
        elif pd.api.types.is_string_dtype(dt) or dt == object:
            inferred = pd.api.types.infer_dtype(s, skipna=True)
            if inferred == "boolean":
                self.kind = "bool"
            elif inferred in ("integer", "floating", "mixed-integer-float", "decimal", "empty"):
                self.kind = "numeric"
                self.series = pd.to_numeric(s)
            else:
                self.kind = "string"
        else:
            self.kind = "other"  # datetimes, intervals ...: not usable in a model

    def __len__(self) -> int:
        return len(self.series)

    @property
    def is_numeric(self) -> bool:
        return self.kind == "numeric"

    def numeric(self) -> np.ndarray:
        """float64 values (NaN where missing); bool columns give 0/1."""
        if self._numeric is None:
            s = self.series
            if self.kind == "numeric":
                if s.dtype == np.float64 and isinstance(s.dtype, np.dtype):
                    arr = s.to_numpy()
                else:
                    arr = s.to_numpy(dtype=np.float64, na_value=np.nan)
            elif self.kind == "bool":
                arr = s.to_numpy(dtype=np.float64, na_value=np.nan) if s.dtype != bool \
                    else s.to_numpy().astype(np.float64)
            else:
                raise DataError(f"column '{self.name}' is not numeric ({self.describe()})")
            self._numeric = arr
        return self._numeric

    def raw(self) -> np.ndarray:
        """Values for evaluating an expression (numbers, bools or label strings)."""
        if self.kind in ("numeric",):
            s = self.series
            if isinstance(s.dtype, np.dtype):
                return s.to_numpy()
            return self.numeric()
        if self.kind == "bool":
            if self.series.dtype == bool:
                return self.series.to_numpy()
            return self.numeric()
        codes, labels = self.factor()
        lab = np.asarray(labels + [None], dtype=object)
        return lab[codes]

    def describe(self) -> str:
        if self.kind == "categorical":
            return "categorical"
        if self.kind == "string":
            return "text"
        if self.kind == "bool":
            return "logical"
        if self.kind == "numeric":
            return "numeric"
        return f"dtype {self.series.dtype}"

    def na_mask(self) -> np.ndarray | None:
        """True where the value is missing; None when nothing is missing."""
        if self._na is False:
            if self.kind == "numeric":
                m = np.isnan(self.numeric())
            elif self.kind in ("categorical", "string"):
                m = self.factor()[0] < 0
            elif self.kind == "bool":
                m = self.series.isna().to_numpy() if self.series.dtype != bool else None
            else:
                m = self.series.isna().to_numpy()
            self._na = m if (m is not None and m.any()) else None
        return self._na  # type: ignore[return-value]

    def factor(self) -> tuple[np.ndarray, list[str]]:
        """(codes, labels): codes (-1 = missing) into labels in R's level order (category
        order; else sorted, numbers numerically; FALSE < TRUE), before dropping unused."""
        if self._factor is None:
            s = self.series
            if self.kind == "categorical":
                codes = s.cat.codes.to_numpy()
                cats = s.cat.categories
                if cats.dtype == object or pd.api.types.is_string_dtype(cats.dtype):
                    # text categories are their own labels: one vectorised conversion
                    labels = cats.astype(str).tolist()
                else:
                    labels = [_label_of(c) for c in cats]
            elif self.kind == "bool":
                if s.dtype == bool:
                    codes = s.to_numpy().astype(np.int8)
                else:
                    na = s.isna().to_numpy()
                    codes = np.where(na, -1, s.fillna(False).to_numpy(dtype=bool)).astype(np.int8)
                labels = ["FALSE", "TRUE"]
            elif self.kind == "numeric":
                vals = self.numeric() if not isinstance(s.dtype, np.dtype) else s.to_numpy()
                codes, uniq = pd.factorize(vals, sort=True)
                labels = [_label_of(u) for u in uniq]
            elif self.kind == "string":
                # hashing a numpy object array is faster than the string extension array
                vals = s.to_numpy()
                try:
                    codes, uniq = pd.factorize(vals, sort=True)
                except TypeError:  # mixed types cannot be sorted: compare as text
                    na = s.isna().to_numpy()
                    txt = np.where(na, None, s.astype(str).to_numpy(dtype=object))
                    codes, uniq = pd.factorize(txt, sort=True)
                labels = [u if isinstance(u, str) else str(u) for u in np.asarray(uniq).tolist()]
            else:
                raise DataError(f"column '{self.name}' ({self.describe()}) cannot be used as a "
                                f"factor")
            self._factor = (np.asarray(codes), labels)
        return self._factor


def _as_array(values: Any) -> Any:
    if isinstance(values, (pd.Series, np.ndarray, pd.api.extensions.ExtensionArray)):
        return values
    if hasattr(values, "to_numpy") and not isinstance(values, (list, tuple)):
        try:
            return values.to_numpy()
        except Exception:  # noqa: BLE001
            pass
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise DataError(f"expected a one-dimensional column, got shape {arr.shape}")
    return arr


class _Data:
    """Column access to a pandas DataFrame, a polars (or other narwhals-supported) DataFrame
    or a dict of arrays, without copying the user's data."""

    def __init__(self, data: Any, what: str = "data"):
        self._cache: dict[str, _Column] = {}
        self._getters: dict[str, Any]
        if isinstance(data, pd.DataFrame):
            names = [str(c) for c in data.columns]
            if len(set(names)) != len(names):
                dup = sorted({c for c in names if names.count(c) > 1})
                raise DataError(f"{what} has duplicate column names: {', '.join(dup)}")
            self.names = names
            cols = list(data.columns)
            self._get = lambda name: data[cols[names.index(name)]]
            self.nrows = len(data)
        elif isinstance(data, Mapping):
            self.names = [str(k) for k in data]
            keys = list(data)
            self._get = lambda name: data[keys[self.names.index(name)]]
            lengths = {}
            for k in keys:
                v = data[k]
                lengths[str(k)] = len(v) if hasattr(v, "__len__") else None
            sizes = {v for v in lengths.values() if v is not None}
            if len(sizes) > 1:
                detail = ", ".join(f"{k}: {v}" for k, v in lengths.items())
                raise DataError(f"the columns of {what} have different lengths ({detail})")
            self.nrows = sizes.pop() if sizes else 0
        else:
            try:
                import narwhals as nw
                frame = nw.from_native(data, eager_only=True)
            except Exception as e:  # noqa: BLE001
                raise DataError(f"{what} must be a pandas or polars DataFrame or a dict of "
                                f"arrays, not {type(data).__name__}") from e
            self.names = list(frame.columns)
            self._get = lambda name: _from_narwhals(frame[name])
            self.nrows = len(frame)

    def __contains__(self, name: str) -> bool:
        return name in self.names

    def column(self, name: str) -> _Column:
        col = self._cache.get(name)
        if col is None:
            if name not in self.names:
                raise _not_found(name, self.names)
            col = _Column(name, self._get(name))
            if len(col) != self.nrows:
                raise DataError(f"column '{name}' has {len(col)} values, expected {self.nrows}")
            self._cache[name] = col
        return col


def _from_narwhals(s: Any) -> pd.Series:
    """A narwhals Series as a pandas Series (polars needs no pyarrow this way). An Enum keeps
    its category order; a polars Categorical has no user-meaningful order, so it is treated
    like text (sorted levels)."""
    import narwhals as nw

    dt = s.dtype
    if isinstance(dt, nw.Enum):
        cats = list(dt.categories)
        return pd.Series(pd.Categorical(s.to_numpy(), categories=cats), copy=False)
    if dt == nw.String or dt == nw.Categorical:
        # code the text natively (dense rank = position in sorted order; a million Python
        # strings would cost far more): the result is the same sorted-level factor
        if dt == nw.Categorical:
            s = s.cast(nw.String)
        ranks = s.rank(method="dense").to_numpy()
        codes = np.where(np.isnan(ranks), 0, ranks).astype(np.int64) - 1 \
            if ranks.dtype.kind == "f" else ranks.astype(np.int64) - 1
        cats = s.drop_nulls().unique().sort().to_list()
        return pd.Series(pd.Categorical.from_codes(codes, categories=cats), copy=False)
    values = s.to_numpy()
    if values.dtype == object:
        return pd.Series(values, dtype=object, copy=False)
    return pd.Series(values, copy=False)


def _not_found(name: str, names: Sequence[str]) -> ColumnNotFoundError:
    close = difflib.get_close_matches(name, list(names), n=3, cutoff=0.6)
    lower = [c for c in names if c.lower() == name.lower() and c not in close]
    close = lower + close
    msg = f"column '{name}' not found in the data"
    if close:
        msg += "; did you mean " + " or ".join(repr(c) for c in close[:3]) + "?"
    else:
        shown = ", ".join(repr(c) for c in list(names)[:12])
        msg += f" (columns: {shown}{', ...' if len(names) > 12 else ''})"
    return ColumnNotFoundError(msg)


def _take(arr: np.ndarray, rows: np.ndarray | None) -> np.ndarray:
    return arr if rows is None else arr[rows]


# ============================================================================================
# variables: how each variable of a term is encoded (kept for new data)
# ============================================================================================

@dataclass
class _Var:
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
    suffixes: list[str] = field(default_factory=lambda: [""])
    _index: dict[str, int] | None = None

    def level_index(self) -> dict[str, int]:
        if self._index is None:
            self._index = {lab: i for i, lab in enumerate(self.levels)}
        return self._index


def _strip(node: Node) -> Node:
    while isinstance(node, Paren):
        node = node.inner
    return node


def _literal_labels(node: Node, text: str) -> list[str]:
    """Labels from ``c("a", "b")`` / ``c(1, 2)`` / a single literal."""
    node = _strip(node)
    items = node.args if isinstance(node, Call) and node.func == "c" else None
    values = [a.value for a in items] if items is not None else [node]
    out = []
    for v in values:
        v = _strip(v)
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


class _Scope:
    """The variables of one model matrix (the fixed part, or the left side of one bar) with
    one formulaic evaluator for its numeric expressions."""

    def __init__(self, terms: ModelTerms, offsets: Sequence[Node], text: str, data: _Data):
        self.terms = terms
        self.text = text
        self.vars: dict[str, _Var] = {}
        expr_nodes: list[Node] = []

        def add_expr(node: Node) -> int:
            expr_nodes.append(node)
            return len(expr_nodes) - 1

        for node in terms.variables:
            self.vars[node.key] = self._classify(node, data, add_expr)
        self.offsets: list[_Var] = []
        for node in offsets:
            n = _strip(node)
            if isinstance(n, Name) and n.name in data:
                self.offsets.append(_Var(node.key, node, "column", column=n.name))
            else:
                self.offsets.append(_Var(node.key, node, "expr", expr=add_expr(node)))
        self.evaluator = NumericExpressions(expr_nodes, text)

    def _classify(self, node: Node, data: _Data, add_expr) -> _Var:
        n = _strip(node)
        key = node.key
        if isinstance(n, Name) and n.name in data:
            col = data.column(n.name)
            if col.kind == "other":
                raise DataError(f"column '{n.name}' ({col.describe()}) cannot be used in a model")
            return _Var(key, node, "column", column=n.name, is_factor=not col.is_numeric)
        if isinstance(n, Name) and n.name not in CONSTANTS:
            raise _not_found(n.name, data.names)
        if isinstance(n, Call) and n.func in ("factor", "as.factor", "relevel"):
            inner = _strip(n.args[0].value)
            v = _Var(key, node, "column", is_factor=True)
            if isinstance(inner, Name) and inner.name in data:
                v.column = inner.name
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
        if is_logical(node):
            return _Var(key, node, "expr", expr=add_expr(node), is_factor=True, logical=True)
        return _Var(key, node, "expr", expr=add_expr(node))

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
    def evaluate(self, data: _Data, rows: np.ndarray | None, n: int,
                 fit: bool) -> tuple[dict[str, tuple], list[np.ndarray], np.ndarray | None]:
        """Encode every variable on the given rows.

        Returns ({key: ("num", (n, k) array) | ("fac", codes)}, offsets, rows_with_nan) where
        rows_with_nan flags rows where an expression gave NaN (fit: to be dropped as R's
        na.omit would; new data: an error)."""
        env = {}
        for nm in self.evaluator.names:
            if nm in data:
                env[nm] = _take(data.column(nm).raw(), rows)
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
                out[key] = ("num", _take(col.numeric(), rows)[:, None])
            else:
                block = exprs[v.expr]
                if fit:
                    v.suffixes = list(self.evaluator.suffixes[v.expr])
                out[key] = ("num", block)
        offs = []
        for v in self.offsets:
            if v.source == "column":
                col = data.column(v.column)
                offs.append(_take(col.numeric(), rows))
            else:
                block = exprs[v.expr]
                if block.shape[1] != 1:
                    raise DataError(f"offset({v.key}) must be a single column")
                offs.append(block[:, 0])
        return out, offs, bad

    def _factor_codes(self, v: _Var, data: _Data, rows: np.ndarray | None,
                      exprs: list[np.ndarray], fit: bool) -> np.ndarray:
        """Level codes of a factor variable; at fit time also fixes its levels."""
        logical = v.logical
        if v.source == "column":
            col = data.column(v.column)
            codes, labels = col.factor()
            codes = _take(codes, rows)
            logical = col.kind == "bool" and v.explicit_levels is None and v.relevel_ref is None \
                and v.node is not None and isinstance(_strip(v.node), Name)
        else:
            vals = exprs[v.expr][:, 0]
            if v.logical:
                codes = np.where(np.isnan(vals), -1, vals != 0).astype(np.int64)
                labels = ["FALSE", "TRUE"]
            else:
                codes, uniq = pd.factorize(vals, sort=True)
                labels = [_label_of(u) for u in uniq]
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
                codes, labels = _drop_unused(codes, labels)
            v.levels = labels
            v._index = None
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


def _drop_unused(codes: np.ndarray, labels: list[str]) -> tuple[np.ndarray, list[str]]:
    used = np.bincount(codes, minlength=len(labels)) > 0 if len(codes) else \
        np.zeros(len(labels), bool)
    if used.all():
        return codes, list(labels)
    remap = np.cumsum(used) - 1
    return remap[codes].astype(codes.dtype, copy=False), [lab for lab, u in zip(labels, used) if u]


# ============================================================================================
# model matrices (R's model.matrix)
# ============================================================================================

@dataclass
class _Plan:
    """Column plan of one model matrix: per term the variables and their coding
    (1 = treatment contrasts, 2 = one column per level), plus R's column names."""

    intercept: bool
    terms: list[list[tuple[str, int]]]
    names: list[str]
    assign: list[int]
    columns: list[list[tuple[str, int]]]  # per column: (variable key, sub-column or level)


def _make_plan(scope: _Scope, intercept_name: str = "(Intercept)") -> _Plan:
    mt = scope.terms
    termsets = [frozenset(v.key for v in t.variables) for t in mt.terms]
    plan_terms: list[list[tuple[str, int]]] = []
    for j, t in enumerate(mt.terms):
        codes = []
        for v in t.variables:
            rest = termsets[j] - {v.key}
            # R's TermCode: contrasts if the term without this variable is (contained in)
            # an earlier term or is empty; otherwise the variable needs all its levels
            contrast = (not rest) or any(rest <= termsets[k] for k in range(j))
            codes.append((v.key, 1 if contrast else 2))
        plan_terms.append(codes)
    if not mt.intercept:
        # model.matrix: without an intercept the first factor of the first term with a
        # factor is coded by dummy variables
        done = False
        for codes in plan_terms:
            for i, (key, _) in enumerate(codes):
                var = scope.vars[key]
                if var.is_factor and len(var.levels) > 1:
                    codes[i] = (key, 2)
                    done = True
                    break
            if done:
                break
    names: list[str] = []
    assign: list[int] = []
    columns: list[list[tuple[str, int]]] = []
    if mt.intercept:
        names.append(intercept_name)
        assign.append(0)
        columns.append([])
    for j, codes in enumerate(plan_terms, start=1):
        blocks = []
        for key, code in codes:
            var = scope.vars[key]
            if var.is_factor:
                if len(var.levels) < 2 and code == 1:
                    only = repr(var.levels[0]) if var.levels else "none"
                    raise DataError(f"factor '{key}' has only one level ({only}) in the rows "
                                    f"used; contrasts need at least two levels")
                start = 1 if code == 1 else 0
                blocks.append([(key, lvl, key + var.levels[lvl])
                               for lvl in range(start, len(var.levels))])
            else:
                blocks.append([(key, k, key + suf) for k, suf in enumerate(var.suffixes)])
        # R varies the first variable fastest
        for combo in itertools.product(*reversed(blocks)):
            combo = combo[::-1]
            names.append(":".join(c[2] for c in combo))
            assign.append(j)
            columns.append([(c[0], c[1]) for c in combo])
    return _Plan(mt.intercept, plan_terms, names, assign, columns)


def _fill(plan: _Plan, values: dict[str, tuple], n: int,
          keep: Sequence[int] | None = None) -> np.ndarray:
    cols = plan.columns if keep is None else [plan.columns[i] for i in keep]
    M = np.empty((n, len(cols)), dtype=np.float64)
    for c, comps in enumerate(cols):
        if not comps:
            M[:, c] = 1.0
            continue
        acc = None
        for key, sub in comps:
            kind, data = values[key]
            vec = data[:, sub] if kind == "num" else (data == sub)
            if acc is None:
                acc = vec.astype(np.float64, copy=True) if kind == "fac" else vec
            else:
                acc = acc * vec
        M[:, c] = acc
    return M


def _rank_keep(X: np.ndarray, tol: float = 1e-7) -> list[int]:
    """Columns kept by R's LINPACK rule (``qr(X, tol = 1e-7, LAPACK = FALSE)``): left to
    right, a column is dropped when its residual norm after projection on the earlier
    columns is below ``tol`` times its own norm."""
    n, p = X.shape
    if p == 0:
        return []
    # fast path: a Cholesky factor of X'X gives the residual norms; when every one is far
    # above the tolerance (squaring X costs precision only near it), X has full rank
    if n >= p:
        G = X.T @ X
        d = np.sqrt(np.diag(G))
        if np.all(d > 0) and np.all(np.isfinite(d)):
            try:
                L = np.linalg.cholesky(G / np.outer(d, d))
                if np.all(np.abs(np.diag(L)) > 1e-4):
                    return list(range(p))
            except np.linalg.LinAlgError:
                pass
    norms = np.sqrt(np.einsum("ij,ij->j", X, X)) if n else np.zeros(p)
    keep: list[int] = []
    Q = np.zeros((n, 0))
    for j in range(p):
        if norms[j] == 0:
            continue
        x = X[:, j]
        r = x - Q @ (Q.T @ x)
        r = r - Q @ (Q.T @ r)  # re-orthogonalise (classical Gram-Schmidt twice)
        rn = np.linalg.norm(r)
        if rn >= tol * norms[j]:
            keep.append(j)
            Q = np.column_stack([Q, r / rn])
    return keep


# ============================================================================================
# grouping factors
# ============================================================================================

@dataclass
class _GroupSpec:
    """A grouping factor: the interaction of one or more columns, observed combinations only."""

    name: str
    columns: tuple[str, ...]
    var_levels: list[list[str]] = field(default_factory=list)  # per column, used levels
    keys: np.ndarray | None = None   # sorted combination keys (mixed radix) for interactions
    levels: list[str] = field(default_factory=list)

    def fit(self, data: _Data, rows: np.ndarray | None) -> np.ndarray:
        parts = []
        self.var_levels = []
        for c in self.columns:
            codes, labels = data.column(c).factor()
            codes, labels = _drop_unused(_take(codes, rows), labels)
            parts.append(codes)
            self.var_levels.append(labels)
        if len(parts) == 1:
            self.levels = self.var_levels[0]
            return parts[0].astype(np.int32, copy=False)
        key = self._combine(parts)
        codes, uniq = pd.factorize(key, sort=True)
        self.keys = np.asarray(uniq, dtype=np.int64)
        # labels: first column's level outermost, as R's a:b
        digits = self._digits(self.keys)
        self.levels = [":".join(self.var_levels[i][d[i]] for i in range(len(d)))
                       for d in zip(*digits)]
        return codes.astype(np.int32)

    def _combine(self, parts: list[np.ndarray]) -> np.ndarray:
        sizes = [len(lv) for lv in self.var_levels]
        if float(np.prod([float(s) for s in sizes])) >= 2.0 ** 62:
            raise ModelSpecError(f"grouping factor {self.name} has too many possible "
                                 f"combinations of levels")
        key = np.zeros(len(parts[0]), dtype=np.int64)
        for codes, size in zip(parts, sizes):
            key = key * size + codes
        return key

    def _digits(self, keys: np.ndarray) -> list[list[int]]:
        sizes = [len(lv) for lv in self.var_levels]
        out = []
        rest = keys.copy()
        for size in reversed(sizes):
            out.append((rest % size).tolist())
            rest //= size
        return out[::-1]

    def refs(self, data: _Data) -> np.ndarray:
        """Level of each row of new data (-1 = not a level of the fit)."""
        parts = []
        for c, levels in zip(self.columns, self.var_levels):
            codes, labels = data.column(c).factor()
            idx = {lab: i for i, lab in enumerate(levels)}
            lut = np.array([idx.get(lab, -1) for lab in labels] + [-1], dtype=np.int64)
            parts.append(lut[codes])
        if len(parts) == 1:
            return parts[0].astype(np.int32)
        bad = np.zeros(len(parts[0]), dtype=bool)
        for p in parts:
            bad |= p < 0
        key = self._combine([np.where(bad, 0, p) for p in parts])
        pos = np.searchsorted(self.keys, key)
        pos = np.minimum(pos, len(self.keys) - 1)
        found = (self.keys[pos] == key) & ~bad
        return np.where(found, pos, -1).astype(np.int32)


@dataclass
class _BarSpec:
    bar: BarTerm
    scope: _Scope
    plan: _Plan
    group: _GroupSpec


# ============================================================================================
# the frame
# ============================================================================================

_KNOWN_FAMILIES = {"gaussian", "binomial", "poisson", "gamma", "inverse.gaussian"}


@dataclass
class _FrameSpec:
    parsed: ParsedFormula
    fixed: _Scope
    plan: _Plan
    keep: list[int]
    bars: list[_BarSpec]          # in the order of ModelFrame.reterms
    offset_column: str | None
    offset_array_given: bool

    def new_design(self, frame: ModelFrame, newdata: Any, re_form: Any, allow_new_levels: bool,
                   offset: Any) -> NewDesign:
        data = _Data(newdata, "newdata")
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
                raise _not_found(c, data.names)
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
        X = _fill(self.plan, values, n, self.keep)
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
            Z = _fill(b.plan, vals, n)
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

    def _select_terms(self, re_form: Any, frame: ModelFrame) -> list[tuple[int, set | None]]:
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


def _column_term(b: _BarSpec, name: str) -> str:
    j = b.plan.names.index(name)
    a = b.plan.assign[j]
    return "(Intercept)" if a == 0 else b.scope.terms.terms[a - 1].label


def _row_label(data: _Data, columns: Sequence[str], i: int) -> str:
    parts = []
    for c in columns:
        codes, labels = data.column(c).factor()
        parts.append(labels[codes[i]] if codes[i] >= 0 else "NA")
    return ":".join(parts)


def build_model_frame(formula: str, data: Any, *, weights: str | Sequence[float] | np.ndarray
                      | None = None, offset: str | Sequence[float] | np.ndarray | None = None,
                      family: str = "gaussian", require_bars: bool = True) -> ModelFrame:
    """Build the arrays of a mixed model from an lme4 formula and a data frame.

    data: a pandas DataFrame, a polars DataFrame (or anything narwhals reads), or a dict of
        arrays; it is never modified.
    weights, offset: a column name or an array with one value per row of ``data``.
    family: ``"gaussian"``, ``"binomial"`` or ``"poisson"`` (decides how the response is
        read: a two-level factor or ``cbind(s, f)`` for binomial, counts for poisson).
    require_bars: if False a formula without random-effects terms is accepted (the frame
        then has no ``reterms``); :func:`build_fixed_frame` is the entry point for that.

    >>> import pandas as pd
    >>> df = pd.DataFrame({"y": [1.0, 2.1, 2.9, 4.2, 5.1, 5.8],
    ...                    "x": [0.0, 1.0, 2.0, 0.0, 1.0, 2.0],
    ...                    "g": ["b", "b", "b", "a", "a", "a"]})
    >>> mf = build_model_frame("y ~ x + (x | g)", df)
    >>> mf.fixef_names, mf.reterms[0].group, mf.reterms[0].terms, mf.reterms[0].levels
    (['(Intercept)', 'x'], 'g', ['(Intercept)', 'x'], ['a', 'b'])
    >>> mf.reterms[0].refs.tolist()
    [1, 1, 1, 0, 0, 0]
    """
    parsed = parse_formula(formula)
    if parsed.response is None:
        raise FormulaError("the formula has no response (write 'response ~ terms')", formula, 0)
    if not parsed.bars and require_bars:
        raise FormulaError("no random-effects terms; use multilevel.lm for a model without "
                           "random effects", formula, len(formula))
    family = str(family).lower()
    src = _Data(data)
    n_all = src.nrows

    # every name in the formula must be a column (R's constants aside)
    for c in parsed.columns:
        if c not in src and c not in CONSTANTS:
            raise _not_found(c, src.names)
    for b in parsed.bars:
        for g in b.group_vars:
            if g not in src:
                raise _not_found(g, src.names)

    fixed = _Scope(parsed.fixed, parsed.fixed.offsets, formula, src)
    bar_scopes = [_Scope(b.lhs, (), formula, src) for b in parsed.bars]
    response = _Response(parsed.response, formula, src, family)

    weights_arr, weights_name = _extra_column(src, weights, "weights")
    offset_arr, offset_name = _extra_column(src, offset, "offset")

    # ---- rows: drop any row with a missing value in a variable of the model ------------
    used_cols: dict[str, None] = {}
    for c in response.columns() + fixed.columns():
        used_cols.setdefault(c, None)
    for b, sc in zip(parsed.bars, bar_scopes):
        for c in sc.columns() + list(b.group_vars):
            used_cols.setdefault(c, None)
    missing = np.zeros(n_all, dtype=bool)
    any_missing = False
    for c in used_cols:
        if c in src:
            m = src.column(c).na_mask()
            if m is not None:
                missing |= m
                any_missing = True
    for arr in (weights_arr, offset_arr):
        if arr is not None:
            m = np.isnan(arr)
            if m.any():
                missing |= m
                any_missing = True
    for v in list(fixed.vars.values()) + [v for sc in bar_scopes for v in sc.vars.values()]:
        if v.is_factor and v.source == "column" and v.explicit_levels is not None:
            codes, labels = src.column(v.column).factor()
            outside = np.isin(codes, [i for i, lab in enumerate(labels)
                                      if lab not in set(v.explicit_levels)])
            if outside.any():  # factor(x, levels=) turns other values into NA
                missing |= outside
                any_missing = True

    # evaluate (twice if an expression yields NaN on some rows: R drops those rows too)
    for _attempt in range(3):
        rows = np.flatnonzero(~missing) if any_missing else None
        n = n_all if rows is None else len(rows)
        if n == 0:
            raise DataError(f"no rows left: all {n_all} rows have a missing value in a "
                            f"variable of the model ({', '.join(used_cols)})"
                            if n_all else "the data have no rows")
        fixed_vals, fixed_offs, bad = fixed.evaluate(src, rows, n, fit=True)
        y, resp_weights, resp_bad = response.evaluate(src, rows, n)
        bar_vals = []
        for sc in bar_scopes:
            vals, _, b_bad = sc.evaluate(src, rows, n, fit=True)
            bar_vals.append(vals)
            if b_bad is not None:
                bad = b_bad if bad is None else bad | b_bad
        if resp_bad is not None:
            bad = resp_bad if bad is None else bad | resp_bad
        if bad is None or not bad.any():
            break
        idx = np.arange(n_all) if rows is None else rows
        missing[idx[bad]] = True
        any_missing = True
    n_dropped = n_all - n
    warnings: list[FitWarning] = []
    if n_dropped:
        warnings.append(FitWarning("rows_dropped", f"{n_dropped} row{'s' if n_dropped != 1 else ''} "
                                   f"with missing values dropped"))

    # ---- random-effect terms (mkReTrms) -------------------------------------------------
    group_cache: dict[tuple[str, ...], tuple[_GroupSpec, np.ndarray]] = {}
    built = []
    for b, sc, vals in zip(parsed.bars, bar_scopes, bar_vals):
        gkey = b.group_vars
        if gkey not in group_cache:
            gs = _GroupSpec(b.group, b.group_vars)
            group_cache[gkey] = (gs, gs.fit(src, rows))
        gs, refs = group_cache[gkey]
        plan = _make_plan(sc)
        Z = _fill(plan, vals, n)
        built.append((ReTerm(b.group, list(plan.names), list(gs.levels), refs, Z,
                             spec=None, label=b.text), _BarSpec(b, sc, plan, gs)))
    nl = [rt.n_levels for rt, _ in built]
    if any(nl[i + 1] > nl[i] for i in range(len(nl) - 1)):
        # lme4: ord <- rev(order(nl)) -- decreasing, ties in reverse order of appearance
        order = list(np.argsort(np.asarray(nl), kind="stable")[::-1])
        built = [built[i] for i in order]
    for rt, bs in built:
        rt.spec = bs
    reterms = [rt for rt, _ in built]
    _check_reterms(reterms, n, family)

    # ---- fixed effects -------------------------------------------------------------------
    plan = _make_plan(fixed)
    X = _fill(plan, fixed_vals, n)
    _check_finite(X, plan.names, "fixed-effect model matrix")
    keep = _rank_keep(X)
    dropped: list[str] = []
    if len(keep) < X.shape[1]:
        dropped = [plan.names[j] for j in range(X.shape[1]) if j not in set(keep)]
        k = len(dropped)
        warnings.append(FitWarning("rank_deficient",
                                   f"fixed-effect model matrix is rank deficient so dropping {k} "
                                   f"column{'s' if k != 1 else ''} / coefficient{'s' if k != 1 else ''}: "
                                   f"{', '.join(dropped)}"))
        X = np.ascontiguousarray(X[:, keep])
    fixef_names = [plan.names[j] for j in keep]
    assign = np.asarray([plan.assign[j] for j in keep], dtype=np.int64)

    # ---- weights and offset ----------------------------------------------------------------
    w = None
    if weights_arr is not None:
        w = _take(weights_arr, rows).astype(np.float64, copy=True)
        if (w < 0).any():
            raise DataError(f"weights must be non-negative ({_what(weights_name, 'weights')} has "
                            f"{int((w < 0).sum())} negative value(s))")
        _check_finite(w[:, None], [_what(weights_name, "weights")], "weights")
    if resp_weights is not None:
        w = resp_weights if w is None else w * resp_weights
    off = None
    for o in fixed_offs + ([_take(offset_arr, rows)] if offset_arr is not None else []):
        off = o.astype(np.float64, copy=True) if off is None else off + o
    if off is not None:
        _check_finite(off[:, None], ["offset"], "offset")
    _check_finite(y[:, None], [response.name], "response")
    for rt in reterms:
        _check_finite(rt.Z, rt.terms, f"random-effects term ({rt.label})")

    factor_levels = {v.key: list(v.levels) for v in fixed.vars.values() if v.is_factor}
    if response.levels is not None:
        factor_levels = {response.name: list(response.levels), **factor_levels}
    spec = _FrameSpec(parsed, fixed, plan, list(keep), [rt.spec for rt in reterms],
                      offset_name, offset_arr is not None and offset_name is None)
    return ModelFrame(
        formula=formula,
        response=response.name,
        y=y,
        X=np.ascontiguousarray(X),
        fixef_names=fixef_names,
        reterms=reterms,
        weights=w,
        offset=off,
        rows=np.arange(n_all, dtype=np.int64) if rows is None else rows.astype(np.int64),
        n_dropped=n_dropped,
        dropped_columns=dropped,
        warnings=warnings,
        spec=spec,
        family=family,
        assign=assign,
        term_labels=parsed.fixed.labels,
        factor_levels=factor_levels,
    )


def build_fixed_frame(formula: str, data: Any, *, weights: str | Sequence[float] | np.ndarray
                      | None = None, offset: str | Sequence[float] | np.ndarray | None = None
                      ) -> ModelFrame:
    """The model frame of a fixed-effects-only model (``multilevel.lm``).

    Same formula language, missing-value rule, factor coding, stateful transforms and
    rank-deficiency rule as :func:`build_model_frame`; a formula with random-effects terms
    is an error. ``frame.y``, ``frame.X`` (estimable columns), ``frame.fixef_names``,
    ``frame.all_fixef_names`` (with the dropped ones), ``frame.dropped_columns`` and
    ``frame.new_design(newdata).X`` (for predictions) are what a least-squares fit needs.

    >>> mf = build_fixed_frame("y ~ x + factor(g)", {"y": [1., 2, 3, 5], "x": [0., 1, 2, 3],
    ...                        "g": ["a", "a", "b", "b"]})
    >>> mf.fixef_names, mf.new_design({"x": [1.5], "g": ["b"]}).X.tolist()
    (['(Intercept)', 'x', 'factor(g)b'], [[1.0, 1.5, 1.0]])
    """
    parsed = parse_formula(formula)
    if parsed.bars:
        raise FormulaError("this model has no random effects: remove the (... | g) terms (use "
                           "factor(g) for one coefficient per group), or fit it with lmer",
                           formula, parsed.bars[0].pos)
    return build_model_frame(formula, data, weights=weights, offset=offset, family="gaussian",
                             require_bars=False)


def _what(name: str | None, default: str) -> str:
    return f"column '{name}'" if name else default


def _extra_column(src: _Data, value: Any, what: str) -> tuple[np.ndarray | None, str | None]:
    """weights= / offset=: a column name or an array of one value per row."""
    if value is None:
        return None, None
    if isinstance(value, str):
        col = src.column(value)
        if not col.is_numeric:
            raise DataError(f"{what} column '{value}' is not numeric ({col.describe()})")
        return col.numeric(), value
    arr = _as_array(value)
    try:
        arr = np.asarray(pd.Series(arr).to_numpy(dtype=np.float64, na_value=np.nan))
    except (TypeError, ValueError) as e:
        raise DataError(f"{what} must be numeric") from e
    if arr.ndim != 1 or arr.shape[0] != src.nrows:
        raise DataError(f"{what} has {arr.shape[0] if arr.ndim else 1} values, the data have "
                        f"{src.nrows} rows")
    return arr, None


def _check_finite(M: np.ndarray, names: Sequence[str], what: str) -> None:
    # a finite sum proves all entries finite without a temporary of M's size
    if M.size == 0 or np.isfinite(M.sum()):
        return
    if not np.isfinite(M).all():
        bad = ~np.isfinite(M)
        cols = [names[j] for j in np.flatnonzero(bad.any(axis=0))]
        raise DataError(f"{what} has infinite values (in {', '.join(cols)}); check "
                        f"transformations such as log(0)")


def _check_reterms(reterms: list[ReTerm], n: int, family: str) -> None:
    """lme4's checkNlevels and checkZdims (GLMMs allow as many levels / effects as rows)."""
    glmm = family != "gaussian"
    seen: dict[str, int] = {}
    for rt in reterms:
        seen.setdefault(rt.group, rt.n_levels)
    for g, nlev in seen.items():
        if nlev < 2:
            raise ModelSpecError(f"grouping factor '{g}' has only one level; a random effect "
                                 f"needs at least two groups")
    bad = [g for g, nlev in seen.items() if (nlev > n if glmm else nlev >= n)]
    if bad:
        detail = ", ".join(f"{g}: {seen[g]} levels" for g in bad)
        raise ModelSpecError(f"number of levels of each grouping factor must be "
                             f"{'<=' if glmm else '<'} number of observations (problems: "
                             f"{detail}; {n} observations)")
    for rt in reterms:
        q = rt.n_levels * rt.n_terms
        if (n < q) if glmm else (n <= q):
            cmp = "<" if glmm else "<="
            extra = "" if glmm else " and the residual variance (or scale parameter)"
            raise ModelSpecError(f"number of observations (={n}) {cmp} number of random effects "
                                 f"(={q}) for term ({rt.label}); the random-effects "
                                 f"parameters{extra} are probably unidentifiable")


# ============================================================================================
# the response
# ============================================================================================

class _Response:
    """The response as lme4 reads it for each family (binomial's ``initialize`` rules).

    Only the reading (factor, cbind, expression) is here; the family's own value checks
    (0/1 or proportions, counts, ...) belong to ``Family.check_response``."""

    def __init__(self, node: Node, text: str, data: _Data, family: str):
        self.node = node
        self.name = deparse(node)
        self.family = family
        self.data = data
        self.levels: list[str] | None = None  # a factor response's levels (binomial)
        n = _strip(node)
        self.cbind = isinstance(n, Call) and n.func == "cbind"
        self.column = n.name if isinstance(n, Name) and n.name in data else None
        nodes = [a.value for a in n.args] if self.cbind else ([] if self.column else [node])
        self.parts = nodes
        self.evaluator = NumericExpressions(nodes, text)
        if self.cbind and family != "binomial":
            raise DataError(f"a cbind(successes, failures) response needs family='binomial', "
                            f"not '{family}'")

    def columns(self) -> list[str]:
        return [self.column] if self.column else list(self.evaluator.names)

    def evaluate(self, data: _Data, rows, n: int):
        """(y, weights from cbind or None, rows where an expression is NaN)."""
        fam = self.family
        if self.column is not None:
            col = data.column(self.column)
            if col.kind in ("categorical", "string"):
                if fam != "binomial":
                    raise DataError(f"the response '{self.column}' is {col.describe()}, not "
                                    f"numeric; a {fam} model needs a numeric response")
                codes, labels = col.factor()
                codes, labels = _drop_unused(_take(codes, rows), labels)
                self.levels = labels
                # binomial()$initialize: the first level is failure, any other success
                y = (codes != 0).astype(np.float64)
                return y, None, None
            if col.kind == "other":
                raise DataError(f"the response '{self.column}' ({col.describe()}) is not numeric")
            y = _take(col.numeric(), rows).astype(np.float64, copy=True)
            return y, None, None
        env = {nm: _take(data.column(nm).raw(), rows) for nm in self.evaluator.names
               if nm in data}
        blocks = self.evaluator.fit(env, n)
        bad = None
        for b in blocks:
            m = np.isnan(b).any(axis=1)
            if m.any():
                bad = m if bad is None else bad | m
        if any(b.shape[1] != 1 for b in blocks):
            raise DataError(f"the response {self.name} must be one column")
        if self.cbind:
            s, f = blocks[0][:, 0], blocks[1][:, 0]
            if ((s < 0) | (f < 0)).any():
                raise DataError(f"{self.name}: successes and failures must be non-negative")
            trials = s + f
            with np.errstate(invalid="ignore", divide="ignore"):
                y = np.where(trials > 0, s / np.where(trials > 0, trials, 1.0), 0.0)
            return y, trials.astype(np.float64), bad
        y = np.ascontiguousarray(blocks[0][:, 0], dtype=np.float64)
        return y, None, bad
