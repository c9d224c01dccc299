"""Grouping factors and random-effect terms (lme4's ``mkReTrms``, one term at a time).

Layer: design. May import: formula, errors, control.

Why a module of its own: a grouping factor is not a model variable: it is the interaction of
one or more columns keeping observed combinations only (:class:`GroupSpec`), with its own
level order and its own lookup of new data (unseen levels are -1). A :class:`BarSpec` ties one
``(expr | group)`` to its scope, column plan and grouping factor; a :class:`ReTerm` is the
arrays the engines read. Imports source, variables and matrices among the design modules.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from multilevel.design.matrices import ColumnPlan
from multilevel.design.source import DataSource, take_rows
from multilevel.design.variables import Scope, drop_unused
from multilevel.errors import ModelSpecError
from multilevel.formula import BarTerm

__all__ = ["ReTerm", "GroupSpec", "BarSpec"]


@dataclass
class ReTerm:
    """One random-effect term ``(expr | group)`` as lme4 builds it.

    group:  lme4's name of the grouping factor: ``"Subject"``, ``"recipe:replicate"``,
            ``"cask:batch"`` for the inner term of ``(1 | batch/cask)``.
    terms:  names of the columns of ``Z`` in R's naming: ``"(Intercept)"``, ``"Days"``,
            ``"I(age^2)"``, ``"sexgirl"``.
    levels: level labels of the grouping factor in lme4's order (category order, else sorted;
            an interaction ``a:b`` orders by ``a`` then ``b`` and keeps observed combinations).
    refs:   int32 array (n,), the 0-based level of each row used in the fit.
    Z:      float64 array (n, len(terms)), C-contiguous: the term's model-matrix columns.
    spec:   how to rebuild Z and refs for new data (a :class:`BarSpec`).
    label:  lme4's name of the term, e.g. ``"Days | Subject"`` (used in messages).
    structure: its covariance structure (lme4 2.0's name: ``"us"``, ``"diag"``, ``"cs"``,
            ``"ar1"``); the covariance layer makes the structure object from it.
    """

    group: str
    terms: list[str]
    levels: list[str]
    refs: np.ndarray
    Z: np.ndarray
    spec: Any = None  # whatever the builder needs to rebuild Z and refs for new data
    label: str = ""
    structure: str = "us"

    @property
    def n_levels(self) -> int:
        return len(self.levels)

    @property
    def n_terms(self) -> int:
        return len(self.terms)


@dataclass
class GroupSpec:
    """A grouping factor: the interaction of one or more columns, observed combinations only."""

    name: str
    columns: tuple[str, ...]
    var_levels: list[list[str]] = field(default_factory=list)  # per column, used levels
    keys: np.ndarray | None = None   # sorted combination keys (mixed radix) for interactions
    levels: list[str] = field(default_factory=list)

    def fit(self, data: DataSource, rows: np.ndarray | None) -> np.ndarray:
        parts = []
        self.var_levels = []
        for c in self.columns:
            codes, labels = data.column(c).factor()
            codes, labels = drop_unused(take_rows(codes, rows), labels)
            parts.append(codes)
            self.var_levels.append(labels)
        if len(parts) == 1:
            self.levels = self.var_levels[0]
            return parts[0].astype(np.int32, copy=False)
        key = self._combine(parts)
        codes, uniq = pd.factorize(key, sort=True)
        self.keys = np.asarray(uniq, dtype=np.int64)
        # labels: first column's level outermost, as R's a:b
        digits = self._digits(self.keys)
        self.levels = [":".join(self.var_levels[i][d[i]] for i in range(len(d)))
                       for d in zip(*digits)]
        return codes.astype(np.int32)

    def _combine(self, parts: list[np.ndarray]) -> np.ndarray:
        sizes = [len(lv) for lv in self.var_levels]
        if float(np.prod([float(s) for s in sizes])) >= 2.0 ** 62:
            raise ModelSpecError(f"grouping factor {self.name} has too many possible "
                                 f"combinations of levels")
        key = np.zeros(len(parts[0]), dtype=np.int64)
        for codes, size in zip(parts, sizes):
            key = key * size + codes
        return key

    def _digits(self, keys: np.ndarray) -> list[list[int]]:
        sizes = [len(lv) for lv in self.var_levels]
        out = []
        rest = keys.copy()
        for size in reversed(sizes):
            out.append((rest % size).tolist())
            rest //= size
        return out[::-1]

    def refs(self, data: DataSource) -> np.ndarray:
        """Level of each row of new data (-1 = not a level of the fit)."""
        parts = []
        for c, levels in zip(self.columns, self.var_levels):
            codes, labels = data.column(c).factor()
            idx = {lab: i for i, lab in enumerate(levels)}
            lut = np.array([idx.get(lab, -1) for lab in labels] + [-1], dtype=np.int64)
            parts.append(lut[codes])
        return self.refs_from_codes(parts)

    def refs_from_codes(self, parts: list[np.ndarray]) -> np.ndarray:
        """Level of each row from its columns' codes into ``var_levels`` (-1 = not a level
        of the fit, in any column)."""
        if len(parts) == 1:
            return parts[0].astype(np.int32)
        bad = np.zeros(len(parts[0]), dtype=bool)
        for p in parts:
            bad |= p < 0
        key = self._combine([np.where(bad, 0, p) for p in parts])
        pos = np.searchsorted(self.keys, key)
        pos = np.minimum(pos, len(self.keys) - 1)
        found = (self.keys[pos] == key) & ~bad
        return np.where(found, pos, -1).astype(np.int32)


@dataclass
class BarSpec:
    bar: BarTerm
    scope: Scope
    plan: ColumnPlan
    group: GroupSpec
