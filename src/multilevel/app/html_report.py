"""One self-contained HTML report of one or several multilevel models fitted to one data set.

``build_report(formulas, data)`` fits every formula and returns a single HTML document with:

1. the structure of the data (``multilevel.toolkit.describe``: groups, sizes, outcome);
2. when the first formula has one grouping factor, the pooling comparison
   (``multilevel.toolkit.pooling``: complete / no / partial pooling, shrinkage plots and the table);
3. for each model its summary (lme4's layout), caterpillar plots of the random effects,
   fitted lines, effect plots, diagnostics and profile plots;
4. with several formulas, the side-by-side table (``multilevel.compare``), likelihood-ratio
   tests (``multilevel.anova``) and a coefficient plot of all models.

The file needs nothing else: images are PNGs embedded as base64 ``data:`` URIs, the styles
are inline, there is no JavaScript and no font, script or stylesheet is fetched, so it opens
offline and can be mailed or archived as it is. A section whose tool is missing or fails
shows a visible note instead of breaking the report.

Progress: long work prints one status line on stderr when stderr is a terminal
(``progress=None``); ``progress=False`` is silent, ``True`` always prints, and a callable gets
``(step, total, message)``.

Example
-------
>>> from multilevel.app.html_report import build_report
>>> html = build_report(["Reaction ~ Days + (Days | Subject)"],
...                     ml.datasets.load("sleepstudy"), data_name="sleepstudy")  # doctest: +SKIP
>>> open("report.html", "w").write(html)                                     # doctest: +SKIP

From the command line: ``multilevel report "Reaction ~ Days + (Days | Subject)" --data
sleepstudy -o report.html``.
"""
from __future__ import annotations

import base64
import contextvars
import datetime as _dt
import io
import math
import sys
import time
import traceback
import warnings
from collections.abc import Callable, Mapping, Sequence
from html import escape
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from multilevel.results import AnyFit

__all__ = ["build_report", "write_report", "model_names"]

#: the fitted-lines plot of a model shows at most this many groups
FITTED_LINES_MAX = 30
#: profile plots are skipped above these sizes (each profile point re-optimises the model)
PROFILE_MAX_NOBS = 20_000
PROFILE_MAX_THETA = 6

_CSS = """
:root{--fg:#1d2430;--muted:#5b6573;--line:#d9dee5;--accent:#1f77b4;--bg:#ffffff;--soft:#f5f7fa}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--fg);
 font:15px/1.5 -apple-system,BlinkMacSystemFont,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif}
main{max-width:1120px;margin:0 auto;padding:24px 28px 60px}
h1{font-size:1.7em;margin:0.2em 0 0.1em}
h2{font-size:1.3em;margin:2em 0 0.6em;padding-bottom:0.25em;border-bottom:2px solid var(--line)}
h3{font-size:1.08em;margin:1.6em 0 0.5em}
.sub{color:var(--muted);margin:0 0 1em}
nav.toc{background:var(--soft);border:1px solid var(--line);border-radius:6px;padding:10px 18px;margin:16px 0}
nav.toc ol{margin:0.3em 0;padding-left:1.4em}
nav.toc a{color:var(--accent);text-decoration:none}
code,pre,.mono{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,"Liberation Mono",monospace;font-size:0.92em}
pre{background:var(--soft);border:1px solid var(--line);border-radius:4px;padding:8px 10px;overflow-x:auto}
figure{margin:14px 0 22px;text-align:center}
figure img{max-width:100%;height:auto;border:1px solid var(--line);border-radius:4px;background:#fff}
figcaption{color:var(--muted);font-size:0.9em;margin-top:4px}
.note{background:#fff8e6;border-left:4px solid #e0a800;padding:6px 12px;margin:10px 0;color:#5c4400}
.error{background:#fdecec;border-left:4px solid #c62828;padding:6px 12px;margin:10px 0;color:#7f1d1d}
.box{overflow-x:auto}
.box table,table.ml{border-collapse:collapse;border:0;margin:6px 0 14px;font-size:0.9em}
.box table th,.box table td{border:0;border-bottom:1px solid var(--line);padding:3px 9px}
table.ml th,table.ml td{padding:3px 9px;text-align:right;border-bottom:1px solid var(--line);white-space:nowrap}
table.ml th{background:var(--soft);font-weight:600}
table.ml td.l,table.ml th.l{text-align:left}
details{margin:8px 0 16px}
summary{cursor:pointer;color:var(--accent)}
footer{margin-top:48px;color:var(--muted);font-size:0.85em;border-top:1px solid var(--line);padding-top:8px}
"""


