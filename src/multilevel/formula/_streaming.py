"""Stateful transforms learnt over a stream of row chunks (out-of-core and Dask fits).

Why this module: ``scale()``, ``poly()``, ``center()`` and ``group_mean()`` learn their numbers
from *all* rows of the data (``_transforms.py``, ``_centering.py``). Data read in chunks never
sit in memory at once, so the numbers are learnt in a pass of their own: each chunk is
evaluated inside :func:`accumulating`, where every stateful transform adds its chunk's
sufficient statistics (counts, sums, centred sums of squares, power sums, per-group sums) to
an accumulator instead of learning, and the chunks' statistics are merged exactly (Chan's
update for the variance). :func:`presetting` then makes the transforms take the merged state
instead of learning it from the rows at hand, so evaluating any chunk (or a small skeleton of
the data) gives the numbers an in-memory fit of all rows would have learnt.

Transforms are matched to accumulators by the order formulaic calls them in (the same for
every chunk of the same expressions), and each position checks that its kind matches.

>>> import numpy as np
>>> from multilevel.formula._transforms import ml_scale
>>> learner = TransformLearner()
>>> for part in (np.array([1.0, 2.0]), np.array([np.nan, 5.0])):
...     with accumulating(learner):
...         _ = ml_scale(part, _state={})
>>> with presetting(learner):
...     ml_scale(np.array([1.0, 2.0, 5.0]), _state={}).round(4).tolist()
[-0.8006, -0.3203, 1.1209]
"""
from __future__ import annotations

import contextlib
import contextvars
from typing import Any, Iterator

import numpy as np
import pandas as pd

__all__ = ["TransformLearner", "accumulating", "presetting", "stream_hook"]

_MODE: contextvars.ContextVar[tuple[str, "TransformLearner"] | None] = contextvars.ContextVar(
    "multilevel_stream_transforms", default=None)


class _Acc:
    """Sufficient statistics of one transform call site, merged over chunks."""

    kind = ""

    def add(self, x: np.ndarray, by: Any, params: tuple) -> None:  # pragma: no cover
        raise NotImplementedError

    def state(self) -> dict:  # pragma: no cover
        raise NotImplementedError


class _MomentAcc(_Acc):
    """Per column: count, mean and centred sum of squares (Chan et al.'s parallel update:
    exact up to rounding whatever the chunking)."""

    kind = "scale"

    def __init__(self) -> None:
        self.n: np.ndarray | None = None
        self.mean: np.ndarray | None = None
        self.m2: np.ndarray | None = None
        self.params: tuple = ()

    def add(self, x: np.ndarray, by: Any, params: tuple) -> None:
        self.params = params
        ok = ~np.isnan(x)
        n = ok.sum(axis=0).astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(n > 0, np.where(ok, x, 0.0).sum(axis=0) / np.maximum(n, 1), 0.0)
            m2 = (np.where(ok, x - mean, 0.0) ** 2).sum(axis=0)
        if self.n is None:
            self.n, self.mean, self.m2 = n, mean, m2
            return
        tot = self.n + n
        with np.errstate(invalid="ignore", divide="ignore"):
            delta = mean - self.mean
            frac = np.where(tot > 0, n / np.maximum(tot, 1), 0.0)
            self.mean = self.mean + delta * frac
            self.m2 = self.m2 + m2 + delta ** 2 * self.n * frac
        self.n = tot

    def merge(self, o: "_MomentAcc") -> None:
        if o.n is None:
            return
        if self.n is None:
            self.n, self.mean, self.m2, self.params = o.n, o.mean, o.m2, o.params
            return
        tot = self.n + o.n
        with np.errstate(invalid="ignore", divide="ignore"):
            delta = o.mean - self.mean
            frac = np.where(tot > 0, o.n / np.maximum(tot, 1), 0.0)
            self.mean = self.mean + delta * frac
            self.m2 = self.m2 + o.m2 + delta ** 2 * self.n * frac
        self.n = tot

    def state(self) -> dict:
        center, scale = self.params
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = self.mean / 1.0 if center else np.zeros_like(self.mean)
            mean = np.where(self.n > 0, mean, np.nan) if center else mean
            if scale:
                # about the mean when centring, else R's root mean square about 0
                ss = self.m2 if center else self.m2 + self.n * self.mean ** 2
                sd = np.sqrt(ss / np.maximum(1, self.n - 1))
            else:
                sd = np.ones_like(self.mean)
        return {"center": mean.tolist(), "scale": sd.tolist()}


