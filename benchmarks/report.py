"""Markdown tables from the measurements of ``run.py`` and lme4's numbers."""

from __future__ import annotations

import datetime
import math
import os
import platform
from dataclasses import dataclass
from pathlib import Path

from cases import Case, reference_loglik

COLUMNS = ("ours", "lme4", "glmm", "mixedlm", "statsmodels")


@dataclass
class Row:
    """One case: every tool's cell (lme4's included) and the logLik they are checked against."""

    case: Case
    cells: dict[str, dict]
    ref: float | None
    ref_from_lme4: bool


def lme4_cell(case: Case, lme4: dict | None) -> dict:
    """lme4's numbers for a case, in the shape of a worker's answer."""
    if lme4 is None:
        return {"status": "n/a", "reason": "lme4_timings.json not found"}
    b = lme4["benchmarks"].get(case.lme4_key) if case.lme4_key else None
    if b is None:
        return {"status": "n/a", "reason": "not timed in R"}
    return {
        "status": "ok", "version": lme4["software"]["lme4"], "nobs": b["nobs"],
        "first_s": b["times_s"][0], "times_s": b["times_s"], "median_s": b["median_s"],
        "min_s": b["min_s"], "reps": b["reps_run"], "loglik": b["fit"]["logLik"],
        "note": "; ".join(b["fit"].get("messages", [])),
        "fit_peak_mb": b["r_heap_max_used_mb"] - b["r_heap_before_fit_mb"],
        "process_peak_mb": b["peak_rss_mb_process"],
    }


def build_rows(cases: list[Case], tools: list[str], results: dict, lme4: dict | None,
               shared: Path) -> list[Row]:
    cols = [t for t in COLUMNS if t == "lme4" or t in tools]
    rows = []
    for case in cases:
        cells = {t: lme4_cell(case, lme4) if t == "lme4" else results[t][case.name]
                 for t in cols}
        ref = reference_loglik(case, shared)
        from_lme4 = ref is not None
        if not from_lme4:  # no lme4 fit of this model: compare the tools with each other
            lls = [c["loglik"] for c in cells.values() if _ok(c) and math.isfinite(c["loglik"])]
            ref = max(lls, default=None)
        rows.append(Row(case, cells, ref, from_lme4))
    return rows


# --------------------------------------------------------------------------- cell formats


def _ok(cell: dict) -> bool:
    return cell.get("status") == "ok"


def fmt_time(s: float | None) -> str:
    if s is None or not math.isfinite(s):
        return "—"
    if s < 1e-3:
        return f"{s * 1e6:.0f} µs"
    if s < 1:
        return f"{s * 1e3:.3g} ms"
    return f"{s:.3g} s"


def fmt_mb(mb: float | None) -> str:
    return "—" if mb is None else f"{mb:.0f}"


def loglik_check(cell: dict, ref: float | None, tol: float) -> tuple[str, str]:
    """(logLik minus the reference, verdict: yes / better / no / —)."""
    if not _ok(cell) or ref is None:
        return "—", "—"
    if not math.isfinite(cell["loglik"]):
        return "—", "no"
    d = cell["loglik"] - ref
    return f"{d:+.2g}", "yes" if abs(d) <= tol else "better" if d > 0 else "no"


def markdown_table(head: list[str], align: list[str], body: list[list[str]]) -> list[str]:
    """Lines of a markdown table; ``align`` entries are "l", "r" or "c"."""
    rule = {"l": "---", "r": "---:", "c": ":---:"}
    return ["| " + " | ".join(head) + " |", "|" + "|".join(rule[a] for a in align) + "|"] + [
        "| " + " | ".join(str(x) for x in r) + " |" for r in body]


# --------------------------------------------------------------------------- tables


def time_table(rows: list[Row], tol: float) -> list[str]:
    cols = list(rows[0].cells)
    has_ours = "ours" in cols
    body = []
    for row in rows:
        cells = []
        for c in row.cells.values():
            if not _ok(c):
                cells.append(c["status"])  # the reason is in the detail table
                continue
            verdict = loglik_check(c, row.ref, tol)[1]
            mark = {"no": " ✗", "better": " ▲"}.get(verdict, "")
            cells.append(fmt_time(c["median_s"]) + mark + (" *" if c.get("reps") == 0 else ""))
        nobs = next((c["nobs"] for c in row.cells.values() if c.get("nobs")), "")
        line = [row.case.name, nobs, fmt_time(row.case.target_s), *cells]
        if has_ours:
            ours = row.cells["ours"]
            line.append("—" if not _ok(ours) or row.case.target_s is None
                        else "yes" if ours["median_s"] <= row.case.target_s else "no")
        body.append(line)
    head = ["case", "nobs", "target (ours)", *cols] + (["ours ≤ target"] if has_ours else [])
    return ["## Median fit time", ""] + markdown_table(
        head, ["l", "r", "r"] + ["r"] * len(cols) + (["c"] if has_ours else []), body)


