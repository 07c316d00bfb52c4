// The hosting-capacity layer of the network map: every studied node coloured by its available
// generation or load hosting capacity (MW, a log scale: capacities span 0.01 to 100 MW), a legend
// with the scale, the binding limit of a node (kind, element, profile step and its time) in the
// tooltip and the layer's panel, the study's status and progress, "Run study" for engineers, and
// the GeoJSON export for GIS. Reads and starts studies through /api/hosting-capacity; built with
// DOM calls (no HTML from data). Toggled by its map control or the key h on the network page.

import { api } from "./api.js";
import { clear, h } from "./switching.js";

const $ = (id) => document.getElementById(id);

// red (little room) .. yellow .. blue (much room): ColorBrewer RdYlBu, readable under the common
// colour-vision deficiencies; the number is in the tooltip and the panel as well
const STOPS = ["#d73027", "#f46d43", "#fdae61", "#fee090", "#e0f3f8", "#abd9e9", "#74add1", "#4575b4"];
export const HC_BINS = 16;
const NOT_STUDIED = "#5a616b";
const POLL_MS = 1000; // while a study runs
const IDLE_POLL_MS = 15000; // while the layer is on: a study someone else started shows up
const MEASURE_TEXT = { generation_mw: "generation", load_mw: "load" };
const LIMIT_TEXT = { voltage: "voltage", thermal: "thermal" };

function rgb(hex) {
  const n = parseInt(hex.slice(1), 16);
  return [(n >> 16) & 255, (n >> 8) & 255, n & 255];
}

function interpolate(stops, t) {
  const x = Math.min(Math.max(t, 0), 1) * (stops.length - 1);
  const i = Math.min(Math.floor(x), stops.length - 2);
  const a = rgb(stops[i]);
  const b = rgb(stops[i + 1]);
  const c = a.map((v, k) => Math.round(v + (b[k] - v) * (x - i)));
  return `rgb(${c[0]},${c[1]},${c[2]})`;
}

/** The layer's palette: HC_BINS colours from the least to the most hosting capacity. */
export const HC_PALETTE = Array.from({ length: HC_BINS }, (_, i) => interpolate(STOPS, i / (HC_BINS - 1)));

/** MW as people read it: three significant figures, kW below 1 MW. */
export function fmtMw(v) {
  if (!Number.isFinite(v)) return "—";
  if (v === 0) return "0 MW";
  if (Math.abs(v) < 1) return `${Number((v * 1000).toPrecision(3))} kW`;
  return `${Number(v.toPrecision(3))} MW`;
}

/** A log scale over the positive values: whole decades around them (at least one decade). */
export function scaleOf(values) {
  const positive = values.filter((v) => Number.isFinite(v) && v > 0);
  if (!positive.length) return { lo: 0.01, hi: 1 };
  let lo = 10 ** Math.floor(Math.log10(Math.min(...positive)));
  let hi = 10 ** Math.ceil(Math.log10(Math.max(...positive)));
  lo = Math.max(lo, 0.001);
  if (hi <= lo) hi = lo * 10;
  return { lo, hi };
}

/** The colour bin of a value on a scale (0 MW and below the scale: the first bin). */
export function binOf(value, { lo, hi }) {
  if (!(value > 0)) return 0;
  const t = (Math.log10(value) - Math.log10(lo)) / (Math.log10(hi) - Math.log10(lo));
  return Math.min(HC_BINS - 1, Math.max(0, Math.round(t * (HC_BINS - 1))));
}

/** One line for a binding limit: "thermal · LV Line 15 · step 10 (2016-01-01 02:30)". */
export function limitText(limit) {
  if (!limit) return "no limit within the search range";
  const when = limit.time ? ` (${limit.time.replace("T", " ").slice(0, 16)})` : "";
  return `${LIMIT_TEXT[limit.kind] ?? limit.kind} · ${limit.element} · step ${limit.step}${when}`;
}

/**
 * Wire the layer. opts: {network (NetworkView), canConfigure(), guarded(async fn), nodeName(id)}.
 * Returns {toggle(on?), load(), tip(id), showNode(id), stats()}.
 */
