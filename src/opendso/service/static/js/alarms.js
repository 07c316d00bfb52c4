// Alarm list: the server's list mirrored exactly, group folding with the cause at the head, filters,
// acknowledge / shelve, flash and beep.
//
// The list is the server's: GET /api/alarms (with its version, X-Alarm-Version) on every (re)connect,
// then every stream message {type: "alarm", event, alarm, v} sets or removes one entry (alarm null:
// the server dropped it). Messages not newer than the loaded list are ignored, messages that arrive
// while the list loads are applied after it, so the screen ends up with the server's list, whatever
// was missed while disconnected or across a server restart.
//
// Counts are the server's (status messages; one definition, opendso.operations.alarms.AlarmCounts):
// standing = states unacknowledged + acknowledged + returned_unacknowledged; unacknowledged =
// unacknowledged + returned_unacknowledged; shelved, out_of_service and suppressed separately.

import { api, ApiError } from "./api.js";
import { fmtTime, timeTitle } from "./time.js";

export const RANK = { critical: 1, high: 2, medium: 3, low: 4 };
export const STANDING = new Set(["unacknowledged", "acknowledged", "returned_unacknowledged"]);
const UNACKED = new Set(["unacknowledged", "returned_unacknowledged"]);
export const STATE_TEXT = {
  unacknowledged: "unacknowledged",
  acknowledged: "acknowledged",
  returned_unacknowledged: "returned, unacknowledged",
  shelved: "shelved",
  suppressed: "suppressed by design",
  out_of_service: "out of service",
};

/** The counts as the server defines them, from a list of alarms (used to check a list against the server). */
export function countStates(list) {
  const c = { standing: 0, unacknowledged: 0, shelved: 0, out_of_service: 0, suppressed: 0 };
  for (const a of list) {
    if (STANDING.has(a.state)) c.standing++;
    if (UNACKED.has(a.state)) c.unacknowledged++;
    if (a.state === "shelved") c.shelved++;
    if (a.state === "out_of_service") c.out_of_service++;
    if (a.state === "suppressed") c.suppressed++;
  }
  return c;
}

/** The status bar's alarm field from the server's counts. */
export function renderAlarmStatus(el, counts) {
  const c = counts ?? {};
  const hidden = [
    c.shelved ? `${c.shelved} shelved` : "",
    c.out_of_service ? `${c.out_of_service} out of service` : "",
    c.suppressed ? `${c.suppressed} suppressed` : "",
  ].filter(Boolean);
  el.textContent = `${c.standing ?? 0} standing, ${c.unacknowledged ?? 0} unacknowledged` + (hidden.length ? ` · ${hidden.join(" · ")}` : "");
  el.title = "standing: active + returned unacknowledged; shelved, out-of-service and suppressed-by-design alarms are counted apart";
  el.className = c.unacknowledged ? "bad" : "ok";
}

export class AlarmList {
  constructor({ tbody, empty, badge, banner, bannerText, canWrite, onElement }) {
    Object.assign(this, { tbody, empty, badge, banner, bannerText, canWrite, onElement });
    this.alarms = new Map();
    this.version = -1; // version of the list loaded last (X-Alarm-Version)
    this.loading = null; // the pending resync (messages meanwhile are buffered)
    this.buffer = [];
    this.folded = new Set();
    this.grouped = true;
    this.showShelved = false;
    this.filters = { priority: "", area: "", state: "", sinceS: 0 };
    this.soundOn = false;
    this.fresh = new Set();
    this.audio = null;
    this.serverCounts = null;
    this.resyncs = 0;
    this.onChange = null; // called after every change of the list (other alarm pages redraw)
  }

  /** Replace the list with the server's (GET /api/alarms) and apply what arrived meanwhile. */
  async resync() {
    if (this.loading) return this.loading;
    this.buffer = [];
    this.loading = (async () => {
      try {
        const response = await fetch("/api/alarms", { headers: { Accept: "application/json" }, credentials: "same-origin" });
        if (!response.ok) throw new ApiError(response.status, response.statusText);
        const list = await response.json();
        this.version = Number(response.headers.get("X-Alarm-Version") ?? -1);
        this.alarms = new Map(list.map((a) => [a.key, a]));
        this.resyncs++;
      } finally {
        const waiting = this.buffer;
        this.buffer = [];
        this.loading = null;
        for (const msg of waiting) this.applyMessage(msg);
        this.render();
      }
    })();
    return this.loading;
  }

  /** The first load (same as a resync). */
  load() {
    return this.resync();
  }

  /** Apply a stream message {type: "alarm", event, alarm, v}: the entry after the change, or its removal. */
  applyMessage(msg) {
    if (this.loading) {
      this.buffer.push(msg);
      return;
    }
    // already in the list we loaded (one cycle's messages share a version: only the loaded list's gates)
    if (Number.isFinite(msg.v) && msg.v <= this.version) return;
    const ev = msg.event;
    if (msg.alarm) this.alarms.set(msg.alarm.key, msg.alarm);
    else if (ev) this.alarms.delete(ev.key);
    if (ev && (ev.transition === "raised" || ev.transition === "escalated") && !ev.shelved && !ev.suppressed && !ev.out_of_service) {
      this.fresh.add(ev.key);
      if (RANK[ev.priority] <= 2) this.cue(ev);
    }
    this.render();
  }

