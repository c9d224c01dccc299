"""Tokenizer, parser and deparser for the R expression syntax used in model formulas.

The parser builds a small syntax tree (:class:`Name`, :class:`Num`, :class:`Str`, :class:`Call`,
:class:`BinOp`, :class:`Unary`, :class:`Paren`) with the character offsets of every node, so a
later stage can point at the exact place of a problem. Operator precedence follows R's
``?Syntax`` (``^`` > unary ``-`` > ``:`` > ``%any%`` > ``* /`` > ``+ -`` > comparisons > ``!`` >
``& &&`` > ``| ||`` > ``~``); ``-2^2`` is ``-(2^2)`` and ``-1:2`` is ``(-1):2`` as in R.

:func:`deparse` writes a tree back the way R's ``deparse()`` does, because R names model-matrix
columns by deparsing: ``I(age^2)``, ``log(x + 1)``, ``poly(x, 2)``, ``cask:batch``.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from functools import cached_property

from multilevel.errors import FormulaError

__all__ = [
    "Node", "Name", "Num", "Str", "Call", "Arg", "BinOp", "Unary", "Paren",
    "parse_expression", "deparse", "format_r_number", "names_in",
]


# --------------------------------------------------------------------------------------------
# syntax tree
# --------------------------------------------------------------------------------------------

@dataclass(eq=False)
class Node:
    """Base of the syntax tree. ``pos``/``end``: 0-based character span in the formula text."""

    pos: int
    end: int

    @cached_property
    def key(self) -> str:
        """R's deparsed text; two nodes with the same key are the same model variable."""
        return deparse(self)


@dataclass(eq=False)
class Name(Node):
    name: str = ""


@dataclass(eq=False)
class Num(Node):
    value: float = 0.0
    is_integer: bool = False  # written with R's ``L`` suffix


@dataclass(eq=False)
class Str(Node):
    value: str = ""


@dataclass(eq=False)
class Arg:
    name: str | None
    value: Node


@dataclass(eq=False)
class Call(Node):
    func: str = ""
    args: list[Arg] = field(default_factory=list)


@dataclass(eq=False)
class BinOp(Node):
    op: str = ""
    left: Node | None = None
    right: Node | None = None
    op_pos: int = 0


@dataclass(eq=False)
class Unary(Node):
    op: str = ""
    operand: Node | None = None


@dataclass(eq=False)
class Paren(Node):
    inner: Node | None = None


# --------------------------------------------------------------------------------------------
# tokenizer
# --------------------------------------------------------------------------------------------

@dataclass
class _Tok:
    kind: str  # NUM STR NAME OP LPAREN RPAREN COMMA EQ END
    text: str
    pos: int
    end: int


_NUM_RE = re.compile(r"(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?L?")
_NAME_RE = re.compile(r"(?:[A-Za-z]|\.(?![0-9]))[A-Za-z0-9._]*")
# longest operators first
_OPS = ["||", "&&", "==", "!=", "<=", ">=", "**", "::", "<-", "->",
        "~", "+", "-", "*", "/", "^", ":", "|", "&", "!", "<", ">", "$", "@", "?"]


def _tokenize(text: str) -> list[_Tok]:
    toks: list[_Tok] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c.isspace():
            i += 1
            continue
        if c == "#":  # R comment: to the end of the line
            j = text.find("\n", i)
            i = n if j < 0 else j
            continue
        if c.isdigit() or (c == "." and i + 1 < n and text[i + 1].isdigit()):
            m = _NUM_RE.match(text, i)
            toks.append(_Tok("NUM", m.group(0), i, m.end()))
            i = m.end()
            continue
        if c.isalpha() or c == ".":
            m = _NAME_RE.match(text, i)
            if m:
                toks.append(_Tok("NAME", m.group(0), i, m.end()))
                i = m.end()
                continue
        if c == "`":
            j = text.find("`", i + 1)
            if j < 0:
                raise FormulaError("unterminated backtick-quoted name", text, i)
            if j == i + 1:
                raise FormulaError("empty backtick-quoted name", text, i)
            toks.append(_Tok("QNAME", text[i + 1:j], i, j + 1))
            i = j + 1
            continue
        if c in "\"'":
            j = i + 1
            buf = []
            while j < n and text[j] != c:
                if text[j] == "\\" and j + 1 < n:
                    buf.append({"n": "\n", "t": "\t"}.get(text[j + 1], text[j + 1]))
                    j += 2
                    continue
                buf.append(text[j])
                j += 1
            if j >= n:
                raise FormulaError("unterminated string", text, i)
            toks.append(_Tok("STR", "".join(buf), i, j + 1))
            i = j + 1
            continue
        if c == "%":
            j = text.find("%", i + 1)
            if j < 0:
                raise FormulaError("unterminated %operator%", text, i)
            toks.append(_Tok("OP", text[i:j + 1], i, j + 1))
            i = j + 1
            continue
        if c == "(":
            toks.append(_Tok("LPAREN", c, i, i + 1))
            i += 1
            continue
        if c == ")":
            toks.append(_Tok("RPAREN", c, i, i + 1))
            i += 1
            continue
        if c == ",":
            toks.append(_Tok("COMMA", c, i, i + 1))
            i += 1
            continue
        if c == "=" and not text.startswith("==", i):
            toks.append(_Tok("EQ", c, i, i + 1))
            i += 1
            continue
        for op in _OPS:
            if text.startswith(op, i):
                toks.append(_Tok("OP", "^" if op == "**" else op, i, i + len(op)))
                i += len(op)
                break
        else:
            raise FormulaError(f"unexpected character {c!r}", text, i)
    toks.append(_Tok("END", "", n, n))
    return toks


