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
``diagnostics_data``        fitted values and residuals, normal QQ points and lines
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
    "profile_data",
]

#: the rug of an effect plot shows at most this many observed values (quantiles beyond that)
RUG_MAX = 400
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


def fitted_lines_data(fit: AnyFit, x: str, data: Any = None, groups: Any = None, *,
                      group: str | None = None, population: bool = True) -> PlotData:
    """Data of :func:`~multilevel.report.plots.plot_fitted_lines`: the observations and each
    group's fitted values against ``x``.

    Frames: ``points`` (one row per observation of the chosen groups, in data order: ``row``
    the row's label in the data, ``group``, ``x``, ``y`` the response, ``fitted``);
    ``lines`` (the line vertices: ``group``, ``x``, ``fitted``, sorted by ``x`` within each
    group, groups in the order of ``meta["levels"]``); ``population`` (``x``, ``y`` of the
    fixed-effects line on the response scale; no rows when that is not a line in ``x``).
    meta: ``x``, ``response``, ``group`` (the grouping factor), ``n_levels``, ``levels``
    (those chosen), ``population_label``.

    The population line: with ``data``, the prediction over the range of ``x`` with the other
    variables at typical values (as :func:`effect_data`); without, the fixed-effects
    predictions at the rows when they depend on ``x`` alone.

    >>> import multilevel as ml
    >>> fit = ml.lmer("Reaction ~ Days + (Days | Subject)", ml.datasets.load("sleepstudy"))
    >>> d = fitted_lines_data(fit, "Days", groups=["308", "309"])
    >>> d["lines"].groupby("group").size().to_dict(), d["population"]["x"].tolist()
    ({'308': 10, '309': 10}, [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0])
    """
    rt = _reterm(fit, group)
    xv = np.asarray(_row_values(fit, x, data), dtype=float)
    y = np.asarray(fit.frame.y, dtype=float)
    fitted_s = fit.fitted()
    fitted = np.asarray(fitted_s, dtype=float)
    refs = np.asarray(rt.refs)
    sizes = np.bincount(refs, minlength=rt.n_levels)
    chosen = _select_levels(rt.levels, sizes, groups, None)
    index = {str(lv): i for i, lv in enumerate(rt.levels)}
    labels = np.asarray([str(v) for v in rt.levels], dtype=object)[refs]
    m = np.isin(refs, [index[lv] for lv in chosen])
    points = pd.DataFrame({"row": np.asarray(fitted_s.index)[m], "group": labels[m], "x": xv[m],
                           "y": y[m], "fitted": fitted[m]})
    parts_g, parts_x, parts_f = [], [], []
    for lv in chosen:
        mg = refs == index[lv]
        o = np.argsort(xv[mg], kind="stable")
        parts_g.append(np.full(int(mg.sum()), lv, dtype=object))
        parts_x.append(xv[mg][o])
        parts_f.append(fitted[mg][o])
    lines = pd.DataFrame({"group": np.concatenate(parts_g), "x": np.concatenate(parts_x),
                          "fitted": np.concatenate(parts_f)})
    px = py = plabel = None
    if population:
        px, py, plabel = _population_line(fit, x, xv, data)
    pop = pd.DataFrame({"x": np.asarray(px if px is not None else [], dtype=float),
                        "y": np.asarray(py if py is not None else [], dtype=float)})
    meta = {"x": x, "response": fit.frame.response, "group": rt.group, "n_levels": int(rt.n_levels),
            "levels": chosen, "population_label": plabel}
    return PlotData("fitted_lines", {"points": points, "lines": lines, "population": pop}, meta)


def _population_prediction(fit: AnyFit) -> np.ndarray:
    """Fixed-effects predictions on the response scale at the fitting rows."""
    fr = fit.frame
    eta = fr.X @ np.asarray(fit.fixef, dtype=float)
    if fr.offset is not None:
        eta = eta + fr.offset
    return np.asarray(_linkinv(fit)(eta))


