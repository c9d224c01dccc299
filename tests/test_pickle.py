"""Results are plain data: every fit and result object survives pickle and deepcopy.

A fit keeps its engine problem (``fit._problem``) for inference; the problem drops its
compiled core when pickled and rebuilds it from stored arrays on first use, so profiles,
the bootstrap and Satterthwaite's df work on an unpickled fit and give the original's
numbers. Also: the three fit types are siblings over one base and share one ``predict``
signature.
"""
from __future__ import annotations

import copy
import inspect
import pickle
import warnings

import numpy as np
import pandas as pd
import pytest

import multilevel as ml
from multilevel.datasets import load
from multilevel.results import FitBase, GlmmFit, LmFit, LmmFit, MixedFit


def _quiet(fn, *args, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kw)


def roundtrip(obj):
    return pickle.loads(pickle.dumps(obj))


@pytest.fixture(scope="module")
def sleep():
    return load("sleepstudy")


@pytest.fixture(scope="module")
def fits(sleep):
    """One fit of each kind: sleepstudy LMM (REML, ML), cbpp binomial and grouseticks
    Poisson GLMMs, an lm."""
    return {
        "lmm_reml": _quiet(ml.lmer, "Reaction ~ Days + (Days | Subject)", sleep),
        "lmm_ml": _quiet(ml.lmer, "Reaction ~ Days + (Days | Subject)", sleep, reml=False),
        "glmm_binomial": _quiet(ml.glmer, "cbind(incidence, size - incidence) ~ period + (1 | herd)",
                                load("cbpp"), family="binomial"),
        "glmm_poisson": _quiet(ml.glmer, "TICKS ~ YEAR + (1 | BROOD)", load("grouseticks"), family="poisson"),
        "lm": ml.lm("Reaction ~ Days", sleep),
    }


FIT_KINDS = ["lmm_reml", "lmm_ml", "glmm_binomial", "glmm_poisson", "lm"]
MIXED_KINDS = ["lmm_reml", "lmm_ml", "glmm_binomial", "glmm_poisson"]


def _newdata(kind: str) -> pd.DataFrame:
    if kind.startswith("lmm") or kind == "lm":
        return pd.DataFrame({"Days": [0.0, 4.5, 9.0], "Subject": ["308", "335", "999"]})
    if kind == "glmm_binomial":
        return pd.DataFrame({"period": ["1", "3", "4"], "herd": ["1", "7", "99"],
                             "incidence": [0, 0, 0], "size": [1, 1, 1]})
    return pd.DataFrame({"YEAR": ["96", "97", "95"], "BROOD": ["501", "602", "9999"], "TICKS": [0, 0, 0]})


# --- pickle and deepcopy of the fits ------------------------------------------------------


@pytest.mark.parametrize("kind", FIT_KINDS)
def test_fit_pickles_with_equal_to_dict(fits, kind):
    fit = fits[kind]
    back = roundtrip(fit)
    assert type(back) is type(fit)
    assert back.to_dict() == fit.to_dict()
    assert back.warnings == fit.warnings


@pytest.mark.parametrize("kind", FIT_KINDS)
def test_fit_deepcopies_with_equal_to_dict(fits, kind):
    fit = fits[kind]
    dup = copy.deepcopy(fit)
    assert dup is not fit and dup.to_dict() == fit.to_dict()
    if kind != "lm":
        assert dup._problem is not fit._problem


def test_fresh_fit_pickles_before_any_accessor(sleep):
    """Nothing cached yet: the conditional variances come from the rebuilt problem."""
    fit = _quiet(ml.lmer, "Reaction ~ Days + (Days | Subject)", sleep)
    back = roundtrip(fit)
    assert "_condvar" not in back.__dict__
    ref = fit.ranef()
    got = back.ranef()
    for g in ref:
        pd.testing.assert_frame_equal(got.condsd[g], ref.condsd[g], check_exact=True)


