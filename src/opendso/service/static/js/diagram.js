// Single-line diagram per substation and feeder (geometry from /api/grid/diagram), drawn as SVG.
// Pan (drag, arrow keys), zoom (wheel, +/-), fit (0); names appear as one zooms in (level of detail);
// a search box finds any element by name, opens its view and centres on it; clicking a switch opens
// its panel (name, kind, position, normal state, tags from /api/switching/state when the service has it).

import { api, ApiError } from "./api.js";

const NS = "http://www.w3.org/2000/svg";
const CW = 110; // px per column at zoom 1: room for a name beside each wire
const RH = 72; // px per row at zoom 1
// zoom at which each tier of names shows: bars, feeders and terminals; breakers, normally-open points and
// nodes that carry many others; every node and switch; branch names
const LOD = [0, 0.6, 0.9, 1.3];
const FONT_PX = 12; // names on screen
const HEAVY = 12; // a node carrying at least this many nodes below it is named at tier 1
const SYMBOL_LABEL = { breaker: "circuit breaker", load_break: "load-break switch", disconnector: "disconnector", switch: "switch" };
const MAX_RESULTS = 30;

function el(tag, attrs = {}, parent = null) {
  const node = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  if (parent) parent.appendChild(node);
  return node;
}

// names keep their size on screen (the labels group's font size follows the zoom): offsets in em
function text(parent, x, y, value, cls, dx = "0", dy = "0") {
  const t = el("text", { x, y, dx, dy, class: cls }, parent);
  t.textContent = value;
  return t;
}

const fold = (s) => String(s).toLowerCase();

export class DiagramView {
  /**
   * parts: {svg, select, search, results, panel, panelName, panelKind, panelFields, panelClose, note}
   * onElement(id): "Show on the network" of a node's or branch's panel (the app opens its element panel there).
   */
  constructor(parts, { onElement } = {}) {
    this.p = parts;
    this.onElement = onElement ?? (() => {});
    this.catalogue = null;
    this.data = null;
    this.viewName = null;
    this.k = 1;
    this.tx = 0;
    this.ty = 0;
    this.switchEls = new Map(); // switch id -> {g, s}
    this.branchEls = new Map(); // branch id -> [polyline]
    this.live = new Map(); // switch id -> closed (the latest state, also for views not yet drawn)
    this.energised = {};
    this.tags = new Map(); // switch name -> [tag]
    this.tagsAvailable = null; // unknown until asked
    this.selected = null;
    this.loading = null;
    this.root = el("g", { class: "diagram-root" }, this.p.svg);
    this._wire();
  }

  // -- data ----------------------------------------------------------------------------------------
  /** Load the view list and search index once, then the first substation (the one with most feeders). */
  load() {
    this._loaded ??= this._load().catch((err) => { this._loaded = null; throw err; });
    return this._loaded;
  }

  async _load() {
    this.catalogue = await api("/api/grid/diagram");
    const sel = this.p.select;
    sel.textContent = "";
    this.names = new Map();
    const subs = [...this.catalogue.substations].sort((a, b) => a.name.localeCompare(b.name, undefined, { numeric: true }));
    const feedersOf = new Map(this.catalogue.feeders.map((f) => [f.id, f]));
    for (const s of subs) {
      this.names.set(`substation:${s.id}`, s.name);
      const group = document.createElement("optgroup");
      group.label = `${s.name} (${s.kind})`;
      const opt = document.createElement("option");
      opt.value = `substation:${s.id}`;
      opt.textContent = `Substation ${s.name}`;
      group.appendChild(opt);
      for (const fid of s.feeders) {
        const f = feedersOf.get(fid);
        if (!f) continue;
        const o = document.createElement("option");
        o.value = `feeder:${f.id}`;
        o.textContent = `Feeder ${f.name}`;
        group.appendChild(o);
      }
      sel.appendChild(group);
    }
    for (const f of this.catalogue.feeders) {
      this.names.set(`feeder:${f.id}`, f.name);
      if (f.substation < 0 || !this.catalogue.substations.some((s) => s.id === f.substation)) {
        const o = document.createElement("option");
        o.value = `feeder:${f.id}`;
        o.textContent = `Feeder ${f.name}`;
        sel.appendChild(o);
      }
    }
    this.index = this.catalogue.index.map((row) => ({ name: row[0], kind: row[1], id: row[2], at: row[3], view: row[4], key: fold(row[0]) }));
    const first = [...this.catalogue.substations].sort((a, b) => b.feeders.length - a.feeders.length)[0];
    await this.show(first ? `substation:${first.id}` : sel.value);
    this.loadTags();
  }

