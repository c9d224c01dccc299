"""The summary of a linear model fit, laid out like R's ``print(summary(lm_fit))``.

    Call:
    lm(formula = Reaction ~ Days)

    Residuals:
         Min       1Q   Median       3Q      Max
    -110.848  -27.483    1.546   26.142  139.953

    Coefficients:
                Estimate Std. Error t value Pr(>|t|)
    (Intercept)  251.405      6.610  38.033  < 2e-16 ***
    Days          10.467      1.238   8.454 9.89e-15 ***
    ---
    Signif. codes:  0 '***' 0.001 '**' 0.01 '*' 0.05 '.' 0.1 ' ' 1

    Residual standard error: 47.71 on 178 degrees of freedom
    Multiple R-squared:  0.2865,	Adjusted R-squared:  0.2825
    F-statistic: 71.46 on 1 and 178 DF,  p-value: 9.894e-15

Numbers use R's formatting rules (``report.rformat``) at R's ``digits = 4``. Aliased
coefficients print as ``NA`` under "Coefficients: (k not defined because of singularities)".
With cluster-robust standard errors a line says so (type, clusters, df of the tests) and the
F statistic is the robust Wald test. Trailing blanks are dropped.

Example
-------
>>> import multilevel as ml
>>> s = ml.lm("Reaction ~ Days", ml.datasets.load("sleepstudy")).summary()
>>> print(str(s).splitlines()[-1])
F-statistic: 71.46 on 1 and 178 DF,  p-value: 9.894e-15
"""
from __future__ import annotations

import re

from functools import cached_property
from html import escape
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from multilevel.report.rformat import call_lines, coefmat_cells, coefmat_lines, format_num, format_pval, format_real, \
    named_vector_lines, zapsmall

if TYPE_CHECKING:
    from multilevel.results import AnyFit

__all__ = ["LmSummary", "lm_summary_lines", "lm_coef_table"]

DIGITS = 4  # max(3, getOption("digits") - 3)


def _formatc(x: float, digits: int = DIGITS) -> str:
    """R's ``formatC(x, digits = d)``: C's ``%.{d}g``."""
    return f"{x:.{digits}g}"


def _signif(x: float, digits: int) -> float:
    return float(f"{x:.{digits}g}") if np.isfinite(x) else x


def lm_coef_table(fit: AnyFit) -> pd.DataFrame:
    """Estimate, Std. Error, t value, Pr(>|t|) for every coefficient, NaN rows for aliased ones."""
    names = list(fit.coef().index)
    tab = pd.DataFrame({"Estimate": fit.fixef, "Std. Error": fit.se, "t value": fit.tvalues,
                        "Pr(>|t|)": fit.pvalues})
    return tab.reindex(names)


def _call_lines(fit: AnyFit) -> list[str]:
    args = [f"formula = {fit.formula}"]
    if getattr(fit, "data_name", None):
        args.append(f"data = {fit.data_name}")
    if fit.frame.weights is not None:
        args.append(f"weights = {fit.weights_name or '<array>'}")
    if fit.cluster is not None:
        args.append(f'cluster = "{fit.cluster}"')
    con = getattr(fit.frame, "contrasts_arg", None)
    if con:
        # R echoes the argument in the call: contrasts = list(recipe = "contr.helmert")
        def name(k: str) -> str:  # R backquotes non-syntactic names: `factor(Days)`
            return k if re.fullmatch(r"[A-Za-z.][A-Za-z0-9._]*", k) else f"`{k}`"

        items = [f'{name(k)} = "contr.{v}"' if isinstance(v, str) else f"{name(k)} = <matrix>"
                 for k, v in con.items()]
        args.append(f"contrasts = list({', '.join(items)})")
    return call_lines("lm", args)


def _residual_lines(fit: AnyFit) -> list[str]:
    w = fit.frame.weights
    r = fit.residuals(type="pearson").to_numpy()
    weighted = w is not None and float(np.ptp(w)) != 0.0
    head = ("Weighted " if weighted else "") + "Residuals:"
    rdf = fit.df_resid
    if rdf > 5:
        q = np.quantile(r, [0.0, 0.25, 0.5, 0.75, 1.0])  # R's default type 7
        txt = format_real(zapsmall(list(q), DIGITS + 1), digits=DIGITS)
        return [head] + named_vector_lines(txt, ["Min", "1Q", "Median", "3Q", "Max"])
    if rdf > 0:
        names = [str(int(i) + 1) for i in fit.frame.rows]  # R's row names of the data
        return [head] + named_vector_lines(format_real(list(r), digits=DIGITS), names)
    return [head, f"ALL {fit.rank} residuals are 0: no residual degrees of freedom!"]


