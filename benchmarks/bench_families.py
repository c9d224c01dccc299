"""Timings of the Gamma, inverse Gaussian and negative binomial GLMMs beside lme4's.

    python benchmarks/bench_families.py [--reps 5]

Prints a Markdown table: the median wall time of each fit over ``--reps`` runs (after one
warm-up run, data loading not timed) and lme4's, measured on the same machine (2 cores,
2026-12-02) with R 4.2.2 / lme4 1.1-31 and lme4's default control by this R code (median of
5 runs after one, 3 for glmer.nb)::

    tm <- function(f, k = 5) { f(); median(sapply(1:k, function(i) system.time(f())[["elapsed"]])) }
    tm(function() glmer(cog ~ age + trt + (1 | id), early, family = Gamma(link = "log")))
    tm(function() glmer(cog/100 ~ age + trt + (1 | id), early, family = inverse.gaussian(link = "log")))
    tm(function() glmer.nb(TICKS ~ YEAR + scale(HEIGHT) + (1 | BROOD) + (1 | LOCATION), gt), 3)
    tm(function() glmer(TICKS ~ YEAR + scale(HEIGHT) + (1 | BROOD) + (1 | LOCATION), gt,
                        family = MASS::negative.binomial(3.3034)))
"""
from __future__ import annotations

import argparse
import statistics
import time
import warnings

import multilevel as ml

#: lme4's seconds, measured as the module docstring says
LME4_S = {"early_gamma_log": 0.136, "early_invgauss_log": 0.127, "grouseticks_nb": 4.7,
          "grouseticks_nb_fixed_theta": 0.449}

_NB = "TICKS ~ YEAR + scale(HEIGHT) + (1 | BROOD) + (1 | LOCATION)"


def _cases():
    early = ml.datasets.load("early")
    ticks = ml.datasets.load("grouseticks")
    return [
        ("early_gamma_log", lambda: ml.glmer("cog ~ age + trt + (1 | id)", early, family="Gamma", link="log")),
        ("early_invgauss_log", lambda: ml.glmer("I(cog / 100) ~ age + trt + (1 | id)", early,
                                                family="inverse.gaussian", link="log")),
        ("grouseticks_nb", lambda: ml.glmer_nb(_NB, ticks)),
        ("grouseticks_nb_fixed_theta", lambda: ml.glmer(_NB, ticks, family="negative.binomial", nb_theta=3.3034)),
    ]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=5)
    a = ap.parse_args()
    print("| model | multilevel (s) | lme4 (s) | logLik |")
    print("|---|---:|---:|---:|")
    for name, fn in _cases():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fit = fn()
            times = []
            for _ in range(a.reps):
                t0 = time.perf_counter()
                fit = fn()
                times.append(time.perf_counter() - t0)
        print(f"| {name} | {statistics.median(times):.3f} | {LME4_S[name]:.3f} | {fit.loglik:.4f} |")


if __name__ == "__main__":
    main()
