"""Power analysis by simulation (what R users do with simr's ``powerSim`` / ``powerCurve``).

``power(fit_or_design, test, nsim=1000, ...)`` repeats: draw a response from the true model
(new random effects and noise around the true fixed effects), refit the model to it, test;
the power is the share of simulations whose p-value is below ``alpha``.

The true model is a fitted ``lmer`` model (its estimates, with ``fixef=`` to set the effect
of interest to the size that matters, as simr's ``fixef(fit)["x"] <- value``) or a
:class:`~multilevel.toolkit.power_design.PowerDesign` (J groups of n, predictors, true
parameters). Refits are the parametric bootstrap's fast path: the engine problem is built
once per design and only its response is replaced (``LmmProblem.set_y``), the optimiser
starts at the true theta.

Tests (``method``):

``"satterthwaite"`` (default for a fixed effect)
    t test of a coefficient (F test of a term with several columns) with Satterthwaite's
    df, as lmerTest's ``summary`` / ``anova``, on the fit by the model's criterion (REML
    unless the fit is ML). The derivatives behind the df are central differences (one step,
    no Richardson extrapolation): the df differ from lmerTest's by about 1e-5 relative,
    which moves no p-value that matters, at a quarter of the cost.
``"lrt"``
    likelihood-ratio test (ML fits of both models, chi-square on the difference in the
    number of parameters, as ``anova(m0, m1)``): of a fixed effect or term (the null model
    drops its columns), or of two formulas: ``test="y ~ x + (1 | g)"`` (the null model,
    against the true model's formula) or ``test=(null, alternative)``. Tests of a variance
    component with it are conservative (the null value is on the boundary).
``"z"``
    Wald z (chi-square) test of a fixed effect or term, lme4's t value read as normal.

Designs along a dimension (``along="n_groups"`` or ``"group_size"``, ``values=[...]``)
are built from the fitted rows as :mod:`multilevel.toolkit.extend` describes (simr's
``extend``); a PowerDesign is regenerated with that number of groups or rows per group.

The confidence interval of a power is Clopper-Pearson's exact binomial interval (as simr's
``binom.test``). Refits that fail are counted (``failed``) and left out of the denominator;
warnings of the refits (``singular``, ``not_converged``) are counted per design and printed.
Simulation i of design k uses stream i of ``SeedSequence(seed).spawn(designs)[k].spawn(nsim)``,
so a seed reproduces the run exactly.

>>> import multilevel as ml
>>> fit = ml.lmer("Reaction ~ Days + (Days | Subject)", ml.datasets.load("sleepstudy"))
>>> pw = ml.power(fit, "Days", nsim=20, fixef={"Days": 5.0}, seed=1)
>>> round(pw.power, 2), pw.method
(0.8, 'satterthwaite')
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import special

from multilevel.control import LmerControl
from multilevel.covariance import is_singular_theta, lambda_blocks
from multilevel.design.frame import build_model_frame
from multilevel.engine.input import EngineInput
from multilevel.engine.lmm import LmmProblem, fit_theta
from multilevel.errors import FitError, ModelSpecError, MultilevelError
from multilevel.inference._common import is_glmm, lmm_problem
from multilevel.inference.bootstrap import _Progress, _Simulator
from multilevel.inference.ddf import satt_ftest, satterthwaite_at
from multilevel.models.input import engine_input
from multilevel.results.lmm import LmmFit
from multilevel.toolkit.extend import ALONG, extend_input
from multilevel.toolkit.power_design import PowerDesign

__all__ = ["power", "PowerResult", "PowerDesign"]

METHODS = {"satterthwaite": "Satterthwaite t test", "lrt": "likelihood-ratio test", "z": "Wald z test"}
_ALIASES = {"satterthwaite": "satterthwaite", "satt": "satterthwaite", "lrt": "lrt", "lr": "lrt",
            "likelihood-ratio": "lrt", "z": "z", "wald": "z"}


# --- the result -------------------------------------------------------------------------


@dataclass
class PowerResult:
    """Estimated power, one entry per design (one without ``along``). Plain data: pickles.

    ``power`` is a float (one design) or an array over ``values``; ``ci`` its Clopper-Pearson
    interval ((2,) or (k, 2)); ``successes`` the significant simulations, ``nsim_ok`` the
    simulations that were refitted (``failed`` did not), ``warnings`` one dict of warning
    counts of the refits per design (``{"singular": 12}``), ``pvalues`` the p-value of every
    simulation (one array per design; NaN where the refit failed).
    """

    test: str
    method: str
    alpha: float
    nsim: int
    level: float
    along: str | None
    values: list[int] | None
    successes: np.ndarray
    nsim_ok: np.ndarray
    failed: np.ndarray
    warnings: list[dict[str, int]]
    nobs: list[int]
    n_groups: list[int]
    group: str
    effect: dict[str, float]
    seed: Any
    time: float
    formula: str
    null_formula: str | None = None
    pvalues: list[np.ndarray] = field(default_factory=list)
    ci_method: str = "Clopper-Pearson"
    notes: list[str] = field(default_factory=list)

    @property
    def _power(self) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.nsim_ok > 0, self.successes / np.maximum(self.nsim_ok, 1), np.nan)

    @property
    def _ci(self) -> np.ndarray:
        out = np.full((len(self.successes), 2), np.nan)
        for i, (k, n) in enumerate(zip(self.successes, self.nsim_ok)):
            if n > 0:
                from scipy import stats  # here: scipy.stats costs 0.4 s to import

                ci = stats.binomtest(int(k), int(n)).proportion_ci(confidence_level=self.level, method="exact")
                out[i] = (ci.low, ci.high)
        return out

    @property
    def power(self) -> float | np.ndarray:
        """The estimated power: a float, or an array over ``values``."""
        p = self._power
        return float(p[0]) if self.values is None else p

    @property
    def ci(self) -> np.ndarray:
        """Clopper-Pearson interval of the power at ``level``: (lower, upper), or (k, 2)."""
        c = self._ci
        return c[0] if self.values is None else c

    def to_frame(self) -> pd.DataFrame:
        """One row per design: value, nobs, groups, successes, nsim, power, lower, upper,
        failed and the warning counts."""
        c = self._ci
        codes = sorted({k for w in self.warnings for k in w})
        out = pd.DataFrame({
            **({self.along: self.values} if self.values is not None else {}),
            "nobs": self.nobs, "n_groups": self.n_groups, "successes": self.successes.astype(int),
            "nsim": self.nsim_ok.astype(int), "power": self._power, "lower": c[:, 0], "upper": c[:, 1],
            "failed": self.failed.astype(int),
            **{code: [w.get(code, 0) for w in self.warnings] for code in codes},
        })
        return out

    def to_dict(self) -> dict[str, Any]:
        """Every setting and number as plain Python values (JSON-ready)."""
        return {"test": self.test, "method": self.method, "alpha": self.alpha, "nsim": self.nsim,
                "level": self.level, "ci_method": self.ci_method, "along": self.along,
                "values": self.values, "formula": self.formula, "null_formula": self.null_formula,
                "group": self.group, "effect": dict(self.effect),
                "seed": self.seed if isinstance(self.seed, (int, type(None))) else str(self.seed),
                "time": self.time, "notes": list(self.notes),
                "designs": self.to_frame().to_dict(orient="records")}

    def __str__(self) -> str:
        return format_power(self)

    def __repr__(self) -> str:
        return format_power(self)


def _pct(x: float) -> str:
    return "  NaN" if not np.isfinite(x) else f"{100 * x:.2f}"


def _warn_text(failed: int, warns: dict[str, int], n: int) -> str:
    parts = [f"{failed} failed"] + [f"{k} {code.replace('_', ' ')}" for code, k in sorted(warns.items())]
    return f"{n} simulations ({', '.join(parts)})"


def format_power(r: PowerResult) -> str:
    """The result in the layout of simr's powerSim / powerCurve printouts."""
    what = f"the comparison with the null model" if r.null_formula else f"predictor {r.test!r}"
    head = (f"Power for {what} ({METHODS[r.method]}), {100 * r.level:g}% confidence interval "
            f"({r.ci_method})")
    p, c = r._power, r._ci
    lines = []
    if r.values is None:
        lines += [head + ":", f"      {_pct(p[0])}% ({_pct(c[0, 0])}, {_pct(c[0, 1])})", ""]
    else:
        by = {"n_groups": f"number of groups ({r.group})", "group_size": f"rows per group ({r.group})"}[r.along]
        lines += [head + ",", f"by {by}:"]
        w = max(len(str(v)) for v in r.values)
        for i, v in enumerate(r.values):
            lines.append(f"  {v:>{w}}: {_pct(p[i]):>6}% ({_pct(c[i, 0])}, {_pct(c[i, 1])}) - "
                         f"{r.nobs[i]} rows, {r.n_groups[i]} groups")
        lines.append("")
    lines.append(f"Model: {r.formula}")
    if r.null_formula:
        lines.append(f"Null model: {r.null_formula}")
    if r.effect:
        lines.append("Effect size: " + ", ".join(f"{k} = {v:.4g}" for k, v in r.effect.items()))
    if r.values is None:
        lines.append(f"Based on {_warn_text(int(r.failed[0]), r.warnings[0], r.nsim)}")
        lines.append(f"alpha = {r.alpha:g}, nobs = {r.nobs[0]}, groups: {r.group} {r.n_groups[0]}")
    else:
        tot: dict[str, int] = {}
        for wd in r.warnings:
            for k, v in wd.items():
                tot[k] = tot.get(k, 0) + v
        counts = _warn_text(int(r.failed.sum()), tot, 0).split(" ", 2)[2]  # "(0 failed, ...)"
        lines.append(f"Based on {r.nsim} simulations per design {counts[:-1]} in all)")
        lines.append(f"alpha = {r.alpha:g}")
    lines.extend(r.notes)
    lines.append(f"Time elapsed: {r.time:.1f} s")
    return "\n".join(lines)


