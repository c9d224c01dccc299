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

# sleep, sleep_fit: conftest.py


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


# --- 2. compare(): escaping for Markdown and LaTeX -----------------------------------------


@pytest.fixture(scope="module")
def underscored_fits():
    # names with LaTeX specials: an underscore in the predictor, group and response
    d = load("sleepstudy").rename(columns={"Days": "days_n", "Subject": "subj_id", "Reaction": "rt_ms"})
    return (ml.lmer("rt_ms ~ days_n + (1 | subj_id)", d),
            ml.lmer("rt_ms ~ days_n + (days_n | subj_id)", d))


def _md_cells(line: str) -> list[str]:
    """The cells of a GitHub-Markdown table row: split on pipes that are not escaped."""
    inner = line.strip()[1:-1]
    return [c.strip() for c in re.split(r"(?<!\\)\|", inner)]


def test_markdown_rows_keep_their_cells(underscored_fits):
    md = ml.compare(*underscored_fits, names=["a|b", "slopes"]).to_markdown()
    rows = [ln for ln in md.splitlines() if ln.startswith("|")]
    assert all(len(_md_cells(ln)) == 3 for ln in rows), md
    sd_row = next(ln for ln in rows if ln.startswith("| SD days")).replace("\\_", "_")
    label, m1, m2 = _md_cells(sd_row)
    assert label == r"SD days_n \| subj_id" and m1 == "" and m2 != ""
    assert _md_cells(rows[0])[1] == r"a\|b"


def test_latex_escapes_pipes_and_specials(underscored_fits):
    tex = ml.compare(*underscored_fits).to_latex()
    body = [ln for ln in tex.splitlines() if ln.endswith(r"\\") and "multicolumn" not in ln]
    assert all(len(ln[:-2].split(" & ")) == 3 for ln in body), tex
    assert not re.search(r"(?<!\\)[|_%#]", tex.replace(r"\textbar{}", "")), tex
    assert r"SD (Intercept) \textbar{} subj\_id" in tex
    assert r"days\_n" in tex


# --- 3. anova(): R's print.anova ------------------------------------------------------------


@pytest.fixture(scope="module")
def sleep_anova(sleep):
    m0 = ml.lmer("Reaction ~ Days + (1 | Subject)", sleep)
    m1 = ml.lmer("Reaction ~ Days + (Days | Subject)", sleep)
    return ml.anova(m0, m1)


def test_anova_prints_like_lme4(sleep_anova):
    # lme4 1.1-31: anova(m0, m1) of these REML fits (numbers as print.anova formats them)
    assert str(sleep_anova).splitlines() == [
        "refitting model(s) with ML (instead of REML)",
        "Data: sleepstudy",
        "Models:",
        "m0: Reaction ~ Days + (1 | Subject)",
        "m1: Reaction ~ Days + (Days | Subject)",
        "   npar    AIC    BIC  logLik deviance  Chisq Df Pr(>Chisq)",
        "m0    4 1802.1 1814.9 -897.04   1794.1",
        "m1    6 1763.9 1783.1 -875.97   1751.9 42.139  2  7.072e-10 ***",
        "---",
        "Signif. codes:  0 '***' 0.001 '**' 0.01 '*' 0.05 '.' 0.1 ' ' 1",
    ]
    assert repr(sleep_anova) == str(sleep_anova)


def test_anova_shows_the_data_name_and_no_stars_when_none_are_due(sleep):
    a = ml.lmer("Reaction ~ Days + (Days || Subject)", sleep, reml=False)
    b = ml.lmer("Reaction ~ Days + (Days | Subject)", sleep, reml=False)
    a.data_name = b.data_name = "sleepstudy"
    lines = str(ml.anova(a, b)).splitlines()
    assert lines[:2] == ["Data: sleepstudy", "Models:"]
    assert not any("Signif" in ln or "*" in ln for ln in lines)  # p = 0.8 here


def test_anova_table_is_still_a_data_frame(sleep_anova):
    t = sleep_anova
    assert isinstance(t, pd.DataFrame)
    assert list(t.columns) == ["npar", "AIC", "BIC", "logLik", "deviance", "Chisq", "Df", "Pr(>Chisq)"]
    assert t.loc["m1", "Df"] == 2 and np.isnan(t.loc["m0", "Chisq"])
    assert t["npar"].tolist() == [4, 6]
    plain = t.to_frame()
    assert type(plain) is pd.DataFrame and plain.attrs["note"] == t.attrs["note"]
    pd.testing.assert_frame_equal(plain, pd.DataFrame(t), check_frame_type=False)
    # a slice is a plain frame, printed by pandas
    assert type(t[["AIC", "BIC"]]) is pd.DataFrame