def _population_line(fit: AnyFit, x: str, xv: np.ndarray, data: Any):
    """(x, y, label) of the fixed-effects line, or Nones when it is not a line in ``x``.

    With the data: the prediction over the range of ``x`` with the other variables at
    typical values (as ``effect_data``). Without: the fixed-effects predictions at the rows,
    when they depend on ``x`` alone (equal at equal ``x``, or exactly linear in ``x``).
    """
    if data is not None:
        try:
            grid, is_factor = _typical_grid(fit, x, _to_pandas(data), POPULATION_POINTS)
            if not is_factor:
                mu, _, _ = _effect_values(fit, grid, 0.95)
                held = [c for c in grid.columns if c != x]
                return grid[x].to_numpy(dtype=float), mu, "population" + (" (others typical)" if held else "")
        except Exception:  # x not in the fixed part, or predictions unavailable
            pass
    try:
        pop = _population_prediction(fit)
    except Exception:
        return None, None, None
    ok = np.isfinite(xv) & np.isfinite(pop)
    xs, ps = xv[ok], pop[ok]
    if xs.size < 2:
        return None, None, None
    scale = max(float(np.ptp(ps)), float(np.max(np.abs(ps))) * 1e-12, 1e-300)
    ux, inv = np.unique(xs, return_inverse=True)
    if ux.size <= xs.size // 2:  # ties: a function of x if equal x gives equal predictions
        lo = np.full(ux.size, np.inf)
        hi = np.full(ux.size, -np.inf)
        np.minimum.at(lo, inv, ps)
        np.maximum.at(hi, inv, ps)
        if np.all(hi - lo <= 1e-8 * scale):
            return ux, lo, "population"
        return None, None, None
    A = np.column_stack([np.ones_like(xs), xs])
    coef, *_ = np.linalg.lstsq(A, ps, rcond=None)
    if np.max(np.abs(A @ coef - ps)) <= 1e-8 * scale:
        ends = np.array([xs.min(), xs.max()])
        return ends, coef[0] + coef[1] * ends, "population"
    return None, None, None


# --- pooling --------------------------------------------------------------------------------


def _pooling_coefs(pooling: Pooling) -> tuple[str | None, str | None]:
    """(intercept name, slope name) among the pooling's coefficients."""
    names = list(pooling.coef_names)
    icpt = "(Intercept)" if "(Intercept)" in names else None
    x = getattr(pooling, "x_name", None)
    slope = None
    if x is not None:
        slope = x if x in names else next((c for c in names if c != icpt), None)
    return icpt, slope


def _pooling_rows(pooling: Pooling) -> tuple[np.ndarray, np.ndarray | None, np.ndarray, str]:
    """(y, x or None, group label per row, response name) of the rows the fits used."""
    fit = pooling.fits["partial"]
    fr = fit.frame
    rt = _reterm(fit, pooling.group_name)
    labels = np.asarray([str(v) for v in rt.levels], dtype=object)[np.asarray(rt.refs)]
    x = pooling.x_name
    xv = None if x is None else np.asarray(_row_values(fit, x, pooling.data), dtype=float)
    return np.asarray(fr.y, dtype=float), xv, labels, fr.response


def _line_values(table_row: pd.Series, icpt: str | None, slope: str | None, kind: str,
                 xs: np.ndarray) -> np.ndarray | None:
    a = float(table_row[f"{icpt}_{kind}"]) if icpt else 0.0
    b = float(table_row[f"{slope}_{kind}"]) if slope else 0.0
    if not (np.isfinite(a) and np.isfinite(b)):
        return None
    return a + b * xs


