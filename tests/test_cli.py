"""The ``multilevel`` command line (``multilevel.app.cli.main``)."""
from __future__ import annotations

import json

import pytest

import multilevel
from _lmm_oracle import oracle_fit, sleepstudy_frame
from conftest import load_case
from multilevel.app.cli import main
from multilevel.datasets import load
from multilevel.errors import ColumnNotFoundError

HSB_FORMULA = "mAch ~ meanses + cses + (1 + cses | school)"


# --- plumbing, with the engine replaced by a hand-built fit ------------------------------------


@pytest.fixture
def fake_lmer(monkeypatch):
    """Replace multilevel.lmer by a function returning the sleepstudy fit at lme4's theta."""
    calls = []

    def lmer(formula, data, reml=True, weights=None):
        calls.append({"formula": formula, "n": len(data), "reml": reml, "weights": weights})
        if "nosuchcolumn" in formula:
            raise ColumnNotFoundError("column 'nosuchcolumn' not found in the data")
        case = load_case("sleepstudy_slope_reml" if reml else "sleepstudy_slope_ml")
        return oracle_fit(sleepstudy_frame(load("sleepstudy")), list(case["results"]["theta"].values()), reml)

    monkeypatch.setattr(multilevel, "lmer", lmer, raising=False)
    return calls


def test_fit_prints_summary(fake_lmer, capsys):
    assert main(["fit", "Reaction ~ Days + (Days | Subject)", "--data", "sleepstudy"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Linear mixed model fit by REML ['lmerMod']")
    assert "   Data: sleepstudy" in out
    assert fake_lmer == [{"formula": "Reaction ~ Days + (Days | Subject)", "n": 180, "reml": True, "weights": None}]


def test_fit_ml_json_and_csv_path(fake_lmer, capsys, tmp_path):
    path = tmp_path / "sleep.csv"
    load("sleepstudy").to_csv(path, index=False)
    assert main(["fit", "Reaction ~ Days + (Days | Subject)", "--data", str(path), "--ml", "--json",
                 "--weights", "Days"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["REML"] is False and d["results"]["nobs"] == 180
    assert fake_lmer[0]["reml"] is False and fake_lmer[0]["weights"] == "Days"


def test_input_errors_exit_2_with_one_line(fake_lmer, capsys):
    assert main(["fit", "Reaction ~ nosuchcolumn + (1 | Subject)", "--data", "sleepstudy"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert main(["fit", "y ~ x", "--data", "no_such_dataset"]) == 2
    assert capsys.readouterr().err.startswith("error: 'no_such_dataset' is neither a file")


def test_usage_errors(capsys):
    with pytest.raises(SystemExit) as e:
        main(["fit", "y ~ x"])  # --data is required
    assert e.value.code == 2
    with pytest.raises(SystemExit):
        main([])


def test_datasets_command(capsys):
    assert main(["datasets"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:3] == ["name", "rows", "cols"]
    hsb = next(line for line in out if line.startswith("hsb "))
    assert hsb.split()[1:3] == ["7185", "8"]
    assert any(line.startswith("sleepstudy ") for line in out)


# --- with the real engine ----------------------------------------------------------------


def test_fit_bundled_hsb(capsys):
    assert main(["fit", HSB_FORMULA, "--data", "hsb"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Linear mixed model fit by REML ['lmerMod']")
    assert "Number of obs: 7185, groups:  school, 160" in out
    assert "   Data: hsb" in out


def test_fit_hsb_json(capsys):
    assert main(["fit", HSB_FORMULA, "--data", "hsb", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["fixef_names"] == ["(Intercept)", "meanses", "cses"]
    assert d["results"]["ngrps"] == {"school": 160} and d["results"]["nobs"] == 7185


def test_fit_bad_column_real_engine(capsys):
    assert main(["fit", "mAch ~ nosuchcolumn + (1 | school)", "--data", "hsb"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err


def test_fit_glmm_from_the_command_line(capsys):
    code = main(["fit", "cbind(incidence, size - incidence) ~ period + (1 | herd)", "--data", "cbpp",
                 "--family", "binomial"])
    out = capsys.readouterr().out
    assert code == 0
    assert "Generalized linear mixed model fit by maximum likelihood" in out
    assert "Family: binomial  ( logit )" in out
    code = main(["fit", "cbind(incidence, size - incidence) ~ period + (1 | herd)", "--data", "cbpp",
                 "--family", "binomial", "--nagq", "25", "--json"])
    d = json.loads(capsys.readouterr().out)
    # lme4 leaves the saturated term out of logLik for nAGQ > 1 (reference: -50.005015)
    assert code == 0 and d["results"]["logLik"] == pytest.approx(-50.005015, abs=1e-5)


def test_glmm_options_need_a_family(capsys):
    code = main(["fit", "Reaction ~ Days + (1 | Subject)", "--data", "sleepstudy", "--nagq", "5"])
    assert code == 2
    assert capsys.readouterr().err.startswith("error: --link and --nagq need --family")


def test_fit_with_contrasts(capsys):
    case = load_case("hsb_sector_sum_reml")
    assert main(["fit", case["formula"], "--data", "hsb", "--json", "--contrasts", "sector=sum"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["fixef_names"] == case["fixef_names"] == ["(Intercept)", "sector1", "cses"]
    assert d["results"]["logLik"] == pytest.approx(case["results"]["logLik"], rel=1e-8)
    assert d["fixed_contrasts"] == case["fixed_contrasts"]
    assert d["contrasts_arg"] == {"sector": "contr.sum"}
    # R's spelling, several factors in one flag or in repeated flags
    assert main(["fit", "mAch ~ sector + sx + cses + (1 | school)", "--data", "hsb", "--json",
                 "--contrasts", "sector=contr.sum,sx=helmert"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["contrasts"] == {"sector": "sum", "sx": "helmert"}
    assert "sx1" in d["fixef_names"]


@pytest.mark.parametrize("arg, msg", [("sector", "expected FACTOR=TYPE"),
                                      ("sector=wrong", "unknown contrast 'wrong' for factor 'sector'"),
                                      ("nosuch=sum", "'nosuch' is not a variable of the fixed part")])
def test_bad_contrasts_flag(capsys, arg, msg):
    assert main(["fit", "mAch ~ sector + (1 | school)", "--data", "hsb", "--contrasts", arg]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and msg in err and err.count("\n") == 1


def test_fit_gamma_and_negative_binomial_families(capsys):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["fit", "cog ~ age + trt + (1 | id)", "--data", "early", "--family", "gamma",
                     "--link", "log", "--json"]) == 0
        d = json.loads(capsys.readouterr().out)
        assert d["family"] == "Gamma" and abs(d["results"]["logLik"] + 1146.5634) < 1e-3
        assert d["results"]["family_extras"]["shape"] > 100
        assert main(["fit", "TICKS ~ YEAR + (1 | BROOD)", "--data", "grouseticks", "--family",
                     "negative.binomial", "--nb-theta", "2.5"]) == 0
    assert " Family: Negative Binomial(2.5)  ( log )" in capsys.readouterr().out
