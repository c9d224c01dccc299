"""The keyword arguments of the fitting functions: R's spellings and a clear error for a typo.

Layer: models. Imports only ``multilevel.errors``.

lme4 users type ``REML = FALSE`` and ``nAGQ = 25``; Python would answer with a bare
``TypeError``. :func:`r_arguments` wraps a fitting function so that R's spelling of an
argument is accepted as an alias of ours, and any other call that does not match the
signature (an unknown keyword, a missing argument) raises
:class:`~multilevel.errors.ArgumentError` (a ``MultilevelError`` and a ``TypeError``) that
names the argument and, for a typo, the nearest one (difflib).

>>> @r_arguments(REML="reml")
... def fit(formula, data, reml=True, weights=None):
...     return reml
>>> fit("y ~ x", None, REML=False)
False
>>> fit("y ~ x", None, weight="w")
Traceback (most recent call last):
...
multilevel.errors.ArgumentError: fit() got an unexpected keyword argument 'weight'; did you mean 'weights'?
"""
from __future__ import annotations

import difflib
import functools
import inspect
from typing import Any, Callable, TypeVar

from multilevel.errors import ArgumentError

__all__ = ["r_arguments"]

F = TypeVar("F", bound=Callable[..., Any])


def _unknown(func: str, name: str, public: list[str], aliases: dict[str, str]) -> ArgumentError:
    # match case-insensitively: R's spellings differ from ours mostly in case (nAGQ, REML)
    lower = {p.lower(): p for p in [*public, *aliases]}
    close = difflib.get_close_matches(name.lower(), list(lower), n=1, cutoff=0.6)
    hint = ""
    if close:
        best = lower[close[0]]
        hint = f"; did you mean {aliases.get(best, best)!r}?"
    return ArgumentError(f"{func}() got an unexpected keyword argument {name!r}{hint}")


def r_arguments(**aliases: str) -> Callable[[F], F]:
    """Decorate a function: accept ``alias=`` (R's spelling) for each ``alias="ours"`` given,
    and raise ``ArgumentError`` for a call that does not fit the signature."""

    def decorate(fn: F) -> F:
        sig = inspect.signature(fn)
        params = set(sig.parameters)
        public = [p for p in sig.parameters if not p.startswith("_")]
        name = fn.__name__

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            for key in [k for k in kwargs if k not in params]:
                if key not in aliases:
                    raise _unknown(name, key, public, aliases)
                ours = aliases[key]
                if ours in kwargs:
                    raise ArgumentError(f"{name}() got both {key}= and {ours}=; {key} is R's "
                                        f"spelling of {ours}, give one of them")
                kwargs[ours] = kwargs.pop(key)
            try:
                return fn(*args, **kwargs)
            except TypeError:
                # missing or repeated arguments: name them in our error (bound only after a
                # TypeError: binding every call costs more than a small fit can spare)
                try:
                    sig.bind(*args, **kwargs)
                except TypeError as e:
                    raise ArgumentError(f"{name}(): {e}") from None
                raise

        return wrapper  # type: ignore[return-value]

    return decorate
