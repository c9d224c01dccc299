"""Bundled data sets: names, R level orders, derived columns, identity with the reference data."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from conftest import read_dataset
from multilevel.datasets import info, list_datasets, load
from multilevel.errors import MultilevelError

REQUIRED = ["sleepstudy", "hsb", "dyestuff", "dyestuff2", "penicillin", "pastes", "cbpp", "cake", "exam",
            "oxboys", "early", "scotssec", "contraception", "grouseticks", "mmmec", "verbagg", "star",
            "egsingle", "chem97", "insteval"]


def test_catalogue_lists_every_required_set():
    tab = list_datasets()
    assert set(REQUIRED) <= set(tab["name"])
    assert list(tab.columns) == ["name", "r_name", "package", "rows", "columns", "description"]
    assert tab.set_index("name").loc["hsb", "r_name"] == "Hsb82"


@pytest.mark.parametrize("name", REQUIRED)
def test_load_matches_reference_csv(name):
    """Same rows, columns, values and R level order as the CSVs the reference fits used."""
    df = load(name)
    meta = info(name)
    assert df.shape == (meta["nrow"], meta["ncol"])
    ref = read_dataset(meta["r_name"])
    assert list(df.columns) == list(ref.columns)
    for c in df.columns:
        if isinstance(ref[c].dtype, pd.CategoricalDtype):
            assert list(df[c].cat.categories) == list(ref[c].cat.categories), c
            assert df[c].cat.ordered == (meta["columns"][c]["type"] == "ordered factor")
            assert df[c].astype(object).equals(ref[c].astype(object)), c
        else:
            assert np.array_equal(df[c].to_numpy(float), ref[c].to_numpy(float), equal_nan=True), c


def test_names_are_case_insensitive_with_aliases():
    assert load("Dyestuff").equals(load("dyestuff"))
    assert load("Hsb82").shape == load("hsb").shape == (7185, 8)


def test_r_level_orders():
    assert list(load("hsb")["sector"].cat.categories) == ["Public", "Catholic"]
    assert list(load("exam")["schgend"].cat.categories) == ["mixed", "boys", "girls"]
    assert list(load("sleepstudy")["Subject"].cat.categories[:3]) == ["308", "309", "310"]
    assert load("star")["birthq"].cat.categories[-1] == "NA:NA"  # a label, not a missing value


def test_hsb_has_school_mean_and_centred_ses():
    h = load("hsb")
    school_mean = h.groupby("school", observed=True)["ses"].transform("mean")
    assert np.allclose(h["meanses"], school_mean, atol=1e-12, rtol=0)
    assert np.allclose(h["cses"], h["ses"] - h["meanses"], atol=1e-12, rtol=0)


def test_missing_values_and_integer_columns():
    star = load("star")
    assert star["math"].isna().sum() == 2183 and star["math"].dtype == np.float64
    assert load("cake")["angle"].dtype == np.int64


def test_unknown_name():
    with pytest.raises(MultilevelError, match="no bundled data set"):
        load("nonexistent")