  /** Show one view ("substation:ID" or "feeder:ID"). */
  async show(viewName) {
    if (!viewName) return;
    const [kind, id] = viewName.split(":");
    this.loading = viewName;
    const data = await api(`/api/grid/diagram?${kind}=${encodeURIComponent(id)}`);
    if (this.loading !== viewName) return; // a later choice won
    this.viewName = viewName;
    this.p.select.value = viewName;
    this.data = data;
    this.render();
    this.fit();
  }

  /** Ask for the tags of the switching state; a service without it answers 404: no tags then. */
  async loadTags() {
    try {
      const state = await api("/api/switching/state");
      this.tagsAvailable = true;
      this.tags = new Map();
      for (const tag of state?.tags ?? []) {
        const name = tag.switch ?? tag.device ?? tag.element;
        if (!name) continue;
        if (!this.tags.has(name)) this.tags.set(name, []);
        this.tags.get(name).push(tag);
      }
      this.drawTags();
    } catch (err) {
      // a service without switching (404) or not running it (503) simply has no tags to show
      if (err instanceof ApiError) this.tagsAvailable = false;
      else console.warn(err);
    }
    if (this.selected) this.showSwitch(this.selected);
  }

  /** A state message (or /api/state): switch positions and energisation follow it. */
  setState(state) {
    for (const [id, closed] of Object.entries(state?.switches ?? {})) this.live.set(Number(id), !!closed);
    if (state?.energised) this.energised = state.energised;
    if (!this.data) return;
    for (const s of this.data.switches) {
      const closed = this.live.get(s.id);
      if (closed === undefined || closed === s.closed) continue;
      s.closed = closed;
      this._styleSwitch(s);
      if (this.selected?.id === s.id) this.showSwitch(s);
    }
    this._styleEnergised();
  }

