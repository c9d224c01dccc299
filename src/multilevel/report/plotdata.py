"""The numbers behind the plots, as tidy pandas frames.

Layer: report. Computes, never draws; imports no matplotlib. Each function here returns the
data of one plot of :mod:`multilevel.report.plots` (which draws only from these functions), so
that any other renderer, such as a browser drawing SVG from JSON, shows exactly the same
numbers as the matplotlib figures.

==========================  =================================================================
``fitted_lines_data``       points, per-group fitted lines, the population line
``pooling_data``            complete / no / partial pooling lines and the points per group
``shrinkage_data``          no-pooling and partial-pooling estimates against group size
``caterpillar_data``        conditional modes with mode ± z·(conditional SD), sort order
``coefficients_data``       fixed effects with Wald intervals, one row per model and term
``effect_data``             predictions over one predictor, others at typical values
``diagnostics_data``        fitted values and residuals, binned residuals, normal QQ points
``profile_data``            profile ζ curves and the profile interval ends
==========================  =================================================================

Every function returns a :class:`PlotData`: a read-only mapping from layer names
(``"points"``, ``"lines"``...) to DataFrames with one row per point, line vertex or interval,
plus ``meta``, a dict of plain values (variable names, the levels chosen, the confidence
level). Group levels are strings; names of columns follow lme4 where lme4 has a frame of
the same thing (``grpvar``, ``grp``, ``condval``, ``condsd`` as ``as.data.frame(ranef(fit))``),
else the pooling table's (``group`` for a group's label). ``PlotData.to_dict()`` is the same
content as plain JSON values, column by column.

Example
-------
>>> import multilevel as ml
>>> from multilevel.report.plotdata import caterpillar_data
>>> fit = ml.lmer("Reaction ~ Days + (Days | Subject)", ml.datasets.load("sleepstudy"))
>>> d = caterpillar_data(fit)
>>> list(d), d.meta["terms"]
(['intervals'], ['(Intercept)', 'Days'])
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from multilevel.errors import DataError

if TYPE_CHECKING:
    from multilevel.results import AnyFit
    from multilevel.toolkit.pooling import Pooling

__all__ = [
    "PlotData",
    "fitted_lines_data",
    "pooling_data",
    "shrinkage_data",
    "caterpillar_data",
    "coefficients_data",
    "effect_data",
    "diagnostics_data",
    "binned_residuals",
    "profile_data",
]

#: the rug of an effect plot shows at most this many observed values (quantiles beyond that)
RUG_MAX = 400
#: a normal QQ panel shows at most this many order statistics (evenly spaced, extremes kept)
QQ_MAX = 1000
#: points of the population line drawn over the range of x when the data are given
POPULATION_POINTS = 60


@dataclass(frozen=True, eq=False)
class PlotData(Mapping):
    """The data of one plot: ``kind`` (the plot), named tidy frames, and ``meta``.

    A read-only mapping ``layer name -> DataFrame``; ``meta`` holds plain values (names,
    chosen levels, the confidence level) that a renderer needs besides the frames.

    >>> d = PlotData("example", {"points": pd.DataFrame({"x": [1.0, 2.0], "y": [3.0, float("nan")]})},
    ...              {"x": "x"})
    >>> d["points"].shape, d.to_dict()["frames"]["points"]["y"]
    ((2, 2), [3.0, None])
    """

    kind: str
    frames: dict[str, pd.DataFrame]
    meta: dict[str, Any] = field(default_factory=dict)

    def __getitem__(self, name: str) -> pd.DataFrame:
        return self.frames[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.frames)

    def __len__(self) -> int:
        return len(self.frames)

    def __repr__(self) -> str:
        layers = ", ".join(f"{k}: {len(v)} rows" for k, v in self.frames.items())
        return f"PlotData({self.kind!r}; {layers})"

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values: ``{"kind", "meta", "frames": {layer: {column: [values]}}}``
        (NaN and infinities become None)."""
        from multilevel.results.export import jsonable

        frames = {k: {str(c): v[c].tolist() for c in v.columns} for k, v in self.frames.items()}
        return jsonable({"kind": self.kind, "meta": self.meta, "frames": frames})


# --- access to fits and data ----------------------------------------------------------------


def _to_pandas(data: Any) -> pd.DataFrame:
    if isinstance(data, pd.DataFrame):
        return data
    if isinstance(data, dict):
        return pd.DataFrame(data)
    import narwhals as nw

    # column by column through numpy: polars' to_pandas() would need pyarrow
    df = nw.from_native(data, eager_only=True)
    return pd.DataFrame({c: df[c].to_numpy() for c in df.columns})


def _reterm(fit: AnyFit, group: str | None):
    """The first random-effect term of ``group`` (default: the first term of the fit)."""
    rts = fit.frame.reterms
    if not rts:
        raise DataError("fit: the fit has no random effects")
    if group is None:
        return rts[0]
    for rt in rts:
        if rt.group == group:
            return rt
    raise DataError(f"group: the fit has no grouping factor {group!r}; it has "
                    f"{', '.join(dict.fromkeys(rt.group for rt in rts))}")


def _used_rows(fit: AnyFit, df: pd.DataFrame) -> pd.DataFrame:
    """The rows of ``df`` the fit used: ``df`` itself when it has exactly those rows (e.g.
    ``Pooling.data``), else the rows at the fit's row positions."""
    fr = fit.frame
    if len(df) == fr.nobs:
        return df
    rows = np.asarray(fr.rows)
    if len(rows) == fr.nobs and (rows.size == 0 or rows.max() < len(df)):
        return df.iloc[rows]
    raise DataError(f"data: the data have {len(df)} rows, the fit used {fr.nobs}: "
                    "pass the data the model was fitted to")


def _row_values(fit: AnyFit, name: str, data: Any = None) -> np.ndarray:
    """Values of variable ``name`` on the rows the fit used: from ``data`` (a column), else
    from a column of X or Z of that name."""
    fr = fit.frame
    if data is not None:
        df = _to_pandas(data)
        if name in df.columns:
            return _used_rows(fit, df)[name].to_numpy()
    if name in fr.fixef_names:
        return np.asarray(fr.X[:, list(fr.fixef_names).index(name)])
    for rt in fr.reterms:
        if name in rt.terms:
            return np.asarray(rt.Z[:, list(rt.terms).index(name)])
    raise DataError(f"x: {name!r} is not a column of the model matrices; pass the data (data=...)")


def _family_name(fit: AnyFit) -> str:
    fam = getattr(fit, "family", "gaussian")
    return fam if isinstance(fam, str) else getattr(fam, "name", "")


def _linkinv(fit: AnyFit):
    """The inverse link of the fit's family (identity for linear mixed models)."""
    fam = getattr(fit, "family", "gaussian")
    if not isinstance(fam, str):
        if hasattr(fam, "linkinv"):
            return fam.linkinv
        fam = getattr(fam, "name", "gaussian")
    link = getattr(fit, "link", None)
    link = link if link is None or isinstance(link, str) else getattr(link, "name", None)
    if fam == "gaussian" and link in (None, "identity"):
        return lambda eta: eta
    from multilevel.families import get_family

    return get_family(fam, link).linkinv


def _z(level: float) -> float:
    """The two-sided normal quantile of a confidence ``level``."""
    from scipy.special import ndtri

    if not (isinstance(level, (int, float, np.floating)) and 0.0 < float(level) < 1.0):
        raise DataError(f"level: must be a number between 0 and 1, not {level!r}")
    return float(ndtri(0.5 + level / 2.0))


