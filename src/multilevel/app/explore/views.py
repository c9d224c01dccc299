"""The JSON of the explorer's endpoints, as plain functions of a data store and the request's
parameters (the server only routes to them, so every answer is testable without HTTP).

``fit_view``      the current model: :func:`~multilevel.app.explore.state.model_state` plus what
                  the page adds around it (the data-aware Python and R code, every group with
                  its size for the group picker, the simulation's true values, the time taken);
``compare_view``  the pinned models side by side (``multilevel.compare``) and their
                  likelihood-ratio tests (``multilevel.anova``);
``power_view``    power by simulation for the simulated design (``multilevel.power`` on a
                  :class:`~multilevel.toolkit.power_design.PowerDesign` with the sliders' values);
``report_html``   the self-contained HTML report of the current (or pinned) models;
``export_csv``    the current data as CSV (what the R code reads for simulated data).

Bad input raises a :class:`~multilevel.errors.MultilevelError` naming the field; model errors
inside ``fit_view`` are data (``{"ok": False, ...}``), as ``model_state`` gives them.

Example
-------
>>> from multilevel.app.explore.data import DataStore
>>> v = fit_view(DataStore(), {"data": {"kind": "bundled", "name": "sleepstudy"},
...                            "formula": "Reaction ~ Days + (Days | Subject)"})
>>> v["ok"], round(v["fit"]["fixef"]["Days"], 4), len(v["groups_all"])
(True, 10.4673, 18)
"""
from __future__ import annotations

import json
import math
import threading
import time
import warnings
from collections import OrderedDict
from typing import Any

from multilevel.app.explore.data import DataStore, data_code, simulation_truth, variable
from multilevel.errors import DataError, MultilevelError

__all__ = ["fit_view", "compare_view", "power_view", "report_html", "export_csv", "model_code"]

#: fits kept for the comparison table (keyed by data, formula, REML)
_FIT_CACHE_SIZE = 16
#: at most this many pinned models in one comparison
MAX_PINNED = 8
#: the power tab's limits: simulations per design, designs on a curve
MAX_NSIM = 2000
MAX_DESIGNS = 8


def _formula(body: dict[str, Any], key: str = "formula") -> str:
    f = body.get(key)
    if not isinstance(f, str) or not f.strip():
        raise DataError(f"{key}: give an lme4 formula such as \"y ~ x + (x | g)\", got {f!r}")
    return f.strip()


def _reml(body: dict[str, Any]) -> bool:
    reml = body.get("reml", True)
    if not isinstance(reml, bool):
        raise DataError(f"reml: must be true or false, got {reml!r}")
    return reml


def _groups(body: dict[str, Any]) -> int | list[str]:
    """How many groups the pooling view shows (spread from the smallest to the largest), or
    which ones."""
    g = body.get("groups", 8)
    if isinstance(g, bool):
        raise DataError(f"groups: a number of groups or a list of group labels, got {g!r}")
    if isinstance(g, int):
        if not 1 <= g <= 200:
            raise DataError(f"groups: the pooling view shows 1 to 200 groups, got {g}")
        return g
    if isinstance(g, list) and g and all(isinstance(v, str) for v in g) and len(g) <= 200:
        return g
    raise DataError(f"groups: a number of groups or a list of 1 to 200 group labels, got {g!r}")


def model_code(formula: str, reml: bool, spec: dict[str, Any], store: DataStore) -> dict[str, str]:
    """The current model as Python (multilevel) and R (lme4) code, with the lines that load
    (or re-create) its data.

    >>> model_code("y ~ x + (1 | g)", False, {"kind": "bundled", "name": "hsb"}, DataStore())["r"].splitlines()[-2]
    'fit <- lmer(y ~ x + (1 | g), data = hsb, REML = FALSE)'
    """
    load = data_code(spec, store)
    var = load["variable"]
    py_reml = "" if reml else ", reml=False"
    r_reml = "" if reml else ", REML = FALSE"
    return {"python": f"{load['python']}\nfit = ml.lmer({formula!r}, {var}{py_reml})\nprint(fit)",
            "r": f"{load['r']}\nfit <- lmer({formula}, data = {var}{r_reml})\nsummary(fit)"}


class _Fits:
    """Recent fits by (data, formula, REML): pinned models are refitted only when the data
    change."""

    def __init__(self, size: int = _FIT_CACHE_SIZE):
        self._items: OrderedDict[tuple, Any] = OrderedDict()
        self._size = size
        self._lock = threading.Lock()

    def get(self, key: tuple, make: Any) -> Any:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        value = make()
        with self._lock:
            self._items[key] = value
            while len(self._items) > self._size:
                self._items.popitem(last=False)
        return value


_FITS = _Fits()


