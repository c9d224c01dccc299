"""One module per family: the registry and the family-owned response checks."""
from __future__ import annotations

import numpy as np
import pytest

from multilevel.errors import DataError
from multilevel.families import (_FAMILIES, LINKS, Family, Gamma, Link, binomial, get_family, inverse_gaussian,
                                 negative_binomial, poisson)


def test_registry_maps_names_to_classes():
    assert _FAMILIES == {"binomial": binomial, "poisson": poisson, "Gamma": Gamma,
                         "inverse.gaussian": inverse_gaussian, "negative.binomial": negative_binomial}
    for name, cls in _FAMILIES.items():
        kw = {"theta": 1.5} if name == "negative.binomial" else {}
        assert issubclass(cls, Family) and get_family(name, **kw).name == name
        for alias in cls.aliases:  # R's spelling and the snake_case alias give the same family
            assert get_family(alias, **kw) == get_family(name, **kw)
        assert all(isinstance(LINKS[k], Link) for k in cls.links)


def test_binomial_owns_its_response_rules():
    fam = binomial()
    with pytest.raises(DataError, match="outside"):
        fam.check_response(np.array([0.0, 2.0]), None, None, False, name="y")
    with pytest.raises(DataError, match="0/1"):
        fam.check_response(np.array([0.0, 0.5]), None, None, False, name="y")
    with pytest.raises(DataError, match="3 levels"):
        fam.check_response(np.array([0.0, 1.0]), None, ["a", "b", "c"], False, name="y")
    assert fam.check_response(np.array([0.0, 1.0]), None, ["a", "b"], False) == []
    recs = fam.check_response(np.array([0.5, 0.25]), np.array([3.0, 4.0]), None, True)
    assert [r.code for r in recs] == ["non_integer_successes"]


def test_poisson_owns_its_response_rules():
    fam = poisson()
    with pytest.raises(DataError, match="negative"):
        fam.check_response(np.array([0.0, -1.0]), None, None, False, name="y")
    with pytest.raises(DataError, match="integers"):
        fam.check_response(np.array([0.0, 1.5]), None, None, False, name="y")
    assert fam.check_response(np.array([0.0, 3.0]), None, None, False) == []
