"""Markdown tables from the measurements of ``run.py``.

Columns, in this order: ours, lme4 (measured live by ``r_worker.R``; glmmTMB on the
structured-covariance cases, named in the note), ``lme4-recorded`` (only with
``--lme4-recorded``: ``bench/lme4_timings.json``, measured another day, labelled with its date),
then the Python peers. A cell is a worker's answer (``worker.py`` / ``r_worker.R``, combined
over the rounds by ``run.combine_rounds``); the recorded lme4 numbers are put in that shape by
``lme4_cell``.
"""

from __future__ import annotations

import datetime
import math
import os
import platform
from dataclasses import dataclass
from pathlib import Path

from cases import Case, alt_loglik, reference_loglik

COLUMNS = ("ours", "lme4", "lme4-recorded", "glmm", "mixedlm", "statsmodels", "gpboost")


def recorded_date(lme4: dict | None) -> str:
    return (lme4 or {}).get("timestamp", "")[:10] or "?"


def label(tool: str, lme4: dict | None) -> str:
    """A column's heading: the recorded lme4 numbers say when they were measured."""
    return f"lme4 (recorded {recorded_date(lme4)})" if tool == "lme4-recorded" else tool


@dataclass
class Row:
    """One case: every tool's cell (lme4's included) and the logLik they are checked against."""

    case: Case
    cells: dict[str, dict]
    ref: float | None
    ref_from_lme4: bool
    alt: float | None = None  # the logLik under glmmTMB's convention, where it differs


def lme4_cell(case: Case, lme4: dict | None) -> dict:
    """lme4's recorded numbers (lme4_timings.json) for a case, in the shape of a worker's
    answer."""
    if lme4 is None:
        return {"status": "n/a", "reason": "lme4_timings.json not found"}
    b = lme4["benchmarks"].get(case.lme4_key) if case.lme4_key else None
    if b is None:
        return {"status": "n/a", "reason": f"not in the recording of {recorded_date(lme4)}"}
    return {
        "status": "ok", "version": lme4["software"]["lme4"], "nobs": b["nobs"],
        "first_s": b["times_s"][0], "times_s": b["times_s"], "median_s": b["median_s"],
        "min_s": b["min_s"], "reps": b["reps_run"], "loglik": b["fit"]["logLik"],
        "note": "; ".join(b["fit"].get("messages", [])),
        "fit_peak_mb": b["r_heap_max_used_mb"] - b["r_heap_before_fit_mb"],
        "process_peak_mb": b["peak_rss_mb_process"],
    }


def build_rows(cases: list[Case], tools: list[str], results: dict, lme4: dict | None,
               shared: Path, recorded: bool = False) -> list[Row]:
    """One row per case. The reference logLik is the best lme4 (glmmTMB) logLik known: the
    reference fit, the recorded timing run's fit, and this run's live fit."""
    cols = [t for t in COLUMNS if t in tools or (recorded and t == "lme4-recorded")]
    rows = []
    for case in cases:
        cells = {t: lme4_cell(case, lme4) if t == "lme4-recorded" else results[t][case.name]
                 for t in cols}
        known = [reference_loglik(case, shared)]
        live = cells.get("lme4", {})
        if _ok(live) and math.isfinite(live["loglik"]):
            known.append(live["loglik"])
        known = [v for v in known if v is not None]
        ref = max(known, default=None)
        from_lme4 = ref is not None
        if not from_lme4:  # no lme4 fit of this model: compare the tools with each other
            lls = [c["loglik"] for c in cells.values() if _ok(c) and math.isfinite(c["loglik"])]
            ref = max(lls, default=None)
        rows.append(Row(case, cells, ref, from_lme4, alt_loglik(case, shared)))
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


def loglik_check(cell: dict, ref: float | None, tol: float,
                 alt: float | None = None) -> tuple[str, str]:
    """(logLik minus the reference, verdict: yes / better / no / glmmTMB / —). "glmmTMB": not
    lme4's value but, within ``tol``, the other convention's (``alt``)."""
    if not _ok(cell) or ref is None:
        return "—", "—"
    if not math.isfinite(cell["loglik"]):
        return "—", "no"
    d = cell["loglik"] - ref
    if abs(d) > tol and alt is not None and abs(cell["loglik"] - alt) <= tol:
        return f"{d:+.2g}", "glmmTMB"
    return f"{d:+.2g}", "yes" if abs(d) <= tol else "better" if d > 0 else "no"


