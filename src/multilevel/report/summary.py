"""The text summary of a fit, laid out like lme4's ``print(summary(fit))``.

Section by section (lme4 1.1-31, ``print.summary.merMod``):

    Linear mixed model fit by REML ['lmerMod']
    Formula: Reaction ~ Days + (Days | Subject)

    REML criterion at convergence: 1743.6          (ML fits: AIC BIC logLik deviance df.resid)

    Scaled residuals:
        Min      1Q  Median      3Q     Max
    -3.9536 -0.4634  0.0231  0.4634  5.1793

    Random effects:
     Groups   Name        Variance Std.Dev. Corr
     Subject  (Intercept) 612.09   24.740
              Days         35.07    5.922   0.07
     Residual             654.94   25.592
    Number of obs: 180, groups:  Subject, 18

    Fixed effects:
                Estimate Std. Error t value
    (Intercept)  251.405      6.825  36.838
    Days          10.467      1.546   6.771

    Correlation of Fixed Effects:
         (Intr)
    Days -0.138

followed, if there is anything to report, by the optimiser's convergence code and every
warning of the fit. Numbers are formatted with R's rules (``report.rformat``) at lme4's
``digits = 4``. Two deliberate differences: trailing blanks are dropped, and warnings that
lme4 prints elsewhere (rows dropped for missing values, rank-deficient columns) are listed
here too so that a printed summary tells the whole story.

Example
-------
>>> print(fit.summary())          # doctest: +SKIP
"""
from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import pandas as pd

from html import escape

from multilevel.report.html import _STYLE, _pre, table_html
from multilevel.report.rformat import (
    formula_line,
    LINE_WIDTH,
    _r_round,
    coefmat_cells,
    abbreviate,
    char_matrix_lines,
    coefmat_lines,
    format_num,
    format_real,
    method_title_lines,
    named_vector_lines,
    zapsmall,
)

if TYPE_CHECKING:
    from multilevel.results import AnyFit

__all__ = ["Summary", "summary_lines", "varcorr_lines", "coef_table", "COR_MAX"]

#: lme4's ``lme4.summary.cor.max``: the fixed-effects correlation is not shown for more coefficients.
COR_MAX = 20
#: ``max(3, getOption("digits") - 3)`` in ``print.summary.merMod``.
DIGITS = 4


class Summary:
    """The summary of a fit: ``str()`` is lme4's text layout, ``_repr_html_`` an HTML version.

    Attributes give the pieces as data: ``coefficients`` (Estimate, Std. Error, t/z value
    [, Pr(>|z|)]), ``varcorr``, ``ngroups``, ``warnings``.
    """

    def __init__(self, fit: AnyFit, correlation: bool | None = None, ddf: str | None = None):
        self.fit = fit
        self.correlation = correlation
        self.ddf = ddf

    @cached_property
    def coefficients(self) -> pd.DataFrame:
        return coef_table(self.fit, self.ddf)

    @property
    def varcorr(self):
        return self.fit.varcorr

    @property
    def ngroups(self) -> dict[str, int]:
        return self.fit.ngroups

    @property
    def warnings(self) -> list[str]:
        return self.fit.warnings

    @cached_property
    def text(self) -> str:
        return "\n".join(summary_lines(self.fit, correlation=self.correlation, ddf=self.ddf))

    def __str__(self) -> str:
        return self.text

    def __repr__(self) -> str:
        return self.text

    def _repr_html_(self) -> str:
        return summary_html(self.fit, ddf=self.ddf)


# --- pieces ------------------------------------------------------------------------------


def _is_glmm(fit: AnyFit) -> bool:
    return getattr(fit, "family", "gaussian") != "gaussian"


def _uses_scale(fit: AnyFit) -> bool:
    """Whether the model has a residual scale (t values, a Residual row): LMMs, not binomial/Poisson."""
    return getattr(fit, "family", "gaussian") == "gaussian"


