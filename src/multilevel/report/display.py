"""arm's ``display()``: the compact printout of Gelman & Hill's book, for lm, lmer and glmer fits.

arm 1.13's layouts (``display`` methods for ``merMod`` here, for ``lm`` in the example
below)::

    lmer(formula = mAch ~ 1 + (1 | school), data = hsb)
                coef.est coef.se
    (Intercept) 12.64     0.24

    Error terms:
     Groups   Name        Std.Dev.
     school   (Intercept) 2.93
     Residual             6.26
    ---
    number of obs: 7185, groups: school, 160
    AIC = 47122.8, DIC = 47115.8
    deviance = 47115.8

Numbers are arm's ``fround(x, digits)`` = R's ``format(round(x, digits), nsmall = digits)``
of the whole table at once (one width and one number of decimals), printed as R prints a
character matrix (left-justified, trailing blanks kept). For mixed models AIC is that of
the fit's own likelihood (REML for REML fits), ``deviance`` that of the ML refit (for GLMMs
lme4's ``deviance()``, the conditional deviance), and DIC = 2 deviance + 2 logLik, as arm
computes them. GLMMs print a ``Residual`` SD as arm does (lme4's ``sigma()``: 1 for
binomial and Poisson fits).

The call line: R prints the call deparsed (R's spacing, a line break after 60 characters),
with the data's *name*. Python cannot know the name of the variable that held the data, so
it is the fit's ``data_name``: the name a bundled data set carries (``df.attrs["name"]``),
or what the command line and the HTML report set (assign ``fit.data_name = "hsb"``
yourself, or pass ``data_name=``); when it is unknown the ``data =`` argument is left out,
as R prints a call made without one, rather than a made-up ``data = data``.

>>> import multilevel as ml
>>> hsb = ml.datasets.load("hsb")
>>> print(ml.display(ml.lm("mAch ~ ses", hsb), data_name="hsb"))
lm(formula = mAch ~ ses, data = hsb)
            coef.est coef.se
(Intercept) 12.75     0.08  
ses          3.18     0.10  
---
n = 7185, k = 2
residual sd = 6.42, R-Squared = 0.13
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from multilevel.report.rformat import _r_round, call_lines, format_num, format_real
from multilevel.results.lm import LmFit

if TYPE_CHECKING:
    from multilevel.results import AnyFit

__all__ = ["Display", "display", "fround"]


class Display(str):
    """The text of :func:`display` (a ``str``: print it, split it, compare it) with arm's
    returned numbers as attributes: ``coef``, ``se`` (Series), and for mixed models ``aic``,
    ``dic``, ``deviance``, ``ngroups``, for lm fits ``n``, ``k``, ``sigma_hat``,
    ``r_squared``. Shows itself as the text in the console and in notebooks."""

    def __repr__(self) -> str:
        return str(self)

    def _repr_html_(self) -> str:
        from html import escape

        return f"<pre>{escape(str(self))}</pre>"


def fround(values: Sequence[float], digits: int) -> list[str]:
    """arm's ``fround``: ``format(round(x, digits), nsmall = digits)`` of a vector (one
    common format, right-justified to one width).

    >>> fround([251.405, 10.467, 6.8246, 1.546], 2)
    ['251.41', ' 10.47', '  6.82', '  1.55']
    """
    return format_real([_r_round(float(v), digits) for v in values], digits=7, nsmall=digits)


def _matrix_lines(rownames: Sequence[str], colnames: Sequence[str], cells: Sequence[Sequence[str]]) -> list[str]:
    """R's ``print(<character matrix>, quote = FALSE)``: every column left-justified to its
    widest entry or header, row names left-justified; trailing blanks kept, as R prints them."""
    wr = max([len(r) for r in rownames] + [0])
    widths = [max([len(c)] + [len(row[j]) for row in cells]) for j, c in enumerate(colnames)]
    out = [" " * wr + "".join(f" {c:<{w}}" for c, w in zip(colnames, widths))]
    for rn, row in zip(rownames, cells):
        out.append(f"{rn:<{wr}}" + "".join(f" {c:<{w}}" for c, w in zip(row, widths)))
    return out


def _call_lines(fit: AnyFit, fn: str, data_name: str | None) -> list[str]:
    args = [f"formula = {fit.formula}"]
    if data_name:
        args.append(f"data = {data_name}")
    fam = getattr(fit, "family_object", None)
    if fn == "glmer" and fam is not None:
        # as typed in R: the family, with its link when it is not the canonical one
        name = getattr(fit, "family_string", None) or fit.family
        canonical = fam.links[0] if getattr(fam, "links", None) else fit.link
        args.append(f"family = {name}" if fit.link == canonical else f'family = {name}(link = "{fit.link}")')
    weights = getattr(fit, "weights_name", None)
    if weights:
        args.append(f"weights = {weights}")
    if fn == "lmer" and not fit.reml:
        args.append("REML = FALSE")
    return call_lines(fn, args)


def _coef_lines(names: list[str], cols: list[str], columns: list[np.ndarray], digits: int) -> list[str]:
    if not names:
        return []
    n = len(names)
    txt = fround(np.concatenate(columns), digits)  # one format for the whole matrix, as fround
    cells = [[txt[j * n + i] for j in range(len(cols))] for i in range(n)]
    return _matrix_lines(names, cols, cells)


def _error_terms(fit: AnyFit, digits: int) -> list[str]:
    """arm's ``as.matrix.VarCorr`` without the Variance column."""
    blocks = list(fit.varcorr)
    sds = [np.asarray(b.sd, dtype=float) for b in blocks] + [np.array([float(fit.sigma)])]
    sd_txt = fround(np.concatenate(sds), digits)
    maxlen = max([len(b.terms) for b in blocks] + [1])
    rows: list[list[str]] = []
    k = 0
    for b in blocks:
        s = len(b.terms)
        corr = fround(np.asarray(b.corr, dtype=float).ravel(), digits) if maxlen > 1 else []
        for i, t in enumerate(b.terms):
            row = [b.block_name if i == 0 else "", t, sd_txt[k]]
            if maxlen > 1:
                row += [corr[i * s + j] if j < i else "" for j in range(maxlen)]
            rows.append(row)
            k += 1
    rows.append(["Residual", "", sd_txt[k]] + ([""] * maxlen if maxlen > 1 else []))
    cols = ["Groups", "Name", "Std.Dev."] + (["Corr"] + [""] * (maxlen - 1) if maxlen > 1 else [])
    return _matrix_lines([""] * len(rows), cols, rows)


