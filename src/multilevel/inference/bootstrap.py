"""Parametric bootstrap and simulation from a fitted mixed model (lme4's ``simulate`` and
``bootMer``).

``simulate(fit, n, seed)`` draws new responses from the fitted model: new random effects
b ~ N(0, Sigma_b) for every group, new noise e ~ N(0, sigma^2 / w) (LMMs; binomial and
Poisson responses from the conditional distribution for GLMMs), added to X beta-hat (+ offset).

``bootstrap(fit, n, seed)`` refits the model to each simulated response and returns the
estimates. An LMM refit only replaces the response in the engine (``problem.set_y``: the
cross products of X and Z are reused), starts at the original theta-hat, and uses the same
criterion as the fit (REML or ML). A GLMM refit (lme4's ``refit(fit, newresp)``) builds the
engine problem from the fit's stored arrays with the new response (the compiled GLMM core
has no ``set_y``; building it is cheap next to the PIRLS evaluations) and runs glmer's stage 2
from (theta-hat, beta-hat) with the fit's criterion (Laplace or AGQ), family, offset, prior
weights, trials and control settings; it reaches models through ``fit._refit_response``
(registered in results.methods by the package's front), as inference may not import models. Replicate i is drawn from its own random stream
(``SeedSequence(seed).spawn``), so the results do not depend on how the work is split:
with ``workers=2`` a second thread with its own copy of the problem refits half of the
replicates (the compiled engine releases the GIL while it evaluates the deviance, which is
what pays off for models that are not tiny).
"""
from __future__ import annotations

import dataclasses
import os
import sys
import threading
import time
import warnings
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import pandas as pd

from multilevel.errors import FitError, FitWarning, ModelSpecError, MultilevelError, MultilevelWarning
from multilevel.inference._common import block_sizes, copy_problem, is_glmm, lmm_problem, sdcor_names, theta_to_sdcor

if TYPE_CHECKING:
    from multilevel.results import AnyFit

__all__ = ["simulate", "bootstrap"]


def _streams(seed: Any, n: int) -> list[np.random.Generator]:
    ss = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(seed)
    return [np.random.default_rng(s) for s in ss.spawn(n)]


_RE_SD = ("varcorr", "lme4")


def _re_scale(fit: AnyFit, re_sd: str) -> float:
    """The factor of Lambda in the simulated b = factor * Lambda u.

    LMMs: sigma. Binomial, Poisson, negative binomial: 1. Gamma and inverse Gaussian: lme4's
    criterion penalises |u|^2 beside the unscaled deviance, so its theta is the SD of b
    relative to sigma -- lme4's ``VarCorr`` prints sigma x theta and its vcov carries sigma^2
    -- while lme4 1.1-31's ``simulate`` draws b = Lambda u without sigma (lme4 issue #557: a
    bootstrap from such draws centres theta at several times theta-hat, e.g. 3.0 against 0.89
    on Early's Gamma model, and its fixed effects spread 5 times the Wald SEs; inverse-link
    draws fall below mu = 0). ``re_sd="varcorr"`` (default) draws b from the fit's
    ``varcorr`` (sigma x Lambda u), ``re_sd="lme4"`` as lme4's simulate."""
    if re_sd not in _RE_SD:
        raise ModelSpecError(f"re_sd must be 'varcorr' or 'lme4', not {re_sd!r}")
    if not is_glmm(fit):
        return float(fit.getme("sigma"))
    if fit.family_object.has_dispersion and re_sd == "varcorr":
        return float(fit.sigma)
    return 1.0