@pytest.mark.parametrize("kind", FIT_KINDS)
def test_unpickled_fit_predicts_and_prints(fits, kind):
    fit = fits[kind]
    back = roundtrip(fit)
    nd = _newdata(kind)
    extra = {} if kind == "lm" else {"allow_new_levels": True}
    pd.testing.assert_series_equal(back.predict(nd, **extra), fit.predict(nd, **extra), check_exact=True)
    pd.testing.assert_series_equal(back.predict(), fit.predict(), check_exact=True)
    assert str(back.summary()) == str(fit.summary())
    assert str(back) == str(fit)


@pytest.mark.parametrize("kind", ["lmm_reml", "lmm_ml"])
def test_unpickled_lmm_profile_confint_is_identical(fits, kind):
    """The LMM engine is a pure function of theta: the rebuilt core gives the same bits."""
    fit = fits[kind]
    back = roundtrip(fit)
    pd.testing.assert_frame_equal(back.confint(), fit.confint(), check_exact=True)


@pytest.mark.parametrize("kind", ["glmm_binomial", "glmm_poisson"])
def test_unpickled_glmm_profile_confint(fits, kind):
    """PIRLS warm-starts from the previous modes, so the sequence of evaluations of a
    profile can differ in the last bits from the original's history; the limits agree to the
    root finder's tolerance (``_profile_end``: 1e-7 relative), below which they are not
    determined."""
    fit = fits[kind]
    want = fit.confint()
    got = roundtrip(fit).confint()
    assert list(got.index) == list(want.index)
    np.testing.assert_allclose(got.to_numpy(), want.to_numpy(), rtol=1e-7, atol=1e-12)


def test_unpickled_lmm_satterthwaite_and_bootstrap(fits):
    fit = fits["lmm_reml"]
    back = roundtrip(fit)
    s0, s1 = fit.summary(ddf="satterthwaite"), back.summary(ddf="satterthwaite")
    assert str(s1) == str(s0)
    pd.testing.assert_frame_equal(s1.coefficients, s0.coefficients, check_exact=True)
    pd.testing.assert_frame_equal(back.bootstrap(n=4, seed=11), fit.bootstrap(n=4, seed=11), check_exact=True)


def test_unpickled_fits_in_anova(fits, sleep):
    fit0 = _quiet(ml.lmer, "Reaction ~ Days + (1 | Subject)", sleep)
    fit1 = fits["lmm_reml"]
    want = _quiet(ml.anova, fit0, fit1)
    got = _quiet(ml.anova, roundtrip(fit0), roundtrip(fit1))
    pd.testing.assert_frame_equal(got, want, check_exact=True)


# --- the engine problem: a lazily rebuilt core ----------------------------------------------


def test_lmm_problem_rebuilds_its_core_bit_for_bit(fits):
    fit = fits["lmm_reml"]
    prob = roundtrip(fit._problem)
    assert prob._core is None  # not built until used
    theta = np.asarray(fit._theta)
    first = prob.objective(theta)
    assert prob._core is not None
    assert first == fit._problem.objective(theta)
    assert first == fit.reml_criterion
    sol0, sol1 = fit._problem.solution(theta), prob.solution(theta)
    assert np.array_equal(sol0["beta"], sol1["beta"]) and sol0["sigma"] == sol1["sigma"]


def test_lmm_problem_keeps_a_new_response_through_pickling(fits):
    """``set_y`` replaces the response: a rebuilt core must see the replaced one."""
    from multilevel.inference._common import copy_problem

    fit = fits["lmm_ml"]
    prob = copy_problem(fit._problem)
    y = np.asarray(fit.frame.y) + np.linspace(0.0, 5.0, fit.nobs)
    prob.set_y(y)
    theta = np.asarray(fit._theta)
    assert roundtrip(prob).objective(theta) == prob.objective(theta)
    assert roundtrip(prob).objective(theta) != fit._problem.objective(theta)


