"""Timings of the inference functions on sleepstudy ``Reaction ~ Days + (Days | Subject)``.

    python benchmarks/bench_inference.py [--reps 5]

Prints a Markdown table: the median wall time of each task over ``--reps`` runs (after one
warm-up run) and its target. Tasks: 1000 parametric-bootstrap refits (``bootstrap``), profile
intervals of all six parameters (``confint(method="profile")``, including the ML refit of
the REML fit), Satterthwaite and Kenward-Roger t tables (computed from scratch each time),
and, for scale, 6 bootstrap refits of the crossed InstEval model with one and two threads.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
import warnings

import multilevel as ml
from multilevel.inference import bootstrap, coef_table


def _fit(formula: str, data, reml: bool = True):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ml.lmer(formula, data, reml=reml)


def _time(fn, reps: int) -> tuple[float, object]:
    out = fn()  # warm-up
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--skip-insteval", action="store_true")
    a = ap.parse_args()
    sleep = ml.datasets.load("sleepstudy")
    formula = "Reaction ~ Days + (Days | Subject)"
    rows = []

    def boot():
        return bootstrap(_fit(formula, sleep), 1000, seed=1, progress=False)

    t, reps = _time(boot, a.reps)
    rows.append(("bootstrap, 1000 refits (REML)", t, 1.5,
                 f"{reps.attrs['evaluations'] / 1000:.1f} evaluations per refit, "
                 f"{reps.attrs['workers']} thread(s)"))

    def prof():
        return ml.inference.profile(_fit(formula, sleep))

    t, pr = _time(prof, a.reps)
    rows.append(("profile intervals, 6 parameters", t, 0.5, f"{pr.evaluations} profile points"))

    def satt():
        fit = _fit(formula, sleep)
        return coef_table(fit, "satterthwaite")

    t, _ = _time(satt, a.reps)
    rows.append(("Satterthwaite t table", t, None, "Hessian/Jacobian by Richardson extrapolation"))

    def kr():
        fit = _fit(formula, sleep)
        return coef_table(fit, "kenward-roger")

    t, _ = _time(kr, a.reps)
    rows.append(("Kenward-Roger t table", t, None, "dense 180 x 180 algebra"))

    if not a.skip_insteval:
        inst = ml.datasets.load("insteval")
        fit = _fit("y ~ 1 + service + (1 | s) + (1 | d) + (1 | dept)", inst)
        for w in (1, 2):
            t0 = time.perf_counter()
            bootstrap(fit, 6, seed=1, progress=False, workers=w)
            rows.append((f"InstEval bootstrap, 6 refits, {w} thread(s)", time.perf_counter() - t0, None,
                         "73421 rows, crossed"))
    print(f"Python {platform.python_version()}, {os.cpu_count()} cores, median of {a.reps} runs; "
          f"the sleepstudy timings include the lmer fit, the InstEval ones do not\n")
    print("| task | time (s) | target (s) | note |")
    print("|:--|--:|--:|:--|")
    for name, t, target, note in rows:
        tgt = "" if target is None else f"{target:g}"
        flag = "" if target is None or t <= target else " (over target)"
        print(f"| {name} | {t:.3f}{flag} | {tgt} | {note} |")


if __name__ == "__main__":
    main()