class _Simulator:
    """Draws responses of one fitted model; holds the pieces that do not change."""

    def __init__(self, fit: AnyFit, re_sd: str = "varcorr"):
        frame = fit.frame
        self.frame = frame
        self.terms = list(frame.reterms)
        self.glmm = is_glmm(fit)
        self.mean_fixed = frame.X @ np.asarray(fit.getme("beta"), float) if frame.X.shape[1] else np.zeros(frame.nobs)
        if frame.offset is not None:
            self.mean_fixed = self.mean_fixed + frame.offset
        sigma = 1.0 if self.glmm else float(fit.getme("sigma"))
        self.sigma = sigma
        # Cov(b) = sigma^2 Lambda Lambda' (sigma = 1 for binomial, Poisson, negative
        # binomial): b = sigma * Lambda u. For Gamma and inverse Gaussian fits the scale of
        # b is lme4's question (see _re_scale)
        self.factors = [_re_scale(fit, re_sd) * L for L in fit.lambdas]
        w = frame.weights
        self.noise_sd = None if self.glmm else sigma / np.sqrt(w) if w is not None else np.full(frame.nobs, sigma)
        if self.glmm:
            self.family = fit.family_object
            self.resp_sigma = float(fit.sigma)  # lme4's sigma(): the dispersion families' scale
            nt = getattr(fit, "_ntrials", None)
            if nt is None:
                nt = frame.weights if frame.weights is not None else np.ones(frame.nobs)
            self.trials = np.asarray(nt, float)

    @classmethod
    def lmm(cls, inp: Any, beta: np.ndarray, sigma: float, lambdas: list[np.ndarray]) -> "_Simulator":
        """A simulator of a linear mixed model given by its arrays (an engine input: X, the
        terms' refs and Z, weights, offset) and parameters: beta, sigma and each term's
        Lambda (Cov(b) = sigma^2 Lambda Lambda'). Designs that no fit was made on (a larger
        design for a power analysis) draw from here, as a fit's simulate() does."""
        self = cls.__new__(cls)
        self.frame, self.terms, self.glmm = inp, list(inp.terms), False
        X = np.asarray(inp.X, float)
        self.mean_fixed = X @ np.asarray(beta, float) if X.shape[1] else np.zeros(X.shape[0])
        if inp.offset is not None:
            self.mean_fixed = self.mean_fixed + inp.offset
        self.sigma = float(sigma)
        self.factors = [self.sigma * np.asarray(L, float) for L in lambdas]
        w = inp.weights
        self.noise_sd = self.sigma / np.sqrt(w) if w is not None else np.full(X.shape[0], self.sigma)
        return self

    def draw(self, rng: np.random.Generator) -> np.ndarray:
        eta = self.mean_fixed.copy()
        for rt, F in zip(self.terms, self.factors):
            u = rng.standard_normal((rt.n_levels, rt.Z.shape[1]))
            b = u @ F.T
            eta += np.einsum("ij,ij->i", rt.Z, b[rt.refs])
        if not self.glmm:
            return eta + self.noise_sd * rng.standard_normal(eta.size)
        mu = self.family.linkinv(eta)
        if self.family.name == "binomial":
            m = np.rint(self.trials).astype(np.int64)
            return rng.binomial(m, np.clip(mu, 0.0, 1.0)) / np.where(m > 0, m, 1)
        if self.family.name == "poisson":
            return rng.poisson(mu).astype(float)
        # the other families draw themselves (Gamma with shape w / sigma^2 and inverse
        # Gaussian with dispersion sigma^2 / w, lme4's sigma; the negative binomial with its
        # theta), as lme4's simulate.merMod
        # a mean outside the family's range (mu <= 0 from an inverse or identity link: the
        # new random effects push eta below 0) gives NaN there, as R's rgamma / rinvGauss do
        # in lme4's simulate
        bad = ~(np.isfinite(mu) & (mu > 0)) if self.family.has_dispersion else None
        if bad is not None and bad.any():
            mu = np.where(bad, 1.0, mu)
        try:
            y = self.family.simulate(mu, rng, sigma=self.resp_sigma, weights=self.frame.weights)
        except NotImplementedError:
            raise ModelSpecError(f"simulate() does not know the {self.family.name} family") from None
        if bad is not None and bad.any():
            y = np.where(bad, np.nan, y)
        return y


