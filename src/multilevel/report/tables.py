"""Side-by-side tables of fitted models (``compare``); arm's compact ``display`` is
:mod:`multilevel.report.display` (re-exported here).

``compare(m0, m1, ...)`` builds a :class:`ModelTable`: one column per model; the fixed
effects (estimate with significance stars, standard error in parentheses below), the
random-effect standard deviations and correlations, the residual SD, the number of
observations and of groups, and the log-likelihood, AIC and BIC. It renders as plain text
(``str``), Markdown, HTML (also in notebooks) and LaTeX (booktabs).

Stars come from two-sided p values of ``coef_table(fit, ddf)`` (default: z tests, which
is what lme4's summary would suggest; pass ``ddf="satterthwaite"`` for t tests):
``*** p < 0.001, ** p < 0.01, * p < 0.05``.
"""
from __future__ import annotations

import html
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from multilevel.errors import MultilevelError
from multilevel.report.display import display  # arm's display(), kept importable from here
from multilevel.inference._common import is_glmm

if TYPE_CHECKING:
    from multilevel.results import AnyFit

__all__ = ["ModelTable", "compare", "display"]

STARS = ((0.001, "***"), (0.01, "**"), (0.05, "*"))
LEGEND = "*** p < 0.001; ** p < 0.01; * p < 0.05"


def _stars(p: float) -> str:
    if p is None or not np.isfinite(p):
        return ""
    for cut, s in STARS:
        if p < cut:
            return s
    return ""


@dataclass
class _Row:
    label: str
    cells: list[str]
    kind: str = "value"  # value | se | section


