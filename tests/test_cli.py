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


# --- start-up: arguments are parsed before anything heavy is imported -------------------------

import os  # noqa: E402
import pickle  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

HEAVY = ("numpy", "pandas", "scipy", "formulaic", "matplotlib", "multilevel._core")


def _python(code: str, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter on the multilevel these tests import."""
    env = {**os.environ, "PYTHONPATH": str(Path(multilevel.__file__).resolve().parents[1])}
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          env=env, input=stdin, timeout=300)


_LOADED_AFTER = """
import sys
{setup}
heavy = {heavy!r}
print("loaded:" + ",".join(m for m in heavy if m in sys.modules))
"""


def _heavy_after(setup: str) -> set[str]:
    out = _python(_LOADED_AFTER.format(setup=setup, heavy=HEAVY))
    assert out.returncode == 0, out.stderr
    last = out.stdout.strip().splitlines()[-1]
    assert last.startswith("loaded:"), out.stdout
    return set(filter(None, last.removeprefix("loaded:").split(",")))


def test_import_multilevel_loads_nothing_heavy():
    assert _heavy_after("import multilevel") == set()
    # the names the package's front defines eagerly: the error classes
    assert _heavy_after("from multilevel import MultilevelError, FormulaError") == set()


@pytest.mark.parametrize("argv", [["--help"], ["fit", "--help"], ["datasets"], ["fit", "y ~ x"],
                                  ["fit", "y ~ x", "--data", "d.csv", "--ddf", "nonsense"],
                                  ["fit", "y ~ (x | g", "--data", "sleepstudy"],
                                  ["anova", "y ~ x +", "y ~ x", "--data", "sleepstudy"],
                                  ["compare", "y ~ x", "y ~ (1 | g", "--data", "sleepstudy"]])
def test_cli_answers_help_listings_and_usage_errors_without_heavy_imports(argv):
    setup = ("import contextlib, io\nfrom multilevel.app.cli import main\n"
             "with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):\n"
             "    try:\n        main(%r)\n    except SystemExit:\n        pass" % (argv,))
    assert _heavy_after(setup) == set()


def test_every_public_name_resolves_in_a_fresh_interpreter():
    code = """
import multilevel as ml
names = list(ml.__all__)
missing = [n for n in names if n not in dir(ml)]
assert not missing, missing
ns = {}
for n in names:
    exec(f"from multilevel import {n}", ns)
    assert ns[n] is getattr(ml, n), n
assert ml.lmer.__module__ == "multilevel.models.lmer" and callable(ml.glmer)
assert issubclass(ml.LmerControl, object) and ml.datasets.load and ml.inference.anova is ml.anova
try:
    ml.no_such_name
except AttributeError as e:
    assert "no_such_name" in str(e)
else:
    raise AssertionError("no AttributeError")
print("ok", len(names))
"""
    out = _python(code)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["ok", str(len(multilevel.__all__))]


def test_unpickled_fit_has_its_methods_in_a_fresh_interpreter(tmp_path):
    """Fit methods that call upper layers (summary, confint) find them although nothing but
    pickle imported the package: the front registers them lazily."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = multilevel.lmer("Reaction ~ Days + (1 | Subject)", load("sleepstudy"))
    path = tmp_path / "fit.pkl"
    path.write_bytes(pickle.dumps(fit))
    code = ("import pickle, sys\nfit = pickle.load(open(sys.argv[1], 'rb'))\n"
            "print(fit.summary().coefficients.shape, fit.confint(method='wald').shape)")
    out = _python(code, str(path))
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["(2,", "3)", "(4,", "2)"]


# --- errors: one line on stderr, status 2 ---------------------------------------------------


def _one_line_error(capsys, argv, expect: str) -> str:
    try:
        code = main(argv)
    except SystemExit as e:  # argparse's usage errors
        code = e.code
    captured = capsys.readouterr()
    assert code == 2
    err = captured.err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    assert expect in err, err
    return err


@pytest.mark.parametrize("argv, expect", [
    (["fit", "Reaction ~ Days + (Days | Subject", "--data", "sleepstudy"], "missing ')'"),
    (["fit", "Reaction ~ Days +", "--data", "sleepstudy"], "error: "),
    (["fit", "y ~ x", "--data", "no/such/file.csv"], "no such file: 'no/such/file.csv'"),
    (["fit", "y ~ x", "--data", "missing.sav"], "no such file: 'missing.sav'"),
    (["fit", "y ~ x"], "the following arguments are required: --data"),
    (["fit", "y ~ x", "--data", "hsb", "--ddf", "bogus"], "invalid choice: 'bogus'"),
    (["fit", "y ~ x", "--data", "hsb", "--no-such-option"], "unrecognized arguments: --no-such-option"),
    (["nosuchcommand"], "invalid choice: 'nosuchcommand'"),
    (["fit", "Reaction ~ Days + (1 | Subject)", "--data", "sleepstudy", "--family", "poisson",
      "--ddf", "satterthwaite"], "--ddf is for linear mixed models"),
    (["fit", "Reaction ~ Days + (1 | Subject)", "--data", "sleepstudy", "--json", "--ddf",
      "satterthwaite"], "cannot be combined with --json"),
    (["anova", "Reaction ~ Days + (1 | Subject)", "--data", "sleepstudy"], "two or more formulas"),
    (["compare", "Reaction ~ Days + (1 | Subject)", "Reaction ~ (1 | Subject)", "--data",
      "sleepstudy", "--name", "a"], "--name given 1 times for 2 formula(s)"),
])
def test_input_and_usage_errors_are_one_line(capsys, argv, expect):
    _one_line_error(capsys, argv, expect)


def test_unreadable_files_are_one_line_errors(capsys, tmp_path):
    bad = tmp_path / "broken.parquet"
    bad.write_text("this is not parquet")
    _one_line_error(capsys, ["fit", "y ~ x + (1 | g)", "--data", str(bad)],
                    "as a Parquet file")
    odd = tmp_path / "data.xlsx"
    odd.write_text("x")
    _one_line_error(capsys, ["fit", "y ~ x + (1 | g)", "--data", str(odd)],
                    "cannot tell the format of")
    folder = tmp_path / "folder.csv"
    folder.mkdir()
    _one_line_error(capsys, ["fit", "y ~ x + (1 | g)", "--data", str(folder)], "is a directory")


def test_unknown_column_is_one_line_error_on_a_file(capsys, tmp_path):
    path = tmp_path / "sleep.tsv"
    load("sleepstudy").to_csv(path, sep="\t", index=False)
    _one_line_error(capsys, ["fit", "Reaction ~ Dayz + (1 | Subject)", "--data", str(path)],
                    "Dayz")


def test_closed_pipe_ends_quietly():
    """`multilevel datasets | head -1`: the reader closes the pipe; no traceback."""
    env = {**os.environ, "PYTHONPATH": str(Path(multilevel.__file__).resolve().parents[1])}
    proc = subprocess.Popen([sys.executable, "-m", "multilevel.app.cli", "datasets"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    proc.stdout.close()  # before the command writes: every write meets a closed pipe
    err = proc.stderr.read().decode()
    proc.wait(timeout=120)
    assert "Traceback" not in err and "BrokenPipeError" not in err, err
    assert err == "" and proc.returncode == 1


# --- fit --ddf, anova, compare, report --name ----------------------------------------------

SLEEP_M0 = "Reaction ~ Days + (1 | Subject)"
SLEEP_M1 = "Reaction ~ Days + (Days | Subject)"


@pytest.mark.parametrize("ddf, title", [("satterthwaite", "Satterthwaite's method"),
                                        ("kenward-roger", "Kenward-Roger's method")])
def test_fit_ddf_prints_df_and_p_columns(capsys, ddf, title):
    assert main(["fit", SLEEP_M1, "--data", "sleepstudy", "--ddf", ddf]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].startswith(f"Linear mixed model fit by REML. t-tests use {title}")
    header = next(line for line in out.splitlines() if line.lstrip().startswith("Estimate"))
    assert header.split() == ["Estimate", "Std.", "Error", "df", "t", "value", "Pr(>|t|)"]
    days = next(line for line in out.splitlines() if line.startswith("Days "))
    assert days.split()[:3] == ["Days", "10.467", "1.546"] and days.rstrip().endswith("***")


def test_anova_command_prints_lme4s_table_with_names(capsys):
    assert main(["anova", SLEEP_M0, SLEEP_M1, "--data", "sleepstudy",
                 "--name", "intercepts", "--name", "slopes"]) == 0
    out = capsys.readouterr().out
    assert "refitting model(s) with ML (instead of REML)" in out
    assert f"intercepts: {SLEEP_M0}" in out and f"slopes: {SLEEP_M1}" in out
    slopes = next(line for line in out.splitlines() if line.startswith("slopes "))
    assert "42.139" in slopes  # lme4: Chisq 42.139 on 2 df
    assert main(["anova", SLEEP_M0, SLEEP_M1, "--data", "sleepstudy", "--format", "html"]) == 0
    html = capsys.readouterr().out
    assert "<table" in html and "Chisq" in html and "m1" in html and "Signif. codes" in html


@pytest.mark.parametrize("fmt, check", [
    ("text", lambda s: s.splitlines()[1].split() == ["intercepts", "slopes"]),
    ("md", lambda s: s.splitlines()[0].replace(" ", "") == "||intercepts|slopes|"),
    ("latex", lambda s: "\\begin{tabular}" in s and "intercepts & slopes" in s),
    ("html", lambda s: s.lstrip().startswith("<table") and ">intercepts</th>" in s),
])
def test_compare_command_formats(capsys, fmt, check):
    assert main(["compare", SLEEP_M0, SLEEP_M1, "--data", "sleepstudy", "--name", "intercepts",
                 "--name", "slopes", "--format", fmt]) == 0
    out = capsys.readouterr().out
    assert check(out), out
    assert "251.405" in out  # the intercept of both models, as lme4 (REML)


def test_compare_command_passes_ddf(capsys, monkeypatch):
    seen = {}
    real = multilevel.compare

    def spy(*fits, **kw):
        seen.update(kw, n=len(fits))
        return real(*fits, **kw)

    monkeypatch.setattr(multilevel, "compare", spy)
    assert main(["compare", SLEEP_M0, "--data", "sleepstudy", "--ddf", "satterthwaite"]) == 0
    assert seen == {"names": None, "ddf": "satterthwaite", "n": 1}
    capsys.readouterr()


def test_report_names_are_passed_to_the_report(capsys, monkeypatch, tmp_path):
    from multilevel.app import html_report

    calls = []

    def build_report(formulas, data, **kw):
        calls.append((list(formulas), len(data), kw))
        return "<html></html>"

    monkeypatch.setattr(html_report, "build_report", build_report)
    out = tmp_path / "r.html"
    assert main(["report", SLEEP_M0, SLEEP_M1, "--data", "sleepstudy", "-o", str(out),
                 "--name", "intercepts", "--name", "slopes"]) == 0
    assert calls[0][:2] == ([SLEEP_M0, SLEEP_M1], 180)
    assert calls[0][2]["names"] == ["intercepts", "slopes"]
    assert out.read_text() == "<html></html>"
    assert main(["report", SLEEP_M0, "--data", "sleepstudy", "-o", str(out)]) == 0
    assert "names" not in calls[1][2]  # no --name: the report's own default names
    capsys.readouterr()
    _one_line_error(capsys, ["report", SLEEP_M0, SLEEP_M1, "--data", "sleepstudy", "-o", str(out),
                             "--name", "a", "--name", "a"], "must be different")


def test_report_name_needs_a_report_that_takes_names(capsys, monkeypatch, tmp_path):
    from multilevel.app import html_report

    def build_report(formulas, data, data_name=None, progress=None, *, reml=True, family=None,
                     title=None):
        raise AssertionError("not called")

    monkeypatch.setattr(html_report, "build_report", build_report)
    _one_line_error(capsys, ["report", SLEEP_M0, "--data", "sleepstudy", "-o",
                             str(tmp_path / "r.html"), "--name", "a"], "cannot name its models")


def test_bundled_name_wins_over_a_directory_of_that_name(fake_lmer, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sleepstudy").mkdir()
    assert main(["fit", SLEEP_M1, "--data", "sleepstudy"]) == 0
    assert fake_lmer[0]["n"] == 180
    capsys.readouterr()


def test_unexpected_exception_is_one_line_unless_traceback_asked(capsys, monkeypatch):
    def lmer(*a, **k):
        raise ValueError("boom\nsecond line")

    monkeypatch.setattr(multilevel, "lmer", lmer)
    monkeypatch.delenv("MULTILEVEL_TRACEBACK", raising=False)
    assert main(["fit", SLEEP_M1, "--data", "sleepstudy"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: internal error (ValueError: boom); please report it")
    assert err.count("\n") == 1 and "MULTILEVEL_TRACEBACK=1" in err
    monkeypatch.setenv("MULTILEVEL_TRACEBACK", "1")
    with pytest.raises(ValueError, match="boom"):
        main(["fit", SLEEP_M1, "--data", "sleepstudy"])


def test_interrupt_is_quiet(capsys, monkeypatch):
    def lmer(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(multilevel, "lmer", lmer)
    assert main(["fit", SLEEP_M1, "--data", "sleepstudy"]) == 130
    assert capsys.readouterr().err == "interrupted\n"