def _fit(frame: Any, spec: dict[str, Any], label: str, formula: str, reml: bool) -> Any:
    import multilevel as ml

    def make() -> Any:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a fit's warnings are in its summary and table notes
            fit = ml.lmer(formula, frame, reml=reml)
        fit.data_name = label
        return fit

    return _FITS.get((json.dumps(spec, sort_keys=True), formula, reml), make)


def fit_view(store: DataStore, body: dict[str, Any]) -> dict[str, Any]:
    """Every view's numbers for the model ``body["formula"]`` on ``body["data"]``.

    body: ``data`` (a data spec), ``formula``, ``reml`` (default true), ``groups`` (how many
    groups the pooling view shows, or their labels; default 8).
    """
    from multilevel.app.explore.state import model_state

    t0 = time.perf_counter()
    frame, label, spec = store.get(body.get("data"))
    formula, reml, groups = _formula(body), _reml(body), _groups(body)
    state = model_state(frame, formula, reml=reml, groups=groups, data_name=label, cache=store.states)
    state["data_label"] = label
    state["truth"] = simulation_truth(spec) if spec["kind"] == "simulate" else None
    if state.get("ok"):
        # the data's size for the data view: the simulation sliders change it without a new
        # /api/data request (the groups are the model's grouping factors)
        state["data_size"] = {"nrows": int(frame.shape[0]), "ncols": int(frame.shape[1]),
                              "groups": [{"name": str(k), "levels": int(v)}
                                         for k, v in state["fit"]["ngroups"].items()]}
        state["code"] = model_code(formula, reml, spec, store)
        state["groups_all"] = _all_groups(state)
    state["server_ms"] = round(1000 * (time.perf_counter() - t0), 1)
    return state


def _all_groups(state: dict[str, Any]) -> list[dict[str, Any]] | None:
    """Every group of the pooling view's factor with its size (for the group picker), from
    the shrinkage data (one row per group)."""
    sh = state.get("shrinkage")
    if not sh:
        return None
    g = next(iter(sh.values()))["frames"]["groups"]
    return [{"group": str(a), "n": int(b)} for a, b in zip(g["group"], g["n"])]


def _models(body: dict[str, Any]) -> list[dict[str, Any]]:
    models = body.get("models")
    if not isinstance(models, list) or not models:
        raise DataError("models: give a list of models, each {\"name\": ..., \"formula\": ...}")
    if len(models) > MAX_PINNED:
        raise DataError(f"models: at most {MAX_PINNED} pinned models, got {len(models)}")
    out = []
    for i, m in enumerate(models):
        if not isinstance(m, dict):
            raise DataError(f"models[{i}]: expected {{\"name\": ..., \"formula\": ...}}, got {m!r}")
        name = m.get("name") or f"Model {i + 1}"
        if not isinstance(name, str):
            raise DataError(f"models[{i}].name: must be text, got {name!r}")
        out.append({"name": name, "formula": _formula(m), "reml": _reml(m)})
    if len({m["name"] for m in out}) != len(out):
        raise DataError("models: the pinned models need different names")
    return out


def _number(v: Any) -> Any:
    """A table cell as JSON: floats (NaN -> None: strict JSON), ints and text as they are."""
    import numpy as np

    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def compare_view(store: DataStore, body: dict[str, Any]) -> dict[str, Any]:
    """The pinned models side by side and, for two or more, their likelihood-ratio tests.

    body: ``data`` and ``models`` (a list of ``{"name", "formula", "reml"}``). A model that
    cannot be fitted is reported by name; the tests need nested models on the same rows
    (otherwise ``lrt`` is None and ``lrt_error`` says why).
    """
    import multilevel as ml

    frame, label, spec = store.get(body.get("data"))
    models = _models(body)
    fits = []
    for m in models:
        try:
            fits.append(_fit(frame, spec, label, m["formula"], m["reml"]))
        except MultilevelError as e:
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            return {"ok": False, "error": f"{m['name']} ({m['formula']}): {first}",
                    "kind": type(e).__name__, "model": m["name"]}
    names = [m["name"] for m in models]
    table = ml.compare(*fits, names=names)
    out: dict[str, Any] = {
        "ok": True, "names": names, "formulas": [m["formula"] for m in models],
        "table": [{"label": r.label, "cells": list(r.cells), "kind": r.kind} for r in table.rows],
        "notes": list(table.notes), "lrt": None, "lrt_error": None, "lrt_text": None,
    }
    if len(fits) >= 2:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                an = ml.anova(*fits, names=names)
        except MultilevelError as e:
            out["lrt_error"] = str(e).strip().splitlines()[0]
        else:
            frame_ = an.to_frame() if hasattr(an, "to_frame") else an
            out["lrt"] = {"columns": [str(c) for c in frame_.columns],
                          "rows": [{"name": str(idx), "values": [_number(v) for v in row]}
                                   for idx, row in zip(frame_.index, frame_.itertuples(index=False))]}
            out["lrt_text"] = str(an)
    return out


