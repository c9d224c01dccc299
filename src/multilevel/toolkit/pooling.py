"""Complete, no and partial pooling side by side, and two-stage ("slopes as outcomes") estimates.

For a model with one grouping factor, e.g. ``popular ~ extrav + sex + texp + extrav:texp +
(1 + extrav | class)``, three ways to estimate each group's intercept (and slope):

complete pooling
    one regression that ignores the groups: :func:`multilevel.lm` with the formula without
    its random-effects terms. Every group gets the same coefficients, and the standard
    errors treat all rows as independent, which makes those of group-level (level-2)
    predictors far too small when the outcome is clustered.
no pooling
    *one* least-squares regression with a separate intercept for each group (group dummies,
    ``0 + factor(g)``) and, where the random-effects term has a slope, a separate slope for
    each group (``factor(g):x``); the formula's other level-1 terms are kept as common
    coefficients. (One regression rather than a fit per group, so the level-1 covariates and
    the residual variance are shared.) Terms that are constant within groups (level-2
    predictors and cross-level interactions) are absorbed by the group coefficients: they
    would be aliased (R's ``lm`` reports them as NA), so they are left out. The fit is
    ``lm()``'s, solved group by group (:func:`multilevel.models.lm.lm_by_group`: a small QR
    per group instead of one over the dense matrix of dummies), which the explorer refits
    on every change.
partial pooling
    the mixed model (:func:`multilevel.lmer`, REML): the groups' coefficients are
    ``coef(fit)``, fixed effects plus conditional modes, shrunk towards the fixed effects.

``pooling()`` returns the per-group table that shows the shrinkage, the fixed effects of each
approach with their standard errors, and the fits. ``two_stage()`` uses the no-pooling
estimates as the data of a second, group-level regression.

Example
-------
>>> import multilevel as ml
>>> p = ml.pooling("Reaction ~ Days + (Days | Subject)", ml.datasets.load("sleepstudy"))
>>> p.coef_names, p.group_name, p.x_name
(['(Intercept)', 'Days'], 'Subject', 'Days')
>>> p.table.columns[:6].tolist()
['group', 'n', '(Intercept)_complete', '(Intercept)_none', '(Intercept)_partial', '(Intercept)_weight']
"""
from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field
from html import escape
from typing import Any, Sequence

import numpy as np
import pandas as pd

from multilevel.results.base import TextResult
from multilevel.design import DataSource
from multilevel.errors import DataError, ModelSpecError
from multilevel.formula import parse_expression, parse_formula
from multilevel.results.lm import LmFit
from multilevel.models.lm import lm, lm_by_group

__all__ = ["pooling", "two_stage", "shrinkage_factors", "Pooling", "TwoStage"]

_R_NAME = re.compile(r"^([A-Za-z]|[.](?![0-9]))[A-Za-z0-9._]*$")
_R_RESERVED = {"if", "else", "repeat", "while", "function", "for", "next", "break", "TRUE",
               "FALSE", "NULL", "Inf", "NaN", "NA", "in"}


def _rname(name: str) -> str:
    """A column name as R code: as is when syntactic, else in backticks."""
    return name if _R_NAME.match(name) and name not in _R_RESERVED else f"`{name}`"


# --------------------------------------------------------------------------------------------
# the shared set-up: one grouping factor, the three fits, the absorbed level-2 columns
# --------------------------------------------------------------------------------------------

@dataclass
class _Setup:
    formula: str
    group: str                     # the grouping column
    coef_names: list[str]          # the random-effect coefficients (Z columns)
    slope_labels: list[str]        # R labels of the slope terms of the bars
    data: pd.DataFrame             # rows used by the mixed model (index: row positions)
    levels: list[str]              # group labels in lme4's order
    refs: np.ndarray               # group of each used row
    Z: np.ndarray                  # (n, q) random-effect columns of the group
    partial: Any                   # LmmFit
    complete: LmFit
    none: LmFit
    none_full: np.ndarray          # (J, q) groups' own coefficients from the no-pooling fit
    absorbed: dict[str, np.ndarray]  # mixed fixed column -> (J, q) loadings on the Z columns
    notes: list[str] = field(default_factory=list)


def _as_pandas(data: Any) -> pd.DataFrame:
    if isinstance(data, pd.DataFrame):
        return data
    src = DataSource(data)
    return pd.DataFrame({c: src.column(c).series for c in src.names})


