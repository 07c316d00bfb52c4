// OpenDSO control room: login, pages, status bar, element panel, shift log; wires the stream.

import { api, ApiError, openStream, setCsrf } from "./api.js";
import { AlarmList, esc } from "./alarms.js";
import { drawLegend, LOADING_PALETTE, VOLTAGE_PALETTE } from "./colors.js";
import { NetworkView } from "./network.js";

const $ = (id) => document.getElementById(id);
// only operator-type roles command, acknowledge, shelve and write shift notes (IEC 62351-8, as the API enforces)
const WRITE_ROLES = ["operator"];
const AUDIT_ROLES = ["security_auditor"];
const session = { user: null, roles: [] };
const timing = { start: performance.now(), gridLoaded: null, stateLoaded: null, firstDraw: null };
let stream = null;
let network = null;
let alarms = null;
let elementNames = new Map(); // alarm channel (element name) -> id
let trendChart = null;
let currentElement = null;
// state-change-to-screen latency: server publish time (epoch s) of states not yet drawn, and samples (ms)
const latency = { pending: [], samples: [] };

const canWrite = () => session.roles.some((r) => WRITE_ROLES.includes(r));
const canAudit = () => session.roles.some((r) => AUDIT_ROLES.includes(r));

// -- test and diagnostics hook ---------------------------------------------------------------
window.opendso = {
  stats: () => ({ ...(network?.stats() ?? { nodes: 0, nodesDrawn: 0 }), timing: { ...timing } }),
  selectElement: (id) => selectElement(id, { centre: true }),
  screenOf: (id) => network?.screenOf(id) ?? null,
  alarms: () => [...(alarms?.alarms.values() ?? [])],
  lastCue: () => alarms?.lastCue ?? null,
  latencies: () => [...latency.samples],
};

// -- login -----------------------------------------------------------------------------------
async function boot() {
  drawLegend($("legend-loading"), LOADING_PALETTE);
  drawLegend($("legend-voltage"), VOLTAGE_PALETTE);
  try {
    const me = await api("/api/auth/me");
    await enter(me);
  } catch (err) {
    if (!(err instanceof ApiError) || err.status !== 401) console.error(err);
    showLogin();
  }
}

function showLogin(message = "") {
  $("app-view").hidden = true;
  $("login-view").hidden = false;
  $("login-error").textContent = message;
  $("login-user").focus();
}

$("login-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  $("login-error").textContent = "";
  try {
    const me = await api("/api/auth/login", {
      method: "POST",
      body: { username: $("login-user").value, password: $("login-password").value },
    });
    $("login-password").value = "";
    timing.start = performance.now();
    await enter(me);
  } catch (err) {
    $("login-error").textContent = err instanceof ApiError && err.status === 401 ? "Wrong user name or password." : `Sign-in failed: ${err.message}`;
  }
});

$("logout").addEventListener("click", async () => {
  try {
    await api("/api/auth/logout", { method: "POST" });
  } finally {
    stream?.stop();
    location.reload();
  }
});

// -- password change: required after a temporary password, or on request ---------------------
let passwordForced = false;
function showPasswordForm(me, forced) {
  passwordForced = forced;
  session.user = me.user;
  setCsrf(me.csrf_token);
  $("app-view").hidden = true;
  $("login-view").hidden = false;
  $("login-form").hidden = true;
  $("password-form").hidden = false;
  $("password-user").value = me.user;
  $("password-why").textContent = forced
    ? `${me.user}: your password was temporary. Choose your own password to continue.`
    : `Change the password of ${me.user}.`;
  $("password-cancel").textContent = forced ? "Sign out" : "Cancel";
  $("password-error").textContent = "";
  $("password-current").focus();
}

