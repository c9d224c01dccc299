"""R's contrasts: how a factor with k levels becomes columns of a model matrix.

Layer: design. May import: formula, errors, control.

Why a module of its own: the contrast functions (``contr.treatment``, ``contr.sum``,
``contr.helmert``, ``contr.poly``, ``contr.SAS``), the validation of the ``contrasts=``
argument of ``lmer`` / ``glmer`` / ``lm`` (lme4's ``contrasts = list(f = "contr.sum")``) and
the record of what was used (R's ``attr(model.matrix, "contrasts")``, the reference JSON's
``fixed_contrasts``) are one concept used by the column plan (:mod:`.matrices`), the
variables (:mod:`.variables`) and the export of a fit. Imports nothing of the design layer.

R's defaults (``options("contrasts")``): ``contr.treatment`` for unordered factors and
logicals, ``contr.poly`` for ordered factors (an ordered pandas Categorical). A contrast is
only used where R's ``TermCode`` rule codes the factor by contrasts; where a factor needs all
its levels (no intercept, or an interaction whose margin is missing) it gets one indicator per
level whatever its contrast, as in R.

>>> c = contrast_for("f", ["a", "b", "c"], "sum")
>>> c.type, c.columns, c.matrix.tolist()
('contr.sum', ['1', '2'], [[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]])
>>> contr_poly(3)[:, 0].round(4).tolist(), poly_names(4)
([-0.7071, -0.0, 0.7071], ['.L', '.Q', '.C'])
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import pandas as pd

from multilevel.errors import ModelSpecError

__all__ = ["Contrast", "contrast_for", "normalize_contrasts", "contr_poly", "poly_names",
           "contr_sum", "contr_helmert", "contr_treatment", "CONTRAST_TYPES"]

#: the contrast functions by their short name (R's name without ``contr.``)
CONTRAST_TYPES = ("treatment", "sum", "helmert", "poly", "SAS")


def contr_treatment(k: int, base: int = 0) -> np.ndarray:
    """``contr.treatment(k)``: indicators of every level but ``base`` (k x (k-1))."""
    return np.delete(np.eye(k), base, axis=1)


def contr_sum(k: int) -> np.ndarray:
    """``contr.sum(k)``: level j < k has 1 in column j, the last level -1 everywhere."""
    return np.vstack([np.eye(k - 1), -np.ones((1, k - 1))])


def contr_helmert(k: int) -> np.ndarray:
    """``contr.helmert(k)``: column j is -1 for levels 1..j, j for level j+1, 0 after."""
    M = np.zeros((k, k - 1))
    for j in range(1, k):
        M[:j, j - 1] = -1.0
        M[j, j - 1] = float(j)
    return M


def contr_poly(k: int) -> np.ndarray:
    """``contr.poly(k)``: orthonormal polynomials of the scores 1..k (k x (k-1)).

    As R's ``make.poly``: the QR decomposition of the powers 0..k-1 of the centred scores,
    each column of Q signed like the diagonal of R (so the linear contrast increases).
    """
    if k > 95:
        # R: "orthogonal polynomials cannot be represented accurately enough for 95 degrees
        # of freedom"
        raise ValueError("contr.poly: orthogonal polynomials cannot be represented accurately "
                         "enough for more than 95 levels")
    y = np.arange(1, k + 1, dtype=np.float64)
    y -= y.mean()
    X = np.vander(y, k, increasing=True)
    Q, R = np.linalg.qr(X)
    Q = Q * np.sign(np.diag(R))
    return np.ascontiguousarray(Q[:, 1:])


def poly_names(k: int) -> list[str]:
    """R's column names of ``contr.poly(k)``: ``.L``, ``.Q``, ``.C``, ``^4``, ``^5``, ..."""
    return [".L", ".Q", ".C"][: k - 1] + [f"^{d}" for d in range(4, k)]


@dataclass
class Contrast:
    """The coding of one factor of a model matrix.

    type:    R's name (``"contr.treatment"``, ``"contr.sum"``, ``"contr.helmert"``,
             ``"contr.poly"``, ``"contr.SAS"``) or ``"matrix"`` for a user matrix.
    levels:  the factor's levels, in order (rows of ``matrix``).
    columns: the suffixes R appends to the factor's name (``"B"``, ``"1"``, ``".L"``).
    matrix:  (k, m) float array: row i is the coding of level i; R's contrasts are made on
             first use (treatment coding is filled by comparing levels and never needs its
             k x (k - 1) matrix, 4.5 GiB for a factor with 24,000 levels).
    """

    type: str
    levels: list[str]
    columns: list[str]
    _matrix: np.ndarray | None = None

    @property
    def matrix(self) -> np.ndarray:
        if self._matrix is None:
            k = len(self.levels)
            make = {"contr.treatment": lambda: contr_treatment(k),
                    "contr.SAS": lambda: contr_treatment(k, k - 1),
                    "contr.sum": lambda: contr_sum(k),
                    "contr.helmert": lambda: contr_helmert(k),
                    "contr.poly": lambda: contr_poly(k)}[self.type]
            self._matrix = make() if k >= 2 else np.zeros((k, 0))
        return self._matrix

    @property
    def is_treatment(self) -> bool:
        """Plain treatment coding (indicators of levels 2..k), filled by comparisons."""
        return self.type == "contr.treatment"

    def to_dict(self) -> dict:
        """The reference JSON's ``fixed_contrasts`` entry (treatment: the type only)."""
        if self.is_treatment:
            return {"type": self.type}
        return {"type": self.type, "levels": list(self.levels), "columns": list(self.columns),
                "matrix": self.matrix.tolist()}