def _check_fit(fit: Any, formula: str, data: Any) -> None:
    """``fit=`` of :func:`pooling`: the REML lmer fit of this formula on these data."""
    from multilevel.results.lmm import LmmFit

    if not isinstance(fit, LmmFit):
        raise ModelSpecError(f"fit: expected the lmer fit of the model (an LmmFit), not "
                             f"{type(fit).__name__}")
    if str(fit.formula).strip() != formula.strip():
        raise ModelSpecError(f"fit: it was fitted with the formula {fit.formula!r}, not "
                             f"{formula!r}")
    if not fit.reml:
        raise ModelSpecError("fit: partial pooling is the REML fit; this one was fitted by "
                             "ML (refit with reml=True, or leave fit out)")
    nrows = DataSource(data).nrows
    frame = fit.frame
    if frame.nobs + frame.n_dropped != nrows or (len(frame.rows) and frame.rows[-1] >= nrows):
        raise ModelSpecError(f"fit: it was fitted to {frame.nobs + frame.n_dropped} rows, the "
                             f"data have {nrows}; pass the data it was fitted to")


def bar_terms(parsed: Any) -> tuple[bool, list[str]]:
    """Whether any random-effect term of a parsed formula has an intercept, and the labels of
    its slopes in order of first appearance (each once): the group columns of the no-pooling
    regression."""
    has_int = any(b.lhs.intercept for b in parsed.bars)
    slope_labels: list[str] = []
    for b in parsed.bars:
        for lab in b.lhs.labels:
            if lab not in slope_labels:
                slope_labels.append(lab)
    return has_int, slope_labels


def _setup(formula: str, data: Any, fit: Any = None) -> _Setup:
    from multilevel.models.lmer import lmer

    parsed = parse_formula(formula)
    groups = {b.group for b in parsed.bars}
    if len(groups) != 1:
        raise ModelSpecError(f"pooling needs a model with exactly one grouping factor; this one "
                             f"has {len(groups)} ({', '.join(sorted(groups)) or 'none'})")
    bar_vars = parsed.bars[0].group_vars
    if len(bar_vars) != 1 or parsed.bars[0].group != bar_vars[0]:
        raise ModelSpecError(f"pooling needs a grouping column, not the interaction "
                             f"{parsed.bars[0].group}")
    g = bar_vars[0]
    pdf = _as_pandas(data)
    if fit is None:
        partial = lmer(formula, data)
    else:
        _check_fit(fit, formula, data)
        partial = fit
    frame = partial.frame
    rows = np.asarray(frame.rows)
    used = pdf.iloc[rows]

    rts = [rt for rt in frame.reterms if rt.group == g]
    coef_names: list[str] = []
    for rt in rts:
        coef_names += [t for t in rt.terms if t not in coef_names]
    Z = np.column_stack([rt.Z for rt in rts])
    _, first = np.unique(sum(([t for t in rt.terms] for rt in rts), []), return_index=True)
    Z = Z[:, sorted(first)]  # a term repeated in two blocks counts once
    levels = [str(lv) for lv in rts[0].levels]
    refs = np.asarray(rts[0].refs)

    has_int, slope_labels = bar_terms(parsed)

    absorbed = _absorbed(frame.X, list(frame.fixef_names), Z, refs, len(levels), coef_names)
    # terms whose every column is constant within groups (times a random-effect column) are
    # aliased with the group coefficients: leave them out of the no-pooling regression
    # rather than have the rank check find them (same fit, much faster with many groups)
    assign = np.asarray(frame.assign)
    level2_terms = {lab for t, lab in enumerate(frame.term_labels, start=1)
                    if (assign == t).any() and all(frame.fixef_names[k] in absorbed
                                                   for k in np.flatnonzero(assign == t))}

    notes: list[str] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        complete = lm(parsed.fixed_text, used)
        # no pooling: group intercepts and group slopes in one regression; the formula's
        # level-1 terms stay as common coefficients
        gkey = parse_expression(f"factor({_rname(g)})").key
        parts = [f"0 + {gkey}" if has_int else ("1" if parsed.fixed.intercept else "0")]
        parts += [f"{gkey}:{lab}" for lab in slope_labels]
        parts += [lab for lab in parsed.fixed.labels
                  if lab not in slope_labels and lab not in level2_terms]
        # treatment coding whatever the column's type: an ordered grouping factor (hsb's
        # school) would otherwise get contr.poly, which R refuses above 95 levels, while the
        # group coefficients need only indicator columns
        # (group by group: the same fit as lm() without the dense matrix of dummies)
        none = lm_by_group(f"{parsed.response_text} ~ {' + '.join(parts)}", used, gkey,
                           contrasts={gkey: "treatment"})

    coef = none.coef()
    coef = dict(zip(coef.index, coef.to_numpy()))  # (a dict: J x q look-ups by name)
    none_full = np.full((len(levels), len(coef_names)), np.nan)
    for j, lv in enumerate(levels):
        for c, cn in enumerate(coef_names):
            name = f"{gkey}{lv}" if cn == "(Intercept)" else f"{gkey}{lv}:{cn}"
            if name in coef:
                none_full[j, c] = coef[name]
    if np.isnan(none_full).any():
        bad = [f"{coef_names[c]} of {int(np.isnan(none_full[:, c]).sum())} group(s)"
               for c in range(len(coef_names)) if np.isnan(none_full[:, c]).any()]
        notes.append("no-pooling estimate not defined (too few rows or no variation in the "
                     "group) for " + "; ".join(bad))

    return _Setup(formula, g, coef_names, slope_labels, used, levels, refs, Z, partial,
                  complete, none, none_full, absorbed, notes)


