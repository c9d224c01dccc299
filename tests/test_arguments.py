"""Keyword arguments of the fitting functions: R's spellings (``REML=``, ``nAGQ=``) and a
MultilevelError naming an unknown keyword, with the nearest argument."""
from __future__ import annotations

import warnings

import pytest

import multilevel as ml
from multilevel.datasets import load
from multilevel.errors import ArgumentError, MultilevelError

SLEEP = "Reaction ~ Days + (Days | Subject)"


def _quiet(fn, *a, **k):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*a, **k)


def test_reml_is_rs_spelling_of_reml():
    d = load("sleepstudy")
    by_r = ml.lmer(SLEEP, d, REML=False)
    ours = ml.lmer(SLEEP, d, reml=False)
    assert by_r.reml is False and by_r.loglik == ours.loglik
    assert ml.lmer(SLEEP, d, REML=True).reml is True
    with pytest.raises(ArgumentError, match="both REML= and reml="):
        ml.lmer(SLEEP, d, REML=False, reml=False)


def test_nagq_is_rs_spelling_of_nagq():
    cbpp = load("cbpp")
    f = "cbind(incidence, size - incidence) ~ period + (1 | herd)"
    a = _quiet(ml.glmer, f, cbpp, family="binomial", nAGQ=5)
    b = _quiet(ml.glmer, f, cbpp, family="binomial", nagq=5)
    assert a.loglik == b.loglik and a.nagq == 5


@pytest.mark.parametrize("fn, kw, message", [
    ("lmer", {"weight": "Days"}, "lmer() got an unexpected keyword argument 'weight'; did you mean 'weights'?"),
    ("lmer", {"Reml": False}, "'Reml'; did you mean 'reml'?"),
    ("lmer", {"contrast": {}}, "did you mean 'contrasts'?"),
    ("lmer", {"zzz": 1}, "lmer() got an unexpected keyword argument 'zzz'"),
    ("glmer", {"famly": "poisson"}, "glmer() got an unexpected keyword argument 'famly'; did you mean 'family'?"),
    ("glmer", {"nagq_": 2}, "did you mean 'nagq'?"),
    ("glmer_nb", {"init_thetta": 1.0}, "did you mean 'init_theta'?"),
    ("lm", {"clusters": "Subject"}, "lm() got an unexpected keyword argument 'clusters'; did you mean 'cluster'?"),
    ("lm", {"REML": False}, "lm() got an unexpected keyword argument 'REML'"),
])
def test_unknown_keyword_is_a_multilevel_error_naming_it(fn, kw, message):
    with pytest.raises(ArgumentError) as e:
        getattr(ml, fn)("Reaction ~ Days", load("sleepstudy"), **kw)
    assert message in str(e.value)
    assert isinstance(e.value, MultilevelError) and isinstance(e.value, TypeError)


def test_missing_and_repeated_arguments_are_multilevel_errors():
    with pytest.raises(ArgumentError, match="lmer\\(\\): missing a required argument: 'data'"):
        ml.lmer(SLEEP)
    with pytest.raises(ArgumentError, match="multiple values for argument 'reml'"):
        ml.lmer(SLEEP, load("sleepstudy"), True, reml=False)


def test_signatures_are_kept_for_help_and_editors():
    import inspect

    assert list(inspect.signature(ml.lmer).parameters)[:3] == ["formula", "data", "reml"]
    assert ml.lmer.__name__ == "lmer" and "REML=" in ml.lmer.__doc__
