"""Parametric bootstrap and simulation from a fitted mixed model (lme4's ``simulate`` and
``bootMer``).

``simulate(fit, n, seed)`` draws new responses from the fitted model: new random effects
b ~ N(0, Sigma_b) for every group, new noise e ~ N(0, sigma^2 / w) (LMMs; binomial and
Poisson responses from the conditional distribution for GLMMs), added to X beta-hat (+ offset).

``bootstrap(fit, n, seed)`` refits the model to each simulated response and returns the
estimates. A refit only replaces the response in the engine (``problem.set_y``: the cross
products of X and Z are reused), starts at the original theta-hat, and uses the same
criterion as the fit (REML or ML). Replicate i is drawn from its own random stream
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
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import pandas as pd

from multilevel.errors import ModelSpecError
from multilevel.inference._common import block_sizes, copy_problem, is_glmm, lmm_problem, sdcor_names, theta_to_sdcor

if TYPE_CHECKING:
    from multilevel.results import AnyFit

__all__ = ["simulate", "bootstrap"]


def _streams(seed: Any, n: int) -> list[np.random.Generator]:
    ss = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(seed)
    return [np.random.default_rng(s) for s in ss.spawn(n)]


class _Simulator:
    """Draws responses of one fitted model; holds the pieces that do not change."""

    def __init__(self, fit: AnyFit):
        frame = fit.frame
        self.frame = frame
        self.glmm = is_glmm(fit)
        self.mean_fixed = frame.X @ np.asarray(fit.getme("beta"), float) if frame.X.shape[1] else np.zeros(frame.nobs)
        if frame.offset is not None:
            self.mean_fixed = self.mean_fixed + frame.offset
        sigma = 1.0 if self.glmm else float(fit.getme("sigma"))
        self.sigma = sigma
        # Cov(b) = sigma^2 Lambda Lambda' (sigma = 1 for GLMMs): b = sigma * Lambda u
        self.factors = [sigma * L for L in fit.lambdas]
        w = frame.weights
        self.noise_sd = None if self.glmm else sigma / np.sqrt(w) if w is not None else np.full(frame.nobs, sigma)
        if self.glmm:
            self.family = fit.family_object
            self.resp_sigma = float(fit.sigma)  # lme4's sigma(): the dispersion families' scale
            nt = getattr(fit, "_ntrials", None)
            if nt is None:
                nt = frame.weights if frame.weights is not None else np.ones(frame.nobs)
            self.trials = np.asarray(nt, float)

    def draw(self, rng: np.random.Generator) -> np.ndarray:
        eta = self.mean_fixed.copy()
        for rt, F in zip(self.frame.reterms, self.factors):
            u = rng.standard_normal((rt.n_levels, rt.n_terms))
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
        try:
            return self.family.simulate(mu, rng, sigma=self.resp_sigma, weights=self.frame.weights)
        except NotImplementedError:
            raise ModelSpecError(f"simulate() does not know the {self.family.name} family") from None


def simulate(fit: AnyFit, n: int = 1, seed: Any = None) -> np.ndarray:
    """Responses simulated from the fitted model: an (n, nobs) array.

    Each row draws new random effects for every level (b ~ N(0, sigma^2 Lambda Lambda'))
    and new noise (N(0, sigma^2 / w_i) with prior weights w) around X beta-hat (+ offset).
    GLMMs: binomial responses as proportions of the fit's trials, Poisson and negative
    binomial counts, Gamma (shape w / sigma^2) and inverse Gaussian (dispersion sigma^2 / w)
    draws with lme4's sigma.
    Row i comes from stream i of ``numpy.random.SeedSequence(seed).spawn(n)``, the same
    responses :func:`bootstrap` refits with that seed.
    """
    n = int(n)
    if n < 0:
        raise ModelSpecError("n must be >= 0")
    sim = _Simulator(fit)
    out = np.empty((n, fit.frame.nobs))
    for i, rng in enumerate(_streams(seed, n)):
        out[i] = sim.draw(rng)
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


def bootstrap(fit: AnyFit, n: int = 1000, seed: Any = None, func: Callable[[Any], Any] | None = None,
              progress: bool | None = None, workers: int | None = None,
              control: dict | None = None) -> pd.DataFrame:
    """Parametric bootstrap of a linear mixed model (lme4's ``bootMer``, type "parametric").

    Parameters
    ----------
    n : number of replicates.
    seed : seed (int, SeedSequence or None) of the simulated responses; the same seed gives
        the same replicates whatever ``workers`` is.
    func : optional function of a refitted model (an :class:`LmmFit` of the replicate)
        returning a number, a sequence, a dict or a Series; its values become the columns
        instead of the default ones.
    progress : show a text progress bar on stderr (default: when stderr is a terminal).
    workers : 1 or 2 threads (default: 2 when the machine has two cores, the model is large
        enough for the engine's share of the work to dominate, and no ``func`` is given;
        with ``workers=2`` and a ``func``, the func must be thread-safe).
    control : optimiser settings for the refits (as in ``lmer``).

    Returns
    -------
    DataFrame with one row per replicate: the fixed effects, the random-effect SDs and
    correlations (``sd_(Intercept)|Subject``, ``cor_...``) and ``sigma``. ``attrs`` records
    ``seed``, ``time`` and the number of ``evaluations``.

    >>> import multilevel as ml
    >>> fit = ml.lmer("Reaction ~ Days + (Days | Subject)", ml.datasets.load("sleepstudy"))
    >>> reps = ml.inference.bootstrap(fit, 20, seed=1)
    >>> reps.shape
    (20, 6)
    """
    from multilevel.engine.lmm import fit_theta
    from multilevel.control import LmerControl

    prob0 = lmm_problem(fit, "bootstrap")
    n = int(n)
    if n < 1:
        raise ModelSpecError("n must be >= 1")
    t0 = time.perf_counter()
    frame = fit.frame
    sizes = block_sizes(frame)
    theta_hat = np.asarray(fit.getme("theta"), float).copy()
    # a warm start: first steps in proportion to the estimates
    step = np.maximum(0.1 * np.abs(theta_hat), 0.02)
    opts = LmerControl.from_user(control, check_conv=False).with_(initial_step=step)
    sim = _Simulator(fit)
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
    try:
        if workers == 1:
            run(base_problem, range(n))
        else:
            half = n // 2
            other = copy_problem(prob0)
            errors: list[BaseException] = []

            def second() -> None:
                try:
                    run(other, range(half, n))
                except BaseException as e:  # noqa: BLE001 - re-raised in the caller
                    errors.append(e)

            th = threading.Thread(target=second, daemon=True)
            th.start()
            run(base_problem, range(half))
            th.join()
            if errors:
                raise errors[0]
    finally:
        bar.close()
    if func is None:
        out = pd.DataFrame(est, columns=fnames + vnames)
    else:
        first = values[0]
        if isinstance(first, pd.Series):
            out = pd.DataFrame([np.asarray(v, float) for v in values], columns=list(first.index))
        elif isinstance(first, dict):
            out = pd.DataFrame(values)
        elif np.ndim(first) == 0:
            out = pd.DataFrame({"value": np.asarray(values, float)})
        else:
            out = pd.DataFrame(np.asarray(values, float))
    out.attrs.update({"seed": seed, "time": time.perf_counter() - t0, "evaluations": evals[0],
                      "workers": workers, "reml": prob0.reml})
    return out
