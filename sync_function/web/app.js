// autosync's page: the same JSON API as every other client, no framework, no build step.
// The user's token arrives in the URL fragment (never sent to the server, so never in its logs),
// is kept in sessionStorage for this tab, and removed from the address bar at once.
"use strict";

const TOKEN_KEY = "autosync.token";
const OPERATOR_KEY = "autosync.serviceKey";
const $ = (id) => document.getElementById(id);
let pollTimer = null;

function takeTokenFromFragment() {
  const params = new URLSearchParams(location.hash.slice(1));
  const token = params.get("token");
  if (token) {
    sessionStorage.setItem(TOKEN_KEY, token);
    history.replaceState(null, "", location.pathname + location.search);
  }
}

async function api(path, { method = "GET", body, key } = {}) {
  const credential = key || sessionStorage.getItem(TOKEN_KEY);
  const headers = { Authorization: "Bearer " + credential };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  let data = {};
  try { data = await response.json(); } catch (_) { /* an empty or non-JSON body */ }
  if (!response.ok) {
    const error = new Error(data.error || `${response.status} ${response.statusText}`);
    error.status = response.status;
    throw error;
  }
  return data;
}

function say(id, text, isError = false) {
  const element = $(id);
  element.textContent = text;
  element.classList.toggle("error", isError);
}

function cell(row, text, className) {
  const td = row.insertCell();
  td.textContent = text == null ? "" : String(text);
  if (className) td.className = className;
  return td;
}

function when(iso) {
  return iso ? new Date(iso).toLocaleString() : "";
}

