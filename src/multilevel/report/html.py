"""HTML building blocks for Jupyter's ``_repr_html_``: tables, preformatted blocks, the style.

The summaries render themselves with these (``report.summary.summary_html``: the three tables
of random effects, fixed effects and their correlation as ``<table>`` elements, numbers
formatted by the same R rules as the console), so this module imports no summary.

>>> table_html(["a", "b"], [["x", "1"]]).startswith("<table>")
True
"""
from __future__ import annotations

from html import escape
from typing import TYPE_CHECKING, Sequence



if TYPE_CHECKING:
    pass

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








