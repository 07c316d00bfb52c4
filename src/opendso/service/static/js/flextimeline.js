// The flexibility timeline and settlement of the Flexibility page: the latest day-ahead UFTP round
// (/api/flex/rounds/latest) as an SVG timeline, one column per 15-minute interval and, per group, one row per:
// constraint (the forecast's need, coloured by its probability as on the Congestion page, ColorBrewer YlOrRd),
// congestion point asked (the W requested, shaded by size), offer option (bought ✔ solid bluish green, not bought
// ○ outline, refused ✖ hatched vermilion with the merit order's reason in the tooltip) and order (its UFTP
// status). A summary line gives the needs met, the cost and the currency. Operators run a round (POST
// /api/flex/rounds) with the button, which shows its progress. Settlement: when the round carries one, a table
// per aggregator (price, penalty, net, delivered share) and per order a chart of ordered vs delivered flexibility
// with the verification's band (uPlot); otherwise a muted line saying settlement follows delivery.
// Built with DOM calls (SVG through createElementNS; no HTML from data).

import { api } from "./api.js";
import { clear, h } from "./switching.js";
import { probabilityColour } from "./congestionpage.js";

const $ = (id) => document.getElementById(id);
const SVG = "http://www.w3.org/2000/svg";

// Okabe-Ito, as the rest of the page
const REQUEST = "#56b4e9"; // sky blue
const BOUGHT = "#009e73"; // bluish green
const REFUSED = "#d55e00"; // vermilion
const NOT_BOUGHT = "#8b949e"; // muted grey outline
const ORDER = { accepted: "#e69f00", sent: "#8b949e", rejected: "#d55e00" }; // orange: accepted
const LABEL_W = 300;
const ROW_H = 20;
const HEAD_H = 22;
const GROUP_H = 18;
const AXIS = { stroke: "#c9d1d9", grid: { stroke: "#2a313a" }, ticks: { stroke: "#2a313a" } };
const STATUS_MARK = { bought: "✔ bought", "not bought": "○ not bought", refused: "✖ refused" };

function svg(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) if (v !== undefined && v !== null) el.setAttribute(k, String(v));
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(typeof c === "string" ? document.createTextNode(c) : c);
  }
  return el;
}

function title(text) {
  return svg("title", {}, text);
}

function hhmm(iso) {
  return iso ? iso.slice(11, 16) : "";
}

function kwText(w) {
  if (w === null || w === undefined || !Number.isFinite(Number(w))) return "—";
  const v = Number(w) / 1e3;
  return `${v.toLocaleString("en", { maximumFractionDigits: Math.abs(v) < 10 ? 1 : 0 })} kW`;
}

function money(v, currency) {
  const n = Number(v);
  return Number.isFinite(n) ? `${n.toLocaleString("en", { minimumFractionDigits: 2, maximumFractionDigits: 2 })} ${currency ?? ""}`.trim() : "—";
}

function short(domain) {
  return String(domain ?? "").replace(/\.agr\.opendso\.org$/, "");
}

