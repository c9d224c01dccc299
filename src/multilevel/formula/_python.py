"""Adapter to formulaic: evaluate R expressions such as ``I(age^2)``, ``log(y)``, ``scale(x)`` or
``poly(x, 2)`` on a data frame, and again on new data with the same stateful-transform state.

R and Python spell expressions differently (``^`` is power in R and xor in Python; ``log`` is
``np.log``; ``TRUE`` is ``True``; ``2`` is a double in R), so every R expression is translated
into Python code and handed to formulaic as a quoted Python factor ``{...}``. Data columns are
passed under aliases (``_v0``, ``_v1``, ...) so that any column name works, including ones
that are not Python identifiers (``my.var``, ``lambda``). formulaic evaluates the code with
its stateful transforms (``scale``, ``poly``) and keeps their state in a ``ModelSpec``, which
is what :meth:`NumericExpressions.transform` re-applies to new data.
"""
from __future__ import annotations

from typing import Callable, Mapping

import numpy as np
import pandas as pd

from multilevel.errors import DataError, FormulaError, MultilevelError
from multilevel.formula._centering import CENTERING_TRANSFORMS
from multilevel.formula._transforms import R_TRANSFORMS
from multilevel.formula._rsyntax import BinOp, Call, Name, Node, Num, Paren, Str, Unary, deparse, names_in

__all__ = ["to_python", "NumericExpressions", "is_logical"]

_NUMPY_SAME = {"log10", "log2", "log1p", "exp", "expm1", "sqrt", "abs", "sin", "cos", "tan",
               "sinh", "cosh", "tanh", "floor", "trunc", "sign"}
_NUMPY_RENAMED = {"asin": "arcsin", "acos": "arccos", "atan": "arctan", "ceiling": "ceil"}
_CONST = {"TRUE": "True", "T": "True", "FALSE": "False", "F": "False", "pi": "np.pi",
          "Inf": "np.inf", "NA": "np.nan", "NaN": "np.nan"}
_CMP = {"==", "!=", "<", ">", "<=", ">="}
# names the translated code may call: numpy, R's scale() / poly() (_transforms.py: they skip
# missing values, as R's do, because expressions are evaluated on all rows) and centring
_CONTEXT = {"np": np, **R_TRANSFORMS, **CENTERING_TRANSFORMS}


def is_logical(node: Node) -> bool:
    """Whether an expression is logical-valued in R (``x > 3``, ``!flag``, ``I(a == b)``); R's
    model.matrix codes such variables like a factor with levels FALSE, TRUE."""
    while True:
        if isinstance(node, Paren):
            node = node.inner
        elif isinstance(node, Call) and node.func == "I" and len(node.args) == 1:
            node = node.args[0].value
        else:
            break
    if isinstance(node, BinOp):
        return node.op in _CMP or node.op in ("&", "&&", "|", "||")
    if isinstance(node, Unary):
        return node.op == "!"
    return False


