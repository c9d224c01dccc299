"""Model frame and design matrices: from a formula and a data frame to the arrays the engines use.

This module is the only place that looks at a data frame. It returns plain numpy arrays
(``y``, ``X``, one :class:`ReTerm` per random-effect term) plus everything needed to build
the same matrices for new data (``ModelFrame.new_design``). Engines never see data frames
or formula strings.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


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
    """

    group: str
    terms: list[str]
    levels: list[str]
    refs: np.ndarray
    Z: np.ndarray
    spec: Any = None  # whatever the builder needs to rebuild Z and refs for new data

    @property
    def n_levels(self) -> int:
        return len(self.levels)

    @property
    def n_terms(self) -> int:
        return len(self.terms)


@dataclass
class NewDesign:
    """Matrices for new data (see ``ModelFrame.new_design``).

    ``refs[k]`` is -1 for a row whose level of term k was not in the fitting data.
    ``reterms`` holds only the terms kept by ``re_form``, as indices into ``ModelFrame.reterms``.
    """

    X: np.ndarray
    offset: np.ndarray | None
    term_index: list[int]
    refs: list[np.ndarray]
    Z: list[np.ndarray]


@dataclass
class ModelFrame:
    """Everything about the data of one fit, as arrays.

    y, X:           response (n,) and fixed-effects matrix (n, p), float64, C-contiguous,
                    after dropping missing rows and rank-deficient columns.
    fixef_names:    column names of X in R's naming.
    dropped_columns: names of rank-deficient columns dropped from X (warned).
    reterms:        random-effect terms in lme4's order: bars expanded (``||`` split into
                    uncorrelated terms, ``a/b`` into ``a`` and ``b:a``), then stably sorted by
                    decreasing number of levels.
    weights:        prior weights (n,) or None; for ``cbind(s, f)`` responses the trials s + f.
    offset:         (n,) or None (sum of ``offset()`` terms and the ``offset=`` argument).
    rows:           int64 positions (0-based) in the user's frame of the rows used.
    n_dropped:      number of rows dropped for missing values.
    warnings:       messages for the fit's warnings (rows dropped, columns dropped).
    """

    formula: str
    response: str
    y: np.ndarray
    X: np.ndarray
    fixef_names: list[str]
    reterms: list[ReTerm]
    weights: np.ndarray | None = None
    offset: np.ndarray | None = None
    rows: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    n_dropped: int = 0
    dropped_columns: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    spec: Any = None  # what new_design needs (formulaic model spec, factor levels, ...)

    @property
    def nobs(self) -> int:
        return int(self.y.shape[0])
