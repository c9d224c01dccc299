"""The HTML report (``multilevel.app.html_report``) and ``multilevel report``: sections,
self-containment (no external resource of any kind), embedded images, notes for missing
tools, progress reporting. The browser checks are in ``test_report_browser.py``."""
from __future__ import annotations

import base64
import io
import re
import warnings

import pytest

pytest.importorskip("matplotlib")

import multilevel as ml  # noqa: E402
from multilevel.app.cli import main  # noqa: E402
from multilevel.datasets import load  # noqa: E402
from multilevel.app import html_report  # noqa: E402
from multilevel.app.html_report import build_report  # noqa: E402

SLEEP = ["Reaction ~ Days + (1 | Subject)", "Reaction ~ Days + (Days | Subject)"]


@pytest.fixture(scope="module")
def report() -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return build_report(SLEEP, load("sleepstudy"), data_name="sleepstudy", progress=False)


def images(html: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)]


def test_sections_and_models(report):
    assert report.startswith("<!DOCTYPE html>") and report.rstrip().endswith("</html>")
    ids = re.findall(r'<h2 id="([^"]+)"', report)
    assert ids == ["data", "pooling", "model-1", "model-2", "comparison"]
    assert "<title>Multilevel models of sleepstudy</title>" in report
    # each model's summary, in lme4's layout
    assert report.count("Linear mixed model fit by REML") == 2
    assert "Reaction ~ Days + (Days | Subject)" in report


def test_self_contained(report):
    # nothing to fetch: no scripts, stylesheets, fonts, frames; every src/href is data: or #anchor
    assert "<script" not in report and "<iframe" not in report and "@import" not in report
    assert "url(" not in report and "@font-face" not in report
    refs = re.findall(r'\b(?:src|href)="([^"]*)"', report)
    assert refs and all(r.startswith(("data:", "#")) for r in refs), [r[:40] for r in refs if not r.startswith(("data:", "#"))]
    assert not re.search(r"https?://", report)


def test_images_are_pngs(report):
    from PIL import Image

    pngs = images(report)
    # per model: caterpillar, fitted lines, effects, diagnostics, profile; + coefficient plot
    assert len(pngs) >= 11
    for data in pngs:
        im = Image.open(io.BytesIO(data))
        assert im.format == "PNG" and im.width > 200 and im.height > 150
    alts = re.findall(r'<img [^>]*alt="([^"]*)"', report)
    assert len(alts) == len(pngs) and all(alts)


def test_comparison_section(report):
    comp = report[report.index('<h2 id="comparison">'):]
    assert "Model 1" in comp and "Model 2" in comp
    assert "Likelihood-ratio tests" in comp
    if html_report._tool("anova") is not None:
        assert "Chisq" in comp or 'class="note"' in comp or 'class="error"' in comp


def test_missing_tools_and_failures_give_visible_notes(monkeypatch):
    from multilevel.report import plots  # the module the report draws with

    def boom(*a, **k):
        raise RuntimeError("kaput")

    monkeypatch.setattr(html_report, "_tool", lambda name: None)
    monkeypatch.setattr(plots, "plot_diagnostics", boom)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        html = build_report(SLEEP, load("sleepstudy"), progress=False)
    notes = re.findall(r'<p class="note">([^<]*)</p>', html)
    assert any("describe" in n for n in notes)
    assert any("pooling" in n.lower() for n in notes)
    assert any("compare" in n for n in notes) and any("anova" in n for n in notes)
    assert html.count('<p class="error">diagnostics: RuntimeError: kaput</p>') == 2
    assert '<h2 id="comparison">' in html and images(html)  # the rest is still there


def test_one_model_no_comparison_and_progress_callback():
    calls = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        html = build_report("strength ~ 1 + (1 | batch/cask)", load("pastes"),
                            progress=lambda i, n, msg: calls.append((i, n, msg)))
    assert re.findall(r'<h2 id="([^"]+)"', html) == ["data", "pooling", "model-1"]
    assert "needs a model with one grouping factor" in html
    assert calls and calls[0][2].startswith("fitting model 1")
    assert [c[0] for c in calls] == list(range(1, len(calls) + 1)) and all(i <= n for i, n, _ in calls)
    # the page is laid out ("writing HTML"), then its figures are drawn together
    assert [c[2] for c in calls[-2:]] == ["writing HTML", "drawing 4 figures"]


def test_progress_on_terminals_only(monkeypatch):
    class Stream(io.StringIO):
        tty = False

        def isatty(self):
            return self.tty

    quiet = Stream()
    monkeypatch.setattr("sys.stderr", quiet)
    prog = html_report._Progress(None, 3)
    prog.step("fitting")
    prog.done()
    assert quiet.getvalue() == ""  # not a terminal: silent
    tty = Stream()
    tty.tty = True
    monkeypatch.setattr("sys.stderr", tty)
    prog = html_report._Progress(None, 3)
    prog.step("fitting model 1")
    prog.step("plots")
    prog.done()
    out = tty.getvalue()
    assert "multilevel report [1/3] fitting model 1" in out and "[2/3] plots" in out
    assert out.count("\r") == 3 and out.endswith("\n") and "done in" in out
    forced = Stream()
    monkeypatch.setattr("sys.stderr", forced)
    html_report._Progress(True, 1).step("x")
    assert "[1/1] x" in forced.getvalue()