  // -- drawing -------------------------------------------------------------------------------------
  render() {
    const d = this.data;
    this.root.textContent = "";
    this.switchEls = new Map();
    this.branchEls = new Map();
    this.nodeEls = new Map();
    this.selected = null;
    this.p.panel.hidden = true;
    const bands = el("g", { class: "d-bands" }, this.root);
    const wires = el("g", { class: "d-wires" }, this.root);
    const bars = el("g", { class: "d-bars" }, this.root);
    const nodes = el("g", { class: "d-nodes" }, this.root);
    const symbols = el("g", { class: "d-switches" }, this.root);
    const labels = el("g", { class: "d-labels" }, this.root);
    this.labels = labels;
    this.hl = el("g", { class: "d-highlight" }, this.root);
    for (const b of d.bands) {
      el("rect", { x: b.x0 * CW, y: 0.5 * RH, width: (b.x1 - b.x0) * CW, height: (d.bounds[3] - 0.5) * RH, class: "d-band" }, bands);
      // a feeder is named "<busbar> / <first branch>": the band shows the branch
      const short = String(b.name).split(" / ").pop();
      text(labels, (b.x0 + 0.1) * CW, (d.bounds[3] - 0.4) * RH, short, "lbl lbl-1 d-band-name");
    }
    for (const br of d.branches) {
      const pts = br.points.map(([x, y]) => `${x * CW},${y * RH}`).join(" ");
      const line = el("polyline", { points: pts, class: `d-branch role-${br.role} kind-${String(br.kind).replace(/[^a-z0-9_-]/gi, "")}` }, wires);
      line.dataset.id = br.id;
      line.dataset.from = br.from_node;
      line.dataset.to = br.to_node;
      if (!this.branchEls.has(br.id)) this.branchEls.set(br.id, []);
      this.branchEls.get(br.id).push(line);
      if (br.component === "transformer" || br.component === "three_winding_transformer") {
        const [mx, my] = midpoint(br.points);
        el("circle", { cx: mx * CW, cy: (my - 0.07) * RH, r: 7, class: "d-trafo" }, wires);
        el("circle", { cx: mx * CW, cy: (my + 0.07) * RH, r: 7, class: "d-trafo" }, wires);
      }
      const [lx, ly] = labelPoint(br.points);
      text(labels, lx * CW, ly * RH, br.name, "lbl lbl-3 d-branch-name", "-0.5em", "0.35em");
    }
    for (const bar of d.bars) {
      const r = el("rect", { x: bar.x0 * CW, y: bar.y * RH - 3, width: (bar.x1 - bar.x0) * CW, height: 6, class: "d-bar" }, bars);
      r.dataset.id = bar.id;
      this.nodeEls.set(bar.id, { x: (bar.x0 + bar.x1) / 2, y: bar.y, shape: r });
      text(labels, bar.x1 * CW, bar.y * RH, `${bar.name} · ${fmtKv(bar.u_rated_kv)}`, "lbl lbl-0 d-bar-name", "0", "-0.6em");
    }
    for (const s of d.sources) {
      el("polyline", { points: s.points.map(([x, y]) => `${x * CW},${y * RH}`).join(" "), class: "d-branch role-source" }, wires);
      el("circle", { cx: s.x * CW, cy: s.y * RH, r: 10, class: "d-source" }, nodes);
      text(nodes, s.x * CW, s.y * RH + 4, "~", "d-source-mark");
      text(labels, s.x * CW, s.y * RH, s.name, "lbl lbl-1", "1.2em", "0.35em");
    }
    for (const n of d.nodes) {
      if (n.terminal) {
        const g = el("g", { class: "d-terminal", tabindex: 0, role: "link" }, nodes);
        el("path", { d: `M ${n.x * CW - 7} ${n.y * RH - 5} L ${n.x * CW + 7} ${n.y * RH - 5} L ${n.x * CW} ${n.y * RH + 7} Z` }, g);
        const target = n.target ? `${n.target.kind}:${n.target.id}` : null;
        const where = target ? this.names?.get(target) ?? target : "";
        g.dataset.target = target ?? "";
        const title = el("title", {}, g);
        title.textContent = `${n.name} → ${where}`;
        text(labels, n.x * CW, n.y * RH, `→ ${where}`, "lbl lbl-1 d-terminal-name", "0.8em", "0.35em");
        if (!this.nodeEls.has(n.id)) this.nodeEls.set(n.id, { x: n.x, y: n.y, shape: g });
        continue;
      }
      const c = el("circle", { cx: n.x * CW, cy: n.y * RH, r: 4, class: "d-node" }, nodes);
      c.dataset.id = n.id;
      this.nodeEls.set(n.id, { x: n.x, y: n.y, shape: c });
      const tier = n.weight >= HEAVY ? 1 : 2;
      text(labels, n.x * CW, n.y * RH, n.name, `lbl lbl-${tier} d-node-name`, "0.6em", "0.35em");
    }
    for (const s of d.switches) {
      const live = this.live.get(s.id);
      if (live !== undefined) s.closed = live;
      const g = el("g", { class: "d-switch", tabindex: 0, role: "button" }, symbols);
      g.dataset.id = s.id;
      const cx = s.x * CW;
      const cy = s.y * RH;
      if (s.symbol === "breaker") el("rect", { x: cx - 7, y: cy - 7, width: 14, height: 14, class: "sym" }, g);
      else if (s.symbol === "disconnector") el("path", { d: `M ${cx} ${cy - 8} L ${cx + 8} ${cy} L ${cx} ${cy + 8} L ${cx - 8} ${cy} Z`, class: "sym" }, g);
      else el("circle", { cx, cy, r: s.symbol === "load_break" ? 7 : 5, class: "sym" }, g);
      if (s.normally_open) text(g, cx + 9, cy + 12, "NO", "d-nop");
      const title = el("title", {}, g);
      g.appendChild(title);
      const tier = s.symbol === "breaker" || s.normally_open ? 1 : 2;
      text(labels, cx, cy, s.name, `lbl lbl-${tier} d-switch-name`, "1em", "0.35em");
      this.switchEls.set(s.id, { g, title, s });
      this._styleSwitch(s);
    }
    this.drawTags();
    this._styleEnergised();
    this.p.note.textContent = `${d.view.kind} ${d.view.name}: ${d.nodes.filter((n) => !n.terminal).length} nodes, ${d.switches.length} switches`;
    this.p.svg.dispatchEvent(new Event("drawn"));
  }

