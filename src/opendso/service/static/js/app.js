// OpenDSO control room: login, pages, status bar, element panel, shift log; wires the stream.

import { api, ApiError, openStream, setCsrf } from "./api.js";
import { initAuditPage } from "./audit.js";
import { initUsersPage } from "./users.js";
import { AlarmList, countStates, esc, renderAlarmStatus } from "./alarms.js";
import { initAlarmPages } from "./alarmpages.js";
import { drawLegend, LOADING_PALETTE, VOLTAGE_PALETTE } from "./colors.js";
import { NetworkView } from "./network.js";
import { DiagramView } from "./diagram.js";
import { initOperationsPages } from "./operations.js";
import { initOutagePages } from "./outagepages.js";
import { initDerPage } from "./derpages.js";
import { initAnmPanel } from "./anmpanel.js";
import { initCongestionPage } from "./congestionpage.js";
import { initHostingMap } from "./hostingmap.js";
import { initFlexPage } from "./flexpage.js";
import { openSwitchingDialog, setupSwitchingDialog } from "./switching.js";
import { clockName, fmtMs, fmtTime, fmtWall, nowMs, setTimeBase, simulating, timeBase, timeTitle } from "./time.js";
import { Trend } from "./trend.js";
import { formatPoint, formatQuantity, quantityLabel, readableFields } from "./units.js";

const $ = (id) => document.getElementById(id);
// only operator-type roles command, acknowledge, shelve and write shift notes (IEC 62351-8, as the API enforces)
const WRITE_ROLES = ["operator"];
const AUDIT_ROLES = ["security_auditor"];
// user management: the manage-users permission of IEC 62351-8 (as the API enforces)
const USER_ADMIN_ROLES = ["security_administrator", "rbac_maintainer"];
// engineers take alarms out of service and suppress areas (the configure permission, as the API enforces)
const CONFIGURE_ROLES = ["engineer", "installer", "security_administrator"];
const session = { user: null, roles: [] };
const timing = { start: performance.now(), gridLoaded: null, stateLoaded: null, firstDraw: null };
let stream = null;
let network = null;
let diagram = null;
let alarms = null;
let alarmPages = null;
let elementNames = new Map(); // alarm channel (element name) -> id
let trend = null;
let currentElement = null;
let gridView = { nodes: new Map(), names: new Map() }; // node id -> node; element id -> name
let lastStatus = null;
let lastState = null; // the latest state: the diagram takes it when it first opens
let operations = null; // the Switching, FLISR and Plans pages (operations.js)
let outagePages = null; // the Outages and Reliability pages (outagepages.js)
let derPage = null; // the DER registry and connection queue (derpages.js)
let anmPanel = null; // active network management on the DER page (anmpanel.js)
let congestionPage = null; // the congestion forecast timeline (congestionpage.js)
let hostingMap = null; // the hosting-capacity layer of the network map (hostingmap.js)
let flexPage = null; // the Flexibility page and its envelope layer of the map (flexpage.js)
let switchIds = new Map(); // switch name -> id
// state-change-to-screen latency: server publish time (epoch s) of states not yet drawn, and samples (ms)
const latency = { pending: [], samples: [] };

const canWrite = () => session.roles.some((r) => WRITE_ROLES.includes(r));
const canAudit = () => session.roles.some((r) => AUDIT_ROLES.includes(r));
const canManageUsers = () => session.roles.some((r) => USER_ADMIN_ROLES.includes(r));
let auditPage = null;
let usersPage = null;
const canConfigure = () => session.roles.some((r) => CONFIGURE_ROLES.includes(r));