def to_python(node: Node, alias: Callable[[str], str | None], text: str = "",
              strings: dict[str, str] | None = None) -> str:
    """Translate an R expression into Python code for formulaic.

    ``alias(name)`` gives the Python name of a data column (None if the name is no column, in
    which case R's constants ``TRUE``, ``pi``... are recognised). ``strings``, if given,
    receives the expression's string literals under placeholder names (``_ml_str0``, ...)
    that the code uses instead of the literals: the text of a literal then never reaches
    formulaic's or Python's parser (a backtick or ``))}`` inside it would end the code
    early); the caller passes the dict to the evaluation as variables.

    >>> from multilevel.formula import parse_expression
    >>> to_python(parse_expression("I(age^2)"), lambda n: n)
    '((age ** 2.0))'
    """
    def fail(msg: str, n: Node) -> FormulaError:
        return FormulaError(msg, text or None, n.pos if text else None)

    def tr(n: Node) -> str:
        if isinstance(n, Name):
            a = alias(n.name)
            if a is not None:
                return a
            if n.name in _CONST:
                return _CONST[n.name]
            raise fail(f"unknown variable '{n.name}'", n)
        if isinstance(n, Num):
            # R numbers are doubles: 2 ** -1 must not be integer arithmetic
            return repr(float(n.value))
        if isinstance(n, Str):
            if strings is None:
                return repr(n.value)
            name = f"_ml_str{len(strings)}"
            strings[name] = n.value
            return name
        if isinstance(n, Paren):
            return f"({tr(n.inner)})"
        if isinstance(n, Unary):
            if n.op == "!":
                return f"np.logical_not({tr(n.operand)})"
            return f"({n.op}{tr(n.operand)})"
        if isinstance(n, BinOp):
            a, b = tr(n.left), tr(n.right)
            op = n.op
            if op == "^":
                return f"({a} ** {b})"
            if op in ("+", "-", "*", "/") or op in _CMP:
                return f"({a} {op} {b})"
            if op == "%%":
                return f"np.mod({a}, {b})"
            if op == "%/%":
                return f"np.floor_divide({a}, {b})"
            if op in ("&", "&&"):
                return f"np.logical_and({a}, {b})"
            if op in ("|", "||"):
                return f"np.logical_or({a}, {b})"
            if op == "%in%":
                return f"np.isin({a}, {b})"
            raise fail(f"operator '{op}' is not supported inside an expression", n)
        if isinstance(n, Call):
            return call(n)
        raise fail("unsupported expression", n)

    def positional(n: Call, names: list[str], defaults: dict[str, Node | None]) -> dict:
        """Match R arguments by name, then by position, as R does."""
        out: dict[str, Node | None] = dict(defaults)
        rest = []
        for arg in n.args:
            if arg.name is not None:
                match = [nm for nm in names if nm == arg.name] or \
                        [nm for nm in names if nm.startswith(arg.name)]
                if len(match) != 1:
                    raise fail(f"unknown argument '{arg.name}' of {n.func}()", n)
                out[match[0]] = arg.value
            else:
                rest.append(arg.value)
        free = [nm for nm in names if nm not in {a.name for a in n.args if a.name}]
        if len(rest) > len(free):
            raise fail(f"too many arguments for {n.func}()", n)
        for nm, v in zip(free, rest):
            out[nm] = v
        return out

    def call(n: Call) -> str:
        f = n.func
        args = [a.value for a in n.args]
        if f == "I":
            if len(args) != 1:
                raise fail("I() takes one argument", n)
            return f"({tr(args[0])})"
        if f in _NUMPY_SAME or f in _NUMPY_RENAMED:
            if len(args) != 1:
                raise fail(f"{f}() takes one argument here", n)
            return f"np.{_NUMPY_RENAMED.get(f, f)}({tr(args[0])})"
        if f == "log":
            m = positional(n, ["x", "base"], {"base": None})
            if m["base"] is None:
                return f"np.log({tr(m['x'])})"
            return f"(np.log({tr(m['x'])}) / np.log({tr(m['base'])}))"
        if f == "round":
            m = positional(n, ["x", "digits"], {"digits": None})
            d = "0" if m["digits"] is None else f"int({tr(m['digits'])})"
            return f"np.round({tr(m['x'])}, {d})"
        if f in ("pmin", "pmax"):
            if len(args) < 2:
                raise fail(f"{f}() needs at least two arguments", n)
            fn = "np.minimum" if f == "pmin" else "np.maximum"
            code = tr(args[0])
            for a in args[1:]:
                code = f"{fn}({code}, {tr(a)})"
            return code
        if f in ("as.numeric", "as.double"):
            return f"np.asarray({tr(args[0])}, dtype=float)"
        if f == "as.integer":
            return f"np.trunc(np.asarray({tr(args[0])}, dtype=float))"
        if f == "ifelse":
            m = positional(n, ["test", "yes", "no"], {})
            if any(k not in m for k in ("test", "yes", "no")):
                raise fail("ifelse() needs test, yes and no", n)
            for k in ("yes", "no"):
                v = m[k]
                while isinstance(v, Paren):
                    v = v.inner
                if isinstance(v, Str):
                    raise FormulaError(f"ifelse(): the {k} value {deparse(v)} is text; here "
                                       f"ifelse() gives numbers (for a factor, add the column "
                                       f"to the data)", text or None, v.pos if text else None)
            return f"np.where({tr(m['test'])}, {tr(m['yes'])}, {tr(m['no'])})"
        if f == "scale":
            m = positional(n, ["x", "center", "scale"], {"center": None, "scale": None})
            kw = ""
            for k in ("center", "scale"):
                v = m[k]
                if v is not None:
                    if not (isinstance(v, Name) and v.name in ("TRUE", "FALSE", "T", "F")):
                        raise fail(f"scale(): only {k} = TRUE/FALSE is supported", n)
                    kw += f", {k}={_CONST[v.name]}"
            return f"_ml_scale({tr(m['x'])}{kw})"
        if f == "poly":
            m = positional(n, ["x", "degree", "coefs", "raw"],
                           {"degree": None, "coefs": None, "raw": None})
            if m["coefs"] is not None:
                raise fail("poly(): 'coefs' is not supported (new data reuse the fitted "
                           "coefficients automatically)", n)
            deg = m["degree"]
            if deg is None:
                deg_txt = "1"
            elif isinstance(deg, Num) and deg.value == int(deg.value) and deg.value >= 1:
                deg_txt = str(int(deg.value))
            else:
                raise fail("poly(): the degree must be a whole number (several variables in "
                           "poly() are not supported)", n)
            raw = m["raw"]
            raw_txt = ""
            if raw is not None:
                if not (isinstance(raw, Name) and raw.name in ("TRUE", "FALSE", "T", "F")):
                    raise fail("poly(): raw must be TRUE or FALSE", n)
                raw_txt = f", raw={_CONST[raw.name]}"
            return f"_ml_poly({tr(m['x'])}, degree={deg_txt}{raw_txt})"
        if f in ("center", "group_mean"):
            # multilevel's centring transforms (_centering.py); by= must name a data column
            m = positional(n, ["x", "by"], {"by": None})
            if "x" not in m or m["x"] is None:
                raise fail(f"{f}() needs a variable to centre", n)
            by = m["by"]
            if by is None and f == "group_mean":
                raise fail("group_mean() needs by = <grouping column>, e.g. group_mean(x, by = g)",
                           n)
            by_txt = ""
            if by is not None:
                b = by
                while isinstance(b, Paren):
                    b = b.inner
                if not isinstance(b, Name) or alias(b.name) is None:
                    raise fail(f"{f}(): by must be the name of a data column", by)
                by_txt = f", by={alias(b.name)}"
            return f"_ml_{f}({tr(m['x'])}{by_txt})"
        raise fail(f"function '{f}' cannot be used in this expression", n)

    return tr(node)


