"""One adapter per Python tool: how each package fits a benchmark case.

(lme4 / glmmTMB are measured by ``r_worker.R`` in an Rscript of their own; see run.py.)

An adapter is ``setup(case, df) -> (fit, describe)``. ``setup`` does the imports and any
reshaping the tool needs (a derived column, a formula in its own dialect); none of that is
timed. ``fit()`` is the timed call: from the data frame to a fitted model, the way a user
calls the package. ``describe(result)`` returns the log-likelihood on lme4's scale (the REML
log-likelihood for REML fits) and a note ("not converged", or ""); it is not timed either.

An adapter raises ``NotApplicable`` when the tool cannot fit the model (the cell reads
``n/a: reason``), from ``setup`` or from the first (warm-up) fit: the family or covariance
structure is not one the package has, or (ours) the library refuses the model with its own
"unsupported" error; any other exception becomes ``error: ...`` in the table.
"""

from __future__ import annotations

import importlib.metadata
import re
from collections.abc import Callable

import numpy as np
import pandas as pd

from cases import Case


class NotApplicable(Exception):
    """The tool cannot fit this model (or is not installed); the reason goes in the cell."""


FitFns = tuple[Callable[[], object], Callable[[object], tuple[float, str]]]

_CBIND = re.compile(r"^\s*cbind\(\s*(\w+)\s*,\s*(.+?)\)\s*~\s*(.+)$")
_BAR = re.compile(r"\(([^()|]+)\|\s*(\w+)\s*\)")


def version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _split_cbind(formula: str) -> tuple[str, str, str] | None:
    """``cbind(s, f_expr) ~ rhs`` -> (s, f_expr, rhs), None for any other response."""
    m = _CBIND.match(formula)
    return None if m is None else (m.group(1), m.group(2).strip(), m.group(3).strip())


_SCALE = re.compile(r"\bscale\(\s*(\w+)\s*\)")


def _materialise_scale(formula: str, df: pd.DataFrame) -> tuple[str, pd.DataFrame]:
    """``scale(x)`` -> a column ``scale_x`` = (x - mean) / sd (R's ``scale``: sd with n - 1,
    learnt on all rows) for a tool whose formula language has no ``scale()``. Done in setup,
    so untimed; the fit's logLik is the same, only the coefficient's name differs."""
    cols = {f"scale_{x}": (df[x] - df[x].mean()) / df[x].std(ddof=1)
            for x in _SCALE.findall(formula)}
    return _SCALE.sub(lambda m: f"scale_{m.group(1)}", formula), df.assign(**cols)


def _note(converged) -> str:
    return "" if converged is None or bool(converged) else "not converged"


def _import(module: str):
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise NotApplicable(f"cannot import {module} ({exc})") from exc


# --------------------------------------------------------------------------- ours


def _describe_ours(fit) -> tuple[float, str]:
    """Our fit object is young: accept the spellings DESIGN.md allows."""
    for name in ("loglik", "logLik"):
        value = getattr(fit, name, None)
        if value is not None:
            loglik = float(value() if callable(value) else value)
            break
    else:
        loglik = float(fit.to_dict()["logLik"])
    return loglik, _note(getattr(fit, "converged", None))


def _unsupported_errors() -> tuple[type[BaseException], ...]:
    """The library's errors that mean "this model is not supported (yet)": a refused family,
    link or option (``ModelSpecError``), a formula term it does not know (``FormulaError``).
    The case's formula and data are valid (lme4 / glmmTMB fit them), so these are not the
    benchmark's fault; any other error stays an ``error`` cell."""
    try:
        errors = importlib.import_module("multilevel.errors")
    except ImportError:
        return (NotImplementedError,)
    names = ("ModelSpecError", "FormulaError")
    return tuple(getattr(errors, n) for n in names if hasattr(errors, n)) + (NotImplementedError,)