  /**
   * The server's counts (from a status message). A status message follows the alarm messages published
   * before it, so a list whose counts differ from it missed some (a slow screen's outbox drops the oldest
   * alarm messages in a flood): twice in a row, and the list is reloaded.
   */
  setCounts(counts) {
    this.serverCounts = counts ?? null;
    if (counts && !this.loading) {
      const mine = countStates(this.alarms.values());
      const same = ["standing", "unacknowledged", "shelved", "out_of_service", "suppressed"].every((k) => mine[k] === counts[k]);
      this.mismatches = same ? 0 : (this.mismatches ?? 0) + 1;
      if (this.mismatches >= 2) {
        this.mismatches = 0;
        this.resync().catch((err) => console.warn("alarm list reload failed", err));
      }
    }
    this.renderBadge();
  }

  /** Visual flash of the banner and, if enabled, a short two-tone beep. */
  cue(alarm) {
    this.banner.classList.remove("flash");
    void this.banner.offsetWidth; // restart the animation
    this.banner.classList.add("flash");
    this.lastCue = { key: alarm.key, at: Date.now() };
    if (this.soundOn) this.beep();
  }

  beep() {
    try {
      this.audio ??= new AudioContext();
      const ctx = this.audio;
      [0, 0.22].forEach((offset, k) => {
        const osc = ctx.createOscillator();
        const gain = ctx.createGain();
        osc.frequency.value = k ? 660 : 880;
        gain.gain.setValueAtTime(0.0001, ctx.currentTime + offset);
        gain.gain.exponentialRampToValueAtTime(0.25, ctx.currentTime + offset + 0.02);
        gain.gain.exponentialRampToValueAtTime(0.0001, ctx.currentTime + offset + 0.18);
        osc.connect(gain).connect(ctx.destination);
        osc.start(ctx.currentTime + offset);
        osc.stop(ctx.currentTime + offset + 0.2);
      });
    } catch (err) {
      console.warn("audio cue unavailable", err);
    }
  }

  async acknowledge(key) {
    await api(`/api/alarms/${encodeURIComponent(key)}/acknowledge`, { method: "POST" });
    this.fresh.delete(key);
  }

  /** Acknowledge the alarms given (what is on screen); returns {acknowledged, skipped}. */
  async acknowledgeKeys(keys) {
    const done = { acknowledged: [], skipped: [] };
    for (let k = 0; k < keys.length; k += 1000) {
      const part = await api("/api/alarms/acknowledge", { method: "POST", body: { keys: keys.slice(k, k + 1000) } });
      done.acknowledged.push(...part.acknowledged);
      done.skipped.push(...part.skipped);
    }
    return done;
  }

  async shelve(key, seconds, reason) {
    await api(`/api/alarms/${encodeURIComponent(key)}/shelve`, { method: "POST", body: { duration_s: seconds, reason } });
  }

  async unshelve(key) {
    await api(`/api/alarms/${encodeURIComponent(key)}/unshelve`, { method: "POST" });
  }

  /** All alarms of the list, in a state (or states). */
  inState(...states) {
    return [...this.alarms.values()].filter((a) => states.includes(a.state));
  }

  /** The alarms the active page lists after the filters (standing ones; shelved too when asked). */
  visible() {
    const f = this.filters;
    const since = f.sinceS ? Date.now() - f.sinceS * 1000 : null;
    return [...this.alarms.values()]
      .filter((a) => STANDING.has(a.state) || (this.showShelved && a.state === "shelved"))
      .filter((a) => !f.priority || a.priority === f.priority)
      .filter((a) => !f.area || (a.group ?? "") === f.area)
      .filter((a) => !f.state || a.state === f.state)
      .filter((a) => since === null || Date.parse(a.since) >= since)
      .sort((a, b) => (RANK[a.priority] ?? 9) - (RANK[b.priority] ?? 9) || String(b.since).localeCompare(String(a.since)));
  }

  /** The list folded by group: each group's alarms with the cause first, then its consequences. */
  groups(list) {
    const groups = new Map();
    for (const a of list) {
      const g = a.group ?? `(no group) ${a.key}`;
      if (!groups.has(g)) groups.set(g, []);
      groups.get(g).push(a);
    }
    for (const items of groups.values()) {
      const causes = new Set(items.map((a) => a.cause).filter(Boolean));
      items.sort((a, b) => (causes.has(b.key) - causes.has(a.key)) || (Boolean(a.cause) - Boolean(b.cause))
        || (RANK[a.priority] ?? 9) - (RANK[b.priority] ?? 9) || String(a.since).localeCompare(String(b.since)));
    }
    return groups;
  }