@pytest.mark.parametrize("kind", ["glmm_binomial", "glmm_poisson"])
def test_glmm_problem_rebuilds_its_core_bit_for_bit(fits, kind):
    """The first evaluation after a rebuild equals the original problem's (PIRLS restarts
    from the stored modes, as the original would)."""
    fit = fits[kind]
    x = np.concatenate([fit._theta, fit._beta])
    dup = copy.deepcopy(fit._problem)  # at the state the fit left it in
    back = roundtrip(fit._problem)
    assert back._core is None and back.family == fit._problem.family
    assert back.devfun(x) == dup.devfun(x)
    assert back.devfun(x) == pytest.approx(-2.0 * fit.loglik, rel=1e-12)
    assert np.array_equal(back.vcov_rx(fit._theta), dup.vcov_rx(fit._theta))
    np.testing.assert_allclose(back.vcov_rx(fit._theta), fit._vcov_rx, rtol=1e-9)


def test_glmm_rebuilt_core_keeps_pirls_settings(fits):
    from multilevel.engine.glmm import GlmmProblem

    fit = fits["glmm_binomial"]
    p0 = fit._problem
    prob = GlmmProblem(p0.input, p0.family, p0.nagq, pirls_tol=1e-6, pirls_maxit=3)
    x = np.concatenate([fit._theta, fit._beta])
    want = GlmmProblem(p0.input, p0.family, p0.nagq, pirls_tol=1e-6, pirls_maxit=3).devfun(x)
    back = roundtrip(prob)
    assert (back.pirls_tol, back.pirls_maxit) == (1e-6, 3)
    assert back.devfun(x) == want


# --- summaries, tables, pooling ---------------------------------------------------------------


@pytest.mark.parametrize("kind", FIT_KINDS)
def test_summaries_pickle(fits, kind):
    s = fits[kind].summary()
    for back in (roundtrip(s), copy.deepcopy(s)):
        assert str(back) == str(s)
        pd.testing.assert_frame_equal(back.coefficients, s.coefficients, check_exact=True)


def test_satterthwaite_summary_pickles(fits):
    s = fits["lmm_reml"].summary(ddf="satterthwaite")
    back = roundtrip(s)
    assert str(back) == str(s)
    pd.testing.assert_frame_equal(back.coefficients, s.coefficients, check_exact=True)


@pytest.mark.parametrize("fn", ["pooling", "two_stage"])
def test_pooling_results_pickle(sleep, fn):
    res = _quiet(getattr(ml, fn), "Reaction ~ Days + (Days | Subject)", sleep)
    for back in (roundtrip(res), copy.deepcopy(res)):
        assert back.to_dict() == res.to_dict()
        assert str(back) == str(res)


def test_compare_table_and_anova_pickle(fits, sleep):
    fit0 = _quiet(ml.lmer, "Reaction ~ Days + (1 | Subject)", sleep, reml=False)
    table = ml.compare(fit0, fits["lmm_ml"], fits["lm"])
    for back in (roundtrip(table), copy.deepcopy(table)):
        assert back.to_text() == table.to_text() and back == table
    a = _quiet(ml.anova, fit0, fits["lmm_ml"])
    pd.testing.assert_frame_equal(roundtrip(a), a, check_exact=True)
    pd.testing.assert_frame_equal(copy.deepcopy(a), a, check_exact=True)


def test_no_closures_on_results(fits):
    """A fit holds data only: no functions in its attributes (they do not pickle)."""
    for kind in FIT_KINDS:
        for name, value in vars(fits[kind]).items():
            assert not inspect.isfunction(value) and not inspect.ismethod(value), (kind, name)


# --- siblings over one base, one predict signature ------------------------------------------


def test_fit_types_are_siblings(fits):
    assert all(isinstance(fits[k], FitBase) for k in FIT_KINDS)
    assert isinstance(fits["glmm_binomial"], MixedFit) and isinstance(fits["lmm_reml"], MixedFit)
    assert not isinstance(fits["glmm_binomial"], LmmFit)
    assert not issubclass(GlmmFit, LmmFit) and not issubclass(LmmFit, GlmmFit)
    assert not isinstance(fits["lm"], MixedFit)


