"""Control settings of a fit: :class:`LmerControl` and :class:`GlmerControl`.

Layer: control (bottom, beside errors). May import: ``multilevel.errors``, numpy. Everything
that reads a setting (the engine's optimisers, the model functions, the inference code that
refits) receives one of these validated objects instead of a dict, so a bad value is reported
once, here, naming the setting, instead of surfacing as a traceback from NLopt or numpy.

Checks carry an action as in lme4's ``lmerControl``: ``"warning"`` (the default: the fit
warns and keeps the record on ``fit.warnings``), ``"ignore"`` (no warning, no record) or
``"error"`` (the fit raises :class:`~multilevel.errors.FitError`). ``True`` / ``False``
mean ``"warning"`` / ``"ignore"`` (``check_conv=False`` also skips the check's evaluations).

>>> ctrl = LmerControl.from_user({"maxeval": 500, "check_singular": "ignore"})
>>> ctrl.maxeval, ctrl.action("singular"), ctrl.action("not_converged")
(500, 'ignore', 'warning')
"""
from __future__ import annotations

import copy
import dataclasses
import math
import numbers
from dataclasses import dataclass
from typing import Any, ClassVar, Mapping, TypeVar

import numpy as np

from multilevel.errors import ControlError, FitError, FitWarning

__all__ = ["LmerControl", "GlmerControl", "ACTIONS", "SINGULAR_TOL"]

#: lme4's default tolerance of ``isSingular()``: the default of ``singular_tol``, the one
#: tolerance behind both the singular-fit warning and ``fit.is_singular``
SINGULAR_TOL = 1e-4

#: the actions a check can take (lme4's "ignore", "warning", "stop")
ACTIONS = ("ignore", "warning", "error")

_C = TypeVar("_C", bound="LmerControl")


def _action(name: str, value: Any) -> str:
    if isinstance(value, (bool, np.bool_)):
        return "warning" if value else "ignore"
    if isinstance(value, str) and value in ACTIONS:
        return value
    raise ControlError(name, value, "one of 'ignore', 'warning', 'error' (or True / False)")


def _real(name: str, value: Any, *, positive: bool = False) -> float:
    ok = isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))
    if ok:
        v = float(value)
        ok = math.isfinite(v) and (v > 0 if positive else v >= 0)
    if not ok:
        raise ControlError(name, value, "a positive number" if positive else "a non-negative number")
    return v


def _count(name: str, value: Any) -> int:
    # 1e5 is how many people write 100000
    ok = isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))
    if ok:
        v = float(value)
        ok = math.isfinite(v) and v.is_integer() and v >= 1
    if not ok:
        raise ControlError(name, value, "a positive integer")
    return int(v)


def _step(name: str, value: Any) -> float | tuple[float, ...] | None:
    if value is None:
        return None
    try:
        arr = np.asarray(value, dtype=float)
    except (TypeError, ValueError):
        arr = None
    if arr is None or arr.ndim > 1 or isinstance(value, (bool, str)) or arr.size == 0 \
            or not np.all(np.isfinite(arr)) or not np.all(arr > 0):
        raise ControlError(name, value, "None, a positive number or one positive number per parameter")
    # a tuple keeps the object comparable and immutable; BOBYQA broadcasts it
    return float(arr) if arr.ndim == 0 else tuple(float(v) for v in arr)


#: the validated default settings of each control class (see ``from_user``)
_DEFAULTS: dict[type, Any] = {}


