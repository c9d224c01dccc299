"""The courses' workflows end to end: Barron's hsb lecture replayed on the bundled data.

``load("hsb")`` is mlmRev's Hsb82 (= nlme's MathAchieve with the school means: 7185 students
in 160 schools). The lecture's figures, as arm's ``display()`` prints them, come from these
REML fits (found by fitting the candidates; every number below is the lecture's):

1. ``mAch ~ 1 + (1 | school)``: ICC .18, school intercept variance 8.61, AIC 47122.8,
   deviance 47115.8;
2. ``mAch ~ cses + (1 + cses | school)``: AIC 46726.2, deviance 46711.0;
3. ``mAch ~ meanses * cses + sector * cses + (1 + cses | school)``: AIC 46523.7,
   deviance 46496.4;

and the intercept variance 8.61 -> 2.64 (".69 of the school variance explained") is
``mAch ~ meanses + (1 | school)``.
"""
from __future__ import annotations

import pytest

import multilevel as ml
from multilevel.datasets import load

MODELS = {
    "null": "mAch ~ 1 + (1 | school)",
    "cses": "mAch ~ cses + (1 + cses | school)",
    "full": "mAch ~ meanses * cses + sector * cses + (1 + cses | school)",
    "meanses": "mAch ~ meanses + (1 | school)",
}


@pytest.fixture(scope="module")
def lecture():
    hsb = load("hsb")
    fits = {k: ml.lmer(f, hsb) for k, f in MODELS.items()}
    for f in fits.values():
        f.data_name = "hsb"
    return hsb, fits


def _tail(text: str) -> list[str]:
    return text.splitlines()[-4:]


def test_the_data_are_the_lectures(lecture):
    hsb, fits = lecture
    assert len(hsb) == 7185 and fits["null"].ngroups == {"school": 160}


def test_icc_and_intercept_variance(lecture):
    _, fits = lecture
    assert round(float(ml.icc(fits["null"])["adjusted"]), 2) == 0.18
    tau = {k: float(fits[k].varcorr[0].cov[0, 0]) for k in ("null", "meanses")}
    assert (round(tau["null"], 2), round(tau["meanses"], 2)) == (8.61, 2.64)
    red = ml.variance_reduction(fits["null"], fits["meanses"])
    assert round(float(red.loc[("school", "(Intercept)"), "reduction"]), 2) == 0.69


#: R 4.2's print of each call (deparse breaks lines after 60 characters)
CALLS = {
    "null": ["lmer(formula = mAch ~ 1 + (1 | school), data = hsb)"],
    "cses": ["lmer(formula = mAch ~ cses + (1 + cses | school), data = hsb)"],
    "full": ["lmer(formula = mAch ~ meanses * cses + sector * cses + (1 + cses | ",
             "    school), data = hsb)"],
}


@pytest.mark.parametrize("name, aic, deviance", [("null", "47122.8", "47115.8"),
                                                 ("cses", "46726.2", "46711.0"),
                                                 ("full", "46523.7", "46496.4")])
def test_display_prints_the_lectures_fit_statistics(lecture, name, aic, deviance):
    _, fits = lecture
    out = ml.display(fits[name])
    assert out.splitlines()[:len(CALLS[name])] == CALLS[name]
    tail = _tail(out)
    assert tail[0] == "---" and tail[1] == "number of obs: 7185, groups: school, 160"
    assert tail[2].startswith(f"AIC = {aic}, DIC = ")
    assert tail[3] == f"deviance = {deviance} "


def test_the_models_compare_as_in_the_lecture(lecture):
    _, fits = lecture
    tab = ml.anova(fits["null"], fits["cses"], fits["full"], names=["null", "cses", "full"])
    assert list(tab.index) == ["null", "cses", "full"]
    # the deviances of the ML refits are display()'s
    assert [round(float(v), 1) for v in tab["deviance"]] == [47115.8, 46711.0, 46496.4]
    text = str(tab)
    assert "Models:" in text and "Signif. codes" in text
