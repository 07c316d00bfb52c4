// The outage pages: "Outages" (open and past outages with the customers off, start, ETR, crew and restoration
// steps; an operator logs a customer call, assigns a crew, sets the ETR, records a step, confirms, closes or
// cancels) and "Reliability" (IEEE 1366 SAIDI, SAIFI, CAIDI, MAIFI_E, ASAI ... for a period in a time zone, from
// GET /api/reliability, and a uPlot chart of daily SAIDI with the T_MED line and the major event days marked).
// Built with DOM calls (no HTML from data). Times are on the operator's clock (time.js).

import { api } from "./api.js";
import { fmtTime, nowMs } from "./time.js";
import { clear, h } from "./switching.js";

const $ = (id) => document.getElementById(id);
const OUTAGE_STATE = { predicted: "◌ predicted (from calls)", confirmed: "● confirmed", restoring: "◐ restoring", restored: "✔ restored", cancelled: "✖ cancelled" };
const OPEN = new Set(["predicted", "confirmed", "restoring"]);

function num(v, digits) {
  return v === null || v === undefined || !Number.isFinite(Number(v)) ? "—" : Number(v).toFixed(digits);
}

/** "2016-06-21T11:00" (a datetime-local value, UTC) -> ISO 8601 UTC. */
function isoOfLocalInput(value) {
  return value ? new Date(`${value}${value.length === 16 ? ":00" : ""}Z`).toISOString() : null;
}

