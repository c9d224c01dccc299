"""Accessors course users look for: se_ranef (arm), top-level icc / variance_reduction /
display, saving and loading fits, and fitted values and residuals on the data's index."""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from _lmm_oracle import _full_z_lambda
from conftest import fit_reference_case, load_case

import multilevel as ml
from multilevel.datasets import load


# --- 6. top-level names and se_ranef ----------------------------------------------------------


def test_course_names_are_top_level():
    for name in ("icc", "variance_reduction", "display", "se_ranef"):
        assert name in ml.__all__ and callable(getattr(ml, name))


def test_variance_reduction_top_level_is_barrons_69_percent():
    hsb = load("hsb")
    m0 = ml.lmer("mAch ~ 1 + (1 | school)", hsb)
    m1 = ml.lmer("mAch ~ meanses + (1 | school)", hsb)
    red = ml.variance_reduction(m0, m1)
    assert round(float(red.loc[("school", "(Intercept)"), "reduction"]), 2) == 0.69
    assert round(float(ml.icc(m0)["adjusted"]), 2) == 0.18


@pytest.mark.parametrize("case_id", ["sleepstudy_slope_reml", "penicillin_crossed_reml"])
def test_se_ranef_matches_lme4_condvar(case_id):
    case = load_case(case_id)
    fit = fit_reference_case(case_id)
    se = fit.se_ranef()
    assert list(se) == list(case["results"]["ranef"])
    for g, terms in case["results"]["ranef"].items():
        re = fit.ranef(condvar=False)[g]
        assert se[g].shape == re.shape and list(se[g].index) == list(re.index)
        assert list(se[g].columns) == list(re.columns)
        for t, r in terms.items():
            np.testing.assert_allclose(se[g][t].to_numpy(), np.asarray(r["condsd"], float), rtol=2e-3)
    for g in se:
        pd.testing.assert_frame_equal(ml.se_ranef(fit)[g], se[g])


def test_se_ranef_equals_a_dense_computation():
    """sqrt(diag(sigma^2 Lambda (Lambda' Z' Z Lambda + I)^-1 Lambda')), from the definitions."""
    fit = ml.lmer("Reaction ~ Days + (Days | Subject)", load("sleepstudy"))
    Z, Lam, _ = _full_z_lambda(fit.frame, np.asarray(fit.theta, float))
    ZL = Z @ Lam
    V = fit.sigma**2 * Lam @ np.linalg.inv(ZL.T @ ZL + np.eye(Lam.shape[0])) @ Lam.T
    dense = np.sqrt(np.diag(V)).reshape(-1, 2)  # level-major: (Intercept), Days per subject
    np.testing.assert_allclose(fit.se_ranef()["Subject"].to_numpy(), dense, rtol=1e-8)


def test_se_ranef_of_a_glmm_and_refusal_for_lm():
    g = ml.glmer("cbind(incidence, size - incidence) ~ period + (1 | herd)", load("cbpp"), family="binomial")
    se = ml.se_ranef(g)["herd"]
    assert se.shape == (15, 1) and (se.to_numpy() > 0).all()
    with pytest.raises(ml.ModelSpecError, match="se_ranef"):
        ml.se_ranef(ml.lm("Reaction ~ Days", load("sleepstudy")))


# --- 7. saving and loading fits ----------------------------------------------------------------


@pytest.fixture(scope="module")
def three_fits():
    sleep = load("sleepstudy")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ml.MultilevelWarning)
        return {
            "lm": (ml.lm("Reaction ~ Days", sleep), sleep.head(7)),
            "lmer": (ml.lmer("Reaction ~ Days + (Days | Subject)", sleep), sleep.head(7)),
            "glmer": (ml.glmer("cbind(incidence, size - incidence) ~ period + (1 | herd)", load("cbpp"),
                               family="binomial"), load("cbpp").head(7)),
        }