  /** The alarms whose rows are on screen now: folded groups show their head only. */
  onScreen() {
    const list = this.visible();
    if (!this.grouped) return list;
    const out = [];
    for (const [g, items] of this.groups(list)) out.push(...(this.folded.has(g) ? items.slice(0, 1) : items));
    return out;
  }

  /** Areas (groups) present in the list, sorted. */
  areas() {
    return [...new Set([...this.alarms.values()].map((a) => a.group).filter(Boolean))].sort();
  }

  renderBadge() {
    const c = this.serverCounts ?? countStates(this.alarms.values());
    const urgent = [...this.alarms.values()].filter((a) => UNACKED.has(a.state) && RANK[a.priority] <= 2).length;
    this.badge.hidden = !c.unacknowledged;
    this.badge.textContent = String(c.unacknowledged);
    this.banner.hidden = urgent === 0;
    this.bannerText.textContent = `${urgent} unacknowledged high-priority alarm${urgent === 1 ? "" : "s"} (${c.standing} standing)`;
  }

  /** Redraw at the next frame: a burst of alarm events (a feeder trip raises dozens) is one redraw. */
  render() {
    if (this.renderPending) return;
    this.renderPending = true;
    requestAnimationFrame(() => {
      this.renderPending = false;
      this.renderNow();
    });
  }

  renderNow() {
    this.renderBadge();
    this.onChange?.();
    // the table only while it is on screen; showing the alarm page renders it
    if (this.tbody.offsetParent === null) return;
    const list = this.visible();
    const rows = [];
    if (this.grouped) {
      for (const [g, items] of this.groups(list)) {
        const folded = this.folded.has(g);
        const head = items[0];
        const worst = items.reduce((w, a) => (RANK[a.priority] < RANK[w] ? a.priority : w), head.priority);
        const unacked = items.filter((a) => !a.acknowledged).length;
        const label = head.group ?? head.key;
        const more = items.length - 1;
        rows.push(
          `<tr class="group-row" data-group="${esc(g)}" tabindex="0" aria-expanded="${!folded}">` +
            `<td colspan="7">${folded ? "▸" : "▾"} ${esc(label)} — ${items.length} alarm${items.length > 1 ? "s" : ""}` +
            `, ${unacked} unacknowledged, worst <span class="prio prio-${esc(worst)}">${esc(worst)}</span>` +
            (head.cause === null && items.some((a) => a.cause === head.key) ? `, caused by ${esc(head.channel)}` : "") +
            (folded && more ? ` <span class="muted">(${more} more folded)</span>` : "") +
            `</td></tr>`,
        );
        rows.push(this.row(head, { head: items.length > 1 }));
        if (!folded) rows.push(...items.slice(1).map((a) => this.row(a, { consequence: Boolean(a.cause) })));
      }
    } else {
      rows.push(...list.map((a) => this.row(a)));
    }
    this.tbody.innerHTML = rows.join("");
    this.empty.hidden = list.length > 0;
    this.fresh.clear();
  }

  row(a, { head = false, consequence = false } = {}) {
    const value = a.value === null || a.value === undefined ? "" : Number(a.value).toFixed(3);
    const stateText = STATE_TEXT[a.state] ?? a.state;
    const tag = `<span class="state-tag ${UNACKED.has(a.state) ? "unack" : ""}">${esc(stateText)}</span>` +
      (a.chattering ? ` <span class="state-tag chatter" title="changes state too often: further changes are suppressed">chattering</span>` : "");
    const dis = this.canWrite() ? "" : " disabled title=\"Your role may not acknowledge or shelve\"";
    const cls = [a.acknowledged ? "acked" : "unacked", this.fresh.has(a.key) ? "is-new" : "", head ? "head" : "", consequence ? "consequence" : ""].join(" ");
    const shelvable = STANDING.has(a.state); // active or unacknowledged: nothing else may be shelved
    return (
      `<tr class="${cls}" data-key="${esc(a.key)}">` +
      `<td><span class="prio prio-${esc(a.priority)}">${esc(a.priority)}</span></td>` +
      `<td title="${esc(timeTitle(a.since))}">${esc(fmtTime(a.since))}</td>` +
      `<td><button class="link el-link" data-channel="${esc(a.channel)}">${esc(a.channel)}</button></td>` +
      `<td>${esc(a.monitor)}: ${esc(a.condition)}</td>` +
      `<td>${esc(value)}</td><td>${tag}</td>` +
      `<td class="actions">` +
      (a.acknowledged ? "" : `<button class="ack" data-key="${esc(a.key)}"${dis}>Acknowledge</button>`) +
      (a.state === "shelved" ? `<button class="unshelve" data-key="${esc(a.key)}"${dis}>Unshelve</button>` : "") +
      (shelvable ? `<button class="shelve" data-key="${esc(a.key)}"${dis}>Shelve…</button>` : "") +
      `</td></tr>`
    );
  }
}

export function esc(value) {
  return String(value ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}