def setup_ours(case: Case, df: pd.DataFrame) -> FitFns:
    """``ml.lmer(formula, data=df, reml=case.reml)``, ``ml.glmer(formula, data=df,
    family=case.family[, link=case.link])`` with R's family names ("binomial", "Gamma",
    "negative.binomial"); a model the library refuses as unsupported is n/a."""
    ml = _import("multilevel")
    fn_name = "glmer" if case.is_glmm else "lmer"
    fn = getattr(ml, fn_name, None)
    if fn is None:
        raise NotApplicable(f"multilevel has no {fn_name}() yet")
    if case.is_glmm:
        kwargs = {"family": case.family} | ({"link": case.link} if case.link else {})
    else:
        kwargs = {"reml": case.reml}
    unsupported = _unsupported_errors()

    def fit():  # try costs nothing on Python >= 3.11 until something is raised
        try:
            return fn(case.formula, data=df, **kwargs)
        except unsupported as exc:
            raise NotApplicable(f"{type(exc).__name__}: {exc}".replace("\n", " ")[:200]) from exc

    return fit, _describe_ours


# --------------------------------------------------------------------------- glmm


_GLMM_FAMILIES = {"gaussian": "gaussian", "binomial": "binomial", "Gamma": "gamma",
                  "negative.binomial": "negativebinomial"}
_STRUCTURED = re.compile(r"\b(diag|cs|ar1|toep|ou|exp)\s*\(")


def _structured(case: Case) -> bool:
    """A structured covariance term (lme4 2.0 / glmmTMB syntax) in the formula."""
    return _STRUCTURED.search(case.formula) is not None


def setup_glmm(case: Case, df: pd.DataFrame) -> FitFns:
    """``glmm.fit(data, formula, family, reml=, satterthwaite=False[, link=])``;
    ``Fit.loglik``, ``Fit.converged``. Families by glmm's names ("gamma",
    "negativebinomial": its shape estimated as ``glmer.nb`` does).

    glmm's ``cbind()`` takes two column names, so the failures column is derived here, and
    ``scale(x)`` becomes a column (glmm's formulas have no ``scale()``).
    Satterthwaite df (on by default for LMMs) are switched off: lme4's fit computes none.
    """
    glmm = _import("glmm")
    family = _GLMM_FAMILIES.get(case.family)
    if family is None:
        raise NotApplicable(f"no {case.family} family in glmm")
    if _structured(case):
        raise NotApplicable("no structured covariance (diag / cs / ar1) in glmm")
    formula, df = _materialise_scale(case.formula, df)
    parts = _split_cbind(formula)
    if parts is not None:
        succ, fail_expr, rhs = parts
        df = df.assign(failures=df.eval(fail_expr))
        formula = f"cbind({succ}, failures) ~ {rhs}"
    reml = None if case.is_glmm else case.reml
    link = {"link": case.link} if case.link else {}

    def fit():
        return glmm.fit(df, formula, family, reml=reml, satterthwaite=False, **link)

    return fit, lambda r: (float(r.loglik), _note(r.converged))


# --------------------------------------------------------------------------- mixedlm


def setup_mixedlm(case: Case, df: pd.DataFrame) -> FitFns:
    """``mixedlm.lmer(formula, data, REML=case.reml)`` / ``mixedlm.glmer(formula, data,
    family=mixedlm.families.Binomial() / Gamma(link))`` / ``mixedlm.glmer_nb(formula, data)``;
    ``result.logLik()``.

    mixedlm writes powers as ``I(x**2)`` and a binomial count response as
    ``successes / trials`` (it has no ``cbind()``), so both are rewritten here; ``scale(x)``
    becomes a column.
    """
    mlm = _import("mixedlm")
    if _structured(case):
        raise NotApplicable("structured covariances only through set_cov_type, not "
                            "lme4 2.0's ar1() / cs() / diag() terms")
    formula, df = _materialise_scale(case.formula, df)
    formula = re.sub(r"I\(([^()]*)\)", lambda m: "I(" + m.group(1).replace("^", "**") + ")",
                     formula)
    parts = _split_cbind(formula)
    if parts is not None:
        succ, fail_expr, rhs = parts
        df = df.assign(trials=df[succ] + df.eval(fail_expr))
        formula = f"{succ} / trials ~ {rhs}"
    if case.family == "negative.binomial":
        glmer_nb = mlm.glmer_nb  # resolve the lazy export outside the timed call

        def fit():
            return glmer_nb(formula, df)
    elif case.is_glmm:
        families = {"binomial": mlm.families.Binomial, "Gamma": mlm.families.Gamma}
        if case.family not in families:
            raise NotApplicable(f"no {case.family} family in mixedlm")
        family = families[case.family](**({"link": case.link} if case.link else {}))
        glmer = mlm.glmer

        def fit():
            return glmer(formula, df, family=family)
    else:
        lmer = mlm.lmer
        reml = case.reml

        def fit():
            return lmer(formula, df, REML=reml)

    return fit, lambda r: (float(r.logLik()), _note(getattr(r, "converged", None)))


