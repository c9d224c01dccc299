"""The engine layer: problems built from arrays only, their optimisers and checks.

Layer: engine (above design, covariance and families). An engine problem receives the arrays
of a model frame (y, X, the random-effect terms with their level references and Lambda
pattern, weights, offset) and never looks at a data frame, a formula or a column name.
May import: ``multilevel._core`` (the compiled kernels), ``multilevel.covariance``,
``multilevel.families``, ``multilevel.design`` (for type hints of the frame it reads arrays
from), ``multilevel.errors``, ``multilevel.control``.

- ``lmm``: :class:`LmmProblem`, the profiled deviance of a linear mixed model, and ``fit_theta``.
- ``glmm``: :class:`GlmmProblem`, PIRLS / Laplace / AGQ criteria, and the Newton iteration.
- ``optimize``: BOBYQA (NLopt) with a fit log, and the Newton-decrement convergence check.
"""
