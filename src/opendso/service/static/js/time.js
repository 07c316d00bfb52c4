// One time base for every screen. Stored times (alarms, events, measurements, audit) are wall-clock
// UTC; in simulation the operator's world runs on the field simulator's clock. The server sends the
// simulator's time base in every status message (`time_base`): anchors {wall, simulated, speed}
// appended at every start, pause, resume, speed change and jump, so the simulated time of any
// wall-clock instant since the start is anchor.simulated + (wall - anchor.wall) * anchor.speed of
// the last anchor at or before it (speed 0 while paused). Without a simulator (time_base null) the
// displayed time is the wall clock. Every page formats times with fmtTime (the operator's clock)
// and shows fmtWall (real time) in a detail column or tooltip: never a mix in one column.

let anchors = []; // [{wall: ms, sim: ms, speed}], in wall-clock order
let info = null; // the last time_base as sent (null: no simulator)
let offsetMs = 0; // server wall clock minus this browser's clock
let signature = "";

/** Take the time base of a status message (`s.time_base`, null without a simulator) and the server's clock. */
export function setTimeBase(timeBase, serverTimeIso) {
  if (serverTimeIso) {
    const server = Date.parse(serverTimeIso);
    if (Number.isFinite(server)) offsetMs = server - Date.now();
  }
  const next = timeBase && Array.isArray(timeBase.anchors) && timeBase.anchors.length ? timeBase : null;
  const sig = next ? JSON.stringify(next) : "";
  if (sig === signature) return;
  signature = sig;
  info = next;
  anchors = next
    ? next.anchors
      .map((a) => ({ wall: Date.parse(a.wall), sim: Date.parse(a.simulated), speed: Number(a.speed) }))
      .filter((a) => Number.isFinite(a.wall) && Number.isFinite(a.sim) && Number.isFinite(a.speed))
      .sort((a, b) => a.wall - b.wall)
    : [];
  // pages that already show times redraw them on the new base
  document.dispatchEvent(new CustomEvent("opendso:timebase", { detail: info }));
}

/** The time base as the server last sent it (null without a simulator). */
export function timeBase() {
  return info;
}

/** True when the screens run on a simulated clock. */
export function simulating() {
  return anchors.length > 0;
}

/** The server's wall clock now (ms since the epoch). */
export function serverNowMs() {
  return Date.now() + offsetMs;
}

/** Simulated time (ms) of a wall-clock instant (ms); the wall clock itself without a simulator; null before it started. */
export function simMsAt(wallMs) {
  if (!anchors.length) return wallMs;
  if (!Number.isFinite(wallMs) || wallMs < anchors[0].wall) return null;
  let lo = 0;
  let hi = anchors.length - 1;
  while (lo < hi) { // the last anchor at or before wallMs
    const mid = (lo + hi + 1) >> 1;
    if (anchors[mid].wall <= wallMs) lo = mid; else hi = mid - 1;
  }
  const a = anchors[lo];
  return a.sim + (wallMs - a.wall) * a.speed;
}

/** The first wall-clock instant (ms) whose simulated time is at or after simMs (the clock never runs backwards). */
export function wallMsAt(simMs) {
  if (!anchors.length) return simMs;
  for (let k = 0; k < anchors.length; k++) {
    const a = anchors[k];
    if (simMs <= a.sim) return a.wall; // before this anchor, or inside the jump that led to it
    const next = anchors[k + 1];
    const end = next ? a.sim + (next.wall - a.wall) * a.speed : a.speed > 0 ? Infinity : a.sim;
    if (a.speed > 0 && simMs <= end) return a.wall + (simMs - a.sim) / a.speed;
  }
  return serverNowMs(); // paused before reaching it: not yet
}

/** The operator's clock now (ms): simulated in simulation, else the wall clock. */
export function nowMs() {
  return simMsAt(serverNowMs()) ?? serverNowMs();
}

function toMs(value) {
  if (value instanceof Date) return value.getTime();
  if (typeof value === "number") return value;
  return value ? Date.parse(value) : NaN;
}

/** "YYYY-MM-DD HH:MM:SS" (UTC) of an instant in ms. */
export function fmtMs(ms) {
  return Number.isFinite(ms) ? new Date(ms).toISOString().replace("T", " ").slice(0, 19) : "";
}

/**
 * The time to show for a stored (wall-clock) instant: the simulated time in simulation, else the wall
 * clock. An instant before the simulation started has no simulated time: its wall-clock time is shown,
 * marked "(wall clock)".
 */
export function fmtTime(iso) {
  const wall = toMs(iso);
  if (!Number.isFinite(wall)) return "";
  const sim = simMsAt(wall);
  return sim === null ? `${fmtMs(wall)} (wall clock)` : fmtMs(sim);
}

/** The wall-clock time (UTC) of a stored instant, for a detail column or a tooltip. */
export function fmtWall(iso) {
  const wall = toMs(iso);
  return Number.isFinite(wall) ? `${fmtMs(wall)} UTC` : "";
}

/** Tooltip text for a displayed time: the other clock. */
export function timeTitle(iso) {
  return simulating() ? `wall clock ${fmtWall(iso)}` : `${fmtWall(iso)} (wall clock, no simulator)`;
}

/** Name of the clock the screens show. */
export function clockName() {
  return simulating() ? "simulated" : "UTC";
}
