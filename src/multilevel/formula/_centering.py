"""Centring inside formulas: ``center(x)``, ``center(x, by = g)`` and ``group_mean(x, by = g)``.

These are multilevel's own formula functions (R has no built-in equivalent; in R one centres
the columns by hand before calling lmer). They are formulaic *stateful transforms*, exactly
like ``scale()`` and ``poly()``: the means are learned once, from all rows of the data, kept
in the formulaic ``ModelSpec`` and re-applied unchanged to new data by ``predict(newdata)``.

``center(x)``
    grand-mean centring, ``x - mean(x)`` (the fitting data's mean).
``center(x, by = g)``
    group-mean centring ("centring within cluster"), ``x - mean(x | g)`` with the fitting
    data's mean of each group: the within-group part of ``x``.
``group_mean(x, by = g)``
    the fitting data's mean of ``x`` in the row's group: the between-group part of ``x``,
    a level-2 predictor. ``center(x, by = g) + group_mean(x, by = g) == x`` on every row.

New groups in new data (a level of ``g`` the fit did not see): there is no group mean to
use. By default this is an error. With ``allow_new_levels=True`` (``predict(...,
allow_new_levels=True)``) both functions use the fitting data's grand mean of ``x`` for such
rows, the natural guess for the mean of an unseen group; that keeps
``center(x, by = g) + group_mean(x, by = g) == x`` on new rows too.

Like R's ``scale()``, the means are learnt from *all* rows of the data, before the model
frame drops the rows with a missing value (the design layer evaluates expressions on every
row): a row whose ``x`` (or ``by`` group) is missing is skipped, and its result is NaN (the
model frame drops it); a row dropped only because another variable is missing still counts.
Grouping labels are compared as text (R's labels: ``308`` and ``308.0`` are the same group).

>>> import numpy as np, pandas as pd
>>> x = np.array([1.0, 3.0, 10.0, 20.0]); g = pd.Series(["a", "a", "b", "b"])
>>> state = {}
>>> ml_center(x, by=g, _state=state).tolist()
[-1.0, 1.0, -5.0, 5.0]
>>> ml_group_mean(np.array([7.0]), by=pd.Series(["b"]), _state=state).tolist()
[15.0]
"""
from __future__ import annotations

import contextlib
import contextvars
from typing import Any, Iterator

import numpy as np
import pandas as pd
from formulaic.utils.stateful_transforms import stateful_transform

from multilevel.formula._rsyntax import format_r_number

__all__ = ["ml_center", "ml_group_mean", "allow_new_groups", "CENTERING_TRANSFORMS"]

# Whether a group of new data that the fit did not see may use the grand mean. Set by the
# design layer around the evaluation of new data (a context variable rather than an argument
# because formulaic calls the transform, not we; per thread / task, so concurrent predictions
# with different settings do not interfere).
_ALLOW_NEW_GROUPS: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "multilevel_allow_new_groups", default=False)


@contextlib.contextmanager
def allow_new_groups(flag: bool) -> Iterator[None]:
    """Within this block, ``center(x, by=g)`` / ``group_mean(x, by=g)`` give rows of unseen
    groups the grand mean instead of raising."""
    token = _ALLOW_NEW_GROUPS.set(bool(flag))
    try:
        yield
    finally:
        _ALLOW_NEW_GROUPS.reset(token)


def _as_matrix(data: Any) -> tuple[np.ndarray, bool]:
    """(n, k) float array of ``data`` and whether it was one-dimensional."""
    arr = np.asarray(data, dtype=np.float64)
    if arr.ndim == 1:
        return arr[:, None], True
    if arr.ndim == 2:
        return arr, False
    raise ValueError(f"expected a column, got an array of shape {arr.shape}")


def _labels(by: Any) -> np.ndarray:
    """Group labels as R's text (object array), so new data match by label, not by dtype."""
    s = by if isinstance(by, pd.Series) else pd.Series(np.asarray(by, dtype=object)
                                                       if not isinstance(by, np.ndarray) else by)
    codes, uniq = pd.factorize(s.to_numpy(), use_na_sentinel=True)
    text = []
    for u in np.asarray(uniq, dtype=object).tolist():
        if isinstance(u, (bool, np.bool_)):
            text.append("TRUE" if u else "FALSE")
        elif isinstance(u, (int, np.integer)):
            text.append(str(int(u)))
        elif isinstance(u, (float, np.floating)):
            text.append(format_r_number(float(u)))
        else:
            text.append(str(u))
    lut = np.asarray(text + [None], dtype=object)
    return lut[codes]