  _styleSwitch(s) {
    const parts = this.switchEls.get(s.id);
    if (!parts) return;
    const abnormal = s.closed === s.normally_open; // not in its normal position
    parts.g.setAttribute("class", `d-switch sym-${s.symbol} ${s.closed ? "closed" : "open"}${abnormal ? " abnormal" : ""}${this.selected?.id === s.id ? " selected" : ""}`);
    parts.title.textContent = `${SYMBOL_LABEL[s.symbol] ?? s.symbol} ${s.name}: ${s.closed ? "closed" : "OPEN"}${s.normally_open ? " (normally open)" : ""}`;
  }

  _styleEnergised() {
    if (!this.data) return;
    const e = this.energised;
    for (const lines of this.branchEls.values()) {
      for (const line of lines) {
        const a = e[line.dataset.from];
        const b = e[line.dataset.to];
        line.classList.toggle("dead", a === false && b === false);
      }
    }
  }

  drawTags() {
    if (!this.data) return;
    for (const { g, s } of this.switchEls.values()) {
      g.querySelector(".d-tag")?.remove();
      const tags = this.tags.get(s.name);
      if (!tags?.length) continue;
      const blocking = tags.some((tag) => tag.kind === "do_not_operate");
      const t = el("g", { class: `d-tag${blocking ? " do-not-operate" : ""}` }, g);
      el("rect", { x: s.x * CW - 22, y: s.y * RH - 22, width: 14, height: 11 }, t);
      text(t, s.x * CW - 15, s.y * RH - 13.5, blocking ? "DNO" : "C", "d-tag-mark");
    }
  }

  // -- view transform ------------------------------------------------------------------------------
  _apply() {
    this.root.setAttribute("transform", `translate(${this.tx} ${this.ty}) scale(${this.k})`);
    this.labels?.setAttribute("font-size", (FONT_PX / this.k).toFixed(3));
    const svg = this.p.svg;
    LOD.forEach((z, i) => svg.classList.toggle(`lod-${i}`, this.k >= z));
  }

  _size() {
    const r = this.p.svg.getBoundingClientRect();
    return [Math.max(r.width, 1), Math.max(r.height, 1)];
  }

  fit() {
    if (!this.data) return;
    const [w, h] = this._size();
    const [x0, y0, x1, y1] = this.data.bounds;
    const bw = (x1 - x0) * CW;
    const bh = (y1 - y0) * RH;
    this.k = Math.min(w / bw, h / bh, 1.5);
    this.tx = (w - bw * this.k) / 2 - x0 * CW * this.k;
    this.ty = (h - bh * this.k) / 2 - y0 * RH * this.k;
    this._apply();
  }

  zoom(factor, cx = null, cy = null) {
    const [w, h] = this._size();
    const px = cx ?? w / 2;
    const py = cy ?? h / 2;
    const k = Math.min(Math.max(this.k * factor, 0.02), 6);
    this.tx = px - ((px - this.tx) * k) / this.k;
    this.ty = py - ((py - this.ty) * k) / this.k;
    this.k = k;
    this._apply();
  }