def simulate(fit: AnyFit, n: int = 1, seed: Any = None, re_sd: str = "varcorr") -> np.ndarray:
    """Responses simulated from the fitted model: an (n, nobs) array.

    Each row draws new random effects for every level (b ~ N(0, sigma^2 Lambda Lambda'))
    and new noise (N(0, sigma^2 / w_i) with prior weights w) around X beta-hat (+ offset).
    GLMMs: binomial responses as proportions of the fit's trials, Poisson and negative
    binomial counts, Gamma (shape w / sigma^2) and inverse Gaussian (dispersion sigma^2 / w)
    draws with lme4's sigma; for these two, b is drawn from the fit's ``varcorr``
    (sigma^2 Lambda Lambda') by default, or with ``re_sd="lme4"`` as lme4 1.1-31's
    ``simulate`` draws it (Lambda Lambda', without sigma^2: inconsistent with lme4's own
    estimates, see lme4 issue #557). Means outside the family's range give NaN (with a
    warning), as in lme4.
    Row i comes from stream i of ``numpy.random.SeedSequence(seed).spawn(n)``, the same
    responses :func:`bootstrap` refits with that seed.
    """
    n = int(n)
    if n < 0:
        raise ModelSpecError("n must be >= 0")
    sim = _Simulator(fit, re_sd)
    out = np.empty((n, fit.frame.nobs))
    for i, rng in enumerate(_streams(seed, n)):
        out[i] = sim.draw(rng)
    nbad = int(np.isnan(out).sum())
    if nbad:
        warnings.warn(f"simulate(): {nbad} simulated values are NaN: their means are outside the "
                      f"{fit.family} family's range (the new random effects put eta where the "
                      f"{fit.link} link gives mu <= 0), as in lme4's simulate", MultilevelWarning, stacklevel=2)
    return out


class _Progress:
    """A one-line text progress bar on stderr (only when stderr is a terminal, or forced)."""

    def __init__(self, total: int, enabled: bool | None, label: str = "bootstrap"):
        if enabled is None:
            enabled = bool(getattr(sys.stderr, "isatty", lambda: False)())
        self.enabled = enabled and total > 0
        self.total = total
        self.label = label
        self.t0 = time.perf_counter()
        self.last = 0.0
        self.lock = threading.Lock()
        self.done = 0

    def step(self, k: int = 1) -> None:
        with self.lock:
            self.done += k
            if not self.enabled:
                return
            now = time.perf_counter()
            if now - self.last < 0.1 and self.done < self.total:
                return
            self.last = now
            width = 30
            filled = int(width * self.done / self.total)
            el = now - self.t0
            eta = el / self.done * (self.total - self.done) if self.done else 0.0
            sys.stderr.write(f"\r{self.label} [{'#' * filled}{'.' * (width - filled)}] "
                             f"{self.done}/{self.total}  {el:.1f}s elapsed, ~{eta:.1f}s left ")
            sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\n")
            sys.stderr.flush()


def _replicate_fit(fit: AnyFit, problem: Any, y: np.ndarray, theta: np.ndarray, sol: dict) -> Any:
    """A full :class:`LmmFit` for one replicate (only built when ``func`` is given)."""
    from multilevel.results.lmm import LmmFit

    frame = dataclasses.replace(fit.frame, y=np.asarray(y, float))
    sigma = sol["sigma"]
    b = sol["b"]
    cv = problem.condvar(theta, sigma)
    fitted = problem.fitted(sol["beta"], b)
    obj = sol["objective"]
    return LmmFit(frame=frame, reml=problem.reml, theta=theta, beta=sol["beta"], vcov=sol["vcov"],
                  sigma=sigma, b=b, condvar=cv, loglik=-obj / 2.0,
                  deviance_ml=problem.ml_deviance(theta), reml_criterion=obj if problem.reml else None,
                  fitted=fitted, converged=True, warnings=[], optinfo={})


