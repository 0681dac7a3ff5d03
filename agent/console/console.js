// plantwatch console: no build step, no library. Live data from GET /events (server-sent events);
// operator actions POST to /alarms/{id}/{op} with the bearer token kept in sessionStorage (loopback)
// or, on the LAN console (HTTPS), with the session cookie and its CSRF token after a login.
"use strict";

const WORDS = {
  zh: {alarms: "报警", devices: "设备", tags: "测点", system: "系统", offline: "离线", live: "在线",
    sign_in: "登录", sign_out: "退出", token_hint: "操作令牌 token", selected: "已选报警", minutes: "分钟",
    comment: "备注", ack: "确认", shelve: "搁置", unshelve: "取消搁置", token_required: "需要令牌 token required",
    priority: "优先级", state: "状态", alarm: "报警", text: "描述", value: "值", limit: "限值", time_active: "持续时间",
    flags: "标志", no_alarms: "无报警", device: "设备", comm: "通讯", since: "起始", error: "错误", search: "搜索",
    tag: "测点", unit: "单位", quality: "质量", last_change: "最后变化", kpis: "报警系统指标", uplinks: "上行链路",
    uplink: "链路", transport: "传输", connected: "已连接", sent: "已发送", dead_letters: "死信", outbox_depth: "发件箱积压",
    all: "全部", not_good: "非正常质量", select_alarm: "请先选择一条报警", shelved: "已搁置", suppressed: "已抑制",
    out_of_service: "停用", chattering: "振荡", done: "完成", yes: "是", no: "否", read_only: "只读",
    UNACK_ACTIVE: "未确认·激活", ACKED_ACTIVE: "已确认·激活", RTN_UNACK: "已恢复·未确认", NORMAL: "正常",
    OK: "正常", COMM_FAIL: "通讯故障", STARTING: "启动中", active: "激活", unacked: "未确认", stale: "陈旧报警",
    flood: "报警泛滥", floods: "泛滥次数", new_in_window: "窗口内新报警", commands_applied: "已执行命令",
    commands_rejected: "已拒绝命令", login_title: "登录控制台", user: "用户名", password: "密码",
    or_token: "或操作令牌", session_expired: "会话已过期，请重新登录", rate: "实际采集频率", reads: "读取次数",
    errors: "错误次数", latency: "上次读取耗时", oldest_unsent: "最早未发送", none_unsent: "无（全部已发送）",
    age: "已等待", every: "设定周期"},
  en: {alarms: "Alarms", devices: "Devices", tags: "Tags", system: "System", offline: "offline", live: "live",
    sign_in: "Sign in", sign_out: "Sign out", token_hint: "operator token", selected: "Selected", minutes: "min",
    comment: "comment", ack: "Acknowledge", shelve: "Shelve", unshelve: "Unshelve", token_required: "token required",
    priority: "Priority", state: "State", alarm: "Alarm", text: "Text", value: "Value", limit: "Limit",
    time_active: "Time active", flags: "Flags", no_alarms: "No alarms", device: "Device", comm: "Comm", since: "Since",
    error: "Error", search: "search", tag: "Tag", unit: "Unit", quality: "Quality", last_change: "Last change",
    kpis: "Alarm-system KPIs", uplinks: "Uplinks", uplink: "Uplink", transport: "Transport", connected: "Connected",
    sent: "Sent", dead_letters: "Dead letters", outbox_depth: "Outbox depth", all: "all", not_good: "not good",
    select_alarm: "select an alarm first", shelved: "shelved", suppressed: "suppressed", out_of_service: "out of service",
    chattering: "chattering", done: "done", yes: "yes", no: "no", read_only: "read-only",
    UNACK_ACTIVE: "UNACK ACTIVE", ACKED_ACTIVE: "ACKED ACTIVE", RTN_UNACK: "RTN UNACK", NORMAL: "NORMAL",
    OK: "OK", COMM_FAIL: "COMM_FAIL", STARTING: "STARTING", login_title: "Sign in to the console", user: "User",
    password: "Password", or_token: "or operator token", session_expired: "session expired: sign in again",
    rate: "Rate achieved", reads: "Reads", errors: "Errors", latency: "Last read latency",
    oldest_unsent: "Oldest unsent", none_unsent: "none (all sent)", age: "waiting", every: "set"},
};
const ROW_H = 24;
const S = {lang: localStorage.getItem("pw-lang") || "zh", alarms: [], devices: {}, kpis: {}, uplinks: {}, outbox: {},
  columns: [], qualities: [], v: new Float64Array(0), q: new Uint8Array(0), c: new Float64Array(0), shown: [], selected: null, arrived: {}, mode: "token", user: null, csrf: null,
  stats: {frames: 0, ms: 0, max: 0, chars: 0, loaded: null}};  // the cost of the live updates in this page
