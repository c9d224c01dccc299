"""The JSON of the explorer's plots, built from arrays and no bigger than the page draws.

Why this module: the page redraws every view after each slider release, and the general
plot data (:mod:`multilevel.report.plotdata`, pandas frames converted column by column) cost
more than the fit and made an 88 kB answer for a 20 x 20 design. Here the same numbers come
from a :class:`~multilevel.toolkit.pooling_arrays.PoolingArrays` and the fit's arrays, in the
same layout (``{"kind", "meta", "frames": {layer: {column: [values]}}}``) but with only the
columns the page uses and:

* plot coordinates rounded to ``DIGITS`` significant digits (the page shows 4; a pixel is
  1e-3 of a panel);
* the pooling lines, straight, as their two end points (``pooling_data`` gives 50 points
  per line for matplotlib's sake: the same line).

``digits=None`` keeps every digit (the tests compare with the general functions at 1e-12).

Example
-------
>>> import multilevel as ml
>>> from multilevel.toolkit.pooling_arrays import pooling_arrays
>>> d = ml.datasets.load("sleepstudy")
>>> fit = ml.lmer("Reaction ~ Days + (Days | Subject)", d)
>>> p = pooling_payload(pooling_arrays(fit, d), groups=["308"])
>>> p["frames"]["lines"]["pooling"], len(p["frames"]["points"]["y"])
(['complete', 'complete', 'none', 'none', 'partial', 'partial'], 10)
"""
from __future__ import annotations

from typing import Any

import numpy as np

from multilevel.errors import DataError
from multilevel.toolkit.pooling_arrays import KINDS, PoolingArrays

__all__ = ["DIGITS", "rounded", "arrays_from_pooling", "caterpillar_payload", "shrinkage_payload",
           "pooling_payload"]

#: significant digits of the plot coordinates sent to the page
DIGITS = 6


def rounded(values: Any, digits: int | None = DIGITS) -> list:
    """The values as a JSON list: ``digits`` significant digits (None: all), NaN and the
    infinities as None.

    >>> rounded([123.456789, 0.000123456789, float("nan"), 0.0], 4)
    [123.5, 0.0001235, None, 0.0]
    """
    a = np.asarray(values, dtype=float)
    finite = np.isfinite(a)
    if digits is not None and a.size:
        with np.errstate(divide="ignore", invalid="ignore"):
            mag = np.floor(np.log10(np.abs(np.where(finite & (a != 0), a, 1.0))))
        e = digits - 1 - mag
        with np.errstate(over="ignore", invalid="ignore"):
            p10 = 10.0 ** np.abs(e)
            # scale by a power of ten >= 1 (exact up to 1e22) and undo by the inverse
            # operation, never by a rounded reciprocal: the result is then the double nearest
            # the decimal, whose repr (the JSON text) is short
            r = np.where(e >= 0, np.round(a * p10) / p10, np.round(a / p10) * p10)
        # below ~1e-300 the power of ten overflows: such a value is kept as it is
        a = np.where(finite & np.isfinite(r), r, a)
    out = a.tolist()
    if not finite.all():
        out = [v if f else None for v, f in zip(out, finite.tolist())]
    return out


def arrays_from_pooling(pooling: Any) -> PoolingArrays:
    """The arrays of a :class:`~multilevel.toolkit.pooling.Pooling` (the general path, for
    the designs :func:`~multilevel.toolkit.pooling_arrays.pooling_arrays` leaves to it), with
    the offsets and the line variable exactly as
    :func:`~multilevel.report.plotdata.pooling_data` computes them."""
    from multilevel.report import plotdata as pdt

    common = pdt._common_slope_variable(pooling)
    tab = pdt._pooling_line_table(pooling, common)
    y, xv, levels, code, response = pdt._pooling_rows(pooling, common)
    icpt, slope = pdt._pooling_coefs(pooling, common)
    offsets = pdt._pooling_offsets(pooling, tab, levels, code, xv, icpt, slope)
    labels = [str(v) for v in tab["group"]]
    if labels != [str(v) for v in levels]:  # the rows' codes index the table's rows
        raise DataError("pooling: the table's groups are not the fit's levels")
    J = len(labels)
    coef = {k: np.column_stack([tab[f"{c}_{k}"].to_numpy(float) for c in pooling.coef_names])
            for k in KINDS}
    weight = np.column_stack([tab[f"{c}_weight"].to_numpy(float) for c in pooling.coef_names])
    line_a = {k: tab[f"{icpt}_{k}"].to_numpy(float) if icpt else np.zeros(J) for k in KINDS}
    line_b = {k: tab[f"{slope}_{k}"].to_numpy(float) if slope else np.zeros(J) for k in KINDS}
    off = {k: np.array([offsets[k].get(lv, np.nan) for lv in labels]) for k in KINDS}
    return PoolingArrays(pooling.group_name, list(pooling.coef_names), labels,
                         tab["n"].to_numpy(np.int64), coef, weight, pooling.x_name or common,
                         common is not None, line_a, line_b, off, y, xv, np.asarray(code),
                         response, list(pooling.notes))


