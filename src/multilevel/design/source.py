"""The data source: column access to the user's data, the only code that reads a data frame.

Layer: design. May import: formula, errors, control.

Why a module of its own: everything that knows pandas, polars (through narwhals) or a dict of
arrays is here, so the rest of the design layer sees only :class:`Column` objects (numbers,
missing-value masks, factor codes with R's level order). Nothing here knows about formulas
beyond R's printing of numbers (``format_r_number``, for factor labels of numeric columns).
It imports no other design module (the bottom of the design layer's graph: source ->
variables -> matrices, grouping, response -> newdata -> frame).

Lean by design, because a small fit's model frame is a large share of its time: a column is
classified from its dtype (no type inference for numbers, logicals and Categoricals), a
pandas frame's column is read as its array rather than a new Series (``_pandas_column``), a
Categorical is coded by its codes (its labels cached per categories Index), long text by
pandas' own (Arrow) factorize, and :meth:`DataSource.missing` gives the missing rows of all
the columns of a model at once. Values handed out of the user's arrays are read-only views.

>>> src = DataSource({"g": ["b", "a", "b"], "x": [1.0, 2.0, None]})
>>> src.nrows, src.column("g").factor()[1], src.column("x").na_mask().tolist()
(3, ['a', 'b'], [False, False, True])
"""
from __future__ import annotations

import difflib
import weakref
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from multilevel.errors import ColumnNotFoundError, DataError
from multilevel.formula import format_r_number

__all__ = ["DataSource", "Column", "level_label", "merge_same_labels", "as_array",
           "column_not_found", "take_rows"]


def level_label(value: Any) -> str:
    """R's label of a factor level (``as.character``): 308 -> "308", 2.5 -> "2.5",
    True -> "TRUE"."""
    if isinstance(value, (bool, np.bool_)):
        return "TRUE" if value else "FALSE"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return format_r_number(float(value))
    return str(value)


def merge_same_labels(codes: np.ndarray, labels: list[str], values: Sequence[Any] | None = None
                      ) -> tuple[np.ndarray, list[str], list[str]]:
    """Merge levels whose labels are the same text, as R's ``factor()`` does (it converts to
    character first: ``as.character(0.1 + 0.2)`` is ``"0.3"``, so 0.1 + 0.2 and 0.3 are one
    level; so are ``1`` and ``"1"`` in one column). Returns the new codes, the labels (first
    occurrence kept, so the level order stays) and one line per merged level for the warning;
    ``values`` are the original values of ``labels``, to show what was merged.

    >>> codes, labels, merged = merge_same_labels(np.array([0, 1, 2]), ["0.3", "0.3", "1"],
    ...                                           [0.3, 0.1 + 0.2, 1.0])
    >>> codes.tolist(), labels, merged
    ([0, 0, 1], ['0.3', '1'], ['0.3 (from 0.3, 0.30000000000000004)'])
    """
    if len(set(labels)) == len(labels):
        return codes, labels, []
    first: dict[str, int] = {}
    lut = np.empty(len(labels) + 1, dtype=np.int64)
    lut[-1] = -1  # code -1 (missing) stays missing
    groups: dict[str, list[int]] = {}
    for i, lab in enumerate(labels):
        lut[i] = first.setdefault(lab, len(first))
        groups.setdefault(lab, []).append(i)
    merged = []
    for lab, idx in groups.items():
        if len(idx) > 1:
            shown = ", ".join(repr(values[i]) if values is not None and isinstance(values[i], str)
                              else str(values[i]) if values is not None else lab for i in idx[:4])
            merged.append(f"{lab} (from {shown}{', ...' if len(idx) > 4 else ''})")
    return lut[codes].astype(np.asarray(codes).dtype if np.asarray(codes).dtype.kind == "i"
                             else np.int64), list(first), merged


def _complex_error(name: str) -> DataError:
    return DataError(f"column '{name}' has complex numbers; a model needs real numbers (use its "
                     f"real part, imaginary part or modulus as a column)")


#: numpy dtype kinds read without pandas' type inference: floats, integers, unsigned, bools
_PLAIN_KINDS = "fiub"


def _readonly(arr: np.ndarray) -> np.ndarray:
    """A read-only view: values handed out from the user's own array (a dict of numpy
    arrays) must not be writable, so no step of a fit can change the user's data."""
    if not arr.flags.writeable:
        return arr
    view = arr.view()
    view.flags.writeable = False
    return view


