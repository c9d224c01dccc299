"""Measure one (Python tool, case) in this process; ``run.py`` starts one of these per cell
(``r_worker.R`` does the same for lme4 / glmmTMB, with the same protocol and record).

Steps: load the data frame and set the tool up (imports, formula dialect; untimed), take the
memory baseline, then fit once as a warm-up (its time is reported as the first call) and
repeat until ``--repeats`` timed fits are done or ``--budget`` seconds are spent (at least one
timed fit unless the warm-up alone used the budget). Time is ``time.perf_counter()`` around
the fit call only. No ``gc.collect()`` between fits: it evicts the CPU caches and makes a
sub-millisecond fit 2-4x slower; Python's collector runs as it would for a user.

Memory: ``baseline`` is the resident set after imports + data load (after ``gc.collect()``).
The kernel's peak-RSS mark is then reset (``/proc/self/clear_refs``), so the fit peak is the
high-water mark of the fits alone (VmHWM - baseline). Where the reset is not allowed it falls
back to ``ru_maxrss`` - baseline, which can hide a fit smaller than the load's own peak.
``process_peak`` is the whole process's max RSS (imports + data + all fits), the quantity
lme4's ``peak_rss_mb_process`` reports for its Rscript.

Protocol: one JSON object per line on the original stdout ({"event": "ready"}, one
{"event": "fit"} per fit, then {"event": "done", ...}); the packages' own prints go to stderr.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import statistics
import sys
import time
import traceback
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cases import CASES_BY_NAME, load_frame  # noqa: E402
from tools import PACKAGES, TOOLS, NotApplicable, version  # noqa: E402


def _status_mb(field: str) -> float | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _timed(fit) -> tuple[float, object]:
    t0 = time.perf_counter()
    result = fit()
    return time.perf_counter() - t0, result


def _error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}".replace("\n", " ")[:300]


def measure(tool: str, case_name: str, repeats: int, budget: float, shared: Path, emit) -> dict:
    case = CASES_BY_NAME[case_name]
    df = load_frame(case, shared)
    fit, describe = TOOLS[tool](case, df)
    emit({"event": "ready", "nobs": len(df)})

    gc.collect()
    load_peak = _maxrss_mb()
    reset = _reset_peak()
    baseline = _status_mb("VmRSS") or load_peak

    first, result = _timed(fit)
    emit({"event": "fit", "s": first})
    loglik, note = describe(result)
    del result
    times: list[float] = []
    while len(times) < repeats and first + sum(times) < budget:
        times.append(_timed(fit)[0])  # the result is freed after the clock stops
        emit({"event": "fit", "s": times[-1]})

    hwm = _status_mb("VmHWM") if reset else None
    fit_peak = (hwm if hwm is not None else _maxrss_mb()) - baseline
    timed = times or [first]
    return {
        "status": "ok",
        "version": version(PACKAGES[tool]),
        "nobs": len(df),
        "first_s": first,
        "times_s": times,
        "median_s": statistics.median(timed),
        "min_s": min(timed),
        "reps": len(times),
        "loglik": loglik,
        "note": note,
        "baseline_mb": baseline,
        "fit_peak_mb": max(fit_peak, 0.0),
        "process_peak_mb": max(load_peak, _maxrss_mb(), hwm or 0.0),
        "peak_reset": reset,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--tool", required=True, choices=sorted(TOOLS))
    ap.add_argument("--case", required=True, choices=sorted(CASES_BY_NAME))
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--budget", type=float, default=60.0)
    ap.add_argument("--shared", type=Path, required=True)
    ap.add_argument("--mem-limit-gb", type=float, default=0.0, help="address-space limit, 0 = none")
    args = ap.parse_args()
    if args.mem_limit_gb > 0:  # a runaway tool fails with MemoryError instead of swamping the box
        limit = int(args.mem_limit_gb * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    # Keep the protocol channel clean: anything the packages print goes to stderr.
    proto = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())

    def emit(obj: dict) -> None:
        proto.write(json.dumps(obj) + "\n")
        proto.flush()

    warnings.simplefilter("ignore")
    try:
        out = measure(args.tool, args.case, args.repeats, args.budget, args.shared, emit)
    except NotApplicable as exc:  # from setup or from the warm-up fit (tools.py)
        out = {"status": "n/a", "reason": str(exc), "version": version(PACKAGES[args.tool])}
    except Exception as exc:  # any failure of a tool becomes its cell's text
        traceback.print_exc()
        out = {"status": "error", "reason": _error_text(exc),
               "version": version(PACKAGES[args.tool])}
    emit({"event": "done", **out})


if __name__ == "__main__":
    main()
