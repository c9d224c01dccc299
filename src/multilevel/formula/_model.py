"""lme4 formulas: split the random-effects bars from the fixed part and expand both into terms.

The fixed part and the left-hand side of every bar are expanded into *terms* with R's own
algebra (``terms.formula``): ``a*b`` -> ``a + b + a:b``, ``(a+b)^2``, ``a/b`` -> ``a + a:b``,
``%in%``, ``-``, ``0``/``1``/``-1``, ``offset()``; terms are ordered by interaction order and
then by appearance, and the variables of a term are written in the order they first appear in
the formula (so ``sector*cses`` after ``meanses*cses`` gives the term ``cses:sector``). We do
this ourselves rather than asking formulaic because R and formulaic disagree on term order,
on labels and on which factor of an interaction gets full dummy coding, and coefficient
names must match lme4's.

Bars follow lme4's ``findbars``: ``(x || g)`` becomes ``(1 | g) + (0 + x | g)`` (one bar per
term, as ``expandDoubleVerts`` does), and ``(1 | a/b)`` becomes ``(1 | b:a) + (1 | a)``
(``expandSlash``; lme4 names the inner grouping ``b:a``). lme4 2.0's covariance structures wrap
a bar, ``diag(x | g)``, ``cs(x | g)``, ``ar1(0 + t | g)``, ``us(x | g)``: the structure's name
is recorded on every term the bar expands to (``BarTerm.structure``); the covariance layer
gives it meaning. Anywhere else these names are errors (``CovarianceStructureError``).
"""
from __future__ import annotations

import functools
from functools import cached_property

from dataclasses import dataclass

from multilevel.errors import CovarianceStructureError, FormulaError
from multilevel.formula._rsyntax import (BinOp, Call, Name, Node, Num, Paren, Str, Unary, deparse, names_in,
                       parse_expression)

__all__ = ["Term", "ModelTerms", "BarTerm", "ParsedFormula", "parse_formula"]

# Functions a formula may call. Numeric ones are evaluated through formulaic (see _python.py);
# factor-valued ones are encoded by the design layer; offset/cbind have fixed places.
NUMERIC_FUNCTIONS = frozenset({
    "I", "log", "log10", "log2", "log1p", "exp", "expm1", "sqrt", "abs", "sin", "cos", "tan",
    "asin", "acos", "atan", "sinh", "cosh", "tanh", "floor", "ceiling", "trunc", "round",
    "sign", "pmin", "pmax", "as.numeric", "as.double", "as.integer", "ifelse", "scale", "poly",
    # centring (multilevel's own, not R's): see _python.py / _centering.py
    "center", "group_mean",
})
FACTOR_FUNCTIONS = frozenset({"factor", "as.factor", "relevel"})
SPECIAL_FUNCTIONS = frozenset({"offset", "cbind"})
CONSTANTS = frozenset({"TRUE", "FALSE", "T", "F", "pi", "Inf", "NA", "NaN"})
LOGICAL_OPS = frozenset({"==", "!=", "<", ">", "<=", ">=", "&", "&&", "|", "||"})


@dataclass(frozen=True)
class Term:
    """One model term: the product of its variables (``"cses:sector"``, ``"I(age^2)"``)."""

    label: str
    variables: tuple[Node, ...]

    @property
    def order(self) -> int:
        return len(self.variables)


@dataclass(frozen=True)
class ModelTerms:
    """An expanded one-sided model formula: what R's ``terms()`` returns.

    intercept: whether the model matrix starts with ``(Intercept)``.
    terms:     terms in R's order (by interaction order, then appearance).
    offsets:   expressions of ``offset(...)`` terms (fixed part only).
    variables: distinct variables in order of first appearance (R's ``variables`` list).
    """

    intercept: bool
    terms: tuple[Term, ...]
    offsets: tuple[Node, ...] = ()
    variables: tuple[Node, ...] = ()

    @property
    def labels(self) -> list[str]:
        return [t.label for t in self.terms]

    @property
    def text(self) -> str:
        """The terms written out as an R formula right-hand side (``"1 + Days"``)."""
        parts = (["1"] if self.intercept else ["0"]) + self.labels
        parts += [f"offset({deparse(o)})" for o in self.offsets]
        if not self.intercept and len(parts) > 1:
            return "0 + " + " + ".join(parts[1:])
        return " + ".join(parts)


