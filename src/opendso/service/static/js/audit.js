// Audit trail page (security auditors): every record checked by the server against its keyed hash,
// and the whole trail, event log and user rows verified on request (as `opendso audit verify`).

import { api } from "./api.js";
import { esc } from "./alarms.js";
import { fmtWall } from "./time.js";

const $ = (id) => document.getElementById(id);
const PAGE = 5000;

/** Wire the audit page; returns { load() } for when the page is shown. */
export function initAuditPage() {
  let records = [];
  let verdict = null;

  async function load() {
    try {
      records = await readAll();
      verdict = await api("/api/audit/verify");
      render();
    } catch (err) {
      $("audit-chain").textContent = `Could not read or verify the audit trail: ${err.message}`;
      $("audit-chain").className = "bad small";
    }
  }

  // every record, each checked by the server against its own hash: an edit made after a record was
  // first shown must show too, so the whole trail is read again
  async function readAll() {
    let all = [];
    for (let page = await api(`/api/audit?after=0&limit=${PAGE}`); page.length; ) {
      all = all.concat(page);
      if (page.length < PAGE) break;
      page = await api(`/api/audit?after=${page[page.length - 1].seq}&limit=${PAGE}`);
    }
    return all;
  }

  function render() {
    const q = $("audit-filter").value.trim().toLowerCase();
    const rows = records.filter((r) => !q || [r.actor, r.action, r.element, r.result, r.reason, r.source_ip]
      .some((v) => v && String(v).toLowerCase().includes(q)));
    const failed = records.filter((r) => r.verified === false).length;
    const problems = verdict ? [...verdict.audit.problems, ...verdict.events.problems] : [];
    const rowsBad = verdict ? verdict.rows.length : 0;
    const ok = verdict && verdict.ok && failed === 0;
    let text = `${records.length} records`;
    if (!verdict) text += " · not verified";
    else if (ok) text += ` · verified: audit trail, event log (${verdict.events.records} events) and users intact`;
    else {
      const parts = [];
      if (failed) parts.push(`${failed} record(s) do not match their hash`);
      if (problems.length) parts.push(`${problems.length} problem(s): ${problems.slice(0, 3).map((p) => p.message).join("; ")}`);
      if (rowsBad) parts.push(`${rowsBad} user/session row(s) changed outside OpenDSO`);
      text += ` · TAMPERING FOUND: ${parts.join(" · ")}`;
    }
    if (verdict && verdict.audit.unkeyed) text += ` · ${verdict.audit.unkeyed} record(s) from before the integrity key`;
    $("audit-chain").textContent = text;
    $("audit-chain").className = ok ? "ok small" : "bad small";
    const mark = (r) => (r.verified === true ? "✓" : r.verified === false ? "✗ edited" : "—");
    $("audit-rows").innerHTML = rows.slice().reverse().slice(0, 2000).map((r) =>
      `<tr data-seq="${r.seq}" class="result-${esc(r.result)}${r.verified === false ? " tampered" : ""}">` +
      `<td>${r.seq}</td><td title="${esc(r.ts)}">${esc(fmtWall(r.ts))}</td><td>${esc(r.actor)}</td>` +
      `<td>${esc(r.source_ip ?? "")}</td><td>${esc(r.action)}</td><td>${esc(r.element ?? "")}</td><td>${esc(r.result)}</td>` +
      `<td>${esc(r.reason ?? "")}${r.details?.count ? ` (×${esc(r.details.count)})` : ""}</td>` +
      `<td class="verified">${mark(r)}</td><td class="hash" title="${esc(r.hash)}">${esc(r.hash.slice(0, 10))}</td></tr>`).join("");
    $("audit-empty").hidden = rows.length > 0;
  }

  $("audit-refresh").addEventListener("click", load);
  $("audit-filter").addEventListener("input", render);
  return { load, records: () => records, verdict: () => verdict };
}