window.plantwatch = S;  // the page's state, for whoever inspects it (the browser tests do)
const $ = (id) => document.getElementById(id);
const t = (k) => WORDS[S.lang][k] ?? k;
const token = () => S.mode === "session" ? S.csrf || "" : sessionStorage.getItem("pw-token") || "";

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}

function isaState(a) {  // ISA-18.2 alarm states
  if (a.active) return a.acked ? "ACKED_ACTIVE" : "UNACK_ACTIVE";
  return a.acked ? "NORMAL" : "RTN_UNACK";
}

function since(iso) {
  if (!iso) return "";
  let s = Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 1000));
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60);
  s %= 60;
  return (h ? h + "h " : "") + (h || m ? m + "m " : "") + s + "s";
}

function fmt(v) {
  if (v === null || v === undefined) return "—";
  return typeof v === "number" ? String(Math.round(v * 1000) / 1000) : String(v);
}

function renderAlarms() {
  const body = $("alarms");
  body.replaceChildren();
  const order = {UNACK_ACTIVE: 0, ACKED_ACTIVE: 1, RTN_UNACK: 2, NORMAL: 3};
  const list = [...S.alarms].sort((a, b) => order[isaState(a)] - order[isaState(b)] || a.priority - b.priority);
  for (const a of list) {
    const st = isaState(a);
    const tr = el("tr", undefined, st + (a.id === S.selected ? " sel" : ""));
    tr.dataset.id = a.id;
    tr.dataset.state = st;
    const p = el("td"); p.append(el("span", "P" + a.priority, "prio p" + a.priority)); tr.append(p);
    tr.append(el("td", t(st), "state"), el("td", a.id), el("td", a.text), el("td", fmt(a.value) + " " + (a.unit || "")),
      el("td", fmt(a.limit)), el("td", a.active ? since(a.active_since) : ""));
    const flags = el("td", undefined, "flags");
    for (const f of ["shelved", "suppressed", "out_of_service", "chattering"]) if (a[f]) flags.append(el("span", t(f), "flag"));
    tr.append(flags, el("td"));
    const trend = window.trendButton && trendButton(a);  // trend.js: the alarm's trend, where it has one
    if (trend) tr.lastChild.append(trend);
    tr.addEventListener("click", () => { S.selected = a.id; $("sel-alarm").textContent = a.id; renderAlarms(); });
    body.append(tr);
  }
  $("no-alarms").hidden = list.length > 0;
}

function renderDevices() {
  const body = $("devices");
  body.replaceChildren();
  for (const [name, d] of Object.entries(S.devices)) {
    const st = (d.state || "").toUpperCase();
    const tr = el("tr");
    tr.dataset.device = name;
    const rate = d.rate_hz === undefined ? "" : fmt(d.rate_hz) + " /s" + (d.interval_s ? " (" + t("every") + " " + fmt(1 / d.interval_s) + " /s)" : "");
    tr.append(el("td", name), el("td", t(st), "state " + st), el("td", d.since || ""), el("td", rate, "rate"),
      el("td", fmt(d.reads), "reads"), el("td", fmt(d.errors), "errors"),
      el("td", d.latency_ms === null || d.latency_ms === undefined ? "—" : fmt(d.latency_ms) + " ms", "latency"),
      el("td", d.error || ""));
    body.append(tr);
    if ((d.details || []).length) body.append(deviceDetails(name, d.details));
  }
}