/** Wire the outage and reliability pages. opts: {canWrite(), guarded(async fn)} */
export function initOutagePages({ canWrite, guarded }) {
  let outages = [];
  let selected = null;

  async function loadOutages() {
    try {
      outages = await api("/api/outages?limit=200");
    } catch (err) {
      clear($("outage-list"), h("p", { class: "error" }, `Could not read the outages: ${err.message}`));
      return;
    }
    const showClosed = $("outage-show-closed").checked;
    const shown = outages.filter((o) => showClosed || OPEN.has(o.state));
    const rows = shown.map((o) => h("tr", { class: `outage-row${selected === o.id ? " selected" : ""}`, dataset: { outage: o.id, state: o.state }, tabindex: 0,
      onclick: () => openOutage(o.id), onkeydown: (e) => { if (e.key === "Enter") openOutage(o.id); } },
    h("td", {}, `#${o.id}`), h("td", { class: `outage-state state-${o.state}` }, OUTAGE_STATE[o.state] ?? o.state), h("td", {}, o.source),
    h("td", {}, o.device ?? "—"), h("td", {}, fmtTime(o.start)), h("td", { class: "num outage-off" }, `${o.customers_off} of ${o.customers}`),
    h("td", {}, o.etr ? fmtTime(o.etr) : "—"), h("td", {}, o.crew ?? "—"), h("td", {}, o.end ? fmtTime(o.end) : "—"), h("td", {}, o.cause ?? "")));
    const open = outages.filter((o) => OPEN.has(o.state));
    $("outage-summary").textContent = `${open.length} open outage${open.length === 1 ? "" : "s"}, ${open.reduce((s, o) => s + o.customers_off, 0)} customers off`;
    clear($("outage-list"), h("table", { class: "compact ops-table" },
      h("thead", {}, h("tr", {}, ["Outage", "State", "From", "Device", "Start", "Customers off", "ETR", "Crew", "End", "Cause"].map((x) => h("th", { scope: "col" }, x)))),
      h("tbody", { id: "outage-rows" }, rows.length ? rows : h("tr", {}, h("td", { colspan: 10, class: "muted" }, "No open outage.")))));
    if (selected !== null) openOutage(selected, { quiet: true });
  }

  async function openOutage(id, { quiet = false } = {}) {
    let o;
    try {
      o = await api(`/api/outages/${id}`);
    } catch (err) {
      if (!quiet) alert(`Not found: ${err.message}`);
      return;
    }
    if (selected !== id) { selected = id; for (const tr of document.querySelectorAll("#outage-rows tr")) tr.classList.toggle("selected", tr.dataset.outage === String(id)); }
    const w = canWrite() && OPEN.has(o.state);
    const change = (path, body) => guarded(async () => { await api(`/api/outages/${id}/${path}`, { method: "POST", body }); await loadOutages(); });
    const actions = [];
    if (w) {
      const crew = h("input", { id: "outage-crew", placeholder: "crew", size: 16, maxlength: 200, "aria-label": "Crew" });
      actions.push(h("div", { class: "inline-form" }, crew, h("button", { type: "button", class: "secondary", id: "outage-crew-set", onclick: () => crew.value.trim() && change("crew", { crew: crew.value.trim() }) }, "Send crew")));
      const etr = h("input", { id: "outage-etr", type: "datetime-local", "aria-label": "Estimated restoration time (UTC)" });
      actions.push(h("div", { class: "inline-form" }, h("label", { for: "outage-etr" }, "ETR (UTC)"), etr,
        h("button", { type: "button", class: "secondary", id: "outage-etr-set", onclick: () => etr.value && change("etr", { etr: isoOfLocalInput(etr.value) }) }, "Set ETR")));
      const customers = h("input", { id: "outage-step-customers", type: "number", min: 0, step: 1, size: 6, "aria-label": "Customers restored" });
      actions.push(h("div", { class: "inline-form" }, h("label", { for: "outage-step-customers" }, "Customers restored now"), customers,
        h("button", { type: "button", class: "secondary", id: "outage-step-add", onclick: () => customers.value !== "" && change("steps", { customers: Number(customers.value) }) }, "Record step")));
      const cause = h("input", { id: "outage-cause", placeholder: "cause (when known)", size: 24, maxlength: 2000, "aria-label": "Cause" });
      actions.push(h("div", { class: "inline-form" }, cause,
        h("button", { type: "button", class: "primary", id: "outage-close", onclick: () => change("close", cause.value.trim() ? { cause: cause.value.trim() } : {}) }, "Close: everyone restored")));
      if (o.state === "predicted") {
        actions.push(h("div", { class: "inline-form" },
          h("button", { type: "button", class: "secondary", id: "outage-confirm", onclick: () => change("confirm", undefined) }, "Confirm (seen by crew or SCADA)"),
          h("button", { type: "button", class: "secondary", id: "outage-cancel", onclick: () => change("cancel", undefined) }, "Cancel: no outage")));
      }
    }
    clear($("outage-detail"),
      h("h3", {}, `Outage #${o.id} `, h("span", { class: `outage-state state-${o.state}` }, OUTAGE_STATE[o.state] ?? o.state)),
      h("dl", { class: "kv" },
        h("dt", {}, "Device"), h("dd", {}, o.device ?? "—"), h("dt", {}, "Feeder"), h("dd", {}, o.feeder ?? "—"),
        h("dt", {}, "Start"), h("dd", {}, fmtTime(o.start)), h("dt", {}, "Customers"), h("dd", {}, `${o.customers_off} off of ${o.customers}${o.loads_known ? "" : " (estimated)"}`),
        h("dt", {}, "Nodes"), h("dd", {}, `${o.nodes.length}${o.nodes.length ? `: ${o.nodes.slice(0, 5).join(", ")}${o.nodes.length > 5 ? "…" : ""}` : ""}`),
        h("dt", {}, "ETR"), h("dd", {}, o.etr ? fmtTime(o.etr) : "—"), h("dt", {}, "Crew"), h("dd", {}, o.crew ? `${o.crew} (since ${fmtTime(o.crew_assigned)})` : "—")),
      h("h4", {}, "Restoration steps"),
      o.steps.length ? h("ol", { id: "outage-steps" }, o.steps.map((s) => h("li", {}, `${fmtTime(s.end)}: ${s.customers} customers back${s.feeder ? ` (${s.feeder})` : ""} · ${s.actor}`)))
        : h("p", { class: "muted" }, "None yet."),
      h("h4", {}, `Customer calls (${o.calls?.length ?? 0})`),
      o.calls?.length ? h("ul", { id: "outage-calls" }, o.calls.map((c) => h("li", { class: "outage-call" }, `${fmtTime(c.time)} · ${c.load ?? c.node}: `, c.text, h("span", { class: "muted small" }, ` (${c.actor})`))))
        : h("p", { class: "muted" }, "No call."),
      actions.length ? [h("h4", {}, "Actions"), actions] : null);
  }

  $("outages-refresh").addEventListener("click", loadOutages);
  $("outage-show-closed").addEventListener("change", loadOutages);
  $("call-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const where = $("call-where").value.trim();
    const text = $("call-text").value.trim();
    if (!where || !text) return;
    guarded(async () => {
      const body = { text, [$("call-kind").value]: where };
      const answer = await api("/api/outages/calls", { method: "POST", body });
      $("call-text").value = "";
      $("call-result").textContent = `Call logged: joined outage #${answer.outage.id} (${answer.outage.customers_off} customers off, device ${answer.outage.device ?? "—"}).`;
      selected = answer.outage.id;
      await loadOutages();
    });
  });

  // -- Reliability ---------------------------------------------------------------------------------
  let chart = null;
  function defaults() {
    if ($("rel-from").value) return;
    const year = new Date(nowMs()).getUTCFullYear();
    $("rel-from").value = `${year}-01-01`;
    $("rel-to").value = `${year + 1}-01-01`;
  }

  async function loadReliability() {
    defaults();
    const tz = $("rel-tz").value.trim() || "UTC";
    const from = `${$("rel-from").value}T00:00:00Z`;
    const to = `${$("rel-to").value}T00:00:00Z`;
    const q = new URLSearchParams({ from, to, tz });
    let r;
    try {
      r = await api(`/api/reliability?${q}`);
    } catch (err) {
      clear($("rel-figures"), h("p", { class: "error", role: "alert" }, `Not computed: ${err.message}`));
      return;
    }
    const fig = (label, id, value, note) => [h("dt", {}, label), h("dd", { id }, value, note ? h("span", { class: "muted small" }, ` ${note}`) : null)];
    clear($("rel-figures"), h("dl", { class: "kv rel-figures" },
      fig("SAIDI", "rel-saidi", `${num(r.saidi_min, 2)} min`, `without major event days ${num(r.without_med?.saidi_min, 2)} min`),
      fig("SAIFI", "rel-saifi", num(r.saifi, 4), `without MED ${num(r.without_med?.saifi, 4)}`),
      fig("CAIDI", "rel-caidi", r.caidi_min === null ? "— (no sustained interruption)" : `${num(r.caidi_min, 1)} min`, `without MED ${num(r.without_med?.caidi_min, 1)}`),
      fig("MAIFI_E", "rel-maifi", num(r.maifi_e, 4), "momentary events (≤ 5 min)"),
      fig("ASAI", "rel-asai", num(r.asai, 6), null),
      r.caifi !== undefined ? fig("CAIFI", "rel-caifi", num(r.caifi, 3), null) : null,
      r.ctaidi_min !== undefined ? fig("CTAIDI", "rel-ctaidi", r.ctaidi_min === null ? "—" : `${num(r.ctaidi_min, 1)} min`, null) : null,
      fig("Customer minutes", "rel-cmin", num(r.customer_minutes, 0), `of ${r.customers_served} customers served`),
      fig("Energy not supplied", "rel-ens", r.ens_mwh === null ? "— (no energy data)" : `${num(r.ens_mwh, 3)} MWh`, null),
      fig("T_MED", "rel-tmed", r.t_med_min === null ? "— (no history before the period)" : `${num(r.t_med_min, 2)} min/day`, "2.5 beta method, five years before the period"),
      fig("Major event days", "rel-med", r.major_event_days.length ? r.major_event_days.join(", ") : "none", null)));
    // the server's daily SAIDI: the series T_MED is compared with
    const daily = new Map(r.daily_saidi.map((d) => [d.date, d.saidi_min]));
    drawDaily(daily, r, [Date.parse(from) / 1000, Date.parse(to) / 1000]);
  }

  function drawDaily(daily, r, period) {
    const box = $("rel-chart");
    chart?.destroy();
    chart = null;
    const days = [...daily.keys()].sort();
    for (const d of r.major_event_days) if (!daily.has(d)) days.push(d);
    days.sort();
    if (!days.length || typeof uPlot === "undefined") {
      clear(box, h("p", { class: "muted", id: "rel-chart-empty" }, "No sustained interruption in the period: nothing to plot."));
      return;
    }
    clear(box);
    // the period's ends carry no bar, so that the T_MED line spans the whole period
    const xs = [period[0], ...days.map((d) => Date.parse(`${d}T12:00:00Z`) / 1000), period[1]];
    const ys = [null, ...days.map((d) => daily.get(d) ?? 0), null];
    const med = new Set(r.major_event_days);
    const meds = [null, ...days.map((d, i) => (med.has(d) ? ys[i + 1] : null)), null];
    const tmed = xs.map(() => r.t_med_min);
    const bars = uPlot.paths?.bars ? uPlot.paths.bars({ size: [0.6, 24] }) : undefined;
    const opts = {
      width: Math.max(400, box.clientWidth || 800), height: 280,
      tzDate: (ts) => uPlot.tzDate(new Date(ts * 1e3), "Etc/UTC"),
      scales: { x: { time: true, range: () => period }, y: { range: (u, lo, hi) => [0, Math.max(hi, r.t_med_min ?? 0) * 1.15 || 1] } },
      axes: [{ stroke: "#c9d1d9", grid: { stroke: "#2a313a" } }, { stroke: "#c9d1d9", grid: { stroke: "#2a313a" }, label: "daily SAIDI (min)" }],
      series: [
        { label: "day" },
        { label: "daily SAIDI (min)", stroke: "#56b4e9", fill: "rgba(86,180,233,0.5)", paths: bars, points: { show: false } },
        { label: "T_MED (min)", stroke: "#e69f00", width: 2, dash: [6, 4], points: { show: false } },
        { label: "major event day", stroke: "#d55e00", width: 0, paths: () => null, points: { show: true, size: 12, fill: "#d55e00", stroke: "#ffffff" } },
      ],
    };
    chart = new uPlot(opts, [xs, ys, tmed, meds], box);
    box.dataset.days = String(days.length);
  }
  $("rel-run").addEventListener("click", loadReliability);

  return { loadOutages, loadReliability };
}