# --- the pieces of one run --------------------------------------------------------------


@dataclass
class _Truth:
    """The generating model: a frame (names), its engine input and the true parameters."""

    frame: Any
    inp: EngineInput
    beta: np.ndarray
    theta: np.ndarray
    sigma: float
    reml: bool
    formula: str
    data: Any = None  # the data the test's formulas are built from (formula tests)
    design: PowerDesign | None = None  # the planned design (None: a fit's)


@dataclass
class _Design:
    """One design of the run: the engine inputs of the true, alternative and null models."""

    truth: EngineInput
    alt: EngineInput
    null: EngineInput | None
    nobs: int
    n_groups: int


def _truth_of_fit(fit: LmmFit, fixef: Mapping[str, float] | None) -> _Truth:
    prob = lmm_problem(fit, "power()")
    beta = np.asarray(fit.getme("beta"), float).copy()
    names = list(fit.frame.fixef_names)
    for k, v in (fixef or {}).items():
        if k not in names:
            raise ModelSpecError(f"fixef: {k!r} is not a fixed effect of the model "
                                 f"({', '.join(names)})")
        beta[names.index(k)] = float(v)
    return _Truth(fit.frame, prob.input, beta, np.asarray(fit.getme("theta"), float).copy(),
                  float(fit.getme("sigma")), bool(prob.reml), fit.formula)


