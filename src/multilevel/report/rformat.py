"""R's number and table formatting, re-implemented so our printouts line up with lme4's.

lme4's ``summary()`` is built from a handful of R primitives: ``format()`` of a numeric
vector (one common number of decimals and one common width for all elements),
``print()`` of named vectors and character matrices, ``printCoefmat()``, ``zapsmall()``
and ``abbreviate()``. Users compare our output with R's side by side, so these follow
R's algorithms (``src/main/format.c``, ``src/library/base/R/abbreviate.R``,
``src/library/stats/R/lm.R``) rather than Python's defaults.

Example
-------
>>> format_real([612.0898, 35.0717, 654.94], digits=4)
['612.09', ' 35.07', '654.94']
>>> abbreviate(["(Intercept)", "Days"], minlength=6)
['(Intr)', 'Days']
"""
from __future__ import annotations

import math
from decimal import ROUND_HALF_EVEN, Decimal, localcontext
from typing import Iterable, Sequence

# R's make.unique for VarCorr block names lives in the results layer (the fit objects name
# their blocks); re-exported here for the report code that used it from this module
from multilevel.results.names import make_unique_names

__all__ = [
    "format_real",
    "format_num",
    "zapsmall",
    "abbreviate",
    "named_vector_lines",
    "char_matrix_lines",
    "coefmat_lines",
    "coefmat_cells",
    "format_pval",
    "strwrap",
    "cat_fill_lines",
    "method_title_lines",
    "stars_of",
    "SIGNIF_LEGEND",
    "make_unique_names",
    "LINE_WIDTH",
]

#: R's default ``getOption("width")``; tables wider than this are split as R splits them.
LINE_WIDTH = 80
_KP_MAX = 27  # R's table of exact powers of ten (long double build)


def _scientific(x: float, digits: int) -> tuple[int, int, int, bool]:
    """R's ``scientific()``: (neg, kpower, nsig, roundingwidens) of ``x`` at ``digits``.

    ``|x| = alpha * 10^kpower`` with ``1 <= alpha < 10`` after rounding to ``digits``
    significant digits; ``nsig`` is the number of those digits that are not trailing zeros.
    R scales in long double and rounds half-even; exact decimal arithmetic gives the same
    answer except for values within a long-double ulp of a tie.
    """
    if x == 0.0:
        return 0, 0, 1, False
    neg = 1 if x < 0 else 0
    r = -x if neg else x
    kp = math.floor(math.log10(r)) - digits + 1
    with localcontext() as ctx:
        ctx.prec = 60
        r_prec = Decimal(r).scaleb(-kp)
        if r_prec < Decimal(10) ** (digits - 1):
            r_prec *= 10
            kp -= 1
        alpha = int(r_prec.quantize(Decimal(1), rounding=ROUND_HALF_EVEN))
    nsig = digits
    for _ in range(digits):
        if alpha % 10 == 0:
            nsig -= 1
            alpha //= 10
        else:
            break
    if nsig == 0 and digits > 0:
        nsig = 1
        kp += 1
    kpower = kp + digits - 1
    # Scientific format may round more than fixed format (9996 with 3 digits is 1e+04 but
    # prints as 9996 in fixed): then the number keeps its narrower width.
    rgt = min(max(digits - kpower, 0), _KP_MAX)
    fuzz = 0.5 / 10.0**rgt
    widens = 0 < kpower <= _KP_MAX and r < 10.0**kpower - fuzz
    return neg, kpower, nsig, widens


