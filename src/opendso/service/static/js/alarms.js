// Alarm list: priority, time, element, text; group folding; acknowledge and shelve; flash and beep.

import { api } from "./api.js";

const RANK = { critical: 1, high: 2, medium: 3, low: 4 };

export class AlarmList {
  constructor({ tbody, empty, badge, banner, bannerText, canWrite, onElement }) {
    Object.assign(this, { tbody, empty, badge, banner, bannerText, canWrite, onElement });
    this.alarms = new Map();
    this.folded = new Set();
    this.grouped = true;
    this.showShelved = false;
    this.soundOn = false;
    this.fresh = new Set();
    this.audio = null;
  }

  /** Replace the list with GET /api/alarms. */
  async load() {
    const list = await api("/api/alarms");
    this.alarms = new Map(list.map((a) => [a.key, a]));
    this.render();
  }

  /** Apply an AlarmEvent from the stream. */
  applyEvent(ev) {
    const existing = this.alarms.get(ev.key);
    switch (ev.transition) {
      case "raised":
      case "escalated":
      case "deescalated":
      case "chattering": {
        const alarm = {
          key: ev.key, monitor: ev.monitor, channel: ev.channel, condition: ev.condition,
          severity: ev.severity, priority: ev.priority, value: ev.value, group: ev.group,
          since: existing && ev.transition !== "raised" ? existing.since : ev.time,
          acknowledged: ev.transition === "raised" ? false : existing?.acknowledged ?? false,
          shelved_until: existing?.shelved_until ?? null,
        };
        this.alarms.set(ev.key, alarm);
        if (ev.transition === "raised" || ev.transition === "escalated") {
          this.fresh.add(ev.key);
          if (RANK[ev.priority] <= 2 && !ev.shelved && !ev.suppressed) this.cue(alarm);
        }
        break;
      }
      case "cleared":
        this.alarms.delete(ev.key);
        break;
      case "acknowledged":
        if (existing) existing.acknowledged = true;
        break;
      case "shelved":
        if (existing) existing.shelved_until = existing.shelved_until ?? "shelved";
        break;
      case "unshelved":
        if (existing) existing.shelved_until = null;
        break;
      default:
        break;
    }
    this.render();
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
    const alarm = this.alarms.get(key);
    if (alarm) alarm.acknowledged = true;
    this.fresh.delete(key);
    this.render();
  }

  async shelve(key, seconds, reason) {
    const until = new Date(Date.now() + seconds * 1000).toISOString();
    await api(`/api/alarms/${encodeURIComponent(key)}/shelve`, { method: "POST", body: { until, reason } });
    const alarm = this.alarms.get(key);
    if (alarm) alarm.shelved_until = until;
    this.render();
  }

  visible() {
    return [...this.alarms.values()]
      .filter((a) => this.showShelved || !a.shelved_until)
      .sort((a, b) => (RANK[a.priority] ?? 9) - (RANK[b.priority] ?? 9) || String(b.since).localeCompare(String(a.since)));
  }

  /** Counts as the server's status gives them: active = in alarm (severity > 0) and not shelved. */
  counts() {
    const all = [...this.alarms.values()].filter((a) => !a.shelved_until && a.severity !== 0);
    const unacked = all.filter((a) => !a.acknowledged);
    const urgent = unacked.filter((a) => RANK[a.priority] <= 2);
    return { active: all.length, unacked: unacked.length, urgent: urgent.length };
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
    const { active, unacked, urgent } = this.counts();
    this.badge.hidden = unacked === 0;
    this.badge.textContent = String(unacked);
    this.banner.hidden = urgent === 0;
    this.bannerText.textContent = `${urgent} unacknowledged high-priority alarm${urgent === 1 ? "" : "s"} (${active} active)`;
    // the table only while it is on screen; showing the alarm page renders it
    if (this.tbody.offsetParent === null) return;
    const list = this.visible();
    const rows = [];
    if (this.grouped) {
      const groups = new Map();
      for (const a of list) {
        const g = a.group ?? "(no group)";
        if (!groups.has(g)) groups.set(g, []);
        groups.get(g).push(a);
      }
      for (const [g, items] of groups) {
        const folded = this.folded.has(g);
        const worst = items[0].priority;
        const unacked = items.filter((a) => !a.acknowledged).length;
        rows.push(
          `<tr class="group-row" data-group="${esc(g)}" tabindex="0" aria-expanded="${!folded}">` +
            `<td colspan="7">${folded ? "▸" : "▾"} ${esc(g)} — ${items.length} alarm${items.length > 1 ? "s" : ""}` +
            `, ${unacked} unacknowledged, worst <span class="prio prio-${worst}">${worst}</span></td></tr>`,
        );
        if (!folded) rows.push(...items.map((a) => this.row(a)));
      }
    } else {
      rows.push(...list.map((a) => this.row(a)));
    }
    this.tbody.innerHTML = rows.join("");
    this.empty.hidden = list.length > 0;
    this.fresh.clear();
  }

  row(a) {
    const time = a.since ? new Date(a.since).toISOString().replace("T", " ").slice(0, 19) : "";
    const value = a.value === null || a.value === undefined ? "" : Number(a.value).toFixed(3);
    const state = a.shelved_until
      ? `<span class="state-tag">shelved</span>`
      : a.acknowledged ? `<span class="state-tag">acknowledged</span>` : `<span class="state-tag unack">unacknowledged</span>`;
    const dis = this.canWrite() ? "" : " disabled title=\"Your role may not acknowledge or shelve\"";
    const cls = [a.acknowledged ? "acked" : "unacked", this.fresh.has(a.key) ? "is-new" : ""].join(" ");
    return (
      `<tr class="${cls}" data-key="${esc(a.key)}">` +
      `<td><span class="prio prio-${esc(a.priority)}">${esc(a.priority)}</span></td>` +
      `<td>${esc(time)}</td>` +
      `<td><button class="link el-link" data-channel="${esc(a.channel)}">${esc(a.channel)}</button></td>` +
      `<td>${esc(a.monitor)}: ${esc(a.condition)}</td>` +
      `<td>${esc(value)}</td><td>${state}</td>` +
      `<td class="actions">` +
      (a.acknowledged ? "" : `<button class="ack" data-key="${esc(a.key)}"${dis}>Acknowledge</button>`) +
      (a.shelved_until ? "" : `<button class="shelve" data-key="${esc(a.key)}"${dis}>Shelve…</button>`) +
      `</td></tr>`
    );
  }
}

export function esc(value) {
  return String(value ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}
