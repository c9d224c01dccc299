"""The model's specification learnt over row chunks, and each chunk's arrays built from it.

Layer: design. May import: formula, errors, control.

Why a module of its own: data read in chunks (Arrow batches of files, Dask partitions) never
sit in memory at once, yet the fit must be the in-memory fit of all rows. R's model frame
learns from all rows: stateful transforms (``scale()``, ``poly()``, ``center()``,
``group_mean()``) before incomplete rows are dropped, factor levels (R's order, unused ones
dropped) on the complete rows. :class:`ChunkedDesign` does the same in passes over the
chunks, each a map over chunks with an exact merge (so Dask can run it as a tree reduction):

1. (only with stateful transforms) each chunk's sufficient statistics of the transforms
   (:mod:`multilevel.formula._streaming`), merged;
2. each chunk's complete rows (missing values as R's ``na.omit``, with the transforms'
   merged state), the distinct combinations of the factor columns there, one complete row,
   the categories of categorical columns: a *skeleton* of the data, one row per observed
   combination of the factors. :func:`~multilevel.design.frame.build_model_frame` on the
   skeleton, with the transforms' state preset, learns the specification every in-memory
   fit learns (levels, contrasts, column plans, grouping factors, names);
3. :meth:`ChunkedDesign.chunk_arrays` builds each chunk's rows of Z, X and y from that one
   specification (exactly as ``predict(newdata)`` re-applies it) for the engine to
   accumulate; a level the specification does not know means the data changed between the
   passes, and is an error naming the file and the column.

After the accumulation, :meth:`ChunkedDesign.model_frame` applies R's rank rule to the
accumulated ``X'X`` and gives a :class:`ChunkedModelFrame`: a
:class:`~multilevel.design.frame.ModelFrame` whose row arrays are not in memory (using one
raises :class:`RowsNeededError`), with everything a fit needs from the data besides.
"""
from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import pandas as pd

from multilevel.design.frame import (MAX_DENSE_GIB, ModelFrame, _check_finite, _check_reterms,
                                     build_model_frame, drop_response_terms)
from multilevel.design.matrices import fill_columns, rank_keep_gram
from multilevel.design.response import Response
from multilevel.design.source import DataSource, column_not_found, take_rows
from multilevel.design.variables import Scope
from multilevel.errors import DataError, FitWarning, FormulaError, ModelSpecError
from multilevel.formula import Call, Node, parse_formula
from multilevel.formula._model import CONSTANTS
from multilevel.formula._rsyntax import Arg, BinOp, Paren
from multilevel.formula._streaming import TransformLearner, accumulating, presetting

__all__ = ["ChunkedDesign", "ChunkedModelFrame", "LevelSummary", "OutOfCore", "RowsNeededError"]

_STATEFUL = {"scale", "poly", "center", "group_mean"}


class RowsNeededError(DataError):
    """Something needs the rows of data read in chunks, which are not in memory."""


class OutOfCore:
    """Stands for a row array of data read in chunks: any use of it raises
    :class:`RowsNeededError` saying what needed the rows (never a silent empty array)."""

    def __init__(self, what: str):
        self.what = what

    def _fail(self, *a: Any, **k: Any):
        raise RowsNeededError(f"{self.what} of this fit are not in memory: the data were read in "
                              f"chunks; fit.fitted() and fit.residuals() compute row values in "
                              f"a pass over the data, other uses need an in-memory fit")

    __array__ = _fail
    __len__ = _fail
    __getitem__ = _fail
    __iter__ = _fail
    __array_ufunc__ = _fail
    __add__ = __radd__ = __sub__ = __rsub__ = __mul__ = __rmul__ = __matmul__ = __rmatmul__ = _fail
    __truediv__ = __rtruediv__ = __pow__ = _fail

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        self._fail()

    def __repr__(self) -> str:
        return f"<{self.what}: not in memory (data read in chunks)>"

    def __reduce__(self):
        return (OutOfCore, (self.what,))


