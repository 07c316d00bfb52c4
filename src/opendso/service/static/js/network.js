// The network picture on a <canvas>: batched paths per colour bin so that 10,000 nodes stay
// smooth; pan (drag, arrows), zoom (wheel, +/-), hit-testing through a uniform spatial grid.

import {
  BINS, DEAD, LOADING_PALETTE, VOLTAGE_PALETTE, U_MIN, U_MAX, loadingBin, voltageBin,
} from "./colors.js";

const OVERLOAD = 1.0;
const U_HIGH = 1.05;
const U_LOW = 0.95;
const SELECT = "#4aa3ff";

export class NetworkView {
  constructor(canvas, { onSelect = () => {}, onHover = () => {} } = {}) {
    this.canvas = canvas;
    this.ctx = canvas.getContext("2d", { alpha: false });
    this.onSelect = onSelect;
    this.onHover = onHover;
    this.n = 0;
    this.m = 0;
    this.view = { cx: 0, cy: 0, scale: 1 };
    this.dirty = false;
    this.frames = 0;
    this.lastFrameMs = 0;
    this.drawnNodes = 0;
    this.drawnBranches = 0;
    this.firstDrawAt = null;
    this.selected = null; // {type: "node"|"branch"|"switch", index}
    this.stateUpdates = 0;
    this._bindEvents();
    new ResizeObserver(() => this._resize()).observe(canvas);
  }

  /** Load the /api/grid document. */
  setGrid(grid) {
    const nodes = grid.nodes;
    this.grid = grid;
    this.n = nodes.length;
    this.nodeIndex = new Map();
    this.wx = new Float64Array(this.n);
    this.wy = new Float64Array(this.n);
    let lat0 = 0;
    if (grid.geographic && this.n) lat0 = nodes.reduce((s, p) => s + p.y, 0) / this.n;
    const kx = grid.geographic ? Math.cos((lat0 * Math.PI) / 180) : 1;
    const ky = grid.geographic ? -1 : 1; // north up; schematic y grows downwards
    nodes.forEach((p, i) => {
      this.nodeIndex.set(p.id, i);
      this.wx[i] = p.x * kx;
      this.wy[i] = p.y * ky;
    });
    const branches = grid.branches.filter((b) => this.nodeIndex.has(b.from_node) && this.nodeIndex.has(b.to_node));
    this.branches = branches;
    this.m = branches.length;
    this.branchIndex = new Map(branches.map((b, i) => [b.id, i]));
    this.bf = new Int32Array(branches.map((b) => this.nodeIndex.get(b.from_node)));
    this.bt = new Int32Array(branches.map((b) => this.nodeIndex.get(b.to_node)));
    this.bkind = branches.map((b) => b.kind);
    // switches sit a little way from their node along the switched element
    this.switchList = grid.switches.filter((s) => this.nodeIndex.has(s.node));
    this.switchIndex = new Map(this.switchList.map((s, i) => [s.id, i]));
    this.sx = new Float64Array(this.switchList.length);
    this.sy = new Float64Array(this.switchList.length);
    this.sclosed = new Uint8Array(this.switchList.map((s) => (s.closed ? 1 : 0)));
    this.switchList.forEach((s, i) => {
      const a = this.nodeIndex.get(s.node);
      const b = this.branchIndex.get(s.element);
      let x = this.wx[a];
      let y = this.wy[a];
      if (b !== undefined) {
        const o = this.bf[b] === a ? this.bt[b] : this.bf[b];
        x += (this.wx[o] - x) * 0.25;
        y += (this.wy[o] - y) * 0.25;
      }
      this.sx[i] = x;
      this.sy[i] = y;
    });
    this.u = new Float64Array(this.n).fill(NaN);
    this.live = new Uint8Array(this.n).fill(1);
    this.loading = new Float64Array(this.m).fill(NaN);
    this._buildSpatialIndex();
    this._rebin();
    this.fit();
  }

