"""anova(): likelihood-ratio tables against lme4's anova() for every anova reference case."""
from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pytest

from _inference_helpers import anova_case_ids, fit_anova_model
from conftest import load_case, read_dataset

import multilevel as ml
from multilevel.errors import MultilevelError

CASES = anova_case_ids()


def _compare(table: pd.DataFrame, ref_rows: list[dict]) -> list[str]:
    bad = []
    assert list(table.index) == [r["model"] for r in ref_rows]
    for r in ref_rows:
        got = table.loc[r["model"]]
        if int(got["npar"]) != r["npar"]:
            bad.append(f"{r['model']} npar {got['npar']} vs {r['npar']}")
        for col in ("AIC", "BIC", "logLik", "deviance", "Chisq"):
            a, b = got[col], r[col]
            if b is None:
                if not (isinstance(a, float) and math.isnan(a)):
                    bad.append(f"{r['model']} {col} {a} vs NA")
            elif abs(a - b) > 1e-6 * abs(b):
                bad.append(f"{r['model']} {col} {a!r} vs {b!r}")
        if r["Df"] is None:
            assert math.isnan(got["Df"])
        elif int(got["Df"]) != r["Df"]:
            bad.append(f"{r['model']} Df {got['Df']} vs {r['Df']}")
        p = got["Pr(>Chisq)"]
        if r["p"] is None:
            assert math.isnan(p)
        elif abs(p - r["p"]) > 1e-6:
            bad.append(f"{r['model']} p {p!r} vs {r['p']!r}")
    return bad


def test_all_anova_cases_are_parametrized():
    assert len(CASES) == 4


@pytest.mark.parametrize("case_id", CASES)
def test_anova_matches_lme4(case_id):
    case = load_case(case_id)
    fits = [fit_anova_model(case_id, k) for k in sorted(case["models"])]
    table = ml.anova(*fits)
    assert _compare(table, case["table"]) == []
    reml = any(m.get("REML") for m in case["models"].values())
    assert table.attrs["note"] == ("refitting model(s) with ML (instead of REML)" if reml else "")
    assert list(table.columns) == ["npar", "AIC", "BIC", "logLik", "deviance", "Chisq", "Df", "Pr(>Chisq)"]


def test_anova_refit_false_compares_reml_criteria():
    case_id = "anova_sleepstudy_intercept_vs_slope_reml"
    case = load_case(case_id)
    fits = [fit_anova_model(case_id, k) for k in ("m0", "m1")]
    table = ml.anova(*fits, refit=False)
    assert _compare(table, case["table_refit_FALSE"]) == []
    assert table.attrs["note"] == ""


def test_anova_orders_by_npar_and_keeps_given_names():
    case_id = "anova_hsb_null_vs_meanses_ml"
    m0, m1 = (fit_anova_model(case_id, k) for k in ("m0", "m1"))
    table = ml.anova(m1, m0, names=["big", "small"])
    assert list(table.index) == ["small", "big"]
    assert table.loc["big", "Df"] == 1
    assert table.attrs["formulas"]["small"] == m0.formula


def _sleep_fit(formula, data, reml=False):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ml.lmer(formula, data, reml=reml)


def test_anova_refuses_other_rows_and_other_responses():
    d = read_dataset("sleepstudy")
    a = _sleep_fit("Reaction ~ Days + (1 | Subject)", d)
    b = _sleep_fit("Reaction ~ Days + (1 | Subject)", d.iloc[:170].reset_index(drop=True))
    with pytest.raises(MultilevelError, match="same number of observations"):
        ml.anova(a, b)
    d2 = d.copy()
    d2["logR"] = np.log(d2["Reaction"])
    c = _sleep_fit("logR ~ Days + (1 | Subject)", d2)
    with pytest.raises(MultilevelError, match="another response"):
        ml.anova(a, c)
    d3 = d.copy()
    d3.loc[3, "Days"] = np.nan  # a different row dropped, same count as b
    e = _sleep_fit("Reaction ~ Days + (1 | Subject)", d3)
    f = _sleep_fit("Reaction ~ Days + (1 | Subject)", d.drop(index=7).reset_index(drop=True))
    assert e.nobs == f.nobs
    with pytest.raises(MultilevelError):
        ml.anova(e, f)
    with pytest.raises(MultilevelError, match="two or more"):
        ml.anova(a)


def test_anova_equal_npar_gives_no_test():
    d = read_dataset("sleepstudy")
    a = _sleep_fit("Reaction ~ Days + (1 | Subject)", d)
    b = _sleep_fit("Reaction ~ Days + (0 + Days | Subject)", d)
    table = ml.anova(a, b)
    assert math.isnan(table["Pr(>Chisq)"].iloc[1]) and table["Df"].iloc[1] == 0
