"""Example data sets bundled with multilevel (the data of lme4's and mlmRev's examples).

``load(name)`` returns a pandas DataFrame in which every factor is a categorical with R's
level order (the first level is the reference level of treatment contrasts, which is not
always the alphabetically first, e.g. Hsb82 ``sector``: Public, Catholic) and R's ordered
factors are ordered categoricals. Grouping factors with numeric-looking labels (``Subject``
308, 309, ...) stay categorical, as in R. Names are lower case; ``hsb`` is mlmRev's
``Hsb82`` (with the school mean SES ``meanses`` and the group-centred ``cses``).

The numbers are exactly those lme4 was fitted on for the reference fits: the CSVs were
written with the shortest decimal text that reads back to the same double. Licence and
provenance: ``data/PROVENANCE.md`` (GPL (>= 2), as the R packages that distribute them).

Layer: datasets, at the bottom beside errors: it imports only ``multilevel.errors`` (and
numpy / pandas), so any layer, the tests and the app may load example data. pandas is
imported when a frame is built, not with the module: ``list_datasets(as_frame=False)`` (what
``multilevel datasets`` prints) reads only the JSON catalogue.

Example
-------
>>> from multilevel.datasets import list_datasets, load
>>> df = load("sleepstudy")
>>> df.shape, list(df.columns)
((180, 3), ['Reaction', 'Days', 'Subject'])
>>> list(df["Subject"].cat.categories[:3])
['308', '309', '310']
>>> "hsb" in set(list_datasets()["name"])
True
"""
from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources
from typing import TYPE_CHECKING, Any

from multilevel.datasets.files import FORMATS, read_data
from multilevel.errors import DataError

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["load", "list_datasets", "info", "read_data", "FORMATS"]

_ALIASES = {"hsb82": "hsb"}

#: the simulated data sets (``simulate.py``): rows and columns at the default seed and a
#: one-line description. Kept here so that listing them draws nothing (tests/test_simulate.py
#: checks the sizes against the drawn frames).
_SIMULATED_INFO: dict[str, tuple[int, int, str]] = {
    "popularity": (2000, 6, "Simulated: popularity of 2000 pupils in 100 classes (extraversion, "
                            "sex, teacher experience; random intercepts and slopes, cross-level "
                            "interaction)."),
    "salaries": (200, 3, "Simulated: salaries of 200 faculty in 10 departments by years of "
                         "experience (random intercepts and slopes by department)."),
    "nurses": (1404, 9, "Simulated: binary intention to leave of about 1400 nurses in 18 "
                        "hospitals (age, sex, family, feeling valued, experience; inner/outer "
                        "city hospitals)."),
}


@lru_cache(maxsize=1)
def _catalog() -> dict[str, dict[str, Any]]:
    """Column types, R level orders and descriptions of the bundled files (data/datasets.json)."""
    text = resources.files(__package__).joinpath("data", "datasets.json").read_text(encoding="utf-8")
    return json.loads(text)


def _key(name: str) -> str:
    key = name.strip().lower()
    key = _ALIASES.get(key, key)
    if key.endswith(".csv"):
        key = key[:-4]
    if key in _SIMULATED_INFO:
        return key
    if key not in _catalog():
        raise DataError(f"no bundled data set named {name!r}; available: {', '.join(sorted(_catalog()))}")
    return key


def list_datasets(as_frame: bool = True) -> pd.DataFrame | list[dict[str, Any]]:
    """The bundled data sets: name, R name, R package, rows, columns and a one-line description.

    ``as_frame=False`` gives the same rows as a list of dicts, without importing pandas.

    >>> list_datasets().loc[lambda d: d.name == "dyestuff", ["rows", "columns"]].values.tolist()
    [[30, 2]]
    >>> list_datasets(as_frame=False)[0]["name"]
    'sleepstudy'
    """
    rows = [
        {"name": k, "r_name": m["r_name"], "package": m["package"], "rows": m["nrow"],
         "columns": m["ncol"], "description": m["description"]}
        for k, m in _catalog().items()
    ]
    for k, (nrow, ncol, description) in _SIMULATED_INFO.items():
        rows.append({"name": k, "r_name": "", "package": "multilevel (simulated)",
                     "rows": nrow, "columns": ncol, "description": description})
    if not as_frame:
        return rows
    import pandas as pd

    return pd.DataFrame(rows)


