// hookrelay's console: the Webhooks and Webhook Logs pages over the /v1 API.
//
// Rules kept throughout: the token lives in sessionStorage only and goes out as a bearer
// header (no cookie, so nothing for another site to ride on); every value reaches the page
// through textContent or a form field's value, never as HTML.
"use strict";

const TOKEN_KEY = "hookrelay.token";
// Where the service's routes start: "" at the root of a host, "/hooks" behind a proxy that
// serves it under /hooks/ (the page is `{root}/` or `{root}/portal`). Every call goes below it.
const ROOT = location.pathname.replace(/\/(portal)?$/, "");
// `logParams`: the filters last applied (paging and Recover use these, not fields edited
// since); `loads`: which webhook list load is the latest.
const state = { me: null, eventTypes: [], typeInfo: new Map(), webhooks: new Map(), logParams: new URLSearchParams(), editing: null, loads: 0 };

const $ = (id) => document.getElementById(id);

function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (className) node.className = className;
  return node;
}

/// A table row that opens something: a link for the keyboard too (Tab, then Enter).
function clickableRow(open) {
  const tr = el("tr", null, "clickable");
  tr.tabIndex = 0;
  tr.addEventListener("click", open);
  tr.addEventListener("keydown", (event) => {
    if (event.key === "Enter") { event.preventDefault(); open(); }
  });
  return tr;
}

function statusBadge(value) {
  return el("span", value, "status status-" + String(value).replace(/[^a-z]/g, ""));
}

/// Calls the API; answers {status, body, text}: the JSON, and the bytes it came as. A 401
/// signs out.
async function api(method, path, body) {
  const headers = { Authorization: "Bearer " + sessionStorage.getItem(TOKEN_KEY) };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(ROOT + path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    credentials: "omit",
  });
  const text = await response.text();
  let json = null;
  try { json = text ? JSON.parse(text) : null; } catch (_) { json = null; }
  if (response.status === 401 && path !== "/v1/whoami") {
    if (isPortal()) endSession(); else signOut();
  }
  return { status: response.status, body: json, text };
}

function errorText(answer) {
  const e = answer.body && answer.body.error;
  return e ? e.message : "the server answered " + answer.status;
}

/// Opened from a portal session link (`/portal#token=…`): one account, no sign-in page.
function isPortal() {
  return location.pathname.endsWith("/portal");
}

/// Whether the caller may change things: a portal session may be read-only.
function canManage() {
  return !state.me || !state.me.capabilities || state.me.capabilities.includes("manage");
}

/// A portal session that expired or was revoked: say so, and forget its token.
function endSession() {
  sessionStorage.removeItem(TOKEN_KEY);
  state.me = null;
  $("nav").hidden = true;
  show("session-ended");
}

function show(section) {
  for (const id of ["sign-in", "session-ended", "webhooks", "webhook-page", "webhook-form-page", "logs", "log-detail"]) {
    $(id).hidden = id !== section;
  }
  // A secret shown once is gone as soon as the page changes.
  $("secret-box").hidden = true;
  $("secret-value").textContent = "";
}

/// Goes to `hash`: the hashchange listener routes, or, when the hash is already there, this.
function go(hash) {
  if (location.hash === hash) route(); else location.hash = hash;
}

// ---- signing in ----

async function signIn(token) {
  sessionStorage.setItem(TOKEN_KEY, token);
  const answer = await api("GET", "/v1/whoami");
  if (answer.status !== 200) {
    sessionStorage.removeItem(TOKEN_KEY);
    return errorText(answer);
  }
  state.me = answer.body;
  // The catalog before anything shows as signed in: a form opened earlier had no event boxes.
  const types = await api("GET", "/v1/event-types?limit=500");
  state.eventTypes = types.status === 200 ? types.body.items.map((t) => t.name).sort() : [];
  state.typeInfo = new Map(types.status === 200 ? types.body.items.map((t) => [t.name, t]) : []);
  $("who").textContent = state.me.role === "admin" ? "admin" : "account " + state.me.account_id;
  $("nav").hidden = false;
  // A portal session signs out by closing the page, and a read-only one changes nothing.
  $("sign-out").hidden = state.me.role === "portal";
  for (const id of ["new-webhook", "retry-log"]) $(id).hidden = !canManage();
  return null;
}

