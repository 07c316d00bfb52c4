// The demand-response panel: the OpenADR VTN (on or off, its URL, the latest refusals), the enrolled VENs with
// their registration state, and every event with its signal, intervals, targets, origin, status and each VEN's
// opt-in or opt-out. Operators create and cancel events (POST /api/dr/events, .../cancel); engineers enroll and
// withdraw VENs (POST/DELETE /api/dr/enrollments). Read from GET /api/dr and GET /api/dr/events, refreshed every
// few seconds while the panel is on screen. Times are real time (fmtWall): VENs act on the wall clock, not on
// the field simulator's. Built with DOM calls (no HTML from data), so the strict CSP holds.

import { api } from "./api.js";
import { fmtWall } from "./time.js";
import { clear, h } from "./switching.js";

const REFRESH_MS = 5000;
const LEVEL_TEXT = { 0: "0 normal", 1: "1 moderate", 2: "2 high", 3: "3 special" };
const STATUS_TEXT = { far: "scheduled", near: "starting soon", active: "▶ active", completed: "✔ completed", cancelled: "✖ cancelled" };
const OPT_TEXT = { optIn: "✔ opted in", optOut: "✖ opted out" };

function signalValue(signal, value) {
  return signal === "level" ? LEVEL_TEXT[value] ?? String(value) : `${Number(value).toLocaleString("en", { maximumFractionDigits: 4 })} /kWh`;
}

function listOf(text) {
  return String(text).split(",").map((s) => s.trim()).filter(Boolean);
}

function vtnBlock(state) {
  if (!state.on) {
    return h("p", { class: "muted dr-off" }, "Demand response is off (set OPENDSO_OPENADR_CERT, OPENDSO_OPENADR_KEY and OPENDSO_OPENADR_CA).");
  }
  return h("div", { class: "dr-vtn" },
    h("p", {}, "VTN ", h("strong", {}, state.vtn_id), " at ", h("code", {}, state.url), ` · VENs poll every ${state.poll_s} s · mutual TLS`),
    state.refusals.length
      ? h("details", { class: "dr-refusals" }, h("summary", {}, `${state.refusals.length} recent refusal(s)`),
        h("ul", {}, state.refusals.map((r) => h("li", {}, `${fmtWall(r.at)} ${r.ven_name || r.ven_id || "?"}: ${r.reason} (${r.detail})`))))
      : null);
}

function vensTable(state, { guarded, canConfigure, reload }) {
  if (!state.vens.length) return h("p", { class: "muted" }, "No VEN enrolled.");
  return h("table", { class: "grid-table dr-vens" },
    h("thead", {}, h("tr", {}, ["VEN", "venID", "Party", "Assets", "Fingerprint", "Registered", ""].map((t) => h("th", {}, t)))),
    h("tbody", {}, state.vens.map((v) => h("tr", { class: `dr-ven${v.registered ? " registered" : ""}`, dataset: { ven: v.ven_name } },
      h("td", {}, v.ven_name), h("td", {}, h("code", {}, v.ven_id)), h("td", {}, v.party), h("td", {}, v.assets.join(", ")),
      h("td", {}, h("code", { class: "small" }, v.fingerprint)), h("td", {}, v.registered ? "✔ registered" : "— not yet"),
      h("td", {}, canConfigure()
        ? h("button", { type: "button", onclick: () => guarded(async () => {
          if (!confirm(`Withdraw the enrollment of ${v.ven_name}? It can no longer register or receive events.`)) return;
          await api(`/api/dr/enrollments/${encodeURIComponent(v.ven_name)}`, { method: "DELETE" });
          await reload();
        }) }, "Withdraw")
        : null)))));
}

function eventsTable(events, { guarded, canWrite, reload }) {
  if (!events.length) return h("p", { class: "muted" }, "No demand-response event.");
  return h("table", { class: "grid-table dr-events" },
    h("thead", {}, h("tr", {}, ["Event", "Signal", "Intervals (real time)", "Targets", "Origin", "Status", "VEN answers", "Reason", ""].map((t) => h("th", {}, t)))),
    h("tbody", {}, events.map((e) => h("tr", { class: `dr-event status-${e.status}`, dataset: { event: e.id } },
      h("td", {}, e.id),
      h("td", {}, e.signal),
      h("td", {}, h("ul", { class: "plain" }, e.intervals.map((i) => h("li", {}, `${fmtWall(i.start)} · ${Math.round(i.duration_s / 60)} min · ${signalValue(e.signal, i.value)}`)))),
      h("td", {}, [...e.vens, ...e.resources].join(", ")),
      h("td", {}, e.origin),
      h("td", {}, STATUS_TEXT[e.status] ?? e.status),
      h("td", {}, h("ul", { class: "plain dr-opts" }, Object.entries(e.opts).map(([ven, opt]) =>
        h("li", { dataset: { ven } }, `${ven}: ${opt ? `${OPT_TEXT[opt.opt] ?? opt.opt} (${fmtWall(opt.at)})` : "… no answer yet"}`)))),
      h("td", {}, e.reason),
      h("td", {}, canWrite() && e.status !== "cancelled" && e.status !== "completed"
        ? h("button", { type: "button", onclick: () => guarded(async () => {
          if (!confirm(`Cancel event ${e.id} for every VEN it went to?`)) return;
          await api(`/api/dr/events/${encodeURIComponent(e.id)}/cancel`, { method: "POST" });
          await reload();
        }) }, "Cancel")
        : null)))));
}

