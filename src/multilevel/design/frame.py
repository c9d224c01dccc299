"""Model frame: from a formula and a data frame to the arrays the engines use.

Layer: design. May import: formula, errors, control.

Why this module: it is the top of the design layer, the one place that runs the whole
pipeline (:func:`build_model_frame`, :func:`build_fixed_frame`) over the modules below it:
:mod:`~multilevel.design.source` (the data), :mod:`~multilevel.design.variables` (encodings),
:mod:`~multilevel.design.matrices` (``model.matrix``), :mod:`~multilevel.design.grouping`
(random-effect terms), :mod:`~multilevel.design.response` and
:mod:`~multilevel.design.newdata` (the learnt spec). It returns plain numpy arrays (``y``,
``X``, one :class:`~multilevel.design.grouping.ReTerm` per random-effect term) plus everything
needed to build the same matrices for new data (``ModelFrame.new_design``). Engines never see
data frames or formula strings.

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

- R's contrasts (:mod:`~multilevel.design.contrasts`): ``contr.treatment`` by default,
  ``contr.poly`` for ordered factors, others through the ``contrasts=`` argument;
- every expression is evaluated on all rows before the incomplete ones are dropped, as R's
  model frame does, so stateful transforms (``scale()``, ``poly()``, ``center()``) learn
  from all rows (their missing values skipped);
- a fixed term that is the response (``y ~ y + x``) is dropped with R's warning.

Known difference: strings are sorted by code point, not by the locale's collation.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from multilevel.design.contrasts import Contrast, normalize_contrasts
from multilevel.design.grouping import BarSpec, GroupSpec, ReTerm
from multilevel.design.grouped import GroupedColumns, grouped_columns, rank_keep_grouped
from multilevel.design.matrices import column_sumsq, fill_columns, gram, make_plan, rank_keep
from multilevel.design.newdata import FrameSpec, NewDesign
from multilevel.design.response import Response
from multilevel.design.source import DataSource, as_array, column_not_found, take_rows
from multilevel.design.variables import Scope
from multilevel.errors import DataError, FitWarning, FormulaError, ModelSpecError
from multilevel.formula import Call, ModelTerms, Node, ParsedFormula, Paren, parse_formula
from multilevel.formula._centering import allow_new_groups
from multilevel.formula._model import CONSTANTS

__all__ = ["ModelFrame", "GroupedFrame", "build_model_frame", "build_fixed_frame"]


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
    rows:           int64 positions (0-based) in the user's frame of the rows used (given
                    as None when every row was used: then made on first access).
    n_dropped:      number of rows dropped for missing values.
    warnings:       records (:class:`~multilevel.errors.FitWarning`) for the fit's warnings
                    (codes ``rows_dropped``, ``rank_deficient``).
    spec:           a :class:`~multilevel.design.newdata.FrameSpec`: the parsed formula and
                    every encoding (factor levels, formulaic ModelSpecs of stateful
                    transforms, column plans) that ``new_design`` re-applies.

    Added beyond the contract:

    family:         the family the frame was built for (response checks differ).
    assign:         (p,) int array: the fixed term of each column of X (0 = intercept), R's
                    ``attr(X, "assign")`` after dropping columns.
    term_labels:    R's labels of the fixed terms (``assign`` k > 0 is ``term_labels[k-1]``).
    factor_levels:  level order (first = reference) of each factor in the fixed part (and of
                    a factor response), as in the reference JSON's ``factor_levels``.
    contrasts:      the :class:`~multilevel.design.contrasts.Contrast` of each factor of the
                    fixed part (R's ``attr(X, "contrasts")``; the reference JSON's
                    ``fixed_contrasts``), re-applied to new data by ``new_design``.
    contrasts_arg:  the ``contrasts=`` argument as normalized (short names or matrices).
    row_labels:     the user's row labels of the rows used (a pandas frame's ``index[rows]``,
                    lme4's row names), or None for data without labels (polars, dicts): the
                    index of ``fitted()`` and ``residuals()``.
    """

    formula: str
    response: str
    y: np.ndarray
    X: np.ndarray
    fixef_names: list[str]
    reterms: list[ReTerm]
    weights: np.ndarray | None = None
    offset: np.ndarray | None = None
    rows: np.ndarray | None = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    n_dropped: int = 0
    dropped_columns: list[str] = field(default_factory=list)
    warnings: list[FitWarning] = field(default_factory=list)
    spec: Any = None  # what new_design needs (formulaic model spec, factor levels, ...)
    family: str = "gaussian"
    assign: np.ndarray | None = None
    term_labels: list[str] = field(default_factory=list)
    factor_levels: dict[str, list[str]] = field(default_factory=dict)
    contrasts: dict[str, Contrast] = field(default_factory=dict)
    contrasts_arg: dict[str, Any] = field(default_factory=dict)
    row_labels: Any = None
    data_name: str | None = None  # the data's name for the summaries' Data: line

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
        spec: FrameSpec = self.spec
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