// -- test and diagnostics hook ---------------------------------------------------------------
window.opendso = {
  stats: () => ({ ...(network?.stats() ?? { nodes: 0, nodesDrawn: 0 }), timing: { ...timing } }),
  selectElement: (id) => selectElement(id, { centre: true }),
  screenOf: (id) => network?.screenOf(id) ?? null,
  alarms: () => [...(alarms?.alarms.values() ?? [])],
  alarmCounts: () => ({ server: alarms?.serverCounts ?? null, list: countStates(alarms?.alarms.values() ?? []) }),
  alarmResyncs: () => alarms?.resyncs ?? 0,
  lastCue: () => alarms?.lastCue ?? null,
  latencies: () => [...latency.samples],
  trend: () => trend?.snapshot() ?? null,
  timeBase: () => timeBase(),
  diagram: () => diagram?.stats() ?? null,
  diagramScreenOfSwitch: (name) => diagram?.screenOfSwitch(name) ?? null,
  openSwitchingDialog: (name) => openSwitchingDialog(name),
  flisr: () => operations?.flisrState() ?? null,
  networkMarks: () => network?.marks() ?? null,
  refreshMarks: () => refreshMarks(),
  hosting: () => hostingMap?.stats() ?? null,
  congestion: () => congestionPage?.data() ?? null,
  hostingLayer: (on) => hostingMap?.toggle(on),
  flex: () => flexPage?.stats() ?? null,
};

// -- marks on the network picture: fault flags, FLISR's located sections, earths, tags --------------
const MARKS_PERIOD_MS = 5000;
async function refreshMarks() {
  if (!network) return;
  const [state, flisr] = await Promise.all([api("/api/switching/state"), api("/api/flisr")]);
  const pending = new Set(["proposed", "executing", "stopped"]);
  const faulted = [
    ...state.faults.map((f) => f.node),
    ...flisr.proposals.filter((p) => pending.has(p.state)).flatMap((p) => p.faulted_nodes),
  ];
  const earthed = [
    ...state.earths.map((e) => e.node),
    ...state.documents.filter((d) => d.state === "issued" || d.state === "in_work").flatMap((d) => d.earths),
  ];
  network.setMarks({ faulted, earthed, tags: state.tags.map((t) => [t.switch, t.kind]) });
}
let marksTimer = null;

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
  $("user-label").title = $("user-label").textContent; // the full roles when the label is cut short
  $("note-form").querySelector("button").disabled = !canWrite();
  $("tab-audit").hidden = !canAudit();
  $("tab-users").hidden = !canManageUsers();
  auditPage ??= initAuditPage();
  usersPage ??= initUsersPage({ guarded, me: () => session.user });
  setupSwitchingDialog({ canWrite, switchInfo, onChanged: () => { if (!$("page-switching").hidden) operations?.loadSwitching(); diagram?.loadTags?.(); } });
  operations ??= initOperationsPages({ canWrite, canConfigure, guarded, openSwitch: (name) => openSwitchingDialog(name), switchNames: () => [...switchIds.keys()] });
  outagePages ??= initOutagePages({ canWrite, guarded });
  derPage ??= initDerPage({ canConfigure, guarded });
  anmPanel ??= initAnmPanel();
  congestionPage ??= initCongestionPage({ guarded });
  showPage("network");
  network ??= new NetworkView($("network-canvas"), { onSelect: (hit) => selectElement(hit?.id ?? null), onHover: showTip });
  hostingMap ??= initHostingMap({ network, canConfigure, guarded, nodeName: (id) => gridView.names.get(id) ?? `node ${id}` });
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
  alarmPages ??= initAlarmPages({ alarms, canWrite, canConfigure, onElement: (name) => openElementByName(name), guarded });
  const [grid, state, status] = await Promise.all([api("/api/grid"), api("/api/state"), api("/api/status")]);
  marksTimer ??= setInterval(() => { if (!$("page-network").hidden) refreshMarks().catch(() => {}); }, MARKS_PERIOD_MS);
  timing.gridLoaded = performance.now();
  $("grid-name").textContent = grid.name;
  $("grid-name").title = grid.name;
  elementNames = new Map();
  for (const n of grid.nodes) elementNames.set(n.name, n.id);
  for (const b of grid.branches) { elementNames.set(b.name, b.id); elementNames.set(`${b.kind}:${b.name}`, b.id); }
  for (const s of grid.switches) elementNames.set(s.name, s.id);
  switchIds = new Map(grid.switches.map((s) => [s.name, s.id]));
  gridView = {
    nodes: new Map(grid.nodes.map((n) => [n.id, n])),
    names: new Map([...grid.nodes, ...grid.branches, ...grid.switches].map((e) => [e.id, e.name])),
  };
  trend ??= new Trend({
    chart: $("el-trend"), list: $("trend-series"), range: $("trend-range"), custom: $("trend-custom"),
    from: $("trend-from"), to: $("trend-to"), apply: $("trend-apply"), csv: $("trend-csv"), clear: $("trend-clear"),
    note: $("trend-note"),
  });
  trend.onChange = syncTrendPicks;
  network.setGrid(grid);
  refreshMarks().catch(() => {});
  network.setState(state);
  diagram?.setState(state);
  lastState = state;
  timing.stateLoaded = performance.now();
  showStatus(status);
  await alarms.load();
  operations.startPolling();
  stream?.stop();
  stream = openStream({ onMessage, onEnded: () => {
    // the server ended the session (sign-out elsewhere, disabled, new roles or password)
    stream = null;
    showLogin("Your session has ended: sign in again.");
  }, onState: (ok) => {
    if (ok) alarms.resync(); // the server's full list on every (re)connect: drop what it dropped
    $("st-link").textContent = ok ? "live" : "reconnecting…";
    $("st-link").className = `link-state ${ok ? "ok" : "bad"}`;
  } });
}