# --------------------------------------------------------------------------- statsmodels

# statsmodels builds the variance-component design of each group as a dense matrix; with all
# rows in one group (crossed factors) that is n x (total levels) doubles. Past this size the
# fit cannot finish in any useful time on the 2-core benchmark machine.
_SM_MAX_DENSE_BYTES = 1e9


def _statsmodels_spec(case: Case, df: pd.DataFrame) -> tuple[str, dict]:
    """lme4 formula -> (fixed formula, keyword arguments of ``smf.mixedlm``).

    One random term ``(expr | g)``: ``groups=g, re_formula="~expr"``. Several scalar
    ``(1 | g)`` terms: statsmodels has one grouping factor plus variance components inside
    it, so a factor whose levels each sit inside one level of another factor is nested in it
    (``groups`` = the outer factor, ``vc_formula`` = the inner one); truly crossed factors go
    into a single all-rows group as variance components.
    """
    bars = _BAR.findall(case.formula)
    fixed = _BAR.sub("", case.formula)
    fixed = re.sub(r"\+\s*(?=\+|$)", "", fixed).strip().rstrip("+").strip()
    if len(bars) == 1:
        expr, group = (s.strip() for s in bars[0])
        terms = [t.strip() for t in expr.split("+") if t.strip() not in ("1", "")]
        return fixed, {"groups": group, "re_formula": "~" + " + ".join(terms) if terms else "1"}
    if any(expr.strip() != "1" for expr, _ in bars):
        raise NotApplicable("several random terms with slopes")
    factors = [g for _, g in bars]
    outer = next((o for o in factors if all(
        f == o or df.groupby(f, observed=True)[o].nunique().max() == 1 for f in factors)), None)
    inner = [f for f in factors if f != outer]
    if outer is None:
        levels = sum(df[f].nunique() for f in factors)
        size = len(df) * levels * 8
        if size > _SM_MAX_DENSE_BYTES:
            raise NotApplicable(f"crossed factors need a dense {len(df)} x {levels} "
                                f"variance-component design ({size / 1e9:.1f} GB)")
        outer, inner = "_one_group", factors
    return fixed, {"groups": outer, "re_formula": "1",
                   "vc_formula": {f: f"0 + C({f})" for f in inner}}


def setup_statsmodels(case: Case, df: pd.DataFrame) -> FitFns:
    """``smf.mixedlm(fixed, data, groups=, re_formula=, vc_formula=).fit(reml=case.reml)``;
    ``result.llf`` (statsmodels' (REML) log-likelihood, on lme4's scale), ``result.converged``.

    statsmodels' GLMMs (``BinomialBayesMixedGLM``) are Bayesian (variational Bayes or the
    posterior mode under priors on the variances), not Laplace maximum likelihood, so the
    GLMM cases are n/a.
    """
    if case.is_glmm:
        raise NotApplicable("no Laplace ML GLMM in statsmodels")
    if _structured(case):
        raise NotApplicable("no structured covariance (diag / cs / ar1) in MixedLM")
    smf = _import("statsmodels.formula.api")
    fixed, kwargs = _statsmodels_spec(case, df)
    if kwargs["groups"] == "_one_group":
        df = df.assign(_one_group=np.zeros(len(df), dtype=np.int8))
    # patsy expands ``C(f)`` to every category of a pandas categorical, in every group: a
    # nested factor then costs (rows in the group) x (all levels) per group (Chem97: 7 GB and
    # > 10 min). Plain integer codes give each group only the levels it has.
    df = df.assign(**{f: df[f].cat.codes for f in kwargs.get("vc_formula", {})})

    reml = case.reml

    def fit():
        return smf.mixedlm(fixed, df, **kwargs).fit(reml=reml)

    return fit, lambda r: (float(r.llf), _note(r.converged))


# --------------------------------------------------------------------------- gpboost

