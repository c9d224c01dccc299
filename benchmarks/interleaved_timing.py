"""In-process fit times of two builds of multilevel, interleaved: old vs new, several rounds.

Each round starts one worker process per build (``PYTHONPATH`` = that build's ``src``),
alternating which goes first; a worker loads the cases' frames (not timed), fits each case
once to warm up, then times ``--fits`` fits per case (pandas frame to fitted model, the same
call users make) and reports the minimum. The table shows, per case and build, the minimum
over the rounds (the least disturbed measurement on a shared machine) and new / old.

    python benchmarks/interleaved_timing.py --old ../main/src --new src
    python benchmarks/interleaved_timing.py --cases sleepstudy,cbpp --fits 60 --rounds 4

Not a test: timings live here, not in the suite (see README.md).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_CASES = "sleepstudy,hsb82,slopes_1e5,cbpp,contraception"


def worker(cases: list[str], fits: int, shared: Path) -> None:
    """Time the cases with whichever multilevel is importable; print JSON {case: seconds}."""
    import warnings

    sys.path.insert(0, str(HERE))
    import multilevel as ml
    from cases import CASES_BY_NAME, load_frame

    out = {}
    for name in cases:
        c = CASES_BY_NAME[name]
        df = load_frame(c, shared)
        if c.is_glmm:
            kw = {"family": c.family}
            if c.link:
                kw["link"] = c.link
            fit = lambda: ml.glmer(c.formula, df, **kw)  # noqa: E731
        else:
            fit = lambda: ml.lmer(c.formula, df, reml=c.reml)  # noqa: E731
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = fit()
            best = float("inf")
            for _ in range(fits):
                t = time.perf_counter()
                fit()
                best = min(best, time.perf_counter() - t)
        out[name] = {"s": best, "loglik": float(res.loglik), "feval": res.optinfo.get("feval")}
    print(json.dumps(out))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--old", default=str(HERE.parent.parent / "main" / "src"))
    ap.add_argument("--new", default=str(HERE.parent / "src"))
    ap.add_argument("--cases", default=DEFAULT_CASES)
    ap.add_argument("--fits", type=int, default=60)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--shared", default=str(HERE.parent.parent / "shared"))
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    cases = a.cases.split(",")
    if a.worker:
        worker(cases, a.fits, Path(a.shared))
        return
    builds = {"old": a.old, "new": a.new}
    best: dict[str, dict[str, dict]] = {b: {} for b in builds}
    for r in range(a.rounds):
        order = list(builds) if r % 2 == 0 else list(builds)[::-1]
        for b in order:
            env = {**os.environ, "PYTHONPATH": builds[b]}
            cmd = [sys.executable, __file__, "--worker", "--cases", a.cases, "--fits", str(a.fits),
                   "--shared", a.shared]
            res = json.loads(subprocess.run(cmd, env=env, check=True, capture_output=True,
                                            text=True).stdout.strip().splitlines()[-1])
            for c, v in res.items():
                if c not in best[b] or v["s"] < best[b][c]["s"]:
                    best[b][c] = v
    print(f"min of {a.fits} fits x {a.rounds} rounds; old = {a.old}, new = {a.new}")
    print(f"| case | old ms | new ms | new/old | old feval | new feval | logLik new - old |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for c in cases:
        o, n = best["old"][c], best["new"][c]
        print(f"| {c} | {o['s'] * 1e3:.3f} | {n['s'] * 1e3:.3f} | {n['s'] / o['s']:.2f} | "
              f"{o['feval']} | {n['feval']} | {n['loglik'] - o['loglik']:+.2e} |")


if __name__ == "__main__":
    main()