@dataclass(frozen=True)
class LmerControl:
    """Settings of :func:`multilevel.lmer` (and of the optimiser wherever BOBYQA runs).

    Optimiser: ``optimizer`` (``"auto"``: inside the compiled core, projected BFGS on the
    analytic gradient of the profiled deviance, where the model's covariance parameters are
    entries of Λ -- unstructured and diagonal terms -- and it has at most 1000 random effects
    (beyond, a gradient costs more than the evaluations it saves), else NLopt's BOBYQA;
    ``"bfgs"``: the in-core optimiser wherever it applies; ``"bobyqa"``:
    NLopt's BOBYQA always, the optimiser before the in-core one, kept for parity checks),
    ``maxeval`` (100000, for either). BOBYQA's own settings: ``ftol_abs`` (1e-8),
    ``ftol_rel`` (0), ``xtol_abs`` (1e-8), ``initial_step`` (None: in proportion to the
    starting values; a number or one per parameter); the in-core optimiser stops instead when
    a Newton step (on a Hessian from differences of the exact gradient) would lower the
    criterion by less than 1e-10.
    Checks: ``check_conv`` (the Newton-decrement convergence check, tolerance ``conv_tol`` =
    1e-4 deviance units), ``check_singular`` (a diagonal of some Lambda below
    ``singular_tol`` = 1e-4, lme4's ``isSingular`` tolerance; the same tolerance decides
    ``fit.is_singular``), ``check_rank`` (rank-deficient fixed-effect columns dropped).
    Each check: ``"warning"`` (default), ``"ignore"`` or ``"error"``.
    Size limits, checked before anything is allocated (a :class:`~multilevel.errors.
    ModelSpecError` says how big the model would be): ``max_dense_gib`` (4: the largest dense
    model matrix, X or one random-effect term's Z, in GiB) and ``max_cov_params`` (2000: the
    most covariance parameters, e.g. 210 for ``(0 + factor(k) | g)`` with 20 levels of k; the
    optimiser's work grows with their square).

    >>> LmerControl(maxeval=1000).with_(check_conv=False).check_conv
    'ignore'
    >>> LmerControl(maxeval="a")
    Traceback (most recent call last):
    ...
    multilevel.errors.ControlError: control setting maxeval='a' is not valid: it must be a positive integer
    """

    optimizer: str = "auto"
    ftol_abs: float = 1e-8
    ftol_rel: float = 0.0
    xtol_abs: float = 1e-8
    maxeval: int = 100_000
    # BOBYQA's first step per parameter; None lets the model choose
    initial_step: float | tuple[float, ...] | None = None
    conv_tol: float = 1e-4
    singular_tol: float = SINGULAR_TOL
    check_conv: str = "warning"
    check_singular: str = "warning"
    check_rank: str = "warning"
    max_dense_gib: float = 4.0
    max_cov_params: int = 2000

    #: the values of ``optimizer``
    _OPTIMIZERS: ClassVar[tuple[str, ...]] = ("auto", "bfgs", "bobyqa")

    #: which check decides the action on a warning code (codes not listed always warn)
    _CHECKS: ClassVar[dict[str, str]] = {
        "not_converged": "check_conv",
        "singular": "check_singular",
        "rank_deficient": "check_rank",
    }

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            object.__setattr__(self, f.name, self._validate(f.name, value))

    def _validate(self, name: str, value: Any) -> Any:
        if name == "optimizer":
            if isinstance(value, str) and value in self._OPTIMIZERS:
                return value
            raise ControlError(name, value, "one of " + ", ".join(f"'{o}'" for o in self._OPTIMIZERS))
        if name.startswith("check_"):
            return _action(name, value)
        if name in ("maxeval", "max_cov_params"):
            return _count(name, value)
        if name == "max_dense_gib":
            return _real(name, value, positive=True)
        if name == "initial_step":
            return _step(name, value)
        return _real(name, value)

    # -- construction ------------------------------------------------------------------------

    @classmethod
    def from_user(cls: type[_C], control: Mapping[str, Any] | LmerControl | None = None,
                  **base: Any) -> _C:
        """The settings from what a user passed as ``control=``: None (defaults), a dict of
        settings, or a control object. ``base`` are defaults of the caller (e.g. a refit
        that skips the convergence check) that the user's dict overrides.

        >>> LmerControl.from_user({"maxeval": 1e3}, check_conv=False).maxeval
        1000
        >>> LmerControl.from_user({"maxiter": 3})
        Traceback (most recent call last):
        ...
        multilevel.errors.ControlError: unknown control setting 'maxiter'; known: check_conv, check_rank, check_singular, conv_tol, ftol_abs, ftol_rel, initial_step, max_cov_params, max_dense_gib, maxeval, optimizer, singular_tol, xtol_abs
        """
        if isinstance(control, cls):
            return control
        if control is None and not base:
            # the defaults are immutable: validate them once per class, not once per fit
            if cls not in _DEFAULTS:
                _DEFAULTS[cls] = cls()
            return _DEFAULTS[cls]  # type: ignore[return-value]
        known = {f.name for f in dataclasses.fields(cls)}
        if isinstance(control, LmerControl):  # e.g. an LmerControl given to glmer
            settings = {f.name: getattr(control, f.name) for f in dataclasses.fields(control)
                        if f.name in known}
        elif control is None:
            settings = {}
        elif isinstance(control, Mapping):
            settings = dict(control)
        else:
            raise ControlError("control", control, message=f"control must be a dict of settings or a "
                               f"{cls.__name__}, not {type(control).__name__}")
        for key in list(base) + list(settings):
            if key not in known:
                raise ControlError(str(key), settings.get(key), message=(
                    f"unknown control setting {key!r}; known: {', '.join(sorted(known))}"))
        return cls(**{**base, **settings})

    def with_(self: _C, **changes: Any) -> _C:
        """A copy with some settings changed (each validated like the constructor; the
        others were checked when this object was made)."""
        names = {f.name for f in dataclasses.fields(self)}
        new = copy.copy(self)
        for key, value in changes.items():
            if key not in names:
                raise ControlError(str(key), value, message=(
                    f"unknown control setting {key!r}; known: {', '.join(sorted(names))}"))
            object.__setattr__(new, key, self._validate(key, value))
        return new

    # -- checks ------------------------------------------------------------------------------

    def action(self, code: str) -> str:
        """What to do with a warning of this code: ``"ignore"``, ``"warning"`` or ``"error"``."""
        check = self._CHECKS.get(code)
        return "warning" if check is None else getattr(self, check)

    @property
    def conv_check_on(self) -> bool:
        """Whether to run the convergence check at all (it costs evaluations)."""
        return self.check_conv != "ignore"

    def apply(self, records: list[FitWarning]) -> list[FitWarning]:
        """The records to keep and issue after the checks' actions: ``"ignore"`` drops a
        record, ``"error"`` raises :class:`FitError` with its message (before anything is
        issued)."""
        kept = []
        for rec in records:
            act = self.action(getattr(rec, "code", "other"))
            if act == "error":
                check = self._CHECKS[rec.code]
                err = FitError(f"{rec} (control {check}='error')")
                err.warning = rec  # type: ignore[attr-defined]
                raise err
            if act == "warning":
                kept.append(rec)
        return kept