#: the labels of categories read lately: id of the (immutable) categories Index -> (a weak
#: reference to it, its labels, whether two of them are the same text); an entry leaves with
#: its Index, and one is used only while its reference still points at that Index
_CATEGORY_LABELS: dict[int, tuple[weakref.ref, tuple[str, ...], bool]] = {}


def _category_labels(cats: pd.Index) -> tuple[list[str], bool]:
    """The labels of a Categorical's categories (R's ``levels``) and whether two of them are
    the same text (to be merged). Cached per categories Index: refitting the same frame, as
    an explorer or a bootstrap does, reads them once (converting them cost as much as the
    rest of a small frame's categorical column)."""
    key = id(cats)
    hit = _CATEGORY_LABELS.get(key)
    if hit is not None and hit[0]() is cats:
        return list(hit[1]), hit[2]
    if cats.dtype == object or isinstance(cats.dtype, pd.StringDtype) \
            or pd.api.types.is_string_dtype(cats.dtype):
        labels = _text_labels(cats)  # text categories are their own labels
    else:
        labels = [level_label(c) for c in cats]
    dup = len(set(labels)) != len(labels)
    try:
        ref = weakref.ref(cats, lambda _, key=key: _CATEGORY_LABELS.pop(key, None))
    except TypeError:  # not weakly referable: not cached
        return labels, dup
    _CATEGORY_LABELS[key] = (ref, tuple(labels), dup)
    return labels, dup


def _text_labels(cats: pd.Index) -> list[str]:
    """The labels of text categories: ``cats.astype(str).tolist()`` without its copy of the
    Index (a numpy object array lists an Arrow-backed Index twice as fast as ``tolist``)."""
    values = np.asarray(cats, dtype=object).tolist()
    if cats.dtype != object:  # a string dtype holds nothing but text
        return values
    return [c if type(c) is str else str(c) for c in values]


#: from this many rows a pandas string array is coded by its own factorize (Arrow's hashing
#: for the default pyarrow storage: 1.9 ms for 1e5 rows against 5.4 ms for their Python
#: strings); below it through Python strings, which costs less than Arrow's fixed overhead
#: (31 against 73 us for 180 rows; measured even at about 1,500)
_ARRAY_FACTORIZE_MIN = 2000