$("password-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const fresh = $("password-new").value;
  if (fresh !== $("password-repeat").value) {
    $("password-error").textContent = "The two new passwords differ.";
    return;
  }
  try {
    const me = await api("/api/auth/password", {
      method: "POST",
      body: { current_password: $("password-current").value, new_password: fresh },
    });
    for (const id of ["password-current", "password-new", "password-repeat"]) $(id).value = "";
    $("password-form").hidden = true;
    $("login-form").hidden = false;
    await enter(me);
  } catch (err) {
    $("password-error").textContent = err instanceof ApiError && err.status === 401
      ? "The current password is wrong." : `Not changed: ${err.message}`;
  }
});

$("password-form").addEventListener("input", () => { $("password-error").textContent = ""; });

$("password-cancel").addEventListener("click", async () => {
  if (passwordForced) {
    try { await api("/api/auth/logout", { method: "POST" }); } finally { location.reload(); }
    return;
  }
  $("password-form").hidden = true;
  $("login-form").hidden = false;
  $("login-view").hidden = true;
  $("app-view").hidden = false;
});

$("change-password").addEventListener("click", async () => {
  showPasswordForm(await api("/api/auth/me"), false);
});

async function enter(me) {
  if (me.password_change_required) {
    showPasswordForm(me, true);
    return;
  }
  session.user = me.user;
  session.roles = me.roles ?? [];
  setCsrf(me.csrf_token);
  $("login-view").hidden = true;
  $("app-view").hidden = false;
  $("user-label").textContent = `${me.user} · ${session.roles.join(", ")}`;
  $("note-form").querySelector("button").disabled = !canWrite();
  $("ack-all").disabled = !canWrite();
  $("tab-audit").hidden = !canAudit();
  showPage("network");
  network ??= new NetworkView($("network-canvas"), { onSelect: (hit) => selectElement(hit?.id ?? null), onHover: showTip });
  $("network-canvas").addEventListener("firstdraw", () => { timing.firstDraw = performance.now(); }, { once: true });
  $("network-canvas").addEventListener("drawn", () => {
    const now = Date.now() / 1000;
    for (const published of latency.pending) latency.samples.push((now - published) * 1000);
    latency.pending = [];
    if (latency.samples.length > 2000) latency.samples.splice(0, latency.samples.length - 2000);
  });
  alarms ??= new AlarmList({
    tbody: $("alarm-rows"), empty: $("alarm-empty"), badge: $("alarm-badge"), banner: $("alarm-banner"),
    bannerText: $("alarm-banner-text"), canWrite, onElement: (name) => openElementByName(name),
  });
  const [grid, state, status] = await Promise.all([api("/api/grid"), api("/api/state"), api("/api/status")]);
  timing.gridLoaded = performance.now();
  $("grid-name").textContent = grid.name;
  $("grid-name").title = grid.name;
  elementNames = new Map();
  for (const n of grid.nodes) elementNames.set(n.name, n.id);
  for (const b of grid.branches) { elementNames.set(b.name, b.id); elementNames.set(`${b.kind}:${b.name}`, b.id); }
  for (const s of grid.switches) elementNames.set(s.name, s.id);
  network.setGrid(grid);
  network.setState(state);
  timing.stateLoaded = performance.now();
  showStatus(status);
  await alarms.load();
  stream?.stop();
  stream = openStream({ onMessage, onState: (ok) => {
    $("st-link").textContent = ok ? "live" : "reconnecting…";
    $("st-link").className = `link-state ${ok ? "ok" : "bad"}`;
  } });
}

function onMessage(msg) {
  if (msg.type === "state") {
    network.setState(msg);
    if (Number.isFinite(msg.published_at)) latency.pending.push(msg.published_at);
    if (currentElement) renderEstimated(currentElement);
  } else if (msg.type === "alarm") {
    alarms.applyEvent(msg.event);
    const c = alarms.counts();
    $("st-alarms").textContent = `${c.active} active, ${c.unacked} unacknowledged`;
    $("st-alarms").className = c.unacked ? "bad" : "ok";
  } else if (msg.type === "status") {
    showStatus(msg);
  }
}