def method_title(fit: AnyFit, ddf: str | None = None) -> str:
    """lme4's ``methTitle`` (lmerTest's with ``ddf``: ``... fit by REML. t-tests use
    Satterthwaite's method``)."""
    if _is_glmm(fit):
        nagq = int(getattr(fit, "nagq", 1) or 1)
        how = ("(Laplace Approximation)" if nagq == 1
               else f"(Adaptive Gauss-Hermite Quadrature, nAGQ = {nagq})")
        return f"Generalized linear mixed model fit by maximum likelihood {how}"
    # R pastes an empty GLMM qualifier onto "maximum likelihood", hence lme4's double space
    # before the class and lmerTest's "likelihood . t-tests"
    mtit = "Linear mixed model fit by REML" if fit.reml else "Linear mixed model fit by maximum likelihood "
    if ddf is not None:
        mtit += f". t-tests use {_DDF_TITLES.get(ddf, ddf)}"
    return mtit


def _class_name(fit: AnyFit, ddf: str | None = None) -> str:
    if _is_glmm(fit):
        return "glmerMod"
    return "lmerModLmerTest" if ddf is not None else "lmerMod"


def title(fit: AnyFit, ddf: str | None = None) -> str:
    """lme4's ``methTitle`` plus the class tag, on one line (the HTML heading)."""
    return f"{method_title(fit, ddf)} ['{_class_name(fit, ddf)}']"


def title_lines(fit: AnyFit, ddf: str | None = None) -> list[str]:
    """The title as ``print`` shows it: wrapped as lme4's ``.prt.methTit`` wraps long ones
    (lmerTest: ``... Satterthwaite's method [`` / ``lmerModLmerTest]``)."""
    return method_title_lines(method_title(fit, ddf), _class_name(fit, ddf))


def call_lines(fit: AnyFit) -> list[str]:
    """Family, Formula, Data and Weights lines (lme4's ``.prt.family`` and ``.prt.call``)."""
    out = []
    if _is_glmm(fit):
        out.append(f" Family: {fit.family}  ( {fit.link} )")
    out += formula_line("Formula:", fit.formula)
    if getattr(fit, "data_name", None):
        out.append(f"   Data: {fit.data_name}")
    if getattr(fit.frame, "weights", None) is not None:
        out.append(f"Weights: {getattr(fit, 'weights_name', None) or '(prior weights)'}")
    return out


def criterion_lines(fit: AnyFit) -> list[str]:
    """``REML criterion at convergence: ...`` or the AIC / BIC / logLik / deviance / df.resid row."""
    if not _is_glmm(fit) and fit.reml:
        return [f"REML criterion at convergence: {format_num(_r_round(fit.reml_criterion, 1))}"]
    vals = [fit.aic, fit.bic, fit.loglik, -2.0 * fit.loglik, float(fit.df_resid)]
    txt = format_real([_r_round(v, 1) for v in vals], digits=7)
    txt[-1] = format_num(_r_round(float(fit.df_resid), 1))  # lme4 shows df.resid as an integer
    return named_vector_lines(txt, ["AIC", "BIC", "logLik", "deviance", "df.resid"])


def residual_lines(fit: AnyFit, digits: int = DIGITS) -> list[str]:
    """Quantiles of the scaled Pearson residuals (``.prt.resids``)."""
    fast = getattr(fit, "_residual_array", None)  # LmmFit in memory: the values alone
    if fast is not None and not getattr(fit.frame, "out_of_core", False):
        r = np.asarray(fast("pearson", True), dtype=float)
    else:
        r = np.asarray(fit.residuals(type="pearson", scaled=True), dtype=float)
    r = r[np.isfinite(r)]
    if r.size == 0:
        return ["Scaled residuals:", "(none)"]
    q = np.quantile(r, [0.0, 0.25, 0.5, 0.75, 1.0])  # R's default type 7
    txt = format_real(zapsmall(list(q), digits + 1), digits=digits)
    return ["Scaled residuals:"] + named_vector_lines(txt, ["Min", "1Q", "Median", "3Q", "Max"])