function onMessage(msg) {
  if (msg.type === "state") {
    network.setState(msg);
    lastState = msg;
    diagram?.setState(msg);
    if (Number.isFinite(msg.published_at)) latency.pending.push(msg.published_at);
    if (currentElement) renderEstimated(currentElement);
  } else if (msg.type === "alarm") {
    alarms.applyMessage(msg);
  } else if (msg.type === "status") {
    showStatus(msg);
  }
}

// -- status bar ------------------------------------------------------------------------------
function showStatus(s) {
  setTimeBase(s.time_base ?? null, s.time);
  lastStatus = s;
  showClock();
  $("st-cycle").textContent = s.cycle_ms === null || s.cycle_ms === undefined ? "—" : `${Number(s.cycle_ms).toFixed(0)} ms`;
  $("st-observable").textContent = s.observable ? "observable" : "NOT observable";
  $("st-observable").className = s.observable ? "ok" : "bad";
  const t = s.telemetry ?? {};
  $("st-telemetry").textContent = `${t.good ?? "?"}/${t.points ?? "?"} good` + (t.bad ? `, ${t.bad} bad` : "");
  $("st-telemetry").className = t.bad ? "warn" : "ok";
  renderAlarmStatus($("st-alarms"), s.alarms);
  alarms?.setCounts(s.alarms);
}

// the clock the screens run on: simulated in simulation (its speed, or paused), else UTC; ticks between statuses
function showClock() {
  const base = timeBase();
  $("st-clock-label").textContent = simulating() ? "Simulated clock" : "Clock (UTC)";
  $("st-clock").textContent = lastStatus ? fmtMs(nowMs()) : "—";
  $("st-clock").title = `${clockName()} time; ${timeTitle(new Date())}`;
  $("st-speed").textContent = !base ? "" : base.paused ? "PAUSED" : `${Number(base.speed)}×`;
  $("st-speed").className = base?.paused ? "warn" : "muted";
}
setInterval(() => { if (lastStatus) showClock(); }, 1000);
// pages that show times redraw them when the time base changes (a pause, a jump, a new speed)
document.addEventListener("opendso:timebase", () => { if (!$("page-log").hidden) loadLog(); });

