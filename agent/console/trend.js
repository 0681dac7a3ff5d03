// plantwatch console: the trend view. A tag's trend (GET /trend?tag=) with its alarm limits as bands,
// or a model's statistics against their limits (GET /trend?model=), drawn as SVG; no library.
// Opened from a row of the tag table, from the trend button of an alarm row, or by name.
"use strict";

Object.assign(WORDS.zh, {trend: "趋势", trend_tag: "测点", trend_model: "模型", trend_show: "显示", trend_last: "最近",
  trend_from: "从", trend_to: "到", trend_none: "—", no_points: "该时段无数据", points: "点", resolution: "分辨率",
  from_history: "历史库", from_ring: "内存", unknown_tag: "未知测点", unknown_model: "未知模型",
  beyond_ring: "超出内存趋势范围，且未启用历史库", bad_range: "时间范围无效", no_series: "请输入测点或选择模型",
  history_unreadable: "历史库无法读取", history_busy: "历史库正忙，请稍后再试", stopping: "网关正在停止", trend_failed: "趋势请求失败", stat_limit: "限值", ring_partial: "更早的数据未保存（未启用历史库）"});
Object.assign(WORDS.en, {trend: "Trend", trend_tag: "Tag", trend_model: "Model", trend_show: "Show", trend_last: "last",
  trend_from: "from", trend_to: "to", trend_none: "—", no_points: "no samples in this range", points: "points",
  resolution: "resolution", from_history: "history", from_ring: "memory", unknown_tag: "unknown tag",
  unknown_model: "unknown model", beyond_ring: "beyond the in-memory trend, and no history is kept",
  bad_range: "bad time range", no_series: "enter a tag or choose a model", history_unreadable: "history unreadable",
  history_busy: "the history is busy, try again in a moment", stopping: "the agent is stopping", trend_failed: "trend request failed", stat_limit: "limit", ring_partial: "older samples are not kept (no history)"});

const TR = {what: null, models: [], timer: null, doc: null, columns: null, names: new Set()};
const SVGNS = "http://www.w3.org/2000/svg";
const W = 1000, H = 320, M = {l: 64, r: 16, t: 12, b: 28};
const BAND = {HH: "band-hh", H: "band-h", L: "band-l", LL: "band-ll"};