# --------------------------------------------------------------------------------------------
# parser (precedence climbing)
# --------------------------------------------------------------------------------------------

# binary operators: (left binding power, right binding power); right-assoc ops have rbp == lbp
_BINARY = {
    "~": (10, 11),
    "||": (20, 21), "|": (20, 21),
    "&&": (30, 31), "&": (30, 31),
    "==": (50, 51), "!=": (50, 51), "<": (50, 51), ">": (50, 51), "<=": (50, 51), ">=": (50, 51),
    "+": (60, 61), "-": (60, 61),
    "*": (70, 71), "/": (70, 71),
    "%": (80, 81),  # any %op%
    ":": (90, 91),
    "^": (110, 110),
}
_PREFIX = {"~": 11, "!": 40, "-": 100, "+": 100}
_UNSUPPORTED = {"::": "namespace '::'", "<-": "assignment '<-'", "->": "assignment '->'",
                "$": "'$'", "@": "'@'", "?": "'?'"}


def _binary_power(tok: _Tok) -> tuple[int, int] | None:
    if tok.kind != "OP":
        return None
    if tok.text.startswith("%"):
        return _BINARY["%"]
    return _BINARY.get(tok.text)


#: deepest nesting of operators, parentheses and calls a formula may have. Every later stage
#: (term algebra, deparse, translation for formulaic) walks the tree recursively, so a deeper
#: tree would end in Python's RecursionError; 400 leaves room below Python's default limit of
#: 1000 frames for the caller's own stack (a notebook, pytest). A chain ``a + b + c + ...``
#: is one level per operator: up to about 400 terms.
MAX_DEPTH = 400
#: deepest nesting of parentheses, calls and prefix operators (the parser recurses three
#: frames per level of these)
MAX_NESTING = 100