def _select_levels(levels: Sequence[str], sizes: Sequence[int] | None, groups: Any,
                   default: int | None) -> list[str]:
    """Levels to show: the list given, or ``k`` levels spread over the range of group
    sizes, ordered from the smallest to the largest, when ``groups`` is an int (also when
    there are more than ``default`` levels and ``groups`` is None), else all of them."""
    levels = [str(v) for v in levels]
    if groups is None:
        if default is None or len(levels) <= default:
            return levels
        groups = default
    if isinstance(groups, (int, np.integer)) and not isinstance(groups, bool):
        k = int(groups)
        if k <= 0:
            raise DataError("groups: must be a positive number or a list of levels")
        if k >= len(levels):
            return levels
        order = np.argsort(np.asarray(sizes), kind="stable") if sizes is not None else np.arange(len(levels))
        pick = np.unique(np.round(np.linspace(0, len(levels) - 1, k)).astype(int))
        return [levels[i] for i in order[pick]]
    wanted = [str(g) for g in groups]
    unknown = [g for g in wanted if g not in set(levels)]
    if unknown:
        raise DataError(f"groups: unknown group level(s): {', '.join(unknown[:5])}")
    return wanted


# --- fitted lines ---------------------------------------------------------------------------


#: at most this many points per group line (the group's distinct x values when fewer)
LINE_POINTS = 30
#: the choices of ``others=`` in :func:`fitted_lines_data`
OTHERS = ("typical", "group")


def _model_columns(fit: AnyFit) -> list[str]:
    """The data columns a prediction of the fit reads: the fixed part's, the offset's, the
    random-effects terms' and the grouping factors'."""
    spec = fit.frame.spec
    cols = dict.fromkeys(spec.fixed.columns())
    if getattr(spec, "offset_column", None):
        cols[spec.offset_column] = None
    for b in getattr(spec, "bars", []):
        cols.update(dict.fromkeys(b.scope.columns()))
        cols.update(dict.fromkeys(b.group.columns))
    return list(cols)


def _factor_columns(fit: AnyFit) -> dict[str, list[str]]:
    """{data column: levels (first = reference)} of the factors of the fixed part."""
    out: dict[str, list[str]] = {}
    for v in fit.frame.spec.fixed.vars.values():
        if v.is_factor and v.column is not None and v.levels:
            out.setdefault(v.column, [str(lv) for lv in v.levels])
    return out


def _decode_factor(fit: AnyFit, column: str) -> np.ndarray | None:
    """A factor's level per used row, read back from its main-effect columns of X (the rows
    of its contrast matrix), or None when X does not have them."""
    fr = fit.frame
    names = list(fr.fixef_names)
    for key, v in fr.spec.fixed.vars.items():
        if not (v.is_factor and v.column == column) or key not in fr.contrasts:
            continue
        con = fr.contrasts[key]
        cols = [f"{key}{c}" for c in con.columns]
        if not all(c in names for c in cols):
            continue
        block = np.asarray(fr.X[:, [names.index(c) for c in cols]], dtype=float)
        M = np.asarray(con.matrix, dtype=float)
        dist = ((block[:, None, :] - M[None, :, :]) ** 2).sum(axis=2)
        k = np.argmin(dist, axis=1)
        if np.all(dist[np.arange(len(k)), k] <= 1e-12):
            return np.asarray([str(lv) for lv in con.levels], dtype=object)[k]
    return None


def _model_data(fit: AnyFit, columns: Sequence[str]) -> pd.DataFrame:
    """The variables ``columns`` on the rows the fit used, read back from its model frame
    (the fit keeps arrays, not the data frame): a numeric variable from its column of X or
    Z, a factor from its contrast-coded columns, a grouping factor from its levels. A
    variable the model frame does not hold as such (one seen only inside ``log(x)``, say) is
    an error that asks for the data."""
    fr = fit.frame
    out: dict[str, np.ndarray] = {}
    groups = {}
    for rt in fr.reterms:
        if ":" not in rt.group:
            groups.setdefault(rt.group, np.asarray([str(v) for v in rt.levels], dtype=object)[np.asarray(rt.refs)])
    factors = _factor_columns(fit)
    for c in columns:
        if c in groups:
            out[c] = groups[c]
        elif c in factors:
            codes = _decode_factor(fit, c)
            if codes is None:
                raise DataError(f"data: the factor {c!r} cannot be read back from the model matrices; "
                                "pass the data the model was fitted to (data=...)")
            out[c] = pd.Categorical(codes, categories=factors[c])
        else:
            try:
                out[c] = np.asarray(_row_values(fit, c), dtype=float)
            except DataError:
                raise DataError(f"data: the variable {c!r} is not a column of the model matrices (it "
                                "enters only through a transformation or an interaction); pass the data "
                                "the model was fitted to (data=...)") from None
    return pd.DataFrame(out)


def _analysis_frame(fit: AnyFit, data: Any, columns: Sequence[str]) -> pd.DataFrame:
    """The variables ``columns`` on the rows the fit used: from ``data`` when given, else
    read back from the fit's model frame (:func:`_model_data`)."""
    if data is None:
        return _model_data(fit, columns)
    used = _used_rows(fit, _to_pandas(data)).reset_index(drop=True)
    missing = [c for c in columns if c not in used.columns]
    if missing:
        raise DataError(f"data: the data have no column {missing[0]!r}; pass the data the model was fitted to")
    return used[list(columns)]


def _is_factor(fit: AnyFit, col: pd.Series) -> bool:
    return (col.name in _factor_columns(fit) or not pd.api.types.is_numeric_dtype(col)
            or pd.api.types.is_bool_dtype(col))


def _levels_of(fit: AnyFit, col: pd.Series) -> list:
    levels = _factor_columns(fit).get(col.name)
    if levels is None:
        levels = list(col.cat.categories) if isinstance(col.dtype, pd.CategoricalDtype) \
            else sorted(pd.unique(col.dropna()), key=str)
    return levels


def _typical_value(fit: AnyFit, col: pd.Series) -> tuple[Any, str]:
    """(value, how) at which a variable is held: the mean of a number ("mean"), the first
    (reference) level of a factor ("reference")."""
    if _is_factor(fit, col):
        ref = _levels_of(fit, col)[0]
        if pd.api.types.is_bool_dtype(col):
            return False, "reference"
        if not isinstance(col.dtype, pd.CategoricalDtype):
            # the reference as the column's own type (a number coded factor stays a number)
            match = col[col.astype(str) == str(ref)]
            ref = match.iloc[0] if len(match) else ref
        return ref, "reference"
    v = col.to_numpy(dtype=float)
    m = float(np.nanmean(v))
    # a centred variable's mean is 0 up to rounding: say 0, not -7.1e-19
    return (0.0 if abs(m) <= 1e-9 * (float(np.nanstd(v)) or 1.0) else m), "mean"


def _group_value(fit: AnyFit, col: pd.Series, refs: np.ndarray, n_levels: int) -> list:
    """Per group: the group's mean of a number, its most frequent level of a factor (ties:
    the first level in level order)."""
    if _is_factor(fit, col):
        levels = _levels_of(fit, col)
        pos = {str(lv): i for i, lv in enumerate(levels)}
        codes = np.asarray([pos.get(str(v), -1) for v in col], dtype=np.int64)
        ok = codes >= 0
        counts = np.zeros((n_levels, len(levels)))
        np.add.at(counts, (refs[ok], codes[ok]), 1.0)
        col_levels = {str(v): v for v in pd.unique(col.dropna())}
        return [col_levels.get(str(levels[i]), levels[i]) for i in counts.argmax(axis=1)]
    v = col.to_numpy(dtype=float)
    sums = np.bincount(refs, weights=np.nan_to_num(v), minlength=n_levels)
    cnt = np.bincount(refs, weights=np.isfinite(v).astype(float), minlength=n_levels)
    with np.errstate(invalid="ignore", divide="ignore"):
        return list(sums / cnt)


def _with_dtype(values: Sequence[Any], like: pd.Series) -> Any:
    """A new column of ``values`` in the type of the data's column ``like`` (its categories
    kept; a level given as text becomes the column's own value, "12" -> 12)."""
    lookup = {str(v): v for v in pd.unique(like.dropna())}
    vals = [lookup.get(str(v), v) if isinstance(v, str) else v for v in values]
    if isinstance(like.dtype, pd.CategoricalDtype):
        return pd.Categorical(vals, categories=like.cat.categories)
    return vals


