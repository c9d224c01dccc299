"""Issuing the warning records of a fit: each record once, as its own warning class.

The layers below (design, engine) only append :class:`~multilevel.errors.FitWarning`
records; the model function decides, with the control object's check actions, which are
dropped (``"ignore"``), which raise (``"error"``) and which are issued, so that a warning is
never issued twice nor filtered by its text.
"""
from __future__ import annotations

import warnings
from typing import Iterable

from multilevel.control import LmerControl
from multilevel.errors import FitWarning


def issue(records: Iterable[str], ctrl: LmerControl, stacklevel: int = 2,
          emit: bool = True) -> list[FitWarning]:
    """Apply ``ctrl``'s check actions to ``records`` and issue those kept; returns them (the
    fit's ``warnings``). ``stacklevel`` counts from the caller of ``issue``; ``emit=False``
    only returns them (a bootstrap's refits record their warnings without issuing them)."""
    recs = [r if isinstance(r, FitWarning) else FitWarning("other", r) for r in records]
    kept = ctrl.apply(recs)
    for rec in kept if emit else ():
        warnings.warn(rec.message, rec.category, stacklevel=stacklevel + 1)
    return kept