@dataclass(frozen=True)
class BarTerm:
    """One random-effects term ``(lhs | group)`` after ``||`` and ``/`` expansion.

    lhs:        the expanded left-hand side (its model matrix gives the Z columns).
    lhs_text:   R's text of the left-hand side (``"1 + Days"``, ``"0 + Days"``).
    group:      lme4's name of the grouping factor (``"Subject"``, ``"cask:batch"``).
    group_vars: the data columns whose interaction forms the grouping factor, outermost first.
    pos:        offset of the term in the formula text (for messages).
    structure:  the covariance structure, lme4 2.0's name of the function wrapping the bar:
                ``"us"`` (plain ``(x | g)``), ``"diag"``, ``"cs"``, ``"ar1"``.
    """

    lhs: ModelTerms
    lhs_text: str
    group: str
    group_vars: tuple[str, ...]
    pos: int = 0
    structure: str = "us"

    @property
    def text(self) -> str:
        """lme4's name of the term, e.g. ``"Days | Subject"``, ``"cs(0 + f | g)"``."""
        bar = f"{self.lhs_text} | {self.group}"
        return bar if self.structure == "us" else f"{self.structure}({bar})"


@dataclass(frozen=True)
class ParsedFormula:
    """A parsed lme4 formula.

    >>> f = parse_formula("Reaction ~ Days + (Days || Subject)")
    >>> f.response_text, f.fixed.labels, [b.text for b in f.bars]
    ('Reaction', ['Days'], ['1 | Subject', '0 + Days | Subject'])
    """

    text: str
    response: Node | None
    fixed: ModelTerms
    bars: tuple[BarTerm, ...]

    @property
    def response_text(self) -> str | None:
        return None if self.response is None else deparse(self.response)

    @property
    def fixed_text(self) -> str:
        """The fixed-effects formula as R's ``nobars()`` would give it."""
        rhs = self.fixed.text
        return rhs if self.response is None else f"{self.response_text} ~ {rhs}"

    @property
    def columns(self) -> list[str]:
        """Names of the data columns the formula uses, in order of appearance."""
        return list(self._columns)

    @cached_property
    def _columns(self) -> tuple[str, ...]:
        # computed once per parsed formula (parse_formula caches those): every fit asks
        seen: dict[str, None] = {}
        nodes: list[Node] = []
        if self.response is not None:
            nodes.append(self.response)
        nodes += list(self.fixed.variables) + list(self.fixed.offsets)
        for b in self.bars:
            nodes += list(b.lhs.variables)
        for n in nodes:
            for nm in names_in(n):
                if nm.name not in CONSTANTS:
                    seen.setdefault(nm.name, None)
        for b in self.bars:
            for g in b.group_vars:
                seen.setdefault(g, None)
        return tuple(seen)


# --------------------------------------------------------------------------------------------
# R's term algebra (terms.formula)
# --------------------------------------------------------------------------------------------