# --- progress -------------------------------------------------------------------------------


class _Progress:
    """Status line on stderr (a terminal only, by default) or calls to a user callback."""

    def __init__(self, progress: Any, total: int):
        self.total = max(total, 1)
        self.step_no = 0
        self.t0 = time.perf_counter()
        self.callback: Callable[[int, int, str], Any] | None = None
        if callable(progress):
            self.callback, self.tty = progress, False
        elif progress is None:
            self.tty = _isatty(sys.stderr)
        else:
            self.tty = bool(progress)

    def step(self, message: str) -> None:
        self.step_no = min(self.step_no + 1, self.total)
        if self.callback is not None:
            self.callback(self.step_no, self.total, message)
        elif self.tty:
            width = 100
            text = f"multilevel report [{self.step_no}/{self.total}] {message}"
            sys.stderr.write("\r\033[K" + (text if len(text) <= width else text[: width - 1] + "…"))
            sys.stderr.flush()

    def done(self) -> None:
        if self.callback is None and self.tty:
            sys.stderr.write(f"\r\033[Kmultilevel report: done in {time.perf_counter() - self.t0:.1f}s\n")
            sys.stderr.flush()


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


# --- HTML pieces ----------------------------------------------------------------------------


#: the figures of the report being built: drawn together once the page is laid out
#: (multilevel.app.figures: two processes where there is a spare core)
_BATCH: contextvars.ContextVar[Any] = contextvars.ContextVar("multilevel_report_figures", default=None)


def _figure_html(fig: Any, caption: str, dpi: int = 100) -> str:
    """A matplotlib figure as an embedded PNG (base64 data URI) with a caption; inside
    ``build_report`` a placeholder for the PNG, filled in when the batch is drawn."""
    batch = _BATCH.get()
    if batch is not None:
        data = batch.add(fig, dpi)
    else:
        from multilevel.report.plots import figure_png

        data = base64.b64encode(figure_png(fig, dpi)).decode("ascii")
    w, h = fig.get_size_inches()
    width = int(round(w * dpi))
    return (f'<figure><img src="data:image/png;base64,{data}" alt="{escape(caption)}" '
            f'width="{width}" height="{int(round(h * dpi))}">'
            f"<figcaption>{escape(caption)}</figcaption></figure>")


def _note(text: str) -> str:
    return f'<p class="note">{escape(text)}</p>'


def _error(what: str, exc: BaseException) -> str:
    msg = str(exc).strip().splitlines()
    first = msg[0] if msg else type(exc).__name__
    return f'<p class="error">{escape(what)}: {escape(type(exc).__name__)}: {escape(first)}</p>'


def _fmt_cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, (bool, np.bool_)):
        return str(bool(v))
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        x = float(v)
        if math.isnan(x):
            return ""
        if x.is_integer() and abs(x) < 1e15:
            return str(int(x))
        if x != 0 and (abs(x) < 1e-4 or abs(x) >= 1e6):
            return f"{x:.3e}"
        return f"{x:.4g}" if abs(x) < 1 else f"{x:.{max(0, 5 - len(str(int(abs(x)))))}f}"
    return str(v)


def frame_html(df: pd.DataFrame, index: bool = True, max_rows: int | None = None) -> str:
    """A data frame as a plain ``<table class="ml">`` with numbers at about 5 significant
    digits; text columns left-aligned."""
    d = df if max_rows is None else df.head(max_rows)
    cols = list(d.columns)
    left = [not pd.api.types.is_numeric_dtype(d[c]) for c in cols]
    cls = [' class="l"' if lf else "" for lf in left]
    head = ('<th class="l"></th>' if index else "") + "".join(
        f"<th{k}>{escape(str(c))}</th>" for c, k in zip(cols, cls))
    rows = []
    for idx, r in zip(d.index, d.itertuples(index=False)):
        cells = (f'<td class="l">{escape(str(idx))}</td>' if index else "") + "".join(
            f"<td{k}>{escape(_fmt_cell(v))}</td>" for v, k in zip(r, cls))
        rows.append(f"<tr>{cells}</tr>")
    more = "" if max_rows is None or len(df) <= max_rows else \
        f'<p class="sub">{len(df) - max_rows} more rows not shown.</p>'
    return f'<div class="box"><table class="ml"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table></div>{more}'