def _cell_text(x) -> str:
    """A markdown table cell: a '|' in a reason (a formula's bar) would split the cell, a
    line break (lme4's multi-line convergence messages) the row."""
    return " ".join(str(x).split()).replace("|", "\\|")


def markdown_table(head: list[str], align: list[str], body: list[list[str]]) -> list[str]:
    """Lines of a markdown table; ``align`` entries are "l", "r" or "c"."""
    rule = {"l": "---", "r": "---:", "c": ":---:"}
    return ["| " + " | ".join(head) + " |", "|" + "|".join(rule[a] for a in align) + "|"] + [
        "| " + " | ".join(_cell_text(x) for x in r) + " |" for r in body]


# --------------------------------------------------------------------------- tables


def time_table(rows: list[Row], tol: float, lme4: dict | None = None) -> list[str]:
    cols = list(rows[0].cells)
    has_ours = "ours" in cols
    body = []
    for row in rows:
        cells = []
        for c in row.cells.values():
            if not _ok(c):
                cells.append(c["status"])  # the reason is in the detail table
                continue
            verdict = loglik_check(c, row.ref, tol, row.alt)[1]
            mark = {"no": " ✗", "better": " ▲", "glmmTMB": " †"}.get(verdict, "")
            cells.append(fmt_time(c["median_s"]) + mark + (" *" if c.get("reps") == 0 else ""))
        nobs = next((c["nobs"] for c in row.cells.values() if c.get("nobs")), "")
        line = [row.case.name, nobs, fmt_time(row.case.target_s), *cells]
        if has_ours:
            ours = row.cells["ours"]
            line.append("—" if not _ok(ours) or row.case.target_s is None
                        else "yes" if ours["median_s"] <= row.case.target_s else "no")
        body.append(line)
    head = (["case", "nobs", "target (ours)", *(label(c, lme4) for c in cols)]
            + (["ours ≤ target"] if has_ours else []))
    return ["## Median fit time", ""] + markdown_table(
        head, ["l", "r", "r"] + ["r"] * len(cols) + (["c"] if has_ours else []), body)


def memory_table(rows: list[Row], lme4: dict | None = None) -> list[str]:
    cols = list(rows[0].cells)
    l4_cols = [c for c in ("lme4", "lme4-recorded") if c in cols]
    has_ours = "ours" in cols and bool(l4_cols)
    body = []
    for row in rows:
        line = [row.case.name] + [
            f"{fmt_mb(c['fit_peak_mb'])} / {fmt_mb(c['process_peak_mb'])}" if _ok(c)
            else c["status"] for c in row.cells.values()]
        if has_ours:
            # ours against this run's lme4, else the recorded one (marked "rec.")
            ours = row.cells["ours"]
            col = next((c for c in l4_cols if _ok(row.cells[c])), None)
            if not _ok(ours) or col is None:
                line.append("—")
            else:
                below = ours["process_peak_mb"] < row.cells[col]["process_peak_mb"]
                line.append(("yes" if below else "no")
                            + (" (rec.)" if col == "lme4-recorded" else ""))
        body.append(line)
    head = ["case", *(label(c, lme4) for c in cols)] + (["ours < lme4 (process)"]
                                                        if has_ours else [])
    return ["## Peak memory (MB): fit peak above baseline / whole process", "",
            "lme4: R heap growth during the fits (gc() max used; excludes C allocations such "
            "as CHOLMOD's or TMB's; the RSS growth is in the detail table's note) / max RSS of "
            "the Rscript (R, packages, data, all repeats). Python tools: peak RSS during "
            "the fits above the RSS after imports + data load / max RSS of the worker process.",
            ""] + markdown_table(head, ["l"] + ["r"] * len(cols) + (["c"] if has_ours else []),
                                 body)