function signOut() {
  sessionStorage.removeItem(TOKEN_KEY);
  state.me = null;
  $("nav").hidden = true;
  location.hash = "";
  show("sign-in");
}

// ---- webhooks ----

async function loadWebhooks() {
  show("webhooks");
  // Only the latest load fills the table: an older one still under way drops its rows.
  const load = ++state.loads;
  const found = [];
  let cursor = null;
  do {
    const answer = await api("GET", "/v1/webhooks?limit=500" + (cursor ? "&cursor=" + encodeURIComponent(cursor) : ""));
    if (answer.status !== 200) { $("webhooks-notice").textContent = errorText(answer); return; }
    found.push(...answer.body.items);
    cursor = answer.body.next_cursor;
  } while (cursor);
  if (load !== state.loads) return;
  state.webhooks.clear();
  for (const w of found) state.webhooks.set(w.id, w);
  $("webhook-rows").replaceChildren(...found.map(webhookRow));
}

function webhookRow(w) {
  const tr = el("tr");
  tr.dataset.id = w.id;
  const url = el("td", null, "url-cell");
  const link = el("a", w.url, "webhook-link wrap");
  link.href = "#/webhooks/" + encodeURIComponent(w.id);
  url.appendChild(link);
  if (w.description) url.appendChild(el("div", w.description, "hint"));
  tr.appendChild(url);
  tr.appendChild(el("td", w.account_id));
  tr.appendChild(el("td", w.events.join(", ")));
  const status = el("td");
  status.appendChild(statusBadge(w.status));
  if (w.disabled_reason) status.appendChild(el("div", w.disabled_reason, "hint"));
  tr.appendChild(status);
  const health = el("td");
  health.appendChild(statusBadge(w.health));
  tr.appendChild(health);
  const actions = el("td");
  const button = (label, action) => {
    const b = el("button", label);
    b.type = "button";
    b.dataset.action = action;
    b.addEventListener("click", () => webhookAction(action, w));
    actions.appendChild(b);
  };
  if (canManage()) {
    button("Edit", "edit");
    button("Send test", "test");
    button(w.status === "active" ? "Disable" : "Enable", w.status === "active" ? "disable" : "enable");
    button("Rotate secret", "rotate");
    button("Replay", "replay");
  }
  button("Logs", "logs");
  if (canManage()) button("Delete", "delete");
  tr.appendChild(actions);
  return tr;
}

async function webhookAction(action, w) {
  const notice = $("webhooks-notice");
  notice.textContent = "";
  const base = "/v1/webhooks/" + encodeURIComponent(w.id);
  if (action === "edit") { openForm(w); return; }
  if (action === "logs") { go("#/logs?webhook_id=" + encodeURIComponent(w.id)); return; }
  if (action === "delete") {
    if (!confirm("Delete the webhook to " + w.url + "? Its logs stay.")) return;
    const answer = await api("DELETE", base);
    notice.textContent = answer.status === 204 || answer.status === 200 ? "Deleted." : errorText(answer);
  } else if (action === "enable" || action === "disable") {
    const answer = await api("POST", base + "/" + action);
    notice.textContent = answer.status === 200 ? (action === "enable" ? "Enabled." : "Disabled.") : errorText(answer);
  } else if (action === "test") {
    const answer = await api("POST", base + "/test");
    notice.textContent = answer.status === 202
      ? "Test event sent: Webhook Log " + answer.body.log_id
      : errorText(answer);
  } else if (action === "replay") {
    const day = new Date(Date.now() - 24 * 3600 * 1000).toISOString();
    const since = prompt("Deliver to " + w.url + " every stored event of its types it has not received, since (an RFC 3339 time):", day);
    if (!since) return;
    const answer = await api("POST", base + "/replay", { since: since });
    notice.textContent = answer.status === 202
      ? (answer.body.count === 1 ? "1 event" : answer.body.count + " events") + " being replayed, oldest first."
      : errorText(answer);
  } else if (action === "rotate") {
    if (!confirm("Rotate the secret of " + w.url + "? The old one keeps signing for 24 hours.")) return;
    const answer = await api("POST", base + "/rotate-secret", {});
    if (answer.status === 200) {
      $("secret-value").textContent = answer.body.secret;
      $("secret-box").hidden = false;
    } else {
      notice.textContent = errorText(answer);
    }
  }
  const keep = notice.textContent;
  await loadWebhooks();
  notice.textContent = keep;
}

