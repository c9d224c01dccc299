"""The HTML report in a real browser: headless Chromium, driven over the Chrome DevTools
Protocol on a pipe (``--remote-debugging-pipe``: JSON messages ending in NUL on fds 3/4),
with the standard library only.

Checks: the page loads with no console error, no uncaught exception and no request other
than the file itself and its ``data:`` images; every image decodes (``naturalWidth > 0``);
a full-page screenshot is a real picture (not blank).

Needs Chromium (Debian package ``chromium``; or set ``MULTILEVEL_CHROMIUM`` to a Chrome or
Chromium binary). Without it these tests fail: they are part of the suite, not optional.
"""
from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import tempfile
import time
import warnings
from pathlib import Path

import pytest

import multilevel as ml
from multilevel.app.html_report import build_report

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
TIMEOUT = 60.0


def find_chromium() -> str:
    env = os.environ.get("MULTILEVEL_CHROMIUM")
    if env:
        return env
    for name in CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    pytest.fail("Chromium is needed for the browser tests of the HTML report and was not found "
                f"(looked for {', '.join(CANDIDATES)} on PATH and $MULTILEVEL_CHROMIUM). "
                "Install it: apt-get install -y chromium", pytrace=False)


class Browser:
    """A headless Chromium with a CDP session on one page, over --remote-debugging-pipe."""

    def __init__(self, binary: str, profile_dir: str):
        to_child_r, self._to_child_w = os.pipe()
        self._from_child_r, from_child_w = os.pipe()
        parent_w, parent_r = self._to_child_w, self._from_child_r

        def fds_3_4():  # the child reads commands on fd 3 and writes replies on fd 4
            # via fresh descriptors first, in case a pipe end already sits on fd 3 or 4
            r, w = os.dup(to_child_r), os.dup(from_child_w)
            os.dup2(r, 3)
            os.dup2(w, 4)
            for fd in {r, w, to_child_r, from_child_w, parent_w, parent_r} - {3, 4}:
                os.close(fd)

        args = [binary, "--headless", "--remote-debugging-pipe", "--no-sandbox", "--disable-gpu",
                "--no-first-run", "--no-default-browser-check", "--disable-extensions",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-default-apps", "--mute-audio", "--hide-scrollbars",
                # no DNS: a page that tried to reach the network would fail loudly, not hang
                "--host-resolver-rules=MAP * ~NOTFOUND",
                f"--user-data-dir={profile_dir}", "about:blank"]
        self.stderr = tempfile.TemporaryFile()
        # close_fds=False: subprocess would close fds 3 and 4 after preexec_fn otherwise
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=self.stderr, preexec_fn=fds_3_4, close_fds=False)
        os.close(to_child_r)
        os.close(from_child_w)
        self._buf = b""
        self._next_id = 0
        self.events: list[dict] = []
        self.session: str | None = None

    # -- protocol ---------------------------------------------------------------------------
    def _read_message(self, deadline: float) -> dict:
        import select

        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no reply from Chromium")
            ready, _, _ = select.select([self._from_child_r], [], [], left)
            if ready:
                chunk = os.read(self._from_child_r, 1 << 20)
                if not chunk:
                    self.stderr.seek(0)
                    tail = self.stderr.read().decode(errors="replace")[-2000:]
                    raise RuntimeError(f"Chromium closed the pipe (exit code {self.proc.poll()}):\n{tail}")
                self._buf += chunk
        msg, self._buf = self._buf.split(b"\0", 1)
        return json.loads(msg)

    def send(self, method: str, params: dict | None = None, session: bool = True) -> dict:
        self._next_id += 1
        mid = self._next_id
        msg = {"id": mid, "method": method, "params": params or {}}
        if session and self.session:
            msg["sessionId"] = self.session
        os.write(self._to_child_w, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + TIMEOUT
        while True:
            reply = self._read_message(deadline)
            if reply.get("id") == mid:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_for(self, method: str) -> dict:
        for ev in self.events:
            if ev.get("method") == method:
                return ev
        deadline = time.monotonic() + TIMEOUT
        while True:
            ev = self._read_message(deadline)
            self.events.append(ev)
            if ev.get("method") == method:
                return ev

    # -- page -------------------------------------------------------------------------------
    def open_page(self) -> None:
        target = self.send("Target.createTarget", {"url": "about:blank"}, session=False)["targetId"]
        self.session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True},
                                 session=False)["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.send(f"{domain}.enable")

    def navigate(self, url: str) -> None:
        self.events.clear()
        self.send("Page.navigate", {"url": url})
        self.wait_for("Page.loadEventFired")

    def evaluate(self, expression: str):
        res = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                             "awaitPromise": True})
        if "exceptionDetails" in res:
            raise RuntimeError(f"JS error: {res['exceptionDetails']}")
        return res["result"].get("value")

    def screenshot(self) -> bytes:
        import base64

        m = self.send("Page.getLayoutMetrics")
        size = m.get("cssContentSize") or m["contentSize"]
        width, height = 1200, min(int(size["height"]), 16000)
        self.send("Emulation.setDeviceMetricsOverride",
                  {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})
        shot = self.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True,
                                                    "clip": {"x": 0, "y": 0, "width": width,
                                                             "height": height, "scale": 1}})
        return base64.b64decode(shot["data"])

    def close(self) -> None:
        try:
            self.send("Browser.close", session=False)
        except Exception:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for fd in (self._to_child_w, self._from_child_r):
            try:
                os.close(fd)
            except OSError:
                pass
        self.stderr.close()


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
    binary = find_chromium()
    profile = tempfile.mkdtemp(prefix="ml-chromium-")
    browser = Browser(binary, profile)
    try:
        browser.open_page()
        browser.navigate(report_file.as_uri())
        # let late console messages and image decoding arrive
        browser.evaluate("Promise.all(Array.from(document.images).map(i => i.decode().catch(() => null)))")
        events = list(browser.events)
        yield browser, events
    finally:
        browser.close()
        shutil.rmtree(profile, ignore_errors=True)


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
