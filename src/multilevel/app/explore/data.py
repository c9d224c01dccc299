"""The explorer's data: where the current data set comes from, what the page needs to know of
it, and the code that loads it in Python and R.

The page never sends data. It sends a *data spec*, a small JSON object that names the data:

``{"kind": "bundled", "name": "hsb"}``
    a data set of :mod:`multilevel.datasets`;
``{"kind": "file", "id": 0}`` / ``{"kind": "frame", "id": 0}``
    a file given on the command line or a data frame passed to ``multilevel.explore()``,
    by its number among the sources the server was started with (the page cannot name an
    arbitrary path: a web page must not read the user's files through the explorer);
``{"kind": "simulate", "n_groups": 20, "group_size": 20, "tau0": 1.0, ...}``
    a data set drawn by :func:`multilevel.datasets.simulate.simulate_two_level` with the
    sliders' values (:data:`SIM_PARAMS` lists them with their ranges).

:class:`DataStore` turns a spec into a data frame (a few recent ones are kept, so moving a
model slider does not re-read or re-draw the data) and describes the frame for the model
builder (:func:`describe`). A bad spec is a :class:`~multilevel.errors.DataError` that names
the offending field. The frames are never modified.

Example
-------
>>> store = DataStore()
>>> frame, label, spec = store.get({"kind": "simulate", "n_groups": 5, "group_size": 4})
>>> frame.shape, label, spec["tau0"], spec["unequal"]
((20, 4), 'simulated', 1.0, True)
>>> describe(frame, label)["suggestion"]["formula"]
'y ~ x + (x | group)'
"""
from __future__ import annotations

import json
import os
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from multilevel.errors import DataError

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["SIM_PARAMS", "SIM_UNEQUAL", "DEFAULT_FORMULAS", "DataStore", "describe", "data_code",
           "simulation_truth"]

#: the simulator's sliders: name -> (label, min, max, step, default). The page builds its
#: sliders from this table (``/api/datasets``), and the server checks the values against
#: it, so the ranges live in one place. The maxima keep a refit under a few hundred ms.
SIM_PARAMS: dict[str, tuple[str, float, float, float, float]] = {
    "n_groups": ("groups J", 2, 200, 1, 20),
    "group_size": ("group size n", 1, 200, 1, 10),
    "tau0": ("intercept SD τ₀", 0.0, 5.0, 0.05, 1.0),
    "tau1": ("slope SD τ₁", 0.0, 3.0, 0.05, 0.5),
    "corr": ("correlation ρ", -1.0, 1.0, 0.05, 0.0),
    "sigma": ("residual SD σ", 0.1, 5.0, 0.05, 1.5),
    "beta0": ("intercept β₀", -5.0, 5.0, 0.1, 0.0),
    "beta1": ("slope of x β₁", -3.0, 3.0, 0.05, 0.5),
    "gamma": ("effect of w γ", -3.0, 3.0, 0.05, 0.0),
    "seed": ("seed", 0, 99999, 1, 1),
}
_SIM_INTEGER = {"n_groups", "group_size", "seed"}
#: unequal group sizes by default: small groups shrink more, which the shrinkage view shows
#: against group size (the defaults above give groups of about 5 to 15 rows)
SIM_UNEQUAL = True
#: more rows than this are refused: the sliders would no longer refit at once
SIM_MAX_ROWS = 20_000

