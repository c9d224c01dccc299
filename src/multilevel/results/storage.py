"""Saving a fit to a file and loading it back: ``fit.save(path)`` and ``ml.load_fit(path)``.

A fit is plain data (estimates, the model frame, the arrays its engine problem is rebuilt
from), so the file is a pickle of it inside a small envelope that says what it is: loading a
file that is not a saved fit is a clear error, not an object of another kind. The reloaded
fit prints, summarises, predicts and gives intervals as the original (its engine is rebuilt
on first use). As with any pickle, load only files you trust: unpickling can run code.

>>> import multilevel as ml, os, tempfile
>>> fit = ml.lmer("Reaction ~ Days + (Days | Subject)", ml.datasets.load("sleepstudy"))
>>> path = os.path.join(tempfile.mkdtemp(), "sleep.fit")
>>> fit.save(path)
>>> str(ml.load_fit(path).summary()) == str(fit.summary())
True
"""
from __future__ import annotations

import os
import pickle
from typing import Any

from multilevel.errors import MultilevelError

__all__ = ["save_fit", "load_fit", "FORMAT"]

#: the envelope's tag and version
FORMAT = ("multilevel-fit", 1)


def save_fit(fit: Any, path: str | os.PathLike) -> None:
    """Write ``fit`` (an lmer, glmer or lm fit) to ``path``; read it with :func:`load_fit`."""
    # a fit is what has a model frame and estimates (FitBase; not imported: base.py calls this)
    if not (hasattr(fit, "frame") and hasattr(fit, "_beta")):
        raise MultilevelError(f"save_fit() saves fitted models, not a {type(fit).__name__}")
    try:
        with open(path, "wb") as fh:
            pickle.dump({"format": FORMAT, "fit": fit}, fh, protocol=pickle.HIGHEST_PROTOCOL)
    except OSError as e:
        raise MultilevelError(f"cannot write the fit to {os.fspath(path)!r}: {e.strerror or e}") from e


def load_fit(path: str | os.PathLike) -> Any:
    """A fit saved with ``fit.save(path)`` (or :func:`save_fit`). Only load trusted files.

    Raises :class:`~multilevel.errors.MultilevelError` naming the path when the file cannot
    be read or is not a saved fit."""
    where = repr(os.fspath(path))
    try:
        with open(path, "rb") as fh:
            obj = pickle.load(fh)
    except OSError as e:
        raise MultilevelError(f"cannot read a fit from {where}: {e.strerror or e}") from e
    except Exception as e:  # noqa: BLE001 - any unpickling failure means "not a saved fit"
        raise MultilevelError(f"{where} is not a fit saved by multilevel ({type(e).__name__}: {e})") from e
    if not (isinstance(obj, dict) and obj.get("format", (None,))[0] == FORMAT[0]):
        raise MultilevelError(f"{where} is not a fit saved by multilevel (fit.save(path) writes one)")
    if obj["format"][1] > FORMAT[1]:
        raise MultilevelError(f"{where} was saved by a newer multilevel (format {obj['format'][1]}); "
                              f"upgrade multilevel to read it")
    return obj["fit"]
