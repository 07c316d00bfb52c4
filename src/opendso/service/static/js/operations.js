// The operations pages: "Switching" (tags, safety documents, earths, fault flags), "FLISR" (proposals with the
// located section, the steps and the customers, one-click Approve / Reject for operators, a banner for new
// ones) and "Plans" (list, editor, Simulate, Approve, Start, Execute / Confirm the next step, Abort, archive).
// Built with DOM calls (h, clear): no HTML from data. Action buttons appear only for a role that may use them
// (operators control, engineers configure, as the API enforces); every refusal is shown verbatim.

import { api } from "./api.js";
import { fmtTime } from "./time.js";
import { clear, decisionBlock, h, OUTCOME_TEXT, RULE_TEXT } from "./switching.js";

const $ = (id) => document.getElementById(id);

const DOC_STATE = { draft: "◌ draft", issued: "◐ issued", in_work: "● in work", cleared: "✔ cleared", cancelled: "✖ cancelled" };
const PLAN_STATE = { draft: "◌ draft", approved: "✔ approved", executing: "▶ executing", completed: "■ completed", aborted: "✖ aborted", cancelled: "✖ cancelled" };
const PROPOSAL_STATE = {
  proposed: "▲ proposed: waiting for an operator", executing: "▶ executing", completed: "✔ completed", stopped: "⚠ stopped: a step did not complete",
  rejected: "✖ rejected", withdrawn: "○ withdrawn", failed: "✖ failed: no plan", study: "○ study: nothing is sent",
};

function table(head, rows, { id, empty = "None." } = {}) {
  return h("table", { class: "compact ops-table" },
    h("thead", {}, h("tr", {}, head.map((x) => h("th", { scope: "col" }, x)))),
    h("tbody", { id }, rows.length ? rows : h("tr", {}, h("td", { colspan: head.length, class: "muted" }, empty))));
}

/** A button that needs a reason: an input beside it; the action runs with the reason, or the input asks for one. */
function reasonButton(label, cls, run, placeholder = "reason") {
  const input = h("input", { class: "reason-input", placeholder, maxlength: 1000, "aria-label": `${label}: reason` });
  const btn = h("button", { type: "button", class: `secondary small ${cls}`, onclick: () => {
    const reason = input.value.trim();
    if (!reason) { input.setAttribute("aria-invalid", "true"); input.focus(); return; }
    run(reason);
  } }, label);
  return h("span", { class: "reason-action" }, input, btn);
}

/**
 * Wire the operations pages.
 * opts: {canWrite(), canConfigure(), guarded(async fn), openSwitch(name), switchNames(), onFlisrBanner(proposal|null)}
 */