def test_inference_tells_fit_types_apart(fits):
    from multilevel.inference._common import is_glmm, is_lmm

    assert [is_lmm(fits[k]) for k in FIT_KINDS] == [True, True, False, False, False]
    assert [is_glmm(fits[k]) for k in FIT_KINDS] == [False, False, True, True, False]
    assert is_lmm(roundtrip(fits["lmm_reml"])) and is_glmm(roundtrip(fits["glmm_poisson"]))


def test_one_predict_signature():
    sigs = [inspect.signature(cls.predict) for cls in (LmmFit, GlmmFit, LmFit)]
    params = [[(p.name, p.kind) for p in s.parameters.values()] for s in sigs]
    assert params[0] == params[1] == params[2]
    names = [n for n, _ in params[0]]
    assert names == ["self", "newdata", "re_form", "allow_new_levels", "type", "interval", "level"]
    assert all(k == inspect.Parameter.KEYWORD_ONLY for n, k in params[0][2:])


@pytest.mark.parametrize("kind", FIT_KINDS)
def test_predict_rejects_positional_re_form_and_accepts_the_keywords(fits, kind):
    fit = fits[kind]
    nd = _newdata(kind)
    with pytest.raises(TypeError):
        fit.predict(nd, "~0")
    got = fit.predict(nd, re_form="~0", allow_new_levels=True, type="link", interval=None, level=0.95)
    assert len(got) == len(nd)
    with pytest.raises(ml.MultilevelError, match="type"):
        fit.predict(nd, type="probability")


def test_lmm_and_lm_types_are_the_same_scale(fits):
    nd = _newdata("lmm_reml")
    for kind in ("lmm_reml", "lm"):
        fit = fits[kind]
        pd.testing.assert_series_equal(fit.predict(nd, type="response", allow_new_levels=True),
                                       fit.predict(nd, type="link", allow_new_levels=True))


def test_interval_only_for_lmm(fits):
    nd = _newdata("lmm_reml")
    got = fits["lmm_reml"].predict(nd, interval="confidence", allow_new_levels=True)
    assert list(got.columns)[:1] == ["fit"]
    with pytest.raises(ml.MultilevelError, match="interval"):
        fits["lm"].predict(nd, interval="confidence")
    with pytest.raises(ml.MultilevelError, match="interval"):
        fits["glmm_binomial"].predict(_newdata("glmm_binomial"), interval="confidence", allow_new_levels=True)
    with pytest.raises(ml.MultilevelError, match="re_form"):
        fits["lm"].predict(nd, re_form="~(1 | Subject)")


# --- results import nothing above results, except through results/methods.py -------------------


def _imports(path) -> set[str]:
    import ast

    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return out


def _above(mods: set[str], layers: tuple[str, ...]) -> set[str]:
    return {m for m in mods if any(m == f"multilevel.{x}" or m.startswith(f"multilevel.{x}.") for x in layers)}


def test_results_reach_up_only_through_methods():
    from pathlib import Path

    import multilevel.results as res

    above = ("models", "inference", "toolkit", "report", "app")
    root = Path(res.__file__).parent
    for path in sorted(root.glob("*.py")):
        got = _above(_imports(path), above)
        # methods.py too: its methods find their functions in the table the package's
        # front fills (results.methods.provide), not through imports
        assert not got, (path.name, got)


def test_toolkit_does_not_import_report():
    from pathlib import Path

    import multilevel.toolkit as tk

    for path in sorted(Path(tk.__file__).parent.glob("*.py")):
        assert not _above(_imports(path), ("report", "app")), path.name


@pytest.mark.parametrize("name, link", [("binomial", None), ("binomial", "probit"),
                                        ("binomial", "cloglog"), ("poisson", None),
                                        ("poisson", "sqrt")])
def test_families_pickle_to_the_registered_objects(name, link):
    from multilevel.families import get_family

    fam = get_family(name, link)
    back = pickle.loads(pickle.dumps(fam))
    assert back == fam and back.link is fam.link
    assert copy.deepcopy(fam).link is fam.link