def _absorbed(X: np.ndarray, names: list[str], Z: np.ndarray, refs: np.ndarray, nlev: int,
              coef_names: list[str], tol: float = 1e-7) -> dict[str, np.ndarray]:
    """The fixed-effect columns that, within every group, are a combination of the group's
    random-effect columns (level-2 predictors: constant x 1; cross-level interactions:
    constant x slope variable). Returns name -> (J, q) loadings: column = sum_c load[j, c] Z_c
    in group j. These are the columns the no-pooling fit cannot separate from the groups'
    own coefficients."""
    cand = [k for k, nm in enumerate(names) if nm not in coef_names]
    if not cand:
        return {}
    Xc = X[:, cand]
    loads = np.zeros((len(cand), nlev, Z.shape[1]))
    ssr = np.zeros(len(cand))
    order = np.argsort(refs, kind="stable")
    bounds = np.searchsorted(refs[order], np.arange(nlev + 1))
    for j in range(nlev):
        idx = order[bounds[j]:bounds[j + 1]]
        A, B = Z[idx], Xc[idx]
        sol, *_ = np.linalg.lstsq(A, B, rcond=None)
        loads[:, j, :] = sol.T
        ssr += np.sum((B - A @ sol) ** 2, axis=0)
    norms = np.sum(Xc ** 2, axis=0)
    out = {}
    for i, k in enumerate(cand):
        if norms[i] > 0 and ssr[i] <= (tol ** 2) * norms[i]:
            out[names[k]] = loads[i]
    return out


def _group_sizes(setup: _Setup) -> np.ndarray:
    return np.bincount(setup.refs, minlength=len(setup.levels))


def shrinkage_factors(fit: Any, group: str) -> pd.DataFrame:
    """The shrinkage factor (reliability) of each random-effect coefficient of ``group``, per
    level: 1 = the group's own estimate is kept, 0 = it is pulled all the way to the fixed
    effect.

    For a scalar random intercept ``(1 | g)`` it is the textbook factor (Raudenbush and
    Bryk's reliability, Gelman and Hill's pooling factor complement)::

        lambda_j = (n_j / sigma^2) / (n_j / sigma^2 + 1 / tau^2)

    with n_j the group's observations (the sum of its prior weights when there are
    weights), tau^2 the intercept variance and sigma^2 the residual variance. For every
    other term, vector-valued ones such as ``(1 + x | g)`` included, it is the per-coefficient
    measure from the conditional covariance of the random effects (lme4's ``condVar``)::

        lambda_jc = 1 - condVar_j[c, c] / tau_cc

    which for a random intercept alone equals the textbook lambda_j exactly. The conditional
    (posterior) variance of a random effect never exceeds its prior variance tau_cc, so the
    factor lies in [0, 1] (values are clipped against rounding); a coefficient with tau_cc = 0
    is pooled completely (0).

    Returns a DataFrame indexed by level (lme4's order), one column per coefficient.

    >>> import multilevel as ml
    >>> fit = ml.lmer("Yield ~ 1 + (1 | Batch)", ml.datasets.load("dyestuff"))
    >>> round(float(shrinkage_factors(fit, "Batch").iloc[0, 0]), 3)
    0.783
    """
    levels, out = _shrinkage_arrays(fit, group)
    return pd.DataFrame(out, index=pd.Index(levels, name=group))


