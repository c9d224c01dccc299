"""Benchmark cases: what is fitted, on which data, and the numbers to compare with.

A case names a CSV, the columns the model uses, the lme4 formula, family, link and fit method
(REML or ML; Laplace for GLMMs), the fitter R uses for it (lme4's ``lmer`` / ``glmer`` /
``glmer.nb``, or glmmTMB for the structured covariances lme4 1.1 lacks), the key of lme4's
recorded timing in ``bench/lme4_timings.json`` and our time target. ``load_frame`` turns the CSV
into the pandas data frame every Python tool receives (loading is never timed): factor columns
become pandas categoricals with R's level order from ``data/datasets_meta.json`` (the synthetic
group columns, and every factor when that file is absent, get their labels sorted), and a
two-level factor response (VerbAgg ``r2``, Contraception ``use``) becomes 0/1, first level = 0,
as lme4 codes it. ``r_spec`` describes the same preparation for ``r_worker.R`` (same file, same
level orders, same 0/1 coding), so R fits the very frame the Python tools fit.

Paths: a file is looked for first in the repository (``benchmarks/data/``, the package's
``datasets/data/``, ``tests/fixtures/{data,reference}/``; plain or gzipped) and then under the
shared folder (``--shared``, default ``../shared`` beside the repository root), where the big
synthetic files and ``lme4_timings.json`` live (and every reference fit not vendored); a file
``synth.py`` generates (``synth_3level``) is written to ``benchmarks/data/`` on first use.
"""

from __future__ import annotations

import contextlib
import functools
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

import synth

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SHARED = REPO_ROOT.parent / "shared"
REPO_DATA_DIRS = (
    REPO_ROOT / "benchmarks" / "data",
    REPO_ROOT / "src" / "multilevel" / "datasets" / "data",
    REPO_ROOT / "tests" / "fixtures",
    REPO_ROOT / "tests" / "fixtures" / "data",
    REPO_ROOT / "tests" / "fixtures" / "reference",
)


class MissingFile(FileNotFoundError):
    """A data or reference file is neither in the repository nor under the shared folder."""


@dataclass(frozen=True)
class Case:
    name: str  # our label, also the key in the table
    lme4_key: str | None  # key in lme4_timings.json["benchmarks"], None = lme4 not timed
    data: str  # path relative to the shared folder: "data/X.csv" or "bench/synth/X.csv.gz"
    meta_name: str | None  # dataset name in datasets_meta.json (None: synthetic data)
    columns: tuple[str, ...]  # columns the model uses (the frame holds only these)
    formula: str  # lme4 formula
    # R's spelling: "gaussian" (lmer), "binomial", "Gamma", "inverse.gaussian" (glmer, Laplace) or
    # "negative.binomial" (lme4's glmer.nb: theta estimated by an outer optimisation)
    family: str
    target_s: float | None  # our time target in seconds
    factors: tuple[str, ...] = ()  # columns read as categoricals (level order from the meta)
    binary_response: str | None = None  # two-level factor response to code 0/1
    slow: bool = False  # skipped by --quick
    reference: str | None = None  # id of the tight-tolerance reference fit, reference/<id>.json
    link: str | None = None  # None: the family's default link
    reml: bool = True  # gaussian only: REML (lme4's default) or ML
    r_fitter: str = "lme4"  # "lme4" or "glmmTMB" (structured covariances: diag / cs / ar1)
    note: str = ""  # said of the case's reference logLik under the detail table
    # a block of reference/<id>.json holding the logLik of another convention (glmmTMB's:
    # ML dispersion, exact Laplace) that a tool may follow instead of lme4's
    alt_reference: str | None = None

    @property
    def is_glmm(self) -> bool:
        return self.family != "gaussian"

    @property
    def method(self) -> str:
        """How the case is fitted, as the README's table says it."""
        if not self.is_glmm:
            return "REML" if self.reml else "ML"
        link = f" ({self.link})" if self.link else ""
        fam = {"negative.binomial": "negative binomial (glmer.nb)"}.get(self.family, self.family)
        return f"{fam}{link}, Laplace"


