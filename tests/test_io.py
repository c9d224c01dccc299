"""Data files read by extension (``multilevel.datasets.read_data``, the CLI's ``--data``):
CSV, TSV, Parquet, Feather, SPSS and Stata, with value labels as categoricals."""
from __future__ import annotations

import sys

import numpy as np
import pandas as pd
import pyreadstat  # the io extra, part of the test extra
import pytest

from multilevel.app.cli import main
from multilevel.datasets import load, read_data
from multilevel.errors import DataError, MissingDependencyError, MultilevelError


@pytest.fixture
def frame() -> pd.DataFrame:
    return pd.DataFrame({"y": [1.5, 2.25, np.nan, 4.0], "n": [1, 2, 3, 4],
                         "g": pd.Categorical(["b", "a", "b", "c"], categories=["c", "b", "a"])})


@pytest.mark.parametrize("ext, write", [
    (".csv", lambda df, p: df.to_csv(p, index=False)),
    (".csv.gz", lambda df, p: df.to_csv(p, index=False)),
    (".tsv", lambda df, p: df.to_csv(p, sep="\t", index=False)),
    (".TAB", lambda df, p: df.to_csv(p, sep="\t", index=False)),
])
def test_text_files(tmp_path, frame, ext, write):
    path = tmp_path / f"d{ext}"
    write(frame, path)
    back = read_data(path)
    assert list(back.columns) == ["y", "n", "g"]
    np.testing.assert_array_equal(back["y"].to_numpy(float), frame["y"].to_numpy(float))
    assert back["g"].astype(str).tolist() == ["b", "a", "b", "c"]


@pytest.mark.parametrize("ext, write", [(".parquet", pd.DataFrame.to_parquet),
                                        (".feather", pd.DataFrame.to_feather)])
def test_arrow_files_keep_categories(tmp_path, frame, ext, write):
    path = tmp_path / f"d{ext}"
    write(frame, path)
    back = read_data(str(path))
    pd.testing.assert_frame_equal(back, frame)
    assert list(back["g"].cat.categories) == ["c", "b", "a"]  # the file's order, not sorted


def test_spss_value_labels_become_categoricals_in_file_order(tmp_path):
    df = pd.DataFrame({"sex": [2.0, 1.0, 2.0, np.nan, 3.0], "school": [10.0, 10.0, 20.0, 20.0, 30.0],
                       "score": [1.0, 2.0, 3.0, 4.0, 5.0]})
    path = tmp_path / "survey.sav"
    # labels stored in this order: girl (2) before boy (1); 3 has no label; school has none
    pyreadstat.write_sav(df, str(path), variable_value_labels={"sex": {2.0: "girl", 1.0: "boy"}})
    back = read_data(path)
    assert isinstance(back["sex"].dtype, pd.CategoricalDtype) and not back["sex"].cat.ordered
    assert list(back["sex"].cat.categories) == ["girl", "boy", "3"]
    assert back["sex"].tolist()[:3] == ["girl", "boy", "girl"] and pd.isna(back["sex"][3])
    assert back["sex"][4] == "3"
    assert back["school"].dtype == np.float64 and back["score"].tolist() == [1, 2, 3, 4, 5]


def test_stata_value_labels_become_categoricals_in_file_order(tmp_path):
    df = pd.DataFrame({"grp": pd.Categorical(["low", "high", "mid", "high"],
                                             categories=["low", "mid", "high"]),
                       "y": [1.0, 2.0, 3.0, 4.0], "id": [1, 1, 2, 2]})
    path = tmp_path / "d.dta"
    df.to_stata(path, write_index=False)
    back = read_data(path)
    assert list(back["grp"].cat.categories) == ["low", "mid", "high"]
    assert not back["grp"].cat.ordered  # R's factor, not an ordered one (pandas' default)
    assert back["grp"].tolist() == ["low", "high", "mid", "high"]
    assert back["y"].tolist() == [1.0, 2.0, 3.0, 4.0] and back["id"].tolist() == [1, 1, 2, 2]


def test_cli_fits_an_spss_file_with_labelled_groups(tmp_path, capsys):
    sleep = load("sleepstudy")
    codes = sleep["Subject"].cat.codes.astype(float) + 1
    df = pd.DataFrame({"Reaction": sleep["Reaction"], "Days": sleep["Days"].astype(float),
                       "Subject": codes})
    labels = {float(i + 1): f"S{s}" for i, s in enumerate(sleep["Subject"].cat.categories)}
    path = tmp_path / "sleep.sav"
    pyreadstat.write_sav(df, str(path), variable_value_labels={"Subject": labels})
    assert main(["fit", "Reaction ~ Days + (Days | Subject)", "--data", str(path)]) == 0
    out = capsys.readouterr().out
    assert "REML criterion at convergence: 1743.6" in out and "Subject, 18" in out
    assert "   Data: sleep.sav" in out


def test_missing_reader_package_says_what_to_install(tmp_path, frame, monkeypatch):
    path = tmp_path / "d.parquet"
    frame.to_parquet(path)
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # as if pyarrow were not installed
    with pytest.raises(MissingDependencyError, match=r'pip install "multilevel\[io\]"') as e:
        read_data(path)
    assert isinstance(e.value, MultilevelError) and "Parquet" in str(e.value)
    pyreadstat.write_sav(frame[["y", "n"]], str(tmp_path / "d.sav"))
    monkeypatch.setitem(sys.modules, "pyreadstat", None)
    with pytest.raises(MissingDependencyError, match="pyreadstat"):
        read_data(tmp_path / "d.sav")


def test_missing_reader_package_on_the_command_line(tmp_path, frame, monkeypatch, capsys):
    path = tmp_path / "d.feather"
    frame.to_feather(path)
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    assert main(["fit", "y ~ n + (1 | g)", "--data", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: reading Feather files needs the package pyarrow") and err.count("\n") == 1


@pytest.mark.parametrize("name, content, match", [
    ("d.xlsx", "x", "cannot tell the format of"),
    ("d.parquet", "not parquet", "cannot read .* as a Parquet file"),
    ("d.sav", "not spss", "cannot read .* as a SPSS file"),
    ("d.dta", "not stata", "cannot read .* as a Stata file"),
    ("d.csv", b"\xff\xfe\x00bad", "cannot read .* as a CSV file"),
])
def test_unreadable_files_raise_data_error(tmp_path, name, content, match):
    path = tmp_path / name
    (path.write_bytes if isinstance(content, bytes) else path.write_text)(content)
    with pytest.raises(DataError, match=match):
        read_data(path)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        read_data(tmp_path / "nope.csv")
    (tmp_path / "dir.csv").mkdir()
    with pytest.raises(DataError, match="is a directory"):
        read_data(tmp_path / "dir.csv")