@lru_cache(maxsize=None)
def _simulated_frame(key: str) -> pd.DataFrame:
    """A simulated teaching data set (``simulate.py``) drawn with the default seed."""
    from multilevel.datasets.simulate import DEFAULT_SEED, SIMULATED

    return SIMULATED[key](seed=DEFAULT_SEED)


def info(name: str) -> dict[str, Any]:
    """Everything known about one data set: description, provenance, columns and their types."""
    key = _key(name)
    if key in _SIMULATED_INFO:
        import pandas as pd

        from multilevel.datasets.simulate import DEFAULT_SEED, SIMULATED

        fn, description = SIMULATED[key], _SIMULATED_INFO[key][2]
        df = _simulated_frame(key)
        return {"description": description,
                "provenance": f"multilevel.datasets.simulate.{fn.__name__}(seed={DEFAULT_SEED})",
                "nrow": len(df), "ncol": df.shape[1],
                "columns": {c: {"type": "factor" if isinstance(df[c].dtype, pd.CategoricalDtype)
                                else ("integer" if df[c].dtype.kind == "i" else "double")}
                            for c in df.columns}}
    m = _catalog()[key]
    return {k: v for k, v in m.items()}


def _levels(rule_or_list: Any, values: pd.Series) -> list[str]:
    """R's level order: stored explicitly, or (for long lists) as the rule that reproduces it.

    The rules were checked against R's levels when the catalogue was built: ``numeric``
    (labels sorted as numbers), ``lexical`` (sorted as strings), ``appearance`` (order of
    first appearance in the file).
    """
    if isinstance(rule_or_list, list):
        return rule_or_list
    import pandas as pd

    uniq = list(pd.unique(values.dropna()))
    if rule_or_list == "numeric":
        return sorted(uniq, key=float)
    if rule_or_list == "lexical":
        return sorted(uniq)
    if rule_or_list == "appearance":
        return uniq
    raise ValueError(f"unknown level rule {rule_or_list!r}")


def load(name: str) -> pd.DataFrame:
    """Load a bundled data set by name (case-insensitive: ``"sleepstudy"``, ``"hsb"``, ``"Dyestuff"``).

    Factors become categoricals with R's level order (ordered factors: ordered categoricals);
    integer columns without missing values are int64, numbers with missing values float64
    (NaN).
    """
    import pandas as pd

    key = _key(name)
    if key in _SIMULATED_INFO:  # drawn with the default seed; a copy, so callers may modify it
        df = _simulated_frame(key).copy()
        df.attrs["name"] = key
        return df
    meta = _catalog()[key]
    cols = meta["columns"]
    factors = [c for c, m in cols.items() if "factor" in m["type"]]
    path = resources.files(__package__).joinpath("data", meta["file"])
    with resources.as_file(path) as p:
        # Only empty fields are missing: labels such as "NA:NA" (star$birthq) are real levels.
        df = pd.read_csv(p, dtype={c: str for c in factors}, keep_default_na=False, na_values=[""])
    for c, m in cols.items():
        if c in factors:
            levels = _levels(m.get("levels", m.get("levels_rule")), df[c])
            df[c] = pd.Categorical(df[c], categories=levels, ordered=m["type"] == "ordered factor")
        elif m["type"] == "integer" and not df[c].isna().any():
            df[c] = df[c].astype("int64")
        else:
            df[c] = df[c].astype("float64")
    # its name, as R's data sets have theirs: fits print it on the Data: line
    df.attrs["name"] = meta.get("r_name", key)
    return df