// -- status bar ------------------------------------------------------------------------------
function showStatus(s) {
  const clock = s.simulated_time ?? s.time;
  $("st-clock").textContent = clock ? new Date(clock).toISOString().replace("T", " ").slice(0, 19) + " UTC" : "—";
  $("st-clock").title = s.simulated_time ? "simulated time" : "wall-clock time (no simulator)";
  $("st-cycle").textContent = s.cycle_ms === null || s.cycle_ms === undefined ? "—" : `${Number(s.cycle_ms).toFixed(0)} ms`;
  $("st-observable").textContent = s.observable ? "observable" : "NOT observable";
  $("st-observable").className = s.observable ? "ok" : "bad";
  const t = s.telemetry ?? {};
  $("st-telemetry").textContent = `${t.good ?? "?"}/${t.points ?? "?"} good` + (t.bad ? `, ${t.bad} bad` : "");
  $("st-telemetry").className = t.bad ? "warn" : "ok";
  const a = s.alarms ?? {};
  $("st-alarms").textContent = `${a.active ?? 0} active, ${a.unacknowledged ?? 0} unacknowledged`;
  $("st-alarms").className = a.unacknowledged ? "bad" : "ok";
}

// -- pages -----------------------------------------------------------------------------------
function showPage(page) {
  for (const tab of document.querySelectorAll(".tabs [role=tab]")) {
    const on = tab.dataset.page === page;
    tab.setAttribute("aria-selected", String(on));
    $(`page-${tab.dataset.page}`).hidden = !on;
  }
  if (page === "log") loadLog();
  if (page === "alarms") alarms?.renderNow();
  if (page === "audit") loadAudit();
  if (page === "network") network?.requestDraw();
}

document.querySelectorAll(".tabs [role=tab]").forEach((tab) => tab.addEventListener("click", () => showPage(tab.dataset.page)));
document.addEventListener("keydown", (e) => {
  const typing = ["INPUT", "TEXTAREA", "SELECT"].includes(document.activeElement?.tagName);
  if (typing || e.ctrlKey || e.metaKey || e.altKey || $("app-view").hidden) return;
  const pages = { 1: "network", 2: "alarms", 3: "log", 4: "audit" };
  if (pages[e.key] && !$(`tab-${pages[e.key]}`).hidden) { showPage(pages[e.key]); e.preventDefault(); }
});
$("alarm-banner-go").addEventListener("click", () => showPage("alarms"));
$("zoom-in").addEventListener("click", () => network.zoom(1.25));
$("zoom-out").addEventListener("click", () => network.zoom(0.8));
$("zoom-fit").addEventListener("click", () => network.fit());
$("sound-toggle").addEventListener("click", (e) => {
  alarms.soundOn = !alarms.soundOn;
  e.currentTarget.setAttribute("aria-pressed", String(alarms.soundOn));
  e.currentTarget.textContent = alarms.soundOn ? "Sound on" : "Sound off";
  if (alarms.soundOn) alarms.beep(); // also unlocks audio after a user gesture
});

function showTip(hit, x, y) {
  const tip = $("hover-tip");
  if (!hit) { tip.hidden = true; return; }
  const v = network.valuesOf(hit.id);
  const extra = v.u_pu !== undefined ? ` · ${fmt(v.u_pu, 3)} p.u.` : v.loading !== undefined ? ` · ${fmt(v.loading * 100, 0)} %` : v.closed !== undefined ? ` · ${v.closed ? "closed" : "OPEN"}` : "";
  tip.textContent = `${hit.type} ${hit.name}${extra}`;
  tip.style.left = `${x + 14}px`;
  tip.style.top = `${y + 10}px`;
  tip.hidden = false;
}