#: a model to start from for the bundled data sets (the builder's first suggestion)
DEFAULT_FORMULAS: dict[str, str] = {
    "sleepstudy": "Reaction ~ Days + (Days | Subject)",
    "hsb": "mAch ~ cses + (1 + cses | school)",
    "dyestuff": "Yield ~ 1 + (1 | Batch)",
    "dyestuff2": "Yield ~ 1 + (1 | Batch)",
    "penicillin": "diameter ~ 1 + (1 | plate) + (1 | sample)",
    "pastes": "strength ~ 1 + (1 | batch/cask)",
    "cake": "angle ~ recipe + temp + (1 | replicate)",
    "exam": "normexam ~ standLRT + (standLRT | school)",
    "chem97": "score ~ gcsecnt + (1 | school)",
    "scotssec": "attain ~ verbal + (1 | primary)",
    "oxboys": "height ~ age + (age | Subject)",
    "early": "cog ~ age + trt + (1 | id)",
    "egsingle": "math ~ year + (year | schoolid)",
    "star": "math ~ cltype + (1 | sch)",
    "insteval": "y ~ service + (1 | s) + (1 | d)",
    "popularity": "popular ~ extrav + (extrav | class)",
    "salaries": "salary ~ experience + (experience | department)",
    "nurses": "valued ~ experience + (1 | hospital)",
    "grouseticks": "TICKS ~ cHEIGHT + (1 | BROOD)",
    "cbpp": "incidence ~ period + (1 | herd)",
    "verbagg": "Anger ~ Gender + (1 | id)",
    "arabidopsis": "total.fruits ~ nutrient + (1 | popu)",
    "contraception": "age ~ urban + (1 | district)",
    "mmmec": "deaths ~ uvb + (1 | region)",
}

#: data sets kept in memory (a few: hsb is 7,185 rows, the simulated ones are small)
_CACHE_SIZE = 6
#: a grouping-factor candidate has at most this many levels (InstEval's s: 2,972)
_MAX_GROUP_LEVELS = 5000
#: the level-2 columns are found for the largest few candidates (a groupby each)
_LEVEL2_GROUPS = 8


def _spec_key(spec: dict[str, Any]) -> str:
    return json.dumps(spec, sort_keys=True)