class _TermAlgebra:
    """Expands one right-hand side; mirrors R's EncodeVars with its ``intercept``/``parity``."""

    def __init__(self, text: str, allow_offsets: bool, what: str):
        self.text = text
        self.allow_offsets = allow_offsets
        self.what = what
        self.vars: list[Node] = []
        self.index: dict[str, int] = {}
        self.intercept = True
        self.parity = True
        self.offsets: list[Node] = []

    # R first lists the variables in order of appearance (ExtractVars), then encodes terms
    def collect(self, node: Node) -> None:
        if isinstance(node, Paren):
            self.collect(node.inner)
        elif isinstance(node, BinOp) and node.op in ("+", "-", "*", "/", ":", "%in%"):
            self.collect(node.left)
            self.collect(node.right)
        elif isinstance(node, BinOp) and node.op == "^":
            self.collect(node.left)
        elif isinstance(node, Unary) and node.op in "+-":
            self.collect(node.operand)
        elif isinstance(node, Num):
            return
        elif isinstance(node, Call) and node.func == "offset":
            return  # offsets are not terms; their variables are collected separately
        else:
            if node.key not in self.index:
                self.index[node.key] = len(self.vars)
                self.vars.append(node)

    def encode(self, node: Node) -> list[frozenset[int]]:
        if isinstance(node, Paren):
            return self.encode(node.inner)
        if isinstance(node, Num):
            if node.value in (0.0, 1.0):
                one = node.value == 1.0
                self.intercept = one if self.parity else not one
                return []
            raise FormulaError(f"invalid model formula: the number {deparse(node)} cannot be a "
                               f"term (only 0, 1 and -1 switch the intercept)", self.text, node.pos)
        if isinstance(node, Unary) and node.op == "+":
            return self.encode(node.operand)
        if isinstance(node, Unary) and node.op == "-":
            self.parity = not self.parity
            self.encode(node.operand)
            self.parity = not self.parity
            return []
        if isinstance(node, BinOp):
            op = node.op
            if op == "+":
                return _unique(self.encode(node.left) + self.encode(node.right))
            if op == "-":
                left = self.encode(node.left)
                self.parity = not self.parity
                right = self.encode(node.right)
                self.parity = not self.parity
                return [t for t in left if t not in set(right)]
            if op == ":":
                left, right = self.encode(node.left), self.encode(node.right)
                return _unique([a | b for a in left for b in right])
            if op == "*":
                left, right = self.encode(node.left), self.encode(node.right)
                return _unique(left + right + [a | b for a in left for b in right])
            if op == "/":
                left, right = self.encode(node.left), self.encode(node.right)
                allleft = frozenset().union(*left) if left else frozenset()
                return _unique(left + [allleft | b for b in right])
            if op == "%in%":
                left, right = self.encode(node.left), self.encode(node.right)
                allright = frozenset().union(*right) if right else frozenset()
                return _unique([a | allright for a in left])
            if op == "^":
                p = node.right
                while isinstance(p, Paren):
                    p = p.inner
                if not isinstance(p, Num) or p.value < 1 or p.value != int(p.value):
                    raise FormulaError("invalid power in formula: use a whole number, e.g. "
                                       "(a + b)^2 (write I(x^2) for the square of a variable)",
                                       self.text, node.right.pos)
                left = self.encode(node.left)
                right = left
                for _ in range(int(p.value) - 1):
                    right = _unique([a | b for a in left for b in right])
                return right
            if op in ("|", "||"):
                raise FormulaError("random-effects terms (... | g) must be added to the formula "
                                   "with '+'", self.text, node.op_pos)
        if isinstance(node, Name) and node.name == ".":
            raise FormulaError("'.' (all other columns) is not supported; list the variables",
                               self.text, node.pos)
        if isinstance(node, Call) and node.func == "offset":
            if not self.allow_offsets:
                raise FormulaError(f"offset() is not allowed in {self.what}", self.text, node.pos)
            if len(node.args) != 1 or node.args[0].name is not None:
                raise FormulaError("offset() takes exactly one argument", self.text, node.pos)
            if node.key not in {o.key for o in self.offsets}:
                self.offsets.append(node.args[0].value)
            return []
        _check_variable(node, self.text)
        return [frozenset([self.index[node.key]])]

    def result(self, node: Node | None) -> ModelTerms:
        if node is not None:
            self.collect(node)
            raw = self.encode(node)
        else:
            raw = []
        raw = [t for t in raw if t]
        # R sorts terms by order, keeping the order of appearance within an order
        raw.sort(key=len)
        terms = []
        for t in raw:
            idx = sorted(t)
            variables = tuple(self.vars[i] for i in idx)
            terms.append(Term(":".join(v.key for v in variables), variables))
        used = sorted({i for t in raw for i in t})
        return ModelTerms(self.intercept, tuple(terms), tuple(self.offsets),
                          tuple(self.vars[i] for i in used))


def _unique(terms: list[frozenset[int]]) -> list[frozenset[int]]:
    seen: set[frozenset[int]] = set()
    out = []
    for t in terms:
        if t not in seen:
            seen.add(t)
            out.append(t)
    return out


