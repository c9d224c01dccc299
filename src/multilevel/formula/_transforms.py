"""R's stateful transforms ``scale()`` and ``poly()``, as formulaic stateful transforms.

Why our own rather than formulaic's: R's model frame evaluates every variable on *all* rows
of the data before ``na.omit`` drops the incomplete ones, so ``scale(x)`` centres by the mean
of every non-missing ``x``, including rows that are dropped later because another variable is
missing (lme4's ``scale(exp)`` on the star data: 1.7647, not the 1.7591 of learning on the
complete rows only). The design layer therefore evaluates expressions on all rows, which needs
transforms that skip missing values as R's do:

``scale(x, center = TRUE, scale = TRUE)``
    R's ``scale.default``: ``colMeans(x, na.rm = TRUE)``, then the root mean square of the
    non-missing centred values with n - 1 (the standard deviation when centred).
``poly(x, degree, raw = FALSE)``
    R's orthogonal polynomials: ``alpha`` and ``norm2`` from the QR decomposition of the
    powers of the centred ``x``, values from the three-term recurrence (``predict.poly``), so
    new data get exactly the fitting data's polynomials. R refuses missing values in ``poly()``;
    here they are skipped when learning and give NaN rows (dropped by the model frame).

The learnt numbers are kept in formulaic's ``ModelSpec`` (``_state``) and reused for new data.

>>> st = {}
>>> ml_scale(np.array([1.0, 2.0, np.nan, 5.0]), _state=st).round(4).tolist()
[-0.8006, -0.3203, nan, 1.1209]
>>> ml_poly(np.array([1.0, 2.0, 3.0]), degree=2, _state={}).round(4).tolist()
[[-0.7071, 0.4082], [0.0, -0.8165], [0.7071, 0.4082]]
"""
from __future__ import annotations

from typing import Any

import numpy as np
from formulaic.utils.stateful_transforms import stateful_transform

from multilevel.formula._centering import _as_matrix
from multilevel.formula._streaming import stream_hook

__all__ = ["ml_scale", "ml_poly", "R_TRANSFORMS"]




# formulaic passes ``_state`` (empty at fit time, filled for new data); the mutable default
# is never used
@stateful_transform
def ml_scale(data: Any, center: bool = True, scale: bool = True,
             _state: dict = {}) -> np.ndarray:  # noqa: B006
    """R's ``scale(x, center, scale)`` ignoring missing values when learning."""
    x, flat = _as_matrix(data)
    # data read in chunks: accumulate this chunk's moments, or take the merged state
    if "center" not in _state and stream_hook("scale", x, None, (center, scale), _state):
        return np.zeros(x.shape[0]) if flat else np.zeros(x.shape)
    if "center" not in _state:
        ok = ~np.isnan(x)
        cnt = ok.sum(axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(ok, x, 0.0).sum(axis=0) / cnt if center else np.zeros(x.shape[1])
            xc = np.where(ok, x - mean, 0.0)
            sd = np.sqrt((xc ** 2).sum(axis=0) / np.maximum(1, cnt - 1)) if scale \
                else np.ones(x.shape[1])
        _state["center"] = mean.tolist()
        _state["scale"] = sd.tolist()
    with np.errstate(invalid="ignore", divide="ignore"):
        out = (x - np.asarray(_state["center"])) / np.asarray(_state["scale"])
    return out[:, 0] if flat else out


def _poly_coefs(x: np.ndarray, degree: int) -> tuple[list[float], list[float]]:
    """R's ``poly()`` coefficients (``alpha``, ``norm2``) from the non-missing ``x``."""
    x = x[~np.isnan(x)]
    if degree >= len(np.unique(x)):
        raise ValueError("poly(): 'degree' must be less than the number of unique points")
    xbar = float(x.mean())
    xc = x - xbar
    X = np.vander(xc, degree + 1, increasing=True)
    Q, R = np.linalg.qr(X)
    Z = Q * np.diag(R)
    norm2 = (Z ** 2).sum(axis=0)
    alpha = ((xc[:, None] * Z ** 2).sum(axis=0) / norm2 + xbar)[:degree]
    return alpha.tolist(), [1.0] + norm2.tolist()


def _poly_values(x: np.ndarray, alpha: list[float], norm2: list[float], degree: int) -> np.ndarray:
    """``predict(poly)``: the three-term recurrence, normalised by sqrt(norm2)."""
    Z = np.ones((x.shape[0], degree + 1))
    Z[:, 1] = x - alpha[0]
    for i in range(1, degree):
        Z[:, i + 1] = (x - alpha[i]) * Z[:, i] - (norm2[i + 1] / norm2[i]) * Z[:, i - 1]
    Z /= np.sqrt(np.asarray(norm2[1:]))
    return Z[:, 1:]


@stateful_transform
def ml_poly(data: Any, degree: int = 1, raw: bool = False,
            _state: dict = {}) -> np.ndarray:  # noqa: B006
    """R's ``poly(x, degree, raw)`` of one variable."""
    x = np.asarray(data, dtype=np.float64).reshape(-1)
    degree = int(degree)
    if raw:
        return np.column_stack([x ** d for d in range(1, degree + 1)])
    if "alpha" not in _state and stream_hook("poly", x, None, (degree,), _state):
        return np.zeros((x.shape[0], degree))
    if "alpha" not in _state:
        alpha, norm2 = _poly_coefs(x, degree)
        _state["alpha"], _state["norm2"] = alpha, norm2
    return _poly_values(x, _state["alpha"], _state["norm2"], degree)


#: names under which the translated Python code calls them (see ``_python.py``)
R_TRANSFORMS = {"_ml_scale": ml_scale, "_ml_poly": ml_poly}
