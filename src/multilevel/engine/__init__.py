"""The engine layer: problems built from arrays only, their optimisers and checks.

Layer: engine (above design, covariance and families). An engine problem receives an
:class:`~multilevel.engine.input.EngineInput` -- arrays only: y, X, the random-effect terms
with their level references and covariance structures (whose Λ pattern the compiled core
consumes), weights, offset -- and never looks at a data frame, a formula or a column name.
May import: ``multilevel._core`` (the compiled kernels), ``multilevel.covariance``,
``multilevel.families``, ``multilevel.errors``, ``multilevel.control``; never design.

- ``input``: :class:`EngineInput` / :class:`TermInput`, buildable from row chunks.
- ``centring``: X's columns centred inside the engine, undone exactly for the estimates.

- ``lmm``: :class:`LmmProblem`, the profiled deviance of a linear mixed model, and ``fit_theta``.
- ``glmm``: :class:`GlmmProblem`, PIRLS / Laplace / AGQ criteria, and the Newton iteration.
- ``optimize``: BOBYQA (NLopt) with a fit log, and the Newton-decrement convergence check.
"""
