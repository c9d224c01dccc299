"""compare() model tables, arm's display(), and the docstring examples of the inference package."""
from __future__ import annotations

import doctest
import importlib
import re
import warnings

import pytest

from _inference_helpers import fit_case

from multilevel.report.tables import compare, display


def _two():
    return fit_case("sleepstudy_intercept_reml"), fit_case("sleepstudy_slope_reml")


def test_compare_text():
    a, b = _two()
    t = compare(a, b, names=["intercept", "slope"])
    text = str(t)
    assert "intercept" in text and "slope" in text
    lines = text.splitlines()
    row = next(line for line in lines if line.startswith("Days "))
    assert "10.467***" in row
    se_row = lines[lines.index(row) + 1]
    assert f"({b.se['Days']:.3f})" in se_row and f"({a.se['Days']:.3f})" in se_row
    assert re.search(r"SD Days \| Subject\s+5\.922", text)
    assert "Cor Days, (Intercept) | Subject" in text
    assert re.search(r"Observations\s+180\s+180", text)
    assert re.search(r"Groups: Subject\s+18\s+18", text)
    assert f"{b.aic:.1f}" in text and f"{a.bic:.1f}" in text and f"{b.loglik:.1f}" in text
    assert "*** p < 0.001" in text


def test_compare_formats():
    a, b = _two()
    t = compare(a, b)
    md = t.to_markdown()
    assert md.splitlines()[0] == "| | Model 1 | Model 2 |"
    assert r"10.467\*\*\*" in md
    h = t._repr_html_()
    assert h.startswith("<table") and h.count("<tr>") >= 10 and "(Intercept)" in h
    tex = t.to_latex()
    assert tex.startswith(r"\begin{tabular}{lrr}") and r"\bottomrule" in tex
    assert "$^{***}$" in tex
    plain = compare(a, stars=False).to_text()
    assert "*" not in plain


def test_compare_mixed_models_and_glmm():
    g = fit_case("cbpp_binomial_laplace")
    l = fit_case("sleepstudy_slope_ml")
    text = compare(l, g).to_text()
    assert "period2" in text and "Groups: herd" in text and "Groups: Subject" in text


def test_display_is_arms_layout():
    fit = fit_case("sleepstudy_slope_reml")
    text = display(fit, file=False)
    lines = text.splitlines()
    assert lines[1:] [:3] == ["            coef.est coef.se",
                              "(Intercept) 251.41     6.82 ",
                              "Days         10.47     1.55 "]
    assert lines[4:10] == ["", "Error terms:",
                          " Groups   Name        Std.Dev. Corr ",
                          " Subject  (Intercept) 24.74         ",
                          "          Days         5.92    0.07 ",
                          " Residual             25.59         "]
    assert lines[10:] == ["---", "number of obs: 180, groups: Subject, 18",
                         "AIC = 1755.6, DIC = 1760.3", "deviance = 1751.9 "]


MODULES = ["multilevel.inference.anova", "multilevel.inference.ddf", "multilevel.inference.confint",
           "multilevel.inference.bootstrap", "multilevel.inference.variance",
           "multilevel.report.tables", "multilevel.inference._common"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0
