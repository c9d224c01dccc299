"""The explorer's web server: a small Starlette app (one page, its three static files and the
JSON endpoints) run by uvicorn on 127.0.0.1.

Routes (every POST takes and returns JSON; the page sends parameters, never data)::

    GET  /                 the page (static/index.html)
    GET  /static/...       explore.js, explore.css (shipped in the package: no CDN, no network)
    GET  /api/datasets     the bundled data sets, the sources given at start, the simulator's
                           sliders (names, ranges, defaults) and the model to start with
    POST /api/data         {data}: the data set's columns, grouping factors, level-2 columns,
                           a suggested model and the code that loads it
    POST /api/fit          {data, formula, reml, groups}: every view of one model
    POST /api/compare      {data, models}: the pinned models side by side and their LRTs
    POST /api/power        {data, test, nsim, along, values, alpha}: power by simulation
    POST /api/report       {data, models | formula, reml}: the self-contained HTML report
    POST /api/export       {data}: the data as CSV

An input error is answered with status 400 and ``{"ok": false, "error": ..., "kind": ...,
"position": ...}`` (the library's message; ``position`` is a formula error's caret); a bug
with status 500 and a one-line message, its traceback going to the terminal only. Requests
must come with ``Content-Type: application/json`` and a ``Host`` of the address served: a
web page of another site cannot post to the explorer without a CORS preflight, which it does
not answer, and DNS rebinding is refused.

Example
-------
>>> from starlette.testclient import TestClient
>>> client = TestClient(create_app(), base_url="http://127.0.0.1")
>>> client.post("/api/fit", json={"data": {"kind": "bundled", "name": "dyestuff"},
...                               "formula": "Yield ~ 1 + (1 | Batch)"}).json()["ok"]
True
"""
from __future__ import annotations

import json
import logging
import os
import socket
import sys
import threading
import time
import webbrowser
from importlib import resources
from typing import Any, Callable

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from multilevel.app.explore.data import SIM_PARAMS, SIM_UNEQUAL, DataStore
from multilevel.errors import FormulaError, MultilevelError

__all__ = ["create_app", "serve", "Explorer", "DEFAULT_PORT"]

DEFAULT_PORT = 8765
_LOG = logging.getLogger("multilevel.explore")
#: the largest request body accepted (a request carries parameters only)
_MAX_BODY = 1 << 20


def _static(name: str) -> bytes:
    return resources.files("multilevel.app.explore").joinpath("static", name).read_bytes()


def _error(e: BaseException, status: int) -> JSONResponse:
    position = e.position if isinstance(e, FormulaError) else None
    return JSONResponse({"ok": False, "error": str(e), "kind": type(e).__name__, "position": position},
                        status_code=status)


async def _body(request: Request) -> dict[str, Any]:
    """The request's JSON object; a MultilevelError (answered with 400) when it is not one."""
    from multilevel.errors import DataError

    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != "application/json":
        raise DataError(f"request: Content-Type must be application/json, got {ctype or 'none'!r}")
    raw = await request.body()
    if len(raw) > _MAX_BODY:
        raise DataError(f"request: the body is {len(raw)} bytes; the explorer takes parameters, "
                        f"at most {_MAX_BODY} bytes")
    try:
        body = json.loads(raw or b"{}")
    except ValueError as e:
        raise DataError(f"request: the body is not JSON ({e})") from None
    if not isinstance(body, dict):
        raise DataError("request: the body must be a JSON object")
    return body


def _endpoint(fn: Callable[[DataStore, dict[str, Any]], Any], store: DataStore,
              respond: Callable[[Any], Response] | None = None) -> Callable:
    """An async endpoint that runs ``fn(store, body)`` in the thread pool (fits take 1-300 ms
    of CPU and must not block the event loop) and answers its result as JSON, or an error as
    JSON: 400 for bad input, 500 for a bug (traceback on the terminal, not in the page)."""

    async def endpoint(request: Request) -> Response:
        try:
            body = await _body(request)
            result = await run_in_threadpool(fn, store, body)
        except MultilevelError as e:
            return _error(e, 400)
        except Exception as e:  # noqa: BLE001 -- a bug of ours: say so, keep serving
            _LOG.exception("explorer: %s failed", request.url.path)
            first = (str(e).strip().splitlines() or [""])[0]
            return JSONResponse({"ok": False, "kind": "InternalError", "position": None,
                                 "error": f"internal error ({type(e).__name__}: {first}); the "
                                          "terminal running multilevel explore has the details"},
                                status_code=500)
        return respond(result) if respond else JSONResponse(result)

    return endpoint


