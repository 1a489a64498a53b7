// The Isotope console: sessions (list, search), one session (messages, tool calls, tasks, files,
// chat), statistics, the store's health. A client of the HTTP API like any other.
// Every stored value is put on the page as text (see dom.js): never as HTML.

import { ApiError, call, enc, getKey, metricsText, open, setKey, streamTurn } from "./api.js";
import { ago, bytes, h, number, replace, show, when } from "./dom.js";

const PAGE_SIZE = 25;
const HEALTH_EVERY_MS = 5000;
const STATS_EVERY_MS = 5000;

const main = document.getElementById("main");
const banner = document.getElementById("banner");
const signOut = document.getElementById("sign-out");

let tokenRequired = false;
let lastList = "#/";
let refresh = null; // the statistics view's timer
let generation = 0; // bumped on every navigation: late answers of a previous view are dropped
let focusMessageNext = false; // a new session opens with the Message box focused

// ---------------------------------------------------------------- routing

function parseHash() {
  const hash = location.hash || "#/";
  if (hash.startsWith("#/s/")) return { view: "session", id: decodeURIComponent(hash.slice(4)) };
  if (hash.startsWith("#/stats")) return { view: "stats" };
  const query = hash.indexOf("?");
  return { view: "sessions", params: new URLSearchParams(query >= 0 ? hash.slice(query + 1) : "") };
}