def _response_predictions(fit: AnyFit, newdata: pd.DataFrame, fixed_only: bool = False) -> np.ndarray:
    """Predictions on the response scale; random effects of levels not in the fit are 0."""
    kw: dict[str, Any] = {"re_form": "~0"} if fixed_only else {"allow_new_levels": True}
    if _family_name(fit) not in ("gaussian", ""):
        kw["type"] = "response"
    return np.asarray(fit.predict(newdata, **kw), dtype=float)


def fitted_lines_data(fit: AnyFit, x: str, data: Any = None, groups: Any = None, *,
                      group: str | None = None, population: bool = True, others: str = "typical") -> PlotData:
    """Data of :func:`~multilevel.report.plots.plot_fitted_lines`: the observations and each
    group's fitted line against ``x``.

    Each group's line is the fit's prediction for that group (fixed effects plus the group's
    random effects; GLMMs on the response scale) over the group's observed range of ``x``,
    with the other predictors held fixed, so that a second within-group predictor (``sex``
    in ``popular ~ extrav + sex + ...``) does not make the line zigzag between its values:

    * ``others="typical"`` (default): numbers at their mean over the rows used, factors at
      their reference level, the same for every group;
    * ``others="group"``: each at the group's own mean (numbers) or most frequent level
      (factors), e.g. a class-level ``texp`` at the class's value.

    The population line is the fixed part (random effects 0) over the range of ``x`` with
    the others at their typical values. For an ``lm`` fit, name the grouping column with
    ``group=`` (a school-dummy model ``y ~ x + factor(school)`` draws one line per school,
    from the lm's predictions); its population line is the average of all the groups' lines.

    data: the data the model was fitted to; without it the variables are read back from the
    fit's model matrices (enough unless a variable enters only through a transformation).

    Frames: ``points`` (one row per observation of the chosen groups, in data order: ``row``
    the row's label in the data, ``group``, ``x``, ``y`` the response, ``fitted``);
    ``lines`` (``group``, ``x``, ``fitted``: the line's vertices, sorted by ``x`` within each
    group, groups in the order of ``meta["levels"]``); ``population`` (``x``, ``y``).
    meta: ``x``, ``response``, ``group`` (the grouping factor), ``n_levels``, ``levels``
    (those chosen), ``others``, ``held`` ({variable: value} for ``"typical"``; {variable:
    "group mean"/"group's most frequent level"} for ``"group"``), ``held_how`` ({variable:
    ``"mean"``/``"reference"``/...}), ``population_label``.

    >>> import multilevel as ml
    >>> fit = ml.lmer("Reaction ~ Days + (Days | Subject)", ml.datasets.load("sleepstudy"))
    >>> d = fitted_lines_data(fit, "Days", groups=["308", "309"])
    >>> d["lines"].groupby("group").size().to_dict(), d["population"]["x"].size
    ({'308': 10, '309': 10}, 60)
    """
    if others not in OTHERS:
        raise DataError(f"others: must be one of {', '.join(map(repr, OTHERS))}, not {others!r}")
    is_mixed = bool(getattr(fit.frame, "reterms", None))
    columns = _model_columns(fit)
    if is_mixed:
        rt = _reterm(fit, group)
        gname, levels = rt.group, [str(v) for v in rt.levels]
        refs = np.asarray(rt.refs)
        gcols = [c for b in fit.frame.spec.bars for c in b.group.columns]
    else:
        if group is None:
            raise DataError("group: a linear model (lm) has no grouping factor; name the column "
                            "to draw one line per group, e.g. group='school'")
        gname, gcols = group, [group]
        if group not in columns and data is None:
            raise DataError(f"group: {group!r} is not a variable of the model; pass the data (data=...)")
    if x in gcols:
        raise DataError(f"x: {x!r} is the grouping factor")
    need = list(dict.fromkeys(columns + [x] + ([gname] if not is_mixed else [])))
    frame = _analysis_frame(fit, data, need)
    if _is_factor(fit, frame[x]):
        raise DataError(f"x: {x!r} is a factor; fitted lines need a numeric x (plot_effect draws factors)")
    if not is_mixed:
        gcol = frame[gname]
        lv = _levels_of(fit, gcol)
        levels = [str(v) for v in lv]
        pos = {v: i for i, v in enumerate(levels)}
        refs = np.asarray([pos.get(str(v), -1) for v in gcol], dtype=np.int64)
        if (refs < 0).any():
            raise DataError(f"group: column {gname!r} has missing values in the rows used")
    xv = frame[x].to_numpy(dtype=float)
    y = np.asarray(fit.frame.y, dtype=float)
    fitted_s = fit.fitted()
    fitted = np.asarray(fitted_s, dtype=float)
    sizes = np.bincount(refs, minlength=len(levels))
    chosen = _select_levels(levels, sizes, groups, None)
    index = {lv: i for i, lv in enumerate(levels)}
    labels = np.asarray(levels, dtype=object)[refs]
    m = np.isin(refs, [index[lv] for lv in chosen])
    points = pd.DataFrame({"row": np.asarray(fitted_s.index)[m], "group": labels[m], "x": xv[m],
                           "y": y[m], "fitted": fitted[m]})

    held_cols = [c for c in columns if c != x and c not in gcols]
    typical = {c: _typical_value(fit, frame[c]) for c in held_cols}
    per_group = {c: _group_value(fit, frame[c], refs, len(levels)) for c in held_cols} if others == "group" else {}

    def grid(xs: np.ndarray, j: int | None) -> dict[str, Any]:
        cols: dict[str, Any] = {x: xs}
        for c in held_cols:
            v = per_group[c][j] if (j is not None and others == "group") else typical[c][0]
            cols[c] = [v] * xs.size
        return cols

    # every chosen group's line in one prediction: the group's distinct x values (at most
    # LINE_POINTS of them, else that many points over its range)
    parts_g, parts_x, blocks = [], [], []
    for lv in chosen:
        j = index[lv]
        xs = np.unique(xv[(refs == j) & np.isfinite(xv)])
        if xs.size > LINE_POINTS:
            xs = np.linspace(xs[0], xs[-1], LINE_POINTS)
        block = grid(xs, j)
        for c in gcols:
            block[c] = [lv if c == gname else "\x00none"] * xs.size  # other groupings: effect 0
        parts_g.append(np.full(xs.size, lv, dtype=object))
        parts_x.append(xs)
        blocks.append(pd.DataFrame(block))
    nd = pd.concat(blocks, ignore_index=True) if blocks else pd.DataFrame(columns=[x])
    for c in nd.columns:
        if c in frame.columns and c != x and (c == gname or c not in gcols):
            nd[c] = _with_dtype(nd[c].tolist(), frame[c])
    lines = pd.DataFrame({"group": np.concatenate(parts_g) if parts_g else np.array([], dtype=object),
                          "x": np.concatenate(parts_x) if parts_x else np.array([]),
                          "fitted": _response_predictions(fit, nd) if len(nd) else np.array([])})

    px = py = np.array([])
    plabel = None
    if population and np.isfinite(xv).any():
        xs = np.linspace(np.nanmin(xv), np.nanmax(xv), POPULATION_POINTS)
        base = pd.DataFrame(grid(xs, None))
        for c in base.columns:
            if c in frame.columns and c != x:
                base[c] = _with_dtype(base[c].tolist(), frame[c])
        if is_mixed:
            px, py, plabel = xs, _response_predictions(fit, base, fixed_only=True), "population (fixed effects)"
        else:
            reps = [base.assign(**{gname: lv}) for lv in levels]
            allg = pd.concat(reps, ignore_index=True)
            allg[gname] = _with_dtype(allg[gname].tolist(), frame[gname])
            pred = _response_predictions(fit, allg).reshape(len(levels), xs.size)
            px, py, plabel = xs, pred.mean(axis=0), f"average of the {gname} lines"
    pop = pd.DataFrame({"x": np.asarray(px, dtype=float), "y": np.asarray(py, dtype=float)})
    if others == "typical":
        held = {c: typical[c][0] for c in held_cols}
        held_how = {c: typical[c][1] for c in held_cols}
    else:
        held = {c: ("group's most frequent level" if _is_factor(fit, frame[c]) else "group mean") for c in held_cols}
        held_how = {c: ("group mode" if _is_factor(fit, frame[c]) else "group mean") for c in held_cols}
    held = {c: (v.item() if isinstance(v, np.generic) else v) for c, v in held.items()}
    meta = {"x": x, "response": fit.frame.response, "group": gname, "n_levels": len(levels),
            "levels": chosen, "others": others, "held": held, "held_how": held_how,
            "population_label": plabel}
    return PlotData("fitted_lines", {"points": points, "lines": lines, "population": pop}, meta)