def _anchor(i: int, kind: str) -> str:
    return f"{kind}-{i}"


# --- what to plot ---------------------------------------------------------------------------


def _numeric_columns(df: pd.DataFrame) -> set[str]:
    return {c for c in df.columns if pd.api.types.is_numeric_dtype(df[c]) and not pd.api.types.is_bool_dtype(df[c])}


def _fixed_variables(fit: AnyFit, df: pd.DataFrame) -> list[str]:
    """Data columns of the fixed part (not offsets), in formula order."""
    spec = getattr(fit.frame, "spec", None)
    cols = list(spec.fixed.columns()) if spec is not None else []
    off = getattr(spec, "offset_column", None)
    offsets = {v.column for v in getattr(spec.fixed, "offsets", [])} if spec is not None else set()
    return [c for c in cols if c in df.columns and c != off and c not in offsets]


def _slope_variable(fit: AnyFit, df: pd.DataFrame) -> str | None:
    """The predictor for the fitted-lines plot: a numeric random slope, else the first
    numeric variable of the fixed part that varies within the groups (a group-level
    variable would draw each group as a vertical stroke), else None."""
    num = _numeric_columns(df)
    for rt in fit.frame.reterms:
        for t in rt.terms:
            if t in num:
                return t
    rt = fit.frame.reterms[0]
    from multilevel.report.plots import _used_rows

    try:
        used = _used_rows(fit, df)
    except ValueError:
        return None
    for c in _fixed_variables(fit, df):
        if c in num:
            within = pd.Series(used[c].to_numpy(dtype=float)).groupby(np.asarray(rt.refs)).std()
            if (within.fillna(0) > 0).mean() >= 0.5:
                return c
    return None


def _grouping_columns(fit: AnyFit, df: pd.DataFrame) -> tuple[list[str], bool]:
    """(grouping columns outermost first, nested?) of a fit, for ``describe``.

    ``(1 | batch/cask)`` gives the groups ``cask:batch`` and ``batch``: nested, batch outside.
    Separate factors such as ``(1 | plate) + (1 | sample)`` are described as crossed
    (each on its own), fewest levels first.
    """
    groups = list(dict.fromkeys(rt.group for rt in fit.frame.reterms))
    inter = [g.split(":") for g in groups if ":" in g]
    if inter:
        longest = max(inter, key=len)
        order = [p for p in reversed(longest) if p in df.columns]
        if order:
            return order, True
    cols = [g for g in groups if g in df.columns]
    cols.sort(key=lambda c: df[c].nunique())
    return cols, False


def _is_lmm(fit: AnyFit) -> bool:
    from multilevel.results import LmmFit

    return isinstance(fit, LmmFit) and fit.getme("problem") is not None


# --- the report -----------------------------------------------------------------------------


def _fit_one(formula: str, df: pd.DataFrame, reml: bool, family: str | None, data_name: str | None):
    import multilevel

    with warnings.catch_warnings():
        # the summaries show every warning of a fit
        from multilevel.errors import MultilevelWarning

        warnings.simplefilter("ignore", MultilevelWarning)
        if family in (None, "gaussian"):
            fit = multilevel.lmer(formula, df, reml=reml)
        else:
            glmer = getattr(multilevel, "glmer", None)
            if glmer is None:
                raise RuntimeError("multilevel.glmer is not available in this version")
            fit = glmer(formula, df, family=family)
    if data_name and hasattr(fit, "data_name"):
        fit.data_name = data_name
    return fit


def _tool(name: str):
    """A public function of multilevel (or None if this version does not have it): the
    top-level name, else the one in ``multilevel.inference``."""
    import importlib
    import types

    import multilevel

    try:
        fn = getattr(multilevel, name)
    except AttributeError:
        fn = None
    if isinstance(fn, types.ModuleType):  # e.g. the module multilevel.toolkit.pooling
        fn = getattr(fn, name, None)
    if fn is None:
        try:
            fn = getattr(importlib.import_module("multilevel.inference"), name, None)
        except ImportError:
            fn = None
    return fn if callable(fn) else None