class Column:
    """One data column, classified once (numeric / bool / categorical / string) with cached
    numeric values, missing-value mask and factor coding.

    Complex numbers are refused (a model needs real numbers; casting would silently drop the
    imaginary part). ``merged`` lists the levels that :meth:`factor` merged because different
    values have the same text (see :func:`merge_same_labels`).

    Classified from the dtype alone where it says everything (numpy numbers and logicals, a
    pandas Categorical), so a small fit pays no per-column type inference; a numpy array of
    numbers (a dict of arrays) is read as it is, without a pandas Series around it.

    >>> col = Column("g", pd.Series(["b", "a", None, "b"]))
    >>> col.kind, col.factor()[0].tolist(), col.factor()[1], col.na_mask().tolist()
    ('string', [1, 0, -1, 1], ['a', 'b'], [False, False, True, False])
    >>> Column("x", np.array([1, 2, 3])).na_mask() is None   # integers are never missing
    True
    """

    def __init__(self, name: str, values: Any):
        self.name = name
        self.merged: list[str] = []
        self._factor: tuple[np.ndarray, list[str]] | None = None
        self._numeric: np.ndarray | None = None
        self._na: np.ndarray | None | bool = False  # False = not computed yet
        self._inferred: str | None = None            # pandas' infer_dtype of an object column
        #: an ordered pandas Categorical: R's ordered factor (contr.poly in a model matrix)
        self.ordered = False
        #: the values as a numpy array of numbers or logicals, when they are one (else None)
        self._array: np.ndarray | None = None
        #: the pandas Categorical or string array of a categorical or text column
        self._ext: Any = None
        self._series: pd.Series | None = None
        if isinstance(values, np.ndarray) and values.ndim == 1 and values.dtype.kind in _PLAIN_KINDS:
            self._array = values
            self.kind = "bool" if values.dtype.kind == "b" else "numeric"
            return
        if isinstance(values, pd.Categorical):
            self._ext = values
            self.kind = "categorical"
            self.ordered = bool(values.dtype.ordered)
            return
        if isinstance(values, pd.api.extensions.ExtensionArray) \
                and isinstance(values.dtype, pd.StringDtype):
            self._ext = values
            self.kind = "string"
            return
        s = values if isinstance(values, pd.Series) else pd.Series(as_array(values), copy=False)
        self._series = s
        dt = s.dtype
        if isinstance(dt, np.dtype) and dt.kind in _PLAIN_KINDS:
            self._array = s.to_numpy()
            self.kind = "bool" if dt.kind == "b" else "numeric"
        elif isinstance(dt, pd.CategoricalDtype):
            self.kind = "categorical"
            self.ordered = bool(dt.ordered)
            self._ext = s.array
        elif pd.api.types.is_complex_dtype(dt):
            raise _complex_error(name)
        elif pd.api.types.is_bool_dtype(dt):
            self.kind = "bool"
        elif pd.api.types.is_numeric_dtype(dt):
            self.kind = "numeric"
        elif isinstance(dt, pd.StringDtype):
            self.kind = "string"  # text or missing, nothing else
            self._ext = s.array
        elif pd.api.types.is_string_dtype(dt) or dt == object:
            inferred = self._inferred = pd.api.types.infer_dtype(s, skipna=True)
            if inferred == "complex" or (inferred.startswith("mixed") and any(
                    isinstance(v, (complex, np.complexfloating)) for v in s.to_numpy())):
                raise _complex_error(name)
            if inferred == "boolean":
                self.kind = "bool"
            elif inferred in ("integer", "floating", "mixed-integer-float", "decimal", "empty"):
                self.kind = "numeric"
                self._series = pd.to_numeric(s)
                ndt = self._series.dtype
                if pd.api.types.is_complex_dtype(ndt):
                    raise _complex_error(name)
                if isinstance(ndt, np.dtype) and ndt.kind in _PLAIN_KINDS:
                    self._array = self._series.to_numpy()
            else:
                self.kind = "string"
        else:
            self.kind = "other"  # datetimes, intervals ...: not usable in a model

    @property
    def series(self) -> pd.Series:
        """The values as a pandas Series (made on first use for an array)."""
        if self._series is None:
            values = self._array if self._array is not None else self._ext
            self._series = pd.Series(values, copy=False)
        return self._series

    def __len__(self) -> int:
        for values in (self._array, self._ext, self._series):
            if values is not None:
                return len(values)
        return 0

    @property
    def is_numeric(self) -> bool:
        return self.kind == "numeric"

    def numeric(self) -> np.ndarray:
        """float64 values (NaN where missing); bool columns give 0/1."""
        if self._numeric is None:
            a = self._array
            if a is not None:
                arr = _readonly(a) if a.dtype == np.float64 else a.astype(np.float64)
            elif self.kind in ("numeric", "bool"):
                # extension dtypes (Int64, Float64, boolean, Arrow): their NA becomes NaN
                arr = self._series.to_numpy(dtype=np.float64, na_value=np.nan)
            else:
                raise DataError(f"column '{self.name}' is not numeric ({self.describe()})")
            self._numeric = arr
        return self._numeric

    def raw(self) -> np.ndarray:
        """Values for evaluating an expression (numbers, bools or label strings)."""
        if self._array is not None:
            return _readonly(self._array)
        if self.kind in ("numeric", "bool"):
            return self.numeric()
        if self.kind == "other":
            raise DataError(f"column '{self.name}' ({self.describe()}) cannot be used in a model; "
                            f"convert it to numbers (e.g. days since a date) or to text")
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
            a = self._array
            if a is not None:
                # numpy integers and logicals have no missing value; floats have NaN
                m = np.isnan(a) if a.dtype.kind == "f" else None
            elif self.kind == "numeric":
                m = np.isnan(self.numeric())
            elif self.kind in ("categorical", "string"):
                m = self.factor()[0] < 0
            else:
                m = self._series.isna().to_numpy()
            self._na = m if (m is not None and m.any()) else None
        return self._na  # type: ignore[return-value]

    def factor(self) -> tuple[np.ndarray, list[str]]:
        """(codes, labels): codes (-1 = missing) into labels in R's level order (category
        order; else sorted, numbers numerically; FALSE < TRUE), before dropping unused."""
        if self._factor is None:
            originals: Any = None  # the values behind the labels, for merge_same_labels
            if self.kind == "categorical":
                cat = self._ext
                codes = cat.codes
                cats = cat.categories
                labels, dup = _category_labels(cats)
                originals = cats if dup else None
            elif self.kind == "bool":
                if self._array is not None:
                    codes = self._array.astype(np.int8)
                else:
                    s = self._series
                    na = s.isna().to_numpy()
                    codes = np.where(na, -1, s.fillna(False).to_numpy(dtype=bool)).astype(np.int8)
                labels = ["FALSE", "TRUE"]
            elif self.kind == "numeric":
                vals = self._array if self._array is not None else self.numeric()
                codes, uniq = pd.factorize(vals, sort=True)
                labels = [level_label(u) for u in uniq]
                originals = uniq
            elif self.kind == "string":
                codes, labels = self._string_factor()
            else:
                raise DataError(f"column '{self.name}' ({self.describe()}) cannot be used as a "
                                f"factor or grouping variable; convert it to text or numbers "
                                f"first")
            if originals is not None and len(set(labels)) != len(labels):
                # 0.1 + 0.2 and 0.3 (R prints both as 0.3), categories 1 and "1"
                codes, labels, self.merged = merge_same_labels(np.asarray(codes), labels,
                                                               originals.tolist())
            self._factor = (np.asarray(codes), labels)
        return self._factor

    def _string_factor(self) -> tuple[np.ndarray, list[str]]:
        """Codes and sorted labels of a text column. A long pandas string column is coded by
        its own array (Arrow's hashing for the default pyarrow storage), not through a
        million Python strings (see ``_ARRAY_FACTORIZE_MIN``); a short one and an object
        column of text by hashing Python strings."""
        if self._ext is not None:
            if len(self._ext) >= _ARRAY_FACTORIZE_MIN:
                # code point order: Arrow sorts UTF-8 bytes, which order as the code points do
                codes, uniq = pd.factorize(self._ext, sort=True)
                return codes, uniq.tolist()
            vals = self._ext.to_numpy(dtype=object)
            codes, uniq = pd.factorize(vals, sort=True)
            return codes, list(np.asarray(uniq).tolist())
        s = self._series
        vals = s.to_numpy()
        inferred = self._inferred if self._inferred is not None else \
            pd.api.types.infer_dtype(s, skipna=True)
        if inferred == "string":
            codes, uniq = pd.factorize(vals, sort=True)
            return codes, list(np.asarray(uniq).tolist())
        # mixed types (1 and "1", text and numbers): R's factor() of such a column sorts the
        # text of each value (as.character), so values with the same text are one level
        raw_codes, raw_uniq = pd.factorize(vals)
        raw_labels = [level_label(u) for u in raw_uniq.tolist()]
        raw_codes, text, self.merged = merge_same_labels(raw_codes, raw_labels, raw_uniq.tolist())
        order = np.argsort(np.asarray(text, dtype=object), kind="stable")
        rank = np.empty(len(text) + 1, dtype=np.int64)
        rank[order] = np.arange(len(text))
        rank[-1] = -1
        return rank[raw_codes], [text[i] for i in order]