def power_view(store: DataStore, body: dict[str, Any]) -> dict[str, Any]:
    """Power of a test of ``x`` or ``w`` by simulation, for the simulated design.

    body: ``data`` (a simulate spec: the sliders), ``test`` (``"x"`` or ``"w"``), ``nsim``,
    ``along`` (``"n_groups"``, ``"group_size"`` or null) and ``values`` (the sizes on the
    curve), ``alpha``. The design's true parameters are the sliders' values; PowerDesign
    simulates independent random intercepts and slopes with equal group sizes, so the
    correlation and unequal sizes of the sliders do not enter (a note says so).
    """
    import multilevel as ml

    spec = store.canonical(body.get("data"))
    if spec["kind"] != "simulate":
        raise DataError("data: the power tab works on a simulated design; choose \"simulated\" data")
    test = body.get("test", "x")
    if test not in ("x", "w"):
        raise DataError(f"test: \"x\" (the level-1 predictor) or \"w\" (the level-2 one), got {test!r}")
    nsim = body.get("nsim", 200)
    if isinstance(nsim, bool) or not isinstance(nsim, int) or not 10 <= nsim <= MAX_NSIM:
        raise DataError(f"nsim: a whole number from 10 to {MAX_NSIM}, got {nsim!r}")
    along = body.get("along")
    values = body.get("values")
    if along not in (None, "n_groups", "group_size"):
        raise DataError(f"along: \"n_groups\", \"group_size\" or null, got {along!r}")
    if along is not None:
        if (not isinstance(values, list) or not 1 <= len(values) <= MAX_DESIGNS
                or not all(isinstance(v, int) and not isinstance(v, bool) and 2 <= v <= 1000 for v in values)):
            raise DataError(f"values: 1 to {MAX_DESIGNS} whole numbers from 2 to 1000, got {values!r}")
        values = sorted(set(values))
        biggest = max(values) * (spec["group_size"] if along == "n_groups" else spec["n_groups"])
        if biggest * nsim > 4_000_000:
            raise DataError(f"values: {max(values)} {along.replace('_', ' ')} with nsim={nsim} is too much "
                            "simulation for the explorer; use fewer simulations or smaller designs "
                            "(or multilevel power on the command line)")
    alpha = body.get("alpha", 0.05)
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 < alpha < 1:
        raise DataError(f"alpha: a number between 0 and 1, got {alpha!r}")
    slopes = {"x": spec["tau1"]} if spec["tau1"] > 0 else {}
    design = ml.PowerDesign(n_groups=spec["n_groups"], group_size=spec["group_size"],
                            fixed={"(Intercept)": spec["beta0"], "x": spec["beta1"], "w": spec["gamma"]},
                            sigma=spec["sigma"], tau=spec["tau0"], slopes=slopes,
                            within={"x": "normal"}, between={"w": "normal"}, seed=spec["seed"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = ml.power(design, test, nsim=nsim, along=along, values=values, alpha=float(alpha),
                       seed=spec["seed"], progress=False)
    out = res.to_dict()
    notes = list(out.get("notes", []))
    if spec["corr"] != 0 or spec["unequal"]:
        notes.append("the power simulation uses equal group sizes and independent random "
                     "intercepts and slopes: the sliders' correlation and unequal sizes are not used")
    out.update(ok=True, notes=notes, design_formula=design.formula)
    return _clean(out)


def _clean(obj: Any) -> Any:
    """JSON-safe: NaN and infinities become None, numpy scalars Python numbers."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return _number(obj)


def report_html(store: DataStore, body: dict[str, Any]) -> tuple[str, str]:
    """(HTML, file name) of the report of the pinned models (``models``), or of the current
    model (``formula``) when none is pinned."""
    from multilevel.app.html_report import build_report

    frame, label, _spec = store.get(body.get("data"))
    if body.get("models"):
        models = _models(body)
        formulas, names = [m["formula"] for m in models], [m["name"] for m in models]
        reml = models[0]["reml"]
    else:
        formulas, names, reml = [_formula(body)], None, _reml(body)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        html = build_report(formulas, frame, data_name=label, progress=False, reml=reml, names=names)
    return html, f"multilevel-report-{variable(label)}.html"


def export_csv(store: DataStore, body: dict[str, Any]) -> tuple[str, str]:
    """(CSV text, file name) of the current data set."""
    frame, label, _spec = store.get(body.get("data"))
    return frame.to_csv(index=False), f"{variable(label)}.csv"