def _format_info(xs: Sequence[float], digits: int, nsmall: int = 0) -> tuple[int, int, int]:
    """R's ``formatReal()``: common (width, decimals, exponent-flag) for ``xs``."""
    rgt = mxl = mxsl = mxns = -(10**9)
    mnl = 10**9
    neg = 0
    naflag = nanflag = posinf = neginf = False
    for x in xs:
        if x is None:
            naflag = True
            continue
        if not math.isfinite(x):
            if math.isnan(x):
                nanflag = True
            elif x > 0:
                posinf = True
            else:
                neginf = True
            continue
        neg_i, kpower, nsig, widens = _scientific(x, digits)
        left = kpower + 1 - (1 if widens else 0)
        sleft = neg_i + (1 if left <= 0 else left)
        right = nsig - left
        neg = neg or neg_i
        rgt = max(rgt, right)
        mxl = max(mxl, left)
        mnl = min(mnl, left)
        mxsl = max(mxsl, sleft)
        mxns = max(mxns, nsig)
    if digits == 0:
        rgt = 0
    if mxl < 0:
        mxsl = 1 + neg
    rgt = max(rgt, 0)
    wf = mxsl + rgt + (rgt != 0)
    e = 2 if (mxl > 100 or mnl <= -99) else 1
    if mxns > 0:
        d = mxns - 1
        w = neg + (d > 0) + d + 4 + e
        if wf <= w:  # fixed notation whenever it is not wider (scipen = 0)
            e = 0
            if nsmall > rgt:
                rgt = nsmall
                wf = mxsl + rgt + (rgt != 0)
            d, w = rgt, wf
    else:
        w = d = e = 0
    if naflag:
        w = max(w, 2)
    if nanflag or posinf:
        w = max(w, 3)
    if neginf:
        w = max(w, 4)
    return w, d, e


def _encode(x: float | None, w: int, d: int, e: int) -> str:
    if x is None:
        s = "NA"
    elif math.isnan(x):
        s = "NaN"
    elif math.isinf(x):
        s = "Inf" if x > 0 else "-Inf"
    elif e:
        s = f"{x:.{d}e}"
        mant, _, exp = s.partition("e")
        # C prints at least two exponent digits; R's e=2 means three
        sign, digs = exp[0], exp[1:].lstrip("0") or "0"
        s = f"{mant}e{sign}{digs.rjust(e + 1, '0')}"
    else:
        s = f"{x:.{d}f}"
        if s.startswith("-") and float(s) == 0.0:
            s = s[1:]  # R never prints "-0.00"
    return s.rjust(w)


def _clean(values: Iterable[float | None]) -> list[float | None]:
    out: list[float | None] = []
    for v in values:
        if v is None:
            out.append(None)
        else:
            out.append(float(v))
    return out


def format_real(values: Iterable[float | None], digits: int = 7, nsmall: int = 0) -> list[str]:
    """R's ``format(x, digits=, nsmall=)`` for a numeric vector.

    All elements get the same number of decimals (the fewest that show every element to
    ``digits`` significant digits) and the same width; fixed notation unless scientific is
    narrower. ``None`` prints as ``NA``, NaN as ``NaN``.

    >>> format_real([1527.5, 19.38], digits=4)
    ['1527.50', '  19.38']
    """
    xs = _clean(values)
    w, d, e = _format_info(xs, digits, nsmall)
    return [_encode(x, w, d, e) for x in xs]


def format_num(x: float, digits: int = 7) -> str:
    """One number as R's ``cat()``/``print()`` shows it (no padding).

    >>> format_num(1743.6)
    '1743.6'
    >>> format_num(1743.0)
    '1743'
    """
    return format_real([x], digits)[0].strip()


def zapsmall(values: Sequence[float], digits: int) -> list[float]:
    """R's ``zapsmall()``: round so that values tiny relative to the largest become 0."""
    finite = [abs(v) for v in values if v is not None and math.isfinite(v)]
    mx = max(finite) if finite else 0.0
    nd = max(0, digits - math.ceil(math.log10(mx))) if mx > 0 else digits
    return [_r_round(v, nd) for v in values]


def _r_round(x: float, nd: int) -> float:
    """R's ``round(x, nd)`` (IEC 60559 'round half to even' on the decimal representation)."""
    if x is None or not math.isfinite(x):
        return x
    r = round(x, nd)
    return r + 0.0  # turn -0.0 into 0.0 like R's printing does


# --- abbreviate -----------------------------------------------------------------------


