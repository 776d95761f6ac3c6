// The page's accounts: the list, the add-account form for every kind the API takes, and reconnecting.
// Loaded after app.js, whose helpers ($, api, say, cell, when) it uses; app.js calls setUpAccounts()
// once the page is ready, and loadAccounts() when the user signs in.
"use strict";

// Show and enable the groups of a form that belong to the choices made (data-when="select-id=value"):
// a hidden group is also disabled, so its required fields neither block nor join the submission.
function applyChoices(root) {
  for (const group of root.querySelectorAll("[data-when]")) {
    const [id, values] = group.dataset.when.split("=");
    const on = values.split(",").includes($(id).value);
    group.hidden = !on;
    group.disabled = !on;
  }
}

// Where an API error's location ("ca_pem", "oauth2.client_id", "folders.0") points in a form.
const ACCOUNT_FIELDS = {
  host: "acc-host", port: "acc-port", tls_mode: "acc-tls", username: "acc-user", password: "acc-password",
  oauth2: "acc-kind", "oauth2.provider": "acc-oauth-provider", "oauth2.token_endpoint": "acc-oauth-endpoint",
  "oauth2.scopes": "acc-oauth-scopes", "oauth2.client_id": "acc-oauth-client-id",
  "oauth2.client_secret": "acc-oauth-client-secret", "oauth2.mechanism": "acc-oauth-mechanism",
  "oauth2.refresh_token": "acc-oauth-refresh", "oauth2.code": "acc-oauth-code",
  "oauth2.code_verifier": "acc-oauth-verifier", "oauth2.redirect_uri": "acc-oauth-redirect",
  mailbox: "acc-mailbox", folders: "acc-folders", all_folders: "acc-folder-choice", skip_special_use: "acc-skip",
  ca_pem: "acc-ca",
};
const RECONNECT_FIELDS = {
  refresh_token: "rc-refresh", code: "rc-code", code_verifier: "rc-verifier", redirect_uri: "rc-redirect",
};

// The API's errors read "location: message; location: message" (sync_function/errors.py). Returns the
// parts it can place next to a field, and the rest (in words) for the form's status line.
function placeErrors(message, fields) {
  const placed = [];
  const rest = [];
  for (const part of message.split("; ")) {
    const match = /^([A-Za-z_][\w.]*): (.*)$/s.exec(part);
    let id = null;
    let text = part;
    if (match) {
      const location = match[1].split(".").filter((piece) => !/^\d+$/.test(piece)).join(".");
      const words = match[2].replace(/^Value error, /, "");
      // "oauth2: token_endpoint must be …" and "oauth2: token_endpoint: …" name the field in their first word.
      id = fields[`${location}.${words.split(" ")[0].replace(/:$/, "")}`] || fields[location] || null;
      if (id && (!$(id) || $(id).closest("[disabled]"))) id = null;
      // A prefix that is no field ("imap.example.com: …") stays part of the message.
      if (id || location === "body") text = words;
    }
    if (id) placed.push([id, text]);
    else rest.push(text);
  }
  return { placed, rest };
}

function clearFieldErrors(form) {
  for (const note of form.querySelectorAll(".field-error")) note.remove();
  for (const field of form.querySelectorAll("[aria-invalid]")) {
    field.removeAttribute("aria-invalid");
    field.removeAttribute("aria-describedby");
  }
}

function showFieldError(id, text) {
  const field = $(id);
  let note = $(`${id}-error`);
  if (!note) {
    note = document.createElement("p");
    note.id = `${id}-error`;
    note.className = "field-error";
    (field.closest(".field") || field).append(note);
  }
  note.textContent = note.textContent ? `${note.textContent} ${text}` : text;
  field.setAttribute("aria-invalid", "true");
  field.setAttribute("aria-describedby", note.id);
}

// Shows an API error in its form: next to the fields it names (the first one gets the focus), the rest
// in the status line. Returns the words for the status line.
function showApiError(form, error, fields) {
  const { placed, rest } = placeErrors(error.message, fields);
  for (const [id, text] of placed) showFieldError(id, text);
  if (placed.length) {
    // A group (the special uses' fieldset) takes no focus itself: its first control does.
    const first = $(placed[0][0]);
    (first.matches("input, select, textarea") ? first : first.querySelector("input, select, textarea")).focus();
  }
  return rest.length ? rest.join("; ") : "see the marked field" + (placed.length > 1 ? "s" : "");
}

function signInText(account) {
  if (account.auth_method !== "oauth2") return "password";
  return `OAuth2 (${account.oauth_provider || "provider"}, ${account.oauth_mechanism || "XOAUTH2"})`;
}

function foldersText(account) {
  if (account.all_folders) {
    const skipped = (account.skip_special_use || []).map((use) => use.replace(/^\\/, ""));
    return skipped.length ? `every folder except ${skipped.join(", ")}` : "every folder";
  }
  return (account.folders || [account.mailbox]).join(", ");
}

function actionButton(text, label, onClick) {
  const button = document.createElement("button");
  button.type = "button";
  button.className = "secondary";
  button.textContent = text;
  button.setAttribute("aria-label", label);
  button.addEventListener("click", onClick);
  return button;
}