function headerRow(name, value) {
  const row = el("div", null, "header-row");
  const n = el("input");
  n.placeholder = "Name";
  n.value = name || "";
  n.className = "h-name";
  const v = el("input");
  v.placeholder = "Value";
  v.value = value || "";
  v.className = "h-value";
  const remove = el("button", "Remove");
  remove.type = "button";
  remove.addEventListener("click", () => row.remove());
  row.append(n, v, remove);
  return row;
}

function openForm(w) {
  state.editing = w || null;
  show("webhook-form-page");
  $("form-title").textContent = w ? "Edit webhook" : "New webhook";
  for (const node of document.querySelectorAll("#webhook-form .error")) node.textContent = "";
  $("account-label").hidden = state.me.role !== "admin" || !!w;
  $("f-account_id").value = w ? w.account_id : "";
  $("f-url").value = w ? w.url : "";
  $("f-secret").value = "";
  $("f-description").value = w && w.description ? w.description : "";
  $("f-filter").value = w && w.filter ? JSON.stringify(w.filter, null, 2) : "";
  $("f-rate_limit").value = w && w.rate_limit ? w.rate_limit : "";
  $("f-max_in_flight").value = w && w.max_in_flight ? w.max_in_flight : "";
  $("f-ordering").value = w ? w.ordering : "unordered";
  $("f-filter-payload").value = "";
  $("filter-result").textContent = "";
  const headers = $("header-rows");
  headers.replaceChildren();
  for (const [name, value] of Object.entries(w ? w.headers : {})) headers.appendChild(headerRow(name, value));
  const boxes = $("event-boxes");
  boxes.replaceChildren();
  // The catalog, and whatever the webhook has that it does not list: an edit never drops a
  // subscription it did not show.
  const names = new Set(state.eventTypes);
  if (w) for (const name of w.events) names.add(name);
  for (const name of [...names].sort()) {
    const label = el("label", null, "event-box");
    const box = el("input");
    box.type = "checkbox";
    box.value = name;
    box.checked = !!w && w.events.includes(name);
    label.append(box, document.createTextNode(" " + name));
    boxes.appendChild(label);
    // What the type carries, for the one choosing it: its description, schema and example.
    const info = state.typeInfo.get(name);
    if (info && (info.description || info.schema || info.example)) {
      const details = el("details", null, "type-info");
      details.appendChild(el("summary", info.description || "About " + name));
      if (info.schema) {
        details.appendChild(el("p", "Schema of data:"));
        details.appendChild(el("pre", JSON.stringify(info.schema, null, 2)));
      }
      if (info.example) {
        details.appendChild(el("p", "Example data:"));
        details.appendChild(el("pre", JSON.stringify(info.example, null, 2)));
      }
      boxes.appendChild(details);
    }
  }
}

/// A whole number as typed, or null when empty; throws, naming the field, when it is not
/// one (a number input answers "" for text it cannot read, which must not clear a limit).
function numberOrNull(id) {
  const input = $(id);
  if (input.validity.badInput) throw new Error("not a number");
  const text = input.value.trim();
  if (!text) return null;
  const n = Number(text);
  if (!Number.isInteger(n)) throw new Error("a whole number, please");
  return n;
}

/// The filter as typed: null when empty; throws with why when it is not JSON.
function typedJson(id, what) {
  const text = $(id).value.trim();
  if (!text) return null;
  try { return JSON.parse(text); } catch (e) { throw new Error(what + " is not JSON: " + e.message); }
}

/// Checks the filter as typed, and with a payload given says whether it passes, as the
/// fan-out would (POST /v1/webhooks/filter-test).
async function tryFilter(withPayload) {
  $("err-filter").textContent = "";
  $("filter-result").textContent = "";
  let filter, payload;
  try {
    filter = typedJson("f-filter", "the filter");
    payload = withPayload ? typedJson("f-filter-payload", "the body") : {};
  } catch (e) {
    $("err-filter").textContent = e.message;
    return;
  }
  if (filter === null && !withPayload) return;
  const answer = await api("POST", "/v1/webhooks/filter-test", { filter: filter || {}, payload: payload || {} });
  if (answer.status !== 200) { $("err-filter").textContent = errorText(answer); return; }
  if (answer.body.error) { $("err-filter").textContent = answer.body.error; return; }
  if (withPayload) $("filter-result").textContent = answer.body.matches ? "Passes: it would be delivered." : "Refused: it would not be delivered.";
}