def _attachment(media_type: str) -> Callable[[tuple[str, str]], Response]:
    def respond(result: tuple[str, str]) -> Response:
        text, filename = result
        return Response(text, media_type=media_type,
                        headers={"Content-Disposition": f'attachment; filename="{filename}"'})
    return respond


def _data_view(store: DataStore, body: dict[str, Any]) -> dict[str, Any]:
    from multilevel.app.explore.data import data_code, describe

    frame, label, spec = store.get(body.get("data"))
    return {"ok": True, "label": label, "spec": spec, "code": data_code(spec, store),
            **describe(frame, label)}


def _datasets(store: DataStore, initial: dict[str, Any]) -> dict[str, Any]:
    from multilevel.datasets import list_datasets

    rows = list_datasets(as_frame=False)  # the JSON catalogue only: no pandas
    return {"ok": True,
            "datasets": [{"name": r["name"], "rows": r["rows"], "columns": r["columns"],
                          "description": r["description"]} for r in rows],
            "sources": store.sources(),
            "simulate": [{"name": k, "label": v[0], "min": v[1], "max": v[2], "step": v[3],
                          "value": v[4]} for k, v in SIM_PARAMS.items()],
            "simulate_unequal": SIM_UNEQUAL,
            "initial": initial}


def create_app(store: DataStore | None = None, *, initial: dict[str, Any] | None = None,
               hosts: list[str] | None = None) -> Starlette:
    """The explorer as an ASGI app.

    store:   the data sets it can show (default: bundled and simulated ones only).
    initial: what the page starts with: ``{"data": spec, "formula": str | None, "reml": bool}``
             (default: simulated data and the suggested model).
    hosts:   the Host headers accepted (default: 127.0.0.1 and localhost).
    """
    import multilevel.app.explore.views as views  # the module, not the package: no import cycle

    store = store or DataStore()
    initial = initial or {"data": {"kind": "simulate"}, "formula": None, "reml": True}
    page = _static("index.html")

    async def index(request: Request) -> Response:
        # no-store: a new version of the package is never shown with an old page
        return Response(page, media_type="text/html", headers={"Cache-Control": "no-store"})

    async def datasets(request: Request) -> Response:
        return JSONResponse(_datasets(store, initial))

    routes = [
        Route("/", index),
        Route("/api/datasets", datasets),
        Route("/api/data", _endpoint(_data_view, store), methods=["POST"]),
        Route("/api/fit", _endpoint(views.fit_view, store), methods=["POST"]),
        Route("/api/compare", _endpoint(views.compare_view, store), methods=["POST"]),
        Route("/api/power", _endpoint(views.power_view, store), methods=["POST"]),
        Route("/api/report", _endpoint(views.report_html, store, _attachment("text/html")),
              methods=["POST"]),
        Route("/api/export", _endpoint(views.export_csv, store, _attachment("text/csv")),
              methods=["POST"]),
        Mount("/static", StaticFiles(packages=[("multilevel.app.explore", "static")])),
    ]
    allowed = list(dict.fromkeys(["127.0.0.1", "localhost", *(hosts or [])]))
    return Starlette(routes=routes, middleware=[Middleware(TrustedHostMiddleware, allowed_hosts=allowed)])


# --- running it --------------------------------------------------------------------------------