  /**
   * Marks of the switching register and FLISR, by name: faulted nodes (a cross), earthed nodes
   * (the earth symbol) and tagged switches (DNO or C beside the switch). Names not in the drawing
   * are left out; ``marks()`` says what is drawn.
   */
  setMarks({ faulted = [], earthed = [], tags = [] } = {}) {
    const nodeRow = new Map((this.grid?.nodes ?? []).map((p, i) => [p.name, i]));
    const switchRow = new Map((this.switchList ?? []).map((s, i) => [s.name, i]));
    const rows = (names) => [...new Set(names)].map((n) => nodeRow.get(n)).filter((i) => i !== undefined);
    this.markRows = {
      faulted: rows(faulted),
      earthed: rows(earthed),
      tags: tags.map(([name, kind]) => [switchRow.get(name), kind]).filter(([i]) => i !== undefined),
    };
    this.requestDraw();
  }

  /**
   * A colour layer over the nodes (the hosting-capacity map, hostingmap.js): ``bins[k]`` lists the
   * node rows drawn in ``palette[k]``, ``restRows`` those drawn in ``rest`` (not in the layer).
   * null returns to the voltage colours. ``nodeRow(id)`` gives a node's row.
   */
  setNodeLayer(layer) {
    this.nodeLayer = layer;
    this.requestDraw();
  }

  nodeRow(id) {
    return this.nodeIndex?.get(id);
  }

  marks() {
    const m = this.markRows ?? { faulted: [], earthed: [], tags: [] };
    return { faulted: m.faulted.length, earthed: m.earthed.length, tags: m.tags.length };
  }

  /** Apply a state document or state message (keys present are applied; others kept). */
  setState(state) {
    if (!this.n) return;
    for (const [id, v] of Object.entries(state.u_pu ?? {})) {
      const i = this.nodeIndex.get(Number(id));
      if (i !== undefined) this.u[i] = v ?? NaN;
    }
    for (const [id, v] of Object.entries(state.energised ?? {})) {
      const i = this.nodeIndex.get(Number(id));
      if (i !== undefined) this.live[i] = v ? 1 : 0;
    }
    for (const [id, v] of Object.entries(state.loading ?? {})) {
      const i = this.branchIndex.get(Number(id));
      if (i !== undefined) this.loading[i] = v ?? NaN;
    }
    for (const [id, v] of Object.entries(state.switches ?? {})) {
      const i = this.switchIndex.get(Number(id));
      if (i !== undefined) this.sclosed[i] = v ? 1 : 0;
    }
    this.stateUpdates += 1;
    this._rebin();
  }

  /** Values shown for a node or branch id (for the element panel). */
  valuesOf(id) {
    const i = this.nodeIndex?.get(id);
    if (i !== undefined) return { u_pu: this.u[i], energised: !!this.live[i] };
    const b = this.branchIndex?.get(id);
    if (b !== undefined) {
      return { loading: this.loading[b], energised: !!(this.live[this.bf[b]] && this.live[this.bt[b]]) };
    }
    const s = this.switchIndex?.get(id);
    if (s !== undefined) return { closed: !!this.sclosed[s] };
    return {};
  }

  /** Select an element by id (or null) and centre on it when asked. */
  select(id, { centre = false } = {}) {
    let sel = null;
    if (id !== null && id !== undefined) {
      if (this.nodeIndex.has(id)) sel = { type: "node", index: this.nodeIndex.get(id) };
      else if (this.branchIndex.has(id)) sel = { type: "branch", index: this.branchIndex.get(id) };
      else if (this.switchIndex.has(id)) sel = { type: "switch", index: this.switchIndex.get(id) };
    }
    this.selected = sel;
    if (sel && centre) {
      const [x, y] = this._worldOf(sel);
      this.view.cx = x;
      this.view.cy = y;
    }
    this.requestDraw();
    return sel !== null;
  }

  /** Fit the whole network into the canvas. */
  fit() {
    if (!this.n) return;
    const { minX, minY, maxX, maxY } = this.bounds;
    const w = this.canvas.clientWidth || 800;
    const h = this.canvas.clientHeight || 600;
    this.view.cx = (minX + maxX) / 2;
    this.view.cy = (minY + maxY) / 2;
    this.view.scale = 0.92 * Math.min(w / Math.max(maxX - minX, 1e-9), h / Math.max(maxY - minY, 1e-9));
    this.requestDraw();
  }

  zoom(factor, sx, sy) {
    const w = this.canvas.clientWidth;
    const h = this.canvas.clientHeight;
    sx ??= w / 2;
    sy ??= h / 2;
    const [wx, wy] = this.toWorld(sx, sy);
    this.view.scale *= factor;
    this.view.cx = wx - (sx - w / 2) / this.view.scale;
    this.view.cy = wy - (sy - h / 2) / this.view.scale;
    this.requestDraw();
  }