def _shrinkage_arrays(fit: Any, group: str) -> tuple[list[str], dict[str, np.ndarray]]:
    """(levels, coefficient -> (J,) shrinkage factors) of :func:`shrinkage_factors`, from the
    fit's arrays (the explorer's fast path uses them without the frame)."""
    blocks = [(rt, vc) for rt, vc in zip(fit.frame.reterms, fit.varcorr) if rt.group == group]
    if not blocks:
        raise DataError(f"group: the fit has no grouping factor {group!r}")
    levels = [str(lv) for lv in blocks[0][0].levels]
    out: dict[str, np.ndarray] = {}  # the frame is made once at the end (cheaper)
    sigma2 = float(fit.sigma) ** 2
    condvar = None
    for k, (rt, vc) in enumerate(blocks):
        tau = np.diag(np.asarray(vc.cov, dtype=float))
        if list(rt.terms) == ["(Intercept)"]:
            w = fit.frame.weights
            nj = np.bincount(np.asarray(rt.refs), weights=None if w is None else np.asarray(w, float),
                             minlength=len(levels))
            with np.errstate(divide="ignore", invalid="ignore"):
                lam = np.where(tau[0] > 0, (nj / sigma2) / (nj / sigma2 + 1.0 / tau[0]), 0.0)
            if np.isnan(lam).any():  # sigma = 0: the data determine every group exactly
                lam = np.where(np.isnan(lam), 1.0, lam)
            out[rt.terms[0]] = lam
            continue
        if condvar is None:
            # the group's conditional covariances, as ranef(condvar=True).condvar[group]
            # gives them, without its frames
            condvar = [cv for rt_, cv in zip(fit.frame.reterms, fit._condvar) if rt_.group == group]
        cv = np.asarray(condvar[k], dtype=float)
        for c, term in enumerate(rt.terms):
            with np.errstate(divide="ignore", invalid="ignore"):
                lam = 1.0 - cv[:, c, c] / tau[c] if tau[c] > 0 else np.zeros(len(levels))
            out[term] = np.clip(lam, 0.0, 1.0)
    return levels, out


# --------------------------------------------------------------------------------------------
# pooling
# --------------------------------------------------------------------------------------------

@dataclass
class Pooling(TextResult):
    """Complete, no and partial pooling of one multilevel model (see :func:`pooling`).

    table:       one row per group: ``group``, ``n`` and for each random-effect coefficient
                 c: ``{c}_complete``, ``{c}_none``, ``{c}_partial`` (= ``coef(fit)``) and
                 ``{c}_weight``, the shrinkage factor in [0, 1] (1 = own estimate kept,
                 0 = complete pooling; :func:`shrinkage_factors`).
    fixed:       the fixed effects under each approach, ``complete``, ``complete_se``,
                 ``none``, ``none_se``, ``partial``, ``partial_se`` (NaN where an approach
                 has no such single coefficient: the group-specific ones under no pooling,
                 the aliased level-2 ones).
    fits:        ``{"complete": LmFit, "none": LmFit, "partial": LmmFit}``.
    coef_names:  the random-effect coefficients, e.g. ``["(Intercept)", "Days"]``.
    group_name:  the grouping column.
    x_name:      the (first) slope term's label (a data column for a plain variable), or None.
    data:        the rows used (index: row positions in the data given).
    absorbed:    fixed-effect columns constant within groups (level-2 terms), which the
                 no-pooling estimates absorb (see :func:`pooling`).
    notes:       remarks (groups without a no-pooling estimate ...).
    """

    formula: str
    table: pd.DataFrame
    fixed: pd.DataFrame
    fits: dict[str, Any]
    coef_names: list[str]
    group_name: str
    x_name: str | None
    data: pd.DataFrame
    absorbed: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        lines = [f"Pooling comparison for {self.formula}",
                 f"groups: {self.group_name} ({len(self.table)}); complete pooling = lm without "
                 f"the random effects; no pooling = lm with group intercepts"
                 + (" and slopes" if self.x_name else "") + "; partial pooling = lmer", "",
                 "Fixed effects (estimate and standard error):"]
        lines += self.fixed.to_string(float_format=lambda v: f"{v:.4g}").splitlines()
        lines += ["", "Group coefficients (first rows; weight = shrinkage factor: 1 keeps the "
                      "group's own estimate, 0 pools it completely):"]
        lines += self.table.head(10).to_string(index=False,
                                               float_format=lambda v: f"{v:.4g}").splitlines()
        if len(self.table) > 10:
            lines.append(f"... {len(self.table) - 10} more groups")
        w = [f"{c}: {self.table[f'{c}_weight'].median():.3f}" for c in self.coef_names]
        lines += ["", "Median shrinkage weight: " + ", ".join(w)]
        if self.absorbed:
            lines.append("Level-2 terms absorbed by the groups' own coefficients (no-pooling "
                         "values shown net of them): " + ", ".join(self.absorbed))
        lines += [f"Note: {n}" for n in self.notes]
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        fmt = lambda v: f"{v:.4g}"  # noqa: E731
        return ('<div class="ml-pooling">' + f"<b>Pooling comparison for {escape(self.formula)}"
                "</b><p>Fixed effects</p>" + self.fixed.to_html(float_format=fmt)
                + "<p>Group coefficients</p>" + self.table.to_html(index=False, float_format=fmt,
                                                                   max_rows=20)
                + "".join(f"<p>Note: {escape(n)}</p>" for n in self.notes) + "</div>")

    def to_dict(self) -> dict:
        from multilevel.results.export import jsonable

        return jsonable({"formula": self.formula, "group_name": self.group_name,
                         "coef_names": self.coef_names, "x_name": self.x_name,
                         "table": self.table.to_dict(orient="list"),
                         "fixed": {k: v for k, v in self.fixed.to_dict(orient="index").items()},
                         "absorbed": self.absorbed, "notes": self.notes})