function deviceDetails(name, details) {  // the driver's own tables (request plan, subscription), as it words them
  const tr = el("tr", undefined, "details"), td = el("td");
  td.colSpan = 8;
  tr.dataset.details = name;
  for (const sec of details) {
    const box = el("div", undefined, "detail"), table = el("table"), head = el("tr");
    box.append(el("strong", sec.title));
    if ((sec.columns || []).some((c) => c)) { for (const c of sec.columns) head.append(el("th", c)); table.append(head); }
    for (const row of sec.rows || []) { const r = el("tr"); for (const c of row) r.append(el("td", fmt(c))); table.append(r); }
    box.append(table);
    td.append(box);
  }
  tr.append(td);
  return tr;
}

function unsent(o) {
  return o ? o.lane + " #" + o.id + (o.seq !== null && o.seq !== undefined ? " seq " + o.seq : "") + ", " + t("age") + " " + fmt(o.age_s) + " s (" + o.created + ")"
    : t("none_unsent");
}

function renderSystem() {
  const body = $("kpis");
  body.replaceChildren();
  for (const [k, v] of Object.entries(S.kpis)) {
    const tr = el("tr");
    tr.append(el("td", S.lang === "zh" && WORDS.zh[k] ? WORDS.zh[k] + " " + k : k), el("td", fmt(v)));
    body.append(tr);
  }
  const up = $("uplinks");
  up.replaceChildren();
  for (const [name, u] of Object.entries(S.uplinks)) {
    const tr = el("tr");
    tr.append(el("td", name), el("td", u.transport), el("td", u.connected ? t("yes") : t("no"), u.connected ? "OK" : "COMM_FAIL"),
      el("td", fmt(u.sent)), el("td", fmt(u.dead_letters)), el("td", unsent(u.oldest_unsent), "oldest"));
    tr.dataset.uplink = name;
    up.append(tr);
  }
  $("outbox").textContent = JSON.stringify(S.outbox.depth || {}) + "  seq " + fmt(S.outbox.last_seq);
  $("outbox-oldest").textContent = unsent(S.outbox.oldest_unsent);
}

// --- the tag table: only the rows in view exist in the page (10,000 tags stay cheap) ---
function filterTags() {
  const q = $("tag-search").value.trim().toLowerCase(), f = $("tag-filter").value;
  S.shown = [];
  for (let i = 0; i < S.columns.length; i++) {
    const [name, device] = S.columns[i], quality = S.qualities[S.q[i]];
    if (q && !name.toLowerCase().includes(q)) continue;
    if (f === "not_good" && quality === "good") continue;
    if (f.startsWith("dev:") && device !== f.slice(4)) continue;
    S.shown.push(i);
  }
  $("tag-spacer").style.height = S.shown.length * ROW_H + "px";
  $("tag-count").textContent = S.shown.length + " / " + S.columns.length;
  renderTagRows();
}

function renderTagRows() {
  const vp = $("tag-viewport"), rows = $("tag-rows");
  const first = Math.floor(vp.scrollTop / ROW_H), n = Math.ceil(vp.clientHeight / ROW_H) + 2;
  rows.style.top = first * ROW_H + "px";
  rows.replaceChildren();
  for (const i of S.shown.slice(first, first + n)) {
    const [name, device, unit] = S.columns[i], v = S.v[i], q = S.qualities[S.q[i]] ?? "", changed = S.c[i];
    const r = el("div", undefined, "tagrow");
    r.dataset.tag = name;
    r.append(el("span", name), el("span", device), el("span", fmt(Number.isNaN(v) ? null : v), "value"), el("span", unit), el("span", q, "q-" + q),
      el("span", changed ? new Date(changed).toLocaleTimeString() : ""));
    rows.append(r);
  }
}

