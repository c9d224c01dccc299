"""The HTML report in a real browser: headless Chromium, driven over the Chrome DevTools
Protocol (``tests/_cdp.py``).

Checks: the page loads with no console error, no uncaught exception and no request other
than the file itself and its ``data:`` images; every image decodes (``naturalWidth > 0``);
a full-page screenshot is a real picture (not blank).

Needs Chromium (Debian package ``chromium``; or set ``MULTILEVEL_CHROMIUM`` to a Chrome or
Chromium binary). Without it these tests fail: they are part of the suite, not optional.
"""
from __future__ import annotations

import io
import os
import subprocess
import warnings
from pathlib import Path

import pytest

import multilevel as ml
from multilevel.app.html_report import build_report

from _cdp import chromium_page, find_chromium


# --- fixtures -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def report_file(tmp_path_factory) -> Path:
    """A report of two nested sleepstudy models (all sections: data, pooling, models,
    comparison)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        html = build_report(["Reaction ~ Days + (1 | Subject)", "Reaction ~ Days + (Days | Subject)"],
                            ml.datasets.load("sleepstudy"), data_name="sleepstudy", progress=False)
    path = tmp_path_factory.mktemp("report") / "report.html"
    path.write_text(html, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def loaded_page(report_file):
    """(browser, events of the load) with the report open."""
    with chromium_page() as browser:
        browser.navigate(report_file.as_uri())
        # let late console messages and image decoding arrive
        browser.evaluate("Promise.all(Array.from(document.images).map(i => i.decode().catch(() => null)))")
        events = list(browser.events)
        yield browser, events


# --- tests ----------------------------------------------------------------------------------


def test_chromium_is_installed():
    path = find_chromium()
    out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and ("Chromium" in out.stdout or "Chrome" in out.stdout), out.stdout


def test_no_console_errors_or_exceptions(loaded_page):
    _, events = loaded_page
    problems = []
    for ev in events:
        m, p = ev.get("method"), ev.get("params", {})
        if m == "Runtime.exceptionThrown":
            problems.append(("exception", p["exceptionDetails"].get("text")))
        elif m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            problems.append(("console", [a.get("value") for a in p.get("args", [])]))
        elif m == "Log.entryAdded" and p["entry"].get("level") == "error":
            problems.append(("log", p["entry"].get("text"), p["entry"].get("url")))
    assert problems == []


def test_no_network_requests(loaded_page, report_file):
    _, events = loaded_page
    urls = [ev["params"]["request"]["url"] for ev in events if ev.get("method") == "Network.requestWillBeSent"]
    assert report_file.as_uri() in urls  # the listener works: it saw the page itself
    outside = [u for u in urls if not (u.startswith("data:") or u == report_file.as_uri())]
    assert outside == []
    failed = [ev["params"] for ev in events if ev.get("method") == "Network.loadingFailed"]
    assert failed == []


def test_every_image_loads(loaded_page):
    browser, _ = loaded_page
    images = browser.evaluate(
        "Array.from(document.images).map(i => ({src: i.src.slice(0, 22), w: i.naturalWidth, "
        "h: i.naturalHeight, complete: i.complete, alt: i.alt}))")
    assert len(images) >= 8  # pooling, shrinkage, per model caterpillar/effects/diagnostics..., coefficients
    for im in images:
        assert im["src"] == "data:image/png;base64,", im
        assert im["complete"] and im["w"] > 0 and im["h"] > 0, im
        assert im["alt"], im


def test_page_structure(loaded_page):
    browser, _ = loaded_page
    info = browser.evaluate(
        "({title: document.title, h2: Array.from(document.querySelectorAll('h2')).map(h => h.id), "
        "links: Array.from(document.querySelectorAll('a[href]')).map(a => a.getAttribute('href')), "
        "scripts: document.scripts.length, sheets: document.querySelectorAll('link[rel=stylesheet]').length, "
        "width: document.documentElement.scrollWidth})")
    assert info["title"] == "Multilevel models of sleepstudy"
    assert info["h2"] == ["data", "pooling", "model-1", "model-2", "comparison"]
    # every link of the table of contents points into the page
    assert info["links"] and all(h.startswith("#") and h[1:] in info["h2"] for h in info["links"])
    assert info["scripts"] == 0 and info["sheets"] == 0
    assert info["width"] <= 1200 + 1  # nothing sticks out sideways at the test width


def test_screenshot(loaded_page, tmp_path):
    from PIL import Image

    browser, _ = loaded_page
    png = browser.screenshot()
    out = Path(os.environ.get("MULTILEVEL_SCREENSHOT", tmp_path / "report.png"))
    out.write_bytes(png)
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 50_000
    im = Image.open(io.BytesIO(png)).convert("RGB")
    assert im.width == 1200 and im.height > 3000
    small = im.resize((120, im.height // 10))
    colors = small.getcolors(maxcolors=1 << 16)
    assert colors is not None and len(colors) > 200  # text, plots and colours, not a blank page
    # not mostly white: the page has content from top to bottom
    bands = [small.crop((0, y, 120, y + 40)) for y in range(0, small.height - 40, 40)]
    nonblank = sum(1 for b in bands if len(b.getcolors(maxcolors=1 << 16) or range(999)) > 3)
    assert nonblank >= 0.8 * len(bands)