def normalize_contrasts(contrasts: Any) -> dict[str, Any]:
    """Validate the ``contrasts=`` argument: factor name -> a short name (``"sum"``; R's
    ``"contr.sum"`` is accepted) or a numeric matrix (numpy array or DataFrame, k rows).

    Only the shape of the argument is checked here; whether each name is a factor of the
    fixed part, and the number of rows of a matrix, are checked against the data.

    >>> normalize_contrasts({"sector": "contr.sum", "vr": "Helmert"})
    {'sector': 'sum', 'vr': 'helmert'}
    """
    if contrasts is None:
        return {}
    if not isinstance(contrasts, Mapping):
        raise ModelSpecError("contrasts must be a dict of factor name -> contrast, e.g. "
                             "contrasts={'f': 'sum'}, not " + type(contrasts).__name__)
    out: dict[str, Any] = {}
    for name, value in contrasts.items():
        if not isinstance(name, str):
            raise ModelSpecError(f"contrasts: the keys must be factor names, not {name!r}")
        if isinstance(value, str):
            short = value[6:] if value.startswith("contr.") else value
            match = [t for t in CONTRAST_TYPES if t.lower() == short.lower()]
            if not match:
                raise ModelSpecError(f"contrasts: unknown contrast {value!r} for factor '{name}' "
                                     f"(use one of {', '.join(CONTRAST_TYPES)}, R's contr.* "
                                     f"names, or a matrix with one row per level)")
            out[name] = match[0]
        elif isinstance(value, (np.ndarray, pd.DataFrame, list, tuple)):
            out[name] = _as_matrix(name, value)
        else:
            raise ModelSpecError(f"contrasts: the contrast of factor '{name}' must be a name "
                                 f"('sum', 'helmert', 'treatment', 'poly') or a matrix, not "
                                 f"{type(value).__name__}")
    return out


@dataclass
class _Matrix:
    """A user contrast matrix as given: values, column names, row labels (DataFrame index)."""

    values: np.ndarray
    columns: list[str] | None
    rows: list[str] | None


def _as_matrix(name: str, value: Any) -> _Matrix:
    columns = rows = None
    if isinstance(value, pd.DataFrame):
        if not isinstance(value.columns, pd.RangeIndex):
            columns = [str(c) for c in value.columns]
        if not isinstance(value.index, pd.RangeIndex):
            rows = [str(r) for r in value.index]
        value = value.to_numpy()
    try:
        M = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise ModelSpecError(f"contrasts: the matrix for factor '{name}' is not numeric") from e
    if M.ndim == 1:
        M = M[:, None]
    if M.ndim != 2 or M.shape[1] == 0:
        raise ModelSpecError(f"contrasts: the matrix for factor '{name}' must be 2-dimensional "
                             f"with at least one column (got shape {M.shape})")
    if not np.isfinite(M).all():
        raise ModelSpecError(f"contrasts: the matrix for factor '{name}' has missing or "
                             f"infinite values")
    return _Matrix(M, columns, rows)


def contrast_for(key: str, levels: list[str], spec: Any = None, *,
                 ordered: bool = False) -> Contrast:
    """The :class:`Contrast` of factor ``key`` with these ``levels``: ``spec`` from the
    (normalized) ``contrasts=`` argument, else R's default (poly if ``ordered``)."""
    k = len(levels)
    if spec is None:
        spec = "poly" if ordered else "treatment"
    if isinstance(spec, _Matrix):
        M = spec.values
        if spec.rows is not None and sorted(spec.rows) == sorted(levels) \
                and len(set(spec.rows)) == k:
            M = M[[spec.rows.index(lab) for lab in levels]]
        if M.shape[0] != k:
            raise ModelSpecError(f"contrasts: the matrix for factor '{key}' has {M.shape[0]} "
                                 f"rows, the factor has {k} levels ({', '.join(levels[:10])}"
                                 f"{', ...' if k > 10 else ''}) in the rows used")
        if M.shape[1] > k - 1:
            raise ModelSpecError(f"contrasts: the matrix for factor '{key}' has {M.shape[1]} "
                                 f"columns; a factor with {k} levels has at most {k - 1} "
                                 f"contrasts")
        cols = spec.columns or [str(j + 1) for j in range(M.shape[1])]
        return Contrast("matrix", list(levels), cols, np.array(M, dtype=np.float64))
    if k < 2:
        return Contrast(f"contr.{spec}", list(levels), [], np.zeros((k, 0)))
    # the matrices are made on first use (Contrast.matrix)
    if spec == "treatment":
        return Contrast("contr.treatment", list(levels), list(levels[1:]))
    if spec == "SAS":
        return Contrast("contr.SAS", list(levels), list(levels[:-1]))
    if spec in ("sum", "helmert"):
        return Contrast(f"contr.{spec}", list(levels), [str(j) for j in range(1, k)])
    if spec == "poly":
        try:
            M = contr_poly(k)
        except ValueError as e:
            raise ModelSpecError(f"factor '{key}': {e}") from e
        return Contrast("contr.poly", list(levels), poly_names(k), M)
    raise ModelSpecError(f"contrasts: unknown contrast {spec!r} for factor '{key}'")