@dataclass
class ChunkedModelFrame(ModelFrame):
    """A :class:`~multilevel.design.frame.ModelFrame` of data read in chunks: names, levels,
    contrasts, warnings and the learnt specification as for an in-memory frame; the row
    arrays (``y``, ``X``, ``weights``, ``offset``, ``rows``, each term's ``refs`` and ``Z``)
    are :class:`OutOfCore` markers. ``n_rows`` is the number of rows used; ``design`` and
    ``source`` (not pickled) can compute row values in another pass."""

    n_rows: int = 0
    design: Any = None
    source: Any = None
    #: (rows, sum of y, sum of y^2) of the rows used: stands for the response when two fits
    #: are compared (anova) without their rows
    fingerprint: tuple = ()

    @property
    def nobs(self) -> int:
        return int(self.n_rows)

    @property
    def out_of_core(self) -> bool:
        return True

    def __getstate__(self) -> dict:
        st = self.__dict__.copy()
        st["source"] = None  # files may move, readers cannot be pickled
        return st

    def __setstate__(self, st: dict) -> None:
        self.__dict__.update(st)

    def row_series(self, beta: np.ndarray, b: list[np.ndarray], what: str = "fitted", *,
                   kind: str = "response", sigma: float | None = None,
                   family: Any = None) -> pd.Series:
        """Fitted values (``what="fitted"``) or residuals (``"residuals"``; ``kind``
        ``"response"`` or ``"pearson"``, divided by ``sigma`` if given) of the rows used, in
        the data's order, computed chunk by chunk (a lazy Dask Series for a Dask source).
        With a GLMM's ``family``: ``"fitted"`` is mu, ``"eta"`` the linear predictor, and
        ``kind`` also ``"deviance"`` or ``"working"`` (see :func:`row_result`)."""
        if hasattr(self.source, "row_series"):
            return self.source.row_series(self.design, beta, b, what, kind=kind, sigma=sigma,
                                          family=family)
        parts = [row_result(v, what, kind, sigma, family) for v in self.row_chunks(beta, b)]
        out = np.concatenate(parts) if parts else np.zeros(0)
        return pd.Series(out, name=what)

    def row_chunks(self, beta: np.ndarray, b: list[np.ndarray]) -> Iterator[dict[str, np.ndarray]]:
        """Per chunk of the data (in order), for its rows used in the fit: ``fitted``
        (X beta + Z b + offset), ``y`` and ``weights`` (or None)."""
        if self.source is None:
            raise RowsNeededError("the rows of this fit were read in chunks and its data source is "
                                  "not kept (a saved fit): refit, or predict on the data")
        for chunk in self.source.batches(self.design.columns):
            yield self.design.row_values(chunk.frame, beta, b, chunk.describe())


def row_result(v: dict[str, np.ndarray], what: str, kind: str, sigma: float | None,
               family: Any = None) -> np.ndarray:
    """Fitted values or residuals from :meth:`ChunkedDesign.row_values`' output; with a
    GLMM's ``family`` as ``GlmmFit.fitted`` / ``linear_predictor`` / ``residuals`` compute
    them in memory (mu; eta; deviance, pearson, response, working residuals)."""
    if family is not None:
        return _glmm_row_result(v, what, kind, sigma, family)
    if what == "fitted":
        return v["fitted"]
    r = v["y"] - v["fitted"]
    if kind == "pearson" and v["weights"] is not None:
        r = r * np.sqrt(v["weights"])
    if sigma is not None:
        with np.errstate(invalid="ignore", divide="ignore"):
            r = r / sigma
    return r


