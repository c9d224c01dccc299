"""BLAS threads for the dense algebra of a model frame.

The tall dense factorisations here (the QR of an ``lm`` with group dummies, the rank check of
X) are small next to what OpenBLAS's threads pay off on: measured on a 2-core machine, the QR
of a 7185 x 322 matrix took 0.08-0.19 s on one thread and 0.15-3.9 s on two whenever anything
else ran (threads spinning against each other). ``one_thread(n, p)`` keeps such a step on one
thread and leaves large problems (above about 2e10 flops) to the library's own threading,
and small ones (below 1e8, where switching costs more than it saves) as they are.
It uses threadpoolctl (a dependency), which switches the threads of whichever BLAS numpy and
scipy loaded; without it the step runs as the library is set.

>>> import numpy as np
>>> with one_thread(100, 3):
...     float(np.linalg.norm(np.eye(3)))
1.7320508075688772
"""
from __future__ import annotations

import contextlib
from typing import ContextManager

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
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - a dependency; kept working without it
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")