  pan(dx, dy) {
    this.view.cx -= dx / this.view.scale;
    this.view.cy -= dy / this.view.scale;
    this.requestDraw();
  }

  toWorld(sx, sy) {
    return [
      this.view.cx + (sx - this.canvas.clientWidth / 2) / this.view.scale,
      this.view.cy + (sy - this.canvas.clientHeight / 2) / this.view.scale,
    ];
  }

  /** Ask for one redraw on the next animation frame (many changes coalesce into one frame). */
  requestDraw() {
    if (this.dirty) return;
    this.dirty = true;
    requestAnimationFrame(() => {
      this.dirty = false;
      this.draw();
    });
  }

  stats() {
    return {
      nodes: this.n,
      branches: this.m,
      switches: this.switchList?.length ?? 0,
      nodesDrawn: this.drawnNodes,
      branchesDrawn: this.drawnBranches,
      frames: this.frames,
      lastFrameMs: this.lastFrameMs,
      firstDrawAt: this.firstDrawAt,
      stateUpdates: this.stateUpdates,
      deadNodes: this.live ? this.live.reduce((k, v) => k + (v ? 0 : 1), 0) : 0,
      openSwitches: this.sclosed ? this.sclosed.reduce((k, v) => k + (v ? 0 : 1), 0) : 0,
      selected: this.selected,
    };
  }

  /** Screen position (CSS pixels) of an element id, for tests and keyboard focus. */
  screenOf(id) {
    const sel = this.nodeIndex.has(id)
      ? { type: "node", index: this.nodeIndex.get(id) }
      : this.branchIndex.has(id) ? { type: "branch", index: this.branchIndex.get(id) } : null;
    if (!sel) return null;
    const [x, y] = this._worldOf(sel);
    return this._screen(x, y);
  }

  /** Ids of elements in violation (overload, voltage out of band), worst first. */
  violations() {
    const out = [];
    for (let b = 0; b < this.m; b++) {
      if (this.loading[b] >= OVERLOAD) out.push({ id: this.branches[b].id, score: this.loading[b] - 1 });
    }
    for (let i = 0; i < this.n; i++) {
      const u = this.u[i];
      if (this.live[i] && (u > U_HIGH || u < U_LOW)) out.push({ id: this.grid.nodes[i].id, score: Math.abs(u - 1) });
    }
    return out.sort((a, b) => b.score - a.score).map((v) => v.id);
  }

  // -- internals ---------------------------------------------------------------------------
  _screen(x, y) {
    return [
      (x - this.view.cx) * this.view.scale + this.canvas.clientWidth / 2,
      (y - this.view.cy) * this.view.scale + this.canvas.clientHeight / 2,
    ];
  }

  _worldOf(sel) {
    if (sel.type === "node") return [this.wx[sel.index], this.wy[sel.index]];
    if (sel.type === "switch") return [this.sx[sel.index], this.sy[sel.index]];
    const a = this.bf[sel.index];
    const b = this.bt[sel.index];
    return [(this.wx[a] + this.wx[b]) / 2, (this.wy[a] + this.wy[b]) / 2];
  }

  _resize() {
    const dpr = window.devicePixelRatio || 1;
    const w = this.canvas.clientWidth;
    const h = this.canvas.clientHeight;
    if (!w || !h) return;
    const first = this.canvas.width === 300 && this.canvas.height === 150;
    this.canvas.width = Math.round(w * dpr);
    this.canvas.height = Math.round(h * dpr);
    if (first && this.n) this.fit();
    this.draw();
  }

  _rebin() {
    // branch buckets: bins 0..BINS-1 by loading, BINS = de-energised, BINS+1 = unknown value
    const lb = Array.from({ length: BINS + 2 }, () => []);
    for (let b = 0; b < this.m; b++) {
      if (!this.live[this.bf[b]] || !this.live[this.bt[b]]) lb[BINS].push(b);
      else {
        const bin = loadingBin(this.loading[b]);
        lb[bin < 0 ? BINS + 1 : bin].push(b);
      }
    }
    const nb = Array.from({ length: BINS + 2 }, () => []);
    for (let i = 0; i < this.n; i++) {
      if (!this.live[i]) nb[BINS].push(i);
      else {
        const bin = voltageBin(this.u[i]);
        nb[bin < 0 ? BINS + 1 : bin].push(i);
      }
    }
    this.branchBins = lb;
    this.nodeBins = nb;
    this.requestDraw();
  }

