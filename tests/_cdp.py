"""A headless Chromium driven over the Chrome DevTools Protocol, for the browser tests (the
HTML report's and the explorer's): ``--remote-debugging-pipe`` (JSON messages ending in NUL
on fds 3/4), with the standard library only.

``find_chromium()`` fails the test (it does not skip it) when no Chromium is installed: the
browser tests are part of the suite. Debian's package ``chromium``, or ``MULTILEVEL_CHROMIUM``
pointing at a Chrome or Chromium binary.

Name resolution is switched off (``--host-resolver-rules``): a page that tried to reach the
network fails loudly instead of hanging. Loopback addresses stay reachable, so a page served
by a local test server loads.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

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
    pytest.fail("Chromium is needed for the browser tests (HTML report, explorer) and was not found "
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
                # no DNS: a page that tried to reach the network would fail loudly, not hang;
                # loopback stays reachable for the explorer's local server
                "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1, EXCLUDE localhost",
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

    def screenshot(self, width: int = 1200, height: int | None = None) -> bytes:
        """A PNG of the page ``width`` CSS pixels wide: the whole page, or its top ``height``
        pixels."""
        import base64

        m = self.send("Page.getLayoutMetrics")
        size = m.get("cssContentSize") or m["contentSize"]
        if height is None:
            height = min(int(size["height"]), 16000)
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


@contextmanager
def chromium_page() -> Iterator[Browser]:
    """A fresh headless Chromium (own profile directory) with one page open; closed after."""
    binary = find_chromium()
    profile = tempfile.mkdtemp(prefix="ml-chromium-")
    browser = Browser(binary, profile)
    try:
        browser.open_page()
        yield browser
    finally:
        browser.close()
        shutil.rmtree(profile, ignore_errors=True)
