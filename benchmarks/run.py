#!/usr/bin/env python
"""Benchmark multilevel against lme4 and the Python peers; print markdown tables.

Every (tool, case) is measured in a fresh subprocess (``worker.py``), one after another, so
each cell's peak memory is its own and a hung or crashed tool costs only its cell. lme4's
numbers are read from ``bench/lme4_timings.json`` (measured in R on the same kind of machine);
they are not re-measured. See README.md in this folder for what exactly is measured.

    python benchmarks/run.py                       # everything (takes a while)
    python benchmarks/run.py --quick               # small cases, 3 repeats
    python benchmarks/run.py --cases sleepstudy,cbpp --peers ours,glmm --markdown out.md
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from cases import (  # noqa: E402
    CASES, CASES_BY_NAME, DEFAULT_SHARED, Case, MissingFile, find_file, load_lme4,
)
from report import build_rows, fmt_time, render  # noqa: E402
from tools import TOOLS  # noqa: E402

PEER_ORDER = ("ours", "glmm", "mixedlm", "statsmodels")
# Thread-pool sizes read by OpenBLAS, MKL, OpenMP, BLIS, Accelerate and rayon when they load.
THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
               "BLIS_NUM_THREADS", "VECLIB_MAXIMUM_THREADS", "RAYON_NUM_THREADS")


# --------------------------------------------------------------------------- running


def run_worker(tool: str, case: Case, args) -> dict:
    """Run one cell in a fresh process, killing it when one fit outlasts ``args.timeout``."""
    cmd = [sys.executable, str(HERE / "worker.py"), "--tool", tool, "--case", case.name,
           "--repeats", str(args.repeats), "--budget", str(args.budget),
           "--shared", str(args.shared), "--mem-limit-gb", str(args.mem_limit_gb)]
    env = dict(os.environ)
    if args.threads:
        env.update({v: str(args.threads) for v in THREAD_VARS})
    with tempfile.TemporaryFile(mode="w+") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True,
                                start_new_session=True, env=env)
        lines: queue.Queue = queue.Queue()

        def pump() -> None:
            for line in proc.stdout:
                lines.put(line)
            lines.put(None)

        threading.Thread(target=pump, daemon=True).start()
        fits: list[float] = []
        ready = False  # until then the wait covers imports and loading a 1e6-row CSV
        while True:
            try:
                line = lines.get(timeout=args.timeout if ready else args.load_timeout)
            except queue.Empty:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                reason = (f"a fit ran over {args.timeout:g} s" if ready
                          else f"loading + setup ran over {args.load_timeout:g} s")
                return {"status": "timeout", "reason": reason,
                        "first_s": fits[0] if fits else None}
            if line is None:
                proc.wait()
                err.seek(0)
                tail = " | ".join(err.read().strip().splitlines()[-2:])
                return {"status": "error",
                        "reason": f"worker died (exit {proc.returncode}) {tail}"[:300]}
            msg = json.loads(line)
            if msg["event"] == "ready":
                ready = True
            elif msg["event"] == "fit":
                fits.append(msg["s"])
            else:
                proc.wait()
                msg.pop("event")
                return msg


# --------------------------------------------------------------------------- main


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", default="all",
                    help="comma-separated case names, or 'all' (" +
                    ", ".join(c.name for c in CASES) + ")")
    ap.add_argument("--peers", "--tools", dest="peers", default=",".join(PEER_ORDER),
                    help="comma-separated tools to measure (ours included); lme4 is always "
                    "read from the JSON (default: %(default)s)")
    ap.add_argument("--repeats", type=int, default=None,
                    help="timed fits per cell (5; 3 with --quick)")
    ap.add_argument("--budget", type=float, default=None,
                    help="stop repeating once a cell has spent this many seconds fitting "
                    "(60; 10 with --quick)")
    ap.add_argument("--timeout", type=float, default=120.0,
                    help="kill a tool whose single fit runs longer (seconds, default 120)")
    ap.add_argument("--load-timeout", type=float, default=300.0,
                    help="kill a worker whose data load + setup runs longer (seconds)")
    ap.add_argument("--mem-limit-gb", type=float, default=12.0,
                    help="address-space limit of each worker (0 = none; default 12)")
    ap.add_argument("--threads", type=int, default=0,
                    help="cap every tool's BLAS / OpenMP / rayon thread pools (sets "
                    "OPENBLAS_NUM_THREADS, OMP_NUM_THREADS, RAYON_NUM_THREADS, ...); "
                    "default 0 = each tool's own default")
    ap.add_argument("--quick", action="store_true",
                    help="skip the big cases (InstEval, 1e6 rows); fewer repeats")
    ap.add_argument("--loglik-tol", type=float, default=1e-3,
                    help="|logLik - lme4's| counted as the same optimum (default 1e-3)")
    ap.add_argument("--shared", type=Path, default=DEFAULT_SHARED,
                    help="shared folder with data/ and bench/ (default: ../shared beside the "
                    "repository root)")
    ap.add_argument("--markdown", type=Path, help="also write the tables to this file")
    ap.add_argument("--json", type=Path, help="write the raw measurements to this file")
    args = ap.parse_args(argv)

    names = [c.name for c in CASES] if args.cases == "all" else args.cases.split(",")
    unknown = [n for n in names if n not in CASES_BY_NAME]
    if unknown:
        ap.error(f"unknown case(s) {unknown}; choose from {[c.name for c in CASES]}")
    args.cases = [CASES_BY_NAME[n] for n in names
                  if not (args.quick and CASES_BY_NAME[n].slow)]
    args.peers = [p for p in args.peers.split(",") if p]
    bad = [p for p in args.peers if p not in TOOLS]
    if bad:
        ap.error(f"unknown tool(s) {bad}; choose from {list(TOOLS)}")
    args.repeats = args.repeats or (3 if args.quick else 5)
    args.budget = args.budget or (10.0 if args.quick else 60.0)
    args.shared = args.shared.resolve()
    return args


def _loadavg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def measure_all(cases: list[Case], args) -> dict[str, dict[str, dict]]:
    """results[tool][case name] = the worker's answer, cells run one after another."""
    results: dict[str, dict[str, dict]] = {t: {} for t in args.peers}
    total = len(cases) * len(args.peers)
    for k, (case, tool) in enumerate(((c, t) for c in cases for t in args.peers), 1):
        print(f"[{k}/{total}] {tool} × {case.name} ...", end=" ", file=sys.stderr, flush=True)
        cell = results[tool][case.name] = run_worker(tool, case, args)
        print(fmt_time(cell["median_s"]) if cell["status"] == "ok"
              else f"{cell['status']}: {cell.get('reason', '')}", file=sys.stderr)
    return results


