#!/usr/bin/env python
"""Benchmark multilevel against lme4 and the Python peers; print markdown tables.

Every (tool, case) is measured in a fresh subprocess, one after another, so each cell's peak
memory is its own and a hung or crashed tool costs only its cell: ``worker.py`` for the Python
tools, ``Rscript r_worker.R`` for ``lme4`` (lme4's lmer / glmer / glmer.nb, or glmmTMB for the
structured-covariance cases), measured live in the same run. The cells are interleaved: for
each case every tool runs (ours, lme4, peers...) before the next case starts, and with
``--rounds K`` that tool sequence is repeated K times per case, forwards and backwards in
turn, each number reported as the median over the rounds, so a burst of load on this shared
machine hits every tool alike. ``--lme4-recorded`` adds lme4's numbers from
``bench/lme4_timings.json`` (measured on another day) as a separate, labelled column. See
README.md in this folder for what exactly is measured.

    python benchmarks/run.py                       # everything (takes a while)
    python benchmarks/run.py --quick --rounds 2    # small cases, 3 repeats, two rounds
    python benchmarks/run.py --cases sleepstudy,cbpp --peers ours,lme4 --markdown out.md
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from cases import (  # noqa: E402
    CASES, CASES_BY_NAME, DEFAULT_SHARED, Case, MissingFile, find_file, load_lme4, r_spec,
)
from report import build_rows, fmt_time, render  # noqa: E402
from tools import TOOLS  # noqa: E402

PEER_ORDER = ("ours", "lme4", "glmm", "mixedlm", "statsmodels", "gpboost")
R_TOOLS = ("lme4",)  # measured by r_worker.R through Rscript
# Thread-pool sizes read by OpenBLAS, MKL, OpenMP, BLIS, Accelerate and rayon when they load.
THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
               "BLIS_NUM_THREADS", "VECLIB_MAXIMUM_THREADS", "RAYON_NUM_THREADS")


# --------------------------------------------------------------------------- running


def _worker_command(tool: str, case: Case, args, tmp: Path) -> list[str]:
    if tool in R_TOOLS:
        spec = tmp / f"{case.name}.json"
        spec.write_text(json.dumps(r_spec(case, args.shared) |
                                   {"repeats": args.repeats, "budget": args.budget}))
        return [args.rscript, "--no-init-file", str(HERE / "r_worker.R"), str(spec)]
    return [sys.executable, str(HERE / "worker.py"), "--tool", tool, "--case", case.name,
            "--repeats", str(args.repeats), "--budget", str(args.budget),
            "--shared", str(args.shared), "--mem-limit-gb", str(args.mem_limit_gb)]


def run_worker(tool: str, case: Case, args) -> dict:
    """Run one cell in a fresh process, killing it when one fit outlasts ``args.timeout``."""
    if tool in R_TOOLS and args.rscript is None:
        return {"status": "n/a", "reason": "Rscript not found"}
    env = dict(os.environ)
    if args.threads:
        env.update({v: str(args.threads) for v in THREAD_VARS})
    limit = int(args.mem_limit_gb * 2**30) if args.mem_limit_gb > 0 else None

    def cap_memory() -> None:  # worker.py sets its own limit; R gets the same one here
        if limit is not None and tool in R_TOOLS:
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    with tempfile.TemporaryDirectory() as tmp, tempfile.TemporaryFile(mode="w+") as err:
        cmd = _worker_command(tool, case, args, Path(tmp))
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True,
                                start_new_session=True, env=env, preexec_fn=cap_memory)
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
            try:
                msg = json.loads(line)
            except json.JSONDecodeError:  # a stray print on the protocol channel
                print(f"note: {tool} × {case.name} printed {line.strip()[:100]!r}",
                      file=sys.stderr)
                continue
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
                    help="comma-separated tools to measure, in this order (ours and lme4 "
                    "included; lme4 runs through Rscript) (default: %(default)s)")
    ap.add_argument("--rounds", type=int, default=1,
                    help="run each case's tool sequence K times (forwards, backwards, ...) "
                    "and report the median over the rounds (default 1)")
    ap.add_argument("--lme4-recorded", action="store_true",
                    help="also show lme4's numbers from bench/lme4_timings.json (measured "
                    "another day) as a separate column")
    ap.add_argument("--rscript", default=shutil.which("Rscript"),
                    help="the Rscript that runs lme4 (default: Rscript on PATH)")
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
    known = [*TOOLS, *R_TOOLS]
    bad = [p for p in args.peers if p not in known]
    if bad:
        ap.error(f"unknown tool(s) {bad}; choose from {known}")
    if args.rounds < 1:
        ap.error("--rounds must be at least 1")
    args.repeats = args.repeats or (3 if args.quick else 5)
    args.budget = args.budget or (10.0 if args.quick else 60.0)
    args.shared = args.shared.resolve()
    args.rscript = shutil.which(args.rscript) if args.rscript else None
    return args


def _loadavg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def combine_rounds(cells: list[dict]) -> dict:
    """One cell from the same cell measured in several rounds: median over the rounds of the
    median, first-call and memory numbers, min of the minima, every timed fit kept. Rounds
    that failed are named in the note; a cell fails only when every round failed."""
    ok = [c for c in cells if c["status"] == "ok"]
    # copies: run.py keeps the rounds beside the combined cell, which must not contain itself
    if not ok:
        return dict(cells[0])
    if len(cells) == 1:
        return dict(ok[0])
    out = dict(ok[0])
    for key in ("median_s", "first_s", "fit_peak_mb", "process_peak_mb", "rss_fit_peak_mb"):
        values = [c[key] for c in ok if c.get(key) is not None]
        if values:
            out[key] = statistics.median(values)
    out["min_s"] = min(c["min_s"] for c in ok)
    out["times_s"] = [t for c in ok for t in c["times_s"]]
    out["reps"] = sum(c["reps"] for c in ok)
    out["round_medians_s"] = [c["median_s"] if c["status"] == "ok" else None for c in cells]
    notes = [out.get("note", "")]
    failed = [c for c in cells if c["status"] != "ok"]
    if failed:
        notes.append(f"{len(failed)} of {len(cells)} rounds: {failed[0]['status']} "
                     f"({failed[0].get('reason', '')})")
    warmup_only = sum(1 for c in ok if c["reps"] == 0)
    if warmup_only and out["reps"]:
        notes.append(f"{warmup_only} of {len(ok)} rounds: only the warm-up within the budget")
    lls = [c["loglik"] for c in ok]
    if max(lls) - min(lls) > 1e-9 * max(1.0, abs(lls[0])):
        notes.append(f"logLik differs between rounds ({min(lls):.6f} .. {max(lls):.6f})")
    out["note"] = "; ".join(n for n in notes if n)
    return out


def measure_all(cases: list[Case], args) -> dict[str, dict[str, dict]]:
    """results[tool][case name] = the cell's answer. Interleaved: for each case, every tool
    runs once per round (round 1 in --peers order, round 2 reversed, ...) before the next
    case starts; the rounds are combined by ``combine_rounds``."""
    results: dict[str, dict[str, dict]] = {t: {} for t in args.peers}
    total = len(cases) * len(args.peers) * args.rounds
    k = 0
    for case in cases:
        per_round: dict[str, list[dict]] = {t: [] for t in args.peers}
        for r in range(args.rounds):
            order = args.peers if r % 2 == 0 else args.peers[::-1]
            for tool in order:
                k += 1
                rnd = f" (round {r + 1}/{args.rounds})" if args.rounds > 1 else ""
                print(f"[{k}/{total}] {tool} × {case.name}{rnd} ...", end=" ",
                      file=sys.stderr, flush=True)
                cell = run_worker(tool, case, args)
                per_round[tool].append(cell)
                print(fmt_time(cell["median_s"]) if cell["status"] == "ok"
                      else f"{cell['status']}: {cell.get('reason', '')}", file=sys.stderr)
        for tool in args.peers:
            results[tool][case.name] = combine_rounds(per_round[tool])
            if args.rounds > 1:
                results[tool][case.name]["rounds"] = per_round[tool]
    return results


def main(argv=None) -> None:
    args = parse_args(argv)
    lme4 = None
    if args.lme4_recorded:
        try:
            lme4 = load_lme4(args.shared)
        except MissingFile as exc:
            print(f"note: the recorded lme4 column will be n/a: {exc}", file=sys.stderr)
    if "lme4" in args.peers and args.rscript is None:
        print("note: Rscript not found: the lme4 cells read n/a (install R and "
              "r-cran-lme4, r-cran-glmmtmb; see benchmarks/README.md)", file=sys.stderr)

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
                "rounds": args.rounds, "loglik_tol": args.loglik_tol,
                "threads": args.threads, "loadavg": (load_start, _loadavg())}
    versions = {t: _version(t, results[t]) for t in args.peers}
    text = render(build_rows(cases, args.peers, results, lme4, args.shared, args.lme4_recorded),
                  settings, versions, lme4)
    print(text)
    if args.markdown:
        args.markdown.write_text(text)
    if args.json:
        args.json.write_text(json.dumps({"settings": settings, "versions": versions,
                                         "results": results}, indent=1))


def _version(tool: str, cells: dict[str, dict]) -> str:
    """The tool's version as the cells report it; for lme4 also R's and glmmTMB's."""
    version = next((c["version"] for c in cells.values() if "version" in c), "—")
    if tool not in R_TOOLS:
        return version
    extra = [f"R {r}" for r in dict.fromkeys(c["r_version"] for c in cells.values()
                                             if "r_version" in c)]
    extra += [f for f in dict.fromkeys(c.get("fitter", "") for c in cells.values())
              if f.startswith("glmmTMB")]
    return version + (f" ({', '.join(extra)})" if extra else "")


if __name__ == "__main__":
    main()
