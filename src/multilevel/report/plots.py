"""Plots of fitted multilevel models (matplotlib).

Every function returns the matplotlib :class:`~matplotlib.figure.Figure` it drew on. Pass
``ax=`` (or ``axes=`` for the multi-panel plots) to draw into axes you made yourself, for
example with ``plt.subplots``; without it the function makes a new figure. New figures are
built with matplotlib's object-oriented API on the non-interactive Agg canvas: nothing here
touches pyplot, chooses a backend or calls ``plt.show()``, so the functions are safe in
scripts, servers and tests. In Jupyter the returned figure displays itself (it has a
``_repr_png_``); in a script, ``fig.savefig("plot.png")``.

==========================  =================================================================
``plot_fitted_lines``       fitted values per group (one line per group) over the data
``plot_pooling``            complete, no and partial pooling lines, one panel per group
``plot_shrinkage``          no-pooling -> partial-pooling estimates (arrows) against group size
``plot_caterpillar``        conditional modes sorted, with intervals from the conditional SDs
``plot_coefficients``       dot-and-whisker of the fixed effects of one or several fits
``plot_effect``             predicted response across one predictor, others at typical values
``plot_diagnostics``        residuals vs fitted, normal QQ of residuals and of random effects
``plot_profile``            profile zeta against each covariance parameter
==========================  =================================================================

Artists carry a ``gid`` naming what they show (``"group:308"``, ``"level-points"``,
``"pooling:partial"``...), so a test or a program can find them again.

Example
-------
>>> import multilevel as ml
>>> from multilevel.report.plots import plot_caterpillar
>>> fit = ml.lmer("Reaction ~ Days + (Days | Subject)", ml.datasets.load("sleepstudy"))
>>> fig = plot_caterpillar(fit)
>>> [ax.get_xlabel() for ax in fig.axes]
['(Intercept)', 'Days']
"""
from __future__ import annotations

import io
import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

__all__ = [
    "plot_fitted_lines",
    "plot_pooling",
    "plot_shrinkage",
    "plot_caterpillar",
    "plot_coefficients",
    "plot_effect",
    "plot_diagnostics",
    "plot_profile",
    "profile_sd",
]

# colours: matplotlib's default cycle, named for what they show
_C_COMPLETE = "#7f7f7f"
_C_NONE = "#ff7f0e"
_C_PARTIAL = "#1f77b4"
_C_POINTS = "#555555"


# --- figures --------------------------------------------------------------------------------


def _figure_class():
    from matplotlib.figure import Figure

    class PlotFigure(Figure):
        """A matplotlib Figure on the Agg canvas that renders itself in notebooks."""

        def _repr_png_(self) -> bytes:
            buf = io.BytesIO()
            self.savefig(buf, format="png", dpi=100)
            return buf.getvalue()

    return PlotFigure


_FIGURE_CLASS = None


