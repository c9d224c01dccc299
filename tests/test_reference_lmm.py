"""Every LMM reference case fitted with ``multilevel.lmer`` and compared with lme4 1.1-31.

Acceptance tolerances (see fixtures/reference/README.md):

* logLik, REML criterion, deviance, AIC, BIC: 1e-6 relative;
* fixed effects: |difference| <= 1e-3 x their standard error; standard errors 1e-3 relative;
* sigma and every variance-component SD: 1e-3 relative (an SD lme4 puts at 0: 1e-3 x sigma
  absolute); correlations 1e-3 absolute where lme4 defines them;
* conditional modes and SDs: |difference| <= 1e-3 x (the term's SD, at least 1e-3 x sigma)
  + 1e-3 x the SE of the fixed effect of the same name (a shift of the intercept moves
  every intercept mode by as much);
* predictions and fitted values: |difference| <= 1e-4 x max(|lme4 value|, sigma).

One fit per case is shared by all tests (``fit_reference_case`` is cached).
"""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from conftest import (
    as_array,
    fit_reference_case,
    lmm_case_ids,
    load_case,
    load_case_frame,
    newdata_frame,
    rel_diff,
)

CASES = lmm_case_ids()
LIK_TOL = 1e-6
PAR_TOL = 1e-3
PRED_TOL = 1e-4


def _fit(case_id: str):
    return load_case(case_id), fit_reference_case(case_id)


def test_all_lmm_cases_are_parametrized():
    assert len(CASES) == 27  # every LMM case of the public index vendored here


@pytest.mark.parametrize("case_id", CASES)
def test_likelihood_and_counts(case_id):
    case, fit = _fit(case_id)
    ref = case["results"]
    got = fit.to_dict()["results"]
    bad = []
    d = got["logLik"] - ref["logLik"]
    if rel_diff(got["logLik"], ref["logLik"]) > LIK_TOL:
        hint = " (ours is higher: a better optimum than lme4's)" if d > 0 else ""
        bad.append(f"logLik {got['logLik']!r} vs {ref['logLik']!r}{hint}")
    keys = ["deviance", "AIC", "BIC", "minus2logLik"] + (["REMLcrit"] if case["REML"] else [])
    for k in keys:
        if rel_diff(got[k], ref[k]) > LIK_TOL:
            bad.append(f"{k} {got[k]!r} vs {ref[k]!r}")
    if not case["REML"]:
        assert "REMLcrit" not in got and fit.reml_criterion is None
    for k in ("logLik_df", "df_resid", "nobs", "ngrps", "isSingular"):
        if got[k] != ref[k]:
            bad.append(f"{k} {got[k]!r} vs {ref[k]!r}")
    if fit.to_dict()["fixef_names"] != case["fixef_names"]:
        bad.append(f"fixef_names {fit.to_dict()['fixef_names']} vs {case['fixef_names']}")
    assert not bad, "; ".join(bad)


@pytest.mark.parametrize("case_id", CASES)
def test_fixed_effects(case_id):
    case, fit = _fit(case_id)
    ref = case["results"]
    bad = []
    for name, val in ref["fixef"].items():
        se = ref["fixef_se"][name]
        if abs(fit.fixef[name] - val) > PAR_TOL * se:
            bad.append(f"fixef {name} {fit.fixef[name]!r} vs {val!r} ({abs(fit.fixef[name] - val) / se:.2g} SE)")
        if rel_diff(fit.se[name], se) > PAR_TOL:
            bad.append(f"SE {name} {fit.se[name]!r} vs {se!r}")
    names = ref["vcov_fixef"]["names"]
    vref = as_array(ref["vcov_fixef"]["matrix"])
    vgot = fit.vcov.loc[names, names].to_numpy()
    se = np.sqrt(np.diag(vref))
    scaled = np.abs(vgot - vref) / np.outer(se, se)
    if scaled.max() > PAR_TOL:
        bad.append(f"vcov off by {scaled.max():.2g} x SE_i SE_j")
    assert not bad, "; ".join(bad)


@pytest.mark.parametrize("case_id", CASES)
def test_variance_components(case_id):
    case, fit = _fit(case_id)
    ref = case["results"]
    sigma = ref["sigma"]
    bad = []
    if rel_diff(fit.sigma, sigma) > PAR_TOL:
        bad.append(f"sigma {fit.sigma!r} vs {sigma!r}")
    got = fit.to_dict()["results"]["varcorr"]
    assert [(b["group"], b["block_name"], b["terms"]) for b in got] == \
           [(b["group"], b["block_name"], b["terms"]) for b in ref["varcorr"]]
    for gb, rb in zip(got, ref["varcorr"]):
        for t, sd in rb["sd"].items():
            tol = PAR_TOL * sigma if sd == 0 else PAR_TOL * sd
            if abs(gb["sd"][t] - sd) > tol:
                bad.append(f"sd {rb['block_name']}/{t} {gb['sd'][t]!r} vs {sd!r}")
        for i, row in enumerate(rb["corr"]):
            for j, c in enumerate(row):
                if c is not None and i != j and (gb["corr"][i][j] is None or abs(gb["corr"][i][j] - c) > PAR_TOL):
                    bad.append(f"corr {rb['block_name']}[{i},{j}] {gb['corr'][i][j]!r} vs {c!r}")
    assert list(fit.theta.index) == [n for b in case["re_structure"] for n in b["theta_names"]]
    assert not bad, "; ".join(bad)


