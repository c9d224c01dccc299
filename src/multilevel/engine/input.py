"""What an engine is given: arrays only.

Layer: engine. An :class:`EngineInput` holds the response, the fixed-effects matrix, the
random-effect terms (each: the level of every row, its columns of Z, the number of levels, the
grouping factor it belongs to and its covariance structure), prior weights and an offset, and
the position of the intercept column. No data frame, formula or column name reaches an engine;
the models layer builds the input from a model frame (``multilevel.models.engine_input``).

Inputs can be built from row chunks (:meth:`EngineInput.from_chunks`), which is how data that
arrive in pieces (Arrow batches, Dask partitions) reach the same engine.

>>> import numpy as np
>>> from multilevel.covariance import Unstructured
>>> t = TermInput(refs=np.array([0, 0, 1, 1], dtype=np.uint32), Z=np.ones((4, 1)), n_levels=2,
...               factor=0, structure=Unstructured(1))
>>> inp = EngineInput(y=np.arange(4.0), X=np.ones((4, 1)), terms=(t,), intercept=0)
>>> inp.nobs, inp.p, [s.size for s in inp.structures]
(4, 1, [1])
>>> EngineInput.from_chunks([inp, inp]).nobs
8
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Iterable

import numpy as np

from multilevel.covariance import Covariance
from multilevel.errors import DataError

__all__ = ["TermInput", "EngineInput"]


@dataclass(frozen=True, eq=False)
class TermInput:
    """One random-effect term (lme4's block): ``Z`` (n, s), the level ``refs`` (n,) of each
    row, ``n_levels``, the grouping ``factor`` (terms with the same id share one engine term,
    so that ``(1|g) + (0+x|g)`` stays block diagonal) and its covariance ``structure``."""

    refs: np.ndarray
    Z: np.ndarray
    n_levels: int
    factor: int
    structure: Covariance

    def __post_init__(self) -> None:
        if self.Z.ndim != 2 or self.refs.shape[0] != self.Z.shape[0]:
            raise DataError(f"a random-effect term needs Z of shape (n, s) and n level references; "
                            f"got Z {self.Z.shape} and {self.refs.shape[0]} references")
        if self.structure.size != self.Z.shape[1]:
            raise DataError(f"the covariance structure {self.structure!r} does not fit a term with "
                            f"{self.Z.shape[1]} columns")


@dataclass(frozen=True, eq=False)
class EngineInput:
    """The arrays of one mixed model (see the module docstring)."""

    y: np.ndarray
    X: np.ndarray
    terms: tuple[TermInput, ...]
    weights: np.ndarray | None = None
    offset: np.ndarray | None = None
    #: index of the intercept column of X (None without one): the LMM engine centres the
    #: response when there is one, which keeps the penalised RSS accurate
    intercept: int | None = None

    def __post_init__(self) -> None:
        n = self.y.shape[0]
        if self.X.shape[0] != n:
            raise DataError(f"X has {self.X.shape[0]} rows, y has {n}")
        for what, a in (("weights", self.weights), ("offset", self.offset)):
            if a is not None and a.shape[0] != n:
                raise DataError(f"{what} has {a.shape[0]} values, y has {n}")
        for t in self.terms:
            if t.refs.shape[0] != n:
                raise DataError(f"a random-effect term has {t.refs.shape[0]} rows, y has {n}")

    @property
    def nobs(self) -> int:
        return int(self.y.shape[0])

    @property
    def p(self) -> int:
        return int(self.X.shape[1])

    @property
    def structures(self) -> list[Covariance]:
        """The covariance structure of each term, in the terms' (lme4's) order."""
        return [t.structure for t in self.terms]

    def replace(self, **changes) -> EngineInput:
        """A copy with some arrays replaced (a new response, other fixed-effect columns)."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_chunks(cls, chunks: Iterable[EngineInput]) -> EngineInput:
        """One input from row chunks that share the model's structure (the same terms,
        levels, covariance structures and intercept); the rows are stacked in order."""
        parts = list(chunks)
        if not parts:
            raise DataError("no row chunks given")
        first = parts[0]
        for c in parts[1:]:
            same = (len(c.terms) == len(first.terms) and c.p == first.p and c.intercept == first.intercept
                    and all(a.n_levels == b.n_levels and a.factor == b.factor and a.structure == b.structure
                            and a.Z.shape[1] == b.Z.shape[1] for a, b in zip(c.terms, first.terms))
                    and (c.weights is None) == (first.weights is None)
                    and (c.offset is None) == (first.offset is None))
            if not same:
                raise DataError("row chunks of one model must share its structure (terms, levels, "
                                "columns of X, weights and offset)")

        def cat(get) -> np.ndarray | None:
            arrays = [get(c) for c in parts]
            return None if arrays[0] is None else np.concatenate(arrays)

        terms = tuple(dataclasses.replace(t, refs=cat(lambda c, k=k: c.terms[k].refs),
                                          Z=cat(lambda c, k=k: c.terms[k].Z))
                      for k, t in enumerate(first.terms))
        return cls(y=cat(lambda c: c.y), X=np.concatenate([c.X for c in parts]), terms=terms,
                   weights=cat(lambda c: c.weights), offset=cat(lambda c: c.offset),
                   intercept=first.intercept)


