"""A study design to plan before there are data: groups, their size, predictors and the true
parameters of a random-intercept (and random-slope) model, for :func:`multilevel.power`.

Generating model, for row i of group j (``y`` the response, ``g`` the grouping factor)::

    y_ij = beta_0 + sum_x beta_x x_ij + sum_w beta_w w_j + u0_j + sum_x u_xj x_ij + e_ij
    u0_j ~ N(0, tau^2),  u_xj ~ N(0, slopes[x]^2) (independent),  e_ij ~ N(0, sigma^2)

Level-1 predictors (``within``: vary inside groups) and level-2 predictors (``between``:
constant within a group) are made by rule, the same in every simulated data set:

=============  ==========================================================================
``"binary"``   between: groups alternate 0, 1, 0, ... (half are treated for an even J);
               within: rows alternate 0, 1, ...
``"time"``     within only: 0, 1, ..., n - 1 (measurement occasions)
``"normal"``   standard normal draws, fixed by the design's ``seed``
a sequence     the values, recycled over the groups (between) or the rows of a group (within)
=============  ==========================================================================

The model fitted to each simulated data set is ``design.formula``, e.g.
``y ~ x + w + (1 + x || group)``.

>>> from multilevel.toolkit.power_design import PowerDesign
>>> d = PowerDesign(n_groups=4, group_size=3, fixed={"(Intercept)": 1.0, "w": 0.5}, tau=1.0,
...                 sigma=2.0, between={"w": "binary"})
>>> d.formula
'y ~ w + (1 | group)'
>>> d.data()["w"].tolist()
[0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0]
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Mapping

import numpy as np
import pandas as pd

from multilevel.errors import ModelSpecError

__all__ = ["PowerDesign"]

_BETWEEN = ("binary", "normal")
_WITHIN = ("binary", "time", "normal")


@dataclass(frozen=True)
class PowerDesign:
    """J groups of n rows, predictors made by rule and the true parameters (module docstring).

    fixed: the fixed effects by name (``"(Intercept)"`` defaults to 0, every predictor needs
        a value); tau: SD of the random intercepts; slopes: SD of a random slope per
        level-1 predictor; sigma: the residual SD.
    """

    n_groups: int
    group_size: int
    fixed: Mapping[str, float]
    sigma: float
    tau: float = 0.0
    between: Mapping[str, Any] = field(default_factory=dict)
    within: Mapping[str, Any] = field(default_factory=dict)
    slopes: Mapping[str, float] = field(default_factory=dict)
    group: str = "group"
    response: str = "y"
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("n_groups", "group_size"):
            v = getattr(self, name)
            if not isinstance(v, (int, np.integer)) or v < 1:
                raise ModelSpecError(f"PowerDesign: {name} must be a whole number >= 1, not {v!r}")
        for name in ("sigma", "tau"):
            v = getattr(self, name)
            if not np.isfinite(v) or v < 0 or (name == "sigma" and v == 0):
                raise ModelSpecError(f"PowerDesign: {name} must be {'> 0' if name == 'sigma' else '>= 0'}, "
                                     f"not {v!r}")
        for kind, specs, rules in (("between", self.between, _BETWEEN), ("within", self.within, _WITHIN)):
            for name, spec in specs.items():
                if isinstance(spec, str) and spec not in rules:
                    raise ModelSpecError(f"PowerDesign: {kind}[{name!r}] must be one of "
                                         f"{', '.join(map(repr, rules))} or a sequence of values, not {spec!r}")
        both = set(self.between) & set(self.within)
        if both:
            raise ModelSpecError(f"PowerDesign: {sorted(both)[0]!r} is both a between and a within predictor")
        for name, sd in self.slopes.items():
            if name not in self.within:
                raise ModelSpecError(f"PowerDesign: slopes[{name!r}]: a random slope needs a level-1 "
                                     f"(within) predictor of that name")
            if not np.isfinite(sd) or sd < 0:
                raise ModelSpecError(f"PowerDesign: slopes[{name!r}] must be >= 0, not {sd!r}")
        known = {"(Intercept)", *self.between, *self.within}
        for name in self.fixed:
            if name not in known:
                raise ModelSpecError(f"PowerDesign: fixed[{name!r}] is not a predictor of the design "
                                     f"(predictors: {', '.join(sorted(known))})")
        missing = [n for n in [*self.within, *self.between] if n not in self.fixed]
        if missing:
            raise ModelSpecError(f"PowerDesign: fixed has no value for {missing[0]!r}")

    @property
    def formula(self) -> str:
        """The model fitted to every simulated data set."""
        rhs = " + ".join([*self.within, *self.between]) or "1"
        re = " + ".join(["1", *self.slopes])
        bar = "||" if self.slopes else "|"
        return f"{self.response} ~ {rhs} + ({re} {bar} {self.group})"

    def with_(self, **changes: Any) -> "PowerDesign":
        """A copy with some settings changed (``d.with_(n_groups=40)``)."""
        return replace(self, **changes)

    def data(self) -> pd.DataFrame:
        """The design's rows (the response column holds 0: :func:`power` simulates it)."""
        J, n = int(self.n_groups), int(self.group_size)
        rng = np.random.default_rng(self.seed)
        width = len(str(J))
        labels = [f"{self.group[:1]}{k:0{width}d}" for k in range(1, J + 1)]
        cols: dict[str, Any] = {self.group: pd.Categorical(np.repeat(labels, n), categories=labels)}
        for name, spec in self.within.items():
            if isinstance(spec, str):
                one = {"binary": np.arange(n) % 2, "time": np.arange(n)}.get(spec)
                vals = np.tile(one, J) if one is not None else rng.standard_normal(J * n)
            else:
                vals = np.tile(np.resize(np.asarray(spec, float), n), J)
            cols[name] = np.asarray(vals, float)
        for name, spec in self.between.items():
            if isinstance(spec, str):
                per = np.arange(J) % 2 if spec == "binary" else rng.standard_normal(J)
            else:
                per = np.resize(np.asarray(spec, float), J)
            cols[name] = np.repeat(np.asarray(per, float), n)
        cols[self.response] = np.zeros(J * n)
        return pd.DataFrame(cols)

    def beta(self, fixef_names: list[str]) -> np.ndarray:
        """The true fixed effects in the order of a fit's ``fixef_names``."""
        return np.array([float(self.fixed.get(nm, 0.0)) for nm in fixef_names])

    def theta(self, reterms: list[Any]) -> np.ndarray:
        """The true theta (SDs relative to sigma) of the fitted terms (one column each: the
        design's terms are independent)."""
        out = []
        for rt in reterms:
            for nm in rt.terms:
                out.append((self.tau if nm == "(Intercept)" else float(self.slopes[nm])) / self.sigma)
        return np.asarray(out, float)