  _buildSpatialIndex() {
    let minX = Infinity, minY = Infinity, maxX = -Infinity, maxY = -Infinity;
    for (let i = 0; i < this.n; i++) {
      minX = Math.min(minX, this.wx[i]); maxX = Math.max(maxX, this.wx[i]);
      minY = Math.min(minY, this.wy[i]); maxY = Math.max(maxY, this.wy[i]);
    }
    if (!this.n) { minX = minY = 0; maxX = maxY = 1; }
    this.bounds = { minX, minY, maxX, maxY };
    const cells = Math.max(8, Math.min(256, Math.round(Math.sqrt(this.n))));
    const size = Math.max(maxX - minX, maxY - minY, 1e-9) / cells;
    const index = new Map();
    const key = (cx, cy) => cx * 100003 + cy;
    const add = (cx, cy, item) => {
      const k = key(cx, cy);
      let list = index.get(k);
      if (!list) index.set(k, (list = []));
      list.push(item);
    };
    const cell = (v, o) => Math.floor((v - o) / size);
    for (let i = 0; i < this.n; i++) add(cell(this.wx[i], minX), cell(this.wy[i], minY), i);
    for (let b = 0; b < this.m; b++) {
      const x0 = cell(Math.min(this.wx[this.bf[b]], this.wx[this.bt[b]]), minX);
      const x1 = cell(Math.max(this.wx[this.bf[b]], this.wx[this.bt[b]]), minX);
      const y0 = cell(Math.min(this.wy[this.bf[b]], this.wy[this.bt[b]]), minY);
      const y1 = cell(Math.max(this.wy[this.bf[b]], this.wy[this.bt[b]]), minY);
      if ((x1 - x0 + 1) * (y1 - y0 + 1) > 4096) continue; // absurdly long branch: skip from index
      for (let cx = x0; cx <= x1; cx++) for (let cy = y0; cy <= y1; cy++) add(cx, cy, -1 - b);
    }
    for (let s = 0; s < this.sx.length; s++) add(cell(this.sx[s], minX), cell(this.sy[s], minY), { s });
    this.spatial = { index, size, key, minX, minY };
  }

  /** Element under a screen point (CSS px): switch, then node, then branch, within a few pixels. */
  hitTest(sx, sy, tolerancePx = 7) {
    if (!this.n) return null;
    const [x, y] = this.toWorld(sx, sy);
    const tol = tolerancePx / this.view.scale;
    const { index, size, key, minX, minY } = this.spatial;
    const span = Math.ceil(tol / size);
    const cx = Math.floor((x - minX) / size);
    const cy = Math.floor((y - minY) / size);
    let best = null;
    let bestD = tol * tol * 1.1;
    const seen = new Set();
    for (let i = cx - span; i <= cx + span; i++) {
      for (let j = cy - span; j <= cy + span; j++) {
        for (const item of index.get(key(i, j)) ?? []) {
          let d, hit;
          if (typeof item === "object") {
            d = (this.sx[item.s] - x) ** 2 + (this.sy[item.s] - y) ** 2;
            hit = { type: "switch", index: item.s };
            d *= 0.5; // switches win over the node they sit next to
          } else if (item >= 0) {
            d = (this.wx[item] - x) ** 2 + (this.wy[item] - y) ** 2;
            hit = { type: "node", index: item };
            d *= 0.7; // nodes win over the branches ending in them
          } else {
            const b = -1 - item;
            if (seen.has(b)) continue;
            seen.add(b);
            d = segmentDistance2(x, y, this.wx[this.bf[b]], this.wy[this.bf[b]], this.wx[this.bt[b]], this.wy[this.bt[b]]);
            hit = { type: "branch", index: b };
            d += 0.1 * tol * tol; // a node or switch at the same spot wins over the branch
          }
          if (d < bestD || (d === 0 && bestD === 0)) { bestD = d; best = hit; }
        }
      }
    }
    if (!best) return null;
    if (best.type === "node") return { ...best, id: this.grid.nodes[best.index].id, name: this.grid.nodes[best.index].name };
    if (best.type === "switch") return { ...best, id: this.switchList[best.index].id, name: this.switchList[best.index].name };
    return { ...best, id: this.branches[best.index].id, name: this.branches[best.index].name };
  }

