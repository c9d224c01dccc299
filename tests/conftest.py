"""Shared test helpers: the vendored lme4 reference cases and their data.

Reference fits (``fixtures/reference/*.json``, schema in ``fixtures/reference/README.md``)
were computed by lme4 1.1-31 on the CSVs in ``fixtures/data/`` with R's factor level order
from ``fixtures/data/datasets_meta.json``. ``load_case_frame`` rebuilds exactly the data frame
lme4 saw: factors as categoricals in R's level order, then the case's ``preprocessing``.
"""
from __future__ import annotations

import functools
import json
import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

TESTS = Path(__file__).resolve().parent
REF_DIR = TESTS / "fixtures" / "reference"
DATA_DIR = TESTS / "fixtures" / "data"


@functools.lru_cache(maxsize=None)
def reference_index() -> list[dict]:
    """The cases listed in ``index.json`` (fits and anova pairs)."""
    return json.loads((REF_DIR / "index.json").read_text())["cases"]


def lmm_case_ids() -> list[str]:
    """Ids of every lme4 LMM fit case (all of them: none is skipped). The glmmTMB cases
    (structured covariances, ``fitted_by: glmmTMB``) have another layout and their own test,
    tests/test_reference_covstruct.py."""
    return [c["id"] for c in reference_index() if c["type"] == "fit" and c["model_type"] == "LMM"
            and c.get("fitted_by", "lme4") != "glmmTMB"]


@functools.lru_cache(maxsize=None)
def load_case(case_id: str) -> dict:
    """One reference case as a dict."""
    return json.loads((REF_DIR / f"{case_id}.json").read_text())


@functools.lru_cache(maxsize=None)
def _meta() -> dict:
    path = DATA_DIR / "datasets_meta.json"
    if not path.exists():
        pytest.fail(f"{path} is missing: the reference data (CSV + datasets_meta.json) belong in {DATA_DIR}")
    return json.loads(path.read_text())


def read_dataset(dataset: str) -> pd.DataFrame:
    """A CSV of ``fixtures/data`` with factors as categoricals in R's level order.

    Only empty fields are missing values (labels such as ``NA:NA`` are real levels).
    """
    name = dataset[:-4] if dataset.endswith(".csv") else dataset
    meta = _meta()[name]["columns"]
    factors = {c: str for c, m in meta.items() if "factor" in m["type"]}
    df = pd.read_csv(DATA_DIR / f"{name}.csv", dtype=factors, keep_default_na=False, na_values=[""])
    for c in factors:
        df[c] = pd.Categorical(df[c], categories=meta[c]["levels"],
                               ordered=meta[c]["type"] == "ordered factor")
    return df


def apply_preprocessing(df: pd.DataFrame, ops: list[dict] | None) -> pd.DataFrame:
    """Apply a case's ``preprocessing`` operations (subset / derive / unordered) in order."""
    for op in ops or []:
        kind = op["op"]
        if kind == "unordered":
            df[op["column"]] = df[op["column"]].cat.as_unordered()
        elif kind == "subset":
            # the cases use `column == "value"`; NA counts as FALSE, as in R's subset()
            col, val = (s.strip() for s in op["expr"].split("=="))
            keep = (df[col].astype(object) == val.strip("\"'")).fillna(False).to_numpy(bool)
            df = df.loc[keep].reset_index(drop=True)
            for c in df.columns:
                if isinstance(df[c].dtype, pd.CategoricalDtype):
                    df[c] = df[c].cat.remove_unused_categories()  # R's model frame drops them too
        elif kind == "derive":
            expr = op["expr"]
            if expr.startswith("factor(seq_len"):
                labels = [str(i + 1) for i in range(len(df))]
                df[op["column"]] = pd.Categorical(labels, categories=labels)
            else:
                df[op["column"]] = df.eval(expr)
        else:
            raise ValueError(f"unknown preprocessing op {kind!r}")
    return df


def load_case_frame(case: dict) -> pd.DataFrame:
    """The data frame of a case, as lme4 was given it."""
    return apply_preprocessing(read_dataset(case["dataset"]), case.get("preprocessing"))


def newdata_frame(case: dict, df: pd.DataFrame) -> pd.DataFrame:
    """The case's prediction rows with the dtypes of the fitting frame.

    Categorical columns keep the fitting categories, with unseen labels (``NEW_LEVEL``)
    appended, so that known levels keep their codes.
    """
    nd = pd.DataFrame(case["results"]["newdata"])
    for c in nd.columns:
        if c not in df.columns:
            continue
        if isinstance(df[c].dtype, pd.CategoricalDtype):
            cats = list(df[c].cat.categories)
            vals = [None if v is None else str(v) for v in nd[c]]
            extra = [v for v in dict.fromkeys(vals) if v is not None and v not in cats]
            nd[c] = pd.Categorical(vals, categories=cats + extra, ordered=df[c].cat.ordered)
        else:
            nd[c] = pd.to_numeric(nd[c]).astype(float)
    return nd


@functools.lru_cache(maxsize=None)
def fit_reference_case(case_id: str) -> Any:
    """``multilevel.lmer`` on a reference case (cached: several tests read the same fit)."""
    import multilevel

    case = load_case(case_id)
    df = load_case_frame(case)
    kw = {"weights": case["weights"]} if case.get("weights") else {}
    kw.update(contrasts_kw(case))
    with warnings.catch_warnings():
        # expected (singular fits, rows dropped); the tests read them from fit.warnings
        warnings.simplefilter("ignore", multilevel.MultilevelWarning)
        return multilevel.lmer(case["formula"], data=df, reml=bool(case["REML"]), **kw)


def contrasts_kw(case: dict) -> dict:
    """A case's ``contrasts_arg`` (lme4's ``contrasts = list(sector = "contr.sum")``) as the
    library's argument, ``{"contrasts": {"sector": "sum"}}`` ({} when the case has none)."""
    ca = case.get("contrasts_arg")
    if not ca:
        return {}
    return {"contrasts": {f: v[6:] if isinstance(v, str) and v.startswith("contr.") else v
                          for f, v in ca.items()}}


def rel_diff(a: float, b: float) -> float:
    """|a - b| / |b| (|a - b| when b is 0)."""
    return abs(a - b) / abs(b) if b != 0 else abs(a - b)


def isclose_none(a: float | None, b: float | None, tol: float) -> bool:
    """Absolute comparison in which None (NA) only matches None or NaN."""
    if b is None:
        return a is None or (isinstance(a, float) and math.isnan(a))
    return a is not None and abs(a - b) <= tol


def as_array(x: Any) -> np.ndarray:
    return np.asarray(x, dtype=float)


# -- shared fixtures -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def sleep():
    """The sleepstudy data (modules that need their own variant define their own)."""
    from multilevel.datasets import load

    return load("sleepstudy")


@pytest.fixture(scope="module")
def sleep_fit(sleep):
    """lme4's classic ``Reaction ~ Days + (Days | Subject)`` (REML)."""
    import multilevel as ml

    return ml.lmer("Reaction ~ Days + (Days | Subject)", sleep)
