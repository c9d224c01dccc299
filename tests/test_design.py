"""The model frame: arrays, names and checks as lme4's lFormula/glFormula produce them."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import contrasts_kw
from multilevel.design import build_model_frame
from multilevel.errors import (ColumnNotFoundError, DataError, FormulaError, ModelSpecError,
                               MultilevelError)

FIXTURES = Path(__file__).parent / "fixtures"
DATA = FIXTURES / "data"
REFERENCE = FIXTURES / "reference"


# ---------------------------------------------------------------------------------------------
# lme4 reference cases
# ---------------------------------------------------------------------------------------------

def load_frame(dataset: str, preprocessing) -> pd.DataFrame:
    """A reference case's data with R's factor levels and its preprocessing applied."""
    name = dataset[:-4] if dataset.endswith(".csv") else dataset
    meta = json.loads((DATA / "datasets_meta.json").read_text())[name]
    facs = {c: str for c, i in meta["columns"].items() if i["type"] in ("factor", "ordered factor")}
    df = pd.read_csv(DATA / dataset, dtype=facs)
    for col in facs:  # R's ordered factors stay ordered (contr.poly in the fixed part)
        df[col] = pd.Categorical(df[col], categories=meta["columns"][col]["levels"],
                                 ordered=meta["columns"][col]["type"] == "ordered factor")
    for op in preprocessing or []:
        if op["op"] == "unordered":
            df[op["column"]] = df[op["column"]].cat.as_unordered()
            continue
        if op["op"] == "subset":
            col, val = [s.strip() for s in op["expr"].replace('"', "'").split("==")]
            df = df[df[col].astype(str) == val.strip("'")].reset_index(drop=True)
            for c in df.columns:
                if isinstance(df[c].dtype, pd.CategoricalDtype):
                    df[c] = df[c].cat.remove_unused_categories()
        elif op["op"] == "derive" and op["expr"] == "incidence / size":
            df[op["column"]] = df["incidence"] / df["size"]
        else:
            raise RuntimeError(f"unknown preprocessing {op}")
    return df


def _cases():
    out = []
    for path in sorted(REFERENCE.glob("*.json")):
        if path.name == "index.json":
            continue
        case = json.loads(path.read_text())
        if "models" not in case:
            out.append(pytest.param(case, id=case["id"]))
    return out


CASES = _cases()


def test_reference_cases_present():
    assert len(CASES) >= 31


@pytest.mark.parametrize("case", CASES)
def test_reference_case_structure(case):
    df = load_frame(case["dataset"], case.get("preprocessing"))
    before = df.copy(deep=True)
    mf = build_model_frame(case["formula"], df, weights=case.get("weights"),
                           family=case.get("family", "gaussian"),
                           **contrasts_kw(case))
    res = case["results"]
    assert mf.fixef_names == case["fixef_names"]
    # glmmTMB cases describe their terms in re_terms, with the covariance structure
    terms = case.get("re_structure") or case["re_terms"]
    assert [(r.group, r.terms, r.n_levels) for r in mf.reterms] == \
        [(r["group"], r["terms"], r["n_levels"]) for r in terms]
    if "re_terms" in case:
        assert [r.structure for r in mf.reterms] == [r["structure"] for r in terms]
    assert mf.nobs == res["nobs"]
    # the rows used are exactly the ones R kept
    dropped = set(case["rows_dropped_for_na_csv_row0"])
    assert mf.n_dropped == len(dropped)
    if not case.get("preprocessing") or all(op["op"] != "subset" for op in case["preprocessing"]):
        assert set(range(len(df))) - set(mf.rows.tolist()) == dropped
    # level labels and their order are lme4's
    for r in mf.reterms:
        assert r.levels == res["ranef"][r.group][r.terms[0]]["levels"]
        assert r.refs.dtype == np.int32 and r.refs.min() == 0 and r.refs.max() == r.n_levels - 1
        assert r.Z.shape == (mf.nobs, r.n_terms) and r.Z.flags.c_contiguous
    for name, levels in (case.get("factor_levels") or {}).items():
        assert mf.factor_levels[name] == levels
    assert mf.X.shape == (mf.nobs, len(mf.fixef_names)) and mf.X.flags.c_contiguous
    assert mf.X.dtype == np.float64 and mf.y.dtype == np.float64
    pd.testing.assert_frame_equal(df, before)


def _anova_models():
    out = []
    for path in sorted(REFERENCE.glob("anova_*.json")):
        case = json.loads(path.read_text())
        for row in case["table"]:
            out.append(pytest.param(case["models"][row["model"]], row["npar"],
                                    id=f"{case['id']}-{row['model']}"))
    return out


@pytest.mark.parametrize("model, npar", _anova_models())
def test_reference_anova_models_parameter_count(model, npar):
    # npar = fixed effects + covariance parameters (+ sigma for LMMs), as lme4 counts them
    df = load_frame(model["dataset"], model.get("preprocessing"))
    mf = build_model_frame(model["formula"], df, family=model["family"])
    ntheta = sum(r.n_terms * (r.n_terms + 1) // 2 for r in mf.reterms)
    assert len(mf.fixef_names) + ntheta + (model["family"] == "gaussian") == npar


def test_reference_responses_weights_offsets():
    cbpp = load_frame("cbpp.csv", [])
    mf = build_model_frame("cbind(incidence, size - incidence) ~ period + (1 | herd)", cbpp,
                           family="binomial")
    np.testing.assert_allclose(mf.weights, cbpp["size"])
    np.testing.assert_allclose(mf.y * mf.weights, cbpp["incidence"])
    mm = load_frame("Mmmec.csv", [])
    mf = build_model_frame("deaths ~ uvb + (1 | region) + offset(log(expected))", mm,
                           family="poisson")
    np.testing.assert_allclose(mf.offset, np.log(mm["expected"]))
    con = load_frame("Contraception.csv", [])
    mf = build_model_frame("use ~ age + I(age^2) + urban + livch + (1 | district)", con,
                           family="binomial")
    np.testing.assert_array_equal(mf.y, (con["use"] == "Y").astype(float))
    np.testing.assert_allclose(mf.X[:, 2], con["age"] ** 2)


# ---------------------------------------------------------------------------------------------
# small hand-made frames: Z columns, refs, levels
# ---------------------------------------------------------------------------------------------

@pytest.fixture
def small():
    return pd.DataFrame({
        "y": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0],
        "x": [0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0],
        "f": ["B", "A", "C", "A", "B", "C", "A", "B"],
        "g": ["g2", "g1", "g2", "g1", "g3", "g3", "g1", "g2"],
        "h": [1, 1, 2, 2, 1, 1, 2, 2],
    })


def test_z_and_refs_slope(small):
    mf = build_model_frame("y ~ x + (x | g)", small)
    (rt,) = mf.reterms
    assert rt.group == "g" and rt.levels == ["g1", "g2", "g3"]
    assert rt.terms == ["(Intercept)", "x"]
    np.testing.assert_array_equal(rt.refs, [1, 0, 1, 0, 2, 2, 0, 1])
    np.testing.assert_array_equal(rt.Z, np.column_stack([np.ones(8), small["x"]]))
    assert rt.label == "x | g"


def test_z_factor_slopes(small):
    df = pd.concat([small, small], ignore_index=True)  # 3 x 3 random effects need > 9 rows
    rt = build_model_frame("y ~ x + (0 + f | g)", df).reterms[0]
    assert rt.terms == ["fA", "fB", "fC"]
    np.testing.assert_array_equal(rt.Z, pd.get_dummies(df["f"]).to_numpy(dtype=float))
    rt = build_model_frame("y ~ x + (f | g)", df).reterms[0]
    assert rt.terms == ["(Intercept)", "fB", "fC"]
    np.testing.assert_array_equal(rt.Z[:, 0], 1.0)
    np.testing.assert_array_equal(rt.Z[:, 1], (df["f"] == "B").astype(float))


def test_interaction_group_levels_first_factor_outermost():
    df = pd.DataFrame({"y": np.arange(8.0), "a": pd.Categorical(list("ppqqppqq"), ["q", "p"]),
                       "b": [2, 10, 2, 10, 10, 10, 2, 2]})
    rt = build_model_frame("y ~ 1 + (1 | a:b)", df).reterms[0]
    assert rt.group == "a:b"
    # only observed combinations, the first factor's level order outermost, numbers as R
    assert rt.levels == ["q:2", "q:10", "p:2", "p:10"]
    np.testing.assert_array_equal(rt.refs, [2, 3, 0, 1, 3, 3, 0, 0])


def test_nested_groups_and_order():
    df = pd.DataFrame({"y": np.arange(12.0), "batch": list("AAAABBBBCCCC"),
                       "cask": list("abababababab")})
    mf = build_model_frame("y ~ 1 + (1 | batch/cask)", df)
    assert [(r.group, r.n_levels) for r in mf.reterms] == [("cask:batch", 6), ("batch", 3)]
    assert mf.reterms[0].levels == ["a:A", "a:B", "a:C", "b:A", "b:B", "b:C"]


def test_term_order_is_lme4s_rev_order():
    # lme4 orders by rev(order(n_levels)) when a later term has more levels: ties reversed
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"y": rng.normal(size=60), "x": rng.normal(size=60),
                       "a": np.repeat(list("abcde"), 12), "b": np.tile(list("0123456789"), 6)})
    mf = build_model_frame("y ~ x + (1 | a) + (0 + x | a) + (1 | b)", df)
    assert [(r.group, r.terms) for r in mf.reterms] == \
        [("b", ["(Intercept)"]), ("a", ["x"]), ("a", ["(Intercept)"])]
    # no later term has more levels: kept as written
    mf = build_model_frame("y ~ x + (1 | b) + (1 | a) + (0 + x | a)", df)
    assert [(r.group, r.terms) for r in mf.reterms] == \
        [("b", ["(Intercept)"]), ("a", ["(Intercept)"]), ("a", ["x"])]


def test_grouping_factor_types():
    y = np.arange(6.0)
    ints = build_model_frame("y ~ 1 + (1 | g)", {"y": y, "g": [308, 309, 308, 1000, 309, 1000]})
    assert ints.reterms[0].levels == ["308", "309", "1000"]  # numeric order, R's labels
    floats = build_model_frame("y ~ 1 + (1 | g)", {"y": y, "g": [1.5, 2.0, 1.5, 1e5, 2.0, 1e5]})
    assert floats.reterms[0].levels == ["1.5", "2", "1e+05"]
    bools = build_model_frame("y ~ 1 + (1 | g)", {"y": y, "g": [True, False] * 3})
    assert bools.reterms[0].levels == ["FALSE", "TRUE"]
    np.testing.assert_array_equal(bools.reterms[0].refs, [1, 0, 1, 0, 1, 0])
    cat = pd.Categorical(["z", "y", "z", "y", "z", "y"], categories=["z", "unused", "y"])
    cats = build_model_frame("y ~ 1 + (1 | g)", pd.DataFrame({"y": y, "g": cat}))
    assert cats.reterms[0].levels == ["z", "y"]  # category order, unused level dropped


def test_fixed_factor_coding_like_r(small):
    mf = build_model_frame("y ~ f + (1 | g)", small)
    assert mf.fixef_names == ["(Intercept)", "fB", "fC"]
    assert mf.factor_levels == {"f": ["A", "B", "C"]}
    mf = build_model_frame("y ~ 0 + f + x + (1 | g)", small)
    assert mf.fixef_names == ["fA", "fB", "fC", "x"]
    mf = build_model_frame("y ~ x:f + (1 | g)", small)
    assert mf.fixef_names == ["(Intercept)", "x:fA", "x:fB", "x:fC"]
    mf = build_model_frame("y ~ x * f + (1 | g)", small)
    assert mf.fixef_names == ["(Intercept)", "x", "fB", "fC", "x:fB", "x:fC"]
    np.testing.assert_array_equal(mf.assign, [0, 1, 2, 2, 3, 3])
    assert mf.term_labels == ["x", "f", "x:f"]
    mf = build_model_frame("y ~ factor(h) + I(x^2) + log(x) + (1 | g)", small)
    assert mf.fixef_names == ["(Intercept)", "factor(h)2", "I(x^2)", "log(x)"]
    np.testing.assert_allclose(mf.X[:, 3], np.log(small["x"]))
    b = build_model_frame("y ~ t + (1 | g)", small.assign(t=small["x"] > 2))
    assert b.fixef_names == ["(Intercept)", "tTRUE"]


def test_logical_variables_keep_both_levels():
    # model.matrix codes a logical with levels FALSE, TRUE even if one is absent, so an
    # all-TRUE column duplicates the intercept and is dropped for rank, as lme4 does
    df = pd.DataFrame({"y": np.arange(8.0), "t": [True] * 8, "x": np.arange(8.0) ** 2,
                       "g": list("aabbccdd")})
    mf = build_model_frame("y ~ t + x + I(x > 100) + (1 | g)", df)
    assert mf.fixef_names == ["(Intercept)", "x"]
    assert mf.dropped_columns == ["tTRUE", "I(x > 100)TRUE"]


def test_two_factor_interaction_column_order():
    df = pd.DataFrame({"y": np.arange(12.0), "a": list("pqr") * 4, "b": list("uuuvvv") * 2,
                       "g": list("ab") * 6})
    mf = build_model_frame("y ~ a * b + (1 | g)", df)
    # R varies the first factor fastest
    assert mf.fixef_names == ["(Intercept)", "aq", "ar", "bv", "aq:bv", "ar:bv"]
    # without margins R codes both factors fully; the redundant column is dropped by rank
    mf = build_model_frame("y ~ a:b + (1 | g)", df)
    assert mf.fixef_names == ["(Intercept)", "ap:bu", "aq:bu", "ar:bu", "ap:bv", "aq:bv"]
    assert mf.dropped_columns == ["ar:bv"]


def test_rank_deficient_columns_dropped_with_lme4_message(small):
    df = small.assign(x2=2 * small["x"], x3=small["x"] + 1.0)
    mf = build_model_frame("y ~ x + x2 + x3 + (1 | g)", df)
    assert mf.fixef_names == ["(Intercept)", "x"]
    assert mf.dropped_columns == ["x2", "x3"]
    assert "fixed-effect model matrix is rank deficient so dropping 2 columns / coefficients: " \
           "x2, x3" in mf.warnings
    np.testing.assert_array_equal(mf.assign, [0, 1])
    mf = build_model_frame("y ~ x + x2 + (1 | g)", df)
    assert "fixed-effect model matrix is rank deficient so dropping 1 column / coefficient: " \
           "x2" in mf.warnings


def test_nearly_collinear_column_kept(small):
    # a column 1e-4 away from the span is kept (R's tolerance is 1e-7)
    df = small.assign(x2=small["x"] + 1e-4 * np.sin(np.arange(8.0)))
    assert build_model_frame("y ~ x + x2 + (1 | g)", df).dropped_columns == []


def test_stateful_transforms_and_poly_names(small):
    mf = build_model_frame("y ~ poly(x, 2) + scale(h) + (1 | g)", small)
    assert mf.fixef_names == ["(Intercept)", "poly(x, 2)1", "poly(x, 2)2", "scale(h)"]
    np.testing.assert_allclose(mf.X[:, 3], (small["h"] - small["h"].mean()) / small["h"].std())


def test_offsets_are_summed(small):
    mf = build_model_frame("y ~ x + offset(log(x)) + offset(h / 10) + (1 | g)", small,
                           offset="x")
    np.testing.assert_allclose(mf.offset, np.log(small["x"]) + small["h"] / 10 + small["x"])
    mf = build_model_frame("y ~ x + (1 | g)", small, offset=np.arange(8.0))
    np.testing.assert_allclose(mf.offset, np.arange(8.0))
    assert build_model_frame("y ~ x + (1 | g)", small).offset is None


def test_column_names_that_are_not_identifiers():
    df = pd.DataFrame({"my y": [1.0, 2, 3, 4, 5, 6], "lambda": [1.0, 2, 3, 1, 2, 3],
                       "a.b": [2.0, 1, 4, 3, 5, 7], "g": list("aabbcc")})
    mf = build_model_frame("`my y` ~ I(lambda^2) + log(a.b) + (1 | g)", df)
    assert mf.response == "`my y`"
    assert mf.fixef_names == ["(Intercept)", "I(lambda^2)", "log(a.b)"]
    np.testing.assert_allclose(mf.X[:, 1], df["lambda"] ** 2)


# ---------------------------------------------------------------------------------------------
# missing values, user data untouched, input types
# ---------------------------------------------------------------------------------------------

def _with_missing():
    return pd.DataFrame({
        "y": [1.0, np.nan, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0],
        "x": [1.0, 2.0, 3.0, np.nan, 5.0, 6.0, 7.0, 8.0, 9.0],
        "f": pd.Categorical(["a", "b", "a", "b", None, "b", "a", "b", "c"]),
        "g": ["u", "u", "v", None, "v", "w", "w", "u", "v"],
        "unused": [np.nan] * 9,
        "w": [1.0, 1, 1, 1, 1, 1, np.nan, 1, 1],
    })


def test_missing_rows_dropped():
    df = _with_missing()
    mf = build_model_frame("y ~ x + f + (1 | g)", df, weights="w")
    # rows 1 (y), 3 (x and g), 4 (f), 6 (weights) go; the all-NaN unused column does not count
    np.testing.assert_array_equal(mf.rows, [0, 2, 5, 7, 8])
    assert mf.n_dropped == 4 and mf.nobs == 5
    assert "4 rows with missing values dropped" in mf.warnings
    np.testing.assert_array_equal(mf.y, [1.0, 3.0, 6.0, 8.0, 9.0])
    assert mf.fixef_names == ["(Intercept)", "x", "fb", "fc"]
    assert mf.reterms[0].levels == ["u", "v", "w"]


def test_unused_levels_after_dropping_are_dropped():
    df = _with_missing().drop(index=8)  # only row with f == "c" and ... keep others
    df.loc[0, "y"] = np.nan
    mf = build_model_frame("y ~ f + (1 | g)", df)
    assert mf.factor_levels["f"] == ["a", "b"]


def test_user_frame_unchanged():
    df = _with_missing()
    before = copy.deepcopy(df)
    dtypes = df.dtypes.copy()
    mf = build_model_frame("log(y) ~ scale(x) + f + offset(x) + (1 | g)", df, weights="w")
    mf.X[:] = 0.0  # the arrays are the frame's own
    mf.y[:] = 0.0
    mf.reterms[0].Z[:] = 0.0
    pd.testing.assert_frame_equal(df, before)
    pd.testing.assert_series_equal(df.dtypes, dtypes)
    assert list(df.columns) == list(before.columns)


def test_polars_input_gives_identical_arrays():
    df = pd.concat([_with_missing()] * 3, ignore_index=True)

    def nulls(col):
        return [None if pd.isna(v) else v for v in df[col].astype(object)]

    pdf = pl.DataFrame({
        "y": nulls("y"), "x": nulls("x"),
        "f": pl.Series(nulls("f"), dtype=pl.Enum(["a", "b", "c"])),
        "g": nulls("g"), "w": nulls("w"),
    })
    formula = "y ~ x * f + I(x^2) + (1 + x | g)"
    a = build_model_frame(formula, df, weights="w")
    b = build_model_frame(formula, pdf, weights="w")
    assert a.fixef_names == b.fixef_names
    for name in ("y", "X", "rows", "weights"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    for ra, rb in zip(a.reterms, b.reterms):
        assert (ra.group, ra.terms, ra.levels) == (rb.group, rb.terms, rb.levels)
        np.testing.assert_array_equal(ra.refs, rb.refs)
        np.testing.assert_array_equal(ra.Z, rb.Z)
    nd = b.new_design(pdf.drop_nulls().drop("y"))
    np.testing.assert_array_equal(nd.X, a.X[np.isin(a.rows, np.flatnonzero(
        pdf.select(pl.all().is_not_null()).to_numpy().all(axis=1)))])


def test_dict_input_and_categorical_polars_without_enum():
    data = {"y": np.arange(6.0), "x": [1.0, 2, 3, 4, 5, 7], "g": ["b", "a", "b", "a", "c", "c"]}
    a = build_model_frame("y ~ x + (1 | g)", data)
    b = build_model_frame("y ~ x + (1 | g)", pl.DataFrame(data).with_columns(
        pl.col("g").cast(pl.Categorical)))
    assert a.reterms[0].levels == b.reterms[0].levels == ["a", "b", "c"]
    np.testing.assert_array_equal(a.reterms[0].refs, b.reterms[0].refs)


def test_pandas_nullable_and_string_dtypes():
    df = pd.DataFrame({"y": pd.array([1.0, 2, None, 4, 5, 6, 7, 8], dtype="Float64"),
                       "x": pd.array([1, 2, 3, None, 5, 6, 7, 8], dtype="Int64"),
                       "g": pd.array(["a", "b", "a", "b", None, "c", "c", "a"], dtype="string")})
    mf = build_model_frame("y ~ x + (1 | g)", df)
    np.testing.assert_array_equal(mf.rows, [0, 1, 5, 6, 7])
    np.testing.assert_array_equal(mf.X[:, 1], [1, 2, 6, 7, 8])
    assert mf.reterms[0].levels == ["a", "b", "c"]


# ---------------------------------------------------------------------------------------------
# responses by family
# ---------------------------------------------------------------------------------------------

def _family_check(name, mf):
    """The response check glmer runs on a frame (the family's, not design's)."""
    from multilevel.families import get_family

    return get_family(name).check_response(mf.y, mf.weights, mf.factor_levels.get(mf.response),
                                           mf.response.startswith("cbind("), name=mf.response)


def test_binomial_responses():
    base = {"x": [0.1, 0.5, 0.9, 1.3, 1.7, 2.1], "g": list("aabbcc")}
    fam = {"family": "binomial"}
    mf = build_model_frame("y ~ x + (1 | g)", {**base, "y": [0, 1, 1, 0, 1, 0]}, **fam)
    np.testing.assert_array_equal(mf.y, [0, 1, 1, 0, 1, 0])
    mf = build_model_frame("y ~ x + (1 | g)", {**base, "y": [False, True] * 3}, **fam)
    np.testing.assert_array_equal(mf.y, [0, 1] * 3)
    lev = pd.Categorical(list("YNNYNY"), categories=["N", "Y"])
    mf = build_model_frame("y ~ x + (1 | g)", pd.DataFrame({**base, "y": lev}), **fam)
    np.testing.assert_array_equal(mf.y, [1, 0, 0, 1, 0, 1])  # first level = failure
    assert mf.factor_levels["y"] == ["N", "Y"]
    mf = build_model_frame("y ~ x + (1 | g)", {**base, "y": ["no", "yes"] * 3}, **fam)
    np.testing.assert_array_equal(mf.y, [0, 1] * 3)
    mf = build_model_frame("p ~ x + (1 | g)", {**base, "p": [0.2, 0.5, 1, 0, 0.25, 0.75],
                                               "n": [5, 2, 3, 4, 4, 4]}, weights="n", **fam)
    np.testing.assert_allclose(mf.weights, [5, 2, 3, 4, 4, 4])
    data = {**base, "s": [1, 0, 3, 2, 0, 4], "f": [1, 0, 1, 2, 4, 0], "w": [2.0] * 6}
    mf = build_model_frame("cbind(s, f) ~ x + (1 | g)", data, weights="w", **fam)
    np.testing.assert_allclose(mf.y, [0.5, 0, 0.75, 0.5, 0, 1])  # s + f == 0 -> y = 0 ...
    np.testing.assert_allclose(mf.weights, [4, 0, 8, 8, 8, 8])  # ... with weight 0, kept
    assert mf.nobs == 6
    # design reads the response; the binomial family owns the value rules
    with pytest.raises(DataError, match="outside"):
        _family_check("binomial", build_model_frame("y ~ x + (1 | g)", {**base, "y": [0, 2, 1, 0, 1, 0]}, **fam))


def test_poisson_and_gaussian_responses():
    base = {"x": [0.1, 0.5, 0.9, 1.3, 1.7, 2.1], "g": list("aabbcc")}
    mf = build_model_frame("y ~ x + (1 | g)", {**base, "y": [0, 3, 1, 7, 2, 0]}, family="poisson")
    np.testing.assert_array_equal(mf.y, [0, 3, 1, 7, 2, 0])
    assert mf.y.dtype == np.float64
    with pytest.raises(DataError, match="negative"):
        _family_check("poisson", build_model_frame("y ~ x + (1 | g)", {**base, "y": [0, -3, 1, 7, 2, 0]},
                                                   family="poisson"))
    with pytest.raises(DataError, match="'y'.*not\\s+numeric|numeric response"):
        build_model_frame("y ~ x + (1 | g)", {**base, "y": list("abcabc")})
    mf = build_model_frame("log(y) ~ x + (1 | g)", {**base, "y": [1.0, 2, 3, 4, 5, 6]})
    np.testing.assert_allclose(mf.y, np.log([1, 2, 3, 4, 5, 6]))
    assert mf.response == "log(y)"


def test_expression_nan_rows_dropped_like_na_omit():
    data = {"y": [1.0, -1.0, 3.0, 4.0, 5.0, 6.0, 7.0], "x": np.arange(7.0),
            "g": list("aabbccc")}
    mf = build_model_frame("log(y) ~ x + (1 | g)", data)
    np.testing.assert_array_equal(mf.rows, [0, 2, 3, 4, 5, 6])
    assert mf.warnings == ["1 row with missing values dropped"]


# ---------------------------------------------------------------------------------------------
# new data
# ---------------------------------------------------------------------------------------------

def test_new_design_reproduces_fitting_rows():
    df = load_frame("Hsb82.csv", [])
    formula = "mAch ~ meanses * cses + sector * cses + scale(ses) + (1 + cses | school)"
    mf = build_model_frame(formula, df)
    nd = mf.new_design(df.drop(columns=["mAch"]))
    np.testing.assert_allclose(nd.X, mf.X, rtol=0, atol=1e-12)
    assert nd.term_index == [0]
    np.testing.assert_array_equal(nd.refs[0], mf.reterms[0].refs)
    np.testing.assert_array_equal(nd.Z[0], mf.reterms[0].Z)
    # a few rows alone: scale() keeps the fitting data's centre and scale
    part = mf.new_design(df.iloc[[5, 500, 7000]])
    np.testing.assert_allclose(part.X, mf.X[[5, 500, 7000]], atol=1e-12)


def test_new_design_poly_and_factor_subset():
    df = load_frame("Oxboys.csv", [])
    mf = build_model_frame("height ~ poly(age, 2) + (age | Subject)", df)
    nd = mf.new_design(df.iloc[10:13])
    np.testing.assert_allclose(nd.X, mf.X[10:13], atol=1e-12)
    ex = load_frame("Exam.csv", [])
    mf = build_model_frame("normexam ~ standLRT + sex + schgend + (standLRT | school)", ex)
    sub = ex[ex["schgend"] == "girls"].head(4)
    nd = mf.new_design(sub)  # only one level present in the new data: coding unchanged
    np.testing.assert_allclose(nd.X, mf.X[sub.index.to_numpy()])


def test_new_levels(small):
    mf = build_model_frame("y ~ x + f + (x | g) + (1 | h)", small)
    new = pd.DataFrame({"x": [1.0, 2.0], "f": ["A", "C"], "g": ["g3", "NEW"], "h": [2, 3]})
    with pytest.raises(DataError, match="new level.*'g'.*'NEW'"):
        mf.new_design(new)
    nd = mf.new_design(new, allow_new_levels=True)
    groups = [mf.reterms[k].group for k in nd.term_index]
    refs = dict(zip(groups, nd.refs))
    np.testing.assert_array_equal(refs["g"], [2, -1])
    np.testing.assert_array_equal(refs["h"], [1, -1])
    np.testing.assert_allclose(nd.X, [[1, 1, 0, 0], [1, 2, 0, 1]])
    bad = new.assign(f=["A", "Z"])
    with pytest.raises(DataError, match="'Z'.*factor 'f'"):
        mf.new_design(bad, allow_new_levels=True)


def test_new_design_interaction_group_new_combination():
    df = load_frame("Pastes.csv", [])
    mf = build_model_frame("strength ~ 1 + (1 | batch/cask)", df)
    new = pd.DataFrame({"batch": ["A", "A", "J"], "cask": ["b", "NEW_LEVEL", "c"]})
    nd = mf.new_design(new, allow_new_levels=True)
    by_group = {mf.reterms[k].group: r for k, r in zip(nd.term_index, nd.refs)}
    lv = mf.reterms[0].levels
    np.testing.assert_array_equal(by_group["cask:batch"], [lv.index("b:A"), -1, lv.index("c:J")])
    np.testing.assert_array_equal(by_group["batch"], [0, 0, 9])


def test_re_form(small):
    mf = build_model_frame("y ~ x + (x | g) + (1 | h)", small)
    new = small.drop(columns="y")
    for none in ("~0", "NA", "0", "~ 0"):
        nd = mf.new_design(new, re_form=none)
        assert nd.term_index == [] and nd.refs == [] and nd.Z == []
    nd = mf.new_design(new, re_form="~ (1 | h)")
    assert [mf.reterms[k].group for k in nd.term_index] == ["h"]
    # only the intercept of (x | g): the x column is zeroed
    nd = mf.new_design(new, re_form="~ (1 | g)")
    assert [mf.reterms[k].group for k in nd.term_index] == ["g"]
    np.testing.assert_array_equal(nd.Z[0][:, 0], 1.0)
    np.testing.assert_array_equal(nd.Z[0][:, 1], 0.0)
    with pytest.raises(DataError, match="zzz"):
        mf.new_design(new, re_form="~ (1 | zzz)")
    # re_form=NA needs no grouping columns
    nd = mf.new_design(new.drop(columns=["g", "h"]), re_form="NA")
    np.testing.assert_allclose(nd.X, mf.X)


def test_new_design_missing_values_and_columns(small):
    mf = build_model_frame("y ~ x + (1 | g)", small)
    with pytest.raises(DataError, match="'x'.*missing"):
        mf.new_design(pd.DataFrame({"x": [1.0, np.nan], "g": ["g1", "g2"]}))
    with pytest.raises(ColumnNotFoundError, match="'x'"):
        mf.new_design(pd.DataFrame({"g": ["g1"]}))


def test_new_design_offsets(small):
    mf = build_model_frame("y ~ x + offset(log(x)) + (1 | g)", small, offset="h")
    nd = mf.new_design(pd.DataFrame({"x": [2.0], "h": [3.0], "g": ["g1"]}))
    np.testing.assert_allclose(nd.offset, [np.log(2.0) + 3.0])
    mf = build_model_frame("y ~ x + (1 | g)", small)
    assert mf.new_design(small).offset is None


# ---------------------------------------------------------------------------------------------
# bad input: each a MultilevelError with a clear message
# ---------------------------------------------------------------------------------------------

def test_unknown_column_suggests_close_names(small):
    with pytest.raises(ColumnNotFoundError) as info:
        build_model_frame("y ~ xx + (1 | g)", small)
    assert "'xx'" in str(info.value) and "'x'" in str(info.value)
    assert isinstance(info.value, KeyError) and isinstance(info.value, MultilevelError)
    with pytest.raises(ColumnNotFoundError, match="'G'.*'g'"):
        build_model_frame("y ~ x + (1 | G)", small)
    with pytest.raises(ColumnNotFoundError, match="wt"):
        build_model_frame("y ~ x + (1 | g)", small, weights="wt")


def test_non_numeric_response(small):
    with pytest.raises(DataError, match="'f'"):
        build_model_frame("f ~ x + (1 | g)", small)


def test_one_level_grouping_factor(small):
    with pytest.raises(ModelSpecError, match="grouping factor 'one' has only one level; a random "
                                             "effect needs at least two groups"):
        build_model_frame("y ~ x + (1 | one)", small.assign(one="k"))


def test_as_many_levels_as_observations(small):
    with pytest.raises(ModelSpecError, match="number of levels of each grouping factor must be "
                                             "< number of observations"):
        build_model_frame("y ~ x + (1 | id)", small.assign(id=np.arange(8)))
    # glmer allows n levels for n observations (allow.n = TRUE)
    mf = build_model_frame("y ~ x + (1 | id) + (1 | g)",
                           small.assign(id=np.arange(8), y=[0, 1] * 4), family="binomial")
    assert mf.reterms[0].n_levels == 8


def test_more_random_effects_than_observations(small):
    df = small.assign(id=np.repeat(np.arange(4), 2))
    with pytest.raises(ModelSpecError) as info:
        build_model_frame("y ~ x + (x | id)", df)
    assert str(info.value) == (
        "number of observations (=8) <= number of random effects (=8) for term (x | id); the "
        "random-effects parameters and the residual variance (or scale parameter) are probably "
        "unidentifiable")


def test_no_rows_left():
    df = pd.DataFrame({"y": [np.nan, 1.0], "x": [1.0, np.nan], "g": ["a", "b"]})
    with pytest.raises(DataError, match="no rows left"):
        build_model_frame("y ~ x + (1 | g)", df)


def test_formula_without_bars_and_unparsable(small):
    f = "y ~ x + f"
    with pytest.raises(FormulaError, match="no random-effects terms; use multilevel.lm") as info:
        build_model_frame(f, small)
    assert info.value.position == len(f)
    with pytest.raises(FormulaError) as info:
        build_model_frame("y ~ x + (1 | g", small)
    assert info.value.position == 14
    with pytest.raises(FormulaError, match="no response"):
        build_model_frame("~ x + (1 | g)", small)


def test_bad_weights(small):
    with pytest.raises(DataError, match="non-negative"):
        build_model_frame("y ~ x + (1 | g)", small, weights=-small["x"].to_numpy())
    with pytest.raises(DataError, match="weights column 'f' is not numeric"):
        build_model_frame("y ~ x + (1 | g)", small, weights="f")
    with pytest.raises(DataError, match="3 values"):
        build_model_frame("y ~ x + (1 | g)", small, weights=[1.0, 2.0, 3.0])


def test_other_bad_input(small):
    with pytest.raises(DataError, match="cbind"):
        build_model_frame("cbind(h, h) ~ x + (1 | g)", small)
    with pytest.raises(DataError, match="infinite"):
        build_model_frame("y ~ log(z) + (1 | g)", small.assign(z=np.arange(8.0)))
    with pytest.raises(DataError, match="different lengths"):
        build_model_frame("y ~ x + (1 | g)", {"y": [1.0, 2.0], "x": [1.0], "g": ["a", "b"]})
    with pytest.raises(DataError, match="DataFrame"):
        build_model_frame("y ~ x + (1 | g)", [[1, 2], [3, 4]])
    with pytest.raises(DataError, match="only one level"):
        build_model_frame("y ~ f + (1 | g)", small.assign(f="A"))


# ---------------------------------------------------------------------------------------------
# pickling and the module graph
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("formula", [
    "Reaction ~ Days + (Days | Subject)",
    # stateful transforms (formulaic specs), group centring, an offset, uncorrelated terms
    "Reaction ~ scale(Days) + poly(Days, 2) + center(Days, by = Subject) + offset(Days / 10)"
    " + (Days || Subject)",
])
def test_pickled_frame_rebuilds_identical_design(formula):
    """A ModelFrame is plain data: after a pickle round trip (another process, a cache) its
    new_design gives the same X, offset, refs and Z as the original frame."""
    import pickle

    from multilevel.datasets import load

    sleep = load("sleepstudy")
    mf = build_model_frame(formula, sleep)
    back = pickle.loads(pickle.dumps(mf))
    np.testing.assert_array_equal(back.X, mf.X)
    new = sleep.iloc[[3, 40, 41, 170]].drop(columns="Reaction")
    for frame in (mf, back):
        assert frame.new_design(new).X.shape == (4, len(mf.fixef_names))
    a, b = mf.new_design(new), back.new_design(new)
    np.testing.assert_array_equal(b.X, a.X)
    np.testing.assert_array_equal(b.X, mf.X[[3, 40, 41, 170]])
    assert (a.offset is None) == (b.offset is None)
    if a.offset is not None:
        np.testing.assert_array_equal(b.offset, a.offset)
    assert b.term_index == a.term_index
    for ra, rb, za, zb in zip(a.refs, b.refs, a.Z, b.Z):
        np.testing.assert_array_equal(rb, ra)
        np.testing.assert_array_equal(zb, za)


DESIGN_ORDER = ["contrasts", "source", "variables", "matrices", "grouped", "grouping", "response", "newdata", "frame",
                "stream", "chunked", "dasksource", "buckets"]


def test_design_modules_form_a_layered_dag():
    """Each design module imports only the layers below design (formula, errors, control)
    and design modules before it in DESIGN_ORDER (so the graph has no cycle), and nothing
    from the engine, results or above, not even under TYPE_CHECKING."""
    import ast

    import multilevel.design as design

    root = Path(design.__file__).parent
    assert sorted(p.stem for p in root.glob("*.py") if p.stem != "__init__") == sorted(DESIGN_ORDER)
    for k, name in enumerate(DESIGN_ORDER):
        tree = ast.parse((root / f"{name}.py").read_text())
        imported = [node.module for node in ast.walk(tree)
                    if isinstance(node, ast.ImportFrom) and node.module] + \
                   [a.name for node in ast.walk(tree) if isinstance(node, ast.Import)
                    for a in node.names]
        for mod in imported:
            if not mod.startswith("multilevel"):
                continue
            parts = mod.split(".")
            if len(parts) >= 2 and parts[1] == "design":
                assert len(parts) == 3 and parts[2] in DESIGN_ORDER[:k], (name, mod)
            else:
                assert len(parts) >= 2 and parts[1] in ("formula", "errors", "control", "_blas"), \
                    (name, mod)


# ---------------------------------------------------------------------------------------------
# properties and size
# ---------------------------------------------------------------------------------------------

@settings(max_examples=40, deadline=None)
@given(st.data())
def test_random_frames_round_trip(data):
    """X matches a hand-built treatment coding; new_design reproduces X, Z and refs; polars
    input gives the same arrays."""
    n = data.draw(st.integers(12, 40))
    seed = data.draw(st.integers(0, 2 ** 31 - 1))
    rng = np.random.default_rng(seed)
    levels = data.draw(st.lists(st.sampled_from(["a", "b", "c", "d", "B", "10", "9"]),
                                min_size=2, max_size=5, unique=True))
    f = np.array(levels)[np.r_[np.arange(len(levels)), rng.integers(0, len(levels), n)][:n]]
    df = pd.DataFrame({"y": rng.normal(size=n), "x": rng.normal(size=n), "f": f,
                       "g": rng.choice(["u", "v", "w"], n)})
    if df["g"].nunique() < 2:
        df.loc[0, "g"], df.loc[1, "g"] = "u", "v"
    mf = build_model_frame("y ~ x * f + (1 | g)", df)
    lv = sorted(set(f))
    dummies = np.column_stack([(f == lev).astype(float) for lev in lv[1:]])
    x = df["x"].to_numpy()[:, None]
    expected = np.column_stack([np.ones(n), x, dummies, dummies * x])
    names = ["(Intercept)", "x"] + [f"f{lev}" for lev in lv[1:]] + [f"x:f{lev}" for lev in lv[1:]]
    # with few rows a level can make columns collinear: those are dropped, nothing else
    assert mf.fixef_names == [c for c in names if c not in mf.dropped_columns]
    assert set(mf.dropped_columns) <= set(names)
    assert np.linalg.matrix_rank(expected) == len(mf.fixef_names)
    np.testing.assert_allclose(mf.X, expected[:, [names.index(c) for c in mf.fixef_names]])
    nd = mf.new_design(df.drop(columns="y"))
    np.testing.assert_array_equal(nd.X, mf.X)
    np.testing.assert_array_equal(nd.refs[0], mf.reterms[0].refs)
    np.testing.assert_array_equal(nd.Z[0], mf.reterms[0].Z)
    other = build_model_frame("y ~ x * f + (1 | g)", pl.DataFrame(df.to_dict("list")))
    np.testing.assert_array_equal(other.X, mf.X)
    np.testing.assert_array_equal(other.reterms[0].refs, mf.reterms[0].refs)


def _synthetic(n: int, groups: int, categorical: bool) -> pd.DataFrame:
    rng = np.random.default_rng(7)
    g = np.char.add("g", np.char.zfill(rng.integers(0, groups, n).astype(str), 5))
    df = pd.DataFrame({"y": rng.normal(size=n), "x1": rng.normal(size=n),
                       "x2": rng.normal(size=n), "g": g})
    if categorical:
        df["g"] = df["g"].astype("category")
    return df


def test_vectorised_build_matches_direct_computation():
    df = _synthetic(200_000, 2_000, categorical=False)
    mf = build_model_frame("y ~ x1 + x2 + (1 + x1 | g)", df)
    np.testing.assert_array_equal(mf.X, np.column_stack([np.ones(len(df)), df["x1"], df["x2"]]))
    rt = mf.reterms[0]
    assert rt.levels == sorted(set(df["g"]))
    np.testing.assert_array_equal(np.asarray(rt.levels)[rt.refs], df["g"].to_numpy())
    np.testing.assert_array_equal(rt.Z, np.column_stack([np.ones(len(df)), df["x1"]]))


@pytest.mark.slow
@pytest.mark.parametrize("categorical", [False, True])
def test_million_rows_build_fast(categorical):
    import time

    df = _synthetic(1_000_000, 10_000, categorical)
    build_model_frame("y ~ x1 + x2 + (1 + x1 | g)", _synthetic(2000, 20, categorical))
    best = min(_timed(lambda: build_model_frame("y ~ x1 + x2 + (1 + x1 | g)", df), time)
               for _ in range(3))
    assert best < 0.25, best  # ~40 ms (strings) / ~25 ms (categorical) on a 2-core box


def _timed(fn, time):
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def test_frame_sized_dense_algebra_runs_on_one_blas_thread():
    """OpenBLAS threads cost multiples on a loaded machine for frame-sized QR (the
    no-pooling lm of hsb: 0.2 s on one thread, up to 4 s on two): _blas keeps them at one,
    and leaves big problems threaded."""
    from threadpoolctl import threadpool_info

    from multilevel._blas import one_thread

    def blas_threads():
        return {i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"}

    with one_thread(7185, 322):
        assert blas_threads() == {1}
    with one_thread(10**8, 10**3):  # 1e14 flops: the library's own threading
        assert blas_threads() == blas_threads()


def test_small_fits_do_not_switch_blas_threads():
    """Switching costs about a millisecond (more than a small fit): below 1e8 flops the
    threads are left alone."""
    import contextlib

    from multilevel._blas import one_thread

    assert isinstance(one_thread(180, 2), contextlib.nullcontext)
    assert not isinstance(one_thread(7185, 322), contextlib.nullcontext)


def test_frame_sized_cross_products_run_on_one_blas_thread(monkeypatch):
    """X'X of the model frame (shared by its range check and rank rule) is a frame-sized
    product: it runs inside multilevel._blas.one_thread, as the rank rule always did."""
    from multilevel.design import matrices

    sizes = []
    real = matrices.one_thread

    def spy(n, p):
        sizes.append((n, p))
        return real(n, p)

    monkeypatch.setattr(matrices, "one_thread", spy)
    X = np.random.default_rng(0).normal(size=(300, 12))
    G = matrices.gram(X)
    np.testing.assert_allclose(G, X.T @ X)
    assert (300, 12) in sizes


def test_tall_cross_products_below_one_threads_range_run_on_one_blas_thread(monkeypatch):
    """A product too small for one_thread's switch but over many rows (star's 23,758 x 26
    model matrix: 0.5-2 s on two busy OpenBLAS threads, milliseconds on one) runs inside
    dot_thread, which single-threads beyond 10,000 rows."""
    from multilevel.design import matrices

    rows = []
    real = matrices.dot_thread

    def spy(n):
        rows.append(n)
        return real(n)

    monkeypatch.setattr(matrices, "dot_thread", spy)
    X = np.random.default_rng(0).normal(size=(12_000, 12))
    np.testing.assert_allclose(matrices.gram(X), X.T @ X)
    assert rows == [12_000]


def test_long_dot_products_run_on_one_blas_thread(monkeypatch):
    """OpenBLAS threads a dot product of more than 10,000 entries, whose start-up on a busy
    2-core machine cost the 1e5-row frame ~5 ms (median) for X'X: the frame's dot products
    over that many rows run on one thread (_blas.dot_thread), shorter ones switch nothing."""
    import contextlib

    from threadpoolctl import threadpool_info

    from multilevel import _blas
    from multilevel.design import matrices

    assert isinstance(_blas.dot_thread(10_000), contextlib.nullcontext)
    with _blas.dot_thread(10_001):
        assert {i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"} == {1}
    seen = []
    real = matrices.dot_thread
    monkeypatch.setattr(matrices, "dot_thread", lambda n: seen.append(n) or real(n))
    X = np.random.default_rng(1).normal(size=(20_000, 3))
    np.testing.assert_allclose(matrices.gram(X), X.T @ X)
    np.testing.assert_allclose(matrices.column_sumsq(X), (X ** 2).sum(axis=0))
    assert seen == [20_000, 20_000]