@pytest.mark.parametrize("kind", ["lm", "lmer", "glmer"])
def test_saved_fit_prints_predicts_and_summarises_identically(three_fits, kind, tmp_path):
    fit, new = three_fits[kind]
    path = tmp_path / f"{kind}.fit"
    fit.save(path)
    back = ml.load_fit(path)
    assert type(back) is type(fit)
    assert str(back) == str(fit) and str(back.summary()) == str(fit.summary())
    assert back.summary()._repr_html_() == fit.summary()._repr_html_()
    pd.testing.assert_series_equal(back.predict(new), fit.predict(new), check_exact=True)
    pd.testing.assert_series_equal(back.fitted(), fit.fitted(), check_exact=True)
    assert str(ml.display(back)) == str(ml.display(fit))
    if kind == "lmer":
        assert str(back.summary(ddf="satterthwaite")) == str(fit.summary(ddf="satterthwaite"))


def test_load_fit_errors_name_the_file(tmp_path):
    import pickle

    with pytest.raises(ml.MultilevelError, match="cannot read a fit from .*missing.fit"):
        ml.load_fit(tmp_path / "missing.fit")
    other = tmp_path / "other.pkl"
    other.write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(ml.MultilevelError, match="other.pkl.* is not a fit saved by multilevel"):
        ml.load_fit(other)
    junk = tmp_path / "junk.fit"
    junk.write_text("not a pickle")
    with pytest.raises(ml.MultilevelError, match="junk.fit.* is not a fit saved by multilevel"):
        ml.load_fit(junk)
    with pytest.raises(ml.MultilevelError, match="saves fitted models"):
        ml.results.storage.save_fit({"a": 1}, tmp_path / "x.fit")


# --- 8. fitted() and residuals() on the data's index ---------------------------------------------


def _shuffled_with_missing(df: pd.DataFrame, col: str) -> pd.DataFrame:
    out = df.sample(frac=1.0, random_state=3).copy()
    out.loc[out.index[:5], col] = np.nan  # rows dropped for a missing value
    return out


@pytest.mark.filterwarnings("ignore::multilevel.errors.RowsDroppedWarning")
@pytest.mark.parametrize("kind", ["lm", "lmer", "glmer"])
def test_fitted_and_residuals_align_with_the_data_after_sorting(kind):
    if kind == "glmer":
        d = _shuffled_with_missing(load("cbpp"), "size")
        fit = ml.glmer("cbind(incidence, size - incidence) ~ period + (1 | herd)", d, family="binomial")
        # response residuals on the proportion scale: y / size - mu
        y = d["incidence"] / d["size"]
    else:
        d = _shuffled_with_missing(load("sleepstudy"), "Reaction")
        formula = "Reaction ~ Days" + ("" if kind == "lm" else " + (Days | Subject)")
        fit = (ml.lm if kind == "lm" else ml.lmer)(formula, d)
        y = d["Reaction"]
    used = d.dropna()
    fitted, resid = fit.fitted(), fit.residuals(type="response")
    assert list(fitted.index) == list(used.index) == list(resid.index)
    # assigned back to the frame, every value lands on its own row
    back = d.assign(fitted=fitted, resid=resid).dropna()
    np.testing.assert_allclose(back["fitted"] + back["resid"], y[back.index], rtol=1e-12)
    # the same labels as predict(newdata) on those rows, and the same values
    pred = fit.predict(used, type="response") if kind == "glmer" else fit.predict(used)
    pd.testing.assert_index_equal(pred.index, fitted.index)
    np.testing.assert_allclose(pred.to_numpy(), fitted.to_numpy(), rtol=1e-8)


def test_fitted_of_data_without_labels_is_by_position():
    import polars as pl  # a test extra
    d = load("sleepstudy")
    fit = ml.lmer("Reaction ~ Days + (Days | Subject)", pl.from_pandas(d))
    assert list(fit.fitted().index) == list(range(len(d)))
