"""The summary text (lme4's layout), its HTML version and R's number formatting."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from _lmm_oracle import dyestuff_frame, oracle_fit, sleepstudy_frame
from conftest import fit_reference_case, load_case
from multilevel.datasets import load
from multilevel.report.rformat import (
    abbreviate,
    char_matrix_lines,
    coefmat_lines,
    format_num,
    format_pval,
    format_real,
    make_unique_names,
    named_vector_lines,
    zapsmall,
)
from multilevel.report.summary import correlation_lines, summary_lines


def hand(case_id: str, frame, **kw):
    case = load_case(case_id)
    return oracle_fit(frame, list(case["results"]["theta"].values()), case["REML"], **kw)


# --- R formatting primitives (expected values are R 4.2's output) ---------------------------


@pytest.mark.parametrize("values, digits, expected", [
    ([1, 10, 100], 7, ["  1", " 10", "100"]),
    ([3.14159], 3, ["3.14"]),
    ([0.000012345], 3, ["1.23e-05"]),
    ([100000], 7, ["1e+05"]),
    ([123456], 7, ["123456"]),
    ([1234567.1], 7, ["1234567"]),
    ([-1.5, 2], 7, ["-1.5", " 2.0"]),
    ([2.5], 1, ["2"]),
    ([3.5], 1, ["4"]),
    ([0.15], 1, ["0.1"]),
    ([9996], 3, ["9996"]),
    ([0.1 + 0.2], 17, ["0.30000000000000004"]),
    ([612.0898702223931, 35.07166023933963, 654.9410], 4, ["612.09", " 35.07", "654.94"]),
    ([float("nan"), 1.25], 4, [" NaN", "1.25"]),
    ([None, 1.0], 4, ["NA", " 1"]),
    ([0.0, -0.0], 4, ["0", "0"]),
])
def test_format_real_matches_r(values, digits, expected):
    assert format_real(values, digits=digits) == expected


def test_format_real_nsmall_and_format_num():
    assert format_real([1.0, 0.07], digits=7, nsmall=2) == ["1.00", "0.07"]
    assert format_real([-0.001], digits=7, nsmall=2) == ["-0.001"]
    assert format_num(1743.6) == "1743.6" and format_num(1743.0) == "1743" and format_num(-49.4) == "-49.4"


def test_zapsmall_and_pvalues():
    assert zapsmall([1e-20, 1.23456789], 5) == [0.0, 1.2346]
    assert format_pval([0.0123, 0.5, 1e-20], digits=3) == ["0.0123", "0.5000", "<2e-16"]
    assert format_pval([3.2e-6], digits=3) == ["3.2e-06"]


def test_abbreviate_like_r():
    assert abbreviate(["(Intercept)", "Days"], 6) == ["(Intr)", "Days"]
    assert abbreviate(["(Intercept)"], 11) == ["(Intercept)"]
    assert abbreviate(["period2", "period3", "period4"], 6) == ["perid2", "perid3", "perid4"]
    # clashes are resolved by abbreviating the clashing names less
    assert abbreviate(["schgendboys", "schgendgirls"], 6) == ["schgndb", "schgndg"]
    assert abbreviate(["sectorCatholic"], 11) == ["sectorCthlc"]


def test_unique_block_names():
    assert make_unique_names(["Subject", "Subject", "Item"]) == ["Subject", "Subject.1", "Item"]
    assert make_unique_names(["a:b", "a:b"]) == ["a.b", "a.b.1"]
    assert make_unique_names(["cask:batch", "batch"]) == ["cask:batch", "batch"]


def test_table_printers():
    assert named_vector_lines(["1.5", "-2.25"], ["Min", "Max"]) == ["  Min   Max", "  1.5 -2.25"]
    lines = char_matrix_lines([["a", "bb"], ["ccc", ""]], ["X", "Y"], ["r1", "row2"])
    assert lines == ["     X   Y", "r1   a   bb", "row2 ccc"]
    assert char_matrix_lines([["1"], ["22"]], ["V"], ["a", "b"], right=True) == ["   V", "a  1", "b 22"]
    # columns that do not fit in the width continue in a second block, as R prints them
    wide = char_matrix_lines([["x" * 30] * 3], ["A", "B", "C"], ["r"], width=70)
    assert len(wide) == 4 and wide[2].strip() == "C"


def test_coefmat_rounds_like_printcoefmat():
    lines = coefmat_lines(["(Intercept)", "Days"], ["Estimate", "Std. Error", "t value"],
                          [[251.405104848484, 6.82455626155296, 36.83830790066274],
                           [10.467285959596424, 1.5457888928884913, 6.7714847789060295]])
    assert lines == ["            Estimate Std. Error t value",
                     "(Intercept)  251.405      6.825  36.838",
                     "Days          10.467      1.546   6.771"]
    dy = coefmat_lines(["(Intercept)"], ["Estimate", "Std. Error", "t value"], [[1527.5000000000005, 19.383412832749343, 78.80449192204198]])
    assert dy[1] == "(Intercept)  1527.50      19.38    78.8"
    z = coefmat_lines(["(Intercept)", "x"], ["Estimate", "Std. Error", "z value", "Pr(>|z|)"],
                      [[-1.39853, 0.23093, -6.056, 1.39e-09], [0.1, 0.2, 0.5, 0.617]], has_pvalue=True)
    assert z[0].split() == ["Estimate", "Std.", "Error", "z", "value", "Pr(>|z|)"]
    assert z[1].endswith("***") and z[-1].startswith("Signif. codes:")


# --- whole summaries ------------------------------------------------------------------------

SLEEPSTUDY_REML = """\
Linear mixed model fit by REML ['lmerMod']
Formula: Reaction ~ Days + (Days | Subject)
   Data: sleepstudy

