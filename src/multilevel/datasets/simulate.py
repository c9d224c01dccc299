"""Seeded simulators of classic teaching data for multilevel models.

Each function draws a data set from a documented generating model, so that estimates can be
compared with the true values. With the default seed they give the data sets that
``multilevel.datasets.load("popularity")``, ``load("salaries")`` and ``load("nurses")``
return. The data are *simulated*: they imitate the design and the published estimates of the
originals (Hox's pupils' popularity, a faculty-salary example, Hox's nurses' turnover
intention) but are not those data.

Grouping columns and other factors are pandas categoricals (the first category is the
reference level); counts are int64.

Example
-------
>>> from multilevel.datasets.simulate import simulate_popularity
>>> pop = simulate_popularity(seed=1)
>>> pop.shape, pop["class"].nunique()
((2000, 6), 100)
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import pandas as pd

from multilevel.errors import DataError

__all__ = ["simulate_popularity", "simulate_salaries", "simulate_nurses", "simulate_two_level",
           "SIMULATED", "DEFAULT_SEED"]

#: The seed of the data sets returned by ``datasets.load``.
DEFAULT_SEED = 20240501


def _numbered(prefix: str, n: int) -> pd.Categorical:
    """Labels "1", "2", ... (or "H01", ...) as a categorical in numeric order."""
    width = len(str(n)) if prefix else 0
    labels = [f"{prefix}{i:0{width}d}" if prefix else str(i) for i in range(1, n + 1)]
    return pd.Categorical(labels, categories=labels)


def _sizes(rng: np.random.Generator, n_groups: int, mean_size: int, spread: int,
           balanced: bool) -> np.ndarray:
    """Group sizes with total n_groups * mean_size: mean_size - spread plus a multinomial
    share of the rest, so sizes vary by about ± spread around the mean."""
    if balanced or spread <= 0:
        return np.full(n_groups, mean_size, dtype=np.int64)
    base = max(1, mean_size - spread)
    rest = n_groups * mean_size - base * n_groups
    return base + rng.multinomial(rest, np.full(n_groups, 1.0 / n_groups)).astype(np.int64)


def simulate_popularity(seed: int = DEFAULT_SEED, n_classes: int = 100, class_size: int = 20,
                        balanced: bool = False) -> pd.DataFrame:
    """Pupils' popularity in school classes (the design of Hox's ``popular2`` data).

    Generating model, for pupil i in class j (parameters close to Hox, *Multilevel
    Analysis*, 2nd ed., table 2.3, model with the cross-level interaction)::

        popular_ij = -1.21 + 0.80 extrav_ij + 1.24 girl_ij + 0.23 texp_j
                     - 0.025 extrav_ij * texp_j + u0_j + u1_j extrav_ij + e_ij
        (u0_j, u1_j) ~ N(0, [[0.45, -0.03], [-0.03, 0.005]])   (SDs 0.67, 0.071; corr -0.63)
        e_ij ~ N(0, 0.55)

    with extraversion ``extrav`` = round(N(5, 1.5²)) limited to 1..10, sex girl/boy with
    probability 1/2, teacher experience ``texp`` (years, a level-2 variable) uniform on
    2..25, and popularity rounded to one decimal and limited to the 1..10 scale (rarely
    binding). Class sizes are ``class_size - 4`` plus an equal-probability multinomial share
    of the remaining pupils (16 to about 26 for the defaults; total exactly
    ``n_classes * class_size``); ``balanced=True`` makes every class ``class_size``.

    Columns: ``pupil`` (number within class), ``class`` (categorical), ``extrav``,
    ``sex`` (categorical boy, girl: coefficient ``sexgirl``), ``texp``, ``popular``.

    >>> simulate_popularity(seed=3, n_classes=4, class_size=5, balanced=True).shape
    (20, 6)
    """
    rng = np.random.default_rng(seed)
    sizes = _sizes(rng, n_classes, class_size, 4, balanced)
    n = int(sizes.sum())
    cls = np.repeat(np.arange(n_classes), sizes)
    texp = rng.integers(2, 26, size=n_classes)
    cov = np.array([[0.45, -0.03], [-0.03, 0.005]])
    u = rng.multivariate_normal(np.zeros(2), cov, size=n_classes)
    extrav = np.clip(np.round(rng.normal(5.0, 1.5, size=n)), 1, 10).astype(np.int64)
    girl = rng.random(n) < 0.5
    t = texp[cls]
    mu = (-1.21 + 0.80 * extrav + 1.24 * girl + 0.23 * t - 0.025 * extrav * t
          + u[cls, 0] + u[cls, 1] * extrav)
    popular = np.clip(np.round(mu + rng.normal(0.0, np.sqrt(0.55), size=n), 1), 1.0, 10.0)
    labels = _numbered("", n_classes)
    return pd.DataFrame({
        "pupil": np.concatenate([np.arange(1, s + 1) for s in sizes]).astype(np.int64),
        "class": pd.Categorical.from_codes(cls, categories=list(labels.categories)),
        "extrav": extrav,
        "sex": pd.Categorical(np.where(girl, "girl", "boy"), categories=["boy", "girl"]),
        "texp": texp[cls].astype(np.int64),
        "popular": popular,
    })


_DEPARTMENTS = ["Biology", "Chemistry", "Economics", "English", "History", "Informatics",
                "Mathematics", "Physics", "Psychology", "Sociology"]


def simulate_salaries(seed: int = DEFAULT_SEED, n_departments: int = 10,
                      faculty_per_department: int = 20) -> pd.DataFrame:
    """Faculty salaries by department and years of experience (random intercepts and slopes).

    Generating model, for faculty member i in department j::

        salary_ij = 55000 + 1500 experience_ij + u0_j + u1_j experience_ij + e_ij
        (u0_j, u1_j) ~ N(0, [[8000², 0.3·8000·400], [., 400²]])
        e_ij ~ N(0, 5000²)

    Departments start at different salaries and reward experience differently (SD 8000 of
    the starting salary, SD 400 of the yearly raise, correlation 0.3). Experience is uniform
    on 0..35 years; salaries are rounded to 100. Department sizes vary around
    ``faculty_per_department``: half of it plus a multinomial share of the rest (about 10 to
    30 for the defaults; total exactly ``n_departments * faculty_per_department``).

    Columns: ``department`` (categorical, alphabetical), ``experience``, ``salary``.

    >>> simulate_salaries(seed=1)["department"].nunique()
    10
    """
    rng = np.random.default_rng(seed)
    sizes = _sizes(rng, n_departments, faculty_per_department, faculty_per_department // 2,
                   False)
    n = int(sizes.sum())
    dept = np.repeat(np.arange(n_departments), sizes)
    sd0, sd1, rho = 8000.0, 400.0, 0.3
    cov = np.array([[sd0 ** 2, rho * sd0 * sd1], [rho * sd0 * sd1, sd1 ** 2]])
    u = rng.multivariate_normal(np.zeros(2), cov, size=n_departments)
    exper = rng.integers(0, 36, size=n)
    salary = 55000 + 1500 * exper + u[dept, 0] + u[dept, 1] * exper + rng.normal(0, 5000, n)
    names = _DEPARTMENTS[:n_departments] + [f"Department {k}" for k in
                                            range(len(_DEPARTMENTS) + 1, n_departments + 1)]
    return pd.DataFrame({
        "department": pd.Categorical.from_codes(dept, categories=names),
        "experience": exper.astype(np.int64),
        "salary": np.round(salary, -2),
    })


def simulate_nurses(seed: int = DEFAULT_SEED, n_hospitals: int = 18) -> pd.DataFrame:
    """Nurses' intention to leave their hospital (binary), 78 nurses per hospital on average.

    Design after Hox's nurses example (binary turnover intention; nurses nested in
    hospitals; hospital location as a level-2 predictor). For nurse i in hospital j, with
    hospital sizes of 60 plus a multinomial share of the rest (about 70 to 90 nurses; 1404
    nurses in 18 hospitals)::

        logit P(leave_ij = 1) = -0.6 - 0.04 (age_ij - 40) + 0.3 male_ij
                                - 0.3 partner_ij - 0.6 children_ij
                                - 0.7 (valued_ij - 3) - 0.03 (experience_ij - 10)
                                + 0.5 inner_j + u_j,          u_j ~ N(0, 0.5²)

    Half the hospitals (chosen at random) are in the inner city (``location`` inner/outer,
    constant within hospital). Nurses: age uniform on 22..62 years, experience uniform on
    0..(age - 21) years (both whole years), 85 % female, family situation single / partner /
    children with probabilities 0.3 / 0.3 / 0.4, and ``valued`` (feeling valued by the
    management, a 1-5 scale score) = 3 + v_j + N(0, 0.7²) with a hospital climate
    v_j ~ N(0, 0.3²), rounded to 0.1 and limited to 1..5.

    Columns: ``hospital`` (categorical H01, ...), ``location`` (categorical outer, inner:
    coefficient ``locationinner``), ``nurse``, ``age``, ``sex`` (female, male),
    ``family`` (single, partner, children), ``experience``, ``valued``, ``leave`` (0/1).

    >>> d = simulate_nurses(seed=1)
    >>> d["hospital"].nunique(), len(d)
    (18, 1404)
    """
    rng = np.random.default_rng(seed)
    sizes = _sizes(rng, n_hospitals, 78, 18, False)
    n = int(sizes.sum())
    hosp = np.repeat(np.arange(n_hospitals), sizes)
    inner_h = np.zeros(n_hospitals, dtype=bool)
    inner_h[rng.permutation(n_hospitals)[: n_hospitals // 2]] = True
    u = rng.normal(0.0, 0.5, size=n_hospitals)
    climate = rng.normal(0.0, 0.3, size=n_hospitals)
    age = rng.integers(22, 63, size=n)
    exper = np.floor(rng.random(n) * (age - 21 + 1)).astype(np.int64)
    male = rng.random(n) < 0.15
    family = rng.choice(3, size=n, p=[0.3, 0.3, 0.4])
    valued = np.clip(np.round(3.0 + climate[hosp] + rng.normal(0.0, 0.7, size=n), 1), 1.0, 5.0)
    inner = inner_h[hosp]
    eta = (-0.6 - 0.04 * (age - 40) + 0.3 * male - 0.3 * (family == 1) - 0.6 * (family == 2)
           - 0.7 * (valued - 3.0) - 0.03 * (exper - 10) + 0.5 * inner + u[hosp])
    leave = (rng.random(n) < 1.0 / (1.0 + np.exp(-eta))).astype(np.int64)
    return pd.DataFrame({
        "hospital": pd.Categorical.from_codes(hosp, categories=list(
            _numbered("H", n_hospitals).categories)),
        "location": pd.Categorical(np.where(inner, "inner", "outer"),
                                   categories=["outer", "inner"]),
        "nurse": np.concatenate([np.arange(1, s + 1) for s in sizes]).astype(np.int64),
        "age": age.astype(np.int64),
        "sex": pd.Categorical(np.where(male, "male", "female"), categories=["female", "male"]),
        "family": pd.Categorical.from_codes(family, categories=["single", "partner", "children"]),
        "experience": exper,
        "valued": valued,
        "leave": leave,
    })


def _check(name: str, value: float, *, low: float, high: float = np.inf, integer: bool = False) -> None:
    """A simulator argument in [low, high] (an integer when ``integer``), else a DataError
    naming it."""
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    ok = ok and np.isfinite(value) and low <= value <= high
    if integer:
        ok = ok and float(value) == int(value)
    if not ok:
        kind = "an integer" if integer else "a number"
        rng_text = f">= {low:g}" if high == np.inf else f"in [{low:g}, {high:g}]"
        raise DataError(f"{name} must be {kind} {rng_text}, got {value!r}")


def simulate_two_level(n_groups: int = 20, group_size: int = 20, *, unequal: bool = False,
                       tau0: float = 1.0, tau1: float = 0.0, corr: float = 0.0,
                       sigma: float = 1.0, beta0: float = 0.0, beta1: float = 0.5,
                       gamma: float = 0.0, seed: int = DEFAULT_SEED) -> pd.DataFrame:
    """A generic two-level data set whose generating model you set (the explorer's sliders).

    For row i in group j::

        y_ij = beta0 + beta1 x_ij + gamma w_j + u0_j + u1_j x_ij + e_ij
        (u0_j, u1_j) ~ N(0, [[tau0², corr·tau0·tau1], [., tau1²]]),   e_ij ~ N(0, sigma²)

    with a level-1 predictor x_ij ~ N(0, 1) and a level-2 predictor w_j ~ N(0, 1). Groups
    have ``group_size`` rows each, or with ``unequal=True`` about a quarter of it (at least
    1) plus a multinomial share of the rest, so sizes range from a few rows to about twice
    the mean (total exactly ``n_groups * group_size``).

    Columns: ``group`` (categorical ``g01``, ...), ``x``, ``w``, ``y``. The same arguments
    give the same data; a bad argument is a ``DataError`` naming it.

    >>> d = simulate_two_level(n_groups=5, group_size=4, seed=1)
    >>> d.shape, d["group"].nunique(), list(d.columns)
    ((20, 4), 5, ['group', 'x', 'w', 'y'])
    """
    _check("n_groups", n_groups, low=1, integer=True)
    _check("group_size", group_size, low=1, integer=True)
    for name, value in (("tau0", tau0), ("tau1", tau1), ("sigma", sigma)):
        _check(name, value, low=0.0)
    _check("corr", corr, low=-1.0, high=1.0)
    for name, value in (("beta0", beta0), ("beta1", beta1), ("gamma", gamma)):
        _check(name, value, low=-np.inf)
    _check("seed", seed, low=0, integer=True)
    J, m = int(n_groups), int(group_size)
    rng = np.random.default_rng(int(seed))
    sizes = _sizes(rng, J, m, m - max(1, m // 4), not unequal)
    g = np.repeat(np.arange(J), sizes)
    # u from independent normals through the Cholesky factor of the 2 x 2 covariance, which
    # also works at |corr| = 1 and zero SDs (multivariate_normal warns there)
    z = rng.standard_normal((J, 2))
    u0 = tau0 * z[:, 0]
    u1 = tau1 * (corr * z[:, 0] + np.sqrt(max(0.0, 1.0 - corr * corr)) * z[:, 1])
    w = rng.standard_normal(J)
    x = rng.standard_normal(g.size)
    y = (beta0 + beta1 * x + gamma * w[g] + u0[g] + u1[g] * x
         + sigma * rng.standard_normal(g.size))
    labels = list(_numbered("g", J).categories)
    return pd.DataFrame({"group": pd.Categorical.from_codes(g, categories=labels),
                         "x": x, "w": w[g], "y": y})



#: name -> simulator, for ``datasets.load``; the descriptions and sizes that
#: ``list_datasets`` shows are in ``multilevel.datasets`` (listing loads no numpy).
SIMULATED: dict[str, Callable[..., pd.DataFrame]] = {
    "popularity": simulate_popularity,
    "salaries": simulate_salaries,
    "nurses": simulate_nurses,
}