// -- pages -----------------------------------------------------------------------------------
function showPage(page) {
  for (const tab of document.querySelectorAll(".tabs [role=tab]")) {
    const on = tab.dataset.page === page;
    tab.setAttribute("aria-selected", String(on));
    $(`page-${tab.dataset.page}`).hidden = !on;
  }
  if (page === "log") loadLog();
  if (page === "alarms") alarms?.renderNow();
  if (page === "audit") auditPage?.load();
  if (page === "users") usersPage?.load();
  if (page === "network") network?.requestDraw();
  if (page === "diagram") openDiagram();
  if (page === "switching") operations?.loadSwitching();
  if (page === "flisr") operations?.loadFlisr();
  if (page === "plans") operations?.loadPlans();
  if (page === "outages") outagePages?.loadOutages();
  if (page === "reliability") outagePages?.loadReliability();
  if (page === "der") {
    derPage?.load();
    anmPanel?.load();
  }
  if (page === "congestion") congestionPage?.load();
  if (page === "flex") {
    flexPage ??= initFlexPage({ network, canWrite, canConfigure, guarded, showPage, nodeIds: () => new Map([...gridView.nodes.values()].map((n) => [n.name, n.id])) });
    flexPage.load();
  }
}

document.querySelectorAll(".tabs [role=tab]").forEach((tab) => tab.addEventListener("click", () => showPage(tab.dataset.page)));
// inputs that do not take typed text (a checkbox, a radio button, a button) leave the shortcuts working
const NON_TEXT_INPUTS = new Set(["checkbox", "radio", "button", "submit", "reset", "range", "color", "file", "image"]);
function typingIn(el) {
  if (!el) return false;
  if (el.isContentEditable || el.tagName === "TEXTAREA" || el.tagName === "SELECT") return true;
  return el.tagName === "INPUT" && !NON_TEXT_INPUTS.has((el.type || "text").toLowerCase());
}
document.addEventListener("keydown", (e) => {
  const typing = typingIn(document.activeElement);
  if (typing || e.ctrlKey || e.metaKey || e.altKey || $("app-view").hidden || document.querySelector("dialog[open]")) return;
  const pages = { 1: "network", 2: "alarms", 3: "log", 4: "audit", 5: "users", 6: "diagram", 7: "switching", 8: "flisr", 9: "plans", o: "outages", r: "reliability", d: "der", c: "congestion", f: "flex" };
  if (pages[e.key] && !$(`tab-${pages[e.key]}`).hidden) { showPage(pages[e.key]); e.preventDefault(); }
  if (e.key === "h" && !$("page-network").hidden) { hostingMap?.toggle(); e.preventDefault(); }
});
$("alarm-banner-go").addEventListener("click", () => showPage("alarms"));
$("flisr-banner-go").addEventListener("click", () => showPage("flisr"));

// -- switching dialog: switching.js; a switch's id and live position for it ------------------------
function switchInfo(name) {
  const id = switchIds.get(name);
  if (id === undefined) return null;
  const closed = network?.valuesOf(id).closed;
  return { id, closed: closed === undefined ? null : Boolean(closed) };
}
$("el-operate").addEventListener("click", () => { if (currentElement?.component === "switch") openSwitchingDialog(currentElement.name); });
$("zoom-in").addEventListener("click", () => network.zoom(1.25));
$("zoom-out").addEventListener("click", () => network.zoom(0.8));
$("zoom-fit").addEventListener("click", () => network.fit());
$("sound-toggle").addEventListener("click", (e) => {
  alarms.soundOn = !alarms.soundOn;
  e.currentTarget.setAttribute("aria-pressed", String(alarms.soundOn));
  e.currentTarget.textContent = alarms.soundOn ? "Sound on" : "Sound off";
  if (alarms.soundOn) alarms.beep(); // also unlocks audio after a user gesture
});