// -- alarms page -----------------------------------------------------------------------------
$("alarm-rows").addEventListener("click", async (e) => {
  const btn = e.target.closest("button");
  const group = e.target.closest("tr.group-row");
  if (btn?.classList.contains("ack")) {
    await guarded(() => alarms.acknowledge(btn.dataset.key));
  } else if (btn?.classList.contains("shelve")) {
    openShelve(btn.dataset.key);
  } else if (btn?.classList.contains("el-link")) {
    openElementByName(btn.dataset.channel);
  } else if (group) {
    toggleGroup(group.dataset.group);
  }
});
$("alarm-rows").addEventListener("keydown", (e) => {
  const group = e.target.closest("tr.group-row");
  if (group && (e.key === "Enter" || e.key === " ")) { e.preventDefault(); toggleGroup(group.dataset.group); }
});
function toggleGroup(g) {
  if (alarms.folded.has(g)) alarms.folded.delete(g); else alarms.folded.add(g);
  alarms.renderNow();
  document.querySelector(`tr.group-row[data-group="${CSS.escape(g)}"]`)?.focus();
}
$("alarm-group-toggle").addEventListener("change", (e) => { alarms.grouped = e.target.checked; alarms.render(); });
$("alarm-show-shelved").addEventListener("change", (e) => { alarms.showShelved = e.target.checked; alarms.render(); });
$("ack-all").addEventListener("click", async () => {
  for (const a of alarms.visible().filter((x) => !x.acknowledged)) await guarded(() => alarms.acknowledge(a.key));
});

let shelveKey = null;
function openShelve(key) {
  shelveKey = key;
  $("shelve-alarm").textContent = key;
  $("shelve-reason").value = "";
  $("shelve-dialog").showModal();
}
$("shelve-dialog").addEventListener("close", async () => {
  if ($("shelve-dialog").returnValue !== "ok" || !shelveKey) return;
  const key = shelveKey;
  shelveKey = null;
  await guarded(() => alarms.shelve(key, Number($("shelve-duration").value), $("shelve-reason").value));
});

async function guarded(action) {
  try {
    await action();
  } catch (err) {
    alert(`Not done: ${err.message}`);
  }
}

// -- element panel ---------------------------------------------------------------------------
function openElementByName(name) {
  const id = elementNames.get(name) ?? elementNames.get(String(name).split(":").slice(1).join(":"));
  if (id === undefined) return;
  showPage("network");
  selectElement(id, { centre: true });
}

async function selectElement(id, { centre = false } = {}) {
  if (id === null || id === undefined) {
    $("element-panel").hidden = true;
    currentElement = null;
    network.select(null);
    return;
  }
  network.select(id, { centre });
  let el;
  try {
    el = await api(`/api/grid/elements/${id}`);
  } catch (err) {
    console.error(err);
    return;
  }
  currentElement = el;
  $("element-panel").hidden = false;
  $("el-kind").textContent = `${el.component}${el.kind && el.kind !== el.component ? ` · ${el.kind}` : ""} · id ${el.id}`;
  $("el-name").textContent = el.name;
  renderEstimated(el);
  $("el-fields").innerHTML = Object.entries(el.fields ?? {})
    .map(([k, v]) => `<dt>${esc(k)}</dt><dd>${esc(typeof v === "number" ? (Number.isInteger(v) ? String(v) : fmt(v, 4)) : v === null ? "—" : typeof v === "object" ? JSON.stringify(v) : v)}</dd>`)
    .join("");
  const points = el.points ?? [];
  $("el-points").innerHTML = points.length
    ? points.map((p) => `<tr data-point="${esc(p)}"><td>${esc(p)}</td><td class="pv">…</td><td class="pq"></td></tr>`).join("")
    : `<tr><td colspan="3" class="muted">No telemetry on this element.</td></tr>`;
  $("el-trend-point").innerHTML = points.map((p) => `<option>${esc(p)}</option>`).join("");
  $("el-trend-point").disabled = !points.length;
  for (const p of points) loadLatest(p);
  if (points.length) loadTrend(points[0]); else clearTrend("No points to plot.");
}

