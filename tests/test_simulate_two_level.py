"""The generic two-level simulator (the explorer's simulated data): design, determinism,
argument checks, and that lmer recovers the generating parameters."""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

import multilevel as ml
from multilevel.datasets.simulate import simulate_two_level
from multilevel.errors import DataError


def test_design_equal_and_unequal_sizes():
    d = simulate_two_level(n_groups=20, group_size=20, seed=3)
    assert list(d.columns) == ["group", "x", "w", "y"]
    assert isinstance(d["group"].dtype, pd.CategoricalDtype)
    assert list(d["group"].cat.categories[:2]) == ["g01", "g02"]
    sizes = d.groupby("group", observed=True).size()
    assert (sizes == 20).all() and len(sizes) == 20
    # w is a level-2 predictor: constant within groups
    assert (d.groupby("group", observed=True)["w"].nunique() == 1).all()
    u = simulate_two_level(n_groups=30, group_size=20, unequal=True, seed=3)
    us = u.groupby("group", observed=True).size()
    assert us.sum() == 600 and len(us) == 30 and us.min() >= 5 and us.max() > us.min() + 5


def test_seeded_runs_reproduce_and_seeds_differ():
    a = simulate_two_level(n_groups=8, group_size=5, tau1=0.3, corr=0.5, seed=11)
    b = simulate_two_level(n_groups=8, group_size=5, tau1=0.3, corr=0.5, seed=11)
    c = simulate_two_level(n_groups=8, group_size=5, tau1=0.3, corr=0.5, seed=12)
    pd.testing.assert_frame_equal(a, b)
    assert not np.allclose(a["y"], c["y"])


@pytest.mark.parametrize("kw, name", [({"n_groups": 0}, "n_groups"), ({"group_size": 2.5}, "group_size"),
                                      ({"tau0": -1}, "tau0"), ({"sigma": float("nan")}, "sigma"),
                                      ({"corr": 1.5}, "corr"), ({"seed": -1}, "seed"),
                                      ({"beta1": "a"}, "beta1")])
def test_bad_arguments_name_themselves(kw, name):
    with pytest.raises(DataError, match=name):
        simulate_two_level(**kw)


def test_edge_values_are_allowed():
    # perfect correlation and zero SDs are valid generating models (singular ones)
    d = simulate_two_level(n_groups=4, group_size=3, tau0=0.0, tau1=0.0, corr=1.0, sigma=0.0,
                           beta0=2.0, beta1=1.0)
    assert np.allclose(d["y"], 2.0 + d["x"])


def test_lmer_recovers_the_generating_model():
    d = simulate_two_level(n_groups=300, group_size=30, tau0=2.0, tau1=0.5, corr=-0.4,
                           sigma=1.5, beta0=10.0, beta1=1.0, gamma=0.8, seed=5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = ml.lmer("y ~ x + w + (x | group)", d)
    fe = fit.fixef
    assert abs(fe["(Intercept)"] - 10.0) < 3 * fit.se["(Intercept)"]
    assert abs(fe["x"] - 1.0) < 3 * fit.se["x"]
    assert abs(fe["w"] - 0.8) < 3 * fit.se["w"]
    vc = fit.varcorr[0]
    sd = vc.sd.to_numpy()
    assert abs(sd[0] - 2.0) < 0.3 and abs(sd[1] - 0.5) < 0.1
    assert abs(vc.corr[1, 0] + 0.4) < 0.2
    assert abs(fit.sigma - 1.5) < 0.05