@pytest.mark.parametrize("case_id", CASES)
def test_random_effects(case_id):
    case, fit = _fit(case_id)
    ref = case["results"]
    sigma = ref["sigma"]
    term_sd = {}
    for blk in ref["varcorr"]:
        for t, sd in blk["sd"].items():
            term_sd[(blk["group"], t)] = sd
    re = fit.ranef(condvar=True)
    assert list(re) == list(ref["ranef"])
    bad = []
    for g, terms in ref["ranef"].items():
        assert list(re[g].columns) == list(terms)
        for t, r in terms.items():
            assert list(re[g].index) == r["levels"], f"levels of {g}"
            scale = max(term_sd[(g, t)], PAR_TOL * sigma)
            tol = PAR_TOL * scale + PAR_TOL * ref["fixef_se"].get(t, 0.0)
            dv = np.max(np.abs(re[g][t].to_numpy() - as_array(r["condval"])))
            ds = np.max(np.abs(re.condsd[g][t].to_numpy() - as_array(r["condsd"])))
            if dv > tol:
                bad.append(f"condval {g}/{t} max diff {dv:.3g} > {tol:.3g}")
            if ds > PAR_TOL * scale:
                bad.append(f"condsd {g}/{t} max diff {ds:.3g} > {PAR_TOL * scale:.3g}")
    assert not bad, "; ".join(bad)


@pytest.mark.parametrize("case_id", CASES)
def test_predictions_and_fitted(case_id):
    case, fit = _fit(case_id)
    ref = case["results"]
    scale_floor = ref["sigma"]
    df = load_case_frame(case)
    nd = newdata_frame(case, df)
    bad = []

    def compare(label, got, want):
        got, want = as_array(got), as_array(want)
        assert got.shape == want.shape, f"{label}: {got.shape} vs {want.shape}"
        tol = PRED_TOL * np.maximum(np.abs(want), scale_floor)
        off = np.abs(got - want) > tol
        if off.any():
            bad.append(f"{label} rows {np.flatnonzero(off).tolist()}: {got[off].tolist()} vs {want[off].tolist()}")

    compare("predict(allow_new_levels=True)", fit.predict(nd, allow_new_levels=True), ref["predict_allow_new_levels"])
    compare("predict(re_form='~0')", fit.predict(nd, re_form="~0"), ref["predict_re_form_NA"])
    compare("fitted_first20", fit.fitted().to_numpy()[:20], ref["fitted_first20"])
    assert not bad, "; ".join(bad)


@pytest.mark.parametrize("case_id", CASES)
def test_summary_and_export(case_id):
    case, fit = _fit(case_id)
    text = str(fit.summary())
    assert text.startswith("Linear mixed model fit by " + ("REML" if case["REML"] else "maximum likelihood"))
    assert f"Number of obs: {case['results']['nobs']}, groups:" in text.replace("\n", " ")
    for name in case["fixef_names"]:
        assert name in text
    if case["results"]["isSingular"]:
        assert "boundary (singular) fit: a variance is estimated as 0 or a correlation as ±1; see help(multilevel.SingularFitWarning)" in text
    d = fit.to_dict()
    assert json.loads(json.dumps(d, allow_nan=False)) == d
    assert d["REML"] == case["REML"] and d["formula"] == case["formula"]
    assert [(b["group"], b["terms"], b["n_levels"], b["theta_names"]) for b in d["re_structure"]] == \
           [(b["group"], b["terms"], b["n_levels"], b["theta_names"]) for b in case["re_structure"]]
    assert math.isfinite(d["results"]["logLik"])


@pytest.mark.parametrize("case_id", CASES)
def test_fixed_contrasts(case_id):
    """The coding of every factor of the fixed part is lme4's (``fixed_contrasts``; files
    made before the field existed are treatment coded throughout)."""
    case, fit = _fit(case_id)
    got = fit.to_dict()["fixed_contrasts"] or {}
    ref = case.get("fixed_contrasts")
    if ref is None:
        assert all(c["type"] == "contr.treatment" for c in got.values()), got
        assert set(got) == set(case.get("factor_levels") or {}) - {case["formula"].split("~")[0].strip()}
        return
    assert set(got) == set(ref)
    for name, r in ref.items():
        g = got[name]
        assert g["type"] == r["type"], name
        if r["type"] != "contr.treatment":
            assert g["levels"] == r["levels"] and g["columns"] == r["columns"], name
            np.testing.assert_allclose(g["matrix"], r["matrix"], rtol=0, atol=1e-14)
    arg = case.get("contrasts_arg")
    assert fit.to_dict()["contrasts_arg"] == (arg or None)


def test_predict_accepts_polars_newdata():
    pl = pytest.importorskip("polars")
    case, fit = _fit("sleepstudy_slope_reml")
    nd = newdata_frame(case, load_case_frame(case))
    cols = {c: (nd[c].astype(str).tolist() if isinstance(nd[c].dtype, pd.CategoricalDtype) else nd[c].to_numpy())
            for c in nd.columns}
    got = fit.predict(pl.DataFrame(cols), allow_new_levels=True)
    assert np.allclose(got.to_numpy(), fit.predict(nd, allow_new_levels=True).to_numpy(), rtol=1e-12)