_GPB_LIKELIHOODS = {"gaussian": "gaussian", "binomial": "bernoulli_logit", "poisson": "poisson",
                    "Gamma": "gamma", "negative.binomial": "negative_binomial"}


def setup_gpboost(case: Case, df: pd.DataFrame) -> FitFns:
    """``gpb.GPModel(group_data=, group_rand_coef_data=, ind_effect_group_rand_coef=,
    likelihood=).fit(y=, X=)``; logLik = -``get_current_neg_log_likelihood()``.

    gpboost fits grouped random effects by maximum likelihood (Laplace for non-Gaussian
    likelihoods): it takes arrays, not a formula, so the fixed-effects matrix (patsy) and the
    grouping columns are built in setup, untimed (which favours gpboost). Its random slopes
    are independent of the intercept: ``(1 + x | g)`` is fitted as ``(1 | g) + (0 + x | g)``,
    a smaller model (note ``uncorrelated``), and REML cases by ML (note ``ML``), so their
    logLik is not lme4's. A ``cbind()`` response (binomial trials) and structured covariances
    are n/a; so are the log links' other spellings gpboost lacks."""
    gpb = _import("gpboost")
    patsy = _import("patsy")
    if _structured(case):
        raise NotApplicable("no structured covariance (diag / cs / ar1) in gpboost")
    if case.family not in _GPB_LIKELIHOODS or (case.link not in (None, "log", "logit")):
        raise NotApplicable(f"no {case.family} ({case.link or 'default'} link) likelihood in gpboost")
    if _split_cbind(case.formula) is not None:
        raise NotApplicable("binomial trials (cbind) not in gpboost's bernoulli likelihood")
    formula, df = _materialise_scale(case.formula, df)
    # patsy's ^ is xor: R's I(x^2) is I(x**2) there
    formula = re.sub(r"I\(([^()]*)\)", lambda m: "I(" + m.group(1).replace("^", "**") + ")", formula)
    response, rhs = (s.strip() for s in formula.split("~", 1))
    fixed = _BAR.sub("", rhs)
    fixed = re.sub(r"\+\s*(?=\+|$)", "", fixed).strip().rstrip("+").strip() or "1"
    X = np.asarray(patsy.dmatrix(fixed, df, NA_action="raise"), dtype=float)
    y = np.asarray(df.eval(response) if response not in df else df[response], dtype=float)
    groups, slopes, slope_of = [], [], []
    for expr, g in _BAR.findall(rhs):
        terms = [t.strip() for t in expr.split("+")]
        intercept = "0" not in terms and "-1" not in terms
        if not intercept:
            raise NotApplicable("a random slope without its group's random intercept")
        groups.append(np.asarray(df[g.strip()].astype(str)))
        for t in terms:
            if t in ("1", "0", "-1", ""):
                continue
            if t not in df or not pd.api.types.is_numeric_dtype(df[t]):
                raise NotApplicable(f"random slope on {t!r} (a column of numbers only)")
            slopes.append(np.asarray(df[t], dtype=float))
            slope_of.append(len(groups))  # 1-based index of its grouping factor
    notes = []
    if slopes:
        notes.append("uncorrelated")
    if not case.is_glmm and case.reml:
        notes.append("ML")
    group_data = np.column_stack(groups)
    kwargs = {"group_data": group_data, "likelihood": _GPB_LIKELIHOODS[case.family]}
    if slopes:
        kwargs |= {"group_rand_coef_data": np.column_stack(slopes),
                   "ind_effect_group_rand_coef": slope_of}
    note = ", ".join(notes)

    def fit():
        model = gpb.GPModel(**kwargs)
        model.fit(y=y, X=X, params={"trace": False})
        return model

    return fit, lambda r: (-float(r.get_current_neg_log_likelihood()), note)


TOOLS: dict[str, Callable[[Case, pd.DataFrame], FitFns]] = {
    "ours": setup_ours,
    "glmm": setup_glmm,
    "mixedlm": setup_mixedlm,
    "statsmodels": setup_statsmodels,
    "gpboost": setup_gpboost,
}
PACKAGES = {"ours": "multilevel", "glmm": "glmm", "mixedlm": "mixedlm",
            "statsmodels": "statsmodels", "gpboost": "gpboost"}