def _frame_rows(self: ModelFrame) -> np.ndarray:
    rows = self.__dict__.get("_rows")
    if rows is None:
        # None: every row of the data was used; a frame pickled before rows were made on
        # first use has them under their own name
        rows = self.__dict__.get("rows")
        if rows is None:
            rows = np.arange(self.nobs, dtype=np.int64)
        self.__dict__["_rows"] = rows
    return rows


def _set_frame_rows(self: ModelFrame, value: np.ndarray | None) -> None:
    self.__dict__["_rows"] = value


# ``rows`` is made on first use when every row was used (given as None): an arange of the
# rows is as large as the response, and most fits never ask for it
ModelFrame.rows = property(_frame_rows, _set_frame_rows,  # type: ignore[assignment]
                           doc="int64 positions (0-based) in the user's frame of the rows used")


class GroupedFrame(ModelFrame):
    """A :class:`ModelFrame` whose X is kept as blocks (``grouped``, a
    :class:`~multilevel.design.grouped.GroupedColumns`) and filled on first access.

    Built by :func:`build_model_frame` with ``group_key=``. Least-squares code that knows
    the blocks (``multilevel.results.lm``) never fills X; everything else sees an ordinary
    frame. Pickles and copies as one (the blocks, and X once filled, are plain arrays).
    """

    grouped: GroupedColumns

    @property  # type: ignore[override]
    def X(self) -> np.ndarray:
        X = self.__dict__.get("_X")
        if X is None:
            X = np.ascontiguousarray(self.grouped.dense(list(self.spec.keep)))
            self.__dict__["_X"] = X
        return X

    @X.setter
    def X(self, value: np.ndarray | None) -> None:
        self.__dict__["_X"] = value


_KNOWN_FAMILIES = {"gaussian", "binomial", "poisson", "gamma", "inverse.gaussian"}


#: the largest dense model matrix (X, or one random-effect term's Z) built by default, GiB
#: (LmerControl's ``max_dense_gib``)
MAX_DENSE_GIB = 4.0


