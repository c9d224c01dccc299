"""Render a batch of matplotlib figures to PNG, on two cores where the machine has them.

Layer: app. May import: report (the drawing), errors.

Why: drawing a figure in matplotlib is single-threaded Python (ticks, text layout, artists),
and the dozen figures of an HTML report are most of its time. The report lays out its whole
page first, with a placeholder per figure (:meth:`FigureBatch.add`), then renders the batch:
on Linux with a spare core one forked child draws every other figure while the parent draws
the rest, and the child sends its PNG bytes back through a pipe. The child only runs
matplotlib's drawing on figures that already exist (no fitting, no compiled core, whose
thread pool a forked child does not have), and it leaves with ``os._exit``. Any failure of
the child (or ``MULTILEVEL_REPORT_PROCESSES=1``) means the parent draws those figures
itself: the result is the same bytes either way.

>>> from multilevel.report.plots import _new_figure
>>> batch = FigureBatch()
>>> fig = _new_figure((2.0, 1.5)); _ = fig.add_subplot().plot([0, 1])
>>> token = batch.add(fig, 100)
>>> pngs = batch.render()
>>> pngs[0][:4], batch.fill("<p>" + token + "</p>", lambda i, png: str(len(png) > 0))
(b'\\x89PNG', '<p>True</p>')
"""
from __future__ import annotations

import os
import pickle
import sys
import warnings
from typing import Any, Callable

__all__ = ["FigureBatch", "spare_core"]

#: fewer figures than this are drawn in order: forking costs a few milliseconds
MIN_PARALLEL = 4


def spare_core() -> bool:
    """True where a forked child can draw beside the parent: Linux (fork is safe there; on
    macOS system frameworks are not fork-safe), two or more usable cores, and not switched
    off with ``MULTILEVEL_REPORT_PROCESSES=1``."""
    if os.environ.get("MULTILEVEL_REPORT_PROCESSES", "").strip() == "1":
        return False
    if not sys.platform.startswith("linux") or not hasattr(os, "fork"):
        return False
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return cores >= 2


class FigureBatch:
    """Figures waiting to be drawn: :meth:`add` returns a placeholder, :meth:`render` draws
    them all, :meth:`fill` puts each figure's HTML where its placeholder is."""

    def __init__(self) -> None:
        self.items: list[tuple[Any, int]] = []
        self.pngs: list[bytes] = []

    def add(self, fig: Any, dpi: int) -> str:
        """Keep ``fig`` for drawing; the text that marks its place in the page."""
        self.items.append((fig, dpi))
        return self.token(len(self.items) - 1)

    @staticmethod
    def token(i: int) -> str:
        return f"\x00figure-{i}\x00"

    def render(self) -> list[bytes]:
        """PNG bytes of every figure, in the order they were added."""
        from multilevel.report.plots import figure_png

        n = len(self.items)
        pngs: list[bytes | None] = [None] * n
        theirs = list(range(1, n, 2))  # alternate figures: costs are mixed along the page
        pid, rfd = None, None
        if n >= MIN_PARALLEL and spare_core():
            rfd, wfd = os.pipe()
            with warnings.catch_warnings():
                # Python 3.12+ warns about fork in a process with threads; the child only
                # draws figures and never touches the threads' state (see the module docs)
                warnings.simplefilter("ignore", DeprecationWarning)
                pid = os.fork()
            if pid == 0:  # the child: draw its share, send it, leave without cleanup
                code = 1
                try:
                    os.close(rfd)
                    out = pickle.dumps([figure_png(*self.items[i]) for i in theirs])
                    with os.fdopen(wfd, "wb") as fh:
                        fh.write(out)
                    code = 0
                finally:
                    os._exit(code)
            os.close(wfd)
        mine = range(0, n, 2) if pid else range(n)
        for i in mine:
            pngs[i] = figure_png(*self.items[i])
        if pid:
            with os.fdopen(rfd, "rb") as fh:
                data = fh.read()
            _, status = os.waitpid(pid, 0)
            if status == 0 and data:
                for i, png in zip(theirs, pickle.loads(data)):
                    pngs[i] = png
            for i in theirs:  # the child failed: draw its share here
                if pngs[i] is None:
                    pngs[i] = figure_png(*self.items[i])
        self.pngs = [p for p in pngs if p is not None]
        return self.pngs

    def fill(self, html: str, figure_html: Callable[[int, bytes], str]) -> str:
        """``html`` with placeholder i replaced by ``figure_html(i, png_i)``."""
        for i, png in enumerate(self.pngs):
            html = html.replace(self.token(i), figure_html(i, png), 1)
        return html