function renderEstimated(el) {
  const v = network.valuesOf(el.id);
  const rows = [];
  if (v.u_pu !== undefined) rows.push(["voltage", `${fmt(v.u_pu, 4)} p.u.`]);
  if (v.loading !== undefined) rows.push(["loading", `${fmt(v.loading * 100, 1)} %`]);
  if (v.energised !== undefined) rows.push(["energised", v.energised ? "yes" : "NO (de-energised)"]);
  if (v.closed !== undefined) rows.push(["position", v.closed ? "closed" : "OPEN"]);
  $("el-estimated").innerHTML = rows.length ? rows.map(([k, x]) => `<dt>${k}</dt><dd>${esc(x)}</dd>`).join("") : "<dt>—</dt><dd>no estimate</dd>";
}

async function loadLatest(point) {
  const to = new Date();
  const from = new Date(to.getTime() - 24 * 3600 * 1000);
  try {
    const rows = await api(`/api/measurements/${encodeURIComponent(point)}?from=${from.toISOString()}&to=${to.toISOString()}`);
    const last = rows[rows.length - 1];
    const tr = document.querySelector(`#el-points tr[data-point="${CSS.escape(point)}"]`);
    if (!tr) return;
    tr.querySelector(".pv").textContent = last ? fmt(last.value ?? last.mean, 3) : "—";
    tr.querySelector(".pq").textContent = last ? qualityText(last.quality) : "";
    tr.querySelector(".pq").className = `pq ${last?.quality ? "warn" : "ok"}`;
  } catch (err) {
    console.warn(err);
  }
}

$("el-trend-point").addEventListener("change", (e) => loadTrend(e.target.value));
$("el-close").addEventListener("click", () => selectElement(null));

function clearTrend(text) {
  trendChart?.destroy();
  trendChart = null;
  $("el-trend").innerHTML = `<p class="muted">${esc(text)}</p>`;
}

async function loadTrend(point) {
  const to = new Date();
  const from = new Date(to.getTime() - 24 * 3600 * 1000);
  let rows;
  try {
    rows = await api(`/api/measurements/${encodeURIComponent(point)}?from=${from.toISOString()}&to=${to.toISOString()}`);
  } catch (err) {
    clearTrend(`No trend: ${err.message}`);
    return;
  }
  if (!rows.length) { clearTrend("No data in the last 24 h."); return; }
  const xs = rows.map((r) => Date.parse(r.ts) / 1000);
  const ys = rows.map((r) => r.value ?? r.mean ?? null);
  trendChart?.destroy();
  $("el-trend").innerHTML = "";
  if (!window.uPlot) { clearTrend("Chart library missing."); return; }
  trendChart = new window.uPlot({
    width: $("el-trend").clientWidth || 340,
    height: 180,
    series: [{}, { label: point, stroke: "#5ec962", width: 1.5, points: { show: false } }],
    axes: [
      { stroke: "#9aa4b2", grid: { stroke: "#2a313b" }, ticks: { stroke: "#2a313b" } },
      { stroke: "#9aa4b2", grid: { stroke: "#2a313b" }, ticks: { stroke: "#2a313b" }, size: 72 },
    ],
    legend: { live: true },
  }, [xs, ys], $("el-trend"));
}