async function route() {
  generation += 1;
  const mine = generation;
  if (refresh) clearInterval(refresh);
  refresh = null;
  const where = parseHash();
  for (const link of document.querySelectorAll("[data-nav]")) {
    const here = link.dataset.nav === (where.view === "stats" ? "stats" : "sessions");
    if (here) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  signOut.hidden = !getKey();
  if (tokenRequired && !getKey()) {
    signIn();
    return;
  }
  try {
    if (where.view === "session") await sessionView(where.id, mine, { focusMessage: focusMessageNext });
    else if (where.view === "stats") await statsView(mine);
    else await sessionsView(where.params, mine);
  } catch (err) {
    if (mine === generation) failed(err);
  }
  focusMessageNext = false;
}

function current(mine) {
  return mine === generation;
}

function failed(err) {
  if (err instanceof ApiError && err.status === 401) {
    setKey("");
    signIn(tokenRequired || getKey() ? "The server did not accept that key." : "This server requires an API key.");
    return;
  }
  replace(main, h("h1", {}, "Something went wrong"),
    h("p", { class: "error", role: "alert" }, err.message || String(err)),
    h("p", {}, h("a", { href: "#/" }, "Back to the sessions")));
}

// After a navigation, focus goes to the new page's heading unless the view put it somewhere.
function focusMain() {
  const active = document.activeElement;
  if (!active || active === document.body || !document.contains(active)) (main.querySelector("h1") || main).focus();
}

// ---------------------------------------------------------------- sign-in

function signIn(problem) {
  signOut.hidden = true;
  const input = h("input", { id: "api-key", name: "key", type: "password", autocomplete: "off", required: true });
  const form = h("form", { class: "card narrow", onsubmit: async (event) => {
    event.preventDefault();
    setKey(input.value.trim());
    try {
      await call("/api/console/overview");
    } catch (err) {
      setKey("");
      replace(note, err.status === 401 ? "That key was not accepted." : err.message);
      input.focus();
      return;
    }
    route();
  } },
  h("label", { for: "api-key" }, "API key"), input,
  h("button", { type: "submit" }, "Sign in"));
  const note = h("p", { class: "error", role: "alert" }, problem && problem !== "This server requires an API key." ? problem : "");
  replace(main, h("h1", { tabindex: "-1" }, "Sign in"),
    h("p", {}, "This server requires an API key. It is kept in this browser tab only (session storage)."),
    form, note);
  input.focus();
}

// ---------------------------------------------------------------- sessions

function listHash(q, deleted, page) {
  const params = new URLSearchParams();
  if (q) params.set("q", q);
  if (deleted) params.set("deleted", "1");
  if (page) params.set("page", String(page));
  const text = params.toString();
  return text ? `#/?${text}` : "#/";
}

async function sessionsView(params, mine) {
  const q = params.get("q") || "";
  const deleted = params.get("deleted") === "1";
  const page = Math.max(0, parseInt(params.get("page") || "0", 10) || 0);
  lastList = listHash(q, deleted, page);

  const search = h("input", { id: "search", name: "q", type: "search", value: q, autocomplete: "off",
    placeholder: "words, a phrase, a name or a user id" });
  const include = h("input", { id: "include-deleted", type: "checkbox", checked: deleted });
  const go = (event) => {
    if (event) event.preventDefault();
    const target = listHash(search.value.trim(), include.checked, 0);
    if (location.hash === target) route();
    else location.hash = target;
  };
  include.addEventListener("change", go);
  const results = h("div", { class: "results", "aria-live": "polite" }, h("p", { class: "muted" }, "Loading…"));
  const status = h("p", { class: "muted", role: "status" });

  replace(main,
    h("div", { class: "title-row" },
      h("h1", { tabindex: "-1" }, "Sessions"),
      h("button", { type: "button", id: "new-session", onclick: () => newSession(status) }, "New session")),
    h("form", { role: "search", class: "search", onsubmit: go },
      h("label", { for: "search" }, "Search sessions"),
      h("div", { class: "search-row" }, search, h("button", { type: "submit" }, "Search")),
      h("label", { class: "check", for: "include-deleted" }, include, " Include deleted")),
    status, results);

  const query = new URLSearchParams({ q, include_inactive: String(deleted), limit: String(PAGE_SIZE),
    offset: String(page * PAGE_SIZE) });
  const data = await call(`/api/console/sessions?${query}`);
  if (!current(mine)) return;
  replace(results, sessionTable(data, q, deleted, page));
}

function sessionTable(data, q, deleted, page) {
  const first = data.offset + 1;
  const last = data.offset + data.sessions.length;
  const summary = data.sessions.length === 0
    ? (q ? `No session matches “${q}”.` : "No sessions yet.")
    : `Sessions ${number(first)}–${number(last)}` + (data.total !== null ? ` of ${number(data.total)}` : "")
      + (q ? ` matching “${q}”` : "");
  const parts = [h("p", { class: "summary" }, summary)];
  if (q && !data.messages_searched) {
    parts.push(h("p", { class: "muted" }, "Message text was not searched (PostgreSQL is not answering, or the query has no words); ids, names and user ids were."));
  }
  if (data.sessions.length) {
    parts.push(h("table", { class: "sessions" },
      h("caption", { class: "visually-hidden" }, "Sessions, most recently updated first"),
      h("thead", {}, h("tr", {}, ["Name", "User", "Messages", "Last update", "Expires", "Status"].map((t) => h("th", { scope: "col" }, t)))),
      h("tbody", {}, data.sessions.map((s) => sessionRow(s)))));
  }
  const prev = h("button", { type: "button", disabled: page === 0, onclick: () => { location.hash = listHash(q, deleted, page - 1); } }, "Previous");
  const next = h("button", { type: "button", disabled: !data.has_more, onclick: () => { location.hash = listHash(q, deleted, page + 1); } }, "Next");
  if (page > 0 || data.has_more) parts.push(h("nav", { class: "pager", "aria-label": "Pages" }, prev, h("span", {}, `Page ${page + 1}`), next));
  return parts;
}

function statusOf(s) {
  if (s.is_active) return "active";
  if (s.expires_at && new Date(s.expires_at) <= new Date()) return "expired";
  return "deleted";
}

function sessionRow(s) {
  const meta = s.metadata || {};
  const name = meta.name !== undefined && meta.name !== "" ? show(meta.name) : s.session_id;
  const state = statusOf(s);
  return h("tr", { class: state === "active" ? "" : "inactive" },
    h("td", { "data-label": "Name" },
      h("a", { href: `#/s/${enc(s.session_id)}` }, name),
      h("div", { class: "muted small id" }, s.session_id),
      s.matched_messages ? h("span", { class: "tag" }, "matched in messages") : null),
    h("td", { "data-label": "User" }, meta.user_id !== undefined ? show(meta.user_id) : "—"),
    h("td", { "data-label": "Messages", class: "num" }, number(s.message_count)),
    h("td", { "data-label": "Last update" }, h("time", { datetime: s.last_updated, title: when(s.last_updated) }, ago(s.last_updated))),
    h("td", { "data-label": "Expires" }, s.expires_at ? h("time", { datetime: s.expires_at, title: when(s.expires_at) }, ago(s.expires_at)) : "never"),
    h("td", { "data-label": "Status" }, h("span", { class: `badge ${state}` }, state)));
}

async function newSession(status) {
  replace(status, "Creating a session…");
  const stamp = new Date().toISOString().slice(0, 19).replace("T", " ");
  const created = await call("/api/sessions", { method: "POST", body: { metadata: { name: `New session ${stamp} UTC` } } })
    .catch((err) => { replace(status, err.message); return null; });
  if (created) {
    focusMessageNext = true;
    location.hash = `#/s/${enc(created.session_id)}`;
  }
}

// ---------------------------------------------------------------- one session

async function sessionView(id, mine, { notice = "", focusMessage = false } = {}) {
  const s = await call(`/api/console/sessions/${enc(id)}`);
  if (!current(mine)) return;
  const meta = s.metadata || {};
  const title = meta.name !== undefined && meta.name !== "" ? show(meta.name) : s.session_id;
  const state = statusOf(s);
  const live = h("p", { class: "muted", role: "status" }, notice);
  const messages = h("ol", { class: "messages", "aria-labelledby": "conversation-h" });
  for (const m of s.messages || []) for (const item of messageItems(m)) messages.appendChild(item);
  if (s.messages && s.messages.length === 0) messages.appendChild(h("li", { class: "empty muted" }, "No messages yet. Say something below."));

  const actions = h("div", { class: "actions" },
    state === "active"
      ? h("button", { type: "button", onclick: () => softDelete(s, mine) }, "Delete")
      : h("button", { type: "button", onclick: () => restore(s, mine) }, "Restore"),
    h("button", { type: "button", class: "danger", onclick: () => hardDelete(s, mine) }, "Erase permanently"));

  const conversation = h("section", { class: "conversation", "aria-labelledby": "conversation-h" },
    h("h2", { id: "conversation-h" }, "Conversation"),
    s.complete === false
      ? h("p", { class: "muted" }, "This deleted session's messages are not available while PostgreSQL is not answering.")
      : messages);
  let form = null;
  if (state === "active") {
    form = chatForm(s, messages, live, mine);
    conversation.appendChild(form);
  } else {
    conversation.appendChild(h("p", { class: "muted" }, `This session is ${state}. Restore it to continue the conversation.`));
  }

  replace(main,
    h("p", { class: "crumb" }, h("a", { href: lastList }, "← Sessions")),
    h("div", { class: "title-row" }, h("h1", { tabindex: "-1" }, title), h("span", { class: `badge ${state}` }, state)),
    actions, live,
    h("div", { class: "session-grid" },
      conversation,
      h("aside", { class: "side" },
        tasksPanel(s.tasks),
        filesPanel(s.files),
        detailsPanel(s))));
  if (form && focusMessage) form.querySelector("textarea").focus();
  messages.lastElementChild?.scrollIntoView({ block: "nearest" });
}

function messageItems(m) {
  const items = [];
  const kind = m.type || m.role || "message";
  const label = { human: "You", user: "You", ai: "Assistant", assistant: "Assistant", tool: "Tool result", system: "System" }[kind] || kind;
  const content = typeof m.content === "string" ? m.content : show(m.content);
  if (kind === "tool") {
    items.push(h("li", { class: `msg tool ${m.status === "error" ? "failed" : ""}` },
      h("div", { class: "who" }, `Tool result · ${m.name || m.tool_call_id || "tool"}`),
      h("pre", { class: "text" }, content)));
    return items;
  }
  if (content !== "" || !(m.tool_calls && m.tool_calls.length)) {
    items.push(h("li", { class: `msg ${kind}` }, h("div", { class: "who" }, label), h("div", { class: "text" }, content)));
  }
  for (const call of m.tool_calls || []) items.push(toolCallItem(call));
  return items;
}

function toolCallItem(c) {
  return h("li", { class: "msg toolcall" },
    h("div", { class: "who" }, `Tool call · ${c.name}`),
    h("pre", { class: "text" }, show(c.args)));
}

function tasksPanel(tasks) {
  const section = h("section", { class: "panel", "aria-labelledby": "tasks-h" }, h("h2", { id: "tasks-h" }, "Tasks"));
  const list = Array.isArray(tasks) ? tasks : tasks ? [tasks] : [];
  if (!list.length) {
    section.appendChild(h("p", { class: "muted" }, tasks === null ? "Not available." : "No tasks."));
    return section;
  }
  section.appendChild(h("ol", { class: "tasks" }, list.map((t) => {
    if (t && typeof t === "object") {
      const text = t.title ?? t.description ?? t.name ?? t.text;
      const done = t.done === true || t.status === "done" || t.status === "completed";
      return h("li", { class: done ? "done" : "" },
        h("span", { class: "mark", "aria-hidden": "true" }, done ? "☑" : "☐"),
        h("span", { class: "visually-hidden" }, done ? "done: " : "open: "),
        t.id !== undefined ? `#${show(t.id)} ` : "",
        text !== undefined ? show(text) : show(t));
    }
    return h("li", {}, show(t));
  })));
  return section;
}

function filesPanel(files) {
  const section = h("section", { class: "panel", "aria-labelledby": "files-h" }, h("h2", { id: "files-h" }, "Files"));
  const names = files && typeof files === "object" && !Array.isArray(files) ? Object.keys(files).sort() : [];
  if (!names.length) {
    section.appendChild(h("p", { class: "muted" }, files === null ? "Not available." : "No files."));
    return section;
  }
  const viewer = h("div", { class: "file-view" });
  section.appendChild(h("ul", { class: "files" }, names.map((name) => h("li", {},
    h("button", { type: "button", class: "link", "aria-label": `Open file ${name}`, onclick: () => {
      replace(viewer,
        h("div", { class: "file-head" }, h("h3", { tabindex: "-1" }, name),
          h("button", { type: "button", class: "quiet", onclick: () => replace(viewer) }, "Close file")),
        h("pre", { class: "text" }, show(files[name])));
      viewer.querySelector("h3").focus();
    } }, name)))));
  section.appendChild(viewer);
  return section;
}

function detailsPanel(s) {
  const meta = s.metadata || {};
  const rows = [
    ["Session id", s.session_id],
    ["User", meta.user_id !== undefined ? show(meta.user_id) : "—"],
    ["Messages", number(s.message_count)],
    ["Version", String(s.version)],
    ["Created", when(s.created_at)],
    ["Last update", when(s.last_updated)],
    ["Expires", s.expires_at ? when(s.expires_at) : "never"],
  ];
  const extra = s.state && Object.keys(s.state).length ? s.state : null;
  return h("section", { class: "panel", "aria-labelledby": "details-h" },
    h("h2", { id: "details-h" }, "Details"),
    h("dl", { class: "details" }, rows.map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)])),
    h("details", {}, h("summary", {}, "Metadata"), h("pre", { class: "text" }, show(meta))),
    extra ? h("details", {}, h("summary", {}, "Other state"), h("pre", { class: "text" }, show(extra))) : null);
}