  /** Centre the view on a diagram point (columns, rows) at zoom k (default: enough to read names). */
  centreOn(x, y, k = Math.max(this.k, LOD[2] + 0.2)) {
    const [w, h] = this._size();
    this.k = k;
    this.tx = w / 2 - x * CW * k;
    this.ty = h / 2 - y * RH * k;
    this._apply();
  }

  // -- search --------------------------------------------------------------------------------------
  /** Elements whose name contains the text (case-insensitive), names starting with it first. */
  find(q) {
    const key = fold(q.trim());
    if (!key || !this.index) return [];
    const starts = [];
    const contains = [];
    for (const row of this.index) {
      const at = row.key.indexOf(key);
      if (at === 0) starts.push(row);
      else if (at > 0) contains.push(row);
      if (starts.length >= MAX_RESULTS) break;
    }
    return [...starts, ...contains].slice(0, MAX_RESULTS);
  }

  /** Open the view that holds a search result, centre on it and highlight it. */
  async goTo(row) {
    if (this.viewName !== row.view) await this.show(row.view);
    const pos = this.positionOf(row);
    if (!pos) return false;
    this.centreOn(pos[0], pos[1]);
    this.highlight(pos);
    const sw = row.kind === "switch" ? this.data.switches.find((s) => s.id === row.id) : null;
    if (sw) this.select(sw);
    return true;
  }

  positionOf(row) {
    if (row.kind === "switch") {
      const s = this.data.switches.find((x) => x.id === row.id);
      if (s) return [s.x, s.y];
    }
    const br = this.data.branches.find((b) => b.id === row.id);
    if (br) return midpoint(br.points);
    const n = this.nodeEls.get(row.at) ?? this.nodeEls.get(row.id);
    return n ? [n.x, n.y] : null;
  }

  highlight([x, y]) {
    this.hl.textContent = "";
    el("circle", { cx: x * CW, cy: y * RH, r: 18, class: "d-hl" }, this.hl);
    this.highlighted = [x, y];
  }

  _renderResults(rows) {
    const list = this.p.results;
    list.textContent = "";
    this.results = rows;
    list.hidden = !rows.length;
    rows.forEach((row, i) => {
      const li = document.createElement("li");
      li.setAttribute("role", "option");
      li.dataset.i = i;
      const name = document.createElement("span");
      name.textContent = row.name;
      const what = document.createElement("span");
      what.className = "muted small";
      what.textContent = ` ${row.kind} · ${this.names?.get(row.view) ?? row.view}`;
      li.append(name, what);
      list.appendChild(li);
    });
  }

  // -- switch panel --------------------------------------------------------------------------------
  select(s) {
    const before = this.selected;
    this.selected = s;
    if (before) this._styleSwitch(before);
    if (!s) { this.p.panel.hidden = true; return; }
    this._styleSwitch(s);
    this.showSwitch(s);
    this.loadTags(); // tags change under other hands: fresh ones for the panel
  }

  showSwitch(s) {
    const p = this.p;
    p.panel.hidden = false;
    p.panelKind.textContent = `${SYMBOL_LABEL[s.symbol] ?? s.symbol}${s.kind ? ` (${s.kind})` : ""} · id ${s.id}`;
    p.panelName.textContent = s.name;
    const branch = this.data.branches.find((b) => b.id === s.branch);
    const tags = this.tags.get(s.name) ?? [];
    const rows = [
      ["Position", s.closed ? "closed" : "OPEN"],
      ["Normal position", s.normally_open ? "open (normally-open point)" : "closed"],
      ["Kind", SYMBOL_LABEL[s.symbol] ?? s.symbol],
      ["On branch", branch ? `${branch.name} (${branch.kind})` : String(s.branch)],
      ["Tags", this.tagsAvailable === false ? "not available on this service" : tags.length ? tags.map(tagText).join("; ") : "none"],
    ];
    p.panelFields.textContent = "";
    for (const [k, v] of rows) {
      const dt = document.createElement("dt");
      dt.textContent = k;
      const dd = document.createElement("dd");
      dd.textContent = v;
      if (k === "Position" && !s.closed) dd.className = "warn";
      p.panelFields.append(dt, dd);
    }
  }