def _strip_chars(s: str, minlen: int) -> str:
    """The C routine behind R's ``abbreviate()`` (``stripchars`` in character.c).

    Drops, from the right and never a word's first letter: lower-case vowels ending a word,
    other lower-case vowels, lower-case letters ending a word, other lower-case letters,
    then anything else, until the string is ``minlen`` characters long.
    """
    b = list(s.lstrip())
    if len(b) < minlen:
        return _drop_spaces("".join(b), minlen)
    nspace = 0
    trailing = True
    for i in range(len(b) - 1, 0, -1):
        if b[i].isspace():
            if trailing:
                del b[i:]
            else:
                nspace += 1
        else:
            trailing = False
        if len(b) - nspace <= minlen:
            return _drop_spaces("".join(b), minlen)

    def first(i: int) -> bool:
        return b[i - 1].isspace()

    def last(i: int) -> bool:
        return (not b[i - 1].isspace()) and (i + 1 >= len(b) or b[i + 1].isspace())

    def vowel(i: int) -> bool:
        return b[i] in "aeiou"

    def islower(i: int) -> bool:
        return "a" <= b[i] <= "z"

    rules = (
        lambda i: vowel(i) and last(i),
        lambda i: vowel(i) and not first(i),
        lambda i: islower(i) and last(i),
        lambda i: islower(i) and not first(i),
        lambda i: not first(i) and not b[i].isspace(),
    )
    for rule in rules:
        for i in range(len(b) - 1, 0, -1):
            if i < len(b) and rule(i):
                del b[i]
            if len(b) - nspace <= minlen:
                return _drop_spaces("".join(b), minlen)
    return _drop_spaces("".join(b), minlen)


def _drop_spaces(s: str, minlen: int) -> str:
    if len(s) > minlen:
        return s[0] + "".join(c for c in s[1:] if not c.isspace())
    return s


def abbreviate(names: Sequence[str], minlength: int = 4) -> list[str]:
    """R's ``abbreviate(names, minlength)`` (default method ``"left.kept"``).

    Abbreviations are made unique by retrying the clashing names with a larger
    ``minlength``, as R does.

    >>> abbreviate(["(Intercept)", "meanses:cses", "sectorCatholic"], 6)
    ['(Intr)', 'mnss:c', 'sctrCt']
    """
    names = [n.strip() for n in names]
    uniq = list(dict.fromkeys(names))
    x = list(uniq)
    todo = [True] * len(uniq)
    ml = minlength
    while True:
        for i, t in enumerate(todo):
            if t:
                x[i] = _strip_chars(uniq[i], ml)
        seen: set[str] = set()
        dup = []
        for v in x:
            dup.append(v in seen)
            seen.add(v)
        if not any(dup):
            break
        dupvals = {v for v, d in zip(x, dup) if d}
        todo = [d or (v in dupvals) for v, d in zip(x, dup)]
        ml += 1
    lookup = dict(zip(uniq, x))
    return [lookup[n] for n in names]


# --- printing tables ------------------------------------------------------------------


