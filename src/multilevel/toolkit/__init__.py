"""The toolkit layer: the multilevel courses' tools.

Layer: toolkit (above inference). ``describe`` (how the data nest: groups, sizes, ICC),
``pooling`` (complete, no and partial pooling side by side, shrinkage) and ``two_stage``
(slopes as outcomes), ``power`` (power analysis by simulation, with ``PowerDesign``
and the designs of ``extend``). May import: formula, design, covariance, engine (power's
fast refits), models, results, inference, errors, control.
Never report or app (their own printouts are plain text made here).
"""
from multilevel.toolkit.describe import describe
from multilevel.toolkit.pooling import pooling, two_stage
from multilevel.toolkit.power import PowerDesign, power

__all__ = ["describe", "pooling", "two_stage", "power", "PowerDesign"]
