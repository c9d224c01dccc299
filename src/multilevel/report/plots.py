"""Plots of fitted multilevel models (matplotlib).

Layer: report. Draws only; no numbers computed here beyond layout (positions, jitter, sizes,
colours, tick labels): each ``plot_*`` function takes its numbers from the function of the
same name in :mod:`multilevel.report.plotdata` (``plot_caterpillar`` from
``caterpillar_data``...), so that another renderer of those frames shows what these figures
show.

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
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from multilevel.report.plotdata import (
    caterpillar_data,
    coefficients_data,
    diagnostics_data,
    effect_data,
    fitted_lines_data,
    pooling_data,
    profile_data,
    shrinkage_data,
)
# app.html_report takes these two from here
from multilevel.report.plotdata import _to_pandas, _used_rows  # noqa: F401

if TYPE_CHECKING:
    from multilevel.results import AnyFit
    from multilevel.toolkit.pooling import Pooling

__all__ = [
    "plot_fitted_lines",
    "plot_pooling",
    "plot_shrinkage",
    "plot_caterpillar",
    "plot_coefficients",
    "plot_effect",
    "plot_diagnostics",
    "plot_profile",
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


def _new_figure(figsize: tuple[float, float], layout: str | None = "constrained"):
    """A new figure on the Agg canvas (no pyplot, no GUI backend), constrained layout
    unless ``layout=None`` (fixed positions)."""
    global _FIGURE_CLASS
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    if _FIGURE_CLASS is None:
        _FIGURE_CLASS = _figure_class()
    fig = _FIGURE_CLASS(figsize=figsize, layout=layout)
    FigureCanvasAgg(fig)
    return fig


def figure_png(fig: Any, dpi: int = 100) -> bytes:
    """The figure as PNG bytes, drawn once.

    ``savefig`` on a figure with a layout engine draws it twice (once to lay it out, once
    to render) and lays it out on both draws; here the layout is computed once, frozen,
    and the figure rendered in one draw, which matters when a report renders a dozen.
    The figure keeps that layout afterwards (its layout engine is switched off).

    >>> fig = _new_figure((2.0, 1.5)); _ = fig.add_subplot().plot([0, 1])
    >>> figure_png(fig)[:4]
    b'\\x89PNG'
    """
    engine = fig.get_layout_engine()
    if engine is not None:
        engine.execute(fig)
        # None, not "none": a placeholder engine would still make savefig draw twice
        fig.set_layout_engine(None)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def _one_ax(ax: Any, figsize: tuple[float, float]):
    """(figure, axes): the user's axes, or one new axes on a new figure."""
    if ax is not None:
        return ax.figure, ax
    fig = _new_figure(figsize)
    return fig, fig.add_subplot(1, 1, 1)


#: the panels' titles sit at a fixed height above the axes: matplotlib's automatic title
#: placement measures every tick label for axes that have none on top (10% of a render)
_TITLE_Y = 1.0

#: fixed margins of a grid of panels, in inches: (left, right, bottom, top, between
#: columns, between rows), room for the tick labels, axis labels, panel titles and a title
GRID_MARGINS = (0.7, 0.15, 0.6, 0.65, 0.8, 0.8)


def _grid(k: int, ncols: int, axes: Any, panel: tuple[float, float], sharex: bool = False,
          sharey: bool = False, what: str = "panels", margins: tuple[float, ...] | None = None):
    """(figure, list of k axes) in a grid of ``ncols`` columns; unused cells are removed.

    margins: fixed margins in inches (see ``GRID_MARGINS``) instead of the constrained
    layout, for regular grids whose labels are known: measuring every panel's tick labels
    twice per rendering is what makes constrained layout slow for many panels."""
    if axes is not None:
        axs = list(np.ravel(axes)) if not hasattr(axes, "figure") else [axes]
        if len(axs) < k:
            raise ValueError(f"this plot has {k} {what}; got {len(axs)} axes")
        return axs[0].figure, axs[:k]
    ncols = max(1, min(ncols, k))
    nrows = math.ceil(k / ncols)
    if margins is None:
        fig = _new_figure((panel[0] * ncols, panel[1] * nrows))
    else:
        left, right, bottom, top, wsp, hsp = margins
        w = panel[0] * ncols + left + right + wsp * (ncols - 1)
        h = panel[1] * nrows + bottom + top + hsp * (nrows - 1)
        fig = _new_figure((w, h), layout=None)
        fig.subplots_adjust(left=left / w, right=1 - right / w, bottom=bottom / h, top=1 - top / h,
                            wspace=wsp / panel[0], hspace=hsp / panel[1])
    grid = fig.subplots(nrows, ncols, sharex=sharex, sharey=sharey, squeeze=False)
    axs = list(grid.ravel())
    for a in axs[k:]:
        fig.delaxes(a)
    return fig, axs[:k]