function chatForm(s, messages, live, mine) {
  const box = h("textarea", { id: "message", name: "message", rows: "3", required: true,
    placeholder: "Try: add task: water the plants" });
  const send = h("button", { type: "submit" }, "Send");
  const form = h("form", { class: "chat", onsubmit: async (event) => {
    event.preventDefault();
    const text = box.value;
    if (!text.trim()) {
      replace(live, "Type a message first.");
      box.focus();
      return;
    }
    box.value = "";
    box.disabled = true;
    send.disabled = true;
    await runTurn(s, text, messages, live, mine);
    if (!current(mine)) return;
    box.disabled = false;
    send.disabled = false;
    box.focus();
  } },
  h("label", { for: "message" }, "Message"), box,
  h("div", { class: "chat-row" }, h("span", { class: "muted small" }, "Enter sends, Shift+Enter starts a new line."), send));
  box.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      form.requestSubmit();
    }
  });
  return form;
}

async function runTurn(s, text, messages, live, mine) {
  messages.querySelector(".empty")?.remove();
  messages.appendChild(h("li", { class: "msg human" }, h("div", { class: "who" }, "You"), h("div", { class: "text" }, text)));
  let reply = null; // the assistant message being streamed
  const startReply = () => {
    const body = h("div", { class: "text" });
    reply = h("li", { class: "msg ai streaming", "aria-busy": "true" }, h("div", { class: "who" }, "Assistant"), body);
    messages.appendChild(reply);
    return reply;
  };
  const finishReply = (content) => {
    if (!reply && content === undefined) return;
    if (!reply) startReply();
    if (content !== undefined) reply.querySelector(".text").textContent = content;
    reply.classList.remove("streaming");
    reply.removeAttribute("aria-busy");
    reply = null;
  };
  replace(live, "Sending…");
  let saved = null;
  try {
    await streamTurn(s.session_id, text, (type, data) => {
      if (type === "token") {
        if (!reply) startReply();
        reply.querySelector(".text").append(data.content ?? "");
      } else if (type === "tool_call") {
        if (reply && reply.querySelector(".text").textContent === "") { reply.remove(); reply = null; } else finishReply();
        messages.appendChild(toolCallItem(data));
      } else if (type === "tool_result") {
        messages.appendChild(messageItems({ type: "tool", name: data.name, content: data.content, status: data.status })[0]);
      } else if (type === "message") {
        if (data.content) finishReply(data.content);
        else if (reply) { reply.remove(); reply = null; }
      } else if (type === "done") {
        saved = data;
      } else if (type === "error") {
        finishReply();
        messages.appendChild(h("li", { class: "msg error", role: "alert" }, h("div", { class: "who" }, "Error"), h("div", { class: "text" }, data.message || "the turn failed")));
      }
      messages.lastElementChild?.scrollIntoView({ block: "nearest" });
    });
  } catch (err) {
    finishReply();
    if (err instanceof ApiError && err.status === 401) return failed(err);
    messages.appendChild(h("li", { class: "msg error", role: "alert" }, h("div", { class: "who" }, "Error"), h("div", { class: "text" }, err.message)));
  }
  if (!current(mine)) return;
  if (saved) {
    // Show what the store now holds (tasks and files changed by the turn's tools).
    await sessionView(s.session_id, mine, {
      notice: `Saved: version ${saved.version}, ${saved.message_count} messages.`, focusMessage: true,
    }).catch((err) => failed(err));
  } else {
    replace(live, "The turn did not finish; nothing of it was saved.");
  }
}