function fillFilter() {
  const sel = $("tag-filter"), keep = sel.value;
  sel.replaceChildren();
  const opt = (value, text) => { const o = el("option", text); o.value = value; sel.append(o); };
  opt("", t("all"));
  opt("not_good", t("not_good"));
  for (const d of [...new Set(S.columns.map((c) => c[1]).filter(Boolean))]) opt("dev:" + d, d);
  sel.value = keep || "";
}

function onFrame(doc) {
  if (doc.full) {  // the tags as typed columns: no object per tag, 10,000 values stay cheap to update
    const n = doc.columns.length;
    Object.assign(S, {columns: doc.columns, qualities: doc.qualities, v: new Float64Array(n).fill(NaN),
      q: new Uint8Array(n).fill(255), c: new Float64Array(n)});
    fillFilter();
  }
  const {i, v, q, c} = doc.tags, at = doc.t * 1000;  // index, value, quality; a delta's tags changed at t
  for (let k = 0; k < i.length; k++) {
    const j = i[k];
    S.v[j] = v[k] === null ? NaN : v[k]; S.q[j] = q[k]; S.c[j] = c ? (c[k] === null ? 0 : c[k] * 1000) : at;
  }
  for (const a of doc.alarms) {  // when this page first learnt of each activation
    if (a.active && S.arrived[a.id]?.since !== a.active_since) S.arrived[a.id] = {since: a.active_since, at: Date.now()};
  }
  Object.assign(S, {alarms: doc.alarms, devices: doc.devices, kpis: doc.kpis, uplinks: doc.uplinks, outbox: doc.outbox});
  $("plant").textContent = "plantwatch · " + doc.name + " (" + doc.plant + ")";
  renderAlarms(); renderDevices(); renderSystem();
  if (doc.full || $("tag-filter").value === "not_good") filterTags(); else renderTagRows();
}

function connect() {
  const es = new EventSource("/events");
  es.onopen = () => { $("conn").className = "ok"; $("conn").dataset.t = "live"; $("conn").textContent = t("live"); };
  es.onerror = () => {
    $("conn").className = "bad"; $("conn").dataset.t = "offline"; $("conn").textContent = t("offline");
    if (S.mode === "session") { es.close(); setTimeout(startSession, 2000); }  // expired? ask /session
  };
  es.onmessage = (ev) => {
    const t0 = performance.now(), doc = JSON.parse(ev.data);
    onFrame(doc);
    void document.body.offsetHeight;  // style and layout now, inside the measured time
    const ms = performance.now() - t0, st = S.stats;
    st.frames++; st.ms += ms; st.max = Math.max(st.max, ms); st.chars += ev.data.length;
    if (doc.full && st.loaded === null) st.loaded = performance.now();  // since the navigation started
  };
}

// --- the LAN console: a login yields a session cookie (HttpOnly) and a CSRF token for the POSTs ---
async function startSession() {
  const r = await fetch("/session", {cache: "no-store"}).catch(() => null);
  if (!r) { setTimeout(startSession, 2000); return; }
  const doc = await r.json().catch(() => ({}));
  S.mode = doc.mode || "token";
  document.body.classList.toggle("lan", S.mode === "session");
  if (S.mode === "session" && !doc.user) {
    if (S.user) $("login-msg").textContent = t("session_expired");
    S.user = S.csrf = null; showLogin(true); renderAuth(); return;
  }
  S.user = doc.user || null; S.csrf = doc.csrf || null;
  showLogin(false); renderAuth(); connect();
}

function showLogin(on) {
  $("login").hidden = !on;
  for (const b of document.querySelectorAll("nav button")) $("view-" + b.dataset.view).hidden = on || !b.classList.contains("on");
}