def _learn(x: np.ndarray, by: Any, state: dict) -> None:
    """Store the grand mean and (with ``by``) the mean of each group, ignoring NaN."""
    ok = ~np.isnan(x)
    with np.errstate(invalid="ignore", divide="ignore"):
        state["grand"] = (np.where(ok, x, 0.0).sum(axis=0) / ok.sum(axis=0)).tolist()
    if by is None:
        return
    labels = _labels(by)
    if len(labels) != x.shape[0]:
        raise ValueError(f"'by' has {len(labels)} values, x has {x.shape[0]}")
    codes, uniq = pd.factorize(labels, use_na_sentinel=True)
    m = len(uniq)
    means = np.empty((m, x.shape[1]))
    for j in range(x.shape[1]):
        # rows of a missing group are skipped (the model frame drops them)
        col_ok = ok[:, j] & (codes >= 0)
        sums = np.bincount(codes[col_ok], weights=x[col_ok, j], minlength=m)
        counts = np.bincount(codes[col_ok], minlength=m)
        with np.errstate(invalid="ignore", divide="ignore"):
            means[:, j] = sums / counts
    state["levels"] = [str(u) for u in uniq]
    state["means"] = means.tolist()


def _row_means(x: np.ndarray, by: Any, state: dict) -> np.ndarray:
    """The (n, k) mean that applies to each row: its group's mean from the fitting data."""
    grand = np.asarray(state["grand"], dtype=np.float64)
    if by is None:
        return np.broadcast_to(grand, x.shape)
    if "levels" not in state:
        raise ValueError("this transform was fitted without 'by'")
    labels = _labels(by)
    index = {lab: i for i, lab in enumerate(state["levels"])}
    # look up each distinct label once, not each row
    codes, uniq = pd.factorize(labels, use_na_sentinel=True)
    lut = np.array([index.get(u, -1) for u in uniq] + [-1], dtype=np.int64)
    pos = lut[codes]
    means = np.asarray(state["means"], dtype=np.float64).reshape(len(state["levels"]), -1)
    missing_group = codes < 0
    if missing_group.any():
        # a missing group label: NaN, as for a missing x (the row is dropped or refused)
        means = np.vstack([means, np.full((1, means.shape[1]), np.nan)])
        pos = np.where(missing_group, len(means) - 1, pos)
    new = pos < 0
    if new.any():
        if not _ALLOW_NEW_GROUPS.get():
            unseen = sorted({str(lab) for lab in labels[new]})
            shown = ", ".join(repr(u) for u in unseen[:5]) + (", ..." if len(unseen) > 5 else "")
            raise ValueError(f"group(s) {shown} of the 'by' column were not in the fitting data, "
                             f"so their mean is unknown; use allow_new_levels=True to centre them "
                             f"at the fitting data's grand mean")
        out = np.empty(x.shape)
        out[~new] = means[pos[~new]]
        out[new] = grand
        return out
    return means[pos]


def _streamed(x: np.ndarray, by: Any, state: dict) -> bool:
    """Data read in chunks (``_streaming``): accumulate this chunk (True) or take the merged
    state (fills ``state``)."""
    from multilevel.formula._streaming import active, stream_hook

    if not active():
        return False
    return stream_hook("center", x, None if by is None else _labels(by), (), state)


# Formulaic calls a stateful transform with ``_state``: empty at fit time (learn), filled for
# new data (re-apply). The mutable defaults are never used: formulaic always passes a state.
@stateful_transform
def ml_center(data: Any, by: Any = None, _state: dict = {}) -> np.ndarray:  # noqa: B006
    """``center(x)`` / ``center(x, by = g)``: x minus the (group) mean of the fitting data."""
    x, flat = _as_matrix(data)
    if "grand" not in _state and _streamed(x, by, _state):
        return np.zeros(x.shape[0]) if flat else np.zeros(x.shape)
    if "grand" not in _state:
        _learn(x, by, _state)
    out = x - _row_means(x, by, _state)
    return out[:, 0] if flat else out


@stateful_transform
def ml_group_mean(data: Any, by: Any = None, _state: dict = {}) -> np.ndarray:  # noqa: B006
    """``group_mean(x, by = g)``: the fitting data's mean of x in the row's group."""
    if by is None:
        raise ValueError("group_mean() needs by = <grouping column>")
    x, flat = _as_matrix(data)
    if "grand" not in _state and _streamed(x, by, _state):
        return np.zeros(x.shape[0]) if flat else np.zeros(x.shape)
    if "grand" not in _state:
        _learn(x, by, _state)
    out = np.array(_row_means(x, by, _state), dtype=np.float64)
    return out[:, 0] if flat else out


#: Names under which the translated Python code calls the transforms (see ``_python.py``).
CENTERING_TRANSFORMS = {"_ml_center": ml_center, "_ml_group_mean": ml_group_mean}