async function softDelete(s, mine) {
  await call(`/api/sessions/${enc(s.session_id)}`, { method: "DELETE" }).catch((err) => failed(err));
  if (current(mine)) await sessionView(s.session_id, mine, { notice: "Deleted. Restore brings it back." }).catch(failed);
}

async function restore(s, mine) {
  await call(`/api/console/sessions/${enc(s.session_id)}/restore`, { method: "POST" }).catch((err) => failed(err));
  if (current(mine)) await sessionView(s.session_id, mine, { notice: "Restored." }).catch(failed);
}

function hardDelete(s, mine) {
  const name = (s.metadata && s.metadata.name) ? show(s.metadata.name) : s.session_id;
  const confirmButton = h("button", { type: "button", class: "danger" }, "Erase permanently");
  const dialog = h("dialog", { "aria-labelledby": "confirm-h", class: "confirm" },
    h("h2", { id: "confirm-h" }, "Erase this session permanently?"),
    h("p", {}, "Session “", name, "” and all its messages, tasks and files will be removed. This cannot be undone."),
    h("div", { class: "actions" },
      h("button", { type: "button", onclick: () => dialog.close() }, "Cancel"),
      confirmButton));
  dialog.addEventListener("close", () => dialog.remove());
  confirmButton.addEventListener("click", async () => {
    confirmButton.disabled = true;
    try {
      await call(`/api/sessions/${enc(s.session_id)}?hard=true`, { method: "DELETE" });
    } catch (err) {
      dialog.close();
      failed(err);
      return;
    }
    dialog.close();
    if (!current(mine)) return;
    location.hash = lastList;
  });
  document.body.appendChild(dialog);
  dialog.showModal();
}

