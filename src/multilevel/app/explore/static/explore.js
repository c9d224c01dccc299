// multilevel explore: the page. Plain JS, SVG drawn by hand, no framework and no network
// request beyond this page's own server (the JSON endpoints under /api/).
//
// Flow: every change (a slider released, a list changed, a formula entered) builds the
// request from the page state S and posts it to /api/fit; the answer holds every view's
// numbers (multilevel.app.explore.state.model_state) and render() redraws all views. The
// time from the change to the end of the redraw is kept in window.mlTimings (the browser
// test reads it).
"use strict";

// ---------------------------------------------------------------------------------------------
// small helpers
// ---------------------------------------------------------------------------------------------

const SVGNS = "http://www.w3.org/2000/svg"; // a namespace name, not a URL the page loads
const $ = (id) => document.getElementById(id);
const COLORS = { complete: "#6b6b6b", none: "#e66101", partial: "#1f5fbf" };
const KIND_LABEL = { complete: "complete pooling", none: "no pooling", partial: "partial pooling" };

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "text") e.textContent = v;
    else if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) if (c !== null && c !== undefined) e.append(c);
  return e;
}

// SVG is drawn as markup: each plot is one string set with innerHTML in one write, which
// costs the browser a fraction of creating and attaching its elements one by one
const ESC = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" };
const esc = (v) => String(v).replace(/[&<>"]/g, (c) => ESC[c]);
// a coordinate to 0.1 px (the markup stays short)
const px = (v) => Math.round(v * 10) / 10;
// one element: sv(tag, attrs) is empty, sv(tag, attrs, text) holds escaped text,
// svm(tag, attrs, markup) holds markup
function svm(tag, attrs, inner) {
  let s = "<" + tag;
  for (const k in attrs) {
    const v = attrs[k];
    if (v === null || v === undefined || v === false) continue;
    s += " " + k + '="' + (typeof v === "number" ? px(v) : esc(v)) + '"';
  }
  return inner === undefined ? s + "/>" : s + ">" + inner + "</" + tag + ">";
}
const sv = (tag, attrs = {}, text) => svm(tag, attrs, text === undefined ? undefined : esc(text));
const gOpen = (attrs) => svm("g", attrs, "").slice(0, -4); // "<g ...>": its children follow
// the points of a scatter as one path of circles (one element instead of one per point)
function dots(xs, ys, r) {
  let d = "";
  for (let i = 0; i < xs.length; i++) {
    if (!Number.isFinite(xs[i]) || !Number.isFinite(ys[i])) continue;
    d += `M${px(xs[i] - r)},${px(ys[i])}a${r},${r} 0 1,0 ${2 * r},0a${r},${r} 0 1,0 ${-2 * r},0`;
  }
  return d;
}

// numbers as a reader wants them: 4 significant digits, no exponent for everyday sizes
function fmt(v, sig = 4) {
  if (v === null || v === undefined || Number.isNaN(v)) return "–";
  if (!Number.isFinite(v)) return v > 0 ? "∞" : "−∞";
  if (v === 0) return "0";
  const a = Math.abs(v);
  if (a >= 1e6 || a < 1e-4) return v.toExponential(sig - 1).replace("-", "−");
  const dec = Math.max(0, sig - 1 - Math.floor(Math.log10(a)));
  return v.toFixed(Math.min(dec, 8)).replace("-", "−");
}
const fmtP = (p) => (p === null || p === undefined ? "" : p < 1e-4 ? "< 0.0001" : p.toFixed(4));

// the columns of a frame ({col: {row: value}} from pandas' to_dict) as arrays
function cols(frame) {
  const out = {};
  for (const [k, v] of Object.entries(frame)) out[k] = Array.isArray(v) ? v : Object.values(v);
  return out;
}

// "nice" axis ticks (1, 2, 5 times a power of ten)
function ticks(lo, hi, n = 5) {
  if (!(hi > lo)) { const d = Math.abs(lo) || 1; lo -= d / 2; hi += d / 2; }
  const raw = (hi - lo) / n, mag = 10 ** Math.floor(Math.log10(raw)), r = raw / mag;
  const step = mag * (r >= 7.5 ? 10 : r >= 3.5 ? 5 : r >= 1.5 ? 2 : 1);
  const out = [];
  for (let v = Math.ceil(lo / step - 1e-9) * step; v <= hi + step * 1e-9; v += step) out.push(Math.abs(v) < step * 1e-9 ? 0 : v);
  return { values: out, step };
}
const tickText = (v, step) => {
  const dec = Math.max(0, -Math.floor(Math.log10(step) + 1e-9));
  return v.toFixed(Math.min(dec, 6)).replace("-", "−");
};

function extent(values, pad = 0.05) {
  let lo = Infinity, hi = -Infinity;
  for (const v of values) if (Number.isFinite(v)) { if (v < lo) lo = v; if (v > hi) hi = v; }
  if (lo === Infinity) return [0, 1];
  if (lo === hi) { const d = Math.abs(lo) * 0.1 || 1; return [lo - d, hi + d]; }
  const d = (hi - lo) * pad;
  return [lo - d, hi + d];
}

const linear = (d0, d1, r0, r1) => (v) => r0 + ((v - d0) / (d1 - d0 || 1)) * (r1 - r0);

// one plotting area: axes, grid, labels, pushed to ``out`` (an array of markup) inside an
// open <g> (attributes ``o.g``): the caller pushes what it draws, then "</g>"; returns the scales
function frame(out, o) {
  const { x, y, w, h, xdom, ydom } = o;
  const sx = o.sx || linear(xdom[0], xdom[1], x, x + w);
  const sy = linear(ydom[0], ydom[1], y + h, y);
  out.push(gOpen(o.g || {}));
  out.push(sv("rect", { x, y, width: w, height: h, class: "panel" }));
  const yt = ticks(ydom[0], ydom[1], o.yn || Math.max(2, Math.round(h / 45)));
  for (const v of yt.values) {
    if (v < ydom[0] || v > ydom[1]) continue;
    out.push(sv("line", { x1: x, x2: x + w, y1: sy(v), y2: sy(v), class: "grid" }));
    if (o.yaxis !== false) out.push(sv("text", { x: x - 6, y: sy(v) + 4, class: "tick", "text-anchor": "end" }, tickText(v, yt.step)));
  }
  if (o.xticks) {
    for (const [v, label] of o.xticks) {
      out.push(sv("line", { x1: sx(v), x2: sx(v), y1: y, y2: y + h, class: "grid" }));
      if (o.xaxis !== false) out.push(sv("text", { x: sx(v), y: y + h + 16, class: "tick", "text-anchor": "middle" }, label));
    }
  } else if (o.xaxis !== "none") {
    const xt = ticks(xdom[0], xdom[1], o.xn || Math.max(2, Math.round(w / 70)));
    for (const v of xt.values) {
      if (v < xdom[0] || v > xdom[1]) continue;
      out.push(sv("line", { x1: sx(v), x2: sx(v), y1: y, y2: y + h, class: "grid" }));
      if (o.xaxis !== false) out.push(sv("text", { x: sx(v), y: y + h + 16, class: "tick", "text-anchor": "middle" }, tickText(v, xt.step)));
    }
  }
  if (o.xlab) out.push(sv("text", { x: x + w / 2, y: y + h + 36, class: "axis-label", "text-anchor": "middle" }, o.xlab));
  if (o.ylab) out.push(sv("text", { x: 0, y: 0, class: "axis-label", "text-anchor": "middle",
    transform: `translate(${px(x - 48)},${px(y + h / 2)}) rotate(-90)` }, o.ylab));
  if (o.title) out.push(sv("text", { x: x + 4, y: y - 6, class: "panel-title" }, o.title));
  return { sx, sy };
}

// the width a plot is drawn at: read for every plot before any is drawn (render() does),
// so that drawing one plot never forces the layout of the page to measure the next
const widthOf = (container) => (S.widths && S.widths[container.id]) || container.clientWidth;

// a plot's markup sink: push to .out, then .done() writes it into the container at once
function svgBox(container, height) {
  const w = Math.max(320, Math.floor(widthOf(container) || 600));
  const out = [];
  return { out, w, h: height,
    done: () => { container.innerHTML = svm("svg", { xmlns: SVGNS, viewBox: `0 0 ${w} ${px(height)}`, width: w, height, role: "img" }, out.join("")); } };
}

const fontScale = () => (document.body.classList.contains("big") ? 1.3 : 1);
const path = (xs, ys, sx, sy) => xs.map((v, i) => `${i ? "L" : "M"}${sx(v).toFixed(1)},${sy(ys[i]).toFixed(1)}`).join("");
// a fixed scatter in [-0.5, 0.5) (golden-ratio sequence): jitter that does not move on redraw
const jitter = (i) => ((i * 0.6180339887) % 1) - 0.5;

function legend(out, x, y, items) {
  out.push(gOpen({ class: "legend" }));
  let cx = x;
  for (const [label, color, dash] of items) {
    out.push(sv("line", { x1: cx, x2: cx + 22, y1: y, y2: y, stroke: color, "stroke-width": 3, "stroke-dasharray": dash || null }));
    out.push(sv("text", { x: cx + 28, y: y + 4, class: "tick" }, label));
    cx += 40 + label.length * 7.2 * fontScale();
  }
  out.push("</g>");
}

// ---------------------------------------------------------------------------------------------
// page state and the server
// ---------------------------------------------------------------------------------------------

const S = {
  data: null,          // the data spec the server gets
  info: null,          // /api/data's answer for it (columns, groups, level-2 columns)
  sim: {},             // the simulator's parameters (when data.kind == "simulate")
  simParams: [],
  formula: "",
  reml: true,
  groupsCount: 8,
  picked: [],          // groups chosen in the picker (empty: spread by size)
  show: { complete: true, none: true, partial: true },
  layout: "facet",
  shrinkCoef: null,
  pins: [],
  pinCount: 0,
  last: null,          // the last state that could be fitted
  seq: 0,
  controller: null,
};
window.mlTimings = [];

// GET (no body) or POST a JSON body; the answer as an object ({ok: false, error} on failure)
async function api(path, body, signal) {
  const opts = body === undefined ? {} : {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body), signal };
  let res;
  try {
    res = await fetch(path, opts);
  } catch (e) {
    if (e.name === "AbortError") throw e;
    return { ok: false, error: "the explorer's server does not answer (was it stopped?)", kind: "NetworkError" };
  }
  const type = res.headers.get("content-type") || "";
  if (type.includes("application/json")) return res.json();
  if (!res.ok) return { ok: false, error: `${res.status} ${res.statusText}`, kind: "HTTPError" };
  return { ok: true, blob: await res.blob(), filename: (res.headers.get("content-disposition") || "").match(/filename="([^"]+)"/)?.[1] };
}

function setStatus(text, cls) {
  const s = $("status");
  s.textContent = text;
  s.className = cls || "";
}

// ---------------------------------------------------------------------------------------------
// data
// ---------------------------------------------------------------------------------------------

async function init() {
  const meta = await api("/api/datasets");
  if (!meta.ok) { setStatus(meta.error, "bad"); return; }
  S.simParams = meta.simulate;
  for (const p of meta.simulate) S.sim[p.name] = p.value;
  S.sim.unequal = !!meta.simulate_unequal;
  buildSimSliders();
  const sel = $("data-select");
  sel.append(el("option", { value: JSON.stringify({ kind: "simulate" }), text: "simulated (sliders)" }));
  if (meta.sources.length) {
    const og = el("optgroup", { label: "given at start" });
    for (const s of meta.sources) og.append(el("option", { value: JSON.stringify({ kind: s.kind, id: s.id }), text: s.label }));
    sel.append(og);
  }
  const og = el("optgroup", { label: "bundled" });
  for (const d of meta.datasets) og.append(el("option", { value: JSON.stringify({ kind: "bundled", name: d.name }), text: `${d.name} (${d.rows} rows)`, title: d.description }));
  sel.append(og);
  const start = meta.initial || { data: { kind: "simulate" } };
  S.reml = start.reml !== false;
  document.querySelector(`input[name=reml][value=${S.reml ? "reml" : "ml"}]`).checked = true;
  if (start.data.kind === "simulate") Object.assign(S.sim, start.data);
  const d = start.data;
  sel.value = JSON.stringify(d.kind === "simulate" ? { kind: "simulate" } : d.kind === "bundled" ? { kind: "bundled", name: d.name } : { kind: d.kind, id: d.id });
  if (sel.selectedIndex < 0) sel.selectedIndex = 0; // not in the list: the simulator
  sel.addEventListener("change", () => setData(JSON.parse(sel.value), null, performance.now()));
  await setData(JSON.parse(sel.value), start.formula, performance.now());
}

function dataSpec() {
  if (S.data.kind !== "simulate") return S.data;
  const spec = { kind: "simulate" };
  for (const p of S.simParams) spec[p.name] = S.sim[p.name];
  spec.unequal = S.sim.unequal;
  return spec;
}

function buildSimSliders() {
  const box = $("sim-sliders");
  box.replaceChildren();
  for (const p of S.simParams) {
    const out = el("output", { id: `sim-${p.name}-out`, text: String(S.sim[p.name]) });
    const input = p.name === "seed"
      ? el("input", { type: "number", id: `sim-${p.name}`, min: p.min, max: p.max, step: p.step, value: S.sim[p.name] })
      : el("input", { type: "range", id: `sim-${p.name}`, min: p.min, max: p.max, step: p.step, value: S.sim[p.name] });
    input.addEventListener("input", () => { out.textContent = input.value; });
    // "change" fires when the slider is released: one refit per release, not per pixel
    input.addEventListener("change", (ev) => {
      const t0 = performance.now();
      S.sim[p.name] = Number(input.value);
      out.textContent = input.value;
      simGuard();
      refit(t0, `slider ${p.name}`);
    });
    box.append(el("label", { class: "slider" }, el("span", { text: p.label }), input, out));
  }
  $("sim-unequal").addEventListener("change", (e) => { S.sim.unequal = e.target.checked; refit(performance.now(), "unequal"); });
  $("sim-reseed").addEventListener("click", () => {
    S.sim.seed = (S.sim.seed * 7919 + 17) % 99999;
    $("sim-seed").value = S.sim.seed; $("sim-seed-out").textContent = S.sim.seed;
    refit(performance.now(), "seed");
  });
}

function syncSimSliders() {
  for (const p of S.simParams) {
    const i = $(`sim-${p.name}`);
    if (i) { i.value = S.sim[p.name]; $(`sim-${p.name}-out`).textContent = String(S.sim[p.name]); }
  }
  $("sim-unequal").checked = !!S.sim.unequal;
}

// settings that cannot be fitted are explained before the server says no
function simGuard() {
  const g = $("sim-guard");
  // a random slope of x: x inside the left side of a bar, e.g. (1 + x | group)
  const n = S.sim.group_size, slope = /\([^|()]*\bx\b[^|()]*\|/.test(S.formula);
  let msg = "";
  if (n < 2) msg = "n = 1: with one row per group the group effect cannot be told apart from the residual; lmer refuses (fewer than 2 observations per group).";
  else if (slope && n < 3) msg = `n = ${n} with a random slope: as many random effects as observations per group; lmer refuses.`;
  g.hidden = !msg;
  g.textContent = msg;
}

async function setData(spec, formula, t0) {
  // pinned models name this data set's columns: a new data set starts a new comparison
  if (S.data && JSON.stringify(S.data) !== JSON.stringify(spec)) { S.pins = []; refreshCompare(); }
  S.data = spec;
  $("sim-controls").hidden = spec.kind !== "simulate";
  $("power-on").hidden = spec.kind !== "simulate";
  $("power-off").hidden = spec.kind === "simulate";
  syncSimSliders();
  setStatus("loading data…", "busy");
  const info = await api("/api/data", { data: dataSpec() });
  if (!info.ok) { showError(info); setStatus("data could not be loaded", "bad"); return; }
  S.info = info;
  showDataInfo(info.nrows, info.ncols, info.groups);
  fillBuilder(info);
  const f = formula || info.suggestion.formula || "";
  S.formula = f;
  $("formula").value = f;
  if (formula) syncBuilder(f);
  S.picked = [];
  if (f) await refit(t0, "data");
  else setStatus("choose an outcome and a grouping factor", "bad");
}

// ---------------------------------------------------------------------------------------------
// the model builder
// ---------------------------------------------------------------------------------------------

const term = (n) => (/^([A-Za-z]|[.](?![0-9]))[A-Za-z0-9._]*$/.test(n) ? n : "`" + n + "`");

function fillBuilder(info) {
  const sug = info.suggestion;
  const numeric = info.columns.filter((c) => c.kind === "numeric").map((c) => c.name);
  const all = info.columns.map((c) => c.name);
  const fill = (sel, names, value, none) => {
    sel.replaceChildren();
    if (none) sel.append(el("option", { value: "", text: none }));
    for (const n of names) sel.append(el("option", { value: n, text: n }));
    sel.value = value && names.includes(value) ? value : (none ? "" : names[0] || "");
  };
  fill($("m-outcome"), numeric, sug.outcome);
  fill($("m-x"), all, sug.x, "(none)");
  fill($("m-group"), info.groups.map((g) => g.name), sug.group);
  $("m-slope").checked = !!sug.slope;
  fillLevel2(sug.level2 || []);
}

function fillLevel2(checked) {
  const box = $("m-level2");
  const g = $("m-group").value;
  const names = (S.info.level2[g] || []).filter((n) => n !== $("m-outcome").value);
  box.replaceChildren(el("legend", { text: "Level-2 predictors" }));
  if (!names.length) box.append(el("p", { class: "sub", text: g ? `no column is constant within ${g}` : "choose a grouping factor" }));
  for (const n of names) {
    box.append(el("label", { class: "check" }, el("input", { type: "checkbox", value: n, checked: checked.includes(n) }), " " + n));
  }
}

function builderFormula() {
  const y = $("m-outcome").value, x = $("m-x").value, g = $("m-group").value;
  if (!y || !g) return null;
  const l2 = [...$("m-level2").querySelectorAll("input:checked")].map((i) => i.value);
  const fixed = [x, ...l2].filter(Boolean).map(term);
  const re = x && $("m-slope").checked ? `1 + ${term(x)}` : "1";
  return `${term(y)} ~ ${fixed.length ? fixed.join(" + ") : "1"} + (${re} | ${term(g)})`;
}

// a typed formula of the builder's shape (y ~ x + w + (1 + x | g)) shows in the lists; any
// other formula leaves them as they are (the formula box is what is fitted)
function syncBuilder(formula) {
  if (!S.info) return;
  const m = formula.match(/^\s*([^~]+?)\s*~(.*)$/);
  if (!m) return;
  const bars = [...m[2].matchAll(/\(([^()|]*)\|\s*([^()|]+?)\s*\)/g)];
  if (bars.length !== 1) return;
  const strip = (t) => t.trim().replace(/^`(.*)`$/, "$1");
  const y = strip(m[1]), g = strip(bars[0][2]);
  const fixed = m[2].replace(bars[0][0], "").split("+").map(strip).filter((t) => t && t !== "1" && t !== "0");
  const slope = bars[0][1].split("+").map(strip).filter((t) => t && t !== "1" && t !== "0");
  const names = new Set(S.info.columns.map((c) => c.name));
  const l2 = S.info.level2[g] || [];
  const l1 = fixed.filter((t) => !l2.includes(t));
  if (!names.has(y) || !S.info.groups.some((x) => x.name === g) || !fixed.every((t) => names.has(t)) || l1.length > 1) return;
  if (slope.length > 1 || (slope.length === 1 && slope[0] !== l1[0])) return;
  if ([...$("m-outcome").options].some((o) => o.value === y)) $("m-outcome").value = y;
  $("m-group").value = g;
  $("m-x").value = l1[0] || "";
  $("m-slope").checked = slope.length === 1;
  fillLevel2(fixed.filter((t) => l2.includes(t)));
}

function onBuilderChange(ev) {
  const t0 = performance.now();
  if (ev && ev.target.id === "m-group") fillLevel2([]);
  if (ev && ev.target.id === "m-x") $("m-slope").disabled = !$("m-x").value;
  const f = builderFormula();
  if (!f) return;
  S.formula = f;
  $("formula").value = f;
  S.picked = [];
  refit(t0, "builder");
}

// ---------------------------------------------------------------------------------------------
// refit and render
// ---------------------------------------------------------------------------------------------

function showDataInfo(nrows, ncols, groups) {
  $("data-info").textContent = `${nrows.toLocaleString("en")} rows, ${ncols} columns` +
    (groups.length ? ` · groups: ${groups.map((g) => `${g.name} (${g.levels})`).join(", ")}` : "");
}

async function refit(t0, trigger) {
  const seq = ++S.seq;
  if (S.controller) S.controller.abort(); // only the newest request matters
  const controller = new AbortController();
  S.controller = controller;
  setStatus("fitting…", "busy");
  const body = { data: dataSpec(), formula: S.formula, reml: S.reml,
    groups: S.picked.length ? S.picked : S.groupsCount };
  let st;
  try {
    st = await api("/api/fit", body, controller.signal);
  } catch (e) {
    return; // aborted: a newer change is on its way
  }
  if (seq !== S.seq) return;
  const tFetch = performance.now();
  if (!st.ok) {
    showError(st);
    recordTiming(seq, trigger, t0, tFetch, st);
    return;
  }
  clearError();
  S.last = st;
  // a simulation slider changes the data without a new /api/data: its size comes with the fit
  if (st.data_size) showDataInfo(st.data_size.nrows, st.data_size.ncols, st.data_size.groups);
  // a new choice of groups changes the pooling view alone: the other views stay as drawn
  render(st, trigger === "slider groups" || trigger === "groups" ? ["plot-pooling"] : null);
  recordTiming(seq, trigger, t0, tFetch, st);
  if (S.pins.length) refreshCompare();
  if (S.data.kind === "simulate") markPowerStale();
}

function recordTiming(seq, trigger, t0, tFetch, st) {
  document.body.getBoundingClientRect(); // the layout of the new views is part of the redraw
  const t1 = performance.now();
  const rec = { seq, trigger, ok: !!st.ok, total_ms: +(t1 - t0).toFixed(1), fetch_ms: +(tFetch - t0).toFixed(1),
    render_ms: +(t1 - tFetch).toFixed(1), server_ms: st.server_ms ?? null };
  window.mlTimings.push(rec);
  window.mlLastTiming = rec;
  if (st.ok) {
    const f = st.fit;
    setStatus(`${S.reml ? "REML" : "ML"} fit in ${fmt(st.server_ms, 3)} ms · redrawn ${fmt(rec.total_ms, 3)} ms after the change` +
      (f.singular ? " · singular fit" : ""), f.singular ? "warn" : "good");
  } else setStatus("the model cannot be fitted", "bad");
}

function showError(st) {
  const msg = st.error || "unknown error";
  const fe = $("formula-error");
  if (st.kind === "FormulaError" || Number.isInteger(st.position)) {
    // here the message's first line; the banner shows the formula with the caret under the
    // position, as the library prints it
    fe.hidden = false;
    fe.textContent = msg.split("\n")[0] + (Number.isInteger(st.position) ? ` (character ${st.position + 1})` : "");
    $("formula").classList.add("bad");
    if (Number.isInteger(st.position)) $("formula").setSelectionRange(st.position, st.position + 1);
  } else { fe.hidden = true; $("formula").classList.remove("bad"); }
  const b = $("banner");
  b.hidden = false;
  b.replaceChildren(el("strong", { text: "The model cannot be fitted. " }),
    el("pre", { class: "mono", text: msg }),
    el("span", { class: "sub", text: S.last ? "The views below still show the last model that could be fitted." : "" }));
  $("views").classList.add("stale");
}

function clearError() {
  $("formula-error").hidden = true;
  $("formula").classList.remove("bad");
  $("banner").hidden = true;
  $("views").classList.remove("stale");
}

// each view draws on its own: a bug in one shows in that card (and the console), not as a
// blank page
function render(st, only = null) {
  // every container's width first, in one layout: drawing a view never has to measure
  S.widths = {};
  for (const id of ["plot-pooling", "plot-shrinkage", "plot-factor", "plot-caterpillar", "plot-power"]) {
    const c = $(id);
    if (c) S.widths[id] = c.clientWidth;
  }
  const views = [["estimates", renderEstimates], ["plot-pooling", renderPooling], ["plot-shrinkage", renderShrinkage],
    ["plot-caterpillar", renderCaterpillar], ["variance", renderVariance],
    ["summary", (s) => { $("summary").textContent = s.summary; }],
    ["code-python", (s) => { $("code-python").textContent = s.code.python; $("code-r").textContent = s.code.r; }]];
  for (const [id, fn] of views) {
    if (only && !only.includes(id)) continue;
    try { fn(st); } catch (e) {
      console.error(`explorer: the view ${id} failed: ${e && e.stack ? e.stack : e}`);
      $(id).replaceChildren(el("p", { class: "error", text: `This view could not be drawn (${e.message}).` }));
    }
  }
}

// --- estimates strip ---------------------------------------------------------------------------

function estimateRows(st) {
  const f = st.fit, truth = st.truth || {};
  const rows = [];
  for (const [name, v] of Object.entries(f.fixef)) rows.push({ group: "fixed", name, value: v, se: f.se[name], truth: truth[name], key: `fixef:${name}` });
  for (const b of f.varcorr) {
    b.terms.forEach((t, i) => rows.push({ group: "random", name: `SD ${t} | ${b.group}`, value: b.sd[i], truth: truth[`sd ${t} | ${b.group}`], key: `sd:${b.group}:${t}` }));
    for (let i = 1; i < b.terms.length; i++) for (let j = 0; j < i; j++) {
      rows.push({ group: "random", name: `Corr ${b.terms[i]}, ${b.terms[j]} | ${b.group}`, value: b.corr[i][j], truth: truth[`corr ${b.terms[i]}, ${b.terms[j]} | ${b.group}`], key: `corr:${b.group}:${b.terms[i]}:${b.terms[j]}` });
    }
  }
  rows.push({ group: "random", name: "SD Residual σ", value: f.sigma, truth: truth.sigma, key: "sigma" });
  return rows;
}

function renderEstimates(st) {
  const f = st.fit;
  const rows = estimateRows(st);
  const hasTruth = !!st.truth;
  const table = el("table", { class: "estimates" },
    el("thead", {}, el("tr", {}, el("th", { text: "parameter" }), el("th", { text: "estimate" }), el("th", { text: "SE" }),
      hasTruth ? el("th", { text: "true value" }) : null)));
  const tb = el("tbody");
  for (const r of rows) {
    tb.append(el("tr", { class: r.group },
      el("td", { text: r.name }),
      el("td", { class: "num", "data-param": r.key, "data-value": String(r.value), text: fmt(r.value) }),
      el("td", { class: "num se", text: r.se === undefined ? "" : fmt(r.se) }),
      hasTruth ? el("td", { class: "num truth", text: r.truth === undefined ? "" : fmt(r.truth) }) : null));
  }
  table.append(tb);
  const ngroups = Object.entries(f.ngroups).map(([g, n]) => `${g}: ${n}`).join(", ");
  const side = el("dl", { class: "fitstats" },
    el("dt", { text: "observations" }), el("dd", { "data-param": "nobs", "data-value": String(f.nobs), text: String(f.nobs) }),
    el("dt", { text: "groups" }), el("dd", { text: ngroups }),
    el("dt", { text: "ICC (adjusted)" }), el("dd", { "data-param": "icc", "data-value": st.icc ? String(st.icc.adjusted) : "", text: st.icc ? fmt(st.icc.adjusted, 3) : "–" }),
    el("dt", { text: S.reml ? "REML log-lik." : "log-likelihood" }), el("dd", { "data-param": "loglik", "data-value": String(f.loglik), text: fmt(f.loglik, 6) }),
    el("dt", { text: "AIC / BIC" }), el("dd", { text: `${fmt(f.aic, 6)} / ${fmt(f.bic, 6)}` }));
  const warn = f.warnings.length ? el("ul", { class: "warnings" }, f.warnings.map((w) => el("li", { text: w }))) : "";
  $("estimates").replaceChildren(el("div", { class: "est-grid" }, table, side), warn);
}

// --- pooling lines -------------------------------------------------------------------------

function renderPooling(st) {
  const box = $("plot-pooling");
  const notes = (st.notes || []).filter((n) => !n.startsWith("pooling views need"));
  if (!st.pooling) {
    box.replaceChildren(el("p", { class: "sub empty", text: "The pooling views need a model with one grouping factor." }));
    $("notes-pooling").textContent = notes.join(" · ");
    renderGroupPicker(null);
    return;
  }
  const p = st.pooling, meta = p.meta;
  const pts = cols(p.frames.points), lines = cols(p.frames.lines), groups = cols(p.frames.groups);
  const levels = meta.levels, hasX = meta.x !== null;
  const sizes = Object.fromEntries(groups.group.map((g, i) => [g, groups.n[i]]));
  // per group: points and lines
  const byGroup = Object.fromEntries(levels.map((g) => [g, { px: [], py: [], lines: {} }]));
  pts.group.forEach((g, i) => { byGroup[g].px.push(pts.x[i]); byGroup[g].py.push(pts.y[i]); });
  lines.group.forEach((g, i) => {
    const L = (byGroup[g].lines[lines.pooling[i]] ||= { x: [], y: [] });
    L.x.push(lines.x[i]); L.y.push(lines.y[i]);
  });
  const ys = [...pts.y, ...lines.y];
  const ydom = extent(ys, 0.04);
  const kinds = ["complete", "none", "partial"].filter((k) => S.show[k]);
  const fs = fontScale();
  const W = widthOf(box) || 640;
  let height, layout;
  if (S.layout === "facet") {
    const k = levels.length;
    const ncol = k <= 2 ? k : k <= 4 ? 2 : k <= 9 ? (W > 700 ? 4 : 3) : k <= 16 ? 4 : k <= 25 ? 5 : 6;
    const nrow = Math.ceil(k / ncol);
    const left = 58 * fs, right = 10, top = 52 * fs, bottom = (hasX ? 48 : 12) * fs, gapx = 8, gapy = 30 * fs;
    const pw = (W - left - right - gapx * (ncol - 1)) / ncol;
    const ph = Math.max(90, Math.min(200, pw * 0.75));
    height = top + nrow * ph + (nrow - 1) * gapy + bottom;
    layout = { ncol, nrow, left, top, bottom, pw, ph, gapx, gapy };
  } else height = 440 * fs;
  const { out, w, done } = svgBox(box, height);
  legend(out, 58 * fs, 14 * fs, kinds.map((k) => [KIND_LABEL[k], COLORS[k], k === "complete" ? "6 4" : null]));
  // one path per line (its two ends: the lines are straight)
  const drawLines = (sx, sy, lv) => {
    for (const kind of kinds) {
      const L = byGroup[lv].lines[kind];
      if (!L) continue;
      out.push(sv("path", { d: path(L.x, L.y, sx, sy), class: `line ${kind}`, "data-kind": kind, "data-group": lv,
        stroke: COLORS[kind], "stroke-dasharray": kind === "complete" ? "6 4" : null }));
    }
  };
  if (S.layout === "facet") {
    const { ncol, nrow, left, top, bottom, pw, ph, gapx, gapy } = layout;
    const xdom = hasX ? extent([...pts.x, ...lines.x], 0) : [-0.5, 0.5];
    levels.forEach((lv, i) => {
      const r = Math.floor(i / ncol), c = i % ncol;
      const x0 = left + c * (pw + gapx), y0 = top + r * (ph + gapy);
      const lastRow = r === nrow - 1 || i + ncol >= levels.length;
      const { sx, sy } = frame(out, { x: x0, y: y0, w: pw, h: ph, xdom, ydom, yaxis: c === 0,
        xaxis: hasX ? lastRow : "none", xn: Math.max(2, Math.round(pw / 60)), yn: Math.max(2, Math.round(ph / 40)),
        title: `${lv}  (n = ${sizes[lv]})`, g: { class: "facet", "data-group": lv } });
      const B = byGroup[lv];
      out.push(sv("path", { d: dots(B.px.map((xv, j) => sx(hasX ? xv : jitter(j) * 0.7)), B.py.map(sy), 2.6), class: "pt" }));
      drawLines(sx, sy, lv);
      out.push("</g>");
    });
    if (hasX) out.push(sv("text", { x: left + (W - left) / 2, y: height - 8, class: "axis-label", "text-anchor": "middle" }, meta.x));
    out.push(sv("text", { x: 0, y: 0, class: "axis-label", "text-anchor": "middle", transform: `translate(${px(16 * fs)},${px(top + (height - top - bottom) / 2)}) rotate(-90)` }, meta.response));
  } else {
    const left = 70 * fs, top = 36 * fs, bottom = 50 * fs, right = 12;
    const pw = w - left - right, ph = height - top - bottom;
    if (hasX) {
      const fr = frame(out, { x: left, y: top, w: pw, h: ph, xdom: extent([...pts.x, ...lines.x], 0), ydom, xlab: meta.x, ylab: meta.response, g: { class: "overlay" } });
      out.push(sv("path", { d: dots(pts.x.map(fr.sx), pts.y.map(fr.sy), 2.2), class: "pt faint" }));
      for (const lv of levels) drawLines(fr.sx, fr.sy, lv);
    } else {
      // no level-1 predictor: one column per group, its points and its three estimates
      const xt = levels.map((lv, i) => [i, levels.length <= 16 ? lv : ""]);
      const fr = frame(out, { x: left, y: top, w: pw, h: ph, xdom: [-0.6, levels.length - 0.4], ydom, xticks: xt, xlab: meta.group, ylab: meta.response, g: { class: "overlay" } });
      levels.forEach((lv, i) => {
        const B = byGroup[lv];
        out.push(sv("path", { d: dots(B.py.map((_, j) => fr.sx(i + jitter(j) * 0.5)), B.py.map(fr.sy), 2.4), class: "pt" }));
        for (const kind of kinds) {
          const L = byGroup[lv].lines[kind];
          if (!L) continue;
          out.push(sv("path", { d: `M${px(fr.sx(i - 0.4))},${px(fr.sy(L.y[0]))}H${px(fr.sx(i + 0.4))}`, class: `line ${kind}`, "data-kind": kind, "data-group": lv, stroke: COLORS[kind], style: "stroke-width: 2.6px", "stroke-dasharray": kind === "complete" ? "6 4" : null }));
        }
      });
    }
    out.push("</g>");
  }
  done();
  if (!hasX) notes.unshift("no random slope: each group's lines are its three estimates of the level (intercept plus the other terms' average)");
  $("notes-pooling").textContent = notes.join(" · ");
  renderGroupPicker(st);
}

function renderGroupPicker(st) {
  const list = $("group-list");
  const all = st && st.groups_all;
  const range = $("groups-count");
  if (!all) { list.replaceChildren(); range.disabled = true; return; }
  range.disabled = false;
  // the wish (S.groupsCount) is kept when there are fewer groups: back to more groups, more lines
  range.max = Math.min(all.length, 30);
  range.value = Math.min(S.groupsCount, all.length);
  $("groups-count-out").textContent = S.picked.length ? `${S.picked.length} picked` : String(Math.min(S.groupsCount, all.length));
  const shown = new Set(st.pooling.meta.levels);
  // one write of markup (the list has a row per group: hsb 160); its clicks are handled
  // once, on the list, by wire()
  const rows = [...all].sort((a, b) => a.n - b.n).map((g) =>
    `<label class="check"><input type="checkbox" value="${esc(g.group)}"${shown.has(g.group) ? " checked" : ""}> ${esc(g.group)} (n = ${g.n})</label>`);
  list.innerHTML = '<div class="picker-actions"><button type="button" data-action="spread">spread by size</button></div>' + rows.join("");
}

// --- shrinkage -------------------------------------------------------------------------------

function renderShrinkage(st) {
  const box = $("plot-shrinkage"), fbox = $("plot-factor"), coefs = $("shrink-coefs");
  if (!st.shrinkage) {
    box.replaceChildren(el("p", { class: "sub empty", text: "The shrinkage view needs a model with one grouping factor." }));
    fbox.replaceChildren(); coefs.replaceChildren(); $("notes-shrinkage").textContent = "";
    return;
  }
  const names = Object.keys(st.shrinkage);
  if (!names.includes(S.shrinkCoef)) S.shrinkCoef = names[0];
  coefs.replaceChildren(...names.map((n) => el("label", {},
    el("input", { type: "radio", name: "shrink-coef", value: n, checked: n === S.shrinkCoef,
      onchange: () => { S.shrinkCoef = n; renderShrinkage(S.last); } }), " " + n)));
  const d = st.shrinkage[S.shrinkCoef], g = cols(d.frames.groups), meta = d.meta;
  const idx = g.group.map((_, i) => i).filter((i) => g.estimable[i]);
  const fixed = st.fit.fixef[S.shrinkCoef];
  const fs = fontScale();
  const height = 330 * fs;
  const { out, w, done } = svgBox(box, height);
  const left = 64 * fs, right = 120 * fs, top = 30 * fs, bottom = 46 * fs;
  const pw = w - left - right, ph = height - top - bottom;
  const ns = idx.map((i) => g.n[i]);
  const nmin = Math.min(...ns), nmax = Math.max(...ns);
  const logx = nmax / Math.max(nmin, 1) >= 5;
  const tr = (n) => (logx ? Math.log10(n) : n);
  const distinct = [...new Set(ns)].sort((a, b) => a - b);
  let xdom, band;
  if (distinct.length === 1) { xdom = [tr(nmin) - 0.5, tr(nmin) + 0.5]; band = 0.8; }
  else {
    const gaps = distinct.slice(1).map((v, i) => tr(v) - tr(distinct[i]));
    band = Math.min(...gaps) * 0.8;
    const span = tr(nmax) - tr(nmin);
    band = Math.min(band, span * 0.06);
    xdom = [tr(nmin) - span * 0.05 - band, tr(nmax) + span * 0.05 + band];
  }
  // groups of equal size side by side inside their band, in the order of their own estimates
  const pos = {};
  for (const n of distinct) {
    const same = idx.filter((i) => g.n[i] === n).sort((a, b) => g.no_pooling[a] - g.no_pooling[b]);
    same.forEach((i, k) => { pos[i] = tr(n) + (same.length === 1 ? 0 : (k / (same.length - 1) - 0.5) * band); });
  }
  const ydom = extent([...idx.map((i) => g.no_pooling[i]), ...idx.map((i) => g.partial_pooling[i]), fixed, meta.complete_pooling], 0.05);
  let xticks = null;
  if (logx) {
    xticks = [];
    for (const v of [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000]) if (Math.log10(v) >= xdom[0] && Math.log10(v) <= xdom[1]) xticks.push([Math.log10(v), String(v)]);
  } else if (distinct.length === 1) xticks = [[tr(nmin), String(nmin)]];
  // all groups of one size: the arrows stand side by side, ordered by the groups' own estimates
  const xlab = distinct.length === 1 ? `groups, all of size n = ${nmin}, ordered by their own estimate`
    : `group size n${logx ? " (log scale)" : ""}; groups of one size side by side`;
  if (distinct.length === 1) xticks = [];
  out.push(svm("defs", {}, svm("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse" },
    sv("path", { d: "M0,0L10,5L0,10z", fill: COLORS.partial }))));
  const fr = frame(out, { x: left, y: top, w: pw, h: ph, xdom, ydom, xticks, xlab, ylab: S.shrinkCoef });
  const refLine = (v, color, label, dy) => {
    if (!Number.isFinite(v)) return;
    out.push(sv("line", { x1: left, x2: left + pw, y1: fr.sy(v), y2: fr.sy(v), stroke: color, "stroke-dasharray": "6 4", "stroke-width": 1.5 }));
    out.push(sv("text", { x: left + pw + 6, y: fr.sy(v) + 4 + dy, class: "tick", fill: color }, label));
  };
  const cp = meta.complete_pooling === null ? NaN : meta.complete_pooling;
  const sep = Math.abs(fr.sy(fixed) - fr.sy(cp)) < 16 ? 8 : 0;
  refLine(cp, COLORS.complete, "complete pooling", fr.sy(cp) > fr.sy(fixed) ? sep : -sep);
  refLine(fixed, COLORS.partial, "fixed effect", fr.sy(fixed) >= fr.sy(cp) ? sep : -sep);
  for (const i of idx) {
    const x = fr.sx(pos[i]), y0 = fr.sy(g.no_pooling[i]), y1 = fr.sy(g.partial_pooling[i]);
    let a = sv("title", {}, `${g.group[i]}: n = ${g.n[i]}, own ${fmt(g.no_pooling[i])} → partial ${fmt(g.partial_pooling[i])} (λ = ${fmt(g.weight[i], 3)})`);
    // the arrow when it is long enough to show one; the partial-pooling estimate always
    if (Math.abs(y1 - y0) > 7) a += sv("line", { x1: x, x2: x, y1: y0, y2: y1 + (y1 > y0 ? -3 : 3), stroke: COLORS.partial, "stroke-width": 1.4, "marker-end": "url(#arrow)", opacity: 0.8 });
    a += sv("circle", { cx: x, cy: y1, r: 2.4, fill: COLORS.partial });
    a += sv("circle", { cx: x, cy: y0, r: 3.4, fill: "none", stroke: COLORS.none, "stroke-width": 1.6 });
    out.push(svm("g", { class: "arrow", "data-group": g.group[i] }, a));
  }
  out.push("</g>");
  out.push(svm("g", { class: "legend" },
    sv("circle", { cx: left + 6, cy: 14 * fs, r: 3.4, fill: "none", stroke: COLORS.none, "stroke-width": 1.6 }) +
    sv("text", { x: left + 16, y: 14 * fs + 4, class: "tick" }, "no pooling (the group's own estimate)") +
    sv("circle", { cx: left + 300 * fs, cy: 14 * fs, r: 2.6, fill: COLORS.partial }) +
    sv("text", { x: left + 310 * fs, y: 14 * fs + 4, class: "tick" }, "partial pooling (lmer), arrow: the shrinkage")));
  done();
  renderFactor(st, g, idx);
}

// the textbook shrinkage factor: lambda(n) = tau^2 / (tau^2 + sigma^2 / n)
function renderFactor(st, g, idx) {
  const fbox = $("plot-factor");
  const fs = fontScale();
  const height = 210 * fs;
  const { out, w, done } = svgBox(fbox, height);
  const left = 64 * fs, right = 120 * fs, top = 24 * fs, bottom = 44 * fs;
  const pw = w - left - right, ph = height - top - bottom;
  const group = st.shrinkage[S.shrinkCoef].meta.group;
  const block = st.fit.varcorr.find((b) => b.group === group);
  const ti = block ? block.terms.indexOf(S.shrinkCoef) : -1;
  const tau = ti >= 0 ? block.sd[ti] : NaN, sigma = st.fit.sigma;
  const nmax = Math.max(...idx.map((i) => g.n[i]), 2);
  const fr = frame(out, { x: left, y: top, w: pw, h: ph, xdom: [0, nmax * 1.05], ydom: [0, 1], xlab: "group size n", ylab: "λ", yn: 4 });
  const intercept = S.shrinkCoef === "(Intercept)";
  if (intercept && Number.isFinite(tau)) {
    const xs = [], ys = [];
    for (let k = 0; k <= 120; k++) { const n = 0.5 + (nmax * 1.05 - 0.5) * k / 120; xs.push(n); ys.push(tau * tau / (tau * tau + sigma * sigma / n)); }
    out.push(sv("path", { d: path(xs, ys, fr.sx, fr.sy), class: "line", stroke: COLORS.complete, "stroke-width": 2, fill: "none", "stroke-dasharray": "5 3" }));
    out.push(sv("text", { x: left + pw + 6, y: fr.sy(ys[ys.length - 1]) + 4, class: "tick" }, "τ²/(τ²+σ²/n)"));
  }
  out.push(sv("path", { d: dots(idx.map((i) => fr.sx(g.n[i])), idx.map((i) => fr.sy(g.weight[i])), 3), fill: COLORS.partial, opacity: 0.8, class: "lambda" }));
  out.push("</g>");
  done();
  const note = $("notes-shrinkage");
  if (intercept && Number.isFinite(tau)) {
    const n0 = Math.round(idx.map((i) => g.n[i]).sort((a, b) => a - b)[Math.floor(idx.length / 2)] || 1);
    const lam = tau * tau / (tau * tau + sigma * sigma / n0);
    note.replaceChildren(el("span", { class: "formula" }, "λ", el("sub", { text: "j" }), " = τ₀² / (τ₀² + σ²/n", el("sub", { text: "j" }), ")"),
      ` the share of its own estimate a group keeps: partial ≈ λ·own + (1 − λ)·fixed. Here τ₀ = ${fmt(tau, 3)}, σ = ${fmt(sigma, 3)}: a group of n = ${n0} keeps λ = ${fmt(lam, 3)}.` +
      (block.terms.length > 1 ? " Dots: each group's factor from the fit (1 − condVar/τ²), which the curve (random-intercept model) approximates." : " Dots: each group's factor."));
  } else {
    note.textContent = `For a slope the factor depends on how much x varies inside the group: the dots are 1 − condVar/τ² of each group (${S.shrinkCoef}).`;
  }
}

// --- caterpillar --------------------------------------------------------------------------------

function renderCaterpillar(st) {
  const box = $("plot-caterpillar");
  const c = st.caterpillar;
  $("cat-groups").replaceChildren();
  if (!c) { box.replaceChildren(); return; }
  const d = cols(c.frames.intervals), meta = c.meta;
  const terms = meta.terms;
  const fs = fontScale();
  const L = meta.n_levels;
  const labels = L <= 40;
  const bottom = (labels ? 64 : 40) * fs, top = 28 * fs, left = 64 * fs, right = 14, ph = 170 * fs, gap = 40 * fs;
  const height = top + terms.length * ph + (terms.length - 1) * gap + bottom;
  const { out, w, done } = svgBox(box, height);
  const pw = w - left - right;
  // the rows of each term (the payload lists them term by term, each in rank order)
  const rowsOf = {};
  d.term.forEach((t, i) => { (rowsOf[t] ||= []).push(i); });
  const thin = L > 100;
  terms.forEach((t, ti) => {
    const rows = rowsOf[t] || [];
    const ydom = extent([...rows.map((i) => d.lower[i]), ...rows.map((i) => d.upper[i]), 0], 0.05);
    const y0 = top + ti * (ph + gap);
    const last = ti === terms.length - 1;
    const fr = frame(out, { x: left, y: y0, w: pw, h: ph, xdom: [-0.7, L - 0.3], ydom, xaxis: "none", ylab: t, title: `${t} | ${meta.group}` });
    out.push(sv("line", { x1: left, x2: left + pw, y1: fr.sy(0), y2: fr.sy(0), stroke: "#888", "stroke-width": 1 }));
    for (const i of rows) {
      const x = fr.sx(d.rank[i]);
      // the interval and the mode as one path (a stroked segment and a filled dot): one
      // element per group and term besides its tooltip
      const r = thin ? 1.8 : 3, xm = px(x), ym = px(fr.sy(d.condval[i]));
      out.push(svm("g", { class: "cat", "data-group": d.grp[i] },
        sv("title", {}, `${d.grp[i]}: ${fmt(d.condval[i])} [${fmt(d.lower[i])}, ${fmt(d.upper[i])}]`) +
        sv("path", { d: `M${xm},${px(fr.sy(d.lower[i]))}V${px(fr.sy(d.upper[i]))}M${px(x - r)},${ym}a${r},${r} 0 1,0 ${2 * r},0a${r},${r} 0 1,0 ${-2 * r},0`,
          stroke: COLORS.partial, "stroke-width": thin ? 1 : 1.6, "stroke-opacity": 0.7, fill: COLORS.partial })));
      if (labels && last) out.push(sv("text", { x: 0, y: 0, class: "tick small", "text-anchor": "end", transform: `translate(${px(x + 3)},${px(y0 + ph + 8)}) rotate(-60)` }, d.grp[i]));
    }
    out.push("</g>");
  });
  out.push(sv("text", { x: left + pw / 2, y: height - 6, class: "axis-label", "text-anchor": "middle" },
    `${meta.group} (${L} levels), ordered by the conditional mode of ${terms[0]}`));
  done();
  if (Object.keys(st.fit.ngroups).length > 1) $("cat-groups").append(el("span", { class: "sub", text: `showing ${meta.group}; the other grouping factors are in the summary` }));
}

// --- variance components and ICC -------------------------------------------------------------

function renderVariance(st) {
  const f = st.fit;
  const t = el("table", { class: "varcorr" }, el("thead", {}, el("tr", {},
    ...["Groups", "Name", "Variance", "Std.Dev.", "Corr"].map((h) => el("th", { text: h })))));
  const tb = el("tbody");
  for (const b of f.varcorr) {
    b.terms.forEach((term, i) => {
      // an undefined correlation (a zero SD) is NaN, as lme4 prints it
      const corr = i === 0 ? "" : b.corr[i].slice(0, i).map((v) => (v === null ? "NaN" : v.toFixed(2))).join(" ");
      tb.append(el("tr", {}, el("td", { text: i === 0 ? b.group : "" }), el("td", { text: term }),
        el("td", { class: "num", text: fmt(b.sd[i] ** 2) }), el("td", { class: "num", text: fmt(b.sd[i]) }), el("td", { class: "num", text: corr })));
    });
  }
  tb.append(el("tr", {}, el("td", { text: "Residual" }), el("td"), el("td", { class: "num", text: fmt(f.sigma ** 2) }), el("td", { class: "num", text: fmt(f.sigma) }), el("td")));
  t.append(tb);
  const parts = [t];
  // variance shares of the intercepts and the residual (at x = 0 when there are slopes)
  const icpt = f.varcorr.filter((b) => b.terms[0] === "(Intercept)").map((b) => [b.group, b.sd[0] ** 2]);
  const total = icpt.reduce((a, [, v]) => a + v, 0) + f.sigma ** 2;
  if (icpt.length) {
    const bar = el("div", { class: "share-bar" });
    const palette = ["#1f5fbf", "#7b3294", "#008837", "#c2a5cf"];
    icpt.forEach(([g, v], i) => bar.append(el("div", { style: `width:${(100 * v / total).toFixed(2)}%;background:${palette[i % 4]}`, title: `${g}: ${fmt(100 * v / total, 3)}%` },
      v / total > 0.12 ? `${g} ${fmt(100 * v / total, 3)}%` : "")));
    const rs = f.sigma ** 2 / total;
    bar.append(el("div", { class: "resid", style: `width:${(100 * rs).toFixed(2)}%`, title: `residual: ${fmt(100 * rs, 3)}%` }, rs > 0.12 ? `residual ${fmt(100 * rs, 3)}%` : ""));
    const slopes = f.varcorr.some((b) => b.terms.length > 1);
    const xname = st.pooling && st.pooling.meta.x ? st.pooling.meta.x : "the slope variables";
    parts.push(el("h3", { text: "Share of the variance" + (slopes ? ` (intercepts and residual, at ${xname} = 0)` : "") }), bar);
  }
  if (st.icc) {
    parts.push(el("dl", { class: "icc" },
      el("dt", { text: "adjusted ICC" }), el("dd", { class: "num", text: fmt(st.icc.adjusted, 3) }),
      el("dd", { class: "sub", text: "random-effect variance / (random-effect + residual variance); in a random-intercept model, the correlation of two observations of one group" }),
      el("dt", { text: "conditional ICC" }), el("dd", { class: "num", text: fmt(st.icc.conditional, 3) }),
      el("dd", { class: "sub", text: "the same share of the total variance, fixed effects' variance included" })));
  } else parts.push(el("p", { class: "sub", text: "ICC: " + (st.notes.find((n) => n.startsWith("ICC")) || "not available") }));
  $("variance").replaceChildren(...parts);
}

// --- pinned models and their comparison ------------------------------------------------------

function pinModel() {
  if (!S.last) return;
  if (S.pins.some((p) => p.formula === S.formula && p.reml === S.reml)) { setStatus("this model is pinned already", "warn"); return; }
  if (S.pins.length >= 8) { setStatus("at most 8 pinned models", "warn"); return; }
  S.pins.push({ name: `M${++S.pinCount}`, formula: S.formula, reml: S.reml });
  refreshCompare();
}

function renderPins() {
  const box = $("pins");
  if (!S.pins.length) { box.replaceChildren(el("p", { class: "sub", text: "Pin models with “Pin model” to compare them here." })); return; }
  box.replaceChildren(el("ul", { class: "pins" }, S.pins.map((p, i) => el("li", {},
    el("b", { text: p.name }), " ", el("code", { text: p.formula }), p.reml ? "" : " (ML)",
    el("button", { type: "button", class: "remove", title: `unpin ${p.name}`, text: "×",
      onclick: () => { S.pins.splice(i, 1); refreshCompare(); } })))));
}

async function refreshCompare() {
  renderPins();
  const box = $("compare");
  const seq = S.compareSeq = (S.compareSeq || 0) + 1;
  if (!S.pins.length) { box.replaceChildren(); return; }
  const res = await api("/api/compare", { data: dataSpec(), models: S.pins });
  if (seq !== S.compareSeq) return; // a newer comparison (another pin, another refit) is coming
  if (!res.ok) { box.replaceChildren(el("pre", { class: "error", text: res.error })); return; }
  const head = el("tr", {}, el("th"), ...res.names.map((n) => el("th", { text: n })));
  const body = el("tbody");
  for (const r of res.table) {
    if (r.kind === "section") body.append(el("tr", { class: "section" }, el("td", { colspan: res.names.length + 1, text: r.label })));
    else body.append(el("tr", { class: r.kind }, el("td", { text: r.label }), ...r.cells.map((c) => el("td", { class: "num", text: c }))));
  }
  const parts = [el("table", { class: "compare", id: "compare-table" }, el("thead", {}, head), body),
    el("p", { class: "sub", text: res.notes.join(" · ") })];
  if (res.lrt) {
    const cols_ = res.lrt.columns;
    const lt = el("table", { class: "compare lrt", id: "lrt-table" }, el("thead", {}, el("tr", {}, el("th", { text: "model" }), ...cols_.map((c) => el("th", { text: c })))));
    const lb = el("tbody");
    for (const row of res.lrt.rows) {
      lb.append(el("tr", { "data-model": row.name }, el("td", { text: row.name }), ...row.values.map((v, j) => el("td", { class: "num",
        text: v === null ? "" : cols_[j].startsWith("Pr(") ? fmtP(v) : Number.isInteger(v) ? String(v) : fmt(v, 6) }))));
    }
    lt.append(lb);
    parts.push(el("h3", { text: "Likelihood-ratio tests (lme4's anova: REML fits refitted by ML)" }), lt);
  } else if (res.lrt_error) parts.push(el("p", { class: "sub", text: `Likelihood-ratio tests: ${res.lrt_error}` }));
  box.replaceChildren(...parts);
}

// --- power -----------------------------------------------------------------------------------------

function markPowerStale() {
  const t = $("power-table");
  if (t.childElementCount) $("notes-power").textContent = "The sliders changed since this run: press Run again.";
}

async function runPower() {
  const along = $("power-along").value || null;
  const values = along ? $("power-values").value.split(/[ ,;]+/).filter(Boolean).map(Number) : null;
  $("power-run").disabled = true;
  setStatus("simulating…", "busy");
  const t0 = performance.now();
  const res = await api("/api/power", { data: dataSpec(), test: $("power-test").value, nsim: Number($("power-nsim").value), along, values });
  $("power-run").disabled = false;
  if (!res.ok) { $("power-table").replaceChildren(el("pre", { class: "error", text: res.error })); setStatus("power: not run", "bad"); return; }
  setStatus(`power: ${res.nsim} simulations per design in ${fmt((performance.now() - t0) / 1000, 2)} s`, "good");
  const d = res.designs;
  const xs = along ? res.values : [S.sim.n_groups];
  const fs = fontScale();
  const { out, w, done } = svgBox($("plot-power"), 260 * fs);
  const left = 64 * fs, top = 20 * fs, bottom = 46 * fs;
  const fr = frame(out, { x: left, y: top, w: w - left - 20, h: 260 * fs - top - bottom, xdom: extent(xs, 0.08), ydom: [0, 1],
    xlab: along === "group_size" ? "rows per group n" : "groups J", ylab: "power", yn: 5 });
  out.push(sv("line", { x1: left, x2: w - 20, y1: fr.sy(0.8), y2: fr.sy(0.8), stroke: "#888", "stroke-dasharray": "5 4" }));
  out.push(sv("path", { d: path(xs, d.map((r) => r.power), fr.sx, fr.sy), stroke: COLORS.partial, "stroke-width": 2, fill: "none" }));
  d.forEach((r, i) => {
    out.push(sv("line", { x1: fr.sx(xs[i]), x2: fr.sx(xs[i]), y1: fr.sy(r.lower), y2: fr.sy(r.upper), stroke: COLORS.partial, "stroke-width": 1.5 }));
    out.push(sv("circle", { cx: fr.sx(xs[i]), cy: fr.sy(r.power), r: 4, fill: COLORS.partial }));
  });
  out.push("</g>");
  done();
  const t = el("table", { class: "compare" }, el("thead", {}, el("tr", {}, ...[along ? along.replace("_", " ") : "design", "rows", "power", "95% interval", "failed", "singular"].map((h) => el("th", { text: h })))));
  const tb = el("tbody");
  d.forEach((r, i) => tb.append(el("tr", {}, el("td", { class: "num", text: String(xs[i]) }), el("td", { class: "num", text: String(r.nobs) }),
    el("td", { class: "num", text: r.power.toFixed(3) }), el("td", { class: "num", text: `${r.lower.toFixed(3)} – ${r.upper.toFixed(3)}` }),
    el("td", { class: "num", text: String(r.failed) }), el("td", { class: "num", text: String(r.singular ?? 0) }))));
  t.append(tb);
  $("power-table").replaceChildren(t);
  $("notes-power").textContent = [`model ${res.design_formula}, ${res.method} test of ${res.test} at α = ${res.alpha}`, ...res.notes].join(" · ");
}

// --- downloads -----------------------------------------------------------------------------------

async function download(path, body, what) {
  setStatus(`${what}…`, "busy");
  const res = await api(path, body);
  if (!res.ok || !res.blob) { setStatus(`${what}: ${res.error || "failed"}`, "bad"); return; }
  const url = URL.createObjectURL(res.blob);
  const a = el("a", { href: url, download: res.filename || "download" });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
  setStatus(`${what}: saved ${res.filename}`, "good");
  window.mlLastDownload = res.filename;
}

// ---------------------------------------------------------------------------------------------
// wiring
// ---------------------------------------------------------------------------------------------

function wire() {
  ["m-outcome", "m-x", "m-group", "m-slope"].forEach((id) => $(id).addEventListener("change", onBuilderChange));
  $("m-level2").addEventListener("change", onBuilderChange);
  const fit = () => { const t0 = performance.now(); S.formula = $("formula").value.trim(); S.picked = []; syncBuilder(S.formula); simGuard(); refit(t0, "formula"); };
  // Enter fits (a formula is one line; the box wraps long ones)
  $("formula").addEventListener("keydown", (e) => { if (e.key === "Enter") { e.preventDefault(); fit(); } });
  $("fit").addEventListener("click", fit);
  document.querySelectorAll("input[name=reml]").forEach((r) => r.addEventListener("change", () => { S.reml = r.value === "reml"; refit(performance.now(), "reml"); }));
  $("pool-toggles").addEventListener("change", (e) => { S.show[e.target.value] = e.target.checked; if (S.last) renderPooling(S.last); });
  document.querySelectorAll("input[name=layout]").forEach((r) => r.addEventListener("change", () => { S.layout = r.value; if (S.last) renderPooling(S.last); }));
  // the group picker's rows are redrawn with each answer: their events are taken here
  $("group-list").addEventListener("click", (e) => {
    if (e.target.closest("button[data-action=spread]")) { S.picked = []; refit(performance.now(), "groups"); }
  });
  $("group-list").addEventListener("change", (e) => {
    if (e.target.tagName !== "INPUT") return;
    S.picked = [...$("group-list").querySelectorAll("input:checked")].map((c) => c.value).slice(0, 30);
    if (S.picked.length) refit(performance.now(), "groups");
  });
  const gc = $("groups-count");
  gc.addEventListener("input", () => { $("groups-count-out").textContent = gc.value; });
  gc.addEventListener("change", () => { const t0 = performance.now(); S.groupsCount = Number(gc.value); S.picked = []; refit(t0, "slider groups"); });
  $("pin").addEventListener("click", pinModel);
  $("save-report").addEventListener("click", () => download("/api/report",
    S.pins.length ? { data: dataSpec(), models: S.pins } : { data: dataSpec(), formula: S.formula, reml: S.reml }, "report"));
  $("download-data").addEventListener("click", () => download("/api/export", { data: dataSpec() }, "data"));
  $("power-run").addEventListener("click", runPower);
  $("power-along").addEventListener("change", () => { $("power-values").disabled = !$("power-along").value; });
  $("bigger").addEventListener("click", () => {
    const on = document.body.classList.toggle("big");
    $("bigger").setAttribute("aria-pressed", String(on));
    if (S.last) render(S.last);
  });
  document.querySelectorAll(".enlarge").forEach((b) => b.addEventListener("click", () => {
    const card = b.closest(".card");
    const on = !card.classList.contains("focus");
    document.querySelectorAll(".card.focus").forEach((c) => c.classList.remove("focus"));
    card.classList.toggle("focus", on);
    $("views").classList.toggle("focused", on);
    if (S.last) render(S.last);
    card.scrollIntoView({ block: "start" });
  }));
  document.querySelectorAll(".copy").forEach((b) => b.addEventListener("click", async () => {
    try { await navigator.clipboard.writeText($(b.dataset.target).textContent); b.textContent = "copied"; }
    catch (e) { b.textContent = "select and copy"; }
    setTimeout(() => { b.textContent = "copy"; }, 1500);
  }));
  let timer = null;
  window.addEventListener("resize", () => { clearTimeout(timer); timer = setTimeout(() => { if (S.last) render(S.last); }, 150); });
}

wire();
init().then(() => { window.mlReady = true; });
