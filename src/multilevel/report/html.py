"""A minimal HTML rendering of a fit's summary, for Jupyter's ``_repr_html_``.

Same content as the text summary (``report.summary``), with the three tables (random
effects, fixed effects, fixed-effects correlation) as ``<table>`` elements and the numbers
formatted by the same R rules, so the notebook view and the console view agree.

Example
-------
>>> from IPython.display import HTML      # doctest: +SKIP
>>> HTML(summary_html(fit))               # doctest: +SKIP
"""
from __future__ import annotations

from html import escape
from typing import TYPE_CHECKING, Sequence

import numpy as np

from multilevel.report.rformat import _r_round, coefmat_cells, format_real
from multilevel.report.summary import (
    COR_MAX,
    DIGITS,
    call_lines,
    coef_table,
    convergence_lines,
    criterion_lines,
    residual_lines,
    title,
)

if TYPE_CHECKING:
    from multilevel.results import AnyFit

__all__ = ["summary_html", "table_html"]

_STYLE = ("<style>.ml-summary table{border-collapse:collapse;margin:0.3em 0 0.8em 0}"
          ".ml-summary td,.ml-summary th{padding:0.1em 0.6em;text-align:right;font-family:monospace}"
          ".ml-summary th{border-bottom:1px solid #999}.ml-summary td.l,.ml-summary th.l{text-align:left}"
          ".ml-summary .warn{color:#a33}</style>")


def table_html(header: Sequence[str], rows: Sequence[Sequence[str]], left: Sequence[int] = (0,)) -> str:
    """A plain ``<table>``; columns whose index is in ``left`` are left-aligned."""
    def cell(tag: str, j: int, v: str) -> str:
        cls = ' class="l"' if j in left else ""
        return f"<{tag}{cls}>{escape(v.strip())}</{tag}>"

    head = "".join(cell("th", j, h) for j, h in enumerate(header))
    body = "".join("<tr>" + "".join(cell("td", j, v) for j, v in enumerate(r)) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _pre(lines: Sequence[str]) -> str:
    return "<pre>" + escape("\n".join(lines)) + "</pre>"


def _varcorr_table(fit: AnyFit) -> str:
    vc = fit.varcorr
    rows: list[list[str]] = []
    sds: list[float] = []
    for blk in vc:
        s = blk.sd.to_numpy()
        corr = blk.corr
        for i, t in enumerate(blk.terms):
            cors = format_real([_r_round(float(v), 2) for v in corr[i, :i]], digits=7, nsmall=2) if i else []
            rows.append([blk.block_name if i == 0 else "", t, "", "", " ".join(c.strip() for c in cors)])
            sds.append(float(s[i]))
    if vc.sigma is not None:
        rows.append(["Residual", "", "", "", ""])
        sds.append(float(vc.sigma))
    var_txt = format_real([s * s for s in sds], digits=DIGITS)
    sd_txt = format_real(sds, digits=DIGITS)
    for r, v, s in zip(rows, var_txt, sd_txt):
        r[2], r[3] = v, s
    return table_html(["Groups", "Name", "Variance", "Std.Dev.", "Corr"], rows, left=(0, 1, 4))


def _fixef_table(fit: AnyFit) -> str:
    tab = coef_table(fit)
    values = [[None if v != v else float(v) for v in row] for row in tab.to_numpy()]
    cols, cells, _ = coefmat_cells(list(tab.columns), values, digits=DIGITS, has_pvalue=tab.shape[1] == 4)
    rows = [[str(name)] + cells[i] for i, name in enumerate(tab.index)]
    return table_html([""] + cols, rows)


def _corr_table(fit: AnyFit) -> str:
    names = list(fit.fixef.index)
    p = len(names)
    if p <= 1 or p > COR_MAX:
        return ""
    v = fit.vcov.to_numpy()
    sd = np.sqrt(np.diag(v))
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = v / np.outer(sd, sd)
    txt = format_real([_r_round(float(x), 3) for x in corr.ravel()], digits=7, nsmall=3)
    rows = [[names[i]] + [txt[i * p + j] if j < i else "" for j in range(p - 1)] for i in range(1, p)]
    return "<b>Correlation of fixed effects</b>" + table_html([""] + names[:-1], rows)


def summary_html(fit: AnyFit) -> str:
    """The summary of ``fit`` as an HTML fragment."""
    parts = [_STYLE, '<div class="ml-summary">', f"<b>{escape(title(fit))}</b>", _pre(call_lines(fit)),
             _pre(criterion_lines(fit)), _pre(residual_lines(fit)),
             "<b>Random effects</b>", _varcorr_table(fit),
             "<div>" + escape(f"Number of obs: {fit.nobs}; groups: "
                              + "; ".join(f"{g}, {n}" for g, n in fit.ngroups.items())) + "</div>"]
    if len(fit.fixef):
        parts += ["<b>Fixed effects</b>", _fixef_table(fit), _corr_table(fit)]
    conv = convergence_lines(fit)
    if conv:
        parts.append('<ul class="warn">' + "".join(f"<li>{escape(m)}</li>" for m in conv) + "</ul>")
    parts.append("</div>")
    return "".join(parts)
