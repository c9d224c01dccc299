"""The response as lme4 reads it for each family (binomial's and poisson's ``initialize`` rules).

Layer: design. May import: formula, errors, control.

Why a module of its own: the response is read differently from the other variables (a column,
an expression, a two-level factor or ``cbind(successes, failures)`` for binomial, counts for
poisson), it is checked per family, and it is never re-applied to new data. Imports source
and variables among the design modules.
"""
from __future__ import annotations

import numpy as np

from multilevel.design.source import DataSource, take_rows
from multilevel.design.variables import drop_unused, evaluate_on_all_rows, strip_parens
from multilevel.errors import DataError
from multilevel.formula import Call, Name, Node, NumericExpressions, deparse

__all__ = ["Response"]


class Response:
    """The response as lme4 reads it for each family (binomial's ``initialize`` rules).

    Only the reading (factor, cbind, expression) is here; the family's own value checks
    (0/1 or proportions, counts, ...) belong to ``Family.check_response``."""

    def __init__(self, node: Node, text: str, data: DataSource, family: str):
        self.node = node
        self.name = deparse(node)
        self.family = family
        self.data = data
        self.levels: list[str] | None = None  # a factor response's levels (binomial)
        n = strip_parens(node)
        self.cbind = isinstance(n, Call) and n.func == "cbind"
        self.column = n.name if isinstance(n, Name) and n.name in data else None
        nodes = [a.value for a in n.args] if self.cbind else ([] if self.column else [node])
        self.parts = nodes
        self.evaluator = NumericExpressions(nodes, text)
        if self.cbind and family != "binomial":
            raise DataError(f"a cbind(successes, failures) response needs family='binomial', "
                            f"not '{family}'")

    def columns(self) -> list[str]:
        return [self.column] if self.column else list(self.evaluator.names)

    def learn(self, data: DataSource) -> tuple[list[np.ndarray] | None, np.ndarray | None]:
        """The response's expressions on all rows (R's model frame evaluates before
        ``na.omit``; see ``Scope.learn_expressions``) and the rows where one is NaN; (None,
        None) for a plain column."""
        if self.column is not None or not self.evaluator.nodes:
            return None, None
        return evaluate_on_all_rows(self.evaluator, data)

    def evaluate(self, data: DataSource, rows, n: int, blocks: list[np.ndarray] | None = None):
        """(y, weights from cbind or None, rows where an expression is NaN); ``blocks``: the
        expressions already evaluated on these rows (from :meth:`learn`)."""
        fam = self.family
        if self.column is not None:
            col = data.column(self.column)
            if col.kind in ("categorical", "string"):
                if fam != "binomial":
                    raise DataError(f"the response '{self.column}' is {col.describe()}, not "
                                    f"numeric; a {fam} model needs a numeric response")
                codes, labels = col.factor()
                codes, labels = drop_unused(take_rows(codes, rows), labels)
                self.levels = labels
                # binomial()$initialize: the first level is failure, any other success
                y = (codes != 0).astype(np.float64)
                return y, None, None
            if col.kind == "other":
                raise DataError(f"the response '{self.column}' ({col.describe()}) is not numeric")
            y = take_rows(col.numeric(), rows).astype(np.float64, copy=True)
            return y, None, None
        if blocks is None:
            env = {nm: take_rows(data.column(nm).raw(), rows) for nm in self.evaluator.names
                   if nm in data}
            blocks = self.evaluator.fit(env, n)
        bad = None
        for b in blocks:
            m = np.isnan(b).any(axis=1)
            if m.any():
                bad = m if bad is None else bad | m
        if any(b.shape[1] != 1 for b in blocks):
            raise DataError(f"the response {self.name} must be one column")
        if self.cbind:
            s, f = blocks[0][:, 0], blocks[1][:, 0]
            if ((s < 0) | (f < 0)).any():
                raise DataError(f"{self.name}: successes and failures must be non-negative")
            trials = s + f
            with np.errstate(invalid="ignore", divide="ignore"):
                y = np.where(trials > 0, s / np.where(trials > 0, trials, 1.0), 0.0)
            return y, trials.astype(np.float64), bad
        y = np.ascontiguousarray(blocks[0][:, 0], dtype=np.float64)
        return y, None, bad
