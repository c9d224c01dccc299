"""Names as R makes them: ``make.names(unique = TRUE)`` for lme4's VarCorr block names.

Layer: results (the fit objects name their variance blocks with it; the report layer
imports it from here).

Example
-------
>>> make_unique_names(["cask:batch", "cask:batch"])
['cask.batch', 'cask.batch.1']
"""
from __future__ import annotations

from collections.abc import Sequence

__all__ = ["make_unique_names"]


def make_unique_names(names: Sequence[str]) -> list[str]:
    """lme4's VarCorr block names: ``make.names(nms, unique = TRUE)`` if any name repeats.

    >>> make_unique_names(["Subject", "Subject"])
    ['Subject', 'Subject.1']
    >>> make_unique_names(["Subject", "Days"])
    ['Subject', 'Days']
    """
    names = list(names)
    if len(set(names)) == len(names):
        return names
    out = []
    for nm in names:
        s = "".join(c if (c.isalnum() or c in "._") else "." for c in nm)
        if not s or not (s[0].isalpha() or (s[0] == "." and not (len(s) > 1 and s[1].isdigit()))):
            s = "X" + s
        out.append(s)
    # make.unique: later duplicates get .1, .2, ... skipping names already taken
    seen: dict[str, int] = {}
    taken = set(out)
    result = []
    for s in out:
        if s in seen:
            k = seen[s]
            while True:
                k += 1
                cand = f"{s}.{k}"
                if cand not in taken:
                    break
            seen[s] = k
            taken.add(cand)
            result.append(cand)
        else:
            seen[s] = 0
            result.append(s)
    return result
