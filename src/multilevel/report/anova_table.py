"""R's printout of an analysis-of-deviance table: ``print.anova`` as lme4's ``anova(m0, m1)``
shows it.

    refitting model(s) with ML (instead of REML)
    Data: sleepstudy
    Models:
    m0: Reaction ~ Days + (1 | Subject)
    m1: Reaction ~ Days + (Days | Subject)
       npar    AIC    BIC  logLik deviance  Chisq Df Pr(>Chisq)
    m0    4 1802.1 1814.8 -897.04   1794.1
    m1    6 1763.9 1783.1 -875.97   1751.9 42.139  2  7.072e-10 ***
    ---
    Signif. codes:  0 '***' 0.001 '**' 0.01 '*' 0.05 '.' 0.1 ' ' 1

R's rules (``stats:::print.anova`` calling ``printCoefmat`` with ``digits = 5``): the
``Chisq`` (or ``F``, ``... value``) column is the test statistic, rounded to 4 decimals then
formatted to 5 significant digits; the p-value column goes through ``format.pval`` at 4
digits and gets stars; every other column but the ``Df`` ones is first ``zapsmall``-ed and
each column is formatted on its own to 5 significant digits; missing values print blank. The
line ``refitting model(s) ...`` is lme4's message, printed first; ``Data:`` only when the
data's name is known (``fit.data_name``).

>>> import pandas as pd
>>> t = pd.DataFrame({"npar": [4, 6], "Chisq": [None, 42.1393], "Df": [None, 2],
...                   "Pr(>Chisq)": [None, 7.07e-10]}, index=["m0", "m1"])
>>> print("\\n".join(anova_lines(t)))
   npar  Chisq Df Pr(>Chisq)
m0    4
m1    6 42.139  2   7.07e-10 ***
---
Signif. codes:  0 '***' 0.001 '**' 0.01 '*' 0.05 '.' 0.1 ' ' 1
"""
from __future__ import annotations

import math
import re
from html import escape
from typing import Any

import pandas as pd

from multilevel.report.html import _STYLE, table_html
from multilevel.report.rformat import (
    SIGNIF_LEGEND,
    _r_round,
    char_matrix_lines,
    format_pval,
    format_real,
    stars_of,
    zapsmall,
)

__all__ = ["anova_lines", "anova_text", "anova_html", "anova_cells"]

#: ``max(getOption("digits") - 2, 3)`` in ``print.anova``
DIGITS = 5


def _value(v: Any) -> float | None:
    if v is None:
        return None
    try:
        x = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(x) else x


def anova_cells(table: pd.DataFrame, digits: int = DIGITS) -> tuple[list[str], list[list[str]], bool]:
    """(column names, formatted cells, whether stars were added) of ``print.anova``."""
    cols = [str(c) for c in table.columns]
    nc = len(cols)
    has_p = nc > 0 and re.match(r"^(P|Pr)\(", cols[-1]) is not None
    tst = [j for j, c in enumerate(cols) if c[1:7] == " value" or c in ("F", "Cp", "Chisq")]
    dfs = [j for j, c in enumerate(cols) if c.endswith("Df")]
    data = [[_value(v) for v in table[c].tolist()] for c in table.columns]
    nr = len(table)
    cells = [["" for _ in range(nc)] for _ in range(nr)]
    dig_tst = max(1, min(5, digits - 1))
    for j in range(nc):
        if has_p and j == nc - 1:
            continue
        col = data[j]
        present = [v for v in col if v is not None]
        if j in tst:
            txt = format_real([_r_round(v, dig_tst) if v is not None else None for v in col], digits=digits)
        else:
            if j not in dfs and present:  # zap.ind: every column but the test statistic and Df
                zapped = iter(zapsmall(present, digits))
                col = [next(zapped) if v is not None else None for v in col]
            txt = format_real(col, digits=digits)
        for i in range(nr):
            cells[i][j] = "" if col[i] is None else txt[i]
    stars = False
    if has_p:
        pv = data[-1]
        ok = [i for i in range(nr) if pv[i] is not None]
        if ok:
            ptxt = format_pval([pv[i] for i in ok], digits=dig_tst)
            for i, s in zip(ok, ptxt):
                cells[i][nc - 1] = s
            stars = any(pv[i] < 0.1 for i in ok)
        if stars:
            cols = cols + [""]
            marks = [stars_of(p) if p is not None else "" for p in pv]
            w = max(len(m) for m in marks)
            for i in range(nr):
                cells[i].append(marks[i].ljust(w))
    return cols, cells, stars


def _heading(table: pd.DataFrame) -> list[str]:
    attrs = getattr(table, "attrs", {}) or {}
    out = []
    if attrs.get("note"):
        out.append(str(attrs["note"]))
    if attrs.get("data_name"):
        out.append(f"Data: {attrs['data_name']}")
    forms = attrs.get("formulas") or {}
    if forms:
        out.append("Models:")
        out.extend(f"{n}: {f}" for n, f in forms.items())
    return out


def anova_lines(table: pd.DataFrame, digits: int = DIGITS) -> list[str]:
    """The table as R prints it, as lines (heading, columns, signif. legend)."""
    cols, cells, stars = anova_cells(table, digits)
    rows = [str(r) for r in table.index]
    out = _heading(table) + char_matrix_lines(cells, cols, rows, right=True)
    if stars:
        out += ["---", SIGNIF_LEGEND]
    return out


def anova_text(table: pd.DataFrame, digits: int = DIGITS) -> str:
    """:func:`anova_lines` joined: what ``print(ml.anova(m0, m1))`` shows."""
    return "\n".join(anova_lines(table, digits))


def anova_html(table: pd.DataFrame, digits: int = DIGITS) -> str:
    """The table for notebooks: the heading, the R-formatted cells in a ``<table>``, the legend."""
    cols, cells, stars = anova_cells(table, digits)
    rows = [[str(r)] + c for r, c in zip(table.index, cells)]
    head = "".join(f"<div>{escape(h)}</div>" for h in _heading(table))
    legend = f'<div class="legend">{escape(SIGNIF_LEGEND)}</div>' if stars else ""
    return f'{_STYLE}<div class="ml-summary">{head}{table_html([""] + cols, rows)}{legend}</div>'