def named_vector_lines(values: Sequence[str], names: Sequence[str], width: int = LINE_WIDTH) -> list[str]:
    """R's ``print()`` of a named vector whose elements are already formatted strings.

    Every column has the width of the widest name or value; names and values are
    right-justified; as many columns per line as fit in ``width``.
    """
    w = max([len(v) for v in values] + [len(n) for n in names] + [0])
    per_line = max(1, width // (w + 1))
    lines = []
    for start in range(0, len(values), per_line):
        chunk = range(start, min(start + per_line, len(values)))
        lines.append(" ".join(names[k].rjust(w) for k in chunk).rstrip())
        lines.append(" ".join(values[k].rjust(w) for k in chunk).rstrip())
    return lines


def char_matrix_lines(
    cells: Sequence[Sequence[str]],
    colnames: Sequence[str],
    rownames: Sequence[str] | None = None,
    right: bool = False,
    width: int = LINE_WIDTH,
) -> list[str]:
    """R's ``print(<character matrix>, quote = FALSE, right = right)``.

    Row names are left-justified; each column is as wide as its widest entry or header and
    justified left (R's default for strings) or right; columns that do not fit in ``width``
    continue in a second block, as R splits wide matrices. Trailing blanks are dropped.
    """
    nrow = len(cells)
    rownames = list(rownames) if rownames is not None else [""] * nrow
    rw = max([len(r) for r in rownames] + [0])
    ncol = len(colnames)
    colw = [max([len(colnames[j])] + [len(cells[i][j]) for i in range(nrow)]) for j in range(ncol)]
    just = (lambda s, n: s.rjust(n)) if right else (lambda s, n: s.ljust(n))
    blocks: list[list[int]] = []
    cur: list[int] = []
    used = rw
    for j in range(ncol):
        if cur and used + 1 + colw[j] > width:
            blocks.append(cur)
            cur, used = [], rw
        cur.append(j)
        used += 1 + colw[j]
    if cur or not blocks:
        blocks.append(cur)
    lines: list[str] = []
    for block in blocks:
        head = " " * rw + "".join(" " + just(colnames[j], colw[j]) for j in block)
        lines.append(head.rstrip())
        for i in range(nrow):
            row = rownames[i].ljust(rw) + "".join(" " + just(cells[i][j], colw[j]) for j in block)
            lines.append(row.rstrip())
    return lines


def format_pval(pv: Sequence[float | None], digits: int, eps: float = 2.220446049250313e-16) -> list[str]:
    """R's ``format.pval(pv, digits, eps)`` as ``printCoefmat`` calls it.

    p-values of 1e-3 and above and those below are formatted as two separate groups;
    values below ``eps`` print as ``<2e-16``.

    >>> format_pval([0.0123, 0.5, 1e-20], digits=3)
    ['0.0123', '0.5000', '<2e-16']
    """
    out = ["NA"] * len(pv)
    ok = [i for i, p in enumerate(pv) if p is not None and not math.isnan(p)]
    big = [i for i in ok if pv[i] >= eps]
    small = [i for i in ok if pv[i] < eps]
    rr: dict[int, str] = {}
    if big:
        fixp = [i for i in big if pv[i] == 0 or math.floor(math.log10(pv[i])) >= -3]
        expp = [i for i in big if i not in fixp]
        for group in (fixp, expp):
            if group:
                for i, s in zip(group, format_real([pv[i] for i in group], digits=digits)):
                    rr[i] = s
        out_big = {i: rr[i] for i in big}
        for i, s in out_big.items():
            out[i] = s
    if small:
        d = max(1, digits - 2)
        if big:
            nc = max(len(rr[i]) for i in big)
            if d > 1 and d + 6 > nc:
                d = max(1, nc - 7)
            sep = "" if (d == 1 and nc <= 6) else " "
        else:
            sep = "" if d == 1 else " "
        txt = "<" + sep + format_real([eps], digits=d)[0].strip()
        for i in small:
            out[i] = txt
    return out


def strwrap(text: str, width: int, exdent: int = 0) -> list[str]:
    """R's ``strwrap(text, width, exdent = exdent)`` for one paragraph: words filled greedily
    into lines shorter than ``width``; lines after the first indented by ``exdent``.

    >>> strwrap("Generalized linear mixed model fit by maximum likelihood (Laplace Approximation)", 78, 2)
    ['Generalized linear mixed model fit by maximum likelihood (Laplace', '  Approximation)']
    """
    words = text.split()
    lines: list[str] = []
    cur = ""
    for w in words:
        indent = 0 if not lines else exdent
        cand = w if not cur else f"{cur} {w}"
        if cur and indent + len(cand) >= width:
            lines.append(" " * indent + cur)
            cur = w
        else:
            cur = cand
    if cur:
        lines.append(" " * (0 if not lines else exdent) + cur)
    return lines


def cat_fill_lines(items: Sequence[str], width: int = LINE_WIDTH) -> list[str]:
    """R's ``cat(..., sep = "", fill = TRUE)``: the items on one line, a new line begun before
    an item that would pass ``width``."""
    lines: list[str] = []
    cur = ""
    for k, item in enumerate(items):
        if k > 0 and len(cur) + len(item) > width:
            lines.append(cur)
            cur = ""
        cur += item
    lines.append(cur)
    return [ln.rstrip() for ln in lines]


def cat_sep_fill_lines(items: Sequence[str], width: int = LINE_WIDTH) -> list[str]:
    """R's ``cat(..., fill = TRUE)`` with its default separator " ": an item goes on a new
    line when the width so far, the item and a separator would pass ``width`` (R counts a
    separator after every item)."""
    lines: list[str] = []
    cur, used = "", 0
    for k, item in enumerate(items):
        if k > 0:
            cur += " "
        if used and used + len(item) + 1 > width:
            lines.append(cur)
            cur, used = "", 0
        cur += item
        used += len(item) + 1
    lines.append(cur)
    return [ln.rstrip() for ln in lines]


def r_code_lines(text: str) -> list[str]:
    """R's ``deparse()`` of an expression or a formula given as text: R's spacing
    (``(Days | Subject)``, ``a:b``, ``I(x^2)``) and its line breaks after 60 characters;
    the text itself when it does not parse.

    >>> r_code_lines("Reaction~Days+(Days|Subject)")
    ['Reaction ~ Days + (Days | Subject)']
    """
    from multilevel.errors import MultilevelError
    from multilevel.formula import deparse_lines, parse_expression

    try:
        return deparse_lines(parse_expression(text))
    except (MultilevelError, RecursionError, TypeError):
        return [text]


def formula_line(label: str, formula: str) -> list[str]:
    """lme4's ``Formula:`` line (``cat("Formula:", deparse(formula), fill = TRUE)``): the
    formula as R deparses it, its pieces filled to the line width.

    >>> formula_line("Formula:", "y~x+(1|g)")
    ['Formula: y ~ x + (1 | g)']
    """
    return cat_sep_fill_lines([label] + r_code_lines(formula))


def call_lines(fn: str, args: Sequence[str]) -> list[str]:
    """A call as R prints it (``deparse(call)``): ``lm(formula = y ~ x, data = d)``, broken
    after 60 characters as R breaks it.

    >>> call_lines("lmer", ["formula = y~x+(1|g)", "data = d"])
    ['lmer(formula = y ~ x + (1 | g), data = d)']
    """
    return r_code_lines(f"{fn}({', '.join(args)})")


def method_title_lines(mtit: str, cls: str, width: int = LINE_WIDTH) -> list[str]:
    """lme4's ``.prt.methTit``: ``title ['class']`` on one line when it fits in ``width``,
    else the title wrapped at ``width - 2`` (indent 2) followed by `` [class]`` as ``cat``
    fills it, which is how lmerTest's long titles come out.

    >>> method_title_lines("Linear mixed model fit by REML", "lmerMod")
    ["Linear mixed model fit by REML ['lmerMod']"]
    >>> method_title_lines("Linear mixed model fit by REML. t-tests use Satterthwaite's method",
    ...                    "lmerModLmerTest")
    ["Linear mixed model fit by REML. t-tests use Satterthwaite's method [", 'lmerModLmerTest]']
    """
    if len(mtit) + 5 + len(cls) <= width:
        return [f"{mtit} ['{cls}']"]
    return cat_fill_lines(strwrap(mtit, width - 2, 2) + [" [", cls, "]"], width)


#: the legend ``printCoefmat`` and ``anova`` print under a table with stars
SIGNIF_LEGEND = "Signif. codes:  0 '***' 0.001 '**' 0.01 '*' 0.05 '.' 0.1 ' ' 1"


def stars_of(p: float | None) -> str:
    """R's ``symnum`` of a p-value at cutpoints 0.001, 0.01, 0.05, 0.1: ``***`` to `` ``."""
    if p is None or math.isnan(p):
        return ""
    for cut, sym in ((0.001, "***"), (0.01, "**"), (0.05, "*"), (0.1, "."), (1.0, " ")):
        if p <= cut:
            return sym
    return " "


def coefmat_cells(
    columns: Sequence[str],
    values: Sequence[Sequence[float | None]],
    digits: int = 4,
    has_pvalue: bool = False,
    signif_stars: bool = True,
) -> tuple[list[str], list[list[str]], list[str]]:
    """The formatted cells of R's ``printCoefmat()``: (column names, cells, legend lines).

    As in R, the test statistic is the last column before the p-value (``tst.ind = k + 1``
    with ``k = ncol - has.Pvalue - 1``) and every column before it is formatted together
    with the estimates (``cs.ind = 1:k``): Estimate | Std. Error | t value [| Pr(>|t|)] for
    lme4, and Estimate | Std. Error | df | t value | Pr(>|t|) for lmerTest, whose df are
    formatted with the estimates and standard errors.

    The ``cs.ind`` columns are rounded to ``digits - (1 + floor(log10(smallest |value|)))``
    decimals and then formatted together; the test statistic is rounded to ``digits - 1``
    decimals; a value that is not 0 but would print as 0 is shown with one digit fewer in its
    own format.

    >>> cols, cells, _ = coefmat_cells(["Estimate", "Std. Error", "df", "t value", "Pr(>|t|)"],
    ...                                [[251.405, 6.8246, 17.0, 36.838, 1.17e-17]], has_pvalue=True)
    >>> [c.strip() for c in cells[0]]
    ['251.405', '6.825', '17.000', '36.84', '<2e-16', '***']
    """
    nr, nc = len(values), len(columns)
    ncs = nc - (1 if has_pvalue else 0) - 1  # R's k: columns formatted with the estimates
    tst = ncs
    cells = [["" for _ in range(nc)] for _ in range(nr)]
    coef_se = [values[i][j] for i in range(nr) for j in range(ncs)]
    finite = [abs(v) for v in coef_se if v is not None and math.isfinite(v) and v != 0]
    if finite:
        digmin = 1 + math.floor(math.log10(min(finite)))
        nd = max(1, digits - digmin)
        rounded = [_r_round(v, nd) if v is not None else None for v in coef_se]
        fmt = format_real(rounded, digits=digits)
    else:
        fmt = format_real(coef_se, digits=digits)
    for i in range(nr):
        for j in range(ncs):
            cells[i][j] = fmt[i * ncs + j]
    dig_tst = max(1, min(5, digits - 1))
    tv = [values[i][tst] for i in range(nr)]
    tfmt = format_real([_r_round(v, dig_tst) if v is not None else None for v in tv], digits=digits)
    for i in range(nr):
        cells[i][tst] = tfmt[i]
    # an entry that is not zero but prints as zero gets its own format with fewer digits
    for i in range(nr):
        for j in range(ncs):
            v = values[i][j]
            txt = cells[i][j].strip()
            if v is None or not math.isfinite(v) or txt in ("NA", "NaN", "Inf", "-Inf"):
                continue
            if (v == 0) != (float(txt) == 0):
                cells[i][j] = format_real([v], digits=max(1, digits - 1))[0]
    for i in range(nr):
        for j in range(nc):
            v = values[i][j]
            if v is not None and isinstance(v, float) and math.isnan(v):
                cells[i][j] = "NaN"
            elif v is None:
                cells[i][j] = "NA"
    legend: list[str] = []
    colnames = list(columns)
    if has_pvalue:
        pv = [values[i][nc - 1] for i in range(nr)]
        pf = format_pval(pv, digits=dig_tst)
        for i in range(nr):
            cells[i][nc - 1] = pf[i]
        if signif_stars and any(p is not None and not math.isnan(p) and p < 0.1 for p in pv):
            colnames.append("")
            for i in range(nr):
                cells[i].append(stars_of(pv[i]))
            legend = ["---", SIGNIF_LEGEND]
    # right-justify numbers, but the stars column is left-justified in R: pad it ourselves
    if len(colnames) > nc:
        w = max(len(c[-1]) for c in cells)
        for c in cells:
            c[-1] = c[-1].ljust(w)
    return colnames, cells, legend


def coefmat_lines(
    rows: Sequence[str],
    columns: Sequence[str],
    values: Sequence[Sequence[float | None]],
    digits: int = 4,
    has_pvalue: bool = False,
    signif_stars: bool = True,
) -> list[str]:
    """R's ``printCoefmat()`` as lines of text (see :func:`coefmat_cells`).

    >>> print("\\n".join(coefmat_lines(["(Intercept)"], ["Estimate", "Std. Error", "t value"],
    ...                               [[1527.5, 19.383, 78.804]])))
                Estimate Std. Error t value
    (Intercept)  1527.50      19.38    78.8
    """
    colnames, cells, legend = coefmat_cells(columns, values, digits, has_pvalue, signif_stars)
    return char_matrix_lines(cells, colnames, rows, right=True) + legend