def varcorr_lines(vc: Any, digits: int = 5, comp: Sequence[str] = ("Std.Dev.",)) -> list[str]:
    """lme4's ``formatVC`` table: Groups, Name, Variance and/or Std.Dev., and correlations.

    Variances (and SDs) are formatted together with R's ``format(digits = digits)``;
    correlations of each block with ``max(2, digits - 2)`` decimals, lower triangle only.
    A ``cs()`` or ``ar1()`` block shows its one correlation parameter as glmmTMB prints it,
    ``0.86 (ar1)`` on the block's first row, instead of the correlation matrix; a ``diag()``
    block shows none.
    """
    groups: list[str] = []
    names: list[str] = []
    sds: list[float] = []
    lens: list[int] = []
    for blk in vc:
        s = blk.sd_values if hasattr(blk, "sd_values") else blk.sd.to_numpy()
        for i, t in enumerate(blk.terms):
            groups.append(blk.block_name if i == 0 else "")
            names.append(t)
            sds.append(float(s[i]))
        lens.append(len(blk.terms))
    if vc.sigma is not None:
        groups.append("Residual")
        names.append("")
        sds.append(float(vc.sigma))
        lens.append(1)
    colnames = ["Groups", "Name"]
    columns: list[list[str]] = [groups, names]
    if "Variance" in comp:
        colnames.append("Variance")
        columns.append(format_real([s * s for s in sds], digits=digits))
    if "Std.Dev." in comp:
        colnames.append("Std.Dev.")
        columns.append(format_real(sds, digits=digits))
    if lens and max(lens) > 1:
        maxlen = max(lens)
        dig = max(2, digits - 2)
        corr_rows: list[list[str]] = []
        for blk in vc:
            c = blk.corr
            k = c.shape[0]
            code = getattr(blk, "structure", "us")
            rho = getattr(blk, "corr_param", None)
            if code == "diag":  # no correlations are estimated: none are shown
                corr_rows += [[""] * (maxlen - 1) for _ in range(k)]
                continue
            if code in ("cs", "ar1") and rho is not None:
                first = format_real([_r_round(float(rho), dig)], digits=7, nsmall=dig)[0] + f" ({code})"
                for i in range(k):
                    corr_rows.append(([first] if i == 0 else [""]) + [""] * (maxlen - 2))
                continue
            txt = format_real([_r_round(float(v), dig) for v in c.ravel()], digits=7, nsmall=dig)
            for i in range(k):
                row = [txt[i * k + j] if j < i else "" for j in range(k)] + [""] * (maxlen - k)
                corr_rows.append(row[: maxlen - 1])
        while len(corr_rows) < len(groups):
            corr_rows.append([""] * (maxlen - 1))
        for j in range(maxlen - 1):
            colnames.append("Corr" if j == 0 else "")
            columns.append([r[j] for r in corr_rows])
    cells = [[col[i] for col in columns] for i in range(len(groups))]
    return char_matrix_lines(cells, colnames, [""] * len(groups), right=False)


def groups_lines(fit: AnyFit) -> list[str]:
    """``Number of obs: 180, groups:  Subject, 18`` (wrapped like R's ``cat(fill = TRUE)``)."""
    first = f"Number of obs: {fit.nobs}, groups: "
    second = "; ".join(f"{g}, {n}" for g, n in fit.ngroups.items())
    if len(first) + 1 + len(second) > LINE_WIDTH:
        return [first.rstrip(), second]
    return [f"{first} {second}"]


# lmerTest's names of the methods in its summary title
_DDF_TITLES = {"satterthwaite": "Satterthwaite's method", "kenward-roger": "Kenward-Roger's method",
               "residual": "residual degrees of freedom"}


