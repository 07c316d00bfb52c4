// The Congestion page: the congestion forecast of the next 48 hours as a timeline. One row per element at
// risk (line, transformer, node), one column per 15-minute interval, the colour the probability of a
// violation (sequential, light yellow .. dark red: ColorBrewer YlOrRd, readable under the common
// colour-vision deficiencies; the number is in the tooltip and the list as well). The tooltip of a cell
// gives the probability, the median-scenario loading or voltage, the mean size of the violation (MVA or
// p.u.) and where to relieve it (MW / Mvar at which nodes). Reads /api/congestion; the limits and the
// number of scenarios can be chosen. Drawn on a canvas; text built with DOM calls (no HTML from data).

import { api } from "./api.js";
import { clear, h } from "./switching.js";

const $ = (id) => document.getElementById(id);

const STOPS = ["#ffffcc", "#ffeda0", "#fed976", "#feb24c", "#fd8d3c", "#fc4e2a", "#e31a1c", "#b10026"];
const NONE = "#232a33"; // probability 0: the panel colour
const ROW_H = 18;
const LABEL_W = 220;
const MAX_ROWS = 60;
const KIND_TEXT = { line: "line", transformer: "transformer", node: "node" };

function rgb(hex) {
  const n = parseInt(hex.slice(1), 16);
  return [(n >> 16) & 255, (n >> 8) & 255, n & 255];
}

/** The colour of a probability in (0, 1]; NONE for 0. */
export function probabilityColour(p) {
  if (!(p > 0)) return NONE;
  const x = Math.min(Math.max(p, 0), 1) * (STOPS.length - 1);
  const i = Math.min(Math.floor(x), STOPS.length - 2);
  const a = rgb(STOPS[i]);
  const b = rgb(STOPS[i + 1]);
  const f = x - i;
  const c = a.map((v, k) => Math.round(v + (b[k] - v) * f));
  return `rgb(${c[0]},${c[1]},${c[2]})`;
}

function pct(p) {
  return `${(100 * p).toFixed(p > 0 && p < 0.01 ? 1 : 0)} %`;
}

function num(v, digits = 3) {
  return v === null || v === undefined || !Number.isFinite(Number(v)) ? "—" : Number(v).toFixed(digits);
}

function hhmm(iso) {
  return iso ? `${iso.slice(5, 10)} ${iso.slice(11, 16)}` : "";
}

