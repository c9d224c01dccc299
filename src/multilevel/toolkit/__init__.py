"""The toolkit layer: the multilevel courses' tools.

Layer: toolkit (above inference). ``describe`` (how the data nest: groups, sizes, ICC),
``pooling`` (complete, no and partial pooling side by side, shrinkage) and ``two_stage``
(slopes as outcomes). May import: formula, design, models, results, inference, errors.
Never report or app (their own printouts are plain text made here).
"""
from multilevel.toolkit.describe import describe
from multilevel.toolkit.pooling import pooling, two_stage

__all__ = ["describe", "pooling", "two_stage"]