def _mixed(fit: AnyFit, digits: int, detail: bool, data_name: str | None) -> Display:
    from multilevel.inference._common import is_glmm, ml_state

    glmm = is_glmm(fit)
    lines = _call_lines(fit, "glmer" if glmm else "lmer", data_name)
    names = list(fit.fixef.index)
    est, se = fit.fixef.to_numpy(float), fit.se.to_numpy(float)
    cols, columns = ["coef.est", "coef.se"], [est, se]
    if detail:
        stat = est / se
        if glmm and not getattr(fit.family_object, "has_dispersion", False):
            from scipy.stats import norm

            cols += ["z value", "Pr(>|z|)"]
            columns += [stat, 2.0 * norm.sf(np.abs(stat))]
        else:
            cols.append("t value")
            columns.append(stat)
    lines += _coef_lines(names, cols, columns, digits)
    lines += ["", "Error terms:"] + _error_terms(fit, digits)
    loglik = float(fit.loglik)
    # arm: deviance(refitML(fit)); lme4's deviance() of a GLMM is the conditional deviance
    dev = float(fit.conditional_deviance) if glmm else float(ml_state(fit).objective)
    dic = dev + (dev - (-2.0 * loglik))
    aic = float(fit.aic)
    grp = "; ".join(f"{g}, {m}" for g, m in fit.ngroups.items())
    lines += ["---", f"number of obs: {int(fit.nobs)}, groups: {grp}",
              f"AIC = {_g(_r_round(aic, 1))}, DIC = {format_num(_r_round(dic, 1))}",
              f"deviance = {fround([dev], 1)[0]} "]
    out = Display("\n".join(lines))
    out.coef, out.se = fit.fixef, fit.se
    out.aic, out.dic, out.deviance, out.ngroups = aic, dic, dev, dict(fit.ngroups)
    return out


def _lm(fit: AnyFit, digits: int, detail: bool, data_name: str | None) -> Display:
    lines = _call_lines(fit, "lm", data_name)
    names = list(fit.fixef.index)
    cols, columns = ["coef.est", "coef.se"], [fit.fixef.to_numpy(float), fit.se.to_numpy(float)]
    if detail:
        cols += ["t value", "Pr(>|t|)"]
        columns += [fit.tvalues.reindex(names).to_numpy(float), fit.pvalues.reindex(names).to_numpy(float)]
    lines += _coef_lines(names, cols, columns, digits)
    n, k = int(fit.rank + fit.df_resid), int(fit.rank)  # summary(lm)$df[1] + $df[2], $df[1]
    sigma, r2 = float(fit.sigma), float(fit.r2)
    lines += ["---", f"n = {n}, k = {k}",
              f"residual sd = {fround([sigma], digits)[0].strip()}, R-Squared = {fround([r2], 2)[0].strip()}"]
    out = Display("\n".join(lines))
    out.coef, out.se, out.n, out.k, out.sigma_hat, out.r_squared = fit.fixef, fit.se, n, k, sigma, r2
    return out


def display(fit: AnyFit, digits: int = 2, detail: bool = False, *, data_name: str | None = None,
            file: Any = None) -> Display:
    """arm's ``display(fit)`` of an ``lm``, ``lmer`` or ``glmer`` fit (see the module
    docstring for the layouts and the numbers).

    digits:    decimals of the estimates, standard errors and SDs (arm's default 2).
    detail:    also the t value (lmer, lm: and Pr(>|t|)) or z value and Pr(>|z|) (glmer).
    data_name: the data's name on the call line; default ``fit.data_name``; when neither is
               known the call has no ``data =``.
    file:      a stream to print to as well (the text is returned either way).

    Returns a :class:`Display`, a ``str`` that prints as the text (the console and notebooks
    show it as it is), with arm's returned numbers as attributes.

    >>> import multilevel as ml
    >>> fit = ml.lmer("Reaction ~ Days + (Days | Subject)", ml.datasets.load("sleepstudy"))
    >>> ml.display(fit).splitlines()[0]
    'lmer(formula = Reaction ~ Days + (Days | Subject), data = sleepstudy)'
    >>> round(ml.display(fit).dic, 1)
    1760.3
    """
    name = data_name if data_name is not None else getattr(fit, "data_name", None)
    out = _lm(fit, digits, detail, name) if isinstance(fit, LmFit) else _mixed(fit, digits, detail, name)
    if file is not None and file is not False:
        print(out, file=file)
    return out


def _g(x: float) -> str:
    """R's ``sprintf("%g", x)``: 6 significant digits."""
    return f"{x:.6g}"
