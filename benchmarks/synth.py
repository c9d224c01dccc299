"""Seeded synthetic benchmark data generated here rather than stored (``cases.find_file``
calls :func:`ensure` for a file it does not find): the three-level case of issue 13.

``synth_3level.csv.gz``: 1,000,000 pupils in 20,000 classes (50 pupils each) in 2,000 schools
(10 classes each); class labels are unique across schools (``c00001`` ... ``c20000``), so
``(1 | school)`` and ``(1 + x | class)`` describe class nested in school without ``/``. The
rows are shuffled so that no tool profits from data sorted by group. Generating model::

    x ~ N(0, 1)
    school effect ~ N(0, 0.5^2)
    class effects (intercept, slope of x) ~ N(0, [[0.8^2, .2 * 0.8 * 0.4], [.2 * 0.8 * 0.4, 0.4^2]])
    y = 1 + 0.5 x + school + class_0 + class_1 x + N(0, 1)

Values are rounded to 6 decimals before writing (as in ``bench/synth``), so R and Python read
exactly the same numbers. NumPy's PCG64 ``default_rng(seed)`` makes the file the same on every
machine; it is written to ``benchmarks/data/`` (git-ignored) once and reused.

    python benchmarks/synth.py            # (re)generate every file
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

DATA_DIR = Path(__file__).resolve().parent / "data"


def three_level(seed: int = 131, n_school: int = 2_000, classes_per_school: int = 10,
                pupils_per_class: int = 50) -> pd.DataFrame:
    """The pupils of ``synth_3level`` (see the module docstring) as a data frame."""
    rng = np.random.default_rng(seed)
    n_class = n_school * classes_per_school
    n = n_class * pupils_per_class
    school_of_class = np.repeat(np.arange(n_school), classes_per_school)
    u_school = rng.normal(0.0, 0.5, n_school)
    sd = np.array([0.8, 0.4])
    cov = np.outer(sd, sd) * np.array([[1.0, 0.2], [0.2, 1.0]])
    u_class = rng.multivariate_normal([0.0, 0.0], cov, size=n_class)
    cls = rng.permutation(np.repeat(np.arange(n_class), pupils_per_class))
    x = np.round(rng.normal(size=n), 6)
    sch = school_of_class[cls]
    y = 1.0 + 0.5 * x + u_school[sch] + u_class[cls, 0] + u_class[cls, 1] * x + rng.normal(size=n)
    return pd.DataFrame({
        "y": np.round(y, 6),
        "x": x,
        "class": np.char.add("c", np.char.zfill((cls + 1).astype(str), 5)),
        "school": np.char.add("s", np.char.zfill((sch + 1).astype(str), 4)),
    })


GENERATORS: dict[str, Callable[[], pd.DataFrame]] = {"synth_3level.csv.gz": three_level}


def ensure(name: str) -> Path | None:
    """The path of generated file ``name``, written first if it is not there yet; None if no
    generator makes that file."""
    make = GENERATORS.get(name)
    if make is None:
        return None
    path = DATA_DIR / name
    if not path.is_file():
        DATA_DIR.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        # compresslevel 1: the file is a cache; level 9 would triple the time for 20% less
        make().to_csv(tmp, index=False, compression={"method": "gzip", "compresslevel": 1,
                                                     "mtime": 0})
        tmp.replace(path)  # a half-written file never looks complete
    return path


if __name__ == "__main__":
    for name in GENERATORS:
        p = DATA_DIR / name
        p.unlink(missing_ok=True)
        print(ensure(name), file=sys.stderr)