def pooling(formula: str, data: Any, fit: Any = None) -> Pooling:
    """Compare complete pooling, no pooling and partial pooling (the mixed model).

    The model must have exactly one grouping factor, a data column (``(1 | g)``,
    ``(1 + x | g)``, ``(x || g)``). All three fits use the rows the mixed model uses.

    * complete pooling: ``lm`` of the formula without its random-effects terms;
    * no pooling: one ``lm`` with group intercepts ``0 + factor(g)`` and, for each slope of
      the random-effects term, group slopes ``factor(g):x``, plus the formula's other terms
      as common coefficients (terms constant within groups, aliased with the group
      coefficients, are left out);
    * partial pooling: ``lmer(formula, data)`` (REML), or ``fit`` when given: the lmer fit
      of this formula on these data (REML), which saves refitting it (it is checked to have
      this formula, REML and the data's number of rows; a mismatch is a ModelSpecError).

    The per-group ``table`` puts the three on the scale of ``coef(fit)``: ``{c}_partial`` is
    exactly ``fit.coef()[g][c]``, ``{c}_complete`` the complete-pooling coefficient of c (0
    if the fixed part has no such term) and ``{c}_none`` the group's own estimate. When the
    model has level-2 predictors (``texp``) or cross-level interactions (``x:texp``), the
    no-pooling group coefficients absorb them, while ``coef(fit)`` does not include them;
    ``{c}_none`` is then given net of them, i.e. minus their contribution at the group's
    values computed with the mixed model's estimates, so that the three columns stay
    comparable (``absorbed`` lists those terms).

    ``{c}_weight`` is the shrinkage factor of :func:`shrinkage_factors`, always in [0, 1]:
    for a random intercept the textbook n_j/σ² / (n_j/σ² + 1/τ²) (in a model without
    predictors the partial-pooling estimate is then weight·(group mean) + (1 - weight)·(grand
    mean)); for the coefficients of a vector-valued term ``(1 + x | g)``,
    1 - condVar_jj / τ_jj, the share of the coefficient's prior variance that the group's
    data remove.

    Examples
    --------
    >>> import multilevel as ml
    >>> p = ml.pooling("Yield ~ 1 + (1 | Batch)", ml.datasets.load("dyestuff"))
    >>> p.table[["group", "n", "(Intercept)_weight"]].round(3).head(2).values.tolist()
    [['A', 5, 0.783], ['B', 5, 0.783]]
    >>> d = ml.datasets.load("dyestuff")
    >>> fit = ml.lmer("Yield ~ 1 + (1 | Batch)", d)
    >>> ml.pooling("Yield ~ 1 + (1 | Batch)", d, fit=fit).fits["partial"] is fit
    True
    """
    s = _setup(formula, data, fit)
    partial = s.partial
    coef_df = partial.coef()[s.group]
    beta = partial.fixef
    complete_coef = s.complete.coef()

    # the frames are built from whole columns (one DataFrame each), not column by column
    columns: dict[str, Any] = {"group": s.levels, "n": _group_sizes(s).astype(np.int64)}
    net = s.none_full.copy()
    for name, load in s.absorbed.items():
        net -= float(beta[name]) * load  # remove the level-2 part, as coef(fit) leaves it out
    factors = shrinkage_factors(partial, s.group)
    J = len(s.levels)
    for c, cn in enumerate(s.coef_names):
        comp = float(complete_coef[cn]) if cn in complete_coef.index else 0.0
        if np.isnan(comp):  # aliased in the complete-pooling fit
            comp = 0.0
        columns[f"{cn}_complete"] = np.full(J, comp)
        columns[f"{cn}_none"] = net[:, c]
        columns[f"{cn}_partial"] = coef_df[cn].to_numpy(dtype=float)
        columns[f"{cn}_weight"] = factors[cn].to_numpy(dtype=float)
    table = pd.DataFrame(columns)

    names = list(beta.index)
    for nm in complete_coef.index:
        if nm not in names:
            names.append(nm)

    def aligned(values: pd.Series) -> np.ndarray:
        # Series.reindex(names): NaN where the fit has no such coefficient
        d = dict(zip(values.index, values.to_numpy(dtype=float)))
        return np.array([d.get(nm, np.nan) for nm in names], dtype=float)

    fixed = pd.DataFrame({"complete": aligned(s.complete.fixef),
                          "complete_se": aligned(s.complete.se),
                          "none": aligned(s.none.fixef), "none_se": aligned(s.none.se),
                          "partial": aligned(beta), "partial_se": aligned(partial.se)},
                         index=pd.Index(names, name="term"))

    x_name = s.slope_labels[0] if s.slope_labels else None
    return Pooling(formula=formula, table=table, fixed=fixed,
                   fits={"complete": s.complete, "none": s.none, "partial": partial},
                   coef_names=list(s.coef_names), group_name=s.group, x_name=x_name,
                   data=s.data, absorbed=list(s.absorbed), notes=s.notes)


