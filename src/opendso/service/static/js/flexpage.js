// The Flexibility page: the aggregators' portfolios (per aggregator: connection points, feeders, capacities),
// their operating envelopes (the import and export bound per connection point and 15-minute interval, allocated
// jointly by the chosen rule; one chart per connection point with the binding element on hover and the
// infeasible intervals marked), the envelopes on the network map (a node layer colouring each connection point by
// its bound at the chosen interval, with a legend), and the TSO-DSO interface (per grid-supply point the scheduled
// exchange with its forecast band and the flexibility on offer up and down, the day-ahead CSV, and for operators a
// request form whose answer is shown per interval). Reads /api/flex/portfolios, /api/flex/envelopes,
// /api/tso/day-ahead; posts /api/tso/requests. Colours are Okabe-Ito (lines) and ColorBrewer RdYlBu (the map, as
// the hosting-capacity layer), readable under the common colour-vision deficiencies; every number is also in text.
// Built with DOM calls (no HTML from data). The flexibility timeline and settlement (flex-timeline,
// flex-settlement) are drawn by flextimeline.js; the container flex-dr holds the demand-response panel (drpanel.js).

import { api } from "./api.js";
import { clear, h } from "./switching.js";
import { HC_BINS, HC_PALETTE } from "./hostingmap.js";
import { initDrPanel } from "./drpanel.js";
import { initFlexTimeline } from "./flextimeline.js";

const $ = (id) => document.getElementById(id);

// Okabe-Ito: distinguishable under protanopia, deuteranopia and tritanopia
const IMPORT = "#56b4e9"; // sky blue
const EXPORT = "#e69f00"; // orange
const INFEASIBLE = "#cc79a7"; // reddish purple, drawn as large points (a shape as well as a colour)
const MEDIAN = "#f0e442"; // yellow
const UP = "#009e73"; // bluish green
const DOWN = "#d55e00"; // vermilion
const NO_POINT = "#3b424c"; // nodes without a connection point (or without capacity that way): dim, so the points stand out
const AXIS = { stroke: "#c9d1d9", grid: { stroke: "#2a313a" }, ticks: { stroke: "#2a313a" } };
const MAX_CHARTS = 24; // connection points charted (the interval table lists them all)
const STATUS_TEXT = { accepted: "✔ accepted", partial: "◐ partly accepted", refused: "✖ refused" };

function kw(w, digits = 0) {
  if (w === null || w === undefined || !Number.isFinite(Number(w))) return "—";
  return Number(w).toLocaleString("en", { maximumFractionDigits: digits });
}

/** Power as people read it: kW below 1 MW, MW above (input in W). */
export function fmtPower(w) {
  if (w === null || w === undefined || !Number.isFinite(Number(w))) return "—";
  const v = Number(w);
  if (Math.abs(v) < 1e6) return `${kw(v / 1e3, Math.abs(v) < 1e4 ? 1 : 0)} kW`;
  return `${kw(v / 1e6, 2)} MW`;
}

function mw(v, digits = 2) {
  return v === null || v === undefined || !Number.isFinite(Number(v)) ? "—" : `${Number(v).toFixed(digits)} MW`;
}

function hhmm(iso) {
  return iso ? `${iso.slice(5, 10)} ${iso.slice(11, 16)}` : "";
}

function epoch(iso) {
  return Date.parse(iso) / 1000;
}

/** "line:LV5.220 Line 26" -> "line LV5.220 Line 26"; null -> "—" (nothing binds). */
function bindingText(element) {
  return element ? String(element).replace(":", " ") : "—";
}

function hasUPlot() {
  return typeof window.uPlot !== "undefined";
}

function timeAxis() {
  return {
    ...AXIS,
    values: (u, ticks) => ticks.map((t) => new Date(t * 1000).toISOString().slice(11, 16)),
  };
}

