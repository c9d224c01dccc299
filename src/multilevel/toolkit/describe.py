"""Describe the multilevel structure of a data set before modelling it.

``describe(data, groups)`` answers the questions one asks first about clustered data: how
many groups are there and how large are they; which variables vary within groups (level-1
variables) and which are constant within groups (level-2, level-3 ... variables, candidates
for group-level predictors); and, with ``outcome=``, how much of the outcome's variance lies
between groups (the intraclass correlation of the null model ``lmer(outcome ~ 1 + (1 | g))``).

Example
-------
>>> import multilevel as ml
>>> d = ml.describe(ml.datasets.load("popularity"), "class", outcome="popular")
>>> d.levels[["group", "n_groups", "size_min", "size_max"]].values.tolist()
[['class', 100, 16, 27]]
>>> d.variables.set_index("variable").loc[["extrav", "texp"], "level_name"].tolist()
['observation', 'class']
>>> round(d.icc["class"], 3)
0.345
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from html import escape
from typing import Any, Sequence

import numpy as np
import pandas as pd

from multilevel.results.base import TextResult
from multilevel.design import DataSource
from multilevel.errors import DataError

__all__ = ["describe", "Description"]


@dataclass
class Description(TextResult):
    """The multilevel structure of a data set (what :func:`describe` returns).

    nobs:       rows described (rows with a missing grouping label are left out).
    groups:     the grouping columns, outermost first.
    nested:     whether the groups were treated as nested (units of an inner level are the
                combinations of its label with the labels of the outer levels).
    levels:     one row per grouping column: ``level`` (2 = innermost ... for nested groups),
                ``group``, ``n_groups``, ``size_min``, ``size_median``, ``size_mean``,
                ``size_max`` (rows per group) and, for an inner level of nested groups,
                ``per_parent_min``/``per_parent_mean``/``per_parent_max`` (units per unit
                of the next outer level).
    variables:  one row per other column: ``variable``, ``type`` (numeric, categorical,
                logical, text), ``n_missing``, ``level`` (1 = varies within the innermost
                groups; for nested groups k = constant within the groups of level k, the
                outermost such level), ``level_name`` (``"observation"`` or the grouping
                column), and per grouping column g: ``varies_{g}`` (share of the groups with
                at least two non-missing values in which the variable varies: 0 for a level-2
                variable of g) and, for numeric variables, ``between_{g}`` (share of its sum of
                squares between the groups' means).
    outcome:    the outcome column (or None).
    icc:        per grouping column, the ICC of the outcome in the null model
                ``outcome ~ 1 + (1 | g)``, fitted one grouping at a time: ``icc(fit)`` of
                :func:`multilevel.icc` (tau² / (tau² + sigma²) by REML; for a binary outcome
                the latent scale, tau² / (tau² + pi²/3) of the logistic model).
    family:     the null models' family, ``"gaussian"`` or ``"binomial"``.
    variance_shares: with several grouping columns, the shares of the outcome's variance of
                each grouping and of the residual in one null model with all of them.
    fits:       the null-model fits (``LmmFit``) by grouping column (and ``"all"``).
    notes:      remarks (rows without group labels, repeated inner labels, singular fits).
    """

    nobs: int
    groups: list[str]
    nested: bool
    levels: pd.DataFrame
    variables: pd.DataFrame
    outcome: str | None = None
    icc: dict[str, float] | None = None
    family: str = "gaussian"
    variance_shares: dict[str, float] | None = None
    fits: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    # -- presentation ------------------------------------------------------------------------

    def _level_table(self) -> pd.DataFrame:
        t = self.levels.copy()
        t["size_mean"] = t["size_mean"].map(lambda v: f"{v:.1f}")
        t["size_median"] = t["size_median"].map(lambda v: f"{v:g}")
        cols = {"level": "level", "group": "group", "n_groups": "groups", "size_min": "min size",
                "size_median": "median", "size_mean": "mean", "size_max": "max size"}
        if "per_parent_mean" in t and t["per_parent_mean"].notna().any():
            t["per parent"] = [
                "" if pd.isna(m) else f"{int(lo)}-{int(hi)} (mean {m:.1f})"
                for lo, m, hi in zip(t["per_parent_min"], t["per_parent_mean"],
                                     t["per_parent_max"])]
            cols["per parent"] = "units per outer unit"
        return t[list(cols)].rename(columns=cols)

    def _variable_table(self) -> pd.DataFrame:
        v = self.variables
        out = pd.DataFrame({"variable": v["variable"], "type": v["type"],
                            "level": [f"{lv} ({nm})" if nm != "observation" else f"{lv}"
                                      for lv, nm in zip(v["level"], v["level_name"])]})
        for g in self.groups:
            out[f"varies within {g}"] = [f"{100 * s:.0f}%" if pd.notna(s) else "-"
                                         for s in v[f"varies_{g}"]]
            if f"between_{g}" in v:
                out[f"between {g}"] = [f"{100 * s:.0f}%" if pd.notna(s) else ""
                                       for s in v[f"between_{g}"]]
        if v["n_missing"].any():
            out["missing"] = v["n_missing"]
        return out

    def _outcome_lines(self) -> list[str]:
        if self.outcome is None or not self.icc:
            return []
        lines = []
        for g, val in self.icc.items():
            how = ("glmer, binomial; latent scale, residual variance pi^2/3"
                   if self.family == "binomial" else "lmer, REML")
            lines.append(f"ICC of {self.outcome} by {g}: {val:.3f}   "
                         f"({self.outcome} ~ 1 + (1 | {g}), {how})")
        if self.variance_shares:
            parts = ", ".join(f"{k} {100 * v:.1f}%" for k, v in self.variance_shares.items())
            lines.append(f"Variance of {self.outcome} in one null model with all groupings: "
                         f"{parts}")
        return lines

    @property
    def text(self) -> str:
        kind = "nested, outermost first" if self.nested and len(self.groups) > 1 else \
            ("crossed" if len(self.groups) > 1 else "one grouping")
        lines = [f"Multilevel structure of {self.nobs} rows; groups: {', '.join(self.groups)} "
                 f"({kind})", ""]
        lines += self._level_table().to_string(index=False).splitlines()
        lines += ["", "Variables (level 1 varies within groups; level k is constant within the "
                      "groups of level k; 'varies' = share of groups in which it varies):"]
        lines += self._variable_table().to_string(index=False).splitlines()
        out = self._outcome_lines()
        if out:
            lines += [""] + out
        if self.notes:
            lines += [""] + [f"Note: {n}" for n in self.notes]
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        parts = ['<div class="ml-describe">',
                 f"<b>Multilevel structure of {self.nobs} rows</b>",
                 self._level_table().to_html(index=False),
                 "<b>Variables</b>", self._variable_table().to_html(index=False)]
        out = self._outcome_lines()
        if out:
            parts.append("<ul>" + "".join(f"<li>{escape(x)}</li>" for x in out) + "</ul>")
        if self.notes:
            parts.append("<ul>" + "".join(f"<li>Note: {escape(x)}</li>" for x in self.notes)
                         + "</ul>")
        parts.append("</div>")
        return "".join(parts)

    def to_dict(self) -> dict:
        """Everything as JSON-serialisable data."""
        from multilevel.results.export import jsonable

        return jsonable({
            "nobs": self.nobs, "groups": list(self.groups), "nested": self.nested,
            "levels": self.levels.to_dict(orient="records"),
            "variables": self.variables.to_dict(orient="records"),
            "outcome": self.outcome, "family": self.family, "icc": self.icc, "variance_shares": self.variance_shares,
            "notes": list(self.notes),
        })


def _kind(col: Any) -> str:
    return {"numeric": "numeric", "categorical": "categorical", "string": "text",
            "bool": "logical"}.get(col.kind, "other")


def _unit_codes(codes: list[np.ndarray], upto: int, nested: bool) -> np.ndarray:
    """Codes of the units of grouping level ``upto`` (0-based, outermost first): the
    combination with the outer levels when nested, the column alone otherwise."""
    if not nested:
        return codes[upto]
    if upto == 0:
        return codes[0]
    key = np.zeros(len(codes[0]), dtype=np.int64)
    for c in codes[: upto + 1]:
        key = key * (int(c.max()) + 1) + c
    return pd.factorize(key, sort=True)[0]


def _varies(values: np.ndarray, units: np.ndarray) -> tuple[float, float | None]:
    """(share of units with >= 2 non-missing values in which the values differ, share of the
    sum of squares between unit means (numeric values only, else None))."""
    s = pd.Series(values)
    ok = s.notna().to_numpy()
    if not ok.any():
        return float("nan"), None
    grp = pd.Series(units[ok])
    vals = s[ok].reset_index(drop=True)
    counts = vals.groupby(grp).size()
    nun = vals.groupby(grp).nunique()
    eligible = counts >= 2
    share = float((nun[eligible] > 1).mean()) if eligible.any() else float("nan")
    between = None
    if pd.api.types.is_numeric_dtype(vals) and not pd.api.types.is_bool_dtype(vals):
        x = vals.to_numpy(dtype=float)
        means = vals.groupby(grp).transform("mean").to_numpy(dtype=float)
        tss = float(np.sum((x - x.mean()) ** 2))
        between = float(np.sum((means - x.mean()) ** 2) / tss) if tss > 0 else float("nan")
    return share, between


def describe(data: Any, groups: str | Sequence[str], outcome: str | None = None, *,
             nested: bool = True, family: str | None = None) -> Description:
    """Describe group sizes, level-1 / level-2 variables and the outcome's ICC.

    Parameters
    ----------
    data : pandas or polars DataFrame (or a dict of columns)
    groups : a grouping column or a list of them, outermost first (``["school", "class"]``)
    outcome : a numeric or binary column, optional
        Adds the intraclass correlation of the null model ``outcome ~ 1 + (1 | g)`` for each
        grouping column (and, with several, the variance shares in one null model with all
        of them), as :func:`multilevel.icc` defines it: tau² / (tau² + sigma²) of a linear
        mixed model (REML); for a binary outcome (0/1, logical, or a factor of two levels)
        the latent-scale tau² / (tau² + pi²/3) of the logistic null model (``glmer``,
        binomial), not the ICC of a linear probability model.
    family : ``"gaussian"`` or ``"binomial"``, optional
        The null model's family; default binomial for a binary outcome, else gaussian.
    nested : bool
        With several grouping columns: True (default) treats them as nested, so the units of
        an inner level are the combinations with the outer levels (class "1" of school A and
        class "1" of school B are different classes, as lme4's ``(1 | school/class)``);
        False treats each column on its own (crossed groupings).

    Returns
    -------
    Description (prints as text; ``_repr_html_`` in notebooks; ``to_dict()``)

    Examples
    --------
    >>> import multilevel as ml
    >>> d = ml.describe(ml.datasets.load("hsb"), "school")
    >>> d.variables.set_index("variable").loc[["ses", "sector"], "level"].tolist()
    [1, 2]
    """
    gnames = [groups] if isinstance(groups, str) else list(groups)
    if not gnames:
        raise DataError("describe() needs at least one grouping column")
    src = DataSource(data)
    n_all = src.nrows
    gcodes = []
    missing = np.zeros(n_all, dtype=bool)
    for g in gnames:
        codes, _labels = src.column(g).factor()
        gcodes.append(np.asarray(codes))
        missing |= np.asarray(codes) < 0
    notes: list[str] = []
    rows = np.flatnonzero(~missing)
    if missing.any():
        notes.append(f"{int(missing.sum())} row(s) without a group label left out")
    if len(rows) == 0:
        raise DataError("no rows with complete grouping labels")
    gcodes = [pd.factorize(c[rows], sort=True)[0] for c in gcodes]
    n = len(rows)

    # ---- levels ----------------------------------------------------------------------------
    units = [_unit_codes(gcodes, k, nested) for k in range(len(gnames))]
    level_rows = []
    for k, g in enumerate(gnames):
        sizes = np.bincount(units[k])
        row = {"level": (len(gnames) - k + 1) if nested else 2, "group": g,
               "n_groups": int(len(sizes)), "size_min": int(sizes.min()),
               "size_median": float(np.median(sizes)), "size_mean": float(sizes.mean()),
               "size_max": int(sizes.max())}
        if nested and k > 0:
            # units of this level per unit of the next outer level
            pairs = pd.DataFrame({"outer": units[k - 1], "inner": units[k]}).drop_duplicates()
            per = pairs.groupby("outer").size().to_numpy()
            row.update(per_parent_min=int(per.min()), per_parent_mean=float(per.mean()),
                       per_parent_max=int(per.max()))
            # labels reused across outer groups: fine for nesting, but worth saying
            raw = pd.DataFrame({"outer": units[k - 1], "label": gcodes[k]}).drop_duplicates()
            if raw["label"].duplicated().any():
                notes.append(f"labels of '{g}' repeat across '{gnames[k - 1]}' groups; its units "
                             f"are the combinations ({', '.join(gnames[:k + 1])})")
        level_rows.append(row)
    levels = pd.DataFrame(level_rows)

    # ---- variables -------------------------------------------------------------------------
    var_rows = []
    for name in src.names:
        if name in gnames:
            continue
        col = src.column(name)
        kind = _kind(col)
        if kind == "other":
            continue
        if kind == "numeric":
            values = col.numeric()[rows]
        else:
            codes, _ = col.factor()
            values = np.where(codes[rows] < 0, np.nan, codes[rows]).astype(object)
            values = pd.Series(values).astype("float").to_numpy()  # codes, NaN for missing
        row: dict[str, Any] = {"variable": name, "type": kind,
                               "n_missing": int(np.isnan(values).sum())}
        constant = []
        for k, g in enumerate(gnames):
            share, between = _varies(values, units[k])
            row[f"varies_{g}"] = share
            if kind == "numeric":
                row[f"between_{g}"] = between
            constant.append(share == 0.0)
        # nested: the outermost level within whose groups the variable is constant
        if nested:
            lvl, lname = 1, "observation"
            for k in range(len(gnames)):  # outermost first
                if constant[k]:
                    lvl, lname = len(gnames) - k + 1, gnames[k]
                    break
        else:
            within = [g for g, c in zip(gnames, constant) if c]
            lvl, lname = (2, ", ".join(within)) if within else (1, "observation")
        row["level"], row["level_name"] = lvl, lname
        var_rows.append(row)
    variables = pd.DataFrame(var_rows)
    if variables.empty:
        variables = pd.DataFrame(columns=["variable", "type", "n_missing", "level", "level_name"])
    else:
        front = ["variable", "type", "n_missing", "level", "level_name"]
        variables = variables[front + [c for c in variables.columns if c not in front]]

    desc = Description(nobs=n, groups=gnames, nested=nested, levels=levels, variables=variables,
                       notes=notes)
    if outcome is not None:
        _outcome_icc(desc, src, outcome, rows, units, family)
    return desc


def _binary_values(col: Any) -> np.ndarray | None:
    """0/1 values (NaN where missing) of a two-valued outcome: numbers 0 and 1, a logical,
    or a factor with two levels (the first is 0, as R's glm takes it); else None."""
    if col.kind in ("numeric", "bool"):
        v = col.numeric()
        seen = np.unique(v[np.isfinite(v)])
        return v if seen.size == 2 and np.array_equal(seen, [0.0, 1.0]) else None
    if col.kind in ("categorical", "string"):
        codes, labels = col.factor()
        if len(labels) == 2:
            return np.where(codes < 0, np.nan, codes).astype(float)
    return None


def _outcome_icc(desc: Description, src: Any, outcome: str, rows: np.ndarray,
                 units: list[np.ndarray], family: str | None) -> None:
    """Null-model ICCs, defined once, by :func:`multilevel.inference.icc` (its ``adjusted``
    value: tau² / (tau² + residual variance), with the latent residual variance pi²/3 of a
    logistic model for a binary outcome). The fits run on a private frame with safe column
    names (y, g0, ...) so that any column name works in the formula."""
    from multilevel.inference.variance import icc, variance_components
    from multilevel.models.glmer import glmer
    from multilevel.models.lmer import lmer

    col = src.column(outcome)
    if family not in (None, "gaussian", "binomial"):
        raise DataError(f"family: the outcome's ICC is defined for 'gaussian' and 'binomial', not {family!r}")
    binary = _binary_values(col)
    if family is None:
        family = "binomial" if binary is not None else "gaussian"
    if family == "binomial":
        if binary is None:
            raise DataError(f"outcome '{outcome}' is not binary (two values), so it has no binomial ICC")
        y = binary[rows]
    else:
        if not col.is_numeric:
            raise DataError(f"outcome '{outcome}' is {col.describe()}, not numeric")
        y = col.numeric()[rows]
    work = pd.DataFrame({"y": y})
    for k, u in enumerate(units):
        work[f"g{k}"] = pd.Categorical(u)

    def fit_null(formula: str):
        if family == "binomial":
            return _quiet(glmer, formula, work, family="binomial")
        return _quiet(lmer, formula, work)

    desc.outcome = outcome
    desc.family = family
    desc.icc = {}
    for k, g in enumerate(desc.groups):
        fit, msgs = fit_null(f"y ~ 1 + (1 | g{k})")
        desc.fits[g] = fit
        desc.icc[g] = float(icc(fit)["adjusted"])
        desc.notes += [f"null model by {g}: {m}" for m in msgs]
    if len(desc.groups) > 1:
        bars = " + ".join(f"(1 | g{k})" for k in range(len(desc.groups)))
        fit, msgs = fit_null(f"y ~ 1 + {bars}")
        desc.fits["all"] = fit
        vc = variance_components(fit)
        var = {desc.groups[int(g[1:])]: v for g, v in vc["intercepts"].items()}
        var = {g: var[g] for g in desc.groups}
        var["residual"] = vc["residual"]
        total = sum(var.values())
        desc.variance_shares = {k: v / total for k, v in var.items()}
        desc.notes += [f"null model with all groupings: {m}" for m in msgs]


def _quiet(fitter, formula: str, work: pd.DataFrame, **kwargs: Any):
    """Fit and return (fit, warnings as text): a singular null model is a finding here,
    reported in the notes, not a warning to raise."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit = fitter(formula, work, **kwargs)
    return fit, [str(w.message) for w in caught]