# --------------------------------------------------------------------------------------------
# two-stage estimates
# --------------------------------------------------------------------------------------------

@dataclass
class TwoStage(TextResult):
    """Two-stage estimates next to the mixed model's (see :func:`two_stage`).

    table:            by fixed-effect name: ``two_stage``, ``two_stage_se``, ``mixed``,
                      ``mixed_se``, ``complete``, ``complete_se`` and ``source`` (which
                      regression gave the two-stage number).
    group_estimates:  the stage-one coefficients per group (``group``, ``n``, one column per
                      random-effect coefficient) and the stage-two predictors.
    stage1:           the no-pooling ``LmFit``.
    stage2:           per random-effect coefficient, the group-level ``LmFit``, in the
                      user's names: the coefficient on the level-2 variables
                      (``extrav ~ texp``; ``equations`` maps them to fixed effects).
    equations:        per coefficient, the fixed-effect names its stage-two regression
                      estimates (first: the coefficient itself, the stage-two intercept).
    fits:             ``{"complete": LmFit, "stage1": LmFit, "mixed": LmmFit}``.
    """

    formula: str
    table: pd.DataFrame
    group_estimates: pd.DataFrame
    stage1: LmFit
    stage2: dict[str, LmFit]
    equations: dict[str, list[str]]
    fits: dict[str, Any]
    notes: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        lines = [f"Two-stage estimates for {self.formula}",
                 "(stage 1: one lm with group intercepts/slopes; stage 2: OLS of the group "
                 "estimates on the level-2 predictors, groups weighted equally)", ""]
        lines += self.table.to_string(float_format=lambda v: f"{v:.4g}").splitlines()
        lines += [f"Note: {n}" for n in self.notes]
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        return ('<div class="ml-two-stage">' + f"<b>Two-stage estimates for "
                f"{escape(self.formula)}</b>" + self.table.to_html(
                    float_format=lambda v: f"{v:.4g}")
                + "".join(f"<p>Note: {escape(n)}</p>" for n in self.notes) + "</div>")

    def to_dict(self) -> dict:
        from multilevel.results.export import jsonable

        return jsonable({"formula": self.formula, "equations": self.equations,
                         "table": self.table.to_dict(orient="index"), "notes": self.notes})