CASES: tuple[Case, ...] = (
    Case("sleepstudy", "sleepstudy_slopes", "data/sleepstudy.csv", "sleepstudy",
         ("Reaction", "Days", "Subject"), "Reaction ~ Days + (Days | Subject)", "gaussian", 1.5e-3,
         factors=("Subject",), reference="sleepstudy_slope_reml"),
    Case("hsb82", "hsb82_slopes", "data/Hsb82.csv", "Hsb82",
         ("mAch", "cses", "school"), "mAch ~ cses + (1 + cses | school)", "gaussian", 4e-3,
         factors=("school",), reference="hsb_cses_slope_reml"),
    Case("chem97", "chem97_crossed", "data/Chem97.csv", "Chem97",
         ("score", "gcsecnt", "school", "lea"), "score ~ gcsecnt + (1 | school) + (1 | lea)",
         "gaussian", 50e-3, factors=("school", "lea"), reference="chem97_crossed_reml"),
    Case("insteval", "insteval_crossed", "data/InstEval.csv", "InstEval",
         ("y", "service", "s", "d", "dept"), "y ~ 1 + service + (1 | s) + (1 | d) + (1 | dept)",
         "gaussian", 1.2, factors=("service", "s", "d", "dept"), slow=True,
         reference="insteval_crossed_reml"),
    Case("slopes_1e4", "synth_slopes_1e4", "bench/synth/synth_slopes_1e4.csv.gz", None,
         ("y", "x1", "x2", "g"), "y ~ x1 + x2 + (1 + x1 | g)", "gaussian", 2.5e-3, factors=("g",)),
    Case("slopes_1e5", "synth_slopes_1e5", "bench/synth/synth_slopes_1e5.csv.gz", None,
         ("y", "x1", "x2", "g"), "y ~ x1 + x2 + (1 + x1 | g)", "gaussian", 25e-3, factors=("g",)),
    Case("slopes_1e6", "synth_slopes_1e6", "bench/synth/synth_slopes_1e6.csv.gz", None,
         ("y", "x1", "x2", "g"), "y ~ x1 + x2 + (1 + x1 | g)", "gaussian", 0.25,
         factors=("g",), slow=True),
    Case("crossed_1e6", "synth_crossed_1e6", "bench/synth/synth_crossed_1e6.csv.gz", None,
         ("y", "x", "a", "b"), "y ~ x + (1 | a) + (1 | b)", "gaussian", 1.5,
         factors=("a", "b"), slow=True),
    Case("verbagg", "verbagg_glmer_laplace", "data/VerbAgg.csv", "VerbAgg",
         ("r2", "Anger", "Gender", "btype", "situ", "id", "item"),
         "r2 ~ Anger + Gender + btype + situ + (1 | id) + (1 | item)", "binomial", 0.1,
         factors=("r2", "Gender", "btype", "situ", "id", "item"), binary_response="r2",
         reference="verbagg_crossed_laplace"),
    Case("cbpp", "cbpp_glmer_laplace", "data/cbpp.csv", "cbpp",
         ("incidence", "size", "period", "herd"),
         "cbind(incidence, size - incidence) ~ period + (1 | herd)", "binomial", 1.5e-3,
         factors=("period", "herd"), reference="cbpp_binomial_laplace"),
    # lme4 timed no Contraception fit and the reference fit uses (1 | district), so this row
    # has no lme4 time, target or logLik; the peers' logLiks are compared with each other.
    Case("contraception", None, "data/Contraception.csv", "Contraception",
         ("use", "age", "urban", "livch", "district"),
         "use ~ age + I(age^2) + urban + livch + (urban | district)", "binomial", None,
         factors=("use", "urban", "livch", "district"), binary_response="use"),
    Case("bernoulli_1e5", "synth_bernoulli_1e5", "bench/synth/synth_bernoulli_1e5.csv.gz", None,
         ("y", "x", "g"), "y ~ x + (1 | g)", "binomial", 0.2, factors=("g",)),
    # The cases of issue 9 (new families, a structured covariance). Not in lme4_timings.json:
    # lme4 / glmmTMB are timed live only; the logLiks come from the reference fits.
    Case("early_gamma", None, "data/Early.csv", "Early", ("cog", "age", "trt", "id"),
         "cog ~ age + trt + (1 | id)", "Gamma", None, factors=("trt", "id"), link="log",
         reference="early_gamma_log_laplace", alt_reference="crosscheck_glmmTMB",
         note="lme4's Gamma logLik: the dispersion in family$aic is deviance / n; glmmTMB's "
              "(ML dispersion) is 47.9 lower"),
    Case("grouseticks_nb", None, "data/grouseticks.csv", "grouseticks",
         ("TICKS", "YEAR", "HEIGHT", "BROOD", "LOCATION"),
         "TICKS ~ YEAR + scale(HEIGHT) + (1 | BROOD) + (1 | LOCATION)", "negative.binomial",
         None, factors=("YEAR", "BROOD", "LOCATION"), reference="grouseticks_nb_laplace",
         alt_reference="crosscheck_glmmTMB",
         note="lme4's Laplace with Fisher weights (log link is not canonical); glmmTMB's "
              "exact Laplace is 0.068 lower"),
    Case("early_invgauss", None, "data/Early.csv", "Early", ("cog", "age", "trt", "id"),
         "cog / 100 ~ age + trt + (1 | id)", "inverse.gaussian", None, factors=("trt", "id"),
         link="log", reference="early_invgauss_log_laplace",
         note="lme4's inverse Gaussian logLik: the dispersion in family$aic is deviance / n"),
    Case("sleepstudy_diag_ar1", None, "data/sleepstudy.csv", "sleepstudy",
         ("Reaction", "Days", "Subject"),
         "Reaction ~ Days + diag(Days | Subject) + ar1(0 + factor(Days) | Subject)", "gaussian",
         None, factors=("Subject",), r_fitter="glmmTMB", reference="sleepstudy_diag_ar1_reml"),
    Case("early_ar1", None, "data/Early.csv", "Early", ("cog", "age", "trt", "id"),
         "cog ~ age + trt + ar1(0 + factor(age) | id)", "gaussian", None,
         factors=("trt", "id"), reml=False, r_fitter="glmmTMB", reference="early_ar1_ml"),
    # The three-level cases of issue 13 (lme4 timed live only). star (mlmRev): maths scores of
    # 10,496 students (a growth slope in yrs, the grade as a number) taught by 1,288
    # teachers in 80 schools (a slope too); students change teachers every grade and a few
    # change schools, so the terms are partially crossed. The teacher covariates (hdeg, clad,
    # exp, trace) and eth leave the 23,758 complete rows of the issue. lme4 1.1 fits it with
    # its max|grad| remark (0.003 against its 0.002), the reason the logLik is compared
    # with lme4's live value.
    Case("star", None, "data/star.csv", "star",
         ("math", "gr", "cltype", "sx", "eth", "hdeg", "clad", "exp", "trace", "yrs", "id",
          "tch", "sch"),
         "math ~ gr + cltype + sx + eth + hdeg + clad + exp + trace + (yrs | id) + (1 | tch) "
         "+ (yrs | sch)", "gaussian", None,
         factors=("id", "sch", "gr", "cltype", "hdeg", "clad", "trace", "sx", "eth", "tch"),
         slow=True),
    # synth.py's seeded data: 1e6 pupils, 20,000 classes nested in 2,000 schools
    Case("synth_3level", None, "bench/synth/synth_3level.csv.gz", None,
         ("y", "x", "class", "school"), "y ~ x + (1 + x | class) + (1 | school)", "gaussian",
         None, factors=("class", "school"), slow=True),
)
CASES_BY_NAME = {c.name: c for c in CASES}