def build_model_frame(formula: str, data: Any, *, weights: str | Sequence[float] | np.ndarray
                      | None = None, offset: str | Sequence[float] | np.ndarray | None = None,
                      family: str = "gaussian", require_bars: bool = True,
                      contrasts: Mapping[str, Any] | None = None,
                      max_dense_gib: float = MAX_DENSE_GIB, _skeleton: bool = False,
                      group_key: str | None = None) -> ModelFrame:
    """Build the arrays of a mixed model from an lme4 formula and a data frame.

    data: a pandas DataFrame, a polars DataFrame (or anything narwhals reads), or a dict of
        arrays; it is never modified.
    weights, offset: a column name or an array with one value per row of ``data``.
    family: ``"gaussian"``, ``"binomial"`` or ``"poisson"`` (decides how the response is
        read: a two-level factor or ``cbind(s, f)`` for binomial, counts for poisson).
    require_bars: if False a formula without random-effects terms is accepted (the frame
        then has no ``reterms``); :func:`build_fixed_frame` is the entry point for that.
    contrasts: lme4's ``contrasts=``: factor of the fixed part -> ``"treatment"``, ``"sum"``,
        ``"helmert"``, ``"poly"``, ``"SAS"`` (R's ``"contr.sum"`` spelling too) or a matrix
        with one row per level; other factors get R's defaults (``contr.poly`` for ordered
        ones). See :mod:`multilevel.design.contrasts`.
    max_dense_gib: the largest dense model matrix (X, or one term's Z) to build; a larger one
        (a fixed factor with 30,000 levels) is a ModelSpecError saying its size, raised
        before anything is allocated.
    _skeleton: the data are a skeleton of data read in chunks (``design.chunked``): one row
        per observed combination of the factors, so only the learnt specification counts;
        the checks that need the real rows (number of levels against rows, rank of X) are
        left to the chunked path, which makes them on the accumulated blocks.
    group_key: a factor variable of the fixed part (``"factor(g)"``) whose indicator columns
        make X block-structured (one intercept and slope per group): X is then kept as its
        blocks (:mod:`~multilevel.design.grouped`) and the frame is a :class:`GroupedFrame`
        that fills X only when asked for. Same columns, rank rule and checks; without that
        shape an ordinary frame.

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
    src = DataSource(data)
    n_all = src.nrows

    # every name in the formula must be a column (R's constants aside)
    for c in parsed.columns:
        if c not in src and c not in CONSTANTS:
            raise column_not_found(c, src.names)
    for b in parsed.bars:
        for g in b.group_vars:
            if g not in src:
                raise column_not_found(g, src.names)

    contrasts_arg = normalize_contrasts(contrasts)
    fixed_terms, rhs_warnings = drop_response_terms(parsed)
    fixed = Scope(fixed_terms, parsed.fixed.offsets, formula, src, contrasts_arg)
    bar_scopes = [Scope(b.lhs, (), formula, src) for b in parsed.bars]
    response = Response(parsed.response, formula, src, family)

    weights_arr, weights_name = _extra_column(src, weights, "weights")
    offset_arr, offset_name = _extra_column(src, offset, "offset")

    # ---- rows: drop any row with a missing value in a variable of the model ------------
    used_cols: dict[str, None] = {}
    for c in response.columns() + fixed.columns():
        used_cols.setdefault(c, None)
    for b, sc in zip(parsed.bars, bar_scopes):
        for c in sc.columns() + list(b.group_vars):
            used_cols.setdefault(c, None)
    # the masks of every source of missing rows, combined once at the end
    masks: list[np.ndarray] = []
    m = src.missing(used_cols)
    if m is not None:
        masks.append(m)
    for arr in (weights_arr, offset_arr):
        if arr is not None:
            m = np.isnan(arr)
            if m.any():
                masks.append(m)
    for v in list(fixed.vars.values()) + [v for sc in bar_scopes for v in sc.vars.values()]:
        if v.is_factor and v.source == "column" and v.explicit_levels is not None:
            codes, labels = src.column(v.column).factor()
            outside = np.isin(codes, [i for i, lab in enumerate(labels)
                                      if lab not in set(v.explicit_levels)])
            if outside.any():  # factor(x, levels=) turns other values into NA
                masks.append(outside)

    # evaluate every expression on all rows first, as R's model frame does before na.omit:
    # stateful transforms (scale(), poly(), center()) learn from all rows, and rows where an
    # expression is NaN are dropped with the rows that have a missing value
    learnt = []
    for sc in [fixed] + bar_scopes:
        blocks, bad = sc.learn_expressions(src)
        learnt.append(blocks)
        if bad is not None:
            masks.append(bad)
    resp_blocks, resp_bad = response.learn(src)
    if resp_bad is not None:
        masks.append(resp_bad)
    rows = np.flatnonzero(~np.logical_or.reduce(masks)) if masks else None
    n = n_all if rows is None else len(rows)
    if n == 0:
        raise DataError(f"no rows left: all {n_all} rows have a missing value in a "
                        f"variable of the model ({', '.join(used_cols)})"
                        if n_all else "the data have no rows")

    def used(blocks: list[np.ndarray] | None) -> list[np.ndarray] | None:
        return None if blocks is None else [take_rows(b, rows) for b in blocks]

    fixed_vals, fixed_offs, _ = fixed.evaluate(src, rows, n, fit=True, exprs=used(learnt[0]))
    y, resp_weights, _ = response.evaluate(src, rows, n, blocks=used(resp_blocks))
    bar_vals = [sc.evaluate(src, rows, n, fit=True, exprs=used(blocks))[0]
                for sc, blocks in zip(bar_scopes, learnt[1:])]
    n_dropped = n_all - n
    warnings: list[FitWarning] = list(rhs_warnings)
    if n_dropped:
        warnings.append(FitWarning("rows_dropped", f"{n_dropped} row{'s' if n_dropped != 1 else ''} "
                                   f"with missing values dropped"))

    # ---- random-effect terms (mkReTrms) -------------------------------------------------
    group_cache: dict[tuple[str, ...], tuple[GroupSpec, np.ndarray]] = {}
    built = []
    for b, sc, vals in zip(parsed.bars, bar_scopes, bar_vals):
        gkey = b.group_vars
        if gkey not in group_cache:
            gs = GroupSpec(b.group, b.group_vars)
            group_cache[gkey] = (gs, gs.fit(src, rows))
        gs, refs = group_cache[gkey]
        plan = make_plan(sc)
        _check_dense_size(n, plan.names, f"the random-effects term ({b.text})", max_dense_gib)
        Z = fill_columns(plan, vals, n)
        built.append((ReTerm(b.group, list(plan.names), list(gs.levels), refs, Z,
                             spec=None, label=b.text, structure=b.structure), BarSpec(b, sc, plan, gs)))
    nl = [rt.n_levels for rt, _ in built]
    if any(nl[i + 1] > nl[i] for i in range(len(nl) - 1)):
        # lme4: ord <- rev(order(nl)) -- decreasing, ties in reverse order of appearance
        order = list(np.argsort(np.asarray(nl), kind="stable")[::-1])
        built = [built[i] for i in order]
    for rt, bs in built:
        rt.spec = bs
    reterms = [rt for rt, _ in built]
    if not _skeleton:
        _check_reterms(reterms, n, family)

    # ---- fixed effects -------------------------------------------------------------------
    plan = make_plan(fixed)
    _check_dense_size(n, plan.names, "the fixed-effect model matrix", max_dense_gib)
    grouped = None
    if group_key is not None and not _skeleton:
        grouped = grouped_columns(plan, fixed_vals, n, group_key)
        if grouped is not None and not _scale_ok(grouped):
            grouped = None  # the dense checks below say which column and why
    if grouped is None:
        X = fill_columns(plan, fixed_vals, n)
        # X'X serves both the range check of its diagonal and the rank rule's certificate
        xtx = gram(X)
        _check_columns(X, plan.names, "fixed-effect model matrix", "the fixed-effect column",
                       sumsq=np.diag(xtx))
        keep = list(range(X.shape[1])) if _skeleton else rank_keep(X, xtx=xtx)
    else:
        X = None  # filled from the blocks when asked for (GroupedFrame.X)
        keep = rank_keep_grouped(grouped)
    P = len(plan.names)
    dropped: list[str] = []
    if len(keep) < P:
        kept = set(keep)
        dropped = [plan.names[j] for j in range(P) if j not in kept]
        k = len(dropped)
        warnings.append(FitWarning("rank_deficient",
                                   f"fixed-effect model matrix is rank deficient so dropping {k} "
                                   f"column{'s' if k != 1 else ''} / coefficient{'s' if k != 1 else ''}: "
                                   f"{', '.join(dropped)}"))
        if X is not None:
            X = np.ascontiguousarray(X[:, keep])
    fixef_names = [plan.names[j] for j in keep]
    assign = np.asarray([plan.assign[j] for j in keep], dtype=np.int64)

    # ---- weights and offset ----------------------------------------------------------------
    w = None
    if weights_arr is not None:
        w = take_rows(weights_arr, rows).astype(np.float64, copy=True)
        if (w < 0).any():
            raise DataError(f"weights must be non-negative ({_what(weights_name, 'weights')} has "
                            f"{int((w < 0).sum())} negative value(s))")
        _check_finite(w[:, None], [_what(weights_name, "weights")], "weights")
        if not (w > 0).any():
            raise DataError(f"weights are all 0 ({_what(weights_name, 'weights')}): no row "
                            f"carries information")
        _check_scale(w[:, None], [_what(weights_name, "weights")], "the weights")
    if resp_weights is not None:
        w = resp_weights if w is None else w * resp_weights
    off = None
    for o in fixed_offs + ([take_rows(offset_arr, rows)] if offset_arr is not None else []):
        off = o.astype(np.float64, copy=True) if off is None else off + o
    if off is not None:
        _check_finite(off[:, None], ["offset"], "offset")
    _check_columns(y[:, None], [response.name], "response", "the response", w)
    for rt in reterms:
        _check_columns(rt.Z, rt.terms, f"random-effects term ({rt.label})",
                       f"the column of random-effects term ({rt.label})")

    merged = {**src.merged_levels()}
    for sc in [fixed] + bar_scopes:
        merged.update(sc.merged)
    for name, levels in merged.items():
        warnings.append(FitWarning("levels_merged",
                                   f"factor '{name}': different values with the same text were "
                                   f"merged into one level, as R's factor() does: "
                                   f"{'; '.join(levels[:3])}{'; ...' if len(levels) > 3 else ''}"))

    factor_levels = {v.key: list(v.levels) for v in fixed.vars.values() if v.is_factor}
    # R's attr(model.matrix, "contrasts"): every factor of the fixed part, also those coded
    # by one indicator per level (there the contrast is recorded but not used, as in R)
    fixed_contrasts = {v.key: v.contrast for v in fixed.vars.values()
                       if v.is_factor and v.contrast is not None}
    if response.levels is not None:
        factor_levels = {response.name: list(response.levels), **factor_levels}
    spec = FrameSpec(parsed, fixed, plan, list(keep), [rt.spec for rt in reterms],
                      offset_name, offset_arr is not None and offset_name is None)
    frame = (ModelFrame if grouped is None else GroupedFrame)(
        formula=formula,
        response=response.name,
        y=y,
        X=None if X is None else np.ascontiguousarray(X),
        fixef_names=fixef_names,
        reterms=reterms,
        weights=w,
        offset=off,
        rows=None if rows is None else rows.astype(np.int64),  # None: all, made when asked
        n_dropped=n_dropped,
        dropped_columns=dropped,
        warnings=warnings,
        spec=spec,
        family=family,
        assign=assign,
        term_labels=fixed_terms.labels,
        factor_levels=factor_levels,
        contrasts=fixed_contrasts,
        contrasts_arg=contrasts_arg,
        row_labels=_row_labels(data, rows),
        data_name=_data_name(data),
    )
    if grouped is not None:
        frame.grouped = grouped
    return frame


def _scale_ok(gc: GroupedColumns) -> bool:
    """Whether every column of the blocks passes :func:`_check_scale` (else the dense
    check runs, for its message)."""
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        ss = gc.sumsq()
    lo, hi = _SUMSQ_RANGE
    if not (ss <= hi).all():
        return False
    return not ((ss < lo) & (gc.nonzeros() > 0)).any()


def _data_name(data: Any) -> str | None:
    """The name a data frame carries in ``attrs["name"]`` (the bundled data sets do, as R's
    data sets carry theirs), for the ``Data:`` line of summaries; None otherwise."""
    attrs = getattr(data, "attrs", None)
    name = attrs.get("name") if isinstance(attrs, dict) else None
    return name if isinstance(name, str) and name else None


def _row_labels(data: Any, rows: np.ndarray | None) -> pd.Index | None:
    """The pandas index of the rows used (None for data without row labels)."""
    if not isinstance(data, pd.DataFrame):
        return None
    return data.index if rows is None else data.index[rows]


def build_fixed_frame(formula: str, data: Any, *, weights: str | Sequence[float] | np.ndarray
                      | None = None, offset: str | Sequence[float] | np.ndarray | None = None,
                      contrasts: Mapping[str, Any] | None = None,
                      max_dense_gib: float = MAX_DENSE_GIB,
                      group_key: str | None = None) -> ModelFrame:
    """The model frame of a fixed-effects-only model (``multilevel.lm``).

    Same formula language, missing-value rule, factor coding, stateful transforms and
    rank-deficiency rule as :func:`build_model_frame`; a formula with random-effects terms
    is an error. ``frame.y``, ``frame.X`` (estimable columns), ``frame.fixef_names``,
    ``frame.all_fixef_names`` (with the dropped ones), ``frame.dropped_columns`` and
    ``frame.new_design(newdata).X`` (for predictions) are what a least-squares fit needs.
    ``group_key``: see :func:`build_model_frame`.

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
                             require_bars=False, contrasts=contrasts, max_dense_gib=max_dense_gib,
                             group_key=group_key)


