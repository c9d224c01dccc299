"""The power curve of a :func:`multilevel.power` result (matplotlib), as simr's
``plot(powerCurve(...))``: the estimated power at each design with its Clopper-Pearson
interval, a dashed line at the target power (0.8 by default) and a dotted one at alpha (the
power of a test of an effect of size 0).

Layer: report. Draws only; the numbers are the result's ``to_frame()``. Artists carry a
``gid`` (``"power"``, ``"power-ci"``, ``"target"``, ``"alpha"``) as in
:mod:`multilevel.report.plots`.

>>> import multilevel as ml
>>> from multilevel.report.power_plot import plot_power_curve
>>> d = ml.PowerDesign(n_groups=10, group_size=5, fixed={"w": 1.0}, tau=0.5, sigma=1.0,
...                    between={"w": "binary"})
>>> res = ml.power(d, "w", nsim=20, along="n_groups", values=[6, 12], seed=2)
>>> fig = plot_power_curve(res)
>>> fig.axes[0].get_xlabel()
'number of groups (group)'
"""
from __future__ import annotations

from typing import Any

import numpy as np

from multilevel.report.plots import _one_ax
from multilevel.toolkit.power import METHODS, PowerResult

__all__ = ["plot_power_curve"]

_XLABEL = {"n_groups": "number of groups ({})", "group_size": "rows per group ({})"}


def plot_power_curve(result: PowerResult, ax: Any = None, target: float | None = 0.8):
    """Power against the design's size (one point without ``along``), with its interval.

    ``target``: the power to aim for, drawn as a dashed line (None: no line). Returns the
    figure; ``ax=`` draws into your axes.
    """
    fig, ax = _one_ax(ax, (6.0, 4.0))
    tab = result.to_frame()
    if result.along is None:
        x = np.zeros(1)
        ax.set_xticks([0], [f"{result.nobs[0]} rows, {result.n_groups[0]} groups"])
        ax.set_xlim(-1, 1)
    else:
        x = np.asarray(result.values, float)
        ax.set_xlabel(_XLABEL[result.along].format(result.group))
    p = tab["power"].to_numpy(float)
    lo, hi = tab["lower"].to_numpy(float), tab["upper"].to_numpy(float)
    bars = ax.errorbar(x, p, yerr=[p - lo, hi - p], fmt="o-", color="#1f77b4", ecolor="#1f77b4",
                       capsize=4, lw=1.5)
    bars.lines[0].set_gid("power")
    for art in bars.lines[2]:
        art.set_gid("power-ci")
    if target is not None:
        ax.axhline(target, ls="--", color="#888888", lw=1, gid="target")
    ax.axhline(result.alpha, ls=":", color="#888888", lw=1, gid="alpha")
    ax.set_ylim(0, 1.02)
    ax.set_yticks(np.linspace(0, 1, 6), [f"{v:.0%}" for v in np.linspace(0, 1, 6)])
    ax.set_ylabel(f"power ({100 * result.level:g}% interval)")
    ax.set_title(f"{result.test}: {METHODS[result.method]}, alpha = {result.alpha:g}, "
                 f"{result.nsim} simulations", fontsize=10)
    ax.grid(alpha=0.3)
    return fig
