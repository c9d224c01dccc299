"""The data source: columns read the quick way (a pandas frame's arrays, a dict's numpy arrays)
give exactly what the general way (a pandas Series) gives, and never expose the user's data."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from multilevel.design.source import Column, DataSource, _pandas_column
from multilevel.errors import DataError


def _frame() -> pd.DataFrame:
    n = 8
    return pd.DataFrame({
        "f64": [1.5, np.nan, 3.0, 4.0, 0.1 + 0.2, 0.3, 7.0, 8.0],
        "f32": np.arange(n, dtype=np.float32),
        "i64": np.array([3, 1, 2, 3, 1, 2, 3, 1]),
        "u8": np.arange(n, dtype=np.uint8),
        "b": [True, False] * 4,
        "cat": pd.Categorical(["b", "a", None, "b", "c", "a", "b", "a"], categories=["c", "b", "a"]),
        "ord": pd.Categorical(["lo", "hi"] * 4, categories=["lo", "hi"], ordered=True),
        "icat": pd.Categorical([10, 2, 2, 10, 3, 3, 2, 10]),
        "objcat": pd.Categorical(pd.Series([1, "1", "a", 1, "a", "1", 1, "a"], dtype=object)),
        "str": pd.Series(["é", "b", None, "B", "a", "z", "é", "b"], dtype="str"),
        "pystr": pd.array(["x", None, "y", "x", "y", "x", "y", "x"], dtype="string[python]"),
        "obj": pd.Series(["x", 1, "1", 2.5, "x", 1, None, "y"], dtype=object),
        "objtext": pd.Series(["q", "p", "q", None, "p", "q", "p", "q"], dtype=object),
        "Int64": pd.array([1, None, 3, 4, 5, 6, 7, 8], dtype="Int64"),
        "boolean": pd.array([True, None, False, True, True, False, True, False], dtype="boolean"),
        "when": pd.date_range("2020-01-01", periods=n),
    })


def _same(a: Column, b: Column) -> None:
    assert (a.kind, a.ordered, a.describe(), len(a)) == (b.kind, b.ordered, b.describe(), len(b))
    ma, mb = a.na_mask(), b.na_mask()
    assert (ma is None) == (mb is None)
    if ma is not None:
        np.testing.assert_array_equal(ma, mb)
    if a.kind in ("numeric", "bool"):
        np.testing.assert_array_equal(a.numeric(), b.numeric())
        assert a.numeric().dtype == b.numeric().dtype
    if a.kind != "other":
        ra, rb = a.raw(), b.raw()
        assert ra.dtype == rb.dtype
        np.testing.assert_array_equal(ra, rb)
        ca, la = a.factor()
        cb, lb = b.factor()
        assert la == lb
        np.testing.assert_array_equal(ca, cb)
        assert a.merged == b.merged


@pytest.mark.parametrize("name", list(_frame().columns))
def test_frame_arrays_read_as_their_series(name):
    """The quick accessor (pandas' own column array) and the Series agree on every kind of
    column, including merged levels, code-point order of text and missing values."""
    df = _frame()
    quick = DataSource(df).column(name)
    _same(quick, Column(name, df[name]))
    # and both what pandas says: missing where isna(), the numbers, the levels
    na = quick.na_mask()
    np.testing.assert_array_equal(np.zeros(len(df), bool) if na is None else na,
                                  df[name].isna().to_numpy())
    if quick.kind == "numeric":
        np.testing.assert_array_equal(quick.numeric(),
                                      df[name].to_numpy(dtype=np.float64, na_value=np.nan))
    if quick.kind in ("categorical", "string") and name != "obj":
        codes, labels = quick.factor()
        values = df[name].astype(object)
        expected = list(df[name].cat.categories.astype(str)) if quick.kind == "categorical" \
            else sorted({v for v in values if isinstance(v, str)})
        if name != "objcat":  # 1 and "1": one level (merged), tested in test_design
            assert labels == expected
            np.testing.assert_array_equal(
                np.asarray(labels + [None], dtype=object)[codes],
                [None if pd.isna(v) else str(v) for v in values])
    _same(quick, Column(name, df[name].to_numpy() if df[name].dtype.kind in "fiub" else df[name]))


def test_quick_accessor_returns_arrays_or_the_series():
    df = _frame()
    assert isinstance(_pandas_column(df, "f64"), np.ndarray)
    assert isinstance(_pandas_column(df, "cat"), pd.Categorical)
    assert isinstance(_pandas_column(df, "when"), pd.Series)  # anything else: the public way
    assert isinstance(_pandas_column(df, "obj"), pd.Series)


def test_text_levels_in_code_point_order():
    df = _frame()
    codes, labels = DataSource(df).column("str").factor()
    assert labels == sorted({v for v in df["str"] if isinstance(v, str)})
    assert labels == ["B", "a", "b", "z", "é"]
    assert codes.tolist() == [4, 2, -1, 0, 1, 3, 4, 2]


def test_values_are_read_only_and_the_data_stay_writable():
    x = np.array([1.0, 2.0, np.nan])
    src = DataSource({"x": x})
    col = src.column("x")
    for arr in (col.numeric(), col.raw()):
        assert not arr.flags.writeable
        with pytest.raises(ValueError):
            arr[0] = 5.0
    assert x.flags.writeable and x[0] == 1.0
    df = pd.DataFrame({"x": x.copy(), "g": ["a", "b", "a"]})
    num = DataSource(df).column("x").numeric()
    assert not num.flags.writeable
    df.loc[0, "x"] = 9.0  # the user's frame is still theirs to change
    assert df["x"].iloc[0] == 9.0


def test_missing_is_a_new_array_each_time():
    src = DataSource({"x": [1.0, np.nan, 3.0], "g": ["a", None, "b"], "k": [1, 2, 3]})
    m = src.missing(["x", "k", "pi"])
    m[:] = True  # the caller may add to it
    assert src.missing(["x"]).tolist() == [False, True, False]
    assert src.column("x").na_mask().tolist() == [False, True, False]
    assert src.missing(["k"]) is None


def test_non_text_and_duplicate_column_labels():
    df = pd.DataFrame([[1.0, 2.0]], columns=[0, "x"])
    src = DataSource(df)
    assert src.names == ["0", "x"] and "0" in src
    assert src.column("0").numeric().tolist() == [1.0]
    with pytest.raises(DataError, match="duplicate column names: x"):
        DataSource(pd.DataFrame([[1, 2]], columns=["x", "x"]))
    src = DataSource(pd.DataFrame({"y": [1.0], "g": ["a"]}))
    assert src.names == ["y", "g"] and "g" in src and "z" not in src


def test_category_labels_follow_the_categories():
    """Labels are cached per categories Index; a new Index (even at a reused address) is
    read anew, and a frame whose categories change gives the new labels."""
    import gc

    for k in range(50):
        cats = [f"l{k}_{j}" for j in range(3)]
        df = pd.DataFrame({"g": pd.Categorical(cats * 2, categories=cats)})
        assert DataSource(df).column("g").factor()[1] == cats
        del df
        gc.collect()
    df = pd.DataFrame({"g": pd.Categorical(["b", "a"])})
    assert DataSource(df).column("g").factor()[1] == ["a", "b"]
    df["g"] = df["g"].cat.rename_categories({"a": "z"})
    assert DataSource(df).column("g").factor()[1] == ["z", "b"]
    labels = DataSource(df).column("g").factor()[1]
    labels.append("mutated")  # a caller's list is its own
    assert DataSource(df).column("g").factor()[1] == ["z", "b"]


@pytest.mark.parametrize("dtype", ["str", "string[python]", "string[pyarrow]"])
def test_long_text_columns_coded_as_short_ones(dtype):
    """From _ARRAY_FACTORIZE_MIN rows text is coded by pandas' own array (Arrow's hashing),
    below it through Python strings: the same levels (code-point order) and codes."""
    from multilevel.design import source

    rng = np.random.default_rng(3)
    words = np.array(["é", "b", "B", "a", "z", "ä", "Z", "aa", "", "\u00ff", "\u0100"], dtype=object)
    values = words[rng.integers(0, len(words), source._ARRAY_FACTORIZE_MIN + 10)]
    values[::97] = None
    long = pd.Series(values, dtype=dtype)
    col = Column("g", long)
    codes, labels = col.factor()
    assert labels == sorted(set(words))
    short = Column("g", long.iloc[:100].reset_index(drop=True))
    assert short.factor()[1] == sorted({v for v in values[:100] if v is not None})
    expected = [None if v is None else v for v in values]
    np.testing.assert_array_equal(np.asarray(labels + [None], dtype=object)[codes], expected)
    np.testing.assert_array_equal(col.na_mask(), [v is None for v in values])