_DIRECT_BINOPS = {"+": np.add, "-": np.subtract, "*": np.multiply, "/": np.divide, "^": np.power}
_DIRECT_CALLS = {"log": np.log, "exp": np.exp, "sqrt": np.sqrt}


def _direct(node: Node, data: Mapping[str, np.ndarray]) -> np.ndarray | float | None:
    """Plain arithmetic on numeric columns (``size - incidence``, ``I(age^2)``, ``log(x)``)
    evaluated with numpy directly, or None where formulaic is needed. Such expressions keep
    no state between fitting and new data, and formulaic's machinery costs about a
    millisecond, more than fitting a small model."""
    if isinstance(node, Name):
        col = data.get(node.name)
        if col is None or not isinstance(col, np.ndarray) or col.dtype.kind not in "fiub":
            return None
        return col.astype(np.float64, copy=False)
    if isinstance(node, Num):
        return float(node.value)
    if isinstance(node, Paren):
        return _direct(node.inner, data)
    if isinstance(node, Unary) and node.op in ("-", "+"):
        v = _direct(node.operand, data)
        return None if v is None else (-v if node.op == "-" else v)
    if isinstance(node, BinOp) and node.op in _DIRECT_BINOPS:
        a, b = _direct(node.left, data), _direct(node.right, data)
        if a is None or b is None:
            return None
        return _DIRECT_BINOPS[node.op](a, b)
    if (isinstance(node, Call) and len(node.args) == 1 and node.args[0].name is None
            and (node.func == "I" or node.func in _DIRECT_CALLS)):
        v = _direct(node.args[0].value, data)
        if v is None:
            return None
        return v if node.func == "I" else _DIRECT_CALLS[node.func](v)
    return None


def _direct_all(nodes: list[Node], data: Mapping[str, np.ndarray], n: int) -> list[np.ndarray] | None:
    out = []
    with np.errstate(all="ignore"):
        for node in nodes:
            v = _direct(node, data)
            if v is None or isinstance(v, float):  # a constant is a column only in formulaic
                return None
            out.append(np.ascontiguousarray(np.asarray(v, dtype=np.float64).reshape(n, 1)))
    return out



