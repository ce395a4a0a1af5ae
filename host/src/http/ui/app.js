// The operator dashboard: plain JavaScript against the HTTP API, no build
// step. The token lives in sessionStorage (this tab only); a 401 anywhere
// signs out. Everything is rendered with textContent (no HTML from data).
//
// On a node of a fleet (GET /fleet/health answers 200, also through the
// router) it shows every node and every workspace with the node that
// holds it, and sends each action to that node (/fleet/nodes/{node}/...);
// elsewhere (404) it shows this node, as before.
"use strict";

const TOKEN_KEY = "fixsec-workspace-token";
const REFRESH_MS = 5000;
const $ = (id) => document.getElementById(id);

let workspaces = [];
let inFleet = false;
let sortKey = "last_used";
let sortDescending = true;
let timer = null;

class Unauthorized extends Error {}

async function api(method, path, body) {
  const token = sessionStorage.getItem(TOKEN_KEY);
  const init = { method, headers: { Authorization: `Bearer ${token}` } };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  if (response.status === 401) throw new Unauthorized();
  const data = await response.json().catch(() => ({}));
  return { status: response.status, data };
}

function signOut(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  clearInterval(timer);
  $("dashboard").hidden = true;
  $("sign-out").hidden = true;
  $("sign-in").hidden = false;
  const error = $("sign-in-error");
  error.hidden = !message;
  error.textContent = message || "";
  $("token").focus();
}

async function signIn(event) {
  event.preventDefault();
  sessionStorage.setItem(TOKEN_KEY, $("token").value.trim());
  $("token").value = "";
  await start();
}

async function start() {
  try {
    await refresh();
  } catch (e) {
    if (e instanceof Unauthorized) {
      signOut("That token was not accepted. Check it and sign in again.");
      return;
    }
    throw e;
  }
  $("sign-in").hidden = true;
  $("dashboard").hidden = false;
  $("sign-out").hidden = false;
  clearInterval(timer);
  timer = setInterval(() => refresh().catch(failed), REFRESH_MS);
}

function failed(e) {
  if (e instanceof Unauthorized) signOut("Signed out: the token is no longer accepted.");
  else say(`Refresh failed: ${e.message}`);
}

function say(text) {
  $("action-result").textContent = text;
}

const mb = (bytes) => (bytes / 1048576).toFixed(1);
const when = (t) => (t ? new Date(t).toLocaleString() : "unknown");

function el(tag, text, attrs) {
  const node = document.createElement(tag);
  if (text !== undefined) node.textContent = text;
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  return node;
}

async function refresh() {
  const fleet = await api("GET", "/fleet/health");
  inFleet = fleet.status === 200;
  for (const id of ["disk", "operations"]) $(id).hidden = inFleet;
  $("fleet").hidden = !inFleet;
  $("reload-policy").hidden = inFleet;
  if (inFleet) {
    const list = await api("GET", "/fleet/workspaces");
    renderFleet(fleet.data);
    workspaces = list.data.workspaces || [];
  } else {
    const [health, list, ops] = await Promise.all([
      api("GET", "/workspace/health"),
      api("GET", "/workspace/workspaces"),
      api("GET", "/workspace/operations"),
    ]);
    renderHealth(health.data);
    workspaces = list.data.workspaces || [];
    renderOperations(ops.data.operations || []);
  }
  renderWorkspaces();
  $("refreshed").textContent = `Last refresh: ${new Date().toLocaleTimeString()}.`;
}