function tokenSubject(token) {
  try { return JSON.parse(atob(token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/"))).sub; } catch (_) { return "?"; }
}

// --- the user's view ---------------------------------------------------------------------------

async function loadSettings() {
  const [{ intervals }, loaded, next] = await Promise.all([
    api("/api/settings/intervals"), api("/api/settings/load-auto-sync"), api("/api/settings/next-run"),
  ]);
  const select = $("auto-interval");
  select.replaceChildren(...intervals.map((minutes) => {
    const option = document.createElement("option");
    option.value = String(minutes);
    option.textContent = minutes < 60 ? `${minutes} minutes` : minutes === 60 ? "hour" : `${minutes / 60} hours`;
    return option;
  }));
  $("auto-enabled").checked = loaded.settings.enabled;
  select.value = String(loaded.settings.interval_minutes);
  $("next-run").textContent = next.next_run ? `Next automatic sync: ${when(next.next_run)}` : "Automatic sync is off.";
}

async function saveSettings(event) {
  event.preventDefault();
  const body = { enabled: $("auto-enabled").checked, interval_minutes: Number($("auto-interval").value) };
  try {
    await api("/api/settings/save-auto-sync", { method: "POST", body });
    say("auto-status", body.enabled ? `Saved: every ${$("auto-interval").selectedOptions[0].textContent}.` : "Saved: automatic sync is off.");
    await loadSettings();
  } catch (error) {
    say("auto-status", "Not saved: " + error.message, true);
  }
}

// --- the history ---------------------------------------------------------------------------

function progressCell(row, run) {
  const td = row.insertCell();
  if (run.progress_total == null) {
    td.textContent = run.status === "queued" ? "waiting for a worker" : "";
    return;
  }
  const bar = document.createElement("progress");
  bar.max = Math.max(run.progress_total, 1);
  bar.value = run.progress_total === 0 ? 1 : run.progress_done;
  bar.setAttribute("aria-label", "messages done");
  const text = document.createElement("span");
  text.className = "progress-text";
  text.textContent = ` ${run.progress_done} of ${run.progress_total}`;
  td.append(bar, text);
}

async function loadHistory() {
  const { runs } = await api("/api/sync/history?limit=20");
  const body = $("history").tBodies[0];
  body.replaceChildren();
  for (const run of runs) {
    const row = body.insertRow();
    row.dataset.runId = run.id;
    row.dataset.status = run.status;
    cell(row, when(run.queued_at));
    cell(row, run.trigger === "cron" ? "schedule" : "you");
    cell(row, run.status, "status-cell st-" + run.status);
    progressCell(row, run);
    cell(row, run.messages_imported);
    cell(row, run.error, run.error ? "error" : "");
  }
  $("history-empty").hidden = runs.length > 0;
  const busy = runs.some((run) => run.status === "queued" || run.status === "running");
  schedulePoll(busy ? 1000 : 10000);
}

function schedulePoll(ms) {
  clearTimeout(pollTimer);
  pollTimer = setTimeout(() => loadHistory().catch(showSignedOut), ms);
}

async function syncNow() {
  const button = $("sync-now");
  button.disabled = true;
  try {
    await api("/api/sync/now", { method: "POST" });
    say("sync-status", "Sync queued: follow it below.");
    await loadHistory();
  } catch (error) {
    say("sync-status", "Could not start a sync: " + error.message, true);
  } finally {
    button.disabled = false;
  }
}

function showSignedOut(error) {
  clearTimeout(pollTimer);
  if (error && error.status !== 401 && error.status !== 403) {
    say("auto-status", error.message, true);
    return;
  }
  sessionStorage.removeItem(TOKEN_KEY);
  $("signed-in").hidden = true;
  $("signin").hidden = false;
  if (error) document.querySelector("#signin p").textContent = "Your sign-in has ended (" + error.message + "). Open a new sign-in link, or paste a token.";
}

async function showSignedIn() {
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (!token) return showSignedOut();
  $("who").textContent = tokenSubject(token);
  $("signin").hidden = true;
  $("signed-in").hidden = false;
  try {
    await Promise.all([loadSettings(), loadAccounts(), loadHistory()]);
  } catch (error) {
    showSignedOut(error);
  }
}

// --- the operator's view -----------------------------------------------------------------------

function fillTable(id, columns, rows, empty) {
  const table = $(id);
  table.replaceChildren();
  const head = table.createTHead().insertRow();
  for (const [title] of columns) {
    const th = document.createElement("th");
    th.scope = "col";
    th.textContent = title;
    head.append(th);
  }
  const body = table.createTBody();
  if (rows.length === 0) {
    const td = body.insertRow().insertCell();
    td.colSpan = columns.length;
    td.textContent = empty;
  }
  for (const item of rows) {
    const row = body.insertRow();
    for (const [, render] of columns) cell(row, render(item));
  }
}

const seconds = (value) => (value == null ? "" : `${Math.round(value)} s`);

async function loadOperator(event) {
  if (event) event.preventDefault();
  const key = $("operator-key").value || sessionStorage.getItem(OPERATOR_KEY);
  if (!key) return;
  try {
    const data = await api("/api/operator/overview", { key });
    sessionStorage.setItem(OPERATOR_KEY, key);
    $("operator-key").value = "";
    say("operator-status", `Updated ${new Date().toLocaleTimeString()}.`);
    $("operator-data").hidden = false;
    $("op-queue").textContent = `${data.queue.waiting} waiting, ${data.queue.running} running`;
    fillTable("op-intervals", [["Interval", (r) => `${r.interval_minutes} min`], ["Users", (r) => r.users]], data.enabled_by_interval, "Nobody has auto-sync on.");
    fillTable("op-failing", [["User", (r) => r.user_id], ["Since", (r) => when(r.finished_at)], ["Why", (r) => r.error]], data.failing_users, "No failing user.");
    fillTable("op-cron", [["User", (r) => r.user_id], ["Started", (r) => when(r.start_time)], ["Message", (r) => r.return_message]], data.failed_cron_runs, "No failed pg_cron run.");
    fillTable("op-lateness", [["User", (r) => r.user_id], ["Slot", (r) => when(r.slot)], ["Queued after", (r) => seconds(r.queued_late_s)], ["Started after", (r) => seconds(r.started_late_s)]], data.lateness, "No scheduled run yet.");
    fillTable("op-runs", [["Run", (r) => r.run_id], ["User", (r) => r.user_id], ["Status", (r) => r.status], ["Progress", (r) => (r.progress_total == null ? "" : `${r.progress_done} of ${r.progress_total}`)], ["Imported", (r) => r.messages_imported], ["Error", (r) => r.error]], data.recent_runs, "No run yet.");
  } catch (error) {
    sessionStorage.removeItem(OPERATOR_KEY);
    say("operator-status", "Could not load: " + error.message, true);
  }
}

function showView(name) {
  const operator = name === "operator";
  $("user-view").hidden = operator;
  $("operator-view").hidden = !operator;
  $("show-user").setAttribute("aria-pressed", String(!operator));
  $("show-operator").setAttribute("aria-pressed", String(operator));
  if (operator) {
    if (sessionStorage.getItem(OPERATOR_KEY)) loadOperator();
    $("operator-key").focus();
  }
}

document.addEventListener("DOMContentLoaded", () => {
  takeTokenFromFragment();
  $("show-user").addEventListener("click", () => showView("user"));
  $("show-operator").addEventListener("click", () => showView("operator"));
  $("signin-form").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, $("signin-token").value.trim());
    $("signin-token").value = "";
    showSignedIn();
  });
  $("signout").addEventListener("click", () => showSignedOut());
  $("auto-form").addEventListener("submit", saveSettings);
  setUpAccounts();
  $("sync-now").addEventListener("click", syncNow);
  $("operator-form").addEventListener("submit", loadOperator);
  showSignedIn();
});