  draw() {
    const t0 = performance.now();
    const ctx = this.ctx;
    const dpr = window.devicePixelRatio || 1;
    const w = this.canvas.clientWidth;
    const h = this.canvas.clientHeight;
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.fillStyle = "#101418";
    ctx.fillRect(0, 0, w, h);
    if (!this.n || !w) return;
    const { cx, cy, scale } = this.view;
    const ox = w / 2 - cx * scale;
    const oy = h / 2 - cy * scale;
    const margin = 10;
    const visible = (x, y) => x > -margin && y > -margin && x < w + margin && y < h + margin;
    const X = (i) => this.wx[i] * scale + ox;
    const Y = (i) => this.wy[i] * scale + oy;
    let branchesDrawn = 0;
    ctx.lineCap = "round";

    // branches, one path per colour bin
    const dense = this.m > 3000 && scale * (this.bounds.maxX - this.bounds.minX) < 3 * w;
    for (let bin = 0; bin < BINS + 2; bin++) {
      const list = this.branchBins[bin];
      if (!list.length) continue;
      ctx.beginPath();
      for (const b of list) {
        const x0 = X(this.bf[b]), y0 = Y(this.bf[b]), x1 = X(this.bt[b]), y1 = Y(this.bt[b]);
        if (Math.max(x0, x1) < 0 || Math.min(x0, x1) > w || Math.max(y0, y1) < 0 || Math.min(y0, y1) > h) continue;
        ctx.moveTo(x0, y0);
        ctx.lineTo(x1, y1);
        branchesDrawn++;
      }
      if (bin === BINS) {
        ctx.strokeStyle = DEAD;
        ctx.setLineDash([4, 3]);
        ctx.lineWidth = 1.2;
      } else if (bin === BINS + 1) {
        ctx.strokeStyle = "#8a93a0";
        ctx.setLineDash([]);
        ctx.lineWidth = 1;
      } else {
        ctx.strokeStyle = LOADING_PALETTE[bin];
        ctx.setLineDash([]);
        const base = dense ? 1 : 1.6;
        ctx.lineWidth = bin >= BINS - 1 ? base + 2.2 : bin >= 0.8 * (BINS - 1) ? base + 1 : base;
      }
      ctx.stroke();
    }
    ctx.setLineDash([]);

    // transformers: a double ring at the midpoint, when zoomed in enough to read
    if (!dense) {
      ctx.strokeStyle = "#c9d1dc";
      ctx.lineWidth = 1.2;
      ctx.beginPath();
      for (let b = 0; b < this.m; b++) {
        if (this.bkind[b] !== "transformer") continue;
        const mx = (X(this.bf[b]) + X(this.bt[b])) / 2, my = (Y(this.bf[b]) + Y(this.bt[b])) / 2;
        if (!visible(mx, my)) continue;
        ctx.moveTo(mx + 1.5, my - 2.5); ctx.arc(mx - 1.5, my - 2.5, 3, 0, 2 * Math.PI);
        ctx.moveTo(mx + 4.5, my + 1.5); ctx.arc(mx + 1.5, my + 1.5, 3, 0, 2 * Math.PI);
      }
      ctx.stroke();
    }

    // nodes, one path per colour bin (of the voltage, or of a node layer drawn a little larger)
    const layer = this.nodeLayer;
    const r = Math.max(1.2, Math.min(4.5, scale * (this.bounds.maxX - this.bounds.minX) / Math.sqrt(this.n + 1) / 6)) + (layer ? 1 : 0);
    let nodesDrawn = 0;
    const nodeBins = layer ? [...layer.bins, layer.restRows] : this.nodeBins;
    for (let bin = 0; bin < nodeBins.length; bin++) {
      const list = nodeBins[bin];
      if (!list.length) continue;
      if (layer) ctx.fillStyle = bin < layer.bins.length ? layer.palette[bin] : layer.rest;
      else ctx.fillStyle = bin === BINS ? DEAD : bin === BINS + 1 ? "#8a93a0" : VOLTAGE_PALETTE[bin];
      ctx.beginPath();
      for (const i of list) {
        const x = X(i), y = Y(i);
        if (!visible(x, y)) continue;
        ctx.rect(x - r, y - r, 2 * r, 2 * r);
        nodesDrawn++;
      }
      ctx.fill();
    }

    // violation markers: shapes as well as colour
    ctx.lineWidth = 1.5;
    ctx.strokeStyle = "#0b0d10";
    const tri = (x, y, up, size) => {
      const s = up ? -1 : 1;
      ctx.moveTo(x, y + s * size);
      ctx.lineTo(x + size, y - s * size * 0.7);
      ctx.lineTo(x - size, y - s * size * 0.7);
      ctx.closePath();
    };
    ctx.beginPath();
    ctx.fillStyle = "#ff6b6b";
    for (let i = 0; i < this.n; i++) {
      if (this.live[i] && this.u[i] > U_HIGH && visible(X(i), Y(i))) tri(X(i), Y(i) - 9, true, 6);
    }
    ctx.fill(); ctx.stroke();
    ctx.beginPath();
    ctx.fillStyle = "#4dabf7";
    for (let i = 0; i < this.n; i++) {
      if (this.live[i] && this.u[i] < U_LOW && visible(X(i), Y(i))) tri(X(i), Y(i) + 9, false, 6);
    }
    ctx.fill(); ctx.stroke();
    ctx.beginPath();
    ctx.fillStyle = "#ff5af0";
    for (const b of this.branchBins[BINS - 1]) {
      if (!(this.loading[b] >= OVERLOAD)) continue;
      const mx = (X(this.bf[b]) + X(this.bt[b])) / 2, my = (Y(this.bf[b]) + Y(this.bt[b])) / 2;
      if (!visible(mx, my)) continue;
      ctx.moveTo(mx, my - 7); ctx.lineTo(mx + 7, my); ctx.lineTo(mx, my + 7); ctx.lineTo(mx - 7, my); ctx.closePath();
    }
    ctx.fill(); ctx.stroke();

    // open switches: hollow white squares
    ctx.beginPath();
    for (let s = 0; s < this.sx.length; s++) {
      if (this.sclosed[s]) continue;
      const x = this.sx[s] * scale + ox, y = this.sy[s] * scale + oy;
      if (visible(x, y)) ctx.rect(x - 4, y - 4, 8, 8);
    }
    ctx.fillStyle = "#101418";
    ctx.fill();
    ctx.strokeStyle = "#ffffff";
    ctx.lineWidth = 1.8;
    ctx.stroke();

    // faulted nodes (a red cross in a dark halo), earths (the earth symbol), tags (DNO / C)
    const marks = this.markRows;
    if (marks) {
      ctx.lineCap = "round";
      for (const i of marks.faulted) {
        const x = X(i), y = Y(i);
        if (!visible(x, y)) continue;
        for (const [colour, width] of [["#101418", 6], ["#ff4d4f", 3]]) {
          ctx.beginPath();
          ctx.moveTo(x - 7, y - 7); ctx.lineTo(x + 7, y + 7);
          ctx.moveTo(x + 7, y - 7); ctx.lineTo(x - 7, y + 7);
          ctx.strokeStyle = colour; ctx.lineWidth = width; ctx.stroke();
        }
      }
      ctx.strokeStyle = "#ffd43b";
      ctx.lineWidth = 2;
      for (const i of marks.earthed) {
        const x = X(i), y = Y(i) + 8;
        if (!visible(x, y)) continue;
        ctx.beginPath();
        ctx.moveTo(x, y - 6); ctx.lineTo(x, y);
        ctx.moveTo(x - 7, y); ctx.lineTo(x + 7, y);
        ctx.moveTo(x - 4.5, y + 3); ctx.lineTo(x + 4.5, y + 3);
        ctx.moveTo(x - 2, y + 6); ctx.lineTo(x + 2, y + 6);
        ctx.stroke();
      }
      ctx.font = "bold 10px system-ui, sans-serif";
      ctx.textBaseline = "middle";
      for (const [s, kind] of marks.tags) {
        const x = this.sx[s] * scale + ox + 7, y = this.sy[s] * scale + oy - 9;
        if (!visible(x, y)) continue;
        const text = kind === "do_not_operate" ? "DNO" : "C";
        const w = ctx.measureText(text).width + 6;
        ctx.fillStyle = kind === "do_not_operate" ? "#e03131" : "#f59f00";
        ctx.fillRect(x, y - 7, w, 14);
        ctx.fillStyle = "#ffffff";
        ctx.fillText(text, x + 3, y);
      }
    }

    // selection
    if (this.selected) {
      ctx.strokeStyle = SELECT;
      ctx.lineWidth = 3;
      ctx.beginPath();
      if (this.selected.type === "branch") {
        const b = this.selected.index;
        ctx.moveTo(X(this.bf[b]), Y(this.bf[b]));
        ctx.lineTo(X(this.bt[b]), Y(this.bt[b]));
        ctx.globalAlpha = 0.6; ctx.lineWidth = 8; ctx.stroke(); ctx.globalAlpha = 1;
      } else {
        const [x, y] = this._screen(...this._worldOf(this.selected));
        ctx.arc(x, y, 10, 0, 2 * Math.PI);
        ctx.stroke();
      }
    }

    this.drawnNodes = nodesDrawn;
    this.drawnBranches = branchesDrawn;
    this.frames += 1;
    this.lastFrameMs = performance.now() - t0;
    if (this.firstDrawAt === null && nodesDrawn > 0) {
      this.firstDrawAt = performance.now();
      this.canvas.dispatchEvent(new CustomEvent("firstdraw"));
    }
    this.canvas.dispatchEvent(new CustomEvent("drawn"));
  }