@dataclass(frozen=True)
class GlmerControl(LmerControl):
    """Settings of :func:`multilevel.glmer`: those of :class:`LmerControl` (but ``conv_tol``
    1e-6 deviance units) plus

    ``pirls_tol`` (1e-13: PIRLS stops when no coordinate moves by more than this, relative to
    1 + |.|), ``pirls_maxit`` (200), ``calc_derivs`` (True / False to force or skip the
    Hessian behind the default covariance; None: lme4's rule), ``optimizer`` (``"auto"``:
    Newton on the exact gradient where the engine has one, else BOBYQA; ``"newton"``;
    ``"bobyqa"``), ``newton_tol`` (1e-10: predicted decrease at which Newton stops),
    ``stage1_ftol_abs`` / ``stage1_xtol_abs`` (1e-6 / 1e-5: tolerances of stage 1 when it only
    provides the start of a BOBYQA stage 2) and ``check_hessian`` (a finite-difference
    Hessian that is not positive definite).

    >>> GlmerControl.from_user({"optimizer": "bobyqa"}).optimizer
    'bobyqa'
    """

    # a stop that a Newton step would improve by more than 1e-6 in deviance is flagged (the
    # Newton polish after BOBYQA leaves far less; LMMs keep 1e-4, see LmerControl)
    conv_tol: float = 1e-6
    pirls_tol: float = 1e-13
    pirls_maxit: int = 200
    calc_derivs: bool | None = None
    optimizer: str = "auto"
    newton_tol: float = 1e-10
    stage1_ftol_abs: float = 1e-6
    stage1_xtol_abs: float = 1e-5
    check_hessian: str = "warning"

    _CHECKS: ClassVar[dict[str, str]] = {**LmerControl._CHECKS, "hessian_not_pd": "check_hessian"}
    _OPTIMIZERS: ClassVar[tuple[str, ...]] = ("auto", "newton", "bobyqa")

    def _validate(self, name: str, value: Any) -> Any:
        if name == "pirls_maxit":
            return _count(name, value)
        if name == "calc_derivs":
            if value is None or isinstance(value, (bool, np.bool_)):
                return None if value is None else bool(value)
            raise ControlError(name, value, "None, True or False")
        if name in ("pirls_tol", "newton_tol"):
            return _real(name, value, positive=True)
        return super()._validate(name, value)
