"""Out-of-core and Dask fits of big synthetic data: time and peak memory per size.

Two seeded designs, written as Parquet (row groups of 1e6 rows, into --dir):

* ``slopes``: y ~ x + (1 + x | g), 10,000 groups (correlated random intercepts and slopes);
* ``crossed``: y ~ x + (1 | a) + (1 | b), 5,000 x 500 crossed levels.

For each size (1e6 and 1e7 rows by default; ``--big`` adds 1e8) every fit runs in a fresh
subprocess, whose peak resident memory (its own ``ru_maxrss``, which includes pyarrow's and
numpy's allocations) is reported beside its wall time and the time per 1e6 rows (linear
growth in rows: a constant column):

* ``out-of-core``: ``lmer(formula, "file.parquet", batch_size=...)`` (one batch in memory);
* ``dask``: the same on ``dask.dataframe.read_parquet`` on a warm ``LocalCluster`` of 2
  worker processes (workers started and the library imported before the timer);
  ``dask-fresh``: the timer includes starting the cluster. Peak = the driver's; the
  workers' own peaks are in the note;
* ``in-memory``: pandas ``read_parquet`` then ``lmer`` (up to --max-memory-rows rows), and
  the peers ``glmm`` and ``mixedlm`` (and statsmodels' ``mixedlm`` with ``--kinds``), where
  installed, up to --max-peer-rows rows.

Each generated file is deleted after its fits unless ``--keep`` (1e8 rows are ~2 GB).

Targets (2 cores, 24 GB): 1e8 slope rows out of core < 90 s and < 2 GB peak; time linear in
rows; Dask <= 1.5 x the out-of-core time on one machine.

Run: ``PYTHONPATH=src python benchmarks/bigdata.py [--sizes 1e6 1e7] [--big] [--design slopes]
[--crossed-sizes 1e6 1e7]``
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


def _peak_mb() -> float:
    """This process's peak resident memory (ru_maxrss: pyarrow's and numpy's allocations
    included), in MB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _warm_worker() -> bool:
    """Import what a worker needs (before the timer, for the warm cluster)."""
    import dask.dataframe  # noqa: F401  (a partition of read_parquet is read with it)
    import dask.dataframe.io.parquet  # noqa: F401
    import pyarrow.dataset  # noqa: F401
    import multilevel.models.chunked  # noqa: F401
    import multilevel.models.dask  # noqa: F401
    import pyarrow.parquet  # noqa: F401
    return True


def child(kind: str, design: str, path: str, batch: int) -> dict:
    """One fit (in the subprocess); returns its numbers."""
    import warnings

    warnings.simplefilter("ignore")
    import importlib

    import pandas as pd  # noqa: F401
    import pyarrow.parquet  # noqa: F401

    import multilevel as ml
    import multilevel.models  # noqa: F401  (lmer's modules: imported before any timer)
    import multilevel.models.chunked  # noqa: F401

    f = FORMULAS[design]
    extra = {}
    peer = {"glmm": "glmm", "mixedlm": "mixedlm", "statsmodels": "statsmodels.formula.api"}
    if kind in peer:
        importlib.import_module(peer[kind])
    if kind in ("dask", "dask-fresh"):
        import dask.dataframe as dd
        from distributed import Client, LocalCluster

        import multilevel.models.dask  # noqa: F401

        t0 = time.perf_counter()
        with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                          dashboard_address=None, memory_limit="6GiB") as cl, Client(cl) as c:
            if kind == "dask":
                # warm: workers started and the library imported before the timer
                c.run(_warm_worker)
                t0 = time.perf_counter()
            ddf = dd.read_parquet(path, split_row_groups=True)
            fit = ml.lmer(f, ddf, reml=False)
            wall = time.perf_counter() - t0
            extra["worker_peak_mb"] = sorted(
                v / 1024 for v in c.run(lambda: resource.getrusage(
                    resource.RUSAGE_SELF).ru_maxrss).values())
        return {"time": wall, "loglik": fit.loglik, "fixef": fit.fixef.tolist(),
                "peak_mb": _peak_mb(), **extra}
    t0 = time.perf_counter()
    if kind == "out-of-core":
        fit = ml.lmer(f, path, reml=False, batch_size=batch)
        ll = fit.loglik
    elif kind == "in-memory":
        import pandas as pd

        ll = ml.lmer(f, pd.read_parquet(path), reml=False).loglik
    elif kind == "glmm":
        import glmm
        import pandas as pd

        d = pd.read_parquet(path)
        ll = float(glmm.fit(d, f, "gaussian", reml=False, satterthwaite=False).loglik)
    elif kind == "mixedlm":
        import mixedlm
        import pandas as pd

        d = pd.read_parquet(path)
        ll = float(mixedlm.lmer(f, d, REML=False).logLik())
    elif kind == "statsmodels":
        import pandas as pd
        import statsmodels.formula.api as smf

        d = pd.read_parquet(path)
        ll = float(smf.mixedlm("y ~ x", d, groups=d["g"], re_formula="~x").fit(reml=False).llf)
    else:
        raise SystemExit(f"unknown kind {kind}")
    return {"time": time.perf_counter() - t0, "loglik": ll, "peak_mb": _peak_mb()}