def _sim_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """The simulation spec with every parameter present, checked against :data:`SIM_PARAMS`."""
    out: dict[str, Any] = {"kind": "simulate"}
    unknown = sorted(set(spec) - set(SIM_PARAMS) - {"kind", "unequal"})
    if unknown:
        raise DataError(f"simulate: unknown parameter {unknown[0]!r}; the parameters are "
                        f"{', '.join(SIM_PARAMS)}, unequal")
    for name, (label, lo, hi, _step, default) in SIM_PARAMS.items():
        value = spec.get(name, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise DataError(f"simulate: {name} ({label}) must be a number, got {value!r}")
        if not lo <= value <= hi:
            raise DataError(f"simulate: {name} ({label}) must be in [{lo:g}, {hi:g}], got {value!r}")
        if name in _SIM_INTEGER:
            if float(value) != int(value):
                raise DataError(f"simulate: {name} ({label}) must be a whole number, got {value!r}")
            value = int(value)
        else:
            value = float(value)
        out[name] = value
    unequal = spec.get("unequal", SIM_UNEQUAL)
    if not isinstance(unequal, bool):
        raise DataError(f"simulate: unequal must be true or false, got {unequal!r}")
    out["unequal"] = unequal
    if out["n_groups"] * out["group_size"] > SIM_MAX_ROWS:
        raise DataError(f"simulate: n_groups x group_size = {out['n_groups'] * out['group_size']} "
                        f"rows; the explorer simulates at most {SIM_MAX_ROWS}")
    return out


def simulation_truth(spec: dict[str, Any]) -> dict[str, float]:
    """The generating model's parameters in the names of a fit of ``y ~ x + w + (x | group)``
    (fixed effects and the varcorr labels the page shows), for the "true value" beside each
    estimate.

    >>> simulation_truth({"kind": "simulate", "tau0": 2.0})["sd (Intercept) | group"]
    2.0
    """
    s = _sim_spec(spec)
    return {"(Intercept)": s["beta0"], "x": s["beta1"], "w": s["gamma"],
            "sd (Intercept) | group": s["tau0"], "sd x | group": s["tau1"],
            "corr x, (Intercept) | group": s["corr"], "sigma": s["sigma"]}


@dataclass
class _Source:
    """A file or data frame the server was started with."""

    label: str
    path: str | None = None
    frame: pd.DataFrame | None = None


@dataclass
class DataStore:
    """The data sets the explorer can show: the bundled ones, the simulator and the sources
    given at start (``files``: paths; ``frames``: {label: data frame}). ``get(spec)`` gives
    ``(frame, label, canonical spec)``; recent frames are cached by spec."""

    files: list[str] = field(default_factory=list)
    frames: dict[str, pd.DataFrame] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._sources: dict[str, list[_Source]] = {
            "file": [_Source(os.path.basename(p), path=os.path.abspath(p)) for p in self.files],
            "frame": [_Source(label, frame=f) for label, f in self.frames.items()],
        }
        self._cache: OrderedDict[str, tuple[pd.DataFrame, str]] = OrderedDict()
        self._lock = threading.Lock()  # the server answers requests from a thread pool
        # fitted models of the cached frames: choosing other groups for the pooling view
        # redraws without a refit
        from multilevel.app.explore.state import StateCache

        self.states = StateCache()

    def sources(self) -> list[dict[str, Any]]:
        """The sources given at start, as the page lists them: {kind, id, label}."""
        return [{"kind": kind, "id": i, "label": s.label, "path": s.path}
                for kind, items in self._sources.items() for i, s in enumerate(items)]

    def canonical(self, spec: Any) -> dict[str, Any]:
        """The spec checked and completed (a DataError names what is wrong)."""
        if not isinstance(spec, dict):
            raise DataError(f"data: expected an object such as {{\"kind\": \"bundled\", \"name\": "
                            f"\"hsb\"}}, got {spec!r}")
        kind = spec.get("kind")
        if kind == "bundled":
            from multilevel.datasets import _key  # the bundled names and their aliases

            name = spec.get("name")
            if not isinstance(name, str):
                raise DataError(f"data: a bundled data set needs a name, got {name!r}")
            return {"kind": "bundled", "name": _key(name)}
        if kind in ("file", "frame"):
            i = spec.get("id")
            items = self._sources[kind]
            if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < len(items):
                raise DataError(f"data: no {kind} number {i!r}; the explorer was started with "
                                f"{len(items)} {kind}(s)")
            return {"kind": kind, "id": i}
        if kind == "simulate":
            return _sim_spec(spec)
        raise DataError(f"data: kind must be bundled, file, frame or simulate, got {kind!r}")

    def label(self, spec: dict[str, Any]) -> str:
        """The data set's name as the page, the summary and the code show it."""
        kind = spec["kind"]
        if kind == "bundled":
            return spec["name"]
        if kind == "simulate":
            return "simulated"
        return self._sources[kind][spec["id"]].label

    def get(self, spec: Any) -> tuple[pd.DataFrame, str, dict[str, Any]]:
        """(data frame, label, canonical spec) of a data spec."""
        spec = self.canonical(spec)
        key = _spec_key(spec)
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
                return hit[0], hit[1], spec
        frame = self._load(spec)
        label = self.label(spec)
        with self._lock:
            self._cache[key] = (frame, label)
            while len(self._cache) > _CACHE_SIZE:
                self._cache.popitem(last=False)
        return frame, label, spec

    def _load(self, spec: dict[str, Any]) -> pd.DataFrame:
        kind = spec["kind"]
        if kind == "bundled":
            from multilevel.datasets import load

            return load(spec["name"])
        if kind == "simulate":
            from multilevel.datasets.simulate import simulate_two_level

            return simulate_two_level(**{k: v for k, v in spec.items() if k != "kind"})
        src = self._sources[kind][spec["id"]]
        if src.frame is not None:
            return src.frame
        from multilevel.datasets import read_data

        return read_data(src.path)


# --- describing a frame for the model builder ----------------------------------------------

_SYNTACTIC = re.compile(r"^([A-Za-z]|[.](?![0-9]))[A-Za-z0-9._]*$")


def term(name: str) -> str:
    """A column name as a formula term: as it is when syntactic, else in backticks.

    >>> term("mAch"), term("my days")
    ('mAch', '`my days`')
    """
    return name if _SYNTACTIC.match(name) else f"`{name}`"


def _is_numeric(col: pd.Series) -> bool:
    import pandas as pd

    return (pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col)
            and not isinstance(col.dtype, pd.CategoricalDtype))