def _truth_of_design(d: PowerDesign, fixef: Mapping[str, float] | None) -> _Truth:
    if fixef:
        d = d.with_(fixed={**d.fixed, **fixef})
    frame = build_model_frame(d.formula, d.data(), family="gaussian")
    inp = engine_input(frame)
    return _Truth(frame, inp, d.beta(list(frame.fixef_names)), d.theta(frame.reterms), d.sigma,
                  True, d.formula, design=d)


def _method(method: str | None, formulas: bool) -> str:
    if method is None:
        return "lrt" if formulas else "satterthwaite"
    key = str(method).strip().lower()
    if key not in _ALIASES:
        raise ModelSpecError(f"method must be 'satterthwaite', 'lrt' or 'z', not {method!r}")
    key = _ALIASES[key]
    if formulas and key != "lrt":
        raise ModelSpecError(f"a comparison of two formulas is a likelihood-ratio test: "
                             f"method='lrt', not {method!r}")
    return key


def _columns(frame: Any, test: str) -> list[int]:
    """Columns of X of a coefficient name or a term label of the fixed part."""
    names = list(frame.fixef_names)
    if test in names:
        return [names.index(test)]
    labels = list(frame.term_labels)
    if test in labels and frame.assign is not None:
        cols = [int(j) for j in np.flatnonzero(np.asarray(frame.assign) == labels.index(test) + 1)]
        if cols:
            return cols
    raise ModelSpecError(f"test: {test!r} is neither a fixed effect ({', '.join(names)}) nor a "
                         f"term of the fixed part ({', '.join(labels) or 'none'}) of "
                         f"{frame.formula}; to compare two models give a formula")