class NumericExpressions:
    """Numeric R expressions evaluated together by formulaic on one data frame.

    ``fit(frame)`` evaluates every expression (learning the state of ``scale()``/``poly()``);
    ``transform(frame)`` evaluates them on new data with that state. Each result is a float64
    array of shape (n, k) — k > 1 for ``poly(x, k)`` — and ``suffixes[i]`` gives the R
    column-name suffixes of expression i (``["1", "2"]`` for ``poly(x, 2)``, ``[""]`` else).

    >>> from multilevel.formula import parse_expression
    >>> ev = NumericExpressions([parse_expression("I(x^2)")])
    >>> ev.fit({"x": np.array([1.0, 2.0, 3.0])})[0].ravel().tolist()
    [1.0, 4.0, 9.0]
    """

    def __init__(self, nodes: list[Node], text: str = ""):
        self.nodes = list(nodes)
        self.text = text
        names: dict[str, None] = {}
        for node in self.nodes:
            for nm in names_in(node):
                names.setdefault(nm.name, None)
        self.names = list(names)                # every name used (columns or R constants)
        self.columns: dict[str, str] = {}       # data column -> alias, fixed by fit()
        self.spec = None                        # formulaic ModelSpec after fit()
        self.suffixes: list[list[str]] = []
        self._codes: list[str] = []
        self._strings: dict[str, str] = {}      # string literals by placeholder (to_python)
        self.direct = False                     # evaluated by _direct (no formulaic spec)
        self.per_node = False                   # one formulaic spec per expression (chunks)

    def _frame(self, data: Mapping[str, np.ndarray], n: int) -> pd.DataFrame:
        return pd.DataFrame({a: data[c] for c, a in self.columns.items()},
                            index=pd.RangeIndex(n), copy=False)

    def fit(self, data: Mapping[str, np.ndarray], n: int | None = None) -> list[np.ndarray]:
        """Evaluate on the fitting data; ``data`` maps column names to arrays (rows used)."""
        if not self.nodes:
            self.spec = None
            return []
        if n is None:
            n = len(next(iter(data.values()))) if data else 0
        direct = _direct_all(self.nodes, data, n)
        self.direct = direct is not None
        if direct is not None:
            self.spec = None
            self.suffixes = [[""] for _ in direct]
            return direct
        from formulaic import Formula, model_matrix  # (not needed above: imported late)
        # a data column wins over R's constant of the same name (T, F, pi), as in R
        self.columns = {nm: f"_v{i}" for i, nm in enumerate(x for x in self.names if x in data)}
        strings: dict[str, str] = {}
        self._codes = [to_python(node, self.columns.get, self.text, strings) for node in self.nodes]
        self._strings = strings
        from multilevel.formula._streaming import active as _streaming

        self.per_node = _streaming()
        if self.per_node:
            # data read in chunks: the transforms' call sites are numbered in call order, and
            # formulaic's order of factors may differ between processes (string hashing), so
            # each expression is evaluated on its own, in the expressions' order
            return self._fit_nodes(data, n)
        formula = Formula("0 + " + " + ".join("{" + c + "}" for c in self._codes),
                          _ordering="none")
        try:
            # NaN / Inf from log(0) and the like are handled by the caller (rows dropped or
            # an error naming the expression), so numpy's warnings would only be noise
            with np.errstate(all="ignore"):
                mm = model_matrix(formula, self._frame(data, n), context=self._context(),
                                  na_action="ignore", ensure_full_rank=False, output="numpy")
            self.spec = mm.model_spec
            return self._split(np.asarray(mm, dtype=np.float64), first=True)
        except FormulaError:
            raise
        except Exception as e:  # formulaic / numpy errors: name the R expression
            raise self._failure(data, e, "") from e

    def transform(self, data: Mapping[str, np.ndarray], n: int | None = None) -> list[np.ndarray]:
        """Evaluate on new data with the state learned by :meth:`fit`."""
        if not self.nodes:
            return []
        if n is None:
            n = len(next(iter(data.values()))) if data else 0
        if self.direct:
            direct = _direct_all(self.nodes, data, n)
            if direct is None:
                raise DataError(f"cannot evaluate {self._which(None)} on the new data: a "
                                "column is missing or not numeric")
            return direct
        if getattr(self, "per_node", False):
            try:
                with np.errstate(all="ignore"):
                    return [np.ascontiguousarray(np.asarray(sp.get_model_matrix(
                        self._frame(data, n), context=self._context(), na_action="ignore"),
                        dtype=np.float64).reshape(n, -1)) for sp in self.spec]
            except Exception as e:
                raise self._failure(data, e, " on the new data") from e
        try:
            with np.errstate(all="ignore"):
                mm = self.spec.get_model_matrix(self._frame(data, n), context=self._context(),
                                                na_action="ignore")
            return self._split(np.asarray(mm, dtype=np.float64), first=False)
        except Exception as e:
            raise self._failure(data, e, " on the new data") from e

    def _failure(self, data: Mapping[str, np.ndarray], e: Exception, where: str) -> DataError:
        """The error of an expression that could not be evaluated, in R's terms: text columns
        in arithmetic are named; otherwise the innermost cause (formulaic wraps our
        transforms' errors, and its own message quotes the translated code)."""
        root = e
        while root.__cause__ is not None:
            root = root.__cause__
        if isinstance(root, MultilevelError):  # our transforms' own errors say it best
            return DataError(f"cannot evaluate {self._which(e)}{where}: {root}")
        # numpy's complaints about text where numbers were expected
        about_text = isinstance(root, TypeError) or "str" in str(root)
        text = [c for c in self.columns if c in data and np.asarray(data[c]).dtype.kind in "OUS"]
        if text and about_text:
            cols = ", ".join(f"'{c}'" for c in text)
            return DataError(f"cannot evaluate {self._which(e)}{where}: column{'s' * (len(text) > 1)} "
                             f"{cols} {'are' if len(text) > 1 else 'is'} text (or a factor), not "
                             f"numbers")
        strings = getattr(self, "_strings", {})
        if strings and isinstance(root, (TypeError, ValueError)):
            lits = ", ".join(repr(v) for v in strings.values())
            return DataError(f"cannot evaluate {self._which(e)}{where}: the text {lits} is used "
                             f"where a number is needed")
        return DataError(f"cannot evaluate {self._which(e)}{where}: {root}")

    def _context(self) -> dict:
        # built per evaluation, not stored: the module objects in it do not pickle
        return {**_CONTEXT, **getattr(self, "_strings", {})}

    def _which(self, e: Exception) -> str:
        keys = [deparse(n) for n in self.nodes]
        return ", ".join(keys) if len(keys) < 4 else f"{len(keys)} expressions"

    def _fit_nodes(self, data: Mapping[str, np.ndarray], n: int) -> list[np.ndarray]:
        """Each expression evaluated by a formulaic spec of its own (``self.spec`` a list)."""
        from formulaic import Formula, model_matrix

        frame = self._frame(data, n)
        specs, out = [], []
        self.suffixes = []
        try:
            for code in self._codes:
                with np.errstate(all="ignore"):
                    mm = model_matrix(Formula("0 + {" + code + "}", _ordering="none"), frame,
                                      context=self._context(), na_action="ignore",
                                      ensure_full_rank=False, output="numpy")
                specs.append(mm.model_spec)
                block = np.ascontiguousarray(np.asarray(mm, dtype=np.float64).reshape(n, -1))
                out.append(block)
                k = block.shape[1]
                self.suffixes.append([""] if k == 1 else [str(i + 1) for i in range(k)])
        except FormulaError:
            raise
        except Exception as e:
            raise self._failure(data, e, "") from e
        self.spec = specs
        return out

    def _split(self, M: np.ndarray, first: bool) -> list[np.ndarray]:
        slices = list(self.spec.term_slices.values())
        if len(slices) != len(self.nodes):  # formulaic merged two identical expressions
            raise RuntimeError("formulaic returned an unexpected number of terms")
        out = []
        if first:
            self.suffixes = []
        for sl in slices:
            block = np.ascontiguousarray(M[:, sl])
            out.append(block)
            if first:
                k = block.shape[1]
                self.suffixes.append([""] if k == 1 else [str(i + 1) for i in range(k)])
        return out