// -- single-line diagram: diagram.js draws it; built on first opening --------------------------
function openDiagram() {
  if (!diagram) {
    diagram = new DiagramView({
      svg: $("diagram-svg"), select: $("diagram-view"), search: $("diagram-search"), results: $("diagram-results"),
      panel: $("diagram-panel"), panelName: $("diagram-panel-name"), panelKind: $("diagram-panel-kind"),
      panelFields: $("diagram-panel-fields"), panelClose: $("diagram-panel-close"), note: $("diagram-note"),
    }, { onElement: (id) => { showPage("network"); selectElement(id, { centre: true }); } });
    $("diagram-zoom-in").addEventListener("click", () => diagram.zoom(1.25));
    $("diagram-zoom-out").addEventListener("click", () => diagram.zoom(0.8));
    $("diagram-zoom-fit").addEventListener("click", () => diagram.fit());
    // a switch's panel on the diagram offers the switching dialog (diagram.js keeps the selected switch)
    new MutationObserver(() => {
      const name = $("diagram-panel-name").textContent;
      $("diagram-operate").hidden = !(diagram?.selected && diagram.selected.name === name);
      $("diagram-operate").textContent = canWrite() ? "Operate…" : "Switch details…";
    }).observe($("diagram-panel-name"), { childList: true, characterData: true, subtree: true });
    $("diagram-operate").addEventListener("click", () => { if (diagram?.selected) openSwitchingDialog(diagram.selected.name); });
  }
  if (lastState) diagram.setState(lastState);
  if (diagram.catalogue) diagram.loadTags();
  diagram.load().catch((err) => {
    console.error(err);
    $("diagram-note").textContent = `Diagram not available: ${err.message}`;
  });
}

function showTip(hit, x, y) {
  const tip = $("hover-tip");
  if (!hit) { tip.hidden = true; return; }
  const v = network.valuesOf(hit.id);
  const extra = v.u_pu !== undefined ? ` · ${fmt(v.u_pu, 3)} p.u.` : v.loading !== undefined ? ` · ${fmt(v.loading * 100, 0)} %` : v.closed !== undefined ? ` · ${v.closed ? "closed" : "OPEN"}` : "";
  tip.textContent = `${hit.type} ${hit.name}${extra}${hit.type === "node" ? hostingMap?.tip(hit.id) ?? "" : ""}`;
  tip.style.left = `${x + 14}px`;
  tip.style.top = `${y + 10}px`;
  tip.hidden = false;
}

// -- alarms page: alarmpages.js wires it (initAlarmPages) ---------------------------------------
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
    trend?.stop();
    network.select(null);
    hostingMap?.showNode(null);
    return;
  }
  network.select(id, { centre });
  hostingMap?.showNode(gridView.nodes.has(id) ? id : null);
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
  $("el-operate").hidden = el.component !== "switch";
  $("el-operate").textContent = canWrite() ? "Operate…" : "Switch details…";
  renderEstimated(el);
  // readable labels with units; ids, zero-sequence data and bookkeeping fields are not shown
  const rows = readableFields(el.fields, { name: (ref) => gridView.names.get(Number(ref)) ?? `element ${ref}` });
  $("el-fields").innerHTML = rows.length
    ? rows.map(([label, text]) => `<dt>${esc(label)}</dt><dd>${esc(text)}</dd>`).join("")
    : "<dt>—</dt><dd>no data</dd>";
  const points = el.points ?? [];
  const info = el.point_info ?? {};
  $("el-points").innerHTML = points.length
    ? points.map((p) => {
      const label = quantityLabel(info[p]);
      const where = p.includes("/") ? p.slice(0, p.lastIndexOf("/")) : p;
      return `<tr data-point="${esc(p)}"><td title="${esc(p)}">${esc(label)}` +
        (where !== el.name ? `<div class="muted small">${esc(where)}</div>` : "") + "</td>" +
        `<td class="num"><span class="pv">…</span> <span class="pu"></span></td><td class="pq"></td>` +
        `<td><input type="checkbox" class="trend-pick" data-point="${esc(p)}" aria-label="Plot ${esc(label)} of ${esc(el.name)}"></td></tr>`;
    }).join("")
    : `<tr><td colspan="4" class="muted">No telemetry on this element.</td></tr>`;
  for (const p of points) loadLatest(p, info[p]);
  trend.showElement(el.name, points, info);
}