  _bindEvents() {
    const c = this.canvas;
    let drag = null;
    c.addEventListener("pointerdown", (e) => {
      c.setPointerCapture(e.pointerId);
      drag = { x: e.offsetX, y: e.offsetY, moved: 0 };
    });
    c.addEventListener("pointermove", (e) => {
      if (drag) {
        const dx = e.offsetX - drag.x, dy = e.offsetY - drag.y;
        drag.moved += Math.abs(dx) + Math.abs(dy);
        drag.x = e.offsetX; drag.y = e.offsetY;
        if (drag.moved > 3) { c.classList.add("dragging"); this.pan(dx, dy); }
      } else {
        this.onHover(this.hitTest(e.offsetX, e.offsetY), e.offsetX, e.offsetY);
      }
    });
    c.addEventListener("pointerup", (e) => {
      c.classList.remove("dragging");
      if (drag && drag.moved <= 3) {
        const hit = this.hitTest(e.offsetX, e.offsetY);
        this.selected = hit;
        this.requestDraw();
        this.onSelect(hit);
      }
      drag = null;
    });
    c.addEventListener("pointerleave", () => this.onHover(null));
    c.addEventListener("wheel", (e) => {
      e.preventDefault();
      this.zoom(Math.exp(-e.deltaY * 0.0015), e.offsetX, e.offsetY);
    }, { passive: false });
    c.addEventListener("keydown", (e) => {
      const step = 60;
      const keys = {
        ArrowLeft: () => this.pan(step, 0), ArrowRight: () => this.pan(-step, 0),
        ArrowUp: () => this.pan(0, step), ArrowDown: () => this.pan(0, -step),
        "+": () => this.zoom(1.25), "=": () => this.zoom(1.25), "-": () => this.zoom(0.8),
        "0": () => this.fit(),
        Escape: () => { this.select(null); this.onSelect(null); },
        v: () => this._nextViolation(),
      };
      const action = keys[e.key];
      if (action) { e.preventDefault(); action(); }
    });
  }

  /** Keyboard: jump to the next violation (worst first) and select it. */
  _nextViolation() {
    const list = this.violations();
    if (!list.length) return;
    this._violationCursor = ((this._violationCursor ?? -1) + 1) % list.length;
    const id = list[this._violationCursor];
    this.select(id, { centre: true });
    this.onSelect(this.selected ? { ...this.selected, id } : null);
  }
}

function segmentDistance2(px, py, x0, y0, x1, y1) {
  const dx = x1 - x0, dy = y1 - y0;
  const len2 = dx * dx + dy * dy;
  let t = len2 ? ((px - x0) * dx + (py - y0) * dy) / len2 : 0;
  t = Math.max(0, Math.min(1, t));
  return (x0 + t * dx - px) ** 2 + (y0 + t * dy - py) ** 2;
}

export { U_MIN, U_MAX };