def _table(func: Any, est: np.ndarray, names: list[str], values: list[Any]) -> pd.DataFrame:
    """The replicates as a DataFrame: the default columns, or the values of ``func``."""
    if func is None:
        return pd.DataFrame(est, columns=names)
    first = next((v for v in values if v is not None), None)
    if isinstance(first, pd.Series):
        nan = pd.Series(np.nan, index=first.index)
        return pd.DataFrame([np.asarray(nan if v is None else v, float) for v in values], columns=list(first.index))
    if isinstance(first, dict):
        return pd.DataFrame([{} if v is None else v for v in values])
    if first is None or np.ndim(first) == 0:
        return pd.DataFrame({"value": np.asarray([np.nan if v is None else v for v in values], float)})
    k = np.size(first)
    return pd.DataFrame(np.asarray([np.full(k, np.nan) if v is None else v for v in values], float))


def _run_split(run: Callable[[range], None], n: int, workers: int) -> None:
    """``run(range)`` over the replicates, the second half in a second thread when workers = 2."""
    if workers == 1:
        run(range(n))
        return
    half = n // 2
    errors: list[BaseException] = []

    def second() -> None:
        try:
            run(range(half, n))
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller
            errors.append(e)

    th = threading.Thread(target=second, daemon=True)
    th.start()
    run(range(half))
    th.join()
    if errors:
        raise errors[0]


def _bootstrap_glmm(fit: AnyFit, n: int, seed: Any, func: Callable[[Any], Any] | None,
                    progress: bool | None, workers: int | None, control: dict | None,
                    re_sd: str) -> pd.DataFrame:
    """:func:`bootstrap` of a GLMM: each simulated response refitted by the fit's own
    criterion (Laplace or AGQ, its family with a negative binomial's theta kept fixed, its
    offset, weights, trials and control settings), starting at (theta-hat, beta-hat)."""
    if fit.getme("problem") is None:
        raise MultilevelError("bootstrap needs a fit made by multilevel.glmer (it keeps the engine "
                              "problem); this object has none")
    t0 = time.perf_counter()
    frame = fit.frame
    sizes = block_sizes(frame)
    disp = bool(fit.family_object.has_dispersion)
    sim = _Simulator(fit, re_sd)
    streams = _streams(seed, n)
    fnames = list(frame.fixef_names)
    vnames = sdcor_names(frame, sigma=False) + (["sigma"] if disp else [])
    p, nv = len(fnames), len(vnames)
    values: list[Any] = [None] * n
    est = np.full((n, p + nv), np.nan)
    evals = [0]
    codes: dict[str, int] = {}
    failed: list[str] = []
    lock = threading.Lock()
    bar = _Progress(n, progress)
    # the default columns need no Hessian (it only gives the covariance of beta); a func
    # gets the refit lme4's refit() would give, derivatives as the original fit's settings
    calc = None if func is not None else False

    def run(idx: range) -> None:
        for i in idx:
            y = sim.draw(streams[i])
            try:
                if not np.all(np.isfinite(y)):
                    raise FitError(f"the simulated response has NaN values (means outside the "
                                   f"{fit.family} family's range, as lme4's simulate gives)")
                rep = fit._refit_response(y, control=control, calc_derivs=calc)
            except FitError as e:  # lme4's bootMer keeps going and counts the failures
                with lock:
                    failed.append(str(e))
                bar.step()
                continue
            with lock:
                evals[0] += int(rep.optinfo.get("feval", 0))
                for w in rep.warnings:
                    code = getattr(w, "code", "other")
                    codes[code] = codes.get(code, 0) + 1
            th = np.asarray(rep.getme("theta"), float)
            est[i, :p] = np.asarray(rep.getme("beta"), float)
            # the SDs of the replicate's varcorr (Gamma / inverse Gaussian: sigma x Lambda,
            # as lme4's VarCorr; its confint(method = "boot") leaves sigma out)
            est[i, p:p + len(th)] = theta_to_sdcor(th, sizes, rep.sigma if disp else 1.0)
            if disp:
                est[i, -1] = rep.sigma
            if func is not None:
                values[i] = func(rep)
            bar.step()

    if workers is None:
        # the engine releases the GIL only inside PIRLS and a refit is driven from Python: a
        # second thread gained nothing measured here (20 refits of Contraception's 1934 rows:
        # 0.100 s with one, 0.107 s with two), so one unless asked
        workers = 1
    workers = max(1, min(int(workers), 2, n))
    try:
        _run_split(run, n, workers)
    finally:
        bar.close()
    out = _table(func, est, fnames + vnames, values)
    if failed:
        msg = f"some bootstrap runs failed ({len(failed)}/{n}): {failed[0]}"
        rec = FitWarning("bootstrap_failed", msg)
        warnings.warn(msg, rec.category, stacklevel=3)
    out.attrs.update({"seed": seed, "time": time.perf_counter() - t0, "evaluations": evals[0],
                      "workers": workers, "reml": False, "failed": len(failed), "warnings": codes})
    return out