def drop_response_terms(parsed: ParsedFormula) -> tuple[ModelTerms, list[FitWarning]]:
    """The fixed terms without those that are the response itself, with R's warnings.

    R's ``model.matrix`` drops a term whose only variable is the response (``y ~ y + x``,
    also ``log(y) ~ log(y) + x``) and warns twice ("the response appeared on the right-hand
    side and was dropped", "problem with term k in model.matrix: no columns are assigned");
    interactions with it (``y:x``) stay, as in R. We also drop ``I(y)`` (the response inside
    ``I()`` or parentheses), which lme4 keeps and fits as y on itself (coefficient 1, zero
    residual variance, failed convergence checks): a model no one means to fit.
    """
    if parsed.response is None:
        return parsed.fixed, []
    # (a node's key is its deparsed text, computed once per parsed formula)
    target = _strip_identity(parsed.response).key
    kept, warns = [], []
    for k, t in enumerate(parsed.fixed.terms, start=1):
        if len(t.variables) == 1 and _strip_identity(t.variables[0]).key == target:
            warns.append(FitWarning("response_on_rhs",
                                    f"the response appeared on the right-hand side and was "
                                    f"dropped: term '{t.label}' (problem with term {k} in "
                                    f"model.matrix: no columns are assigned)"))
        else:
            kept.append(t)
    if not warns:
        return parsed.fixed, []
    keys = {v.key for t in kept for v in t.variables}
    variables = tuple(v for v in parsed.fixed.variables if v.key in keys)
    return dataclasses.replace(parsed.fixed, terms=tuple(kept), variables=variables), warns