// -- event and shift log ---------------------------------------------------------------------
async function loadLog() {
  try {
    const [events, notes] = await Promise.all([api("/api/events?limit=500"), api("/api/shiftlog")]);
    $("event-rows").innerHTML = events.slice().reverse().map((e) =>
      `<tr><td>${e.seq}</td><td>${esc(shortTime(e.ts))}</td><td>${esc(e.actor)}</td><td>${esc(e.kind)}</td>` +
      `<td>${esc(e.element ?? "")}</td><td class="details" title="${esc(JSON.stringify(e.payload))}">${esc(JSON.stringify(e.payload))}</td></tr>`).join("");
    $("notes").innerHTML = notes.slice().reverse().map((n) =>
      `<li><div class="note-meta">${esc(shortTime(n.ts))} · ${esc(n.actor)}</div><div class="note-text">${esc(n.payload?.text ?? "")}</div></li>`).join("")
      || `<li class="muted">No notes yet in this shift.</li>`;
  } catch (err) {
    console.error(err);
  }
}
$("events-refresh").addEventListener("click", loadLog);
$("note-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const text = $("note-text").value.trim();
  if (!text) return;
  await guarded(async () => {
    await api("/api/shiftlog", { method: "POST", body: { text } });
    $("note-text").value = "";
    await loadLog();
  });
});

// -- audit trail (security auditors) ---------------------------------------------------------
let auditRecords = [];
async function loadAudit() {
  try {
    // the newest records: page forward from the start once, then only what is new
    const after = auditRecords.length ? auditRecords[auditRecords.length - 1].seq : 0;
    for (let page = await api(`/api/audit?after=${after}&limit=5000`); page.length; ) {
      auditRecords = auditRecords.concat(page);
      if (page.length < 5000) break;
      page = await api(`/api/audit?after=${page[page.length - 1].seq}&limit=5000`);
    }
    renderAudit();
  } catch (err) {
    $("audit-chain").textContent = `Could not read the audit trail: ${err.message}`;
  }
}
function renderAudit() {
  const q = $("audit-filter").value.trim().toLowerCase();
  const rows = auditRecords.filter((r) => !q || [r.actor, r.action, r.element, r.result, r.reason, r.source_ip]
    .some((v) => v && String(v).toLowerCase().includes(q)));
  // a gap in the sequence or a record not chained to the previous one is shown, not hidden
  let broken = 0;
  for (let i = 1; i < auditRecords.length; i++) {
    const a = auditRecords[i - 1], b = auditRecords[i];
    if (b.seq !== a.seq + 1 || b.prev_hash !== a.hash) broken++;
  }
  $("audit-chain").textContent = `${auditRecords.length} records` +
    (broken ? ` · ${broken} break(s) in the chain: run 'opendso audit verify'` : " · chained");
  $("audit-chain").className = broken ? "bad small" : "muted small";
  $("audit-rows").innerHTML = rows.slice().reverse().slice(0, 2000).map((r) =>
    `<tr data-seq="${r.seq}" class="result-${esc(r.result)}"><td>${r.seq}</td><td>${esc(shortTime(r.ts))}</td><td>${esc(r.actor)}</td>` +
    `<td>${esc(r.source_ip ?? "")}</td><td>${esc(r.action)}</td><td>${esc(r.element ?? "")}</td><td>${esc(r.result)}</td>` +
    `<td>${esc(r.reason ?? "")}</td><td class="hash" title="${esc(r.hash)}">${esc(r.hash.slice(0, 10))}</td></tr>`).join("");
  $("audit-empty").hidden = rows.length > 0;
}
$("audit-refresh").addEventListener("click", loadAudit);
$("audit-filter").addEventListener("input", renderAudit);

// IEC 61850 quality bits, as opendso.quality.Quality stores them
const QUALITY_BITS = ["invalid", "questionable", "overflow", "out of range", "bad reference", "oscillatory",
  "failure", "stale", "inconsistent", "inaccurate", "substituted", "test", "blocked", "estimated"];
function qualityText(q) {
  if (q === null || q === undefined) return "";
  if (!q) return "good";
  return QUALITY_BITS.filter((_, bit) => q & (1 << bit)).join(", ") || `0x${Number(q).toString(16)}`;
}

function shortTime(ts) {
  return ts ? new Date(ts).toISOString().replace("T", " ").slice(0, 19) : "";
}
function fmt(v, digits) {
  return Number.isFinite(v) ? Number(v).toFixed(digits) : "—";
}

boot();
