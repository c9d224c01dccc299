"""The formula layer: lme4 syntax parsed and expanded as R and lme4 do it."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from multilevel.errors import FormulaError
from multilevel.formula import (NumericExpressions, deparse, format_r_number, parse_expression,
                                parse_formula, to_python)


def bars(text):
    return [(b.text, b.group, b.group_vars) for b in parse_formula(text).bars]


# ---------------------------------------------------------------------------------------------
# fixed part: R's terms()
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("formula, intercept, labels", [
    ("y ~ x + (1|g)", True, ["x"]),
    ("y ~ 1 + (1|g)", True, []),
    ("y ~ 0 + x + (1|g)", False, ["x"]),
    ("y ~ x + 0 + (1|g)", False, ["x"]),
    ("y ~ -1 + x + (1|g)", False, ["x"]),
    ("y ~ x - 1 + (1|g)", False, ["x"]),
    ("y ~ 0 + x + 1 + (1|g)", True, ["x"]),
    ("y ~ a*b + (1|g)", True, ["a", "b", "a:b"]),
    ("y ~ a*b*c + (1|g)", True, ["a", "b", "c", "a:b", "a:c", "b:c", "a:b:c"]),
    ("y ~ (a + b + c)^2 + (1|g)", True, ["a", "b", "c", "a:b", "a:c", "b:c"]),
    ("y ~ a*b - a:b + (1|g)", True, ["a", "b"]),
    ("y ~ a/b + (1|g)", True, ["a", "a:b"]),
    ("y ~ b %in% a + (1|g)", True, ["b:a"]),
    ("y ~ b:a + a + (1|g)", True, ["a", "b:a"]),  # variable order = first appearance
    # R writes an interaction's variables in order of first appearance: cses before sector
    ("mAch ~ meanses * cses + sector * cses + (1 + cses | school)", True,
     ["meanses", "cses", "sector", "meanses:cses", "cses:sector"]),
    ("r2 ~ (Anger + Gender + btype + situ) + (1 | id) + (1 | item)", True,
     ["Anger", "Gender", "btype", "situ"]),
    ("height ~ age + I(age^2) + (age + I(age^2) | Subject)", True, ["age", "I(age^2)"]),
    ("y ~ log(x+1) + poly(x,2) + scale(z) + (1|g)", True, ["log(x + 1)", "poly(x, 2)", "scale(z)"]),
    ("y ~ x + x + (1|g)", True, ["x"]),
    ("y ~ factor(k) + as.factor(k) + (1|g)", True, ["factor(k)", "as.factor(k)"]),
    ("y ~ x:a + (1|g)", True, ["x:a"]),
    ("Reaction ~ Days|Subject", True, []),  # a bar at top level: lme4 fixed part is ~1
])
def test_fixed_terms(formula, intercept, labels):
    f = parse_formula(formula)
    assert f.fixed.intercept is intercept
    assert f.fixed.labels == labels


def test_offsets_response_and_columns():
    f = parse_formula("cbind(s, n - s) ~ x + offset(log(e)) + offset(z/10) + (1 | g)")
    assert f.response_text == "cbind(s, n - s)"
    assert [deparse(o) for o in f.fixed.offsets] == ["log(e)", "z/10"]
    assert f.fixed.labels == ["x"]
    assert f.columns == ["s", "n", "x", "e", "z", "g"]
    assert parse_formula("log(y) ~ x + (1|g)").response_text == "log(y)"
    assert parse_formula("~ (1 | Subject)").response is None


# ---------------------------------------------------------------------------------------------
# bars: findbars, expandDoubleVerts, expandSlash
# ---------------------------------------------------------------------------------------------

def test_bars_basic_forms():
    assert bars("y ~ x + (x | g)") == [("x | g", "g", ("g",))]
    f = parse_formula("y ~ (x | g) + (0 + x | h) + (-1 + x | k) + (1 | g)")
    lhs = [(b.lhs.intercept, b.lhs.labels) for b in f.bars]
    assert lhs == [(True, ["x"]), (False, ["x"]), (False, ["x"]), (True, [])]


def test_double_bar_splits_per_term():
    assert [b.text for b in parse_formula("y ~ Days + (Days || Subject)").bars] == \
        ["1 | Subject", "0 + Days | Subject"]
    f = parse_formula("y ~ (1 + x + f || g)")
    assert [b.text for b in f.bars] == ["1 | g", "0 + x | g", "0 + f | g"]
    assert [(b.lhs.intercept, b.lhs.labels) for b in f.bars] == \
        [(True, []), (False, ["x"]), (False, ["f"])]
    assert [b.text for b in parse_formula("y ~ (0 + x || g)").bars] == ["0 + x | g"]
    assert [b.text for b in parse_formula("y ~ (x*z || g)").bars] == \
        ["1 | g", "0 + x | g", "0 + z | g", "0 + x:z | g"]


def test_slash_expands_like_lme4():
    # lme4 names the inner grouping factor cask:batch (pastes reference case)
    assert bars("strength ~ 1 + (1 | batch/cask)") == [
        ("1 | cask:batch", "cask:batch", ("cask", "batch")), ("1 | batch", "batch", ("batch",))]
    assert bars("y ~ (1 | a/b/c)") == [
        ("1 | c:(b:a)", "c:(b:a)", ("c", "b", "a")),
        ("1 | b:a", "b:a", ("b", "a")), ("1 | a", "a", ("a",))]
    assert bars("y ~ (x || a/b)") == [
        ("1 | b:a", "b:a", ("b", "a")), ("1 | a", "a", ("a",)),
        ("0 + x | b:a", "b:a", ("b", "a")), ("0 + x | a", "a", ("a",))]


def test_interaction_grouping_and_crossed_terms():
    assert bars("angle ~ recipe * temp + (1 | recipe:replicate)") == \
        [("1 | recipe:replicate", "recipe:replicate", ("recipe", "replicate"))]
    assert [b.group for b in parse_formula("y ~ (1|a) + (1|b) + (x|a)").bars] == ["a", "b", "a"]


def test_factor_call_as_grouping_factor():
    assert bars("y ~ x + (1 | factor(g))") == [("1 | factor(g)", "factor(g)", ("g",))]
    assert bars("y ~ x + (1 | factor(a):b)") == [("1 | factor(a):b", "factor(a):b", ("a", "b"))]


def test_bar_inside_parentheses_and_unary_plus():
    assert [b.text for b in parse_formula("y ~ x + ((1 | g))").bars] == ["1 | g"]
    assert [b.text for b in parse_formula("y ~ x + + (1 | g)").bars] == ["1 | g"]
    f = parse_formula("y ~ (x + (1 | g))")
    assert f.fixed.labels == ["x"] and [b.text for b in f.bars] == ["1 | g"]


# ---------------------------------------------------------------------------------------------
# errors: message and 0-based position
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("formula, position, fragment", [
    ("y ~ x + (1 | g", 14, "missing ')'"),
    ("y ~ x + (1 | g))", 15, "unmatched ')'"),
    ("y x + (1|g)", 2, "missing operator"),
    ("y ~ foo(x) + (1|g)", 4, "unknown function 'foo'"),
    ("y ~ x * (1|g)", 10, "must be added to the formula with '+'"),
    ("y ~ 2 + x + (1|g)", 4, "the number 2 cannot be a term"),
    ("y ~ x + (1 | log(g))", 13, "grouping factor must be a variable"),
    ("y ~ x + ( | g)", 10, "unexpected '|'"),
    ("y ~ x + (0 | g)", 9, "no columns"),
    ("y ~ x $ z", 6, "'$' is not supported"),
    ("y ~ x + (1|g) - (1|h)", 18, "cannot be subtracted"),
    ("y ~ . + (1|g)", 4, "'.'"),
    ("y ~ x^2.5 + (1|g)", 6, "invalid power"),
    ("", 0, "empty formula"),
    ("y ~ ", 2, "missing right-hand side of '~'"),
    ("y ~ x ~ z", 6, "only one '~'"),
    ("y + x", 0, "needs '~'"),
    ("y ~ x + `a b", 8, "unterminated backtick"),
    ("y ~ x + 'a", 8, "unterminated string"),
    ("y ~ x + \"s\" + (1|g)", 8, "string cannot be a model term"),
    ("y ~ log(factor(z)) + (1|g)", 8, "must be a term of its own"),
    ("y ~ x + (1 | a/(b/c))", 15, "unparseable grouping factor"),
    ("y ~ x + (1 | g) + ;", 18, "unexpected character"),
    ("y ~ x + log(x, ) + (1|g)", 15, "missing argument"),
    ("cbind(a) ~ x + (1|g)", 0, "two arguments"),
    ("y | g ~ x", 2, "response cannot contain '|'"),
])
def test_errors_have_positions(formula, position, fragment):
    with pytest.raises(FormulaError) as info:
        parse_formula(formula)
    err = info.value
    assert err.position == position, (err.position, str(err))
    assert fragment in str(err)
    # the message shows the formula with a caret under the position
    lines = str(err).splitlines()
    assert lines[-2] == "  " + formula
    assert lines[-1] == "  " + " " * position + "^"


def test_formula_error_is_value_error():
    with pytest.raises(ValueError):
        parse_formula("y ~ (")


# ---------------------------------------------------------------------------------------------
# deparse, numbers, translation to Python
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("src, expected", [
    ("I(age ^ 2)", "I(age^2)"),
    ("I(age**2)", "I(age^2)"),
    ("log(x+1)", "log(x + 1)"),
    ("poly(x,2)", "poly(x, 2)"),
    ("poly(x, degree=2, raw=TRUE)", "poly(x, degree = 2, raw = TRUE)"),
    ("offset(verbal/10)", "offset(verbal/10)"),
    ("a:b", "a:b"),
    ("I(x*2-1)", "I(x * 2 - 1)"),
    ("I(-x)", "I(-x)"),
    ("x>=3&y<2", "x >= 3 & y < 2"),
    ("`my var` + b", "`my var` + b"),
    ("I(1e5 * x)", "I(1e+05 * x)"),
    ("I(0.50*x)", "I(0.5 * x)"),
    ("relevel(f, 'b')", 'relevel(f, "b")'),
    ("x %in% y", "x %in% y"),
])
def test_deparse_like_r(src, expected):
    assert deparse(parse_expression(src)) == expected


@pytest.mark.parametrize("x, text", [
    (2.0, "2"), (0.5, "0.5"), (100000.0, "1e+05"), (123456.0, "123456"), (0.1, "0.1"),
    (1e-4, "1e-04"), (-2.5, "-2.5"), (308.0, "308"), (1 / 3, "0.333333333333333"),
    (1e15, "1e+15"), (0.0, "0"),
])
def test_format_r_number(x, text):
    assert format_r_number(x) == text


def test_r_precedence():
    # -2^2 is -(2^2); -1:2 is (-1):2 ; a:b^2 is a:(b^2)
    e = parse_expression("-2^2")
    assert e.op == "-" and e.operand.op == "^"
    e = parse_expression("-1:2")
    assert e.op == ":" and e.left.op == "-"
    e = parse_expression("y ~ a + b:c^2")
    assert e.right.right.op == ":" and e.right.right.right.op == "^"


def test_to_python_translation():
    ident = lambda n: n  # noqa: E731
    assert to_python(parse_expression("I(age^2)"), ident) == "((age ** 2.0))"
    assert to_python(parse_expression("log(x, 2)"), ident) == "(np.log(x) / np.log(2.0))"
    assert to_python(parse_expression("exp(x) + sqrt(abs(z))"), ident) == \
        "(np.exp(x) + np.sqrt(np.abs(z)))"
    assert to_python(parse_expression("poly(x, 3, raw = TRUE)"), ident) == \
        "_ml_poly(x, degree=3, raw=True)"
    assert to_python(parse_expression("scale(x)"), ident) == "_ml_scale(x)"
    assert to_python(parse_expression("I(x %% 2 == 0)"), ident) == "((np.mod(x, 2.0) == 0.0))"
    # R constants when no column has that name
    assert to_python(parse_expression("I(x * pi)"), lambda n: n if n == "x" else None) == \
        "((x * np.pi))"


def test_numeric_expressions_keep_state_for_new_data():
    x = np.array([1.0, 2.0, 3.0, 4.0, 6.0])
    ev = NumericExpressions([parse_expression(s) for s in
                             ["scale(x)", "poly(x, 2)", "I(x^2)", "log(x)"]])
    sc, pl, sq, lg = ev.fit({"x": x})
    assert ev.suffixes == [[""], ["1", "2"], [""], [""]]
    np.testing.assert_allclose(sc[:, 0], (x - x.mean()) / x.std(ddof=1))
    np.testing.assert_allclose(pl.T @ pl, np.eye(2), atol=1e-12)  # R's orthonormal poly
    np.testing.assert_allclose(sq[:, 0], x ** 2)
    new = np.array([10.0])
    sc2, pl2, sq2, lg2 = ev.transform({"x": new})
    # scale() re-uses the fitting data's centre and scale, poly() its coefficients
    np.testing.assert_allclose(sc2[:, 0], (new - x.mean()) / x.std(ddof=1))
    assert pl2.shape == (1, 2)
    np.testing.assert_allclose(lg2[:, 0], np.log(new))


def test_r_poly_matches_r_algorithm():
    # R: poly() centres x, takes the QR of the Vandermonde matrix and scales columns to norm 1
    x = np.array([0.3, 1.2, 2.0, 2.2, 5.1, 7.7, 8.0])
    xc = x - x.mean()
    Q, R = np.linalg.qr(np.vander(xc, 4, increasing=True))
    Z = (Q * np.diag(R))[:, 1:]
    Z /= np.sqrt((Z ** 2).sum(axis=0))
    got = NumericExpressions([parse_expression("poly(x, 3)")]).fit({"x": x})[0]
    np.testing.assert_allclose(got, Z, atol=1e-12)


# ---------------------------------------------------------------------------------------------
# properties
# ---------------------------------------------------------------------------------------------

_names = st.sampled_from(["x", "y1", "a.b", "z_2", "`odd name`"])
_leaf = st.one_of(_names, st.integers(0, 9).map(str), st.sampled_from(["0.5", "2.25", "1e3"]))


def _expr(depth):
    if depth == 0:
        return _leaf
    sub = _expr(depth - 1)
    return st.one_of(
        _leaf,
        st.tuples(sub, st.sampled_from(["+", "-", "*", "/", "^", ":", "==", "<", "&", "%%"]), sub,
                  st.sampled_from(["", " ", "  "]))
        # "<" then a unary minus with no space is R's assignment arrow "<-", not a comparison
        .map(lambda t: f"{t[0]}{t[3] or (' ' if t[1] == '<' else '')}{t[1]}{t[3] or (' ' if t[1] == '<' else '')}{t[2]}"),
        sub.map(lambda s: f"({s})"),
        sub.map(lambda s: f"log({s})"),
        sub.map(lambda s: f"-{s}"),
    )


@settings(max_examples=200, deadline=None)
@given(_expr(3))
def test_deparse_is_a_fixed_point(src):
    once = deparse(parse_expression(src))
    assert deparse(parse_expression(once)) == once


@settings(max_examples=100, deadline=None)
@given(st.lists(st.sampled_from(["a", "b", "c", "d"]), min_size=1, max_size=4, unique=True))
def test_crossing_gives_all_interactions(vars_):
    # a*b*c... has 2^k - 1 terms, sorted by order
    f = parse_formula("y ~ " + "*".join(vars_) + " + (1|g)")
    assert len(f.fixed.terms) == 2 ** len(vars_) - 1
    orders = [t.order for t in f.fixed.terms]
    assert orders == sorted(orders)
    # expanding the written-out terms gives the same terms
    g = parse_formula("y ~ " + " + ".join(f.fixed.labels) + " + (1|g)")
    assert g.fixed.labels == f.fixed.labels


def test_deparse_lines_match_r():
    # R 4.2.2: deparse() of these expressions (width.cutoff = 60)
    from multilevel.formula import deparse_lines, parse_expression

    cases = {
        "y~poly(x,2)+I(x^2)+a:b+a/b-1+(0+x||g)+scale(z, center=TRUE, scale=FALSE)+offset(log(n))": [
            "y ~ poly(x, 2) + I(x^2) + a:b + a/b - 1 + (0 + x || g) + scale(z, ",
            "    center = TRUE, scale = FALSE) + offset(log(n))"],
        " + ".join(f"x{i}" for i in range(30)): [
            "x0 + x1 + x2 + x3 + x4 + x5 + x6 + x7 + x8 + x9 + x10 + x11 + ",
            "    x12 + x13 + x14 + x15 + x16 + x17 + x18 + x19 + x20 + x21 + ",
            "    x22 + x23 + x24 + x25 + x26 + x27 + x28 + x29"],
        "lmer(formula = mAch ~ meanses * cses + sector * cses + (1 + cses | school), data = hsb)": [
            "lmer(formula = mAch ~ meanses * cses + sector * cses + (1 + cses | ",
            "    school), data = hsb)"],
        "Reaction~Days+(Days|Subject)": ["Reaction ~ Days + (Days | Subject)"],
    }
    for text, r_lines in cases.items():
        assert deparse_lines(parse_expression(text)) == r_lines


def test_summary_formula_line_fills_like_lme4():
    # lme4's cat("Formula:", deparse(f), fill = TRUE) for a formula R deparses in two pieces
    from multilevel.report.rformat import formula_line

    f = ("y ~ aaaaaaa + bbbbbbbbb + ccccccccc + ddddddddd + eeeeeeee + fffffffff + ggggggggg + "
         "hhhhhhhhh + (1 | g) + (1|h)")
    assert formula_line("Formula:", f) == [
        "Formula: y ~ aaaaaaa + bbbbbbbbb + ccccccccc + ddddddddd + eeeeeeee +",
        "    fffffffff + ggggggggg + hhhhhhhhh + (1 | g) + (1 | h)"]