def caterpillar_payload(fit: Any, digits: int | None = DIGITS) -> dict[str, Any]:
    """What :func:`~multilevel.report.plotdata.caterpillar_data` gives for the fit's first
    grouping factor (all its terms, 95% intervals), as the page draws it: the columns
    ``term``, ``grp``, ``condval``, ``lower``, ``upper``, ``rank`` (rows by term, then rank)."""
    from scipy.special import ndtri

    from multilevel.report.plotdata import caterpillar_data

    reterms = fit.frame.reterms
    if not reterms:
        raise DataError("fit: the fit has no random effects")
    g = reterms[0].group
    blocks = [k for k, rt in enumerate(reterms) if rt.group == g]
    terms = [t for k in blocks for t in reterms[k].terms]
    level = 0.95
    if len(set(terms)) != len(terms):  # one name in two blocks: the general frame decides
        iv = caterpillar_data(fit).frames["intervals"]
        z = float(ndtri(0.5 + level / 2.0))
        cols = {c: iv[c].to_numpy() for c in ("term", "grp", "condval", "lower", "upper", "rank")}
        meta = {"group": g, "terms": list(dict.fromkeys(terms)), "n_levels": len(reterms[0].levels),
                "conf_level": level, "z": z}
    else:
        z = float(ndtri(0.5 + level / 2.0))
        modes = np.column_stack([np.asarray(fit._b[k], dtype=float) for k in blocks])
        sds = np.column_stack([np.sqrt(np.clip(np.diagonal(fit._condvar[k], axis1=1, axis2=2), 0.0, None))
                               for k in blocks])
        L = modes.shape[0]
        order = np.argsort(modes[:, 0], kind="stable")
        grp = [str(reterms[0].levels[i]) for i in order]
        v = modes[order].T.ravel()           # term by term, each in rank order
        sd = sds[order].T.ravel()
        cols = {"term": np.repeat(np.asarray(terms, dtype=object), L), "grp": grp * len(terms),
                "condval": v, "lower": v - z * sd, "upper": v + z * sd,
                "rank": np.tile(np.arange(L), len(terms))}
        meta = {"group": g, "terms": terms, "n_levels": L, "conf_level": level, "z": z}
    frame = {"term": [str(t) for t in cols["term"]], "grp": [str(s) for s in cols["grp"]],
             "condval": rounded(cols["condval"], digits), "lower": rounded(cols["lower"], digits),
             "upper": rounded(cols["upper"], digits), "rank": np.asarray(cols["rank"]).astype(int).tolist()}
    return {"kind": "caterpillar", "meta": meta, "frames": {"intervals": frame}}


def shrinkage_payload(pa: PoolingArrays, coef: str, digits: int | None = DIGITS) -> dict[str, Any]:
    """What :func:`~multilevel.report.plotdata.shrinkage_data` gives for ``coef``, with the
    columns the page draws: ``group``, ``n``, ``no_pooling``, ``partial_pooling``,
    ``weight``, ``estimable``; meta ``coef``, ``group``, ``complete_pooling``."""
    if coef not in pa.coef_names:
        raise DataError(f"coef: no coefficient {coef!r}; the pooling has {', '.join(pa.coef_names)}")
    c = pa.coef_names.index(coef)
    none, part, comp = pa.coef["none"][:, c], pa.coef["partial"][:, c], pa.coef["complete"][:, c]
    ok = np.isfinite(none) & np.isfinite(part)
    cp = float(np.nanmean(comp)) if comp.size and np.isfinite(comp).any() else None
    frame = {"group": list(pa.levels), "n": pa.n.astype(int).tolist(),
             "no_pooling": rounded(none, digits), "partial_pooling": rounded(part, digits),
             "weight": rounded(pa.weight[:, c], digits), "estimable": ok.tolist()}
    return {"kind": "shrinkage", "meta": {"coef": coef, "group": pa.group_name, "complete_pooling": cp},
            "frames": {"groups": frame}}


def pooling_payload(pa: PoolingArrays, groups: Any = 8, digits: int | None = DIGITS) -> dict[str, Any]:
    """What :func:`~multilevel.report.plotdata.pooling_data` gives for ``groups`` (a list of
    levels, or how many spread by size), each line as its two end points."""
    from multilevel.report.plotdata import _select_levels

    chosen = _select_levels(pa.levels, pa.n, groups, 8)
    at = {lv: j for j, lv in enumerate(pa.levels)}
    idx = [at[lv] for lv in chosen]
    if pa.x is not None:
        lo, hi = float(np.nanmin(pa.x)), float(np.nanmax(pa.x))
        pad = 0.03 * (hi - lo or 1.0)
        ends = np.array([lo - pad, hi + pad])
    else:
        ends = np.array([-0.5, 0.5])
    rows = [np.flatnonzero(pa.codes == j) for j in idx]
    prow = np.concatenate(rows) if rows else np.zeros(0, dtype=np.int64)
    pgroup = [lv for lv, r in zip(chosen, rows) for _ in range(r.size)]
    lg, lk, ly = [], [], []
    for lv, j in zip(chosen, idx):
        for kind in KINDS:
            a, b = float(pa.line_a[kind][j]), float(pa.line_b[kind][j])
            if not (np.isfinite(a) and np.isfinite(b)):
                continue  # no estimate of this group under this approach: no line
            off = float(pa.offset[kind][j])
            ly.append(a + b * ends + (off if np.isfinite(off) else 0.0))
            lg += [lv, lv]
            lk += [kind, kind]
    frames = {
        "groups": {"group": list(chosen), "n": [int(pa.n[j]) for j in idx]},
        "points": {"group": pgroup,
                   "x": rounded(pa.x[prow], digits) if pa.x is not None else [None] * prow.size,
                   "y": rounded(pa.y[prow], digits)},
        "lines": {"group": lg, "pooling": lk,
                  "x": rounded(np.tile(ends, len(ly)), digits),
                  "y": rounded(np.concatenate(ly) if ly else np.zeros(0), digits)},
    }
    meta = {"response": pa.response, "x": pa.x_name, "group": pa.group_name, "levels": list(chosen),
            "common_slope": pa.common_slope}
    return {"kind": "pooling", "meta": meta, "frames": frames}