def main(argv=None) -> None:
    args = parse_args(argv)
    try:
        lme4 = load_lme4(args.shared)
    except MissingFile as exc:
        print(f"note: the lme4 column will be n/a: {exc}", file=sys.stderr)
        lme4 = None

    cases = []
    for case in args.cases:
        try:
            find_file(case.data, args.shared)
            cases.append(case)
        except MissingFile as exc:
            print(f"skipping {case.name}: {exc}", file=sys.stderr)
    if not cases:
        sys.exit("no case can run: its data files are missing (see above)")

    load_start = _loadavg()
    results = measure_all(cases, args)
    settings = {"repeats": args.repeats, "budget": args.budget, "timeout": args.timeout,
                "loglik_tol": args.loglik_tol, "threads": args.threads,
                "loadavg": (load_start, _loadavg())}
    versions = {t: next((c["version"] for c in results[t].values() if "version" in c), "—")
                for t in args.peers}
    text = render(build_rows(cases, args.peers, results, lme4, args.shared),
                  settings, versions, lme4)
    print(text)
    if args.markdown:
        args.markdown.write_text(text)
    if args.json:
        args.json.write_text(json.dumps({"settings": settings, "versions": versions,
                                         "results": results}, indent=1))


if __name__ == "__main__":
    main()