function svg(tag, attrs, text) {
  const e = document.createElementNS(SVGNS, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

function showView(name) {
  document.querySelector(`nav button[data-view="${name}"]`).click();
}

function openTrend(what) {  // {tag: NAME} or {model: NAME}
  TR.what = what;
  $("trend-tag").value = what.tag || "";
  $("trend-model").value = what.model || "";
  showView("trend");
  loadTrend();
}

function query() {
  const p = new URLSearchParams(TR.what);
  const from = $("trend-from").value.trim(), to = $("trend-to").value.trim();
  if (from) { p.set("from", from); if (to) p.set("to", to); } else p.set("seconds", $("trend-range").value);
  return "/trend?" + p.toString();
}

async function loadTrend() {
  clearInterval(TR.timer);
  if (!TR.what) return;
  const msg = $("trend-msg");
  let r, doc;
  try {
    r = await fetch(query(), {cache: "no-store", credentials: S.mode === "session" ? "same-origin" : "omit"});
    doc = await r.json().catch(() => ({}));
  } catch (e) {
    msg.className = "err"; msg.textContent = t("trend_failed") + ": " + e; return;
  }
  if (!r.ok) {
    TR.doc = null;
    $("trend-charts").replaceChildren();
    $("trend-info").textContent = "";
    msg.className = "err";
    msg.dataset.code = doc.code || "";
    msg.textContent = r.status + " " + (doc.code ? t(doc.code) : t("trend_failed")) + ": " + (doc.error || r.statusText);
    return;
  }
  TR.doc = doc;
  msg.className = ""; msg.dataset.code = ""; msg.textContent = "";
  drawTrend();
  // a relative range follows the present: every 5 s for the last 15 min, less often for longer ones
  const every = Math.max(5, (doc.to - doc.from) / 360) * 1000;
  if (!$("trend-from").value.trim() && !$("view-trend").hidden) TR.timer = setInterval(loadTrend, every);
}

function drawTrend() {
  const doc = TR.doc, box = $("trend-charts");
  box.replaceChildren();
  if (!doc) return;
  if (doc.tag !== undefined) {
    const n = doc.points.length;
    $("trend-info").textContent = `${doc.tag} ${doc.desc || ""} [${doc.unit || ""}] · ${n} ${t("points")} · ` +
      `${t("resolution")} ${fmt(doc.resolution_s)} s · ` + doc.sources.map((s) => t("from_" + s.source)).join(" + ");
    box.append(panel(doc.tag, doc.points, doc.limits, null, start(doc), doc.to, doc.unit));
    if (!n) note(box, t("no_points"));
    else if (!doc.history && doc.ring_from && doc.from < doc.ring_from - doc.resolution_s) note(box, t("ring_partial"));
  } else {
    $("trend-info").textContent = `${doc.model} (${doc.kind}) · ${t("resolution")} ${fmt(doc.resolution_s)} s`;
    const stats = Object.entries(doc.statistics);
    for (const [name, s] of stats) box.append(panel(name === "T2" ? "T²" : name, s.points, {}, s.limit, start(doc), doc.to, ""));
    if (!stats.length) note(box, t("no_points"));
  }
}

function start(doc) {  // where the chart begins: what was asked, or where the kept samples begin
  const kept = doc.tag === undefined || !doc.history ? doc.ring_from : null;
  return kept && kept > doc.from ? Math.max(doc.from, kept - 2 * doc.resolution_s) : doc.from;
}

function note(box, text) {
  box.append(el("p", text, "trend-note"));
}

function extent(points, limits, limitLine) {
  let lo = Infinity, hi = -Infinity;
  for (const p of points) { lo = Math.min(lo, p[1]); hi = Math.max(hi, p[2]); }
  for (const v of Object.values(limits)) { lo = Math.min(lo, v); hi = Math.max(hi, v); }
  for (const p of limitLine || []) { lo = Math.min(lo, p[1]); hi = Math.max(hi, p[1]); }
  if (!isFinite(lo)) { lo = 0; hi = 1; }
  const pad = (hi - lo) * 0.08 || Math.abs(hi) * 0.1 || 1;
  return [lo - pad, hi + pad];
}

// one chart: the min-max envelope of each bucket, a line through the last values (a dot per bucket,
// its value in data-v), the alarm limits as bands, or a statistic's limit as a line
function panel(title, points, limits, limitLine, t0, t1, unit) {
  const [lo, hi] = extent(points, limits, limitLine);
  if (points.length) t1 = Math.max(t1, points[points.length - 1][0]);  // the bucket still filling: its middle
  const x = (ts) => M.l + (ts - t0) / (t1 - t0) * (W - M.l - M.r);
  const y = (v) => M.t + (hi - v) / (hi - lo) * (H - M.t - M.b);
  const s = svg("svg", {viewBox: `0 0 ${W} ${H}`, class: "trend", "data-title": title});
  const clip = (v) => Math.min(Math.max(v, lo), hi);
  for (const [level, v] of Object.entries(limits)) {  // HH/H bands reach up, L/LL down, to the next limit
    const up = level.startsWith("H"), next = up ? (level === "H" && limits.HH !== undefined ? limits.HH : hi)
      : (level === "L" && limits.LL !== undefined ? limits.LL : lo);
    const a = y(clip(v)), b = y(clip(next));
    s.append(svg("rect", {x: M.l, width: W - M.l - M.r, y: Math.min(a, b), height: Math.abs(a - b),
      class: "band " + (BAND[level] || "band-h")}));
    s.append(svg("line", {x1: M.l, x2: W - M.r, y1: a, y2: a, class: "limit", "data-level": level, "data-v": v}));
    s.append(svg("text", {x: W - M.r - 4, y: a - 3, "text-anchor": "end", class: "lbl"}, `${level} ${fmt(v)}`));
  }
  axes(s, lo, hi, t0, t1, x, y, unit);
  if (points.length) {
    const env = points.map((p) => `${x(p[0])},${y(p[2])}`).concat(points.slice().reverse().map((p) => `${x(p[0])},${y(p[1])}`));
    s.append(svg("polygon", {points: env.join(" "), class: "envelope"}));
    s.append(svg("polyline", {points: points.map((p) => `${x(p[0])},${y(p[3])}`).join(" "), class: "line"}));
    const dots = svg("g", {class: "dots"});
    for (const p of points) dots.append(svg("circle", {cx: x(p[0]), cy: y(p[3]), r: 2, "data-t": p[0], "data-v": p[3]}));
    s.append(dots);
  }
  if (limitLine && limitLine.length) {  // across the chart: the limit of the first bucket before it, the last after
    const last = limitLine[limitLine.length - 1][1];
    const pts = [`${M.l},${y(limitLine[0][1])}`, ...limitLine.map((p) => `${x(p[0])},${y(p[1])}`), `${W - M.r},${y(last)}`];
    s.append(svg("polyline", {points: pts.join(" "), class: "limit", "data-v": last}));
    s.append(svg("text", {x: W - M.r - 4, y: y(last) - 3, "text-anchor": "end", class: "lbl"}, `${t("stat_limit")} ${fmt(last)}`));
  }
  s.append(svg("text", {x: M.l + 6, y: M.t + 14, class: "title"}, title));
  return s;
}

function axes(s, lo, hi, t0, t1, x, y, unit) {
  s.append(svg("rect", {x: M.l, y: M.t, width: W - M.l - M.r, height: H - M.t - M.b, class: "frame"}));
  for (let i = 0; i <= 4; i++) {
    const v = lo + (hi - lo) * i / 4;
    s.append(svg("text", {x: M.l - 6, y: y(v) + 4, "text-anchor": "end", class: "tick"}, fmt(Number(v.toPrecision(4)))));
  }
  for (let i = 0; i <= 6; i++) {
    const ts = t0 + (t1 - t0) * i / 6;
    const opts = t1 - t0 < 900 ? {hour: "2-digit", minute: "2-digit", second: "2-digit"} : {hour: "2-digit", minute: "2-digit"};
    const label = new Date(ts * 1000).toLocaleTimeString([], opts);
    s.append(svg("text", {x: x(ts), y: H - 8, "text-anchor": i === 6 ? "end" : i ? "middle" : "start", class: "tick"}, label));
  }
  if (unit) s.append(svg("text", {x: 4, y: M.t + 10, class: "tick"}, unit));
}

async function loadModels() {
  try {
    const r = await fetch("/trend/models", {cache: "no-store", credentials: S.mode === "session" ? "same-origin" : "omit"});
    TR.models = (await r.json()).models || [];
  } catch (e) {
    TR.models = [];
  }
  const sel = $("trend-model");
  sel.replaceChildren(el("option", t("trend_none")));
  sel.firstChild.value = "";
  for (const m of TR.models) { const o = el("option", `${m.name} (${m.kind})`); o.value = m.name; sel.append(o); }
}

function modelOf(a) {
  return TR.models.find((m) => a.id === m.name + "/" + m.kind);
}

function trendButton(a) {  // for the alarm table: a button to the trend of a tag's or a model's alarm
  if (TR.columns !== S.columns) { TR.columns = S.columns; TR.names = new Set(S.columns.map((c) => c[0])); }
  if (!modelOf(a) && !TR.names.has(a.tag)) return null;
  const b = el("button", t("trend"), "trend-btn");
  b.dataset.alarm = a.id;
  return b;
}

function alarmTrend(id) {  // a model's alarm (id MODEL/KIND) opens its statistics, any other its tag
  const a = S.alarms.find((x) => x.id === id);
  if (!a) return;
  const model = modelOf(a);
  openTrend(model ? {model: model.name} : {tag: a.tag});
}

function initTrend() {
  const list = $("trend-tags");
  $("trend-tag").addEventListener("focus", () => {  // the tag names, offered as the engineer types
    if (list.childElementCount !== S.columns.length) list.replaceChildren(...S.columns.map((c) => { const o = el("option"); o.value = c[0]; return o; }));
  });
  $("trend-show").addEventListener("click", () => {
    const tag = $("trend-tag").value.trim(), model = $("trend-model").value;
    TR.what = tag ? {tag} : model ? {model} : {};
    loadTrend();
  });
  $("trend-model").addEventListener("change", () => { if ($("trend-model").value) { $("trend-tag").value = ""; $("trend-show").click(); } });
  $("trend-range").addEventListener("change", loadTrend);
  $("tag-rows").addEventListener("click", (e) => { const r = e.target.closest(".tagrow"); if (r) openTrend({tag: r.dataset.tag}); });
  $("alarms").addEventListener("click", (e) => {
    const b = e.target.closest(".trend-btn");
    if (b) { e.stopPropagation(); alarmTrend(b.dataset.alarm); }
  });
  $("lang").addEventListener("click", drawTrend);
  for (const b of document.querySelectorAll("nav button")) b.addEventListener("click", () => { if (b.dataset.view !== "trend") clearInterval(TR.timer); });
  window.plantwatchTrend = {open: openTrend, state: TR};
  loadModels();
}

document.addEventListener("DOMContentLoaded", initTrend);