// ---------------------------------------------------------------- statistics

async function statsView(mine) {
  const data = h("div", { class: "stats-data", "aria-live": "off" }, h("p", { class: "muted" }, "Loading…"));
  const cleanupNote = h("p", { role: "status", class: "muted" });
  const cleanupButton = h("button", { type: "button", onclick: async () => {
    cleanupButton.disabled = true;
    try {
      const result = await call("/api/sessions/postgres/cleanup", { method: "POST" });
      cleanupNote.textContent = `Cleanup deactivated ${result.cleaned_count} expired sessions.`;
      await fill(data, mine);
    } catch (err) {
      if (err.status === 401) return failed(err);
      cleanupNote.textContent = err.message;
    } finally {
      cleanupButton.disabled = false;
    }
  } }, "Run cleanup now");
  replace(main, h("h1", { tabindex: "-1" }, "Statistics"), data,
    h("section", { class: "panel", "aria-labelledby": "cleanup-run-h" },
      h("h2", { id: "cleanup-run-h" }, "Clean up now"),
      h("p", {}, "Deactivates every session whose expiry has passed (the server also does this every api.cleanup_interval_s)."),
      cleanupButton, cleanupNote));
  await fill(data, mine);
  if (current(mine)) refresh = setInterval(() => fill(data, mine).catch(() => {}), STATS_EVERY_MS);
}