PEERS = ("glmm", "mixedlm", "statsmodels")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        kind, design, path, batch = sys.argv[2:6]
        print(json.dumps(child(kind, design, path, int(batch))))
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", nargs="*", type=float, default=[1e6, 1e7])
    ap.add_argument("--big", action="store_true", help="add 1e8 rows (minutes; ~2 GB on disk)")
    ap.add_argument("--design", choices=list(FORMULAS) + ["both"], default="both")
    ap.add_argument("--crossed-sizes", nargs="*", type=float, default=None,
                    help="sizes of the crossed design (default: those of --sizes)")
    ap.add_argument("--dir", default="/tmp/multilevel-bigdata")
    ap.add_argument("--batch-size", type=int, default=1_000_000)
    ap.add_argument("--max-memory-rows", type=float, default=1e7,
                    help="largest size also fitted in memory")
    ap.add_argument("--max-peer-rows", type=float, default=1e6,
                    help="largest size fitted by the peers (glmm, mixedlm, statsmodels)")
    ap.add_argument("--kinds", nargs="*",
                    default=["out-of-core", "dask", "dask-fresh", "in-memory", "glmm", "mixedlm"])
    ap.add_argument("--timeout", type=float, default=900, help="seconds per fit")
    ap.add_argument("--keep", action="store_true",
                    help="keep the generated files (by default each is deleted after its fits)")
    args = ap.parse_args()
    sizes = sorted(set(int(s) for s in args.sizes + ([1e8] if args.big else [])))
    designs = list(FORMULAS) if args.design == "both" else [args.design]
    d = Path(args.dir)
    d.mkdir(parents=True, exist_ok=True)
    print(f"{'design':8s} {'rows':>6s} {'kind':12s} {'time s':>8s} {'s/1e6':>6s} {'peak MB':>8s} "
          f"{'logLik':>18s}  note")
    for design in designs:
        dsizes = sizes if design == "slopes" or args.crossed_sizes is None \
            else sorted(int(s) for s in args.crossed_sizes)
        for n in dsizes:
            path = d / f"{design}_{n:.0e}.parquet"
            made = False
            if not path.exists():
                t = time.perf_counter()
                generate(design, n, path)
                made = True
                print(f"# generated {path} ({path.stat().st_size / 2**20:.0f} MB) in "
                      f"{time.perf_counter() - t:.0f} s", flush=True)
            for kind in args.kinds:
                if kind == "in-memory" and n > args.max_memory_rows:
                    continue
                if kind in PEERS and n > args.max_peer_rows:
                    continue
                if kind == "statsmodels" and design != "slopes":
                    continue  # one grouping factor only
                cmd = [sys.executable, __file__, "--child", kind, design, str(path),
                       str(args.batch_size)]
                try:
                    out = subprocess.run(cmd, capture_output=True, text=True,
                                         timeout=args.timeout)
                    lines = out.stdout.strip().splitlines()
                    res = json.loads(lines[-1]) if out.returncode == 0 and lines else \
                        {"error": (out.stderr.strip().splitlines() or ["?"])[-1][:150]}
                except subprocess.TimeoutExpired:
                    res = {"error": f"stopped after {args.timeout:.0f} s"}
                if "error" in res:
                    print(f"{design:8s} {n:6.0e} {kind:12s} {'-':>8s} {'-':>6s} {'-':>8s} "
                          f"{'-':>18s}  {res['error']}", flush=True)
                    continue
                note = ""
                if "worker_peak_mb" in res:
                    note = "workers " + ", ".join(f"{v:.0f}" for v in res["worker_peak_mb"]) + " MB"
                print(f"{design:8s} {n:6.0e} {kind:12s} {res['time']:8.1f} "
                      f"{res['time'] / (n / 1e6):6.2f} {res['peak_mb']:8.0f} "
                      f"{res['loglik']:18.6f}  {note}", flush=True)
            if made and not args.keep:
                path.unlink()


if __name__ == "__main__":
    main()