# --- pooling --------------------------------------------------------------------------------


def _pooling_coefs(pooling: Pooling, common: str | None = None) -> tuple[str | None, str | None]:
    """(intercept name, slope name) among the pooling's coefficients; ``common``: a
    fixed-only slope variable (:func:`_common_slope_variable`) when the term has none."""
    names = list(pooling.coef_names)
    icpt = "(Intercept)" if "(Intercept)" in names else None
    x = getattr(pooling, "x_name", None)
    if x is None and common is not None:
        return icpt, common
    slope = None
    if x is not None:
        slope = x if x in names else next((c for c in names if c != icpt), None)
    return icpt, slope


def _common_slope_variable(pooling: Pooling) -> str | None:
    """For a model whose random-effects term has no slope (``y ~ x + (1 | g)``): the first
    fixed-effect predictor that is a numeric column varying within groups, drawn as the x
    of the pooling lines (every approach's line then has that approach's common slope of x:
    the complete-pooling, no-pooling and mixed-model coefficient); None if there is none."""
    if pooling.x_name is not None or pooling.data is None:
        return None
    fit = pooling.fits["partial"]
    df = _to_pandas(pooling.data)
    fixed = pooling.fixed
    rt = _reterm(fit, pooling.group_name)
    for name in fit.frame.fixef_names:
        if name == "(Intercept)" or name not in df.columns or name not in fixed.index:
            continue
        col = df[name]
        if not pd.api.types.is_numeric_dtype(col) or pd.api.types.is_bool_dtype(col):
            continue
        if not np.isfinite(fixed.loc[name, ["complete", "none", "partial"]].to_numpy(float)).all():
            continue  # aliased in one of the fits (e.g. a level-2 predictor in no pooling)
        xv = np.asarray(_used_rows(fit, df)[name].to_numpy(), dtype=float)
        codes = np.asarray(rt.refs)
        cnt = np.bincount(codes, minlength=rt.n_levels)
        mean = np.bincount(codes, weights=xv, minlength=rt.n_levels) / np.maximum(cnt, 1)
        if np.any(np.abs(xv - mean[codes]) > 1e-12 * (1.0 + np.abs(xv))):
            return name  # varies within some group: a level-1 predictor
    return None


def _pooling_line_table(pooling: Pooling, x: str | None) -> pd.DataFrame:
    """The pooling table, with the common slope of ``x`` of each approach as the columns
    ``{x}_complete``, ``{x}_none``, ``{x}_partial`` when ``x`` is a fixed-only slope."""
    tab = pooling.table
    if x is None or x == pooling.x_name:
        return tab
    out = tab.copy()
    for kind in POOLING_KINDS:
        out[f"{x}_{kind}"] = float(pooling.fixed.loc[x, kind])
    return out


def _pooling_rows(pooling: Pooling, x: str | None = None) -> tuple[np.ndarray, np.ndarray | None,
                                                                 np.ndarray, np.ndarray, str]:
    """(y, x or None, group labels, group code per row (into the labels), response name) of
    the rows the fits used; x: the slope variable (default the pooling's)."""
    fit = pooling.fits["partial"]
    fr = fit.frame
    rt = _reterm(fit, pooling.group_name)
    levels = np.asarray([str(v) for v in rt.levels], dtype=object)
    x = pooling.x_name if x is None else x
    xv = None
    if x is not None:
        vals = _row_values(fit, x, pooling.data)
        if not (pd.api.types.is_numeric_dtype(np.asarray(vals).dtype)
                and not pd.api.types.is_bool_dtype(np.asarray(vals).dtype)):
            # a factor slope, (1 + sector | school): x is its coefficient's 0/1 column of Z
            _, coef = _pooling_coefs(pooling)
            vals = _row_values(fit, coef, None) if coef is not None else None
        xv = None if vals is None else np.asarray(vals, dtype=float)
    return np.asarray(fr.y, dtype=float), xv, levels, np.asarray(rt.refs), fr.response


def _line_values(table_row: Mapping[str, Any], icpt: str | None, slope: str | None, kind: str,
                 xs: np.ndarray) -> np.ndarray | None:
    a = float(table_row[f"{icpt}_{kind}"]) if icpt else 0.0
    b = float(table_row[f"{slope}_{kind}"]) if slope else 0.0
    if not (np.isfinite(a) and np.isfinite(b)):
        return None
    return a + b * xs


def _pooling_offsets(pooling: Pooling, tab: pd.DataFrame, levels: np.ndarray, code: np.ndarray,
                     xv: np.ndarray | None, icpt: str | None, slope: str | None
                     ) -> dict[str, dict[str, float]]:
    """Per approach and group, the mean contribution of the model's other terms (level-2
    predictors, other covariates) to the fitted values: the table's coefficients leave them
    out, so a line a + b·x alone would miss the group's data by that much. 0 when the
    model has no other terms, or when a fit has no fitted values. ``levels[code]`` are the
    rows' group labels."""
    out: dict[str, dict[str, float]] = {}
    # rows by group code (the table's row of each level), so that the per-row coefficients
    # are one gather and the group means one bincount rather than pandas look-ups by label
    row_of = pd.Index(tab["group"].astype(str)).get_indexer(levels)
    for kind in ("complete", "none", "partial"):
        out[kind] = {}
        fit = pooling.fits.get(kind) if isinstance(pooling.fits, dict) else None
        try:
            f = np.asarray(fit.fitted(), dtype=float)
        except Exception:
            continue
        if f.shape != code.shape:
            continue

        def per_row(col: str | None) -> np.ndarray | float:
            if col is None:
                return 0.0
            vals = np.append(tab[f"{col}_{kind}"].to_numpy(dtype=float), np.nan)
            return vals[row_of][code]  # a label not in the table: NaN (index -1)

        rest = f - (per_row(icpt) + (per_row(slope) * xv if xv is not None else 0.0))
        ok = ~np.isnan(rest)  # pandas' mean skips NaN
        cnt = np.bincount(code[ok], minlength=len(levels))
        tot = np.bincount(code[ok], weights=rest[ok], minlength=len(levels))
        with np.errstate(invalid="ignore", divide="ignore"):
            means = tot / cnt
        out[kind] = {str(levels[i]): float(means[i]) for i in np.flatnonzero(np.isfinite(means))}
    return out


#: the three approaches of a pooling comparison, in the order they are drawn
POOLING_KINDS = ("complete", "none", "partial")