/** The operator's new-event form: signal, first start, N consecutive intervals of one length, values, targets. */
function eventForm({ guarded, reload }) {
  const signal = h("select", { name: "signal" }, h("option", { value: "level" }, "level (SIMPLE 0-3)"), h("option", { value: "price" }, "price (per kWh)"));
  const start = h("input", { type: "datetime-local", name: "start", required: true });
  const minutes = h("input", { type: "number", name: "minutes", min: "1", step: "1", value: "15", required: true });
  const values = h("input", { type: "text", name: "values", placeholder: "2, 1 (one per interval)", required: true });
  const vens = h("input", { type: "text", name: "vens", placeholder: "VEN names, comma-separated" });
  const assets = h("input", { type: "text", name: "assets", placeholder: "or asset ids, comma-separated" });
  const reason = h("input", { type: "text", name: "reason", maxlength: "500", required: true, placeholder: "reason" });
  const result = h("span", { class: "muted small dr-form-result", role: "status" });
  const form = h("form", { class: "toolbar inline-form dr-event-form" },
    h("label", {}, "Signal ", signal), h("label", {}, "Start ", start), h("label", {}, "Minutes each ", minutes),
    h("label", {}, "Values ", values), h("label", {}, "VENs ", vens), h("label", {}, "Assets ", assets),
    h("label", {}, "Reason ", reason), h("button", { type: "submit", class: "primary" }, "Send event"), result);
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    guarded(async () => {
      const first = new Date(start.value); // the browser's local time, sent with its zone (UTC)
      if (Number.isNaN(first.getTime())) throw new Error("start: choose a date and time");
      const seconds = Math.round(Number(minutes.value) * 60);
      const intervals = listOf(values.value).map((v, k) => ({
        start: new Date(first.getTime() + k * seconds * 1000).toISOString(), duration_s: seconds, value: Number(v),
      }));
      const made = await api("/api/dr/events", {
        method: "POST",
        body: { signal: signal.value, intervals, vens: listOf(vens.value), assets: listOf(assets.value), reason: reason.value },
      });
      result.textContent = `Sent ${made.id} to ${made.targeted_vens.join(", ")}`;
      await reload();
    });
  });
  return form;
}

/** The engineer's enrollment form: VEN name, certificate fingerprint, assets, party. */
function enrollmentForm({ guarded, reload }) {
  const name = h("input", { type: "text", name: "ven_name", required: true, maxlength: "200", placeholder: "VEN name" });
  const fingerprint = h("input", { type: "text", name: "fingerprint", required: true, placeholder: "AB:CD:… (10 hex pairs)", size: "32" });
  const assets = h("input", { type: "text", name: "assets", required: true, placeholder: "asset ids, comma-separated" });
  const party = h("input", { type: "text", name: "party", required: true, maxlength: "200", placeholder: "owner or aggregator" });
  const result = h("span", { class: "muted small dr-form-result", role: "status" });
  const form = h("form", { class: "toolbar inline-form dr-enroll-form" },
    h("label", {}, "VEN ", name), h("label", {}, "Fingerprint ", fingerprint), h("label", {}, "Assets ", assets),
    h("label", {}, "Party ", party), h("button", { type: "submit", class: "primary" }, "Enroll"), result);
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    guarded(async () => {
      const made = await api("/api/dr/enrollments", {
        method: "POST",
        body: { ven_name: name.value, fingerprint: fingerprint.value, assets: listOf(assets.value), party: party.value },
      });
      result.textContent = `Enrolled ${made.ven_name} as ${made.ven_id}`;
      form.reset();
      await reload();
    });
  });
  return form;
}

/**
 * Render the demand-response panel into `container`; returns {load()} (call it when the page opens).
 * opts: {guarded(async fn), canWrite() (operators: events), canConfigure() (engineers: enrollments)}.
 */
export function initDrPanel(container, { guarded, canWrite, canConfigure }) {
  const status = h("p", { class: "dr-status muted" }, "Reading demand response…");
  const vtnBox = h("div", { class: "dr-vtn-box" });
  const vensBox = h("div", { class: "dr-vens-box" });
  const eventsBox = h("div", { class: "dr-events-box" });
  const formsBox = h("div", { class: "dr-forms" });
  clear(container,
    h("h3", {}, "Demand response (OpenADR 2.0b)"), status, vtnBox,
    h("h4", {}, "Enrolled VENs"), vensBox,
    h("h4", {}, "Events"), eventsBox, formsBox);
  let timer = null;
  let formsOn = null;

  async function load() {
    let state;
    let events;
    try {
      [state, events] = await Promise.all([api("/api/dr"), api("/api/dr/events")]);
    } catch (err) {
      status.textContent = `Could not read demand response: ${err.message}`;
      status.className = "dr-status error";
      return;
    }
    const opts = { guarded, canWrite, canConfigure, reload: load };
    status.className = "dr-status muted";
    status.textContent = state.on
      ? `on · ${state.vens.filter((v) => v.registered).length} of ${state.vens.length} VEN(s) registered · ${events.events.length} event(s)`
      : "off";
    clear(vtnBox, vtnBlock(state));
    clear(vensBox, state.on ? vensTable(state, opts) : []);
    clear(eventsBox, state.on ? eventsTable(events.events, opts) : []);
    if (formsOn !== state.on) { // build the forms once per on/off change, so typing is not lost on refresh
      formsOn = state.on;
      clear(formsBox, state.on
        ? [canWrite() ? [h("h4", {}, "New event"), eventForm(opts)] : null,
          canConfigure() ? [h("h4", {}, "Enroll a VEN"), enrollmentForm(opts)] : null]
        : []);
    }
    timer ??= setInterval(() => {
      if (!container.isConnected) { clearInterval(timer); timer = null; return; }
      if (container.offsetParent !== null) load();
    }, REFRESH_MS);
  }

  return { load };
}
