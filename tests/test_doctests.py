"""Run the examples in the docstrings of the design, presentation, results, datasets, CLI and
explorer modules.

Examples in methods' docstrings use the names ``ml``, ``load``, ``pd`` and ``fit`` (the
sleepstudy model of the results module's docstring), as a reader would have them.
"""
from __future__ import annotations

import doctest
import importlib
import warnings

import pandas as pd
import pytest

MODULES = ["multilevel.design.source", "multilevel.design.matrices", "multilevel.design.frame",
           "multilevel.report.rformat", "multilevel.results.export", "multilevel.report.summary",
           "multilevel.report.html", "multilevel.results.lmm", "multilevel.results.mixed",
           "multilevel.results.base", "multilevel.results.methods", "multilevel.results.names",
           "multilevel.datasets", "multilevel.datasets.files", "multilevel.app.cli",
           "multilevel", "multilevel.models._arguments",
           "multilevel.control", "multilevel.errors", "multilevel.covariance", "multilevel.families.links",
           "multilevel.families.base", "multilevel.families.binomial", "multilevel.families.poisson",
           "multilevel.engine.input", "multilevel.models.input", "multilevel.report.plotdata",
           "multilevel.report.display", "multilevel.report.anova_table", "multilevel.results.storage",
           "multilevel.design.grouped", "multilevel.results.grouped_ls", "multilevel.models.lm",
           "multilevel._blas", "multilevel.app.explore.data", "multilevel.app.explore.views",
           "multilevel.app.explore.server", "multilevel.engine.partitioned",
           "multilevel.design.buckets", "multilevel.models.partitions"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    import multilevel as ml
    from multilevel.datasets import load

    extra = {"ml": ml, "load": load, "pd": pd}
    if name in ("multilevel.results.lmm", "multilevel.results.mixed"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            extra["fit"] = ml.lmer("Reaction ~ Days + (Days | Subject)", data=load("sleepstudy"))
    module = importlib.import_module(name)
    result = doctest.testmod(module, extraglobs=extra,
                             optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0