def _frame_for(formula: str, data: Any, truth: _Truth, what: str) -> Any:
    frame = build_model_frame(formula, data, family="gaussian")
    if frame.response != truth.frame.response:
        raise ModelSpecError(f"test: the {what} model's response {frame.response!r} is not the "
                             f"simulated one, {truth.frame.response!r}")
    if frame.nobs != truth.frame.nobs or not np.array_equal(frame.rows, truth.frame.rows):
        raise ModelSpecError(f"test: the {what} model {formula!r} uses other rows of the data than "
                             f"{truth.formula!r} (missing values?); both must be fitted to the same rows")
    return frame


def _group_of(truth: _Truth, group: str | None) -> tuple[str, np.ndarray, int]:
    """The extended grouping factor: its name, level of each row and number of levels."""
    groups = list(dict.fromkeys(rt.group for rt in truth.frame.reterms))
    if group is None:
        if len(groups) > 1:
            raise ModelSpecError(f"group: the model has several grouping factors "
                                 f"({', '.join(groups)}); say which one to extend")
        group = groups[0]
    if group not in groups:
        raise ModelSpecError(f"group: {group!r} is not a grouping factor of the model "
                             f"({', '.join(groups)})")
    rt = next(rt for rt in truth.frame.reterms if rt.group == group)
    return group, np.asarray(rt.refs, np.int64), int(rt.n_levels)


def _drop(inp: EngineInput, cols: list[int], names: list[str]) -> EngineInput:
    keep = [j for j in range(inp.p) if j not in cols]
    kept = [names[j] for j in keep]
    return inp.replace(X=np.ascontiguousarray(inp.X[:, keep]),
                       intercept=kept.index("(Intercept)") if "(Intercept)" in kept else None)


# --- the run ----------------------------------------------------------------------------


