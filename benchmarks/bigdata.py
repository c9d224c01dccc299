"""Out-of-core and Dask fits of big synthetic data: time and peak memory per size.

Two seeded designs, written as Parquet (row groups of 1e6 rows, into --dir):

* ``slopes``: y ~ x + (1 + x | g), 10,000 groups (correlated random intercepts and slopes);
* ``crossed``: y ~ x + (1 | a) + (1 | b), 5,000 x 500 crossed levels.

For each size (1e6 and 1e7 rows by default; ``--big`` adds 1e8) every fit runs in a fresh
subprocess, whose peak resident memory (``ru_maxrss`` of the child, which includes pyarrow's
and numpy's allocations) is reported beside its wall time:

* ``out-of-core``: ``lmer(formula, "file.parquet", batch_size=...)`` (one batch in memory);
* ``dask``: the same on ``dask.dataframe.read_parquet`` with a ``LocalCluster`` of 2 worker
  processes (peak = the driver's; the workers' own peaks are printed too);
* ``in-memory``: pandas ``read_parquet`` then ``lmer`` (up to --max-memory-rows rows), and
  the peers ``glmm`` / ``mixedlm`` (statsmodels) where installed and small enough.

Targets (2 cores, 24 GB): 1e8 slope rows out of core < 90 s and < 2 GB peak; time linear in
rows; Dask <= 1.5 x the out-of-core time on one machine.

Run: ``PYTHONPATH=src python benchmarks/bigdata.py [--sizes 1e6 1e7] [--big] [--design slopes]``
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

FORMULAS = {"slopes": "y ~ x + (1 + x | g)", "crossed": "y ~ x + (1 | a) + (1 | b)"}
ROW_GROUP = 1_000_000


def generate(design: str, n: int, path: Path, seed: int = 12) -> None:
    """Seeded synthetic data as Parquet, written one row group at a time."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    if design == "slopes":
        G = 10_000
        u = rng.multivariate_normal([0, 0], [[1.0, 0.3], [0.3, 0.25]], size=G)
    else:
        A, B = 5_000, 500
        ua, ub = rng.normal(0, 0.8, A), rng.normal(0, 0.5, B)
    writer = None
    for start in range(0, n, ROW_GROUP):
        m = min(ROW_GROUP, n - start)
        x = rng.normal(size=m)
        if design == "slopes":
            g = rng.integers(0, G, m)
            y = 2.0 + 0.5 * x + u[g, 0] + u[g, 1] * x + rng.normal(size=m)
            tab = pa.table({"y": y, "x": x, "g": g.astype(np.int32)})
        else:
            a, b = rng.integers(0, A, m), rng.integers(0, B, m)
            y = 1.0 + 0.3 * x + ua[a] + ub[b] + rng.normal(size=m)
            tab = pa.table({"y": y, "x": x, "a": a.astype(np.int32), "b": b.astype(np.int32)})
        if writer is None:
            writer = pq.ParquetWriter(path, tab.schema)
        writer.write_table(tab)
    writer.close()