def _check_variable(node: Node, text: str) -> None:
    """Reject what cannot be evaluated: unknown functions, strings, misplaced cbind/offset."""
    def walk(n: Node, top: bool) -> None:
        if isinstance(n, Call):
            if n.func in FACTOR_FUNCTIONS:
                if not top:
                    raise FormulaError(f"{n.func}() must be a term of its own, not part of an "
                                       f"expression", text, n.pos)
                if not n.args:
                    raise FormulaError(f"{n.func}() needs an argument", text, n.pos)
                walk(n.args[0].value, False)
                return
            if n.func in SPECIAL_FUNCTIONS:
                raise FormulaError(f"{n.func}() cannot be used here", text, n.pos)
            if n.func in COVARIANCE_STRUCTURES:
                raise CovarianceStructureError(f"{n.func}() is a covariance structure: it wraps a "
                                   f"random-effects term, {n.func}(x | g), and cannot be a term "
                                   f"of the fixed part", text, n.pos)
            if n.func not in NUMERIC_FUNCTIONS:
                supported = ", ".join(sorted(NUMERIC_FUNCTIONS | FACTOR_FUNCTIONS))
                raise FormulaError(f"unknown function '{n.func}' (supported: {supported})",
                                   text, n.pos)
            for a in n.args:
                walk(a.value, False)
        elif isinstance(n, BinOp):
            if n.op in ("|", "||"):
                raise FormulaError("random-effects terms (... | g) must be added to the formula "
                                   "with '+'", text, n.op_pos)
            if n.op == "~":
                raise FormulaError("unexpected '~'", text, n.op_pos)
            walk(n.left, False)
            walk(n.right, False)
        elif isinstance(n, Unary):
            if n.op == "~":
                raise FormulaError("unexpected '~'", text, n.pos)
            walk(n.operand, False)
        elif isinstance(n, Paren):
            walk(n.inner, False)
        elif isinstance(n, Str) and top:
            raise FormulaError("a string cannot be a model term", text, n.pos)

    walk(node, True)


def expand_terms(node: Node | None, text: str, *, allow_offsets: bool = True,
                 what: str = "the fixed part") -> ModelTerms:
    """Expand a right-hand side into R's terms (see :class:`ModelTerms`)."""
    return _TermAlgebra(text, allow_offsets, what).result(node)


# --------------------------------------------------------------------------------------------
# bars: findbars / nobars / expandDoubleVerts / expandSlash
# --------------------------------------------------------------------------------------------

def _is_bar(node: Node) -> bool:
    return isinstance(node, BinOp) and node.op in ("|", "||")


def _contains_bar(node: Node) -> BinOp | None:
    if _is_bar(node):
        return node
    children: list[Node] = []
    if isinstance(node, BinOp):
        children = [node.left, node.right]
    elif isinstance(node, Unary):
        children = [node.operand]
    elif isinstance(node, Paren):
        children = [node.inner]
    elif isinstance(node, Call):
        children = [a.value for a in node.args]
    for c in children:
        found = _contains_bar(c)
        if found is not None:
            return found
    return None


#: lme4 2.0's covariance structures: a call of one of these names wraps a bar, ``cs(x | g)``
COVARIANCE_STRUCTURES = ("us", "diag", "cs", "ar1")


def _structure_bar(node: Node, text: str) -> Call | None:
    """``cs(x | g)`` and friends: the call, checked (one bar argument, a known name); None
    when ``node`` is not a call wrapping a bar. A bar inside R's own functions (``I(a | b)``)
    is left to the caller's error, as before structures existed."""
    if not isinstance(node, Call):
        return None
    if _contains_bar(node) is None or node.func in NUMERIC_FUNCTIONS | FACTOR_FUNCTIONS | SPECIAL_FUNCTIONS:
        return None
    if node.func not in COVARIANCE_STRUCTURES:
        raise CovarianceStructureError(
            f"unknown covariance structure '{node.func}' in a random-effects term (known: "
            f"{', '.join(COVARIANCE_STRUCTURES)}; '(x | g)' is 'us')", text, node.pos)
    if len(node.args) != 1 or node.args[0].name is not None or \
            not _is_bar(_strip_parens(node.args[0].value)):
        raise CovarianceStructureError(f"{node.func}() takes one random-effects term, as in "
                                       f"{node.func}(x | g)", text, node.pos)
    inner = _strip_parens(node.args[0].value)
    if inner.op == "||":  # type: ignore[union-attr]
        hint = ("write diag(x | g) or (x || g)" if node.func == "diag" else
                "'||' would make the terms independent, which is diag(x | g)")
        raise CovarianceStructureError(f"{node.func}() takes a term with a single bar, "
                                       f"{node.func}(x | g): {hint}", text,
                                       inner.op_pos)  # type: ignore[union-attr]
    return node