def power(fit_or_design: LmmFit | PowerDesign, test: str | Sequence[str], *, nsim: int = 1000,
          along: str | None = None, values: Sequence[int] | None = None, alpha: float = 0.05,
          seed: Any = None, method: str | None = None, fixef: Mapping[str, float] | None = None,
          data: Any = None, group: str | None = None, level: float = 0.95,
          progress: bool | None = None, control: dict | LmerControl | None = None) -> PowerResult:
    """Power of a test by simulation from a fitted model or a planned design.

    Parameters
    ----------
    fit_or_design : an ``lmer`` fit (simulate from its estimates) or a
        :class:`~multilevel.toolkit.power_design.PowerDesign`.
    test : a fixed effect (``"Days"``) or term of the fixed part; or a formula (the null
        model, tested against the true model's formula) or a pair (null, alternative) of
        formulas: a likelihood-ratio test. Formulas need ``data=`` for a fit (the data it
        was fitted to); a PowerDesign makes its own.
    nsim : simulations per design.
    along, values : ``"n_groups"`` or ``"group_size"`` and the values to try (a power
        curve); without them, the fitted (or planned) design.
    alpha : significance level of the test.
    seed : int or ``numpy.random.SeedSequence``; the same seed gives the same result.
    method : ``"satterthwaite"`` (default for a fixed effect), ``"lrt"`` (default for
        formulas) or ``"z"``; see the module docstring.
    fixef : true fixed effects to use instead of the fit's (``{"Days": 5.0}``).
    group : the grouping factor to extend when the model has several.
    level : confidence level of the Clopper-Pearson interval of the power.
    progress : a progress bar on stderr (default: when stderr is a terminal).
    control : optimiser settings of the refits (as ``lmer``'s).

    Returns
    -------
    :class:`PowerResult`: ``.power``, ``.ci``, ``.to_frame()``, ``print()``;
    ``multilevel.report.power_plot.plot_power_curve(result)`` draws it.

    >>> import multilevel as ml
    >>> d = ml.PowerDesign(n_groups=10, group_size=5, fixed={"w": 1.0}, tau=0.5, sigma=1.0,
    ...                    between={"w": "binary"})
    >>> ml.power(d, "w", nsim=50, along="n_groups", values=[6, 12], seed=2).power.round(2).tolist()
    [0.3, 0.58]
    """
    t0 = time.perf_counter()
    nsim = _count("nsim", nsim)
    if not (0 < float(alpha) < 1):
        raise ModelSpecError(f"alpha must be between 0 and 1, not {alpha!r}")
    if not (0 < float(level) < 1):
        raise ModelSpecError(f"level must be between 0 and 1, not {level!r}")
    if isinstance(fit_or_design, PowerDesign):
        truth = _truth_of_design(fit_or_design, fixef)
    elif is_glmm(fit_or_design):
        raise ModelSpecError(f"power() simulates linear mixed models (lmer fits or a PowerDesign), "
                             f"not a {getattr(fit_or_design, 'family', '?')} GLMM")
    elif isinstance(fit_or_design, LmmFit):
        truth = _truth_of_fit(fit_or_design, fixef)
    else:
        raise ModelSpecError(f"fit_or_design must be an lmer fit or a PowerDesign, not "
                             f"{type(fit_or_design).__name__}")
    formulas = _formulas(test)
    meth = _method(method, formulas is not None)
    if (along is None) != (values is None):
        raise ModelSpecError("along and values go together: along='n_groups' or 'group_size' and "
                             "values=[...] the sizes to try")
    if along is not None and along not in ALONG:
        raise ModelSpecError(f"along must be 'n_groups' or 'group_size', not {along!r}")
    vals = None if values is None else [_count(f"values[{i}]", v) for i, v in enumerate(values)]
    if vals is not None and not vals:
        raise ModelSpecError("values is empty")
    if formulas is not None and truth.design is None:
        if data is None:
            raise ModelSpecError("a comparison of formulas needs data=, the data the fit was made from")
        truth.data = data

    gname, g_refs, g_nlev = _group_of(truth, group if not isinstance(fit_or_design, PowerDesign)
                                      else fit_or_design.group)
    cols: list[int] = []
    effect: dict[str, float] = {}
    null_formula = None
    if formulas is None:
        cols = _columns(truth.frame, str(test))
        names = list(truth.frame.fixef_names)
        effect = {names[j]: float(truth.beta[j]) for j in cols}
        label = str(test)
    else:
        null_formula, alt_formula = formulas
        label = f"{null_formula} against {alt_formula or truth.formula}"

    def design(value: int | None) -> _Design:
        what = "" if value is None else f"{along} = {value}"
        if truth.design is not None:  # a planned design is made anew at each size
            d = truth.design if value is None else truth.design.with_(**{along: value})
            df = d.data()
            frame_t = build_model_frame(d.formula, df, family="gaussian")
            t_inp = engine_input(frame_t)
            _check_fittable(t_inp, what)
            tr = _Truth(frame_t, t_inp, truth.beta, truth.theta, truth.sigma, True, d.formula, df, d)
            alt, null = _models(tr)
            return _Design(t_inp, t_inp if alt is None else alt, null, t_inp.nobs,
                           int(frame_t.reterms[0].n_levels))
        ext = (lambda inp: inp) if value is None else (
            lambda inp: extend_input(inp, g_refs, g_nlev, along, value, what))
        t_inp = ext(truth.inp)
        if value is None:
            _check_fittable(t_inp, what)
        alt, null = _models(truth)
        alt = t_inp if alt is None else ext(alt)
        null = None if null is None else ext(null)
        ng = next(t.n_levels for t, rt in zip(t_inp.terms, truth.frame.reterms) if rt.group == gname)
        return _Design(t_inp, alt, null, t_inp.nobs, int(ng))

    def _models(tr: _Truth) -> tuple[EngineInput | None, EngineInput | None]:
        """(alternative, null) inputs on the true model's rows (None: the truth itself)."""
        if formulas is None:
            if meth != "lrt":
                return None, None
            return None, _drop(tr.inp, cols, list(tr.frame.fixef_names))
        nf, af = formulas
        null_in = engine_input(_frame_for(nf, tr.data, tr, "null"))
        alt_in = None if af is None else engine_input(_frame_for(af, tr.data, tr, "alternative"))
        return alt_in, null_in

    designs = [design(v) for v in (vals or [None])]
    ss = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(seed)
    streams = [[np.random.default_rng(s) for s in child.spawn(nsim)] for child in ss.spawn(len(designs))]
    opts = LmerControl.from_user(control)
    bar = _Progress(nsim * len(designs), progress, label="power")
    succ = np.zeros(len(designs))
    ok = np.zeros(len(designs))
    failed = np.zeros(len(designs))
    warn_counts: list[dict[str, int]] = [{} for _ in designs]
    pvals = [np.full(nsim, np.nan) for _ in designs]
    first_error: list[str] = []
    try:
        for k, d in enumerate(designs):
            runner = _Runner(d, truth, meth, cols, opts)
            for i, rng in enumerate(streams[k]):
                y = runner.sim.draw(rng)
                try:
                    pval, codes = runner.pvalue(y)
                except (FitError, MultilevelError, np.linalg.LinAlgError, FloatingPointError) as e:
                    failed[k] += 1
                    if not first_error:
                        first_error.append(str(e))
                    bar.step()
                    continue
                ok[k] += 1
                pvals[k][i] = pval
                succ[k] += pval < alpha
                for c in codes:
                    warn_counts[k][c] = warn_counts[k].get(c, 0) + 1
                bar.step()
    finally:
        bar.close()
    notes = [f"First failure: {first_error[0]}"] if first_error else []
    return PowerResult(test=label, method=meth, alpha=float(alpha), nsim=nsim, level=float(level),
                       along=along, values=vals, successes=succ, nsim_ok=ok, failed=failed,
                       warnings=warn_counts, nobs=[d.nobs for d in designs],
                       n_groups=[d.n_groups for d in designs], group=gname, effect=effect,
                       seed=seed if not isinstance(seed, np.random.SeedSequence) else ss.entropy,
                       time=time.perf_counter() - t0, formula=truth.formula if formulas is None or
                       formulas[1] is None else formulas[1], null_formula=null_formula,
                       pvalues=pvals, notes=notes)