async function login(ev) {
  ev.preventDefault();
  const token = $("login-token").value.trim(), body = token ? {token} : {user: $("login-user").value, password: $("login-password").value};
  $("login-password").value = ""; $("login-token").value = "";
  const r = await fetch("/login", {method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body), cache: "no-store"});
  const doc = await r.json().catch(() => ({}));
  if (!r.ok) { $("login-msg").className = "err"; $("login-msg").textContent = r.status + ": " + (doc.error || r.statusText); return; }
  $("login-msg").textContent = ""; startSession();
}

async function signOut() {
  if (S.mode !== "session") { sessionStorage.removeItem("pw-token"); renderAuth(); return; }
  await fetch("/logout", {method: "POST", headers: {"X-CSRF-Token": S.csrf || ""}, cache: "no-store"}).catch(() => null);
  location.reload();
}

// --- operator actions ---
function renderAuth() {
  const has = !!token();
  for (const b of document.querySelectorAll("button.act")) {
    b.disabled = !has;
    b.textContent = has ? t(b.dataset.op) : t(b.dataset.op) + " (" + t("token_required") + ")";
  }
  $("who").textContent = has ? (S.user ? "✔ " + S.user : "✔") : t("read_only");
  $("who").className = has ? "" : "none";
  $("token-clear").hidden = S.mode === "session" && !S.user;  // on the LAN: nothing to sign out of yet
}

async function act(op) {
  const msg = $("action-msg");
  if (!S.selected) { msg.className = "err"; msg.textContent = t("select_alarm"); return; }
  const body = {comment: $("comment").value};
  if (op === "shelve") body.duration_s = Math.round(Number($("duration").value) * 60);
  msg.className = ""; msg.textContent = "…";
  try {
    const r = await fetch("/alarms/" + encodeURIComponent(S.selected) + "/" + op, {
      method: "POST", headers: S.mode === "session" ? {"X-CSRF-Token": token(), "Content-Type": "application/json"}
        : {"Authorization": "Bearer " + token(), "Content-Type": "application/json"},
      body: JSON.stringify(body), credentials: S.mode === "session" ? "same-origin" : "omit", cache: "no-store"});
    const doc = await r.json().catch(() => ({}));
    msg.className = r.ok ? "ok" : "err";
    msg.textContent = r.ok ? t(op) + ": " + t("done") : r.status + ": " + (doc.error || r.statusText);
  } catch (e) {
    msg.className = "err"; msg.textContent = String(e);
  }
}

function applyLang() {
  document.documentElement.lang = S.lang;
  for (const e of document.querySelectorAll("[data-t]")) e.textContent = t(e.dataset.t);
  for (const e of document.querySelectorAll("[data-tp]")) e.placeholder = t(e.dataset.tp);
  $("lang").textContent = S.lang === "zh" ? "EN" : "中文";
  fillFilter(); renderAuth(); renderAlarms(); renderDevices(); renderSystem(); renderTagRows();
}

function init() {
  for (const b of document.querySelectorAll("nav button")) {
    b.addEventListener("click", () => {
      for (const o of document.querySelectorAll("nav button")) o.classList.toggle("on", o === b);
      for (const v of ["alarms", "devices", "tags", "trend", "system"]) $("view-" + v).hidden = v !== b.dataset.view;
      if (b.dataset.view === "tags") filterTags();
    });
  }
  $("lang").addEventListener("click", () => { S.lang = S.lang === "zh" ? "en" : "zh"; localStorage.setItem("pw-lang", S.lang); applyLang(); });
  $("token-save").addEventListener("click", () => { sessionStorage.setItem("pw-token", $("token").value.trim()); $("token").value = ""; renderAuth(); });
  $("token-clear").addEventListener("click", signOut);
  $("login").addEventListener("submit", login);
  for (const b of document.querySelectorAll("button.act")) b.addEventListener("click", () => act(b.dataset.op));
  $("tag-search").addEventListener("input", filterTags);
  $("tag-search").addEventListener("change", filterTags);
  $("tag-filter").addEventListener("change", filterTags);
  $("tag-viewport").addEventListener("scroll", renderTagRows, {passive: true});
  applyLang();
  startSession();
}

document.addEventListener("DOMContentLoaded", init);