@dataclass
class ModelTable:
    """A table of several models. ``rows`` are (label, one cell per model, kind) with kind
    ``section`` (a heading), ``value`` or ``se`` (the standard-error line of a coefficient).
    Render with ``to_text()``, ``to_markdown()``, ``to_html()``, ``to_latex()``."""

    names: list[str]
    rows: list[_Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    # -- renderers -------------------------------------------------------------------------

    def to_text(self) -> str:
        body = [r for r in self.rows]
        w0 = max([len(r.label) for r in body] + [0])
        widths = [max([len(n)] + [len(r.cells[j]) for r in body if r.kind != "section"])
                  for j, n in enumerate(self.names)]
        total = w0 + sum(w + 2 for w in widths)
        line = "=" * total
        thin = "-" * total
        out = [line, " " * w0 + "".join(f"  {n:>{w}}" for n, w in zip(self.names, widths)), thin]
        first = True
        for r in body:
            if r.kind == "section":
                if not first:
                    out.append(thin)
                out.append(r.label)
            else:
                out.append(f"{r.label:<{w0}}" + "".join(f"  {c:>{w}}" for c, w in zip(r.cells, widths)))
            first = False
        out.append(line)
        out.extend(self.notes)
        return "\n".join(out)

    def to_markdown(self) -> str:
        """A pipe table (GitHub / pandoc Markdown); ``|`` and ``*`` in labels and cells are
        escaped so that a label such as ``SD (Intercept) | school`` stays in its cell."""
        md = _markdown_escape
        head = "| | " + " | ".join(md(n) for n in self.names) + " |"
        sep = "|:--|" + "|".join("--:" for _ in self.names) + "|"
        out = [head, sep]
        for r in self.rows:
            if r.kind == "section":
                out.append(f"| **{md(r.label)}** |" + " |" * len(self.names))
            else:
                out.append(f"| {md(r.label)} | " + " | ".join(md(c) for c in r.cells) + " |")
        if self.notes:
            out.append("")
            out.extend(md(n) for n in self.notes)
        return "\n".join(out)

    def to_html(self) -> str:
        e = html.escape
        out = ['<table class="multilevel-compare">', "<thead><tr><th></th>"
               + "".join(f"<th>{e(n)}</th>" for n in self.names) + "</tr></thead>", "<tbody>"]
        for r in self.rows:
            if r.kind == "section":
                out.append(f'<tr><td colspan="{len(self.names) + 1}"><b>{e(r.label)}</b></td></tr>')
            else:
                style = ' style="text-align:right"'
                out.append(f"<tr><td>{e(r.label)}</td>"
                           + "".join(f"<td{style}>{e(c)}</td>" for c in r.cells) + "</tr>")
        out.append("</tbody>")
        if self.notes:
            out.append(f'<tfoot><tr><td colspan="{len(self.names) + 1}">'
                       + "<br>".join(e(n) for n in self.notes) + "</td></tr></tfoot>")
        out.append("</table>")
        return "\n".join(out)

    def to_latex(self) -> str:
        tex = _latex_escape

        def cell(c: str) -> str:
            core = c.rstrip("*")
            stars = c[len(core):]
            return tex(core) + (f"$^{{{stars}}}$" if stars else "")

        k = len(self.names)
        out = [r"\begin{tabular}{l" + "r" * k + "}", r"\toprule",
               " & " + " & ".join(tex(n) for n in self.names) + r" \\", r"\midrule"]
        first = True
        for r in self.rows:
            if r.kind == "section":
                if not first:
                    out.append(r"\midrule")
                out.append(rf"\multicolumn{{{k + 1}}}{{l}}{{\textit{{{tex(r.label)}}}}} \\")
            else:
                out.append(tex(r.label) + " & " + " & ".join(cell(c) for c in r.cells) + r" \\")
            first = False
        out.append(r"\bottomrule")
        if self.notes:
            out.append(rf"\multicolumn{{{k + 1}}}{{l}}{{\footnotesize " + tex("; ".join(self.notes)) + r"} \\")
        out.append(r"\end{tabular}")
        return "\n".join(out)

    def to_frame(self) -> "pd.DataFrame":
        """The cells as a DataFrame of strings: one column per model, one row per line of the
        table (a coefficient's standard-error line is labelled ``"<name> (SE)"``; the section
        headings are the first level of the row index)."""
        import pandas as pd

        section, keys, data, prev = "", [], [], ""
        for r in self.rows:
            if r.kind == "section":
                section = r.label
                continue
            label = f"{prev} (SE)" if r.kind == "se" else r.label
            prev = r.label if r.kind == "value" else prev
            keys.append((section, label))
            data.append(list(r.cells))
        idx = pd.MultiIndex.from_tuples(keys, names=["section", "row"])
        return pd.DataFrame(data, index=idx, columns=list(self.names))

    def __str__(self) -> str:
        return self.to_text()

    def __repr__(self) -> str:
        return self.to_text()

    def _repr_html_(self) -> str:
        return self.to_html()


def _markdown_escape(s: str) -> str:
    """Backslash-escape the characters that end a Markdown table cell or start emphasis."""
    for ch in ("\\", "|", "*", "_"):
        s = s.replace(ch, "\\" + ch)
    return s


_LATEX_SPECIALS = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
                   "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\^{}",
                   "|": r"\textbar{}", "<": r"\textless{}", ">": r"\textgreater{}"}


def _latex_escape(s: str) -> str:
    """LaTeX text for ``s``: every special character of LaTeX's text mode escaped (``|``,
    ``<`` and ``>`` print as other glyphs in the default font encoding)."""
    return "".join(_LATEX_SPECIALS.get(ch, ch) for ch in s)


def _fmt(x: float, digits: int) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return ""
    return f"{x:,.{digits}f}".replace(",", "")