def detail_table(rows: list[Row], tol: float, lme4: dict | None = None) -> list[str]:
    body = []
    for row in rows:
        ref_note = "" if row.ref_from_lme4 else "no lme4 fit: Δ against the best tool"
        for tool, c in row.cells.items():
            if not _ok(c):
                body.append([row.case.name, label(tool, lme4), c["status"], "",
                             fmt_time(c.get("first_s")), "", "", "", "", "", "",
                             c.get("reason", "")])
                continue
            d, verdict = loglik_check(c, row.ref, tol, row.alt)
            rss = (f"RSS fit peak {fmt_mb(c['rss_fit_peak_mb'])} MB"
                   if c.get("rss_fit_peak_mb") is not None else "")
            note = "; ".join(x for x in (c.get("note", ""), rss, ref_note) if x)
            body.append([row.case.name, label(tool, lme4), fmt_time(c["median_s"]),
                         fmt_time(c["min_s"]),
                         fmt_time(c["first_s"]), c["reps"], fmt_mb(c["fit_peak_mb"]),
                         fmt_mb(c["process_peak_mb"]), f"{c['loglik']:.4f}", d, verdict, note])
    head = ["case", "tool", "median", "min", "first call", "reps", "fit peak MB", "process MB",
            "logLik", "Δ logLik", "logLik ok", "note"]
    refs = "; ".join(_ref_text(r) for r in rows if r.ref is not None)
    return ["## Detail", ""] + markdown_table(head, list("llrrrrrrrrcl"), body) + [
        "", f"Reference logLik per case: {refs}."]


def _ref_text(row: Row) -> str:
    extra = [row.case.note] if row.case.note else []
    if row.alt is not None:
        extra.append(f"glmmTMB's: {row.alt:.4f} (verdict `glmmTMB`, mark †)")
    return f"{row.case.name} {row.ref:.4f}" + (f" ({'; '.join(extra)})" if extra else "")


def header(settings: dict, versions: dict, lme4: dict | None) -> list[str]:
    cpu = platform.processor()
    if Path("/proc/cpuinfo").exists():
        cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text()
                    .splitlines() if ln.startswith("model name")), cpu)
    s = settings
    rounds = s.get("rounds", 1)
    round_text = (f"; {rounds} rounds per case (tool order reversed every other round), each "
                  "number the median over the rounds" if rounds > 1 else "")
    lines = [
        "# multilevel benchmarks", "",
        f"Run {datetime.datetime.now():%Y-%m-%d %H:%M} on {cpu}, {os.cpu_count()} cores; "
        f"Python {platform.python_version()}; "
        + ", ".join(f"{t} {v}" for t, v in versions.items()) + ".",
        f"Median of up to {s['repeats']} timed fits after one warm-up (budget {s['budget']:g} s "
        f"per cell; `*` = only the warm-up ran), fresh process per cell, cells interleaved "
        f"(every tool on a case before the next case){round_text}, fit timeout "
        f"{s['timeout']:g} s, threads per tool: {s.get('threads') or 'its default'}. "
        + ("lme4 is measured live in this run by Rscript (`r_worker.R`, `system.time()` "
           "elapsed around each fit; glmmTMB where the note says so). " if "lme4" in versions
           else "") +
        "logLik compared with the best "
        f"lme4 logLik known for the case (tolerance {s['loglik_tol']:g}): ✗ = lower (another "
        "optimum), ▲ = higher, † = glmmTMB's logLik where its convention "
        "differs from lme4's (Gamma, negative binomial; see under the detail table). "
        f"Load average (1, 5, 15 min) at start / end: {s['loadavg'][0]} / {s['loadavg'][1]}.",
    ]
    if lme4 is not None:
        sw = lme4["software"]
        lines.append(f"lme4 (recorded {recorded_date(lme4)}): lme4 {sw['lme4']} (R: {sw['R']}), "
                     f"from lme4_timings.json, not measured in this run: "
                     f"{lme4['machine'].get('note', '')}.")
    return lines + [""]


def render(rows: list[Row], settings: dict, versions: dict, lme4: dict | None) -> str:
    tol = settings["loglik_tol"]
    parts = [header(settings, versions, lme4), time_table(rows, tol, lme4), [""],
             memory_table(rows, lme4), [""], detail_table(rows, tol, lme4), [""]]
    return "\n".join(line for part in parts for line in part)