def _count(name: str, v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
        raise ModelSpecError(f"{name} must be a whole number >= 1, not {v!r}")
    return int(v)


def _formulas(test: Any) -> tuple[str, str | None] | None:
    """(null, alternative or None) when the test compares formulas, else None."""
    if isinstance(test, str):
        return (test, None) if "~" in test else None
    if isinstance(test, (tuple, list)) and len(test) == 2 and all(isinstance(t, str) for t in test):
        return test[0], test[1]
    raise ModelSpecError(f"test must be a fixed effect, a null-model formula or a pair of formulas, "
                         f"not {test!r}")


def _check_fittable(inp: EngineInput, what: str) -> None:
    for t in inp.terms:
        if t.n_levels * t.Z.shape[1] >= inp.nobs:
            raise ModelSpecError(f"the design {what or ''} has {inp.nobs} observations for "
                                 f"{t.n_levels * t.Z.shape[1]} random effects of one term; "
                                 f"the model cannot be fitted".replace("  ", " "))


class _Runner:
    """Refits of one design: the engine problems (built once), the simulator and the test."""

    def __init__(self, d: _Design, truth: _Truth, method: str, cols: list[int], opts: LmerControl):
        self.method, self.opts = method, opts
        self.sim = _Simulator.lmm(d.truth, truth.beta, truth.sigma,
                                  lambda_blocks(truth.theta, d.truth.structures))
        reml = truth.reml if method != "lrt" else False
        self.alt = LmmProblem(d.alt, reml)
        self.null = None if d.null is None else LmmProblem(d.null, False)
        # warm starts at the true theta where the model is the true one (first steps in
        # proportion, as the bootstrap's); other formulas start at their moment estimates
        same = d.alt is d.truth or _same_re(d.alt, d.truth)
        self.alt_start = truth.theta.copy() if same else None
        self.null_start = truth.theta.copy() if d.null is not None and _same_re(d.null, d.truth) else None
        step = np.maximum(0.1 * np.abs(truth.theta), 0.02)
        self.warm = opts.with_(initial_step=step)
        if cols:
            L = np.zeros((len(cols), d.alt.p))
            L[np.arange(len(cols)), cols] = 1.0
            self.L = L

    def _refit(self, problem: LmmProblem, start: np.ndarray | None, y: np.ndarray,
               codes: list[str]) -> tuple[np.ndarray, float]:
        problem.set_y(y)
        if start is not None:
            problem.theta0 = start.copy()
            ctrl = self.warm
        else:
            problem.theta0, problem.step0 = problem._start()  # moment estimates of this response
            ctrl = self.opts
        theta, fval, _info, warns = fit_theta(problem, ctrl)
        if not np.isfinite(fval):
            raise FitError("the objective is not finite at the estimate")
        codes.extend(w.code for w in warns)
        if is_singular_theta(theta, problem.input.structures, self.opts.singular_tol):
            codes.append("singular")
        return theta, fval

    def pvalue(self, y: np.ndarray) -> tuple[float, list[str]]:
        codes: list[str] = []
        theta, f_alt = self._refit(self.alt, self.alt_start, y, codes)
        if self.method == "lrt":
            _t0, f_null = self._refit(self.null, self.null_start, y, codes)
            df = _npar(self.alt) - _npar(self.null)
            if df <= 0:
                raise ModelSpecError(f"the null model has {_npar(self.null)} parameters, the "
                                     f"alternative {_npar(self.alt)}: the null must be the smaller "
                                     f"(nested) model")
            return float(special.chdtrc(df, max(0.0, f_null - f_alt))), sorted(set(codes))
        sol = self.alt.solution(theta)
        beta = sol["beta"]
        if self.method == "z":
            Lb = self.L @ beta
            W = float(Lb @ np.linalg.solve(self.L @ sol["vcov"] @ self.L.T, Lb))
            return float(special.chdtrc(self.L.shape[0], W)), sorted(set(codes))
        info = satterthwaite_at(self.alt, theta, sol["sigma"], sol["vcov"], richardson=1, exact_pwrss=False)
        F, q, ddf = satt_ftest(info, beta, self.L)
        # scipy.special's tails: stats.f.sf's argument checks cost more than the refit's test
        p = special.fdtrc(q, ddf, F) if np.isfinite(ddf) else special.chdtrc(q, F * q)
        return float(p), sorted(set(codes))


def _npar(problem: LmmProblem) -> int:
    return int(problem.pmap.npar) + problem.p + 1


def _same_re(a: EngineInput, b: EngineInput) -> bool:
    """The same random-effects structure (a warm start at the true theta fits)."""
    return len(a.terms) == len(b.terms) and all(
        type(s.structure) is type(t.structure) and s.structure.size == t.structure.size and
        np.array_equal(s.refs, t.refs) and np.array_equal(s.Z, t.Z) for s, t in zip(a.terms, b.terms))