/** Tick the measured points that are in the trend. */
function syncTrendPicks() {
  for (const box of document.querySelectorAll("#el-points input.trend-pick")) box.checked = trend.has(box.dataset.point);
}
$("el-points").addEventListener("change", (e) => {
  const box = e.target.closest("input.trend-pick");
  if (!box || !currentElement) return;
  trend.toggle(box.dataset.point, currentElement.point_info?.[box.dataset.point], currentElement.name, box.checked);
});

function renderEstimated(el) {
  const v = network.valuesOf(el.id);
  const rows = [];
  const node = gridView.nodes.get(el.id);
  if (v.u_pu !== undefined) {
    const kv = node && Number.isFinite(v.u_pu) ? ` (${formatQuantity(v.u_pu * node.u_rated_kv * 1000, "V")})` : "";
    rows.push(["Voltage", `${fmt(v.u_pu, 4)} p.u.${kv}`]);
  }
  if (v.loading !== undefined) rows.push(["Loading", `${fmt(v.loading * 100, 1)} %`]);
  if (v.energised !== undefined) rows.push(["Energised", v.energised ? "yes" : "NO (de-energised)"]);
  if (v.closed !== undefined) rows.push(["Position", v.closed ? "closed" : "OPEN"]);
  $("el-estimated").innerHTML = rows.length ? rows.map(([k, x]) => `<dt>${k}</dt><dd>${esc(x)}</dd>`).join("") : "<dt>—</dt><dd>no estimate</dd>";
}

async function loadLatest(point, info) {
  const to = new Date();
  const from = new Date(to.getTime() - 24 * 3600 * 1000);
  try {
    const rows = await api(`/api/measurements/${encodeURIComponent(point)}?from=${from.toISOString()}&to=${to.toISOString()}`);
    const last = rows[rows.length - 1];
    const tr = document.querySelector(`#el-points tr[data-point="${CSS.escape(point)}"]`);
    if (!tr) return;
    const shown = last ? formatPoint(last.value ?? last.mean, info) : { value: "—", unit: "" };
    tr.querySelector(".pv").textContent = shown.value;
    tr.querySelector(".pu").textContent = shown.unit;
    if (last) tr.querySelector(".pv").title = `${fmtTime(last.ts)} (${fmtWall(last.ts)})`;
    tr.querySelector(".pq").textContent = last ? qualityText(last.quality) : "";
    tr.querySelector(".pq").className = `pq ${last?.quality ? "warn" : "ok"}`;
  } catch (err) {
    console.warn(err);
  }
}

$("el-close").addEventListener("click", () => selectElement(null));

// -- event and shift log ---------------------------------------------------------------------
async function loadLog() {
  try {
    const [events, notes] = await Promise.all([api("/api/events?limit=500"), api("/api/shiftlog")]);
    $("event-time-head").textContent = simulating() ? "Time (simulated)" : "Time (UTC)";
    $("event-rows").innerHTML = events.slice().reverse().map((e) =>
      `<tr><td>${e.seq}</td><td class="time">${esc(fmtTime(e.ts))}</td><td class="wall muted">${esc(fmtWall(e.ts))}</td>` +
      `<td>${esc(e.actor)}</td><td>${esc(e.kind)}</td>` +
      `<td>${esc(e.element ?? "")}</td><td class="details" title="${esc(JSON.stringify(e.payload))}">${esc(JSON.stringify(e.payload))}</td></tr>`).join("");
    $("notes").innerHTML = notes.slice().reverse().map((n) =>
      `<li><div class="note-meta" title="${esc(timeTitle(n.ts))}">${esc(fmtTime(n.ts))} · ${esc(n.actor)}</div><div class="note-text">${esc(n.payload?.text ?? "")}</div></li>`).join("")
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

// -- audit trail and users: audit.js and users.js wire their pages -----------------------------

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
