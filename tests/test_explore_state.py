"""The explorer's state (multilevel.app.explore.state): the numbers equal lmer()'s, and bad
input is an error record, never an exception."""
from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest

import multilevel as ml
from multilevel.app.explore.state import code_snippets, model_state
from multilevel.datasets.simulate import simulate_two_level


def _fit(formula, data, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ml.lmer(formula, data, **kw)


@pytest.mark.parametrize("reml", [True, False])
def test_numbers_equal_lmer(reml):
    d = ml.datasets.load("sleepstudy")
    f = "Reaction ~ Days + (Days | Subject)"
    s = model_state(d, f, reml=reml)
    fit = _fit(f, d, reml=reml)
    assert s["ok"]
    assert s["fit"]["loglik"] == pytest.approx(fit.loglik, rel=1e-12)
    for k, v in fit.fixef.items():
        assert s["fit"]["fixef"][k] == pytest.approx(v, rel=1e-12)
        assert s["fit"]["se"][k] == pytest.approx(fit.se[k], rel=1e-12)
    np.testing.assert_allclose(s["fit"]["varcorr"][0]["sd"], fit.varcorr[0].sd.to_numpy())
    assert s["summary"] == str(fit.summary())
    assert s["icc"]["adjusted"] == pytest.approx(float(ml.icc(fit)["adjusted"]))
    # the plots' coordinates are rounded to payload.DIGITS (6) significant digits: at most
    # 5e-6 relative (the full-precision payloads equal plotdata's, test_explore_payload.py)
    cat = s["caterpillar"]["frames"]["intervals"]
    modes = fit.ranef()["Subject"]
    got = dict(zip([(t, g) for t, g in zip(cat["term"], cat["grp"])], cat["condval"]))
    for g in modes.index:
        assert got[("Days", str(g))] == pytest.approx(modes.loc[g, "Days"], rel=5e-6)
    # shrinkage: partial pooling is coef() of the REML fit (ml.pooling is REML only; an ML
    # model says so in the notes)
    sh = s["shrinkage"]["Days"]["frames"]["groups"]
    np.testing.assert_allclose(sh["partial_pooling"], _fit(f, d).coef()["Subject"]["Days"].to_numpy(),
                               rtol=5e-6)
    assert reml or any("REML" in n for n in s["notes"])
    json.dumps(s, allow_nan=False)  # strict JSON: no NaN reaches the page


def test_pooling_view_groups_and_simulated_data():
    d = simulate_two_level(n_groups=20, group_size=20, tau1=0.3, seed=2)
    s = model_state(d, "y ~ x + (x | group)", groups=5)
    assert s["ok"] and s["pooling"]["meta"]["levels"] and len(s["pooling"]["meta"]["levels"]) == 5
    kinds = set(s["pooling"]["frames"]["lines"]["pooling"])
    assert kinds == {"complete", "none", "partial"}


def test_bad_formula_is_an_error_with_the_caret_position():
    d = ml.datasets.load("sleepstudy")
    s = model_state(d, "Reaction ~ Days + (Days | Subject")
    assert s["ok"] is False and s["kind"] == "FormulaError"
    assert isinstance(s["position"], int) and "^" in s["error"]
    json.dumps(s, allow_nan=False)


def test_missing_column_and_unfittable_models_are_errors():
    d = ml.datasets.load("sleepstudy")
    s = model_state(d, "Reaction ~ Nights + (1 | Subject)")
    assert s["ok"] is False and "Nights" in s["error"]
    one = pd.DataFrame({"y": [1.0, 2.0, 3.0, 4.0], "x": [0.0, 1.0, 2.0, 3.0],
                        "g": ["a", "b", "c", "d"]})
    s = model_state(one, "y ~ x + (x | g)")  # more random effects than observations
    assert s["ok"] is False and s["error"]


def test_singular_fit_is_shown_as_such():
    s = model_state(ml.datasets.load("dyestuff2"), "Yield ~ 1 + (1 | Batch)")
    assert s["ok"] and s["fit"]["singular"] is True
    assert any("singular" in w for w in s["fit"]["warnings"])


def test_crossed_model_has_no_pooling_view_but_a_note():
    s = model_state(ml.datasets.load("penicillin"), "diameter ~ 1 + (1 | plate) + (1 | sample)")
    assert s["ok"] and s["pooling"] is None and s["notes"]


def test_data_frame_not_modified_and_code():
    d = ml.datasets.load("hsb")
    before = d.copy()
    s = model_state(d, "mAch ~ cses + (cses | school)", data_name="hsb")
    pd.testing.assert_frame_equal(d, before)
    assert s["ok"] and s["pooling"] is not None  # hsb's ordered school with 160 levels
    assert "ml.lmer('mAch ~ cses + (cses | school)', hsb)" in s["code"]["python"]
    assert code_snippets("y ~ (1|g)", "d")["r"].startswith("library(lme4)\nfit <- lmer(y ~ (1|g), data = d)")


def test_a_factor_slope_is_drawn_on_its_indicator_not_refused():
    # (1 + sector | school): sector is text; the pooling lines run over its 0/1 column
    from multilevel.app.explore.state import model_state

    s = model_state(ml.datasets.load("hsb"), "mAch ~ sector + (1 + sector | school)")
    assert s["ok"] and s["pooling"] is not None
    xs = s["pooling"]["frames"]["points"]["x"]
    assert set(xs) <= {0.0, 1.0}


def test_the_state_cache_refits_only_for_a_new_model():
    from multilevel.app.explore import state as st

    d = ml.datasets.load("sleepstudy")
    f = "Reaction ~ Days + (Days | Subject)"
    cache = st.StateCache(maxsize=2)
    calls = []
    real = st._fitted_state

    def counted(*a, **k):
        calls.append(a[1])
        return real(*a, **k)

    st._fitted_state = counted
    try:
        a = st.model_state(d, f, groups=3, cache=cache)
        b = st.model_state(d, f, groups=["308", "309"], cache=cache)  # other groups: no refit
        assert len(calls) == 1 and b["pooling"]["meta"]["levels"] == ["308", "309"]
        assert len(a["pooling"]["meta"]["levels"]) == 3  # the first answer is not changed
        # the same answer as without a cache (which fits: call 2)
        assert b["fit"] == a["fit"] and b == st.model_state(d, f, groups=["308", "309"])
        st.model_state(d.copy(), f, cache=cache)  # other data (an equal copy): a refit
        st.model_state(d, f, reml=False, cache=cache)  # ML: a refit
        assert len(calls) == 4
    finally:
        st._fitted_state = real