def _strip_identity(node: Node) -> Node:
    """``I(x)`` and ``(x)`` are ``x`` for comparing a term with the response."""
    while True:
        if isinstance(node, Paren):
            node = node.inner
        elif isinstance(node, Call) and node.func == "I" and len(node.args) == 1 \
                and node.args[0].name is None:
            node = node.args[0].value
        else:
            return node


def _what(name: str | None, default: str) -> str:
    return f"column '{name}'" if name else default


def _extra_column(src: DataSource, value: Any, what: str) -> tuple[np.ndarray | None, str | None]:
    """weights= / offset=: a column name or an array of one value per row."""
    if value is None:
        return None, None
    if isinstance(value, str):
        col = src.column(value)
        if not col.is_numeric:
            raise DataError(f"{what} column '{value}' is not numeric ({col.describe()})")
        return col.numeric(), value
    arr = as_array(value)
    if np.iscomplexobj(arr):
        raise DataError(f"{what} has complex numbers; it must be real")
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


def _check_dense_size(n: int, names: Sequence[str], what: str, max_gib: float) -> None:
    """Refuse a dense n x k matrix above ``max_gib`` before allocating it (the number of
    columns comes from the column plan: a factor's levels, an interaction's products)."""
    gib = n * len(names) * 8 / 2**30
    if gib > max_gib:
        raise ModelSpecError(f"{what} would be {n:,} x {len(names):,} doubles = {gib:.1f} GiB, "
                             f"above the limit of {max_gib:g} GiB (control max_dense_gib); "
                             f"a factor with many levels is better a random effect, (1 | f)")