def _group_values(data: pd.DataFrame, refs: np.ndarray, nlev: int, column: str
                  ) -> tuple[pd.Series, bool]:
    """The value of a column in each group (first row) and whether it is constant within
    every group."""
    s = data[column].reset_index(drop=True)
    first = s.groupby(refs, sort=True).first()
    nun = s.groupby(refs, sort=True).nunique(dropna=True)
    return first.reindex(range(nlev)), bool((nun <= 1).all())


def _level2_columns(data: pd.DataFrame, refs: np.ndarray, nlev: int, names: Sequence[str]
                    ) -> list[tuple[str, np.ndarray]]:
    """Numeric group-level predictors from level-2 data columns: a numeric column as is, a
    factor as treatment dummies named as R names them (``locationinner``)."""
    out: list[tuple[str, np.ndarray]] = []
    for col in names:
        if col not in data.columns:
            raise DataError(f"level2 column '{col}' not found in the data")
        vals, constant = _group_values(data, refs, nlev, col)
        if not constant:
            raise DataError(f"level2 column '{col}' varies within groups; a stage-two predictor "
                            f"must be constant within each group")
        s = data[col]
        if pd.api.types.is_bool_dtype(s):
            out.append((f"{col}TRUE", vals.astype(float).to_numpy()))
        elif pd.api.types.is_numeric_dtype(s):
            out.append((col, vals.to_numpy(dtype=float)))
        else:
            cats = list(s.cat.categories) if isinstance(s.dtype, pd.CategoricalDtype) \
                else sorted(s.dropna().unique().tolist())
            used = [c for c in cats if (vals == c).any()]
            for lev in used[1:]:
                out.append((f"{col}{lev}", (vals == lev).to_numpy(dtype=float)))
    return out


def _level2_name(fixed_name: str, coef: str) -> str:
    """The level-2 variable behind a fixed effect in the equation of ``coef``: the fixed
    name without the coefficient's own factors (``extrav:texp`` in the extrav equation is
    ``texp``); the name itself in the intercept equation or when it has no such factor."""
    if coef == "(Intercept)":
        return fixed_name
    parts = fixed_name.split(":")
    own = coef.split(":")
    rest = [p for p in parts if p not in own]
    return ":".join(rest) if rest and len(rest) == len(parts) - len(own) else fixed_name


def _same_term(a: str, b: str) -> bool:
    """``extrav:texp`` and ``texp:extrav`` name the same interaction column."""
    return a == b or sorted(a.split(":")) == sorted(b.split(":"))


