"""Fit times of structured covariance terms (diag(), cs(), ar1()) next to glmmTMB.

usage: python benchmarks/bench_covstruct.py [--repeats 5] [--shared ../shared]

Fits the public glmmTMB reference cases with ``multilevel.lmer`` and prints a Markdown table:
median wall time of ``--repeats`` fits (after one warm-up) from a pandas frame to a fit, the
log-likelihood difference from glmmTMB's, and glmmTMB 1.1.5's median time measured on the same
machine (R 4.2.2, ``glmmTMB(..., REML=)`` with its default control, 5 fits after a warm-up;
the R script is in this file's ``R_SCRIPT``). Not run by the tests.

Measured 2026-12-02 on the 2-core machine (load ~5 from parallel builds; ours includes the
restart of each correlation on its other side):

| case | model | ours (s) | glmmTMB (s) | logLik - glmmTMB's |
|---|---|---|---|---|
| early_ar1_ml | `cog ~ age + trt + ar1(0 + factor(age) \\| id)` ML | 0.0322 | 0.826 | -7.1e-11 |
| sleepstudy_diag_ar1_reml | `Reaction ~ Days + diag(Days \\| Subject) + ar1(0 + factor(Days) \\| Subject)` REML | 0.0714 | 0.774 | -6.9e-10 |
| stark_cs_ml | `math ~ cltype + cs(0 + cltype \\| sch)` ML | 0.0308 | 2.185 | -2.7e-10 |
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import warnings
from pathlib import Path

import pandas as pd

#: glmmTMB 1.1.5 on this machine (2 cores, load ~7 from parallel builds), 2026-12-02
GLMMTMB_SECONDS = {"early_ar1_ml": 0.826, "sleepstudy_diag_ar1_reml": 0.774, "stark_cs_ml": 2.185}

R_SCRIPT = """
library(glmmTMB)
# cases as in shared/reference/<id>.json (formula, REML, preprocessing)
t <- sapply(1:5, function(i) system.time(glmmTMB(formula, data = d, REML = reml))[["elapsed"]])
median(t)
"""

CASES = ["early_ar1_ml", "sleepstudy_diag_ar1_reml", "stark_cs_ml"]


def load(shared: Path, case: dict) -> pd.DataFrame:
    meta = json.loads((shared / "data" / "datasets_meta.json").read_text())[case["dataset_name"]]["columns"]
    facs = {c: str for c, m in meta.items() if "factor" in m["type"]}
    df = pd.read_csv(shared / "data" / case["dataset"], dtype=facs, keep_default_na=False, na_values=[""])
    for c in facs:
        df[c] = pd.Categorical(df[c], categories=meta[c]["levels"])
    for op in case.get("preprocessing") or []:
        if op["op"] == "subset":
            col, val = (s.strip() for s in op["expr"].split("=="))
            df = df[df[col].astype(str) == val.strip('"')].reset_index(drop=True)
            for c in df.columns:
                if isinstance(df[c].dtype, pd.CategoricalDtype):
                    df[c] = df[c].cat.remove_unused_categories()
    return df


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--shared", default=str(Path(__file__).resolve().parents[1] / ".." / "shared"))
    a = ap.parse_args()
    import multilevel as ml

    shared = Path(a.shared)
    print("| case | model | ours (s) | glmmTMB (s) | logLik - glmmTMB's |")
    print("|---|---|---|---|---|")
    for cid in CASES:
        case = json.loads((shared / "reference" / f"{cid}.json").read_text())
        df = load(shared, case)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fit = ml.lmer(case["formula"], df, reml=case["REML"])
            times = []
            for _ in range(a.repeats):
                t0 = time.perf_counter()
                ml.lmer(case["formula"], df, reml=case["REML"])
                times.append(time.perf_counter() - t0)
        d = fit.loglik - case["results"]["logLik"]
        print(f"| {cid} | `{case['formula'].replace('|', chr(92) + '|')}`{' REML' if case['REML'] else ' ML'} | "
              f"{statistics.median(times):.4f} | {GLMMTMB_SECONDS[cid]:.3f} | {d:.1e} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