def _new_figure(figsize: tuple[float, float]):
    """A new figure on the Agg canvas (no pyplot, no GUI backend), constrained layout."""
    global _FIGURE_CLASS
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    if _FIGURE_CLASS is None:
        _FIGURE_CLASS = _figure_class()
    fig = _FIGURE_CLASS(figsize=figsize, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _one_ax(ax: Any, figsize: tuple[float, float]):
    """(figure, axes): the user's axes, or one new axes on a new figure."""
    if ax is not None:
        return ax.figure, ax
    fig = _new_figure(figsize)
    return fig, fig.add_subplot(1, 1, 1)


def _grid(k: int, ncols: int, axes: Any, panel: tuple[float, float], sharex: bool = False,
          sharey: bool = False, what: str = "panels"):
    """(figure, list of k axes) in a grid of ``ncols`` columns; unused cells are removed."""
    if axes is not None:
        axs = list(np.ravel(axes)) if not hasattr(axes, "figure") else [axes]
        if len(axs) < k:
            raise ValueError(f"this plot has {k} {what}; got {len(axs)} axes")
        return axs[0].figure, axs[:k]
    ncols = max(1, min(ncols, k))
    nrows = math.ceil(k / ncols)
    fig = _new_figure((panel[0] * ncols, panel[1] * nrows))
    grid = fig.subplots(nrows, ncols, sharex=sharex, sharey=sharey, squeeze=False)
    axs = list(grid.ravel())
    for a in axs[k:]:
        fig.delaxes(a)
    return fig, axs[:k]


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


def _reterm(fit: Any, group: str | None):
    """The first random-effect term of ``group`` (default: the first term of the fit)."""
    rts = fit.frame.reterms
    if not rts:
        raise ValueError("the fit has no random effects")
    if group is None:
        return rts[0]
    for rt in rts:
        if rt.group == group:
            return rt
    raise ValueError(f"the fit has no grouping factor {group!r}; it has "
                     f"{', '.join(dict.fromkeys(rt.group for rt in rts))}")


def _row_values(fit: Any, name: str, data: Any = None) -> np.ndarray:
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
    raise ValueError(f"{name!r} is not a column of the model matrices; pass the data (data=...)")


def _used_rows(fit: Any, df: pd.DataFrame) -> pd.DataFrame:
    """The rows of ``df`` the fit used: ``df`` itself when it has exactly those rows (e.g.
    ``Pooling.data``), else the rows at the fit's row positions."""
    fr = fit.frame
    if len(df) == fr.nobs:
        return df
    rows = np.asarray(fr.rows)
    if len(rows) == fr.nobs and (rows.size == 0 or rows.max() < len(df)):
        return df.iloc[rows]
    raise ValueError(f"the data have {len(df)} rows, the fit used {fr.nobs}: pass the data the model was fitted to")


def _is_gaussian(fit: Any) -> bool:
    fam = getattr(fit, "family", "gaussian")
    return (fam if isinstance(fam, str) else getattr(fam, "name", "")) == "gaussian"


def _linkinv(fit: Any):
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


def _short(label: str, width: int = 24) -> str:
    return label if len(label) <= width else label[: width - 1] + "…"


def _select_levels(levels: Sequence[str], sizes: Sequence[int] | None, groups: Any,
                   default: int | None) -> list[str]:
    """Levels to draw: the list given, or ``k`` levels spread over the range of group
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
            raise ValueError("groups must be a positive number or a list of levels")
        if k >= len(levels):
            return levels
        order = np.argsort(np.asarray(sizes), kind="stable") if sizes is not None else np.arange(len(levels))
        pick = np.unique(np.round(np.linspace(0, len(levels) - 1, k)).astype(int))
        return [levels[i] for i in order[pick]]
    wanted = [str(g) for g in groups]
    unknown = [g for g in wanted if g not in set(levels)]
    if unknown:
        raise ValueError(f"unknown group level(s): {', '.join(unknown[:5])}")
    return wanted


def _group_colors(k: int) -> list:
    from matplotlib import colormaps

    if k <= 10:
        cmap = colormaps["tab10"]
        return [cmap(i) for i in range(k)]
    if k <= 20:
        cmap = colormaps["tab20"]
        return [cmap(i) for i in range(k)]
    cmap = colormaps["viridis"]
    return [cmap(v) for v in np.linspace(0.0, 0.9, k)]


# --- fitted lines ---------------------------------------------------------------------------


def plot_fitted_lines(fit: Any, x: str, ax: Any = None, groups: Any = None, *,
                      group: str | None = None, data: Any = None, population: bool = True):
    """Fitted values of each group against ``x``, one line per group, over the data points.

    fit:        an LmmFit or GlmmFit (GLMMs: fitted values on the response scale).
    x:          the predictor on the horizontal axis: a column of the fixed or random-effects
                model matrix (``"Days"``), or any column of ``data``.
    groups:     levels to draw (a list), or a number of levels spread over the group sizes;
                default all.
    group:      the grouping factor (default: the fit's first, the one with most levels).
    data:       the data the model was fitted to; needed only when ``x`` is not a column of
                the model matrices.
    population: also draw the fixed-effects (population) line in black.

    Lines join the fitted values of a group in order of ``x``: straight lines when ``x`` is
    the only predictor that varies within groups.
    """
    rt = _reterm(fit, group)
    xv = np.asarray(_row_values(fit, x, data), dtype=float)
    y = np.asarray(fit.frame.y, dtype=float)
    fitted = np.asarray(fit.fitted(), dtype=float)
    refs = np.asarray(rt.refs)
    sizes = np.bincount(refs, minlength=rt.n_levels)
    chosen = _select_levels(rt.levels, sizes, groups, None)
    index = {str(lv): i for i, lv in enumerate(rt.levels)}
    fig, ax = _one_ax(ax, (7.0, 4.8))
    k = len(chosen)
    colors = _group_colors(k)
    many = k > 20
    lw = 1.0 if many else 1.6
    if many:  # one grey cloud: colours of 20+ groups cannot be told apart anyway
        m = np.isin(refs, [index[lv] for lv in chosen])
        ax.scatter(xv[m], y[m], s=8, color=_C_POINTS, alpha=0.25, linewidths=0, gid="points",
                   rasterized=True)
    for c, lv in zip(colors, chosen):
        m = refs == index[lv]
        o = np.argsort(xv[m], kind="stable")
        if not many:
            ax.scatter(xv[m], y[m], s=14, color=c, alpha=0.6, linewidths=0, gid=f"points:{lv}")
        ax.plot(xv[m][o], fitted[m][o], color=c, lw=lw, alpha=0.7 if many else 0.95,
                label=_short(lv, 14), gid=f"group:{lv}")
    if population:
        px, py, plabel = _population_line(fit, x, xv, data)
        if px is not None:
            ax.plot(px, py, color="black", lw=2.4, ls="--", label=plabel, gid="population", zorder=5)
    ax.set_xlabel(x)
    ax.set_ylabel(fit.frame.response)
    ax.set_title(f"Fitted lines by {rt.group}" + ("" if k == rt.n_levels else f" ({k} of {rt.n_levels})"),
                 fontsize=11)
    if k <= 20:
        ax.legend(title=rt.group, fontsize=8, title_fontsize=8, loc="upper left", ncols=1 if k <= 10 else 2,
                  bbox_to_anchor=(1.01, 1.0), frameon=False, handlelength=1.5, columnspacing=0.8)
    elif population and any(h.get_gid() == "population" for h in ax.get_lines()):
        ax.legend(handles=[h for h in ax.get_lines() if h.get_gid() == "population"], fontsize=8,
                  frameon=False)
    return fig


def _population_prediction(fit: Any) -> np.ndarray:
    """Fixed-effects predictions on the response scale at the fitting rows."""
    fr = fit.frame
    eta = fr.X @ np.asarray(fit.fixef, dtype=float)
    if fr.offset is not None:
        eta = eta + fr.offset
    return np.asarray(_linkinv(fit)(eta))


def _population_line(fit: Any, x: str, xv: np.ndarray, data: Any):
    """(x, y, label) of the fixed-effects line, or Nones when it is not a line in ``x``.

    With the data: the prediction over the range of ``x`` with the other variables at
    typical values (as ``plot_effect``). Without: the fixed-effects predictions at the rows,
    when they depend on ``x`` alone (equal at equal ``x``, or exactly linear in ``x``).
    """
    if data is not None:
        try:
            grid, is_factor = _typical_grid(fit, x, _to_pandas(data), 60)
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


def _pooling_coefs(pooling: Any) -> tuple[str | None, str | None]:
    """(intercept name, slope name) among the pooling's coefficients."""
    names = list(pooling.coef_names)
    icpt = "(Intercept)" if "(Intercept)" in names else None
    x = getattr(pooling, "x_name", None)
    slope = None
    if x is not None:
        slope = x if x in names else next((c for c in names if c != icpt), None)
    return icpt, slope


def _pooling_rows(pooling: Any) -> tuple[np.ndarray, np.ndarray | None, np.ndarray, str]:
    """(y, x or None, group label per row, response name) of the rows the fits used."""
    fit = pooling.fits["partial"]
    fr = fit.frame
    gname = pooling.group_name
    rt = _reterm(fit, gname)
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


def _pooling_offsets(pooling: Any, tab: pd.DataFrame, labels: np.ndarray, xv: np.ndarray | None,
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


def plot_pooling(pooling: Any, groups: Any = None, ncols: int = 4, *, axes: Any = None):
    """Complete, no and partial pooling lines per group, one panel per group.

    pooling: the result of :func:`multilevel.pooling`.
    groups:  levels to show (a list), or how many to pick, spread from the smallest to the
             largest group (default 8): small groups show partial pooling pulling their own
             line (no pooling) toward the common one (complete pooling).
    ncols:   panels per row.
    axes:    a sequence of axes to draw into, one per panel.

    Without a slope variable (``y ~ 1 + (1 | g)``) each panel shows the group's values
    (jittered horizontally) and the three estimates of its mean as horizontal lines.
    When the model has other terms (covariates, group-level predictors), each line is the
    approach's intercept + slope·x plus the group's average contribution of those terms to
    that approach's fitted values, so that lines and data points are on the same footing.
    """
    tab = pooling.table.copy()
    tab["group"] = tab["group"].astype(str)
    chosen = _select_levels(tab["group"].tolist(), tab["n"].to_numpy(), groups, 8)
    y, xv, labels, response = _pooling_rows(pooling)
    icpt, slope = _pooling_coefs(pooling)
    fig, axs = _grid(len(chosen), ncols, axes, (2.7, 2.3), sharex=True, sharey=True)
    if xv is not None:
        lo, hi = float(np.nanmin(xv)), float(np.nanmax(xv))
        pad = 0.03 * (hi - lo or 1.0)
        xs = np.linspace(lo - pad, hi + pad, 50)
    else:
        xs = np.array([-0.5, 0.5])
    rng = np.random.default_rng(0)
    styles = [("complete", _C_COMPLETE, "--", "complete pooling"),
              ("none", _C_NONE, "-", "no pooling"),
              ("partial", _C_PARTIAL, "-", "partial pooling")]
    by_group = tab.set_index("group")
    offsets = _pooling_offsets(pooling, tab, labels, xv, icpt, slope)
    for a, lv in zip(axs, chosen):
        m = labels == lv
        px = xv[m] if xv is not None else rng.uniform(-0.3, 0.3, int(m.sum()))
        a.scatter(px, y[m], s=9, color=_C_POINTS, alpha=0.45, linewidths=0, gid="points", zorder=1)
        row = by_group.loc[lv]
        for kind, color, ls, label in styles:
            vals = _line_values(row, icpt, slope, kind, xs)
            if vals is not None:
                vals = vals + offsets[kind].get(lv, 0.0)
                a.plot(xs, vals, color=color, ls=ls, lw=1.8, label=label, gid=f"pooling:{kind}", zorder=3)
        a.set_title(f"{_short(lv, 18)}  (n = {int(row['n'])})", fontsize=9)
        a.tick_params(labelsize=8)
        if xv is None:
            a.set_xticks([])
    for a in axs:
        if a.get_subplotspec() is None or a.get_subplotspec().is_first_col():
            a.set_ylabel(response, fontsize=9)
        if a.get_subplotspec() is None or a.get_subplotspec().is_last_row() or xv is None:
            a.set_xlabel(pooling.x_name or "", fontsize=9)
    handles = [h for h in axs[0].get_lines() if h.get_gid() and h.get_gid().startswith("pooling:")]
    if handles and axes is None:
        fig.legend(handles=handles, loc="outside lower center", ncols=3, fontsize=9, frameon=False)
        fig.suptitle(f"Pooling by {pooling.group_name}", fontsize=11)
    elif handles:
        axs[0].legend(handles=handles, fontsize=7, frameon=False)
    return fig


def plot_shrinkage(pooling: Any, coef: str = "(Intercept)", ax: Any = None):
    """No-pooling vs partial-pooling estimates of one coefficient per group, against group size.

    Each group is an arrow from its own estimate (no pooling, open circle) to its partial
    pooling estimate (filled circle); the dashed line is the complete-pooling estimate.
    Small groups move furthest. The horizontal axis is logarithmic when group sizes span
    more than a factor of 10; groups of equal size are spread a little sideways.
    """
    if coef not in list(pooling.coef_names):
        raise ValueError(f"no coefficient {coef!r}; the pooling has {', '.join(pooling.coef_names)}")
    tab = pooling.table
    n = tab["n"].to_numpy(dtype=float)
    none = tab[f"{coef}_none"].to_numpy(dtype=float)
    part = tab[f"{coef}_partial"].to_numpy(dtype=float)
    comp = tab[f"{coef}_complete"].to_numpy(dtype=float)
    ok = np.isfinite(none) & np.isfinite(part)
    fig, ax = _one_ax(ax, (7.0, 4.6))
    equal = n.size > 0 and np.all(n == n[0])
    logx = not equal and n.max() > 10 * max(n.min(), 1.0)
    rng = np.random.default_rng(1)
    if equal:
        # one group size: sizes tell nothing, so lay the groups out by their own estimate
        xpos = np.empty(n.size)
        xpos[np.argsort(np.where(ok, none, np.inf), kind="stable")] = np.arange(n.size)
    elif logx:
        # spread ties sideways so that arrows of equal-sized groups do not sit on each other
        xpos = n * np.exp(rng.uniform(-0.06, 0.06, n.size))
    else:
        span = max(n.max() - n.min(), 1.0)
        xpos = n + rng.uniform(-0.015, 0.015, n.size) * span
    for xp, a, b in zip(xpos[ok], none[ok], part[ok]):
        ax.annotate("", xy=(xp, b), xytext=(xp, a), gid="shrinkage-arrow",
                    arrowprops=dict(arrowstyle="-|>", color=_C_PARTIAL, lw=0.8, alpha=0.6,
                                    shrinkA=0, shrinkB=2, mutation_scale=7))
    ax.scatter(xpos[ok], none[ok], s=22, facecolors="none", edgecolors=_C_NONE, linewidths=1.0,
               label="no pooling (own estimate)", gid="no-pooling", zorder=3)
    ax.scatter(xpos[ok], part[ok], s=16, color=_C_PARTIAL, label="partial pooling", gid="partial-pooling",
               zorder=4)
    c = float(np.nanmean(comp)) if comp.size else float("nan")
    if np.isfinite(c):
        ax.axhline(c, color=_C_COMPLETE, ls="--", lw=1.2, label="complete pooling", gid="complete-pooling")
    if logx:
        ax.set_xscale("log")
    if equal:
        labels = tab["group"].astype(str).to_numpy()
        if n.size <= 40:
            o = np.argsort(xpos)
            ax.set_xticks(xpos[o], [_short(v, 10) for v in labels[o]], rotation=90,
                          fontsize=float(np.clip(10 - n.size / 6, 6, 9)))
        else:
            ax.set_xticks([])
        ax.set_xlabel(f"{pooling.group_name}, sorted by own estimate (every group has n = {int(n[0])})")
    else:
        if not logx:
            from matplotlib.ticker import MaxNLocator

            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel(f"group size (observations per {pooling.group_name})")
    ax.set_ylabel(f"{coef} estimate")
    ax.set_title(f"Shrinkage of {coef} by {pooling.group_name}", fontsize=11)
    ax.legend(fontsize=8, frameon=False, loc="best")
    return fig


# --- caterpillar ----------------------------------------------------------------------------


def plot_caterpillar(fit: Any, group: str | None = None, term: str | None = None, level: float = 0.95,
                     ax: Any = None):
    """Conditional modes of the random effects of one grouping factor, sorted, with
    ``level`` intervals mode ± z·(conditional SD) (lme4's ``dotplot(ranef(fit, condVar = TRUE))``).

    group: grouping factor (default: the fit's first); term: one random-effect term (default:
    all terms of the group, one panel each, all in the order of the first term's modes).
    ax:    an axes, or a sequence of axes (one per term).
    Level labels are shown when there are at most 60 levels.
    """
    from scipy.special import ndtri

    rt = _reterm(fit, group)
    g = rt.group
    re = fit.ranef(condvar=True)
    modes = re[g]
    sds = re.condsd[g] if getattr(re, "condsd", None) is not None else None
    terms = list(modes.columns) if term is None else [term]
    for t in terms:
        if t not in modes.columns:
            raise ValueError(f"{g!r} has no random-effect term {t!r}; it has {', '.join(modes.columns)}")
    L = len(modes)
    height = float(np.clip(0.16 * L + 1.2, 3.0, 9.0))
    if ax is None:
        fig, axs = _grid(len(terms), len(terms), None, (5.0 if len(terms) == 1 else 3.6, height), sharey=True)
    else:
        fig, axs = _grid(len(terms), len(terms), ax, (3.6, height), what="terms")
    order = np.argsort(modes[terms[0]].to_numpy(), kind="stable")
    ypos = np.arange(L)
    z = float(ndtri(0.5 + level / 2.0))
    show_labels = L <= 60
    for a, t in zip(axs, terms):
        v = modes[t].to_numpy()[order]
        err = None if sds is None else z * sds[t].to_numpy()[order]
        cont = a.errorbar(v, ypos, xerr=err, fmt="o", ms=3.2 if L <= 60 else 2.0, color=_C_PARTIAL,
                          ecolor="#9ab8d6", elinewidth=1.0 if L <= 60 else 0.6, capsize=0)
        cont.lines[0].set_gid("level-points")
        a.axvline(0.0, color="black", lw=0.8, ls=":")
        a.set_xlabel(t)
        a.set_ylim(-1, L)
        a.tick_params(axis="x", labelsize=8)
        a.grid(axis="x", color="#eeeeee", lw=0.6)
        a.set_axisbelow(True)
    first = axs[0]
    if show_labels:
        first.set_yticks(ypos, [_short(str(s), 16) for s in modes.index[order]],
                         fontsize=float(np.clip(9 - L / 12, 5.5, 9)))
    else:
        first.set_yticks([])
    for a in axs[1:]:
        if a.figure is first.figure and ax is None:
            a.tick_params(axis="y", labelleft=False)
    first.set_ylabel(f"{g} ({L} levels, sorted)" if not show_labels else g)
    if ax is None:
        fig.suptitle(f"Random effects of {g} ({level:.0%} intervals)", fontsize=11)
    return fig


# --- coefficients ---------------------------------------------------------------------------


def plot_coefficients(*fits: Any, names: Sequence[str] | None = None, ax: Any = None, level: float = 0.95,
                      intercept: bool | None = None):
    """Dot-and-whisker plot of the fixed effects of one or several fits.

    Dots are the estimates, whiskers Wald intervals estimate ± z·SE at ``level``. Several
    fits are drawn side by side for each coefficient, in the colours of the legend.
    names:     labels of the fits in the legend (default: their formulas).
    intercept: show ``(Intercept)``; default only when it is the only coefficient (its scale
               usually dwarfs the others).
    """
    from scipy.special import ndtri

    if not fits:
        raise ValueError("plot_coefficients needs at least one fit")
    if names is None:
        names = [str(getattr(f, "formula", f"model {i + 1}")) for i, f in enumerate(fits)]
    elif len(names) != len(fits):
        raise ValueError(f"{len(names)} names for {len(fits)} fits")
    coefs: list[str] = []
    for f in fits:
        for c in f.fixef.index:
            if c not in coefs:
                coefs.append(str(c))
    if intercept is None:
        intercept = coefs == ["(Intercept)"]
    if not intercept:
        coefs = [c for c in coefs if c != "(Intercept)"] or coefs
    z = float(ndtri(0.5 + level / 2.0))
    k = len(fits)
    own = ax is None
    fig, ax = _one_ax(ax, (6.4, max(2.4, 0.42 * len(coefs) * max(1.0, k ** 0.5) + 1.6 + 0.2 * (k > 1) * k)))
    colors = _group_colors(k)
    width = 0.6
    offsets = np.zeros(1) if k == 1 else np.linspace(-width / 2, width / 2, k)
    ypos = np.arange(len(coefs), dtype=float)
    for i, (f, nm) in enumerate(zip(fits, names)):
        est = f.fixef.reindex(coefs)
        se = f.se.reindex(coefs)
        ok = est.notna().to_numpy()
        if not ok.any():  # e.g. a null model when the intercept is not shown
            continue
        y = ypos[ok] + offsets[i]
        e = est.to_numpy()[ok]
        s = se.to_numpy()[ok]
        cont = ax.errorbar(e, y, xerr=z * s, fmt="o", ms=5, color=colors[i], elinewidth=1.5, capsize=0,
                           label=_short(nm, 60))
        cont.lines[0].set_gid(f"fit:{i}")
    ax.axvline(0.0, color="black", lw=0.8, ls=":")
    ax.set_yticks(ypos, [_short(c, 28) for c in coefs], fontsize=9)
    ax.set_ylim(len(coefs) - 0.5, -0.5)  # first coefficient on top
    ax.set_xlabel(f"estimate ({level:.0%} Wald interval)")
    ax.grid(axis="x", color="#eeeeee", lw=0.6)
    ax.set_axisbelow(True)
    ax.set_title("Fixed effects", fontsize=11)
    if k > 1 and own:
        fig.legend(fontsize=8, frameon=False, loc="outside lower center", ncols=1)
    elif k > 1:
        ax.legend(fontsize=8, frameon=False, loc="best")
    return fig


# --- effect ---------------------------------------------------------------------------------


def _typical_grid(fit: Any, x: str, data: pd.DataFrame, n: int) -> tuple[pd.DataFrame, bool]:
    """A frame of new data: ``x`` over a grid (n points over its range, or each level), every
    other variable of the fixed part at its mean (numbers) or reference level (factors)."""
    fr = fit.frame
    spec = fr.spec
    columns = list(spec.fixed.columns())
    if getattr(spec, "offset_column", None):
        columns.append(spec.offset_column)
    if x not in columns:
        raise ValueError(f"{x!r} is not a variable of the fixed part of the model "
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


def _fmt_value(v: Any) -> str:
    if isinstance(v, (float, np.floating)):
        return f"{float(v):.3g}"
    return _short(str(v), 16)


def _effect_values(fit: Any, grid: pd.DataFrame, level: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fixed-part prediction on the response scale with its pointwise ``level`` band."""
    from scipy.special import ndtri

    nd = fit.frame.new_design(grid, re_form="~0")
    X = np.asarray(nd.X, dtype=float)
    beta = np.asarray(fit.fixef, dtype=float)
    V = np.asarray(fit.vcov, dtype=float)
    eta = X @ beta
    if nd.offset is not None:
        eta = eta + np.asarray(nd.offset, dtype=float)
    se = np.sqrt(np.clip(np.einsum("ij,jk,ik->i", X, V, X), 0.0, None))
    z = float(ndtri(0.5 + level / 2.0))
    inv = _linkinv(fit)
    mu, lo, hi = (np.asarray(inv(v), dtype=float) for v in (eta, eta - z * se, eta + z * se))
    return mu, np.minimum(lo, hi), np.maximum(lo, hi)


def plot_effect(fit: Any, x: str, data: Any = None, ax: Any = None, n: int = 50, level: float = 0.95):
    """Predicted response across one predictor, the others held at typical values.

    The prediction is the fixed part (random effects 0: a typical group), on the response
    scale for GLMMs, with a ``level`` confidence band from the covariance of the fixed
    effects (computed on the link scale, then transformed). Other numeric variables are
    held at their mean over the rows used, factors at their reference level. A numeric ``x``
    is drawn as a line over ``n`` points spanning its range (with a rug of the observed
    values), a factor as one point with an interval per level.

    data: the data the model was fitted to (needed for the typical values; the fit does not
          keep the data frame).
    """
    if data is None:
        data = getattr(fit, "data", None)
    if data is None:
        raise ValueError("plot_effect needs the data the model was fitted to: plot_effect(fit, x, data=df)")
    df = _to_pandas(data)
    grid, is_factor = _typical_grid(fit, x, df, n)
    mu, lo, hi = _effect_values(fit, grid, level)
    fig, ax = _one_ax(ax, (6.0, 4.2))
    if is_factor:
        pos = np.arange(len(grid))
        cont = ax.errorbar(pos, mu, yerr=[mu - lo, hi - mu], fmt="o", ms=6, color=_C_PARTIAL, capsize=4,
                           elinewidth=1.5)
        cont.lines[0].set_gid("effect")
        ax.set_xticks(pos, [_short(str(v), 14) for v in grid[x]], fontsize=9)
        ax.set_xlim(-0.5, len(grid) - 0.5)
    else:
        xs = grid[x].to_numpy(dtype=float)
        ax.fill_between(xs, lo, hi, color=_C_PARTIAL, alpha=0.2, lw=0, gid="band",
                        label=f"{level:.0%} confidence band")
        ax.plot(xs, mu, color=_C_PARTIAL, lw=2.0, gid="effect", label="prediction")
        obs = _used_rows(fit, df)[x].to_numpy(dtype=float)
        obs = np.unique(obs[np.isfinite(obs)])
        if obs.size > 400:
            obs = np.quantile(obs, np.linspace(0, 1, 400))
        ax.plot(obs, np.zeros_like(obs), "|", color="black", ms=8, alpha=0.4,
                transform=ax.get_xaxis_transform(), gid="rug")
        # room for the rug below the band, and not too many ticks in a small panel
        y0, y1 = ax.get_ylim()
        ax.set_ylim(y0 - 0.06 * (y1 - y0), y1)
        from matplotlib.ticker import MaxNLocator

        ax.xaxis.set_major_locator(MaxNLocator(nbins=6))
    ax.set_xlabel(x)
    response = fit.frame.response
    if _is_gaussian(fit):
        ylabel = f"predicted {response}"
    else:
        fam = getattr(fit, "family", "")
        fam = fam if isinstance(fam, str) else getattr(fam, "name", "")
        ylabel = "predicted probability" if fam == "binomial" else f"predicted mean of {_short(response, 30)}"
    ax.set_ylabel(ylabel)
    held = [c for c in grid.columns if c != x]
    if not held:
        note = ""
    elif len(held) <= 3:
        note = " (" + ", ".join(f"{c} = {_fmt_value(grid[c].iloc[0])}" for c in held) + ")"
    else:
        note = f" ({len(held)} other variables at mean / reference level)"
    ax.set_title(f"Effect of {x}{note}", fontsize=10)
    return fig


# --- diagnostics ----------------------------------------------------------------------------


def _qq(ax: Any, values: np.ndarray, title: str, gid: str) -> None:
    from scipy.special import ndtri

    v = np.sort(np.asarray(values, dtype=float)[np.isfinite(values)])
    m = v.size
    if m == 0:
        ax.set_title(title + " (none)", fontsize=10)
        return
    p = (np.arange(1, m + 1) - 0.5) / m  # ppoints
    q = ndtri(p)
    many = m > 2000
    ax.scatter(q, v, s=4 if many else 10, color=_C_PARTIAL, alpha=0.4 if many else 0.7, linewidths=0,
               gid=gid, rasterized=many)
    # reference line through the quartiles (R's qqline)
    q1, q3 = np.quantile(v, [0.25, 0.75])
    t1, t3 = ndtri([0.25, 0.75])
    slope = (q3 - q1) / (t3 - t1) if t3 != t1 else 0.0
    ax.axline((t1, q1), slope=slope, color="#d62728", lw=1.0)
    ax.set_xlabel("normal quantiles", fontsize=9)
    ax.set_ylabel("sample quantiles", fontsize=9)
    ax.set_title(title, fontsize=10)
    ax.tick_params(labelsize=8)


def plot_diagnostics(fit: Any, *, axes: Any = None, ncols: int | None = None):
    """Residuals against fitted values, a normal QQ plot of the residuals, and a normal QQ
    plot of the conditional modes of each random-effect term (one panel each).

    Linear mixed models use the response residuals, GLMMs the Pearson residuals. The red
    line of the residual plot follows the mean residual in bins of fitted values.
    """
    gauss = _is_gaussian(fit)
    if gauss:
        res = np.asarray(fit.residuals(), dtype=float)
        rlabel = "residuals"
    else:
        res = np.asarray(fit.residuals(type="pearson"), dtype=float)
        rlabel = "Pearson residuals"
    fv = np.asarray(fit.fitted(), dtype=float)
    re = fit.ranef(condvar=False)
    panels = [(g, t) for g, df in re.items() for t in df.columns]
    k = 2 + len(panels)
    if ncols is None:
        ncols = 2 if k in (2, 4) else 3
    fig, axs = _grid(k, ncols, axes, (3.4, 3.0))
    a = axs[0]
    many = fv.size > 2000
    a.scatter(fv, res, s=4 if many else 10, color=_C_PARTIAL, alpha=0.3 if many else 0.6, linewidths=0,
              gid="residuals", rasterized=many)
    a.axhline(0.0, color="black", lw=0.8, ls=":")
    if fv.size >= 100:
        nb = int(np.clip(fv.size // 20, 5, 25))
        edges = np.unique(np.quantile(fv, np.linspace(0, 1, nb + 1)))
        if edges.size > 2:
            idx = np.clip(np.searchsorted(edges, fv, side="right") - 1, 0, edges.size - 2)
            cnt = np.bincount(idx, minlength=edges.size - 1)
            sm = np.bincount(idx, weights=res, minlength=edges.size - 1)
            cx = np.bincount(idx, weights=fv, minlength=edges.size - 1)
            okb = cnt > 0
            a.plot(cx[okb] / cnt[okb], sm[okb] / cnt[okb], color="#d62728", lw=1.2, gid="trend")
    a.set_xlabel("fitted values" + ("" if gauss else " (response scale)"), fontsize=9)
    a.set_ylabel(rlabel, fontsize=9)
    a.set_title(f"{rlabel.capitalize()} vs fitted", fontsize=10)
    a.tick_params(labelsize=8)
    _qq(axs[1], res, f"Normal QQ: {rlabel}", "qq:residuals")
    for a, (g, t) in zip(axs[2:], panels):
        _qq(a, re[g][t].to_numpy(), f"Normal QQ: {_short(g, 14)} {_short(t, 14)}", f"qq:{g}:{t}")
    if axes is None:
        fig.suptitle(f"Diagnostics: {_short(fit.formula, 80)}", fontsize=11)
    return fig


# --- profiles -------------------------------------------------------------------------------


def profile_sd(fit: Any, zmax: float = 2.6, npoints: int = 12) -> dict[str, pd.DataFrame]:
    """Likelihood profiles of the random-effect standard deviations and of sigma, as lme4's
    ``profile(fit)`` computes them for these parameters (a fallback for fits without
    :mod:`multilevel.inference`'s profile; no correlations, no fixed effects).

    As lme4, the model is first refitted by maximum likelihood and the ML deviance is
    profiled, also for REML fits. For a standard deviation sd_j = σ·‖row j of Λ(θ)‖ fixed
    at s, σ is determined by θ and the deviance n·log(2πσ²) + PWRSS(θ)/σ² + log|L_θ|² is
    minimised over all of θ; for σ fixed, likewise. ζ = sign(s − ŝ)·√(d(s) − d̂). The grid
    steps out from the estimate (on the log scale) until |ζ| ≥ ``zmax`` or the parameter
    is near 0. Returns ``{name: DataFrame(value, zeta)}`` with lme4's names
    (``sd_(Intercept)|Subject``, ``sigma``).

    Uses the fit's engine (``fit._problem``: ``ml_deviance``, ``solution``) and the
    optimiser wrapper; only ``lmer`` fits have one.
    """
    from multilevel.control import LmerControl
    from multilevel.engine.optimize import bobyqa
    from multilevel.covariance import lambda_blocks

    prob = getattr(fit, "_problem", None)
    if prob is None or not hasattr(prob, "ml_deviance") or not _is_gaussian(fit):
        raise ValueError("this fit cannot be profiled here (only lmer fits keep their engine)")
    n = prob.n
    rts = fit.frame.reterms
    sizes = [rt.n_terms for rt in rts]
    lower = np.asarray(prob.lower, dtype=float)
    step = np.full(lower.size, 0.05)
    opts = LmerControl(ftol_abs=1e-9, xtol_abs=1e-7, check_conv=False, initial_step=step)
    res = bobyqa(prob.ml_deviance, np.asarray(fit.theta, dtype=float), lower, opts)
    theta_ml, dev_ml = res.x.copy(), float(res.fun)

    def pieces(theta: np.ndarray) -> tuple[float, float]:
        sol = prob.solution(np.asarray(theta, dtype=float))
        return float(sol["pwrss"]), float(sol["ldl2"])

    def row_norm(theta: np.ndarray, k: int, j: int) -> float:
        return float(np.linalg.norm(lambda_blocks(theta, sizes)[k][j]))

    pw, _ = pieces(theta_ml)
    sigma_ml = math.sqrt(pw / n)
    params: list[tuple[str, int | None, int | None, float]] = []
    for k, rt in enumerate(rts):
        for j, t in enumerate(rt.terms):
            params.append((f"sd_{t}|{rt.group}", k, j, sigma_ml * row_norm(theta_ml, k, j)))
    params.append(("sigma", None, None, sigma_ml))
    out: dict[str, pd.DataFrame] = {}
    for name, k, j, s_hat in params:
        if not s_hat > 0:
            continue  # a standard deviation estimated at 0 (singular fit): no profile

        def deviance(theta: np.ndarray, s: float, k=k, j=j) -> float:
            r = 1.0 if k is None else row_norm(theta, k, j)
            if not r > 0:
                return float("inf")
            sigma2 = (s / r) ** 2
            pwrss, ldl2 = pieces(theta)
            return n * math.log(2 * math.pi * sigma2) + pwrss / sigma2 + ldl2

        rows = [(s_hat, 0.0)]
        for direction in (-1.0, 1.0):
            theta = theta_ml.copy()
            logs, h = math.log(s_hat), 0.03
            for _ in range(4 * npoints):
                logs += direction * h
                s = math.exp(logs)
                r = bobyqa(lambda th, s=s: deviance(th, s), theta, lower, opts)
                theta = r.x.copy()
                zeta = direction * math.sqrt(max(float(r.fun) - dev_ml, 0.0))
                rows.append((s, zeta))
                if abs(zeta) >= zmax or s < 1e-3 * s_hat:
                    break
                # aim for steps of about zmax / npoints in zeta
                slope = abs(zeta) / abs(logs - math.log(s_hat))
                if slope > 0:
                    h = float(np.clip((zmax / npoints) / slope, 0.02, 0.6))
        rows.sort()
        out[name] = pd.DataFrame(rows, columns=["value", "zeta"])
    return out


def _inference_limits(fit: Any, names: Sequence[str], level: float) -> dict[str, tuple[float, float]]:
    """Profile interval ends from ``multilevel.inference.profile`` for ``names`` ({} when that
    function is missing or fails): drawn on the curves as a cross-check."""
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


def plot_profile(fit: Any, *, axes: Any = None, ncols: int = 3, level: float = 0.95, profile: Any = None):
    """Profile plots: ζ against each parameter (lme4's ``xyplot(profile(fit))``) for the
    standard deviations of the random effects and the residual SD.

    ζ is the signed square root of the increase in the ML deviance (:func:`profile_sd`); a
    quadratic deviance would give a straight line. The dotted lines are ζ = ±z for
    ``level``: where the curve crosses them are the profile confidence limits, marked with
    short vertical ticks from :func:`multilevel.inference.confint`'s profile when available
    (its intervals also cover correlations and fixed effects, which are not traced here).
    ``profile=``: curves computed elsewhere, {name: (values, zeta)} or {name: DataFrame(value,
    zeta)}.
    """
    from scipy.special import ndtri

    if profile is not None:
        table = _profile_table(profile)
        if table is None:
            raise ValueError("profile= must be {name: (values, zeta)} or {name: DataFrame(value, zeta)}")
        limits: dict[str, tuple[float, float]] = {}
    else:
        table = {nm: (df["value"].to_numpy(), df["zeta"].to_numpy()) for nm, df in profile_sd(fit).items()}
        limits = _inference_limits(fit, list(table), level)
    names = list(table)
    if not names:
        raise ValueError("nothing to profile")
    fig, axs = _grid(len(names), ncols, axes, (3.2, 2.8), sharey=True)
    z = float(ndtri(0.5 + level / 2.0))
    for a, nm in zip(axs, names):
        x, zeta = table[nm]
        o = np.argsort(x)
        a.plot(x[o], zeta[o], "-", color=_C_PARTIAL, lw=1.6, marker="o", ms=3, gid=f"profile:{nm}")
        for h in (-z, z):
            a.axhline(h, color="#999999", lw=0.8, ls=":")
        a.axhline(0.0, color="#cccccc", lw=0.6)
        if nm in limits:
            lo, hi = limits[nm]
            for v, h in ((lo, -z), (hi, z)):
                if np.isfinite(v) and (v > 0 or h > 0):
                    a.plot([v, v], [h - 0.35, h + 0.35], color="#d62728", lw=1.4, gid=f"limit:{nm}")
        a.set_xlabel(_short(nm, 32), fontsize=9)
        a.tick_params(labelsize=8)
        if a.get_subplotspec() is None or a.get_subplotspec().is_first_col():
            a.set_ylabel("ζ", fontsize=10)
    if axes is None:
        fig.suptitle(f"Profile zeta (ML deviance; {level:.0%} limits dotted)", fontsize=11)
    return fig
