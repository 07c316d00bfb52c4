// The active network management panel of the DER page: whether ANM runs, the constraints it holds (element,
// loading or voltage against its trigger, escalation), and every flexible DER with its owner, principle of access,
// the limit ANM asks, the limit in force and the application that owns it, and the energy curtailed so far against
// the agreement's cap. Read only (GET /api/anm): limits reach the field through the set-point arbiter. Refreshed
// when the DER page opens and every few seconds while it shows. Built with DOM calls (no HTML from data).

import { api } from "./api.js";
import { fmtTime } from "./time.js";
import { clear, h } from "./switching.js";
import { PRINCIPLE_TEXT } from "./derpages.js";

const $ = (id) => document.getElementById(id);
const REFRESH_MS = 5000;
const ESCALATION_TEXT = { none: "", alarm: "⚠ alarm", fail_safe: "⚠ fail-safe limits", trip: "⛔ trip" };

function num(v, digits = 1) {
  return v === null || v === undefined || !Number.isFinite(Number(v)) ? "—" : Number(v).toLocaleString("en", { maximumFractionDigits: digits });
}

/** A constraint's value as operators read it: a loading in %, a voltage in p.u. */
export function constraintValue(kind, value) {
  if (value === null || value === undefined) return "—";
  return kind === "voltage" ? `${num(value, 3)} p.u.` : `${num(100 * value, 0)} %`;
}

function constraintsTable(constraints) {
  if (!constraints.length) return h("p", { class: "muted" }, "No active constraint: every flexible DER may export its rating.");
  return h("table", { class: "grid-table anm-constraints" },
    h("thead", {}, h("tr", {}, ["Element", "Kind", "Now", "Trigger", "Release", "Since", "Escalation", "DER limited"].map((t) => h("th", {}, t)))),
    h("tbody", {}, constraints.map((c) => h("tr", { class: `anm-constraint escalation-${c.escalation}`, dataset: { element: c.element } },
      h("td", {}, c.element), h("td", {}, c.kind),
      h("td", { class: "num" }, constraintValue(c.kind, c.value)), h("td", { class: "num" }, constraintValue(c.kind, c.trigger)),
      h("td", { class: "num" }, constraintValue(c.kind, c.release)), h("td", {}, fmtTime(c.since)),
      h("td", {}, ESCALATION_TEXT[c.escalation] ?? c.escalation), h("td", { class: "num" }, String(Object.keys(c.limits_w).length))))));
}

function dersTable(ders) {
  if (!ders.length) return h("p", { class: "muted" }, "No flexible DER under ANM.");
  return h("table", { class: "grid-table anm-ders" },
    h("thead", {}, h("tr", {}, ["Asset", "Name", "Owner", "Principle", "Rating kW", "ANM limit kW", "In force kW", "Set by", "Curtailed kWh", "Of cap"].map((t) => h("th", {}, t)))),
    h("tbody", {}, ders.map((d) => {
      const cap = d.account.cap_mwh;
      const share = cap ? `${num((100 * d.curtailed_mwh) / cap, 1)} %` : "—";
      return h("tr", { class: `anm-der${d.limit_kw !== null ? " limited" : ""}`, dataset: { asset: d.asset } },
        h("td", {}, d.asset), h("td", {}, d.name), h("td", {}, d.owner), h("td", {}, PRINCIPLE_TEXT[d.principle] ?? d.principle),
        h("td", { class: "num" }, num(d.rating_kw)), h("td", { class: "num anm-limit" }, num(d.anm_limit_kw)),
        h("td", { class: "num" }, num(d.limit_kw)), h("td", {}, d.limit_owner ?? "—"),
        h("td", { class: "num anm-curtailed" }, num(1000 * d.curtailed_mwh, 2)), h("td", { class: "num" }, share));
    })));
}

/** Wire the panel; returns {load()} (the DER page calls it when it opens). */
export function initAnmPanel() {
  let timer = null;

  async function load() {
    let state;
    try {
      state = await api("/api/anm");
    } catch (err) {
      clear($("anm-panel"), h("p", { class: "error" }, `Could not read ANM: ${err.message}`));
      return;
    }
    const total = state.curtailment?.total_mwh ?? 0;
    $("anm-summary").textContent = state.running
      ? `running · ${state.constraints.length} active constraint(s) · ${num(1000 * total, 2)} kWh curtailed`
      : "off (OPENDSO_RUN_ANM)";
    clear($("anm-panel"), state.running ? [constraintsTable(state.constraints), dersTable(state.ders)] : []);
    timer ??= setInterval(() => { if (!$("page-der").hidden) load(); }, REFRESH_MS);
  }

  return { load };
}
