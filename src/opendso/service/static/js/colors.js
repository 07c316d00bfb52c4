// Colour scales readable by colour-blind operators: viridis for loading (sequential), a
// blue–white–orange diverging scale for voltage; violations also get marker shapes.

const VIRIDIS = ["#3b528b", "#2c728e", "#21918c", "#28ae80", "#5ec962", "#addc30", "#fde725"];
// Cool–warm (blue, near white, orange): distinguishable under deuteranopia and protanopia.
const DIVERGING = ["#2166ac", "#4393c3", "#92c5de", "#e8e8e8", "#fdb863", "#e66101", "#b35806"];

export const DEAD = "#5a616b";
export const BINS = 24;

function hexToRgb(hex) {
  const n = parseInt(hex.slice(1), 16);
  return [(n >> 16) & 255, (n >> 8) & 255, n & 255];
}

function interpolate(stops, t) {
  const x = Math.min(Math.max(t, 0), 1) * (stops.length - 1);
  const i = Math.min(Math.floor(x), stops.length - 2);
  const f = x - i;
  const a = hexToRgb(stops[i]);
  const b = hexToRgb(stops[i + 1]);
  const c = a.map((v, k) => Math.round(v + (b[k] - v) * f));
  return `rgb(${c[0]},${c[1]},${c[2]})`;
}

/** Palette of BINS colours for loading 0..1 (index BINS-1 = at or above 100 %). */
export const LOADING_PALETTE = Array.from({ length: BINS }, (_, i) => interpolate(VIRIDIS, i / (BINS - 1)));
/** Palette of BINS colours for voltage 0.90..1.10 p.u. */
export const VOLTAGE_PALETTE = Array.from({ length: BINS }, (_, i) => interpolate(DIVERGING, i / (BINS - 1)));

export const U_MIN = 0.9;
export const U_MAX = 1.1;

/** Bin of a loading value (fraction of rating). */
export function loadingBin(value) {
  if (!Number.isFinite(value)) return -1;
  return Math.min(BINS - 1, Math.max(0, Math.floor((value / 1.0) * (BINS - 1) + 0.5)));
}

/** Bin of a voltage value (p.u.). */
export function voltageBin(value) {
  if (!Number.isFinite(value)) return -1;
  const t = (value - U_MIN) / (U_MAX - U_MIN);
  return Math.min(BINS - 1, Math.max(0, Math.floor(t * (BINS - 1) + 0.5)));
}

/** Draw a palette into a legend canvas. */
export function drawLegend(canvas, palette) {
  const ctx = canvas.getContext("2d");
  const w = canvas.width / palette.length;
  palette.forEach((c, i) => {
    ctx.fillStyle = c;
    ctx.fillRect(Math.floor(i * w), 0, Math.ceil(w) + 1, canvas.height);
  });
}