class _CenterAcc(_Acc):
    """Grand mean and per-group sums for ``center()`` / ``group_mean()`` (groups by R's
    label text, in order of first appearance, as the in-memory transform keeps them)."""

    kind = "center"

    def __init__(self) -> None:
        self.sum: np.ndarray | None = None
        self.cnt: np.ndarray | None = None
        self.groups: dict[str, int] = {}
        self.gsum: list[np.ndarray] = []
        self.gcnt: list[np.ndarray] = []
        self.has_by = False

    def add(self, x: np.ndarray, by: Any, params: tuple) -> None:
        # by: the group labels as R's text (the caller converts, as the in-memory transform)
        ok = ~np.isnan(x)
        s, c = np.where(ok, x, 0.0).sum(axis=0), ok.sum(axis=0).astype(np.float64)
        self.sum = s if self.sum is None else self.sum + s
        self.cnt = c if self.cnt is None else self.cnt + c
        if by is None:
            return
        self.has_by = True
        labels = by
        codes, uniq = pd.factorize(labels, use_na_sentinel=True)
        m = len(uniq)
        gs = np.empty((m, x.shape[1]))
        gc = np.empty((m, x.shape[1]))
        for j in range(x.shape[1]):
            okj = ok[:, j] & (codes >= 0)
            gs[:, j] = np.bincount(codes[okj], weights=x[okj, j], minlength=m)
            gc[:, j] = np.bincount(codes[okj], minlength=m)
        for i, u in enumerate(np.asarray(uniq, dtype=object).tolist()):
            k = self.groups.setdefault(str(u), len(self.groups))
            if k == len(self.gsum):
                self.gsum.append(gs[i].copy())
                self.gcnt.append(gc[i].copy())
            else:
                self.gsum[k] += gs[i]
                self.gcnt[k] += gc[i]

    def merge(self, o: "_CenterAcc") -> None:
        if o.sum is None:
            return
        self.sum = o.sum if self.sum is None else self.sum + o.sum
        self.cnt = o.cnt if self.cnt is None else self.cnt + o.cnt
        self.has_by = self.has_by or o.has_by
        for lab, i in o.groups.items():
            k = self.groups.setdefault(lab, len(self.groups))
            if k == len(self.gsum):
                self.gsum.append(o.gsum[i].copy())
                self.gcnt.append(o.gcnt[i].copy())
            else:
                self.gsum[k] += o.gsum[i]
                self.gcnt[k] += o.gcnt[i]

    def state(self) -> dict:
        with np.errstate(invalid="ignore", divide="ignore"):
            out: dict = {"grand": (self.sum / self.cnt).tolist()}
            if self.has_by:
                out["levels"] = list(self.groups)
                out["means"] = (np.asarray(self.gsum) / np.asarray(self.gcnt)).tolist()
        return out


class _PolyAcc(_Acc):
    """Power sums of ``x - c`` (c: the first chunk's mean, so the sums stay well scaled) up
    to degree 2 d + 1, from which R's ``poly()`` coefficients follow (the Gram matrix of the
    centred powers gives QR's R by a Cholesky factorisation)."""

    kind = "poly"

    def __init__(self) -> None:
        self.shift: float | None = None
        self.sums: np.ndarray | None = None
        self.values: set = set()
        self.degree = 1

    def add(self, x: np.ndarray, by: Any, params: tuple) -> None:
        self.degree = int(params[0])
        x = x[~np.isnan(x)]
        if len(self.values) <= self.degree:  # enough distinct values seen to fit the degree?
            self.values.update(np.unique(x)[: self.degree + 1].tolist())
        if x.size == 0:
            return
        if self.shift is None:
            self.shift = float(x.mean())
        xc = x - self.shift
        k = 2 * self.degree + 2
        pw = np.vander(xc, k, increasing=True).sum(axis=0)
        self.sums = pw if self.sums is None else self.sums + pw

    def merge(self, o: "_PolyAcc") -> None:
        from math import comb

        self.degree = o.degree
        if len(self.values) <= self.degree:
            self.values.update(o.values)
        if o.sums is None:
            return
        if self.sums is None:
            self.shift, self.sums = o.shift, o.sums.copy()
            return
        # o's power sums about its shift, moved to ours: (x - a) = (x - b) + (b - a)
        h = o.shift - self.shift
        K = len(self.sums)
        moved = np.array([sum(comb(k, i) * o.sums[i] * h ** (k - i) for i in range(k + 1))
                          for k in range(K)])
        self.sums = self.sums + moved

    def state(self) -> dict:
        from math import comb

        d = self.degree
        if self.sums is None or len(self.values) <= d:
            raise ValueError("poly(): 'degree' must be less than the number of unique points")
        s = self.sums
        n = s[0]
        mu = s[1] / n  # mean of x - shift
        K = 2 * d + 2
        # power sums about the mean, by the binomial theorem: sum (y - mu)^k
        cm = np.array([sum(comb(k, i) * s[i] * (-mu) ** (k - i) for i in range(k + 1))
                       for k in range(K)])
        H = np.array([[cm[i + j] for j in range(d + 1)] for i in range(d + 1)])
        H1 = np.array([[cm[i + j + 1] for j in range(d + 1)] for i in range(d + 1)])
        R = np.linalg.cholesky(H).T  # H = R'R, R upper: QR of the centred powers
        norm2 = np.diag(R) ** 2
        Rinv = np.linalg.inv(R)
        xbar = self.shift + mu
        alpha = np.array([Rinv[:, j] @ H1 @ Rinv[:, j] for j in range(d + 1)]) + xbar
        return {"alpha": alpha[:d].tolist(), "norm2": [1.0] + norm2.tolist()}