def as_array(values: Any) -> Any:
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


class DataSource:
    """Column access to a pandas DataFrame, a polars (or other narwhals-supported) DataFrame
    or a dict of arrays, without copying the user's data.

    ``what`` names the argument in messages (``"data"``, ``"newdata"``).

    >>> src = DataSource({"y": [1.0, 2.0], "g": ["a", "b"]})
    >>> "g" in src, src.nrows, src.column("y").numeric().tolist()
    (True, 2, [1.0, 2.0])
    """

    def __init__(self, data: Any, what: str = "data"):
        self._cache: dict[str, Column] = {}
        self._asked: dict[str, bool] = {}
        self._names: list[str] | None = None
        if isinstance(data, pd.DataFrame):
            cols = data.columns
            # the usual labels (distinct text): the Index answers membership from the hash
            # table pandas keeps on it, so nothing is listed per fit (inferred_type and
            # is_unique are cached on the Index too)
            if cols.inferred_type == "string" and cols.is_unique and not cols.hasnans \
                    and not isinstance(cols, pd.MultiIndex):
                self._known = cols
                self._get = lambda name: _pandas_column(data, name)
                self.nrows = len(data)
                return
            keys = cols.tolist()
            names = [k if type(k) is str else str(k) for k in keys]
            key_of = dict(zip(names, keys))
            if len(key_of) != len(names):
                dup = sorted({c for c in names if names.count(c) > 1})
                raise DataError(f"{what} has duplicate column names: {', '.join(dup)}")
            self._names = names
            self._get = lambda name: data[key_of[name]]
            self.nrows = len(data)
        elif isinstance(data, Mapping):
            keys = list(data)
            self._names = [str(k) for k in keys]
            key_of = {}
            for name, k in zip(self._names, keys):
                key_of.setdefault(name, k)  # the first of keys with the same text (1, "1")
            self._get = lambda name: data[key_of[name]]
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
            self._names = list(frame.columns)
            self._get = lambda name: _from_narwhals(frame[name])
            self.nrows = len(frame)
        self._known = frozenset(self._names)

    @property
    def names(self) -> list[str]:
        """The column names, as text (listed on first use: messages need them, a fit not)."""
        if self._names is None:
            self._names = [str(c) for c in self._known.tolist()]
        return self._names

    def __contains__(self, name: str) -> bool:
        # remembered: a fit asks about each of its names a dozen times, and a pandas Index
        # answers more slowly than a dict
        known = self._asked.get(name)
        if known is None:
            known = self._asked[name] = name in self._known
        return known

    def missing(self, names: Iterable[str]) -> np.ndarray | None:
        """A new boolean array, True for the rows with a missing value in any of the columns
        ``names`` (names that are not columns, such as R's constants, are skipped); None when
        no row has one. Each column's mask is one vectorised pass over its values or factor
        codes, cached on the column (integer and logical numpy columns need none).

        >>> DataSource({"x": [1.0, None, 3.0], "g": ["a", "b", None]}).missing(["x", "g", "pi"]).tolist()
        [False, True, True]
        """
        masks = [m for c in names if c in self and (m := self.column(c).na_mask()) is not None]
        if not masks:
            return None
        out = masks[0].copy()  # never the column's cached mask: callers add to it
        for m in masks[1:]:
            out |= m
        return out

    def merged_levels(self) -> dict[str, list[str]]:
        """Columns read so far whose factor coding merged values with the same text
        (column -> one line per merged level; see :func:`merge_same_labels`)."""
        return {name: col.merged for name, col in self._cache.items() if col.merged}

    def column(self, name: str) -> Column:
        col = self._cache.get(name)
        if col is None:
            if name not in self:
                raise column_not_found(name, self.names)
            col = Column(name, self._get(name))
            if len(col) != self.nrows:
                raise DataError(f"column '{name}' has {len(col)} values, expected {self.nrows}")
            self._cache[name] = col
        return col


