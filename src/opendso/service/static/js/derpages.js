// The DER registry page: the assets (PV, wind, batteries, EV hubs, heat pumps, flexible loads) with their
// connection point, feeder, capacities, control interface and agreement, and the connection queue (first come,
// first served, with positions). Filter by feeder and kind; open an asset for its details and requests.
// Engineers register and edit assets, receive requests and move them along the state machine
// (received -> studied -> offered -> accepted -> connected; withdrawn, rejected), every change naming the
// version they read (the server refuses a stale one with 409). Built with DOM calls (no HTML from data).

import { api } from "./api.js";
import { fmtTime } from "./time.js";
import { clear, h } from "./switching.js";

const $ = (id) => document.getElementById(id);

export const KIND_TEXT = { pv: "PV", wind: "Wind", battery: "Battery", ev_hub: "EV charging hub", heat_pumps: "Heat pumps", flexible_load: "Flexible load" };
export const PRINCIPLE_TEXT = { lifo: "last in, first off", pro_rata: "pro rata", technical_best: "technical best" };
const STATUS_TEXT = { received: "○ received", studied: "◔ studied", offered: "◑ offered", accepted: "◕ accepted", connected: "● connected", withdrawn: "✖ withdrawn", rejected: "⊘ rejected" };
/** The moves of the connection request state machine (the server checks them again). */
export const NEXT = {
  received: ["studied", "withdrawn", "rejected"],
  studied: ["offered", "withdrawn", "rejected"],
  offered: ["accepted", "withdrawn", "rejected"],
  accepted: ["connected", "withdrawn"],
  connected: [],
  withdrawn: [],
  rejected: [],
};
const MOVE_TEXT = { studied: "Studied", offered: "Offer", accepted: "Accepted", connected: "Connected", withdrawn: "Withdraw", rejected: "Reject" };

function kw(v) {
  return v === null || v === undefined || !Number.isFinite(Number(v)) ? "—" : Number(v).toLocaleString("en", { maximumFractionDigits: 1 });
}

/** One line for an agreement: "firm", or "flexible · last in, first off · cap 5 % · limit 200 kW". */
export function agreementText(a) {
  if (!a || a.kind !== "flexible") return "firm";
  return `flexible · ${PRINCIPLE_TEXT[a.principle] ?? a.principle} · cap ${kw(a.curtailment_cap_pct)} % · limit ${kw(a.export_limit_kw)} kW`;
}