def _split_bars(node: Node, text: str) -> tuple[Node | None, list[Node]]:
    """Separate bar terms from the fixed part along '+' chains and parentheses (lme4's
    findbars/nobars); a bar anywhere else is an error. A bar wrapped in a covariance
    structure (``cs(x | g)``) is kept as the call."""
    if _is_bar(node):
        return None, [node]
    if _structure_bar(node, text) is not None:
        return None, [node]
    if isinstance(node, Paren):
        if _is_bar(node.inner) or _structure_bar(node.inner, text) is not None:
            return None, [node.inner]
        fixed, bars = _split_bars(node.inner, text)
        if not bars:
            return node, []
        return (None if fixed is None else Paren(node.pos, node.end, inner=fixed)), bars
    if isinstance(node, BinOp) and node.op == "+":
        lf, lb = _split_bars(node.left, text)
        rf, rb = _split_bars(node.right, text)
        if lf is None:
            fixed = rf
        elif rf is None:
            fixed = lf
        else:
            fixed = BinOp(lf.pos, rf.end, op="+", left=lf, right=rf, op_pos=node.op_pos)
        return fixed, lb + rb
    if isinstance(node, Unary) and node.op == "+":
        inner, bars = _split_bars(node.operand, text)
        if not bars:
            return node, []
        return (None if inner is None else Unary(node.pos, node.end, op="+", operand=inner)), bars
    if isinstance(node, BinOp) and node.op == "-":
        lf, lb = _split_bars(node.left, text)
        bar = _contains_bar(node.right)
        if bar is not None:
            raise FormulaError("a random-effects term cannot be subtracted", text, bar.op_pos)
        if lf is None:
            return Unary(node.pos, node.end, op="-", operand=node.right), lb
        return BinOp(node.pos, node.end, op="-", left=lf, right=node.right,
                     op_pos=node.op_pos), lb
    bar = _contains_bar(node)
    if bar is not None:
        raise FormulaError("random-effects terms (... | g) must be added to the formula with '+'",
                           text, bar.op_pos)
    return node, []


def _strip_parens(node: Node) -> Node:
    while isinstance(node, Paren):
        node = node.inner
    return node


def _group_leaves(node: Node, text: str) -> Node:
    """Check that a grouping expression is a variable or an interaction of variables."""
    n = _strip_parens(node)
    if isinstance(n, Name):
        if n.name in CONSTANTS or n.name == ".":
            raise FormulaError(f"'{n.name}' cannot be a grouping factor", text, n.pos)
        return node
    if isinstance(n, BinOp) and n.op == ":":
        _group_leaves(n.left, text)
        _group_leaves(n.right, text)
        return node
    if isinstance(n, Call) and n.func in ("factor", "as.factor") and len(n.args) == 1 \
            and isinstance(_strip_parens(n.args[0].value), Name):
        return node  # a grouping variable is made a factor anyway (lme4 calls factor())
    raise FormulaError("a grouping factor must be a variable or an interaction of variables "
                       "(g, a:b, a/b)", text, node.pos)


def _slash_terms(node: Node, text: str):
    """lme4's slashTerms: ``a/b/c`` -> ((a, b), c); leaves are grouping expressions."""
    n = _strip_parens(node)
    if isinstance(n, BinOp) and n.op == "/":
        right = _strip_parens(n.right)
        if isinstance(right, BinOp) and right.op == "/":
            raise FormulaError("unparseable grouping factor: write a/b/c, not a/(b/c)",
                               text, n.right.pos)
        return (_slash_terms(n.left, text), _group_leaves(n.right, text))
    return _group_leaves(node, text)


def _make_interaction(x) -> list[Node]:
    """lme4's makeInteraction: (a, b) -> [b:a, a]; ((a, b), c) -> [c:(b:a), b:a, a]."""
    if not isinstance(x, tuple):
        return [x]
    inner = _make_interaction(x[0])
    first = inner[0]
    return [BinOp(x[1].pos, first.end, op=":", left=x[1], right=first, op_pos=x[1].end)] + inner


def _group_vars(node: Node) -> tuple[str, ...]:
    return tuple(nm.name for nm in names_in(node))


