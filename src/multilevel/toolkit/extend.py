"""Larger (or smaller) designs made from a fitted one, as simr's ``extend()`` makes them.

A power analysis asks what a study with more groups, or more observations per group, would
find. The new design is built from the rows of the fitted one, at the level of the model's
arrays (the fixed-effects matrix X, each random-effect term's Z and level references, prior
weights, offset), so the predictors keep exactly the values the data have:

``along="n_groups"``, value J
    new group k (k = 0, ..., J - 1) copies all the rows of the fitted group k mod J0 (J0 the
    fitted number of groups, groups in lme4's level order), as a *new* level. J < J0 keeps
    the first J groups. Another grouping factor nested in the extended one (classes within
    schools) gets new levels in the copies too; a crossed one (items crossed with subjects)
    keeps its levels: new subjects see the same items. This is simr's
    ``extend(fit, along = "g", n = J)``.
``along="group_size"``, value n
    every group gets n rows: row i of group j copies row i mod n_j of that group's rows, in
    their order (n smaller than a group keeps its first n rows). Other factors keep their
    levels. simr's ``extend(fit, within = "g", n = n)`` does this per combination of the
    ``within`` variables.

Stateful transforms (``scale(x)``) are not re-learnt: the copied rows carry the fitted
data's columns, so a coefficient means the same thing in every design.

>>> import numpy as np
>>> from multilevel.toolkit.extend import extend_rows
>>> src, refs = extend_rows(np.array([0, 0, 1, 1, 1]), 2, "n_groups", 3)
>>> src.tolist(), refs.tolist()
([0, 1, 2, 3, 4, 0, 1], [0, 0, 1, 1, 1, 2, 2])
>>> extend_rows(np.array([0, 0, 1, 1, 1]), 2, "group_size", 2)[0].tolist()
[0, 1, 2, 3]
"""
from __future__ import annotations

import numpy as np

from multilevel.engine.input import EngineInput, TermInput
from multilevel.errors import ModelSpecError

__all__ = ["ALONG", "extend_rows", "extend_input"]

#: the ways a design can grow
ALONG = ("n_groups", "group_size")


def _rows_by_group(refs: np.ndarray, n_levels: int) -> list[np.ndarray]:
    order = np.argsort(refs, kind="stable")
    counts = np.bincount(refs, minlength=n_levels)
    return np.split(order, np.cumsum(counts)[:-1])


def extend_rows(refs: np.ndarray, n_levels: int, along: str, value: int) -> tuple[np.ndarray, np.ndarray]:
    """The rows of the new design (positions in the fitted rows) and the level of the
    extended grouping factor of each, for ``along`` ("n_groups" or "group_size") = value."""
    refs = np.asarray(refs, dtype=np.int64)
    value = int(value)
    if along not in ALONG:
        raise ModelSpecError(f"along must be one of {', '.join(map(repr, ALONG))}, not {along!r}")
    if value < 1:
        raise ModelSpecError(f"values along {along} must be >= 1, not {value}")
    groups = _rows_by_group(refs, n_levels)
    if along == "n_groups":
        src = [groups[k % n_levels] for k in range(value)]
        new_refs = [np.full(len(g), k, dtype=np.int64) for k, g in enumerate(src)]
    else:
        src = [g[np.arange(value) % len(g)] for g in groups if len(g)]
        new_refs = [np.full(value, j, dtype=np.int64) for j in range(len(src))]
    return np.concatenate(src), np.concatenate(new_refs)


def _compress(refs: np.ndarray) -> tuple[np.ndarray, int]:
    """Levels renumbered 0, 1, ... in order of their first code (unused levels go)."""
    used, inv = np.unique(refs, return_inverse=True)
    return inv.astype(np.uint32), int(used.size)


def _nested_in(inner: np.ndarray, outer: np.ndarray) -> bool:
    """Each level of ``inner`` occurs with one level of ``outer`` only."""
    pairs = np.unique(np.stack([inner, outer], axis=1), axis=0)
    return pairs.shape[0] == np.unique(inner).size


def extend_input(inp: EngineInput, group_refs: np.ndarray, n_levels: int, along: str, value: int,
                 what: str = "") -> EngineInput:
    """The engine input of the design extended along the grouping factor whose level of each
    fitted row is ``group_refs`` (``n_levels`` levels) to ``value`` groups or rows per group
    (module docstring). ``inp`` is any model of the same rows: its terms whose references are
    ``group_refs`` are the extended factor's."""
    g_refs = np.asarray(group_refs, dtype=np.int64)
    src, new_g = extend_rows(g_refs, n_levels, along, value)
    copy = np.zeros(src.size, dtype=np.int64)
    if along == "n_groups":
        copy = np.concatenate([np.full(int(np.sum(g_refs == k % n_levels)), k // n_levels)
                               for k in range(int(value))])
    new_terms = []
    for t in inp.terms:
        r = np.asarray(t.refs, dtype=np.int64)
        if np.array_equal(r, g_refs):
            refs, nlev = new_g.astype(np.uint32), int(new_g.max()) + 1
        else:
            r_new = r[src]
            if along == "n_groups" and _nested_in(r, g_refs):
                r_new = r_new + copy * t.n_levels  # the copies' own classes
            refs, nlev = _compress(r_new)
        new_terms.append(TermInput(refs=np.ascontiguousarray(refs), Z=np.ascontiguousarray(t.Z[src]),
                                   n_levels=nlev, factor=t.factor, structure=t.structure))
    X = np.ascontiguousarray(inp.X[src])
    label = what or f"{along} = {value}"
    rank = np.linalg.matrix_rank(X) if X.shape[1] else 0
    if rank < X.shape[1]:
        raise ModelSpecError(f"the design with {label} cannot estimate every fixed effect (its "
                             f"X has rank {rank} < {X.shape[1]} columns); use larger values")
    n = src.size
    for t in new_terms:
        if t.n_levels * t.Z.shape[1] >= n:
            raise ModelSpecError(f"the design with {label} has {n} observations for "
                                 f"{t.n_levels * t.Z.shape[1]} random effects of one term; "
                                 f"the model cannot be fitted (use larger values)")
    sub = (lambda a: None if a is None else np.ascontiguousarray(a[src]))
    return EngineInput(y=np.ascontiguousarray(inp.y[src]), X=X, terms=tuple(new_terms),
                       weights=sub(inp.weights), offset=sub(inp.offset), intercept=inp.intercept)