class _Parser:
    def __init__(self, text: str):
        self.text = text
        self.toks = _tokenize(text)
        self.i = 0
        self.depth = 0  # open parentheses, calls and prefix operators around the current token

    def peek(self) -> _Tok:
        return self.toks[self.i]

    def take(self) -> _Tok:
        t = self.toks[self.i]
        self.i += 1
        return t

    def fail(self, msg: str, pos: int) -> FormulaError:
        return FormulaError(msg, self.text, pos)

    def parse_all(self) -> Node:
        if self.peek().kind == "END":
            raise self.fail("empty formula", 0)
        try:
            node = self.expr(0)
        except RecursionError:  # e.g. a chain of ^ (right-associative: the parser recurses)
            raise self.fail(f"the formula is nested too deeply (more than {MAX_DEPTH} levels of "
                            f"operators)", self.peek().pos) from None
        _check_depth(node, self.text)
        tok = self.peek()
        if tok.kind != "END":
            if tok.kind == "RPAREN":
                raise self.fail("unmatched ')'", tok.pos)
            raise self.fail(f"unexpected {self._describe(tok)}", tok.pos)
        return node

    def _describe(self, tok: _Tok) -> str:
        if tok.kind == "END":
            return "end of formula"
        return f"'{tok.text}'" if tok.kind != "STR" else "string"

    def expr(self, min_bp: int) -> Node:
        left = self.prefix()
        while True:
            tok = self.peek()
            if tok.kind == "OP" and tok.text in _UNSUPPORTED:
                raise self.fail(f"{_UNSUPPORTED[tok.text]} is not supported in formulas", tok.pos)
            bp = _binary_power(tok)
            if bp is None:
                if tok.kind in ("NUM", "NAME", "QNAME", "STR", "LPAREN"):
                    raise self.fail(f"unexpected {self._describe(tok)}: missing operator "
                                    f"before it?", tok.pos)
                return left
            lbp, rbp = bp
            if lbp < min_bp:
                return left
            self.take()
            if self.peek().kind in ("END", "RPAREN", "COMMA"):
                raise self.fail(f"missing right-hand side of '{tok.text}'", tok.pos)
            right = self.expr(rbp)
            left = BinOp(left.pos, right.end, op=tok.text, left=left, right=right, op_pos=tok.pos)

    def prefix(self) -> Node:
        tok = self.take()
        self.depth += 1
        try:
            return self._prefix(tok)
        finally:
            self.depth -= 1

    def _prefix(self, tok: _Tok) -> Node:
        opens = tok.kind == "LPAREN" or (tok.kind == "OP" and tok.text in _PREFIX) or \
            (tok.kind == "NAME" and self.peek().kind == "LPAREN")
        if opens and self.depth > MAX_NESTING:
            raise self.fail(f"the formula is nested too deeply (more than {MAX_NESTING} levels of "
                            f"parentheses, calls and prefix operators)", tok.pos)
        if tok.kind == "NUM":
            txt = tok.text
            is_int = txt.endswith("L")
            value = float(txt[:-1] if is_int else txt)
            return Num(tok.pos, tok.end, value=value, is_integer=is_int)
        if tok.kind == "STR":
            return Str(tok.pos, tok.end, value=tok.text)
        if tok.kind in ("NAME", "QNAME"):
            if tok.kind == "NAME" and self.peek().kind == "LPAREN":
                return self.call(tok)
            return Name(tok.pos, tok.end, name=tok.text)
        if tok.kind == "LPAREN":
            if self.peek().kind == "RPAREN":
                raise self.fail("empty parentheses", tok.pos)
            inner = self.expr(0)
            close = self.take()
            if close.kind != "RPAREN":
                if close.kind == "END":
                    raise self.fail(f"missing ')' to close the '(' at position {tok.pos}",
                                    close.pos)
                raise self.fail(f"unexpected {self._describe(close)}; expected ')'", close.pos)
            return Paren(tok.pos, close.end, inner=inner)
        if tok.kind == "OP" and tok.text in _PREFIX:
            if self.peek().kind in ("END", "RPAREN", "COMMA"):
                raise self.fail(f"missing operand of '{tok.text}'", tok.pos)
            operand = self.expr(_PREFIX[tok.text])
            return Unary(tok.pos, operand.end, op=tok.text, operand=operand)
        if tok.kind == "END":
            raise self.fail("unexpected end of formula", tok.pos)
        if tok.kind == "OP" and tok.text in _UNSUPPORTED:
            raise self.fail(f"{_UNSUPPORTED[tok.text]} is not supported in formulas", tok.pos)
        raise self.fail(f"unexpected {self._describe(tok)}", tok.pos)

    def call(self, name_tok: _Tok) -> Node:
        open_tok = self.take()  # '('
        args: list[Arg] = []
        if self.peek().kind == "RPAREN":
            close = self.take()
            return Call(name_tok.pos, close.end, func=name_tok.text, args=args)
        while True:
            argname = None
            t0 = self.peek()
            t1 = self.toks[self.i + 1] if t0.kind != "END" else t0
            if t0.kind in ("NAME", "QNAME", "STR") and t1.kind == "EQ":
                argname = t0.text
                self.take()
                self.take()
            elif t0.kind == "EQ":
                raise self.fail("unexpected '='", t0.pos)
            if self.peek().kind in ("COMMA", "RPAREN", "END"):
                raise self.fail("missing argument", self.peek().pos)
            args.append(Arg(argname, self.expr(0)))
            tok = self.take()
            if tok.kind == "COMMA":
                continue
            if tok.kind == "RPAREN":
                return Call(name_tok.pos, tok.end, func=name_tok.text, args=args)
            if tok.kind == "END":
                raise self.fail(f"missing ')' to close '{name_tok.text}(' at position "
                                f"{open_tok.pos}", tok.pos)
            if tok.kind == "EQ":
                raise self.fail("unexpected '='", tok.pos)
            raise self.fail(f"unexpected {self._describe(tok)} in arguments of {name_tok.text}()",
                            tok.pos)