async function saveWebhook(event) {
  event.preventDefault();
  for (const node of document.querySelectorAll("#webhook-form .error")) node.textContent = "";
  let filter;
  try { filter = typedJson("f-filter", "the filter"); } catch (e) { $("err-filter").textContent = e.message; return; }
  const limits = {};
  for (const name of ["rate_limit", "max_in_flight"]) {
    try { limits[name] = numberOrNull("f-" + name); } catch (e) { $("err-" + name).textContent = e.message; return; }
  }
  const headers = {};
  for (const row of document.querySelectorAll("#header-rows .header-row")) {
    const name = row.querySelector(".h-name").value.trim();
    if (name) headers[name] = row.querySelector(".h-value").value;
  }
  const body = {
    url: $("f-url").value.trim(),
    events: [...document.querySelectorAll("#event-boxes input:checked")].map((b) => b.value),
    headers,
    description: $("f-description").value || null,
    filter,
    rate_limit: limits.rate_limit,
    max_in_flight: limits.max_in_flight,
    ordering: $("f-ordering").value,
  };
  const secret = $("f-secret").value;
  if (secret) body.secret = secret;
  let answer;
  if (state.editing) {
    answer = await api("PATCH", "/v1/webhooks/" + encodeURIComponent(state.editing.id), body);
  } else {
    if (state.me.role === "admin") body.account_id = $("f-account_id").value.trim();
    answer = await api("POST", "/v1/webhooks", body);
  }
  if (answer.status === 200 || answer.status === 201) {
    const done = state.editing ? "Saved." : "Created.";
    if (location.hash === "#/webhooks") await loadWebhooks(); else { location.hash = "#/webhooks"; await loadWebhooks(); }
    $("webhooks-notice").textContent = done;
    return;
  }
  // The API names the field it refuses: its message goes beside that field.
  const e = answer.body && answer.body.error;
  const field = e && e.field ? e.field.split(".")[0] : "form";
  const target = $("err-" + field) || $("err-form");
  target.textContent = errorText(answer);
}

// ---- logs ----

function localToIso(value) {
  return value ? new Date(value).toISOString() : "";
}

function logQuery() {
  const params = new URLSearchParams();
  for (const name of ["status", "event_type", "webhook_id", "event_id"]) {
    const value = $("q-" + name).value.trim();
    if (value) params.set(name, value);
  }
  for (const name of ["since", "until"]) {
    const value = localToIso($("q-" + name).value);
    if (value) params.set(name, value);
  }
  return params;
}

async function fillLogFilters() {
  const types = $("q-event_type");
  if (types.options.length === 1) {
    for (const name of state.eventTypes) types.appendChild(new Option(name, name));
  }
  if (state.webhooks.size === 0) {
    const answer = await api("GET", "/v1/webhooks?limit=500");
    if (answer.status === 200) for (const w of answer.body.items) state.webhooks.set(w.id, w);
  }
  const hooks = $("q-webhook_id");
  const chosen = hooks.value;
  hooks.replaceChildren(new Option("any", ""));
  for (const w of state.webhooks.values()) hooks.appendChild(new Option(w.url, w.id));
  hooks.value = chosen;
}

/// The webhook of a log: its URL, linked to its page (its id while the URL is not known).
function webhookCell(id) {
  const hook = state.webhooks.get(id);
  const td = el("td");
  const link = el("a", hook ? hook.url : id, "webhook-link wrap");
  link.href = "#/webhooks/" + encodeURIComponent(id);
  link.addEventListener("click", (event) => event.stopPropagation());
  td.appendChild(link);
  return td;
}

/// An error's last cause ("… : connection refused" → "connection refused"), the whole chain
/// on hover: the log's fields show it whole once.
function cause(error) {
  const node = el("span", error ? error.split(": ").pop() : "");
  if (error) node.title = error;
  return node;
}