def _call_section(what: str, fn: Callable[[], str]) -> str:
    """Run one part of the report; a failure becomes a visible error note."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return fn()
    except NotImplementedError:
        return _note(f"{what}: not available in this version of multilevel.")
    except Exception as exc:  # a report shows what failed and carries on
        if _debug():
            traceback.print_exc()
        return _error(what, exc)


def _debug() -> bool:
    import os

    return bool(os.environ.get("MULTILEVEL_REPORT_DEBUG"))


def _html_of(obj: Any) -> str:
    if hasattr(obj, "_repr_html_"):
        out = obj._repr_html_()
        if out:
            return out
    if hasattr(obj, "to_html"):
        return obj.to_html()
    return f"<pre>{escape(str(obj))}</pre>"


def _describe_section(df: pd.DataFrame, fit: AnyFit, family: str | None = None) -> str:
    describe = _tool("describe")
    groups, nested = _grouping_columns(fit, df)
    outcome = fit.frame.response if fit.frame.response in df.columns else None
    parts = [f'<p>{len(df)} rows, {df.shape[1]} columns; the first model uses {fit.nobs} rows'
             f'{"" if fit.nobs == len(df) else " (rows with missing values dropped)"}.</p>']
    if describe is None:
        parts.append(_note("Data description skipped: multilevel.toolkit.describe is not available in this "
                           "version."))
        parts.append(frame_html(_column_overview(df), index=False))
        return "".join(parts)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # a binomial report: the outcome's ICC on the latent scale, as icc() of the fits;
            # otherwise describe decides (a binary outcome is binomial there too)
            fam = "binomial" if family == "binomial" and outcome is not None else None
            desc = describe(df, groups, outcome, nested=nested, family=fam) if len(groups) > 1 else \
                describe(df, groups, outcome, family=fam)
            parts.append('<div class="box">' + _html_of(desc) + "</div>")
    except Exception as exc:  # not implemented yet, or failed: the plain overview instead
        parts.append(_note("Data description (multilevel.toolkit.describe) not available in this version."
                           if isinstance(exc, NotImplementedError) else
                           f"multilevel.toolkit.describe failed ({type(exc).__name__}: {exc}); a plain overview instead."))
        parts.append(frame_html(_column_overview(df), index=False))
    return "".join(parts)


def _column_overview(df: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for c in df.columns:
        s = df[c]
        num = pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s)
        rows.append({"column": str(c), "type": "numeric" if num else "categorical",
                     "missing": int(s.isna().sum()), "distinct": int(s.nunique()),
                     "mean": float(s.mean()) if num else np.nan,
                     "sd": float(s.std()) if num else np.nan})
    return pd.DataFrame(rows)


def _pooling_section(formula: str, df: pd.DataFrame, dpi: int) -> str:
    from multilevel.report import plots

    pooling = _tool("pooling")
    if pooling is None:
        return _note("Pooling comparison skipped: multilevel.toolkit.pooling is not available in this version.")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        p = pooling(formula, df)
    g = p.group_name
    parts = [f"<p>Each {escape(g)} estimated on its own (<b>no pooling</b>), all of them "
             f"together ignoring the grouping (<b>complete pooling</b>), and the multilevel model "
             f"(<b>partial pooling</b>): its estimates are pulled from the group's own towards the "
             f"common one, the more so the smaller the group.</p>"]
    parts.append(_call_section("pooling plot", lambda: _figure_html(
        plots.plot_pooling(p), f"Complete, no and partial pooling for 8 levels of {g}, from the smallest to the largest",
        dpi)))
    for c in list(p.coef_names)[:3]:
        parts.append(_call_section(f"shrinkage plot of {c}", lambda c=c: _figure_html(
            plots.plot_shrinkage(p, coef=c), f"Shrinkage of {c}: own estimate → partial pooling", dpi)))
    tab = p.table.sort_values("n", kind="stable") if "n" in p.table.columns else p.table
    parts.append(f"<details><summary>Pooling table ({len(tab)} levels of {escape(g)}, smallest first)</summary>"
                 f"{frame_html(tab, index=False)}</details>")
    return "".join(parts)


def _model_section(i: int, fit: AnyFit, df: pd.DataFrame, dpi: int, max_effects: int,
                   prog: _Progress, name: str) -> str:
    from multilevel.report import plots

    parts = [f'<h2 id="{_anchor(i, "model")}">{escape(_heading(name, fit))}</h2>',
             '<div class="box">', _call_section("summary", lambda: _html_of(fit.summary())), "</div>"]
    prog.step(f"plots of model {i}")
    for g in dict.fromkeys(rt.group for rt in fit.frame.reterms):
        parts.append(_call_section(f"caterpillar plot of {g}", lambda g=g: _figure_html(
            plots.plot_caterpillar(fit, group=g),
            f"Random effects of {g}: conditional modes with 95% intervals from their conditional SDs", dpi)))
    x = _slope_variable(fit, df)
    if x is not None:
        g = fit.frame.reterms[0].group
        n_levels = fit.frame.reterms[0].n_levels
        # at most FITTED_LINES_MAX groups, spread from the smallest to the largest: more are a
        # tangle of lines and thousands of points that take long to draw and show no more
        shown = min(n_levels, FITTED_LINES_MAX)
        which = f"one line per {g}" if shown == n_levels else \
            f"{shown} of {n_levels} {g}s, from the smallest to the largest"
        parts.append(_call_section("fitted lines", lambda: _figure_html(
            plots.plot_fitted_lines(fit, x, data=df, groups=shown if shown < n_levels else None),
            f"Fitted lines against {x}, {which}; other predictors at their mean / reference level", dpi)))
    variables = _fixed_variables(fit, df)
    if variables:
        shown = variables[:max_effects]
        parts.append(_call_section("effect plots", lambda: _figure_html(
            _effects_figure(fit, df, shown),
            "Predicted response across each predictor, the others at their mean / reference level "
            "(fixed effects, 95% confidence band)", dpi)))
        if len(variables) > max_effects:
            parts.append(_note(f"Effect plots shown for the first {max_effects} of {len(variables)} predictors."))
    parts.append(_call_section("diagnostics", lambda: _figure_html(
        plots.plot_diagnostics(fit), "Residuals against fitted values; normal QQ plots of the residuals "
        "and of the random effects", dpi)))
    if _is_lmm(fit):
        if fit.nobs > PROFILE_MAX_NOBS or len(fit.theta) > PROFILE_MAX_THETA:
            parts.append(_note("Profile plots skipped for a model of this size "
                               "(multilevel.report.plots.plot_profile(fit) draws them)."))
        else:
            prog.step(f"profiles of model {i}")
            parts.append(_call_section("profile", lambda: _figure_html(
                plots.plot_profile(fit, limits="curve"),
                "Likelihood profiles (ζ) of the parameters (ML, as lme4's profile); "
                "dotted lines at ±1.96 mark the 95% profile limits", dpi)))
    return "".join(parts)


def _heading(name: str, fit: AnyFit) -> str:
    """'Model 1: y ~ x + (1 | g)', or the name alone when it is the formula."""
    return name if name == fit.formula else f"{name}: {fit.formula}"


def model_names(formulas: Sequence[str], names: Sequence[str] | None) -> list[str]:
    """The models' names in the report: ``names`` (one per formula, distinct, not empty),
    else "Model 1", "Model 2", ...

    >>> model_names(["y ~ 1 + (1 | g)", "y ~ x + (1 | g)"], None)
    ['Model 1', 'Model 2']
    """
    from multilevel.errors import DataError

    if names is None:
        return [f"Model {i}" for i in range(1, len(formulas) + 1)]
    if isinstance(names, str):
        names = [names]
    names = [str(n).strip() for n in names]
    if len(names) != len(formulas):
        raise DataError(f"names: {len(names)} name(s) for {len(formulas)} model(s); give one name per model")
    if any(not n for n in names):
        raise DataError("names: a model's name is empty")
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise DataError(f"names: the name {dup[0]!r} is given to more than one model")
    return names


def _effects_figure(fit: AnyFit, df: pd.DataFrame, variables: Sequence[str]):
    from multilevel.report import plots

    k = len(variables)
    ncols = min(3, k)
    fig, axs = plots._grid(k, ncols, None, (3.0, 2.3), margins=plots.GRID_MARGINS)
    for a, v in zip(axs, variables):
        plots.plot_effect(fit, v, data=df, ax=a)
        a.set_title(v, fontsize=10)
        a.tick_params(labelsize=8)
        a.xaxis.label.set_fontsize(9)
        a.yaxis.label.set_fontsize(9)
    return fig


def _comparison_section(fits: list[Any], names: list[str], dpi: int) -> str:
    from multilevel.report import plots

    parts = ['<p>Models: ' + "; ".join(f"<b>{escape(n)}</b> <code>{escape(f.formula)}</code>"
                                       for n, f in zip(names, fits)) + "</p>"]
    compare = _tool("compare")
    if compare is None:
        parts.append(_note("Side-by-side table skipped: multilevel.compare is not available in this version."))
    else:
        parts.append("<h3>Side by side</h3>")
        parts.append(_call_section("compare", lambda: '<div class="box">' + _compare_html(compare, fits, names)
                                   + "</div>"))
    anova = _tool("anova")
    parts.append("<h3>Likelihood-ratio tests</h3>")
    if anova is None:
        parts.append(_note("Likelihood-ratio tests skipped: multilevel.anova is not available in this version."))
    else:
        parts.append(_call_section("anova", lambda: _anova_html(anova, fits, names)))
    parts.append(_call_section("coefficient plot", lambda: _figure_html(
        plots.plot_coefficients(*fits, names=names), "Fixed effects of all models with 95% Wald intervals", dpi)))
    return "".join(parts)


def _compare_html(compare: Callable, fits: list[Any], names: list[str]) -> str:
    try:
        tab = compare(*fits, names=names)
    except TypeError:
        tab = compare(*fits)
    if hasattr(tab, "to_html"):
        return tab.to_html()
    return _html_of(tab)


def _anova_html(anova: Callable, fits: list[Any], names: list[str]) -> str:
    try:
        tab = anova(*fits, names=names)
    except TypeError:
        tab = anova(*fits)
    if isinstance(tab, pd.DataFrame):
        note = tab.attrs.get("note") if hasattr(tab, "attrs") else None
        return frame_html(tab) + (f'<p class="sub">{escape(str(note))}</p>' if note else "")
    return _html_of(tab)


def build_report(formulas: Sequence[str] | Mapping[str, str] | str, data: Any, data_name: str | None = None,
                 progress: Any = None, *, reml: bool = True, family: str | None = None,
                 title: str | None = None, max_effects: int = 6, dpi: int = 100,
                 names: Sequence[str] | None = None) -> str:
    """Fit each formula to ``data`` and return one self-contained HTML report (a string).

    formulas:    one lme4 formula, a list of them, or a dict {name: formula} (the first one
                 leads the data and pooling sections; several give a comparison section).
    names:       the models' names in headings, contents, tables and plots, one per formula
                 (default: the dict's keys, else "Model 1", "Model 2", ...).
    data:        pandas or polars data frame.
    data_name:   label of the data in the report and the summaries (``Data:`` line).
    progress:    None: a status line on stderr when it is a terminal; False: silent; True:
                 always; a callable: called as ``progress(step, total, message)``.
    reml:        REML (default) or ML for linear mixed models.
    family:      a GLMM family (``"binomial"``, ``"poisson"``): fit with ``multilevel.glmer``.
    max_effects: effect plots for at most this many predictors per model.
    dpi:         resolution of the embedded PNGs.

    Raises the fit's error (FormulaError, ColumnNotFoundError...) when a formula cannot be
    fitted; every later failure becomes a visible note in the report.
    """
    from multilevel.errors import DataError
    from multilevel.report.plots import _to_pandas

    if isinstance(formulas, str):
        formulas = [formulas]
    if isinstance(formulas, Mapping):
        if names is not None:
            raise DataError("names: the formulas are a dict {name: formula}; give the names there")
        names = [str(k) for k in formulas]
        formulas = list(formulas.values())
    formulas = list(formulas)
    if not formulas:
        raise DataError("formulas: the report needs at least one formula")
    names = model_names(formulas, names)
    df = _to_pandas(data)
    k = len(formulas)
    total = k + 1 + 1 + 2 * k + (1 if k > 1 else 0) + 2
    prog = _Progress(progress, total)
    from multilevel.app.figures import FigureBatch

    batch = FigureBatch()
    reset = _BATCH.set(batch)
    try:
        page = _build(formulas, df, data_name, prog, reml, family, title, max_effects, dpi, names)
        prog.step(f"drawing {len(batch.items)} figures")
        batch.render()
        return batch.fill(page, lambda i, png: base64.b64encode(png).decode("ascii"))
    finally:
        _BATCH.reset(reset)
        prog.done()


def _build(formulas: list[str], df: pd.DataFrame, data_name: str | None, prog: _Progress, reml: bool,
           family: str | None, title: str | None, max_effects: int, dpi: int, names: list[str]) -> str:
    import multilevel

    fits = []
    for i, f in enumerate(formulas, 1):
        prog.step(f"fitting model {i}: {f}")
        fits.append(_fit_one(f, df, reml, family, data_name))
    first = fits[0]
    toc: list[tuple[str, str]] = []
    body: list[str] = []

    prog.step("describing the data")
    toc.append(("data", "Data"))
    body.append('<h2 id="data">Data</h2>')
    body.append(_call_section("data description", lambda: _describe_section(df, first, family)))

    prog.step("pooling comparison")
    groups = list(dict.fromkeys(rt.group for rt in first.frame.reterms))
    toc.append(("pooling", "Pooling"))
    body.append('<h2 id="pooling">Complete, no and partial pooling</h2>')
    if family not in (None, "gaussian"):
        body.append(_note("The pooling comparison is made for linear mixed models; this report "
                          f"fits {family} GLMMs."))
    elif len(groups) == 1:
        body.append(_call_section("pooling", lambda: _pooling_section(formulas[0], df, dpi)))
    else:
        body.append(_note(f"The pooling comparison needs a model with one grouping factor; the first "
                          f"model has {len(groups)} ({', '.join(groups)})."))

    for i, (fit, name) in enumerate(zip(fits, names), 1):
        toc.append((_anchor(i, "model"), _heading(name, fit)))
        body.append(_model_section(i, fit, df, dpi, max_effects, prog, name))

    if len(fits) > 1:
        prog.step("comparing the models")
        toc.append(("comparison", "Model comparison"))
        body.append('<h2 id="comparison">Model comparison</h2>')
        body.append(_comparison_section(fits, names, dpi))

    prog.step("writing HTML")
    label = data_name or "data"
    heading = title or f"Multilevel models of {label}"
    when = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    toc_html = "<nav class=\"toc\"><b>Contents</b><ol>" + "".join(
        f'<li><a href="#{a}">{escape(t)}</a></li>' for a, t in toc) + "</ol></nav>"
    formulas_html = "<ol>" + "".join(
        f"<li>{'' if n == f else f'<b>{escape(n)}</b>: '}<code>{escape(f)}</code></li>"
        for n, f in zip(names, formulas)) + "</ol>"
    how = ("REML" if reml else "maximum likelihood") if family in (None, "gaussian") else \
        f"{family} GLMM (Laplace)"
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        # an empty icon: the browser does not go looking for /favicon.ico
        "<link rel=\"icon\" href=\"data:,\">"
        f"<title>{escape(heading)}</title><style>{_CSS}</style></head><body><main>"
        f"<h1>{escape(heading)}</h1>"
        f"<p class=\"sub\">{len(df)} rows · {len(formulas)} model{'s' if len(formulas) > 1 else ''} "
        f"({escape(how)}) · multilevel {escape(multilevel.__version__)} · {escape(when)}</p>"
        f"{formulas_html}{toc_html}{''.join(body)}"
        "<footer>Made by <code>multilevel</code>'s report builder. The file is self-contained: "
        "images are embedded, nothing is loaded from the network.</footer>"
        "</main></body></html>\n"
    )


def write_report(path: str, formulas: Sequence[str] | str, data: Any, **kwargs: Any) -> str:
    """``build_report`` written to ``path`` (UTF-8); returns the path."""
    html = build_report(formulas, data, **kwargs)
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(html)
    return path