def _glmm_row_result(v: dict[str, np.ndarray], what: str, kind: str, sigma: float | None,
                     fam: Any) -> np.ndarray:
    eta = v["fitted"]
    if what == "eta":
        return eta
    mu = np.asarray(fam.linkinv(eta), dtype=float)
    if what == "fitted":
        return mu
    y = v["y"]
    wt = np.ones(len(y)) if v.get("prior") is None else np.asarray(v["prior"], dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        if kind == "response":
            r = y - mu
        elif kind == "pearson":
            r = (y - mu) * np.sqrt(wt) / np.sqrt(fam.variance(mu))
        elif kind == "deviance":
            r = np.sign(y - mu) * np.sqrt(np.clip(fam.dev_resids(y, mu, wt), 0.0, None))
        elif kind == "working":
            r = (y - mu) / fam.mu_eta(eta)
        else:
            raise ValueError(f"type must be 'deviance', 'pearson', 'response' or 'working', "
                             f"not {kind!r}")
        if sigma is not None:
            r = r / sigma
    return r


@dataclass
class LevelSummary:
    """What pass 2 learns from the chunks (mergeable): the distinct combinations of the
    factor columns on complete rows, one complete row, the categories of categorical columns
    in order, and row counts."""

    distinct: pd.DataFrame | None = None
    example: pd.DataFrame | None = None
    categories: dict[str, list] = field(default_factory=dict)
    ordered: dict[str, bool] = field(default_factory=dict)
    n_all: int = 0
    n_complete: int = 0

    _pending: list = field(default_factory=list, repr=False)

    def merge(self, other: LevelSummary) -> LevelSummary:
        other.compact()
        if other.distinct is not None:
            # deduplicate only when the pending parts outgrow what is kept: linear, not
            # quadratic, in the number of chunks
            self._pending.append(other.distinct)
            kept = 0 if self.distinct is None else len(self.distinct)
            if sum(len(p) for p in self._pending) > max(50_000, kept):
                self.compact()
        if self.example is None:
            self.example = other.example
        for c, cats in other.categories.items():
            prev = self.categories.get(c)
            if prev is None:
                self.categories[c] = list(cats)
            else:
                seen = set(prev)
                prev.extend(x for x in cats if x not in seen)
            self.ordered[c] = self.ordered.get(c, False) or other.ordered.get(c, False)
        self.n_all += other.n_all
        self.n_complete += other.n_complete
        return self

    def compact(self) -> LevelSummary:
        """Merge the pending distinct rows into ``distinct``."""
        if self._pending:
            parts = ([] if self.distinct is None else [self.distinct]) + self._pending
            self.distinct = pd.concat(parts, ignore_index=True).drop_duplicates(ignore_index=True)
            self._pending = []
        return self

    def __getstate__(self) -> dict:
        self.compact()
        return self.__dict__.copy()


def _kind(src: DataSource, c: str) -> str:
    """numeric / logical / text (categorical or string), "empty" for an all-missing column."""
    col = src.column(c)
    if col.kind in ("categorical", "string"):
        if col.kind == "string" and len(col) and col.series.isna().all():
            return "empty"
        return "text"
    return {"numeric": "numeric", "bool": "logical"}.get(col.kind, col.describe())


def _nested_stateful(node: Node, inside: bool = False) -> bool:
    """A stateful transform inside another one (``scale(center(x))``)."""
    if isinstance(node, Call):
        here = node.func in _STATEFUL
        if here and inside:
            return True
        return any(_nested_stateful(a.value, inside or here) for a in node.args)
    if isinstance(node, BinOp):
        return _nested_stateful(node.left, inside) or _nested_stateful(node.right, inside)
    if isinstance(node, Paren):
        return _nested_stateful(node.inner, inside)
    if isinstance(node, Arg):
        return _nested_stateful(node.value, inside)
    for attr in ("operand", "value", "inner"):
        sub = getattr(node, attr, None)
        if isinstance(sub, Node):
            return _nested_stateful(sub, inside)
    return False


class ChunkedDesign:
    """Learns a model's specification over chunks and builds each chunk's arrays (see the
    module docstring). Picklable: Dask ships it to the workers.

    >>> import pandas as pd
    >>> df = pd.DataFrame({"y": [1.0, 2.0, 4.0, 3.0], "x": [0.0, 1.0, 2.0, 3.0],
    ...                    "g": ["b", "a", "b", "a"]})
    >>> des = ChunkedDesign("y ~ scale(x) + (1 | g)", list(df.columns))
    >>> parts = [df.iloc[:2], df.iloc[2:]]
    >>> des.start(parts[0])
    >>> if des.needs_transform_pass:
    ...     des.set_transforms([des.transform_stats(p) for p in parts])
    >>> des.set_levels([des.level_summary(p) for p in parts])
    >>> des.reterm_levels, des.fixef_names_all
    ([['a', 'b']], ['(Intercept)', 'scale(x)'])
    >>> cells, V, w = des.chunk_arrays(parts[1])
    >>> V.round(4).tolist()   # z (intercept of g), X, y
    [[1.0, 1.0, 0.3873, 4.0], [1.0, 1.0, 1.1619, 3.0]]
    """

    def __init__(self, formula: str, names: Sequence[str], *, weights: Any = None,
                 offset: Any = None, family: str = "gaussian",
                 contrasts: Mapping[str, Any] | None = None,
                 max_dense_gib: float = MAX_DENSE_GIB):
        self.formula = formula
        self.family = str(family).lower()
        self.contrasts = contrasts
        self.max_dense_gib = max_dense_gib
        for what, v in (("weights", weights), ("offset", offset)):
            if v is not None and not isinstance(v, str):
                raise DataError(f"{what}= must be a column name when the data are read in "
                                f"chunks (an array of one value per row would have to be in "
                                f"memory)")
        self.weights, self.offset = weights, offset
        parsed = parse_formula(formula)
        if parsed.response is None:
            raise FormulaError("the formula has no response (write 'response ~ terms')",
                               formula, 0)
        if not parsed.bars:
            raise FormulaError("no random-effects terms; use multilevel.lm for a model without "
                               "random effects", formula, len(formula))
        names = list(names)
        cols: dict[str, None] = {}
        for c in parsed.columns:
            if c not in names and c not in CONSTANTS:
                raise column_not_found(c, names)
            if c in names:
                cols.setdefault(c, None)
        for b in parsed.bars:
            for g in b.group_vars:
                if g not in names:
                    raise column_not_found(g, names)
                cols.setdefault(g, None)
        for v in (weights, offset):
            if v is not None:
                if v not in names:
                    raise column_not_found(v, names)
                cols.setdefault(v, None)
        #: the data columns the model reads (only these are read from the files)
        self.columns = list(cols)
        self.learner = TransformLearner()
        self.needs_transform_pass = False
        self._ready = False

    # -- templates: the scopes as classified on the first chunk ----------------------------
    def start(self, first: pd.DataFrame) -> None:
        """Classify the variables on a first chunk (numbers, factors, expressions)."""
        src = DataSource(first)
        #: each column's kind on the first chunk: every chunk must agree
        self.kinds = {c: _kind(src, c) for c in self.columns}
        parsed = parse_formula(self.formula)
        self.parsed = parsed
        fixed_terms, _ = drop_response_terms(parsed)
        self.fixed = Scope(fixed_terms, parsed.fixed.offsets, self.formula, src)
        self.bar_scopes = [Scope(b.lhs, (), self.formula, src) for b in parsed.bars]
        self.response = Response(parsed.response, self.formula, src, self.family)
        self.response.data = None  # the chunk's source: not kept (the design is pickled)
        factor_cols: dict[str, None] = {}
        for sc in [self.fixed] + self.bar_scopes:
            for v in sc.vars.values():
                if v.is_factor and v.source == "expr" and not v.logical:
                    raise ModelSpecError(f"{v.key}: a factor of an expression cannot be learnt "
                                         f"from data read in chunks; add it as a column first")
                if v.is_factor and v.source == "column":
                    factor_cols.setdefault(v.column, None)
        for b in parsed.bars:
            for g in b.group_vars:
                factor_cols.setdefault(g, None)
        if self.response.column is not None and src.column(self.response.column).kind in \
                ("categorical", "string"):
            factor_cols.setdefault(self.response.column, None)
        self.factor_columns = list(factor_cols)
        self.used_cols: dict[str, None] = {}
        for c in self.response.columns() + self.fixed.columns():
            self.used_cols.setdefault(c, None)
        for b, sc in zip(parsed.bars, self.bar_scopes):
            for c in sc.columns() + list(b.group_vars):
                self.used_cols.setdefault(c, None)
        evaluators = [self.fixed.evaluator] + [sc.evaluator for sc in self.bar_scopes]
        if self.response.column is None:
            evaluators.append(self.response.evaluator)
        nodes = [n for ev in evaluators for n in ev.nodes]
        if any(_nested_stateful(n) for n in nodes):
            raise ModelSpecError("a stateful transform inside another one (such as "
                                 "scale(center(x))) cannot be learnt from data read in chunks; "
                                 "add the inner one as a column first")
        # whether a pass for the transforms is needed: they are called on the first chunk
        probe = TransformLearner()
        with accumulating(probe):
            self._evaluate_all(src)
        self.needs_transform_pass = probe.used

    def _evaluate_all(self, src: DataSource) -> tuple[list, list, list | None, np.ndarray | None]:
        """Every expression on every row of the chunk, in one fixed order (fixed part, bars,
        response: the order the transforms' call sites are numbered in)."""
        fb, bad = self.fixed.learn_expressions(src)
        bbs = []
        for sc in self.bar_scopes:
            blocks, b2 = sc.learn_expressions(src)
            bbs.append(blocks)
            if b2 is not None:
                bad = b2 if bad is None else bad | b2
        rb, b3 = self.response.learn(src)
        if b3 is not None:
            bad = b3 if bad is None else bad | b3
        return fb, bbs, rb, bad

    def _src(self, chunk: pd.DataFrame) -> DataSource:
        """The chunk as a data source, its columns' kinds checked against the first chunk's."""
        src = DataSource(chunk)
        for c, k in self.kinds.items():
            got = _kind(src, c)
            if got != k and got != "empty":
                raise DataError(f"column '{c}' is {got} here but {k} in the first chunk; every "
                                f"chunk must give a column the same type")
        return src

    # -- pass 1: stateful transforms ---------------------------------------------------------
    def transform_stats(self, chunk: pd.DataFrame) -> TransformLearner:
        """One chunk's sufficient statistics of the stateful transforms (all rows)."""
        learner = TransformLearner()
        src = self._src(chunk)
        with accumulating(learner):
            self._evaluate_all(src)
        return learner

    def set_transforms(self, parts: Sequence[TransformLearner] | TransformLearner) -> None:
        """The merged statistics of every chunk (one learner, or a list to merge)."""
        if isinstance(parts, TransformLearner):
            self.learner = parts
            return
        total = TransformLearner()
        for p in parts:
            total.merge(p)
        self.learner = total

    def _preset(self) -> contextlib.AbstractContextManager:
        return presetting(self.learner) if self.learner.used else contextlib.nullcontext()

    # -- pass 2: complete rows and levels ------------------------------------------------------
    def _missing(self, src: DataSource) -> tuple[np.ndarray, tuple]:
        """Rows with a missing value in a variable of the model (R's na.omit, as
        ``build_model_frame``) and the expressions evaluated on every row."""
        n = src.nrows
        missing = src.missing(self.used_cols)
        if missing is None:
            missing = np.zeros(n, dtype=bool)
        for what, c in (("weights", self.weights), ("offset", self.offset)):
            if c is not None:
                col = src.column(c)
                if not col.is_numeric:
                    raise DataError(f"{what} column '{c}' is not numeric ({col.describe()})")
                missing |= np.isnan(col.numeric())
        for v in list(self.fixed.vars.values()) + [v for sc in self.bar_scopes
                                                   for v in sc.vars.values()]:
            if v.is_factor and v.source == "column" and v.explicit_levels is not None:
                codes, labels = src.column(v.column).factor()
                allowed = set(v.explicit_levels)
                outside = np.isin(codes, [i for i, lab in enumerate(labels) if lab not in allowed])
                missing |= outside
        with self._preset():
            fb, bbs, rb, bad = self._evaluate_all(src)
        if bad is not None:
            missing |= bad
        return missing, (fb, bbs, rb)

    def level_summary(self, chunk: pd.DataFrame) -> LevelSummary:
        """One chunk's part of pass 2 (see :class:`LevelSummary`)."""
        src = self._src(chunk)
        missing, _ = self._missing(src)
        ok = ~missing
        out = LevelSummary(n_all=len(chunk), n_complete=int(ok.sum()))
        for c in self.columns:
            s = chunk[c]
            if isinstance(s.dtype, pd.CategoricalDtype):
                out.categories[c] = list(s.cat.categories)
                out.ordered[c] = bool(s.cat.ordered)
        if out.n_complete:
            sub = chunk.loc[ok, self.factor_columns] if self.factor_columns else \
                pd.DataFrame(index=chunk.index[ok])
            sub = sub.copy()
            for c in self.factor_columns:
                if isinstance(sub[c].dtype, pd.CategoricalDtype):
                    sub[c] = sub[c].astype(object)
            out.distinct = sub.drop_duplicates(ignore_index=True)
            first = int(np.flatnonzero(ok)[0])
            out.example = chunk.iloc[[first]].reset_index(drop=True)
        return out

    def set_levels(self, parts: Sequence[LevelSummary] | LevelSummary) -> None:
        """Learn the specification from the merged summaries (see the module docstring)."""
        if isinstance(parts, LevelSummary):
            summary = parts
        else:
            summary = LevelSummary()
            for p in parts:
                summary.merge(p)
        summary.compact()
        self.summary = summary
        if summary.n_complete == 0:
            raise DataError(f"no rows left: all {summary.n_all} rows have a missing value in a "
                            f"variable of the model ({', '.join(self.used_cols)})"
                            if summary.n_all else "the data have no rows")
        skel = self._skeleton(summary)
        with self._preset():
            frame = build_model_frame(self.formula, skel, weights=self.weights,
                                      offset=self.offset, family=self.family,
                                      contrasts=self.contrasts,
                                      max_dense_gib=self.max_dense_gib, _skeleton=True)
        spec = frame.spec
        # which template bar (formula order) each term (lme4's order) comes from
        self.bar_order = [next(i for i, b in enumerate(spec.parsed.bars) if b is bs.bar)
                          for bs in spec.bars]
        self.reterm_levels = [list(rt.levels) for rt in frame.reterms]
        self.nlev = [rt.n_levels for rt in frame.reterms]
        self.zdims = [rt.n_terms for rt in frame.reterms]
        self.fixef_names_all = list(spec.plan.names)
        # the cells: observed combinations of the terms' levels
        keys = self._keys([np.asarray(rt.refs, dtype=np.int64) for rt in frame.reterms])
        self.cell_keys = np.unique(keys)
        self.n_cells = len(self.cell_keys)
        space = float(np.prod([float(x) for x in self.nlev]))
        self._lut = None
        if space <= 2 ** 24:
            lut = np.full(int(space), -1, dtype=np.int64)
            lut[self.cell_keys] = np.arange(self.n_cells)
            self._lut = lut
        self._learn_nesting(frame)
        # the skeleton's rows are not needed any more (the design travels to Dask workers)
        self.frame0 = dataclasses.replace(
            frame, y=np.zeros(0), X=np.zeros((0, 0)), weights=None, offset=None,
            rows=np.zeros(0, dtype=np.int64),
            reterms=[dataclasses.replace(rt, refs=np.zeros(0, dtype=np.int32), Z=np.zeros((0, 0)))
                     for rt in frame.reterms])
        self._ready = True

    def _learn_nesting(self, frame: ModelFrame) -> None:
        """The grouping factor every other one nests in (fewest levels first), from the
        skeleton's rows (every observed combination of the factors): ``partition_term`` (the
        first term of that factor, lme4's order), ``partition_columns`` (its data columns);
        both None when the factors are crossed. A GLMM read in chunks is partitioned by it
        (``models.glmer_chunked``)."""
        rts = frame.reterms
        first: dict[str, int] = {}
        for k, rt in enumerate(rts):
            first.setdefault(rt.group, k)
        refs = {g: np.asarray(rts[k].refs, dtype=np.int64) for g, k in first.items()}

        def nests_in(inner: str, outer: str) -> bool:
            # each level of `inner` meets one level of `outer` only
            pairs = np.unique(refs[inner] * rts[first[outer]].n_levels + refs[outer])
            return len(pairs) == len(np.unique(refs[inner]))

        cands = [g for g in first if all(h == g or nests_in(h, g) for h in first)]
        self.partition_term: int | None = None
        self.partition_columns: tuple[str, ...] | None = None
        if cands:
            g = min(cands, key=lambda c: (rts[first[c]].n_levels, first[c]))
            self.partition_term = first[g]
            self.partition_columns = tuple(frame.spec.bars[first[g]].group.columns)

    def _skeleton(self, s: LevelSummary) -> pd.DataFrame:
        """One row per observed combination of the factor columns; other columns hold the
        values of one complete row (so every expression is finite)."""
        n = len(s.distinct)
        data = {}
        for c in self.columns:
            if c in self.factor_columns:
                vals = s.distinct[c]
                if c in s.categories:
                    data[c] = pd.Categorical(vals.to_numpy(dtype=object),
                                             categories=s.categories[c], ordered=s.ordered[c])
                else:
                    data[c] = vals.to_numpy()
            elif c == self.weights:
                data[c] = np.ones(n)
            else:
                ex = s.example[c]
                if isinstance(ex.dtype, pd.CategoricalDtype):
                    data[c] = pd.Categorical(np.repeat(ex.astype(object).to_numpy(), n),
                                             categories=s.categories.get(c, ex.cat.categories))
                else:
                    data[c] = np.repeat(ex.to_numpy(), n)
        return pd.DataFrame(data)

    def _keys(self, refs: Sequence[np.ndarray]) -> np.ndarray:
        if len(refs) == 1:
            return np.asarray(refs[0], dtype=np.int64)
        key = np.zeros(len(refs[0]), dtype=np.int64)
        if float(np.prod([float(x) for x in self.nlev])) >= 2.0 ** 62:
            raise ModelSpecError("the random-effect terms have too many combinations of levels "
                                 "to be accumulated in chunks")
        for r, nl in zip(refs, self.nlev):
            key = key * nl + r
        return key

    def cell_refs(self) -> list[np.ndarray]:
        """The level of each term in each cell (in cell order)."""
        out = []
        rest = self.cell_keys.copy()
        for nl in reversed(self.nlev):
            out.append((rest % nl).astype(np.uint32))
            rest //= nl
        return out[::-1]

    @property
    def dim(self) -> int:
        """Length of a row's values: every term's Z columns, every X column, y."""
        return sum(self.zdims) + len(self.fixef_names_all) + 1

    @property
    def xcols(self) -> slice:
        q = sum(self.zdims)
        return slice(q, q + len(self.fixef_names_all))

    # -- pass 3: each chunk's arrays ----------------------------------------------------------
    def _rows(self, chunk: pd.DataFrame, where: str):
        src = self._src(chunk)
        missing, (fb, bbs, rb) = self._missing(src)
        rows = np.flatnonzero(~missing) if missing.any() else np.arange(len(missing))
        return src, rows, fb, bbs, rb

    def chunk_arrays(self, chunk: pd.DataFrame, where: str = "a chunk"
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """(cell of each complete row, its values ``[z..., x..., y - offset]``, its weights or
        None) for the engine to accumulate; DataError naming ``where`` and the column when
        the chunk does not fit the specification."""
        if not self._ready:
            raise DataError("the specification has not been learnt yet")
        try:
            return self._chunk_arrays(chunk)
        except RowsNeededError:
            raise
        except DataError as e:
            raise DataError(f"{where}: {e}") from e

    def _check_values(self, X: np.ndarray, y: np.ndarray, Zs: list, off: np.ndarray | None) -> None:
        """A chunk's model matrix, response, random-effect columns and offset are finite, or
        a ``DataError`` names the first column that is not."""
        _check_finite(X, self.fixef_names_all, "fixed-effect model matrix")
        _check_finite(y[:, None], [self.response.name], "response")
        for Z, rt in zip(Zs, self.frame0.reterms):
            _check_finite(Z, rt.terms, f"random-effects term ({rt.label})")
        if off is not None:
            _check_finite(off[:, None], ["offset"], "offset")

    def _design(self, src, rows, fb, bbs, out: np.ndarray | None = None):
        """(X, Zs, refs, offset) of the chunk's ``rows``; with ``out`` (rows x dim), X and
        the Zs are written into their columns of it (the values the engine accumulates) and
        returned as views, without another copy."""
        spec = self.frame0.spec
        m = len(rows)
        # every row complete (the usual case): the columns themselves, not copies of them
        sel = None if m == src.nrows else rows

        def sub(blocks):
            return [take_rows(b, sel) for b in blocks]

        q = sum(self.zdims)
        vals, offs, _ = spec.fixed.evaluate(src, sel, m, fit=False, exprs=sub(fb))
        X = fill_columns(spec.plan, vals, m, out=None if out is None else out[:, self.xcols])
        Zs, refs = [], []
        c0 = 0
        for k, bs in enumerate(spec.bars):
            bv, _, _ = bs.scope.evaluate(src, sel, m, fit=False,
                                         exprs=sub(bbs[self.bar_order[k]]))
            s = self.zdims[k]
            Zs.append(fill_columns(bs.plan, bv, m, out=None if out is None
                                   else out[:, c0:c0 + s]))
            c0 += s
            r = self._group_refs(bs.group, src, sel)
            if (r < 0).any():
                i = int(rows[np.flatnonzero(r < 0)[0]])
                lab = ":".join(str(src.column(c).raw()[i]) for c in bs.group.columns)
                raise DataError(f"column{'s' * (len(bs.group.columns) > 1)} "
                                f"{', '.join(repr(c) for c in bs.group.columns)}: level {lab!r} "
                                f"of grouping factor '{bs.group.name}' was not in the first pass "
                                f"over the data (did the data change between the passes?)")
            refs.append(r.astype(np.int64))
        off = None
        for o in offs:
            off = o.astype(np.float64, copy=True) if off is None else off + o
        if self.offset is not None:
            o = take_rows(src.column(self.offset).numeric(), sel)
            off = o.copy() if off is None else off + o
        assert out is None or c0 == q
        return X, Zs, refs, off

    def _group_refs(self, group: Any, src: DataSource, rows: np.ndarray | None) -> np.ndarray:
        """The grouping factor's level of each of ``rows`` (None: all; -1 = unknown), as
        ``GroupSpec.refs``; an integer column is looked up in a table of its levels' values
        (built once) instead of being factorised and labelled again in every chunk."""
        parts = []
        for c, levels in zip(group.columns, group.var_levels):
            col = src.column(c)
            vals = col.raw() if col.kind == "numeric" else None
            lut = self._int_levels(c, levels) if vals is not None and vals.dtype.kind in "iu" \
                else None
            if lut is None:
                codes, labels = src.column(c).factor()
                idx = {lab: i for i, lab in enumerate(levels)}
                table = np.array([idx.get(lab, -1) for lab in labels] + [-1], dtype=np.int64)
                parts.append(table[take_rows(codes, rows)])
                continue
            lo, table = lut
            v = take_rows(vals, rows).astype(np.int64) - lo
            if len(v) and v.min() >= 0 and v.max() < len(table):
                parts.append(table[v])
                continue
            inside = (v >= 0) & (v < len(table))
            part = np.full(len(v), -1, dtype=np.int64)
            part[inside] = table[v[inside]]
            parts.append(part)
        return group.refs_from_codes(parts)

    def _int_levels(self, column: str, levels: list[str]) -> tuple[int, np.ndarray] | None:
        """(smallest value, table from value - smallest to level index or -1) when every
        level is the label of an integer (R's label of an integer is its digits, so the
        table finds exactly the level the label would); None otherwise or when the values
        are too spread out for a table."""
        cache = self.__dict__.setdefault("_int_lut_cache", {})
        hit = cache.get(column)
        if hit is not None and hit[0] is levels:
            return hit[1]
        out = None
        try:
            ints = [int(lab) for lab in levels]
            exact = all(str(i) == lab for i, lab in zip(ints, levels))
        except ValueError:
            exact = False
        if exact and ints:
            lo, hi = min(ints), max(ints)
            if hi - lo < 8 * len(ints) + (1 << 20):
                table = np.full(hi - lo + 1, -1, dtype=np.int64)
                table[np.asarray(ints, dtype=np.int64) - lo] = np.arange(len(ints))
                out = (lo, table)
        cache[column] = (levels, out)
        return out

    def _response_values(self, src: DataSource, rows: np.ndarray, m: int, rb) -> tuple:
        """(y, weights from cbind or None) of the rows. A factor response (binomial) is read
        against the levels learnt from all rows (the first is failure), not the chunk's."""
        r = self.response
        if r.column is not None and self.kinds.get(r.column) == "text":
            levels = self.frame0.factor_levels.get(self.frame0.response)
            codes, labels = src.column(r.column).factor()
            known = {lab: i for i, lab in enumerate(levels or [])}
            lut = np.array([known.get(lab, -1) for lab in labels] + [-1], dtype=np.int64)
            lev = lut[codes[rows]]
            if (lev < 0).any():
                raise DataError(f"column '{r.column}': a level of the response was not in the "
                                f"first pass over the data (did the data change between the "
                                f"passes?)")
            return (lev != 0).astype(np.float64), None
        y, rw, _ = r.evaluate(src, rows, m, blocks=None if rb is None else [b[rows] for b in rb])
        return y, rw

    def _user_weights(self, src: DataSource, rows: np.ndarray) -> np.ndarray | None:
        if self.weights is None:
            return None
        w = src.column(self.weights).numeric()[rows].astype(np.float64, copy=True)
        if (w < 0).any():
            raise DataError(f"weights must be non-negative (column '{self.weights}' has "
                            f"{int((w < 0).sum())} negative value(s))")
        _check_finite(w[:, None], [f"column '{self.weights}'"], "weights")
        return w

    def glmm_arrays(self, chunk: pd.DataFrame, where: str = "a chunk") -> dict[str, Any]:
        """The chunk's complete rows as a GLMM's arrays, from the learnt specification:
        ``refs`` and ``Z`` (one per term, lme4's order; levels of all data), ``X`` (every
        fixed-effect column, before the rank rule), ``y`` (binomial: 0/1 or proportions),
        ``wt`` (prior weights: the weights column times cbind's trials, or None), ``off``
        (or None), ``nt`` (cbind's trials, for binomial's aic, as ``glmer`` forms them; or
        None) and ``uw`` (the weights column or None). DataError naming ``where`` and the
        column when the chunk does not fit the specification."""
        if not self._ready:
            raise DataError("the specification has not been learnt yet")
        try:
            src, rows, fb, bbs, rb = self._rows(chunk, where)
            m = len(rows)
            k = len(self.zdims)
            if m == 0:
                return {"refs": [np.zeros(0, dtype=np.int64)] * k,
                        "Z": [np.zeros((0, s)) for s in self.zdims],
                        "X": np.zeros((0, len(self.fixef_names_all))), "y": np.zeros(0),
                        "wt": None, "off": None, "nt": None, "uw": None}
            X, Zs, refs, off = self._design(src, rows, fb, bbs)
            y, rw = self._response_values(src, rows, m, rb)
            uw = self._user_weights(src, rows)
            self._check_values(X, y, Zs, off)
            wt = uw if rw is None else (rw if uw is None else uw * rw)
            nt = None
            if self.family == "binomial" and self.response.cbind and wt is not None:
                # glmer's trials: the frame's weights over the user's (0 where those are 0)
                nt = rw if uw is None else np.where(uw > 0, wt / np.where(uw > 0, uw, 1.0), 0.0)
            return {"refs": refs, "Z": Zs, "X": X, "y": y, "wt": wt, "off": off, "nt": nt,
                    "uw": uw}
        except RowsNeededError:
            raise
        except DataError as e:
            if str(e).startswith(where):
                raise
            raise DataError(f"{where}: {e}") from e

    def _chunk_arrays(self, chunk: pd.DataFrame):
        src, rows, fb, bbs, rb = self._rows(chunk, "")
        m = len(rows)
        d = self.dim
        if m == 0:
            return np.zeros(0, dtype=np.int64), np.zeros((0, d)), None
        # the row values [z.., x.., y - offset] built in place (no copies of X and Z)
        V = np.empty((m, d))
        X, Zs, refs, off = self._design(src, rows, fb, bbs, out=V)
        sel = None if m == src.nrows else rows
        y, _, _ = self.response.evaluate(src, sel, m, blocks=None if rb is None
                                         else [take_rows(b, sel) for b in rb])
        w = None
        if self.weights is not None:
            w = take_rows(src.column(self.weights).numeric(), sel).astype(np.float64, copy=True)
            if (w < 0).any():
                raise DataError(f"weights must be non-negative (column '{self.weights}' has "
                                f"{int((w < 0).sum())} negative value(s))")
            _check_finite(w[:, None], [f"column '{self.weights}'"], "weights")
        if off is not None:
            np.subtract(y, off, out=V[:, -1])
        else:
            V[:, -1] = y
        if not np.isfinite(V.sum()):  # one pass proves every value finite; else say where
            self._check_values(X, y, Zs, off)
            _check_finite(V, [f"column {j}" for j in range(d)], "row values")
        return self._cells(refs), V, w

    def _cells(self, refs: list[np.ndarray]) -> np.ndarray:
        key = self._keys(refs)
        if self._lut is not None:
            cell = self._lut[key]
            bad = cell < 0
        else:
            pos = np.minimum(np.searchsorted(self.cell_keys, key), self.n_cells - 1)
            bad = self.cell_keys[pos] != key
            cell = pos
        if bad.any():
            raise DataError("a combination of levels of the grouping factors was not in the first "
                            "pass over the data (did the data change between the passes?)")
        return cell

    def row_values(self, chunk: pd.DataFrame, beta: np.ndarray, b: list[np.ndarray],
                   where: str = "a chunk") -> dict[str, np.ndarray]:
        """Fitted values, response and weights of the chunk's rows used in the fit, given
        the fixed effects (of the kept columns) and the conditional modes per term."""
        try:
            src, rows, fb, bbs, rb = self._rows(chunk, where)
            m = len(rows)
            if m == 0:
                return {"fitted": np.zeros(0), "y": np.zeros(0), "weights": None,
                        "prior": None, "rows": rows}
            X, Zs, refs, off = self._design(src, rows, fb, bbs)
            eta = X[:, self.keep] @ beta
            for Z, r, bk in zip(Zs, refs, b):
                eta += np.einsum("ij,ij->i", Z, np.asarray(bk)[r])
            if off is not None:
                eta += off
            y, rw = self._response_values(src, rows, m, rb)
            w = None if self.weights is None else src.column(self.weights).numeric()[rows]
            # the GLMM's prior weights (cbind's trials times the weights)
            prior = w if rw is None else (rw if w is None else w * rw)
            return {"fitted": eta, "y": y, "weights": w, "prior": prior, "rows": rows}
        except DataError as e:
            raise DataError(f"{where}: {e}") from e

    # -- after the accumulation -----------------------------------------------------------------
    def model_frame(self, xtx: np.ndarray, n: int, source: Any = None) -> ChunkedModelFrame:
        """The frame of the fit: R's rank rule on the accumulated (unweighted) X'X, the
        warnings an in-memory frame would carry, lme4's checks on levels against rows."""
        f0 = self.frame0
        keep = rank_keep_gram(xtx)
        self.keep = keep
        names = self.fixef_names_all
        dropped = [names[j] for j in range(len(names)) if j not in set(keep)]
        warnings = [w for w in f0.warnings if w.code not in ("rows_dropped", "rank_deficient")]
        n_dropped = self.summary.n_all - n
        extra = []
        if n_dropped:
            extra.append(FitWarning("rows_dropped", f"{n_dropped} row{'s' if n_dropped != 1 else ''} "
                                    f"with missing values dropped"))
        # the same order as build_model_frame: response-on-rhs, rows dropped, rank, merged
        rhs = [w for w in warnings if w.code == "response_on_rhs"]
        rest = [w for w in warnings if w.code != "response_on_rhs"]
        if dropped:
            k = len(dropped)
            extra.append(FitWarning("rank_deficient",
                                    f"fixed-effect model matrix is rank deficient so dropping {k} "
                                    f"column{'s' if k != 1 else ''} / coefficient{'s' if k != 1 else ''}: "
                                    f"{', '.join(dropped)}"))
        spec = dataclasses.replace(f0.spec, keep=list(keep))
        reterms = [dataclasses.replace(rt, refs=OutOfCore(f"the level references of ({rt.label})"),
                                       Z=OutOfCore(f"the Z columns of ({rt.label})"))
                   for rt in f0.reterms]
        _check_reterms(reterms, n, self.family)
        plan_assign = f0.spec.plan.assign
        return ChunkedModelFrame(
            formula=f0.formula, response=f0.response,
            y=OutOfCore("the response values"), X=OutOfCore("the fixed-effect model matrix rows"),
            fixef_names=[names[j] for j in keep], reterms=reterms,
            weights=None if self.weights is None else OutOfCore("the weights"),
            offset=None if (self.offset is None and not self.fixed.offsets)
            else OutOfCore("the offsets"),
            rows=OutOfCore("the row numbers"), n_dropped=n_dropped, dropped_columns=dropped,
            warnings=rhs + extra + rest, spec=spec, family=f0.family,
            assign=np.asarray([plan_assign[j] for j in keep], dtype=np.int64),
            term_labels=list(f0.term_labels), factor_levels=dict(f0.factor_levels),
            contrasts=dict(f0.contrasts), contrasts_arg=dict(f0.contrasts_arg), row_labels=None,
            n_rows=int(n), design=self, source=source)
