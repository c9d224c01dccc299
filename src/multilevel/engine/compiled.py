"""The base of engine problems that hold a compiled core.

Layer: engine. The compiled cores (``multilevel._core``) cannot be pickled; a problem keeps
the arrays they are built from and rebuilds its core lazily, so fits can be saved, copied
and sent to other processes.
"""
from __future__ import annotations

from typing import Any

__all__ = ["CompiledProblem"]


class CompiledProblem:
    """A problem whose compiled core cannot be pickled: subclasses keep the arrays the core is
    built from and implement ``_build_core``; the core is rebuilt on first use after
    unpickling or copying (``core``)."""

    _core: Any = None

    def _build_core(self) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def core(self) -> Any:
        """The compiled engine; built from the stored arrays on first use after unpickling."""
        if self._core is None:
            self._core = self._build_core()
        return self._core

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_core"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._core = None
