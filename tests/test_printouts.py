"""What users read: lmerTest's summary layout, the anova and compare tables, arm's display.

The expected layouts are R's: lmerTest 3.1's ``summary(fit)`` (lme4's ``printCoefmat`` with
the df formatted together with the estimates), lme4's ``anova(m0, m1)``, arm 1.13's
``display()``.
"""
from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

import multilevel as ml
from multilevel.datasets import load


@pytest.fixture(scope="module")
def sleep():
    return load("sleepstudy")


@pytest.fixture(scope="module")
def sleep_fit(sleep):
    return ml.lmer("Reaction ~ Days + (Days | Subject)", sleep)


# --- 1. lmerTest's summary ----------------------------------------------------------------


@pytest.mark.parametrize("ddf, method", [("satterthwaite", "Satterthwaite's method"),
                                         ("kenward-roger", "Kenward-Roger's method")])
def test_ddf_summary_is_lmertests_layout(sleep_fit, ddf, method):
    lines = str(sleep_fit.summary(ddf=ddf)).splitlines()
    # lme4's .prt.methTit wraps the long title before the class, as lmerTest prints it
    assert lines[:2] == [f"Linear mixed model fit by REML. t-tests use {method} [", "lmerModLmerTest]"]
    i = lines.index("Fixed effects:")
    assert lines[i + 1:i + 6] == [
        "            Estimate Std. Error      df t value Pr(>|t|)",
        "(Intercept)  251.405      6.825  17.000  36.838  < 2e-16 ***",
        "Days          10.467      1.546  17.000   6.771 3.26e-06 ***",
        "---",
        "Signif. codes:  0 '***' 0.001 '**' 0.01 '*' 0.05 '.' 0.1 ' ' 1",
    ]


def test_ddf_summary_of_ml_fit_wraps_like_r(sleep):
    fit = ml.lmer("Reaction ~ Days + (Days | Subject)", sleep, reml=False)
    lines = str(fit.summary(ddf="satterthwaite")).splitlines()
    # methTitle "... maximum likelihood " + ". t-tests use ..." is 81 characters: strwrap(78)
    assert lines[:2] == ["Linear mixed model fit by maximum likelihood . t-tests use Satterthwaite's",
                         "  method [lmerModLmerTest]"]


def test_ddf_summary_html_has_df_and_p_columns(sleep_fit):
    html = sleep_fit.summary(ddf="satterthwaite")._repr_html_()
    assert "t-tests use Satterthwaite&#x27;s method" in html
    for col in ("<th>df</th>", "<th>t value</th>", "<th>Pr(&gt;|t|)</th>"):
        assert col in html
    assert "<td>17.000</td><td>36.838</td><td>&lt; 2e-16</td><td>***</td>" in html
    assert "Signif. codes" in html
    plain = sleep_fit.summary()._repr_html_()
    assert "<th>df</th>" not in plain and "[&#x27;lmerMod&#x27;]" in plain