def find_file(rel: str, shared: Path) -> Path:
    """The repository copy of ``rel`` (maybe gzipped) if there is one, else the one under
    ``shared``."""
    name = Path(rel).name
    candidates = [d / n for d in REPO_DATA_DIRS for n in (name, name + ".gz")]
    candidates.append(Path(shared) / rel)
    for path in candidates:
        if path.is_file():
            return path
    made = synth.ensure(name)  # data this folder generates (seeded) instead of storing
    if made is not None:
        return made
    looked = ", ".join(dict.fromkeys(str(p.parent) for p in candidates))
    raise MissingFile(f"{rel} not found (looked in {looked}); pass --shared PATH pointing at "
                      "the shared folder that holds data/ and bench/")


@functools.cache
def load_lme4(shared: Path) -> dict:
    """``lme4_timings.json`` as a dict (its "benchmarks" entries keyed by lme4_key)."""
    return json.loads(find_file("bench/lme4_timings.json", shared).read_text())


def reference_loglik(case: Case, shared: Path) -> float | None:
    """The best lme4 log-likelihood known for the case: lme4's own fit in the timing run, or
    the tight-tolerance reference fit of the same model when there is one (lme4's default
    controls stop up to ~4e-4 short on the GLMMs)."""
    values = []
    if case.lme4_key is not None:
        with contextlib.suppress(MissingFile, KeyError):
            values.append(load_lme4(shared)["benchmarks"][case.lme4_key]["fit"]["logLik"])
    if case.reference is not None:
        with contextlib.suppress(MissingFile, KeyError):
            ref = json.loads(find_file(f"reference/{case.reference}.json", shared).read_text())
            values.append(ref["results"]["logLik"])
    return max(values) if values else None