async function loadLogs(cursor) {
  show("logs");
  await fillLogFilters();
  const params = new URLSearchParams(state.logParams);
  params.set("limit", "50");
  if (cursor) params.set("cursor", cursor);
  const answer = await api("GET", "/v1/logs?" + params.toString());
  const rows = $("log-rows");
  rows.replaceChildren();
  if (answer.status !== 200) { $("logs-notice").textContent = errorText(answer); return; }
  $("logs-notice").textContent = answer.body.items.length ? "" : "No logs match.";
  for (const log of answer.body.items) {
    const tr = clickableRow(() => { location.hash = "#/logs/" + encodeURIComponent(log.id); });
    tr.dataset.id = log.id;
    tr.appendChild(el("td", log.id));
    const event = el("td", log.event_type + " ");
    event.appendChild(statusBadge(log.status));
    tr.appendChild(event);
    const created = el("td");
    created.appendChild(when(log.created_at));
    tr.appendChild(created);
    const status = el("td");
    status.appendChild(statusBadge(log.status));
    tr.appendChild(status);
    tr.appendChild(webhookCell(log.webhook_id));
    rows.appendChild(tr);
  }
  $("logs-next").hidden = !answer.body.next_cursor;
  $("logs-next").onclick = () => loadLogs(answer.body.next_cursor);
  $("logs-first").hidden = !cursor;
  $("logs-first").onclick = () => loadLogs(null);
  $("recover").hidden = !(canManage() && state.logParams.get("webhook_id") && state.logParams.get("since"));
}

/// Takes the filter fields as the applied filters; false (and says why) for a bad time.
function applyFilters() {
  try {
    state.logParams = logQuery();
    return true;
  } catch (_) {
    $("logs-notice").textContent = "That time cannot be read.";
    return false;
  }
}

async function recover() {
  const p = state.logParams;
  const id = p.get("webhook_id");
  const hook = state.webhooks.get(id);
  const body = { since: p.get("since") };
  if (p.get("until")) body.until = p.get("until");
  if (!confirm("Queue again every failed delivery of " + (hook ? hook.url : id) + " since " + body.since + "?")) return;
  const answer = await api("POST", "/v1/webhooks/" + encodeURIComponent(id) + "/recover", body);
  $("logs-notice").textContent = answer.status === 202
    ? answer.body.count + " failed deliveries queued again."
    : errorText(answer);
}

async function loadLog(id) {
  show("log-detail");
  $("detail-notice").textContent = "";
  const answer = await api("GET", "/v1/logs/" + encodeURIComponent(id));
  if (answer.status !== 200) { $("detail-notice").textContent = errorText(answer); return; }
  const log = answer.body;
  $("d-id").textContent = log.id;
  const fields = $("d-fields");
  fields.replaceChildren();
  const field = (name, value) => {
    fields.appendChild(el("dt", name));
    const dd = el("dd");
    if (name === "Status") dd.appendChild(statusBadge(value)); else dd.textContent = value === null || value === undefined ? "—" : String(value);
    fields.appendChild(dd);
  };
  field("Event", log.event_type + " (" + log.event_id + ")");
  fields.appendChild(el("dt", "Created at"));
  fields.appendChild(el("dd")).appendChild(when(log.created_at));
  field("Status", log.status);
  field("Attempts", log.attempts_total === undefined ? log.attempts.length : log.attempts_total);
  fields.appendChild(el("dt", "Webhook"));
  const hookField = fields.appendChild(el("dd"));
  field("Last answer", log.response_status);
  field("Error", log.error);
  if (log.response_body) field("Answer body", log.response_body);
  const sent = await api("GET", "/v1/logs/" + encodeURIComponent(id) + "/payload");
  showPayload(sent.status === 200 ? sent.text : null, sent);
  let hook = state.webhooks.get(log.webhook_id);
  if (!hook) {
    const w = await api("GET", "/v1/webhooks/" + encodeURIComponent(log.webhook_id));
    if (w.status === 200) { hook = w.body; state.webhooks.set(hook.id, hook); }
  }
  hookField.append(...webhookCell(log.webhook_id).childNodes);
  const lines = [
    "content-type: application/json",
    "user-agent: hookrelay",
    "webhook-id: " + log.event_id,
    "webhook-timestamp: <the attempt's Unix time>",
  ];
  if (hook && hook.has_secret) lines.push("webhook-signature: v1,<redacted>");
  if (hook) for (const [name, value] of Object.entries(hook.headers)) lines.push(name + ": " + value);
  $("d-headers").textContent = lines.join("\n");
  const rows = $("d-attempts");
  rows.replaceChildren();
  for (const a of log.attempts) {
    const tr = el("tr");
    tr.append(
      el("td", a.attempt),
      el("td"),
      el("td", a.duration_ms + " ms"),
      el("td", a.response_status === null ? "—" : a.response_status),
      el("td"),
      el("td", a.response_body || ""),
    );
    tr.children[1].appendChild(when(a.started_at));
    tr.children[4].appendChild(cause(a.error));
    rows.appendChild(tr);
  }
  $("retry-log").onclick = async () => {
    const retried = await api("POST", "/v1/logs/" + encodeURIComponent(log.id) + "/retry");
    $("detail-notice").textContent = retried.status === 202 ? "Queued again." : errorText(retried);
  };
}

