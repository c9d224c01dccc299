"""``multilevel.plots``: the plotting functions under their public name.

The drawing code lives in ``multilevel.report.plots`` (the report layer); this module is the
name the README and users import from, so that ``from multilevel.plots import plot_pooling``
works. matplotlib is imported only when this module is.

>>> from multilevel.plots import plot_pooling, plot_shrinkage
>>> callable(plot_pooling) and callable(plot_shrinkage)
True
"""
from __future__ import annotations

from multilevel.report.plots import *  # noqa: F401,F403 - the public re-export
from multilevel.report.plots import __all__  # noqa: F401