export function initOperationsPages({ canWrite, canConfigure, guarded, openSwitch, switchNames }) {
  // -- Switching page -------------------------------------------------------------------------------
  async function loadSwitching() {
    let state;
    try {
      state = await api("/api/switching/state");
    } catch (err) {
      clear($("switching-root"), h("p", { class: "error" }, `Could not read the switching state: ${err.message}`));
      return;
    }
    const w = canWrite();
    const c = canConfigure();
    const run = (fn) => guarded(async () => { await fn(); await loadSwitching(); });
    const swLink = (name) => h("button", { type: "button", class: "link sw-link", dataset: { switch: name }, onclick: () => openSwitch(name) }, name);

    const operate = h("div", { class: "toolbar inline-form" },
      h("label", { for: "ops-switch-name" }, "Switch"),
      h("input", { id: "ops-switch-name", list: "ops-switch-list", placeholder: "switch name", size: 30, autocomplete: "off" }),
      h("datalist", { id: "ops-switch-list" }, switchNames().slice(0, 5000).map((n) => h("option", { value: n }))),
      h("button", { type: "button", class: "primary", id: "ops-switch-open", onclick: () => {
        const name = $("ops-switch-name").value.trim();
        if (name) openSwitch(name);
      } }, w ? "Operate…" : "Show…"),
      h("span", { class: "muted small" }, "The gate answers before anything is sent."));

    const tagRows = state.tags.map((t) => h("tr", { dataset: { tag: t.id } },
      h("td", {}, swLink(t.switch)),
      h("td", {}, h("span", { class: `tag-badge tag-${t.kind}` }, t.kind === "do_not_operate" ? "DNO" : "C"), t.kind === "do_not_operate" ? " do not operate" : " caution"),
      h("td", {}, t.text), h("td", {}, t.placed_by), h("td", {}, fmtTime(t.placed_at)),
      h("td", { class: "actions" }, w ? reasonButton("Remove", "tag-remove", (reason) =>
        run(() => api(`/api/switching/tags/${encodeURIComponent(t.id)}`, { method: "DELETE", body: { reason } }))) : null)));

    const docRows = state.documents.map((d) => {
      const actions = [];
      if (c && d.state === "draft") actions.push(h("button", { type: "button", class: "secondary small doc-issue", onclick: () => run(() => api(`/api/switching/documents/${encodeURIComponent(d.id)}/issue`, { method: "POST" })) }, "Issue"));
      if (w && d.state === "issued") actions.push(h("button", { type: "button", class: "secondary small doc-start", onclick: () => run(() => api(`/api/switching/documents/${encodeURIComponent(d.id)}/start`, { method: "POST" })) }, "Start work"));
      if (w && d.state === "in_work") actions.push(h("button", { type: "button", class: "secondary small doc-clear", onclick: () => run(() => api(`/api/switching/documents/${encodeURIComponent(d.id)}/clear`, { method: "POST" })) }, "Clear"));
      if (c && (d.state === "draft" || d.state === "issued")) actions.push(reasonButton("Cancel", "doc-cancel", (reason) => run(() => api(`/api/switching/documents/${encodeURIComponent(d.id)}/cancel`, { method: "POST", body: { reason } }))));
      return h("tr", { dataset: { document: d.id } },
        h("td", {}, d.id), h("td", {}, d.kind.replaceAll("_", " ")), h("td", { class: `doc-state doc-${d.state}` }, DOC_STATE[d.state] ?? d.state),
        h("td", {}, d.devices.map((n, i) => [i ? ", " : "", swLink(n)])), h("td", {}, d.earths.join(", ") || "—"),
        h("td", {}, d.description), h("td", {}, `${d.updated_by}, ${fmtTime(d.updated_at)}`), h("td", { class: "actions" }, actions));
    });
    const docForm = c ? h("div", { class: "toolbar inline-form", id: "doc-form" },
      h("select", { id: "doc-kind", "aria-label": "Kind of document" }, h("option", { value: "permit_to_work" }, "Permit to work"), h("option", { value: "sanction_for_test" }, "Sanction for test")),
      h("input", { id: "doc-devices", placeholder: "isolating switches, comma-separated", size: 36, "aria-label": "Isolating devices" }),
      h("input", { id: "doc-earths", placeholder: "earthed nodes, comma-separated", size: 28, "aria-label": "Earthed nodes" }),
      h("input", { id: "doc-description", placeholder: "work description", size: 30, maxlength: 1000, "aria-label": "Description" }),
      h("button", { type: "button", class: "secondary", id: "doc-create", onclick: () => {
        const list = (id) => $(id).value.split(",").map((s) => s.trim()).filter(Boolean);
        run(() => api("/api/switching/documents", { method: "POST", body: { kind: $("doc-kind").value, devices: list("doc-devices"), earths: list("doc-earths"), description: $("doc-description").value.trim() } }));
      } }, "Create draft")) : null;

    const earthRows = state.earths.map((e) => h("tr", { dataset: { node: e.node } },
      h("td", {}, e.node), h("td", {}, e.kind === "earth_switch" ? "⏚ earth switch closed" : "⏚ portable earths"), h("td", {}, e.reference || "—"),
      h("td", {}, `${e.applied_by ?? ""}${e.applied_at ? `, ${fmtTime(e.applied_at)}` : ""}`),
      h("td", { class: "actions" }, w ? reasonButton("Remove", "earth-remove", (reason) =>
        run(() => api(`/api/switching/earths/${encodeURIComponent(e.node)}`, { method: "DELETE", body: { reason } }))) : null)));
    const earthForm = w ? h("div", { class: "toolbar inline-form" },
      h("input", { id: "earth-node", placeholder: "node", size: 24, "aria-label": "Node to earth" }),
      h("select", { id: "earth-kind", "aria-label": "Kind of earth" }, h("option", { value: "portable" }, "portable earths"), h("option", { value: "earth_switch" }, "earth switch")),
      h("input", { id: "earth-reference", placeholder: "reference (set number)", size: 18, "aria-label": "Reference" }),
      h("button", { type: "button", class: "secondary", id: "earth-add", onclick: () =>
        run(() => api("/api/switching/earths", { method: "POST", body: { node: $("earth-node").value.trim(), kind: $("earth-kind").value, reference: $("earth-reference").value.trim() } })) }, "Record earth")) : null;

    const faultRows = state.faults.map((f) => h("tr", { dataset: { node: f.node } },
      h("td", {}, "⚡ ", f.node), h("td", {}, f.reason), h("td", {}, `${f.flagged_by}, ${fmtTime(f.flagged_at)}`),
      h("td", { class: "actions" }, c ? reasonButton("Clear flag", "fault-clear", (reason) =>
        run(() => api(`/api/switching/faults/${encodeURIComponent(f.node)}`, { method: "DELETE", body: { reason } }))) : null)));
    const faultForm = w ? h("div", { class: "toolbar inline-form" },
      h("input", { id: "fault-node", placeholder: "node", size: 24, "aria-label": "Node to flag faulted" }),
      h("input", { id: "fault-reason", placeholder: "reason", size: 30, maxlength: 1000, "aria-label": "Reason" }),
      h("button", { type: "button", class: "secondary", id: "fault-add", onclick: () =>
        run(() => api("/api/switching/faults", { method: "POST", body: { node: $("fault-node").value.trim(), reason: $("fault-reason").value.trim() } })) }, "Flag faulted")) : null;

    clear($("switching-root"),
      h("h3", {}, "Operate a switch"), operate,
      h("h3", {}, `Tags (${state.tags.length})`),
      table(["Switch", "Tag", "Text", "Placed by", "At", "Actions"], tagRows, { id: "tag-rows", empty: "No tag placed." }),
      h("h3", {}, `Safety documents (${state.documents.length})`),
      table(["Document", "Kind", "State", "Isolating devices", "Earths", "Work", "Last change", "Actions"], docRows, { id: "doc-rows", empty: "No safety document." }),
      docForm,
      h("h3", {}, `Earths (${state.earths.length})`),
      table(["Node", "Earth", "Reference", "Applied", "Actions"], earthRows, { id: "earth-rows", empty: "No earth recorded." }),
      earthForm,
      h("h3", {}, `Sections flagged faulted (${state.faults.length})`, h("span", { class: "muted small" }, " no close connects them until an engineer clears the flag")),
      table(["Node", "Reason", "Flagged", "Actions"], faultRows, { id: "fault-rows", empty: "No fault flag." }),
      faultForm);
  }
  $("switching-refresh").addEventListener("click", loadSwitching);

  // -- FLISR page -----------------------------------------------------------------------------------
  let flisr = { mode: "off", proposals: [] };
  let seenProposal = 0; // the newest proposal id the operator has seen (the banner announces newer ones)

  function proposalCard(p) {
    const plan = p.plan;
    const top = plan?.located?.[0];
    const steps = p.steps.map((s, i) => {
      const done = p.outcomes.find((o) => o.switch === s.switch && o.action === s.action);
      return h("li", { class: "flisr-step" }, `${i + 1}. ${s.action === "open" ? "open □" : "close ■"} ${s.switch}`,
        done ? h("span", { class: `small outcome-${done.status}` }, ` — ${OUTCOME_TEXT[done.status] ?? done.status}${done.status === "refused" && done.decision ? `: ${RULE_TEXT[done.decision.rule] ?? done.decision.rule}: ${done.decision.reason}` : ""}`) : null);
    });
    const actions = [];
    if (canWrite() && (p.state === "proposed" || p.state === "stopped")) {
      actions.push(h("button", { type: "button", class: "primary flisr-approve", dataset: { id: p.id }, onclick: (e) => {
        e.currentTarget.disabled = true;
        guarded(async () => { await api(`/api/flisr/${p.id}/approve`, { method: "POST" }); }).finally(loadFlisr);
      } }, p.state === "stopped" ? "Approve the rest" : "Approve"));
      actions.push(reasonButton("Reject", "flisr-reject", (reason) =>
        guarded(async () => { await api(`/api/flisr/${p.id}/reject`, { method: "POST", body: { reason } }); }).finally(loadFlisr)));
    }
    return h("article", { class: `flisr-card flisr-${p.state}`, dataset: { id: p.id, state: p.state } },
      h("header", {}, h("h3", {}, `#${p.id} · trip of ${p.tripped}`), h("span", { class: `flisr-state state-${p.state}` }, PROPOSAL_STATE[p.state] ?? p.state),
        h("span", { class: "muted small" }, ` ${fmtTime(p.tripped_at)}`)),
      p.error ? h("p", { class: "error flisr-error" }, p.error) : null,
      plan ? h("dl", { class: "kv" },
        h("dt", {}, "Located section"), h("dd", { class: "flisr-located" }, top ? `${top.elements.slice(0, 8).join(", ")}${top.elements.length > 8 ? ` and ${top.elements.length - 8} more` : ""} (confidence ${(top.confidence * 100).toFixed(0)} %)` : "not located"),
        plan.located.length > 1 ? [h("dt", {}, "Other candidates"), h("dd", {}, plan.located.slice(1, 4).map((c) => `${c.elements[0]}… (${(c.confidence * 100).toFixed(0)} %)`).join("; "))] : null,
        h("dt", {}, "Faulted nodes"), h("dd", {}, p.faulted_nodes.length ? `${p.faulted_nodes.slice(0, 6).join(", ")}${p.faulted_nodes.length > 6 ? ` and ${p.faulted_nodes.length - 6} more` : ""}` : "—"),
        h("dt", {}, "Customers"), h("dd", { class: "flisr-customers" }, `${plan.customers.interrupted} interrupted · ${plan.customers.restored} restored by the plan · ${plan.customers.off} stay off`),
        h("dt", {}, "Violations"), h("dd", {}, plan.violations.length ? plan.violations.map((v) => `${v.element} ${v.kind} ${v.value} (limit ${v.limit})`).join("; ") : "none after restoration"),
        p.approved_by ? [h("dt", {}, "Approved by"), h("dd", { class: "flisr-approved-by" }, p.approved_by)] : null,
        p.outage_id ? [h("dt", {}, "Outage"), h("dd", {}, `#${p.outage_id}`)] : null) : null,
      steps.length ? [h("h4", {}, "Steps (isolation, then restoration)"), h("ol", { class: "flisr-steps" }, steps)] : h("p", { class: "muted" }, "No switching step."),
      actions.length ? h("div", { class: "flisr-actions" }, actions) : null);
  }

  function renderFlisr() {
    const root = $("flisr-root");
    if (!root) return;
    $("flisr-mode").textContent = { off: "FLISR is off", advisory: "Advisory: an operator approves each plan", automatic: "Automatic: plans run through the gate" }[flisr.mode] ?? flisr.mode;
    clear(root, flisr.proposals.length ? flisr.proposals.map(proposalCard) : h("p", { class: "empty" }, "No FLISR proposal."));
  }

  async function loadFlisr() {
    try {
      flisr = await api("/api/flisr");
    } catch (err) {
      console.warn(err);
      return;
    }
    const newest = flisr.proposals.reduce((m, p) => Math.max(m, p.id), 0);
    const waiting = flisr.proposals.filter((p) => p.state === "proposed" && p.id > seenProposal);
    if (!$("page-flisr").hidden) seenProposal = newest;
    const pending = flisr.proposals.filter((p) => p.state === "proposed" || p.state === "stopped").length;
    $("flisr-badge").textContent = String(pending);
    $("flisr-badge").hidden = pending === 0;
    $("flisr-badge").title = `${pending} FLISR proposal${pending === 1 ? "" : "s"} waiting for an operator`;
    const banner = $("flisr-banner");
    if (waiting.length && $("page-flisr").hidden) {
      const p = waiting[0];
      $("flisr-banner-text").textContent = `FLISR proposal #${p.id} after the trip of ${p.tripped}: ${p.plan?.customers?.restored ?? 0} customers to restore, waiting for an operator.`;
      banner.hidden = false;
    } else {
      banner.hidden = true;
    }
    if (!$("page-flisr").hidden) renderFlisr();
  }
  $("flisr-refresh").addEventListener("click", loadFlisr);
  $("flisr-study-run").addEventListener("click", () => guarded(async () => {
    const fault = $("flisr-study-node").value.trim();
    if (!fault) return;
    clear($("flisr-study-out"), h("p", { class: "muted" }, "Planning…"));
    const plan = await api("/api/flisr/study", { method: "POST", body: { fault } });
    clear($("flisr-study-out"), proposalCard({ id: "study", tripped: plan.tripped ?? "(simulated)", tripped_at: null, state: "study", plan,
      faulted_nodes: [], outcomes: [], error: null, steps: [...plan.isolate.map((s) => ({ switch: s, action: "open" })), ...plan.restore] }));
  }));
  let poll = null;
  function startPolling() {
    poll ??= setInterval(loadFlisr, 3000);
    loadFlisr();
  }

  // -- Plans page -----------------------------------------------------------------------------------
  let plans = [];
  let plan = null; // the plan in the editor (null: a new draft)
  let draft = []; // the editor's steps
  let lastOutcome = null;
  let title = ""; // the new plan's title, kept across redraws of the editor

  async function loadPlans() {
    try {
      plans = await api("/api/plans");
    } catch (err) {
      clear($("plan-list"), h("p", { class: "error" }, `Could not read the plans: ${err.message}`));
      return;
    }
    clear($("plan-list"), table(["Plan", "Title", "State", "Steps", "Author", "Approver"], plans.map((p) =>
      h("tr", { class: `plan-row${plan?.id === p.id ? " selected" : ""}`, dataset: { plan: p.id }, tabindex: 0, onclick: () => openPlan(p.id),
        onkeydown: (e) => { if (e.key === "Enter") openPlan(p.id); } },
      h("td", {}, p.id), h("td", {}, p.title), h("td", { class: `plan-state state-${p.state}` }, PLAN_STATE[p.state] ?? p.state),
      h("td", {}, `${p.done}/${p.steps.length}`), h("td", {}, p.author), h("td", {}, p.approver ?? "—"))), { id: "plan-rows", empty: "No plan yet." }));
    if (canConfigure()) $("plan-new").hidden = false;
  }

  async function openPlan(id) {
    plan = await api(`/api/plans/${encodeURIComponent(id)}`);
    draft = plan.steps.map((s) => ({ ...s }));
    lastOutcome = null;
    renderEditor();
    loadPlans();
  }

  function newPlan() {
    plan = null;
    title = "";
    draft = [{ switch: "", action: "open", kind: "remote", instruction: "" }];
    lastOutcome = null;
    renderEditor();
  }
  $("plan-new").addEventListener("click", newPlan);
  $("plans-refresh").addEventListener("click", () => { loadPlans(); if (plan) openPlan(plan.id); });

  function stepEditor(editable) {
    const rows = draft.map((s, i) => {
      const set = (key) => (e) => { draft[i][key] = e.target.value; };
      if (!editable) {
        const sim = plan?.simulation?.steps?.[i];
        const state = plan && i < plan.done ? "✔ done" : plan?.next_step === i + 1 ? "▶ next" : "";
        return h("tr", { class: "plan-step", dataset: { step: i + 1 } },
          h("td", {}, i + 1), h("td", {}, s.action === "open" ? "open □" : "close ■"), h("td", {}, s.switch), h("td", {}, s.kind),
          h("td", {}, s.instruction || "—"), h("td", { class: "plan-step-state" }, state),
          h("td", { class: "plan-sim" }, sim ? (sim.allowed ? "✔ allowed" : `✖ ${RULE_TEXT[sim.rule] ?? sim.rule}: ${sim.reason}`) : "—"));
      }
      return h("tr", { class: "plan-step", dataset: { step: i + 1 } },
        h("td", {}, i + 1),
        h("td", {}, h("select", { class: "step-action", "aria-label": `Step ${i + 1} action`, onchange: set("action") },
          h("option", { value: "open", selected: s.action === "open" }, "open □"), h("option", { value: "close", selected: s.action === "close" }, "close ■"))),
        h("td", {}, h("input", { class: "step-switch", list: "ops-switch-list-plans", value: s.switch, size: 24, "aria-label": `Step ${i + 1} switch`, oninput: set("switch") })),
        h("td", {}, h("select", { class: "step-kind", "aria-label": `Step ${i + 1} remote or manual`, onchange: set("kind") },
          h("option", { value: "remote", selected: s.kind === "remote" }, "remote"), h("option", { value: "manual", selected: s.kind === "manual" }, "manual (field crew)"))),
        h("td", {}, h("input", { class: "step-instruction", value: s.instruction ?? "", size: 24, maxlength: 1000, "aria-label": `Step ${i + 1} instruction`, oninput: set("instruction") })),
        h("td", { class: "actions" },
          h("button", { type: "button", class: "ghost small step-up", title: "Move up", "aria-label": `Move step ${i + 1} up`, disabled: i === 0, onclick: () => { [draft[i - 1], draft[i]] = [draft[i], draft[i - 1]]; renderEditor(); } }, "▲"),
          h("button", { type: "button", class: "ghost small step-down", title: "Move down", "aria-label": `Move step ${i + 1} down`, disabled: i === draft.length - 1, onclick: () => { [draft[i + 1], draft[i]] = [draft[i], draft[i + 1]]; renderEditor(); } }, "▼"),
          h("button", { type: "button", class: "ghost small step-remove", title: "Remove", "aria-label": `Remove step ${i + 1}`, onclick: () => { draft.splice(i, 1); renderEditor(); } }, "✕")),
        h("td", { class: "plan-sim" }, (() => {
          const sim = plan?.simulation?.steps?.[i];
          return sim ? (sim.allowed ? "✔ allowed" : `✖ ${RULE_TEXT[sim.rule] ?? sim.rule}: ${sim.reason}`) : "—";
        })()));
    });
    const head = editable ? ["#", "Action", "Switch", "Kind", "Instruction", "Order", "Simulation"] : ["#", "Action", "Switch", "Kind", "Instruction", "Progress", "Simulation (gate)"];
    return table(head, rows, { id: "plan-steps", empty: "No step." });
  }

  const body = (extra = {}) => ({ version: plan.version, ...extra });
  const steps = () => draft.map((s) => ({ switch: s.switch.trim(), action: s.action, kind: s.kind, instruction: (s.instruction ?? "").trim() }));
  async function planAction(fn) {
    await guarded(async () => {
      const answer = await fn();
      if (answer?.plan) { lastOutcome = answer.outcome; plan = answer.plan; } else if (answer) plan = answer;
      draft = plan.steps.map((s) => ({ ...s }));
    });
    renderEditor();
    loadPlans();
  }

  function renderEditor() {
    const root = $("plan-editor");
    const c = canConfigure();
    const w = canWrite();
    const editable = c && (!plan || plan.state === "draft");
    const url = plan ? `/api/plans/${encodeURIComponent(plan.id)}` : "";
    const buttons = [];
    if (editable) {
      buttons.push(h("button", { type: "button", class: "secondary", id: "plan-add-step", onclick: () => { draft.push({ switch: "", action: "open", kind: "remote", instruction: "" }); renderEditor(); } }, "Add step"));
      buttons.push(h("button", { type: "button", class: "primary", id: "plan-save", onclick: () => planAction(() => plan
        ? api(`${url}/steps`, { method: "PUT", body: body({ steps: steps() }) })
        : api("/api/plans", { method: "POST", body: { title: title.trim(), steps: steps() } })) }, plan ? "Save steps" : "Create draft"));
    }
    if (plan && c && plan.state === "draft") {
      buttons.push(h("button", { type: "button", class: "secondary", id: "plan-simulate", onclick: () => planAction(() => api(`${url}/simulate`, { method: "POST", body: body() })) }, "Simulate"));
      buttons.push(h("button", { type: "button", class: "secondary", id: "plan-approve", disabled: !plan.simulation?.feasible, title: plan.simulation?.feasible ? "Approve (a second engineer)" : "Simulate first: only a feasible simulation is approved",
        onclick: () => planAction(() => api(`${url}/approve`, { method: "POST", body: body() })) }, "Approve"));
    }
    if (plan && c && (plan.state === "draft" || plan.state === "approved")) {
      buttons.push(reasonButton("Cancel plan", "plan-cancel", (reason) => planAction(() => api(`${url}/cancel`, { method: "POST", body: body({ reason }) }))));
    }
    if (plan && w && plan.state === "approved") {
      buttons.push(h("button", { type: "button", class: "primary", id: "plan-start", onclick: () => planAction(() => api(`${url}/start`, { method: "POST", body: body() })) }, "Start"));
    }
    if (plan && w && plan.state === "executing" && plan.next_step) {
      const n = plan.next_step;
      const step = plan.steps[n - 1];
      if (step.kind === "manual") {
        const note = h("input", { id: "plan-manual-note", placeholder: "what the crew reported", size: 28, maxlength: 1000, "aria-label": "Crew's report" });
        buttons.push(note, h("button", { type: "button", class: "primary", id: "plan-confirm", onclick: () => planAction(() => api(`${url}/steps/${n}/confirm`, { method: "POST", body: body({ note: note.value.trim() }) })) },
          `Confirm manual step ${n}: ${step.action} ${step.switch}`));
      } else {
        buttons.push(h("button", { type: "button", class: "primary", id: "plan-execute", onclick: (e) => { e.currentTarget.disabled = true; planAction(() => api(`${url}/steps/${n}/execute`, { method: "POST", body: body() })); } },
          `Execute step ${n}: ${step.action} ${step.switch}`));
      }
      buttons.push(reasonButton("Abort", "plan-abort", (reason) => planAction(() => api(`${url}/abort`, { method: "POST", body: body({ reason }) }))));
    }
    const sim = plan?.simulation;
    clear(root,
      h("h3", {}, plan ? `${plan.id}: ${plan.title}` : "New plan"),
      plan ? h("p", { class: "small" }, h("span", { id: "plan-state", class: `plan-state state-${plan.state}` }, PLAN_STATE[plan.state] ?? plan.state),
        ` · author ${plan.author} · approver ${plan.approver ?? "—"} · ${plan.done}/${plan.steps.length} steps done · version ${plan.version}`)
        : h("div", { class: "inline-form" }, h("label", { for: "plan-title" }, "Title"), h("input", { id: "plan-title", size: 40, maxlength: 200, value: title, oninput: (e) => { title = e.target.value; } })),
      h("datalist", { id: "ops-switch-list-plans" }, switchNames().slice(0, 5000).map((n) => h("option", { value: n }))),
      stepEditor(editable),
      sim ? h("p", { id: "plan-sim-summary", class: sim.feasible ? "ok" : "bad" }, sim.feasible ? `✔ Simulation feasible: every one of ${sim.total} steps passes the gate` : "✖ Simulation NOT feasible: a step is refused (see above)") : null,
      lastOutcome ? h("div", { id: "plan-outcome", class: `outcome outcome-${lastOutcome.status}` }, h("strong", {}, OUTCOME_TEXT[lastOutcome.status] ?? lastOutcome.status),
        lastOutcome.status === "refused" ? decisionBlock(lastOutcome.decision) : null) : null,
      h("div", { class: "toolbar plan-buttons" }, buttons),
      !c && !w ? h("p", { class: "muted small" }, "Your role may read plans only.") : null,
      plan ? [h("h4", {}, "Archive"), table(["Time", "Who", "What", "Step", "Detail"], plan.log.map((e) =>
        h("tr", {}, h("td", {}, fmtTime(e.at)), h("td", {}, e.actor), h("td", {}, e.what), h("td", {}, e.step ?? ""), h("td", {}, e.detail ?? ""))), { id: "plan-log" })] : null);
  }

  return {
    loadSwitching,
    loadFlisr: () => { seenProposal = Math.max(seenProposal, ...flisr.proposals.map((p) => p.id)); renderFlisr(); return loadFlisr(); },
    loadPlans: () => { loadPlans(); if (plan) openPlan(plan.id); else if (canConfigure()) newPlan(); else clear($("plan-editor"), h("p", { class: "muted" }, "Choose a plan in the list.")); },
    startPolling,
    flisrState: () => flisr,
  };
}