def pooling_data(pooling: Pooling, groups: Any = None) -> PlotData:
    """Data of :func:`~multilevel.report.plots.plot_pooling`: per chosen group its
    observations and its complete, no and partial pooling lines.

    groups: levels (a list), or how many to pick, spread from the smallest to the largest
            group (default 8).

    Frames: ``groups`` (``group``, ``n``, in the order chosen); ``points`` (``group``, ``x``,
    ``y``; ``x`` is NaN for a model without a slope variable); ``lines`` (``group``,
    ``pooling`` one of ``complete``, ``none``, ``partial``, ``x``, ``y``: 50 points over the
    range of x padded by 3%, or the two ends -0.5, 0.5 of a horizontal line without a slope).
    Each line is the approach's intercept + slope·x plus the group's average contribution of
    the model's other terms to that approach's fitted values, so that lines and points are
    on the same footing. An approach with no estimate for a group has no rows.
    A model without a random slope but with a level-1 predictor (``y ~ x + (1 | g)``) draws
    its lines against that predictor, each approach with its common slope (complete pooling's,
    no pooling's and the mixed model's coefficient of x; ``common_slope`` in meta).
    meta: ``response``, ``x`` (the slope variable or None), ``group``, ``levels``,
    ``common_slope``.

    >>> import multilevel as ml
    >>> p = ml.pooling("Reaction ~ Days + (Days | Subject)", ml.datasets.load("sleepstudy"))
    >>> d = pooling_data(p, groups=["308"])
    >>> d["lines"].groupby("pooling", sort=False).size().to_dict()
    {'complete': 50, 'none': 50, 'partial': 50}
    """
    common = _common_slope_variable(pooling)
    tab = _pooling_line_table(pooling, common)
    labels = tab["group"].astype(str).tolist()
    chosen = _select_levels(labels, tab["n"].to_numpy(), groups, 8)
    y, xv, levels, code, response = _pooling_rows(pooling, common)
    level_code = {str(lv): k for k, lv in enumerate(levels)}
    icpt, slope = _pooling_coefs(pooling, common)
    if xv is not None:
        lo, hi = float(np.nanmin(xv)), float(np.nanmax(xv))
        pad = 0.03 * (hi - lo or 1.0)
        xs = np.linspace(lo - pad, hi + pad, 50)
    else:
        xs = np.array([-0.5, 0.5])
    # the chosen groups' table rows as plain dicts (pandas row look-ups cost more than
    # drawing the lines)
    at = {g: i for i, g in enumerate(labels)}
    wanted = ["n"] + [f"{c}_{kind}" for c in (icpt, slope) if c for kind in POOLING_KINDS]
    arrays = {c: tab[c].to_numpy() for c in wanted}
    offsets = _pooling_offsets(pooling, tab, levels, code, xv, icpt, slope)
    pg, px, py = [], [], []
    lg, lk, lx, ly = [], [], [], []
    ns = []
    for lv in chosen:
        m = code == level_code.get(lv, -1)
        pg.append(np.full(int(m.sum()), lv, dtype=object))
        px.append(xv[m] if xv is not None else np.full(int(m.sum()), np.nan))
        py.append(y[m])
        row = {c: a[at[lv]] for c, a in arrays.items()}
        ns.append(int(row["n"]))
        for kind in POOLING_KINDS:
            vals = _line_values(row, icpt, slope, kind, xs)
            if vals is not None:
                lg.append(np.full(xs.size, lv, dtype=object))
                lk.append(np.full(xs.size, kind, dtype=object))
                lx.append(xs)
                ly.append(vals + offsets[kind].get(lv, 0.0))

    def cat(parts: list, dtype: Any = float) -> np.ndarray:
        return np.concatenate(parts) if parts else np.array([], dtype=dtype)

    frames = {
        "groups": pd.DataFrame({"group": pd.Series(chosen, dtype=object), "n": pd.Series(ns, dtype=int)}),
        "points": pd.DataFrame({"group": cat(pg, object), "x": cat(px), "y": cat(py)}),
        "lines": pd.DataFrame({"group": cat(lg, object), "pooling": cat(lk, object), "x": cat(lx),
                               "y": cat(ly)}),
    }
    meta = {"response": response, "x": pooling.x_name or common, "group": pooling.group_name,
            "levels": chosen, "common_slope": common is not None}
    return PlotData("pooling", frames, meta)


def shrinkage_data(pooling: Pooling, coef: str = "(Intercept)") -> PlotData:
    """Data of :func:`~multilevel.report.plots.plot_shrinkage`: one coefficient's no-pooling
    and partial-pooling estimates per group, with the group sizes.

    Frame ``groups``, one row per group in the pooling table's order: ``group``, ``n``,
    ``no_pooling`` (the group's own estimate), ``partial_pooling`` (``coef(fit)``),
    ``complete_pooling``, ``weight`` (the table's share of the distance moved, when
    present), ``estimable`` (both estimates finite: the groups drawn) and ``rank`` (0-based
    position in the order of the own estimates, groups without one last).
    meta: ``coef``, ``group`` (the grouping factor), ``complete_pooling`` (the common
    estimate, NaN when there is none).

    >>> import multilevel as ml
    >>> p = ml.pooling("Reaction ~ Days + (Days | Subject)", ml.datasets.load("sleepstudy"))
    >>> g = shrinkage_data(p, "Days")["groups"]
    >>> g.columns.tolist()
    ['group', 'n', 'no_pooling', 'partial_pooling', 'complete_pooling', 'weight', 'estimable', 'rank']
    >>> g.loc[1, ["group"]].tolist(), g.loc[1, ["no_pooling", "partial_pooling", "complete_pooling"]].round(2).tolist()
    (['309'], [2.26, 1.85, 10.47])
    """
    if coef not in list(pooling.coef_names):
        raise DataError(f"coef: no coefficient {coef!r}; the pooling has {', '.join(pooling.coef_names)}")
    tab = pooling.table
    n = tab["n"].to_numpy()
    none = tab[f"{coef}_none"].to_numpy(dtype=float)
    part = tab[f"{coef}_partial"].to_numpy(dtype=float)
    comp = tab[f"{coef}_complete"].to_numpy(dtype=float)
    ok = np.isfinite(none) & np.isfinite(part)
    rank = np.empty(n.size, dtype=int)
    rank[np.argsort(np.where(ok, none, np.inf), kind="stable")] = np.arange(n.size)
    columns = {"group": tab["group"].astype(str).to_numpy(dtype=object), "n": n,
               "no_pooling": none, "partial_pooling": part, "complete_pooling": comp}
    if f"{coef}_weight" in tab.columns:
        columns["weight"] = tab[f"{coef}_weight"].to_numpy(dtype=float)
    columns["estimable"] = ok
    columns["rank"] = rank
    frame = pd.DataFrame(columns)  # at once: adding columns one by one cost more than the rest
    c = float(np.nanmean(comp)) if comp.size and np.isfinite(comp).any() else float("nan")
    meta = {"coef": coef, "group": pooling.group_name, "complete_pooling": c}
    return PlotData("shrinkage", {"groups": frame}, meta)


# --- caterpillar ----------------------------------------------------------------------------


def caterpillar_data(fit: AnyFit, group: str | None = None, term: str | None = None,
                     level: float = 0.95) -> PlotData:
    """Data of :func:`~multilevel.report.plots.plot_caterpillar`: the conditional modes of
    one grouping factor's random effects with intervals mode ± z·(conditional SD).

    group: the grouping factor (default: the fit's first); term: one random-effect term
    (default: all terms of the group).

    Frame ``intervals``, one row per term and level, in lme4's names of
    ``as.data.frame(ranef(fit, condVar = TRUE))``: ``grpvar``, ``term``, ``grp`` (the
    level), ``condval``, ``condsd``, then ``lower``, ``upper`` and ``rank`` (0-based position
    of the level in the order of the first term's modes, stable). Rows are sorted by term,
    then rank. meta: ``group``, ``terms``, ``n_levels``, ``conf_level``, ``z``.

    >>> import multilevel as ml
    >>> fit = ml.lmer("Reaction ~ Days + (Days | Subject)", ml.datasets.load("sleepstudy"))
    >>> d = caterpillar_data(fit, term="Days")["intervals"]
    >>> d.columns.tolist()
    ['grpvar', 'term', 'grp', 'condval', 'condsd', 'lower', 'upper', 'rank']
    >>> str(d.loc[0, "grp"]), int(d.loc[0, "rank"]), bool(d["condval"].is_monotonic_increasing)
    ('335', 0, True)
    """
    rt = _reterm(fit, group)
    g = rt.group
    z = _z(level)
    re = fit.ranef(condvar=True)
    modes = re[g]
    sds = re.condsd[g] if getattr(re, "condsd", None) is not None else None
    terms = list(modes.columns) if term is None else [term]
    for t in terms:
        if t not in modes.columns:
            raise DataError(f"term: {g!r} has no random-effect term {t!r}; it has {', '.join(modes.columns)}")
    L = len(modes)
    order = np.argsort(modes[terms[0]].to_numpy(), kind="stable")
    grp = np.asarray([str(s) for s in modes.index], dtype=object)[order]
    parts = []
    for t in terms:
        v = modes[t].to_numpy(dtype=float)[order]
        sd = sds[t].to_numpy(dtype=float)[order] if sds is not None else np.full(L, np.nan)
        parts.append(pd.DataFrame({"grpvar": g, "term": t, "grp": grp, "condval": v, "condsd": sd,
                                   "lower": v - z * sd, "upper": v + z * sd, "rank": np.arange(L)}))
    frame = pd.concat(parts, ignore_index=True)
    meta = {"group": g, "terms": terms, "n_levels": L, "conf_level": float(level), "z": z}
    return PlotData("caterpillar", {"intervals": frame}, meta)