/// The body a receiver got, byte for byte (what its signature covers), or laid out on ask.
function showPayload(exact, answer) {
  const box = $("d-payload");
  const formatted = $("d-payload-formatted");
  formatted.disabled = exact === null;
  const render = () => {
    if (exact === null) { box.textContent = ""; return; }
    box.textContent = formatted.checked ? JSON.stringify(JSON.parse(exact), null, 2) : exact;
  };
  $("d-payload-hint").textContent = exact !== null
    ? "Exactly as sent and signed, " + new TextEncoder().encode(exact).length + " bytes."
    : answer.status === 404 && answer.body && answer.body.error && answer.body.error.code === "payload_gone"
      ? "Its event is no longer stored."
      : errorText(answer);
  formatted.onchange = render;
  render();
}

// ---- a webhook's page ----

/// "3 minutes ago", with the exact time on hover.
function when(iso) {
  const node = el("time", relative(iso));
  node.dateTime = iso;
  node.title = new Date(iso).toISOString();
  return node;
}

function relative(iso) {
  const seconds = Math.round((Date.now() - new Date(iso).getTime()) / 1000);
  const units = [["day", 86400], ["hour", 3600], ["minute", 60]];
  for (const [name, size] of units) {
    const n = Math.floor(Math.abs(seconds) / size);
    if (n >= 1) return (seconds < 0 ? "in " : "") + n + " " + name + (n === 1 ? "" : "s") + (seconds < 0 ? "" : " ago");
  }
  return "just now";
}

function fact(list, name, value) {
  list.appendChild(el("dt", name));
  const dd = el("dd");
  if (value instanceof Node) dd.appendChild(value); else dd.textContent = value === null || value === undefined || value === "" ? "—" : String(value);
  list.appendChild(dd);
}

const SVG = "http://www.w3.org/2000/svg";
function svg(tag, attrs, className) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  if (className) node.setAttribute("class", className);
  return node;
}

/// Attempts per interval as stacked bars (answered 2xx below, the rest above), and the p95
/// duration as a line on its own scale: plain SVG, nothing to load.
function chart(series) {
  const width = 720, height = 220, left = 36, bottom = 22, top = 10;
  const plotH = height - bottom - top;
  const step = (width - left) / Math.max(series.length, 1);
  const most = Math.max(1, ...series.map((b) => b.attempts));
  const slowest = Math.max(1, ...series.map((b) => b.p95_duration_ms || 0));
  const root = svg("svg", { viewBox: "0 0 " + width + " " + height, preserveAspectRatio: "xMidYMid meet" });
  root.appendChild(svg("text", { x: 0, y: top + 8 }, "axis")).textContent = String(most);
  root.appendChild(svg("text", { x: 0, y: height - bottom }, "axis")).textContent = "0";
  const points = [];
  series.forEach((b, i) => {
    const x = left + i * step + 1;
    const w = Math.max(step - 2, 1);
    const okH = (b.successes / most) * plotH;
    const failH = (b.failures / most) * plotH;
    const base = height - bottom;
    if (b.successes) {
      const r = root.appendChild(svg("rect", { x, y: base - okH, width: w, height: okH }, "ok"));
      r.appendChild(svg("title", {})).textContent = b.successes + " answered 2xx from " + new Date(b.start).toLocaleString();
    }
    if (b.failures) {
      const r = root.appendChild(svg("rect", { x, y: base - okH - failH, width: w, height: failH }, "failed"));
      r.appendChild(svg("title", {})).textContent = b.failures + " failed from " + new Date(b.start).toLocaleString();
    }
    if (b.p95_duration_ms !== null && b.p95_duration_ms !== undefined) {
      points.push((x + w / 2).toFixed(1) + "," + (base - (b.p95_duration_ms / slowest) * plotH).toFixed(1));
    }
    if (i % 6 === 0) {
      const label = new Date(b.start).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
      root.appendChild(svg("text", { x, y: height - 6 }, "axis")).textContent = label;
    }
  });
  if (points.length > 1) root.appendChild(svg("polyline", { points: points.join(" ") }, "p95"));
  const box = el("div");
  box.appendChild(root);
  const legend = el("p", null, "legend");
  legend.append(el("span", "■ answered 2xx", "legend-ok"), el("span", "■ failed", "legend-failed"),
    el("span", "— p95 duration (up to " + Math.round(slowest) + " ms)", "legend-p95"));
  box.appendChild(legend);
  return box;
}