def _check_depth(root: Node, text: str) -> None:
    """Refuse a tree deeper than :data:`MAX_DEPTH` (long operator chains are built without
    recursion by the parser, but every later stage recurses over them); iterative, so that
    the check itself cannot overflow the stack."""
    stack: list[tuple[Node, int]] = [(root, 1)]
    while stack:
        node, d = stack.pop()
        if d > MAX_DEPTH:
            raise FormulaError(f"the formula is nested too deeply (more than {MAX_DEPTH} levels of "
                               f"operators, parentheses and calls; e.g. more than {MAX_DEPTH} "
                               f"terms joined by '+'): split it or build the variable in the data",
                               text, node.pos)
        if isinstance(node, BinOp):
            stack += [(node.left, d + 1), (node.right, d + 1)]
        elif isinstance(node, Unary):
            stack.append((node.operand, d + 1))
        elif isinstance(node, Paren):
            stack.append((node.inner, d + 1))
        elif isinstance(node, Call):
            stack += [(a.value, d + 1) for a in node.args]


def parse_expression(text: str) -> Node:
    """Parse R source text (a formula or an expression) into a syntax tree.

    >>> parse_expression("y ~ x + (1 | g)").op
    '~'
    """
    return _Parser(text).parse_all()


# --------------------------------------------------------------------------------------------
# deparse (R's spelling of an expression)
# --------------------------------------------------------------------------------------------

_SYNTACTIC = re.compile(r"^(?:[A-Za-z]|\.(?![0-9]))[A-Za-z0-9._]*$|^\.$")
_RESERVED = {"if", "else", "repeat", "while", "function", "for", "next", "break", "TRUE",
             "FALSE", "NULL", "Inf", "NaN", "NA", "NA_integer_", "NA_real_", "NA_character_", "in"}
# R's deparse puts spaces around these binary operators; '/', '^', ':' and %% %/% go without
_NO_SPACE = {"/", "^", ":", "%%", "%/%"}
# precedence used to decide where deparse must add parentheses (constructed trees only)
_PREC = {"~": 1, "|": 2, "||": 2, "&": 3, "&&": 3, "==": 5, "!=": 5, "<": 5, ">": 5, "<=": 5,
         ">=": 5, "+": 6, "-": 6, "*": 7, "/": 7, "%": 8, ":": 9, "^": 11}


def _prec(op: str) -> int:
    return _PREC["%"] if op.startswith("%") else _PREC[op]


def format_r_number(x: float) -> str:
    """Format a double the way R's ``as.character``/``deparse`` do (15 significant digits,
    fixed notation unless scientific is shorter): 2 -> "2", 0.5 -> "0.5", 1e5 -> "1e+05".

    >>> format_r_number(100000.0), format_r_number(123456.0), format_r_number(0.1)
    ('1e+05', '123456', '0.1')
    """
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "Inf" if x > 0 else "-Inf"
    if x == 0:
        return "0"
    # fewest significant digits (<= 15) that represent the value as R would print it
    for digits in range(1, 16):
        sci = f"{x:.{digits - 1}e}"
        if float(sci) == float(f"{x:.15g}"):
            break
    mant, exp = sci.split("e")
    if "." in mant:
        mant = mant.rstrip("0").rstrip(".")
    e = int(exp)
    sci_txt = f"{mant}e{'-' if e < 0 else '+'}{abs(e):02d}"
    # fixed notation with the same significant digits
    ndig = len(mant.replace("-", "").replace(".", ""))
    decimals = max(0, ndig - 1 - e)
    fixed_txt = f"{x:.{decimals}f}"
    # R prefers fixed unless it is wider than scientific (scipen = 0)
    return fixed_txt if len(fixed_txt) <= len(sci_txt) else sci_txt


def _deparse_name(name: str) -> str:
    if _SYNTACTIC.match(name) and name not in _RESERVED:
        return name
    return "`" + name.replace("`", "\\`") + "`"


def _needs_parens(parent_op: str, child: Node, left: bool) -> bool:
    if isinstance(child, BinOp):
        pc, pp = _prec(child.op), _prec(parent_op)
        if pc < pp:
            return True
        if pc == pp:
            right_assoc = parent_op == "^"
            return left == right_assoc
    return False


