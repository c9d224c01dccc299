"""The explorer's server without a browser: every endpoint through Starlette's test client,
its numbers against lmer() and lme4's reference fits, its errors as JSON, the static files
self-contained, the command line and ``ml.explore()``; the browser checks are in
``test_explore_browser.py``."""
from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import time
import urllib.request
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from starlette.testclient import TestClient

import multilevel as ml
from multilevel.app.explore import views
from multilevel.app.explore.data import SIM_PARAMS, SIM_UNEQUAL, DataStore, describe
from multilevel.app.explore.server import create_app, serve
from multilevel.datasets.simulate import simulate_two_level

from conftest import load_case

STATIC = Path(ml.__file__).resolve().parent / "app" / "explore" / "static"
SLEEP = {"kind": "bundled", "name": "sleepstudy"}
#: the simulator's slider defaults, as the server fills a spec in
SIM_DEFAULTS = {**{k: v[4] for k, v in SIM_PARAMS.items()}, "unequal": SIM_UNEQUAL}
HSB = {"kind": "bundled", "name": "hsb"}


def _fit(formula, data, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ml.lmer(formula, data, **kw)


@pytest.fixture(scope="module")
def csv_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("explore") / "sleep data.csv"
    ml.datasets.load("sleepstudy").to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return simulate_two_level(n_groups=12, group_size=6, tau1=0.4, seed=5)


@pytest.fixture(scope="module")
def client(csv_file, frame) -> TestClient:
    store = DataStore(files=[str(csv_file)], frames={"mine": frame})
    return TestClient(create_app(store), base_url="http://127.0.0.1")


def _post(client, path, body, status=200):
    r = client.post(path, json=body)
    assert r.status_code == status, r.text
    return r


# --- the page and its files ---------------------------------------------------------------------


def test_page_and_static_files(client):
    r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert r.headers["cache-control"] == "no-store"
    page = r.text
    srcs = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert set(srcs) == {"data:,", "/static/explore.css", "/static/explore.js"}
    for name, kind in (("explore.js", "javascript"), ("explore.css", "text/css")):
        r = client.get(f"/static/{name}")
        assert r.status_code == 200 and kind in r.headers["content-type"]
    assert client.get("/static/nothing.js").status_code == 404


def test_static_files_name_no_network_address():
    """Nothing the page ships can make the browser reach the network: no URL but the SVG
    namespace name, no protocol-relative address, no import or font from elsewhere."""
    files = sorted(STATIC.iterdir())
    assert [f.name for f in files] == ["explore.css", "explore.js", "index.html"]
    for f in files:
        text = f.read_text(encoding="utf-8")
        urls = set(re.findall(r"[a-z]+://[^\s\"')]+", text))
        assert urls <= {"http://www.w3.org/2000/svg"}, (f.name, urls)
        assert not re.search(r"""(src|href|url)\s*[=(]\s*["']?//""", text), f.name
        assert "@import" not in text and "@font-face" not in text, f.name
        # every fetch goes to this server's own /api/ paths
        assert set(re.findall(r"""api\(\s*"([^"]+)\"""", text)) <= {
            "/api/datasets", "/api/data", "/api/fit", "/api/compare", "/api/power"}, f.name


def test_static_files_ship_in_wheel_and_sdist():
    import tomllib

    root = Path(__file__).resolve().parents[1]
    cfg = tomllib.loads((root / "pyproject.toml").read_text())
    include = cfg["tool"]["maturin"]["include"]
    entry = [i for i in include if i["path"] == "src/multilevel/app/explore/static/*"]
    assert entry and set(entry[0]["format"]) == {"sdist", "wheel"}
    extras = cfg["project"]["optional-dependencies"]
    assert {d.split(">")[0] for d in extras["explore"]} == {"starlette", "uvicorn"}
    assert {"starlette", "uvicorn", "httpx2"} <= {d.split(">")[0] for d in extras["test"]}


# --- /api/datasets and /api/data ------------------------------------------------------------------


def test_datasets_lists_bundled_sources_and_sliders(client, csv_file):
    d = client.get("/api/datasets").json()
    names = [x["name"] for x in d["datasets"]]
    assert {"hsb", "sleepstudy", "popularity"} <= set(names)
    assert d["sources"] == [{"kind": "file", "id": 0, "label": "sleep data.csv", "path": str(csv_file)},
                            {"kind": "frame", "id": 0, "label": "mine", "path": None}]
    sliders = {p["name"]: p for p in d["simulate"]}
    assert list(sliders) == list(SIM_PARAMS)
    assert sliders["n_groups"]["value"] == 20 and sliders["corr"]["min"] == -1
    assert d["initial"]["data"] == {"kind": "simulate"} and d["simulate_unequal"] is SIM_UNEQUAL


def test_data_bundled_file_frame_and_simulated(client, frame):
    hsb = _post(client, "/api/data", {"data": HSB}).json()
    assert hsb["nrows"] == 7185 and hsb["suggestion"]["formula"] == "mAch ~ cses + (1 + cses | school)"
    assert {"meanses", "sector"} <= set(hsb["level2"]["school"]) and "cses" not in hsb["level2"]["school"]
    assert hsb["code"]["r"].splitlines()[1] == 'data(Hsb82, package = "mlmRev")'
    f = _post(client, "/api/data", {"data": {"kind": "file", "id": 0}}).json()
    assert f["label"] == "sleep data.csv" and f["nrows"] == 180
    assert f["suggestion"]["group"] == "Subject" and f["suggestion"]["outcome"] == "Reaction"
    assert "read_data(" in f["code"]["python"] and "read.csv(" in f["code"]["r"]
    mine = _post(client, "/api/data", {"data": {"kind": "frame", "id": 0}}).json()
    assert mine["nrows"] == len(frame) and mine["level2"]["group"] == ["w"]
    sim = _post(client, "/api/data", {"data": {"kind": "simulate", "n_groups": 7, "group_size": 3,
                                                "unequal": True}}).json()
    assert sim["nrows"] == 21 and sim["spec"]["tau0"] == SIM_PARAMS["tau0"][4]
    assert "simulate_two_level(n_groups=7, group_size=3," in sim["code"]["python"]


@pytest.mark.parametrize("data, words", [
    ({"kind": "bundled", "name": "nope"}, ["nope"]),
    ({"kind": "file", "id": 3}, ["file number 3"]),
    ({"kind": "file", "path": "/etc/passwd"}, ["file number None"]),
    ({"kind": "simulate", "n_groups": 0}, ["n_groups", "[2, 200]"]),
    ({"kind": "simulate", "tau0": "big"}, ["tau0", "number"]),
    ({"kind": "simulate", "seed": 1.5}, ["seed", "whole number"]),
    ({"kind": "simulate", "unequal": "yes"}, ["unequal"]),
    ({"kind": "simulate", "sigmaa": 1}, ["sigmaa"]),
    ({"kind": "simulate", "n_groups": 200, "group_size": 150}, ["30000", "20000"]),
    ({"kind": "sql"}, ["kind"]),
    ("hsb", ["data"]),
])
def test_bad_data_specs_are_400_errors_naming_the_field(client, data, words):
    r = _post(client, "/api/data", {"data": data}, status=400).json()
    assert r["ok"] is False and r["kind"] == "DataError"
    for w in words:
        assert w in r["error"], r["error"]


def test_describe_suggests_a_model_for_unknown_data():
    d = pd.DataFrame({"score": np.arange(40.0) % 7, "hours": np.arange(40.0) % 5,
                      "class": pd.Categorical(np.repeat(list("abcdefgh"), 5)),
                      "size": np.repeat(np.arange(8.0), 5)})
    s = describe(d, "mine")
    assert s["suggestion"]["formula"] == "score ~ hours + (1 | class)"
    assert s["level2"]["class"] == ["size"]


# --- /api/fit ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case_id", ["sleepstudy_slope_reml", "hsb_cses_slope_reml", "sleepstudy_slope_ml"])
def test_fit_numbers_equal_lmer_and_lme4(client, case_id):
    case = load_case(case_id)
    data = SLEEP if case["dataset_name"] == "sleepstudy" else HSB
    body = {"data": data, "formula": case["formula"], "reml": case["REML"]}
    s = _post(client, "/api/fit", body).json()
    assert s["ok"] and s["fit"]["reml"] is case["REML"]
    fit = _fit(case["formula"], ml.datasets.load(data["name"]), reml=case["REML"])
    assert s["fit"]["loglik"] == pytest.approx(fit.loglik, rel=1e-12)
    for k, v in fit.fixef.items():
        assert s["fit"]["fixef"][k] == pytest.approx(v, rel=1e-12)
    ref = case["results"]
    assert s["fit"]["loglik"] == pytest.approx(ref["logLik"], rel=1e-6)
    for k, v in ref["fixef"].items():
        assert s["fit"]["fixef"][k] == pytest.approx(v, rel=1e-4)
        assert s["fit"]["se"][k] == pytest.approx(ref["fixef_se"][k], rel=1e-3)
    vc = s["fit"]["varcorr"][0]
    np.testing.assert_allclose(vc["sd"], list(ref["varcorr"][0]["sd"].values()), rtol=1e-3)
    assert s["fit"]["sigma"] == pytest.approx(ref["sigma"], rel=1e-4)
    assert s["fit"]["aic"] == pytest.approx(ref["AIC"], rel=1e-6)
    assert s["summary"] == str(fit.summary())
    assert s["data_label"] == data["name"] and s["truth"] is None
    assert len(s["groups_all"]) == fit.ngroups[next(iter(fit.ngroups))]
    assert s["server_ms"] > 0
    code = s["code"]
    reml_py = "" if case["REML"] else ", reml=False"
    assert f"fit = ml.lmer({case['formula']!r}, {data['name']}{reml_py})" in code["python"]
    assert f"fit <- lmer({case['formula']}, data = {data['name']}" in code["r"]


def test_fit_simulated_data_has_the_true_values(client):
    spec = {"kind": "simulate", "n_groups": 30, "group_size": 10, "tau0": 2.0, "beta1": -0.5, "seed": 3}
    s = _post(client, "/api/fit", {"data": spec, "formula": "y ~ x + (x | group)", "groups": 5}).json()
    assert s["ok"] and s["truth"]["x"] == -0.5 and s["truth"]["sd (Intercept) | group"] == 2.0
    assert len(s["pooling"]["meta"]["levels"]) == 5
    # the size of the simulated data comes with the fit (the sliders change it)
    assert s["data_size"]["nrows"] == 300 and s["data_size"]["groups"] == [{"name": "group", "levels": 30}]
    d = simulate_two_level(**{**SIM_DEFAULTS, **{k: v for k, v in spec.items() if k != "kind"}})
    fit = _fit("y ~ x + (x | group)", d)
    assert s["fit"]["fixef"]["x"] == pytest.approx(fit.fixef["x"], rel=1e-12)
    picked = _post(client, "/api/fit", {"data": spec, "formula": "y ~ x + (x | group)",
                                        "groups": ["g02", "g07"]}).json()
    assert picked["pooling"]["meta"]["levels"] == ["g02", "g07"]


def test_fit_errors_are_data_with_the_caret(client):
    s = _post(client, "/api/fit", {"data": SLEEP, "formula": "Reaction ~ Days + (Days | Subject"}).json()
    assert s["ok"] is False and s["kind"] == "FormulaError" and isinstance(s["position"], int)
    assert s["error"].splitlines()[-1].strip() == "^"
    s = _post(client, "/api/fit", {"data": SLEEP, "formula": "Reaction ~ Nights + (1 | Subject)"}).json()
    assert s["ok"] is False and "Nights" in s["error"]
    # fewer than 2 observations per group; more random effects than observations
    one = {"kind": "simulate", "n_groups": 10, "group_size": 1}
    s = _post(client, "/api/fit", {"data": one, "formula": "y ~ x + (1 | group)"}).json()
    assert s["ok"] is False and "number of levels" in s["error"]
    two = {"kind": "simulate", "n_groups": 10, "group_size": 2}
    s = _post(client, "/api/fit", {"data": two, "formula": "y ~ x + (x | group)"}).json()
    assert s["ok"] is False and "random effects" in s["error"]
    s = _post(client, "/api/fit", {"data": {"kind": "bundled", "name": "dyestuff2"},
                                   "formula": "Yield ~ 1 + (1 | Batch)"}).json()
    assert s["ok"] and s["fit"]["singular"] is True


@pytest.mark.parametrize("body, field", [
    ({"data": SLEEP}, "formula"),
    ({"data": SLEEP, "formula": 3}, "formula"),
    ({"data": SLEEP, "formula": "y ~ 1", "reml": "yes"}, "reml"),
    ({"data": SLEEP, "formula": "y ~ 1", "groups": 0}, "groups"),
    ({"data": SLEEP, "formula": "y ~ 1", "groups": [1, 2]}, "groups"),
    ({"formula": "y ~ 1"}, "data"),
])
def test_fit_bad_arguments_are_400(client, body, field):
    r = _post(client, "/api/fit", body, status=400).json()
    assert r["ok"] is False and r["error"].startswith(field), r["error"]


def test_requests_must_be_json_from_this_host(client):
    r = client.post("/api/fit", content="formula=y", headers={"content-type": "application/x-www-form-urlencoded"})
    assert r.status_code == 400 and "application/json" in r.json()["error"]
    r = client.post("/api/fit", content="{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400 and "not JSON" in r.json()["error"]
    r = client.post("/api/fit", content="[1]", headers={"content-type": "application/json"})
    assert r.status_code == 400 and "object" in r.json()["error"]
    # another Host: a DNS-rebinding page is refused
    r = client.get("/api/datasets", headers={"host": "evil.example"})
    assert r.status_code == 400


def test_a_bug_is_a_500_json_without_traceback(client, monkeypatch, caplog):
    def boom(store, body):
        raise ZeroDivisionError("division by zero in a view")

    app = create_app(DataStore())
    monkeypatch.setattr(views, "fit_view", boom)
    app = create_app(DataStore())  # the routes bind the view when the app is made
    c = TestClient(app, base_url="http://127.0.0.1")
    r = c.post("/api/fit", json={"data": SLEEP, "formula": "y ~ 1"})
    assert r.status_code == 500
    body = r.json()
    assert body["ok"] is False and "ZeroDivisionError" in body["error"] and "Traceback" not in r.text
    assert "Traceback" in caplog.text or any(rec.exc_info for rec in caplog.records)


def test_fit_does_not_modify_the_data_frame(client, frame):
    before = frame.copy()
    s = _post(client, "/api/fit", {"data": {"kind": "frame", "id": 0}, "formula": "y ~ x + w + (x | group)"}).json()
    assert s["ok"]
    pd.testing.assert_frame_equal(frame, before)


# --- /api/compare --------------------------------------------------------------------------------


def test_compare_pinned_models(client):
    models = [{"name": "M1", "formula": "Reaction ~ Days + (1 | Subject)"},
              {"name": "M2", "formula": "Reaction ~ Days + (Days | Subject)"}]
    r = _post(client, "/api/compare", {"data": SLEEP, "models": models}).json()
    assert r["ok"] and r["names"] == ["M1", "M2"]
    d = ml.datasets.load("sleepstudy")
    fits = [_fit(m["formula"], d) for m in models]
    table = ml.compare(*fits, names=["M1", "M2"])
    assert [(x["label"], x["cells"]) for x in r["table"]] == [(x.label, x.cells) for x in table.rows]
    an = ml.anova(*fits, names=["M1", "M2"])
    rows = {x["name"]: dict(zip(r["lrt"]["columns"], x["values"])) for x in r["lrt"]["rows"]}
    assert list(rows) == ["M1", "M2"]
    assert rows["M2"]["Chisq"] == pytest.approx(float(an.loc["M2", "Chisq"]))
    assert rows["M1"]["Chisq"] is None  # NaN in R's table: no test for the first model
    ref = load_case("anova_sleepstudy_intercept_vs_slope_reml")["table"]  # lme4's anova(m0, m1)
    for mine, theirs in zip(rows.values(), ref):
        for col in ("npar", "AIC", "BIC", "logLik", "deviance"):
            assert mine[col] == pytest.approx(theirs[col], rel=1e-6)
    assert rows["M2"]["Chisq"] == pytest.approx(ref[1]["Chisq"], rel=1e-4)
    assert rows["M2"]["Pr(>Chisq)"] == pytest.approx(ref[1]["p"], rel=1e-3)
    one = _post(client, "/api/compare", {"data": SLEEP, "models": models[:1]}).json()
    assert one["ok"] and one["lrt"] is None


def test_compare_errors(client):
    bad = _post(client, "/api/compare", {"data": SLEEP, "models": [
        {"name": "ok", "formula": "Reaction ~ Days + (1 | Subject)"},
        {"name": "typo", "formula": "Reaction ~ Dayz + (1 | Subject)"}]}).json()
    assert bad["ok"] is False and bad["model"] == "typo" and "Dayz" in bad["error"]
    r = _post(client, "/api/compare", {"data": SLEEP, "models": []}, status=400).json()
    assert r["error"].startswith("models")
    same = [{"name": "a", "formula": "Reaction ~ Days + (1 | Subject)"}] * 2
    assert "different names" in _post(client, "/api/compare", {"data": SLEEP, "models": same}, status=400).json()["error"]
    # models on different rows cannot be tested against each other
    crossed = _post(client, "/api/compare", {"data": HSB, "models": [
        {"name": "a", "formula": "mAch ~ 1 + (1 | school)"},
        {"name": "b", "formula": "ses ~ 1 + (1 | school)"}]}).json()
    assert crossed["ok"] and crossed["lrt"] is None and crossed["lrt_error"]


# --- /api/power -------------------------------------------------------------------------------------


def test_power_of_the_simulated_design_equals_ml_power(client):
    spec = {"kind": "simulate", "n_groups": 10, "group_size": 5, "gamma": 0.8, "tau1": 0.0, "sigma": 1.0,
            "seed": 4, "unequal": False}
    r = _post(client, "/api/power", {"data": spec, "test": "w", "nsim": 30, "along": "n_groups",
                                     "values": [12, 6]}).json()
    assert r["ok"] and r["values"] == [6, 12] and len(r["designs"]) == 2
    design = ml.PowerDesign(n_groups=10, group_size=5, fixed={"(Intercept)": 0.0, "x": 0.5, "w": 0.8},
                            sigma=1.0, tau=1.0, within={"x": "normal"}, between={"w": "normal"}, seed=4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        want = ml.power(design, "w", nsim=30, along="n_groups", values=[6, 12], seed=4, progress=False)
    assert [d["power"] for d in r["designs"]] == pytest.approx(list(want.power))
    assert r["design_formula"] == "y ~ x + w + (1 | group)"
    single = _post(client, "/api/power", {"data": {**spec, "corr": 0.5, "unequal": True}, "test": "x", "nsim": 10}).json()
    assert single["ok"] and len(single["designs"]) == 1 and any("correlation" in n for n in single["notes"])


@pytest.mark.parametrize("body, field", [
    ({"data": SLEEP, "test": "x"}, "data"),
    ({"data": {"kind": "simulate"}, "test": "Days"}, "test"),
    ({"data": {"kind": "simulate"}, "nsim": 5}, "nsim"),
    ({"data": {"kind": "simulate"}, "along": "seeds"}, "along"),
    ({"data": {"kind": "simulate"}, "along": "n_groups", "values": []}, "values"),
    ({"data": {"kind": "simulate"}, "along": "n_groups", "values": [1000], "nsim": 2000}, "values"),
    ({"data": {"kind": "simulate"}, "alpha": 2}, "alpha"),
])
def test_power_bad_arguments(client, body, field):
    r = _post(client, "/api/power", body, status=400).json()
    assert r["error"].startswith(field), r["error"]


# --- /api/report and /api/export ------------------------------------------------------------------


def test_report_is_the_self_contained_html_report(client):
    models = [{"name": "intercepts", "formula": "Reaction ~ Days + (1 | Subject)"},
              {"name": "slopes", "formula": "Reaction ~ Days + (Days | Subject)"}]
    r = _post(client, "/api/report", {"data": SLEEP, "models": models})
    assert r.headers["content-type"].startswith("text/html")
    assert r.headers["content-disposition"] == 'attachment; filename="multilevel-report-sleepstudy.html"'
    html = r.text
    assert html.startswith("<!DOCTYPE html>") and "<title>Multilevel models of sleepstudy</title>" in html
    assert 'id="comparison"' in html and "intercepts" in html and "<script" not in html
    one = _post(client, "/api/report", {"data": {"kind": "bundled", "name": "dyestuff"},
                                        "formula": "Yield ~ 1 + (1 | Batch)", "reml": False})
    assert "maximum likelihood" in one.text and 'id="comparison"' not in one.text
    bad = _post(client, "/api/report", {"data": SLEEP, "formula": "Reaction ~ (Days | "}, status=400).json()
    assert bad["kind"] == "FormulaError"


def test_export_is_the_data_as_csv(client):
    spec = {"kind": "simulate", "n_groups": 4, "group_size": 3, "seed": 9}
    r = _post(client, "/api/export", {"data": spec})
    assert r.headers["content-disposition"] == 'attachment; filename="simulated.csv"'
    got = pd.read_csv(io.StringIO(r.text))
    want = simulate_two_level(**{**SIM_DEFAULTS, "n_groups": 4, "group_size": 3, "seed": 9})
    np.testing.assert_array_equal(got["y"].to_numpy(), want["y"].to_numpy())
    assert list(got["group"]) == list(want["group"].astype(str))


# --- running it: ml.explore, the command line, start-up time ----------------------------------------


def _get(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=30) as r:  # loopback only
        return r.status, r.read().decode()


def test_ml_explore_serves_a_frame_and_a_fit(frame):
    assert ml.explore is ml.app.explore.explore
    ex = ml.explore(frame, open_browser=False, port=0, block=False)
    try:
        assert ex.url.startswith("http://127.0.0.1:")
        status, page = _get(ex.url)
        assert status == 200 and "multilevel explore" in page
        status, meta = _get(ex.url + "api/datasets")
        assert json.loads(meta)["initial"] == {"data": {"kind": "frame", "id": 0}, "formula": None, "reml": True}
        assert "multilevel explore is running" in ex._repr_html_()
    finally:
        ex.stop()
    fit = _fit("y ~ x + (x | group)", frame, reml=False)
    ex = ml.explore(fit=fit, open_browser=False, port=0, block=False)
    try:
        initial = json.loads(_get(ex.url + "api/datasets")[1])["initial"]
        assert initial["formula"] == "y ~ x + (x | group)" and initial["reml"] is False
        req = urllib.request.Request(ex.url + "api/fit", method="POST", headers={"Content-Type": "application/json"},
                                     data=json.dumps({**initial}).encode())
        with urllib.request.urlopen(req, timeout=60) as r:
            s = json.loads(r.read())
        assert s["ok"] and s["fit"]["loglik"] == pytest.approx(fit.loglik, rel=1e-10)
    finally:
        ex.stop()
    with pytest.raises(ml.errors.DataError, match="nope"):
        ml.explore("nope", open_browser=False, port=0, block=False)
    with pytest.raises(ml.errors.DataError, match="fit"):
        ml.explore(fit="not a fit", open_browser=False, port=0, block=False)


def test_explore_help_loads_no_server_or_heavy_module():
    code = ("import contextlib, io, sys\nfrom multilevel.app.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()) as out:\n"
            "    try:\n        main(['explore', '--help'])\n    except SystemExit:\n        pass\n"
            "heavy = [m for m in ('starlette', 'uvicorn', 'pandas', 'numpy') if m in sys.modules]\n"
            "print('--no-browser' in out.getvalue(), heavy)")
    env = {**os.environ, "PYTHONPATH": str(Path(ml.__file__).resolve().parents[1])}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.stdout.split("\n")[0] == "True []", out.stderr


def test_cli_explore_bad_input_is_one_line_error(capsys):
    from multilevel.app.cli import main

    assert main(["explore", "--data", "nope", "--no-browser"]) == 2
    assert capsys.readouterr().err.startswith("error: no bundled data set named 'nope'")
    assert main(["explore", "--formula", "y ~ (x | g", "--no-browser"]) == 2
    assert main(["explore", "--port", "70000", "--no-browser"]) == 2
    assert "--port" in capsys.readouterr().err


def test_cli_explore_starts_serves_and_stops(csv_file, capsys):
    """``multilevel explore --data FILE --no-browser --port 0`` in its own process: the time
    from the command to the first page (printed; the target is under 3 s), then Ctrl-C
    stops it cleanly."""
    import signal

    env = {**os.environ, "PYTHONPATH": str(Path(ml.__file__).resolve().parents[1]), "MULTILEVEL_NO_BROWSER": "1"}
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "multilevel.app.cli", "explore", "--data", str(csv_file),
                             "--no-browser", "--port", "0"], stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = proc.stderr.readline()
        m = re.search(r"(http://127\.0\.0\.1:\d+/)", line)
        assert m, line
        status, page = _get(m.group(1))
        startup = time.perf_counter() - t0
        assert status == 200 and "explore.js" in page
        meta = json.loads(_get(m.group(1) + "api/datasets")[1])
        assert meta["initial"]["data"] == {"kind": "file", "id": 0}
        with capsys.disabled():
            print(f"\n[explore] start-up to first page: {startup:.2f} s (target < 3 s)")
        assert startup < 30  # measured and reported; only a hang fails here
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            rc = proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            rc = proc.wait()
        proc.stderr.close()
    assert rc == 0


def test_port_in_use_falls_back_or_is_an_error():
    import socket

    from multilevel.app.explore.server import _bind

    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    port = taken.getsockname()[1]
    try:
        s = _bind("127.0.0.1", port, fallback=True)
        assert s.getsockname()[1] != port
        s.close()
        with pytest.raises(ml.errors.DataError, match="--port"):
            _bind("127.0.0.1", port, fallback=False)
    finally:
        taken.close()


def test_serve_in_a_thread_and_stop():
    ex = serve(DataStore(), port=0, open_browser=False, block=False, quiet=True)
    assert _get(ex.url)[0] == 200
    ex.stop()
    with pytest.raises(OSError):
        _get(ex.url)


def test_an_alias_starts_on_the_listed_data_set():
    ex = ml.explore("Hsb82", open_browser=False, port=0, block=False)
    try:
        assert json.loads(_get(ex.url + "api/datasets")[1])["initial"]["data"] == HSB
    finally:
        ex.stop()