/** The palette bin of a bound on a linear scale 0 .. top (W). */
export function boundBin(w, top) {
  if (!(top > 0) || !(w > 0)) return 0;
  return Math.min(HC_BINS - 1, Math.max(0, Math.round((w / top) * (HC_BINS - 1))));
}

/** Wire the Flexibility page. opts: {network (NetworkView), canWrite(), canConfigure(), guarded(async fn), showPage(name), nodeIds()} */
export function initFlexPage({ network, canWrite, canConfigure, guarded, showPage, nodeIds }) {
  let books = null; // /api/flex/portfolios
  let envelopes = null; // /api/flex/envelopes
  let tso = null; // /api/tso/day-ahead
  let charts = [];
  let tsoCharts = [];
  let mapOn = false;
  let coloured = 0;
  let token = 0; // a newer load supersedes an older one still running
  const timeline = initFlexTimeline({ canWrite, guarded }); // the flexibility timeline and settlement (flextimeline.js)
  const dr = initDrPanel($("flex-dr"), { guarded, canWrite, canConfigure }); // demand response (drpanel.js)

  // -- loading -------------------------------------------------------------------------------------
  async function load() {
    const mine = ++token;
    const rule = $("flex-rule").value;
    const steps = $("flex-steps").value;
    $("flex-summary").textContent = "reading the portfolios, allocating the envelopes, forecasting the exchange…";
    $("page-flex").dataset.state = "loading";
    $("flex-tso-csv").href = `/api/tso/day-ahead.csv?steps=${encodeURIComponent(steps)}`;
    const parts = [
      api("/api/flex/portfolios").then((d) => { if (mine === token) { books = d; renderPortfolios(); } }),
      api(`/api/flex/envelopes?${new URLSearchParams({ rule, steps })}`).then((d) => { if (mine === token) { envelopes = d; renderEnvelopes(); } }),
      api(`/api/tso/day-ahead?${new URLSearchParams({ steps })}`).then((d) => { if (mine === token) { tso = d; renderTso(); } }),
      timeline.load(),
      dr.load(),
    ];
    const results = await Promise.allSettled(parts);
    if (mine !== token) return;
    const failed = results.filter((r) => r.status === "rejected").map((r) => r.reason?.message ?? String(r.reason));
    $("page-flex").dataset.state = failed.length ? "error" : "ready";
    const head = [];
    if (books) head.push(`${books.aggregators.length} aggregator(s)`);
    if (envelopes?.intervals?.length) {
      const t = envelopes.intervals;
      head.push(`envelopes ${hhmm(t[0].time)} – ${hhmm(t[t.length - 1].time)} UTC, rule ${envelopes.rule}, rest of the grid from ${envelopes.source}, computed in ${kw(envelopes.seconds, 2)} s`);
    }
    if (tso) head.push(`TSO report issued ${hhmm(tso.issued)} UTC (${tso.sign})`);
    clear($("flex-summary"), head.join(" · "), ...failed.map((m) => h("div", { class: "error" }, `Not read: ${m}`)));
  }

  // -- 1. aggregators --------------------------------------------------------------------------------
  function renderPortfolios() {
    const box = $("flex-portfolios");
    if (!books.aggregators.length) {
      clear(box, h("p", { class: "muted" }, "No aggregator has connected DER in the registry."));
      return;
    }
    clear(box, h("div", { class: "flex-books" }, books.aggregators.map((b) =>
      h("article", { class: "flex-book", dataset: { aggregator: b.aggregator } },
        h("header", {},
          h("h4", { class: "flex-aggregator" }, b.aggregator),
          h("span", { class: "muted small" }, `${b.count} asset(s) at ${b.points.length} connection point(s) on ${b.feeders.length} feeder(s)`)),
        h("dl", { class: "flex-totals" },
          h("dt", {}, "Export"), h("dd", {}, `${kw(b.export_kw)} kW`),
          h("dt", {}, "Import"), h("dd", {}, `${kw(b.import_kw)} kW`),
          h("dt", {}, "Storage"), h("dd", {}, `${kw(b.storage_kwh)} kWh`)),
        h("table", { class: "compact flex-points" },
          h("thead", {}, h("tr", {}, ["Connection point", "Feeder", "Assets", "Export kW", "Import kW", "Storage kWh"].map((t) => h("th", {}, t)))),
          h("tbody", {}, b.points.map((p) => h("tr", { dataset: { node: p.name ?? "" } },
            h("td", {}, p.name ?? "—"), h("td", { class: "muted" }, p.feeder ?? "busbar"),
            h("td", { title: p.assets.join(", ") }, String(p.count)),
            h("td", { class: "num" }, kw(p.export_kw)), h("td", { class: "num" }, kw(p.import_kw)),
            h("td", { class: "num" }, kw(p.storage_kwh)))))))),
    ));
  }

  // -- 2. operating envelopes ------------------------------------------------------------------------
  function points() {
    return (envelopes?.envelopes ?? []).flatMap((e) => e.points);
  }

  function renderEnvelopes() {
    for (const c of charts) c.destroy();
    charts = [];
    const box = $("flex-envelopes");
    const intervals = envelopes.intervals ?? [];
    const all = points();
    if (!intervals.length || !all.length) {
      clear(box, h("p", { class: "muted" }, envelopes.note ?? "No envelope: no aggregator has connected DER."));
      clear($("flex-interval-table"));
      $("flex-envelope-summary").textContent = "";
      paintMap();
      return;
    }
    const infeasible = intervals.filter((i) => !i.import_feasible || !i.export_feasible).length;
    const limits = envelopes.limits;
    $("flex-envelope-summary").textContent =
      `${all.length} connection point(s) · ${intervals.length} intervals · limits ${limits.u_min_pu}–${limits.u_max_pu} p.u., ` +
      `loading ${Math.round(100 * limits.loading_max)} % · ${infeasible} infeasible interval(s) · import positive, export negative (kW)`;
    const slider = $("flex-interval");
    slider.max = String(intervals.length - 1);
    if (Number(slider.value) > intervals.length - 1) slider.value = "0";
    clear(box, key([["import", "━ import bound"], ["export", "━ export bound (negative)"], ["capacity", "┅ capacity"],
      ["infeasible", "◆ infeasible interval"], ["muted", "shaded: the operating room between the bounds"]]));
    const shown = all.slice(0, MAX_CHARTS);
    for (const point of shown) box.append(envelopeCard(point));
    if (all.length > shown.length) box.append(h("p", { class: "muted small" }, `${all.length - shown.length} more connection point(s): see the table of the interval.`));
    box.dataset.charts = String(charts.length);
    showInterval();
  }

  function envelopeCard(point) {
    const rows = point.intervals;
    const readout = h("div", { class: "flex-readout small", "aria-live": "off" }, "Hover the chart for an interval's bounds and binding element.");
    const card = h("figure", { class: "flex-chart", dataset: { aggregator: point.aggregator, node: point.node } },
      h("figcaption", {},
        h("strong", {}, point.aggregator), " · ", h("span", {}, point.node),
        h("span", { class: "muted small" }, ` · capacity import ${fmtPower(point.import_w)}, export ${fmtPower(point.export_w)}`)),
    );
    const plot = h("div", { class: "flex-plot" });
    card.append(plot, readout);
    const bad = rows.filter((r) => !r.import_feasible || !r.export_feasible).length;
    if (bad) card.append(h("div", { class: "flex-infeasible small" }, `⚠ ${bad} infeasible interval(s): the bounds stay at the floors (◆ on the chart)`));
    if (!hasUPlot()) {
      plot.append(h("p", { class: "muted" }, "Charts need uPlot."));
      return card;
    }
    const xs = rows.map((r) => epoch(r.time));
    const imp = rows.map((r) => r.import_max_w / 1e3);
    const exp = rows.map((r) => -r.export_max_w / 1e3);
    const capImp = rows.map(() => point.import_w / 1e3);
    const capExp = rows.map(() => -point.export_w / 1e3);
    const marks = rows.map((r, i) => (!r.import_feasible ? imp[i] : !r.export_feasible ? exp[i] : null));
    const opts = {
      width: 420, height: 170,
      legend: { show: false },
      cursor: { points: { show: true }, drag: { x: false, y: false } },
      scales: { x: { time: true }, y: { range: (u, lo, hi) => [Math.min(lo, 0) * 1.1 - 1, Math.max(hi, 0) * 1.1 + 1] } },
      axes: [timeAxis(), { ...AXIS, size: 56, label: "kW", labelSize: 14 }],
      series: [
        {},
        { label: "import bound (kW)", stroke: IMPORT, width: 2, fill: "rgba(86,180,233,0.18)", fillTo: 0, points: { show: false } },
        { label: "export bound (kW, negative)", stroke: EXPORT, width: 2, fill: "rgba(230,159,0,0.18)", fillTo: 0, points: { show: false } },
        { label: "import capacity", stroke: IMPORT, width: 1, dash: [4, 4], points: { show: false } },
        { label: "export capacity", stroke: EXPORT, width: 1, dash: [4, 4], points: { show: false } },
        { label: "infeasible", stroke: INFEASIBLE, width: 0, paths: () => null, points: { show: true, size: 9, fill: INFEASIBLE, stroke: "#ffffff" } },
      ],
      hooks: {
        setCursor: [(u) => {
          const i = u.cursor.idx;
          if (i === null || i === undefined) return;
          const r = rows[i];
          readout.textContent =
            `${hhmm(r.time)} UTC · import ≤ ${fmtPower(r.import_max_w)} (binds: ${bindingText(r.import_binding)})` +
            `${r.import_feasible ? "" : " INFEASIBLE"} · export ≤ ${fmtPower(r.export_max_w)} (binds: ${bindingText(r.export_binding)})` +
            `${r.export_feasible ? "" : " INFEASIBLE"}`;
        }],
      },
    };
    // drawn once the card is in the page, so that it takes the column's width
    requestAnimationFrame(() => {
      const width = Math.max(300, plot.clientWidth || 420);
      charts.push(new window.uPlot({ ...opts, width }, [xs, imp, exp, capImp, capExp, marks], plot));
      $("flex-envelopes").dataset.charts = String(charts.length);
    });
    return card;
  }

  /** A chart key: [[class suffix, text]] as coloured words (classes, as the CSP allows no inline style). */
  function key(items) {
    return h("div", { class: "flex-key small" }, items.map(([k, text]) => h("span", { class: `flex-key-${k}` }, text)));
  }

  function interval() {
    return Number($("flex-interval").value);
  }

  function showInterval() {
    const t = interval();
    const at = envelopes?.intervals?.[t];
    $("flex-interval-time").textContent = at ? `${hhmm(at.time)} UTC` : "";
    const all = points();
    if (!at) return;
    const row = (p) => {
      const r = p.intervals[t];
      return h("tr", { dataset: { aggregator: p.aggregator, node: p.node }, class: r.import_feasible && r.export_feasible ? "" : "flex-bad" },
        h("td", {}, p.aggregator), h("td", {}, p.node),
        h("td", { class: "num" }, kw(r.import_max_w / 1e3, 1)),
        h("td", {}, p.import_w > 0 ? bindingText(r.import_binding) : "no import capacity"),
        h("td", { class: "num" }, kw(r.export_max_w / 1e3, 1)),
        h("td", {}, p.export_w > 0 ? bindingText(r.export_binding) : "no export capacity"),
        h("td", {}, r.import_feasible && r.export_feasible ? "✔ feasible" : `⚠ infeasible (${[!r.import_feasible && "import", !r.export_feasible && "export"].filter(Boolean).join(", ")})`));
    };
    clear($("flex-interval-table"), h("table", { class: "compact flex-interval-rows" },
      h("caption", { class: "muted small" }, `Bounds at ${hhmm(at.time)} UTC: import α ${kw(at.import_alpha, 3)}, export α ${kw(at.export_alpha, 3)} of the rule`),
      h("thead", {}, h("tr", {}, ["Aggregator", "Connection point", "Import bound kW", "Import binds", "Export bound kW", "Export binds", "Feasible"].map((x) => h("th", {}, x)))),
      h("tbody", {}, all.map(row))));
    paintMap();
  }

  // -- 3. envelopes on the map -----------------------------------------------------------------------
  function mapPanel() {
    let panel = $("flex-map-panel");
    if (panel) return panel;
    panel = h("aside", { id: "flex-map-panel", class: "hc-panel flex-map-panel", "aria-label": "Operating-envelope layer", hidden: true },
      h("div", { class: "hc-head" }, h("strong", {}, "Operating envelopes"),
        h("button", { class: "secondary small", id: "flex-map-off", type: "button", title: "Hide the envelope layer" }, "Hide")),
      h("div", { id: "flex-map-title", class: "legend-title" }),
      h("canvas", { id: "flex-map-legend", width: 220, height: 12, "aria-hidden": "true" }),
      h("div", { id: "flex-map-scale", class: "legend-scale" }),
      h("div", { class: "small muted" }, h("span", { class: "flex-key-none", "aria-hidden": "true" }, "■"), " no connection point, or no capacity that way"),
      h("div", { id: "flex-map-points", class: "flex-map-points small" }),
      h("button", { class: "link small", id: "flex-map-back", type: "button" }, "Back to the Flexibility page"));
    $("network-canvas").parentElement.append(panel);
    $("flex-map-off").addEventListener("click", () => toggleMap(false));
    $("flex-map-back").addEventListener("click", () => showPage("flex"));
    // the hosting-capacity layer and this one share the map's node layer: one at a time
    new MutationObserver(() => { if (!$("hc-panel").hidden && mapOn) toggleMap(false); })
      .observe($("hc-panel"), { attributes: true, attributeFilter: ["hidden"] });
    return panel;
  }

  function direction() {
    return $("flex-map-direction").value;
  }

  /** Per node (id): the connection points there and the bound (W, summed over aggregators) at the interval. */
  function nodeBounds() {
    const t = interval();
    const key = direction() === "export" ? "export_max_w" : "import_max_w";
    const capKey = direction() === "export" ? "export_w" : "import_w";
    const ids = nodeIds();
    const out = new Map();
    for (const p of points()) {
      const id = ids.get(p.node);
      const r = p.intervals[t];
      if (id === undefined || !r) continue;
      const o = out.get(id) ?? { node: p.node, w: 0, capacity: 0, items: [] };
      o.w += r[key];
      o.capacity += p[capKey];
      o.items.push({ aggregator: p.aggregator, w: r[key], capacity: p[capKey], binding: direction() === "export" ? r.export_binding : r.import_binding,
        feasible: direction() === "export" ? r.export_feasible : r.import_feasible });
      out.set(id, o);
    }
    return out;
  }

  function paintMap() {
    if (!mapOn || !envelopes) return;
    const bounds = nodeBounds();
    const top = Math.max(0, ...[...bounds.values()].map((b) => b.capacity));
    const bins = Array.from({ length: HC_BINS }, () => []);
    const inLayer = new Set();
    for (const [id, b] of bounds) {
      const row = network.nodeRow(id);
      if (row === undefined || !(b.capacity > 0)) continue;
      bins[boundBin(b.w, top)].push(row);
      inLayer.add(row);
    }
    const restRows = [];
    for (let row = 0; row < network.n; row++) if (!inLayer.has(row)) restRows.push(row);
    coloured = inLayer.size;
    network.setNodeLayer({ bins, palette: HC_PALETTE, rest: NO_POINT, restRows });
    // legend
    const at = envelopes.intervals[interval()];
    $("flex-map-title").textContent = `${direction() === "export" ? "Export" : "Import"} bound at ${at ? hhmm(at.time) : "—"} UTC (rule ${envelopes.rule})`;
    const canvas = $("flex-map-legend");
    const ctx = canvas.getContext("2d");
    const w = canvas.width / HC_PALETTE.length;
    HC_PALETTE.forEach((c, i) => { ctx.fillStyle = c; ctx.fillRect(Math.floor(i * w), 0, Math.ceil(w) + 1, canvas.height); });
    clear($("flex-map-scale"), [0, 0.5, 1].map((f) => h("span", {}, fmtPower(f * top))));
    // one entry per aggregator at a point; the point's name finds it on the map
    const list = [...bounds.entries()].sort((a, b) => a[1].node.localeCompare(b[1].node));
    clear($("flex-map-points"), h("ul", { class: "flex-map-list" }, list.flatMap(([id, b]) => b.items.map((it) =>
      h("li", { class: it.feasible ? "" : "flex-bad", dataset: { node: b.node } },
        h("button", { class: "link", type: "button", title: "Find it on the map", onclick: () => network.select(id, { centre: true }) }, b.node),
        h("span", { class: "muted" }, ` · ${it.aggregator}`),
        h("div", {}, !(it.capacity > 0) ? `no ${direction()} capacity`
          : `${fmtPower(it.w)} of ${fmtPower(it.capacity)} · ${it.feasible ? "binds" : "⚠ infeasible:"} ${bindingText(it.binding)}`))))));
  }

  function toggleMap(force) {
    mapOn = force === undefined ? !mapOn : Boolean(force);
    $("flex-map-toggle").setAttribute("aria-pressed", String(mapOn));
    $("flex-map-toggle").textContent = mapOn ? "Hide on map" : "Show on map";
    const panel = mapPanel();
    panel.hidden = !mapOn;
    if (mapOn) {
      if (!$("hc-panel").hidden) $("hc-toggle").click(); // the hosting-capacity layer gives way
      paintMap();
    } else {
      coloured = 0;
      network.setNodeLayer(null);
    }
  }

  // -- 4. TSO-DSO ------------------------------------------------------------------------------------
  function renderTso() {
    for (const c of tsoCharts) c.destroy();
    tsoCharts = [];
    const box = $("flex-tso");
    clear(box);
    $("flex-tso-summary").textContent = tso.gsps.length
      ? `${tso.gsps.length} grid-supply point(s) · exchange in MW, import positive; band ${Math.round(100 * tso.band[0])}–${Math.round(100 * tso.band[1])} % quantiles`
      : "no grid-supply point";
    if (tso.gsps.length) {
      box.append(key([["median", "━ median exchange"], ["band", "▒ forecast band"], ["up", "━ up offered"], ["down", "┅ down offered"]]));
    }
    for (const g of tso.gsps) box.append(gspCard(g));
    // the file is the report on the page: the same issue time and horizon
    const steps = tso.gsps[0]?.intervals.length || Number($("flex-steps").value);
    $("flex-tso-csv").href = `/api/tso/day-ahead.csv?${new URLSearchParams({ issued: tso.issued, steps })}`;
    box.dataset.charts = String(tso.gsps.length);
    renderForm();
  }

  function gspCard(g) {
    const rows = g.intervals;
    const readout = h("div", { class: "flex-readout small" }, "Hover a chart for an interval's figures and what limits the offer.");
    const exchange = h("div", { class: "flex-plot" });
    const offer = h("div", { class: "flex-plot" });
    const card = h("figure", { class: "flex-chart flex-gsp", dataset: { gsp: g.gsp } },
      h("figcaption", {}, h("strong", {}, g.gsp), h("span", { class: "muted small" }, ` · at ${g.source_node} · ${g.transformers.join(", ")}`)),
      h("div", { class: "flex-gsp-plots" },
        h("div", {}, h("div", { class: "small muted" }, "Scheduled exchange (MW, import positive): median and forecast band"), exchange),
        h("div", {}, h("div", { class: "small muted" }, "Flexibility on offer (MW): up (less import) positive, down (more import) negative"), offer)),
      readout);
    if (!hasUPlot()) return card;
    const xs = rows.map((r) => epoch(r.interval_start));
    const say = (u) => {
      const i = u.cursor.idx;
      if (i === null || i === undefined) return;
      const r = rows[i];
      readout.textContent = `${hhmm(r.interval_start)} UTC · exchange ${mw(r.p_mw)} (${mw(r.p_low_mw)} … ${mw(r.p_high_mw)}) · ` +
        `up ${mw(r.up_mw)} of ${mw(r.up_gross_mw)} (limited by ${bindingText(r.up_limited_by)}) · ` +
        `down ${mw(r.down_mw)} of ${mw(r.down_gross_mw)} (limited by ${bindingText(r.down_limited_by)})`;
    };
    const base = { height: 170, legend: { show: false }, cursor: { drag: { x: false, y: false }, sync: { key: `gsp-${g.gsp}` } }, hooks: { setCursor: [say] } };
    requestAnimationFrame(() => {
      const width = Math.max(300, exchange.clientWidth || 420);
      tsoCharts.push(new window.uPlot({
        ...base, width,
        scales: { x: { time: true } },
        axes: [timeAxis(), { ...AXIS, size: 50, label: "MW", labelSize: 14 }],
        series: [
          {},
          { label: "p_low_mw", stroke: "rgba(240,228,66,0.35)", width: 1, points: { show: false } },
          { label: "p_high_mw", stroke: "rgba(240,228,66,0.35)", width: 1, points: { show: false } },
          { label: "median (MW)", stroke: MEDIAN, width: 2, points: { show: false } },
        ],
        bands: [{ series: [2, 1], fill: "rgba(240,228,66,0.15)" }],
      }, [xs, rows.map((r) => r.p_low_mw), rows.map((r) => r.p_high_mw), rows.map((r) => r.p_mw)], exchange));
      tsoCharts.push(new window.uPlot({
        ...base, width: Math.max(300, offer.clientWidth || 420),
        scales: { x: { time: true } },
        axes: [timeAxis(), { ...AXIS, size: 50, label: "MW", labelSize: 14 }],
        series: [
          {},
          { label: "up (MW)", stroke: UP, width: 2, fill: "rgba(0,158,115,0.25)", fillTo: 0, points: { show: false } },
          { label: "down (MW, negative)", stroke: DOWN, width: 2, dash: [6, 3], fill: "rgba(213,94,0,0.2)", fillTo: 0, points: { show: false } },
        ],
      }, [xs, rows.map((r) => r.up_mw), rows.map((r) => -r.down_mw)], offer));
      $("flex-tso").dataset.drawn = String(tsoCharts.length);
    });
    return card;
  }

  function renderForm() {
    const form = $("flex-tso-form");
    form.hidden = !canWrite() || !tso?.gsps?.length;
    if (form.hidden) return;
    const gsp = $("flex-req-gsp");
    const was = gsp.value;
    clear(gsp, tso.gsps.map((g) => h("option", { value: g.gsp }, g.gsp)));
    if (tso.gsps.some((g) => g.gsp === was)) gsp.value = was;
    fillIntervals();
  }

  function fillIntervals() {
    const g = tso.gsps.find((x) => x.gsp === $("flex-req-gsp").value) ?? tso.gsps[0];
    // a request covers intervals of one day (UTC): offer those of the first interval's day
    const day = g.intervals[0].interval_start.slice(0, 10);
    const times = g.intervals.map((r) => r.interval_start).filter((t) => t.slice(0, 10) === day);
    for (const id of ["flex-req-from", "flex-req-to"]) {
      const was = $(id).value;
      clear($(id), times.map((t) => h("option", { value: t }, `${hhmm(t)} UTC`)));
      if (times.includes(was)) $(id).value = was;
    }
    if (!times.includes($("flex-req-to").value) || $("flex-req-to").selectedIndex < $("flex-req-from").selectedIndex) {
      $("flex-req-to").selectedIndex = Math.min(times.length - 1, $("flex-req-from").selectedIndex + 3);
    }
  }

  async function send(event) {
    event.preventDefault();
    const from = $("flex-req-from").selectedIndex;
    const to = $("flex-req-to").selectedIndex;
    const times = [...$("flex-req-from").options].map((o) => o.value).slice(Math.min(from, to), Math.max(from, to) + 1);
    const body = {
      gsp: $("flex-req-gsp").value,
      direction: $("flex-req-direction").value,
      mw: Number($("flex-req-mw").value),
      intervals: times,
      all_or_none: $("flex-req-all").checked,
    };
    const box = $("flex-tso-answer");
    clear(box, h("p", { class: "muted small" }, "checking the request against distribution limits…"));
    await guarded(async () => {
      try {
        const answer = await api("/api/tso/requests", { method: "POST", body });
        renderAnswer(answer);
      } catch (err) {
        clear(box, h("p", { class: "error" }, `Not checked: ${err.message}`));
        throw err;
      }
    });
  }

  function renderAnswer(a) {
    const met = a.intervals.filter((r) => r.accepted_mw > 0);
    const most = Math.max(0, ...a.intervals.map((r) => r.accepted_mw ?? 0));
    clear($("flex-tso-answer"), h("div", { class: `flex-answer flex-answer-${a.status}`, dataset: { status: a.status } },
      h("div", {}, h("strong", { class: "flex-answer-status" }, STATUS_TEXT[a.status] ?? a.status),
        ` · ${a.gsp} · ${a.direction} ${mw(a.requested_mw, 3)} requested in ${a.intervals.length} interval(s) · ` +
        `accepted in ${met.length} of them${met.length ? `, up to ${mw(most, 3)}` : ""}`),
      h("table", { class: "compact" },
        h("thead", {}, h("tr", {}, ["Interval", "Accepted MW", "Reason"].map((x) => h("th", {}, x)))),
        h("tbody", {}, a.intervals.map((r) => h("tr", {},
          h("td", {}, `${hhmm(r.interval_start)} UTC`), h("td", { class: "num" }, kw(r.accepted_mw, 3)),
          h("td", {}, r.reason ?? "—")))))));
  }

  // -- wiring ----------------------------------------------------------------------------------------
  $("flex-refresh").addEventListener("click", () => load());
  for (const id of ["flex-rule", "flex-steps"]) $(id).addEventListener("change", () => load());
  $("flex-interval").addEventListener("input", showInterval);
  $("flex-map-direction").addEventListener("change", paintMap);
  $("flex-map-toggle").addEventListener("click", () => {
    toggleMap();
    if (mapOn) showPage("network");
  });
  $("flex-req-gsp").addEventListener("change", fillIntervals);
  let resizing = null;
  window.addEventListener("resize", () => {
    clearTimeout(resizing);
    resizing = setTimeout(() => {
      if ($("page-flex").hidden) return;
      if (envelopes) renderEnvelopes();
      if (tso) renderTso();
    }, 250);
  });
  $("flex-tso-form").addEventListener("submit", send);

  return {
    load: () => { if (!books) load(); else renderForm(); },
    reload: load,
    toggleMap,
    stats: () => ({
      state: $("page-flex").dataset.state ?? null,
      aggregators: books?.aggregators.map((b) => b.aggregator) ?? [],
      issued: envelopes?.intervals?.[0]?.time ?? null,
      rule: envelopes?.rule ?? null,
      charts: charts.length,
      tsoCharts: tsoCharts.length,
      points: points().length,
      map: { on: mapOn, coloured, palette: [...HC_PALETTE], interval: interval(), direction: direction() },
      timeline: timeline.stats(),
    }),
  };
}