def alt_loglik(case: Case, shared: Path) -> float | None:
    """The logLik of the other convention (``case.alt_reference``), None if there is none."""
    if case.reference is None or case.alt_reference is None:
        return None
    with contextlib.suppress(MissingFile, KeyError):
        ref = json.loads(find_file(f"reference/{case.reference}.json", shared).read_text())
        return float(ref[case.alt_reference]["logLik"])
    return None


def load_meta(shared: Path) -> dict:
    return json.loads(find_file("data/datasets_meta.json", shared).read_text())


def _categorical(values: pd.Series, levels: list[str] | None) -> pd.Categorical:
    """Categorical with the given levels, else sorted labels (numeric labels numerically)."""
    strings = values.astype(str)
    if levels is None:
        labels = strings.unique()
        numeric = all(s.isdigit() for s in labels)
        levels = sorted(labels, key=int if numeric else None)
    return pd.Categorical(strings, categories=levels)


def _level_orders(case: Case, shared: Path) -> dict[str, list[str] | None]:
    """R's level order of each factor column; sorted order if the meta file is absent (the
    level order changes coefficient names, not the fit's log-likelihood or its cost)."""
    if case.meta_name is None:
        return {c: None for c in case.factors}
    try:
        meta_cols = load_meta(shared)[case.meta_name]["columns"]
    except MissingFile as exc:
        print(f"note: {exc}; factor levels sorted instead", file=sys.stderr)
        return {c: None for c in case.factors}
    return {c: meta_cols[c]["levels"] for c in case.factors}


def r_spec(case: Case, shared: Path) -> dict:
    """What ``r_worker.R`` needs to build ``load_frame``'s frame in R and fit the case: the
    resolved data file, the level order of every factor (None: R sorts the labels the way
    ``_categorical`` does), the 0/1 response, the formula, family, link, REML flag and fitter.
    """
    return {
        "case": case.name, "data": str(find_file(case.data, shared)),
        "columns": list(case.columns), "factors": _level_orders(case, shared),
        "binary_response": case.binary_response, "formula": case.formula,
        "family": case.family, "link": case.link, "reml": case.reml, "fitter": case.r_fitter,
    }


def load_frame(case: Case, shared: Path) -> pd.DataFrame:
    """The case's data frame, ready to fit (categoricals set, binary response coded 0/1)."""
    path = find_file(case.data, shared)
    factor_levels = _level_orders(case, shared)
    # Read factor columns as strings so labels such as "3+" or "0012" stay as written.
    df = pd.read_csv(path, usecols=list(case.columns), dtype={c: str for c in factor_levels})
    df = df[list(case.columns)]
    for col in df.columns:
        if col in factor_levels:
            df[col] = _categorical(df[col], factor_levels[col])
        else:
            df[col] = df[col].astype(np.float64)
    if case.binary_response is not None:
        col = df[case.binary_response]
        df[case.binary_response] = (col.cat.codes != 0).astype(np.float64)
    return df