def _expand_bar(bar: Node, text: str) -> list[BarTerm]:
    structure = "us"
    if isinstance(bar, Call):  # cs(x | g): the structure applies to every expanded term
        structure = bar.func
        bar = _strip_parens(bar.args[0].value)
    assert isinstance(bar, BinOp)
    lhs_node, group_node = bar.left, bar.right
    groups = _make_interaction(_slash_terms(group_node, text))
    if bar.op == "||":
        # expandDoubleVerts: one uncorrelated bar for the intercept and for each term
        full = expand_terms(lhs_node, text, allow_offsets=False,
                            what="a random-effects term")
        pieces: list[tuple[ModelTerms, str]] = []
        if full.intercept:
            pieces.append((ModelTerms(True, (), (), ()), "1"))
        for t in full.terms:
            pieces.append((ModelTerms(False, (t,), (), t.variables), f"0 + {t.label}"))
    else:
        lhs = expand_terms(lhs_node, text, allow_offsets=False, what="a random-effects term")
        pieces = [(lhs, deparse(lhs_node))]
    out = []
    for lhs, lhs_text in pieces:
        if not lhs.intercept and not lhs.terms:
            raise FormulaError("random-effects term has no columns (its left-hand side is 0)",
                               text, bar.pos)
        for g in groups:
            out.append(BarTerm(lhs, lhs_text, deparse(g), _group_vars(g), bar.pos, structure))
    return out


def parse_formula(text: str) -> ParsedFormula:
    """Parse an lme4 model formula (cached: the result is immutable, and parsing costs more
    than fitting a small model).

    The response (left of ``~``) may be any expression (``log(y)``, ``cbind(s, n - s)``) or
    absent (``"~ (1 | g)"``, as ``re_form`` strings are written). Raises
    :class:`~multilevel.errors.FormulaError` with the 0-based position of the problem.

    >>> f = parse_formula("strength ~ 1 + (1 | batch/cask)")
    >>> [(b.group, b.group_vars) for b in f.bars]
    [('cask:batch', ('cask', 'batch')), ('batch', ('batch',))]
    >>> parse_formula("mAch ~ meanses * cses + sector * cses + (1 + cses | school)").fixed.labels
    ['meanses', 'cses', 'sector', 'meanses:cses', 'cses:sector']
    """
    if not isinstance(text, str):
        raise FormulaError(f"a formula must be a string, not {type(text).__name__}")
    return _parse_formula_cached(text)


@functools.lru_cache(maxsize=256)
def _parse_formula_cached(text: str) -> ParsedFormula:
    root = parse_expression(text)
    if isinstance(root, BinOp) and root.op == "~":
        response, rhs = root.left, root.right
    elif isinstance(root, Unary) and root.op == "~":
        response, rhs = None, root.operand
    else:
        raise FormulaError("a formula needs '~' (response ~ terms)", text, 0)
    if response is not None:
        if _find_tilde(response) is not None:
            raise FormulaError("a formula has only one '~'", text, root.op_pos)
        bar = _contains_bar(response)
        if bar is not None:
            raise FormulaError("the response cannot contain '|'", text, bar.op_pos)
        _check_response(response, text)
    inner = _find_tilde(rhs)
    if inner is not None:
        raise FormulaError("unexpected second '~'", text, inner)
    fixed_node, bars = _split_bars(rhs, text)
    fixed = expand_terms(fixed_node, text)
    expanded: list[BarTerm] = []
    for b in bars:
        expanded += _expand_bar(b, text)
    return ParsedFormula(text, response, fixed, tuple(expanded))


def _find_tilde(node: Node) -> int | None:
    if isinstance(node, BinOp):
        if node.op == "~":
            return node.op_pos
        return _find_tilde(node.left) if _find_tilde(node.left) is not None \
            else _find_tilde(node.right)
    if isinstance(node, Unary):
        return node.pos if node.op == "~" else _find_tilde(node.operand)
    if isinstance(node, Paren):
        return _find_tilde(node.inner)
    if isinstance(node, Call):
        for a in node.args:
            p = _find_tilde(a.value)
            if p is not None:
                return p
    return None


def _check_response(node: Node, text: str) -> None:
    n = _strip_parens(node)
    if isinstance(n, Call) and n.func == "cbind":
        if len(n.args) != 2 or any(a.name is not None for a in n.args):
            raise FormulaError("cbind() response takes two arguments: cbind(successes, failures)",
                               text, n.pos)
        for a in n.args:
            _check_variable(a.value, text)
        return
    if isinstance(n, Num):
        raise FormulaError("the response must be a variable or an expression of variables",
                           text, n.pos)
    _check_variable(n, text)
