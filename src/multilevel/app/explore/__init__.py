"""``multilevel explore``: a local web app to see complete, no and partial pooling live.

One page (our own HTML, JS and CSS in ``static/``, shipped in the package; no CDN, no
network request) served by a small Starlette app on 127.0.0.1. Choose a bundled data set, a
file given on the command line, or a *simulated* two-level data set whose generating model
the sliders set; pick the model from lists or type an lme4 formula; every change refits
and redraws: the groups' lines under complete / no / partial pooling, shrinkage arrows and
the shrinkage factor, the caterpillar plot, variance components and ICC, lme4's summary,
the pinned models' comparison (LRT, AIC/BIC, coefficients side by side), the Python and R
code, power by simulation, and "Save as report" (the self-contained HTML report).

Modules: :mod:`~multilevel.app.explore.state` (one model's views as JSON),
:mod:`~multilevel.app.explore.data` (data specs, the builder's column lists, the code that
loads the data), :mod:`~multilevel.app.explore.views` (the endpoints' JSON as functions),
:mod:`~multilevel.app.explore.server` (the Starlette app and the uvicorn runner).

The server needs the ``explore`` extra (``pip install "multilevel[explore]"``: Starlette and
uvicorn); importing this package does not load it.

Layer: app (the top). May import every layer below; nothing imports it (the package's front
names :func:`explore` in its lazy table, resolved on first use).

Example
-------
>>> import multilevel as ml
>>> ex = ml.explore(ml.datasets.load("hsb"), open_browser=False, port=0)   # doctest: +SKIP
>>> ex.url                                                                  # doctest: +SKIP
'http://127.0.0.1:40123/'
>>> ex.stop()                                                               # doctest: +SKIP
"""
from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Any

from multilevel.errors import DataError, MissingDependencyError

if TYPE_CHECKING:
    from multilevel.app.explore.server import Explorer

__all__ = ["explore", "require_server"]


def require_server() -> None:
    """Raise MissingDependencyError (with the pip command) unless Starlette and uvicorn are
    installed."""
    import importlib.util

    missing = [m for m in ("starlette", "uvicorn") if importlib.util.find_spec(m) is None]
    if missing:
        raise MissingDependencyError(
            f"multilevel explore needs {' and '.join(missing)}: pip install \"multilevel[explore]\"")


def _is_file(spec: str) -> bool:
    """A --data argument that names a file (as the other commands read it), not a bundled
    data set."""
    from multilevel.datasets import FORMATS

    return os.path.isfile(spec) or os.sep in spec or any(spec.lower().endswith(e) for e in FORMATS)


def _frame_of_fit(fit: Any) -> Any:
    """The variables of a fit's model, read back from its model frame (a fit keeps arrays,
    not the data frame): what the explorer refits when only ``fit=`` is given."""
    import pandas as pd

    from multilevel.report.plotdata import _model_columns, _model_data

    # the report layer's readers of a fit's model frame (private there, shared with plotdata)
    frame = _model_data(fit, _model_columns(fit))
    response = fit.frame.response
    if not isinstance(response, str) or not response.isidentifier():
        raise DataError(f"data: the response {response!r} is a transformation; pass the data the "
                        "model was fitted to (explore(data, fit))")
    frame.insert(0, response, pd.Series(fit.frame.y, index=frame.index, dtype=float))
    return frame


def _interactive() -> bool:
    return bool(hasattr(sys, "ps1") or sys.flags.interactive or "ipykernel" in sys.modules)


def explore(data: Any = None, fit: Any = None, *, formula: str | None = None,
            host: str = "127.0.0.1", port: int | None = None, open_browser: bool = True,
            block: bool | None = None) -> Explorer:
    """Open the explorer on ``data`` (and the model of ``fit``) in the browser.

    data:  None (a simulated data set: sliders set its generating model), the name of a
           bundled data set (``"hsb"``), a CSV / Parquet / SPSS / Stata path, or a data frame
           (pandas or polars; never modified).
    fit:   an ``lmer`` fit: the explorer starts with its formula (and REML or ML); without
           ``data`` it refits the variables read back from the fit.
    formula: the model to start with (default: the fit's, or a suggestion).
    host, port: where to serve (default 127.0.0.1:8765 or a free port; ``port=0``: any).
    block: serve until Ctrl-C (default: in a script), or return at once with the server in
           a background thread (default in a notebook or an interactive session).

    Returns the :class:`~multilevel.app.explore.server.Explorer` (``.url``, ``.stop()``).
    """
    require_server()
    from multilevel.app.explore.data import DataStore
    from multilevel.app.explore.server import serve

    reml = True
    if fit is not None:
        if not hasattr(fit, "frame") or not hasattr(fit, "formula") or not hasattr(fit, "reml"):
            raise DataError(f"fit: expected an lmer fit, got {type(fit).__name__}")
        formula = formula or fit.formula
        reml = bool(fit.reml)
    if data is None and fit is not None:
        store, spec = DataStore(frames={"fit data": _frame_of_fit(fit)}), {"kind": "frame", "id": 0}
    elif data is None:
        store, spec = DataStore(), {"kind": "simulate"}
    elif isinstance(data, (str, os.PathLike)):
        text = os.fspath(data)
        if _is_file(text):
            store, spec = DataStore(files=[text]), {"kind": "file", "id": 0}
        else:
            store, spec = DataStore(), {"kind": "bundled", "name": text}
    else:
        from multilevel.report.plotdata import _to_pandas  # pandas, polars, narwhals frames

        try:
            frame = _to_pandas(data)
        except Exception as e:  # noqa: BLE001 -- anything that is not a frame
            raise DataError(f"data: expected a data frame, a data set name or a file path, got "
                            f"{type(data).__name__}") from e
        store, spec = DataStore(frames={"data": frame}), {"kind": "frame", "id": 0}
    # a bad name or an unreadable file fails here, not in the page; the canonical spec names
    # the data set as the page's list does (hsb82 -> hsb)
    spec = store.get(spec)[2]
    return serve(store, initial={"data": spec, "formula": formula, "reml": reml}, host=host,
                 port=port, open_browser=open_browser,
                 block=(not _interactive()) if block is None else block)