def describe(frame: pd.DataFrame, name: str | None = None) -> dict[str, Any]:
    """What the model builder needs: the columns (numeric or factor, distinct values,
    missing), the candidate grouping factors, per candidate the columns constant within its
    groups (level-2 predictors), and a model to start from (``suggestion``).

    >>> import multilevel as ml
    >>> d = describe(ml.datasets.load("hsb"), "hsb")
    >>> d["suggestion"]["formula"], "meanses" in d["level2"]["school"]
    ('mAch ~ cses + (1 + cses | school)', True)
    """
    import pandas as pd

    n = len(frame)
    columns = []
    for c in frame.columns:
        col = frame[c]
        columns.append({"name": str(c), "kind": "numeric" if _is_numeric(col) else "factor",
                        "distinct": int(col.nunique(dropna=True)), "missing": int(col.isna().sum())})
    limit = min(_MAX_GROUP_LEVELS, n // 2)
    groups = [c for c in columns if c["kind"] == "factor" and 2 <= c["distinct"] <= limit]
    if not groups:
        # no factor: integer codes (a CSV's school numbers) may be the groups
        groups = [c for c in columns if c["kind"] == "numeric" and 2 <= c["distinct"] <= n // 3
                  and pd.api.types.is_integer_dtype(frame[c["name"]])]
    groups.sort(key=lambda c: -c["distinct"])
    level2: dict[str, list[str]] = {}
    for g in groups[:_LEVEL2_GROUPS]:
        others = [c["name"] for c in columns if c["name"] != g["name"]]
        within = frame.groupby(frame[g["name"]], observed=True, sort=False)[others].nunique(dropna=False)
        level2[g["name"]] = [c for c in others if int(within[c].max()) <= 1]
    return {"nrows": n, "ncols": frame.shape[1], "columns": columns,
            "groups": [{"name": g["name"], "levels": g["distinct"]} for g in groups],
            "level2": level2, "suggestion": _suggest(columns, groups, level2, name)}


def _suggest(columns: list[dict], groups: list[dict], level2: dict[str, list[str]],
             name: str | None) -> dict[str, Any]:
    """A first model: the bundled data set's usual one, else the largest grouping factor, the
    numeric column with the most distinct values that varies within its groups as outcome and
    the next one as level-1 predictor (random intercept only: slopes are the user's choice)."""
    empty = {"formula": None, "outcome": None, "x": None, "slope": False, "level2": [], "group": None}
    if name in DEFAULT_FORMULAS:
        formula = DEFAULT_FORMULAS[name]
        return {**empty, "formula": formula, **_builder_fields(formula, columns, level2)}
    if name == "simulated" and {"y", "x", "group"} <= {c["name"] for c in columns}:
        return {**empty, "formula": "y ~ x + (x | group)", "outcome": "y", "x": "x", "slope": True,
                "group": "group"}
    if not groups:
        return empty
    g = groups[0]["name"]
    # level-1 columns (varying within groups) first: a level-2 column is rarely the outcome
    l2 = set(level2.get(g, []))
    numeric = sorted((c for c in columns if c["kind"] == "numeric" and c["name"] != g),
                     key=lambda c: (c["name"] in l2, -c["distinct"]))
    if not numeric:
        return {**empty, "group": g}
    outcome = numeric[0]["name"]
    x = next((c["name"] for c in numeric[1:] if c["name"] not in l2), None)
    rhs = term(x) if x else "1"
    return {**empty, "formula": f"{term(outcome)} ~ {rhs} + (1 | {term(g)})", "outcome": outcome,
            "x": x, "group": g}


def _builder_fields(formula: str, columns: list[dict], level2: dict[str, list[str]]) -> dict[str, Any]:
    """The builder's fields for a formula of the shape ``y ~ x + w + (1 + x | g)`` (``w``
    constant within ``g``), so that the lists show the suggested model; a field stays empty
    where the formula is not of that shape (the formula box is what is fitted)."""
    from multilevel.errors import MultilevelError
    from multilevel.formula import parse_formula

    out: dict[str, Any] = {}
    try:
        parsed = parse_formula(formula)
    except MultilevelError:
        return out
    names = {c["name"] for c in columns}
    resp = getattr(parsed.response, "name", None)
    if resp in names:
        out["outcome"] = resp
    group = parsed.bars[0].group if len(parsed.bars) == 1 else None
    if group in names:
        out["group"] = group
        out["slope"] = bool(parsed.bars[0].lhs.terms)
    fixed = [t.label for t in parsed.fixed.terms if t.label in names]
    l2 = level2.get(group or "", [])
    out["level2"] = [t for t in fixed if t in l2]
    out["x"] = next((t for t in fixed if t not in l2), None)
    return out


# --- code that loads the data ----------------------------------------------------------------

#: R's reader of each file format (the names of multilevel.datasets.files.FORMATS)
_R_READERS = {"CSV": 'read.csv("{p}", stringsAsFactors = TRUE)',
              "TSV": 'read.delim("{p}", stringsAsFactors = TRUE)',
              "Parquet": 'arrow::read_parquet("{p}")',
              "Feather": 'arrow::read_feather("{p}")',
              "SPSS": 'haven::as_factor(haven::read_sav("{p}"))',
              "Stata": 'haven::as_factor(haven::read_dta("{p}"))'}


def variable(label: str) -> str:
    """A Python and R variable name for the data set.

    >>> variable("hsb"), variable("my data.csv"), variable("2020")
    ('hsb', 'my_data', 'data')
    """
    stem = os.path.splitext(label)[0] if "." in label else label
    v = re.sub(r"\W+", "_", stem).strip("_")
    return v if v.isidentifier() and not v[0].isdigit() and v not in ("ml", "fit") else "data"


def data_code(spec: dict[str, Any], store: DataStore) -> dict[str, str]:
    """The lines that load the data in Python (multilevel) and in R, and the variable name.

    Simulated data and data frames passed from Python cannot be re-created in R: the R code
    reads the CSV that the page's "Download data" button saves.
    """
    from multilevel.datasets import list_datasets

    label = store.label(spec)
    var = variable(label)
    csv = f"{var}.csv"
    kind = spec["kind"]
    if kind == "bundled":
        row = next(r for r in list_datasets(as_frame=False) if r["name"] == spec["name"])
        py = f"import multilevel as ml\n{var} = ml.datasets.load({spec['name']!r})"
        if row["r_name"]:
            r = f"library(lme4)\ndata({row['r_name']}, package = \"{row['package']}\")"
            if row["r_name"] != var:
                r += f"\n{var} <- {row['r_name']}"
        else:
            r = (f"library(lme4)\n# simulated by multilevel: save it with \"Download data\"\n"
                 f"{var} <- read.csv(\"{csv}\", stringsAsFactors = TRUE)")
    elif kind == "simulate":
        args = ", ".join(f"{k}={v!r}" for k, v in spec.items() if k != "kind")
        py = ("import multilevel as ml\nfrom multilevel.datasets.simulate import simulate_two_level\n"
              f"{var} = simulate_two_level({args})")
        r = (f"library(lme4)\n# the same rows: save them with \"Download data\"\n"
             f"{var} <- read.csv(\"{csv}\", stringsAsFactors = TRUE)")
    elif kind == "file":
        path = store._sources["file"][spec["id"]].path or ""
        from multilevel.datasets.files import format_of

        fmt = format_of(path)[0]
        py = f"import multilevel as ml\n{var} = ml.datasets.read_data({path!r})"
        reader = _R_READERS.get(fmt, _R_READERS["CSV"]).format(p=path.replace("\\", "/"))
        r = f"library(lme4)\n{var} <- {reader}"
    else:  # a data frame passed to explore()
        py = f"import multilevel as ml\n# {var}: the data frame given to ml.explore()"
        r = (f"library(lme4)\n# save it first: {var}.to_csv(\"{csv}\", index=False), or "
             f"\"Download data\"\n{var} <- read.csv(\"{csv}\", stringsAsFactors = TRUE)")
    return {"python": py, "r": r, "variable": var}