def coef_table(fit: AnyFit, ddf: str | None = None) -> pd.DataFrame:
    """Estimate, Std. Error, t value (z value and Pr(>|z|) for GLMMs) by coefficient; with
    ``ddf`` for a linear mixed model, lmerTest's Estimate, Std. Error, df, t value, Pr(>|t|)."""
    if ddf is not None and _uses_scale(fit):
        from multilevel.inference import coef_table as ddf_table

        tab = ddf_table(fit, ddf)
        return pd.DataFrame({"Estimate": tab["estimate"], "Std. Error": tab["se"], "df": tab["df"],
                             "t value": tab["t"], "Pr(>|t|)": tab["p"]})
    est = fit.fixef
    se = fit.se
    stat = est / se
    if _uses_scale(fit):
        return pd.DataFrame({"Estimate": est, "Std. Error": se, "t value": stat})
    from scipy.stats import norm

    p = 2.0 * norm.sf(np.abs(stat.to_numpy()))
    # lme4 labels the statistic "t value" for GLMMs with a scale (Gamma, inverse Gaussian),
    # with the same normal p-value
    label = "t value" if getattr(getattr(fit, "family_object", None), "has_dispersion", False) else "z value"
    return pd.DataFrame({"Estimate": est, "Std. Error": se, label: stat, "Pr(>|z|)": p})


def fixef_lines(fit: AnyFit, digits: int = DIGITS, ddf: str | None = None) -> list[str]:
    if ddf is None and _uses_scale(fit):
        # coef_table's numbers without its DataFrame (the explorer prints a summary per refit)
        names = list(fit.fixef.index)
        est, se = fit.fixef.to_numpy(dtype=float), fit.se.to_numpy(dtype=float)
        with np.errstate(invalid="ignore", divide="ignore"):
            stat = est / se
        values = [[None if np.isnan(v) else float(v) for v in row]
                  for row in np.column_stack([est, se, stat]).tolist()]
        return coefmat_lines(names, ["Estimate", "Std. Error", "t value"], values, digits=digits,
                             has_pvalue=False)
    tab = coef_table(fit, ddf)
    values = [[None if pd.isna(v) else float(v) for v in row] for row in tab.to_numpy()]
    return coefmat_lines(list(tab.index), list(tab.columns), values, digits=digits,
                         has_pvalue=str(tab.columns[-1]).startswith("Pr("))


def correlation_lines(fit: AnyFit, correlation: bool | None) -> list[str]:
    """``Correlation of Fixed Effects`` (lower triangle, 3 decimals, abbreviated names)."""
    names = list(fit.fixef.index)
    p = len(names)
    if correlation is None:
        correlation = p <= COR_MAX
        if not correlation:
            return ["", f"Correlation matrix not shown by default, as p = {p} > {COR_MAX}.",
                    "Use fit.summary(correlation=True) or fit.vcov if you need it"]
    if not correlation or p <= 1:
        return []
    # the array behind fit.vcov when there is one (its DataFrame costs more than the lines)
    v = np.asarray(fit._vcov, dtype=float) if hasattr(fit, "_vcov") else fit.vcov.to_numpy()
    sd = np.sqrt(np.diag(v))
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = v / np.outer(sd, sd)
    txt = format_real([_r_round(float(x), 3) for x in corr.ravel()], digits=7, nsmall=3)
    rn = abbreviate(names, 11)
    cn = abbreviate(names, 6)
    cells = [[txt[i * p + j] if j < i else "" for j in range(p - 1)] for i in range(1, p)]
    return ["", "Correlation of Fixed Effects:"] + char_matrix_lines(cells, cn[:-1], rn[1:], right=False)


def convergence_lines(fit: AnyFit) -> list[str]:
    """lme4's ``.prt.warn``: the optimiser's code, then every message and warning of the fit."""
    optinfo = getattr(fit, "optinfo", {}) or {}
    code = int(optinfo.get("code", 0))
    # optinfo["code"] is NLopt's status. lme4's nloptwrap reports the successful stops
    # (1 success, 2 stopval, 3 ftol, 4 xtol reached) as 0; failures (< 0) and stops on a
    # budget (5 maxeval, 6 maxtime) are shown as they are.
    if 1 <= code <= 4:
        code = 0
    msgs = list(fit.warnings)
    if code == 0 and not msgs:
        return []
    optimizer = optinfo.get("optimizer", "bobyqa")
    extra = "(OK)" if code == 0 else (f"({optinfo['message']})" if optinfo.get("message") else "")
    return [f"optimizer ({optimizer}) convergence code: {code} {extra}".rstrip()] + msgs