  // -- events --------------------------------------------------------------------------------------
  _wire() {
    const svg = this.p.svg;
    let drag = null;
    svg.addEventListener("pointerdown", (e) => {
      drag = { x: e.clientX, y: e.clientY, tx: this.tx, ty: this.ty, moved: false, target: e.target };
      svg.setPointerCapture?.(e.pointerId);
    });
    svg.addEventListener("pointermove", (e) => {
      if (!drag) return;
      const dx = e.clientX - drag.x;
      const dy = e.clientY - drag.y;
      if (Math.abs(dx) + Math.abs(dy) > 3) drag.moved = true;
      if (!drag.moved) return;
      this.tx = drag.tx + dx;
      this.ty = drag.ty + dy;
      this._apply();
    });
    svg.addEventListener("pointerup", () => {
      const click = drag && !drag.moved ? drag.target : null;
      drag = null;
      if (click) this._click(click);
    });
    svg.addEventListener("wheel", (e) => {
      e.preventDefault();
      const r = svg.getBoundingClientRect();
      this.zoom(e.deltaY < 0 ? 1.2 : 1 / 1.2, e.clientX - r.left, e.clientY - r.top);
    }, { passive: false });
    svg.addEventListener("keydown", (e) => {
      const step = 60;
      const keys = {
        ArrowLeft: () => { this.tx += step; }, ArrowRight: () => { this.tx -= step; },
        ArrowUp: () => { this.ty += step; }, ArrowDown: () => { this.ty -= step; },
      };
      if (keys[e.key]) { keys[e.key](); this._apply(); e.preventDefault(); e.stopPropagation(); }
      else if (e.key === "+" || e.key === "=") { this.zoom(1.25); e.preventDefault(); e.stopPropagation(); }
      else if (e.key === "-") { this.zoom(0.8); e.preventDefault(); e.stopPropagation(); }
      else if (e.key === "0") { this.fit(); e.preventDefault(); e.stopPropagation(); }
      else if (e.key === "Enter") { this._click(document.activeElement); }
      else if (e.key === "Escape") this.select(null);
    });
    this.p.select.addEventListener("change", () => this.show(this.p.select.value));
    const search = this.p.search;
    search.addEventListener("input", () => this._renderResults(this.find(search.value)));
    search.addEventListener("keydown", (e) => {
      if (e.key === "Enter") {
        e.preventDefault();
        const rows = this.results?.length ? this.results : this.find(search.value);
        if (rows.length) this._pick(rows[0]);
      } else if (e.key === "Escape") {
        this._renderResults([]);
      }
    });
    this.p.results.addEventListener("click", (e) => {
      const li = e.target.closest("li");
      if (li) this._pick(this.results[Number(li.dataset.i)]);
    });
    this.p.panelClose.addEventListener("click", () => this.select(null));
    new ResizeObserver(() => { if (this.data && !this.p.svg.closest("[hidden]")) this._apply(); }).observe(svg);
  }

  async _pick(row) {
    this._renderResults([]);
    this.p.search.value = row.name;
    try {
      await this.goTo(row);
    } catch (err) {
      console.error(err);
    }
  }

  _click(target) {
    const sw = target?.closest?.(".d-switch");
    if (sw) {
      const s = this.switchEls.get(Number(sw.dataset.id))?.s;
      if (s) this.select(s);
      return;
    }
    const term = target?.closest?.(".d-terminal");
    if (term?.dataset.target) { this.show(term.dataset.target); return; }
    const id = Number(target?.dataset?.id);
    if (!Number.isFinite(id)) return;
    if (target.classList.contains("d-node") || target.classList.contains("d-bar")) {
      const n = this.data.nodes.find((x) => x.id === id && !x.terminal) ?? this.data.bars.find((x) => x.id === id);
      if (n) this.showElement(n.name, `node · ${fmtKv(n.u_rated_kv)} · id ${id}`, id, [["Voltage level", fmtKv(n.u_rated_kv)]]);
    } else if (target.classList.contains("d-branch")) {
      const b = this.data.branches.find((x) => x.id === id);
      const on = this.data.switches.filter((x) => x.branch === id).map((x) => `${x.name} (${x.closed ? "closed" : "OPEN"})`);
      if (b) this.showElement(b.name, `${b.kind} · id ${id}`, id, [["Switches", on.join(", ") || "none"]]);
    }
  }