def deparse(node: Node) -> str:
    """R's text of an expression (used for coefficient and term names).

    >>> deparse(parse_expression("I(age ^ 2)")), deparse(parse_expression("log(x+1)"))
    ('I(age^2)', 'log(x + 1)')
    """
    if isinstance(node, Name):
        return _deparse_name(node.name) if node.name not in _RESERVED else node.name
    if isinstance(node, Num):
        txt = format_r_number(node.value)
        return txt + "L" if node.is_integer else txt
    if isinstance(node, Str):
        return '"' + node.value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(node, Paren):
        return "(" + deparse(node.inner) + ")"
    if isinstance(node, Call):
        parts = []
        for a in node.args:
            v = deparse(a.value)
            parts.append(v if a.name is None else f"{_deparse_name(a.name)} = {v}")
        return f"{_deparse_name(node.func)}({', '.join(parts)})"
    if isinstance(node, Unary):
        # source parentheses are kept as Paren nodes, so none need adding here
        return node.op + deparse(node.operand)
    if isinstance(node, BinOp):
        lt, rt = deparse(node.left), deparse(node.right)
        if _needs_parens(node.op, node.left, True):
            lt = f"({lt})"
        if _needs_parens(node.op, node.right, False):
            rt = f"({rt})"
        if node.op in _NO_SPACE:
            return f"{lt}{node.op}{rt}"
        return f"{lt} {node.op} {rt}"
    raise TypeError(f"cannot deparse {node!r}")


class _LineWriter:
    """R's deparse buffer: text, the current line's length and indentation (4 spaces a level)."""

    def __init__(self, cutoff: int):
        self.cutoff, self.lines, self.cur, self.indent, self.startline = cutoff, [], "", 0, True

    def put(self, text: str) -> None:
        if self.startline:
            self.startline = False
            self.cur += "    " * self.indent
        self.cur += text

    def linebreak(self, flag: list[bool]) -> None:
        """R's ``linebreak()``: a new line once the current one is longer than the cutoff,
        indented one level more until the construct that broke it ends."""
        if len(self.cur) > self.cutoff:
            if not flag[0]:
                flag[0] = True
                self.indent += 1
            self.lines.append(self.cur)
            self.cur, self.startline = "", True


def _deparse_into(node: Node, w: _LineWriter) -> None:
    if isinstance(node, Paren):
        w.put("(")
        _deparse_into(node.inner, w)
        w.put(")")
    elif isinstance(node, Call):
        w.put(f"{_deparse_name(node.func)}(")
        flag = [False]
        for i, a in enumerate(node.args):
            if a.name is not None:
                w.put(f"{_deparse_name(a.name)} = ")
            _deparse_into(a.value, w)
            if i < len(node.args) - 1:
                w.put(", ")
                w.linebreak(flag)
        if flag[0]:
            w.indent -= 1
        w.put(")")
    elif isinstance(node, Unary):
        w.put(node.op)
        _deparse_into(node.operand, w)
    elif isinstance(node, BinOp):
        def side(child: Node, left: bool) -> None:
            if _needs_parens(node.op, child, left):
                w.put("(")
                _deparse_into(child, w)
                w.put(")")
            else:
                _deparse_into(child, w)

        side(node.left, True)
        if node.op in _NO_SPACE:  # R's PP_BINARY2: no spaces and never a line break
            w.put(node.op)
            side(node.right, False)
        else:
            w.put(f" {node.op} ")
            flag = [False]
            w.linebreak(flag)
            side(node.right, False)
            if flag[0]:
                w.indent -= 1
    else:
        w.put(deparse(node))


def deparse_lines(node: Node, cutoff: int = 60) -> list[str]:
    """R's ``deparse(expr)`` with its line breaking: a new line after a binary operator or an
    argument's comma once the line is longer than ``cutoff`` (R's ``width.cutoff``, 60),
    continuation lines indented by four spaces. lme4's summaries print a formula this way.

    >>> deparse_lines(parse_expression("y~x+(1|g)"))
    ['y ~ x + (1 | g)']
    >>> [len(s) for s in deparse_lines(parse_expression(" + ".join("x%d" % i for i in range(30))))]
    [62, 62, 34]
    """
    w = _LineWriter(cutoff)
    _deparse_into(node, w)
    if w.cur or not w.lines:
        w.lines.append(w.cur)
    return w.lines


def names_in(node: Node) -> list[Name]:
    """All :class:`Name` leaves (variables and constants, not function names), left to right."""
    out: list[Name] = []

    def walk(n: Node) -> None:
        if isinstance(n, Name):
            out.append(n)
        elif isinstance(n, Call):
            for a in n.args:
                walk(a.value)
        elif isinstance(n, BinOp):
            walk(n.left)
            walk(n.right)
        elif isinstance(n, Unary):
            walk(n.operand)
        elif isinstance(n, Paren):
            walk(n.inner)

    walk(node)
    return out