// The fleet's verdict, and a row per node: a node without an answer is a
// row that says so, never a missing row.
function renderFleet(f) {
  const status = $("health-status");
  status.textContent = f.status;
  status.className = `status-${f.status}`;
  const nodes = f.nodes || [];
  const answered = nodes.filter((n) => n.answer);
  const lines = (key) => answered.flatMap((n) => (n.answer.health[key] || []).map((t) => `${n.node}: ${t}`));
  const missing = nodes.filter((n) => !n.answer).map((n) => `${n.node}: no answer (${n.error || "unknown error"})`);
  $("warnings").replaceChildren(...[...missing, ...lines("warnings")].map((t) => el("li", t)));
  $("recommendations").replaceChildren(...lines("recommendations").map((t) => el("li", t)));
  const p = answered.length ? answered[0].answer.health.policy : {};
  $("policy").textContent = answered.length
    ? `Policy on ${answered[0].node}: ${p.source} (digest ${p.digest}, contract ${p.contract})`
    : "Policy: no node answered";
  $("node-count").textContent = String(nodes.length);
  $("node-rows").replaceChildren(
    ...nodes.map((n) => {
      const row = el("tr", undefined, { "data-node": n.node });
      if (!n.answer) {
        row.append(
          el("td", n.node),
          el("td", `no answer: ${n.error || "unknown error"}`, { class: "error", colspan: "7" }),
        );
        return row;
      }
      const h = n.answer.health;
      const s = h.workspace_stats || {};
      const mirrors = s.mirrors || { count: 0, size_mb: 0 };
      const used = Math.round(((s.total_size_mb || 0) + (mirrors.size_mb || 0)) * 10) / 10;
      row.append(
        el("td", n.node),
        el("td", n.answer.ready ? "ready" : "not ready (draining)", n.answer.ready ? {} : { class: "error" }),
        el("td", h.status, { class: `status-${h.status}` }),
        el("td", String(s.total_workspaces || 0)),
        el("td", String(s.in_use || 0)),
        el("td", String(used)),
        el("td", s.free_space_bytes == null ? "unknown" : mb(s.free_space_bytes)),
        el("td", String(mirrors.count)),
      );
      return row;
    }),
  );
}

function renderHealth(h) {
  const status = $("health-status");
  status.textContent = h.status;
  status.className = `status-${h.status}`;
  const fill = (id, items) => {
    const list = $(id);
    list.replaceChildren(...items.map((t) => el("li", t)));
  };
  fill("warnings", h.warnings || []);
  fill("recommendations", h.recommendations || []);
  const p = h.policy || {};
  $("policy").textContent =
    `Policy: ${p.source} (digest ${p.digest}, contract ${p.contract})`;
  const s = h.workspace_stats || {};
  const limit = (h.thresholds && h.thresholds.total_size_warning_mb) || 0;
  const meter = $("total-meter");
  // The health verdict counts the object mirrors too: the disk the service uses.
  const mirrors = s.mirrors || { count: 0, size_mb: 0, unreferenced: 0 };
  const used = Math.round(((s.total_size_mb || 0) + (mirrors.size_mb || 0)) * 10) / 10;
  meter.max = Math.max(limit, used, 1);
  meter.high = limit * 0.8;
  meter.value = used;
  $("total-text").textContent =
    `${used} MB of ${limit} MB (workspaces ${s.total_size_mb} MB, mirrors ${mirrors.size_mb} MB)`;
  $("mirrors-text").textContent =
    `Object mirrors: ${mirrors.count} (${mirrors.unreferenced} not borrowed from)`;
  $("free-text").textContent =
    s.free_space_bytes == null ? "Free space: unknown" : `Free space: ${mb(s.free_space_bytes)} MB`;
  $("pending-text").textContent = `Pending deletions: ${s.pending_deletions || 0}`;
  const largest = (s.workspaces || []).slice(0, 8);
  const top = largest.length ? largest[0].size_bytes || 1 : 1;
  $("largest").replaceChildren(
    ...largest.map((w) => {
      const item = el("li");
      const bar = el("progress", undefined, { max: String(top), value: String(w.size_bytes) });
      bar.setAttribute("aria-label", `${w.name}: ${w.size_mb} MB`);
      item.append(bar, `${w.name} ${w.size_mb} MB`);
      return item;
    }),
  );
}

function inUseText(w) {
  if (w.leased_by) return `leased by ${w.leased_by}${w.leased_until ? ` until ${when(w.leased_until)}` : ""}`;
  return w.in_use ? "in use" : "no";
}