class Explorer:
    """A running explorer: ``url``, ``stop()``, ``wait()`` (until Ctrl-C or ``stop()``).

    In a notebook it shows as a link to the page.
    """

    def __init__(self, server: Any, thread: threading.Thread | None, url: str):
        self._server = server
        self._thread = thread
        self.url = url

    def stop(self) -> None:
        """Stop serving (the page stops answering)."""
        self._server.should_exit = True
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=10)

    def wait(self) -> None:
        """Block until the server stops (Ctrl-C stops it)."""
        try:
            while self._thread is not None and self._thread.is_alive():
                self._thread.join(timeout=0.5)
        except KeyboardInterrupt:
            self.stop()

    def __repr__(self) -> str:
        return f"Explorer({self.url!r})"

    def _repr_html_(self) -> str:
        from html import escape

        return (f'<p>multilevel explore is running at <a href="{escape(self.url)}" target="_blank">'
                f"{escape(self.url)}</a> (<code>.stop()</code> stops it)</p>")


def _bind(host: str, port: int, fallback: bool) -> socket.socket:
    """A listening socket on host:port; with ``fallback``, a free port when that one is taken."""
    from multilevel.errors import DataError

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        if fallback and port != 0:
            sock.close()
            return _bind(host, 0, False)
        sock.close()
        raise DataError(f"--port: cannot listen on {host}:{port} ({e.strerror or e}); "
                        "choose another port (--port 0 picks a free one)") from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def _warm_up() -> None:
    """Import the fitting code and fit a tiny model while the page loads, so that the first
    refit the user sees does not pay for the imports."""
    try:
        import warnings

        import multilevel as ml
        import multilevel.app.explore.state as state
        import multilevel.app.explore.views  # noqa: F401
        from multilevel.datasets.simulate import simulate_two_level

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            state.model_state(simulate_two_level(n_groups=4, group_size=4), "y ~ x + (1 | group)")
        del ml
    except Exception:  # noqa: BLE001 -- only a speed-up; the real request reports problems
        pass


def serve(store: DataStore | None = None, *, initial: dict[str, Any] | None = None,
          host: str = "127.0.0.1", port: int | None = None, open_browser: bool = True,
          block: bool = True, quiet: bool = False) -> Explorer:
    """Start the explorer on ``host:port`` (default 127.0.0.1:8765, or a free port when that
    one is taken; ``port=0``: any free port) and open the page in the browser.

    block=True serves until Ctrl-C (the command line); block=False serves from a background
    thread and returns at once (notebooks, tests). Returns the :class:`Explorer`.
    """
    import uvicorn

    app = create_app(store, initial=initial, hosts=[host])
    sock = _bind(host, DEFAULT_PORT if port is None else port, fallback=port is None)
    real_port = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{real_port}/"
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off",
                            timeout_graceful_shutdown=2)
    server = uvicorn.Server(config)
    threading.Thread(target=_warm_up, name="explore-warm-up", daemon=True).start()

    def announce() -> None:
        deadline = time.monotonic() + 30
        while not server.started and time.monotonic() < deadline and not server.should_exit:
            time.sleep(0.01)
        if not quiet:
            print(f"multilevel explore: {url}" + ("  (Ctrl-C stops it)" if block else ""),
                  file=sys.stderr, flush=True)
        if host not in ("127.0.0.1", "localhost", "::1") and not quiet:
            print("warning: the explorer has no login; anyone who can reach "
                  f"{host}:{real_port} can use it and see the data's summaries", file=sys.stderr)
        if open_browser and server.started and not os.environ.get("MULTILEVEL_NO_BROWSER"):
            webbrowser.open(url)

    if block:
        # the command line's server process does only refits: one BLAS thread for all of them,
        # set here in the main thread (a limit set in the endpoints' worker threads does not
        # take effect with OpenBLAS; on a busy 2-core machine a second BLAS thread waiting for
        # a core made a refit's small products 500x slower); a notebook's (block=False) BLAS
        # is the user's and is left alone
        import scipy.linalg  # noqa: F401 -- loaded first, so that its BLAS is limited too
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
        threading.Thread(target=announce, name="explore-announce", daemon=True).start()
        server.run(sockets=[sock])
        return Explorer(server, None, url)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="multilevel-explore",
                              daemon=True)
    thread.start()
    announce()
    return Explorer(server, thread, url)
