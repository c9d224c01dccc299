"""The design layer: from a formula and a data source to the arrays of a model.

Layer: design (above formula). The only code that touches data frames (pandas, polars through
narwhals). May import: ``multilevel.formula``, ``multilevel.errors``, ``multilevel.control``.
Never the engine, results or anything above.

``frame`` builds the :class:`ModelFrame` (y, X, the random-effect terms with their level
references, weights, offset) and re-applies the learnt specification to new data
(:class:`NewDesign`).
"""
from multilevel.design.frame import ModelFrame, NewDesign, ReTerm, build_fixed_frame, build_model_frame

__all__ = ["ReTerm", "NewDesign", "ModelFrame", "build_model_frame", "build_fixed_frame"]
