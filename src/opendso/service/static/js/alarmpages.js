// The alarm pages: the active list (filters, folding, acknowledge what is on screen after a confirmation,
// shelve, unshelve), shelved / out-of-service / suppressed alarms, the alarm history (journal) and the
// ISA-18.2 performance summary. Wired once by initAlarmPages(); the list model is alarms.js's AlarmList.

import { api } from "./api.js";
import { esc } from "./alarms.js";
import { fmtTime, fmtWall, timeTitle } from "./time.js";

const $ = (id) => document.getElementById(id);
const VIEWS = ["active", "hidden", "history", "summary"];

/**
 * Wire the alarm pages.
 * opts: {alarms: AlarmList, canWrite(), canConfigure(), onElement(name), guarded(async fn)}
 */
export function initAlarmPages({ alarms, canWrite, canConfigure, onElement, guarded }) {
  let view = "active";
  const page = { view: () => view, show };

  // -- sub-pages ---------------------------------------------------------------------------------
  function show(next) {
    view = VIEWS.includes(next) ? next : "active";
    for (const v of VIEWS) {
      const tab = $(`alarm-view-${v}`);
      tab.setAttribute("aria-selected", String(v === view));
      $(`alarm-panel-${v}`).hidden = v !== view;
    }
    if (view === "active") alarms.renderNow();
    if (view === "hidden") renderHidden();
    if (view === "history") loadHistory();
    if (view === "summary") loadSummary();
  }
  for (const v of VIEWS) $(`alarm-view-${v}`).addEventListener("click", () => show(v));

  // -- active list -------------------------------------------------------------------------------
  $("alarm-rows").addEventListener("click", async (e) => {
    const btn = e.target.closest("button");
    const group = e.target.closest("tr.group-row");
    if (btn?.classList.contains("ack")) {
      await guarded(() => alarms.acknowledge(btn.dataset.key));
    } else if (btn?.classList.contains("shelve")) {
      openShelve(btn.dataset.key);
    } else if (btn?.classList.contains("unshelve")) {
      await guarded(() => alarms.unshelve(btn.dataset.key));
    } else if (btn?.classList.contains("el-link")) {
      onElement(btn.dataset.channel);
    } else if (group) {
      toggleGroup(group.dataset.group);
    }
  });
  $("alarm-rows").addEventListener("keydown", (e) => {
    const group = e.target.closest("tr.group-row");
    if (group && (e.key === "Enter" || e.key === " ")) {
      e.preventDefault();
      toggleGroup(group.dataset.group);
    }
  });
  function toggleGroup(g) {
    if (alarms.folded.has(g)) alarms.folded.delete(g); else alarms.folded.add(g);
    alarms.renderNow();
    document.querySelector(`tr.group-row[data-group="${CSS.escape(g)}"]`)?.focus();
  }
  $("alarm-group-toggle").addEventListener("change", (e) => { alarms.grouped = e.target.checked; alarms.render(); });
  $("alarm-show-shelved").addEventListener("change", (e) => { alarms.showShelved = e.target.checked; alarms.render(); });
  const filter = (id, key, parse = (v) => v) => $(id).addEventListener("change", (e) => {
    alarms.filters[key] = parse(e.target.value);
    alarms.render();
  });
  filter("alarm-filter-priority", "priority");
  filter("alarm-filter-area", "area");
  filter("alarm-filter-state", "state");
  filter("alarm-filter-time", "sinceS", (v) => Number(v) || 0);

  // "Acknowledge all visible": only the rows on screen (not those folded away or filtered out), after a confirmation
  let pendingAck = [];
  $("ack-all").addEventListener("click", () => {
    pendingAck = alarms.onScreen().filter((a) => !a.acknowledged).map((a) => a.key);
    const hidden = [...alarms.alarms.values()].filter((a) => !a.acknowledged).length - pendingAck.length;
    const n = pendingAck.length;
    $("ack-confirm-text").textContent = n
      ? `Acknowledge the ${n} unacknowledged alarm${n === 1 ? "" : "s"} shown on screen?`
      : "No unacknowledged alarm is shown on screen.";
    $("ack-confirm-note").textContent = hidden > 0
      ? `${hidden} other unacknowledged alarm${hidden === 1 ? " is" : "s are"} not shown (folded, filtered or hidden) and will not be acknowledged.`
      : "";
    $("ack-confirm-ok").textContent = n ? `Acknowledge ${n}` : "OK";
    $("ack-confirm-ok").disabled = n === 0;
    $("ack-confirm-ok").dataset.count = String(n);
    $("ack-confirm").showModal();
  });
  $("ack-confirm").addEventListener("close", async () => {
    const keys = pendingAck;
    pendingAck = [];
    if ($("ack-confirm").returnValue !== "ok" || !keys.length) return;
    await guarded(() => alarms.acknowledgeKeys(keys));
  });

  // -- shelve dialog -------------------------------------------------------------------------------
  let shelveKey = null;
  function openShelve(key) {
    shelveKey = key;
    $("shelve-alarm").textContent = key;
    $("shelve-reason").value = "";
    $("shelve-dialog").showModal();
  }
  $("shelve-dialog").addEventListener("close", async () => {
    if ($("shelve-dialog").returnValue !== "ok" || !shelveKey) return;
    const key = shelveKey;
    shelveKey = null;
    await guarded(() => alarms.shelve(key, Number($("shelve-duration").value), $("shelve-reason").value));
  });

  // -- reason dialog (out of service, area suppression: engineers) --------------------------------------
  let reasonAction = null;
  function askReason(title, subject, action) {
    reasonAction = action;
    $("reason-title").textContent = title;
    $("reason-subject").textContent = subject;
    $("reason-text").value = "";
    $("reason-dialog").showModal();
  }
  $("reason-dialog").addEventListener("close", async () => {
    const action = reasonAction;
    reasonAction = null;
    if ($("reason-dialog").returnValue !== "ok" || !action) return;
    const reason = $("reason-text").value;
    await guarded(() => action(reason));
    renderHidden();
  });

  // -- shelved, out of service, suppressed -----------------------------------------------------------------
  let areas = [];
  async function loadAreas() {
    try {
      areas = await api("/api/alarms/areas");
    } catch (err) {
      console.warn(err);
    }
  }
  function renderHidden() {
    const w = canWrite() ? "" : " disabled title=\"Your role may not unshelve\"";
    const c = canConfigure() ? "" : " disabled title=\"Only engineers take alarms out of service or suppress areas\"";
    const shelved = alarms.inState("shelved");
    $("shelved-rows").innerHTML = shelved.map((a) =>
      `<tr data-key="${esc(a.key)}"><td>${esc(a.channel)}</td><td>${esc(a.monitor)}: ${esc(a.condition)}</td>` +
      `<td>${esc(a.shelved_by ?? "")}</td><td>${esc(a.shelve_reason ?? "")}</td>` +
      `<td title="${esc(timeTitle(a.shelved_at))}">${esc(fmtTime(a.shelved_at))}</td>` +
      `<td class="expiry" title="${esc(timeTitle(a.shelved_until))}">${esc(fmtTime(a.shelved_until))}</td>` +
      `<td class="actions"><button class="unshelve" data-key="${esc(a.key)}"${w}>Unshelve</button></td></tr>`).join("")
      || `<tr><td colspan="7" class="muted">No shelved alarms.</td></tr>`;
    const oos = alarms.inState("out_of_service");
    $("oos-rows").innerHTML = oos.map((a) =>
      `<tr data-key="${esc(a.key)}"><td>${esc(a.channel)}</td><td>${esc(a.monitor)}: ${esc(a.condition)}</td>` +
      `<td>${esc(a.out_of_service_by ?? "")}</td><td>${esc(a.out_of_service_reason ?? "")}</td>` +
      `<td title="${esc(timeTitle(a.out_of_service_since))}">${esc(fmtTime(a.out_of_service_since))}</td>` +
      `<td class="actions"><button class="return" data-key="${esc(a.key)}"${c}>Return to service</button></td></tr>`).join("")
      || `<tr><td colspan="6" class="muted">No alarms out of service.</td></tr>`;
    const suppressed = alarms.inState("suppressed");
    $("suppressed-rows").innerHTML = suppressed.map((a) =>
      `<tr data-key="${esc(a.key)}"><td>${esc(a.channel)}</td><td>${esc(a.monitor)}: ${esc(a.condition)}</td>` +
      `<td>${esc(a.group ?? "")}</td><td>${esc(a.suppressed_reason ?? "")}</td></tr>`).join("")
      || `<tr><td colspan="4" class="muted">No alarms suppressed by design.</td></tr>`;
    const held = areas.filter((a) => a.suppressed);
    $("area-rows").innerHTML = held.map((a) =>
      `<tr data-area="${esc(a.area)}"><td>${esc(a.area)}</td><td>${esc(a.actor ?? "")}</td><td>${esc(a.reason ?? "")}</td>` +
      `<td title="${esc(timeTitle(a.since))}">${esc(fmtTime(a.since))}</td>` +
      `<td class="actions"><button class="release" data-area="${esc(a.area)}"${c}>Release</button></td></tr>`).join("")
      || `<tr><td colspan="5" class="muted">No area suppressed.</td></tr>`;
    const select = $("area-select");
    const keep = select.value;
    select.innerHTML = areas.filter((a) => !a.suppressed).map((a) => `<option>${esc(a.area)}</option>`).join("");
    if (keep) select.value = keep;
    $("area-suppress").disabled = !canConfigure() || !select.options.length;
    $("oos-key").disabled = !canConfigure();
    $("oos-add").disabled = !canConfigure();
    $("alarm-hidden-count").textContent = String(shelved.length + oos.length + suppressed.length);
  }
  $("alarm-panel-hidden").addEventListener("click", async (e) => {
    const btn = e.target.closest("button");
    if (!btn) return;
    if (btn.classList.contains("unshelve")) {
      await guarded(() => alarms.unshelve(btn.dataset.key));
    } else if (btn.classList.contains("return")) {
      await guarded(() => api(`/api/alarms/${encodeURIComponent(btn.dataset.key)}/return-to-service`, { method: "POST" }));
    } else if (btn.classList.contains("release")) {
      await guarded(() => api(`/api/alarms/areas/${encodeURIComponent(btn.dataset.area)}/release`, { method: "POST" }));
      await loadAreas();
      renderHidden();
    } else if (btn.id === "area-suppress") {
      const area = $("area-select").value;
      if (!area) return;
      askReason("Suppress an area by design", `Every alarm of ${area} (e.g. work under a permit)`, async (reason) => {
        await api(`/api/alarms/areas/${encodeURIComponent(area)}/suppress`, { method: "POST", body: { reason } });
        await loadAreas();
      });
    } else if (btn.id === "oos-add") {
      const key = $("oos-key").value.trim();
      if (!key) return;
      askReason("Take an alarm out of service", key, (reason) =>
        api(`/api/alarms/${encodeURIComponent(key)}/out-of-service`, { method: "POST", body: { reason } }));
    }
  });

  // -- history (journal) ---------------------------------------------------------------------------------
  let journal = [];
  async function loadHistory({ older = false } = {}) {
    const q = new URLSearchParams();
    const hours = Number($("history-window").value) || 24;
    const to = new Date();
    q.set("to", to.toISOString());
    q.set("from", new Date(to.getTime() - hours * 3600 * 1000).toISOString());
    for (const [id, name] of [["history-priority", "priority"], ["history-area", "area"], ["history-transition", "transition"]]) {
      if ($(id).value) q.set(name, $(id).value);
    }
    q.set("limit", "500");
    if (older && journal.length) q.set("before", String(journal[journal.length - 1].seq));
    try {
      const page = await api(`/api/alarms/history?${q}`);
      journal = older ? journal.concat(page) : page;
      $("history-status").textContent = `${journal.length} entr${journal.length === 1 ? "y" : "ies"}` + (page.length === 500 ? " (more: Older)" : "");
      $("history-older").disabled = page.length < 500;
    } catch (err) {
      $("history-status").textContent = `Could not read the history: ${err.message}`;
      return;
    }
    $("history-rows").innerHTML = journal.map((e) => {
      const flags = [e.shelved ? "shelved" : "", e.suppressed ? "suppressed" : "", e.out_of_service ? "out of service" : ""].filter(Boolean).join(", ");
      return `<tr data-seq="${e.seq}" class="${e.announced ? "announced" : ""}">` +
        `<td title="${esc(fmtWall(e.ts))}">${esc(fmtTime(e.ts))}</td><td>${esc(e.key ?? "")}</td>` +
        `<td>${esc(e.transition)}</td><td>${e.priority ? `<span class="prio prio-${esc(e.priority)}">${esc(e.priority)}</span>` : ""}</td>` +
        `<td>${esc(e.condition ?? "")}${e.value === null || e.value === undefined ? "" : ` (${esc(Number(e.value).toFixed(3))})`}</td>` +
        `<td>${esc(e.group ?? "")}</td><td>${esc(e.actor)}</td><td>${esc(e.reason ?? "")}</td><td>${esc(flags)}</td></tr>`;
    }).join("") || `<tr><td colspan="9" class="muted">No alarm history in this window.</td></tr>`;
  }
  for (const id of ["history-window", "history-priority", "history-area", "history-transition"]) {
    $(id).addEventListener("change", () => loadHistory());
  }
  $("history-refresh").addEventListener("click", () => loadHistory());
  $("history-older").addEventListener("click", () => loadHistory({ older: true }));

  // -- performance summary --------------------------------------------------------------------------------
  async function loadSummary() {
    const hours = Number($("summary-window").value) || 24;
    const to = new Date();
    const q = new URLSearchParams({ to: to.toISOString(), from: new Date(to.getTime() - hours * 3600 * 1000).toISOString() });
    let s;
    try {
      s = await api(`/api/alarms/summary?${q}`);
    } catch (err) {
      $("summary-figures").innerHTML = `<p class="error">Could not compute the figures: ${esc(err.message)}</p>`;
      return;
    }
    const p = s.per_10_min;
    const rate = p.average_per_position;
    const rateClass = rate <= p.target ? "ok" : rate <= p.max_manageable ? "warn" : "bad";
    const f = s.floods;
    const dist = Object.entries(s.priority_distribution).map(([k, v]) => `${esc(k)} ${v}`).join(" · ");
    $("summary-figures").innerHTML =
      `<dl class="kv summary">` +
      `<dt>Window</dt><dd>${esc(fmtTime(s.from))} – ${esc(fmtTime(s.to))}</dd>` +
      `<dt>Annunciated alarms</dt><dd id="sum-annunciated">${s.annunciated}</dd>` +
      `<dt>Alarms per operator per 10 min</dt><dd id="sum-rate" class="${rateClass}">${rate} average, ${p.max_per_position} at most ` +
      `<span class="muted">(target ≤ ${p.target}, manageable ≤ ${p.max_manageable})</span></dd>` +
      `<dt>Flood periods (&gt; ${f.threshold} alarms in 10 min)</dt><dd id="sum-floods" class="${f.periods.length ? "bad" : "ok"}">${f.periods.length}` +
      ` <span class="muted">(${f.flood_10_min_periods} of ${f.total_10_min_periods} ten-minute periods, ${f.percent_of_time} % of the time)</span></dd>` +
      `<dt>Top ten share</dt><dd>${s.top_ten_percent} % of the annunciations</dd>` +
      `<dt>Stale alarms (standing &gt; 24 h)</dt><dd id="sum-stale" class="${s.stale.length ? "warn" : "ok"}">${s.stale.length}</dd>` +
      `<dt>Chattering alarms</dt><dd id="sum-chattering" class="${s.chattering.length ? "warn" : "ok"}">${s.chattering.length}</dd>` +
      `<dt>Priorities annunciated</dt><dd>${dist}</dd>` +
      `<dt>Now</dt><dd>${s.counts.standing} standing, ${s.counts.unacknowledged} unacknowledged, ${s.counts.shelved} shelved, ` +
      `${s.counts.out_of_service} out of service, ${s.counts.suppressed} suppressed</dd></dl>` +
      `<h3>Flood periods</h3>` + table(["From", "To", "Alarms", "Peak per 10 min"], f.periods.map((x) =>
        [fmtTime(x.start), fmtTime(x.end), x.alarms, x.peak_per_10_min]), "summary-flood-rows") +
      `<h3>Ten most frequent alarms</h3>` + table(["Alarm", "Count", "Share"], s.top_ten.map((x) =>
        [x.key, x.count, `${x.percent} %`]), "summary-top-rows") +
      `<h3>Stale alarms</h3>` + table(["Alarm", "Since", "Hours"], s.stale.map((x) => [x.key, fmtTime(x.since), x.hours]), "summary-stale-rows") +
      `<h3>Chattering alarms</h3>` + table(["Alarm", "Episodes"], s.chattering.map((x) => [x.key, x.episodes]), "summary-chatter-rows");
  }
  function table(head, rows, id) {
    return `<table class="compact"><thead><tr>${head.map((h) => `<th>${esc(h)}</th>`).join("")}</tr></thead>` +
      `<tbody id="${id}">${rows.map((r) => `<tr>${r.map((c) => `<td>${esc(c)}</td>`).join("")}</tr>`).join("")
        || `<tr><td colspan="${head.length}" class="muted">None.</td></tr>`}</tbody></table>`;
  }
  $("summary-window").addEventListener("change", loadSummary);
  $("summary-refresh").addEventListener("click", loadSummary);

  // -- filters' choices follow the list -------------------------------------------------------------------
  function refreshChoices() {
    const select = $("alarm-filter-area");
    const keep = select.value;
    const names = alarms.areas();
    const html = `<option value="">all areas</option>` + names.map((n) => `<option>${esc(n)}</option>`).join("");
    if (select.dataset.html !== html) {
      select.innerHTML = html;
      select.dataset.html = html;
      select.value = names.includes(keep) ? keep : "";
    }
    const history = $("history-area");
    const all = areas.map((a) => a.area);
    const hhtml = `<option value="">all areas</option>` + all.map((n) => `<option>${esc(n)}</option>`).join("");
    if (history.dataset.html !== hhtml) {
      const hkeep = history.value;
      history.innerHTML = hhtml;
      history.dataset.html = hhtml;
      history.value = all.includes(hkeep) ? hkeep : "";
    }
    $("alarm-hidden-count").textContent = String(alarms.inState("shelved", "out_of_service", "suppressed").length);
    if (view === "hidden" && !$("page-alarms").hidden) renderHidden();
  }
  alarms.onChange = refreshChoices;
  // times are shown on the operator's clock (time.js): redraw them when its time base changes
  document.addEventListener("opendso:timebase", () => {
    alarms.render();
    if (view === "history" && !$("page-alarms").hidden) loadHistory();
  });
  loadAreas().then(refreshChoices);
  $("ack-all").disabled = !canWrite();
  return page;
}