# --- coefficients ---------------------------------------------------------------------------


def coefficients_data(*fits: AnyFit, names: Sequence[str] | None = None, level: float = 0.95,
                      intercept: bool | None = None) -> PlotData:
    """Data of :func:`~multilevel.report.plots.plot_coefficients`: the fixed effects of one
    or several fits with Wald intervals estimate ± z·SE.

    names:     labels of the fits (default: their formulas).
    intercept: keep ``(Intercept)``; default only when it is the only coefficient.

    Frame ``estimates``, one row per fit and coefficient it has: ``model``, ``model_index``
    (0-based position of the fit), ``term``, ``term_index`` (position of the term on the
    axis: terms in order of first appearance), ``estimate``, ``std_error``, ``lower``,
    ``upper``. meta: ``models`` (the names), ``terms``, ``conf_level``, ``z``.

    >>> import multilevel as ml
    >>> fit = ml.lmer("Reaction ~ Days + (Days | Subject)", ml.datasets.load("sleepstudy"))
    >>> e = coefficients_data(fit, names=["slopes"])["estimates"]
    >>> e[["model", "term"]].values.tolist(), round(float(e["estimate"].iloc[0]), 3)
    ([['slopes', 'Days']], 10.467)
    """
    if not fits:
        raise DataError("fits: at least one fit is needed")
    if names is None:
        names = [str(getattr(f, "formula", f"model {i + 1}")) for i, f in enumerate(fits)]
    elif len(names) != len(fits):
        raise DataError(f"names: {len(names)} names for {len(fits)} fits")
    names = [str(nm) for nm in names]
    z = _z(level)
    coefs: list[str] = []
    for f in fits:
        for c in f.fixef.index:
            if c not in coefs:
                coefs.append(str(c))
    if intercept is None:
        intercept = coefs == ["(Intercept)"]
    if not intercept:
        coefs = [c for c in coefs if c != "(Intercept)"] or coefs
    parts = []
    for i, (f, nm) in enumerate(zip(fits, names)):
        est = f.fixef.reindex(coefs)
        se = f.se.reindex(coefs)
        ok = est.notna().to_numpy()
        e = est.to_numpy(dtype=float)[ok]
        s = se.to_numpy(dtype=float)[ok]
        parts.append(pd.DataFrame({"model": nm, "model_index": i, "term": np.asarray(coefs, dtype=object)[ok],
                                   "term_index": np.flatnonzero(ok), "estimate": e, "std_error": s,
                                   "lower": e - z * s, "upper": e + z * s}))
    frame = pd.concat(parts, ignore_index=True)
    meta = {"models": names, "terms": coefs, "conf_level": float(level), "z": z}
    return PlotData("coefficients", {"estimates": frame}, meta)


# --- effect ---------------------------------------------------------------------------------


def _typical_grid(fit: AnyFit, x: str, data: pd.DataFrame, n: int) -> tuple[pd.DataFrame, bool]:
    """A frame of new data: ``x`` over a grid (n points over its range, or each level), every
    other variable of the fixed part at its mean (numbers) or reference level (factors)."""
    spec = fit.frame.spec
    columns = list(spec.fixed.columns())
    if getattr(spec, "offset_column", None):
        columns.append(spec.offset_column)
    if x not in columns:
        raise DataError(f"x: {x!r} is not a variable of the fixed part of the model "
                        f"({', '.join(columns) or 'none'})")
    used = _used_rows(fit, data)
    xcol = used[x]
    is_factor = _is_factor(fit, xcol)
    if is_factor:
        levels = _levels_of(fit, xcol)
        grid = pd.DataFrame({x: pd.Categorical(levels, categories=levels)
                             if isinstance(xcol.dtype, pd.CategoricalDtype) else levels})
    else:
        xv = xcol.to_numpy(dtype=float)
        grid = pd.DataFrame({x: np.linspace(np.nanmin(xv), np.nanmax(xv), n)})
    for c in columns:
        if c == x or c not in used.columns:
            continue
        value = _typical_value(fit, used[c])[0]
        grid[c] = _with_dtype([value] * len(grid), used[c])
    return grid, is_factor