async function loadWebhookPage(id) {
  show("webhook-page");
  $("wp-notice").textContent = "";
  const base = "/v1/webhooks/" + encodeURIComponent(id);
  // Failing now (retrying) and failed for good: the ten latest of both.
  const troubled = (status) => api("GET", "/v1/logs?limit=10&status=" + status + "&webhook_id=" + encodeURIComponent(id));
  const [hook, stats, retrying, failed] = await Promise.all([
    api("GET", base),
    api("GET", base + "/stats?window=24h"),
    troubled("retrying"),
    troubled("failed"),
  ]);
  const failures = [retrying, failed]
    .flatMap((answer) => (answer.status === 200 ? answer.body.items : []))
    .sort((a, b) => (a.created_at < b.created_at ? 1 : -1))
    .slice(0, 10);
  if (hook.status !== 200) { $("wp-notice").textContent = errorText(hook); return; }
  const w = hook.body;
  state.webhooks.set(w.id, w);
  $("wp-url").textContent = w.url;
  const pills = $("wp-pills");
  pills.replaceChildren(statusBadge(w.status), document.createTextNode(" "), statusBadge(w.health),
    document.createTextNode(" " + w.ordering));
  const actions = $("wp-actions");
  actions.replaceChildren();
  const button = (label, action) => {
    const b = el("button", label);
    b.type = "button";
    b.dataset.action = action;
    b.addEventListener("click", async () => { await webhookAction(action, w); $("wp-notice").textContent = $("webhooks-notice").textContent; });
    actions.appendChild(b);
  };
  if (canManage()) {
    button("Edit", "edit");
    button("Send test", "test");
    button("Replay", "replay");
    button("Rotate secret", "rotate");
  }
  button("Logs", "logs");
  exampleForm(w);
  const health = $("wp-health");
  health.replaceChildren();
  fact(health, "Breaker", w.health);
  fact(health, "Failing since", w.failing_since ? when(w.failing_since) : null);
  fact(health, "Paused until", w.paused_until ? when(w.paused_until) : null);
  fact(health, "Disabled because", w.disabled_reason);
  const settings = $("wp-settings");
  settings.replaceChildren();
  fact(settings, "Account", w.account_id);
  fact(settings, "Events", w.events.join(", "));
  fact(settings, "Order", w.ordering);
  fact(settings, "Rate limit", w.rate_limit ? w.rate_limit + " a second" : null);
  fact(settings, "Requests at once", w.max_in_flight);
  fact(settings, "Filter", w.filter ? JSON.stringify(w.filter) : null);
  fact(settings, "Signed", w.has_secret ? "yes" : "no");
  fact(settings, "Custom headers", Object.keys(w.headers).join(", "));
  fact(settings, "Created", when(w.created_at));
  if (stats.status === 200) {
    const s = stats.body;
    $("wp-summary").textContent = s.attempts + " attempts, " + s.failures + " failed" +
      (s.success_rate === null ? "" : ", " + Math.round(s.success_rate * 1000) / 10 + " % answered 2xx") +
      (s.p95_duration_ms === null ? "" : ", p95 " + Math.round(s.p95_duration_ms) + " ms");
    $("wp-chart").replaceChildren(chart(s.series));
  } else {
    $("wp-chart").replaceChildren(el("p", errorText(stats), "error"));
  }
  const rows = $("wp-failures");
  rows.replaceChildren();
  for (const log of failures) {
    const tr = clickableRow(() => go("#/logs/" + encodeURIComponent(log.id)));
    tr.appendChild(el("td", log.id));
    tr.appendChild(el("td", log.event_type));
    const at = el("td");
    at.appendChild(when(log.created_at));
    tr.appendChild(at);
    tr.appendChild(el("td", log.error || (log.response_status ? "answered " + log.response_status : "")));
    rows.appendChild(tr);
  }
  if (!rows.children.length) rows.appendChild(el("tr")).appendChild(el("td", "No failure.")).colSpan = 4;
}