export function initHostingMap({ network, canConfigure, guarded, nodeName = (id) => String(id) }) {
  let on = false;
  let doc = null;
  let records = new Map(); // node id -> the result's record
  let scale = { lo: 0.01, hi: 1 };
  let timer = null;
  let selected = null;
  let coloured = 0;

  const measure = () => $("hc-measure").value;

  async function load() {
    try {
      doc = await api("/api/hosting-capacity");
    } catch (err) {
      clear($("hc-status"), h("span", { class: "error" }, `Could not read the study: ${err.message}`));
      return;
    }
    records = new Map((doc.result?.nodes ?? []).map((n) => [n.node_id, n]));
    renderStatus();
    paint();
    if (selected !== null) showNode(selected);
    clearTimeout(timer);
    timer = on ? setTimeout(load, doc.status === "running" ? POLL_MS : IDLE_POLL_MS) : null;
  }

  function paint() {
    scale = scaleOf([...records.values()].map((n) => n[measure()]));
    renderLegend();
    if (!on) return;
    const bins = Array.from({ length: HC_BINS }, () => []);
    const inLayer = new Set();
    for (const [id, n] of records) {
      const row = network.nodeRow(id);
      if (row === undefined) continue;
      bins[binOf(n[measure()], scale)].push(row);
      inLayer.add(row);
    }
    const restRows = [];
    for (let row = 0; row < network.n; row++) if (!inLayer.has(row)) restRows.push(row);
    coloured = inLayer.size;
    network.setNodeLayer({ bins, palette: HC_PALETTE, rest: NOT_STUDIED, restRows });
  }

  function renderLegend() {
    const canvas = $("hc-legend");
    const ctx = canvas.getContext("2d");
    const w = canvas.width / HC_PALETTE.length;
    HC_PALETTE.forEach((c, i) => {
      ctx.fillStyle = c;
      ctx.fillRect(Math.floor(i * w), 0, Math.ceil(w) + 1, canvas.height);
    });
    const decades = Math.round(Math.log10(scale.hi / scale.lo));
    const step = Math.max(1, Math.ceil(decades / 4));
    const ticks = [];
    for (let k = 0; k <= decades; k += step) ticks.push(scale.lo * 10 ** k);
    if (ticks[ticks.length - 1] < scale.hi) ticks.push(scale.hi);
    clear($("hc-scale"), ticks.map((v, i) => h("span", {}, i === 0 ? `≤${fmtMw(v)}` : fmtMw(v))));
    $("hc-legend-title").textContent = `Available ${MEASURE_TEXT[measure()]} hosting capacity`;
  }

  function renderStatus() {
    const status = doc?.status ?? "none";
    const run = doc?.run;
    const configure = canConfigure();
    const noProfiles = doc && !doc.profile_steps;
    $("hc-run").hidden = !configure;
    $("hc-steps-label").hidden = !configure;
    $("hc-run").disabled = status === "running" || noProfiles;
    $("hc-cancel").hidden = !(configure && status === "running");
    if (doc?.profile_steps) $("hc-steps").max = String(doc.profile_steps);
    $("hc-progress").hidden = status !== "running";
    const p = doc?.progress;
    $("hc-progress").max = p?.total || 1;
    $("hc-progress").value = p?.done ?? 0;
    const result = doc?.result;
    $("hc-geojson").hidden = !result;
    $("hc-panel").dataset.status = status;
    const lines = [];
    if (noProfiles) lines.push("This grid has no time profiles: no hosting-capacity study.");
    if (status === "running") lines.push(`Running: ${p ? `${p.done} of ${p.total} nodes` : "starting"} · ${run.steps} steps · by ${run.by}`);
    if (status === "failed") lines.push(h("span", { class: "error" }, `The last study failed: ${doc.error}`));
    if (status === "cancelled") lines.push(`The last study was cancelled by ${doc.cancelled_by}.`);
    if (result) {
      lines.push(`${result.nodes.length} nodes · ${result.steps} steps · limits ${result.limits.u_min}–${result.limits.u_max} p.u., ` +
        `loading ${Math.round(result.limits.loading_max * 100)} % · by ${result.by}, ${result.finished_at.replace("T", " ").slice(0, 19)} UTC`);
    } else if (status === "none" && !noProfiles) {
      lines.push(configure ? "No study yet: run one." : "No study yet: an engineer can run one.");
    }
    clear($("hc-status"), lines.map((line) => h("div", {}, line)));
  }

  /** Tooltip text of a node on the layer ("" when it is off or the node was not studied). */
  function tip(id) {
    if (!on) return "";
    const n = records.get(id);
    if (!n) return records.size ? " · not studied" : "";
    const key = measure();
    const limit = key === "generation_mw" ? n.generation_limit : n.load_limit;
    return ` · HC ${MEASURE_TEXT[key]} ${fmtMw(n[key])} · binds: ${limitText(limit)}`;
  }

  /** The layer panel's detail of a node (both directions with their binding limits). */
  function showNode(id) {
    selected = id ?? null;
    const box = $("hc-detail");
    const n = id === null || id === undefined ? null : records.get(id);
    if (!n) {
      clear(box, selected !== null && records.size ? h("p", { class: "muted small" }, `${nodeName(selected)}: not studied (a source, or not energised)`) : []);
      box.hidden = !(selected !== null && records.size);
      return;
    }
    box.hidden = false;
    box.dataset.node = n.node;
    clear(box,
      h("h4", {}, n.node),
      h("dl", { class: "hc-facts" },
        h("dt", {}, "Generation"), h("dd", { class: "hc-generation" }, fmtMw(n.generation_mw)),
        h("dt", {}, "binds"), h("dd", { class: "hc-generation-limit" }, limitText(n.generation_limit)),
        h("dt", {}, "Load"), h("dd", { class: "hc-load" }, fmtMw(n.load_mw)),
        h("dt", {}, "binds"), h("dd", { class: "hc-load-limit" }, limitText(n.load_limit))));
  }

  function toggle(force) {
    on = force === undefined ? !on : Boolean(force);
    $("hc-toggle").setAttribute("aria-pressed", String(on));
    $("hc-panel").hidden = !on;
    if (on) {
      load();
    } else {
      clearTimeout(timer);
      timer = null;
      network.setNodeLayer(null);
    }
  }

  async function run() {
    const steps = Number($("hc-steps").value);
    const body = $("hc-steps").value === "" ? {} : { steps };
    await guarded(async () => {
      await api("/api/hosting-capacity", { method: "POST", body });
      await load();
    });
  }

  $("hc-toggle").addEventListener("click", () => toggle());
  $("hc-measure").addEventListener("change", () => { paint(); if (selected !== null) showNode(selected); });
  $("hc-run").addEventListener("click", run);
  $("hc-cancel").addEventListener("click", () => guarded(async () => {
    await api("/api/hosting-capacity", { method: "DELETE" });
    await load();
  }));

  return {
    toggle,
    load,
    tip,
    showNode,
    isOn: () => on,
    stats: () => ({
      on,
      status: doc?.status ?? null,
      coloured,
      studied: records.size,
      bins: new Set([...records.values()].map((n) => binOf(n[measure()], scale))).size,
      scale: { ...scale },
      legend: [...document.querySelectorAll("#hc-scale span")].map((s) => s.textContent),
      palette: [...HC_PALETTE],
    }),
  };
}