# --- labels and colours ---------------------------------------------------------------------


def _short(label: str, width: int = 24) -> str:
    return label if len(label) <= width else label[: width - 1] + "…"


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


def _by(frame: Any, column: str) -> dict:
    """{value: rows} of a frame split by one column, rows in their order."""
    return {k: g for k, g in frame.groupby(column, sort=False)}


# --- fitted lines ---------------------------------------------------------------------------


def _held_note(held: dict, how: dict, others: str, group: str) -> str:
    """'sex = boy (reference), texp = 14.3 (mean)': how the other predictors are held."""
    if not held:
        return ""
    if others == "group":
        return f"other predictors at each {group}'s mean / most frequent level"
    if len(held) > 4:
        return f"{len(held)} other predictors at their mean / reference level"
    return ", ".join(f"{c} = {_fmt_value(v)} ({how.get(c, '')})" for c, v in held.items())


def plot_fitted_lines(fit: AnyFit, x: str, ax: Any = None, groups: Any = None, *,
                      group: str | None = None, data: Any = None, population: bool = True,
                      others: str = "typical"):
    """Fitted lines of each group against ``x``, one line per group, over the data points.

    fit:        an LmmFit or GlmmFit (GLMMs: on the response scale), or an LmFit with
                ``group=`` (e.g. the school-dummy model ``y ~ x + factor(school)``: one line
                per school from the lm's predictions).
    x:          the numeric predictor on the horizontal axis.
    groups:     levels to draw (a list), or a number of levels spread over the group sizes;
                default all.
    group:      the grouping factor (default: the fit's first, the one with most levels;
                required for an lm fit: a column of the data).
    data:       the data the model was fitted to; without it the variables are read back
                from the fit's model matrices.
    population: also draw the population line (fixed effects; for an lm, the average of
                the groups' lines) in black.
    others:     how the other predictors are held: ``"typical"`` (mean / reference level,
                the default) or ``"group"`` (each group's own mean / most frequent level).
                The subtitle says which.

    Each line is the model's prediction for its group over the group's range of ``x``,
    so a second within-group predictor does not make it zigzag. The numbers:
    :func:`~multilevel.report.plotdata.fitted_lines_data`.

    >>> import multilevel as ml
    >>> pop = ml.datasets.load("popularity")
    >>> fit = ml.lmer("popular ~ extrav + sex + (1 + extrav | class)", pop)
    >>> fig = plot_fitted_lines(fit, "extrav", groups=5)
    >>> fig.axes[0].get_title().splitlines()
    ['Fitted lines by class (5 of 100)', 'sex = boy (reference)']
    """
    d = fitted_lines_data(fit, x, data, groups, group=group, population=population, others=others)
    meta = d.meta
    chosen = meta["levels"]
    points, lines, pop = d["points"], _by(d["lines"], "group"), d["population"]
    fig, ax = _one_ax(ax, (7.0, 4.8))
    k = len(chosen)
    colors = _group_colors(k)
    many = k > 20
    lw = 1.0 if many else 1.6
    if many:  # one grey cloud: colours of 20+ groups cannot be told apart anyway
        ax.scatter(points["x"].to_numpy(), points["y"].to_numpy(), s=8, color=_C_POINTS, alpha=0.25,
                   linewidths=0, gid="points", rasterized=True)
    by_points = _by(points, "group") if not many else {}
    for c, lv in zip(colors, chosen):
        if not many and lv in by_points:
            p = by_points[lv]
            ax.scatter(p["x"].to_numpy(), p["y"].to_numpy(), s=14, color=c, alpha=0.6, linewidths=0,
                       gid=f"points:{lv}")
        if lv not in lines:
            continue
        ln = lines[lv]
        ax.plot(ln["x"].to_numpy(), ln["fitted"].to_numpy(), color=c, lw=lw, alpha=0.7 if many else 0.95,
                label=_short(lv, 14), gid=f"group:{lv}")
    if len(pop):
        ax.plot(pop["x"].to_numpy(), pop["y"].to_numpy(), color="black", lw=2.4, ls="--",
                label=meta["population_label"], gid="population", zorder=5)
    ax.set_xlabel(x)
    ax.set_ylabel(meta["response"])
    g, n_levels = meta["group"], meta["n_levels"]
    title = f"Fitted lines by {g}" + ("" if k == n_levels else f" ({k} of {n_levels})")
    note = _held_note(meta["held"], meta["held_how"], meta["others"], g)
    ax.set_title(title + (f"\n{note}" if note else ""), fontsize=11 if not note else 10, y=_TITLE_Y)
    if k <= 20:
        ax.legend(title=g, fontsize=8, title_fontsize=8, loc="upper left", ncols=1 if k <= 10 else 2,
                  bbox_to_anchor=(1.01, 1.0), frameon=False, handlelength=1.5, columnspacing=0.8)
    elif len(pop):
        ax.legend(handles=[h for h in ax.get_lines() if h.get_gid() == "population"], fontsize=8,
                  frameon=False)
    return fig