_KINDS = {"scale": _MomentAcc, "center": _CenterAcc, "poly": _PolyAcc}


class TransformLearner:
    """The accumulators of every stateful-transform call site of some expressions, in call
    order; :meth:`states` gives the merged states (see the module docstring)."""

    def __init__(self) -> None:
        self.accs: list[_Acc] = []
        self._pos = 0
        self._states: list[dict] | None = None

    def _take(self, kind: str) -> int:
        pos = self._pos
        self._pos += 1
        return pos

    def merge(self, other: "TransformLearner") -> "TransformLearner":
        """Add another chunk's accumulators (the same call sites in the same order)."""
        for i, acc in enumerate(other.accs):
            if i == len(self.accs):
                self.accs.append(_KINDS[acc.kind]())
            if self.accs[i].kind != acc.kind:
                raise ValueError("the stateful transforms of two chunks do not match")
            self.accs[i].merge(acc)
        self._states = None
        return self

    def states(self) -> list[dict]:
        if self._states is None:
            self._states = [a.state() for a in self.accs]
        return self._states

    @property
    def used(self) -> bool:
        return bool(self.accs)


@contextlib.contextmanager
def accumulating(learner: TransformLearner) -> Iterator[None]:
    """Evaluate one chunk: stateful transforms add to ``learner`` instead of learning."""
    learner._pos = 0
    token = _MODE.set(("acc", learner))
    try:
        yield
    finally:
        _MODE.reset(token)


@contextlib.contextmanager
def presetting(learner: TransformLearner, start: int = 0) -> Iterator[None]:
    """Stateful transforms with an empty state take ``learner``'s merged state (call sites
    numbered from ``start``: the expressions evaluated after others of the same learner)."""
    learner._pos = start
    token = _MODE.set(("preset", learner))
    try:
        yield
    finally:
        _MODE.reset(token)


def active() -> bool:
    """Whether a chunked learning or presetting mode is on (cheap; callers skip work else)."""
    return _MODE.get() is not None


def stream_hook(kind: str, x: np.ndarray, by: Any, params: tuple, state: dict) -> bool:
    """Called by a stateful transform whose ``state`` is empty. Returns True when the call
    only accumulated (the caller returns placeholder values of the right shape); fills
    ``state`` when a merged state is preset; False (nothing done) outside both modes."""
    mode = _MODE.get()
    if mode is None:
        return False
    what, learner = mode
    pos = learner._take(kind)
    if what == "acc":
        if pos == len(learner.accs):
            learner.accs.append(_KINDS[kind]())
        acc = learner.accs[pos]
        if acc.kind != kind:
            raise ValueError("the stateful transforms were called in another order on this chunk")
        acc.add(np.asarray(x, dtype=np.float64), by, params)
        return True
    states = learner.states()
    if pos >= len(states) or learner.accs[pos].kind != kind:
        raise ValueError("no learnt state for this stateful transform")
    state.update(states[pos])
    return False