async function fill(container, mine) {
  const [o, metrics] = await Promise.all([call("/api/console/overview"), metricsText().catch(() => "")]);
  if (!current(mine)) return;
  const st = o.statistics || {};
  const hk = o.housekeeping;
  const turns = o.turns || {};
  const card = (label, value, note) => h("div", { class: "stat" }, h("div", { class: "label" }, label), h("div", { class: "value" }, value), note ? h("div", { class: "muted small" }, note) : null);
  const runs = metricValues(metrics, "isotope_cleanup_runs_total", "outcome");
  const changed = metricValues(metrics, "isotope_cleanup_sessions_total", "action");
  const days = hk ? hk.created_per_day : [];
  const peak = Math.max(1, ...days.map((d) => d.sessions));
  replace(container,
    h("section", { "aria-labelledby": "totals-h" }, h("h2", { id: "totals-h" }, "Sessions"),
      h("div", { class: "stat-grid" },
        card("Total sessions", number(st.total_sessions)),
        card("Active sessions", number(st.active_sessions)),
        card("Average messages", number(st.avg_messages_per_session), "per active session"),
        card("Total messages", number(st.total_messages)),
        card("Created in the last 24 h", number(st.sessions_last_24h)),
        card("Storage", bytes(st.storage_bytes)))),
    h("section", { "aria-labelledby": "turns-h" }, h("h2", { id: "turns-h" }, "Turns (this server)"),
      h("div", { class: "stat-grid" },
        card("Turn rate", `${turns.per_minute ?? "—"} / min`, `over the last ${Math.round(turns.window_s || 0)} s`),
        card("Turns since start", number(turns.total)))),
    h("section", { "aria-labelledby": "store-h" }, h("h2", { id: "store-h" }, "Store"),
      h("dl", { class: "details" },
        h("dt", {}, "Backend"), h("dd", {}, o.store.backend),
        h("dt", {}, "Fallback"), h("dd", {}, o.store.fallback_active ? "active: PostgreSQL is unreachable" : "no"),
        h("dt", {}, "Spool depth"), h("dd", {}, number(o.store.spool_depth)))),
    h("section", { "aria-labelledby": "growth-h" }, h("h2", { id: "growth-h" }, "Growth"),
      days.length
        ? h("table", { class: "bars" },
          h("caption", {}, "Sessions created per day (UTC), last 14 days"),
          h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Day"), h("th", { scope: "col" }, "Sessions"))),
          h("tbody", {}, days.map((d) => h("tr", {}, h("th", { scope: "row" }, d.day),
            h("td", {}, bar(d.sessions / peak), ` ${number(d.sessions)}`)))))
        : h("p", { class: "muted" }, hk ? "No sessions created in the last 14 days." : "Not available while PostgreSQL is not answering.")),
    h("section", { "aria-labelledby": "cleanup-h" }, h("h2", { id: "cleanup-h" }, "Cleanup"),
      h("dl", { class: "details" },
        h("dt", {}, "Deleted sessions"), h("dd", {}, hk ? number(hk.deleted_sessions) : "—"),
        h("dt", {}, "Expired, awaiting cleanup"), h("dd", {}, hk ? number(hk.expired_awaiting_cleanup) : "—"),
        h("dt", {}, "Expiring within 24 h"), h("dd", {}, hk ? number(hk.expiring_within_24h) : "—"),
        h("dt", {}, "Cleanup runs (this server)"), h("dd", {}, `${number(runs.done || 0)} done, ${number(runs.skipped || 0)} skipped, ${number(runs.failed || 0)} failed`),
        h("dt", {}, "Changed by cleanup"), h("dd", {}, `${number(changed.deactivated || 0)} deactivated, ${number(changed.deleted || 0)} removed`))));
}

