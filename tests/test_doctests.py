"""Run the examples in the docstrings of the presentation, results, datasets and CLI modules.

Examples in methods' docstrings use the names ``ml``, ``load``, ``pd`` and ``fit`` (the
sleepstudy model of the results module's docstring), as a reader would have them.
"""
from __future__ import annotations

import doctest
import importlib
import warnings

import pandas as pd
import pytest

MODULES = ["multilevel.report.rformat", "multilevel.report.export", "multilevel.report.summary",
           "multilevel.report.html", "multilevel.report.plotdata", "multilevel.results.lmm",
           "multilevel.datasets", "multilevel.app.cli"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    import multilevel as ml
    from multilevel.datasets import load

    extra = {"ml": ml, "load": load, "pd": pd}
    if name == "multilevel.results.lmm":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            extra["fit"] = ml.lmer("Reaction ~ Days + (Days | Subject)", data=load("sleepstudy"))
    module = importlib.import_module(name)
    result = doctest.testmod(module, extraglobs=extra,
                             optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0