def test_anova_html(sleep_anova):
    html = sleep_anova._repr_html_()
    assert "<th>Pr(&gt;Chisq)</th>" in html and "<td>42.139</td>" in html
    assert "<td>7.072e-10</td><td>***</td>" in html and "Signif. codes" in html
    assert "m1: Reaction ~ Days + (Days | Subject)" in html


def test_compare_table_as_a_data_frame(underscored_fits):
    t = ml.compare(*underscored_fits, names=["intercepts", "slopes"]).to_frame()
    assert list(t.columns) == ["intercepts", "slopes"]
    assert t.loc[("Fixed effects", "days_n"), "slopes"].startswith("10.467")
    assert t.loc[("Fixed effects", "days_n (SE)"), "slopes"].startswith("(")
    assert t.loc[("Model fit", "Observations")].tolist() == ["180", "180"]


# --- 4. the singular-fit warning points to our own documentation; no "classs" -------------


def test_singular_warning_points_to_a_doc_that_exists():
    import importlib
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit = ml.lmer("Yield ~ 1 + (1 | Batch)", load("Dyestuff2"))
    msg = str(next(w.message for w in caught if issubclass(w.category, ml.SingularFitWarning)))
    assert "isSingular" not in msg  # R's help page is not ours
    target = re.search(r"help\(([\w.]+)\)", msg).group(1)
    module, _, name = target.rpartition(".")
    doc = getattr(importlib.import_module(module), name).__doc__
    assert "singular" in doc and "(x || g)" in doc  # says what it means and what to do
    assert fit.warnings[0].message == msg


def test_report_does_not_pluralise_group_names():
    from multilevel.app.html_report import _pooling_section

    html = _pooling_section("popular ~ extrav + (1 | class)", load("popularity"), 40)
    assert "classs" not in html
    assert "8 levels of class" in html


# --- 5. arm's display() for lm, lmer and glmer fits -----------------------------------------


@pytest.fixture(scope="module")
def hsb():
    return load("hsb")


def test_display_of_lm_is_arms_layout(hsb):
    fit = ml.lm("mAch ~ ses", hsb)
    out = ml.display(fit, data_name="hsb")
    # arm 1.13: display(lm(mathach ~ ses, data = hsb)); R keeps the blanks that pad the columns
    assert out.splitlines() == [
        "lm(formula = mAch ~ ses, data = hsb)",
        "            coef.est coef.se",
        "(Intercept) 12.75     0.08  ",
        "ses          3.18     0.10  ",
        "---",
        "n = 7185, k = 2",
        "residual sd = 6.42, R-Squared = 0.13",
    ]
    assert out.n == 7185 and out.k == 2 and abs(out.r_squared - fit.r2) < 1e-15
    detail = ml.display(fit, detail=True).splitlines()
    assert detail[1].split() == ["coef.est", "coef.se", "t", "value", "Pr(>|t|)"]


def test_display_of_lmer_is_arms_layout(hsb):
    fit = ml.lmer("mAch ~ 1 + (1 | school)", hsb)
    fit.data_name = "hsb"
    out = ml.display(fit)
    assert out.splitlines() == [
        "lmer(formula = mAch ~ 1 + (1 | school), data = hsb)",
        "            coef.est coef.se",
        "(Intercept) 12.64     0.24  ",
        "",
        "Error terms:",
        " Groups   Name        Std.Dev.",
        " school   (Intercept) 2.93    ",
        " Residual             6.26    ",
        "---",
        "number of obs: 7185, groups: school, 160",
        "AIC = 47122.8, DIC = 47114.8",
        "deviance = 47115.8 ",
    ]
    assert repr(out) == str(out)  # shows itself as the text, not as a quoted string


def test_display_of_glmer_and_unknown_data_name():
    d = load("cbpp")
    d.attrs.clear()  # a frame of the user's: no name known
    fit = ml.glmer("cbind(incidence, size - incidence) ~ period + (1 | herd)", d, family="binomial")
    lines = ml.display(fit).splitlines()
    # R deparses the call, broken after 60 characters (print(fit@call) in R 4.2 / lme4 1.1-31);
    # without a known data name there is no "data = data"
    assert lines[:2] == ["glmer(formula = cbind(incidence, size - incidence) ~ period + ",
                         "    (1 | herd), family = binomial)"]
    assert " Residual             1.00    " in lines  # arm shows lme4's sigma() = 1
    dev = float(fit.conditional_deviance)
    assert lines[-1] == f"deviance = {dev:.1f} "
    assert lines[-2] == f"AIC = {fit.aic:.1f}, DIC = {2 * dev + 2 * fit.loglik:.1f}"
    s = load("sleepstudy")
    s.attrs.clear()
    for f in (fit, ml.lm("Reaction ~ Days", s)):
        assert "data = data" not in ml.display(f) and "data =" not in ml.display(f)


def test_display_is_top_level_and_still_in_report_tables(sleep_fit):
    assert ml.display(sleep_fit) == ml.report.tables.display(sleep_fit, file=False)