def memory_table(rows: list[Row]) -> list[str]:
    cols = list(rows[0].cells)
    has_ours = "ours" in cols
    body = []
    for row in rows:
        line = [row.case.name] + [
            f"{fmt_mb(c['fit_peak_mb'])} / {fmt_mb(c['process_peak_mb'])}" if _ok(c)
            else c["status"] for c in row.cells.values()]
        if has_ours:
            ours, l4 = row.cells["ours"], row.cells["lme4"]
            below = _ok(ours) and _ok(l4) and ours["process_peak_mb"] < l4["process_peak_mb"]
            line.append("—" if not (_ok(ours) and _ok(l4)) else "yes" if below else "no")
        body.append(line)
    head = ["case", *cols] + (["ours < lme4 (process)"] if has_ours else [])
    return ["## Peak memory (MB): fit peak above baseline / whole process", "",
            "lme4: R heap growth during the fits (excludes CHOLMOD's C allocations) / max RSS "
            "of the Rscript (R, packages, data, all repeats). Python tools: peak RSS during "
            "the fits above the RSS after imports + data load / max RSS of the worker process.",
            ""] + markdown_table(head, ["l"] + ["r"] * len(cols) + (["c"] if has_ours else []),
                                 body)


def detail_table(rows: list[Row], tol: float) -> list[str]:
    body = []
    for row in rows:
        ref_note = "" if row.ref_from_lme4 else "no lme4 fit: Δ against the best tool"
        for tool, c in row.cells.items():
            if not _ok(c):
                body.append([row.case.name, tool, c["status"], "", fmt_time(c.get("first_s")),
                             "", "", "", "", "", "", c.get("reason", "")])
                continue
            d, verdict = loglik_check(c, row.ref, tol)
            note = "; ".join(x for x in (c.get("note", ""), ref_note) if x)
            body.append([row.case.name, tool, fmt_time(c["median_s"]), fmt_time(c["min_s"]),
                         fmt_time(c["first_s"]), c["reps"], fmt_mb(c["fit_peak_mb"]),
                         fmt_mb(c["process_peak_mb"]), f"{c['loglik']:.4f}", d, verdict, note])
    head = ["case", "tool", "median", "min", "first call", "reps", "fit peak MB", "process MB",
            "logLik", "Δ logLik", "logLik ok", "note"]
    refs = ", ".join(f"{r.case.name} {r.ref:.4f}" for r in rows if r.ref is not None)
    return ["## Detail", ""] + markdown_table(head, list("llrrrrrrrrcl"), body) + [
        "", f"Reference logLik per case: {refs}."]


def header(settings: dict, versions: dict, lme4: dict | None) -> list[str]:
    cpu = platform.processor()
    if Path("/proc/cpuinfo").exists():
        cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text()
                    .splitlines() if ln.startswith("model name")), cpu)
    s = settings
    lines = [
        "# multilevel benchmarks", "",
        f"Run {datetime.datetime.now():%Y-%m-%d %H:%M} on {cpu}, {os.cpu_count()} cores; "
        f"Python {platform.python_version()}; "
        + ", ".join(f"{t} {v}" for t, v in versions.items()) + ".",
        f"Median of up to {s['repeats']} timed fits after one warm-up (budget {s['budget']:g} s "
        f"per cell; `*` = only the warm-up ran), fresh process per cell, fit timeout "
        f"{s['timeout']:g} s, threads per tool: {s.get('threads') or 'its default'}. logLik compared with the best lme4 logLik known for the case "
        f"(tolerance {s['loglik_tol']:g}): ✗ = lower (another optimum), ▲ = higher. "
        f"Load average (1, 5, 15 min) at start / end: {s['loadavg'][0]} / {s['loadavg'][1]}.",
    ]
    if lme4 is not None:
        sw = lme4["software"]
        lines.append(f"lme4 {sw['lme4']} (R: {sw['R']}), from lme4_timings.json: "
                     f"{lme4['machine'].get('note', '')}.")
    return lines + [""]


def render(rows: list[Row], settings: dict, versions: dict, lme4: dict | None) -> str:
    tol = settings["loglik_tol"]
    parts = [header(settings, versions, lme4), time_table(rows, tol), [""], memory_table(rows),
             [""], detail_table(rows, tol), [""]]
    return "\n".join(line for part in parts for line in part)