def _pooling_offsets(pooling: Pooling, tab: pd.DataFrame, labels: np.ndarray, xv: np.ndarray | None,
                     icpt: str | None, slope: str | None) -> dict[str, dict[str, float]]:
    """Per approach and group, the mean contribution of the model's other terms (level-2
    predictors, other covariates) to the fitted values: the table's coefficients leave them
    out, so a line a + b·x alone would miss the group's data by that much. 0 when the
    model has no other terms, or when a fit has no fitted values."""
    out: dict[str, dict[str, float]] = {}
    for kind in ("complete", "none", "partial"):
        out[kind] = {}
        fit = pooling.fits.get(kind) if isinstance(pooling.fits, dict) else None
        try:
            f = np.asarray(fit.fitted(), dtype=float)
        except Exception:
            continue
        if f.shape != labels.shape:
            continue
        a_map = tab.set_index("group")[f"{icpt}_{kind}"] if icpt else None
        b_map = tab.set_index("group")[f"{slope}_{kind}"] if slope else None
        a = a_map.reindex(labels).to_numpy(dtype=float) if a_map is not None else 0.0
        b = b_map.reindex(labels).to_numpy(dtype=float) if b_map is not None else 0.0
        rest = f - (a + (b * xv if xv is not None else 0.0))
        frame = pd.DataFrame({"g": labels, "r": rest})
        means = frame.groupby("g", sort=False)["r"].mean()
        out[kind] = {str(k): float(v) for k, v in means.items() if np.isfinite(v)}
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
    meta: ``response``, ``x`` (the slope variable or None), ``group``, ``levels``.

    >>> import multilevel as ml
    >>> p = ml.pooling("Reaction ~ Days + (Days | Subject)", ml.datasets.load("sleepstudy"))
    >>> d = pooling_data(p, groups=["308"])
    >>> d["lines"].groupby("pooling", sort=False).size().to_dict()
    {'complete': 50, 'none': 50, 'partial': 50}
    """
    tab = pooling.table.copy()
    tab["group"] = tab["group"].astype(str)
    chosen = _select_levels(tab["group"].tolist(), tab["n"].to_numpy(), groups, 8)
    y, xv, labels, response = _pooling_rows(pooling)
    icpt, slope = _pooling_coefs(pooling)
    if xv is not None:
        lo, hi = float(np.nanmin(xv)), float(np.nanmax(xv))
        pad = 0.03 * (hi - lo or 1.0)
        xs = np.linspace(lo - pad, hi + pad, 50)
    else:
        xs = np.array([-0.5, 0.5])
    by_group = tab.set_index("group")
    offsets = _pooling_offsets(pooling, tab, labels, xv, icpt, slope)
    pg, px, py = [], [], []
    lg, lk, lx, ly = [], [], [], []
    ns = []
    for lv in chosen:
        m = labels == lv
        pg.append(np.full(int(m.sum()), lv, dtype=object))
        px.append(xv[m] if xv is not None else np.full(int(m.sum()), np.nan))
        py.append(y[m])
        row = by_group.loc[lv]
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
    meta = {"response": response, "x": pooling.x_name, "group": pooling.group_name, "levels": chosen}
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
    frame = pd.DataFrame({"group": tab["group"].astype(str).to_numpy(dtype=object), "n": n,
                          "no_pooling": none, "partial_pooling": part, "complete_pooling": comp})
    if f"{coef}_weight" in tab.columns:
        frame["weight"] = tab[f"{coef}_weight"].to_numpy(dtype=float)
    frame["estimable"] = ok
    frame["rank"] = rank
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
    fr = fit.frame
    spec = fr.spec
    columns = list(spec.fixed.columns())
    if getattr(spec, "offset_column", None):
        columns.append(spec.offset_column)
    if x not in columns:
        raise DataError(f"x: {x!r} is not a variable of the fixed part of the model "
                        f"({', '.join(columns) or 'none'})")
    factor_levels: dict[str, list[str]] = {}
    for v in spec.fixed.vars.values():
        if v.is_factor and v.column is not None and v.levels:
            factor_levels.setdefault(v.column, list(v.levels))
    used = _used_rows(fit, data)
    xcol = used[x]
    is_factor = x in factor_levels or not pd.api.types.is_numeric_dtype(xcol) or pd.api.types.is_bool_dtype(xcol)
    if is_factor:
        levels = factor_levels.get(x)
        if levels is None:
            levels = list(xcol.cat.categories) if isinstance(xcol.dtype, pd.CategoricalDtype) \
                else sorted(pd.unique(xcol.dropna()), key=str)
        grid = pd.DataFrame({x: pd.Categorical(levels, categories=levels)
                             if isinstance(xcol.dtype, pd.CategoricalDtype) else levels})
    else:
        xv = xcol.to_numpy(dtype=float)
        grid = pd.DataFrame({x: np.linspace(np.nanmin(xv), np.nanmax(xv), n)})
    for c in columns:
        if c == x or c not in used.columns:
            continue
        col = used[c]
        if c in factor_levels or not pd.api.types.is_numeric_dtype(col) or pd.api.types.is_bool_dtype(col):
            levels = factor_levels.get(c)
            if levels is None:
                levels = list(col.cat.categories) if isinstance(col.dtype, pd.CategoricalDtype) \
                    else sorted(pd.unique(col.dropna()), key=str)
            ref = levels[0]
            if isinstance(col.dtype, pd.CategoricalDtype):
                grid[c] = pd.Categorical([ref] * len(grid), categories=col.cat.categories)
            elif pd.api.types.is_bool_dtype(col):
                grid[c] = False
            else:
                grid[c] = ref
        else:
            v = col.to_numpy(dtype=float)
            m = float(np.nanmean(v))
            # a centred variable's mean is 0 up to rounding: say 0, not -7.1e-19
            grid[c] = 0.0 if abs(m) <= 1e-9 * (float(np.nanstd(v)) or 1.0) else m
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
    # reference line through the quartiles (R's qqline)
    q1, q3 = np.quantile(v, [0.25, 0.75])
    t1, t3 = ndtri([0.25, 0.75])
    slope = (q3 - q1) / (t3 - t1) if t3 != t1 else 0.0
    return q, v, (float(t1), float(q1), float(slope))


def diagnostics_data(fit: AnyFit) -> PlotData:
    """Data of :func:`~multilevel.report.plots.plot_diagnostics`: residuals against fitted
    values and normal QQ plots of the residuals and of each random-effect term's modes.

    Linear mixed models use the response residuals, GLMMs the Pearson residuals (fitted
    values on the response scale).

    Frames: ``residuals`` (``row``, ``fitted``, ``residual``, one row per observation);
    ``trend`` (``fitted``, ``residual``: the mean residual in bins of fitted values, 5 to 25
    quantile bins; no rows below 100 observations); ``qq`` (``panel``, ``grpvar``, ``term``,
    ``theoretical``, ``sample``: sorted finite values against normal quantiles at R's
    ``ppoints``; panel 0 is the residuals, with ``grpvar`` and ``term`` None); ``qqline``
    (``panel``, ``x0``, ``y0``, ``slope``: R's ``qqline`` through the quartiles).
    meta: ``residual_type`` (``"response"`` or ``"pearson"``), ``family``, ``formula``,
    ``panels`` (one dict per QQ panel: ``panel``, ``grpvar``, ``term``).

    >>> import multilevel as ml
    >>> fit = ml.lmer("Reaction ~ Days + (Days | Subject)", ml.datasets.load("sleepstudy"))
    >>> d = diagnostics_data(fit)
    >>> d["qq"].groupby("panel").size().tolist(), len(d["trend"])
    ([180, 18, 18], 9)
    """
    gauss = _family_name(fit) == "gaussian"
    res_s = fit.residuals() if gauss else fit.residuals(type="pearson")
    res = np.asarray(res_s, dtype=float)
    fv = np.asarray(fit.fitted(), dtype=float)
    residuals = pd.DataFrame({"row": np.asarray(res_s.index), "fitted": fv, "residual": res})
    tx = ty = np.array([], dtype=float)
    if fv.size >= 100:
        nb = int(np.clip(fv.size // 20, 5, 25))
        edges = np.unique(np.quantile(fv, np.linspace(0, 1, nb + 1)))
        if edges.size > 2:
            idx = np.clip(np.searchsorted(edges, fv, side="right") - 1, 0, edges.size - 2)
            cnt = np.bincount(idx, minlength=edges.size - 1)
            sm = np.bincount(idx, weights=res, minlength=edges.size - 1)
            cx = np.bincount(idx, weights=fv, minlength=edges.size - 1)
            okb = cnt > 0
            tx, ty = cx[okb] / cnt[okb], sm[okb] / cnt[okb]
    re = fit.ranef(condvar=False)
    panels = [{"panel": 0, "grpvar": None, "term": None}]
    samples = [res]
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
    qq = pd.concat(qq_parts, ignore_index=True).astype({"panel": int, "grpvar": object, "term": object})
    qqline = pd.DataFrame(line_rows, columns=["panel", "x0", "y0", "slope"])
    meta = {"residual_type": "response" if gauss else "pearson", "family": _family_name(fit),
            "formula": fit.formula, "panels": panels}
    return PlotData("diagnostics", {"residuals": residuals, "trend": pd.DataFrame({"fitted": tx, "residual": ty}),
                                    "qq": qq, "qqline": qqline}, meta)


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


def profile_data(fit: AnyFit, level: float = 0.95, profile: Any = None) -> PlotData:
    """Data of :func:`~multilevel.report.plots.plot_profile`: profile ζ against each random
    effect SD and the residual SD, and the profile confidence limits.

    ζ is the signed square root of the increase in the ML deviance
    (:func:`multilevel.inference.profile_sd`); the limits at ``level`` are those of
    :func:`multilevel.inference.profile` (where ζ = ∓z), when it can profile the fit.
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
        limits: dict[str, tuple[float, float]] = {}
    else:
        from multilevel.inference.confint import profile_sd

        table = {nm: (df["value"].to_numpy(), df["zeta"].to_numpy()) for nm, df in profile_sd(fit).items()}
        limits = _inference_limits(fit, list(table), level)
    names = list(table)
    if not names:
        raise DataError("profile: nothing to profile")
    parts = []
    for nm in names:
        x, zeta = (np.asarray(a, dtype=float) for a in table[nm])
        o = np.argsort(x)
        parts.append(pd.DataFrame({"parameter": nm, "value": x[o], "zeta": zeta[o]}))
    curves = pd.concat(parts, ignore_index=True)
    lim = pd.DataFrame([{"parameter": nm, "lower": limits[nm][0], "upper": limits[nm][1]}
                        for nm in names if nm in limits], columns=["parameter", "lower", "upper"])
    meta = {"parameters": names, "conf_level": float(level), "z": z}
    return PlotData("profile", {"curves": curves, "limits": lim}, meta)
