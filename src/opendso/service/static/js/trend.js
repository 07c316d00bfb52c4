// Trends in the element panel: several series in one chart (points of the element shown and of
// elements opened before), one y axis per unit with an SI prefix chosen from the data (kW, kV, A ...),
// a time range (last 15 min / 1 h / 8 h / 24 h of the operator's clock, or a custom range), and a
// CSV export of exactly what is shown. Times are on the operator's clock (time.js): the simulated
// clock in simulation, else UTC; the CSV carries the wall-clock time too. Ranges are converted to
// wall-clock instants for the historian, which stores real time.

import { api } from "./api.js";
import { fmtMs, nowMs, serverNowMs, simMsAt, simulating, wallMsAt } from "./time.js";
import { formatSI, prefixFor, quantityLabel } from "./units.js";

// Okabe–Ito: distinguishable with the common colour-vision deficiencies (CSS classes .swatch-N match)
const COLORS = ["#e69f00", "#56b4e9", "#009e73", "#f0e442", "#0072b2", "#d55e00", "#cc79a7", "#ffffff"];
const MAX_SERIES = 8;
// raw samples up to this wall-clock span; longer ranges are aggregated to about MAX_POINTS means
const RAW_SPAN_MS = 30 * 60 * 1000;
const MAX_POINTS = 720;
const REFRESH_MS = 5000;