/** Wire the Congestion page. opts: {guarded(async fn)} */
export function initCongestionPage({ guarded }) {
  let data = null;
  let rows = [];
  let loading = false;
  let pending = false; // parameters changed while a forecast was computing: load again after it
  const canvas = $("congestion-canvas");
  const tip = $("congestion-tip");

  function query() {
    const band = $("congestion-band").value.split("-");
    const params = new URLSearchParams({
      scenarios: $("congestion-scenarios").value,
      loading_max: $("congestion-loading").value,
      u_min: band[0],
      u_max: band[1],
    });
    return `/api/congestion?${params}`;
  }

  async function load() {
    if (loading) {
      pending = true;
      return;
    }
    loading = true;
    $("congestion-summary").textContent = "computing the forecast…";
    canvas.dataset.state = "loading";
    try {
      await guarded(async () => {
        data = await api(query());
        render();
      });
    } finally {
      loading = false;
      if (canvas.dataset.state === "loading") canvas.dataset.state = "error";
    }
    if (pending) {
      pending = false;
      load();
    }
  }

  function render() {
    rows = data.elements.slice(0, MAX_ROWS);
    const steps = data.steps;
    const first = data.time[0];
    const last = data.time[data.time.length - 1];
    $("congestion-summary").textContent =
      `${data.grid} · issued ${hhmm(data.issued)} UTC · ${steps} intervals ${hhmm(first)} – ${hhmm(last)} · ` +
      `${data.scenarios} scenarios (${data.method}) · ${data.elements.length} of ${data.elements_judged} elements at risk · ${num(data.seconds, 1)} s`;
    draw();
    renderList();
    canvas.dataset.state = "ready";
    canvas.dataset.rows = String(rows.length);
  }

  function draw() {
    const steps = data.steps;
    const width = Math.max(canvas.parentElement.clientWidth - 4, LABEL_W + steps * 2);
    const cellW = (width - LABEL_W) / steps;
    const height = 22 + Math.max(rows.length, 1) * ROW_H;
    const ratio = window.devicePixelRatio || 1;
    canvas.width = Math.round(width * ratio);
    canvas.height = Math.round(height * ratio);
    canvas.style.width = `${width}px`;
    canvas.style.height = `${height}px`;
    const ctx = canvas.getContext("2d");
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, width, height);
    ctx.font = "12px system-ui, sans-serif";
    ctx.textBaseline = "middle";
    // hour ticks along the top, a stronger line at midnight
    for (let t = 0; t < steps; t++) {
      const iso = data.time[t];
      if (iso.slice(14, 16) !== "00") continue;
      const hour = Number(iso.slice(11, 13));
      const x = LABEL_W + t * cellW;
      ctx.fillStyle = hour === 0 ? "#9aa4b2" : "#313a46";
      ctx.fillRect(x, hour === 0 ? 0 : 14, 1, height);
      if (hour % 6 === 0) {
        ctx.fillStyle = "#9aa4b2";
        ctx.fillText(hour === 0 ? iso.slice(5, 10) : `${String(hour).padStart(2, "0")}h`, x + 3, 8);
      }
    }
    if (!rows.length) {
      ctx.fillStyle = "#9aa4b2";
      ctx.fillText("No violation in any scenario over the horizon.", LABEL_W + 8, 22 + ROW_H / 2);
      return;
    }
    rows.forEach((row, r) => {
      const y = 22 + r * ROW_H;
      ctx.fillStyle = "#e6e9ee";
      ctx.fillText(`${KIND_TEXT[row.kind] ?? row.kind} ${row.element}`.slice(0, 34), 4, y + ROW_H / 2);
      for (let t = 0; t < steps; t++) {
        ctx.fillStyle = probabilityColour(row.probability[t]);
        ctx.fillRect(LABEL_W + t * cellW, y + 1, Math.max(cellW - 0.5, 1), ROW_H - 2);
      }
    });
  }

  function cellAt(event) {
    if (!data || !rows.length) return null;
    const box = canvas.getBoundingClientRect();
    const x = event.clientX - box.left;
    const y = event.clientY - box.top;
    const cellW = (box.width - LABEL_W) / data.steps;
    const r = Math.floor((y - 22) / ROW_H);
    const t = Math.floor((x - LABEL_W) / cellW);
    if (r < 0 || r >= rows.length || t < 0 || t >= data.steps) return null;
    return { row: rows[r], t };
  }

  function tipText(row, t) {
    const lines = [`${KIND_TEXT[row.kind] ?? row.kind} ${row.element}`, `${hhmm(data.time[t])} UTC`];
    const quantity = row.quantity === "u_pu" ? "voltage (median scenario)" : "loading (median scenario)";
    const median = row.median[t];
    lines.push(`probability of a violation: ${pct(row.probability[t])}`);
    lines.push(`${quantity}: ${row.quantity === "u_pu" ? `${num(median, 4)} p.u.` : median === null ? "—" : pct(median)}`);
    const v = row.violations.find((x) => x.interval === t);
    if (v) {
      lines.push(
        row.kind === "node"
          ? `mean size when violated: ${num(v.excess, 4)} p.u. beyond the band`
          : `mean size when violated: ${num(v.excess_mva, 3)} MVA over the rating (${pct(v.excess)})`,
      );
      for (const r of v.relieve) {
        const options = [r.p_mw !== null ? `${num(r.p_mw, 3)} MW` : null, r.q_mvar !== null ? `${num(r.q_mvar, 3)} Mvar` : null];
        lines.push(`relieve at ${r.node}: ${options.filter((x) => x).join(" or ") || "—"}`);
      }
    }
    return lines;
  }

  canvas.addEventListener("mousemove", (event) => {
    const hit = cellAt(event);
    if (!hit) {
      tip.hidden = true;
      return;
    }
    clear(tip, tipText(hit.row, hit.t).map((line) => h("div", {}, line)));
    tip.hidden = false;
    const box = canvas.parentElement.getBoundingClientRect();
    tip.style.left = `${Math.min(event.clientX - box.left + 14, box.width - 320)}px`;
    tip.style.top = `${event.clientY - box.top + 14}px`;
  });
  canvas.addEventListener("mouseleave", () => { tip.hidden = true; });

  function renderList() {
    const body = rows.map((row) => {
      const worst = row.violations.reduce((a, b) => (b.probability > a.probability ? b : a), row.violations[0]);
      const size = row.kind === "node" ? `${num(worst.excess, 4)} p.u.` : `${num(worst.excess_mva, 3)} MVA`;
      const first = worst.relieve[0];
      const relieve = !first ? "—" : first.p_mw !== null ? `${first.node}: ${num(first.p_mw, 3)} MW` : `${first.node}: ${num(first.q_mvar, 3)} Mvar`;
      return h(
        "tr",
        {},
        h("td", {}, KIND_TEXT[row.kind] ?? row.kind),
        h("td", {}, row.element),
        h("td", { class: "num" }, pct(row.max_probability)),
        h("td", {}, `${hhmm(worst.time)} UTC`),
        h("td", { class: "num" }, size),
        h("td", { class: "num" }, String(row.violations.length)),
        h("td", {}, relieve),
      );
    });
    clear(
      $("congestion-list"),
      rows.length
        ? h(
            "table",
            { class: "congestion-table" },
            h("thead", {}, h("tr", {}, ["Kind", "Element", "Highest probability", "At", "Mean size there", "Intervals at risk", "Relieve at (first choice)"].map((x) => h("th", {}, x)))),
            h("tbody", {}, body),
          )
        : h("p", { class: "muted" }, "No element is forecast beyond its limits in any scenario."),
    );
  }

  $("congestion-refresh").addEventListener("click", () => load());
  for (const id of ["congestion-loading", "congestion-band", "congestion-scenarios"]) {
    $(id).addEventListener("change", () => { if (!$("page-congestion").hidden) load(); });
  }
  window.addEventListener("resize", () => { if (data && !$("page-congestion").hidden) draw(); });

  return {
    data: () => data,
    load: () => { if (!data) load(); else draw(); },
    reload: load,
  };
}