REML criterion at convergence: 1743.6

Scaled residuals:
    Min      1Q  Median      3Q     Max
-3.9536 -0.4634  0.0231  0.4634  5.1793

Random effects:
 Groups   Name        Variance Std.Dev. Corr
 Subject  (Intercept) 612.09   24.740
          Days         35.07    5.922   0.07
 Residual             654.94   25.592
Number of obs: 180, groups:  Subject, 18

Fixed effects:
            Estimate Std. Error t value
(Intercept)  251.405      6.825  36.838
Days          10.467      1.546   6.771

Correlation of Fixed Effects:
     (Intr)
Days -0.138"""


def test_sleepstudy_summary_is_lme4s_layout():
    fit = hand("sleepstudy_slope_reml", sleepstudy_frame(load("sleepstudy")), data_name="sleepstudy")
    assert str(fit.summary()) == SLEEPSTUDY_REML
    assert repr(fit) == SLEEPSTUDY_REML and str(fit) == SLEEPSTUDY_REML
    coefs = fit.summary().coefficients
    assert list(coefs.columns) == ["Estimate", "Std. Error", "t value"]
    assert np.isclose(coefs.loc["Days", "t value"], 6.7714847789060295)


def test_ml_summary_has_information_criteria():
    fit = hand("sleepstudy_slope_ml", sleepstudy_frame(load("sleepstudy")))
    lines = str(fit.summary()).splitlines()
    assert lines[0] == "Linear mixed model fit by maximum likelihood  ['lmerMod']"
    i = lines.index("     AIC      BIC   logLik deviance df.resid")
    assert lines[i + 1] == "  1763.9   1783.1   -876.0   1751.9      174"
    assert "   Data:" not in str(fit.summary())


def test_singular_summary_shows_warning_and_zero_variance():
    fit = hand("dyestuff2_singular_reml", dyestuff_frame(load("dyestuff2")))
    text = str(fit.summary())
    assert " Batch    (Intercept)  0.00    0.000" in text
    assert text.endswith("optimizer (bobyqa) convergence code: 0 (OK)\n"
                         "boundary (singular) fit: a variance is estimated as 0 or a correlation as ±1; see help(multilevel.SingularFitWarning)")
    assert "Correlation of Fixed Effects" not in text  # a single coefficient


def test_double_bar_blocks_get_lme4_names():
    fit = hand("sleepstudy_dblbar_reml", sleepstudy_frame(load("sleepstudy"), "dblbar"))
    lines = str(fit.summary()).splitlines()
    i = lines.index("Random effects:")
    assert lines[i + 1:i + 5] == [" Groups    Name        Variance Std.Dev.",
                                  " Subject   (Intercept) 627.57   25.051",
                                  " Subject.1 Days         35.86    5.988",
                                  " Residual              653.58   25.565"]
    assert str(fit.varcorr).splitlines()[0] == " Groups    Name        Std.Dev."


def test_every_warning_is_listed_and_nonconvergence_code():
    frame = sleepstudy_frame(load("sleepstudy"))
    frame.warnings = ["3 rows with missing values dropped"]
    fit = hand("sleepstudy_slope_reml", frame)
    fit._converged = False
    fit.optinfo["code"] = 5
    fit.optinfo["message"] = "NLOPT_MAXEVAL_REACHED: Optimization stopped because maxeval was reached"
    tail = str(fit.summary()).splitlines()[-2:]
    assert tail == ["optimizer (bobyqa) convergence code: 5 "
                    "(NLOPT_MAXEVAL_REACHED: Optimization stopped because maxeval was reached)",
                    "3 rows with missing values dropped"]


def test_weights_line_and_correlation_switch():
    from _lmm_oracle import cbpp_weighted_frame

    fit = hand("cbpp_weighted_lmm_reml", cbpp_weighted_frame(load("cbpp")), weights_name="size")
    text = str(fit.summary())
    assert "\nWeights: size\n" in text and "REML criterion at convergence: -49.4" in text
    assert "period4 -0.502  0.407  0.396" in text
    assert "Correlation of Fixed Effects" not in str(fit.summary(correlation=False))


def test_correlation_hidden_for_many_coefficients():
    p = 21
    names = [f"x{i}" for i in range(p)]
    stub = SimpleNamespace(fixef=pd.Series(np.ones(p), index=names),
                           vcov=pd.DataFrame(np.eye(p), index=names, columns=names))
    lines = correlation_lines(stub, None)
    assert "Correlation matrix not shown by default, as p = 21 > 20." in lines
    assert correlation_lines(stub, True)[1] == "Correlation of Fixed Effects:"


def test_html_summary():
    fit = hand("sleepstudy_slope_reml", sleepstudy_frame(load("sleepstudy")))
    html = fit._repr_html_()
    assert html.count("<table>") == 3
    assert "251.405" in html and "24.740" in html and "Subject" in html and "(Intercept)" in html
    singular = hand("dyestuff2_singular_reml", dyestuff_frame(load("dyestuff2")))
    assert "boundary (singular) fit" in singular.summary()._repr_html_()


def test_summary_lines_is_a_list_of_lines():
    fit = hand("sleepstudy_slope_reml", sleepstudy_frame(load("sleepstudy")))
    lines = summary_lines(fit)
    assert all("\n" not in ln and ln == ln.rstrip() for ln in lines)


# --- with the real engine ---------------------------------------------------------------------


def test_lmer_sleepstudy_summary():
    text = str(fit_reference_case("sleepstudy_slope_reml").summary())
    lines = text.splitlines()
    for line in ["Linear mixed model fit by REML ['lmerMod']", "REML criterion at convergence: 1743.6",
                 "Number of obs: 180, groups:  Subject, 18", "            Estimate Std. Error t value",
                 " Groups   Name        Variance Std.Dev. Corr"]:
        assert line in lines
    # the printed digits of the fixed-effects table: lme4's values to the last printed digit
    # (compared as numbers: a third decimal may round either way within the fit's tolerance)
    ref = load_case("sleepstudy_slope_reml")["results"]
    i = lines.index("            Estimate Std. Error t value")
    for row, name in zip(lines[i + 1:i + 3], ["(Intercept)", "Days"]):
        label, est, se, t = row.rsplit(maxsplit=3)
        assert label == name and est.count(".") == se.count(".") == t.count(".") == 1
        assert len(est.split(".")[1]) == len(se.split(".")[1]) == 3
        want = [ref["fixef"][name], ref["fixef_se"][name], ref["fixef"][name] / ref["fixef_se"][name]]
        assert np.allclose([float(est), float(se), float(t)], want, rtol=0, atol=1.01e-3)


def test_lmer_singular_summary():
    fit = fit_reference_case("dyestuff2_singular_reml")
    text = str(fit.summary())
    assert fit.is_singular and "boundary (singular) fit: a variance is estimated as 0 or a correlation as ±1; see help(multilevel.SingularFitWarning)" in text.splitlines()
