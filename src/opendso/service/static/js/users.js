// User management page (security administrators, RBAC maintainers): the same rules as `opendso users`.

import { api } from "./api.js";
import { esc } from "./alarms.js";
import { fmtWall } from "./time.js";

const $ = (id) => document.getElementById(id);
export const ROLES = ["viewer", "operator", "engineer", "installer", "security_administrator", "security_auditor", "rbac_maintainer"];

/** Wire the users page; ``guarded(action)`` shows a failed action's reason. Returns { load() }. */
export function initUsersPage({ guarded, me }) {
  let users = [];

  async function load() {
    try {
      users = await api("/api/users");
      render();
    } catch (err) {
      $("users-note").textContent = `Could not read the users: ${err.message}`;
    }
  }

  function state(u) {
    const parts = [];
    if (u.disabled) parts.push("disabled");
    if (u.password_change_required) parts.push("temporary password");
    if (!u.intact) parts.push("TAMPERED: changed outside OpenDSO");
    return parts.join(", ") || "active";
  }

  function throttles(u) {
    return u.throttles.map((t) => `${esc(t.source_ip)}: ${t.failures} failed` +
      (t.blocked_until ? `, blocked until ${esc(fmtWall(t.blocked_until))}` : "")).join("<br>");
  }

  function render() {
    $("users-rows").innerHTML = users.map((u) => {
      const self = u.username === me();
      const blocked = u.throttles.some((t) => t.blocked_until);
      return `<tr data-user="${esc(u.username)}" class="${u.intact ? "" : "tampered"}">` +
        `<td>${esc(u.username)}</td><td>${u.roles.map(esc).join(", ")}</td><td>${esc(state(u))}</td>` +
        `<td>${throttles(u) || "—"}</td><td class="actions">` +
        `<button class="secondary" data-act="roles">Roles…</button>` +
        `<button class="secondary" data-act="password">Reset password…</button>` +
        (u.disabled
          ? `<button class="secondary" data-act="enable">Enable</button>`
          : `<button class="secondary" data-act="disable"${self ? " disabled title=\"You cannot disable yourself\"" : ""}>Disable</button>`) +
        (blocked ? `<button class="secondary" data-act="unlock">Lift login throttle</button>` : "") +
        `</td></tr>`;
    }).join("");
    $("users-note").textContent = `${users.length} users`;
  }

  function roleBoxes(container, chosen) {
    container.innerHTML = ROLES.map((r) =>
      `<label><input type="checkbox" value="${r}"${chosen.includes(r) ? " checked" : ""}> ${r.replace("_", " ")}</label>`).join("");
  }
  const checked = (container) => [...container.querySelectorAll("input:checked")].map((i) => i.value);

  // -- add -------------------------------------------------------------------------------------
  $("users-add").addEventListener("click", () => {
    $("user-form").reset();
    roleBoxes($("user-form-roles"), ["viewer"]);
    $("user-form-error").textContent = "";
    $("user-dialog").showModal();
  });
  $("user-form").addEventListener("submit", async (e) => {
    if (e.submitter?.value !== "ok") return;
    e.preventDefault();
    try {
      await api("/api/users", {
        method: "POST",
        body: {
          username: $("user-form-name").value.trim(),
          password: $("user-form-password").value,
          roles: checked($("user-form-roles")),
          temporary: $("user-form-temporary").checked,
        },
      });
      $("user-dialog").close();
      await load();
    } catch (err) {
      $("user-form-error").textContent = err.message;
    }
  });

  // -- per-user actions ------------------------------------------------------------------------
  let target = null;
  $("users-rows").addEventListener("click", async (e) => {
    const button = e.target.closest("button[data-act]");
    if (!button) return;
    target = button.closest("tr").dataset.user;
    const user = users.find((u) => u.username === target);
    const act = button.dataset.act;
    if (act === "roles") {
      roleBoxes($("roles-form-roles"), user.roles);
      $("roles-form-user").textContent = target;
      $("roles-form-error").textContent = "";
      $("roles-dialog").showModal();
    } else if (act === "password") {
      $("password-reset-form").reset();
      $("password-reset-user").textContent = target;
      $("password-reset-error").textContent = "";
      $("password-reset-dialog").showModal();
    } else if (act === "disable" && confirm(`Disable ${target}? Their sessions end at once.`)) {
      await guarded(() => api(`/api/users/${encodeURIComponent(target)}/disable`, { method: "POST" }));
      await load();
    } else if (act === "enable") {
      await guarded(() => api(`/api/users/${encodeURIComponent(target)}/enable`, { method: "POST" }));
      await load();
    } else if (act === "unlock") {
      await guarded(() => api(`/api/users/${encodeURIComponent(target)}/unlock`, { method: "POST" }));
      await load();
    }
  });
  $("roles-form").addEventListener("submit", async (e) => {
    if (e.submitter?.value !== "ok") return;
    e.preventDefault();
    try {
      await api(`/api/users/${encodeURIComponent(target)}/roles`, { method: "POST", body: { roles: checked($("roles-form-roles")) } });
      $("roles-dialog").close();
      await load();
    } catch (err) {
      $("roles-form-error").textContent = err.message;
    }
  });
  $("password-reset-form").addEventListener("submit", async (e) => {
    if (e.submitter?.value !== "ok") return;
    e.preventDefault();
    try {
      await api(`/api/users/${encodeURIComponent(target)}/password`, {
        method: "POST",
        body: { password: $("password-reset-value").value, temporary: $("password-reset-temporary").checked },
      });
      $("password-reset-dialog").close();
      await load();
    } catch (err) {
      $("password-reset-error").textContent = err.message;
    }
  });
  $("users-refresh").addEventListener("click", load);
  return { load, users: () => users };
}