function esc(value) {
  return String(value ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}

function csvField(v) {
  const s = v === null || v === undefined ? "" : String(v);
  return /[",\n\r]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
}

/** ISO 8601 UTC with seconds, for the CSV. */
function iso(ms) {
  return Number.isFinite(ms) ? new Date(ms).toISOString().replace(/\.\d{3}Z$/, "Z") : "";
}

/** "2016-06-21T11:00:00" (a datetime-local value, UTC) <-> ms. */
function inputValue(ms) {
  return new Date(ms).toISOString().slice(0, 19);
}
function parseInput(value) {
  return value ? Date.parse(`${value}${value.length === 16 ? ":00" : ""}Z`) : NaN;
}

export class Trend {
  constructor({ chart, list, range, custom, from, to, apply, csv, clear, note }) {
    Object.assign(this, { chartEl: chart, listEl: list, rangeEl: range, customEl: custom, fromEl: from, toEl: to });
    Object.assign(this, { csvEl: csv, clearEl: clear, noteEl: note });
    this.series = []; // [{point, info, element, auto}]
    this.chart = null;
    this.shown = null; // what the chart shows: {xs, walls, series: [{..., factor, unitLabel, ys}], range}
    this.loads = 0; // reloads started
    this.drawn = 0; // the reload whose data the chart shows
    this.loading = null;
    this.timer = null;
    this.onChange = () => {};
    range.addEventListener("change", () => {
      this.customEl.hidden = range.value !== "custom";
      if (range.value === "custom" && !this.fromEl.value) {
        const end = nowMs();
        this.toEl.value = inputValue(end);
        this.fromEl.value = inputValue(end - 3600 * 1000);
      }
      this.reload();
    });
    apply.addEventListener("click", () => this.reload());
    csv.addEventListener("click", () => this.download());
    clear.addEventListener("click", () => {
      this.series = [];
      this.renderList();
      this.reload();
    });
    list.addEventListener("click", (e) => {
      const btn = e.target.closest("button[data-remove]");
      if (btn) this.remove(btn.dataset.remove);
    });
  }

  has(point) {
    return this.series.some((s) => s.point === point);
  }

  /** An element was opened: drop series added only because another element was open; plot its first point if none. */
  showElement(element, points, pointInfo) {
    this.series = this.series.filter((s) => !s.auto || s.element === element);
    if (!this.series.length && points.length) {
      this.series.push({ point: points[0], info: pointInfo?.[points[0]] ?? {}, element, auto: true });
    }
    this.renderList();
    this.reload();
  }

  /** Add or remove a point (from a checkbox of the measured table). */
  toggle(point, info, element, on) {
    // once the operator picks series, the chart is theirs: nothing is dropped when another element opens
    for (const s of this.series) s.auto = false;
    if (on && !this.has(point)) {
      if (this.series.length >= MAX_SERIES) {
        this.noteEl.textContent = `At most ${MAX_SERIES} series in one chart.`;
        this.onChange();
        return;
      }
      this.series.push({ point, info: info ?? {}, element, auto: false });
    } else if (!on) {
      this.series = this.series.filter((s) => s.point !== point);
    }
    this.renderList();
    this.reload();
  }

  remove(point) {
    this.series = this.series.filter((s) => s.point !== point);
    this.renderList();
    this.reload();
  }

  renderList() {
    this.listEl.innerHTML = this.series
      .map((s, k) => `<li><span class="swatch swatch-${k}" aria-hidden="true"></span>` +
        `<span class="series-name" title="${esc(s.point)}">${esc(s.element)} · ${esc(quantityLabel(s.info))}</span>` +
        `<button class="link" data-remove="${esc(s.point)}" aria-label="Remove ${esc(s.point)} from the trend">✕</button></li>`)
      .join("");
    this.onChange();
  }

  /** The wall-clock range [from, to] (ms) of the chosen range on the operator's clock. */
  wallRange() {
    if (this.rangeEl.value === "custom") {
      const a = parseInput(this.fromEl.value);
      const b = parseInput(this.toEl.value);
      if (!(a < b)) throw new Error("the custom range needs a start before its end");
      return [wallMsAt(a), Math.min(wallMsAt(b), serverNowMs())];
    }
    const span = Number(this.rangeEl.value) * 1000;
    return [wallMsAt(nowMs() - span), serverNowMs()];
  }

  /** Fetch every series for the chosen range and redraw (also every few seconds while shown). */
  async reload() {
    clearTimeout(this.timer);
    const token = ++this.loads;
    if (!this.series.length) {
      this.draw(null, "Tick a measured point to plot it.");
      return;
    }
    let from, to;
    try {
      [from, to] = this.wallRange();
    } catch (err) {
      this.draw(null, err.message);
      return;
    }
    const span = Math.max(to - from, 1000);
    const interval = span > RAW_SPAN_MS ? Math.ceil(span / 1000 / MAX_POINTS) : null;
    const query = `from=${new Date(from).toISOString()}&to=${new Date(to).toISOString()}` + (interval ? `&interval=${interval}` : "");
    const series = [...this.series];
    let results;
    try {
      results = await Promise.all(series.map((s) => api(`/api/measurements/${encodeURIComponent(s.point)}?${query}`)));
    } catch (err) {
      if (token === this.loads) this.draw(null, `No trend: ${err.message}`);
      return;
    }
    if (token !== this.loads) return; // a newer request superseded this one
    this.drawn = token;
    this.draw(this.align(series, results, { from, to, interval }));
    if (this.rangeEl.value !== "custom" && this.chartEl.offsetParent !== null) {
      this.timer = setTimeout(() => this.reload(), REFRESH_MS);
    }
  }

  /** One x axis for every series (the union of their times, on the operator's clock), values in SI. */
  align(series, results, range) {
    const byX = new Map(); // x (s) -> wall ms
    const samples = results.map((rows) => {
      const out = [];
      for (const r of rows) {
        const wall = Date.parse(r.ts);
        const sim = simMsAt(wall);
        if (sim === null) continue; // before the simulation started: no simulated time
        const x = sim / 1000;
        byX.set(x, wall);
        out.push([x, r.value ?? r.mean ?? null]);
      }
      return out;
    });
    const xs = [...byX.keys()].sort((a, b) => a - b);
    const index = new Map(xs.map((x, i) => [x, i]));
    const aligned = series.map((s, k) => {
      const ys = new Array(xs.length).fill(null);
      for (const [x, y] of samples[k]) ys[index.get(x)] = Number.isFinite(y) ? y : null;
      return { ...s, ys };
    });
    // one axis per unit, its prefix chosen from the largest value shown
    const units = new Map();
    for (const s of aligned) {
      const unit = s.info?.unit ?? "";
      const peak = Math.max(0, ...s.ys.filter((y) => y !== null).map((y) => Math.abs(y)));
      units.set(unit, Math.max(units.get(unit) ?? 0, peak));
    }
    const axes = [...units.entries()].map(([unit, peak]) => {
      const [factor, symbol] = prefixFor(unit, peak);
      return { unit, factor, label: unit ? `${symbol}${unit}` : "state" };
    });
    for (const s of aligned) {
      const axis = axes.find((a) => a.unit === (s.info?.unit ?? ""));
      s.factor = axis.factor;
      s.unitLabel = axis.label;
      s.ys = s.ys.map((y) => (y === null ? null : y / axis.factor));
    }
    return { xs, walls: xs.map((x) => byX.get(x)), series: aligned, axes, range };
  }

  draw(shown, message = "") {
    this.chart?.destroy();
    this.chart = null;
    this.shown = shown;
    this.chartEl.innerHTML = "";
    const clock = simulating() ? "simulated clock" : "UTC";
    if (!shown || !shown.xs.length) {
      this.chartEl.innerHTML = `<p class="muted">${esc(message || "No data in this range.")}</p>`;
      this.noteEl.textContent = "";
      this.onChange();
      return;
    }
    if (!window.uPlot) {
      this.chartEl.innerHTML = `<p class="muted">Chart library missing.</p>`;
      this.onChange();
      return;
    }
    const uPlot = window.uPlot;
    const axisStyle = { stroke: "#9aa4b2", grid: { stroke: "#2a313b" }, ticks: { stroke: "#2a313b" } };
    const opts = {
      width: this.chartEl.clientWidth || 340,
      height: 220,
      tzDate: (ts) => uPlot.tzDate(new Date(ts * 1e3), "Etc/UTC"),
      // one instant (a paused clock) still gets a readable axis: a minute either side
      scales: { x: { time: true, range: (_u, min, max) => (min === max ? [min - 60, max + 60] : [min, max]) } },
      series: [
        { label: clock, value: (_u, v) => (v === null || v === undefined ? "—" : fmtMs(v * 1000)) },
        ...shown.series.map((s, k) => ({
          label: `${s.element} · ${quantityLabel(s.info)}`,
          scale: s.unitLabel,
          stroke: COLORS[k % COLORS.length],
          width: 1.5,
          spanGaps: true,
          points: { show: shown.xs.length <= 60, size: 4 },
          value: (_u, v) => (v === null || v === undefined ? "—" : `${formatSI(v, "").value} ${s.unitLabel}`),
        })),
      ],
      axes: [
        {
          ...axisStyle,
          label: `time (${clock})`,
          labelSize: 18,
          // 24-hour times on the operator's clock; the date as well when the chart spans days
          values: (_u, splits) => {
            const span = splits.length > 1 ? splits[splits.length - 1] - splits[0] : 0;
            const [from, to] = span > 20 * 3600 ? [5, 16] : span < 600 ? [11, 19] : [11, 16];
            return splits.map((v) => fmtMs(v * 1000).slice(from, to));
          },
        },
        ...shown.axes.map((a, i) => ({
          ...axisStyle,
          scale: a.label,
          label: a.label,
          labelSize: 18,
          side: i % 2 ? 1 : 3,
          size: 64,
          grid: { ...axisStyle.grid, show: i === 0 },
        })),
      ],
      legend: { live: true },
    };
    for (const a of shown.axes) opts.scales[a.label] = { auto: true };
    this.chart = new uPlot(opts, [shown.xs, ...shown.series.map((s) => s.ys)], this.chartEl);
    const agg = shown.range.interval ? `, means over ${shown.range.interval} s of real time` : "";
    const n = shown.xs.length;
    this.noteEl.textContent = `${n} sample${n === 1 ? "" : "s"}, ${clock}${agg}.`;
    this.onChange();
  }

  /** The CSV of what the chart shows: both clocks, then each series in the unit of its axis. */
  csv() {
    const shown = this.shown;
    if (!shown) return null;
    const header = [
      simulating() ? "simulated time (UTC)" : "time (UTC)",
      "wall clock (UTC)",
      ...shown.series.map((s) => `${s.point} [${s.unitLabel}]`),
    ];
    const lines = [header.map(csvField).join(",")];
    shown.xs.forEach((x, i) => {
      const values = shown.series.map((s) => (s.ys[i] === null ? "" : Number(s.ys[i].toPrecision(8))));
      lines.push([iso(x * 1000), iso(shown.walls[i]), ...values].map(csvField).join(","));
    });
    return `${lines.join("\r\n")}\r\n`;
  }

  download() {
    const text = this.csv();
    if (!text) return;
    const stamp = fmtMs(nowMs()).replace(/[-: ]/g, "").slice(0, 14);
    const link = document.createElement("a");
    link.href = URL.createObjectURL(new Blob([text], { type: "text/csv" }));
    link.download = `opendso-trend-${stamp}.csv`;
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(link.href), 10_000);
  }

  stop() {
    clearTimeout(this.timer);
  }

  /** For tests and diagnostics: what is plotted. */
  snapshot() {
    const shown = this.shown;
    return {
      loads: this.loads,
      drawn: this.drawn,
      series: this.series.map((s) => ({ point: s.point, unit: s.info?.unit ?? "", auto: s.auto })),
      samples: shown ? shown.xs.length : 0,
      xMin: shown?.xs.length ? shown.xs[0] : null,
      xMax: shown?.xs.length ? shown.xs[shown.xs.length - 1] : null,
      wallMin: shown?.walls.length ? shown.walls[0] : null,
      axes: shown ? shown.axes.map((a) => a.label) : [],
      range: shown?.range ?? null,
    };
  }
}