  /** The panel for a node or branch: what the diagram knows, and a way to its full panel on the network page. */
  showElement(name, kind, id, rows) {
    this.select(null);
    const p = this.p;
    p.panel.hidden = false;
    p.panelKind.textContent = kind;
    p.panelName.textContent = name;
    p.panelFields.textContent = "";
    for (const [k, v] of rows) {
      const dt = document.createElement("dt");
      dt.textContent = k;
      const dd = document.createElement("dd");
      dd.textContent = v;
      p.panelFields.append(dt, dd);
    }
    const dt = document.createElement("dt");
    const dd = document.createElement("dd");
    const go = document.createElement("button");
    go.className = "secondary small";
    go.textContent = "Show on the network";
    go.addEventListener("click", () => this.onElement(id));
    dd.appendChild(go);
    p.panelFields.append(dt, dd);
  }

  /** Figures for tests and diagnostics. */
  stats() {
    const shown = [...this.p.svg.querySelectorAll(".lbl")].filter((t) => t.getBoundingClientRect().width > 0).length;
    return {
      view: this.viewName,
      nodes: this.data ? this.data.nodes.length : 0,
      switches: this.data ? this.data.switches.length : 0,
      openSwitches: this.data ? this.data.switches.filter((s) => !s.closed).length : 0,
      labelsShown: shown,
      zoom: this.k,
      highlighted: this.highlighted ?? null,
      selected: this.selected?.name ?? null,
      indexSize: this.index?.length ?? 0,
    };
  }

  /** Screen position (CSS px in the page) of a switch, by name; null if not drawn. */
  screenOfSwitch(name) {
    for (const { g, s } of this.switchEls.values()) {
      if (s.name !== name) continue;
      const r = g.getBoundingClientRect();
      return [r.left + r.width / 2, r.top + r.height / 2];
    }
    return null;
  }
}

function midpoint(points) {
  let total = 0;
  for (let i = 1; i < points.length; i++) total += Math.abs(points[i][0] - points[i - 1][0]) + Math.abs(points[i][1] - points[i - 1][1]);
  let left = total / 2;
  for (let i = 1; i < points.length; i++) {
    const [ax, ay] = points[i - 1];
    const [bx, by] = points[i];
    const seg = Math.abs(bx - ax) + Math.abs(by - ay);
    if (seg >= left && seg > 0) return [ax + ((bx - ax) * left) / seg, ay + ((by - ay) * left) / seg];
    left -= seg;
  }
  return points[points.length - 1];
}

// branch names go beside the last vertical run (the one leading to the node below)
function labelPoint(points) {
  const n = points.length;
  const [ax, ay] = points[n - 2];
  const [bx, by] = points[n - 1];
  return [(ax + bx) / 2, (ay + by) / 2];
}

function fmtKv(kv) {
  return Number.isFinite(kv) ? `${kv >= 1 ? kv.toFixed(kv >= 10 ? 0 : 1) : (kv * 1000).toFixed(0)} ${kv >= 1 ? "kV" : "V"}` : "";
}

const TAG_LABEL = { do_not_operate: "DO NOT OPERATE", caution: "caution" };
function tagText(tag) {
  const parts = [TAG_LABEL[tag.kind] ?? tag.kind ?? "tag"];
  const why = tag.text ?? tag.reason;
  if (why) parts.push(why);
  const by = tag.placed_by ?? tag.by ?? tag.actor;
  if (by) parts.push(`by ${by}`);
  return parts.join(" · ");
}