def _effect_values(fit: AnyFit, grid: pd.DataFrame, level: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fixed-part prediction on the response scale with its pointwise ``level`` band."""
    nd = fit.frame.new_design(grid, re_form="~0")
    X = np.asarray(nd.X, dtype=float)
    beta = np.asarray(fit.fixef, dtype=float)
    V = np.asarray(fit.vcov, dtype=float)
    eta = X @ beta
    if nd.offset is not None:
        eta = eta + np.asarray(nd.offset, dtype=float)
    se = np.sqrt(np.clip(np.einsum("ij,jk,ik->i", X, V, X), 0.0, None))
    z = _z(level)
    inv = _linkinv(fit)
    mu, lo, hi = (np.asarray(inv(v), dtype=float) for v in (eta, eta - z * se, eta + z * se))
    return mu, np.minimum(lo, hi), np.maximum(lo, hi)


def effect_data(fit: AnyFit, x: str, data: Any = None, n: int = 50, level: float = 0.95) -> PlotData:
    """Data of :func:`~multilevel.report.plots.plot_effect`: the predicted response across
    ``x``, the other variables of the fixed part held at typical values.

    The prediction is the fixed part (random effects 0: a typical group), on the response
    scale for GLMMs, with a pointwise ``level`` confidence band from the covariance of the
    fixed effects (computed on the link scale, then transformed). Other numeric variables
    are held at their mean over the rows used, factors at their reference level. A numeric
    ``x`` takes ``n`` values spanning its range, a factor each of its levels.

    data: the data the model was fitted to (the fit does not keep the data frame).

    Frames: ``effect`` (``x``, ``estimate``, ``lower``, ``upper``: one row per grid value);
    ``newdata`` (the rows predicted at: ``x`` and the held variables, by their names);
    ``rug`` (``x``: the distinct observed values of a numeric ``x``, at most 400 of them,
    quantiles beyond that; no rows for a factor). meta: ``x``, ``is_factor``, ``held``
    ({variable: value}), ``response``, ``family``, ``conf_level``.

    >>> import multilevel as ml
    >>> sleep = ml.datasets.load("sleepstudy")
    >>> fit = ml.lmer("Reaction ~ Days + (Days | Subject)", sleep)
    >>> e = effect_data(fit, "Days", data=sleep, n=4)["effect"]
    >>> e.round(1).values.tolist()
    [[0.0, 251.4, 238.0, 264.8], [3.0, 282.8, 267.7, 297.9], [6.0, 314.2, 293.2, 335.2], [9.0, 345.6, 316.9, 374.3]]
    """
    if data is None:
        data = getattr(fit, "data", None)
    if data is None:
        raise DataError("data: the effect plot needs the data the model was fitted to: "
                        "plot_effect(fit, x, data=df)")
    if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 2:
        raise DataError(f"n: the number of grid points must be an integer of at least 2, not {n!r}")
    df = _to_pandas(data)
    grid, is_factor = _typical_grid(fit, x, df, int(n))
    mu, lo, hi = _effect_values(fit, grid, level)
    xs = grid[x].to_numpy(dtype=float) if not is_factor else np.asarray(grid[x].astype(str), dtype=object)
    effect = pd.DataFrame({"x": xs, "estimate": mu, "lower": lo, "upper": hi})
    if is_factor:
        obs = np.array([], dtype=float)
    else:
        obs = _used_rows(fit, df)[x].to_numpy(dtype=float)
        obs = np.unique(obs[np.isfinite(obs)])
        if obs.size > RUG_MAX:
            obs = np.quantile(obs, np.linspace(0, 1, RUG_MAX))
    held = {c: grid[c].iloc[0] for c in grid.columns if c != x}
    held = {c: (v.item() if isinstance(v, np.generic) else v) for c, v in held.items()}
    meta = {"x": x, "is_factor": bool(is_factor), "held": held, "response": fit.frame.response,
            "family": _family_name(fit), "conf_level": float(level)}
    return PlotData("effect", {"effect": effect, "newdata": grid.reset_index(drop=True),
                               "rug": pd.DataFrame({"x": obs})}, meta)


# --- diagnostics ----------------------------------------------------------------------------


def _qq_values(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float] | None]:
    """(normal quantiles, sorted values, (x0, y0, slope) of R's qqline) of the finite values."""
    from scipy.special import ndtri

    v = np.sort(np.asarray(values, dtype=float)[np.isfinite(values)])
    m = v.size
    if m == 0:
        return np.array([]), v, None
    p = (np.arange(1, m + 1) - 0.5) / m  # ppoints
    q = ndtri(p)
    # reference line through the quartiles (R's qqline), from all the values
    q1, q3 = np.quantile(v, [0.25, 0.75])
    if m > QQ_MAX:
        # thousands of points draw slowly and show no more than QQ_MAX evenly spaced order
        # statistics, the smallest and the largest among them
        keep = np.unique(np.round(np.linspace(0, m - 1, QQ_MAX)).astype(int))
        q, v = q[keep], v[keep]
    t1, t3 = ndtri([0.25, 0.75])
    slope = (q3 - q1) / (t3 - t1) if t3 != t1 else 0.0
    return q, v, (float(t1), float(q1), float(slope))


def _arm_bins(n: int) -> int:
    """arm's ``binnedplot`` default number of bins: sqrt(n) from 100 rows, 10 from 11 rows,
    else n / 2."""
    if n >= 100:
        return int(np.floor(np.sqrt(n)))
    return 10 if n > 10 else max(1, n // 2)


def binned_residuals(fitted: np.ndarray, y: np.ndarray, trials: np.ndarray | None = None,
                     bins: int | None = None) -> pd.DataFrame:
    """Binned residuals of a binomial model (Gelman and Hill 2007, ARM section 5.6; arm's
    ``binnedplot``): the rows in bins of equal count by their fitted probability, and per
    bin the mean fitted probability ``fitted`` = p, the mean residual ``residual`` (observed
    minus fitted proportion), and ``se`` = sqrt(p (1 - p) / n), with ``lower``/``upper`` =
    ∓2 se, the band inside which about 95% of the bins should fall if the model is right.

    y is the observed proportion of each row (0/1 for binary data); ``trials`` the number of
    trials per row (binomial ``cbind`` responses): then a bin's means are weighted by the
    trials and n counts trials, not rows. bins: default arm's (sqrt(rows) from 100 rows).

    Columns: ``bin``, ``rows``, ``n``, ``fitted``, ``residual``, ``se``, ``lower``, ``upper``.

    >>> b = binned_residuals(np.array([0.2, 0.2, 0.8, 0.8]), np.array([0.0, 1.0, 1.0, 1.0]), bins=2)
    >>> b[["n", "fitted", "residual"]].round(6).values.tolist()
    [[2.0, 0.2, 0.3], [2.0, 0.8, 0.2]]
    """
    fitted = np.asarray(fitted, dtype=float)
    y = np.asarray(y, dtype=float)
    m = np.ones_like(fitted) if trials is None else np.asarray(trials, dtype=float)
    ok = np.isfinite(fitted) & np.isfinite(y) & (m > 0)
    fitted, y, m = fitted[ok], y[ok], m[ok]
    k = _arm_bins(fitted.size) if bins is None else int(bins)
    cols = ["bin", "rows", "n", "fitted", "residual", "se", "lower", "upper"]
    if fitted.size == 0 or k < 1:
        return pd.DataFrame(columns=cols)
    # bins of (about) equal count: cut at the quantiles of the fitted values, as arm does
    edges = np.unique(np.quantile(fitted, np.linspace(0, 1, k + 1)))
    if edges.size < 2:
        idx = np.zeros(fitted.size, dtype=int)
        nb = 1
    else:
        nb = edges.size - 1
        idx = np.clip(np.searchsorted(edges, fitted, side="right") - 1, 0, nb - 1)
    rows = np.bincount(idx, minlength=nb).astype(float)
    n = np.bincount(idx, weights=m, minlength=nb)
    p = np.bincount(idx, weights=m * fitted, minlength=nb)
    r = np.bincount(idx, weights=m * (y - fitted), minlength=nb)
    keep = rows > 0
    rows, n, p, r = rows[keep], n[keep], p[keep] / n[keep], r[keep] / n[keep]
    se = np.sqrt(p * (1.0 - p) / n)
    return pd.DataFrame({"bin": np.arange(rows.size), "rows": rows.astype(int), "n": n, "fitted": p,
                         "residual": r, "se": se, "lower": -2.0 * se, "upper": 2.0 * se})[cols]


def diagnostics_data(fit: AnyFit) -> PlotData:
    """Data of :func:`~multilevel.report.plots.plot_diagnostics`: residuals against fitted
    values and normal QQ plots of the residuals and of each random-effect term's modes.

    Linear mixed models and linear models (``lm``, which have no random-effect panels) use
    the response residuals. Binomial GLMMs (binary or ``cbind``) get the binned residual
    plot of Gelman and Hill (:func:`binned_residuals`) instead of a residual scatter and
    its QQ plot, which say nothing for 0/1 outcomes; other GLMMs use Pearson residuals
    (fitted values on the response scale).

    Frames: ``residuals`` (``row``, ``fitted``, ``residual``, one row per observation);
    ``trend`` (``fitted``, ``residual``: the mean residual in bins of fitted values, 5 to 25
    quantile bins; no rows below 100 observations or for binomial fits); ``binned`` (the
    binned residuals of a binomial fit, else no rows); ``qq`` (``panel``, ``grpvar``,
    ``term``, ``theoretical``, ``sample``: sorted finite values against normal quantiles at
    R's ``ppoints``, above ``QQ_MAX`` (1000) values that many evenly spaced order statistics
    including the extremes; the residuals' panel has ``grpvar`` and ``term`` None); ``qqline``
    (``panel``, ``x0``, ``y0``, ``slope``: R's ``qqline`` through the quartiles).
    meta: ``residual_type`` (``"response"``, ``"pearson"`` or ``"binned"``), ``family``,
    ``formula``, ``panels`` (one dict per QQ panel: ``panel``, ``grpvar``, ``term``).

    >>> import multilevel as ml
    >>> fit = ml.lmer("Reaction ~ Days + (Days | Subject)", ml.datasets.load("sleepstudy"))
    >>> d = diagnostics_data(fit)
    >>> d["qq"].groupby("panel").size().tolist(), len(d["trend"])
    ([180, 18, 18], 9)
    """
    family = _family_name(fit)
    gauss = family == "gaussian"
    binned_kind = family == "binomial"
    res_s = fit.residuals(type="response") if gauss or binned_kind else fit.residuals(type="pearson")
    res = np.asarray(res_s, dtype=float)
    fv = np.asarray(fit.fitted(), dtype=float)
    residuals = pd.DataFrame({"row": np.asarray(res_s.index), "fitted": fv, "residual": res})
    tx = ty = np.array([], dtype=float)
    if fv.size >= 100 and not binned_kind:
        nb = int(np.clip(fv.size // 20, 5, 25))
        edges = np.unique(np.quantile(fv, np.linspace(0, 1, nb + 1)))
        if edges.size > 2:
            idx = np.clip(np.searchsorted(edges, fv, side="right") - 1, 0, edges.size - 2)
            cnt = np.bincount(idx, minlength=edges.size - 1)
            sm = np.bincount(idx, weights=res, minlength=edges.size - 1)
            cx = np.bincount(idx, weights=fv, minlength=edges.size - 1)
            okb = cnt > 0
            tx, ty = cx[okb] / cnt[okb], sm[okb] / cnt[okb]
    if binned_kind:
        binned = binned_residuals(fv, np.asarray(fit.frame.y, dtype=float), fit.frame.weights)
    else:
        binned = binned_residuals(np.array([]), np.array([]))
    # lm fits have no random effects: no panels of conditional modes
    re = fit.ranef(condvar=False) if getattr(fit.frame, "reterms", None) else {}
    panels: list[dict[str, Any]] = []
    samples = []
    if not binned_kind:
        panels.append({"panel": 0, "grpvar": None, "term": None})
        samples.append(res)
    for g, df in re.items():
        for t in df.columns:
            panels.append({"panel": len(panels), "grpvar": g, "term": t})
            samples.append(df[t].to_numpy())
    qq_parts, line_rows = [], []
    for p, values in zip(panels, samples):
        q, v, line = _qq_values(values)
        qq_parts.append(pd.DataFrame({"panel": p["panel"], "grpvar": p["grpvar"], "term": p["term"],
                                      "theoretical": q, "sample": v}))
        if line is not None:
            line_rows.append({"panel": p["panel"], "x0": line[0], "y0": line[1], "slope": line[2]})
    qq_cols = ["panel", "grpvar", "term", "theoretical", "sample"]
    qq = (pd.concat(qq_parts, ignore_index=True) if qq_parts else pd.DataFrame(columns=qq_cols)).astype(
        {"panel": int, "grpvar": object, "term": object})
    qqline = pd.DataFrame(line_rows, columns=["panel", "x0", "y0", "slope"])
    kind = "binned" if binned_kind else ("response" if gauss else "pearson")
    meta = {"residual_type": kind, "family": family, "formula": fit.formula, "panels": panels}
    return PlotData("diagnostics", {"residuals": residuals, "trend": pd.DataFrame({"fitted": tx, "residual": ty}),
                                    "binned": binned, "qq": qq, "qqline": qqline}, meta)


# --- profiles -------------------------------------------------------------------------------


def _inference_limits(fit: AnyFit, names: Sequence[str], level: float) -> dict[str, tuple[float, float]]:
    """Profile interval ends from ``multilevel.inference.profile`` for ``names`` ({} when that
    function fails): drawn on the curves as a cross-check."""
    import warnings

    try:
        from multilevel.inference import profile as inference_profile  # the function
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tab = inference_profile(fit, level=level, which=list(names)).intervals
        return {str(k): (float(r.iloc[0]), float(r.iloc[1])) for k, r in tab.iterrows()}
    except Exception:
        return {}


def _profile_table(pr: Any) -> dict[str, tuple[np.ndarray, np.ndarray]] | None:
    """Normalise a profile result to {parameter: (values, zeta)}."""
    if isinstance(pr, dict):
        out = {}
        for k, v in pr.items():
            if isinstance(v, pd.DataFrame):
                vcol = next((c for c in ("value", "par", "x") if c in v.columns), v.columns[0])
                out[str(k)] = (v[vcol].to_numpy(dtype=float), v["zeta"].to_numpy(dtype=float))
            else:
                a, b = v
                out[str(k)] = (np.asarray(a, dtype=float), np.asarray(b, dtype=float))
        return out
    if isinstance(pr, pd.DataFrame) and {"param", "zeta"} <= set(pr.columns):
        vcol = next((c for c in ("value", "par", "x") if c in pr.columns), None)
        if vcol is None:
            return None
        return {str(p): (g[vcol].to_numpy(dtype=float), g["zeta"].to_numpy(dtype=float))
                for p, g in pr.groupby("param", sort=False)}
    return None


def _curve_limits(x: np.ndarray, zeta: np.ndarray, z: float, boundary: float = 0.0) -> tuple[float, float]:
    """Where a traced profile crosses ζ = -z and +z, interpolated monotonically (PCHIP of the
    parameter as a function of ζ, as lme4's ``confint`` of a profile interpolates a spline).

    A trace that ends above -z near its boundary (an SD whose deviance stays below the cut
    all the way down to 0) has the boundary as its lower limit; a trace that stops short of
    ∓z elsewhere, NaN.

    >>> x = np.array([1.0, 2.0, 3.0, 4.0]); _curve_limits(x, x - 2.5, 1.0)
    (1.5, 3.5)
    >>> _curve_limits(np.array([0.001, 1.0, 2.0]), np.array([-0.5, 0.0, 2.0]), 1.0)[0]
    0.0
    """
    from scipy.interpolate import PchipInterpolator

    o = np.argsort(x)
    x, zeta = np.asarray(x, dtype=float)[o], np.asarray(zeta, dtype=float)[o]
    # keep the strictly increasing part of ζ (flat stretches near a boundary repeat values)
    keep = np.concatenate([[True], np.diff(zeta) > 0])
    x, zeta = x[keep], zeta[keep]
    if x.size < 2:
        return (np.nan, np.nan)
    inv = PchipInterpolator(zeta, x, extrapolate=False)
    x_hat = float(inv(0.0)) if zeta[0] <= 0.0 <= zeta[-1] else np.nan
    if zeta[0] <= -z:
        lo = float(inv(-z))
    else:  # the boundary only if the trace went down to it (within 1% of the estimate)
        lo = float(boundary) if x[0] - boundary <= 0.01 * abs(x_hat - boundary) else np.nan
    hi = float(inv(z)) if zeta[-1] >= z else np.nan
    return lo, hi


def profile_data(fit: AnyFit, level: float = 0.95, profile: Any = None,
                 limits: str = "exact") -> PlotData:
    """Data of :func:`~multilevel.report.plots.plot_profile`: profile ζ against each random
    effect SD and the residual SD, and the profile confidence limits.

    ζ is the signed square root of the increase in the ML deviance
    (:func:`multilevel.inference.profile_sd`); the limits at ``level`` are those of
    :func:`multilevel.inference.profile` (where ζ = ∓z), when it can profile the fit.
    limits: ``"exact"`` (those root-finding limits, a cross-check of the curve) or ``"curve"``
    (where the traced curve crosses ∓z, interpolated as lme4's ``confint`` of a profile does:
    no second profiling, which halves the cost; the report uses it).
    profile: curves computed elsewhere instead, ``{name: (values, zeta)}`` or ``{name:
    DataFrame(value, zeta)}`` (then no limits).

    Frames: ``curves`` (``parameter``, ``value``, ``zeta``, sorted by value within each
    parameter); ``limits`` (``parameter``, ``lower``, ``upper``). meta: ``parameters``,
    ``conf_level``, ``z``.

    >>> d = profile_data(None, profile={"sigma": ([30.0, 25.0, 20.0], [2.0, 0.0, -2.0])})
    >>> d["curves"]["value"].tolist(), d.meta["parameters"], len(d["limits"])
    ([20.0, 25.0, 30.0], ['sigma'], 0)
    """
    z = _z(level)
    if profile is not None:
        table = _profile_table(profile)
        if table is None:
            raise DataError("profile: must be {name: (values, zeta)} or {name: DataFrame(value, zeta)}")
        ends: dict[str, tuple[float, float]] = {}
    else:
        from multilevel.inference.confint import profile_sd

        if limits not in ("exact", "curve"):
            raise DataError(f"limits: must be 'exact' or 'curve', not {limits!r}")
        table = {nm: (df["value"].to_numpy(), df["zeta"].to_numpy()) for nm, df in profile_sd(fit).items()}
        ends = (_inference_limits(fit, list(table), level) if limits == "exact" else
                {nm: _curve_limits(*table[nm], z) for nm in table})
    names = list(table)
    if not names:
        raise DataError("profile: nothing to profile")
    parts = []
    for nm in names:
        x, zeta = (np.asarray(a, dtype=float) for a in table[nm])
        o = np.argsort(x)
        parts.append(pd.DataFrame({"parameter": nm, "value": x[o], "zeta": zeta[o]}))
    curves = pd.concat(parts, ignore_index=True)
    lim = pd.DataFrame([{"parameter": nm, "lower": ends[nm][0], "upper": ends[nm][1]}
                        for nm in names if nm in ends], columns=["parameter", "lower", "upper"])
    meta = {"parameters": names, "conf_level": float(level), "z": z}
    return PlotData("profile", {"curves": curves, "limits": lim}, meta)
