// The switching dialog: a switch, its position and tags, and the safety gate's answer BEFORE anything is sent
// (POST /api/switching/preview: allowed, or the refusing rule and its reason verbatim, with the overrides,
// confirmations or second person it asks for), then Operate (POST /api/switching/operate) and the outcome.
// Tags are placed and removed from the same dialog. Pages are built with DOM calls (no HTML from data), so
// the strict Content-Security-Policy holds. Also the small DOM helper the operations pages share (h, clear).

import { api } from "./api.js";
import { fmtTime } from "./time.js";

/** Build an element: h("button", {class: "x", onclick: fn, dataset: {a: 1}}, "text", child...). */
export function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(props ?? {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") el.className = value;
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (key.startsWith("on") && typeof value === "function") el.addEventListener(key.slice(2), value);
    else if (key in el && typeof value !== "string") el[key] = value;
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** Replace an element's children. */
export function clear(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

/** The rules of the gate in words (the API's names, as operators read them). */
export const RULE_TEXT = {
  tags: "tags",
  safety_documents: "safety documents",
  earthing: "earthing",
  device_capability: "device capability",
  trustworthy_state: "trustworthy state",
  faulted_section: "faulted section",
  paralleling: "paralleling",
  limits: "limits (power flow)",
  two_person_approval: "two-person approval",
};

/** Switching device types of the model in words. */
const DEVICE_TEXT = { CB: "circuit breaker (CB)", LBS: "load-break switch (LBS)", LS: "load-break switch (LS)", DS: "disconnector (DS)" };

/** The outcomes of a command, in words with a shape (not colour alone). */
export const OUTCOME_TEXT = {
  completed: "✔ completed: the field confirmed the new position",
  refused: "✖ refused",
  no_response: "⚠ no response from the field",
  not_executed: "⚠ confirmed but NOT executed: the position did not change",
};

/** A switch position in words and a shape: ■ closed, □ open. */
export function positionText(closed) {
  if (closed === undefined || closed === null) return "position unknown";
  return closed ? "■ CLOSED" : "□ OPEN";
}

/** A gate decision as a block: allowed (with the rules passed) or the refusing rule and its reason verbatim. */
export function decisionBlock(decision) {
  if (decision.allowed) {
    return h("div", { class: "gate-answer gate-allowed", role: "status" },
      h("strong", {}, "✔ The gate allows it"), " ",
      h("span", { class: "gate-reason" }, decision.reason),
      decision.passed?.length ? h("div", { class: "muted small" }, `Rules passed: ${decision.passed.map((r) => RULE_TEXT[r] ?? r).join(", ")}`) : null,
      decision.overrides?.length ? h("div", { class: "small" }, `Overrides: ${decision.overrides.map((o) => `${o.tag} (${o.reason})`).join("; ")}`) : null,
      decision.confirmations?.length ? h("div", { class: "small" }, `Confirmed: ${decision.confirmations.map((c) => `${RULE_TEXT[c.rule] ?? c.rule} (${c.reason})`).join("; ")}`) : null);
  }
  return h("div", { class: "gate-answer gate-refused", role: "alert" },
    h("strong", {}, "✖ Refused by rule: "), h("span", { class: "gate-rule", dataset: { rule: decision.rule ?? "" } }, RULE_TEXT[decision.rule] ?? decision.rule ?? "—"),
    h("div", { class: "gate-reason" }, decision.reason),
    decision.confirm?.length ? h("ul", { class: "gate-confirm small" }, decision.confirm.map((c) => h("li", {}, c))) : null);
}

/**
 * Wire the switching dialog once.
 * opts: {canWrite(), switchInfo(name) -> {id, closed, kind?} | null, onChanged()}: onChanged after an operation or a tag change.
 */
export function initSwitching({ canWrite, switchInfo, onChanged = () => {} }) {
  const dialog = h("dialog", { id: "switching-dialog", class: "switching-dialog", "aria-labelledby": "sw-title" });
  document.body.append(dialog);
  let current = null; // {name, action, decision, inputsKey}

  function close() {
    current = null;
    if (dialog.open) dialog.close();
  }

  async function open(name) {
    current = { name, action: null, decision: null, inputsKey: null };
    // nothing of the previous switch stays on screen while this one loads
    clear(dialog, h("h2", { id: "sw-title" }, "Switch ", name), h("p", { class: "muted" }, "Loading…"));
    if (!dialog.open) dialog.showModal();
    await render();
  }

  async function render() {
    const mine = current;
    const name = current.name;
    const info = { ...(switchInfo(name) ?? {}) };
    let state = { tags: [], documents: [] };
    try {
      state = await api("/api/switching/state");
    } catch (err) {
      console.warn(err);
    }
    if (info.id !== undefined && info.kind === undefined) {
      try {
        const el = await api(`/api/grid/elements/${info.id}`);
        info.kind = DEVICE_TEXT[el.kind] ?? el.kind;
      } catch (err) {
        console.warn(err);
      }
    }
    if (current !== mine) return; // another switch was opened meanwhile
    const tags = state.tags.filter((t) => t.switch === name);
    const docs = state.documents.filter((d) => d.devices.includes(name) && ["issued", "in_work"].includes(d.state));
    current.action ??= info.closed === false ? "close" : "open";
    current.tags = tags;

    const body = h("form", { method: "dialog", id: "sw-form" });
    body.append(
      h("h2", { id: "sw-title" }, "Switch ", h("span", { id: "sw-name" }, name)),
      h("dl", { class: "kv" },
        h("dt", {}, "Type"), h("dd", { id: "sw-kind" }, info.kind ?? "switch"),
        h("dt", {}, "Position"), h("dd", { id: "sw-position", class: info.closed === false ? "pos-open" : "pos-closed" }, positionText(info.closed)),
        h("dt", {}, "Safety documents"), h("dd", {}, docs.length ? docs.map((d) => `${d.id} (${d.kind.replaceAll("_", " ")}, ${d.state.replace("_", " ")})`).join("; ") : "none open")),
      h("h3", {}, "Tags"),
      h("ul", { id: "sw-tags", class: "sw-tags" }, tags.length ? tags.map((t) => tagItem(t)) : h("li", { class: "muted" }, "No tag on this switch.")));
    if (canWrite()) {
      body.append(tagForm(name));
      body.append(h("h3", {}, "Operate"), actionChooser(info), h("div", { id: "sw-answer", class: "sw-answer" }, h("p", { class: "muted" }, "Asking the safety gate…")),
        h("div", { id: "sw-inputs" }), h("div", { id: "sw-outcome", class: "sw-outcome", "aria-live": "polite" }));
    } else {
      body.append(h("p", { class: "muted", id: "sw-readonly" }, "Your role may look but not operate switches or place tags (operators only)."));
    }
    body.append(h("div", { class: "dialog-buttons" },
      h("button", { type: "button", class: "secondary", id: "sw-close", onclick: close }, "Close"),
      canWrite() ? h("button", { type: "button", class: "secondary", id: "sw-check", onclick: () => preview() }, "Check again") : null,
      canWrite() ? h("button", { type: "button", class: "primary", id: "sw-operate", disabled: true, onclick: () => operate() }, "Operate") : null));
    clear(dialog, body);
    if (canWrite()) await preview();
  }

  function tagItem(t) {
    const item = h("li", { class: `sw-tag tag-${t.kind}`, dataset: { tag: t.id } },
      h("span", { class: "tag-badge" }, t.kind === "do_not_operate" ? "DNO" : "C"), " ",
      h("strong", {}, t.kind === "do_not_operate" ? "Do not operate" : "Caution"), ` ${t.id}: `, t.text,
      h("span", { class: "muted small" }, ` · ${t.placed_by}, ${fmtTime(t.placed_at)}`));
    if (canWrite()) {
      const reason = h("input", { class: "tag-remove-reason", placeholder: "reason to remove", "aria-label": `Reason to remove tag ${t.id}`, maxlength: 1000 });
      item.append(" ", reason, h("button", { type: "button", class: "secondary small tag-remove", onclick: async () => {
        if (!reason.value.trim()) { reason.focus(); reason.setAttribute("aria-invalid", "true"); return; }
        await act(() => api(`/api/switching/tags/${encodeURIComponent(t.id)}`, { method: "DELETE", body: { reason: reason.value.trim() } }));
      } }, "Remove"));
    }
    return item;
  }

  function tagForm(name) {
    const kind = h("select", { id: "sw-tag-kind", "aria-label": "Kind of tag" },
      h("option", { value: "caution" }, "Caution (override with a reason)"),
      h("option", { value: "do_not_operate" }, "Do not operate (blocks)"));
    const text = h("input", { id: "sw-tag-text", placeholder: "why: crew on site, work order…", maxlength: 1000, "aria-label": "Tag text" });
    return h("div", { class: "inline-form sw-tag-form" }, kind, text,
      h("button", { type: "button", class: "secondary", id: "sw-tag-place", onclick: async () => {
        if (!text.value.trim()) { text.focus(); return; }
        await act(() => api("/api/switching/tags", { method: "POST", body: { switch: name, kind: kind.value, text: text.value.trim() } }));
      } }, "Place tag"));
  }

  function actionChooser(info) {
    const box = h("div", { class: "sw-actions", role: "radiogroup", "aria-label": "Action" });
    for (const action of ["open", "close"]) {
      const input = h("input", { type: "radio", name: "sw-action", value: action, id: `sw-action-${action}`, checked: current.action === action,
        onchange: () => { current.action = action; clear(document.getElementById("sw-inputs")); preview(); } });
      const same = (action === "open" && info.closed === false) || (action === "close" && info.closed === true);
      box.append(h("label", { for: `sw-action-${action}` }, input, action === "open" ? " Open □" : " Close ■", same ? h("span", { class: "muted small" }, " (already)") : null));
    }
    return box;
  }

  // the inputs the refusal asks for: an override per caution tag, a confirmation of the limits, a second person
  function collect() {
    const body = { switch: current.name, action: current.action, overrides: [], confirmations: [] };
    for (const input of dialog.querySelectorAll("input.sw-override")) {
      if (input.value.trim()) body.overrides.push({ tag: input.dataset.tag, reason: input.value.trim() });
    }
    for (const input of dialog.querySelectorAll("input.sw-confirmation")) {
      if (input.value.trim()) body.confirmations.push({ rule: input.dataset.rule, reason: input.value.trim() });
    }
    const approver = dialog.querySelector("#sw-approver")?.value.trim();
    if (approver) body.approver = approver;
    return body;
  }

  function askInputs(decision) {
    const box = document.getElementById("sw-inputs");
    if (decision.allowed) return;
    const have = new Set([...box.querySelectorAll("input")].map((i) => i.id));
    if (decision.rule === "tags") {
      for (const t of current.tags.filter((x) => x.kind === "caution")) {
        const id = `sw-override-${t.id}`;
        if (have.has(id)) continue;
        box.append(h("label", { for: id }, `Override caution tag ${t.id} (${t.text}): reason`),
          h("input", { id, class: "sw-override", dataset: { tag: t.id }, maxlength: 1000, placeholder: "why operating despite the tag is safe" }));
      }
    } else if (decision.rule === "limits" && !have.has("sw-confirm-limits")) {
      box.append(h("label", { for: "sw-confirm-limits" }, "Confirm the new violations listed above: reason"),
        h("input", { id: "sw-confirm-limits", class: "sw-confirmation", dataset: { rule: "limits" }, maxlength: 1000, placeholder: "why the violation is acceptable" }));
    } else if (decision.rule === "two_person_approval" && !have.has("sw-approver")) {
      box.append(h("label", { for: "sw-approver" }, "Second person approving (user name)"),
        h("input", { id: "sw-approver", maxlength: 100, autocomplete: "off" }));
    }
  }

  async function preview() {
    if (!current || !canWrite()) return;
    const body = collect();
    const key = JSON.stringify(body);
    const answer = document.getElementById("sw-answer");
    const operateBtn = document.getElementById("sw-operate");
    operateBtn.disabled = true;
    try {
      const decision = await api("/api/switching/preview", { method: "POST", body });
      if (!current || JSON.stringify(collect()) !== key) return; // inputs changed meanwhile
      current.decision = decision;
      current.inputsKey = key;
      clear(answer, decisionBlock(decision));
      askInputs(decision);
      operateBtn.disabled = !decision.allowed;
    } catch (err) {
      clear(answer, h("div", { class: "gate-answer gate-refused", role: "alert" }, h("strong", {}, "✖ Not possible: "), err.message));
    }
  }

  async function operate() {
    const body = collect();
    // what is sent is what the gate was asked: inputs changed since -> ask again first
    if (!current.decision?.allowed || JSON.stringify(body) !== current.inputsKey) { await preview(); return; }
    const btn = document.getElementById("sw-operate");
    btn.disabled = true;
    const out = document.getElementById("sw-outcome");
    clear(out, h("p", { class: "muted" }, "Sent: waiting for the field…"));
    try {
      const outcome = await api("/api/switching/operate", { method: "POST", body });
      clear(out, h("div", { class: `outcome outcome-${outcome.status}`, id: "sw-outcome-status", dataset: { status: outcome.status } },
        h("strong", {}, OUTCOME_TEXT[outcome.status] ?? outcome.status),
        outcome.status === "refused" ? decisionBlock(outcome.decision) : null,
        outcome.result?.detail ? h("div", { class: "small" }, outcome.result.detail) : null,
        h("div", { class: "muted small" }, `${outcome.action} ${outcome.switch} by ${outcome.actor} (${outcome.path}), ${fmtTime(outcome.finished_at)}`)));
      onChanged();
    } catch (err) {
      clear(out, h("div", { class: "gate-answer gate-refused", role: "alert" }, h("strong", {}, "✖ Not done: "), err.message));
    }
  }

  async function act(action) {
    try {
      await action();
    } catch (err) {
      alert(`Not done: ${err.message}`);
      return;
    }
    onChanged();
    const keep = current;
    if (keep) { current = { name: keep.name, action: keep.action, decision: null, inputsKey: null }; await render(); }
  }

  dialog.addEventListener("close", () => { current = null; });
  return { open, close, isOpen: () => dialog.open, current: () => current?.name ?? null };
}

let instance = null;

/** Set up the dialog (app.js calls this once); then openSwitchingDialog(name) shows it. */
export function setupSwitchingDialog(opts) {
  instance ??= initSwitching(opts);
  return instance;
}

/** Show the switching dialog for a switch: its state, tags and the gate's answer before anything is sent. */
export function openSwitchingDialog(switchName) {
  if (!instance) throw new Error("the switching dialog is not set up");
  return instance.open(switchName);
}
