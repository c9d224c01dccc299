"""Data files read into a pandas DataFrame by their extension: CSV, TSV, Parquet, Feather,
SPSS (``.sav``, ``.zsav``) and Stata (``.dta``).

Layer: datasets (the bottom, beside errors); imports only ``multilevel.errors``. The readers
are pandas' (CSV, TSV, with pyarrow for Parquet and Feather) and pyreadstat's (SPSS, Stata);
pyarrow and pyreadstat are the optional extra ``multilevel[io]``, and a file that needs one
that is missing raises :class:`~multilevel.errors.MissingDependencyError` saying so.

Variables with value labels (SPSS, Stata) become pandas categoricals whose categories are the
labels in the order the file stores them (a value with no label becomes a category of its
own, after the labelled ones, as haven's ``as_factor``): a multilevel model then treats them
as R treats a factor, the first label being the reference level.

>>> import pandas as pd, tempfile, os
>>> path = os.path.join(tempfile.mkdtemp(), "d.tsv")
>>> pd.DataFrame({"y": [1.5, 2.0], "g": ["a", "b"]}).to_csv(path, sep="\\t", index=False)
>>> read_data(path).dtypes.astype(str).tolist()
['float64', 'str']
"""
from __future__ import annotations

import importlib
import os
from typing import TYPE_CHECKING, Any, Callable

from multilevel.errors import DataError, MissingDependencyError

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["read_data", "FORMATS", "format_of"]

#: file extension -> (format name, the optional package its reader needs or None)
FORMATS: dict[str, tuple[str, str | None]] = {
    ".csv": ("CSV", None), ".csv.gz": ("CSV", None), ".csv.bz2": ("CSV", None),
    ".csv.zip": ("CSV", None), ".csv.xz": ("CSV", None),
    ".tsv": ("TSV", None), ".tsv.gz": ("TSV", None), ".tab": ("TSV", None),
    ".parquet": ("Parquet", "pyarrow"), ".pq": ("Parquet", "pyarrow"),
    ".feather": ("Feather", "pyarrow"), ".arrow": ("Feather", "pyarrow"),
    ".sav": ("SPSS", "pyreadstat"), ".zsav": ("SPSS", "pyreadstat"),
    ".dta": ("Stata", "pyreadstat"),
}


def format_of(path: str) -> tuple[str, str | None]:
    """The format of a file from its extension (case-insensitive), and the package it needs.

    >>> format_of("survey.SAV")
    ('SPSS', 'pyreadstat')
    """
    lower = os.path.basename(str(path)).lower()
    for ext in sorted(FORMATS, key=len, reverse=True):  # ".csv.gz" before ".gz"-less matches
        if lower.endswith(ext):
            return FORMATS[ext]
    known = ", ".join(sorted({f"{name} ({ext})" for ext, (name, _) in FORMATS.items()
                              if ext.count(".") == 1}))
    raise DataError(f"cannot tell the format of {str(path)!r} from its extension; readable "
                    f"files: {known}")


def _require(package: str, fmt: str) -> Any:
    try:
        return importlib.import_module(package)
    except ImportError:
        raise MissingDependencyError(
            f"reading {fmt} files needs the package {package}: pip install \"multilevel[io]\" "
            f"(or pip install {package})") from None


def _labelled(df: pd.DataFrame, meta: Any) -> pd.DataFrame:
    """Columns with value labels (pyreadstat's metadata) as categoricals of their labels."""
    import pandas as pd

    for col, labelset in meta.variable_to_label.items():
        labels: dict[Any, str] = meta.value_labels.get(labelset, {})
        if col not in df.columns or not labels:
            continue
        values = df[col]
        categories = list(dict.fromkeys(labels.values()))  # file order; repeated labels once
        unlabelled = sorted(v for v in values.dropna().unique() if v not in labels)
        extra = {v: _value_text(v) for v in unlabelled}
        categories += [t for t in extra.values() if t not in categories]
        mapped = values.map({**extra, **labels})  # missing values stay missing
        df[col] = pd.Categorical(mapped, categories=categories)
    return df


def _value_text(v: Any) -> str:
    """A value without a label as R prints it: 3.0 -> "3", 2.5 -> "2.5"."""
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


def _read_spss_or_stata(path: str, fmt: str) -> pd.DataFrame:
    pyreadstat = _require("pyreadstat", fmt)
    reader: Callable[..., Any] = pyreadstat.read_dta if fmt == "Stata" else pyreadstat.read_sav
    df, meta = reader(path)
    return _labelled(df, meta)


def read_data(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read a data file into a DataFrame, the format chosen by the extension (see ``FORMATS``).

    Raises ``DataError`` for a missing file, an unknown extension or a file its reader
    cannot parse, and ``MissingDependencyError`` when the reader's package is missing.

    >>> read_data("no/such/file.csv")
    Traceback (most recent call last):
    ...
    multilevel.errors.DataError: no such file: 'no/such/file.csv'
    """
    path = os.fspath(path)
    fmt, package = format_of(path)
    if not os.path.exists(path):
        raise DataError(f"no such file: {path!r}")
    if os.path.isdir(path):
        raise DataError(f"{path!r} is a directory, not a data file")
    if package is not None:
        _require(package, fmt)
    import pandas as pd

    try:
        if fmt == "CSV":
            return pd.read_csv(path)
        if fmt == "TSV":
            return pd.read_csv(path, sep="\t")
        if fmt == "Parquet":
            return pd.read_parquet(path)
        if fmt == "Feather":
            return pd.read_feather(path)
        return _read_spss_or_stata(path, fmt)
    except MissingDependencyError:
        raise
    except Exception as e:  # noqa: BLE001 -- each reader (pandas, pyarrow, pyreadstat) has its own error types
        detail = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DataError(f"cannot read {path!r} as a {fmt} file: {detail}") from e
