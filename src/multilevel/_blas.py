"""BLAS threads for the dense algebra of a model frame.

The tall dense factorisations here (the QR of an ``lm`` with group dummies, the rank check of
X) are small next to what OpenBLAS's threads pay off on: measured on a 2-core machine, the QR
of a 7185 x 322 matrix took 0.08-0.19 s on one thread and 0.15-3.9 s on two whenever anything
else ran (threads spinning against each other). ``one_thread(n, p)`` keeps such a step on one
thread and leaves large problems (above about 2e10 flops) to the library's own threading,
and small ones (below 1e8, where switching costs more than it saves) as they are.
It uses threadpoolctl (a dependency), which switches the threads of whichever BLAS numpy and
scipy loaded; without it the step runs as the library is set. ``single_threaded()`` switches
unconditionally, for latency-bound callers (the explorer); ``dot_thread(n)`` keeps dot
products over many rows on one thread (OpenBLAS threads them from 10,000 entries).

>>> import numpy as np
>>> with one_thread(100, 3):
...     float(np.linalg.norm(np.eye(3)))
1.7320508075688772
"""
from __future__ import annotations

import contextlib
import threading
from typing import ContextManager, Iterator

#: n * p^2 above which the BLAS keeps its own threads
_FLOPS_MIN_THREADED = 2e10
#: n * p^2 below which the step is too quick to matter: switching the threads costs about a
#: millisecond (threadpoolctl inspects the loaded libraries), more than a small fit
_FLOPS_WORTH_SWITCHING = 1e8


def one_thread(n: int, p: int) -> ContextManager[object]:
    """A context in which BLAS calls run on one thread, for an n x p dense step."""
    flops = float(n) * float(p) * float(p)
    if not _FLOPS_WORTH_SWITCHING <= flops <= _FLOPS_MIN_THREADED:
        return contextlib.nullcontext()
    return single_threaded()


#: OpenBLAS splits a dot product (and a matrix-vector product of as many rows) of more
#: than this many entries over all its threads: on a busy 2-core machine their start-up cost
#: the model frame of 1e5 rows 4.7 ms (median CPU time) for the six dot products of X'X,
#: which take 0.15 ms on one thread
_DOT_THREADED_MIN = 10_000


def dot_thread(n: int) -> ContextManager[object]:
    """A context for dot products (or matrix-vector products) over n rows: one BLAS thread
    where OpenBLAS would start all of them for so little work, else nothing switched.

    >>> import numpy as np
    >>> with dot_thread(3):
    ...     float(np.ones(3) @ np.ones(3))
    3.0
    """
    if n <= _DOT_THREADED_MIN:
        return contextlib.nullcontext()
    return single_threaded()


_CONTROLLER: list = []
_LOCK = threading.Lock()
_ACTIVE: list = []   # [limiter, depth] while some single_threaded() block runs


@contextlib.contextmanager
def single_threaded() -> Iterator[None]:
    """A context in which every BLAS call runs on one thread, whatever its size.

    For a sequence of small steps that must answer quickly, such as the explorer's refit
    (``multilevel.app.explore.state``): on a busy 2-core machine a 400 x 40 cross product
    took 20-30 ms on two OpenBLAS threads (the second waiting for a core) and 0.04 ms on
    one. The threadpoolctl controller is made once (inspecting the loaded libraries costs
    0.2 ms; switching with it then costs ~10 us), after scipy's BLAS is loaded so that it is
    among the libraries switched. The limit is process-wide, so nested blocks and blocks
    in several threads share one: set by the first to enter, restored when the last leaves
    (each restoring what it found would leave the BLAS on one thread when two overlapped).
    Measured with the OpenBLAS 0.3.30/0.3.31 of the numpy and scipy wheels: a limit set from
    the main thread holds in every thread, one set from another thread did not take effect,
    so a server should call this from its main thread (an async endpoint) or limit the BLAS
    once at start-up.

    >>> import numpy as np
    >>> with single_threaded():
    ...     float(np.ones(3) @ np.ones(3))
    3.0
    """
    if not _CONTROLLER:
        try:
            import scipy.linalg  # noqa: F401 - load scipy's BLAS before the inspection
            from threadpoolctl import ThreadpoolController
        except ImportError:  # pragma: no cover - dependencies; kept working without them
            yield
            return
        with _LOCK:
            if not _CONTROLLER:
                _CONTROLLER.append(ThreadpoolController())
    with _LOCK:
        if _ACTIVE:
            _ACTIVE[1] += 1
        else:
            _ACTIVE[:] = [_CONTROLLER[0].limit(limits=1, user_api="blas"), 1]
    try:
        yield
    finally:
        with _LOCK:
            _ACTIVE[1] -= 1
            if _ACTIVE[1] == 0:
                _ACTIVE[0].restore_original_limits()
                _ACTIVE.clear()