def _coef_section(fit: AnyFit) -> tuple[list[str], pd.DataFrame]:
    tab = lm_coef_table(fit)
    if tab.shape[0] == 0:
        return ["No Coefficients"], tab
    k = len(fit.dropped_columns)
    head = f"Coefficients: ({k} not defined because of singularities)" if k else "Coefficients:"
    values = [[None if pd.isna(v) else float(v) for v in row] for row in tab.to_numpy()]
    return [head] + coefmat_lines(list(tab.index), list(tab.columns), values, digits=DIGITS,
                                  has_pvalue=True), tab


def _robust_line(fit: AnyFit) -> str | None:
    if fit.n_clusters is None:
        return None
    return (f"Standard errors: cluster-robust (CR1, Stata's small-sample correction) by "
            f"'{fit.cluster}', {fit.n_clusters} clusters; t tests on {fit.df_test} df")


def _fit_lines(fit: AnyFit) -> list[str]:
    sigma = format_num(_signif(fit.sigma, DIGITS))
    out = [f"Residual standard error: {sigma} on {fit.df_resid} degrees of freedom"]
    nd = fit.frame.n_dropped
    if nd:
        out.append(f"  ({nd} observation{'s' if nd != 1 else ''} deleted due to missingness)")
    fs = fit.fstatistic
    if fs is not None:
        p = format_pval([fs["p"]], digits=DIGITS)[0]
        out.append(f"Multiple R-squared:  {_formatc(fit.r2)},\tAdjusted R-squared:  "
                   f"{_formatc(fit.adj_r2)}")
        label = "F-statistic" if fit.n_clusters is None else "Robust F (Wald)"
        out.append(f"{label}: {_formatc(fs['value'])} on {format_num(fs['numdf'])} and "
                   f"{format_num(fs['dendf'])} DF,  p-value: {p}")
    return out


def lm_summary_lines(fit: AnyFit) -> list[str]:
    """The whole summary as a list of lines (see the module docstring)."""
    lines = ["", "Call:", *_call_lines(fit), ""]
    lines += _residual_lines(fit)
    lines.append("")
    coef_lines, _ = _coef_section(fit)
    lines += coef_lines
    robust = _robust_line(fit)
    if robust:
        lines += ["", robust]
    lines.append("")
    lines += _fit_lines(fit)
    # shown elsewhere in R's layout: aliased coefficients in the table head, dropped rows in
    # the "(k observations deleted due to missingness)" line
    other = [m for m in fit.warnings if getattr(m, "code", None) not in ("rank_deficient", "rows_dropped")]
    if other:
        lines += [""] + other
    # R starts with an empty line; a printed object here should not
    return lines[1:]


class LmSummary:
    """``str()`` is R's ``summary.lm`` layout; ``coefficients`` the table as a DataFrame
    (NaN rows for aliased coefficients); ``_repr_html_`` for notebooks."""

    def __init__(self, fit: AnyFit):
        self.fit = fit

    @cached_property
    def coefficients(self) -> pd.DataFrame:
        return lm_coef_table(self.fit)

    @cached_property
    def text(self) -> str:
        return "\n".join(lm_summary_lines(self.fit))

    def __str__(self) -> str:
        return self.text

    def __repr__(self) -> str:
        return self.text

    def _repr_html_(self) -> str:
        from multilevel.report.html import _STYLE, table_html

        fit = self.fit
        tab = self.coefficients
        parts = [_STYLE, '<div class="ml-summary">', "<b>Linear model fit by least squares</b>",
                 f"<pre>{escape(chr(10).join(_call_lines(fit)))}</pre>",
                 "<pre>" + escape("\n".join(_residual_lines(fit))) + "</pre>"]
        if tab.shape[0]:
            values = [[None if pd.isna(v) else float(v) for v in row] for row in tab.to_numpy()]
            cols, cells, legend = coefmat_cells(list(tab.columns), values, digits=DIGITS,
                                                has_pvalue=True)
            rows = [[str(nm)] + cells[i] for i, nm in enumerate(tab.index)]
            parts += [f"<b>{escape(_coef_section(fit)[0][0])}</b>", table_html([""] + cols, rows)]
            if legend:
                parts.append(f"<div>{escape(legend[-1])}</div>")
        robust = _robust_line(fit)
        if robust:
            parts.append(f"<div>{escape(robust)}</div>")
        parts.append("<pre>" + escape("\n".join(_fit_lines(fit))) + "</pre>")
        parts.append("</div>")
        return "".join(parts)
