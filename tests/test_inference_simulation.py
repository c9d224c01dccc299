"""Coverage study (slow): 95% profile and parametric-bootstrap intervals for a fixed effect
should cover the true value in about 95% of data sets simulated from the model."""
from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pytest

import multilevel as ml
from multilevel.inference import bootstrap, confint

N_DATA = 200
N_BOOT = 200
TRUE_SLOPE = 2.0


def _datasets(seed: int = 20240601):
    rng = np.random.default_rng(seed)
    groups, per = 20, 8
    g = np.repeat(np.arange(groups), per)
    x = np.tile(np.linspace(0.0, 5.0, per), groups)
    for _ in range(N_DATA):
        b = rng.normal(0.0, 2.0, groups)
        y = 10.0 + TRUE_SLOPE * x + b[g] + rng.normal(0.0, 3.0, g.size)
        yield pd.DataFrame({"y": y, "x": x, "g": pd.Categorical([f"g{i:02d}" for i in g])})


@pytest.mark.slow
def test_profile_and_bootstrap_coverage():
    hit_prof = hit_boot = 0
    for k, df in enumerate(_datasets()):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fit = ml.lmer("y ~ x + (1 | g)", df)
        lo, hi = confint(fit, method="profile", which=["x"]).loc["x"]
        hit_prof += lo <= TRUE_SLOPE <= hi
        reps = bootstrap(fit, N_BOOT, seed=k, progress=False)
        blo, bhi = np.quantile(reps["x"], [0.025, 0.975])
        hit_boot += blo <= TRUE_SLOPE <= bhi
    expected, sd = 0.95 * N_DATA, math.sqrt(0.95 * 0.05 * N_DATA)
    # within three binomial standard errors of 95%
    assert abs(hit_prof - expected) <= 3 * sd, hit_prof
    assert abs(hit_boot - expected) <= 3 * sd, hit_boot