async function loadAccounts() {
  const { accounts } = await api("/api/email-accounts");
  const body = $("accounts").tBodies[0];
  body.replaceChildren();
  for (const account of accounts) {
    const row = body.insertRow();
    row.dataset.accountId = account.id;
    cell(row, account.username);
    const signIn = cell(row, signInText(account));
    if (account.needs_reconnect_since) {
      const why = document.createElement("div");
      why.className = "error needs-reconnect";
      why.textContent = `Needs reconnecting since ${when(account.needs_reconnect_since)}: ${account.needs_reconnect_reason || "the provider refused the sign-in"}`;
      signIn.append(why);
    }
    cell(row, `${account.host}:${account.port} (${account.tls_mode})` + (account.ca_pem ? ", own CA certificate" : ""));
    cell(row, foldersText(account));
    const actions = row.insertCell();
    actions.className = "actions";
    const name = `${account.username} on ${account.host}`;
    if (account.auth_method === "oauth2") {
      actions.append(actionButton("Reconnect", `Reconnect ${name}`, () => openReconnect(account)));
    }
    actions.append(actionButton("Remove", `Remove ${name}`, () => removeAccount(account)));
  }
  $("accounts-empty").hidden = accounts.length > 0;
}

function grantBody(prefix) {
  if ($(`${prefix}-grant`).value === "refresh") return { refresh_token: $(`${prefix}-refresh`).value.trim() };
  return {
    code: $(`${prefix}-code`).value.trim(),
    code_verifier: $(`${prefix}-verifier`).value.trim(),
    redirect_uri: $(`${prefix}-redirect`).value.trim(),
  };
}

function oauthBody() {
  const sign = { client_id: $("acc-oauth-client-id").value.trim(), mechanism: $("acc-oauth-mechanism").value };
  const provider = $("acc-oauth-provider").value;
  if (provider === "other") {
    sign.token_endpoint = $("acc-oauth-endpoint").value.trim();
    const scopes = $("acc-oauth-scopes").value.split(/\s+/).filter(Boolean);
    if (scopes.length) sign.scopes = scopes;
  } else {
    sign.provider = provider;
  }
  const secret = $("acc-oauth-client-secret").value;
  if (secret) sign.client_secret = secret;
  return { ...sign, ...grantBody("acc-oauth") };
}

function accountBody() {
  const body = {
    host: $("acc-host").value.trim(),
    port: Number($("acc-port").value),
    tls_mode: $("acc-tls").value,
    username: $("acc-user").value,
  };
  if ($("acc-kind").value === "password") body.password = $("acc-password").value;
  else body.oauth2 = oauthBody();
  const choice = $("acc-folder-choice").value;
  if (choice === "one") {
    body.mailbox = $("acc-mailbox").value;
  } else if (choice === "chosen") {
    body.folders = $("acc-folders").value.split("\n").map((name) => name.trim()).filter(Boolean);
  } else {
    body.all_folders = true;
    body.skip_special_use = [...$("acc-skip").querySelectorAll("input:checked")].map((box) => box.value);
  }
  const ca = $("acc-ca").value.trim();
  if (ca) body.ca_pem = ca;
  return body;
}

async function addAccount(event) {
  event.preventDefault();
  const form = $("account-form");
  clearFieldErrors(form);
  const body = accountBody();
  say("accounts-status", "Checking the account…");
  try {
    await api("/api/email-accounts", { method: "POST", body });
  } catch (error) {
    say("accounts-status", "Not added: " + showApiError(form, error, ACCOUNT_FIELDS), true);
    return;
  }
  // Clears the secrets (password, tokens, client secret) and restores the defaults.
  form.reset();
  applyChoices(form);
  await reloadAccounts(`Added ${body.username} on ${body.host}.`);
}

// The list first, then the words: whoever reads "Added" sees the account in the list.
async function reloadAccounts(done) {
  try {
    await loadAccounts();
    say("accounts-status", done);
  } catch (error) {
    say("accounts-status", `${done} The list could not be reloaded: ${error.message}`, true);
  }
}

async function readCaFile() {
  const [file] = $("acc-ca-file").files;
  if (!file) return;
  clearFieldErrors($("account-form"));
  // Far above any CA bundle; the API caps ca_pem too (sync_function/certs.py).
  if (file.size > 65536) {
    showFieldError("acc-ca-file", `${file.name} is too large for a certificate (${file.size} bytes).`);
    return;
  }
  $("acc-ca").value = await file.text();
  say("accounts-status", `Read the certificate from ${file.name}.`);
}

async function removeAccount(account) {
  try {
    await api(`/api/email-accounts/${account.id}`, { method: "DELETE" });
  } catch (error) {
    say("accounts-status", "Not removed: " + error.message, true);
    return;
  }
  await reloadAccounts(`Removed ${account.username} on ${account.host}.`);
}

let reconnecting = null;

function openReconnect(account) {
  reconnecting = account;
  const form = $("reconnect-form");
  form.reset();
  clearFieldErrors(form);
  applyChoices(form);
  say("rc-status", "");
  $("rc-account").textContent = `${account.username} on ${account.host}`;
  $("reconnect-dialog").showModal();
}

async function reconnectAccount(event) {
  event.preventDefault();
  const form = $("reconnect-form");
  clearFieldErrors(form);
  say("rc-status", "Checking the sign-in…");
  try {
    await api(`/api/email-accounts/${reconnecting.id}/reconnect`, { method: "POST", body: grantBody("rc") });
  } catch (error) {
    say("rc-status", "Not reconnected: " + showApiError(form, error, RECONNECT_FIELDS), true);
    return;
  }
  form.reset();
  $("reconnect-dialog").close();
  await reloadAccounts(`Reconnected ${reconnecting.username} on ${reconnecting.host}.`);
}

function setUpAccounts() {
  $("account-form").addEventListener("submit", addAccount);
  for (const form of [$("account-form"), $("reconnect-form")]) {
    form.addEventListener("change", () => applyChoices(form));
    applyChoices(form);
  }
  $("acc-ca-file").addEventListener("change", () => readCaFile().catch((error) => showFieldError("acc-ca-file", error.message)));
  $("reconnect-form").addEventListener("submit", reconnectAccount);
  $("rc-cancel").addEventListener("click", () => $("reconnect-dialog").close());
}
