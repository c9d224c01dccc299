"""Fitting the models of reference cases for the inference tests (LMMs and GLMMs)."""
from __future__ import annotations

import functools
import warnings

from conftest import fit_reference_case, load_case, load_case_frame, reference_index


def anova_case_ids() -> list[str]:
    return [c["id"] for c in reference_index() if c["type"] == "anova"]


def _fit(spec: dict, reml_override: bool | None = None):
    import multilevel as ml

    df = load_case_frame(spec)
    kw = {"weights": spec["weights"]} if spec.get("weights") else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if spec.get("family", "gaussian") == "gaussian":
            reml = bool(spec["REML"]) if reml_override is None else reml_override
            return ml.lmer(spec["formula"], data=df, reml=reml, **kw)
        return ml.glmer(spec["formula"], data=df, family=spec["family"], link=spec.get("link"),
                        nagq=int(spec.get("nAGQ") or 1), **kw)


@functools.lru_cache(maxsize=None)
def fit_anova_model(case_id: str, key: str):
    case = load_case(case_id)
    return _fit(dict(case["models"][key]))


@functools.lru_cache(maxsize=None)
def fit_case(case_id: str):
    """Any fit case (LMM through the shared cache of conftest, GLMM here)."""
    case = load_case(case_id)
    if case["model_type"] == "LMM":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return fit_reference_case(case_id)
    return _fit(case)