def compare(*fits: AnyFit, names: Sequence[str] | None = None, digits: int = 3,
            ddf: str | None = None, stars: bool = True) -> ModelTable:
    """A side-by-side table of fitted models.

    Parameters
    ----------
    *fits : fitted models (``lmer``, ``glmer``); a single list is accepted too.
    names : column headings (default ``Model 1``, ``Model 2``, ...).
    digits : decimals of estimates, SEs and variance components (fit statistics get 1).
    ddf : how the p values behind the stars are computed (see ``coef_table``; default z).
    stars : show significance stars (and their legend).

    >>> import multilevel as ml
    >>> d = ml.datasets.load("sleepstudy")
    >>> t = ml.compare(ml.lmer("Reaction ~ Days + (1 | Subject)", d),
    ...                ml.lmer("Reaction ~ Days + (Days | Subject)", d))
    >>> print(t.to_markdown().splitlines()[0])
    | | Model 1 | Model 2 |
    """
    from multilevel.inference.ddf import coef_table

    if len(fits) == 1 and isinstance(fits[0], (list, tuple)):
        fits = tuple(fits[0])
    if not fits:
        raise MultilevelError("compare() needs at least one fitted model")
    names = [str(n) for n in (names or [f"Model {i + 1}" for i in range(len(fits))])]
    if len(names) != len(fits):
        raise MultilevelError(f"{len(names)} names for {len(fits)} models")
    k = len(fits)
    tables = [coef_table(f, ddf) for f in fits]
    rows: list[_Row] = [_Row("Fixed effects", [""] * k, "section")]
    coefs: list[str] = []
    for t in tables:
        for nm in t.index:
            if nm not in coefs:
                coefs.append(nm)
    for nm in coefs:
        est, se = [], []
        for t in tables:
            if nm in t.index:
                r = t.loc[nm]
                est.append(_fmt(float(r["estimate"]), digits) + (_stars(float(r["p"])) if stars else ""))
                se.append(f"({_fmt(float(r['se']), digits)})")
            else:
                est.append("")
                se.append("")
        rows.append(_Row(nm, est, "value"))
        rows.append(_Row("", se, "se"))
    # random effects: SDs and correlations by block
    rows.append(_Row("Random effects", [""] * k, "section"))
    labels: list[str] = []
    vals: list[dict[str, str]] = []
    for f in fits:
        d: dict[str, str] = {}
        for blk in f.varcorr:
            sd = blk.sd.to_numpy()
            corr = blk.corr
            for i, t in enumerate(blk.terms):
                lab = f"SD {t} | {blk.group}"
                d[lab] = _fmt(float(sd[i]), digits)
                if lab not in labels:
                    labels.append(lab)
            for j in range(len(blk.terms)):
                for i in range(j + 1, len(blk.terms)):
                    lab = f"Cor {blk.terms[i]}, {blk.terms[j]} | {blk.group}"
                    d[lab] = _fmt(float(corr[i, j]), digits)
                    if lab not in labels:
                        labels.append(lab)
        if not is_glmm(f):
            d["SD Residual"] = _fmt(float(f.sigma), digits)
        vals.append(d)
    if any("SD Residual" in d for d in vals):
        labels.append("SD Residual")
    for lab in labels:
        rows.append(_Row(lab, [d.get(lab, "") for d in vals], "value"))
    rows.append(_Row("Model fit", [""] * k, "section"))
    rows.append(_Row("Observations", [str(int(f.nobs)) for f in fits]))
    groups: list[str] = []
    for f in fits:
        for g in f.ngroups:
            if g not in groups:
                groups.append(g)
    for g in groups:
        rows.append(_Row(f"Groups: {g}", [str(f.ngroups[g]) if g in f.ngroups else "" for f in fits]))
    rows.append(_Row("Log-likelihood", [_fmt(float(f.loglik), 1) for f in fits]))
    rows.append(_Row("AIC", [_fmt(float(f.aic), 1) for f in fits]))
    rows.append(_Row("BIC", [_fmt(float(f.bic), 1) for f in fits]))
    notes = []
    if stars:
        notes.append(LEGEND)
    if any(getattr(f, "reml", False) for f in fits):
        notes.append("REML fits: log-likelihood, AIC and BIC are REML criteria")
    return ModelTable(names, rows, notes)