# --- pooling --------------------------------------------------------------------------------


def plot_pooling(pooling: Pooling, groups: Any = None, ncols: int = 4, *, axes: Any = None):
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
    that approach's fitted values, so that lines and data points are on the same footing
    (:func:`~multilevel.report.plotdata.pooling_data`).
    """
    d = pooling_data(pooling, groups)
    meta = d.meta
    chosen = meta["levels"]
    has_x = meta["x"] is not None
    points, lines = _by(d["points"], "group"), _by(d["lines"], "group")
    sizes = dict(zip(d["groups"]["group"], d["groups"]["n"]))
    # fixed margins: a grid of like panels; room below for the legend
    fig, axs = _grid(len(chosen), ncols, axes, (2.25, 1.75), sharex=True, sharey=True,
                     margins=(0.62, 0.12, 0.85, 0.55, 0.12, 0.35))
    rng = np.random.default_rng(0)  # horizontal jitter of the points without a slope variable
    styles = {"complete": (_C_COMPLETE, "--", "complete pooling"),
              "none": (_C_NONE, "-", "no pooling"),
              "partial": (_C_PARTIAL, "-", "partial pooling")}
    for a, lv in zip(axs, chosen):
        p = points[lv]
        px = p["x"].to_numpy() if has_x else rng.uniform(-0.3, 0.3, len(p))
        a.scatter(px, p["y"].to_numpy(), s=9, color=_C_POINTS, alpha=0.45, linewidths=0, gid="points", zorder=1)
        for kind, ln in _by(lines[lv], "pooling").items() if lv in lines else ():
            color, ls, label = styles[kind]
            a.plot(ln["x"].to_numpy(), ln["y"].to_numpy(), color=color, ls=ls, lw=1.8, label=label,
                   gid=f"pooling:{kind}", zorder=3)
        a.set_title(f"{_short(lv, 18)}  (n = {int(sizes[lv])})", fontsize=9, y=_TITLE_Y)
        a.tick_params(labelsize=8)
        if not has_x:
            a.set_xticks([])
    for a in axs:
        if a.get_subplotspec() is None or a.get_subplotspec().is_first_col():
            a.set_ylabel(meta["response"], fontsize=9)
        if a.get_subplotspec() is None or a.get_subplotspec().is_last_row() or not has_x:
            a.set_xlabel(meta["x"] or "", fontsize=9)
    handles = [h for h in axs[0].get_lines() if h.get_gid() and h.get_gid().startswith("pooling:")]
    if handles and axes is None:
        fig.legend(handles=handles, loc="lower center", ncols=3, fontsize=9, frameon=False)
        fig.suptitle(f"Pooling by {meta['group']}", fontsize=11)
    elif handles:
        axs[0].legend(handles=handles, fontsize=7, frameon=False)
    return fig


def plot_shrinkage(pooling: Pooling, coef: str = "(Intercept)", ax: Any = None):
    """No-pooling vs partial-pooling estimates of one coefficient per group, against group size.

    Each group is a segment from its own estimate (no pooling, open circle) to its partial
    pooling estimate (filled circle, coloured by the group's shrinkage factor: 1 keeps the
    own estimate, 0 pools completely; :func:`multilevel.toolkit.pooling.shrinkage_factors`);
    the dashed line is the complete-pooling estimate. Small groups have small factors and
    move furthest. The horizontal axis is logarithmic when group sizes span more than a
    factor of 10; groups of equal size are spread a little sideways. The numbers:
    :func:`~multilevel.report.plotdata.shrinkage_data`.
    """
    from matplotlib.collections import LineCollection

    d = shrinkage_data(pooling, coef)
    tab, meta = d["groups"], d.meta
    n = tab["n"].to_numpy(dtype=float)
    none = tab["no_pooling"].to_numpy(dtype=float)
    part = tab["partial_pooling"].to_numpy(dtype=float)
    ok = tab["estimable"].to_numpy(dtype=bool)
    weight = tab["weight"].to_numpy(dtype=float) if "weight" in tab.columns else np.full(n.size, np.nan)
    fig, ax = _one_ax(ax, (7.4, 4.6))
    equal = n.size > 0 and np.all(n == n[0])
    logx = not equal and n.max() > 10 * max(n.min(), 1.0)
    rng = np.random.default_rng(1)
    if equal:
        # one group size: sizes tell nothing, so lay the groups out by their own estimate
        xpos = tab["rank"].to_numpy(dtype=float)
    elif logx:
        # spread ties sideways so that segments of equal-sized groups do not sit on each other
        xpos = n * np.exp(rng.uniform(-0.06, 0.06, n.size))
    else:
        span = max(n.max() - n.min(), 1.0)
        xpos = n + rng.uniform(-0.015, 0.015, n.size) * span
    # one collection for all segments: hundreds of arrow patches cost seconds to render
    segs = np.stack([np.column_stack([xpos[ok], none[ok]]), np.column_stack([xpos[ok], part[ok]])], axis=1)
    ax.add_collection(LineCollection(segs, colors=_C_PARTIAL, linewidths=0.8, alpha=0.5, gid="shrinkage-segments",
                                     zorder=2))
    ax.scatter(xpos[ok], none[ok], s=22, facecolors="none", edgecolors=_C_NONE, linewidths=1.0,
               label="no pooling (own estimate)", gid="no-pooling", zorder=3)
    has_w = bool(np.isfinite(weight[ok]).any())
    pts = ax.scatter(xpos[ok], part[ok], s=18, c=weight[ok] if has_w else _C_PARTIAL, cmap="viridis", vmin=0.0,
                     vmax=1.0, edgecolors="white", linewidths=0.3, label="partial pooling",
                     gid="partial-pooling", zorder=4)
    if has_w:
        cb = fig.colorbar(pts, ax=ax, pad=0.02, fraction=0.05)
        cb.set_label("shrinkage factor (1 = own estimate kept)", fontsize=8)
        cb.ax.tick_params(labelsize=7)
    c = meta["complete_pooling"]
    if np.isfinite(c):
        ax.axhline(c, color=_C_COMPLETE, ls="--", lw=1.2, label="complete pooling", gid="complete-pooling")
    ax.autoscale_view()
    if logx:
        ax.set_xscale("log")
    g = meta["group"]
    if equal:
        labels = tab["group"].to_numpy(dtype=object)
        if n.size <= 40:
            o = np.argsort(xpos)
            ax.set_xticks(xpos[o], [_short(v, 10) for v in labels[o]], rotation=90,
                          fontsize=float(np.clip(10 - n.size / 6, 6, 9)))
        else:
            ax.set_xticks([])
        ax.set_xlabel(f"{g}, sorted by own estimate (every group has n = {int(n[0])})")
    else:
        if not logx:
            from matplotlib.ticker import MaxNLocator

            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel(f"group size (observations per {g})")
    ax.set_ylabel(f"{coef} estimate")
    ax.set_title(f"Shrinkage of {coef} by {g}", fontsize=11, y=_TITLE_Y)
    ax.legend(fontsize=8, frameon=False, loc="best")
    return fig


# --- caterpillar ----------------------------------------------------------------------------


def plot_caterpillar(fit: AnyFit, group: str | None = None, term: str | None = None, level: float = 0.95,
                     ax: Any = None):
    """Conditional modes of the random effects of one grouping factor, sorted, with
    ``level`` intervals mode ± z·(conditional SD) (lme4's ``dotplot(ranef(fit, condVar = TRUE))``).

    group: grouping factor (default: the fit's first); term: one random-effect term (default:
    all terms of the group, one panel each, all in the order of the first term's modes).
    ax:    an axes, or a sequence of axes (one per term).
    Level labels are shown when there are at most 60 levels. The numbers:
    :func:`~multilevel.report.plotdata.caterpillar_data`.
    """
    d = caterpillar_data(fit, group, term, level)
    meta = d.meta
    g, terms, L = meta["group"], meta["terms"], meta["n_levels"]
    by_term = _by(d["intervals"], "term")
    height = float(np.clip(0.16 * L + 1.2, 3.0, 9.0))
    if ax is None:
        fig, axs = _grid(len(terms), len(terms), None, (5.0 if len(terms) == 1 else 3.6, height), sharey=True)
    else:
        fig, axs = _grid(len(terms), len(terms), ax, (3.6, height), what="terms")
    show_labels = L <= 60
    for a, t in zip(axs, terms):
        rows = by_term[t]
        v = rows["condval"].to_numpy()
        ypos = rows["rank"].to_numpy()
        lo, hi = rows["lower"].to_numpy(), rows["upper"].to_numpy()
        err = None if np.isnan(lo).all() else [v - lo, hi - v]
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
        rows = by_term[terms[0]]
        first.set_yticks(rows["rank"].to_numpy(), [_short(str(s), 16) for s in rows["grp"]],
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


def plot_coefficients(*fits: AnyFit, names: Sequence[str] | None = None, ax: Any = None, level: float = 0.95,
                      intercept: bool | None = None):
    """Dot-and-whisker plot of the fixed effects of one or several fits.

    Dots are the estimates, whiskers Wald intervals estimate ± z·SE at ``level``. Several
    fits are drawn side by side for each coefficient, in the colours of the legend.
    names:     labels of the fits in the legend (default: their formulas).
    intercept: show ``(Intercept)``; default only when it is the only coefficient (its scale
               usually dwarfs the others).
    The numbers: :func:`~multilevel.report.plotdata.coefficients_data`.
    """
    d = coefficients_data(*fits, names=names, level=level, intercept=intercept)
    meta = d.meta
    coefs, models = meta["terms"], meta["models"]
    by_model = _by(d["estimates"], "model_index")
    k = len(models)
    own = ax is None
    fig, ax = _one_ax(ax, (6.4, max(2.4, 0.42 * len(coefs) * max(1.0, k ** 0.5) + 1.6 + 0.2 * (k > 1) * k)))
    colors = _group_colors(k)
    width = 0.6
    offsets = np.zeros(1) if k == 1 else np.linspace(-width / 2, width / 2, k)
    ypos = np.arange(len(coefs), dtype=float)
    for i, nm in enumerate(models):
        rows = by_model.get(i)
        if rows is None:  # e.g. a null model when the intercept is not shown
            continue
        y = ypos[rows["term_index"].to_numpy()] + offsets[i]
        e, lo, hi = rows["estimate"].to_numpy(), rows["lower"].to_numpy(), rows["upper"].to_numpy()
        cont = ax.errorbar(e, y, xerr=[e - lo, hi - e], fmt="o", ms=5, color=colors[i], elinewidth=1.5,
                           capsize=0, label=_short(nm, 60))
        cont.lines[0].set_gid(f"fit:{i}")
    ax.axvline(0.0, color="black", lw=0.8, ls=":")
    ax.set_yticks(ypos, [_short(c, 28) for c in coefs], fontsize=9)
    ax.set_ylim(len(coefs) - 0.5, -0.5)  # first coefficient on top
    ax.set_xlabel(f"estimate ({level:.0%} Wald interval)")
    ax.grid(axis="x", color="#eeeeee", lw=0.6)
    ax.set_axisbelow(True)
    ax.set_title("Fixed effects", fontsize=11, y=_TITLE_Y)
    if k > 1 and own:
        fig.legend(fontsize=8, frameon=False, loc="outside lower center", ncols=1)
    elif k > 1:
        ax.legend(fontsize=8, frameon=False, loc="best")
    return fig


# --- effect ---------------------------------------------------------------------------------


def _fmt_value(v: Any) -> str:
    if isinstance(v, (float, np.floating)):
        return f"{float(v):.3g}"
    return _short(str(v), 16)


def plot_effect(fit: AnyFit, x: str, data: Any = None, ax: Any = None, n: int = 50, level: float = 0.95):
    """Predicted response across one predictor, the others held at typical values.

    The prediction is the fixed part (random effects 0: a typical group), on the response
    scale for GLMMs, with a ``level`` confidence band from the covariance of the fixed
    effects (computed on the link scale, then transformed). Other numeric variables are
    held at their mean over the rows used, factors at their reference level. A numeric ``x``
    is drawn as a line over ``n`` points spanning its range (with a rug of the observed
    values), a factor as one point with an interval per level. The numbers:
    :func:`~multilevel.report.plotdata.effect_data`.

    data: the data the model was fitted to (needed for the typical values; the fit does not
          keep the data frame).
    """
    d = effect_data(fit, x, data, n, level)
    eff, meta = d["effect"], d.meta
    mu, lo, hi = (eff[c].to_numpy(dtype=float) for c in ("estimate", "lower", "upper"))
    fig, ax = _one_ax(ax, (6.0, 4.2))
    if meta["is_factor"]:
        pos = np.arange(len(eff))
        cont = ax.errorbar(pos, mu, yerr=[mu - lo, hi - mu], fmt="o", ms=6, color=_C_PARTIAL, capsize=4,
                           elinewidth=1.5)
        cont.lines[0].set_gid("effect")
        ax.set_xticks(pos, [_short(str(v), 14) for v in eff["x"]], fontsize=9)
        ax.set_xlim(-0.5, len(eff) - 0.5)
    else:
        xs = eff["x"].to_numpy(dtype=float)
        ax.fill_between(xs, lo, hi, color=_C_PARTIAL, alpha=0.2, lw=0, gid="band",
                        label=f"{level:.0%} confidence band")
        ax.plot(xs, mu, color=_C_PARTIAL, lw=2.0, gid="effect", label="prediction")
        obs = d["rug"]["x"].to_numpy(dtype=float)
        ax.plot(obs, np.zeros_like(obs), "|", color="black", ms=8, alpha=0.4,
                transform=ax.get_xaxis_transform(), gid="rug")
        # room for the rug below the band, and not too many ticks in a small panel
        y0, y1 = ax.get_ylim()
        ax.set_ylim(y0 - 0.06 * (y1 - y0), y1)
        from matplotlib.ticker import MaxNLocator

        ax.xaxis.set_major_locator(MaxNLocator(nbins=6))
    ax.set_xlabel(x)
    response, fam = meta["response"], meta["family"]
    if fam == "gaussian":
        ylabel = f"predicted {response}"
    else:
        ylabel = "predicted probability" if fam == "binomial" else f"predicted mean of {_short(response, 30)}"
    ax.set_ylabel(ylabel)
    held = meta["held"]
    if not held:
        note = ""
    elif len(held) <= 3:
        note = " (" + ", ".join(f"{c} = {_fmt_value(v)}" for c, v in held.items()) + ")"
    else:
        note = f" ({len(held)} other variables at mean / reference level)"
    ax.set_title(f"Effect of {x}{note}", fontsize=10, y=_TITLE_Y)
    return fig


# --- diagnostics ----------------------------------------------------------------------------


def _qq(ax: Any, points: Any, line: Any, title: str, gid: str) -> None:
    """One normal QQ panel from its rows of ``qq`` and ``qqline`` (None: no values)."""
    if points is None or not len(points):
        ax.set_title(title + " (none)", fontsize=10, y=_TITLE_Y)
        return
    q, v = points["theoretical"].to_numpy(), points["sample"].to_numpy()
    many = v.size > 2000
    ax.scatter(q, v, s=4 if many else 10, color=_C_PARTIAL, alpha=0.4 if many else 0.7, linewidths=0,
               gid=gid, rasterized=many)
    ax.axline((line["x0"], line["y0"]), slope=line["slope"], color="#d62728", lw=1.0)
    ax.set_xlabel("normal quantiles", fontsize=9)
    ax.set_ylabel("sample quantiles", fontsize=9)
    ax.set_title(title, fontsize=10, y=_TITLE_Y)
    ax.tick_params(labelsize=8)


def _binned_panel(a: Any, binned: Any) -> None:
    """Gelman and Hill's binned residual plot: the mean residual of each bin of fitted
    probabilities, inside grey ±2 SE lines."""
    b = binned.sort_values("fitted")
    x = b["fitted"].to_numpy()
    a.plot(x, b["upper"].to_numpy(), color="#999999", lw=1.0, gid="binned:upper")
    a.plot(x, b["lower"].to_numpy(), color="#999999", lw=1.0, gid="binned:lower")
    a.axhline(0.0, color="black", lw=0.8, ls=":")
    outside = ((b["residual"] > b["upper"]) | (b["residual"] < b["lower"])).to_numpy()
    a.scatter(x[~outside], b["residual"].to_numpy()[~outside], s=14, color=_C_PARTIAL, linewidths=0,
              gid="binned", zorder=3)
    if outside.any():
        a.scatter(x[outside], b["residual"].to_numpy()[outside], s=16, color="#d62728", linewidths=0,
                  gid="binned:outside", zorder=3)
    a.set_xlabel("expected probability (bin mean)", fontsize=9)
    a.set_ylabel("average residual", fontsize=9)
    share = f"{int(outside.sum())} of {len(b)} bins outside ±2 SE"
    a.set_title(f"Binned residuals ({share})", fontsize=10, y=_TITLE_Y)
    a.tick_params(labelsize=8)


def plot_diagnostics(fit: AnyFit, *, axes: Any = None, ncols: int | None = None):
    """Residuals against fitted values, a normal QQ plot of the residuals, and a normal QQ
    plot of the conditional modes of each random-effect term (one panel each).

    Linear mixed models and ``lm`` fits use the response residuals (an lm has no
    random-effect panels); binomial GLMMs show Gelman and Hill's binned residual plot
    (mean residual per bin of fitted probabilities with ±2 SE lines, bins outside in red)
    in place of the residual scatter and its QQ plot; other GLMMs the Pearson residuals.
    The red line of the residual plot follows the mean residual in bins of fitted values.
    The numbers: :func:`~multilevel.report.plotdata.diagnostics_data`.
    """
    d = diagnostics_data(fit)
    meta = d.meta
    kind = meta["residual_type"]
    gauss = kind == "response"
    rlabel = "residuals" if gauss else "Pearson residuals"
    panels = meta["panels"]
    k = 1 + len(panels)
    if ncols is None:
        ncols = 2 if k in (2, 4) else 3
    fig, axs = _grid(k, ncols, axes, (2.75, 2.3), margins=GRID_MARGINS)
    a = axs[0]
    if kind == "binned":
        _binned_panel(a, d["binned"])
    else:
        res = d["residuals"]
        fv = res["fitted"].to_numpy()
        many = fv.size > 2000
        a.scatter(fv, res["residual"].to_numpy(), s=4 if many else 10, color=_C_PARTIAL,
                  alpha=0.3 if many else 0.6, linewidths=0, gid="residuals", rasterized=many)
        a.axhline(0.0, color="black", lw=0.8, ls=":")
        trend = d["trend"]
        if len(trend):
            a.plot(trend["fitted"].to_numpy(), trend["residual"].to_numpy(), color="#d62728", lw=1.2, gid="trend")
        a.set_xlabel("fitted values" + ("" if gauss else " (response scale)"), fontsize=9)
        a.set_ylabel(rlabel, fontsize=9)
        a.set_title(f"{rlabel.capitalize()} vs fitted", fontsize=10, y=_TITLE_Y)
        a.tick_params(labelsize=8)
    qq = _by(d["qq"], "panel")
    lines = {int(r["panel"]): r for _, r in d["qqline"].iterrows()}
    for a, p in zip(axs[1:], panels):
        i, g, t = p["panel"], p["grpvar"], p["term"]
        if g is None:
            title, gid = f"Normal QQ: {rlabel}", "qq:residuals"
        else:
            title, gid = f"Normal QQ: {_short(g, 14)} {_short(t, 14)}", f"qq:{g}:{t}"
        _qq(a, qq.get(i), lines.get(i), title, gid)
    if axes is None:
        fig.suptitle(f"Diagnostics: {_short(meta['formula'], 80)}", fontsize=11)
    return fig


# --- profiles -------------------------------------------------------------------------------


def plot_profile(fit: AnyFit, *, axes: Any = None, ncols: int = 3, level: float = 0.95, profile: Any = None,
                 limits: str = "exact"):
    """Profile plots: ζ against each parameter (lme4's ``xyplot(profile(fit))``) for the
    standard deviations of the random effects and the residual SD.

    ζ is the signed square root of the increase in the ML deviance (:func:`profile_sd`); a
    quadratic deviance would give a straight line. The dotted lines are ζ = ±z for
    ``level``: where the curve crosses them are the profile confidence limits, marked with
    short vertical ticks from :func:`multilevel.inference.confint`'s profile when available
    (its intervals also cover correlations and fixed effects, which are not traced here).
    ``profile=``: curves computed elsewhere, {name: (values, zeta)} or {name: DataFrame(value,
    zeta)}. ``limits="curve"``: the ticks where the traced curves cross ±z instead (no second
    profiling). The numbers: :func:`~multilevel.report.plotdata.profile_data`.
    """
    d = profile_data(fit, level, profile, limits)
    meta = d.meta
    names, z = meta["parameters"], meta["z"]
    curves = _by(d["curves"], "parameter")
    limits = {r["parameter"]: (r["lower"], r["upper"]) for _, r in d["limits"].iterrows()}
    fig, axs = _grid(len(names), ncols, axes, (2.6, 2.1), sharey=True, margins=(0.55, 0.15, 0.6, 0.45, 0.2, 0.7))
    for a, nm in zip(axs, names):
        c = curves[nm]
        a.plot(c["value"].to_numpy(), c["zeta"].to_numpy(), "-", color=_C_PARTIAL, lw=1.6, marker="o", ms=3,
               gid=f"profile:{nm}")
        for h in (-z, z):
            a.axhline(h, color="#999999", lw=0.8, ls=":")
        a.axhline(0.0, color="#cccccc", lw=0.6)
        if nm in limits:
            lo, hi = limits[nm]
            for v, h in ((lo, -z), (hi, z)):
                # a lower limit of 0 is the boundary of an SD, not a crossing: no tick there
                if np.isfinite(v) and (v > 0 or h > 0):
                    a.plot([v, v], [h - 0.35, h + 0.35], color="#d62728", lw=1.4, gid=f"limit:{nm}")
        a.set_xlabel(_short(nm, 32), fontsize=9)
        a.tick_params(labelsize=8)
        if a.get_subplotspec() is None or a.get_subplotspec().is_first_col():
            a.set_ylabel("ζ", fontsize=10)
    if axes is None:
        fig.suptitle(f"Profile zeta (ML deviance; {level:.0%} limits dotted)", fontsize=11)
    return fig