def child(kind: str, design: str, path: str, batch: int) -> dict:
    """One fit (in the subprocess); returns its numbers."""
    import warnings

    warnings.simplefilter("ignore")
    import multilevel as ml

    f = FORMULAS[design]
    t0 = time.perf_counter()
    extra = {}
    if kind == "out-of-core":
        fit = ml.lmer(f, path, reml=False, batch_size=batch)
    elif kind == "dask":
        import dask.dataframe as dd
        from distributed import Client, LocalCluster

        with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                          dashboard_address=None, memory_limit="6GiB") as cl, Client(cl) as c:
            t0 = time.perf_counter()
            ddf = dd.read_parquet(path, split_row_groups=True)
            fit = ml.lmer(f, ddf, reml=False)
            wall = time.perf_counter() - t0
            extra["worker_peak_mb"] = sorted(
                v / 2**20 for v in c.run(lambda: resource.getrusage(
                    resource.RUSAGE_SELF).ru_maxrss * 1024).values())
        return {"time": wall, "loglik": fit.loglik, "fixef": fit.fixef.tolist(), **extra}
    elif kind == "in-memory":
        import pandas as pd

        fit = ml.lmer(f, pd.read_parquet(path), reml=False)
    elif kind == "mixedlm":
        import pandas as pd
        import statsmodels.formula.api as smf

        d = pd.read_parquet(path)
        res = smf.mixedlm("y ~ x", d, groups=d["g"], re_formula="~x").fit(reml=False)
        return {"time": time.perf_counter() - t0, "loglik": float(res.llf),
                "fixef": res.fe_params.tolist()}
    else:
        raise SystemExit(f"unknown kind {kind}")
    return {"time": time.perf_counter() - t0, "loglik": fit.loglik, "fixef": fit.fixef.tolist(),
            **extra}


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        kind, design, path, batch = sys.argv[2:6]
        print(json.dumps(child(kind, design, path, int(batch))))
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", nargs="*", type=float, default=[1e6, 1e7])
    ap.add_argument("--big", action="store_true", help="add 1e8 rows (minutes; ~3 GB on disk)")
    ap.add_argument("--design", choices=list(FORMULAS) + ["both"], default="both")
    ap.add_argument("--dir", default="/tmp/multilevel-bigdata")
    ap.add_argument("--batch-size", type=int, default=1_000_000)
    ap.add_argument("--max-memory-rows", type=float, default=1e7,
                    help="largest size also fitted in memory (and by the peers)")
    ap.add_argument("--kinds", nargs="*", default=["out-of-core", "dask", "in-memory", "mixedlm"])
    args = ap.parse_args()
    sizes = sorted(set(int(s) for s in args.sizes + ([1e8] if args.big else [])))
    designs = list(FORMULAS) if args.design == "both" else [args.design]
    d = Path(args.dir)
    d.mkdir(parents=True, exist_ok=True)
    # ru_maxrss of RUSAGE_CHILDREN is the maximum over all children so far: each measured
    # run goes through its own intermediate process so that earlier runs do not count
    print(f"{'design':8s} {'rows':>6s} {'kind':12s} {'time s':>8s} {'peak MB':>8s} "
          f"{'logLik':>18s}  note")
    for design in designs:
        for n in sizes:
            path = d / f"{design}_{n:.0e}.parquet"
            if not path.exists():
                t = time.perf_counter()
                generate(design, n, path)
                print(f"# generated {path} in {time.perf_counter() - t:.0f} s", flush=True)
            for kind in args.kinds:
                if kind in ("in-memory", "mixedlm") and n > args.max_memory_rows:
                    continue
                if kind == "mixedlm" and (design != "slopes" or n > 1e6):
                    continue  # statsmodels' mixedlm: one grouping factor, minutes at 1e7
                cmd = [sys.executable, "-c",
                       "import subprocess,sys,resource,json;"
                       "p=subprocess.run(sys.argv[1:],capture_output=True,text=True);"
                       "r=resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss/1024;"
                       "print(p.stdout.strip().splitlines()[-1] if p.returncode==0 else "
                       "json.dumps({'error':(p.stderr.strip().splitlines() or ['?'])[-1]}));"
                       "print(r)",
                       sys.executable, __file__, "--child", kind, design, str(path),
                       str(args.batch_size)]
                t0 = time.perf_counter()
                out = subprocess.run(cmd, capture_output=True, text=True)
                lines = out.stdout.strip().splitlines()
                try:
                    res, peak = json.loads(lines[-2]), float(lines[-1])
                except (IndexError, ValueError):
                    res, peak = {"error": out.stderr.strip()[-200:]}, float("nan")
                if "error" in res:
                    print(f"{design:8s} {n:6.0e} {kind:12s} {'-':>8s} {'-':>8s} "
                          f"{'-':>18s}  {res['error']}", flush=True)
                    continue
                note = ""
                if "worker_peak_mb" in res:
                    note = "workers " + ", ".join(f"{v:.0f}" for v in res["worker_peak_mb"]) + " MB"
                print(f"{design:8s} {n:6.0e} {kind:12s} {res['time']:8.1f} {peak:8.0f} "
                      f"{res['loglik']:18.6f}  {note}", flush=True)


if __name__ == "__main__":
    main()