def summary_lines(fit: AnyFit, correlation: bool | None = None, ddf: str | None = None) -> list[str]:
    """The whole summary as a list of lines (see the module docstring for the layout)."""
    if ddf is not None and not _uses_scale(fit):
        ddf = None  # GLMMs: z tests, lme4's layout
    lines = title_lines(fit, ddf)
    lines += call_lines(fit)
    lines.append("")
    lines += criterion_lines(fit)
    lines.append("")
    lines += residual_lines(fit)
    lines.append("")
    lines.append("Random effects:")
    comp = ("Variance", "Std.Dev.")
    lines += varcorr_lines(fit.varcorr, digits=DIGITS, comp=comp)
    lines += groups_lines(fit)
    if len(fit.fixef) > 0:
        lines += ["", "Fixed effects:"]
        lines += fixef_lines(fit, ddf=ddf)
        lines += correlation_lines(fit, correlation)
    lines += convergence_lines(fit)
    return lines


def _varcorr_table(fit: AnyFit) -> str:
    vc = fit.varcorr
    rows: list[list[str]] = []
    sds: list[float] = []
    for blk in vc:
        s = blk.sd.to_numpy()
        corr = blk.corr
        code = getattr(blk, "structure", "us")
        rho = getattr(blk, "corr_param", None)
        for i, t in enumerate(blk.terms):
            if code in ("cs", "ar1") and rho is not None:  # glmmTMB's "0.86 (ar1)", first row
                cors = [format_real([_r_round(float(rho), 2)], digits=7, nsmall=2)[0] + f" ({code})"] if i == 0 else []
            elif code == "diag":
                cors = []
            else:
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


def _fixef_table(fit: AnyFit, ddf: str | None = None) -> str:
    tab = coef_table(fit, ddf)
    values = [[None if v != v else float(v) for v in row] for row in tab.to_numpy()]
    cols, cells, legend = coefmat_cells(list(tab.columns), values, digits=DIGITS,
                                        has_pvalue=str(tab.columns[-1]).startswith("Pr("))
    rows = [[str(name)] + cells[i] for i, name in enumerate(tab.index)]
    out = table_html([""] + cols, rows)
    if legend:
        out += f'<div class="legend">{escape(legend[-1])}</div>'
    return out


def _corr_table(fit: AnyFit) -> str:
    names = list(fit.fixef.index)
    p = len(names)
    if p <= 1 or p > COR_MAX:
        return ""
    # the array behind fit.vcov when there is one (its DataFrame costs more than the lines)
    v = np.asarray(fit._vcov, dtype=float) if hasattr(fit, "_vcov") else fit.vcov.to_numpy()
    sd = np.sqrt(np.diag(v))
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = v / np.outer(sd, sd)
    txt = format_real([_r_round(float(x), 3) for x in corr.ravel()], digits=7, nsmall=3)
    rows = [[names[i]] + [txt[i * p + j] if j < i else "" for j in range(p - 1)] for i in range(1, p)]
    return "<b>Correlation of fixed effects</b>" + table_html([""] + names[:-1], rows)


def summary_html(fit: AnyFit, ddf: str | None = None) -> str:
    """The summary of ``fit`` as an HTML fragment (with ``ddf``, lmerTest's title and its df
    and p columns, as the text)."""
    if ddf is not None and not _uses_scale(fit):
        ddf = None
    parts = [_STYLE, '<div class="ml-summary">', f"<b>{escape(title(fit, ddf))}</b>", _pre(call_lines(fit)),
             _pre(criterion_lines(fit)), _pre(residual_lines(fit)),
             "<b>Random effects</b>", _varcorr_table(fit),
             "<div>" + escape(f"Number of obs: {fit.nobs}; groups: "
                              + "; ".join(f"{g}, {n}" for g, n in fit.ngroups.items())) + "</div>"]
    if len(fit.fixef):
        parts += ["<b>Fixed effects</b>", _fixef_table(fit, ddf), _corr_table(fit)]
    conv = convergence_lines(fit)
    if conv:
        parts.append('<ul class="warn">' + "".join(f"<li>{escape(m)}</li>" for m in conv) + "</ul>")
    parts.append("</div>")
    return "".join(parts)