#: pandas' own accessor of a column's array (a private method, present from pandas 1.3 to
#: 3.x): without it every column is read as a Series
_COLUMN_ARRAY = getattr(pd.DataFrame, "_get_column_array", None)


def _pandas_column(data: pd.DataFrame, name: str) -> Any:
    """Column ``name`` of a pandas frame with unique text labels: its array where that is
    numbers, logicals, a Categorical or text (what :class:`Column` reads directly), else the
    Series ``data[name]``.

    Why not always ``data[name]``: pandas builds a new Series on every such access (~10 us,
    25 us with cold caches between fits), a third of the model frame of a small fit; its
    array is read in ~2 us. ``Column`` hands the array out read-only, so the frame's data
    cannot be changed through it. Anything unexpected from the private accessor falls back
    to the public ``data[name]``; ``tests/test_design.py`` checks both give the same column."""
    if _COLUMN_ARRAY is not None:
        try:
            arr = _COLUMN_ARRAY(data, data.columns.get_loc(name))
        except Exception:  # noqa: BLE001 - a pandas without it as we know it: the public way
            arr = None
        if isinstance(arr, np.ndarray):
            if arr.ndim == 1 and arr.dtype.kind in _PLAIN_KINDS and len(arr) == len(data):
                return arr
        elif isinstance(arr, pd.Categorical) or (
                isinstance(arr, pd.api.extensions.ExtensionArray)
                and isinstance(arr.dtype, pd.StringDtype)):
            if len(arr) == len(data):
                return arr
    return data[name]


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


def column_not_found(name: str, names: Sequence[str]) -> ColumnNotFoundError:
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


def take_rows(arr: np.ndarray, rows: np.ndarray | None) -> np.ndarray:
    """The entries of ``arr`` at ``rows`` (the rows used in a fit); ``rows=None`` means every
    row and returns ``arr`` itself, uncopied.

    >>> take_rows(np.array([5.0, 6.0, 7.0]), np.array([0, 2])).tolist()
    [5.0, 7.0]
    """
    return arr if rows is None else arr[rows]