/** Wire the timeline and settlement sections. opts: {canWrite(), guarded(async fn)} */
export function initFlexTimeline({ canWrite, guarded }) {
  let round = null; // the latest round's JSON
  let state = "idle";
  let rows = { need: 0, request: 0, offer: 0, order: 0 };
  let charts = [];

  const status = h("span", { id: "flex-round-status", class: "muted small", role: "status", "aria-live": "polite" });
  const issued = h("input", { id: "flex-round-issued", type: "text", placeholder: "now (in the profiles' year)", size: 26, "aria-label": "Issue time (ISO, UTC)" });
  const run = h("button", { id: "flex-round-run", class: "primary", type: "submit" }, "Run day-ahead round");
  const form = h("form", { id: "flex-round-form", class: "flex-round-form" },
    h("label", {}, "Issued ", issued), run, status);
  const summary = h("div", { id: "flex-round-summary", class: "flex-round-summary" });
  const key = h("div", { class: "flex-key flex-timeline-key" },
    h("span", { class: "flex-key-need" }, "■ constraint (probability)"),
    h("span", { class: "flex-key-request" }, "■ requested"),
    h("span", { class: "flex-key-bought" }, "■ ✔ bought"),
    h("span", { class: "flex-key-notbought" }, "□ ○ not bought"),
    h("span", { class: "flex-key-refused" }, "▨ ✖ refused (hover for the reason)"),
    h("span", { class: "flex-key-order" }, "▬ order accepted"));
  const chart = h("div", { id: "flex-timeline-chart", class: "flex-timeline-chart" });
  clear($("flex-timeline"),
    h("h3", {}, "Flexibility timeline · day-ahead UFTP round"),
    form, summary, key, chart);

  async function load() {
    form.hidden = !canWrite();
    try {
      round = await api("/api/flex/rounds/latest");
    } catch (err) {
      if (err.status !== 404) {
        clear(summary, h("p", { class: "error" }, `Not read: ${err.message}`));
        return;
      }
      round = null;
    }
    render();
  }

  async function start(event) {
    event.preventDefault();
    const body = { steps: 96, threshold: 0.5, scenarios: 100 };
    if (issued.value.trim()) body.issued = issued.value.trim();
    run.disabled = true;
    state = "running";
    $("flex-timeline").dataset.state = state;
    status.textContent = "forecasting congestion, asking the aggregators, selecting offers…";
    await guarded(async () => {
      try {
        round = await api("/api/flex/rounds", { method: "POST", body });
        status.textContent = `round issued ${round.issued ?? round.start} done`;
        render();
      } catch (err) {
        state = "error";
        $("flex-timeline").dataset.state = state;
        status.textContent = `Not run: ${err.message}`;
        throw err;
      } finally {
        run.disabled = false;
      }
    });
  }

  function render() {
    state = round ? "ready" : "empty";
    $("flex-timeline").dataset.state = state;
    rows = { need: 0, request: 0, offer: 0, order: 0 };
    if (!round) {
      clear(summary, h("p", { class: "muted" }, "No flexibility round yet."));
      clear(chart);
      renderSettlement();
      return;
    }
    const sel = round.selection;
    const elements = new Set(round.needs.map((n) => n.element));
    const currency = round.offers[0]?.currency ?? round.orders[0]?.currency ?? "EUR";
    const parts = [
      `${round.grid} · from ${round.start.slice(0, 16).replace("T", " ")} UTC, ${round.horizon} intervals`,
      `${round.needs.length} need(s) at ${elements.size} element(s)`,
      sel ? `${sel.needs_met} met, ${sel.needs_unmet} unmet` : "nothing to select",
      `${round.requests.length} request(s), ${round.offers.length} offer(s), ${round.orders.length} order(s)`,
      `cost ${money(sel?.total_cost ?? 0, currency)}`,
    ];
    clear(summary, h("p", { class: sel && !sel.all_met ? "flex-unmet" : "" }, parts.join(" · ")));
    drawTimeline();
    renderSettlement();
  }

  function drawTimeline() {
    const r = round;
    const n = r.horizon;
    const width = Math.max(640, chart.clientWidth || $("flex-timeline").clientWidth || 1200);
    const cell = Math.max(4, (width - LABEL_W - 8) / n);
    const points = new Map(r.congestion_points.map((p) => [p.id, p]));
    const cpName = (id) => points.get(id)?.name ?? id;
    // the points are long names: each gets a short tag (P1, P2, ...) used in the offer and order rows
    const tags = new Map(r.congestion_points.map((p, i) => [p.id, `P${i + 1}`]));
    const tag = (id) => tags.get(id) ?? "P?";
    const groups = [];
    // 1. constraints
    const byElement = new Map();
    for (const need of r.needs) {
      if (!byElement.has(need.element)) byElement.set(need.element, []);
      byElement.get(need.element).push(need);
    }
    groups.push(["Constraints (forecast)", [...byElement].map(([element, needs]) => ({
      kind: "need", label: element.replace(":", " "), cells: needs.map((x) => ({
        k: x.interval, fill: probabilityColour(x.probability),
        tip: `${element} ${hhmm(x.time)} UTC: probability ${(100 * x.probability).toFixed(0)} %, excess ${(100 * x.excess).toFixed(1)} % (${x.direction})`,
      })) }))]);
    // 2. requests per congestion point
    const byPoint = new Map();
    for (const q of r.requests) {
      if (!byPoint.has(q.congestion_point)) byPoint.set(q.congestion_point, []);
      byPoint.get(q.congestion_point).push(q);
    }
    const most = Math.max(1, ...r.requests.map((q) => Math.abs(q.requested_w)));
    groups.push(["Requested (UFTP FlexRequest)", [...byPoint].map(([cp, asks]) => ({
      kind: "request", label: `${tag(cp)} ${cpName(cp)}`, cells: asks.map((q) => ({
        k: q.interval, fill: REQUEST, opacity: 0.35 + 0.65 * Math.abs(q.requested_w) / most,
        tip: `${cpName(cp)} ${hhmm(q.time)} UTC: ${kwText(q.requested_w)} (${q.requested_w > 0 ? "more consumption / less export" : "less consumption"}) for ${q.element} · to ${q.aggregators.map(short).join(", ") || "nobody"}`,
      })) }))]);
    // 3. offers: one row per option
    const offerRows = [];
    for (const o of r.offers) {
      for (const opt of o.options) {
        offerRows.push({
          kind: "offer", status: opt.status, label: `${short(o.aggregator)} @ ${tag(o.congestion_point)} · ${opt.reference} · ${money(opt.price, o.currency)}`,
          cells: opt.power_w.map((w, j) => ({
            k: opt.first + j, status: opt.status,
            tip: `${short(o.aggregator)} at ${cpName(o.congestion_point)}, option ${opt.reference}: ${kwText(w)} at ${hhmm(r.time[opt.first + j])} UTC, ` +
              `${money(opt.price, o.currency)} for the option · ${STATUS_MARK[opt.status] ?? opt.status}${opt.reason ? `: ${opt.reason}` : ""}`,
          })),
        });
      }
    }
    groups.push(["Offers (FlexOffer options)", offerRows]);
    // 4. orders
    const options = new Map(r.offers.flatMap((o) => o.options.map((opt) => [`${o.id}/${opt.reference}`, opt])));
    groups.push(["Orders (FlexOrder)", r.orders.map((o) => {
      const opt = options.get(`${o.offer_id}/${o.option}`);
      return {
        kind: "order", label: `${short(o.aggregator)} @ ${tag(o.congestion_point)} · ${o.option} · ${o.status}`, thin: true,
        cells: (opt?.power_w ?? []).map((w, j) => ({
          k: opt.first + j, fill: ORDER[o.status] ?? NOT_BOUGHT,
          tip: `order ${o.order_reference} to ${short(o.aggregator)} at ${cpName(o.congestion_point)}: ${kwText(w)} at ${hhmm(r.time[opt.first + j])} UTC, ${money(o.price, o.currency)} · ${o.status}${o.reason ? `: ${o.reason}` : ""}`,
        })),
      };
    })]);
    const total = groups.reduce((s, [, list]) => s + GROUP_H + Math.max(1, list.length) * ROW_H, 0);
    const height = HEAD_H + total + 4;
    const root = svg("svg", { width, height, viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": "Flexibility timeline", class: "flex-timeline-svg" });
    root.append(svg("defs", {}, svg("pattern", { id: "flex-hatch", width: 6, height: 6, patternUnits: "userSpaceOnUse", patternTransform: "rotate(45)" },
      svg("rect", { width: 6, height: 6, fill: "rgba(213,94,0,0.25)" }), svg("line", { x1: 0, y1: 0, x2: 0, y2: 6, stroke: REFUSED, "stroke-width": 3 }))));
    // the time axis: a tick per hour, text every 2 hours when the cells are narrow
    const every = cell * 4 >= 40 ? 4 : 8;
    for (let k = 0; k < n; k++) {
      const t = r.time[k];
      if (!t || t.slice(14, 16) !== "00") continue;
      const x = LABEL_W + k * cell;
      root.append(svg("line", { x1: x, y1: HEAD_H - 4, x2: x, y2: height, class: "flex-tl-grid" }));
      if ((Number(t.slice(11, 13)) * 4) % every === 0) root.append(svg("text", { x: x + 2, y: HEAD_H - 8, class: "flex-tl-tick" }, hhmm(t)));
    }
    let y = HEAD_H;
    for (const [name, list] of groups) {
      root.append(svg("text", { x: 4, y: y + GROUP_H - 5, class: "flex-tl-group" }, name));
      y += GROUP_H;
      if (!list.length) {
        root.append(svg("text", { x: LABEL_W, y: y + ROW_H - 6, class: "flex-tl-none" }, "none"));
        y += ROW_H;
        continue;
      }
      for (const row of list) {
        rows[row.kind] += 1;
        const g = svg("g", { class: `flex-tl-row flex-tl-${row.kind}`, "data-kind": row.kind, "data-status": row.status ?? "" });
        g.append(svg("rect", { x: 0, y, width, height: ROW_H, class: "flex-tl-band" }));
        g.append(svg("text", { x: 12, y: y + ROW_H - 6, class: "flex-tl-label" }, row.label.length > 46 ? `${row.label.slice(0, 45)}…` : row.label, title(row.label)));
        for (const c of row.cells) {
          const x = LABEL_W + c.k * cell + 0.5;
          const inset = row.thin ? 6 : 3;
          const attrs = { x, y: y + inset, width: Math.max(1, cell - 1), height: ROW_H - 2 * inset, rx: 2, class: "flex-tl-cell", "data-interval": c.k };
          if (c.status === "bought") Object.assign(attrs, { fill: BOUGHT });
          else if (c.status === "refused") Object.assign(attrs, { fill: "url(#flex-hatch)", stroke: REFUSED });
          else if (c.status === "not bought") Object.assign(attrs, { fill: "none", stroke: NOT_BOUGHT });
          else Object.assign(attrs, { fill: c.fill, "fill-opacity": c.opacity ?? 1 });
          g.append(svg("rect", attrs, title(c.tip)));
        }
        root.append(g);
        y += ROW_H;
      }
    }
    clear(chart, root);
  }

  function renderSettlement() {
    for (const c of charts) c.destroy();
    charts = [];
    const box = $("flex-settlement");
    if (!round?.settlement) {
      clear(box, h("h3", {}, "Settlement"),
        h("p", { class: "muted", id: "flex-settlement-note" }, round
          ? "Settlement follows delivery: the orders are verified against their baseline and settled (UFTP FlexSettlement) after the delivery period."
          : "Settlement follows delivery of a round's orders."));
      return;
    }
    const s = round.settlement;
    const answers = new Map(s.orders.map((o) => [o.OrderReference, o]));
    const reports = h("table", { class: "compact flex-settlement-table" },
      h("thead", {}, h("tr", {}, ["Aggregator", "Orders", "Ordered MWh", "Delivered MWh", "Delivered share", "Price", "Penalty", "Net"].map((t) => h("th", {}, t)))),
      h("tbody", {}, s.reports.map((a) => h("tr", { dataset: { aggregator: a.aggregator } },
        h("td", {}, short(a.aggregator)), h("td", { class: "num" }, `${a.full_orders}/${a.orders} full`),
        h("td", { class: "num" }, Number(a.ordered_mwh).toFixed(3)), h("td", { class: "num" }, Number(a.delivered_mwh).toFixed(3)),
        h("td", { class: "num" }, `${(100 * a.delivered_share).toFixed(1)} %`),
        h("td", { class: "num" }, money(a.price, a.currency)), h("td", { class: "num" }, money(a.penalty, a.currency)),
        h("td", { class: "num" }, money(a.net_settlement, a.currency))))));
    const plots = h("div", { class: "flex-charts" });
    clear(box, h("h3", {}, "Settlement"), reports, plots);
    for (const d of round.delivery) {
      const answer = answers.get(d.order_reference);
      const plot = h("div", { class: "flex-plot" });
      plots.append(h("figure", { class: "flex-chart" },
        h("figcaption", {}, h("strong", {}, `${short(d.aggregator)} · order ${d.order_reference.slice(0, 8)}`),
          h("span", { class: "muted small" }, ` · ${answer?.disposition ?? "no answer"}${answer?.dispute_reason ? `: ${answer.dispute_reason}` : ""}`)),
        plot));
      if (typeof window.uPlot === "undefined") {
        plot.append(h("p", { class: "muted" }, "Charts need uPlot."));
        continue;
      }
      const xs = d.intervals.map((i) => Date.parse(i.time) / 1000);
      const kw = (key) => d.intervals.map((i) => i[key] / 1e3);
      charts.push(new window.uPlot({
        width: Math.max(300, (plot.clientWidth || 440) - 4), height: 160,
        axes: [{ ...AXIS, values: (u, t) => t.map((v) => new Date(v * 1000).toISOString().slice(11, 16)) }, { ...AXIS, label: "kW" }],
        series: [{},
          { label: "ordered", stroke: "#e69f00", width: 2, dash: [6, 3], points: { show: false } },
          { label: "delivered", stroke: BOUGHT, width: 2, points: { show: false } },
          { label: "low", stroke: "rgba(0,158,115,0.4)", width: 1, points: { show: false } },
          { label: "high", stroke: "rgba(0,158,115,0.4)", width: 1, points: { show: false } }],
        bands: [{ series: [4, 3], fill: "rgba(0,158,115,0.18)" }],
      }, [xs, kw("ordered_w"), kw("delivered_w"), kw("delivered_low_w"), kw("delivered_high_w")], plot));
    }
  }

  form.addEventListener("submit", start);

  return {
    load,
    stats: () => ({ state, rows: { ...rows }, issued: round?.issued ?? null, settlementCharts: charts.length }),
  };
}