function bar(fraction) {
  const el = h("span", { class: "bar", "aria-hidden": "true" });
  el.style.width = `${Math.max(0.2, fraction * 12).toFixed(2)}em`; // CSSOM: allowed by the page's CSP
  return el;
}

// {label value: number} of one Prometheus counter, from the text format.
function metricValues(text, name, label) {
  const out = {};
  const pattern = new RegExp(`^${name}\\{[^}]*${label}="([^"]*)"[^}]*\\}\\s+([0-9.eE+-]+)$`);
  for (const line of text.split("\n")) {
    const m = pattern.exec(line);
    if (m) out[m[1]] = (out[m[1]] || 0) + Number(m[2]);
  }
  return out;
}

// ---------------------------------------------------------------- health banner

async function health() {
  let text = "";
  try {
    const { status, body } = await open("/ready");
    if (body && body.fallback_active) {
      text = `The store is in fallback: PostgreSQL is unreachable. Writes go to the outage spool (${number(body.spool_depth)} waiting) and are replayed when it answers.`;
    } else if (status !== 200) {
      text = `The server is not ready: ${(body && (body.reason || (body.error && body.error.message))) || status}.`;
    } else if (body && body.spool_depth > 0) {
      text = `Replaying the outage spool: ${number(body.spool_depth)} writes waiting.`;
    }
  } catch (_) {
    text = "The server does not answer.";
  }
  banner.textContent = text;
  banner.hidden = !text;
}

// ---------------------------------------------------------------- start

async function boot() {
  const { body } = await open("/console/auth.json").catch(() => ({ body: null }));
  tokenRequired = Boolean(body && body.token_required);
  signOut.addEventListener("click", () => {
    setKey("");
    route();
  });
  window.addEventListener("hashchange", () => {
    route().then(focusMain);
  });
  await health();
  setInterval(health, HEALTH_EVERY_MS);
  await route();
}

boot();