def two_stage(formula: str, data: Any, level2: Sequence[str] | None = None) -> TwoStage:
    """Two-stage ("slopes as outcomes") estimates beside the mixed model's.

    Stage one estimates each group's intercept (and slopes) with the no-pooling regression
    of :func:`pooling` (one ``lm`` with group dummies and group-by-slope interactions; the
    formula's other level-1 terms as common coefficients). Stage two regresses those group
    estimates, one equation per random-effect coefficient, on level-2 predictors by OLS:

    * ``level2=None``: the level-2 terms of the formula itself. A fixed term constant within
      groups (``texp``, a factor such as ``location``) enters the intercept equation; a
      cross-level interaction ``x:texp`` enters the equation of the slope of ``x``. The
      stage-two intercepts estimate the fixed intercept and slopes; level-1 covariates that
      are common in stage one (``sex``) keep their stage-one estimate.
    * ``level2=["texp", ...]``: these data columns (constant within groups) in every
      equation; their coefficients are matched to the mixed model's fixed effects by name
      (``texp`` in the intercept equation, ``extrav:texp`` in the slope equation).

    Caveats (why the mixed model is the better estimator):

    * stage two ignores the uncertainty of the stage-one estimates: a small group's noisy
      intercept counts as much as a large group's precise one (equal weighting), and the
      stage-two residual variance mixes true between-group variance with estimation error;
    * groups whose coefficient is not estimable in stage one (too few rows, no variation in
      x) are left out of stage two;
    * the standard errors are those of OLS on J groups: honest about the number of groups
      (unlike complete pooling), but neither efficient nor, with unequal group sizes,
      correctly weighted;
    * level-1 covariates are forced to have common effects in stage one, and the intercept
      equation describes the groups at x = 0 (centre x to make it meaningful).

    Examples
    --------
    >>> import multilevel as ml
    >>> ts = ml.two_stage("popular ~ extrav + texp + extrav:texp + (1 + extrav | class)",
    ...                   ml.datasets.load("popularity"))
    >>> ts.table.loc["texp", ["complete_se", "mixed_se", "two_stage_se"]].round(4).tolist()
    [0.0115, 0.0142, 0.0147]
    """
    s = _setup(formula, data)
    J = len(s.levels)
    mixed = s.partial
    beta_names = list(mixed.fixef.index)
    notes = list(s.notes)
    sizes = _group_sizes(s)

    # stage-two predictors per equation: (fixed-effect name, values over the groups)
    preds: dict[str, list[tuple[str, np.ndarray]]] = {c: [] for c in s.coef_names}
    if level2 is None:
        for name, load in s.absorbed.items():
            active = [c for c in range(len(s.coef_names))
                      if np.nanmax(np.abs(load[:, c])) > 1e-12]
            if len(active) != 1:
                notes.append(f"{name} loads on several group coefficients; no two-stage "
                             f"estimate")
                continue
            c = active[0]
            preds[s.coef_names[c]].append((name, load[:, c]))
    else:
        cols = _level2_columns(s.data, s.refs, J, list(level2))
        for cn in s.coef_names:
            for nm, vals in cols:
                label = nm if cn == "(Intercept)" else f"{cn}:{nm}"
                match = [b for b in beta_names if _same_term(b, label)]
                preds[cn].append((match[0] if match else label, vals))

    ge = pd.DataFrame({"group": s.levels, "n": sizes.astype(np.int64)})
    for c, cn in enumerate(s.coef_names):
        ge[cn] = s.none_full[:, c]
    stage2: dict[str, LmFit] = {}
    equations: dict[str, list[str]] = {}
    rows: dict[str, dict[str, Any]] = {}
    for c, cn in enumerate(s.coef_names):
        # the stage-two regression in the user's names, "slopes as outcomes" style: the
        # group coefficient on the level-2 variables (extrav ~ texp, whose texp coefficient
        # estimates the fixed effect extrav:texp)
        work = pd.DataFrame({cn: s.none_full[:, c]})
        rhs = []
        for nm, vals in preds[cn]:
            var = _level2_name(nm, cn)
            while var in work.columns:  # two predictors with one name: keep both apart
                var = nm if var != nm else var + "."
            work[var] = vals
            rhs.append(var)
            ge[f"{cn}~{nm}"] = vals
        work = work[np.isfinite(work[cn])]
        if len(work) <= len(rhs) + 1:
            notes.append(f"too few groups with a stage-one estimate of {cn} for stage two")
            continue
        fit = lm(f"{_rname(cn)} ~ " + (" + ".join(map(_rname, rhs)) if rhs else "1"), work)
        stage2[cn] = fit
        names = [cn] + [nm for nm, _ in preds[cn]]
        equations[cn] = names
        coef, se = fit.coef(), fit.se
        for term, nm in zip(["(Intercept)"] + [_rname(v) for v in rhs], names):
            rows[nm] = {"two_stage": coef.get(term, np.nan), "two_stage_se": se.get(term, np.nan),
                        "source": f"stage 2 ({cn})"}
    # level-1 covariates common to all groups in stage one
    for nm in s.none.fixef.index:
        if nm in beta_names and nm not in rows:
            rows[nm] = {"two_stage": s.none.fixef[nm], "two_stage_se": s.none.se[nm],
                        "source": "stage 1"}

    index = beta_names + [nm for nm in rows if nm not in beta_names]
    table = pd.DataFrame(index=pd.Index(index, name="term"))
    table["two_stage"] = [rows.get(nm, {}).get("two_stage", np.nan) for nm in index]
    table["two_stage_se"] = [rows.get(nm, {}).get("two_stage_se", np.nan) for nm in index]
    table["mixed"] = mixed.fixef.reindex(index)
    table["mixed_se"] = mixed.se.reindex(index)
    table["complete"] = s.complete.fixef.reindex(index)
    table["complete_se"] = s.complete.se.reindex(index)
    table["source"] = [rows.get(nm, {}).get("source", "") for nm in index]
    return TwoStage(formula=formula, table=table, group_estimates=ge, stage1=s.none,
                    stage2=stage2, equations=equations,
                    fits={"complete": s.complete, "stage1": s.none, "mixed": mixed},
                    notes=notes)