#: sums of squares a column of the model may have: the engine's cross products (and their
#: products with the covariance parameters) stay well inside double precision, whose range
#: ends at 1.8e308 (overflow) and 2.2e-308 (loss of digits); lme4 returns an infinite
#: criterion or a wrong fit outside it
_SUMSQ_RANGE = (1e-290, 1e300)


def _check_columns(M: np.ndarray, names: Sequence[str], finite_what: str, scale_what: str,
                   weights: np.ndarray | None = None, *, sumsq: np.ndarray | None = None) -> None:
    """:func:`_check_finite` then :func:`_check_scale`, in one pass over M when every
    column's (weighted) sum of squares is inside :data:`_SUMSQ_RANGE` (a NaN or infinite
    entry makes its column's sum NaN or infinite, which fails that test): then neither can
    fail. Otherwise both run, in that order, and say what is wrong. ``sumsq``: the column
    sums of squares if the caller has them (the diagonal of X'X)."""
    if M.size == 0:
        return
    ss = _sumsq(M, weights) if sumsq is None else sumsq.tolist()
    lo, hi = _SUMSQ_RANGE
    if all(lo <= v <= hi for v in ss):  # (Python floats: a few columns; NaN fails)
        return
    _check_finite(M, names, finite_what)
    _check_scale(M, names, scale_what, weights)