def bootstrap(fit: AnyFit, n: int = 1000, seed: Any = None, func: Callable[[Any], Any] | None = None,
              progress: bool | None = None, workers: int | None = None,
              control: dict | None = None, re_sd: str = "varcorr") -> pd.DataFrame:
    """Parametric bootstrap of a mixed model (lme4's ``bootMer``, type "parametric"): lmer
    and glmer fits of every family, Laplace or nagq > 1.

    Each replicate draws a response from the fitted model (:func:`simulate`) and refits the
    model to it by the fit's own criterion, starting at the fit's estimates. GLMMs keep
    their family: a negative binomial fit (``glmer_nb``) is refitted with theta fixed at
    the fit's estimate, as lme4's ``refit`` keeps ``family(fit)`` (theta is not
    re-estimated per replicate); binomial responses are drawn as proportions of the fit's
    trials (cbind or Bernoulli); offsets and prior weights are those of the fit.

    Parameters
    ----------
    n : number of replicates.
    seed : seed (int, SeedSequence or None) of the simulated responses; the same seed gives
        the same replicates whatever ``workers`` is.
    func : optional function of a refitted model (an :class:`LmmFit`, or for a GLMM a full
        :class:`GlmmFit`, of the replicate) returning a number, a sequence, a dict or a
        Series; its values become the columns instead of the default ones.
    progress : show a text progress bar on stderr (default: when stderr is a terminal).
    workers : 1 or 2 threads (default: 2 when the machine has two cores, the model is large
        enough for the engine's share of the work to dominate, and no ``func`` is given;
        with ``workers=2`` and a ``func``, the func must be thread-safe; GLMMs: 1).
    control : optimiser settings for the refits (as in ``lmer`` / ``glmer``; GLMM default:
        the fit's own settings).
    re_sd : Gamma and inverse Gaussian fits: draw the random effects from the fit's
        ``varcorr`` (``"varcorr"``, default) or as lme4 1.1-31's ``simulate`` does
        (``"lme4"``, without sigma; see :func:`simulate`).

    Returns
    -------
    DataFrame with one row per replicate: the fixed effects, the random-effect SDs and
    correlations (``sd_(Intercept)|Subject``, ``cor_...``) and ``sigma``. For a GLMM the SDs
    and correlations are those of the replicate's ``varcorr`` (lme4's ``VarCorr``), and
    ``sigma`` (lme4's ``sigma()`` of the replicate) is a column for Gamma and inverse
    Gaussian fits only; there the SDs are sigma x Lambda (lme4's ``confint(method = "boot")``
    reports Lambda's: divide by the ``sigma`` column).
    ``attrs`` records ``seed``, ``time``, ``workers`` and the number of ``evaluations``; for
    GLMMs also ``failed`` (replicates whose refit failed, NaN rows: lme4's bootMer goes on
    too, and a warning says how many) and ``warnings`` (count of the refits' warning codes,
    e.g. ``{"singular": 5}``).

    >>> import multilevel as ml
    >>> fit = ml.lmer("Reaction ~ Days + (Days | Subject)", ml.datasets.load("sleepstudy"))
    >>> reps = ml.inference.bootstrap(fit, 20, seed=1)
    >>> reps.shape
    (20, 6)
    >>> cbpp = ml.datasets.load("cbpp")
    >>> g = ml.glmer("cbind(incidence, size - incidence) ~ period + (1 | herd)", cbpp)
    >>> list(ml.inference.bootstrap(g, 5, seed=1).columns)
    ['(Intercept)', 'period2', 'period3', 'period4', 'sd_(Intercept)|herd']
    """
    n = int(n)
    if n < 1:
        raise ModelSpecError("n must be >= 1")
    if is_glmm(fit):
        return _bootstrap_glmm(fit, n, seed, func, progress, workers, control, re_sd)
    from multilevel.engine.lmm import fit_theta
    from multilevel.control import LmerControl

    prob0 = lmm_problem(fit, "bootstrap")
    t0 = time.perf_counter()
    frame = fit.frame
    sizes = block_sizes(frame)
    theta_hat = np.asarray(fit.getme("theta"), float).copy()
    # a warm start: first steps in proportion to the estimates
    step = np.maximum(0.1 * np.abs(theta_hat), 0.02)
    opts = LmerControl.from_user(control, check_conv=False).with_(initial_step=step)
    sim = _Simulator(fit, re_sd)
    streams = _streams(seed, n)
    fnames = list(frame.fixef_names)
    vnames = sdcor_names(frame, sigma=True)
    p, nv = len(fnames), len(vnames)
    values: list[Any] = [None] * n
    est = np.full((n, p + nv), np.nan)
    evals = [0]
    lock = threading.Lock()
    bar = _Progress(n, progress)
    base_problem = copy_problem(prob0)  # never mutate the fit's own problem

    def run(problem: Any, idx: range) -> None:

        for i in idx:
            y = sim.draw(streams[i])
            problem.set_y(y)
            problem.theta0 = theta_hat.copy()
            theta, _f, info, _w = fit_theta(problem, opts)
            with lock:
                evals[0] += info["feval"]
            sol = problem.solution(theta)
            est[i, :p] = sol["beta"]
            est[i, p:p + nv - 1] = theta_to_sdcor(theta, sizes, sol["sigma"])
            est[i, -1] = sol["sigma"]
            if func is not None:
                values[i] = func(_replicate_fit(fit, problem, y, theta, sol))
            bar.step()

    if workers is None:
        workers = 2 if (os.cpu_count() or 1) >= 2 else 1
        # a second thread pays off only when the engine's share of the work is large
        # (alternate two points: the engine may keep the factor of the last theta)
        tcheck = time.perf_counter()
        for k in range(6):
            base_problem.objective(theta_hat * (1.0 + 1e-3 * (k % 2)))
        per_eval = (time.perf_counter() - tcheck) / 6
        # (and a user's func need not be thread-safe)
        if per_eval < 2e-5 or n < 2 or func is not None:
            workers = 1
    workers = max(1, min(int(workers), 2, n))
    # each thread its own problem (the second a copy): set_y changes it
    problems = {threading.get_ident(): base_problem}

    def run_split(idx: range) -> None:
        me = threading.get_ident()
        if me not in problems:
            problems[me] = copy_problem(prob0)
        run(problems[me], idx)

    try:
        _run_split(run_split, n, workers)
    finally:
        bar.close()
    out = _table(func, est, fnames + vnames, values)
    out.attrs.update({"seed": seed, "time": time.perf_counter() - t0, "evaluations": evals[0],
                      "workers": workers, "reml": prob0.reml})
    return out