def test_glmm_report():
    if getattr(ml, "glmer", None) is None:
        pytest.fail("multilevel.glmer is missing")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        html = build_report("cbind(incidence, size - incidence) ~ period + (1 | herd)", load("cbpp"),
                            family="binomial", progress=False)
    assert "Generalized linear mixed model" in html and "binomial" in html
    assert 'class="error"' not in html
    assert "pooling comparison is made for linear mixed models" in html
    assert len(images(html)) >= 3


def test_cli_report(tmp_path, capsys):
    csv = tmp_path / "sleep.csv"
    load("sleepstudy").to_csv(csv, index=False)
    out = tmp_path / "r.html"
    assert main(["report", *SLEEP, "--data", str(csv), "--ml", "-o", str(out), "--title", "My title"]) == 0
    html = out.read_text(encoding="utf-8")
    assert re.findall(r'<h2 id="([^"]+)"', html)[-1] == "comparison"
    assert "Data: sleep.csv" in html and "<title>My title</title>" in html
    assert html.count("Linear mixed model fit by maximum likelihood") == 2
    assert capsys.readouterr().out.startswith(f"wrote {out}")


def test_cli_report_errors(tmp_path, capsys):
    assert main(["report", "Reaction ~ nope + (1 | Subject)", "--data", "sleepstudy",
                 "-o", str(tmp_path / "x.html")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
    assert main(["report", SLEEP[0], "--data", "sleepstudy", "-o", str(tmp_path / "no" / "x.html")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "x.html").exists()


def test_models_are_named_in_headings_contents_and_comparison():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        html = build_report(SLEEP, load("sleepstudy"), names=["intercepts", "slopes"], progress=False)
    heads = re.findall(r'<h2 id="model-\d">([^<]*)</h2>', html)
    assert heads == [f"intercepts: {SLEEP[0]}", f"slopes: {SLEEP[1]}"]
    toc = html[html.index('<nav class="toc">'):html.index("</nav>")]
    assert "intercepts: " in toc and "slopes: " in toc and "Model 1" not in toc
    comp = html[html.index('<h2 id="comparison">'):]
    assert "<b>intercepts</b>" in comp and "<b>slopes</b>" in comp and "Model 1" not in comp
    # a dict {name: formula} names them too
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        html = build_report({"random intercepts": SLEEP[0]}, load("sleepstudy"), progress=False)
    assert re.findall(r'<h2 id="model-1">([^<]*)</h2>', html) == [f"random intercepts: {SLEEP[0]}"]


def test_model_names_are_checked():
    assert html_report.model_names(SLEEP, None) == ["Model 1", "Model 2"]
    for bad, msg in ((["a"], "1 name"), (["a", "a"], "more than one"), (["a", " "], "empty")):
        with pytest.raises(ml.errors.DataError, match=msg):
            build_report(SLEEP, load("sleepstudy"), names=bad, progress=False)
    with pytest.raises(ml.errors.DataError, match="at least one formula"):
        build_report([], load("sleepstudy"), progress=False)


def test_binomial_report_shows_the_latent_scale_icc_of_icc():
    c = load("Contraception")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        html = build_report("use ~ age + urban + (1 | district)", c, family="binomial", progress=False)
        null = ml.glmer("use ~ 1 + (1 | district)", c, family="binomial")
    value = float(ml.icc(null)["adjusted"])
    (line,) = re.findall(r"ICC of use by district: ([0-9.]+)([^<]*)<", html)
    assert float(line[0]) == pytest.approx(value, abs=5e-4) and "latent scale" in line[1]
    assert 'class="error"' not in html


def test_report_figures_are_drawn_once_with_a_frozen_layout():
    from multilevel.report.plots import figure_png, plot_caterpillar

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = ml.lmer(SLEEP[1], load("sleepstudy"))
    fig = plot_caterpillar(fit)
    draws = []
    fig.canvas.mpl_connect("draw_event", lambda ev: draws.append(ev))
    data = figure_png(fig, dpi=50)
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(draws) == 1
    assert fig.get_layout_engine() is None  # the layout is frozen


def _without_timestamp(html: str) -> str:
    return re.sub(r"· \d{4}-\d\d-\d\d \d\d:\d\d", "", html)


def test_figures_drawn_in_two_processes_equal_drawn_in_one(monkeypatch):
    from multilevel.app import figures

    sleep = load("sleepstudy")
    forms = ["Reaction ~ Days + (1 | Subject)", "Reaction ~ Days + (Days | Subject)"]
    monkeypatch.setenv("MULTILEVEL_REPORT_PROCESSES", "1")
    serial = build_report(forms, sleep, data_name="sleepstudy")
    monkeypatch.delenv("MULTILEVEL_REPORT_PROCESSES")
    if not figures.spare_core():
        pytest.fail("this test needs Linux and two cores (CI has both)")
    forks = []
    real_fork = figures.os.fork
    monkeypatch.setattr(figures.os, "fork", lambda: forks.append(1) or real_fork())
    parallel = build_report(forms, sleep, data_name="sleepstudy")
    assert forks == [1]
    assert "\x00" not in parallel  # every placeholder filled
    assert _without_timestamp(parallel) == _without_timestamp(serial)
    # a child that fails leaves its figures to the parent: the same page again
    monkeypatch.setattr(figures.pickle, "dumps", lambda *a, **k: 1 / 0)
    assert _without_timestamp(build_report(forms, sleep, data_name="sleepstudy")) == _without_timestamp(serial)