def _sumsq(M: np.ndarray, weights: np.ndarray | None) -> list[float]:
    """Column sums of squares (weighted: sum w m^2); an overflow is an infinite sum, which
    the caller's test catches, without numpy's warning."""
    if weights is None:
        return column_sumsq(M)
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        return np.einsum("i,ij,ij->j", weights, M, M).tolist()


def _check_scale(M: np.ndarray, names: Sequence[str], what: str,
                 weights: np.ndarray | None = None) -> None:
    """Refuse columns whose (weighted) sum of squares leaves :data:`_SUMSQ_RANGE` (y times
    1e200, a covariate in 1e-160 units): refused rather than rescaled, because every number
    of the fit (log-likelihood constants, standard errors, profiles, predictions) would have
    to be scaled back, and such units are almost always a mistake the user can fix."""
    if M.size == 0:
        return
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        ss = np.einsum("ij,ij->j", M, M) if weights is None else \
            np.einsum("i,ij,ij->j", weights, M, M)
    lo, hi = _SUMSQ_RANGE
    # a sum of squares below the range (even 0, when the squares underflow) of a column that
    # is not all zero
    tiny = [j for j in np.flatnonzero(ss < lo) if np.abs(M[:, j]).max() > 0]
    bad = sorted(set(np.flatnonzero(~(ss <= hi)).tolist()) | set(tiny))
    if not bad:
        return
    j = int(bad[0])
    big = np.abs(M[:, j]).max()
    if j in tiny:
        raise DataError(f"{what} '{names[j]}' has values no larger than {big:.3g}: too small to "
                        f"square in double precision; rescale it (e.g. multiply it by "
                        f"{10.0 ** -np.floor(np.log10(big)):.0e})")
    raise DataError(f"{what} '{names[j]}' has values up to {big:.3g}: too large to square in "
                    f"double precision; rescale it (e.g. divide it by "
                    f"{10.0 ** np.floor(np.log10(max(big, 1.0))):.0e})")


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
        if getattr(rt, "structure", "us") == "ar1":
            # lme4's rule guards terms whose covariance has a free variance per column, which
            # with one row per random effect cannot be told from the residual variance; ar1()
            # has one SD and a correlation (AR(1) + residual is identified, as glmmTMB fits it)
            continue
        if (n < q) if glmm else (n <= q):
            cmp = "<" if glmm else "<="
            extra = "" if glmm else " and the residual variance (or scale parameter)"
            raise ModelSpecError(f"number of observations (={n}) {cmp} number of random effects "
                                 f"(={q}) for term ({rt.label}); the random-effects "
                                 f"parameters{extra} are probably unidentifiable")
