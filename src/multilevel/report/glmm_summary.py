"""The text summary of a GLMM fit, laid out like lme4's ``print(summary(glmerfit))``:

    Generalized linear mixed model fit by maximum likelihood (Laplace
      Approximation) [glmerMod]
     Family: binomial  ( logit )
    Formula: cbind(incidence, size - incidence) ~ period + (1 | herd)

         AIC      BIC   logLik deviance df.resid
       194.1    204.2    -92.0    184.1       51

    Scaled residuals:
        Min      1Q  Median      3Q     Max
    -2.3816 -0.7889 -0.2026  0.5142  2.8791

    Random effects:
     Groups Name        Variance Std.Dev.
     herd   (Intercept) 0.4123   0.6421
    Number of obs: 56, groups:  herd, 15

    Fixed effects:
                Estimate Std. Error z value Pr(>|z|)
    (Intercept)  -1.3983     0.2312  -6.048 1.47e-09 ***
    ...

The title wraps as lme4's ``.prt.methTit`` wraps it (``strwrap`` at width 78 with a
2-space indent, then `` [glmerMod]``); nAGQ > 1 reads "(Adaptive Gauss-Hermite Quadrature,
nAGQ = 25)" and nAGQ = 0 likewise "nAGQ = 0", as in lme4. The ``deviance`` column is
-2 logLik; ``Scaled residuals`` are Pearson residuals. Every other section comes from
``report.summary`` unchanged.
"""
from __future__ import annotations

from functools import cached_property
from html import escape
from typing import TYPE_CHECKING

from multilevel.report.rformat import LINE_WIDTH, formula_line, method_title_lines
from multilevel.report.summary import (
    Summary,
    convergence_lines,
    correlation_lines,
    criterion_lines,
    fixef_lines,
    groups_lines,
    residual_lines,
    varcorr_lines,
)

if TYPE_CHECKING:
    from multilevel.results import AnyFit

__all__ = ["GlmmSummary", "glmm_summary_lines", "method_title", "title_lines"]

DIGITS = 4


def method_title(nagq: int) -> str:
    """lme4's ``methTitle`` for a GLMM."""
    how = "(Laplace Approximation)" if nagq == 1 else f"(Adaptive Gauss-Hermite Quadrature, nAGQ = {nagq})"
    return f"Generalized linear mixed model fit by maximum likelihood {how}"


def title_lines(nagq: int, cls: str = "glmerMod", width: int = LINE_WIDTH) -> list[str]:
    """lme4's ``.prt.methTit``: one line ``title ['class']`` when it fits, else the title
    wrapped at ``width - 2`` with the class appended as `` [class]``."""
    return method_title_lines(method_title(nagq), cls, width)


def call_lines(fit: AnyFit) -> list[str]:
    """Family, Formula, Data and (user) Weights lines."""
    # R's family name: "Negative Binomial(3.3034)" for glmer.nb fits
    fam = fit.family_string if hasattr(fit, "family_string") else fit.family
    out = [f" Family: {fam}  ( {fit.link} )", *formula_line("Formula:", fit.formula)]
    if getattr(fit, "data_name", None):
        out.append(f"   Data: {fit.data_name}")
    if getattr(fit, "weights_name", None):
        out.append(f"Weights: {fit.weights_name}")
    return out


def glmm_summary_lines(fit: AnyFit, correlation: bool | None = None) -> list[str]:
    """The whole summary as a list of lines."""
    lines = title_lines(getattr(fit, "nagq", 1))
    lines += call_lines(fit)
    lines.append("")
    lines += criterion_lines(fit)
    lines.append("")
    lines += residual_lines(fit)
    lines.append("")
    lines.append("Random effects:")
    lines += varcorr_lines(fit.varcorr, digits=DIGITS, comp=("Variance", "Std.Dev."))
    lines += groups_lines(fit)
    if len(fit.fixef) > 0:
        lines += ["", "Fixed effects:"]
        lines += fixef_lines(fit)
        lines += correlation_lines(fit, correlation)
    lines += convergence_lines(fit)
    return lines


class GlmmSummary(Summary):
    """Summary of a GLMM fit: ``str()`` is lme4's layout; attributes as :class:`Summary`
    (``coefficients`` has z values and Pr(>|z|))."""

    @cached_property
    def text(self) -> str:
        return "\n".join(glmm_summary_lines(self.fit, correlation=self.correlation))

    def _repr_html_(self) -> str:
        return f'<div class="ml-summary"><pre>{escape(self.text)}</pre></div>'