/// "Send an example": the types with an example saved, the webhook's own first.
function exampleForm(w) {
  const form = $("wp-example");
  const select = $("wp-example-type");
  const mine = new Set(w.events);
  const types = [...state.typeInfo.values()]
    .filter((t) => t.example !== null && t.example !== undefined)
    .map((t) => t.name)
    .sort((a, b) => (mine.has(b) - mine.has(a)) || (a < b ? -1 : 1));
  select.replaceChildren(...types.map((name) => el("option", name)));
  form.hidden = !canManage() || types.length === 0;
  form.onsubmit = async (event) => {
    event.preventDefault();
    const name = select.value;
    const answer = await api("POST", "/v1/webhooks/" + encodeURIComponent(w.id) + "/test", { event_type: name });
    $("wp-notice").textContent = answer.status === 202
      ? "Example of " + name + " sent: Webhook Log " + answer.body.log_id
      : errorText(answer);
  };
}

// ---- routing ----

async function route() {
  if (!sessionStorage.getItem(TOKEN_KEY)) { show(isPortal() ? "session-ended" : "sign-in"); return; }
  if (!state.me) {
    const failed = await signIn(sessionStorage.getItem(TOKEN_KEY));
    if (failed) { if (isPortal()) endSession(); else show("sign-in"); return; }
  }
  const hash = location.hash || "#/webhooks";
  if (hash.startsWith("#/webhooks/")) {
    await loadWebhookPage(decodeURIComponent(hash.slice("#/webhooks/".length)));
  } else if (hash.startsWith("#/logs/")) {
    await loadLog(decodeURIComponent(hash.slice("#/logs/".length)));
  } else if (hash.startsWith("#/logs")) {
    const query = new URLSearchParams(hash.split("?")[1] || "");
    if (query.get("webhook_id")) {
      await fillLogFilters();
      const hooks = $("q-webhook_id");
      // A webhook the list does not hold (beyond its first 500) is still the filter.
      if (![...hooks.options].some((o) => o.value === query.get("webhook_id"))) {
        hooks.appendChild(new Option(query.get("webhook_id"), query.get("webhook_id")));
      }
      hooks.value = query.get("webhook_id");
    }
    applyFilters();
    await loadLogs(null);
  } else {
    await loadWebhooks();
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("sign-in-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const failed = await signIn($("token").value.trim());
    $("token").value = "";
    if (failed) { $("sign-in-error").textContent = failed; return; }
    $("sign-in-error").textContent = "";
    go("#/webhooks");
  });
  $("sign-out").addEventListener("click", signOut);
  $("new-webhook").addEventListener("click", () => openForm(null));
  $("add-header").addEventListener("click", () => $("header-rows").appendChild(headerRow()));
  $("try-filter").addEventListener("click", () => tryFilter(true));
  $("f-filter").addEventListener("change", () => tryFilter(false));
  $("webhook-form").addEventListener("submit", saveWebhook);
  // A field's message is about what it held: gone once it is edited.
  $("webhook-form").addEventListener("input", (event) => {
    const message = event.target.id && $("err-" + event.target.id.replace(/^f-/, ""));
    if (message) message.textContent = "";
  });
  $("cancel-webhook").addEventListener("click", () => go("#/webhooks"));
  $("secret-done").addEventListener("click", () => { $("secret-box").hidden = true; $("secret-value").textContent = ""; });
  $("log-filters").addEventListener("submit", (event) => {
    event.preventDefault();
    if (applyFilters()) loadLogs(null);
  });
  $("recover").addEventListener("click", recover);
  // A portal link carries its session in the fragment, which never reaches a server: kept
  // in this tab, and taken out of the address bar (and so out of the history) at once.
  if (isPortal() && location.hash.startsWith("#token=")) {
    sessionStorage.setItem(TOKEN_KEY, decodeURIComponent(location.hash.slice("#token=".length)));
    history.replaceState(null, "", location.pathname + "#/webhooks");
  }
  window.addEventListener("hashchange", route);
  route();
});