/** Wire the DER page. opts: {canConfigure(), guarded(async fn)} */
export function initDerPage({ canConfigure, guarded }) {
  let assets = [];
  let queue = [];
  let selected = null;

  function filters() {
    return { feeder: $("der-feeder").value, kind: $("der-kind").value };
  }

  function shown(asset) {
    const f = filters();
    return (!f.feeder || asset.feeder === f.feeder) && (!f.kind || asset.kind === f.kind);
  }

  function fillFeeders() {
    const keep = $("der-feeder").value;
    const names = [...new Set(assets.map((a) => a.feeder).filter((x) => x))].sort();
    clear($("der-feeder"), h("option", { value: "" }, "all feeders"), names.map((n) => h("option", { value: n }, n)));
    $("der-feeder").value = names.includes(keep) ? keep : "";
  }

  async function load() {
    try {
      [assets, queue] = await Promise.all([api("/api/der/assets"), api("/api/der/queue")]);
    } catch (err) {
      clear($("der-assets"), h("p", { class: "error" }, `Could not read the registry: ${err.message}`));
      return;
    }
    fillFeeders();
    render();
    $("der-new").hidden = !canConfigure();
    if (selected !== null && assets.some((a) => a.id === selected)) openAsset(selected, { quiet: true });
  }

  function render() {
    const list = assets.filter(shown);
    const rows = list.map((a) => h("tr", { class: `der-row${selected === a.id ? " selected" : ""}`, dataset: { asset: a.id }, tabindex: 0,
      onclick: () => openAsset(a.id), onkeydown: (e) => { if (e.key === "Enter") openAsset(a.id); } },
    h("td", {}, a.id), h("td", {}, a.name), h("td", {}, KIND_TEXT[a.kind] ?? a.kind), h("td", {}, a.node), h("td", {}, a.feeder ?? "—"),
    h("td", { class: "num" }, kw(a.export_kw)), h("td", { class: "num" }, kw(a.import_kw)), h("td", { class: "num" }, a.storage_kwh ? kw(a.storage_kwh) : "—"),
    h("td", { class: `der-agreement agreement-${a.agreement.kind}` }, agreementText(a.agreement)), h("td", {}, a.owner)));
    const total = list.reduce((s, a) => s + Number(a.export_kw), 0);
    $("der-summary").textContent = `${list.length} of ${assets.length} asset${assets.length === 1 ? "" : "s"} · ${kw(total / 1000)} MW export`;
    clear($("der-assets"), h("table", { class: "compact ops-table der-table" },
      h("thead", {}, h("tr", {}, ["Asset", "Name", "Kind", "Node", "Feeder", "Export kW", "Import kW", "Storage kWh", "Agreement", "Owner"].map((x) => h("th", { scope: "col" }, x)))),
      h("tbody", { id: "der-asset-rows" }, rows.length ? rows : h("tr", {}, h("td", { colspan: 10, class: "muted" }, "No asset.")))));
    const entries = queue.filter((e) => shown({ ...e.asset, feeder: e.feeder }));
    const qrows = entries.map((e) => h("tr", { class: "der-queue-row", dataset: { request: e.id, status: e.status } },
      h("td", { class: "num" }, String(e.position)), h("td", {}, e.id),
      h("td", {}, h("button", { class: "link", onclick: () => openAsset(e.asset.id) }, e.asset.id)),
      h("td", {}, KIND_TEXT[e.asset.kind] ?? e.asset.kind), h("td", {}, e.node), h("td", {}, e.feeder ?? "—"),
      h("td", { class: "num" }, kw(e.asset.export_kw || e.asset.import_kw)), h("td", { class: `der-status status-${e.status}` }, STATUS_TEXT[e.status] ?? e.status),
      h("td", {}, fmtTime(e.received_at)), h("td", { class: "der-moves" }, canConfigure() ? moveButtons(e) : "")));
    clear($("der-queue"), h("table", { class: "compact ops-table der-table" },
      h("thead", {}, h("tr", {}, ["#", "Request", "Asset", "Kind", "Node", "Feeder", "kW", "Status", "Received", ""].map((x) => h("th", { scope: "col" }, x)))),
      h("tbody", { id: "der-queue-rows" }, qrows.length ? qrows : h("tr", {}, h("td", { colspan: 10, class: "muted" }, "The queue is empty.")))));
  }

  function moveButtons(request) {
    return (NEXT[request.status] ?? []).map((to) => h("button", { class: to === "withdrawn" || to === "rejected" ? "secondary small" : "primary small", dataset: { move: to },
      onclick: () => guarded(async () => {
        const note = to === "rejected" || to === "withdrawn" ? (window.prompt(`Why is ${request.id} ${to}?`) ?? "") : "";
        if ((to === "rejected" || to === "withdrawn") && !note.trim()) return;
        await api(`/api/der/requests/${encodeURIComponent(request.id)}/move`, { method: "POST", body: { version: request.version, to, note } });
        await load();
      }) }, MOVE_TEXT[to]));
  }

  async function openAsset(id, { quiet = false } = {}) {
    selected = id;
    for (const tr of document.querySelectorAll("#der-asset-rows tr")) tr.classList.toggle("selected", tr.dataset.asset === id);
    let a;
    try {
      a = await api(`/api/der/assets/${encodeURIComponent(id)}`);
    } catch (err) {
      if (!quiet) clear($("der-detail"), h("p", { class: "error" }, err.message));
      return;
    }
    const c = a.control;
    const requests = a.requests.map((r) => h("li", { class: "der-request", dataset: { request: r.id } },
      h("strong", {}, r.id), ` ${STATUS_TEXT[r.status] ?? r.status}`, r.position ? ` · queue position ${r.position}` : "", ` · received ${fmtTime(r.received_at)}`,
      h("ol", { class: "der-history" }, r.history.map((t) => h("li", {}, `${fmtTime(t.at)} ${t.from ?? "—"} → ${t.to} by ${t.actor}${t.note ? `: ${t.note}` : ""}`))),
      canConfigure() ? h("div", { class: "der-moves" }, moveButtons(r)) : ""));
    const live = a.requests.some((r) => r.status !== "withdrawn" && r.status !== "rejected");
    clear($("der-detail"),
      h("h3", {}, `${a.name}`), h("p", { class: "muted small" }, `${a.id} · ${KIND_TEXT[a.kind] ?? a.kind} · version ${a.version}`),
      h("dl", { class: "der-facts" },
        h("dt", {}, "Connection point"), h("dd", {}, `${a.node}${a.feeder ? ` (feeder ${a.feeder})` : ""}`),
        h("dt", {}, "Owner"), h("dd", {}, a.owner), h("dt", {}, "Aggregator"), h("dd", {}, a.aggregator || "—"),
        h("dt", {}, "Export"), h("dd", {}, `${kw(a.export_kw)} kW`), h("dt", {}, "Import"), h("dd", {}, `${kw(a.import_kw)} kW`),
        h("dt", {}, "Storage"), h("dd", {}, a.storage_kwh ? `${kw(a.storage_kwh)} kWh` : "—"),
        h("dt", {}, "Control"), h("dd", {}, c.protocol === "none" ? "none" : `${c.protocol} · ${c.address}`),
        h("dt", {}, "Agreement"), h("dd", { class: "der-agreement" }, agreementText(a.agreement))),
      h("h4", {}, "Connection requests"), requests.length ? h("ul", { class: "der-requests" }, requests) : h("p", { class: "muted" }, "None: an existing connection."),
      canConfigure() && !live ? requestForm(a) : "",
      canConfigure() ? assetForm(a) : "");
  }

  function requestForm(a) {
    const id = h("input", { id: "der-req-id", size: 14, placeholder: "request id", "aria-label": "Request id", autocomplete: "off" });
    return h("form", { class: "toolbar inline-form der-request-form", onsubmit: (e) => {
      e.preventDefault();
      guarded(async () => {
        await api("/api/der/requests", { method: "POST", body: { id: id.value.trim(), asset_id: a.id } });
        await load();
      });
    } }, h("strong", {}, "Receive a request"), id, h("button", { type: "submit", class: "primary" }, "Receive"));
  }

  /** The asset form: edits `a` (PUT with its version), or registers a new asset when `a` is null. */
  function assetForm(a) {
    const v = (x, d = "") => (x === null || x === undefined ? d : String(x));
    const field = (name, label, value, attrs = {}) => h("label", { class: "der-field" }, label, h("input", { name, value: v(value), "aria-label": label, autocomplete: "off", ...attrs }));
    const select = (name, label, value, options) => h("label", { class: "der-field" }, label,
      h("select", { name, "aria-label": label }, Object.entries(options).map(([k, t]) => h("option", { value: k, selected: k === value }, t))));
    const ag = a?.agreement ?? { kind: "firm" };
    const form = h("form", { class: "der-form", id: a ? "der-edit" : "der-create" },
      h("h4", {}, a ? "Edit asset" : "New asset"),
      a ? "" : field("id", "Id", "", { required: true, pattern: "[A-Za-z0-9][A-Za-z0-9_.\\-]{0,63}" }),
      field("name", "Name", a?.name, { required: true, maxlength: 200 }),
      select("kind", "Kind", a?.kind ?? "pv", KIND_TEXT),
      field("node", "Node", a?.node, { required: true, maxlength: 200 }),
      field("owner", "Owner", a?.owner, { required: true, maxlength: 200 }),
      field("aggregator", "Aggregator", a?.aggregator, { maxlength: 200 }),
      field("export_kw", "Export kW", a?.export_kw ?? 0, { type: "number", min: 0, step: "any" }),
      field("import_kw", "Import kW", a?.import_kw ?? 0, { type: "number", min: 0, step: "any" }),
      field("storage_kwh", "Storage kWh", a?.storage_kwh ?? 0, { type: "number", min: 0, step: "any" }),
      select("protocol", "Control", a?.control.protocol ?? "none", { none: "none", modbus: "Modbus", iec104: "IEC 104", mqtt: "MQTT", openadr: "OpenADR" }),
      field("address", "Address", a?.control.address, { maxlength: 200 }),
      select("agreement", "Agreement", ag.kind, { firm: "firm", flexible: "flexible" }),
      select("principle", "Principle", ag.principle ?? "lifo", PRINCIPLE_TEXT),
      field("cap", "Curtailment cap %", ag.curtailment_cap_pct ?? "", { type: "number", min: 0, max: 100, step: "any" }),
      field("limit", "Export limit kW", ag.export_limit_kw ?? "", { type: "number", min: 0, step: "any" }),
      h("div", { class: "plan-buttons" }, h("button", { type: "submit", class: "primary" }, a ? "Save" : "Register"), h("span", { class: "muted small der-form-result", role: "status" })));
    form.addEventListener("submit", (e) => {
      e.preventDefault();
      const f = form.elements;
      const flexible = f.agreement.value === "flexible";
      const body = {
        id: a ? a.id : f.id.value.trim(), name: f.name.value, kind: f.kind.value, node: f.node.value, owner: f.owner.value, aggregator: f.aggregator.value,
        export_kw: Number(f.export_kw.value), import_kw: Number(f.import_kw.value), storage_kwh: Number(f.storage_kwh.value),
        control: { protocol: f.protocol.value, address: f.protocol.value === "none" ? "" : f.address.value },
        agreement: flexible ? { kind: "flexible", principle: f.principle.value, curtailment_cap_pct: Number(f.cap.value), export_limit_kw: Number(f.limit.value) } : { kind: "firm" },
      };
      guarded(async () => {
        if (a) await api(`/api/der/assets/${encodeURIComponent(a.id)}`, { method: "PUT", body: { version: a.version, asset: body } });
        else await api("/api/der/assets", { method: "POST", body });
        selected = body.id;
        await load();
      });
    });
    return form;
  }

  $("der-refresh").addEventListener("click", () => load());
  $("der-feeder").addEventListener("change", () => render());
  $("der-kind").addEventListener("change", () => render());
  $("der-new").addEventListener("click", () => { selected = null; clear($("der-detail"), assetForm(null)); });
  return { load };
}