function renderWorkspaces() {
  const needle = $("filter").value.trim().toLowerCase();
  const shown = workspaces
    .filter((w) =>
      [w.repo_full_name, w.name, w.branch].some((v) => (v || "").toLowerCase().includes(needle)),
    )
    .sort((a, b) => {
      const x = a[sortKey] ?? "";
      const y = b[sortKey] ?? "";
      const order = x < y ? -1 : x > y ? 1 : 0;
      return sortDescending ? -order : order;
    });
  $("workspace-count").textContent = String(workspaces.length);
  $("workspace-rows").replaceChildren(
    ...shown.map((w) => {
      const row = el("tr", undefined, { "data-name": w.name });
      row.append(
        el("td", w.node || "this node"),
        el("td", w.repo_full_name || w.name),
        el("td", w.branch || "default"),
        el("td", (w.head || "").slice(0, 12)),
        el("td", String(w.size_mb)),
        el("td", when(w.last_used)),
        el("td", inUseText(w)),
      );
      const cell = el("td");
      const remove = el("button", "Remove", { type: "button", class: "remove" });
      remove.setAttribute("aria-label", `Remove ${w.repo_full_name || w.name}`);
      remove.addEventListener("click", () => removeWorkspace(w));
      cell.append(remove);
      row.append(cell);
      return row;
    }),
  );
  for (const th of document.querySelectorAll("#workspaces th[aria-sort]")) {
    const key = th.querySelector("button").dataset.sort;
    th.setAttribute("aria-sort", key === sortKey ? (sortDescending ? "descending" : "ascending") : "none");
  }
}

function renderOperations(ops) {
  $("operation-rows").replaceChildren(
    ...ops.map((o) => {
      const row = el("tr");
      row.append(
        el("td", when(o.started_at)),
        el("td", o.operation),
        el("td", o.workspace || ""),
        el("td", `${o.duration_ms} ms`),
        el("td", o.error ? `failed: ${o.error}` : "ok", o.error ? { class: "error" } : {}),
      );
      return row;
    }),
  );
}

async function act(what) {
  try {
    await what();
    await refresh();
  } catch (e) {
    failed(e);
  }
}

function removeWorkspace(w) {
  const label = w.repo_full_name || w.name;
  if (!window.confirm(`Remove the workspace of ${label} (${w.name})?`)) return;
  act(async () => {
    const path = inFleet
      ? `/fleet/nodes/${encodeURIComponent(w.node)}/workspaces/${encodeURIComponent(w.name)}`
      : `/workspace/workspaces/${encodeURIComponent(w.name)}`;
    const { status, data } = await api("DELETE", path);
    if (status === 200) say(`Removed ${label}${w.node ? ` from ${w.node}` : ""}.`);
    else if (status === 409) say(`Not removed: ${label} is in use. ${data.detail || ""}`);
    else say(`Removal of ${label} failed (${status}): ${data.detail || data.error || ""}`);
  });
}

function cleanup(event) {
  event.preventDefault();
  const hours = Number($("cleanup-age").value);
  act(async () => {
    const path = inFleet ? "/fleet/cleanup" : "/workspace/cleanup";
    const { status, data } = await api("POST", path, { max_age_hours: hours });
    if (status === 200) {
      const missed = (data.unreachable || []).length ? ` Not reached: ${data.unreachable.join(", ")}.` : "";
      const where = inFleet ? ` on ${data.nodes.length - data.unreachable.length} node(s)` : "";
      say(`Cleanup removed ${data.cleaned_workspaces} workspace(s)${where}; ${data.failed_workspaces} failed.${missed}`);
    } else {
      say(`Cleanup failed (${status}): ${data.detail || ""}`);
    }
  });
}

function reloadPolicy() {
  act(async () => {
    const { status, data } = await api("POST", "/workspace/policy/reload");
    say(status === 200 ? `Policy reloaded: ${data.policy.source} (${data.policy.digest}).`
      : `Policy not reloaded (${status}): ${data.detail || ""}`);
  });
}

function sortBy(key) {
  sortDescending = key === sortKey ? !sortDescending : false;
  sortKey = key;
  renderWorkspaces();
}

document.addEventListener("DOMContentLoaded", () => {
  $("sign-in-form").addEventListener("submit", signIn);
  $("sign-out").addEventListener("click", () => signOut(""));
  $("cleanup-form").addEventListener("submit", cleanup);
  $("reload-policy").addEventListener("click", reloadPolicy);
  $("filter").addEventListener("input", renderWorkspaces);
  for (const b of document.querySelectorAll("th button[data-sort]")) {
    b.addEventListener("click", () => sortBy(b.dataset.sort));
  }
  if (sessionStorage.getItem(TOKEN_KEY)) start();
  else signOut("");
});
